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
    /// The key's state now (failures of a window that has passed count as none).
    async fn failure_count(&self, key: &str, now: i64, window: i64) -> StoreResult<FailureCount>;
    /// Forgets the key's failures and CAPTCHA requirement (a login of that name succeeded).
    async fn clear_failures(&self, key: &str) -> StoreResult<()>;
}
