//! A flood of logins against the real server, in a test binary of its own so that its load
//! does not disturb the timing of the other tests: 256 clients for a few seconds, with the
//! production argon2id cost. Process memory stays bounded (the hashing pool's workers reuse
//! their argon2 memory; the queue is bounded), refused logins get 503 or 429 at once rather
//! than waiting, and `/healthz` keeps answering meanwhile.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use latchkey_core::settings::Argon2Params;
use latchkey_core::Settings;
use latchkey_testkit::db::{Backend, TestDb};
use latchkey_testkit::server::{test_settings, TestServer};

const CLIENTS: usize = 256;
const FLOOD: Duration = Duration::from_secs(4);

fn resident_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kib: u64 = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap();
    kib * 1024
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_256_login_clients_leaves_memory_bounded_and_healthz_answering() {
    let Some(db) = TestDb::new(Backend::Sqlite).await else {
        return;
    };
    let settings = Settings {
        // Production cost (19 MiB, t = 2): 256 hashes at once would need ~4.8 GiB.
        argon2: Argon2Params::default(),
        hash_workers: 2,
        hash_queue: 32,
        // Every client comes from 127.0.0.1: a burst larger than the flood's first wave, so
        // the queue, not only the rate limit, is what refuses.
        login_rate_per_address: 50,
        login_burst_per_address: 200,
        ..test_settings()
    };
    let s = Arc::new(TestServer::start_with(db, settings).await);
    s.add_user("alice@example.com", "correct horse battery staple")
        .await;
    let before = resident_bytes();
    let stop = Arc::new(AtomicBool::new(false));
    let peak = Arc::new(AtomicU64::new(before));
    let sampler = {
        let (stop, peak) = (stop.clone(), peak.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                peak.fetch_max(resident_bytes(), Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };
    let health = {
        let (s, stop) = (s.clone(), stop.clone());
        tokio::spawn(async move {
            let http = reqwest::Client::new();
            let mut slowest = Duration::ZERO;
            let mut answered = 0;
            while !stop.load(Ordering::Relaxed) {
                let started = Instant::now();
                let r = http.get(s.url("/healthz")).send().await.unwrap();
                assert_eq!(r.status(), 200);
                slowest = slowest.max(started.elapsed());
                answered += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            (answered, slowest)
        })
    };
    let started = Instant::now();
    let clients: Vec<_> = (0..CLIENTS)
        .map(|i| {
            let s = s.clone();
            tokio::spawn(async move {
                // One connection per client, as an attacker would open them.
                let http = reqwest::Client::builder()
                    .pool_max_idle_per_host(1)
                    .build()
                    .unwrap();
                let mut statuses = Vec::new();
                let mut slowest = Duration::ZERO;
                while started.elapsed() < FLOOD {
                    let (user, password) = match i % 3 {
                        0 => ("alice@example.com", "correct horse battery staple"),
                        1 => ("alice@example.com", "wrong"),
                        _ => ("nobody@example.com", "wrong"),
                    };
                    let sent = Instant::now();
                    let r = http
                        .get(s.url("/session/login"))
                        .basic_auth(user, Some(password))
                        .send()
                        .await
                        .unwrap();
                    slowest = slowest.max(sent.elapsed());
                    statuses.push(r.status().as_u16());
                }
                (statuses, slowest)
            })
        })
        .collect();
    let mut counts = std::collections::BTreeMap::<u16, usize>::new();
    let mut slowest = Duration::ZERO;
    for client in clients {
        let (statuses, client_slowest) = client.await.unwrap();
        slowest = slowest.max(client_slowest);
        for status in statuses {
            *counts.entry(status).or_default() += 1;
        }
    }
    stop.store(true, Ordering::Relaxed);
    sampler.await.unwrap();
    let (health_answers, health_slowest) = health.await.unwrap();
    let peak = peak.load(Ordering::Relaxed);
    eprintln!(
        "flood: {counts:?}; slowest login answer {slowest:?}; RSS {} MiB before, peak {} MiB; \
         /healthz answered {health_answers} times, slowest {health_slowest:?}",
        before >> 20,
        peak >> 20
    );
    let refused = counts.get(&503).copied().unwrap_or(0) + counts.get(&429).copied().unwrap_or(0);
    assert!(refused > 0, "some logins are refused at once: {counts:?}");
    let judged: usize = [200, 207, 401, 403]
        .iter()
        .map(|c| counts.get(c).copied().unwrap_or(0))
        .sum();
    assert!(judged > 0, "some logins are judged: {counts:?}");
    assert!(
        counts
            .keys()
            .all(|c| [200, 207, 401, 403, 429, 503].contains(c)),
        "{counts:?}"
    );
    // Generous bounds: the machine is shared. Two workers' argon2 memory is 38 MiB.
    assert!(peak < 256 << 20, "peak RSS {} MiB", peak >> 20);
    assert!(
        slowest < Duration::from_secs(15),
        "a login waited {slowest:?}: queues are bounded"
    );
    assert!(
        health_answers >= 5,
        "/healthz answered {health_answers} times"
    );
    assert!(
        health_slowest < Duration::from_secs(2),
        "/healthz took {health_slowest:?} under the flood"
    );
}
