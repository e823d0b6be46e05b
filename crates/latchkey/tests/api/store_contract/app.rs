//! `AppStore`: companion app accounts, browser sessions (changed field by field: the login
//! challenge renewed only when none is current and consumed once, the session pointer moved by
//! compare-and-set), one-time app challenges and pushed login requests.

use latchkey_core::crypto::secret::SecretHash;
use latchkey_core::model::{
    Account, AppChallenge, BrowserSession, LoginChallenge, NewAccount, PushRequest, Server,
    Session, SessionState, User,
};
use latchkey_core::{ServerId, Store};
use uuid::Uuid;

use super::{
    assert_conflict, assert_not_found, at_once, given_account, given_push, given_server,
    given_session, given_user, new_account, new_app_challenge, new_push, new_server, new_session,
    open, stored_account, stored_push, NOW, ROUNDS,
};
use crate::support::db::{both_backends, TestDb};

both_backends!(
    accounts_are_unique_per_server_key_and_found_only_on_their_server,
    a_users_accounts_are_listed_oldest_first_and_rebound_or_unbound,
    updates_of_an_unknown_account_are_not_found,
    an_account_is_blocked_and_touched_field_by_field,
    ensuring_a_browser_session_twice_keeps_the_first,
    a_browser_session_is_found_by_hsid_and_challenge_and_changes_field_by_field,
    a_login_challenge_is_renewed_only_when_none_is_current,
    a_login_challenge_is_consumed_once_keeping_the_rest_of_the_browser_session,
    racing_consumptions_of_a_login_challenge_see_exactly_one_true,
    a_browser_login_moves_only_from_the_session_it_expects,
    racing_browser_logins_from_one_previous_see_exactly_one_true,
    a_browser_session_loses_its_session_when_the_session_row_goes,
    an_app_challenge_round_trips_every_field_and_is_taken_once,
    a_push_round_trips_every_field_and_is_answered_once,
    a_push_is_answered_only_before_its_expiry,
    racing_answers_to_a_push_see_exactly_one_true,
    pending_pushes_are_unanswered_unexpired_and_oldest_first,
);

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

pub(super) fn new_browser_session(server: &Server, name: &str) -> BrowserSession {
    BrowserSession {
        server_id: server.id.clone(),
        nonce_hash: SecretHash::of(format!("nonce {name}").as_bytes()),
        hsid_hash: SecretHash::of(format!("hsid {name}").as_bytes()),
        session_id: None,
        account_id: None,
        login: None,
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

/// A login challenge expiring at `expires_at`, every field set (the seed holds every byte).
fn new_login_challenge(challenge: &[u8], expires_at: i64) -> LoginChallenge {
    LoginChallenge {
        seed: (0..=255u8).rev().collect(),
        challenge_hash: SecretHash::of(challenge),
        expires_at,
        base_url: "https://example.com/latchkey/\u{2603}".into(),
    }
}

/// Every mutable field set, each by the transition that sets it: a login challenge pending on
/// a browser session logged in as `user` (with a new session and a new account of that user),
/// with a user context. Answers the record the store must now hold.
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
    let user_context = r#"{"ip":"192.0.2.1","ua":"Firefox \u2603"}"#;
    let login = new_login_challenge(challenge, NOW + 60);
    assert!(store
        .set_browser_login(
            &b.server_id,
            &b.nonce_hash,
            b.session_id,
            session.id,
            account.id
        )
        .await
        .unwrap());
    assert!(store
        .renew_login_challenge(&b.server_id, &b.nonce_hash, &login, NOW)
        .await
        .unwrap());
    store
        .set_browser_user_context(&b.server_id, &b.nonce_hash, user_context)
        .await
        .unwrap();
    BrowserSession {
        session_id: Some(session.id),
        account_id: Some(account.id),
        login: Some(login),
        user_context: Some(user_context.into()),
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

    // It keeps what transitions wrote, too.
    let updated = filled_browser_session(&*store, &alice, &fresh, b"challenge").await;
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

async fn a_browser_session_is_found_by_hsid_and_challenge_and_changes_field_by_field(db: TestDb) {
    let store = open(&db).await;
    let server = given_server(&*store).await;
    let alice = given_user(&*store, &server, "alice").await;
    let fresh = new_browser_session(&server, "one");
    let bystander = new_browser_session(&server, "two");
    store.ensure_browser_session(&fresh).await.unwrap();
    store.ensure_browser_session(&bystander).await.unwrap();
    let (server_id, nonce_hash) = (&fresh.server_id, &fresh.nonce_hash);

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

    // Every mutable field, set, each by its own transition.
    let full = filled_browser_session(&*store, &alice, &fresh, b"challenge").await;
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

    // The user context is replaced, and nothing else moves.
    store
        .set_browser_user_context(server_id, nonce_hash, "{}")
        .await
        .unwrap();
    let other_context = BrowserSession {
        user_context: Some("{}".into()),
        ..full.clone()
    };
    assert_eq!(stored_browser_session(&*store, &fresh).await, other_context);

    // Clearing the login clears the session pointer only: the account that logged in last,
    // the login challenge and the user context stay.
    let session_id = full.session_id.expect("logged in");
    assert!(store
        .clear_browser_login(server_id, nonce_hash, session_id)
        .await
        .unwrap());
    let logged_out = BrowserSession {
        session_id: None,
        ..other_context.clone()
    };
    assert_eq!(stored_browser_session(&*store, &fresh).await, logged_out);

    // Consuming the challenge clears it whole; a new one (an empty seed is a seed, not NULL)
    // is installed whole.
    assert!(store.consume_login_challenge(&challenge).await.unwrap());
    let consumed = BrowserSession {
        login: None,
        ..logged_out.clone()
    };
    assert_eq!(stored_browser_session(&*store, &fresh).await, consumed);
    let empty_seed = LoginChallenge {
        seed: vec![],
        ..new_login_challenge(b"empty seed", NOW + 60)
    };
    assert!(store
        .renew_login_challenge(server_id, nonce_hash, &empty_seed, NOW)
        .await
        .unwrap());
    let renewed = BrowserSession {
        login: Some(empty_seed.clone()),
        ..consumed.clone()
    };
    assert_eq!(stored_browser_session(&*store, &fresh).await, renewed);
    assert_eq!(
        store
            .browser_session_by_challenge(&empty_seed.challenge_hash)
            .await
            .unwrap(),
        Some(renewed.clone())
    );
    assert_eq!(
        store
            .browser_session_by_challenge(&challenge)
            .await
            .unwrap(),
        None
    );

    // A login challenge names one browser session only.
    assert_conflict(
        store
            .renew_login_challenge(
                &bystander.server_id,
                &bystander.nonce_hash,
                &new_login_challenge(b"empty seed", NOW + 60),
                NOW,
            )
            .await,
    );
    assert_eq!(
        stored_browser_session(&*store, &bystander).await,
        bystander,
        "transitions write only their own browser session"
    );
    assert_eq!(stored_browser_session(&*store, &fresh).await, renewed);

    // A browser session that was never ensured, or is named on another server, is not found:
    // nothing is changed, nothing is created.
    let never = new_browser_session(&server, "never ensured");
    let elsewhere = BrowserSession {
        server_id: ServerId::generate(),
        ..fresh.clone()
    };
    for missing in [&never, &elsewhere] {
        let (server_id, nonce_hash) = (&missing.server_id, &missing.nonce_hash);
        assert!(!store
            .renew_login_challenge(
                server_id,
                nonce_hash,
                &new_login_challenge(b"missing", NOW + 60),
                NOW
            )
            .await
            .unwrap());
        assert!(!store
            .set_browser_login(server_id, nonce_hash, None, session_id, 1)
            .await
            .unwrap());
        assert!(!store
            .clear_browser_login(server_id, nonce_hash, session_id)
            .await
            .unwrap());
        // Whether setting a context on no browser session is an error is not specified.
        let _ = store
            .set_browser_user_context(server_id, nonce_hash, "{\"lost\":true}")
            .await;
        assert_eq!(
            store.browser_session(server_id, nonce_hash).await.unwrap(),
            None
        );
    }
    assert_eq!(stored_browser_session(&*store, &fresh).await, renewed);
    assert_eq!(
        store
            .browser_session_by_challenge(&SecretHash::of(b"missing"))
            .await
            .unwrap(),
        None
    );
}

async fn a_login_challenge_is_renewed_only_when_none_is_current(db: TestDb) {
    let store = open(&db).await;
    let server = given_server(&*store).await;
    let alice = given_user(&*store, &server, "alice").await;
    let fresh = new_browser_session(&server, "one");
    store.ensure_browser_session(&fresh).await.unwrap();
    let (server_id, nonce_hash) = (&fresh.server_id, &fresh.nonce_hash);
    let renew = |challenge: LoginChallenge, now: i64| {
        let store = store.clone();
        let (server_id, nonce_hash) = (server_id.clone(), *nonce_hash);
        async move {
            store
                .renew_login_challenge(&server_id, &nonce_hash, &challenge, now)
                .await
                .unwrap()
        }
    };

    let first = new_login_challenge(b"first", NOW + 60);
    let second = new_login_challenge(b"second", NOW + 120);
    assert!(renew(first.clone(), NOW).await);
    let with_first = BrowserSession {
        login: Some(first.clone()),
        ..fresh.clone()
    };
    assert_eq!(stored_browser_session(&*store, &fresh).await, with_first);

    // While the first expires after `now`, it stays.
    for now in [NOW, NOW + 59] {
        assert!(!renew(second.clone(), now).await, "at {now}");
        assert_eq!(stored_browser_session(&*store, &fresh).await, with_first);
    }
    assert_eq!(
        store
            .browser_session_by_challenge(&second.challenge_hash)
            .await
            .unwrap(),
        None
    );
    // At its expiry it is no longer current.
    assert!(renew(second.clone(), NOW + 60).await);
    let with_second = BrowserSession {
        login: Some(second.clone()),
        ..fresh.clone()
    };
    assert_eq!(stored_browser_session(&*store, &fresh).await, with_second);
    assert_eq!(
        store
            .browser_session_by_challenge(&first.challenge_hash)
            .await
            .unwrap(),
        None
    );

    // Once consumed, there is none, whatever the time.
    assert!(store
        .consume_login_challenge(&second.challenge_hash)
        .await
        .unwrap());
    let third = new_login_challenge(b"third", NOW + 60);
    assert!(renew(third.clone(), NOW).await);
    assert!(!renew(new_login_challenge(b"fourth", NOW + 60), NOW).await);

    // Once a login drops it, too; and renewing keeps the rest of the browser session.
    let full = filled_browser_session(
        &*store,
        &alice,
        &BrowserSession {
            login: Some(third),
            ..fresh.clone()
        },
        b"fifth",
    )
    .await;
    assert_eq!(stored_browser_session(&*store, &fresh).await, full);
    assert!(!renew(new_login_challenge(b"sixth", NOW + 60), NOW + 59).await);
    let seventh = new_login_challenge(b"seventh", NOW + 200);
    assert!(renew(seventh.clone(), NOW + 60).await);
    assert_eq!(
        stored_browser_session(&*store, &fresh).await,
        BrowserSession {
            login: Some(seventh),
            ..full
        }
    );
}

async fn a_browser_login_moves_only_from_the_session_it_expects(db: TestDb) {
    let store = open(&db).await;
    let server = given_server(&*store).await;
    let alice = given_user(&*store, &server, "alice").await;
    let [s1, s2, s3] = [
        given_session(&*store, new_session(&server, Some(&alice)))
            .await
            .id,
        given_session(&*store, new_session(&server, Some(&alice)))
            .await
            .id,
        given_session(&*store, new_session(&server, Some(&alice)))
            .await
            .id,
    ];
    let a1 = given_account(&*store, new_account(&server, 1, Some(&alice), NOW))
        .await
        .id;
    let a2 = given_account(&*store, new_account(&server, 2, Some(&alice), NOW))
        .await
        .id;
    let fresh = new_browser_session(&server, "one");
    let bystander = new_browser_session(&server, "two");
    store.ensure_browser_session(&fresh).await.unwrap();
    store.ensure_browser_session(&bystander).await.unwrap();
    let (server_id, nonce_hash) = (&fresh.server_id, &fresh.nonce_hash);
    let set = |previous: Option<Uuid>, session_id: Uuid, account_id: i64| {
        let store = store.clone();
        let (server_id, nonce_hash) = (server_id.clone(), *nonce_hash);
        async move {
            store
                .set_browser_login(&server_id, &nonce_hash, previous, session_id, account_id)
                .await
                .unwrap()
        }
    };
    let clear = |previous: Uuid| {
        let store = store.clone();
        let (server_id, nonce_hash) = (server_id.clone(), *nonce_hash);
        async move {
            store
                .clear_browser_login(&server_id, &nonce_hash, previous)
                .await
                .unwrap()
        }
    };
    let first = new_login_challenge(b"first", NOW + 60);
    assert!(store
        .renew_login_challenge(server_id, nonce_hash, &first, NOW)
        .await
        .unwrap());
    let logged_out = BrowserSession {
        login: Some(first.clone()),
        ..fresh.clone()
    };

    // Logged out, only "from no session" moves the pointer.
    assert!(!set(Some(s1), s2, a1).await);
    assert!(!clear(s1).await);
    assert_eq!(stored_browser_session(&*store, &fresh).await, logged_out);
    assert!(set(None, s1, a1).await);
    // The login drops the login challenge with the pointer's move.
    let on_s1 = BrowserSession {
        session_id: Some(s1),
        account_id: Some(a1),
        login: None,
        ..fresh.clone()
    };
    assert_eq!(stored_browser_session(&*store, &fresh).await, on_s1);
    assert_eq!(
        store
            .browser_session_by_challenge(&first.challenge_hash)
            .await
            .unwrap(),
        None
    );

    // Another request that read "logged out", or another session, loses: nothing changes.
    assert!(!set(None, s2, a2).await);
    assert!(!set(Some(s3), s2, a2).await);
    assert!(!clear(s2).await);
    assert_eq!(stored_browser_session(&*store, &fresh).await, on_s1);

    // From the session it expects, it moves to another, with the account that logged in.
    let second = new_login_challenge(b"second", NOW + 60);
    assert!(store
        .renew_login_challenge(server_id, nonce_hash, &second, NOW)
        .await
        .unwrap());
    assert!(set(Some(s1), s2, a2).await);
    let on_s2 = BrowserSession {
        session_id: Some(s2),
        account_id: Some(a2),
        login: None,
        ..fresh.clone()
    };
    assert_eq!(stored_browser_session(&*store, &fresh).await, on_s2);
    assert!(!set(Some(s1), s3, a1).await, "s1 is no longer the pointer");
    assert!(!clear(s1).await);
    assert_eq!(stored_browser_session(&*store, &fresh).await, on_s2);

    // Clearing from the session it names: the account that logged in last stays.
    assert!(clear(s2).await);
    let cleared = BrowserSession {
        session_id: None,
        ..on_s2.clone()
    };
    assert_eq!(stored_browser_session(&*store, &fresh).await, cleared);
    assert!(!clear(s2).await, "a pointer is cleared once");
    assert!(!set(Some(s2), s3, a1).await);
    assert_eq!(stored_browser_session(&*store, &fresh).await, cleared);
    // Logged out again, "from no session" moves it again.
    assert!(set(None, s3, a1).await);
    assert_eq!(
        stored_browser_session(&*store, &fresh).await,
        BrowserSession {
            session_id: Some(s3),
            account_id: Some(a1),
            ..cleared
        }
    );

    assert_eq!(
        stored_browser_session(&*store, &bystander).await,
        bystander,
        "a login moves only its own browser session's pointer"
    );
}

async fn racing_browser_logins_from_one_previous_see_exactly_one_true(db: TestDb) {
    const RACERS: usize = 8;
    let store = open(&db).await;
    let server = given_server(&*store).await;
    let alice = given_user(&*store, &server, "alice").await;
    let account = given_account(&*store, new_account(&server, 1, Some(&alice), NOW)).await;
    let fresh = new_browser_session(&server, "one");
    store.ensure_browser_session(&fresh).await.unwrap();

    let mut previous: Option<Uuid> = None;
    for round in 0..ROUNDS {
        let mut candidates = Vec::new();
        for _ in 0..RACERS {
            candidates.push(
                given_session(&*store, new_session(&server, Some(&alice)))
                    .await
                    .id,
            );
        }
        let results = at_once(RACERS, |i| {
            let store = store.clone();
            let (server_id, nonce_hash) = (fresh.server_id.clone(), fresh.nonce_hash);
            let session_id = candidates[i];
            let account_id = account.id;
            async move {
                store
                    .set_browser_login(&server_id, &nonce_hash, previous, session_id, account_id)
                    .await
                    .unwrap()
            }
        })
        .await;
        let winners: Vec<Uuid> = results
            .iter()
            .zip(&candidates)
            .filter(|(won, _)| **won)
            .map(|(_, id)| *id)
            .collect();
        assert_eq!(
            winners.len(),
            1,
            "round {round}: exactly one login moves the pointer: {results:?}"
        );
        assert_eq!(
            stored_browser_session(&*store, &fresh).await.session_id,
            Some(winners[0]),
            "round {round}: the winner's session is the one stored"
        );
        // Every other round logs out first, so both "from no session" and "from a session"
        // are raced.
        previous = if round % 2 == 0 {
            Some(winners[0])
        } else {
            assert!(store
                .clear_browser_login(&fresh.server_id, &fresh.nonce_hash, winners[0])
                .await
                .unwrap());
            None
        };
    }
}

async fn a_push_is_answered_only_before_its_expiry(db: TestDb) {
    let store = open(&db).await;
    let server = given_server(&*store).await;
    let account = given_account(&*store, new_account(&server, 1, None, NOW)).await;

    let last_second = given_push(&*store, new_push(&account, "last", NOW - 59, NOW + 1)).await;
    assert!(store.answer_push(last_second.id, true, NOW).await.unwrap());
    assert_eq!(
        stored_push(&*store, &last_second).await,
        PushRequest {
            answered_at: Some(NOW),
            approved: Some(true),
            ..last_second
        }
    );

    for (name, expires_at) in [("at expiry", NOW), ("expired", NOW - 1)] {
        let push = given_push(&*store, new_push(&account, name, NOW - 60, expires_at)).await;
        for approved in [true, false] {
            assert!(
                !store.answer_push(push.id, approved, NOW).await.unwrap(),
                "{name}"
            );
        }
        assert_eq!(stored_push(&*store, &push).await, push, "{name}");
    }
}

async fn a_login_challenge_is_consumed_once_keeping_the_rest_of_the_browser_session(db: TestDb) {
    let store = open(&db).await;
    let server = given_server(&*store).await;
    let alice = given_user(&*store, &server, "alice").await;
    let fresh = new_browser_session(&server, "one");
    store.ensure_browser_session(&fresh).await.unwrap();
    let full = filled_browser_session(&*store, &alice, &fresh, b"challenge").await;
    let challenge = full.login.as_ref().expect("a challenge").challenge_hash;

    assert!(store.consume_login_challenge(&challenge).await.unwrap());
    // The challenge, its seed, its deadline and its base URL go; the rest stays.
    let consumed = BrowserSession {
        login: None,
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
    let next = LoginChallenge {
        seed: vec![7; 32],
        challenge_hash: SecretHash::of(b"next challenge"),
        expires_at: NOW + 120,
        base_url: "https://example.com/".into(),
    };
    assert!(store
        .renew_login_challenge(&fresh.server_id, &fresh.nonce_hash, &next, NOW)
        .await
        .unwrap());
    assert_eq!(
        stored_browser_session(&*store, &fresh).await,
        BrowserSession {
            login: Some(next),
            ..consumed.clone()
        }
    );
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
        let login = LoginChallenge {
            seed: vec![round; 32],
            challenge_hash: challenge,
            expires_at: NOW + 60,
            base_url: "https://example.com/".into(),
        };
        assert!(store
            .renew_login_challenge(&fresh.server_id, &fresh.nonce_hash, &login, NOW)
            .await
            .unwrap());
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
        store
            .set_browser_user_context(
                &b.server_id,
                &b.nonce_hash,
                b.user_context.as_deref().unwrap(),
            )
            .await
            .unwrap();
        assert!(store
            .set_browser_login(&b.server_id, &b.nonce_hash, None, session.id, account.id)
            .await
            .unwrap());
        assert_eq!(stored_browser_session(&*store, &b).await, b);
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
    assert!(store
        .set_browser_login(
            &on_alices.server_id,
            &on_alices.nonce_hash,
            None,
            alices.id,
            account.id
        )
        .await
        .is_err());
    assert_eq!(
        stored_browser_session(&*store, &on_alices).await,
        unset(&on_alices)
    );
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

    // An expired push takes no answer (`answer_push` checks the expiry): it stays unanswered.
    let expired = given_push(&*store, new_push(&account, "expired", NOW - 100, NOW - 40)).await;
    assert!(!store.answer_push(expired.id, false, NOW).await.unwrap());
    assert_eq!(stored_push(&*store, &expired).await, expired);

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
