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

use latchkey_core::crypto::sealing::Sealer;
use latchkey_core::store::StoreResult;
use latchkey_core::StoreError;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

#[macro_use]
mod rows;

mod app;
mod audit;
mod directory;
mod events;
mod housekeeping;
mod management;
mod passkeys;
mod sealing;
mod sessions;
mod tenants;
mod throttle;
mod tokens;
mod users;

pub use events::SqliteEvents;

pub use sealing::OnClaim;

pub struct SqliteStore {
    pool: SqlitePool,
    /// Seals and opens the secrets of rows (identity and signing keys, TOTP secrets).
    sealer: Sealer,
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

/// The database holds the servers' private keys: a folder it creates is 0700 and a file it
/// creates 0600 (SQLite gives its `-wal` and `-shm` files the database file's mode). Existing
/// folders and files keep their modes: the operator chose them.
fn create_private(path: &Path) -> StoreResult<()> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        if !parent.exists() {
            let mut builder = std::fs::DirBuilder::new();
            builder.recursive(true);
            #[cfg(unix)]
            std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
            builder
                .create(parent)
                .map_err(|e| other(format!("cannot create {}: {e}", parent.display())))?;
        }
    }
    if !path.exists() {
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        match options.open(path) {
            Ok(_) => {}
            // Created meanwhile by another process: fine, it is the same database.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(other(format!("cannot create {}: {e}", path.display()))),
        }
    }
    Ok(())
}

/// The file a `sqlite://PATH` (or `sqlite:PATH`) URL names.
fn file_of(url: &str) -> StoreResult<&str> {
    let path = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
        .ok_or_else(|| other(format!("not a sqlite URL: {url}")))?;
    if path.is_empty() {
        return Err(other("the sqlite URL names no file"));
    }
    Ok(path)
}

/// Writes a consistent copy of the live database at `url` to `target`, a new file (0600), with
/// `VACUUM INTO`: one read transaction, so the copy is the database as of one instant while
/// other connections (a running latchkey) go on writing, and nothing of the write-ahead log is
/// left out. Opens the database read-only and never migrates it. Answers the copy's size.
pub async fn backup(url: &str, target: &Path) -> StoreResult<u64> {
    let path = file_of(url)?;
    if !Path::new(path).exists() {
        return Err(other(format!("there is no database at {path}")));
    }
    // VACUUM INTO wants a new or empty file; creating it first gives it the database's mode.
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options
        .open(target)
        .map_err(|e| other(format!("cannot create {}: {e}", target.display())))?;
    let copied = async {
        let options = SqliteConnectOptions::from_str(&format!("sqlite://{path}"))
            .map_err(other)?
            .read_only(true)
            .busy_timeout(Duration::from_secs(5));
        let mut conn = sqlx::ConnectOptions::connect(&options)
            .await
            .map_err(other)?;
        let target_text = target
            .to_str()
            .ok_or_else(|| other("the backup path is not UTF-8"))?;
        sqlx::query("VACUUM INTO ?")
            .bind(target_text)
            .execute(&mut conn)
            .await
            .map_err(db)?;
        sqlx::Connection::close(conn).await.map_err(db)?;
        std::fs::metadata(target)
            .map(|m| m.len())
            .map_err(|e| other(format!("cannot read {}: {e}", target.display())))
    }
    .await;
    if copied.is_err() {
        let _ = std::fs::remove_file(target);
    }
    copied
}

impl SqliteStore {
    /// Opens (creating when missing) the database at `url` (`sqlite://PATH`) and migrates it; its secrets
    /// are sealed with `sealer`'s master key ([`StoreError::WrongMasterKey`] if they were sealed
    /// with another).
    /// `on_claim` runs when this open claims an unsealed database for the key (see
    /// `sealing`).
    pub async fn open(url: &str, sealer: Sealer, on_claim: OnClaim<'_>) -> StoreResult<Self> {
        let path = file_of(url)?;
        create_private(Path::new(path))?;
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
        sealing::seal_at_open(&pool, &sealer, on_claim).await?;
        Ok(Self { pool, sealer })
    }
}
