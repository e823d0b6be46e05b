//! The key store: one JSON file holding, per account, the server it belongs to (id, base URL and
//! the server key pinned at enrol) and the account's Ed25519 key pair.
//!
//! It holds secret keys, so it is only ever written whole: into a new file of mode 0600 in the
//! same directory, then renamed over the old one, so a crash leaves the old store or the new one,
//! never half of either, and the secret never sits in a file others can read. A store that others
//! can read is reported on every load (the next write makes it 0600 again). Writers take a lock
//! file and re-read the store under it, so two commands enrolling at once both keep their account.
//!
//! Pinning lives here too: a login payload is trusted only when it verifies against the key
//! pinned by an account of the server it names.

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use anyhow::{anyhow, bail, Context, Result};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ed25519_dalek::{Signer, SigningKey};
use latchkey_core::crypto::qr::QrPayload;
use serde::{Deserialize, Serialize};

/// Format version of the file, so a later app can migrate it.
const VERSION: u32 = 1;
/// How long a writer waits for another one's lock before giving up.
const LOCK_WAIT: Duration = Duration::from_secs(5);
/// A lock older than this was left by a process that died while holding it.
const LOCK_STALE: Duration = Duration::from_secs(60);

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyStore {
    version: u32,
    pub accounts: Vec<Account>,
}

/// One enrolled account: what the app needs to sign for it and to trust its server.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Account {
    pub accountid: i64,
    pub serverid: String,
    /// Where the app sends its requests (the `u` of the enrol payload).
    pub baseurl: String,
    /// base64url of the server identity key, pinned at enrol.
    pub serverkey: String,
    /// The account's description (the `n` of the enrol payload).
    pub name: String,
    pub userid: Option<String>,
    /// base64url of the account's public key.
    pub publickey: String,
    pub secretkey: SecretKey,
    /// Unix seconds.
    pub enrolled: i64,
}

/// base64url of an account's 32-byte Ed25519 secret key; never shown by `Debug`.
#[derive(Clone, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SecretKey(String);

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretKey(..)")
    }
}

impl SecretKey {
    pub fn new(key: &SigningKey) -> SecretKey {
        SecretKey(URL_SAFE_NO_PAD.encode(key.to_bytes()))
    }

    fn signing_key(&self) -> Result<SigningKey> {
        let bytes = URL_SAFE_NO_PAD
            .decode(&self.0)
            .ok()
            .and_then(|b| <[u8; 32]>::try_from(b).ok())
            .ok_or_else(|| anyhow!("the key store holds a malformed secret key"))?;
        Ok(SigningKey::from_bytes(&bytes))
    }
}

impl Account {
    /// base64url Ed25519 signature by the account key over `message`.
    pub fn sign(&self, message: &str) -> Result<String> {
        let key = self.secretkey.signing_key()?;
        Ok(URL_SAFE_NO_PAD.encode(key.sign(message.as_bytes()).to_bytes()))
    }

    /// The server key pinned at enrol.
    pub fn pinned_key(&self) -> Result<[u8; 32]> {
        URL_SAFE_NO_PAD
            .decode(&self.serverkey)
            .ok()
            .and_then(|b| <[u8; 32]>::try_from(b).ok())
            .ok_or_else(|| {
                anyhow!(
                    "the key store holds a malformed server key for account {}",
                    self.accountid
                )
            })
    }
}

/// The account a login payload is answered with, and the other accounts that could have been.
pub struct LoginMatch<'a> {
    pub account: &'a Account,
    pub others: Vec<i64>,
}

impl KeyStore {
    pub fn empty() -> KeyStore {
        KeyStore {
            version: VERSION,
            accounts: Vec::new(),
        }
    }

    /// Reads the store; a missing or empty file is an empty store.
    pub fn load(path: &Path) -> Result<KeyStore> {
        let text = match fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(KeyStore::empty()),
            Err(e) => {
                return Err(e).with_context(|| format!("cannot read key store {}", path.display()))
            }
        };
        if let Some(mode) = loose_mode(path) {
            eprintln!(
                "warning: key store {} can be read or written by other users (mode {mode:o}); \
                 run `chmod 600 {}`",
                path.display(),
                path.display()
            );
        }
        if text.trim().is_empty() {
            return Ok(KeyStore::empty());
        }
        let store: KeyStore = serde_json::from_str(&text)
            .with_context(|| format!("key store {} is not valid", path.display()))?;
        if store.version != VERSION {
            bail!(
                "key store {} has format version {}, this app reads version {VERSION}",
                path.display(),
                store.version
            );
        }
        Ok(store)
    }

    /// Writes the whole store atomically, mode 0600.
    pub fn save(&self, path: &Path) -> Result<()> {
        let dir = parent(path);
        create_private_dir(&dir)?;
        let name = path
            .file_name()
            .ok_or_else(|| anyhow!("key store path {} names no file", path.display()))?;
        let temp = dir.join(format!(
            ".{}.{}.{}.tmp",
            name.to_string_lossy(),
            std::process::id(),
            SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or_default()
        ));
        let text = serde_json::to_string_pretty(self).context("cannot encode the key store")?;
        let written = (|| -> std::io::Result<()> {
            let mut file = create_private_file(&temp)?;
            file.write_all(text.as_bytes())?;
            file.write_all(b"\n")?;
            file.sync_all()?;
            fs::rename(&temp, path)
        })();
        if let Err(e) = written {
            let _ = fs::remove_file(&temp);
            return Err(e).with_context(|| format!("cannot write key store {}", path.display()));
        }
        // The rename is only durable once the directory is; not every platform can open one.
        if let Ok(dir) = File::open(&dir) {
            let _ = dir.sync_all();
        }
        Ok(())
    }

    /// Re-reads the store under the writers' lock, changes it and writes it back.
    pub fn update<T>(path: &Path, change: impl FnOnce(&mut KeyStore) -> Result<T>) -> Result<T> {
        let _lock = Lock::take(path)?;
        let mut store = KeyStore::load(path)?;
        let value = change(&mut store)?;
        store.save(path)?;
        Ok(value)
    }

    /// Adds an account, replacing one with the same server and account id (a server that gave
    /// out the id again has forgotten the old account).
    pub fn add(&mut self, account: Account) {
        self.accounts
            .retain(|a| !(a.serverid == account.serverid && a.accountid == account.accountid));
        self.accounts.push(account);
    }

    /// The accounts of a server that pinned another key than `serverkey`.
    pub fn pinned_differently(&self, serverid: &str, serverkey: &str) -> Vec<i64> {
        self.accounts
            .iter()
            .filter(|a| a.serverid == serverid && a.serverkey != serverkey)
            .map(|a| a.accountid)
            .collect()
    }

    /// The account to answer a login payload with: of the payload's server (and numbered
    /// `accountid` when given), with a pinned key the payload's signature verifies against; the
    /// most recently enrolled one when several do. Refuses when none does.
    pub fn for_login(&self, payload: &QrPayload, accountid: Option<i64>) -> Result<LoginMatch<'_>> {
        let server = &payload.server_id;
        let candidates: Vec<&Account> = self
            .accounts
            .iter()
            .filter(|a| &a.serverid == server && accountid.is_none_or(|id| a.accountid == id))
            .collect();
        if candidates.is_empty() {
            match accountid {
                Some(id) => bail!("the key store has no account {id} for server {server}"),
                None => bail!("the key store has no account for server {server}: enrol first"),
            }
        }
        let mut verified: Vec<&Account> = candidates
            .into_iter()
            .filter(|a| a.pinned_key().is_ok_and(|key| payload.verify(&key).is_ok()))
            .collect();
        let Some(account) = verified.pop() else {
            bail!(
                "refusing the login payload: its signature does not verify against the key \
                 pinned for server {server} (it was not made by the server this app enrolled with)"
            );
        };
        Ok(LoginMatch {
            account,
            others: verified.iter().map(|a| a.accountid).collect(),
        })
    }
}

/// The mode bits when group or others have any access (unix only).
fn loose_mode(path: &Path) -> Option<u32> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(path).ok()?.permissions().mode() & 0o777;
        (mode & 0o077 != 0).then_some(mode)
    }
    #[cfg(not(unix))]
    {
        let _ = path;
        None
    }
}

fn parent(path: &Path) -> PathBuf {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

fn create_private_dir(dir: &Path) -> Result<()> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder
        .create(dir)
        .with_context(|| format!("cannot create directory {}", dir.display()))
}

/// Creates a file that did not exist, readable and writable by its owner only.
fn create_private_file(path: &Path) -> std::io::Result<File> {
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options.open(path)
}

/// The writers' lock: a file beside the store, removed when dropped.
struct Lock(PathBuf);

impl Lock {
    fn take(store: &Path) -> Result<Lock> {
        let mut name = store.as_os_str().to_owned();
        name.push(".lock");
        let path = PathBuf::from(name);
        create_private_dir(&parent(store))?;
        let deadline = SystemTime::now() + LOCK_WAIT;
        loop {
            match create_private_file(&path) {
                Ok(mut file) => {
                    let _ = writeln!(file, "{}", std::process::id());
                    return Ok(Lock(path));
                }
                Err(e) if e.kind() == ErrorKind::AlreadyExists => {
                    let stale = fs::metadata(&path)
                        .and_then(|m| m.modified())
                        .ok()
                        .and_then(|t| t.elapsed().ok())
                        .is_some_and(|age| age > LOCK_STALE);
                    if stale {
                        let _ = fs::remove_file(&path);
                        continue;
                    }
                    if SystemTime::now() > deadline {
                        bail!(
                            "the key store is locked by another latchkey-app (remove {} if none \
                             is running)",
                            path.display()
                        );
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(e) => {
                    return Err(e)
                        .with_context(|| format!("cannot create lock file {}", path.display()))
                }
            }
        }
    }
}

impl Drop for Lock {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use latchkey_core::crypto::qr::QrKind;

    fn key(seed: u8) -> SigningKey {
        SigningKey::from_bytes(&[seed; 32])
    }

    fn account(accountid: i64, serverid: &str, server: &SigningKey) -> Account {
        let own = key(100 + accountid as u8);
        Account {
            accountid,
            serverid: serverid.into(),
            baseurl: "http://127.0.0.1:8080".into(),
            serverkey: URL_SAFE_NO_PAD.encode(server.verifying_key().to_bytes()),
            name: "phone".into(),
            userid: Some("alice@example.com".into()),
            publickey: URL_SAFE_NO_PAD.encode(own.verifying_key().to_bytes()),
            secretkey: SecretKey::new(&own),
            enrolled: 1_800_000_000,
        }
    }

    fn login_payload(serverid: &str, server: &SigningKey) -> QrPayload {
        QrPayload {
            kind: QrKind::Login,
            server_id: serverid.into(),
            base_url: "http://127.0.0.1:8080".into(),
            challenge: "Y2hhbGxlbmdl".into(),
            expires: 1_800_000_120,
            server_key: None,
            name: None,
            userid: None,
            signature: String::new(),
        }
        .sign(&server.to_bytes())
    }

    #[test]
    fn a_store_round_trips_through_its_file_with_mode_0600() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub").join("store.json");
        assert!(KeyStore::load(&path).unwrap().accounts.is_empty());

        let mut store = KeyStore::empty();
        store.add(account(1, "srv", &key(1)));
        store.add(account(2, "srv", &key(1)));
        store.save(&path).unwrap();

        let loaded = KeyStore::load(&path).unwrap();
        assert_eq!(loaded.accounts.len(), 2);
        let (a, b) = (&store.accounts[1], &loaded.accounts[1]);
        assert_eq!(
            (
                a.accountid,
                &a.serverid,
                &a.serverkey,
                &a.publickey,
                &a.userid
            ),
            (
                b.accountid,
                &b.serverid,
                &b.serverkey,
                &b.publickey,
                &b.userid
            )
        );
        assert_eq!(a.sign("m").unwrap(), b.sign("m").unwrap());

        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
        }
        let leftovers: Vec<_> = fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(leftovers, vec![std::ffi::OsString::from("store.json")]);
    }

    #[test]
    fn updates_keep_accounts_added_meanwhile_and_release_the_lock() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.json");
        KeyStore::update(&path, |s| {
            s.add(account(1, "srv", &key(1)));
            Ok(())
        })
        .unwrap();
        KeyStore::update(&path, |s| {
            s.add(account(2, "other", &key(2)));
            Ok(())
        })
        .unwrap();
        let ids: Vec<i64> = KeyStore::load(&path)
            .unwrap()
            .accounts
            .iter()
            .map(|a| a.accountid)
            .collect();
        assert_eq!(ids, vec![1, 2]);
        assert!(!dir.path().join("store.json.lock").exists());
    }

    #[test]
    fn an_empty_file_is_an_empty_store_and_garbage_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.json");
        fs::write(&path, "").unwrap();
        assert!(KeyStore::load(&path).unwrap().accounts.is_empty());
        fs::write(&path, "{not json").unwrap();
        assert!(KeyStore::load(&path).is_err());
    }

    #[test]
    fn secret_keys_stay_out_of_debug_output() {
        let a = account(1, "srv", &key(1));
        let text = format!("{a:?}");
        assert!(!text.contains(&URL_SAFE_NO_PAD.encode(key(101).to_bytes())));
        assert!(text.contains("SecretKey(..)"));
    }

    #[test]
    fn login_payloads_verify_against_the_pinned_key_of_their_server() {
        let mut store = KeyStore::empty();
        store.add(account(1, "srv", &key(1)));
        let found = store
            .for_login(&login_payload("srv", &key(1)), None)
            .unwrap();
        assert_eq!(found.account.accountid, 1);
        assert!(found.others.is_empty());
    }

    #[test]
    fn a_login_payload_signed_by_another_server_key_is_refused() {
        let mut store = KeyStore::empty();
        store.add(account(1, "srv", &key(1)));
        let err = store
            .for_login(&login_payload("srv", &key(2)), None)
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("does not verify"), "{err}");

        let mut tampered = login_payload("srv", &key(1));
        tampered.base_url = "http://evil.example".into();
        assert!(store.for_login(&tampered, None).is_err());
    }

    #[test]
    fn a_login_payload_of_an_unknown_server_or_account_is_refused() {
        let mut store = KeyStore::empty();
        store.add(account(1, "srv", &key(1)));
        let err = store
            .for_login(&login_payload("elsewhere", &key(1)), None)
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("no account for server elsewhere"), "{err}");
        assert!(store
            .for_login(&login_payload("srv", &key(1)), Some(7))
            .is_err());
    }

    #[test]
    fn the_latest_matching_account_answers_unless_one_is_named() {
        let mut store = KeyStore::empty();
        store.add(account(1, "srv", &key(1)));
        store.add(account(2, "srv", &key(1)));
        let payload = login_payload("srv", &key(1));
        let found = store.for_login(&payload, None).unwrap();
        assert_eq!(
            (found.account.accountid, found.others.clone()),
            (2, vec![1])
        );
        assert_eq!(
            store
                .for_login(&payload, Some(1))
                .unwrap()
                .account
                .accountid,
            1
        );
    }
}
