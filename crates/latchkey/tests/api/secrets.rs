//! Secrets at rest: the servers' identity keys, the JWT signing keys and TOTP secrets never sit
//! in the database in clear (the SQLite file and its WAL are read byte for byte), secrets an
//! earlier version stored in clear are sealed at the next open, and a missing or wrong master
//! key file is refused with a message that says what to do, never replaced by a new key.

use latchkey_core::crypto::sealing::OVERHEAD;
use latchkey_core::UserId;
use serde_json::json;

use crate::cli::{latchkey, run_with_stdin, stdout_json};
use crate::support::db::{both_backends, Backend, TestDb};
use crate::support::server::{auth_token, TestServer};

both_backends!(
    no_secret_is_stored_in_clear,
    secrets_stored_in_clear_by_an_earlier_version_are_sealed_at_the_next_open,
    a_missing_or_wrong_master_key_is_refused_and_never_replaced
);

const ALICE: &str = "alice@example.com";
const PASSWORD: &str = "correct horse battery staple";

/// Every plaintext secret the database holds for `s`, named.
async fn plaintext_secrets(s: &TestServer, totp: &[u8]) -> Vec<(String, Vec<u8>)> {
    s.core.jwks().await.unwrap(); // a signing key exists
    let mut secrets = vec![("TOTP secret".to_owned(), totp.to_vec())];
    for server in s.store.servers().await.unwrap() {
        secrets.push((
            format!("server key {}", server.id),
            server.secret_key.to_vec(),
        ));
    }
    for key in s.store.signing_keys().await.unwrap() {
        secrets.push((format!("signing key {}", key.kid), key.secret_key.to_vec()));
    }
    assert!(secrets.len() >= 3, "{secrets:?}");
    secrets
}

/// The stored bytes of every secret column, by row, as the database holds them.
async fn stored_secrets(db: &TestDb) -> Vec<(String, Vec<u8>)> {
    db.text_and_bytes(
        "SELECT CAST(server_id AS TEXT), secret_key FROM server \
         UNION ALL SELECT kid, secret_key FROM signing_key \
         UNION ALL SELECT CAST(user_id AS TEXT), totp_secret FROM person \
         WHERE totp_secret IS NOT NULL",
    )
    .await
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// The SQLite database file and its write-ahead log, byte for byte.
fn sqlite_files(db: &TestDb) -> Vec<u8> {
    let path = db.url().trim_start_matches("sqlite://").to_owned();
    let mut bytes = std::fs::read(&path).unwrap();
    if let Ok(wal) = std::fs::read(format!("{path}-wal")) {
        bytes.extend(wal);
    }
    bytes
}

async fn no_secret_is_stored_in_clear(db: TestDb) {
    let s = TestServer::start(db).await;
    s.add_user(ALICE, PASSWORD).await;
    let totp = s.enable_totp(ALICE).await;
    let secrets = plaintext_secrets(&s, &totp).await;

    let stored = stored_secrets(s.db()).await;
    assert_eq!(stored.len(), secrets.len());
    for (row, bytes) in &stored {
        assert!(
            secrets
                .iter()
                .any(|(_, clear)| bytes.len() == clear.len() + OVERHEAD),
            "{row}: {} bytes is not a sealed secret",
            bytes.len()
        );
        for (what, clear) in &secrets {
            assert!(
                !contains(bytes, clear),
                "{what} stored in clear in row {row}"
            );
        }
    }
    if s.db().backend() == Backend::Sqlite {
        let raw = sqlite_files(s.db());
        for (what, clear) in &secrets {
            assert!(
                !contains(&raw, clear),
                "{what} in clear in the database files"
            );
        }
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(s.db().master_key_file())
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "the master key file is private");
        }
    }

    // The sealed secrets still do their work: a TOTP login.
    let r = s.basic_login(ALICE, PASSWORD).await;
    assert_eq!(r.status(), 207);
    let token = auth_token(&r);
    let ok = s
        .http
        .post(s.url("/session/login"))
        .header("X-Auth-Token", &token)
        .json(&json!({"auth_type": "2FA", "code": s.totp_code(&totp)}))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
}

/// A blob literal in the backend's SQL.
fn blob(backend: Backend, bytes: &[u8]) -> String {
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    match backend {
        Backend::Sqlite => format!("X'{hex}'"),
        Backend::Postgres => format!("'\\x{hex}'::bytea"),
    }
}

async fn secrets_stored_in_clear_by_an_earlier_version_are_sealed_at_the_next_open(db: TestDb) {
    let s = TestServer::start(db).await;
    s.add_user(ALICE, PASSWORD).await;
    let totp = s.enable_totp(ALICE).await;
    let secrets = plaintext_secrets(&s, &totp).await;
    let server = s.store.server(&s.server_id).await.unwrap().unwrap();
    let keys = s.store.signing_keys().await.unwrap();
    let user = s
        .store
        .credentials(&s.server_id, &UserId::parse(ALICE).unwrap())
        .await
        .unwrap()
        .unwrap();

    // The database as a version without sealing left it: secrets in clear, no check value,
    // no key file.
    let backend = s.db().backend();
    let mut sql = format!(
        "DELETE FROM setting WHERE key = 'master_key_check'; \
         UPDATE server SET secret_key = {} WHERE server_id = '{}'; \
         UPDATE person SET totp_secret = {} WHERE user_id = '{}';",
        blob(backend, &server.secret_key),
        server.id,
        blob(backend, &totp),
        user.user.id,
    );
    for key in &keys {
        sql += &format!(
            "UPDATE signing_key SET secret_key = {} WHERE kid = '{}';",
            blob(backend, &key.secret_key),
            key.kid
        );
    }
    s.db().execute(&sql).await;
    std::fs::remove_file(s.db().master_key_file()).unwrap();

    // The upgraded process: a new key file, every secret sealed with it.
    let upgraded = s.another_process().await;
    assert!(s.db().master_key_file().exists());
    for (row, bytes) in stored_secrets(s.db()).await {
        for (what, clear) in &secrets {
            assert!(
                !contains(&bytes, clear),
                "{what} still in clear in row {row}"
            );
        }
    }
    // ... and they open to what they were.
    let reopened = upgraded.store.server(&s.server_id).await.unwrap().unwrap();
    assert_eq!(reopened.secret_key, server.secret_key);
    let reopened_keys = upgraded.store.signing_keys().await.unwrap();
    assert_eq!(
        reopened_keys
            .iter()
            .map(|k| k.secret_key)
            .collect::<Vec<_>>(),
        keys.iter().map(|k| k.secret_key).collect::<Vec<_>>()
    );
    let r = upgraded.basic_login(ALICE, PASSWORD).await;
    assert_eq!(r.status(), 207);
    let ok = upgraded
        .http
        .post(upgraded.url("/session/login"))
        .header("X-Auth-Token", auth_token(&r))
        .json(&json!({"auth_type": "2FA", "code": upgraded.totp_code(&totp)}))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
}

async fn a_missing_or_wrong_master_key_is_refused_and_never_replaced(db: TestDb) {
    stdout_json(&latchkey(&db, &["init"]).output().unwrap());
    let key_file = db.master_key_file();
    let original = std::fs::read(&key_file).unwrap();
    let add = |name: &str| {
        run_with_stdin(
            latchkey(&db, &["user", "add", name, "--password-stdin"]),
            "a long enough password\n",
        )
    };
    assert!(add("first@example.com").status.success());

    // Missing: refused, and no new key file is left behind.
    std::fs::remove_file(&key_file).unwrap();
    let out = add("second@example.com");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("does not exist") && stderr.contains("restore it"),
        "{stderr}"
    );
    assert!(!key_file.exists(), "a new key was made");

    // Another key: refused, the file left as it is.
    let other = latchkey_core::crypto::sealing::MasterKey::generate().to_file_text();
    std::fs::write(&key_file, &other).unwrap();
    let out = latchkey(&db, &["serve", "--listen", "127.0.0.1:0"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("is not the one"), "{stderr}");
    assert_eq!(std::fs::read_to_string(&key_file).unwrap(), other);

    // The right key back: everything works, nothing was lost.
    std::fs::write(&key_file, &original).unwrap();
    assert!(add("second@example.com").status.success());
}
