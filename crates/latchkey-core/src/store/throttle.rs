//! Brute-force accounting: one counter row per key (a hashed user name or client address),
//! incremented by the database, which answers the new count. Rows are bounded by the number of
//! keys, not by the number of failures.

use async_trait::async_trait;

use super::StoreResult;

/// A key's failures within its current window, and whether it must solve a CAPTCHA.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FailureCount {
    pub failures: u64,
    pub captcha_required: bool,
}

/// The counts of `keys` in their order, from the `(key, count)` rows a store found (in any
/// order; a key without a row has none). For [`ThrottleStore::failure_counts`].
pub fn failure_counts_in_order(
    keys: &[&str],
    found: Vec<(String, FailureCount)>,
) -> Vec<FailureCount> {
    keys.iter()
        .map(|key| {
            found
                .iter()
                .find(|(k, _)| k == key)
                .map(|&(_, count)| count)
                .unwrap_or_default()
        })
        .collect()
}

#[async_trait]
pub trait ThrottleStore: Send + Sync + 'static {
    /// Counts one failure under `key` in one statement. The window starts at the first failure
    /// and restarts with the first failure after `window` seconds. When `captcha_after` is
    /// given and the count reaches it, the key needs a CAPTCHA until cleared (this outlives the
    /// window). Answers the state after the increment.
    async fn record_failure(
        &self,
        key: &str,
        now: i64,
        window: i64,
        captcha_after: Option<u64>,
    ) -> StoreResult<FailureCount>;
    /// The keys' states now, in the order of `keys`, read in one statement (failures of a
    /// window that has passed count as none; a key never counted has none).
    async fn failure_counts(
        &self,
        keys: &[&str],
        now: i64,
        window: i64,
    ) -> StoreResult<Vec<FailureCount>>;
    /// One key's state now.
    async fn failure_count(&self, key: &str, now: i64, window: i64) -> StoreResult<FailureCount> {
        Ok(self
            .failure_counts(&[key], now, window)
            .await?
            .pop()
            .unwrap_or_default())
    }
    /// Forgets the key's failures and CAPTCHA requirement (a login of that name succeeded).
    async fn clear_failures(&self, key: &str) -> StoreResult<()>;
}
