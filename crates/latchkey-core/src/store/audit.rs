//! The audit trail: append-only records of who did what, when and from where.

use async_trait::async_trait;

use super::StoreResult;
use crate::model::ids::ServerId;
use crate::model::AuditRecord;

/// Which audit records to read: a server's, optionally of one user name, of one kind, from a
/// time on; at most `limit`, newest first.
#[derive(Clone, Debug)]
pub struct AuditQuery {
    pub userid: Option<String>,
    pub kind: Option<String>,
    /// Unix seconds: records at or after.
    pub since: Option<i64>,
    pub limit: u64,
}

impl AuditQuery {
    /// The newest `limit` records, unfiltered.
    pub fn newest(limit: u64) -> Self {
        Self {
            userid: None,
            kind: None,
            since: None,
            limit,
        }
    }
}

#[async_trait]
pub trait AuditStore: Send + Sync + 'static {
    async fn insert_audit(&self, record: &AuditRecord) -> StoreResult<()>;
    /// The records of a server that match, newest first.
    async fn audit_events(
        &self,
        server_id: &ServerId,
        query: &AuditQuery,
    ) -> StoreResult<Vec<AuditRecord>>;
    /// Deletes the records older than `before` (retention); answers how many.
    async fn purge_audit(&self, before: i64) -> StoreResult<u64>;
}
