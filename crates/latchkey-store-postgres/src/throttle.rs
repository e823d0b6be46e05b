//! Brute-force accounting: one `failure_counter` row per key, incremented by one
//! `INSERT ... ON CONFLICT DO UPDATE ... RETURNING`. Concurrent failures of one key, from any
//! process, serialise on the row (or on the unique index while it is being created), and each
//! gets the count its own increment produced: no two see the same number, none is lost.

use async_trait::async_trait;
use latchkey_core::store::{FailureCount, StoreResult, ThrottleStore};

use crate::rows::{in_order_of, FailureCountRow, KeyedFailureCountRow};
use crate::{bound, db, PgStore};

#[async_trait]
impl ThrottleStore for PgStore {
    async fn record_failure(
        &self,
        key: &str,
        now: i64,
        window: i64,
        captcha_after: Option<u64>,
    ) -> StoreResult<FailureCount> {
        // The window restarts with the first failure after it passed. SET expressions see the
        // row as it was, so the new count is spelled out again for captcha_required. A NULL
        // threshold (no CAPTCHA configured) makes `count >= $4` NULL: COALESCE reads it false.
        sqlx::query_as::<_, FailureCountRow>(
            "INSERT INTO failure_counter AS c \
                 (failure_key, window_started_at, failures, captcha_required) \
             VALUES ($1, $2, 1, COALESCE(1 >= $4, FALSE)) \
             ON CONFLICT (failure_key) DO UPDATE SET \
                 window_started_at = CASE WHEN c.window_started_at <= $2 - $3 THEN $2 \
                                          ELSE c.window_started_at END, \
                 failures = CASE WHEN c.window_started_at <= $2 - $3 THEN 1 \
                                 ELSE c.failures + 1 END, \
                 captcha_required = c.captcha_required OR COALESCE( \
                     (CASE WHEN c.window_started_at <= $2 - $3 THEN 1 \
                           ELSE c.failures + 1 END) >= $4, FALSE) \
             RETURNING failures, captcha_required",
        )
        .bind(key)
        .bind(now)
        .bind(window)
        .bind(captcha_after.map(bound))
        .fetch_one(&self.pool)
        .await
        .map_err(db)?
        .try_into()
    }

    async fn failure_counts(
        &self,
        keys: &[&str],
        now: i64,
        window: i64,
    ) -> StoreResult<Vec<FailureCount>> {
        let rows = sqlx::query_as::<_, KeyedFailureCountRow>(
            "SELECT failure_key, \
             CASE WHEN window_started_at <= $2 - $3 THEN 0::BIGINT ELSE failures END AS failures, \
             captcha_required FROM failure_counter WHERE failure_key = ANY($1)",
        )
        .bind(keys)
        .bind(now)
        .bind(window)
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        in_order_of(keys, rows)
    }

    async fn clear_failures(&self, key: &str) -> StoreResult<()> {
        sqlx::query("DELETE FROM failure_counter WHERE failure_key = $1")
            .bind(key)
            .execute(&self.pool)
            .await
            .map_err(db)?;
        Ok(())
    }
}
