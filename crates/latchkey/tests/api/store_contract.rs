//! The store contract: every `Store` method, run against each backend through
//! `latchkey::open_store`, exactly as the server opens it. Both backends must answer the same
//! way, so any behaviour the services rely on is asserted here once.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::collections::HashSet;
use std::sync::Arc;

use latchkey_core::model::{
    Account, ApiKey, AppChallenge, AuditEvent, AuthMethod, BrowserSession, ClientInfo, MfaKind,
    NewAccount, PasswordHashes, Permissions, PushRequest, RefreshUse, Role, ScramHandshake,
    ScramVerifier, Server, Session, SessionState, SessionTouch, SigningKey, User,
};
use latchkey_core::crypto::secret::SecretHash;
use latchkey_core::{ServerId, Store, StoreError, UserId};
use uuid::Uuid;

use crate::support::db::{both_backends, Backend, TestDb};

both_backends!(
    reopening_a_migrated_database_keeps_its_data,
    a_setting_is_set_once_and_a_second_insert_conflicts,
    servers_round_trip_with_their_keys_byte_for_byte,
    a_role_has_no_permissions_until_granted_and_a_grant_replaces_the_last,
    an_api_key_is_found_by_its_hash_alone,
    user_names_are_unique_per_server_and_listed_in_byte_order,
    deleting_a_user_deletes_its_sessions,
    credentials_round_trip_password_totp_secret_and_pin,
    credential_updates_of_an_unknown_user_are_not_found,
    a_totp_step_is_accepted_once_and_never_an_older_one,
    a_session_round_trips_every_field_by_id_and_by_token,
    updating_a_session_writes_every_mutable_field,
    touching_moves_activity_forward_only_and_only_on_active_sessions,
    overlapping_touch_batches_and_a_revocation_run_concurrently_without_failing,
    a_session_is_revoked_once,
    revoking_a_users_sessions_answers_only_those_that_were_live,
    a_users_sessions_are_listed_newest_activity_first_in_pages,
    only_active_unexpired_sessions_are_counted,
    failures_are_counted_within_the_window_and_cleared_per_key,
    a_captcha_requirement_is_set_idempotently_and_cleared,
    audit_events_are_listed_newest_first_per_server,
    purge_removes_old_failures_and_long_dead_sessions_only,
    a_sessions_idle_timeout_round_trips_through_insert_and_update,
    a_refresh_token_is_fresh_once_then_reused_and_an_unknown_one_is_unknown,
    racing_uses_of_a_refresh_token_see_exactly_one_fresh,
    refresh_tokens_die_with_their_session,
    a_handshake_round_trips_every_field_and_is_taken_once,
    purge_removes_expired_handshakes_only,
    signing_keys_are_listed_newest_first_and_retired_all_but_one,
    accounts_are_unique_per_server_key_and_found_only_on_their_server,
    a_users_accounts_are_listed_oldest_first_and_rebound_or_unbound,
    updates_of_an_unknown_account_are_not_found,
    an_account_is_blocked_and_touched_field_by_field,
    deleting_a_user_unbinds_its_accounts,
    ensuring_a_browser_session_twice_keeps_the_first,
    a_browser_session_is_found_by_hsid_and_challenge_and_updates_every_mutable_field,
    a_login_challenge_is_consumed_once_keeping_the_rest_of_the_browser_session,
    racing_consumptions_of_a_login_challenge_see_exactly_one_true,
    a_browser_session_loses_its_session_when_the_session_row_goes,
    an_app_challenge_round_trips_every_field_and_is_taken_once,
    purge_removes_app_challenges_expired_before_the_failures_cutoff,
    a_push_round_trips_every_field_and_is_answered_once,
    racing_answers_to_a_push_see_exactly_one_true,
    pending_pushes_are_unanswered_unexpired_and_oldest_first,
    purge_removes_pushes_expired_before_the_sessions_cutoff,
);

const NOW: i64 = 1_700_000_000;

async fn open(db: &TestDb) -> Arc<dyn Store> {
    latchkey::open_store(db.url())
        .await
        .unwrap_or_else(|e| panic!("opening {:?} store: {e:#}", db.backend()))
}

fn new_server(name: &str, created_at: i64) -> Server {
    let mut secret_key = [0u8; 32];
    let mut public_key = [0u8; 32];
    for i in 0..32u8 {
        // Every byte value class: zero, high bit, 0xff.
        secret_key[usize::from(i)] = i.wrapping_mul(37).wrapping_add(created_at as u8);
        public_key[usize::from(i)] = 0xff - i;
    }
    secret_key[0] = 0;
    Server {
        id: ServerId::generate(),
        name: name.to_owned(),
        secret_key,
        public_key,
        created_at,
    }
}

async fn given_server(store: &dyn Store) -> Server {
    let server = new_server("example", NOW);
    store.insert_server(&server).await.unwrap();
    server
}

fn new_user(server: &Server, name: &str) -> User {
    User {
        id: Uuid::new_v4(),
        server_id: server.id.clone(),
        userid: UserId::parse(name).unwrap(),
        created_at: NOW,
    }
}

async fn given_user(store: &dyn Store, server: &Server, name: &str) -> User {
    let user = new_user(server, name);
    store.insert_user(&user).await.unwrap();
    user
}

/// An active session that stays live for an hour after `NOW`.
fn new_session(server: &Server, user: Option<&User>) -> Session {
    Session {
        id: Uuid::new_v4(),
        server_id: server.id.clone(),
        user_id: user.map(|u| u.id),
        methods: vec![AuthMethod::Pwd],
        state: SessionState::Active,
        created_at: NOW - 60,
        last_active_at: NOW - 60,
        idle_expires_at: NOW + 3600,
        absolute_expires_at: NOW + 86_400,
        // Not the column's default (900): a backend that drops the field is caught.
        idle_timeout: 3600,
        client: ClientInfo::default(),
        pending_mfa: None,
        mfa_failures: 0,
        captcha_answer: None,
        captcha_failures: 0,
        password_ok: false,
        revoked_at: None,
    }
}

fn token_hash(session: &Session) -> SecretHash {
    SecretHash::of(session.id.as_bytes())
}

async fn given_session(store: &dyn Store, session: Session) -> Session {
    store
        .insert_session(&session, &token_hash(&session))
        .await
        .unwrap();
    session
}

async fn stored(store: &dyn Store, id: Uuid) -> Session {
    store.session(id).await.unwrap().expect("session stored")
}

fn assert_conflict<T: std::fmt::Debug>(result: Result<T, StoreError>) {
    match result {
        Err(StoreError::Conflict) => {}
        other => panic!("expected a conflict, got {other:?}"),
    }
}

fn assert_not_found<T: std::fmt::Debug>(result: Result<T, StoreError>) {
    match result {
        Err(StoreError::NotFound) => {}
        other => panic!("expected not found, got {other:?}"),
    }
}

fn hashes(argon2: &str, iterations: u32, fill: u8) -> PasswordHashes {
    PasswordHashes {
        argon2: argon2.to_owned(),
        scram: ScramVerifier {
            salt: vec![fill, 0, 0xff, fill.wrapping_add(1)],
            iterations,
            stored_key: [fill; 32],
            server_key: [fill ^ 0xff; 32],
        },
    }
}

async fn reopening_a_migrated_database_keeps_its_data(db: TestDb) {
    let first = open(&db).await;
    first.ping().await.unwrap();
    first.insert_setting("default_server", "abc").await.unwrap();

    let second = open(&db).await;
    second.ping().await.unwrap();
    assert_eq!(
        second.setting("default_server").await.unwrap().as_deref(),
        Some("abc")
    );
    match db.backend() {
        Backend::Sqlite => assert_eq!(second.backend(), "sqlite"),
        Backend::Postgres => assert_eq!(second.backend(), "postgres"),
    }
}

async fn a_setting_is_set_once_and_a_second_insert_conflicts(db: TestDb) {
    let store = open(&db).await;
    assert_eq!(store.setting("default_server").await.unwrap(), None);

    store.insert_setting("default_server", "one").await.unwrap();
    assert_conflict(store.insert_setting("default_server", "two").await);

    assert_eq!(
        store.setting("default_server").await.unwrap().as_deref(),
        Some("one")
    );
}

async fn servers_round_trip_with_their_keys_byte_for_byte(db: TestDb) {
    let store = open(&db).await;
    let later = new_server("later", NOW + 10);
    let earlier = new_server("earlier", NOW);
    store.insert_server(&later).await.unwrap();
    store.insert_server(&earlier).await.unwrap();

    let got = store.server(&later.id).await.unwrap().expect("server");
    assert_eq!(got.id, later.id);
    assert_eq!(got.name, "later");
    assert_eq!(got.secret_key, later.secret_key);
    assert_eq!(got.public_key, later.public_key);
    assert_eq!(got.created_at, NOW + 10);

    let all: Vec<ServerId> = store
        .servers()
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.id)
        .collect();
    assert_eq!(all, vec![earlier.id.clone(), later.id.clone()]);

    assert!(store.server(&ServerId::generate()).await.unwrap().is_none());
    assert_conflict(store.insert_server(&later).await);
}

async fn a_role_has_no_permissions_until_granted_and_a_grant_replaces_the_last(db: TestDb) {
    let store = open(&db).await;
    let server = given_server(&*store).await;
    let other_server = new_server("other", NOW + 1);
    store.insert_server(&other_server).await.unwrap();
    let admin = Role {
        id: "admin".into(),
        root: false,
    };
    let root = Role {
        id: "root".into(),
        root: true,
    };
    store.insert_role(&admin).await.unwrap();
    store.insert_role(&root).await.unwrap();
    assert_conflict(store.insert_role(&admin).await);

    assert_eq!(store.role("admin").await.unwrap(), Some(admin));
    assert_eq!(store.role("root").await.unwrap(), Some(root));
    assert_eq!(store.role("nobody").await.unwrap(), None);

    assert_eq!(
        store.permissions("admin", &server.id).await.unwrap(),
        Permissions::default()
    );

    let first = Permissions {
        sessions: true,
        accounts: false,
        users: true,
        servers: false,
    };
    store
        .set_permissions("admin", &server.id, first)
        .await
        .unwrap();
    assert_eq!(store.permissions("admin", &server.id).await.unwrap(), first);

    let second = Permissions {
        sessions: false,
        accounts: true,
        users: false,
        servers: true,
    };
    store
        .set_permissions("admin", &server.id, second)
        .await
        .unwrap();
    assert_eq!(
        store.permissions("admin", &server.id).await.unwrap(),
        second
    );
    assert_eq!(
        store.permissions("admin", &other_server.id).await.unwrap(),
        Permissions::default(),
        "a grant on one server gives nothing on another"
    );
}

async fn an_api_key_is_found_by_its_hash_alone(db: TestDb) {
    let store = open(&db).await;
    store
        .insert_role(&Role {
            id: "ops".into(),
            root: false,
        })
        .await
        .unwrap();
    let key = ApiKey {
        id: Uuid::new_v4(),
        key_hash: SecretHash::of(b"the api key"),
        role_id: "ops".into(),
        created_at: NOW,
    };
    store.insert_api_key(&key).await.unwrap();

    let got = store.api_key(&key.key_hash).await.unwrap().expect("key");
    assert_eq!(got.id, key.id);
    assert_eq!(got.key_hash, key.key_hash);
    assert_eq!(got.role_id, "ops");
    assert_eq!(got.created_at, NOW);

    assert!(store
        .api_key(&SecretHash::of(b"another key"))
        .await
        .unwrap()
        .is_none());
    assert_conflict(
        store
            .insert_api_key(&ApiKey {
                id: Uuid::new_v4(),
                ..key
            })
            .await,
    );
}

async fn user_names_are_unique_per_server_and_listed_in_byte_order(db: TestDb) {
    let store = open(&db).await;
    let server = given_server(&*store).await;
    let other_server = new_server("other", NOW + 1);
    store.insert_server(&other_server).await.unwrap();

    let alice = given_user(&*store, &server, "alice@example.com").await;
    let bob = given_user(&*store, &server, "Bob").await;
    let zoe = given_user(&*store, &server, "_zoe").await;
    assert_conflict(
        store
            .insert_user(&new_user(&server, "alice@example.com"))
            .await,
    );
    let alice_elsewhere = given_user(&*store, &other_server, "alice@example.com").await;

    let name = UserId::parse("alice@example.com").unwrap();
    assert_eq!(
        store.user(&server.id, &name).await.unwrap(),
        Some(alice.clone())
    );
    assert_eq!(
        store.user(&other_server.id, &name).await.unwrap(),
        Some(alice_elsewhere)
    );
    assert_eq!(
        store
            .user(&server.id, &UserId::parse("ALICE@example.com").unwrap())
            .await
            .unwrap(),
        None,
        "user names compare exactly"
    );
    assert_eq!(store.user_by_id(bob.id).await.unwrap(), Some(bob.clone()));
    assert_eq!(store.user_by_id(Uuid::new_v4()).await.unwrap(), None);

    // Byte order ("B" < "_" < "a"), whatever the database's locale.
    assert_eq!(
        store.users(&server.id).await.unwrap(),
        vec![bob, zoe, alice]
    );
}

async fn deleting_a_user_deletes_its_sessions(db: TestDb) {
    let store = open(&db).await;
    let server = given_server(&*store).await;
    let user = given_user(&*store, &server, "alice").await;
    let other = given_user(&*store, &server, "bob").await;
    let session = given_session(&*store, new_session(&server, Some(&user))).await;
    let kept = given_session(&*store, new_session(&server, Some(&other))).await;

    assert!(store.delete_user(user.id).await.unwrap());
    assert!(!store.delete_user(user.id).await.unwrap());

    assert_eq!(store.user_by_id(user.id).await.unwrap(), None);
    assert_eq!(store.session(session.id).await.unwrap(), None);
    assert_eq!(
        store.session_by_token(&token_hash(&session)).await.unwrap(),
        None
    );
    assert_eq!(stored(&*store, kept.id).await, kept);
}

async fn credentials_round_trip_password_totp_secret_and_pin(db: TestDb) {
    let store = open(&db).await;
    let server = given_server(&*store).await;
    let user = given_user(&*store, &server, "alice").await;
    let name = user.userid.clone();

    let fresh = store
        .credentials(&server.id, &name)
        .await
        .unwrap()
        .expect("user");
    assert_eq!(fresh.user, user);
    assert_eq!(fresh.password, None);
    assert_eq!(fresh.totp_secret, None);
    assert_eq!(fresh.totp_last_step, -1);
    assert_eq!(fresh.pin_hash, None);
    assert_eq!(fresh.second_factor(), None);

    // u32::MAX iterations: the column must hold every u32.
    let first = hashes("$argon2id$v=19$m=19456,t=2,p=1$first", u32::MAX, 7);
    store.set_password(user.id, &first).await.unwrap();
    let second = hashes("$argon2id$v=19$m=19456,t=2,p=1$second", 600_000, 0x80);
    store.set_password(user.id, &second).await.unwrap();
    store
        .set_totp_secret(user.id, Some(&[0, 1, 2, 0xfe, 0xff]))
        .await
        .unwrap();
    store
        .set_pin_hash(user.id, Some("$argon2id$v=19$pin"))
        .await
        .unwrap();

    let set = store
        .credentials(&server.id, &name)
        .await
        .unwrap()
        .expect("user");
    assert_eq!(set.password, Some(second));
    assert_eq!(set.totp_secret.as_deref(), Some(&[0, 1, 2, 0xfe, 0xff][..]));
    assert_eq!(set.pin_hash.as_deref(), Some("$argon2id$v=19$pin"));
    assert_eq!(set.second_factor(), Some(MfaKind::Totp));

    store.set_password(user.id, &first).await.unwrap();
    store.set_totp_secret(user.id, None).await.unwrap();
    let pin_only = store
        .credentials(&server.id, &name)
        .await
        .unwrap()
        .expect("user");
    assert_eq!(pin_only.password, Some(first));
    assert_eq!(pin_only.totp_secret, None);
    assert_eq!(pin_only.second_factor(), Some(MfaKind::Pin));

    store.set_pin_hash(user.id, None).await.unwrap();
    let none = store
        .credentials(&server.id, &name)
        .await
        .unwrap()
        .expect("user");
    assert_eq!(none.pin_hash, None);
    assert_eq!(none.second_factor(), None);

    assert!(store
        .credentials(&server.id, &UserId::parse("nobody").unwrap())
        .await
        .unwrap()
        .is_none());
}

async fn credential_updates_of_an_unknown_user_are_not_found(db: TestDb) {
    let store = open(&db).await;
    let nobody = Uuid::new_v4();
    assert_not_found(store.set_password(nobody, &hashes("x", 1, 1)).await);
    assert_not_found(store.set_totp_secret(nobody, Some(b"secret")).await);
    assert_not_found(store.set_totp_secret(nobody, None).await);
    assert_not_found(store.set_pin_hash(nobody, Some("pin")).await);
    assert_not_found(store.set_pin_hash(nobody, None).await);
    assert!(!store.consume_totp_step(nobody, 1).await.unwrap());
}

async fn a_totp_step_is_accepted_once_and_never_an_older_one(db: TestDb) {
    let store = open(&db).await;
    let server = given_server(&*store).await;
    let user = given_user(&*store, &server, "alice").await;
    store
        .set_totp_secret(user.id, Some(b"0123456789"))
        .await
        .unwrap();

    assert!(store.consume_totp_step(user.id, 100).await.unwrap());
    assert!(
        !store.consume_totp_step(user.id, 100).await.unwrap(),
        "replay"
    );
    assert!(
        !store.consume_totp_step(user.id, 99).await.unwrap(),
        "older"
    );
    assert!(
        store.consume_totp_step(user.id, 101).await.unwrap(),
        "newer"
    );
    let creds = store
        .credentials(&server.id, &user.userid)
        .await
        .unwrap()
        .expect("user");
    assert_eq!(creds.totp_last_step, 101);

    // A new secret starts a new sequence.
    store
        .set_totp_secret(user.id, Some(b"another secret"))
        .await
        .unwrap();
    assert!(store.consume_totp_step(user.id, 50).await.unwrap());

    // Racing checks of one code: exactly one wins.
    let racers: Vec<_> = (0..8)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move { store.consume_totp_step(user.id, 60).await })
        })
        .collect();
    let mut winners = 0;
    for racer in racers {
        if racer.await.unwrap().unwrap() {
            winners += 1;
        }
    }
    assert_eq!(winners, 1);
}

async fn a_session_round_trips_every_field_by_id_and_by_token(db: TestDb) {
    let store = open(&db).await;
    let server = given_server(&*store).await;
    let user = given_user(&*store, &server, "alice").await;
    let session = Session {
        methods: vec![AuthMethod::Pwd, AuthMethod::Otp],
        state: SessionState::PendingMfa,
        client: ClientInfo {
            ip: Some("2001:db8::1".into()),
            user_agent: Some("Mozilla/5.0 (X11; Linux x86_64) \u{2603}".into()),
            device_name: Some("Alice's phone".into()),
        },
        pending_mfa: Some(MfaKind::Totp),
        mfa_failures: 2,
        captcha_answer: Some(SecretHash::of(b"answer")),
        captcha_failures: 3,
        password_ok: true,
        ..new_session(&server, Some(&user))
    };
    store
        .insert_session(&session, &token_hash(&session))
        .await
        .unwrap();

    assert_eq!(stored(&*store, session.id).await, session);
    assert_eq!(
        store.session_by_token(&token_hash(&session)).await.unwrap(),
        Some(session.clone())
    );
    assert_eq!(store.session(Uuid::new_v4()).await.unwrap(), None);
    assert_eq!(
        store
            .session_by_token(&SecretHash::of(b"unknown"))
            .await
            .unwrap(),
        None
    );

    // A login of an unknown user name held on CAPTCHA has no user.
    let anonymous = Session {
        state: SessionState::BlockedCaptcha,
        methods: vec![],
        ..new_session(&server, None)
    };
    let anonymous = given_session(&*store, anonymous).await;
    assert_eq!(stored(&*store, anonymous.id).await, anonymous);

    // The token hash is unique, the session id too.
    let same_token = new_session(&server, Some(&user));
    assert_conflict(
        store
            .insert_session(&same_token, &token_hash(&session))
            .await,
    );
    assert_conflict(
        store
            .insert_session(&session, &SecretHash::of(b"another token"))
            .await,
    );
}

async fn updating_a_session_writes_every_mutable_field(db: TestDb) {
    let store = open(&db).await;
    let server = given_server(&*store).await;
    let user = given_user(&*store, &server, "alice").await;
    let blocked = Session {
        state: SessionState::BlockedCaptcha,
        pending_mfa: Some(MfaKind::Pin),
        captcha_answer: Some(SecretHash::of(b"first answer")),
        ..new_session(&server, None)
    };
    let blocked = given_session(&*store, blocked).await;

    let updated = Session {
        user_id: Some(user.id),
        methods: vec![AuthMethod::Pwd, AuthMethod::Pin, AuthMethod::Hwk],
        state: SessionState::Revoked,
        last_active_at: NOW + 5,
        idle_expires_at: NOW + 905,
        absolute_expires_at: NOW + 1_000_000,
        idle_timeout: 2_592_000,
        client: ClientInfo {
            ip: Some("192.0.2.7".into()),
            user_agent: Some("curl/8".into()),
            device_name: Some("laptop".into()),
        },
        pending_mfa: None,
        mfa_failures: u32::MAX,
        captcha_answer: Some(SecretHash::of(b"second answer")),
        captcha_failures: 4,
        password_ok: true,
        revoked_at: Some(NOW + 6),
        ..blocked.clone()
    };
    store.update_session(&updated).await.unwrap();
    assert_eq!(stored(&*store, blocked.id).await, updated);

    // And back to empty values.
    store.update_session(&blocked).await.unwrap();
    assert_eq!(stored(&*store, blocked.id).await, blocked);
    assert_eq!(
        store.session_by_token(&token_hash(&blocked)).await.unwrap(),
        Some(blocked.clone()),
        "an update keeps the token"
    );

    assert_not_found(store.update_session(&new_session(&server, None)).await);
}

async fn touching_moves_activity_forward_only_and_only_on_active_sessions(db: TestDb) {
    let store = open(&db).await;
    let server = given_server(&*store).await;
    let user = given_user(&*store, &server, "alice").await;
    let active = given_session(&*store, new_session(&server, Some(&user))).await;
    let other = given_session(&*store, new_session(&server, Some(&user))).await;
    let pending = given_session(
        &*store,
        Session {
            state: SessionState::PendingMfa,
            ..new_session(&server, Some(&user))
        },
    )
    .await;
    let revoked = given_session(
        &*store,
        Session {
            state: SessionState::Revoked,
            revoked_at: Some(NOW - 1),
            ..new_session(&server, Some(&user))
        },
    )
    .await;
    let touch = |s: &Session, last_active_at: i64| SessionTouch {
        id: s.id,
        last_active_at,
        idle_expires_at: last_active_at + 900,
    };

    store.touch_sessions(&[]).await.unwrap();
    store
        .touch_sessions(&[
            touch(&active, NOW),
            touch(&other, NOW + 7),
            touch(&pending, NOW),
            touch(&revoked, NOW),
            SessionTouch {
                id: Uuid::new_v4(),
                last_active_at: NOW,
                idle_expires_at: NOW + 900,
            },
        ])
        .await
        .unwrap();
    let got = stored(&*store, active.id).await;
    assert_eq!((got.last_active_at, got.idle_expires_at), (NOW, NOW + 3600));
    let got = stored(&*store, other.id).await;
    assert_eq!(
        (got.last_active_at, got.idle_expires_at),
        (NOW + 7, NOW + 3600)
    );
    assert_eq!(stored(&*store, pending.id).await, pending);
    assert_eq!(stored(&*store, revoked.id).await, revoked);

    // Each value moves forward on its own; an older touch changes nothing.
    store
        .touch_sessions(&[
            SessionTouch {
                id: active.id,
                last_active_at: NOW - 30,
                idle_expires_at: NOW + 4000,
            },
            touch(&other, NOW + 1),
        ])
        .await
        .unwrap();
    let got = stored(&*store, active.id).await;
    assert_eq!((got.last_active_at, got.idle_expires_at), (NOW, NOW + 4000));
    let got = stored(&*store, other.id).await;
    assert_eq!(
        (got.last_active_at, got.idle_expires_at),
        (NOW + 7, NOW + 3600)
    );

    // The same session twice in one batch ends at the later values, in either order.
    store
        .touch_sessions(&[touch(&active, NOW + 4000), touch(&active, NOW + 3500)])
        .await
        .unwrap();
    let got = stored(&*store, active.id).await;
    assert_eq!(
        (got.last_active_at, got.idle_expires_at),
        (NOW + 4000, NOW + 4900)
    );
    let untouched = Session {
        last_active_at: NOW + 4000,
        idle_expires_at: NOW + 4900,
        ..active.clone()
    };
    assert_eq!(got, untouched, "a touch changes nothing else");
}

async fn overlapping_touch_batches_and_a_revocation_run_concurrently_without_failing(db: TestDb) {
    // Several processes flush their coalesced touches for the same sessions in whatever order
    // they saw them, while a user logs out everywhere: no flush may fail (e.g. on a deadlock).
    let store = open(&db).await;
    let server = given_server(&*store).await;
    let alice = given_user(&*store, &server, "alice").await;
    let bob = given_user(&*store, &server, "bob").await;
    let mut ids = Vec::new();
    for i in 0..60 {
        let owner = if i % 2 == 0 { &alice } else { &bob };
        ids.push(
            given_session(&*store, new_session(&server, Some(owner)))
                .await
                .id,
        );
    }

    let flushers: Vec<_> = (0..4i64)
        .map(|flusher| {
            let store = store.clone();
            let mut ids = ids.clone();
            if flusher % 2 == 1 {
                ids.reverse();
            }
            tokio::spawn(async move {
                for round in 0..10i64 {
                    let at = NOW + round * 10 + flusher;
                    let touches: Vec<SessionTouch> = ids
                        .iter()
                        .map(|&id| SessionTouch {
                            id,
                            last_active_at: at,
                            idle_expires_at: at + 3600,
                        })
                        .collect();
                    store.touch_sessions(&touches).await?;
                }
                Ok::<(), StoreError>(())
            })
        })
        .collect();
    let revoked = store.revoke_user_sessions(alice.id, NOW).await.unwrap();
    for flusher in flushers {
        flusher.await.unwrap().unwrap();
    }

    assert_eq!(revoked.len(), 30);
    for id in ids {
        let got = stored(&*store, id).await;
        if got.user_id == Some(bob.id) {
            assert_eq!(got.state, SessionState::Active);
            assert_eq!(got.last_active_at, NOW + 93, "the latest touch wins");
            assert_eq!(got.idle_expires_at, NOW + 93 + 3600);
        } else {
            assert_eq!(got.state, SessionState::Revoked);
        }
    }
}

async fn a_session_is_revoked_once(db: TestDb) {
    let store = open(&db).await;
    let server = given_server(&*store).await;
    let session = given_session(&*store, new_session(&server, None)).await;

    assert!(store.revoke_session(session.id, NOW + 1).await.unwrap());
    assert!(!store.revoke_session(session.id, NOW + 2).await.unwrap());
    assert!(!store.revoke_session(Uuid::new_v4(), NOW).await.unwrap());

    let got = stored(&*store, session.id).await;
    assert_eq!(got.state, SessionState::Revoked);
    assert_eq!(got.revoked_at, Some(NOW + 1), "the first revocation's time");
    assert!(!got.is_live(NOW));
}

async fn revoking_a_users_sessions_answers_only_those_that_were_live(db: TestDb) {
    let store = open(&db).await;
    let server = given_server(&*store).await;
    let user = given_user(&*store, &server, "alice").await;
    let other_user = given_user(&*store, &server, "bob").await;
    let active = given_session(&*store, new_session(&server, Some(&user))).await;
    let pending = given_session(
        &*store,
        Session {
            state: SessionState::PendingMfa,
            ..new_session(&server, Some(&user))
        },
    )
    .await;
    let idle = given_session(
        &*store,
        Session {
            idle_expires_at: NOW,
            ..new_session(&server, Some(&user))
        },
    )
    .await;
    let too_old = given_session(
        &*store,
        Session {
            absolute_expires_at: NOW - 1,
            ..new_session(&server, Some(&user))
        },
    )
    .await;
    let revoked = given_session(
        &*store,
        Session {
            state: SessionState::Revoked,
            revoked_at: Some(NOW - 5),
            ..new_session(&server, Some(&user))
        },
    )
    .await;
    let someone_else = given_session(&*store, new_session(&server, Some(&other_user))).await;

    let ids: HashSet<Uuid> = store
        .revoke_user_sessions(user.id, NOW)
        .await
        .unwrap()
        .into_iter()
        .collect();
    assert_eq!(ids, HashSet::from([active.id, pending.id]));

    for id in [active.id, pending.id] {
        let got = stored(&*store, id).await;
        assert_eq!(got.state, SessionState::Revoked);
        assert_eq!(got.revoked_at, Some(NOW));
    }
    assert_eq!(stored(&*store, idle.id).await, idle);
    assert_eq!(stored(&*store, too_old.id).await, too_old);
    assert_eq!(stored(&*store, revoked.id).await, revoked);
    assert_eq!(stored(&*store, someone_else.id).await, someone_else);

    assert!(store
        .revoke_user_sessions(user.id, NOW + 1)
        .await
        .unwrap()
        .is_empty());
}

async fn a_users_sessions_are_listed_newest_activity_first_in_pages(db: TestDb) {
    let store = open(&db).await;
    let server = given_server(&*store).await;
    let user = given_user(&*store, &server, "alice").await;
    let other_user = given_user(&*store, &server, "bob").await;
    let mut listed = Vec::new();
    for last_active_at in [NOW - 50, NOW - 10, NOW - 40, NOW - 20, NOW - 30] {
        let session = Session {
            last_active_at,
            ..new_session(&server, Some(&user))
        };
        listed.push(given_session(&*store, session).await);
    }
    listed.sort_by_key(|s| std::cmp::Reverse(s.last_active_at));
    for hidden in [
        Session {
            state: SessionState::PendingMfa,
            ..new_session(&server, Some(&user))
        },
        Session {
            state: SessionState::BlockedCaptcha,
            ..new_session(&server, Some(&user))
        },
        Session {
            state: SessionState::Revoked,
            revoked_at: Some(NOW - 1),
            ..new_session(&server, Some(&user))
        },
        Session {
            idle_expires_at: NOW,
            ..new_session(&server, Some(&user))
        },
        Session {
            absolute_expires_at: NOW,
            ..new_session(&server, Some(&user))
        },
        new_session(&server, Some(&other_user)),
    ] {
        given_session(&*store, hidden).await;
    }

    let all = store.user_sessions(user.id, NOW, 0, 100).await.unwrap();
    assert_eq!(all, listed);
    let unbounded = store
        .user_sessions(user.id, NOW, 0, u64::MAX)
        .await
        .unwrap();
    assert_eq!(unbounded, listed);

    let page = store.user_sessions(user.id, NOW, 1, 2).await.unwrap();
    assert_eq!(page, listed[1..3].to_vec());
    let tail = store.user_sessions(user.id, NOW, 4, 2).await.unwrap();
    assert_eq!(tail, listed[4..].to_vec());
    assert!(store
        .user_sessions(user.id, NOW, 5, 2)
        .await
        .unwrap()
        .is_empty());
    assert!(store
        .user_sessions(user.id, NOW, 0, 0)
        .await
        .unwrap()
        .is_empty());
}

async fn only_active_unexpired_sessions_are_counted(db: TestDb) {
    let store = open(&db).await;
    let server = given_server(&*store).await;
    let alice = given_user(&*store, &server, "alice").await;
    let bob = given_user(&*store, &server, "bob").await;
    assert_eq!(store.count_active_sessions(NOW).await.unwrap(), 0);
    assert_eq!(store.count_user_sessions(alice.id, NOW).await.unwrap(), 0);

    given_session(&*store, new_session(&server, Some(&alice))).await;
    given_session(&*store, new_session(&server, Some(&alice))).await;
    given_session(&*store, new_session(&server, Some(&bob))).await;
    given_session(
        &*store,
        Session {
            idle_expires_at: NOW + 10,
            ..new_session(&server, Some(&bob))
        },
    )
    .await;
    given_session(
        &*store,
        Session {
            state: SessionState::PendingMfa,
            ..new_session(&server, Some(&alice))
        },
    )
    .await;
    given_session(
        &*store,
        Session {
            state: SessionState::Revoked,
            revoked_at: Some(NOW),
            ..new_session(&server, Some(&alice))
        },
    )
    .await;

    assert_eq!(store.count_user_sessions(alice.id, NOW).await.unwrap(), 2);
    assert_eq!(store.count_user_sessions(bob.id, NOW).await.unwrap(), 2);
    assert_eq!(store.count_active_sessions(NOW).await.unwrap(), 4);
    // At a session's idle deadline it is no longer counted.
    assert_eq!(
        store.count_user_sessions(bob.id, NOW + 10).await.unwrap(),
        1
    );
    assert_eq!(store.count_active_sessions(NOW + 10).await.unwrap(), 3);
    assert_eq!(
        store
            .count_user_sessions(Uuid::new_v4(), NOW)
            .await
            .unwrap(),
        0
    );
}

async fn failures_are_counted_within_the_window_and_cleared_per_key(db: TestDb) {
    let store = open(&db).await;
    for at in [NOW - 300, NOW - 60, NOW - 30, NOW] {
        store.record_failure("user:alice", at).await.unwrap();
    }
    store.record_failure("ip:192.0.2.1", NOW).await.unwrap();
    // Two failures at the same second both count.
    store.record_failure("ip:192.0.2.1", NOW).await.unwrap();

    assert_eq!(
        store.failures_since("user:alice", NOW - 301).await.unwrap(),
        4
    );
    assert_eq!(
        store.failures_since("user:alice", NOW - 120).await.unwrap(),
        3
    );
    // The window is open at its start: a failure exactly at `since` is outside.
    assert_eq!(
        store.failures_since("user:alice", NOW - 60).await.unwrap(),
        2
    );
    assert_eq!(
        store.failures_since("ip:192.0.2.1", NOW - 1).await.unwrap(),
        2
    );
    assert_eq!(
        store.failures_since("user:bob", NOW - 1000).await.unwrap(),
        0
    );

    store.clear_failures("user:alice").await.unwrap();
    assert_eq!(store.failures_since("user:alice", 0).await.unwrap(), 0);
    assert_eq!(store.failures_since("ip:192.0.2.1", 0).await.unwrap(), 2);
    store.clear_failures("user:nobody").await.unwrap();
}

async fn a_captcha_requirement_is_set_idempotently_and_cleared(db: TestDb) {
    let store = open(&db).await;
    assert!(!store.captcha_required("user:alice").await.unwrap());

    store.require_captcha("user:alice", NOW).await.unwrap();
    store.require_captcha("user:alice", NOW + 1).await.unwrap();
    assert!(store.captcha_required("user:alice").await.unwrap());
    assert!(!store.captcha_required("user:bob").await.unwrap());

    store.clear_captcha_requirement("user:alice").await.unwrap();
    assert!(!store.captcha_required("user:alice").await.unwrap());
    store.clear_captcha_requirement("user:alice").await.unwrap();

    store.require_captcha("user:alice", NOW + 2).await.unwrap();
    assert!(store.captcha_required("user:alice").await.unwrap());
}

async fn audit_events_are_listed_newest_first_per_server(db: TestDb) {
    let store = open(&db).await;
    let server = given_server(&*store).await;
    let other_server = ServerId::generate();
    let event = |kind: &str, server_id: &ServerId| AuditEvent {
        at: NOW,
        server_id: server_id.clone(),
        kind: kind.to_owned(),
        userid: None,
        session_id: None,
        ip: None,
        detail: None,
    };
    let full = AuditEvent {
        userid: Some("alice".into()),
        session_id: Some(Uuid::new_v4()),
        ip: Some("2001:db8::2".into()),
        detail: Some("totp".into()),
        ..event("login_succeeded", &server.id)
    };
    // Same second for all: insertion order decides, not the time.
    store
        .insert_audit(&event("login_failed", &server.id))
        .await
        .unwrap();
    store.insert_audit(&full).await.unwrap();
    // Audit events outlive their server: no server row is needed.
    store
        .insert_audit(&event("login_failed", &other_server))
        .await
        .unwrap();
    store
        .insert_audit(&event("session_revoked", &server.id))
        .await
        .unwrap();

    let newest = store.audit_events(&server.id, 2).await.unwrap();
    assert_eq!(
        newest,
        vec![event("session_revoked", &server.id), full.clone()]
    );
    let all = store.audit_events(&server.id, u64::MAX).await.unwrap();
    assert_eq!(
        all.iter().map(|e| e.kind.as_str()).collect::<Vec<_>>(),
        ["session_revoked", "login_succeeded", "login_failed"]
    );
    assert_eq!(
        store.audit_events(&other_server, 10).await.unwrap().len(),
        1
    );
    assert!(store
        .audit_events(&ServerId::generate(), 10)
        .await
        .unwrap()
        .is_empty());
}

async fn purge_removes_old_failures_and_long_dead_sessions_only(db: TestDb) {
    let store = open(&db).await;
    let server = given_server(&*store).await;
    let user = given_user(&*store, &server, "alice").await;
    store.record_failure("user:alice", NOW - 100).await.unwrap();
    store.record_failure("user:alice", NOW - 50).await.unwrap();
    store.record_failure("user:alice", NOW).await.unwrap();

    let cutoff = NOW - 50;
    let revoked_long_ago = Session {
        state: SessionState::Revoked,
        revoked_at: Some(cutoff - 1),
        ..new_session(&server, Some(&user))
    };
    let revoked_lately = Session {
        state: SessionState::Revoked,
        revoked_at: Some(cutoff),
        ..new_session(&server, Some(&user))
    };
    let idle_long_ago = Session {
        idle_expires_at: cutoff - 1,
        ..new_session(&server, Some(&user))
    };
    let too_old_long_ago = Session {
        absolute_expires_at: cutoff - 1,
        ..new_session(&server, Some(&user))
    };
    let idle_lately = Session {
        idle_expires_at: cutoff,
        ..new_session(&server, Some(&user))
    };
    let live = new_session(&server, Some(&user));
    for s in [
        &revoked_long_ago,
        &revoked_lately,
        &idle_long_ago,
        &too_old_long_ago,
        &idle_lately,
        &live,
    ] {
        given_session(&*store, s.clone()).await;
    }

    // One failure and three sessions are older than the cut-offs.
    assert_eq!(store.purge(NOW - 50, cutoff).await.unwrap(), 4);

    assert_eq!(store.failures_since("user:alice", 0).await.unwrap(), 2);
    for gone in [&revoked_long_ago, &idle_long_ago, &too_old_long_ago] {
        assert_eq!(store.session(gone.id).await.unwrap(), None);
    }
    for kept in [&revoked_lately, &idle_lately, &live] {
        assert_eq!(&stored(&*store, kept.id).await, kept);
    }
    assert_eq!(store.purge(NOW - 50, cutoff).await.unwrap(), 0);
}

async fn a_sessions_idle_timeout_round_trips_through_insert_and_update(db: TestDb) {
    let store = open(&db).await;
    let server = given_server(&*store).await;
    let user = given_user(&*store, &server, "alice").await;
    // A token session (family B) tolerates far longer inactivity than a browser session.
    let token_session = given_session(
        &*store,
        Session {
            idle_timeout: 30 * 86_400,
            ..new_session(&server, Some(&user))
        },
    )
    .await;
    let browser_session = given_session(
        &*store,
        Session {
            idle_timeout: 1,
            ..new_session(&server, Some(&user))
        },
    )
    .await;
    assert_eq!(
        stored(&*store, token_session.id).await.idle_timeout,
        30 * 86_400
    );
    assert_eq!(
        store
            .session_by_token(&token_hash(&browser_session))
            .await
            .unwrap()
            .expect("session")
            .idle_timeout,
        1
    );

    // The column holds every i64.
    for idle_timeout in [i64::MAX, 0, 900] {
        let updated = Session {
            idle_timeout,
            ..token_session.clone()
        };
        store.update_session(&updated).await.unwrap();
        assert_eq!(stored(&*store, token_session.id).await, updated);
    }
    assert_eq!(
        stored(&*store, browser_session.id).await,
        browser_session,
        "an update writes only its own session"
    );
    let listed = store.user_sessions(user.id, NOW, 0, 10).await.unwrap();
    assert_eq!(
        listed
            .iter()
            .map(|s| (s.id, s.idle_timeout))
            .collect::<HashSet<_>>(),
        HashSet::from([(token_session.id, 900), (browser_session.id, 1)]),
        "listed sessions carry their idle timeout"
    );
}

async fn a_refresh_token_is_fresh_once_then_reused_and_an_unknown_one_is_unknown(db: TestDb) {
    let store = open(&db).await;
    let server = given_server(&*store).await;
    let user = given_user(&*store, &server, "alice").await;
    let session = given_session(&*store, new_session(&server, Some(&user))).await;
    let first = SecretHash::of(b"first refresh token");
    let second = SecretHash::of(b"second refresh token");
    store
        .insert_refresh_token(&first, session.id, NOW)
        .await
        .unwrap();
    store
        .insert_refresh_token(&second, session.id, NOW + 1)
        .await
        .unwrap();
    assert_conflict(
        store
            .insert_refresh_token(&first, session.id, NOW + 2)
            .await,
    );

    let fresh = RefreshUse::Fresh {
        session_id: session.id,
    };
    let reused = RefreshUse::Reused {
        session_id: session.id,
    };
    assert_eq!(
        store.use_refresh_token(&first, NOW + 10).await.unwrap(),
        fresh
    );
    assert_eq!(
        store.use_refresh_token(&first, NOW + 20).await.unwrap(),
        reused,
        "a second use is a reuse"
    );
    assert_eq!(
        store.use_refresh_token(&first, NOW + 30).await.unwrap(),
        reused,
        "and so is every later one"
    );
    // Each token of a session is used on its own.
    assert_eq!(
        store.use_refresh_token(&second, NOW + 40).await.unwrap(),
        fresh
    );
    assert_eq!(
        store.use_refresh_token(&second, NOW + 40).await.unwrap(),
        reused
    );

    assert_eq!(
        store
            .use_refresh_token(&SecretHash::of(b"never issued"), NOW)
            .await
            .unwrap(),
        RefreshUse::Unknown
    );
    assert_eq!(
        store
            .use_refresh_token(&SecretHash::of(b"never issued"), NOW)
            .await
            .unwrap(),
        RefreshUse::Unknown,
        "presenting an unknown token records nothing"
    );
}

async fn racing_uses_of_a_refresh_token_see_exactly_one_fresh(db: TestDb) {
    let store = open(&db).await;
    let server = given_server(&*store).await;
    let user = given_user(&*store, &server, "alice").await;
    let session = given_session(&*store, new_session(&server, Some(&user))).await;

    for round in 0..3u8 {
        let token = SecretHash::of(&[b'r', round]);
        store
            .insert_refresh_token(&token, session.id, NOW)
            .await
            .unwrap();
        let racers: Vec<_> = (0..8i64)
            .map(|i| {
                let store = store.clone();
                tokio::spawn(async move { store.use_refresh_token(&token, NOW + i).await })
            })
            .collect();
        let mut fresh = 0;
        for racer in racers {
            match racer.await.unwrap().unwrap() {
                RefreshUse::Fresh { session_id } => {
                    assert_eq!(session_id, session.id);
                    fresh += 1;
                }
                RefreshUse::Reused { session_id } => assert_eq!(session_id, session.id),
                RefreshUse::Unknown => panic!("a stored token was unknown"),
            }
        }
        assert_eq!(fresh, 1, "round {round}: exactly one use is fresh");
    }
}

async fn refresh_tokens_die_with_their_session(db: TestDb) {
    let store = open(&db).await;
    let server = given_server(&*store).await;
    let alice = given_user(&*store, &server, "alice").await;
    let bob = given_user(&*store, &server, "bob").await;
    let alices = given_session(&*store, new_session(&server, Some(&alice))).await;
    let cutoff = NOW - 50;
    let bobs_dead = given_session(
        &*store,
        Session {
            state: SessionState::Revoked,
            revoked_at: Some(cutoff - 1),
            ..new_session(&server, Some(&bob))
        },
    )
    .await;
    let bobs_live = given_session(&*store, new_session(&server, Some(&bob))).await;
    let alices_token = SecretHash::of(b"alice's token");
    let dead_token = SecretHash::of(b"bob's dead token");
    let live_token = SecretHash::of(b"bob's live token");
    let used_live_token = SecretHash::of(b"bob's used live token");
    for (token, session) in [
        (&alices_token, &alices),
        (&dead_token, &bobs_dead),
        (&live_token, &bobs_live),
        (&used_live_token, &bobs_live),
    ] {
        store
            .insert_refresh_token(token, session.id, NOW - 100)
            .await
            .unwrap();
    }
    assert!(matches!(
        store
            .use_refresh_token(&used_live_token, NOW - 90)
            .await
            .unwrap(),
        RefreshUse::Fresh { .. }
    ));

    // Deleting a user deletes its sessions, and they their refresh tokens.
    assert!(store.delete_user(alice.id).await.unwrap());
    assert_eq!(
        store.use_refresh_token(&alices_token, NOW).await.unwrap(),
        RefreshUse::Unknown
    );
    // A token cannot outlive (or predate) its session.
    assert!(store
        .insert_refresh_token(&SecretHash::of(b"orphan"), alices.id, NOW)
        .await
        .is_err());

    // Purging a long-dead session deletes its refresh tokens; only the session is counted.
    assert_eq!(store.purge(NOW - 1000, cutoff).await.unwrap(), 1);
    assert_eq!(store.session(bobs_dead.id).await.unwrap(), None);
    assert_eq!(
        store.use_refresh_token(&dead_token, NOW).await.unwrap(),
        RefreshUse::Unknown
    );
    // A live session's tokens are kept, used or not.
    assert_eq!(
        store.use_refresh_token(&live_token, NOW).await.unwrap(),
        RefreshUse::Fresh {
            session_id: bobs_live.id
        }
    );
    assert_eq!(
        store
            .use_refresh_token(&used_live_token, NOW)
            .await
            .unwrap(),
        RefreshUse::Reused {
            session_id: bobs_live.id
        }
    );
}

fn new_handshake(server: &Server, name: &[u8], expires_at: i64) -> ScramHandshake {
    ScramHandshake {
        nonce_hash: SecretHash::of(name),
        server_id: server.id.clone(),
        email: "alice@example.com".into(),
        client_nonce: "fyko+d2lbbFgONRv9qkxdawL".into(),
        salt: vec![0, 0x80, 0xff, 1],
        iterations: 4096,
        platform: None,
        expires_at,
    }
}

async fn a_handshake_round_trips_every_field_and_is_taken_once(db: TestDb) {
    let store = open(&db).await;
    let server = given_server(&*store).await;
    let full = ScramHandshake {
        email: "Al\u{ef}ce+tag@example.com".into(),
        client_nonce: "rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0".into(),
        salt: (0..=255u8).collect(),
        // u32::MAX iterations: the column must hold every u32.
        iterations: u32::MAX,
        platform: Some("ios \u{2603}".into()),
        ..new_handshake(&server, b"full", NOW + 60)
    };
    let bare = ScramHandshake {
        salt: vec![],
        ..new_handshake(&server, b"bare", NOW + 60)
    };
    // No server row is needed (the handshake names a server id as given).
    let elsewhere = ScramHandshake {
        server_id: ServerId::generate(),
        ..new_handshake(&server, b"elsewhere", NOW + 60)
    };
    let expired = new_handshake(&server, b"expired", NOW - 1);
    for h in [&full, &bare, &elsewhere, &expired] {
        store.insert_handshake(h).await.unwrap();
    }
    assert_conflict(
        store
            .insert_handshake(&ScramHandshake {
                email: "bob@example.com".into(),
                ..full.clone()
            })
            .await,
    );

    assert_eq!(
        store.take_handshake(&full.nonce_hash).await.unwrap(),
        Some(full.clone())
    );
    assert_eq!(
        store.take_handshake(&full.nonce_hash).await.unwrap(),
        None,
        "a handshake is usable once"
    );
    assert_eq!(
        store.take_handshake(&bare.nonce_hash).await.unwrap(),
        Some(bare.clone())
    );
    assert_eq!(
        store.take_handshake(&elsewhere.nonce_hash).await.unwrap(),
        Some(elsewhere)
    );
    // Expiry is the caller's to judge: an expired handshake is still taken (and so gone).
    assert_eq!(
        store.take_handshake(&expired.nonce_hash).await.unwrap(),
        Some(expired.clone())
    );
    assert_eq!(
        store.take_handshake(&expired.nonce_hash).await.unwrap(),
        None
    );
    assert_eq!(
        store
            .take_handshake(&SecretHash::of(b"never started"))
            .await
            .unwrap(),
        None
    );

    // Once taken, the same nonce may be stored again.
    store.insert_handshake(&full).await.unwrap();

    // Racing takes of one handshake: exactly one gets it.
    let racers: Vec<_> = (0..8)
        .map(|_| {
            let store = store.clone();
            let nonce_hash = full.nonce_hash;
            tokio::spawn(async move { store.take_handshake(&nonce_hash).await })
        })
        .collect();
    let mut taken = 0;
    for racer in racers {
        if let Some(h) = racer.await.unwrap().unwrap() {
            assert_eq!(h, full);
            taken += 1;
        }
    }
    assert_eq!(taken, 1);
}

async fn purge_removes_expired_handshakes_only(db: TestDb) {
    let store = open(&db).await;
    let server = given_server(&*store).await;
    // Handshakes go by the failures cut-off, not the (much older) sessions one.
    let failures_before = NOW;
    let sessions_before = NOW - 10_000;
    let long_expired = new_handshake(&server, b"long expired", NOW - 600);
    let just_expired = new_handshake(&server, b"just expired", failures_before - 1);
    let at_cutoff = new_handshake(&server, b"at the cut-off", failures_before);
    let pending = new_handshake(&server, b"pending", NOW + 60);
    for h in [&long_expired, &just_expired, &at_cutoff, &pending] {
        store.insert_handshake(h).await.unwrap();
    }

    assert_eq!(
        store.purge(failures_before, sessions_before).await.unwrap(),
        2
    );
    for gone in [&long_expired, &just_expired] {
        assert_eq!(store.take_handshake(&gone.nonce_hash).await.unwrap(), None);
    }
    assert_eq!(
        store.purge(failures_before, sessions_before).await.unwrap(),
        0
    );
    for kept in [at_cutoff, pending] {
        assert_eq!(
            store.take_handshake(&kept.nonce_hash).await.unwrap(),
            Some(kept)
        );
    }
}

fn new_signing_key(kid: &str, created_at: i64, fill: u8) -> SigningKey {
    let mut secret_key = [fill; 32];
    secret_key[0] = 0;
    secret_key[31] = 0xff;
    SigningKey {
        kid: kid.to_owned(),
        secret_key,
        public_key: [fill ^ 0xff; 32],
        created_at,
        retired_at: None,
    }
}

async fn signing_keys_are_listed_newest_first_and_retired_all_but_one(db: TestDb) {
    let store = open(&db).await;
    assert!(store.signing_keys().await.unwrap().is_empty());

    let oldest = SigningKey {
        retired_at: Some(NOW - 500),
        ..new_signing_key("k-oldest", NOW - 1000, 1)
    };
    let older = new_signing_key("k-older", NOW - 100, 2);
    // Two keys of the same second: kid order decides, in bytes ("a" > "B"), whatever the
    // database's locale.
    let upper = new_signing_key("k-B", NOW, 3);
    let lower = new_signing_key("k-a", NOW, 0x80);
    for key in [&upper, &oldest, &lower, &older] {
        store.insert_signing_key(key).await.unwrap();
    }
    assert_conflict(
        store
            .insert_signing_key(&new_signing_key("k-older", NOW + 1, 9))
            .await,
    );
    assert_eq!(
        store.signing_keys().await.unwrap(),
        vec![lower.clone(), upper.clone(), older.clone(), oldest.clone()]
    );

    // Rotation: the newest key stays, every other unretired key is retired now; a key retired
    // before keeps its time.
    store.retire_signing_keys("k-a", NOW + 5).await.unwrap();
    let retired = |key: &SigningKey| SigningKey {
        retired_at: Some(NOW + 5),
        ..key.clone()
    };
    let after = vec![
        lower.clone(),
        retired(&upper),
        retired(&older),
        oldest.clone(),
    ];
    assert_eq!(store.signing_keys().await.unwrap(), after);

    // Idempotent: retiring again changes nothing.
    store.retire_signing_keys("k-a", NOW + 9).await.unwrap();
    assert_eq!(store.signing_keys().await.unwrap(), after);

    // The next rotation retires the previous key.
    let newest = new_signing_key("k-newest", NOW + 10, 4);
    store.insert_signing_key(&newest).await.unwrap();
    store
        .retire_signing_keys("k-newest", NOW + 10)
        .await
        .unwrap();
    let keys = store.signing_keys().await.unwrap();
    assert_eq!(
        keys.iter()
            .map(|k| (k.kid.as_str(), k.retired_at))
            .collect::<Vec<_>>(),
        vec![
            ("k-newest", None),
            ("k-a", Some(NOW + 10)),
            ("k-B", Some(NOW + 5)),
            ("k-older", Some(NOW + 5)),
            ("k-oldest", Some(NOW - 500)),
        ]
    );
    assert_eq!(keys[0], newest, "keys round-trip byte for byte");
}

fn new_account(server: &Server, key: u8, user: Option<&User>, created_at: i64) -> NewAccount {
    let mut public_key = [key; 32];
    // Every byte value class: zero, high bit, 0xff.
    public_key[0] = 0;
    public_key[1] = 0x80;
    public_key[31] = 0xff;
    NewAccount {
        server_id: server.id.clone(),
        public_key,
        description: format!("phone {key}"),
        user_id: user.map(|u| u.id),
        client_version: Some("1.2.3".into()),
        created_at,
    }
}

/// The account as the store should answer it right after the insert.
fn inserted(id: i64, a: &NewAccount) -> Account {
    Account {
        id,
        server_id: a.server_id.clone(),
        public_key: a.public_key,
        description: a.description.clone(),
        user_id: a.user_id,
        blocked: false,
        client_version: a.client_version.clone(),
        created_at: a.created_at,
        last_login: None,
        last_provoke: None,
    }
}

async fn given_account(store: &dyn Store, account: NewAccount) -> Account {
    let id = store.insert_account(&account).await.unwrap();
    inserted(id, &account)
}

async fn stored_account(store: &dyn Store, account: &Account) -> Account {
    store
        .account(&account.server_id, account.id)
        .await
        .unwrap()
        .expect("account stored")
}

async fn accounts_are_unique_per_server_key_and_found_only_on_their_server(db: TestDb) {
    let store = open(&db).await;
    let server = given_server(&*store).await;
    let other_server = new_server("other", NOW);
    store.insert_server(&other_server).await.unwrap();
    let alice = given_user(&*store, &server, "alice").await;

    let full = given_account(
        &*store,
        NewAccount {
            description: "Al\u{ef}ce's phone \u{2603}".into(),
            client_version: Some("2.0.0-beta+\u{3b1}".into()),
            ..new_account(&server, 1, Some(&alice), NOW - 10)
        },
    )
    .await;
    let bare = given_account(
        &*store,
        NewAccount {
            description: String::new(),
            client_version: None,
            ..new_account(&server, 2, None, NOW)
        },
    )
    .await;
    assert_ne!(full.id, bare.id);
    assert_eq!(stored_account(&*store, &full).await, full);
    assert_eq!(stored_account(&*store, &bare).await, bare);

    // One enrolment per key and server...
    assert_conflict(
        store
            .insert_account(&NewAccount {
                description: "again".into(),
                user_id: None,
                ..new_account(&server, 1, Some(&alice), NOW + 1)
            })
            .await,
    );
    // ...but the same key may enrol on another server, as another account.
    let elsewhere = given_account(&*store, new_account(&other_server, 1, None, NOW)).await;
    assert!(![full.id, bare.id].contains(&elsewhere.id));
    assert_eq!(stored_account(&*store, &elsewhere).await, elsewhere);

    // An account is found on its own server only.
    assert_eq!(
        store.account(&other_server.id, full.id).await.unwrap(),
        None
    );
    assert_eq!(store.account(&server.id, elsewhere.id).await.unwrap(), None);
    assert_eq!(
        store.account(&ServerId::generate(), full.id).await.unwrap(),
        None
    );
    assert_eq!(store.account(&server.id, i64::MAX).await.unwrap(), None);
    assert_eq!(store.account(&server.id, -1).await.unwrap(), None);

    // The refused insert changed nothing.
    assert_eq!(stored_account(&*store, &full).await, full);
    assert_eq!(store.user_accounts(alice.id).await.unwrap(), vec![full]);
}

async fn a_users_accounts_are_listed_oldest_first_and_rebound_or_unbound(db: TestDb) {
    let store = open(&db).await;
    let server = given_server(&*store).await;
    let alice = given_user(&*store, &server, "alice").await;
    let bob = given_user(&*store, &server, "bob").await;

    let a1 = given_account(&*store, new_account(&server, 1, Some(&alice), NOW)).await;
    let b1 = given_account(&*store, new_account(&server, 2, Some(&bob), NOW + 1)).await;
    let a2 = given_account(&*store, new_account(&server, 3, Some(&alice), NOW + 2)).await;
    let unbound = given_account(&*store, new_account(&server, 4, None, NOW + 3)).await;
    let a3 = given_account(&*store, new_account(&server, 5, Some(&alice), NOW + 4)).await;

    assert_eq!(
        store.user_accounts(alice.id).await.unwrap(),
        vec![a1.clone(), a2.clone(), a3.clone()]
    );
    assert_eq!(store.user_accounts(bob.id).await.unwrap(), vec![b1.clone()]);
    assert!(store
        .user_accounts(Uuid::new_v4())
        .await
        .unwrap()
        .is_empty());

    // Rebinding moves an account to another user; the list stays oldest first.
    store.set_account_user(b1.id, Some(alice.id)).await.unwrap();
    let b1 = Account {
        user_id: Some(alice.id),
        ..b1
    };
    assert_eq!(stored_account(&*store, &b1).await, b1);
    assert_eq!(
        store.user_accounts(alice.id).await.unwrap(),
        vec![a1.clone(), b1.clone(), a2.clone(), a3.clone()]
    );
    assert!(store.user_accounts(bob.id).await.unwrap().is_empty());

    // Binding an unbound account, and unbinding one.
    store
        .set_account_user(unbound.id, Some(bob.id))
        .await
        .unwrap();
    store.set_account_user(a2.id, None).await.unwrap();
    let bound = Account {
        user_id: Some(bob.id),
        ..unbound
    };
    let a2 = Account {
        user_id: None,
        ..a2
    };
    assert_eq!(stored_account(&*store, &bound).await, bound);
    assert_eq!(stored_account(&*store, &a2).await, a2);
    assert_eq!(
        store.user_accounts(alice.id).await.unwrap(),
        vec![a1.clone(), b1, a3]
    );
    assert_eq!(store.user_accounts(bob.id).await.unwrap(), vec![bound]);

    // Setting the same user again is not an error.
    store.set_account_user(a1.id, Some(alice.id)).await.unwrap();
    assert_eq!(stored_account(&*store, &a1).await, a1);
}

async fn updates_of_an_unknown_account_are_not_found(db: TestDb) {
    let store = open(&db).await;
    let server = given_server(&*store).await;
    let alice = given_user(&*store, &server, "alice").await;
    let account = given_account(&*store, new_account(&server, 1, None, NOW)).await;
    let unknown = account.id + 1000;

    assert_not_found(store.set_account_user(unknown, Some(alice.id)).await);
    assert_not_found(store.set_account_user(unknown, None).await);
    assert_not_found(store.set_account_blocked(unknown, true).await);
    assert_not_found(store.touch_account(unknown, Some(NOW), Some(NOW)).await);
    assert_not_found(store.touch_account(unknown, None, None).await);

    assert_eq!(stored_account(&*store, &account).await, account);
}

async fn an_account_is_blocked_and_touched_field_by_field(db: TestDb) {
    let store = open(&db).await;
    let server = given_server(&*store).await;
    let account = given_account(&*store, new_account(&server, 1, None, NOW)).await;
    let bystander = given_account(&*store, new_account(&server, 2, None, NOW)).await;

    store.set_account_blocked(account.id, true).await.unwrap();
    let blocked = Account {
        blocked: true,
        ..account.clone()
    };
    assert_eq!(stored_account(&*store, &account).await, blocked);
    // Idempotent: blocking a blocked account is no error (the row exists).
    store.set_account_blocked(account.id, true).await.unwrap();
    assert_eq!(stored_account(&*store, &account).await, blocked);
    store.set_account_blocked(account.id, false).await.unwrap();
    assert_eq!(stored_account(&*store, &account).await, account);

    // Each time is written only when given; the other is kept.
    store
        .touch_account(account.id, Some(NOW + 10), None)
        .await
        .unwrap();
    let logged_in = Account {
        last_login: Some(NOW + 10),
        ..account.clone()
    };
    assert_eq!(stored_account(&*store, &account).await, logged_in);
    store
        .touch_account(account.id, None, Some(NOW + 20))
        .await
        .unwrap();
    let provoked = Account {
        last_provoke: Some(NOW + 20),
        ..logged_in
    };
    assert_eq!(stored_account(&*store, &account).await, provoked);
    // Neither given: nothing changes, and the account is still found.
    store.touch_account(account.id, None, None).await.unwrap();
    assert_eq!(stored_account(&*store, &account).await, provoked);
    store
        .touch_account(account.id, Some(NOW + 30), Some(NOW + 40))
        .await
        .unwrap();
    let both = Account {
        last_login: Some(NOW + 30),
        last_provoke: Some(NOW + 40),
        ..account.clone()
    };
    assert_eq!(stored_account(&*store, &account).await, both);
    // A blocked account keeps its times, and its times survive blocking.
    store.set_account_blocked(account.id, true).await.unwrap();
    assert_eq!(
        stored_account(&*store, &account).await,
        Account {
            blocked: true,
            ..both
        }
    );

    assert_eq!(
        stored_account(&*store, &bystander).await,
        bystander,
        "updates write only their own account"
    );
}

async fn deleting_a_user_unbinds_its_accounts(db: TestDb) {
    let store = open(&db).await;
    let server = given_server(&*store).await;
    let alice = given_user(&*store, &server, "alice").await;
    let bob = given_user(&*store, &server, "bob").await;
    let alices = [
        given_account(&*store, new_account(&server, 1, Some(&alice), NOW)).await,
        given_account(&*store, new_account(&server, 2, Some(&alice), NOW)).await,
    ];
    let bobs = given_account(&*store, new_account(&server, 3, Some(&bob), NOW)).await;

    assert!(store.delete_user(alice.id).await.unwrap());

    // The accounts stay (the app is still enrolled), bound to no one.
    for account in &alices {
        assert_eq!(
            stored_account(&*store, account).await,
            Account {
                user_id: None,
                ..account.clone()
            }
        );
    }
    assert!(store.user_accounts(alice.id).await.unwrap().is_empty());
    assert_eq!(store.user_accounts(bob.id).await.unwrap(), vec![bobs]);
}

fn new_browser_session(server: &Server, name: &str) -> BrowserSession {
    BrowserSession {
        server_id: server.id.clone(),
        nonce_hash: SecretHash::of(format!("nonce {name}").as_bytes()),
        hsid_hash: SecretHash::of(format!("hsid {name}").as_bytes()),
        session_id: None,
        account_id: None,
        login_seed: None,
        login_challenge: None,
        login_expires_at: None,
        login_base_url: None,
        user_context: None,
        created_at: NOW,
    }
}

async fn stored_browser_session(store: &dyn Store, b: &BrowserSession) -> BrowserSession {
    store
        .browser_session(&b.server_id, &b.nonce_hash)
        .await
        .unwrap()
        .expect("browser session stored")
}

/// Every mutable field set: a login challenge pending on a browser session logged in as `user`
/// (with a new session and a new account of that user).
async fn filled_browser_session(
    store: &dyn Store,
    user: &User,
    b: &BrowserSession,
    challenge: &[u8],
) -> BrowserSession {
    let server = store
        .server(&user.server_id)
        .await
        .unwrap()
        .expect("server");
    let session = given_session(store, new_session(&server, Some(user))).await;
    let account = given_account(store, new_account(&server, 0x42, Some(user), NOW)).await;
    BrowserSession {
        session_id: Some(session.id),
        account_id: Some(account.id),
        login_seed: Some((0..=255u8).rev().collect()),
        login_challenge: Some(SecretHash::of(challenge)),
        login_expires_at: Some(NOW + 60),
        login_base_url: Some("https://example.com/latchkey/\u{2603}".into()),
        user_context: Some(r#"{"ip":"192.0.2.1","ua":"Firefox \u2603"}"#.into()),
        ..b.clone()
    }
}

async fn ensuring_a_browser_session_twice_keeps_the_first(db: TestDb) {
    let store = open(&db).await;
    let server = given_server(&*store).await;
    let alice = given_user(&*store, &server, "alice").await;
    let other_server = new_server("other", NOW);
    store.insert_server(&other_server).await.unwrap();

    let fresh = new_browser_session(&server, "one");
    assert_eq!(store.ensure_browser_session(&fresh).await.unwrap(), fresh);
    assert_eq!(stored_browser_session(&*store, &fresh).await, fresh);

    // A second ensure of the same (server, nonce) answers the stored record, untouched.
    let again = BrowserSession {
        hsid_hash: SecretHash::of(b"another hsid"),
        created_at: NOW + 100,
        ..fresh.clone()
    };
    assert_eq!(store.ensure_browser_session(&again).await.unwrap(), fresh);
    assert_eq!(stored_browser_session(&*store, &fresh).await, fresh);
    assert_eq!(
        store
            .browser_session_by_hsid(&again.hsid_hash)
            .await
            .unwrap(),
        None,
        "the second hsid was never stored"
    );

    // It keeps what updates wrote, too.
    let updated = filled_browser_session(&*store, &alice, &fresh, b"challenge").await;
    store.update_browser_session(&updated).await.unwrap();
    assert_eq!(store.ensure_browser_session(&again).await.unwrap(), updated);

    // The same nonce names another browser session on another server.
    let elsewhere = BrowserSession {
        server_id: other_server.id.clone(),
        hsid_hash: SecretHash::of(b"hsid elsewhere"),
        ..fresh.clone()
    };
    assert_eq!(
        store.ensure_browser_session(&elsewhere).await.unwrap(),
        elsewhere
    );
    assert_eq!(stored_browser_session(&*store, &elsewhere).await, elsewhere);
    assert_eq!(stored_browser_session(&*store, &fresh).await, updated);

    // An hsid names one browser session only.
    assert_conflict(
        store
            .ensure_browser_session(&BrowserSession {
                hsid_hash: fresh.hsid_hash,
                ..new_browser_session(&server, "two")
            })
            .await,
    );
    assert_eq!(
        store
            .browser_session(&server.id, &new_browser_session(&server, "two").nonce_hash)
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        store
            .browser_session(&ServerId::generate(), &fresh.nonce_hash)
            .await
            .unwrap(),
        None
    );
}

async fn a_browser_session_is_found_by_hsid_and_challenge_and_updates_every_mutable_field(
    db: TestDb,
) {
    let store = open(&db).await;
    let server = given_server(&*store).await;
    let alice = given_user(&*store, &server, "alice").await;
    let fresh = new_browser_session(&server, "one");
    let bystander = new_browser_session(&server, "two");
    store.ensure_browser_session(&fresh).await.unwrap();
    store.ensure_browser_session(&bystander).await.unwrap();

    assert_eq!(
        store
            .browser_session_by_hsid(&fresh.hsid_hash)
            .await
            .unwrap(),
        Some(fresh.clone())
    );
    assert_eq!(
        store
            .browser_session_by_hsid(&SecretHash::of(b"unknown hsid"))
            .await
            .unwrap(),
        None
    );
    let challenge = SecretHash::of(b"challenge");
    assert_eq!(
        store
            .browser_session_by_challenge(&challenge)
            .await
            .unwrap(),
        None
    );

    // Every mutable field, set.
    let full = filled_browser_session(&*store, &alice, &fresh, b"challenge").await;
    store.update_browser_session(&full).await.unwrap();
    assert_eq!(stored_browser_session(&*store, &fresh).await, full);
    assert_eq!(
        store
            .browser_session_by_hsid(&fresh.hsid_hash)
            .await
            .unwrap(),
        Some(full.clone())
    );
    assert_eq!(
        store
            .browser_session_by_challenge(&challenge)
            .await
            .unwrap(),
        Some(full.clone())
    );

    // An empty seed is a seed, not NULL.
    let empty_seed = BrowserSession {
        login_seed: Some(vec![]),
        ..full.clone()
    };
    store.update_browser_session(&empty_seed).await.unwrap();
    assert_eq!(stored_browser_session(&*store, &fresh).await, empty_seed);

    // Every mutable field, cleared.
    store.update_browser_session(&fresh).await.unwrap();
    assert_eq!(stored_browser_session(&*store, &fresh).await, fresh);
    assert_eq!(
        store
            .browser_session_by_challenge(&challenge)
            .await
            .unwrap(),
        None
    );

    // The name, the hsid and the creation time are not mutable.
    store
        .update_browser_session(&BrowserSession {
            hsid_hash: SecretHash::of(b"new hsid"),
            created_at: NOW + 500,
            ..full.clone()
        })
        .await
        .unwrap();
    assert_eq!(stored_browser_session(&*store, &fresh).await, full);

    // A login challenge names one browser session only.
    assert_conflict(
        store
            .update_browser_session(&BrowserSession {
                login_challenge: Some(challenge),
                ..bystander.clone()
            })
            .await,
    );
    assert_eq!(
        stored_browser_session(&*store, &bystander).await,
        bystander,
        "updates write only their own browser session"
    );

    assert_not_found(
        store
            .update_browser_session(&new_browser_session(&server, "never ensured"))
            .await,
    );
    assert_not_found(
        store
            .update_browser_session(&BrowserSession {
                server_id: ServerId::generate(),
                ..full.clone()
            })
            .await,
    );
}

async fn a_login_challenge_is_consumed_once_keeping_the_rest_of_the_browser_session(db: TestDb) {
    let store = open(&db).await;
    let server = given_server(&*store).await;
    let alice = given_user(&*store, &server, "alice").await;
    let fresh = new_browser_session(&server, "one");
    store.ensure_browser_session(&fresh).await.unwrap();
    let full = filled_browser_session(&*store, &alice, &fresh, b"challenge").await;
    store.update_browser_session(&full).await.unwrap();
    let challenge = full.login_challenge.unwrap();

    assert!(store.consume_login_challenge(&challenge).await.unwrap());
    // The challenge, its seed and its deadline go; the rest stays.
    let consumed = BrowserSession {
        login_seed: None,
        login_challenge: None,
        login_expires_at: None,
        ..full.clone()
    };
    assert_eq!(stored_browser_session(&*store, &fresh).await, consumed);
    assert_eq!(
        store
            .browser_session_by_challenge(&challenge)
            .await
            .unwrap(),
        None
    );
    assert!(
        !store.consume_login_challenge(&challenge).await.unwrap(),
        "a challenge logs in once"
    );
    assert!(!store
        .consume_login_challenge(&SecretHash::of(b"never issued"))
        .await
        .unwrap());
    assert_eq!(stored_browser_session(&*store, &fresh).await, consumed);

    // A new challenge may be set and consumed in its turn.
    let next = BrowserSession {
        login_seed: Some(vec![7; 32]),
        login_challenge: Some(SecretHash::of(b"next challenge")),
        login_expires_at: Some(NOW + 120),
        ..consumed.clone()
    };
    store.update_browser_session(&next).await.unwrap();
    assert!(!store.consume_login_challenge(&challenge).await.unwrap());
    assert!(store
        .consume_login_challenge(&SecretHash::of(b"next challenge"))
        .await
        .unwrap());
    assert_eq!(stored_browser_session(&*store, &fresh).await, consumed);
}

async fn racing_consumptions_of_a_login_challenge_see_exactly_one_true(db: TestDb) {
    let store = open(&db).await;
    let server = given_server(&*store).await;
    let fresh = new_browser_session(&server, "one");
    store.ensure_browser_session(&fresh).await.unwrap();

    for round in 0..3u8 {
        let challenge = SecretHash::of(&[b'c', round]);
        store
            .update_browser_session(&BrowserSession {
                login_seed: Some(vec![round; 32]),
                login_challenge: Some(challenge),
                login_expires_at: Some(NOW + 60),
                ..fresh.clone()
            })
            .await
            .unwrap();
        let racers: Vec<_> = (0..8)
            .map(|_| {
                let store = store.clone();
                tokio::spawn(async move { store.consume_login_challenge(&challenge).await })
            })
            .collect();
        let mut consumed = 0;
        for racer in racers {
            if racer.await.unwrap().unwrap() {
                consumed += 1;
            }
        }
        assert_eq!(consumed, 1, "round {round}: exactly one consumption wins");
        assert_eq!(stored_browser_session(&*store, &fresh).await, fresh);
    }
}

async fn a_browser_session_loses_its_session_when_the_session_row_goes(db: TestDb) {
    let store = open(&db).await;
    let server = given_server(&*store).await;
    let alice = given_user(&*store, &server, "alice").await;
    let bob = given_user(&*store, &server, "bob").await;
    let cutoff = NOW - 50;
    let dead = given_session(
        &*store,
        Session {
            state: SessionState::Revoked,
            revoked_at: Some(cutoff - 1),
            ..new_session(&server, Some(&bob))
        },
    )
    .await;
    let bobs_live = given_session(&*store, new_session(&server, Some(&bob))).await;
    let alices = given_session(&*store, new_session(&server, Some(&alice))).await;
    let account = given_account(&*store, new_account(&server, 1, Some(&bob), NOW)).await;

    let mut browser = Vec::new();
    for (name, session) in [("dead", &dead), ("bob", &bobs_live), ("alice", &alices)] {
        let b = new_browser_session(&server, name);
        store.ensure_browser_session(&b).await.unwrap();
        let b = BrowserSession {
            session_id: Some(session.id),
            account_id: Some(account.id),
            user_context: Some(format!("{{\"name\":\"{name}\"}}")),
            ..b
        };
        store.update_browser_session(&b).await.unwrap();
        browser.push(b);
    }
    let [on_dead, on_bobs, on_alices] = <[BrowserSession; 3]>::try_from(browser).unwrap();
    let unset = |b: &BrowserSession| BrowserSession {
        session_id: None,
        ..b.clone()
    };

    // Purging a long-dead session unsets it; only the session is counted.
    assert_eq!(store.purge(NOW - 1000, cutoff).await.unwrap(), 1);
    assert_eq!(store.session(dead.id).await.unwrap(), None);
    assert_eq!(
        stored_browser_session(&*store, &on_dead).await,
        unset(&on_dead)
    );
    assert_eq!(stored_browser_session(&*store, &on_bobs).await, on_bobs);

    // Deleting a user deletes its sessions, and so unsets them.
    assert!(store.delete_user(alice.id).await.unwrap());
    assert_eq!(
        stored_browser_session(&*store, &on_alices).await,
        unset(&on_alices)
    );
    assert_eq!(
        store
            .browser_session_by_hsid(&on_alices.hsid_hash)
            .await
            .unwrap(),
        Some(unset(&on_alices))
    );
    assert_eq!(stored_browser_session(&*store, &on_bobs).await, on_bobs);

    // A browser session cannot name a session that does not exist.
    assert!(store.update_browser_session(&on_alices).await.is_err());
    assert_eq!(
        stored_browser_session(&*store, &on_alices).await,
        unset(&on_alices)
    );
}

fn new_app_challenge(server: &Server, name: &[u8], expires_at: i64) -> AppChallenge {
    AppChallenge {
        challenge_hash: SecretHash::of(name),
        server_id: server.id.clone(),
        purpose: "listen".into(),
        account_id: None,
        name: None,
        userid: None,
        expires_at,
    }
}

async fn an_app_challenge_round_trips_every_field_and_is_taken_once(db: TestDb) {
    let store = open(&db).await;
    let server = given_server(&*store).await;
    let other_server = new_server("other", NOW);
    store.insert_server(&other_server).await.unwrap();

    let enrol = AppChallenge {
        purpose: "enrol".into(),
        name: Some("Al\u{ef}ce's phone \u{2603}".into()),
        userid: Some("alice".into()),
        ..new_app_challenge(&server, b"enrol", NOW + 60)
    };
    // The account id is kept as given (no account row is needed).
    let listen = AppChallenge {
        account_id: Some(i64::MAX),
        ..new_app_challenge(&server, b"listen", NOW + 60)
    };
    let elsewhere = AppChallenge {
        server_id: other_server.id.clone(),
        account_id: Some(-1),
        ..new_app_challenge(&server, b"elsewhere", NOW + 60)
    };
    let expired = new_app_challenge(&server, b"expired", NOW - 1);
    for c in [&enrol, &listen, &elsewhere, &expired] {
        store.insert_app_challenge(c).await.unwrap();
    }
    assert_conflict(
        store
            .insert_app_challenge(&AppChallenge {
                purpose: "listen".into(),
                ..enrol.clone()
            })
            .await,
    );

    assert_eq!(
        store
            .take_app_challenge(&enrol.challenge_hash)
            .await
            .unwrap(),
        Some(enrol.clone())
    );
    assert_eq!(
        store
            .take_app_challenge(&enrol.challenge_hash)
            .await
            .unwrap(),
        None,
        "a challenge is usable once"
    );
    assert_eq!(
        store
            .take_app_challenge(&listen.challenge_hash)
            .await
            .unwrap(),
        Some(listen)
    );
    assert_eq!(
        store
            .take_app_challenge(&elsewhere.challenge_hash)
            .await
            .unwrap(),
        Some(elsewhere)
    );
    // Expiry is the caller's to judge: an expired challenge is still taken (and so gone).
    assert_eq!(
        store
            .take_app_challenge(&expired.challenge_hash)
            .await
            .unwrap(),
        Some(expired.clone())
    );
    assert_eq!(
        store
            .take_app_challenge(&expired.challenge_hash)
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        store
            .take_app_challenge(&SecretHash::of(b"never issued"))
            .await
            .unwrap(),
        None
    );

    // Once taken, the same challenge may be stored again; racing takes: exactly one gets it.
    for round in 0..3 {
        store.insert_app_challenge(&enrol).await.unwrap();
        let racers: Vec<_> = (0..8)
            .map(|_| {
                let store = store.clone();
                let hash = enrol.challenge_hash;
                tokio::spawn(async move { store.take_app_challenge(&hash).await })
            })
            .collect();
        let mut taken = 0;
        for racer in racers {
            if let Some(c) = racer.await.unwrap().unwrap() {
                assert!(c == enrol, "round {round}: the challenge round-trips");
                taken += 1;
            }
        }
        assert_eq!(taken, 1, "round {round}: exactly one take gets it");
    }
}

async fn purge_removes_app_challenges_expired_before_the_failures_cutoff(db: TestDb) {
    let store = open(&db).await;
    let server = given_server(&*store).await;
    // App challenges go by the failures cut-off, not the (much older) sessions one.
    let failures_before = NOW;
    let sessions_before = NOW - 10_000;
    let long_expired = new_app_challenge(&server, b"long expired", NOW - 600);
    let just_expired = new_app_challenge(&server, b"just expired", failures_before - 1);
    let at_cutoff = new_app_challenge(&server, b"at the cut-off", failures_before);
    let pending = new_app_challenge(&server, b"pending", NOW + 60);
    for c in [&long_expired, &just_expired, &at_cutoff, &pending] {
        store.insert_app_challenge(c).await.unwrap();
    }

    assert_eq!(
        store.purge(failures_before, sessions_before).await.unwrap(),
        2
    );
    for gone in [&long_expired, &just_expired] {
        assert_eq!(
            store
                .take_app_challenge(&gone.challenge_hash)
                .await
                .unwrap(),
            None
        );
    }
    assert_eq!(
        store.purge(failures_before, sessions_before).await.unwrap(),
        0
    );
    for kept in [at_cutoff, pending] {
        assert_eq!(
            store
                .take_app_challenge(&kept.challenge_hash)
                .await
                .unwrap(),
            Some(kept)
        );
    }
}

fn new_push(account: &Account, name: &str, created_at: i64, expires_at: i64) -> PushRequest {
    PushRequest {
        id: Uuid::new_v4(),
        server_id: account.server_id.clone(),
        account_id: account.id,
        nonce_hash: SecretHash::of(format!("nonce {name}").as_bytes()),
        user_context: format!("{{\"name\":\"{name}\"}}"),
        created_at,
        expires_at,
        answered_at: None,
        approved: None,
    }
}

async fn given_push(store: &dyn Store, push: PushRequest) -> PushRequest {
    store.insert_push(&push).await.unwrap();
    push
}

async fn stored_push(store: &dyn Store, push: &PushRequest) -> PushRequest {
    store.push(push.id).await.unwrap().expect("push stored")
}

async fn a_push_round_trips_every_field_and_is_answered_once(db: TestDb) {
    let store = open(&db).await;
    let server = given_server(&*store).await;
    let account = given_account(&*store, new_account(&server, 1, None, NOW)).await;

    let push = given_push(
        &*store,
        PushRequest {
            user_context: r#"{"ip":"2001:db8::1","ua":"Al\u00efce \u2603"}"#.into(),
            ..new_push(&account, "one", NOW, NOW + 60)
        },
    )
    .await;
    let bystander = given_push(&*store, new_push(&account, "two", NOW, NOW + 60)).await;
    // Stored already answered (refused, say): every field round-trips.
    let refused = given_push(
        &*store,
        PushRequest {
            answered_at: Some(NOW + 1),
            approved: Some(false),
            ..new_push(&account, "three", NOW - 5, NOW + 55)
        },
    )
    .await;
    assert_eq!(stored_push(&*store, &push).await, push);
    assert_eq!(stored_push(&*store, &refused).await, refused);
    assert_eq!(store.push(Uuid::new_v4()).await.unwrap(), None);

    assert_conflict(
        store
            .insert_push(&PushRequest {
                user_context: "{}".into(),
                ..push.clone()
            })
            .await,
    );
    // A push belongs to an enrolled account.
    assert!(store
        .insert_push(&PushRequest {
            account_id: account.id + 1000,
            ..new_push(&account, "orphan", NOW, NOW + 60)
        })
        .await
        .is_err());

    assert!(store.answer_push(push.id, true, NOW + 5).await.unwrap());
    let approved = PushRequest {
        answered_at: Some(NOW + 5),
        approved: Some(true),
        ..push.clone()
    };
    assert_eq!(stored_push(&*store, &push).await, approved);
    assert!(
        !store.answer_push(push.id, false, NOW + 6).await.unwrap(),
        "a push is answered once"
    );
    assert_eq!(stored_push(&*store, &push).await, approved);
    assert!(!store.answer_push(refused.id, true, NOW + 7).await.unwrap());
    assert_eq!(stored_push(&*store, &refused).await, refused);
    assert!(!store.answer_push(Uuid::new_v4(), true, NOW).await.unwrap());

    // Expiry is the caller's to judge: an expired push may still be answered.
    let expired = given_push(&*store, new_push(&account, "expired", NOW - 100, NOW - 40)).await;
    assert!(store.answer_push(expired.id, false, NOW).await.unwrap());
    assert_eq!(
        stored_push(&*store, &expired).await,
        PushRequest {
            answered_at: Some(NOW),
            approved: Some(false),
            ..expired
        }
    );

    assert_eq!(
        stored_push(&*store, &bystander).await,
        bystander,
        "an answer writes only its own push"
    );
}

async fn racing_answers_to_a_push_see_exactly_one_true(db: TestDb) {
    let store = open(&db).await;
    let server = given_server(&*store).await;
    let account = given_account(&*store, new_account(&server, 1, None, NOW)).await;

    for round in 0..3 {
        let push = given_push(&*store, new_push(&account, "raced", NOW, NOW + 60)).await;
        let racers: Vec<_> = (0..8i64)
            .map(|i| {
                let store = store.clone();
                let id = push.id;
                tokio::spawn(async move { (i, store.answer_push(id, i % 2 == 0, NOW + i).await) })
            })
            .collect();
        let mut winners = Vec::new();
        for racer in racers {
            let (i, answered) = racer.await.unwrap();
            if answered.unwrap() {
                winners.push(i);
            }
        }
        assert_eq!(winners.len(), 1, "round {round}: exactly one answer wins");
        let i = winners[0];
        assert_eq!(
            stored_push(&*store, &push).await,
            PushRequest {
                answered_at: Some(NOW + i),
                approved: Some(i % 2 == 0),
                ..push
            },
            "round {round}: the winning answer is the one stored"
        );
    }
}

async fn pending_pushes_are_unanswered_unexpired_and_oldest_first(db: TestDb) {
    let store = open(&db).await;
    let server = given_server(&*store).await;
    let account = given_account(&*store, new_account(&server, 1, None, NOW)).await;
    let other = given_account(&*store, new_account(&server, 2, None, NOW)).await;

    let newest = given_push(&*store, new_push(&account, "newest", NOW - 10, NOW + 50)).await;
    // Two of the same second: the request id decides, in byte order.
    let tie_high = given_push(
        &*store,
        PushRequest {
            id: Uuid::from_u128(0x8000_0000_0000_4000_8000_0000_0000_0000),
            ..new_push(&account, "tie high", NOW - 20, NOW + 40)
        },
    )
    .await;
    let tie_low = given_push(
        &*store,
        PushRequest {
            id: Uuid::from_u128(0x7fff_ffff_ffff_4fff_bfff_ffff_ffff_ffff),
            ..new_push(&account, "tie low", NOW - 20, NOW + 40)
        },
    )
    .await;
    let oldest = given_push(&*store, new_push(&account, "oldest", NOW - 30, NOW + 30)).await;
    let answered = given_push(&*store, new_push(&account, "answered", NOW - 25, NOW + 60)).await;
    assert!(store.answer_push(answered.id, true, NOW - 1).await.unwrap());
    // Expiry is exclusive: a push expiring now is no longer pending.
    given_push(&*store, new_push(&account, "expires now", NOW - 40, NOW)).await;
    given_push(&*store, new_push(&account, "expired", NOW - 90, NOW - 30)).await;
    let others = given_push(&*store, new_push(&other, "other", NOW - 15, NOW + 60)).await;

    assert_eq!(
        store.pending_pushes(account.id, NOW).await.unwrap(),
        vec![
            oldest.clone(),
            tie_low.clone(),
            tie_high.clone(),
            newest.clone()
        ]
    );
    assert_eq!(
        store.pending_pushes(other.id, NOW).await.unwrap(),
        vec![others]
    );
    assert!(store
        .pending_pushes(account.id + 1000, NOW)
        .await
        .unwrap()
        .is_empty());

    // An answer takes a push out of the list.
    assert!(store.answer_push(tie_low.id, false, NOW).await.unwrap());
    assert_eq!(
        store.pending_pushes(account.id, NOW).await.unwrap(),
        vec![oldest, tie_high.clone(), newest.clone()]
    );
    // So does time.
    assert_eq!(
        store.pending_pushes(account.id, NOW + 30).await.unwrap(),
        vec![tie_high, newest.clone()]
    );
    assert_eq!(
        store.pending_pushes(account.id, NOW + 49).await.unwrap(),
        vec![newest]
    );
    assert!(store
        .pending_pushes(account.id, NOW + 50)
        .await
        .unwrap()
        .is_empty());
}

async fn purge_removes_pushes_expired_before_the_sessions_cutoff(db: TestDb) {
    let store = open(&db).await;
    let server = given_server(&*store).await;
    let account = given_account(&*store, new_account(&server, 1, None, NOW)).await;
    // Pushes go by the sessions cut-off, not the (later) failures one.
    let failures_before = NOW;
    let sessions_before = NOW - 100;
    let long_expired = given_push(&*store, new_push(&account, "long", NOW - 300, NOW - 240)).await;
    let just_expired = given_push(
        &*store,
        new_push(&account, "just", NOW - 160, sessions_before - 1),
    )
    .await;
    assert!(store
        .answer_push(just_expired.id, true, NOW - 150)
        .await
        .unwrap());
    let at_cutoff = given_push(
        &*store,
        new_push(&account, "at the cut-off", NOW - 160, sessions_before),
    )
    .await;
    let lately_expired = given_push(&*store, new_push(&account, "lately", NOW - 61, NOW - 1)).await;
    let pending = given_push(&*store, new_push(&account, "pending", NOW, NOW + 60)).await;

    assert_eq!(
        store.purge(failures_before, sessions_before).await.unwrap(),
        2
    );
    for gone in [&long_expired, &just_expired] {
        assert_eq!(store.push(gone.id).await.unwrap(), None);
    }
    for kept in [&at_cutoff, &lately_expired, &pending] {
        assert_eq!(&stored_push(&*store, kept).await, kept);
    }
    assert_eq!(
        store.purge(failures_before, sessions_before).await.unwrap(),
        0
    );
    assert_eq!(
        store.pending_pushes(account.id, NOW).await.unwrap(),
        vec![pending]
    );
}
