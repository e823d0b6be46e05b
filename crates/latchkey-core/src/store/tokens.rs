//! Family B's one-time values: refresh token chains (a session's current token and its one
//! unused successor live on the session row, so each transition is one compare-and-set there;
//! superseded tokens are kept to detect theft) and used SCRAM handshakes. A SCRAM first message stores nothing (its server nonce carries the handshake,
//! authenticated by the server's key: see `services::polario`); only the final message records
//! the handshake it uses, so each is usable once, across processes.

use async_trait::async_trait;
use uuid::Uuid;

use super::StoreResult;
use crate::crypto::secret::SecretHash;
use crate::model::RefreshStanding;

#[async_trait]
pub trait TokenStore: Send + Sync + 'static {
    /// Makes `token` the session's current refresh token, with no successor (at login).
    async fn start_refresh_chain(&self, session_id: Uuid, token: &SecretHash) -> StoreResult<()>;
    /// Where `token` stands.
    async fn refresh_standing(&self, token: &SecretHash) -> StoreResult<RefreshStanding>;
    /// While `current` is the session's current token and `next` its successor (`None`: none),
    /// makes `new_next` the successor, in one compare-and-set; false when either has moved. A
    /// replaced `next` is kept as superseded (from `at`): presenting it later is theft, as
    /// when a thief holding the current token replaced the rotating client's successor.
    async fn replace_refresh_successor(
        &self,
        session_id: Uuid,
        current: &SecretHash,
        next: Option<&SecretHash>,
        new_next: &SecretHash,
        at: i64,
    ) -> StoreResult<bool>;
    /// While `current` and `next` are the session's tokens, makes `next` current with
    /// `new_next` its successor, and keeps `current` as superseded (from `at`); false when
    /// either has moved. Atomic: of concurrent promotions exactly one takes.
    async fn promote_refresh_successor(
        &self,
        session_id: Uuid,
        current: &SecretHash,
        next: &SecretHash,
        new_next: &SecretHash,
        at: i64,
    ) -> StoreResult<bool>;

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
