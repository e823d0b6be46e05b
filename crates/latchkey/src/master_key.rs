//! The master key file: where the key that seals the database's secrets lives, outside the
//! database. By default it sits beside the SQLite file (`master.key`); with PostgreSQL every
//! process must name the same file (`master_key_file`), so there is no default.
//!
//! The first command that opens a database without sealed secrets (`init` on a new one, or any
//! command after an upgrade from a version that stored them in clear) creates the file, 0600,
//! in a folder created 0700, at the moment it claims the database for the key (inside the
//! store's claiming transaction, before it commits). A database whose secrets are sealed is
//! never given a new key, and no file is written for it: a missing or different file is an
//! error that says so (see [`crate::open_store`]).

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

/// The key in `path`, or `None` when there is no such file.
pub fn load(path: &Path) -> anyhow::Result<Option<MasterKey>> {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            warn_if_readable_by_others(path);
            MasterKey::from_file_text(&text)
                .map(Some)
                .with_context(|| format!("master key file {}", path.display()))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading master key file {}", path.display())),
    }
}

/// Writes `key` to `path`, a file that must not exist yet: into a temporary file beside it
/// (0600, synced), then linked into place (which fails if the name exists, so nothing is ever
/// replaced and no reader sees half a key), then the folder synced. Called by the store when
/// this process claims an unsealed database for the key, before the claim commits.
pub fn persist(path: &Path, key: &MasterKey) -> anyhow::Result<()> {
    let dir = match path.parent().filter(|p| !p.as_os_str().is_empty()) {
        Some(dir) => dir.to_owned(),
        None => PathBuf::from("."),
    };
    if !dir.exists() {
        let mut builder = std::fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
        builder
            .create(&dir)
            .with_context(|| format!("creating {}", dir.display()))?;
    }
    let temporary = dir.join(format!(".{FILE_NAME}.{}", uuid::Uuid::new_v4().simple()));
    let written = (|| -> std::io::Result<()> {
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = options.open(&temporary)?;
        file.write_all(key.to_file_text().as_bytes())?;
        file.sync_all()?;
        std::fs::hard_link(&temporary, path)?;
        Ok(())
    })();
    let _ = std::fs::remove_file(&temporary);
    written.with_context(|| format!("creating master key file {}", path.display()))?;
    #[cfg(unix)]
    if let Ok(folder) = std::fs::File::open(&dir) {
        let _ = folder.sync_all();
    }
    // A warning, so administrative commands (which log from `warn`) show it too.
    tracing::warn!(
        path = %path.display(),
        "created the master key file: back it up apart from the database; without it the \
         database's secrets cannot be read"
    );
    Ok(())
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
pub fn refused(path: &Path, missing: bool) -> anyhow::Error {
    if missing {
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
    fn a_persisted_key_file_is_0600_in_a_0700_folder_never_replaced_and_loads_again(
    ) -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("new").join("master.key");
        assert!(load(&path)?.is_none());
        let key = MasterKey::generate();
        persist(&path, &key)?;
        let again = load(&path)?.expect("the key");
        assert_eq!(key.to_file_text(), again.to_file_text());
        assert!(
            persist(&path, &MasterKey::generate()).is_err(),
            "an existing key file is never replaced"
        );
        assert_eq!(
            load(&path)?.expect("the key").to_file_text(),
            key.to_file_text()
        );
        let leftovers = std::fs::read_dir(dir.path().join("new"))?.count();
        assert_eq!(leftovers, 1, "no temporary file is left");
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
        let Err(e) = load(&path) else {
            anyhow::bail!("a malformed key file loaded");
        };
        assert!(format!("{e:#}").contains("32-byte key"), "{e:#}");
        Ok(())
    }
}
