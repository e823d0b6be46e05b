//! The audit trail: append-only rows of who did what, when and from where, read newest first.

use async_trait::async_trait;
use latchkey_core::model::ids::ServerId;
use latchkey_core::model::AuditRecord;
use latchkey_core::store::{AuditQuery, AuditStore, StoreResult};

use crate::rows::{all, AuditRow};
use crate::{db, int, SqliteStore};

#[async_trait]
impl AuditStore for SqliteStore {
    async fn insert_audit(&self, e: &AuditRecord) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO audit_event (at, server_id, kind, userid, session_id, ip, detail) \
             VALUES (?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(e.at)
        .bind(e.server_id.as_str())
        .bind(&e.kind)
        .bind(&e.userid)
        .bind(e.session_id.map(|s| s.to_string()))
        .bind(&e.ip)
        .bind(&e.detail)
        .execute(&self.pool)
        .await
        .map_err(db)?;
        Ok(())
    }

    async fn audit_events(
        &self,
        server_id: &ServerId,
        query: &AuditQuery,
    ) -> StoreResult<Vec<AuditRecord>> {
        let rows: Vec<AuditRow> = sqlx::query_as(
            "SELECT * FROM audit_event WHERE server_id = ?1 \
             AND (?2 IS NULL OR userid = ?2) AND (?3 IS NULL OR kind = ?3) \
             AND (?4 IS NULL OR at >= ?4) \
             ORDER BY audit_event_id DESC LIMIT ?5",
        )
        .bind(server_id.as_str())
        .bind(&query.userid)
        .bind(&query.kind)
        .bind(query.since)
        .bind(int(query.limit))
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        all(rows)
    }

    async fn purge_audit(&self, before: i64) -> StoreResult<u64> {
        let done = sqlx::query("DELETE FROM audit_event WHERE at < ?")
            .bind(before)
            .execute(&self.pool)
            .await
            .map_err(db)?;
        Ok(done.rows_affected())
    }
}
