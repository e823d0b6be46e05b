//! Family B's one-time values: refresh tokens (used once, a reuse is theft) and SCRAM
//! handshakes between their two messages (taken by the final message, whatever its outcome).

use async_trait::async_trait;
use uuid::Uuid;

use super::StoreResult;
use crate::crypto::secret::SecretHash;
use crate::model::{RefreshUse, ScramHandshake};

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

    async fn insert_handshake(&self, handshake: &ScramHandshake) -> StoreResult<()>;
    /// Removes and answers the handshake (whether expired or not): each is usable once.
    async fn take_handshake(&self, nonce_hash: &SecretHash) -> StoreResult<Option<ScramHandshake>>;
}
