//! `ThrottleStore`: one failure counter per key, incremented by the database, which answers
//! the new count; the window starts at a key's first failure and restarts with the first
//! failure after it; the CAPTCHA requirement is set by the failure that reaches the threshold
//! and outlives the window until the key is cleared.

use latchkey_core::store::FailureCount;

use super::{at_once, open, NOW, ROUNDS};
use crate::support::db::{both_backends, TestDb};

both_backends!(
    failures_are_counted_within_the_window_and_cleared_per_key,
    a_captcha_requirement_is_set_idempotently_and_cleared,
    racing_failures_of_one_key_are_each_counted_once,
    several_keys_are_read_at_once_in_the_order_asked,
);

const WINDOW: i64 = 60;

fn count(failures: u64, captcha_required: bool) -> FailureCount {
    FailureCount {
        failures,
        captcha_required,
    }
}

async fn failures_are_counted_within_the_window_and_cleared_per_key(db: TestDb) {
    let store = open(&db).await;
    let fail = |key: &'static str, at: i64| {
        let store = store.clone();
        async move { store.record_failure(key, at, WINDOW, None).await.unwrap() }
    };
    let state = |key: &'static str, at: i64| {
        let store = store.clone();
        async move { store.failure_count(key, at, WINDOW).await.unwrap() }
    };

    // A key never seen has no failures.
    assert_eq!(state("user:alice", NOW).await, FailureCount::default());
    assert_eq!(FailureCount::default(), count(0, false));

    // The window opens at the first failure; each failure in it answers the new count.
    assert_eq!(fail("user:alice", NOW).await, count(1, false));
    assert_eq!(fail("user:alice", NOW + 30).await, count(2, false));
    assert_eq!(fail("user:alice", NOW + 59).await, count(3, false));
    assert_eq!(state("user:alice", NOW + 59).await, count(3, false));
    // Two failures of the same second both count.
    assert_eq!(fail("ip:192.0.2.1", NOW).await, count(1, false));
    assert_eq!(fail("ip:192.0.2.1", NOW).await, count(2, false));
    assert_eq!(state("ip:192.0.2.1", NOW).await, count(2, false));
    // Keys are counted apart.
    assert_eq!(state("user:bob", NOW).await, count(0, false));
    assert_eq!(
        state("user:Alice", NOW).await,
        count(0, false),
        "keys compare exactly"
    );

    // The window is `WINDOW` seconds from its first failure: at its end its failures count as
    // none, and the next failure opens a new window (not a sliding one: the failures at
    // NOW + 30 and NOW + 59 are forgotten with the first).
    assert_eq!(state("user:alice", NOW + WINDOW).await, count(0, false));
    assert_eq!(fail("user:alice", NOW + WINDOW).await, count(1, false));
    assert_eq!(state("user:alice", NOW + WINDOW).await, count(1, false));
    assert_eq!(
        fail("user:alice", NOW + 2 * WINDOW - 1).await,
        count(2, false)
    );
    assert_eq!(
        state("user:alice", NOW + 2 * WINDOW - 1).await,
        count(2, false)
    );
    assert_eq!(state("user:alice", NOW + 2 * WINDOW).await, count(0, false));
    // Long after, too.
    assert_eq!(fail("user:alice", NOW + 10_000).await, count(1, false));

    store.clear_failures("user:alice").await.unwrap();
    assert_eq!(state("user:alice", NOW + 10_000).await, count(0, false));
    assert_eq!(
        state("ip:192.0.2.1", NOW).await,
        count(2, false),
        "clearing one key leaves the others"
    );
    store.clear_failures("user:alice").await.unwrap();
    store.clear_failures("user:nobody").await.unwrap();
    // A cleared key starts again from one.
    assert_eq!(fail("user:alice", NOW + 10_001).await, count(1, false));
}

async fn a_captcha_requirement_is_set_idempotently_and_cleared(db: TestDb) {
    let store = open(&db).await;
    let fail = |key: &'static str, at: i64, captcha_after: Option<u64>| {
        let store = store.clone();
        async move {
            store
                .record_failure(key, at, WINDOW, captcha_after)
                .await
                .unwrap()
        }
    };
    let state = |key: &'static str, at: i64| {
        let store = store.clone();
        async move { store.failure_count(key, at, WINDOW).await.unwrap() }
    };

    // Set exactly by the failure that reaches the threshold, and kept by the later ones.
    assert_eq!(fail("user:alice", NOW, Some(3)).await, count(1, false));
    assert_eq!(fail("user:alice", NOW + 1, Some(3)).await, count(2, false));
    assert_eq!(state("user:alice", NOW + 1).await, count(2, false));
    assert_eq!(fail("user:alice", NOW + 2, Some(3)).await, count(3, true));
    assert_eq!(fail("user:alice", NOW + 3, Some(3)).await, count(4, true));
    assert_eq!(state("user:alice", NOW + 3).await, count(4, true));
    assert_eq!(state("user:bob", NOW + 3).await, count(0, false));

    // The requirement outlives the window: its failures count as none, it stays.
    assert_eq!(state("user:alice", NOW + WINDOW).await, count(0, true));
    assert_eq!(
        fail("user:alice", NOW + WINDOW, Some(3)).await,
        count(1, true),
        "a new window keeps the requirement"
    );
    // A failure counted without a threshold keeps it too.
    assert_eq!(fail("user:alice", NOW + WINDOW, None).await, count(2, true));

    // Clearing forgets both the failures and the requirement; reaching the threshold again
    // sets it again.
    store.clear_failures("user:alice").await.unwrap();
    assert_eq!(state("user:alice", NOW + WINDOW).await, count(0, false));
    store.clear_failures("user:alice").await.unwrap();
    assert_eq!(
        fail("user:alice", NOW + 100, Some(2)).await,
        count(1, false)
    );
    assert_eq!(fail("user:alice", NOW + 101, Some(2)).await, count(2, true));

    // Without a threshold it is never set, however many failures.
    for n in 1..=10 {
        assert_eq!(fail("ip:192.0.2.1", NOW, None).await, count(n, false));
    }
    assert_eq!(state("ip:192.0.2.1", NOW).await, count(10, false));
    // A threshold already passed is reached by the next failure counted with it.
    assert_eq!(fail("ip:192.0.2.1", NOW, Some(3)).await, count(11, true));
    // A threshold of one: the first failure requires it.
    assert_eq!(fail("ip:192.0.2.2", NOW, Some(1)).await, count(1, true));
    // A new window does not reach the threshold before its own count does.
    assert_eq!(fail("user:carol", NOW, Some(3)).await, count(1, false));
    assert_eq!(fail("user:carol", NOW + 1, Some(3)).await, count(2, false));
    assert_eq!(
        fail("user:carol", NOW + WINDOW, Some(3)).await,
        count(1, false)
    );
    assert_eq!(
        fail("user:carol", NOW + WINDOW + 1, Some(3)).await,
        count(2, false)
    );
    assert_eq!(
        fail("user:carol", NOW + WINDOW + 2, Some(3)).await,
        count(3, true)
    );
}

async fn racing_failures_of_one_key_are_each_counted_once(db: TestDb) {
    const RACERS: usize = 12;
    const CAPTCHA_AFTER: u64 = 5;
    let store = open(&db).await;

    for round in 0..ROUNDS {
        let key: &'static str = if round % 2 == 0 {
            "user:alice"
        } else {
            "ip:192.0.2.1"
        };
        store.clear_failures(key).await.unwrap();
        let counts = at_once(RACERS, |_| {
            let store = store.clone();
            async move {
                store
                    .record_failure(key, NOW, WINDOW, Some(CAPTCHA_AFTER))
                    .await
                    .unwrap()
            }
        })
        .await;
        let mut sorted = counts.clone();
        sorted.sort_unstable_by_key(|c| c.failures);
        // Each increment answers the count it produced, and the one that reached the
        // threshold (with every later one) the requirement.
        let expected: Vec<FailureCount> = (1..=RACERS as u64)
            .map(|n| count(n, n >= CAPTCHA_AFTER))
            .collect();
        assert_eq!(sorted, expected, "round {round}: {counts:?}");
        assert_eq!(
            store.failure_count(key, NOW, WINDOW).await.unwrap(),
            count(RACERS as u64, true),
            "round {round}"
        );
    }
}

async fn several_keys_are_read_at_once_in_the_order_asked(db: TestDb) {
    let store = open(&db).await;
    store
        .record_failure("name:a", NOW, WINDOW, Some(1))
        .await
        .unwrap();
    for _ in 0..3 {
        store
            .record_failure("addr:b", NOW, WINDOW, None)
            .await
            .unwrap();
    }
    store
        .record_failure("addr:old", NOW - WINDOW, WINDOW, None)
        .await
        .unwrap();

    // Each key's count at its place, whatever order the rows come back in; a key never
    // counted and one whose window has passed have none.
    let read = |keys: &'static [&'static str]| {
        let store = store.clone();
        async move { store.failure_counts(keys, NOW, WINDOW).await.unwrap() }
    };
    assert_eq!(
        read(&["name:a", "addr:b"]).await,
        [count(1, true), count(3, false)]
    );
    assert_eq!(
        read(&["addr:b", "name:a"]).await,
        [count(3, false), count(1, true)]
    );
    assert_eq!(
        read(&["nobody", "addr:b", "addr:old"]).await,
        [count(0, false), count(3, false), count(0, false)]
    );
    assert_eq!(read(&["addr:b"]).await, [count(3, false)]);
    assert_eq!(read(&[]).await, Vec::<FailureCount>::new());
    // The same key twice answers twice.
    assert_eq!(
        read(&["name:a", "name:a"]).await,
        [count(1, true), count(1, true)]
    );
}
