//! The latchkey binary's library half: configuration loading and store selection, so the
//! integration tests start the server exactly as `latchkey serve` does.

pub mod config;
pub mod master_key;
pub mod operator;

use std::path::Path;
use std::sync::Arc;

use anyhow::{bail, Context};
use latchkey_core::crypto::sealing::Sealer;
use latchkey_core::seams::events::Events;
use latchkey_core::{Store, StoreError};

/// The store a database URL names and the events seam that goes with it: for SQLite an
/// in-process broadcast plus a polled log of revocations (administrative commands are other
/// processes), LISTEN/NOTIFY for PostgreSQL (several server processes).
pub async fn open_backend(
    url: &str,
    master_key_file: &Path,
) -> anyhow::Result<(Arc<dyn Store>, Arc<dyn Events>)> {
    match open(url, master_key_file).await? {
        Opened::Sqlite(store) => {
            let events = latchkey_store_sqlite::SqliteEvents::start(&store)
                .await
                .context("starting the event log on SQLite")?;
            Ok((Arc::new(store), events))
        }
        Opened::Postgres(store) => {
            let events = latchkey_store_postgres::PgEvents::start(&store)
                .await
                .context("listening for events on PostgreSQL")?;
            Ok((Arc::new(store), events))
        }
    }
}

/// Opens the store a database URL names: `sqlite://PATH` (embedded default) or
/// `postgres://...` / `postgresql://...` (shared). Migrations run on open, then the secrets are
/// sealed with the key of `master_key_file` (created when the database has none sealed yet).
pub async fn open_store(url: &str, master_key_file: &Path) -> anyhow::Result<Arc<dyn Store>> {
    Ok(match open(url, master_key_file).await? {
        Opened::Sqlite(store) => Arc::new(store),
        Opened::Postgres(store) => Arc::new(store),
    })
}

enum Opened {
    Sqlite(latchkey_store_sqlite::SqliteStore),
    Postgres(latchkey_store_postgres::PgStore),
}

async fn open(url: &str, master_key_file: &Path) -> anyhow::Result<Opened> {
    let postgres = url.starts_with("postgres://") || url.starts_with("postgresql://");
    if !postgres && !url.starts_with("sqlite:") {
        bail!(
            "unsupported database URL {:?}: use sqlite://PATH or postgres://...",
            redact(url)
        );
    }
    let (key, created) = master_key::load_or_create(master_key_file)?;
    let sealer = Sealer::new(&key);
    let opened = if postgres {
        latchkey_store_postgres::PgStore::open(url, sealer)
            .await
            .map(Opened::Postgres)
    } else {
        latchkey_store_sqlite::SqliteStore::open(url, sealer)
            .await
            .map(Opened::Sqlite)
    };
    match opened {
        Ok(opened) => Ok(opened),
        Err(StoreError::WrongMasterKey) => {
            if created {
                master_key::remove_created(master_key_file);
            }
            Err(master_key::refused(master_key_file, created))
        }
        Err(e) => Err(e).with_context(|| format!("opening database {}", redact(url))),
    }
}

/// A database URL with any password replaced, for messages and logs: the one in the user
/// information (`user:***@host`) and query parameters that carry one (`?password=***`).
pub fn redact(url: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let base = match (base.find("://"), base.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let creds = &base[scheme_end + 3..at];
            match creds.find(':') {
                Some(colon) => format!(
                    "{}{}:***{}",
                    &base[..scheme_end + 3],
                    &creds[..colon],
                    &base[at..]
                ),
                None => base.to_owned(),
            }
        }
        _ => base.to_owned(),
    };
    match query {
        None => base,
        Some(query) => {
            let params: Vec<String> = query
                .split('&')
                .map(|param| match param.split_once('=') {
                    Some((key, _)) if key.to_ascii_lowercase().contains("pass") => {
                        format!("{key}=***")
                    }
                    _ => param.to_owned(),
                })
                .collect();
            format!("{base}?{}", params.join("&"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::redact;

    #[test]
    fn passwords_leave_database_urls_wherever_they_are() {
        assert_eq!(
            redact("postgres://u:secret@db:5432/x"),
            "postgres://u:***@db:5432/x"
        );
        assert_eq!(
            redact("postgres://u@db/x?sslmode=require&password=secret"),
            "postgres://u@db/x?sslmode=require&password=***"
        );
        assert_eq!(
            redact("postgresql://db/x?sslpassword=k&user=u"),
            "postgresql://db/x?sslpassword=***&user=u"
        );
        assert_eq!(
            redact("sqlite:///var/lib/latchkey/db"),
            "sqlite:///var/lib/latchkey/db"
        );
    }
}
