//! `latchkey backup` as an operator runs it: against a live `latchkey serve` while logins are
//! being written, then a restore into a new place (the copy as the database, the master key
//! file beside it) that a new `latchkey serve` answers from. SQLite only: PostgreSQL is backed
//! up with pg_dump (docs/operating.md).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use crate::cli::{latchkey, latchkey_at, run_with_stdin, serve, serve_command, stdout_json};
use crate::support::db::{Backend, TestDb};

const USER: &str = "alice@example.com";
const PASSWORD: &str = "a long enough password";

async fn login(http: &reqwest::Client, base: &str) -> Option<String> {
    let r = http
        .get(format!("{base}/session/login"))
        .basic_auth(USER, Some(PASSWORD))
        .send()
        .await
        .ok()?;
    if r.status() != 200 {
        return None;
    }
    Some(r.headers().get("X-Auth-Token")?.to_str().ok()?.to_owned())
}

async fn keepalive(http: &reqwest::Client, base: &str, token: &str) -> u16 {
    http.get(format!("{base}/session/keepalive"))
        .header("X-Auth-Token", token)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_taken_while_logins_run_restores_every_session_it_holds() {
    let Some(db) = TestDb::new(Backend::Sqlite).await else {
        return;
    };
    stdout_json(&latchkey(&db, &["init"]).output().unwrap());
    let added = run_with_stdin(
        latchkey(&db, &["user", "add", USER, "--password-stdin"]),
        &format!("{PASSWORD}\n"),
    );
    assert!(added.status.success());
    let no_rate = [("LATCHKEY_LOGIN_RATE_PER_ADDRESS", "0")];
    let live = serve(&db, &no_rate);
    let http = reqwest::Client::new();

    let mut before = Vec::new();
    for _ in 0..20 {
        before.push(login(&http, &live.base).await.unwrap());
    }
    // Logins go on being written while the backup is taken.
    let stop = Arc::new(AtomicBool::new(false));
    let during = Arc::new(AtomicUsize::new(0));
    let writers: Vec<_> = (0..4)
        .map(|_| {
            let (stop, during, http, base) = (
                stop.clone(),
                during.clone(),
                http.clone(),
                live.base.clone(),
            );
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    if login(&http, &base).await.is_some() {
                        during.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    while during.load(Ordering::Relaxed) < 5 {
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let file = db.dir().join("backup.db");
    let out = tokio::task::spawn_blocking({
        let cmd = latchkey(&db, &["backup", file.to_str().unwrap(), "--json"]);
        move || {
            let mut cmd = cmd;
            cmd.output().unwrap()
        }
    })
    .await
    .unwrap();
    let answer = stdout_json(&out);
    let logins_while_copying = during.load(Ordering::Relaxed);
    stop.store(true, Ordering::Relaxed);
    for writer in writers {
        writer.await.unwrap();
    }
    assert!(logins_while_copying >= 5);
    assert_eq!(answer["backup"], file.to_str().unwrap());
    assert!(answer["bytes"].as_u64().unwrap() > 0);
    assert!(String::from_utf8_lossy(&out.stderr).contains("master key"));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&file).unwrap().permissions().mode();
        assert_eq!(
            mode & 0o777,
            0o600,
            "the backup is as private as the database"
        );
    }
    // A second backup to the same file is refused: nothing is overwritten.
    let again = latchkey(&db, &["backup", file.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!again.status.success());

    let after = login(&http, &live.base).await.unwrap();
    drop(live);

    // Restore somewhere new: the copy as the database, the master key file beside it.
    let restored = tempfile::tempdir().unwrap();
    std::fs::copy(&file, restored.path().join("latchkey.db")).unwrap();
    std::fs::copy(db.master_key_file(), restored.path().join("master.key")).unwrap();
    let url = format!("sqlite://{}", restored.path().join("latchkey.db").display());
    let server = serve_command(
        latchkey_at(&url, None, &["serve", "--listen", "127.0.0.1:0"]),
        &no_rate,
    );
    for token in &before {
        assert_eq!(keepalive(&http, &server.base, token).await, 200);
    }
    assert_eq!(
        keepalive(&http, &server.base, &after).await,
        401,
        "a session made after the backup is not in it"
    );
    assert!(login(&http, &server.base).await.is_some());
}
