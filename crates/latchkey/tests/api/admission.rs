//! Admission control against the real server: the per-address login rate (429), the bounded
//! hashing queue (503), both with `Retry-After` in the family's error shape, and bounds on
//! paths no route matches. The flood of 256 clients (memory, `/healthz` meanwhile) runs in its
//! own test binary, `tests/flood.rs`, so its load does not disturb the timing of other tests.

use std::sync::Arc;

use latchkey_core::settings::Argon2Params;
use latchkey_core::Settings;
use serde_json::{json, Value};
use tokio::sync::Barrier;

use crate::support::db::{both_backends, TestDb};
use crate::support::server::{assert_error_model, test_settings, TestServer};

const ALICE: &str = "alice@example.com";
const PASSWORD: &str = "correct horse battery staple";

both_backends!(
    logins_beyond_an_addresss_burst_get_429_with_retry_after_in_each_familys_shape,
    a_full_hashing_queue_refuses_logins_with_503_and_retry_after,
    header_and_body_bounds_hold_on_paths_no_route_matches
);

fn limited() -> Settings {
    Settings {
        login_rate_per_address: 1,
        login_burst_per_address: 3,
        ..test_settings()
    }
}

async fn logins_beyond_an_addresss_burst_get_429_with_retry_after_in_each_familys_shape(
    db: TestDb,
) {
    let s = TestServer::start_with(db, limited()).await;
    s.add_user(ALICE, PASSWORD).await;
    for _ in 0..3 {
        assert_eq!(s.basic_login(ALICE, PASSWORD).await.status(), 200);
    }
    let refused = s.basic_login(ALICE, PASSWORD).await;
    assert_eq!(refused.headers()["retry-after"], "1");
    assert_error_model(refused, 429, 15).await;
    // Family B shares the address's bucket and answers in its own shape; checked before any
    // work, even for a malformed body.
    let scram = s
        .http
        .post(s.url("/auth/auth"))
        .json(&json!({"email": ALICE, "nonce": "abcdefghijklmnop"}))
        .send()
        .await
        .unwrap();
    assert_eq!(scram.status(), 429);
    assert_eq!(scram.headers()["retry-after"], "1");
    let body: Value = scram.json().await.unwrap();
    assert!(
        body["error"].as_str().unwrap().contains("too many logins"),
        "{body}"
    );
    // Session checks are not logins: never limited.
    for _ in 0..20 {
        let ok = s.http.get(s.url("/healthz")).send().await.unwrap();
        assert_eq!(ok.status(), 200);
    }
    let metrics = s
        .http
        .get(s.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("latchkey_login_rate_limited_total{route=\"/session/login\"} 1"),
        "{metrics}"
    );
}

async fn a_full_hashing_queue_refuses_logins_with_503_and_retry_after(db: TestDb) {
    // One worker, one waiting place, and a hash slow enough that the logins overlap.
    let settings = Settings {
        hash_workers: 1,
        hash_queue: 1,
        argon2: Argon2Params {
            memory_kib: 32 * 1024,
            iterations: 3,
            parallelism: 1,
        },
        ..test_settings()
    };
    let s = TestServer::start_with(db, settings).await;
    let barrier = Arc::new(Barrier::new(12));
    let tasks: Vec<_> = (0..12)
        .map(|i| {
            let request = s
                .http
                .get(s.url("/session/login"))
                .basic_auth(format!("nobody{i}@example.com"), Some("wrong"));
            let barrier = barrier.clone();
            tokio::spawn(async move {
                barrier.wait().await;
                request.send().await.unwrap()
            })
        })
        .collect();
    let mut refused = 0;
    let mut judged = 0;
    for task in tasks {
        let r = task.await.unwrap();
        match r.status().as_u16() {
            401 => judged += 1,
            503 => {
                refused += 1;
                assert_eq!(r.headers()["retry-after"], "1");
                assert_error_model(r, 503, 16).await;
            }
            other => panic!("unexpected status {other}"),
        }
    }
    assert!(judged >= 1, "one worker judges at least one login");
    assert!(refused >= 1, "the others do not wait in an unbounded queue");
    let metrics = s
        .http
        .get(s.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("latchkey_hashing_workers 1"), "{metrics}");
    assert!(
        metrics.contains(&format!("latchkey_hashing_rejected {refused}")),
        "{metrics}"
    );
    assert!(metrics.contains("latchkey_process_resident_memory_bytes "));
    assert!(metrics.contains("latchkey_process_open_fds "));
}

async fn header_and_body_bounds_hold_on_paths_no_route_matches(db: TestDb) {
    let s = TestServer::start(db).await;
    let big = "x".repeat(9 * 1024);
    for path in ["/no/such/route", "/session/nothing-here", "/sessions/a/b/c"] {
        let r = s
            .http
            .get(s.url(path))
            .header("X-Big", &big)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 431, "{path}");
        // A connection of its own: the server answers before reading the body, then closes.
        let r = reqwest::Client::new()
            .post(s.url(path))
            .header("Content-Type", "application/json")
            .body(vec![b' '; 65 * 1024])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 413, "{path}");
    }
    // Within bounds, an unknown route is still a 404 in the family's shape.
    let r = s
        .http
        .get(s.url("/session/nothing-here"))
        .send()
        .await
        .unwrap();
    assert_error_model(r, 404, 5).await;
}
