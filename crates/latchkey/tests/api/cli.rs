//! The `latchkey` binary as a person uses it: init, user administration and serve as real
//! processes, then a login with curl-like HTTP calls, on both backends.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};

use serde_json::{json, Value};

use crate::support::db::{both_backends, Backend, TestDb};

const BIN: &str = env!("CARGO_BIN_EXE_latchkey");

both_backends!(
    the_cli_traps_are_closed,
    init_prints_the_server_and_a_root_key_once_and_refuses_to_run_twice,
    a_person_follows_the_readme_from_init_to_logout,
    user_commands_refuse_bad_input_with_clear_messages
);

/// A `latchkey` command with a clean environment (no LATCHKEY_* leaking in from the caller)
/// and cheap SCRAM iterations.
pub(crate) fn latchkey(db: &TestDb, args: &[&str]) -> Command {
    // SQLite's key file sits beside the database by default; PostgreSQL's must be named.
    let key_file = (db.backend() == Backend::Postgres).then(|| db.master_key_file());
    latchkey_at(db.url(), key_file.as_deref(), args)
}

/// A `latchkey` command on the database at `url` (and `key_file`, when not the default).
pub(crate) fn latchkey_at(url: &str, key_file: Option<&Path>, args: &[&str]) -> Command {
    let mut cmd = Command::new(BIN);
    for (key, _) in std::env::vars() {
        if key.starts_with("LATCHKEY_") {
            cmd.env_remove(key);
        }
    }
    cmd.args(args)
        .arg("--database")
        .arg(url)
        .env("LATCHKEY_SCRAM_ITERATIONS", "4096")
        .env("LATCHKEY_ARGON2_MEMORY_KIB", "4096")
        .env("LATCHKEY_ARGON2_ITERATIONS", "1");
    if let Some(key_file) = key_file {
        cmd.env("LATCHKEY_MASTER_KEY_FILE", key_file);
    }
    cmd
}

pub(crate) fn run_with_stdin(mut cmd: Command, stdin: &str) -> Output {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

pub(crate) fn stdout_json(out: &Output) -> Value {
    assert!(
        out.status.success(),
        "failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

async fn init_prints_the_server_and_a_root_key_once_and_refuses_to_run_twice(db: TestDb) {
    let out = latchkey(&db, &["init"]).output().unwrap();
    let first = stdout_json(&out);
    assert!(first["serverid"].as_str().unwrap().len() >= 16);
    assert_eq!(first["apikey"].as_str().unwrap().len(), 43);
    assert_eq!(String::from_utf8(out.stdout).unwrap().lines().count(), 1);

    let again = latchkey(&db, &["init"]).output().unwrap();
    assert!(!again.status.success());
    assert!(again.stdout.is_empty());
    let message = String::from_utf8(again.stderr).unwrap();
    assert!(message.contains("already initialised"), "{message}");

    // Nothing changed: still one server, the first one.
    let store = latchkey::open_store(db.url(), &db.master_key_file())
        .await
        .unwrap();
    let servers = store.servers().await.unwrap();
    assert_eq!(servers.len(), 1);
    assert_eq!(servers[0].id.as_str(), first["serverid"]);
}

/// A running `latchkey serve`, killed on drop.
pub(crate) struct Serve {
    pub child: Child,
    pub base: String,
    log: Arc<Mutex<Vec<String>>>,
}

impl Serve {
    /// Every line the server has logged so far (JSON).
    pub fn log(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(crate) fn serve(db: &TestDb, extra_env: &[(&str, &str)]) -> Serve {
    serve_command(
        latchkey(db, &["serve", "--listen", "127.0.0.1:0"]),
        extra_env,
    )
}

/// Starts `cmd` (a `latchkey serve`) and waits until it listens.
pub(crate) fn serve_command(mut cmd: Command, extra_env: &[(&str, &str)]) -> Serve {
    cmd.env("LATCHKEY_LOG_FORMAT", "json")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for (k, v) in extra_env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut log = Vec::new();
    // The server logs its bound address once it listens; no sleeping, no fixed port.
    let base = loop {
        let line = lines
            .next()
            .expect("serve exited before listening")
            .unwrap();
        log.push(line.clone());
        let entry: Value = serde_json::from_str(&line).unwrap_or(Value::Null);
        if entry["fields"]["message"] == "latchkey is serving" {
            break format!("http://{}", entry["fields"]["listen"].as_str().unwrap());
        }
    };
    // Keep reading the log so the server never blocks on a full pipe.
    let log = Arc::new(Mutex::new(log));
    let collected = log.clone();
    std::thread::spawn(move || {
        for line in lines.map_while(Result::ok) {
            collected.lock().unwrap().push(line);
        }
    });
    Serve { child, base, log }
}

async fn a_person_follows_the_readme_from_init_to_logout(db: TestDb) {
    let server = serve(&db, &[]);
    let http = reqwest::Client::new();
    let ready = || http.get(format!("{}/readyz", server.base)).send();
    // Not ready before init: every family would answer 503.
    let before = ready().await.unwrap();
    assert_eq!(before.status(), 503);
    assert_eq!(
        before.json::<Value>().await.unwrap()["error"],
        "not_initialised"
    );
    // init while the server runs, as the README says.
    stdout_json(&latchkey(&db, &["init"]).output().unwrap());
    assert_eq!(ready().await.unwrap().status(), 200);
    let added = stdout_json(&run_with_stdin(
        latchkey(
            &db,
            &[
                "user",
                "add",
                "alice@example.com",
                "--password-stdin",
                "--json",
            ],
        ),
        "s3cret password\n",
    ));
    assert_eq!(added["userid"], "alice@example.com");
    let totp = latchkey(&db, &["user", "totp", "alice@example.com"])
        .output()
        .unwrap();
    assert!(totp.status.success());
    let uri = String::from_utf8(totp.stdout).unwrap();
    assert!(uri.starts_with("otpauth://totp/"), "{uri}");
    // Any authenticator app: here totp-rs reading the URI.
    let authenticator = totp_rs::TOTP::from_url(uri.trim()).unwrap();

    let login = http
        .get(format!("{}/session/login", server.base))
        .basic_auth("alice@example.com", Some("s3cret password"))
        .send()
        .await
        .unwrap();
    assert_eq!(login.status(), 207);
    assert_eq!(login.headers()["mfa-code"], "1");
    let token = login.headers()["x-auth-token"].to_str().unwrap().to_owned();
    let mfa = http
        .post(format!("{}/session/login", server.base))
        .header("X-Auth-Token", &token)
        .json(&serde_json::json!({"auth_type": "2FA", "code": authenticator.generate_current().unwrap()}))
        .send()
        .await
        .unwrap();
    assert_eq!(mfa.status(), 200);
    for (path, expected) in [
        ("/session/keepalive", 200),
        ("/session/logout", 200),
        ("/session/keepalive", 401),
    ] {
        let r = http
            .get(format!("{}{}", server.base, path))
            .header("X-Auth-Token", &token)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), expected, "{path}");
    }
    // The PIN command works too and changes the second factor offered (TOTP stays preferred).
    let pin = run_with_stdin(
        latchkey(&db, &["user", "pin", "alice@example.com", "--pin-stdin"]),
        "2468\n",
    );
    assert!(
        pin.status.success(),
        "{}",
        String::from_utf8_lossy(&pin.stderr)
    );
    assert!(!server.log().iter().any(|l| l.contains("s3cret")));
}

async fn user_commands_refuse_bad_input_with_clear_messages(db: TestDb) {
    stdout_json(&latchkey(&db, &["init"]).output().unwrap());
    let cases: Vec<(Vec<&str>, &str, &str)> = vec![
        (
            vec!["user", "add", "bad:name", "--password-stdin"],
            "pw\n",
            "user name",
        ),
        (
            vec!["user", "add", "bob", "--password-stdin"],
            "\n",
            "no password",
        ),
        (vec!["user", "totp", "nobody"], "", "no user"),
        (
            vec!["user", "pin", "nobody", "--pin-stdin"],
            "1234\n",
            "no user",
        ),
        (
            vec!["user", "add", "bob", "--server", "nope", "--password-stdin"],
            "pw\n",
            "no server",
        ),
    ];
    for (args, stdin, expected) in cases {
        let out = run_with_stdin(latchkey(&db, &args), stdin);
        assert!(!out.status.success(), "{args:?} should fail");
        let err = String::from_utf8(out.stderr).unwrap();
        assert!(err.contains(expected), "{args:?}: {err}");
    }
    stdout_json(&run_with_stdin(
        latchkey(&db, &["user", "add", "bob", "--password-stdin", "--json"]),
        "bob's password\n",
    ));
    let dup = run_with_stdin(
        latchkey(&db, &["user", "add", "bob", "--password-stdin"]),
        "bob's password\n",
    );
    assert!(String::from_utf8(dup.stderr)
        .unwrap()
        .contains("already exists"));
    let pin = run_with_stdin(
        latchkey(&db, &["user", "pin", "bob", "--pin-stdin"]),
        "12ab\n",
    );
    assert!(String::from_utf8(pin.stderr)
        .unwrap()
        .contains("4 to 16 digits"));
}

#[test]
fn serve_refuses_unknown_configuration_keys_and_names_them() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("latchkey.toml");
    // A misspelt key (`idle_timeout` itself became a real key).
    std::fs::write(&config, "listen = \"127.0.0.1:0\"\nidle_timout = 5\n").unwrap();
    let out = Command::new(BIN)
        .args(["serve", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8(out.stderr)
        .unwrap()
        .contains("idle_timout"));
    let out = Command::new(BIN)
        .args(["serve"])
        .env("LATCHKEY_SESSION_IDEL_TIMEOUT", "5")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8(out.stderr)
        .unwrap()
        .contains("session_idel_timeout"));
}

#[tokio::test]
async fn the_captcha_test_answer_makes_serve_warn_loudly() {
    let db = TestDb::new(crate::support::db::Backend::Sqlite)
        .await
        .unwrap();
    let server = serve(&db, &[("LATCHKEY_CAPTCHA_TEST_ANSWER", "abc")]);
    assert!(
        server
            .log()
            .iter()
            .any(|l| l.contains("WARN") && l.contains("LATCHKEY_CAPTCHA_TEST_ANSWER")),
        "{:?}",
        server.log()
    );
    let plain = serve(&db, &[]);
    assert!(!plain
        .log()
        .iter()
        .any(|l| l.contains("CAPTCHA_TEST_ANSWER")));
}

#[cfg(unix)]
#[test]
fn init_creates_the_data_directory_0700_and_the_database_file_0600() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("latchkey-data");
    let db = data.join("latchkey.db");
    let out = Command::new(BIN)
        .args(["init", "--database"])
        .arg(format!("sqlite://{}", db.display()))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&data), 0o700, "the data directory");
    assert_eq!(mode(&db), 0o600, "the database file");
    for extra in ["latchkey.db-wal", "latchkey.db-shm"] {
        let path = data.join(extra);
        if path.exists() {
            assert_eq!(mode(&path) & 0o077, 0, "{extra} is private too");
        }
    }
}

/// Runs a command that must fail; answers its standard error.
fn fails(cmd: Command, stdin: &str) -> String {
    let out = run_with_stdin(cmd, stdin);
    assert!(
        !out.status.success(),
        "it succeeded: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8(out.stderr).unwrap()
}

/// Runs a command that must succeed; answers its standard output.
fn succeeds(cmd: Command, stdin: &str) -> String {
    let out = run_with_stdin(cmd, stdin);
    assert!(
        out.status.success(),
        "it failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Reads the QR code `latchkey user totp --qr` prints (Unicode half blocks, light modules
/// drawn) with rqrr, an independent decoder.
fn decode_terminal_qr(text: &str) -> String {
    let lines: Vec<Vec<char>> = text
        .lines()
        .filter(|l| l.chars().any(|c| "█▀▄".contains(c)))
        .map(|l| l.chars().collect())
        .collect();
    let width = lines.iter().map(Vec::len).max().unwrap();
    let scale = 4;
    let (w, h) = (width * scale, lines.len() * 2 * scale);
    let image = rqrr::PreparedImage::prepare_from_greyscale(w, h, |x, y| {
        let line = &lines[y / (2 * scale)];
        let c = line.get(x / scale).copied().unwrap_or(' ');
        let top = y / scale % 2 == 0;
        // A drawn half is a light module; blank is dark.
        let light = match c {
            '█' => true,
            '▀' => top,
            '▄' => !top,
            _ => false,
        };
        if light {
            255
        } else {
            0
        }
    });
    let mut image = image;
    let grids = image.detect_grids();
    assert_eq!(grids.len(), 1, "one QR code in:\n{text}");
    grids[0].decode().unwrap().1
}

async fn the_cli_traps_are_closed(db: TestDb) {
    stdout_json(&latchkey(&db, &["init"]).output().unwrap());
    let cmd = |args: &[&str]| latchkey(&db, args);

    // No password-less user by accident; a password policy.
    let err = fails(cmd(&["user", "add", "carol@example.com"]), "");
    assert!(err.contains("--no-password"), "{err}");
    for (password, expected) in [
        ("short", "too short"),
        ("carol@example.com", "must not be the user id"),
    ] {
        let err = fails(
            cmd(&["user", "add", "carol@example.com", "--password-stdin"]),
            &format!("{password}\n"),
        );
        assert!(err.contains(expected), "{password}: {err}");
    }
    let text = succeeds(
        cmd(&["user", "add", "carol@example.com", "--password-stdin"]),
        "carol's long password\n",
    );
    assert_eq!(text.trim(), "added carol@example.com with a password");
    let json = stdout_json(&run_with_stdin(
        cmd(&[
            "user",
            "add",
            "app-only@example.com",
            "--no-password",
            "--json",
        ]),
        "",
    ));
    assert_eq!(json["password"], false);
    let err = fails(cmd(&["user", "password", "carol@example.com"]), "1234567\n");
    assert!(err.contains("too short"), "{err}");

    // TOTP: the URI on stdout, the QR on stderr (it decodes to the same URI); no silent
    // replacement; removal.
    let out = run_with_stdin(cmd(&["user", "totp", "carol@example.com", "--qr"]), "");
    assert!(out.status.success());
    let uri = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    assert!(uri.starts_with("otpauth://totp/"), "{uri}");
    assert_eq!(
        decode_terminal_qr(&String::from_utf8(out.stderr).unwrap()),
        uri
    );
    let err = fails(cmd(&["user", "totp", "carol@example.com"]), "");
    assert!(err.contains("--replace"), "{err}");
    let replaced = succeeds(cmd(&["user", "totp", "carol@example.com", "--replace"]), "");
    assert_ne!(replaced.trim(), uri, "a new secret");
    let shown = stdout_json(
        &cmd(&["user", "show", "carol@example.com", "--json"])
            .output()
            .unwrap(),
    );
    assert_eq!(shown["totp"], true);
    let removed = stdout_json(
        &cmd(&["user", "totp", "carol@example.com", "--remove", "--json"])
            .output()
            .unwrap(),
    );
    assert_eq!(removed["removed"], true);
    // PIN set, then removed.
    succeeds(
        cmd(&["user", "pin", "carol@example.com", "--pin-stdin"]),
        "2468\n",
    );
    let err = fails(cmd(&["user", "pin", "carol@example.com"]), "");
    assert!(err.contains("--pin-stdin"), "{err}");
    succeeds(cmd(&["user", "pin", "carol@example.com", "--remove"]), "");
    let shown = stdout_json(
        &cmd(&["user", "show", "carol@example.com", "--json"])
            .output()
            .unwrap(),
    );
    assert_eq!(
        (shown["totp"].clone(), shown["pin"].clone()),
        (json!(false), json!(false))
    );

    // Listing users.
    let listed = stdout_json(&cmd(&["user", "list", "--json"]).output().unwrap());
    let names: Vec<&str> = listed["users"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["userid"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["app-only@example.com", "carol@example.com"]);
    let table = succeeds(cmd(&["user", "list"]), "");
    assert!(
        table.lines().any(|l| l.starts_with("carol@example.com")),
        "{table}"
    );

    // Sessions: made by a real login through a running server, then listed and revoked here.
    let server = serve(&db, &[("LATCHKEY_LOGIN_RATE_PER_ADDRESS", "0")]);
    let http = reqwest::Client::new();
    let mut tokens = Vec::new();
    for _ in 0..3 {
        let r = http
            .get(format!("{}/session/login", server.base))
            .basic_auth("carol@example.com", Some("carol's long password"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        tokens.push(r.headers()["x-auth-token"].to_str().unwrap().to_owned());
    }
    let listed = stdout_json(
        &cmd(&["sessions", "list", "carol@example.com", "--json"])
            .output()
            .unwrap(),
    );
    let ids: Vec<String> = listed["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids.len(), 3);
    let keepalive = |token: String| {
        let http = http.clone();
        let url = format!("{}/session/keepalive", server.base);
        async move {
            http.get(url)
                .header("X-Auth-Token", token)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    // Each session is now in the server's hot-path cache.
    for token in &tokens {
        assert_eq!(keepalive(token.clone()).await, 200);
    }
    let one = succeeds(cmd(&["sessions", "revoke", &ids[0]]), "");
    assert!(one.contains("revoked session"), "{one}");
    let all = stdout_json(
        &cmd(&[
            "sessions",
            "revoke",
            "--user",
            "carol@example.com",
            "--json",
        ])
        .output()
        .unwrap(),
    );
    assert_eq!(all["revoked"], 2);
    // The running server drops them from its cache within about a second (it polls the
    // revocations other processes log).
    for token in tokens {
        let mut status = keepalive(token.clone()).await;
        for _ in 0..50 {
            if status == 401 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            status = keepalive(token.clone()).await;
        }
        assert_eq!(status, 401);
    }
    let err = fails(cmd(&["sessions", "revoke", "not-an-id"]), "");
    assert!(err.contains("not a session id"), "{err}");

    // The audit trail, filtered.
    let audit = stdout_json(
        &cmd(&[
            "audit",
            "--user",
            "carol@example.com",
            "--json",
            "--limit",
            "100",
        ])
        .output()
        .unwrap(),
    );
    let kinds: Vec<&str> = audit["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    for kind in [
        "user_created",
        "totp_enabled",
        "totp_removed",
        "pin_set",
        "pin_removed",
        "login_succeeded",
        "revoked_by_operator",
    ] {
        assert!(kinds.contains(&kind), "{kind} in {kinds:?}");
    }
    let only = stdout_json(
        &cmd(&["audit", "--kind", "pin_removed", "--since", "1h", "--json"])
            .output()
            .unwrap(),
    );
    assert_eq!(only["events"].as_array().unwrap().len(), 1);
    let err = fails(cmd(&["audit", "--since", "yesterday-ish"]), "");
    assert!(err.contains("--since"), "{err}");

    // Every command that prints a result prints one JSON object with --json.
    for args in [
        vec!["config", "check", "--json"],
        vec!["keys", "rotate", "--json"],
        vec!["migrate", "--json"],
        vec!["user", "delete", "app-only@example.com", "--json"],
    ] {
        let value = stdout_json(&cmd(&args).output().unwrap());
        assert!(value.is_object(), "{args:?}: {value}");
    }
}
