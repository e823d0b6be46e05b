//! The storage seam. Two real backends implement it (SQLite embedded, PostgreSQL shared);
//! services hold it as `Arc<dyn Store>`, privately: the HTTP layer never sees it.
//!
//! [`Store`] is the sum of narrow traits, one per entity, and each backend crate implements
//! them in files of the same names (`sessions.rs` beside `sessions.rs`).
//!
//! The rule every method keeps: **one statement per state change.** A transition is a
//! conditional update that reports whether it happened (`... WHERE state = 'pending_mfa'`), a
//! counter is incremented by the database which answers the new value, a one-time value is
//! consumed by the statement that checks it. Nothing is read, changed in memory and written
//! back, so concurrent requests, in one process or several, can never resurrect a revoked
//! session, exceed an attempt limit or use a one-time value twice.

mod app;
mod audit;
mod directory;
mod housekeeping;
mod management;
mod passkeys;
mod sessions;
mod tenants;
mod throttle;
mod tokens;
mod users;

pub use app::AppStore;
pub use audit::{AuditQuery, AuditStore};
pub use directory::DirectoryStore;
pub use housekeeping::HousekeepingStore;
pub use management::{MadeApiKey, ManagementStore};
pub use passkeys::{PasskeyRemoval, PasskeyStore};
pub use sessions::{CaptchaVerdict, SessionStore, Transition};
pub use tenants::TenantStore;
pub use throttle::{failure_counts_in_order, FailureCount, ThrottleStore};
pub use tokens::TokenStore;
pub use users::UserStore;

use crate::error::StoreError;

pub type StoreResult<T> = Result<T, StoreError>;

/// Everything latchkey keeps. Implemented by every type that implements the narrow traits.
pub trait Store:
    TenantStore
    + UserStore
    + PasskeyStore
    + SessionStore
    + TokenStore
    + AppStore
    + DirectoryStore
    + ManagementStore
    + ThrottleStore
    + AuditStore
    + HousekeepingStore
{
}

impl<T> Store for T where
    T: TenantStore
        + UserStore
        + PasskeyStore
        + SessionStore
        + TokenStore
        + AppStore
        + DirectoryStore
        + ManagementStore
        + ThrottleStore
        + AuditStore
        + HousekeepingStore
{
}

/// Opens a sealed secret read from a row (see `crypto::sealing`); one that does not open is a
/// storage failure naming the column and the row.
pub fn unseal(
    sealer: &crate::crypto::sealing::Sealer,
    column: crate::crypto::sealing::Column,
    row: &str,
    sealed: &[u8],
) -> StoreResult<Vec<u8>> {
    sealer
        .open(column, row, sealed)
        .map_err(|e| crate::StoreError::Other(format!("{column:?} of {row}: {e}")))
}
