//! Family B's one-time values. A refresh token is marked used by the statement that finds it
//! unused (of two concurrent uses exactly one sees it fresh; the other is a reuse, i.e.
//! theft); a used SCRAM handshake is recorded by an INSERT that does nothing when it is
//! already there (SQLite serialises writers: exactly one insert of a nonce takes).

use async_trait::async_trait;
use latchkey_core::crypto::secret::SecretHash;
use latchkey_core::model::RefreshUse;
use latchkey_core::store::{StoreResult, TokenStore};
use uuid::Uuid;

use crate::rows::uuid;
use crate::{db, SqliteStore};

#[async_trait]
impl TokenStore for SqliteStore {
    async fn insert_refresh_token(
        &self,
        token_hash: &SecretHash,
        session_id: Uuid,
        created_at: i64,
    ) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO refresh_token (token_hash, session_id, created_at) VALUES (?, ?, ?)",
        )
        .bind(&token_hash.0[..])
        .bind(session_id.to_string())
        .bind(created_at)
        .execute(&self.pool)
        .await
        .map_err(db)?;
        Ok(())
    }

    async fn use_refresh_token(&self, token_hash: &SecretHash, at: i64) -> StoreResult<RefreshUse> {
        let fresh: Option<String> = sqlx::query_scalar(
            "UPDATE refresh_token SET used_at = ? WHERE token_hash = ? AND used_at IS NULL \
             RETURNING session_id",
        )
        .bind(at)
        .bind(&token_hash.0[..])
        .fetch_optional(&self.pool)
        .await
        .map_err(db)?;
        if let Some(id) = fresh {
            return Ok(RefreshUse::Fresh {
                session_id: uuid(&id)?,
            });
        }
        // Not fresh: only a read follows, to tell a reuse from an unknown token.
        let used: Option<String> =
            sqlx::query_scalar("SELECT session_id FROM refresh_token WHERE token_hash = ?")
                .bind(&token_hash.0[..])
                .fetch_optional(&self.pool)
                .await
                .map_err(db)?;
        Ok(match used {
            Some(id) => RefreshUse::Reused {
                session_id: uuid(&id)?,
            },
            None => RefreshUse::Unknown,
        })
    }

    async fn record_used_handshake(
        &self,
        nonce_hash: &SecretHash,
        expires_at: i64,
    ) -> StoreResult<bool> {
        let done = sqlx::query(
            "INSERT INTO used_handshake (nonce_hash, expires_at) VALUES (?, ?) \
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
