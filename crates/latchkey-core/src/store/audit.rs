//! The audit trail: append-only records of who did what, when and from where.

use async_trait::async_trait;

use super::StoreResult;
use crate::model::ids::ServerId;
use crate::model::AuditRecord;

#[async_trait]
pub trait AuditStore: Send + Sync + 'static {
    async fn insert_audit(&self, record: &AuditRecord) -> StoreResult<()>;
    /// The newest records of a server first.
    async fn audit_events(&self, server_id: &ServerId, limit: u64)
        -> StoreResult<Vec<AuditRecord>>;
}
