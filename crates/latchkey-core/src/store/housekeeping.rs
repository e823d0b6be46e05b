//! What keeps the store healthy: a reachability check and the purge of what has died.

use async_trait::async_trait;

use super::StoreResult;

#[async_trait]
pub trait HousekeepingStore: Send + Sync + 'static {
    /// The backend's name (`sqlite`, `postgres`), for logs and `/readyz`.
    fn backend(&self) -> &'static str;
    /// One round trip: is the database reachable?
    async fn ping(&self) -> StoreResult<()>;
    /// Deletes failure counters whose window started before `failures_before` (those holding a
    /// CAPTCHA requirement only once their window started before `sessions_before`), sessions
    /// dead since before `sessions_before` (with their refresh tokens), records of used SCRAM
    /// handshakes and app challenges expired before `failures_before` (the caller passes a
    /// cut-off in the past, so a used handshake is remembered as long as it could be replayed),
    /// and push requests and transactions expired before `sessions_before`. Answers the number
    /// of rows removed (not counting rows removed by cascade).
    async fn purge(&self, failures_before: i64, sessions_before: i64) -> StoreResult<u64>;
}
