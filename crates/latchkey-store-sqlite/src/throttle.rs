//! Brute-force accounting: one `failure_counter` row per key, counted by one upsert that
//! answers the new state. Two concurrent failures each add one (SQLite serialises the writes),
//! and the statement that reaches the limit is the one that sets the CAPTCHA requirement.
//! Rows are bounded by the number of keys, not by the number of failures.

use async_trait::async_trait;
use latchkey_core::store::{FailureCount, StoreResult, ThrottleStore};

use crate::rows::{in_order_of, FailureCountRow, KeyedFailureCountRow};
use crate::{db, int, SqliteStore};

#[async_trait]
impl ThrottleStore for SqliteStore {
    async fn record_failure(
        &self,
        key: &str,
        now: i64,
        window: i64,
        captcha_after: Option<u64>,
    ) -> StoreResult<FailureCount> {
        // ?1 key, ?2 now, ?3 window, ?4 the count that requires a CAPTCHA. Without a limit,
        // ?4 is i64::MAX, which no count reaches (a NULL would make the comparison NULL).
        // In DO UPDATE, bare column names are the stored row's values before the update.
        let row: FailureCountRow = sqlx::query_as(
            "INSERT INTO failure_counter \
                 (failure_key, window_started_at, failures, captcha_required) \
             VALUES (?1, ?2, 1, 1 >= ?4) \
             ON CONFLICT (failure_key) DO UPDATE SET \
             window_started_at = CASE WHEN window_started_at <= ?2 - ?3 \
                 THEN ?2 ELSE window_started_at END, \
             failures = CASE WHEN window_started_at <= ?2 - ?3 \
                 THEN 1 ELSE failures + 1 END, \
             captcha_required = captcha_required <> 0 OR (CASE WHEN window_started_at <= ?2 - ?3 \
                 THEN 1 ELSE failures + 1 END) >= ?4 \
             RETURNING failures, captcha_required",
        )
        .bind(key)
        .bind(now)
        .bind(window)
        .bind(captcha_after.map_or(i64::MAX, int))
        .fetch_one(&self.pool)
        .await
        .map_err(db)?;
        row.try_into()
    }

    async fn failure_counts(
        &self,
        keys: &[&str],
        now: i64,
        window: i64,
    ) -> StoreResult<Vec<FailureCount>> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        // ?1 now, ?2 window, ?3... the keys.
        let list: Vec<String> = (3..3 + keys.len()).map(|n| format!("?{n}")).collect();
        let sql = format!(
            "SELECT failure_key, \
             CASE WHEN window_started_at <= ?1 - ?2 THEN 0 ELSE failures END AS failures, \
             captcha_required FROM failure_counter WHERE failure_key IN ({})",
            list.join(", ")
        );
        let mut query = sqlx::query_as::<_, KeyedFailureCountRow>(&sql)
            .bind(now)
            .bind(window);
        for key in keys {
            query = query.bind(*key);
        }
        in_order_of(keys, query.fetch_all(&self.pool).await.map_err(db)?)
    }

    async fn clear_failures(&self, key: &str) -> StoreResult<()> {
        sqlx::query("DELETE FROM failure_counter WHERE failure_key = ?")
            .bind(key)
            .execute(&self.pool)
            .await
            .map_err(db)?;
        Ok(())
    }
}
