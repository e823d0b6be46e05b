//! `HousekeepingStore`: reachability, and the purge of what has died, each kind of row by its
//! own cut-off (failure counters, dead sessions, used handshakes, app challenges, pushes,
//! browser sessions).

use latchkey_core::crypto::secret::SecretHash;
use latchkey_core::model::{BrowserSession, Session, SessionState};
use latchkey_core::store::FailureCount;

use super::{
    given_account, given_push, given_server, given_session, given_user, new_account,
    new_app_challenge, new_push, new_session, open, stored, stored_push, NOW,
};
use crate::support::db::{both_backends, Backend, TestDb};

both_backends!(
    reopening_a_migrated_database_keeps_its_data,
    purge_removes_old_failures_and_long_dead_sessions_only,
    purge_keeps_a_captcha_requirement_until_the_sessions_cutoff,
    purge_forgets_used_handshakes_expired_before_the_failures_cutoff,
    purge_removes_app_challenges_expired_before_the_failures_cutoff,
    purge_removes_pushes_expired_before_the_sessions_cutoff,
    purge_forgets_browser_sessions_logged_out_and_made_before_the_sessions_cutoff,
);

/// A window long enough that a counter's failures still count at `NOW`: a purged counter
/// reads as no failures, a kept one as its own.
const LONG_WINDOW: i64 = 1_000_000;

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

async fn purge_removes_old_failures_and_long_dead_sessions_only(db: TestDb) {
    let store = open(&db).await;
    let server = given_server(&*store).await;
    let user = given_user(&*store, &server, "alice").await;
    // Three counters, whose windows started at NOW - 100, NOW - 50 and NOW.
    for (key, at) in [
        ("user:alice", NOW - 100),
        ("user:bob", NOW - 50),
        ("ip:192.0.2.1", NOW),
    ] {
        store
            .record_failure(key, at, LONG_WINDOW, None)
            .await
            .unwrap();
    }
    // A second failure in the oldest window does not move its start.
    store
        .record_failure("user:alice", NOW - 10, LONG_WINDOW, None)
        .await
        .unwrap();

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

    // One failure counter and three sessions are older than the cut-offs.
    assert_eq!(store.purge(NOW - 50, cutoff).await.unwrap(), 4);

    let failures = |key: &'static str| {
        let store = store.clone();
        async move {
            store
                .failure_count(key, NOW, LONG_WINDOW)
                .await
                .unwrap()
                .failures
        }
    };
    assert_eq!(failures("user:alice").await, 0);
    assert_eq!(failures("user:bob").await, 1);
    assert_eq!(failures("ip:192.0.2.1").await, 1);
    for gone in [&revoked_long_ago, &idle_long_ago, &too_old_long_ago] {
        assert_eq!(store.session(gone.id).await.unwrap(), None);
    }
    for kept in [&revoked_lately, &idle_lately, &live] {
        assert_eq!(&stored(&*store, kept.id).await, kept);
    }
    assert_eq!(store.purge(NOW - 50, cutoff).await.unwrap(), 0);
}

async fn purge_keeps_a_captcha_requirement_until_the_sessions_cutoff(db: TestDb) {
    let store = open(&db).await;
    let failures_before = NOW - 100;
    let sessions_before = NOW - 1000;
    // Each counter's window starts at its (first) failure; `required` ones hold a CAPTCHA
    // requirement (threshold 1).
    let counters = [
        ("stale", NOW - 200, false, false),
        ("at the failures cut-off", failures_before, false, true),
        ("recent", NOW - 10, false, true),
        ("required", NOW - 500, true, true),
        (
            "required at the sessions cut-off",
            sessions_before,
            true,
            true,
        ),
        ("required long ago", sessions_before - 1, true, false),
        ("required lately", NOW - 10, true, true),
    ];
    for (key, at, required, _) in counters {
        let got = store
            .record_failure(key, at, LONG_WINDOW, required.then_some(1))
            .await
            .unwrap();
        assert_eq!(
            got,
            FailureCount {
                failures: 1,
                captcha_required: required
            }
        );
    }
    // A window that restarted counts from its new start.
    store
        .record_failure("restarted", NOW - 300, 60, None)
        .await
        .unwrap();
    store
        .record_failure("restarted", NOW - 50, 60, None)
        .await
        .unwrap();

    assert_eq!(
        store.purge(failures_before, sessions_before).await.unwrap(),
        2
    );
    for (key, _, required, kept) in counters {
        let expected = if kept {
            FailureCount {
                failures: 1,
                captcha_required: required,
            }
        } else {
            FailureCount::default()
        };
        assert_eq!(
            store.failure_count(key, NOW, LONG_WINDOW).await.unwrap(),
            expected,
            "{key}"
        );
    }
    assert_eq!(
        store
            .failure_count("restarted", NOW, LONG_WINDOW)
            .await
            .unwrap()
            .failures,
        1
    );
    assert_eq!(
        store.purge(failures_before, sessions_before).await.unwrap(),
        0
    );
}

async fn purge_forgets_used_handshakes_expired_before_the_failures_cutoff(db: TestDb) {
    let store = open(&db).await;
    // Used handshakes go by the failures cut-off, not the (much older) sessions one.
    let failures_before = NOW;
    let sessions_before = NOW - 10_000;
    let long_expired = SecretHash::of(b"long expired");
    let just_expired = SecretHash::of(b"just expired");
    let at_cutoff = SecretHash::of(b"at the cut-off");
    let pending = SecretHash::of(b"pending");
    for (hash, expires_at) in [
        (&long_expired, NOW - 600),
        (&just_expired, failures_before - 1),
        (&at_cutoff, failures_before),
        (&pending, NOW + 60),
    ] {
        assert!(store.record_used_handshake(hash, expires_at).await.unwrap());
    }

    assert_eq!(
        store.purge(failures_before, sessions_before).await.unwrap(),
        2
    );
    assert_eq!(
        store.purge(failures_before, sessions_before).await.unwrap(),
        0
    );
    // Kept records still refuse a second use; forgotten ones are new again.
    for kept in [&at_cutoff, &pending] {
        assert!(!store.record_used_handshake(kept, NOW + 60).await.unwrap());
    }
    for gone in [&long_expired, &just_expired] {
        assert!(store.record_used_handshake(gone, NOW + 60).await.unwrap());
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

async fn purge_forgets_browser_sessions_logged_out_and_made_before_the_sessions_cutoff(db: TestDb) {
    let store = open(&db).await;
    let server = given_server(&*store).await;
    let user = given_user(&*store, &server, "alice").await;
    let sessions_before = NOW - 100;
    let made = |name: &str, created_at: i64| BrowserSession {
        created_at,
        ..super::app::new_browser_session(&server, name)
    };
    let old_idle = made("old idle", sessions_before - 1);
    let at_cutoff = made("at the cut-off", sessions_before);
    let recent = made("recent", NOW);
    let old_logged_in = made("old, logged in", sessions_before - 50);
    for b in [&old_idle, &at_cutoff, &recent, &old_logged_in] {
        store.ensure_browser_session(b).await.unwrap();
    }
    let session = given_session(&*store, new_session(&server, Some(&user))).await;
    let account = given_account(&*store, new_account(&server, 7, Some(&user), NOW)).await;
    assert!(store
        .set_browser_login(
            &server.id,
            &old_logged_in.nonce_hash,
            None,
            session.id,
            account.id
        )
        .await
        .unwrap());

    assert_eq!(store.purge(NOW, sessions_before).await.unwrap(), 1);
    assert_eq!(
        store
            .browser_session(&server.id, &old_idle.nonce_hash)
            .await
            .unwrap(),
        None
    );
    for kept in [&at_cutoff, &recent, &old_logged_in] {
        assert!(store
            .browser_session(&server.id, &kept.nonce_hash)
            .await
            .unwrap()
            .is_some());
    }
}
