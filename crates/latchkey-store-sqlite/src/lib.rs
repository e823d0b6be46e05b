//! The embedded default store: one SQLite file (WAL, busy timeout, foreign keys on), created
//! with its parent folder on first use. Migrations in `migrations/` are embedded and run at
//! open. Ids are TEXT, secrets BLOB digests, times INTEGER unix seconds.
//!
//! [`SqliteStore`] implements the narrow traits of [`latchkey_core::store`] in files of the
//! same names (`tenants.rs`, `users.rs`, `sessions.rs`, ...). Rows decode through the structs
//! of `rows.rs`; errors map in one place, `db`. Every state change is one statement: a
//! conditional `UPDATE ... WHERE state = ...` (or an upsert) that reports whether, or to what,
//! it changed the row, so concurrent requests cannot race.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use latchkey_core::store::StoreResult;
use latchkey_core::StoreError;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

#[macro_use]
mod rows;

mod app;
mod audit;
mod housekeeping;
mod sessions;
mod tenants;
mod throttle;
mod tokens;
mod users;

pub struct SqliteStore {
    pool: SqlitePool,
}

/// The one place database errors become [`StoreError`]s. A unique violation is a
/// [`StoreError::Conflict`], which carries no database text (it could name a column or a
/// value): the message is only logged, at debug level.
fn db(e: sqlx::Error) -> StoreError {
    match &e {
        sqlx::Error::Database(d) if d.is_unique_violation() => {
            tracing::debug!(message = %d.message(), "unique violation");
            StoreError::Conflict
        }
        sqlx::Error::RowNotFound => StoreError::NotFound,
        _ => StoreError::Other(e.to_string()),
    }
}

/// A failure that is not the database's (a bad URL, a folder that cannot be created).
fn other(e: impl std::fmt::Display) -> StoreError {
    StoreError::Other(e.to_string())
}

/// `Ok` when an update found its row, `NotFound` otherwise.
fn found(rows_affected: u64) -> StoreResult<()> {
    if rows_affected == 0 {
        Err(StoreError::NotFound)
    } else {
        Ok(())
    }
}

/// A count or limit as SQLite's signed 64-bit integer (saturating).
fn int(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// A stored count (never negative) as an unsigned number.
fn count(n: i64) -> StoreResult<u64> {
    u64::try_from(n).map_err(|_| other(format!("stored count {n} is negative")))
}

impl SqliteStore {
    /// Opens (creating when missing) the database at `url` (`sqlite://PATH`) and migrates it.
    pub async fn open(url: &str) -> StoreResult<Self> {
        let path = url
            .strip_prefix("sqlite://")
            .or_else(|| url.strip_prefix("sqlite:"))
            .ok_or_else(|| other(format!("not a sqlite URL: {url}")))?;
        if path.is_empty() {
            return Err(other("the sqlite URL names no file"));
        }
        if let Some(parent) = Path::new(path).parent() {
            if !parent.as_os_str().is_empty() {
                std::fs::create_dir_all(parent)
                    .map_err(|e| other(format!("cannot create {}: {e}", parent.display())))?;
            }
        }
        let options = SqliteConnectOptions::from_str(&format!("sqlite://{path}"))
            .map_err(other)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(5))
            .foreign_keys(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(8)
            .connect_with(options)
            .await
            .map_err(other)?;
        sqlx::migrate!("./migrations")
            .run(&pool)
            .await
            .map_err(|e| other(format!("migration failed: {e}")))?;
        Ok(Self { pool })
    }
}
