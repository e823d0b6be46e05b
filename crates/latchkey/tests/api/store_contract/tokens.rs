//! `TokenStore`: refresh tokens (fresh once, then reused) and used SCRAM handshakes (recorded
//! once).

use latchkey_core::crypto::secret::SecretHash;
use latchkey_core::model::{RefreshUse, Session, SessionState};

use super::{
    assert_conflict, at_once, given_server, given_session, given_user, new_session, open, NOW,
    ROUNDS,
};
use crate::support::db::{both_backends, TestDb};

both_backends!(
    a_refresh_token_is_fresh_once_then_reused_and_an_unknown_one_is_unknown,
    racing_uses_of_a_refresh_token_see_exactly_one_fresh,
    refresh_tokens_die_with_their_session,
    a_used_handshake_is_recorded_once,
    racing_records_of_one_used_handshake_see_exactly_one_first_use,
);

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

async fn a_used_handshake_is_recorded_once(db: TestDb) {
    let store = open(&db).await;
    let first = SecretHash::of(b"first nonce");
    let second = SecretHash::of(b"second nonce");

    assert!(store.record_used_handshake(&first, NOW + 60).await.unwrap());
    assert!(
        !store.record_used_handshake(&first, NOW + 60).await.unwrap(),
        "a second use is refused"
    );
    assert!(
        !store
            .record_used_handshake(&first, NOW + 120)
            .await
            .unwrap(),
        "whatever expiry it names"
    );
    // Each nonce on its own; no server, user or session row is needed.
    assert!(store
        .record_used_handshake(&second, NOW + 60)
        .await
        .unwrap());
    assert!(!store
        .record_used_handshake(&second, NOW + 60)
        .await
        .unwrap());
    // Expiry is the caller's to judge: an expired one is recorded as any other (and 0 and
    // i64 extremes fit the column).
    for (name, expires_at) in [
        (&b"expired"[..], NOW - 1),
        (b"zero", 0),
        (b"min", i64::MIN),
        (b"max", i64::MAX),
    ] {
        let hash = SecretHash::of(name);
        assert!(store
            .record_used_handshake(&hash, expires_at)
            .await
            .unwrap());
        assert!(!store
            .record_used_handshake(&hash, expires_at)
            .await
            .unwrap());
    }
    // Every byte value of the hash is kept apart.
    let zeros = SecretHash([0; 32]);
    let ones = SecretHash([0xff; 32]);
    assert!(store.record_used_handshake(&zeros, NOW).await.unwrap());
    assert!(store.record_used_handshake(&ones, NOW).await.unwrap());
    assert!(!store.record_used_handshake(&zeros, NOW).await.unwrap());
}

async fn racing_records_of_one_used_handshake_see_exactly_one_first_use(db: TestDb) {
    let store = open(&db).await;
    for round in 0..ROUNDS {
        let nonce = SecretHash::of(format!("raced nonce {round}").as_bytes());
        let firsts = at_once(8, |_| {
            let store = store.clone();
            async move { store.record_used_handshake(&nonce, NOW + 60).await.unwrap() }
        })
        .await;
        assert_eq!(
            firsts.iter().filter(|&&first| first).count(),
            1,
            "round {round}: exactly one first use in {firsts:?}"
        );
    }
}
