//! The master key file: where the key that seals the database's secrets lives, outside the
//! database. By default it sits beside the SQLite file (`master.key`); with PostgreSQL every
//! process must name the same file (`master_key_file`), so there is no default.
//!
//! The first command that opens a database without sealed secrets (`init` on a new one, or any
//! command after an upgrade from a version that stored them in clear) creates the file, 0600,
//! in a folder created 0700. A database whose secrets are sealed is never given a new key: a
//! missing or different file is an error that says so (see [`crate::open_store`]).

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use latchkey_core::crypto::sealing::MasterKey;

/// The key file's name beside a SQLite database.
const FILE_NAME: &str = "master.key";

/// Where the key file is when the configuration names none: beside the SQLite file.
pub fn default_path(database: &str) -> Option<PathBuf> {
    let path = database
        .strip_prefix("sqlite://")
        .or_else(|| database.strip_prefix("sqlite:"))?;
    let dir = Path::new(path).parent()?;
    Some(dir.join(FILE_NAME))
}

/// The key in `path`; when the file does not exist, a new key written there (`true`: created).
pub fn load_or_create(path: &Path) -> anyhow::Result<(MasterKey, bool)> {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            warn_if_readable_by_others(path);
            let key = MasterKey::from_file_text(&text)
                .with_context(|| format!("master key file {}", path.display()))?;
            Ok((key, false))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok((create(path)?, true)),
        Err(e) => Err(e).with_context(|| format!("reading master key file {}", path.display())),
    }
}

/// Removes a key file [`load_or_create`] has just created (the database turned out to be
/// sealed with another key).
pub fn remove_created(path: &Path) {
    if let Err(e) = std::fs::remove_file(path) {
        tracing::warn!(path = %path.display(), error = %e, "cannot remove the key file just created");
    }
}

fn create(path: &Path) -> anyhow::Result<MasterKey> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        if !parent.exists() {
            let mut builder = std::fs::DirBuilder::new();
            builder.recursive(true);
            #[cfg(unix)]
            std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
            builder
                .create(parent)
                .with_context(|| format!("creating {}", parent.display()))?;
        }
    }
    let key = MasterKey::generate();
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = match options.open(path) {
        Ok(file) => file,
        // Another process created it meanwhile: use that one.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            let text = std::fs::read_to_string(path)?;
            return MasterKey::from_file_text(&text)
                .with_context(|| format!("master key file {}", path.display()));
        }
        Err(e) => {
            return Err(e).with_context(|| format!("creating master key file {}", path.display()))
        }
    };
    file.write_all(key.to_file_text().as_bytes())
        .and_then(|()| file.sync_all())
        .with_context(|| format!("writing master key file {}", path.display()))?;
    tracing::info!(
        path = %path.display(),
        "created the master key file: back it up apart from the database; without it the \
         database's secrets cannot be read"
    );
    Ok(key)
}

fn warn_if_readable_by_others(path: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(meta) = std::fs::metadata(path) {
            let mode = meta.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                tracing::warn!(
                    path = %path.display(),
                    mode = format!("{mode:o}"),
                    "the master key file is readable by others: chmod 600 it"
                );
            }
        }
    }
    #[cfg(not(unix))]
    let _ = path;
}

/// An error for a store that refused the key, saying what to do.
pub fn refused(path: &Path, created: bool) -> anyhow::Error {
    if created {
        anyhow::anyhow!(
            "the database's secrets are sealed with a master key, and the master key file {} \
             does not exist: restore it (from where it was backed up) or set master_key_file \
             (LATCHKEY_MASTER_KEY_FILE) to it. No new key was made.",
            path.display()
        )
    } else {
        anyhow::anyhow!(
            "the master key in {} is not the one this database's secrets are sealed with: \
             set master_key_file (LATCHKEY_MASTER_KEY_FILE) to the right file",
            path.display()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_key_file_sits_beside_the_sqlite_file_and_postgres_has_none() {
        assert_eq!(
            default_path("sqlite:///var/lib/latchkey/latchkey.db"),
            Some(PathBuf::from("/var/lib/latchkey/master.key"))
        );
        assert_eq!(default_path("postgres://db/latchkey"), None);
    }

    #[test]
    fn a_created_key_file_is_0600_in_a_0700_folder_and_loads_again() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("new").join("master.key");
        let (key, created) = load_or_create(&path)?;
        assert!(created);
        let (again, created) = load_or_create(&path)?;
        assert!(!created);
        assert_eq!(key.to_file_text(), again.to_file_text());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = |p: &Path| -> anyhow::Result<u32> {
                Ok(std::fs::metadata(p)?.permissions().mode() & 0o777)
            };
            assert_eq!(mode(&path)?, 0o600);
            assert_eq!(mode(dir.path().join("new").as_path())?, 0o700);
        }
        std::fs::write(&path, "garbage")?;
        let Err(e) = load_or_create(&path) else {
            anyhow::bail!("a malformed key file loaded");
        };
        assert!(format!("{e:#}").contains("32-byte key"), "{e:#}");
        Ok(())
    }
}
