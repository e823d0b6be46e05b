//! Family B's one-time values. A refresh token is marked used by the statement that finds it
//! unused (of two concurrent uses exactly one sees it fresh; the other is a reuse, i.e.
//! theft); a SCRAM handshake is deleted by the statement that answers it.

use async_trait::async_trait;
use latchkey_core::crypto::secret::SecretHash;
use latchkey_core::model::{RefreshUse, ScramHandshake};
use latchkey_core::store::{StoreResult, TokenStore};
use uuid::Uuid;

use crate::rows::{maybe, uuid, HandshakeRow};
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

    async fn insert_handshake(&self, h: &ScramHandshake) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO scram_handshake (nonce_hash, server_id, email, client_nonce, salt, \
             iterations, platform, expires_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&h.nonce_hash.0[..])
        .bind(h.server_id.as_str())
        .bind(&h.email)
        .bind(&h.client_nonce)
        .bind(&h.salt)
        .bind(i64::from(h.iterations))
        .bind(&h.platform)
        .bind(h.expires_at)
        .execute(&self.pool)
        .await
        .map_err(db)?;
        Ok(())
    }

    async fn take_handshake(&self, nonce_hash: &SecretHash) -> StoreResult<Option<ScramHandshake>> {
        let row: Option<HandshakeRow> =
            sqlx::query_as("DELETE FROM scram_handshake WHERE nonce_hash = ? RETURNING *")
                .bind(&nonce_hash.0[..])
                .fetch_optional(&self.pool)
                .await
                .map_err(db)?;
        maybe(row)
    }
}
