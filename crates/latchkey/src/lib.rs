//! The latchkey binary's library half: configuration loading and store selection, so the
//! integration tests start the server exactly as `latchkey serve` does.

pub mod config;
pub mod master_key;
pub mod operator;

use std::path::Path;
use std::sync::Arc;

use anyhow::{bail, Context};
use latchkey_core::crypto::sealing::{MasterKey, Sealer};
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
    // Twice at most: a process that found no key file may lose the claim to another that
    // created one meanwhile, and then uses that one.
    for attempt in 0..2 {
        let existing = master_key::load(master_key_file)?;
        let missing = existing.is_none();
        let key = existing.unwrap_or_else(MasterKey::generate);
        let sealer = Sealer::new(&key);
        let keep_key = || {
            if missing {
                master_key::persist(master_key_file, &key).map_err(|e| format!("{e:#}"))
            } else {
                Ok(())
            }
        };
        let opened = if postgres {
            latchkey_store_postgres::PgStore::open(url, sealer, &keep_key)
                .await
                .map(Opened::Postgres)
        } else {
            latchkey_store_sqlite::SqliteStore::open(url, sealer, &keep_key)
                .await
                .map(Opened::Sqlite)
        };
        match opened {
            Ok(opened) => return Ok(opened),
            Err(StoreError::WrongMasterKey)
                if missing && attempt == 0 && master_key_file.exists() =>
            {
                continue;
            }
            Err(StoreError::WrongMasterKey) => {
                return Err(master_key::refused(master_key_file, missing));
            }
            Err(e) => {
                return Err(e).with_context(|| format!("opening database {}", redact(url)));
            }
        }
    }
    Err(master_key::refused(master_key_file, false))
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
