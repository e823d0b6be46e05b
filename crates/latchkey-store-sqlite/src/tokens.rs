//! Family B's one-time values. A refresh chain lives on the session row (`refresh_hash`, the
//! current token; `refresh_next_hash`, its unused successor): replacing the successor is one
//! compare-and-set UPDATE, and a promotion is that UPDATE plus the insert that keeps the old
//! token as superseded, in one transaction (SQLite serialises writers, so of two racing
//! promotions the second finds the row moved). A used SCRAM handshake is recorded by an INSERT
//! that does nothing when it is already there.

use async_trait::async_trait;
use latchkey_core::crypto::secret::SecretHash;
use latchkey_core::model::RefreshStanding;
use latchkey_core::store::{StoreResult, TokenStore};
use uuid::Uuid;

use crate::rows::{hash, uuid};
use crate::{db, found, SqliteStore};

#[async_trait]
impl TokenStore for SqliteStore {
    async fn start_refresh_chain(&self, session_id: Uuid, token: &SecretHash) -> StoreResult<()> {
        let done = sqlx::query(
            "UPDATE session SET refresh_hash = ?, refresh_next_hash = NULL WHERE session_id = ?",
        )
        .bind(&token.0[..])
        .bind(session_id.to_string())
        .execute(&self.pool)
        .await
        .map_err(db)?;
        found(done.rows_affected())
    }

    async fn refresh_standing(&self, token: &SecretHash) -> StoreResult<RefreshStanding> {
        let live: Option<(String, Option<Vec<u8>>, Option<Vec<u8>>)> = sqlx::query_as(
            "SELECT session_id, refresh_hash, refresh_next_hash FROM session \
             WHERE refresh_hash = ?1 OR refresh_next_hash = ?1",
        )
        .bind(&token.0[..])
        .fetch_optional(&self.pool)
        .await
        .map_err(db)?;
        if let Some((session_id, current, next)) = live {
            let session_id = uuid(&session_id)?;
            let current = current
                .as_deref()
                .map(|h| hash(h, "refresh hash"))
                .transpose()?;
            let next = next
                .as_deref()
                .map(|h| hash(h, "refresh hash"))
                .transpose()?;
            return Ok(RefreshStanding::in_chain(token, session_id, current, next));
        }
        let superseded: Option<String> =
            sqlx::query_scalar("SELECT session_id FROM refresh_token WHERE token_hash = ?")
                .bind(&token.0[..])
                .fetch_optional(&self.pool)
                .await
                .map_err(db)?;
        Ok(match superseded {
            Some(id) => RefreshStanding::Superseded {
                session_id: uuid(&id)?,
            },
            None => RefreshStanding::Unknown,
        })
    }

    async fn replace_refresh_successor(
        &self,
        session_id: Uuid,
        current: &SecretHash,
        next: Option<&SecretHash>,
        new_next: &SecretHash,
        at: i64,
    ) -> StoreResult<bool> {
        let mut tx = self.pool.begin().await.map_err(db)?;
        let moved = sqlx::query(
            "UPDATE session SET refresh_next_hash = ? \
             WHERE session_id = ? AND refresh_hash = ? AND refresh_next_hash IS ?",
        )
        .bind(&new_next.0[..])
        .bind(session_id.to_string())
        .bind(&current.0[..])
        .bind(next.map(|n| &n.0[..]))
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        if moved.rows_affected() != 1 {
            return Ok(false);
        }
        if let Some(replaced) = next {
            keep_superseded(&mut tx, replaced, session_id, at).await?;
        }
        tx.commit().await.map_err(db)?;
        Ok(true)
    }

    async fn promote_refresh_successor(
        &self,
        session_id: Uuid,
        current: &SecretHash,
        next: &SecretHash,
        new_next: &SecretHash,
        at: i64,
    ) -> StoreResult<bool> {
        let mut tx = self.pool.begin().await.map_err(db)?;
        let moved = sqlx::query(
            "UPDATE session SET refresh_hash = ?, refresh_next_hash = ? \
             WHERE session_id = ? AND refresh_hash = ? AND refresh_next_hash = ?",
        )
        .bind(&next.0[..])
        .bind(&new_next.0[..])
        .bind(session_id.to_string())
        .bind(&current.0[..])
        .bind(&next.0[..])
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        if moved.rows_affected() != 1 {
            return Ok(false);
        }
        keep_superseded(&mut tx, current, session_id, at).await?;
        tx.commit().await.map_err(db)?;
        Ok(true)
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

/// Keeps a token that left the chain, so presenting it later is recognised as theft.
async fn keep_superseded(
    tx: &mut sqlx::Transaction<'_, sqlx::Sqlite>,
    token: &SecretHash,
    session_id: Uuid,
    at: i64,
) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO refresh_token (token_hash, session_id, created_at, used_at) \
         VALUES (?, ?, ?, ?) ON CONFLICT (token_hash) DO NOTHING",
    )
    .bind(&token.0[..])
    .bind(session_id.to_string())
    .bind(at)
    .bind(at)
    .execute(&mut **tx)
    .await
    .map_err(db)?;
    Ok(())
}
