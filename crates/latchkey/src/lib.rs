//! The latchkey binary's library half: configuration loading and store selection, so the
//! integration tests start the server exactly as `latchkey serve` does.

pub mod config;

use std::sync::Arc;

use anyhow::{bail, Context};
use latchkey_core::seams::events::{Events, LocalEvents};
use latchkey_core::Store;

/// The store a database URL names and the events seam that goes with it: in-process events
/// for SQLite (one process per database), LISTEN/NOTIFY for PostgreSQL (several processes).
pub async fn open_backend(url: &str) -> anyhow::Result<(Arc<dyn Store>, Arc<dyn Events>)> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        let store = latchkey_store_postgres::PgStore::open(url)
            .await
            .with_context(|| format!("opening PostgreSQL database {}", redact(url)))?;
        let events = latchkey_store_postgres::PgEvents::start(&store)
            .await
            .context("listening for events on PostgreSQL")?;
        Ok((Arc::new(store), events))
    } else {
        Ok((open_store(url).await?, Arc::new(LocalEvents::new())))
    }
}

/// Opens the store a database URL names: `sqlite://PATH` (embedded default) or
/// `postgres://...` / `postgresql://...` (shared). Migrations run on open.
pub async fn open_store(url: &str) -> anyhow::Result<Arc<dyn Store>> {
    if url.starts_with("sqlite:") {
        let store = latchkey_store_sqlite::SqliteStore::open(url)
            .await
            .with_context(|| format!("opening SQLite database {}", redact(url)))?;
        Ok(Arc::new(store))
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        let store = latchkey_store_postgres::PgStore::open(url)
            .await
            .with_context(|| format!("opening PostgreSQL database {}", redact(url)))?;
        Ok(Arc::new(store))
    } else {
        bail!(
            "unsupported database URL {:?}: use sqlite://PATH or postgres://...",
            redact(url)
        )
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
