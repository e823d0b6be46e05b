//! What keeps the shared database healthy: a reachability check for `/readyz`, and the purge of
//! what has died. Every process may run the purge; its DELETEs are idempotent, so two running
//! at once only share the work.

use async_trait::async_trait;
use latchkey_core::store::{HousekeepingStore, StoreResult};

use crate::{db, PgStore};

#[async_trait]
impl HousekeepingStore for PgStore {
    fn backend(&self) -> &'static str {
        "postgres"
    }

    async fn ping(&self) -> StoreResult<()> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map_err(db)?;
        Ok(())
    }

    async fn purge(&self, failures_before: i64, sessions_before: i64) -> StoreResult<u64> {
        // A counter whose window ended is forgotten, unless it holds a CAPTCHA requirement;
        // a requirement is forgotten once its name has been silent as long as a dead session
        // is kept, so the table stays bounded by the names recently tried.
        let failures = sqlx::query(
            "DELETE FROM failure_counter \
             WHERE (window_started_at < $1 AND NOT captcha_required) \
             OR (captcha_required AND window_started_at < $2)",
        )
        .bind(failures_before)
        .bind(sessions_before)
        .execute(&self.pool)
        .await
        .map_err(db)?;
        // Refresh tokens go with their sessions (ON DELETE CASCADE), uncounted as in SQLite.
        let sessions = sqlx::query(
            "DELETE FROM session WHERE (revoked_at IS NOT NULL AND revoked_at < $1) \
             OR idle_expires_at < $1 OR absolute_expires_at < $1",
        )
        .bind(sessions_before)
        .execute(&self.pool)
        .await
        .map_err(db)?;
        let handshakes = sqlx::query("DELETE FROM used_handshake WHERE expires_at < $1")
            .bind(failures_before)
            .execute(&self.pool)
            .await
            .map_err(db)?;
        let challenges = sqlx::query("DELETE FROM app_challenge WHERE expires_at < $1")
            .bind(failures_before)
            .execute(&self.pool)
            .await
            .map_err(db)?;
        let pushes = sqlx::query("DELETE FROM push_request WHERE expires_at < $1")
            .bind(sessions_before)
            .execute(&self.pool)
            .await
            .map_err(db)?;
        let transactions = sqlx::query("DELETE FROM app_transaction WHERE expires_at < $1")
            .bind(sessions_before)
            .execute(&self.pool)
            .await
            .map_err(db)?;
        // A browser session not logged in, made before the dead sessions' cutoff (each
        // sign-in page visitor's QR code makes one): forgotten, with its last account.
        let browsers =
            sqlx::query("DELETE FROM browser_session WHERE session_id IS NULL AND created_at < $1")
                .bind(sessions_before)
                .execute(&self.pool)
                .await
                .map_err(db)?;
        Ok(failures.rows_affected()
            + sessions.rows_affected()
            + handshakes.rows_affected()
            + challenges.rows_affected()
            + pushes.rows_affected()
            + transactions.rows_affected()
            + browsers.rows_affected())
    }
}
