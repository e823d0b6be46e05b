//! Family B's one-time values. A refresh token is marked used by the UPDATE that finds it
//! unused, and a used SCRAM handshake is recorded by an INSERT ... ON CONFLICT DO NOTHING: of
//! two concurrent uses, the second waits for the first's insert to commit and then inserts
//! nothing.

use async_trait::async_trait;
use latchkey_core::crypto::secret::SecretHash;
use latchkey_core::model::RefreshUse;
use latchkey_core::store::{StoreResult, TokenStore};
use uuid::Uuid;

use crate::{db, PgStore};

#[async_trait]
impl TokenStore for PgStore {
    async fn insert_refresh_token(
        &self,
        token_hash: &SecretHash,
        session_id: Uuid,
        created_at: i64,
    ) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO refresh_token (token_hash, session_id, created_at) VALUES ($1, $2, $3)",
        )
        .bind(&token_hash.0[..])
        .bind(session_id)
        .bind(created_at)
        .execute(&self.pool)
        .await
        .map_err(db)?;
        Ok(())
    }

    async fn use_refresh_token(&self, token_hash: &SecretHash, at: i64) -> StoreResult<RefreshUse> {
        // Of concurrent updates of the row, the later ones wait for the first, then re-check
        // `used_at IS NULL` on the row it committed and update nothing: one Fresh only. The
        // read that follows only tells a reuse from an unknown token; it changes nothing.
        let fresh: Option<Uuid> = sqlx::query_scalar(
            "UPDATE refresh_token SET used_at = $1 WHERE token_hash = $2 AND used_at IS NULL \
             RETURNING session_id",
        )
        .bind(at)
        .bind(&token_hash.0[..])
        .fetch_optional(&self.pool)
        .await
        .map_err(db)?;
        if let Some(session_id) = fresh {
            return Ok(RefreshUse::Fresh { session_id });
        }
        let used: Option<Uuid> =
            sqlx::query_scalar("SELECT session_id FROM refresh_token WHERE token_hash = $1")
                .bind(&token_hash.0[..])
                .fetch_optional(&self.pool)
                .await
                .map_err(db)?;
        Ok(match used {
            Some(session_id) => RefreshUse::Reused { session_id },
            None => RefreshUse::Unknown,
        })
    }

    async fn record_used_handshake(
        &self,
        nonce_hash: &SecretHash,
        expires_at: i64,
    ) -> StoreResult<bool> {
        // A concurrent insert of the same key waits on the first one's uncommitted row, then
        // sees the conflict and inserts nothing: one true only.
        let done = sqlx::query(
            "INSERT INTO used_handshake (nonce_hash, expires_at) VALUES ($1, $2) \
             ON CONFLICT (nonce_hash) DO NOTHING",
        )
        .bind(&nonce_hash.0[..])
        .bind(expires_at)
        .execute(&self.pool)
        .await
        .map_err(db)?;
        Ok(done.rows_affected() == 1)
    }
}
