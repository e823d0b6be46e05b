//! The shared store: PostgreSQL, for several stateless latchkey processes behind one load
//! balancer. It mirrors the SQLite store statement for statement (same tables, same migration
//! file names, same semantics), with native types: UUID ids, BYTEA digests and keys, BIGINT
//! unix seconds, BOOLEAN flags. Migrations in `migrations/` are embedded and run at open; sqlx
//! takes an advisory lock, so processes starting together do not race.
//!
//! The narrow store traits are implemented one per file, named as in `latchkey-core`'s
//! `store/` (`sessions.rs` beside `sessions.rs`); rows decode through the structs of
//! [`rows`], and database errors become store errors in one place, [`db`].
//!
//! Every state change is one statement (a conditional `UPDATE ... WHERE state = ...`, an
//! `INSERT ... ON CONFLICT DO UPDATE ... RETURNING`, a `DELETE ... RETURNING`): PostgreSQL's
//! row locks then decide between concurrent requests of any number of processes, as a later
//! writer re-checks the condition on the row the first committed.
//!
//! Because the rows are shared, statements that lock several sessions (the coalesced touch
//! flush, revoking all of a user's sessions) lock them in `session_id` order: two processes
//! flushing overlapping batches then wait for each other instead of deadlocking.

mod app;
mod audit;
mod directory;
mod events;
mod housekeeping;
mod management;
mod passkeys;
mod rows;
mod sealing;
mod sessions;
mod tenants;
mod throttle;
mod tokens;
mod users;

pub use events::PgEvents;

use std::str::FromStr;
use std::time::Duration;

use latchkey_core::crypto::sealing::Sealer;
use latchkey_core::store::StoreResult;
use latchkey_core::StoreError;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};

/// Connections per process. Several processes share one server, whose `max_connections`
/// (100 by default) bounds the sum.
const MAX_CONNECTIONS: u32 = 16;

pub use sealing::OnClaim;

pub struct PgStore {
    pool: PgPool,
    /// Seals and opens the secrets of rows (identity and signing keys, TOTP secrets).
    sealer: Sealer,
}

impl PgStore {
    /// Connects to the database at `url` (`postgres://...`) and migrates it; its secrets
    /// are sealed with `sealer`'s master key ([`StoreError::WrongMasterKey`] if they were sealed
    /// with another).
    /// `on_claim` runs when this open claims an unsealed database for the key (see
    /// `sealing`).
    pub async fn open(url: &str, sealer: Sealer, on_claim: OnClaim<'_>) -> StoreResult<Self> {
        let mut options = PgConnectOptions::from_str(url).map_err(db)?;
        if options.get_application_name().is_none() {
            options = options.application_name("latchkey");
        }
        let pool = PgPoolOptions::new()
            .max_connections(MAX_CONNECTIONS)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options)
            .await
            .map_err(db)?;
        sqlx::migrate!("./migrations")
            .run(&pool)
            .await
            .map_err(|e| StoreError::Other(format!("migration failed: {e}")))?;
        tracing::debug!("PostgreSQL store open and migrated");
        sealing::seal_at_open(&pool, &sealer, on_claim).await?;
        Ok(Self { pool, sealer })
    }
}

/// The one place a database error becomes a store error. A unique violation is a
/// [`StoreError::Conflict`], which carries no database text (it names tables and values, and
/// must never reach a client): the message is only logged, at debug level.
fn db(e: sqlx::Error) -> StoreError {
    match e {
        sqlx::Error::Database(d) if d.is_unique_violation() => {
            tracing::debug!(
                constraint = d.constraint().unwrap_or(""),
                message = d.message(),
                "unique violation"
            );
            StoreError::Conflict
        }
        sqlx::Error::RowNotFound => StoreError::NotFound,
        e => StoreError::Other(e.to_string()),
    }
}

/// An update of one named row that must have found it.
fn found(rows: u64) -> StoreResult<()> {
    if rows == 0 {
        Err(StoreError::NotFound)
    } else {
        Ok(())
    }
}

/// A `COUNT(*)` as the traits answer it.
fn count(n: i64) -> StoreResult<u64> {
    u64::try_from(n).map_err(|_| StoreError::Other(format!("negative count {n}")))
}

/// LIMIT, OFFSET and thresholds take a BIGINT; anything beyond it means "no bound".
fn bound(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}
