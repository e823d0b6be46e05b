//! The audit trail: append-only rows of who did what, when and from where, read newest first.

use async_trait::async_trait;
use latchkey_core::model::ids::ServerId;
use latchkey_core::model::AuditRecord;
use latchkey_core::store::{AuditStore, StoreResult};

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
        limit: u64,
    ) -> StoreResult<Vec<AuditRecord>> {
        let rows: Vec<AuditRow> = sqlx::query_as(
            "SELECT * FROM audit_event WHERE server_id = ? ORDER BY audit_event_id DESC LIMIT ?",
        )
        .bind(server_id.as_str())
        .bind(int(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        all(rows)
    }
}
