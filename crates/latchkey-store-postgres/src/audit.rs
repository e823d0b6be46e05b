//! The audit trail: appended to, read newest first, never changed. The BIGSERIAL id orders
//! records of the same second as they were written.

use async_trait::async_trait;
use latchkey_core::model::ids::ServerId;
use latchkey_core::model::AuditRecord;
use latchkey_core::store::{AuditQuery, AuditStore, StoreResult};

use sqlx::postgres::PgArguments;
use sqlx::query::Query;
use sqlx::Postgres;

use crate::rows::{AuditRow, AUDIT_COLUMNS};
use crate::{bound, db, PgStore};

/// Binds an audit record's columns (in `AUDIT_COLUMNS` order) after what `query` has bound.
pub(crate) fn bind_audit<'q>(
    query: Query<'q, Postgres, PgArguments>,
    e: &'q AuditRecord,
) -> Query<'q, Postgres, PgArguments> {
    query
        .bind(e.at)
        .bind(e.server_id.as_str())
        .bind(&e.kind)
        .bind(&e.userid)
        .bind(e.session_id)
        .bind(&e.ip)
        .bind(&e.detail)
}

#[async_trait]
impl AuditStore for PgStore {
    async fn insert_audit(&self, e: &AuditRecord) -> StoreResult<()> {
        let insert = format!(
            "INSERT INTO audit_event ({AUDIT_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7)"
        );
        bind_audit(sqlx::query(&insert), e)
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
        sqlx::query_as::<_, AuditRow>(&format!(
            "SELECT {AUDIT_COLUMNS} FROM audit_event WHERE server_id = $1 \
             AND ($2::text IS NULL OR userid = $2) AND ($3::text IS NULL OR kind = $3) \
             AND ($4::bigint IS NULL OR at >= $4) \
             ORDER BY audit_event_id DESC LIMIT $5"
        ))
        .bind(server_id.as_str())
        .bind(&query.userid)
        .bind(&query.kind)
        .bind(query.since)
        .bind(bound(query.limit))
        .fetch_all(&self.pool)
        .await
        .map_err(db)?
        .into_iter()
        .map(AuditRecord::try_from)
        .collect()
    }

    async fn purge_audit(&self, before: i64) -> StoreResult<u64> {
        let done = sqlx::query("DELETE FROM audit_event WHERE at < $1")
            .bind(before)
            .execute(&self.pool)
            .await
            .map_err(db)?;
        Ok(done.rows_affected())
    }
}
