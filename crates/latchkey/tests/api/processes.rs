//! Several latchkey processes on one PostgreSQL database, as behind a load balancer: what one
//! process revokes, the others refuse within a second (events over LISTEN/NOTIFY), activity and
//! keys are shared through the store.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::db::{Backend, TestDb};
use crate::support::server::{auth_token, TestServer};

const ALICE: &str = "alice@example.com";
const PASSWORD: &str = "correct horse battery staple";

async fn status(s: &TestServer, path: &str, token: &str) -> u16 {
    s.http
        .get(s.url(path))
        .header("X-Auth-Token", token)
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// Polls (no fixed sleep) until `path` answers `expected` on `s`; answers how long it took.
async fn until_status(s: &TestServer, path: &str, token: &str, expected: u16) -> Duration {
    let started = Instant::now();
    while status(s, path, token).await != expected {
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{path} never answered {expected}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    started.elapsed()
}

async fn two_processes() -> Option<(TestServer, TestServer)> {
    let db = TestDb::new(Backend::Postgres).await?;
    let one = TestServer::start(db).await;
    let two = one.another_process().await;
    one.add_user(ALICE, PASSWORD).await;
    Some((one, two))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL: LATCHKEY_TEST_POSTGRES_URL=... cargo test -- --ignored on_postgres"]
async fn a_session_revoked_by_one_process_is_refused_by_the_other_within_a_second_on_postgres() {
    let Some((one, two)) = two_processes().await else {
        return;
    };
    let token = auth_token(&one.basic_login(ALICE, PASSWORD).await);
    // Both processes have the session in their hot-path cache.
    assert_eq!(status(&one, "/session/keepalive", &token).await, 200);
    assert_eq!(status(&two, "/session/keepalive", &token).await, 200);
    assert_eq!(status(&two, "/session/logout", &token).await, 200);
    let took = until_status(&one, "/session/keepalive", &token, 401).await;
    assert!(took < Duration::from_secs(1), "took {took:?}");

    // Revoke-all through family C on one process reaches the other too.
    let a = auth_token(&one.basic_login(ALICE, PASSWORD).await);
    let b = auth_token(&two.basic_login(ALICE, PASSWORD).await);
    assert_eq!(status(&two, "/session/keepalive", &a).await, 200);
    assert_eq!(status(&one, "/session/keepalive", &b).await, 200);
    let revoked: Value = one
        .http
        .delete(one.url("/sessions"))
        .bearer_auth(&a)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(revoked["revokedCount"], 2);
    let took = until_status(&two, "/sessions/count", &a, 401).await;
    assert!(took < Duration::from_secs(1), "took {took:?}");
    assert_eq!(status(&two, "/session/keepalive", &b).await, 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL: LATCHKEY_TEST_POSTGRES_URL=... cargo test -- --ignored on_postgres"]
async fn activity_seen_by_one_process_keeps_the_session_alive_on_the_other_on_postgres() {
    let Some((one, two)) = two_processes().await else {
        return;
    };
    let token = auth_token(&one.basic_login(ALICE, PASSWORD).await);
    assert_eq!(status(&two, "/session/keepalive", &token).await, 200);
    // Only process one sees activity for a while; it flushes it to the store.
    for _ in 0..3 {
        one.clock.advance(600);
        two.clock.advance(600);
        assert_eq!(status(&one, "/session/keepalive", &token).await, 200);
    }
    one.core.housekeeping().flush_activity().await.unwrap();
    // Process two's cache thinks the session idled out; the store says otherwise.
    assert_eq!(status(&two, "/session/keepalive", &token).await, 200);
}
