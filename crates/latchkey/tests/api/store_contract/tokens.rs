//! `TokenStore`: refresh chains (a current token, one unused successor that can be replaced or
//! promoted by compare-and-set, superseded tokens kept) and used SCRAM handshakes (recorded
//! once).

use latchkey_core::crypto::secret::SecretHash;
use latchkey_core::model::{RefreshStanding, Session, SessionState};
use latchkey_core::Store;
use uuid::Uuid;

use super::{at_once, given_server, given_session, given_user, new_session, open, NOW, ROUNDS};
use crate::support::db::{both_backends, TestDb};

both_backends!(
    a_refresh_chain_replaces_and_promotes_successors_and_keeps_superseded_tokens,
    racing_promotions_of_one_successor_see_exactly_one_take,
    refresh_chains_die_with_their_session,
    a_session_inserted_with_a_refresh_token_starts_its_chain_there,
    a_used_handshake_is_recorded_once,
    racing_records_of_one_used_handshake_see_exactly_one_first_use,
);

fn token(name: &str) -> SecretHash {
    SecretHash::of(name.as_bytes())
}

async fn standing(store: &dyn Store, name: &str) -> RefreshStanding {
    store.refresh_standing(&token(name)).await.unwrap()
}

async fn a_session_inserted_with_a_refresh_token_starts_its_chain_there(db: TestDb) {
    let store = open(&db).await;
    let server = given_server(&*store).await;
    let user = given_user(&*store, &server, "alice").await;
    let session = new_session(&server, Some(&user));
    store
        .insert_session(&session, &token("bearer"), Some(&token("login")), None)
        .await
        .unwrap();
    assert_eq!(
        standing(&*store, "login").await,
        RefreshStanding::Current {
            session_id: session.id,
            next: None
        }
    );
    // The chain moves on as one started after the insert does.
    assert!(store
        .replace_refresh_successor(session.id, &token("login"), None, &token("s1"), NOW)
        .await
        .unwrap());
    assert_eq!(
        standing(&*store, "login").await,
        RefreshStanding::Current {
            session_id: session.id,
            next: Some(token("s1"))
        }
    );
    // Without one, no chain.
    let other = new_session(&server, Some(&user));
    store
        .insert_session(&other, &token("other bearer"), None, None)
        .await
        .unwrap();
    assert_eq!(
        standing(&*store, "other bearer").await,
        RefreshStanding::Unknown
    );
}

async fn a_refresh_chain_replaces_and_promotes_successors_and_keeps_superseded_tokens(db: TestDb) {
    let store = open(&db).await;
    let server = given_server(&*store).await;
    let user = given_user(&*store, &server, "alice").await;
    let session = given_session(&*store, new_session(&server, Some(&user))).await;
    let sid = session.id;
    assert_eq!(standing(&*store, "login").await, RefreshStanding::Unknown);
    store
        .start_refresh_chain(sid, &token("login"))
        .await
        .unwrap();
    assert_eq!(
        standing(&*store, "login").await,
        RefreshStanding::Current {
            session_id: sid,
            next: None
        }
    );

    // A successor, then a replacement: the first successor is kept as superseded (two holders
    // of the current token), a successor whose compare-and-set failed never existed.
    assert!(store
        .replace_refresh_successor(sid, &token("login"), None, &token("s1"), NOW)
        .await
        .unwrap());
    assert!(
        !store
            .replace_refresh_successor(sid, &token("login"), None, &token("lost"), NOW)
            .await
            .unwrap(),
        "the successor moved: the compare-and-set fails"
    );
    assert!(store
        .replace_refresh_successor(sid, &token("login"), Some(&token("s1")), &token("s2"), NOW)
        .await
        .unwrap());
    assert_eq!(
        standing(&*store, "s1").await,
        RefreshStanding::Superseded { session_id: sid }
    );
    assert_eq!(standing(&*store, "lost").await, RefreshStanding::Unknown);
    assert_eq!(
        standing(&*store, "s2").await,
        RefreshStanding::Next {
            session_id: sid,
            current: token("login")
        }
    );
    assert_eq!(
        standing(&*store, "login").await,
        RefreshStanding::Current {
            session_id: sid,
            next: Some(token("s2"))
        }
    );

    // Promoting s2: it is current, login superseded, s3 its successor.
    assert!(!store
        .promote_refresh_successor(sid, &token("login"), &token("s1"), &token("x"), NOW)
        .await
        .unwrap());
    assert!(store
        .promote_refresh_successor(sid, &token("login"), &token("s2"), &token("s3"), NOW)
        .await
        .unwrap());
    assert!(
        !store
            .promote_refresh_successor(sid, &token("login"), &token("s2"), &token("s4"), NOW)
            .await
            .unwrap(),
        "a second promotion of the same successor fails"
    );
    assert_eq!(
        standing(&*store, "login").await,
        RefreshStanding::Superseded { session_id: sid }
    );
    assert_eq!(
        standing(&*store, "s2").await,
        RefreshStanding::Current {
            session_id: sid,
            next: Some(token("s3"))
        }
    );
    assert_eq!(standing(&*store, "s4").await, RefreshStanding::Unknown);
    assert!(
        !store
            .replace_refresh_successor(sid, &token("login"), Some(&token("s2")), &token("x"), NOW)
            .await
            .unwrap(),
        "a superseded token has no successor to replace"
    );
    assert_eq!(
        standing(&*store, "never issued").await,
        RefreshStanding::Unknown
    );
}

async fn racing_promotions_of_one_successor_see_exactly_one_take(db: TestDb) {
    let store = open(&db).await;
    let server = given_server(&*store).await;
    let user = given_user(&*store, &server, "alice").await;
    for round in 0..ROUNDS {
        let session = given_session(&*store, new_session(&server, Some(&user))).await;
        let (current, next) = (token(&format!("c{round}")), token(&format!("n{round}")));
        store
            .start_refresh_chain(session.id, &current)
            .await
            .unwrap();
        assert!(store
            .replace_refresh_successor(session.id, &current, None, &next, NOW)
            .await
            .unwrap());
        let taken = at_once(8, |i| {
            let store = store.clone();
            let new_next = token(&format!("r{round}-{i}"));
            async move {
                store
                    .promote_refresh_successor(session.id, &current, &next, &new_next, NOW)
                    .await
                    .unwrap()
            }
        })
        .await
        .into_iter()
        .filter(|t| *t)
        .count();
        assert_eq!(taken, 1, "round {round}: exactly one promotion takes");
        assert_eq!(
            store.refresh_standing(&current).await.unwrap(),
            RefreshStanding::Superseded {
                session_id: session.id
            }
        );
        assert!(matches!(
            store.refresh_standing(&next).await.unwrap(),
            RefreshStanding::Current { next: Some(_), .. }
        ));
    }
}

async fn refresh_chains_die_with_their_session(db: TestDb) {
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
    for (name, session) in [
        ("alice", &alices),
        ("dead", &bobs_dead),
        ("live", &bobs_live),
    ] {
        store
            .start_refresh_chain(session.id, &token(name))
            .await
            .unwrap();
        let next = token(&format!("{name} next"));
        store
            .replace_refresh_successor(session.id, &token(name), None, &next, NOW)
            .await
            .unwrap();
        store
            .promote_refresh_successor(
                session.id,
                &token(name),
                &next,
                &token(&format!("{name} after")),
                NOW - 90,
            )
            .await
            .unwrap();
    }

    // Deleting a user deletes its sessions, and with them every token of their chains.
    assert!(store.delete_user(alice.id).await.unwrap());
    for name in ["alice", "alice next", "alice after"] {
        assert_eq!(
            standing(&*store, name).await,
            RefreshStanding::Unknown,
            "{name}"
        );
    }
    // A chain cannot start on a session that does not exist.
    assert!(store
        .start_refresh_chain(Uuid::new_v4(), &token("orphan"))
        .await
        .is_err());

    // Purging a long-dead session deletes its tokens; only the session is counted.
    assert_eq!(store.purge(NOW - 1000, cutoff).await.unwrap(), 1);
    assert_eq!(store.session(bobs_dead.id).await.unwrap(), None);
    for name in ["dead", "dead next", "dead after"] {
        assert_eq!(
            standing(&*store, name).await,
            RefreshStanding::Unknown,
            "{name}"
        );
    }
    // A live session's chain is kept, superseded tokens included.
    assert_eq!(
        standing(&*store, "live").await,
        RefreshStanding::Superseded {
            session_id: bobs_live.id
        }
    );
    assert!(matches!(
        standing(&*store, "live next").await,
        RefreshStanding::Current { .. }
    ));
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
