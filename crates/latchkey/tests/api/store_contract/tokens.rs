//! `TokenStore`: refresh tokens (fresh once, then reused) and SCRAM handshakes (taken once).

use latchkey_core::crypto::secret::SecretHash;
use latchkey_core::model::{RefreshUse, ScramHandshake, Session, SessionState};
use latchkey_core::ServerId;

use super::{
    assert_conflict, given_server, given_session, given_user, new_handshake, new_session, open, NOW,
};
use crate::support::db::{both_backends, TestDb};

both_backends!(
    a_refresh_token_is_fresh_once_then_reused_and_an_unknown_one_is_unknown,
    racing_uses_of_a_refresh_token_see_exactly_one_fresh,
    refresh_tokens_die_with_their_session,
    a_handshake_round_trips_every_field_and_is_taken_once,
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
