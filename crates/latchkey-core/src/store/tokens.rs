//! Family B's one-time values: refresh tokens (used once, a reuse is theft) and used SCRAM
//! handshakes. A SCRAM first message stores nothing (its server nonce carries the handshake,
//! authenticated by the server's key: see `services::polario`); only the final message records
//! the handshake it uses, so each is usable once, across processes.

use async_trait::async_trait;
use uuid::Uuid;

use super::StoreResult;
use crate::crypto::secret::SecretHash;
use crate::model::RefreshUse;

#[async_trait]
pub trait TokenStore: Send + Sync + 'static {
    async fn insert_refresh_token(
        &self,
        token_hash: &SecretHash,
        session_id: Uuid,
        created_at: i64,
    ) -> StoreResult<()>;
    /// Marks the token used in the statement that finds it unused. Answers whether it was
    /// fresh, already used, or unknown; of two concurrent uses exactly one sees `Fresh`.
    async fn use_refresh_token(&self, token_hash: &SecretHash, at: i64) -> StoreResult<RefreshUse>;

    /// Records that the SCRAM handshake named by `nonce_hash` (SHA-256 of its combined nonce)
    /// has been used, in one INSERT that does nothing when the handshake is already recorded.
    /// True for the first use only: of concurrent calls with one nonce, in one process or
    /// several, exactly one sees true. The caller records the use *before* it judges the proof
    /// (a replay never gets a judgement) and judges the expiry itself; `expires_at` is when the
    /// handshake dies, after which the purge may forget the row (the expired nonce is refused
    /// by its own expiry from then on).
    async fn record_used_handshake(
        &self,
        nonce_hash: &SecretHash,
        expires_at: i64,
    ) -> StoreResult<bool>;
}
