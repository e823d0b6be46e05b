//! Family B's one-time values. A refresh chain lives on the session row (`refresh_hash`, the
//! current token; `refresh_next_hash`, its unused successor): replacing the successor is one
//! compare-and-set UPDATE, and a promotion is one statement too, the UPDATE and the insert
//! that keeps the old token as superseded joined in a data-modifying CTE (the row lock makes a
//! racing promotion re-check and find the row moved). A used SCRAM handshake is recorded by an
//! INSERT ... ON CONFLICT DO NOTHING: of two concurrent uses, the second waits for the first's
//! insert to commit and then inserts nothing.

use async_trait::async_trait;
use latchkey_core::crypto::secret::SecretHash;
use latchkey_core::model::RefreshStanding;
use latchkey_core::store::{StoreResult, TokenStore};
use uuid::Uuid;

use crate::rows::hash;
use crate::{db, found, PgStore};

#[async_trait]
impl TokenStore for PgStore {
    async fn start_refresh_chain(&self, session_id: Uuid, token: &SecretHash) -> StoreResult<()> {
        let done = sqlx::query(
            "UPDATE session SET refresh_hash = $1, refresh_next_hash = NULL WHERE session_id = $2",
        )
        .bind(&token.0[..])
        .bind(session_id)
        .execute(&self.pool)
        .await
        .map_err(db)?;
        found(done.rows_affected())
    }

    async fn refresh_standing(&self, token: &SecretHash) -> StoreResult<RefreshStanding> {
        let live: Option<(Uuid, Option<Vec<u8>>, Option<Vec<u8>>)> = sqlx::query_as(
            "SELECT session_id, refresh_hash, refresh_next_hash FROM session \
             WHERE refresh_hash = $1 OR refresh_next_hash = $1",
        )
        .bind(&token.0[..])
        .fetch_optional(&self.pool)
        .await
        .map_err(db)?;
        if let Some((session_id, current, next)) = live {
            let current = current.map(|h| hash(h, "refresh hash")).transpose()?;
            let next = next.map(|h| hash(h, "refresh hash")).transpose()?;
            return Ok(RefreshStanding::in_chain(token, session_id, current, next));
        }
        let superseded: Option<Uuid> =
            sqlx::query_scalar("SELECT session_id FROM refresh_token WHERE token_hash = $1")
                .bind(&token.0[..])
                .fetch_optional(&self.pool)
                .await
                .map_err(db)?;
        Ok(match superseded {
            Some(session_id) => RefreshStanding::Superseded { session_id },
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
        // One statement: the compare-and-set, and the replaced successor (if any) kept as
        // superseded.
        let replaced: Option<Uuid> = sqlx::query_scalar(
            "WITH moved AS ( \
                 UPDATE session SET refresh_next_hash = $1 \
                 WHERE session_id = $2 AND refresh_hash = $3 \
                 AND refresh_next_hash IS NOT DISTINCT FROM $4 \
                 RETURNING session_id \
             ), kept AS ( \
                 INSERT INTO refresh_token (token_hash, session_id, created_at, used_at) \
                 SELECT $4, session_id, $5, $5 FROM moved WHERE $4::bytea IS NOT NULL \
                 ON CONFLICT (token_hash) DO NOTHING \
             ) \
             SELECT session_id FROM moved",
        )
        .bind(&new_next.0[..])
        .bind(session_id)
        .bind(&current.0[..])
        .bind(next.map(|n| &n.0[..]))
        .bind(at)
        .fetch_optional(&self.pool)
        .await
        .map_err(db)?;
        Ok(replaced.is_some())
    }

    async fn promote_refresh_successor(
        &self,
        session_id: Uuid,
        current: &SecretHash,
        next: &SecretHash,
        new_next: &SecretHash,
        at: i64,
    ) -> StoreResult<bool> {
        let promoted: Option<Uuid> = sqlx::query_scalar(
            "WITH moved AS ( \
                 UPDATE session SET refresh_hash = $1, refresh_next_hash = $2 \
                 WHERE session_id = $3 AND refresh_hash = $4 AND refresh_next_hash = $1 \
                 RETURNING session_id \
             ), kept AS ( \
                 INSERT INTO refresh_token (token_hash, session_id, created_at, used_at) \
                 SELECT $4, session_id, $5, $5 FROM moved \
                 ON CONFLICT (token_hash) DO NOTHING \
             ) \
             SELECT session_id FROM moved",
        )
        .bind(&next.0[..])
        .bind(&new_next.0[..])
        .bind(session_id)
        .bind(&current.0[..])
        .bind(at)
        .fetch_optional(&self.pool)
        .await
        .map_err(db)?;
        Ok(promoted.is_some())
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
