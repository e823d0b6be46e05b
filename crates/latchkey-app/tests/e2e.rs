//! The companion app as a person uses it: the real `latchkey-app` binary, run as a separate
//! process against a real latchkey server (port 0, fresh database, both backends), scanning the
//! server's QR code PNGs with its own decoder.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use latchkey_testkit::both_backends;
use latchkey_testkit::db::TestDb;
use latchkey_testkit::server::TestServer;
use latchkey_testkit::sse::SseReader;
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

const APP: &str = env!("CARGO_BIN_EXE_latchkey-app");
const NONCE: &str = "YnJvd3Nlci1zZXNzaW9uLW9uZQ";

both_backends!(
    the_app_enrols_and_logs_in_from_png_codes_and_the_browser_sees_it,
    pushed_logins_are_approved_denied_or_left_to_expire,
    accounts_are_registered_moved_and_blocked,
    the_app_refuses_replayed_expired_and_foreign_payloads,
    qr_pngs_decode_to_exactly_the_raw_payload,
    transactions_are_approved_declined_and_refused_once_changed
);

struct Phone {
    store: PathBuf,
    _dir: tempfile::TempDir,
}

impl Phone {
    fn new() -> Phone {
        let dir = tempfile::tempdir().unwrap();
        Phone {
            store: dir.path().join("keys.json"),
            _dir: dir,
        }
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(APP);
        cmd.arg("--store").arg(&self.store).arg("--json").args(args);
        cmd.env_remove("LATCHKEY_APP_STORE").kill_on_drop(true);
        cmd
    }

    /// Runs a command to its end; answers (success, the JSON it printed).
    async fn run(&self, args: &[&str]) -> (bool, Value) {
        let out = self
            .command(args)
            .stdin(Stdio::null())
            .output()
            .await
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let value = serde_json::from_str(stdout.trim()).unwrap_or_else(|_| {
            panic!(
                "{args:?} printed no JSON: {stdout}\nstderr: {}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
        (out.status.success(), value)
    }

    async fn ok(&self, args: &[&str]) -> Value {
        let (ok, value) = self.run(args).await;
        assert!(ok, "{args:?} failed: {value}");
        value
    }

    /// Starts `listen` and waits until it says it is listening.
    async fn listen(&self, args: &[&str]) -> Listener {
        let mut all = vec!["listen"];
        all.extend_from_slice(args);
        let mut child = self
            .command(&all)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        loop {
            let line = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
                .await
                .expect("listen did not start in time")
                .unwrap()
                .expect("listen exited before listening");
            let value: Value = serde_json::from_str(&line).unwrap();
            if value["listening"] == true {
                break;
            }
        }
        Listener { child, lines }
    }
}

struct Listener {
    child: Child,
    lines: tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
}

impl Listener {
    /// The next line, if one comes within `wait`.
    async fn next_within(&mut self, wait: Duration) -> Option<Value> {
        let line = tokio::time::timeout(wait, self.lines.next_line())
            .await
            .ok()?
            .unwrap()?;
        Some(serde_json::from_str(&line).unwrap())
    }

    async fn next(&mut self) -> Value {
        let line = tokio::time::timeout(Duration::from_secs(20), self.lines.next_line())
            .await
            .expect("no line from listen in time")
            .unwrap()
            .expect("listen ended");
        serde_json::from_str(&line).unwrap()
    }

    async fn exits_ok(mut self) {
        let status = tokio::time::timeout(Duration::from_secs(20), self.child.wait())
            .await
            .expect("listen --once did not exit")
            .unwrap();
        assert!(status.success());
    }
}

fn fam_a(
    s: &TestServer,
    method: reqwest::Method,
    path: &str,
    nonce: &str,
) -> reqwest::RequestBuilder {
    s.http
        .request(method, s.url(&format!("/servers/{}{path}", s.server_id)))
        .header("X-apikey", &s.api_key)
        .header("X-nonce", nonce)
}

/// Saves the PNG a QR endpoint answers to a file the app can scan.
async fn png(s: &TestServer, path: &str, dir: &Path, name: &str) -> PathBuf {
    let r = fam_a(s, reqwest::Method::GET, path, NONCE)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let file = dir.join(name);
    std::fs::write(&file, r.bytes().await.unwrap()).unwrap();
    file
}

async fn status(s: &TestServer, nonce: &str) -> Value {
    fam_a(s, reqwest::Method::GET, "/sessions/", nonce)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

async fn enrol(s: &TestServer, phone: &Phone, userid: &str) -> i64 {
    let dir = tempfile::tempdir().unwrap();
    let image = png(
        s,
        &format!("/sessions/qr/enrol?name=phone&userid={userid}&img=png&s=400"),
        dir.path(),
        "enrol.png",
    )
    .await;
    let enrolled = phone.ok(&["enrol", "--png", image.to_str().unwrap()]).await;
    assert_eq!(enrolled["serverid"], s.server_id.as_str());
    assert_eq!(enrolled["userid"], userid);
    enrolled["accountid"].as_i64().unwrap()
}

async fn the_app_enrols_and_logs_in_from_png_codes_and_the_browser_sees_it(db: TestDb) {
    let s = TestServer::start(db).await;
    let phone = Phone::new();
    let account = enrol(&s, &phone, "alice").await;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&phone.store)
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "key store is readable by others: {mode:o}");
    }
    let accounts = phone.ok(&["accounts"]).await;
    assert_eq!(accounts["accounts"][0]["accountid"], account);
    assert!(!accounts.to_string().contains("secret"));

    // The browser watches its login status over SSE while the person scans.
    let hsid = status(&s, NONCE).await["hsid"].as_str().unwrap().to_owned();
    let mut events = SseReader::new(
        s.http
            .get(s.url(&format!("/servers/{}/sessions/events", s.server_id)))
            .query(&[("hsid", &hsid)])
            .send()
            .await
            .unwrap(),
    );
    let (_, first) = events.next(Duration::from_secs(5)).await;
    assert_eq!(
        serde_json::from_str::<Value>(&first).unwrap()["loggedin"],
        false
    );

    let dir = tempfile::tempdir().unwrap();
    let image = png(
        &s,
        "/sessions/qr/login?img=png&s=300",
        dir.path(),
        "login.png",
    )
    .await;
    let logged = phone.ok(&["login", "--png", image.to_str().unwrap()]).await;
    assert_eq!(logged["accountid"], account);
    assert_eq!(logged["userid"], "alice");
    let (_, data) = events.next(Duration::from_secs(5)).await;
    let pushed: Value = serde_json::from_str(&data).unwrap();
    assert_eq!(pushed["loggedin"], true);
    assert_eq!(pushed["userid"], "alice");
    // And by polling.
    let polled = status(&s, NONCE).await;
    assert_eq!(polled["loggedin"], true);
    assert_eq!(polled["accountid"], account);

    // The base64 loginqrdata works as a payload too.
    fam_a(&s, reqwest::Method::POST, "/sessions/logout", NONCE)
        .send()
        .await
        .unwrap();
    let data = status(&s, NONCE).await["loginqrdata"]
        .as_str()
        .unwrap()
        .to_owned();
    phone.ok(&["login", &data]).await;
    assert_eq!(status(&s, NONCE).await["loggedin"], true);
}

async fn logged_in_once(s: &TestServer, phone: &Phone) {
    let payload = fam_a(s, reqwest::Method::GET, "/sessions/qr/login", NONCE)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    phone.ok(&["login", &payload]).await;
    fam_a(s, reqwest::Method::POST, "/sessions/logout", NONCE)
        .send()
        .await
        .unwrap();
}

async fn pushed_logins_are_approved_denied_or_left_to_expire(db: TestDb) {
    let s = TestServer::start(db).await;
    let phone = Phone::new();
    enrol(&s, &phone, "alice").await;
    logged_in_once(&s, &phone).await;
    assert_eq!(status(&s, NONCE).await["canprovoke"], true);

    // Approved.
    let mut listener = phone.listen(&["--approve-all", "--once"]).await;
    let context = json!({"sessioninfo": {"ip": "192.0.2.1", "useragent": "Firefox", "info": {"shop": "demo"}}});
    let r = fam_a(&s, reqwest::Method::POST, "/sessions/provokelogin", NONCE)
        .json(&context)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let handled = listener.next().await;
    assert_eq!(handled["approved"], true);
    assert_eq!(handled["loggedin"], true);
    assert_eq!(handled["usercontext"], context);
    listener.exits_ok().await;
    assert_eq!(status(&s, NONCE).await["loggedin"], true);

    // Denied.
    fam_a(&s, reqwest::Method::POST, "/sessions/logout", NONCE)
        .send()
        .await
        .unwrap();
    let mut listener = phone.listen(&["--deny-all", "--once"]).await;
    fam_a(&s, reqwest::Method::POST, "/sessions/provokelogin", NONCE)
        .send()
        .await
        .unwrap();
    let handled = listener.next().await;
    assert_eq!(handled["approved"], false);
    assert_eq!(handled["loggedin"], false);
    listener.exits_ok().await;
    assert_eq!(status(&s, NONCE).await["loggedin"], false);

    // Left to expire: the app shows the request and the person takes longer than its 60 s
    // (the server's clock passes them while the prompt waits); the answer is too late.
    fam_a(&s, reqwest::Method::POST, "/sessions/provokelogin", NONCE)
        .send()
        .await
        .unwrap();
    let mut slow = phone
        .command(&["listen", "--once"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut prompts = BufReader::new(slow.stderr.take().unwrap());
    let mut seen = String::new();
    tokio::time::timeout(Duration::from_secs(20), async {
        let mut buf = [0u8; 256];
        while !seen.contains("Approve this login?") {
            let n = tokio::io::AsyncReadExt::read(&mut prompts, &mut buf)
                .await
                .unwrap();
            assert!(n > 0, "listen ended before asking: {seen}");
            seen.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    })
    .await
    .unwrap_or_else(|_| panic!("listen never asked: {seen}"));
    s.clock.advance(61);
    let mut stdin = slow.stdin.take().unwrap();
    tokio::io::AsyncWriteExt::write_all(&mut stdin, b"y\n")
        .await
        .unwrap();
    let mut lines = BufReader::new(slow.stdout.take().unwrap()).lines();
    let handled = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            let line = lines.next_line().await.unwrap().expect("listen ended");
            let value: Value = serde_json::from_str(&line).unwrap();
            if value["listening"] != true {
                return value;
            }
        }
    })
    .await
    .expect("no answer from listen in time");
    // ...answered after expiry, it logs nobody in.
    assert!(
        handled.get("error").is_some() || handled["loggedin"] == false,
        "{handled}"
    );
    if let Some(error) = handled.get("error") {
        assert_eq!(error, "gone", "{handled}");
    }
    assert_eq!(status(&s, NONCE).await["loggedin"], false);
    drop(stdin);
    let _ = tokio::time::timeout(Duration::from_secs(20), slow.wait()).await;

    // Approved twice: two listeners on the same account, only one answer counts.
    let mut first = phone.listen(&["--approve-all", "--once"]).await;
    let mut second = phone.listen(&["--approve-all", "--once"]).await;
    fam_a(&s, reqwest::Method::POST, "/sessions/provokelogin", NONCE)
        .send()
        .await
        .unwrap();
    // The listener that reads the push after the other one approved it finds it no longer
    // pending and is not shown it (nothing to answer); one that was shown it gets a conflict.
    let wait = Duration::from_secs(5);
    let (a, b) = tokio::join!(first.next_within(wait), second.next_within(wait));
    let handled: Vec<Value> = [a, b].into_iter().flatten().collect();
    let approvals = handled.iter().filter(|h| h["loggedin"] == true).count();
    let conflicts = handled.iter().filter(|h| h["error"] == "conflict").count();
    assert_eq!(approvals, 1, "{handled:?}");
    assert_eq!(conflicts, handled.len() - 1, "{handled:?}");
    assert_eq!(status(&s, NONCE).await["loggedin"], true);
}

async fn accounts_are_registered_moved_and_blocked(db: TestDb) {
    let s = TestServer::start(db).await;
    let phone = Phone::new();
    // An account enrolled without a user, then registered by the site.
    let dir = tempfile::tempdir().unwrap();
    let image = png(
        &s,
        "/sessions/qr/enrol?name=tablet&img=png",
        dir.path(),
        "e.png",
    )
    .await;
    let enrolled = phone.ok(&["enrol", "--png", image.to_str().unwrap()]).await;
    assert!(enrolled["userid"].is_null());
    let account = enrolled["accountid"].as_i64().unwrap();
    logged_in_once(&s, &phone).await;
    let payload = fam_a(&s, reqwest::Method::GET, "/sessions/qr/login", NONCE)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    phone.ok(&["login", &payload]).await;
    let r = fam_a(
        &s,
        reqwest::Method::POST,
        "/sessions/registeruser?userid=bob",
        NONCE,
    )
    .send()
    .await
    .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(status(&s, NONCE).await["userid"], "bob");

    // Moved to another user: the next login is that user's.
    let r = fam_a(
        &s,
        reqwest::Method::PUT,
        &format!("/accounts/{account}/user?userid=carol"),
        NONCE,
    )
    .send()
    .await
    .unwrap();
    assert_eq!(r.json::<Value>().await.unwrap()["userid"], "carol");
    let payload = fam_a(&s, reqwest::Method::GET, "/sessions/qr/login", NONCE)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(phone.ok(&["login", &payload]).await["userid"], "carol");

    // Blocked: no login, no listening, no provoke.
    let r = fam_a(
        &s,
        reqwest::Method::PUT,
        &format!("/accounts/{account}/blocked?blocked=true"),
        NONCE,
    )
    .send()
    .await
    .unwrap();
    assert_eq!(r.status(), 200);
    let payload = fam_a(&s, reqwest::Method::GET, "/sessions/qr/login", NONCE)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let (ok, refused) = phone.run(&["login", &payload]).await;
    assert!(!ok);
    assert!(
        refused["error"].as_str().unwrap().contains("blocked"),
        "{refused}"
    );
    let (ok, refused) = phone.run(&["listen", "--approve-all", "--once"]).await;
    assert!(!ok, "{refused}");
    let r = fam_a(
        &s,
        reqwest::Method::POST,
        &format!("/accounts/{account}/provokelogin"),
        NONCE,
    )
    .send()
    .await
    .unwrap();
    assert_eq!(r.status(), 403);
}

async fn the_app_refuses_replayed_expired_and_foreign_payloads(db: TestDb) {
    let s = TestServer::start(db).await;
    let phone = Phone::new();
    enrol(&s, &phone, "alice").await;
    let payload = fam_a(&s, reqwest::Method::GET, "/sessions/qr/login", NONCE)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    phone.ok(&["login", &payload]).await;
    // Replayed: the server refuses the used challenge.
    let (ok, _) = phone.run(&["login", &payload]).await;
    assert!(!ok);

    // Expired (by the server's clock).
    fam_a(&s, reqwest::Method::POST, "/sessions/logout", NONCE)
        .send()
        .await
        .unwrap();
    let stale = fam_a(&s, reqwest::Method::GET, "/sessions/qr/login", NONCE)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    s.clock.advance(121);
    let (ok, _) = phone.run(&["login", &stale]).await;
    assert!(!ok);
    assert_eq!(status(&s, NONCE).await["loggedin"], false);

    // Signed by another server: the app has no account there, and a payload naming our server
    // but signed with another key does not verify against the pinned key.
    let other = TestServer::start(
        TestDb::new(latchkey_testkit::db::Backend::Sqlite)
            .await
            .unwrap(),
    )
    .await;
    let foreign = fam_a(&other, reqwest::Method::GET, "/sessions/qr/login", NONCE)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let (ok, refused) = phone.run(&["login", &foreign]).await;
    assert!(!ok, "{refused}");
    let mut forged = latchkey_core::crypto::qr::QrPayload::parse(
        &fam_a(&s, reqwest::Method::GET, "/sessions/qr/login", NONCE)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
    )
    .unwrap()
    .sign(&[3u8; 32]);
    forged.base_url = other.base.clone();
    let forged = forged.sign(&[3u8; 32]).to_uri();
    let (ok, refused) = phone.run(&["login", &forged]).await;
    assert!(!ok);
    assert!(
        refused["error"].as_str().unwrap().contains("pinned"),
        "{refused}"
    );
    assert_eq!(status(&s, NONCE).await["loggedin"], false);
}

async fn qr_pngs_decode_to_exactly_the_raw_payload(db: TestDb) {
    let s = TestServer::start(db).await;
    let raw = fam_a(&s, reqwest::Method::GET, "/sessions/qr/login", NONCE)
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    for size in [64, 100, 200, 333, 500, 1000, 2000] {
        let png = fam_a(
            &s,
            reqwest::Method::GET,
            &format!("/sessions/qr/login?img=png&s={size}"),
            NONCE,
        )
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
        let image = image::load_from_memory(&png).unwrap().to_luma8();
        assert_eq!((image.width(), image.height()), (size, size));
        let (w, h) = (image.width() as usize, image.height() as usize);
        let mut prepared = rqrr::PreparedImage::prepare_from_greyscale(w, h, |x, y| {
            image.get_pixel(x as u32, y as u32).0[0]
        });
        let grids = prepared.detect_grids();
        assert_eq!(grids.len(), 1, "size {size}");
        let (_, content) = grids[0].decode().unwrap();
        assert_eq!(content.as_bytes(), &raw[..], "size {size}");
    }
    let enrol_raw = fam_a(&s, reqwest::Method::GET, "/sessions/qr/enrol?name=x", NONCE)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(enrol_raw.starts_with("latchkey://enrol?"));
}

/// Makes a transaction on the browser session `NONCE`; answers its id.
async fn transaction(s: &TestServer, amount: &str) -> String {
    let r = fam_a(s, reqwest::Method::POST, "/sessions/transactions", NONCE)
        .json(&json!({"amount": amount, "benificiary": "ACME Ltd", "description": "order 42\ntwo items"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    body["tid"].as_str().unwrap().to_owned()
}

async fn tstatus(s: &TestServer, tid: &str) -> Value {
    let r = fam_a(
        s,
        reqwest::Method::GET,
        &format!("/transactions/{tid}"),
        NONCE,
    )
    .send()
    .await
    .unwrap();
    assert_eq!(r.status(), 200);
    r.json::<Value>().await.unwrap()["tstatus"].clone()
}

async fn transactions_are_approved_declined_and_refused_once_changed(db: TestDb) {
    let s = TestServer::start(db).await;
    let phone = Phone::new();
    enrol(&s, &phone, "alice").await;
    let payload = fam_a(&s, reqwest::Method::GET, "/sessions/qr/login", NONCE)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    phone.ok(&["login", &payload]).await;

    // Pushed to the listening app, which shows exactly the values and approves them.
    let mut listener = phone.listen(&["--approve-all", "--once"]).await;
    let tid = transaction(&s, "10.00 EUR").await;
    let handled = listener.next().await;
    assert_eq!(handled["tid"], tid.as_str());
    assert_eq!(handled["amount"], "10.00 EUR");
    assert_eq!(handled["beneficiary"], "ACME Ltd");
    assert_eq!(handled["description"], "order 42\ntwo items");
    assert_eq!(handled["approved"], true);
    assert!(handled.get("error").is_none(), "{handled}");
    listener.exits_ok().await;
    assert_eq!(tstatus(&s, &tid).await, "1");

    // Listed, then declined by its id.
    let tid = transaction(&s, "25.00 EUR").await;
    let listed = phone.ok(&["transactions"]).await;
    let listed = listed["transactions"].as_array().unwrap();
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["tid"], tid.as_str());
    assert_eq!(listed[0]["verified"], true);
    let declined = phone.ok(&["decline", &tid]).await;
    assert_eq!(declined["approved"], false);
    assert_eq!(tstatus(&s, &tid).await, "2");
    let (ok, again) = phone.run(&["approve", &tid]).await;
    assert!(!ok, "an answered transaction is not pending: {again}");

    // Changed after the server made it (here in the database, as an intruder could): the app
    // refuses it, on the stream and by id, and it stays unapproved until it expires.
    let tid = transaction(&s, "30.00 EUR").await;
    s.db()
        .execute("UPDATE app_transaction SET amount = '30000.00 EUR'")
        .await;
    let mut listener = phone.listen(&["--approve-all", "--once"]).await;
    let handled = listener.next().await;
    assert_eq!(handled["tid"], tid.as_str());
    assert!(
        handled["refused"].as_str().unwrap().contains("changed"),
        "{handled}"
    );
    assert!(handled.get("approved").is_none(), "{handled}");
    listener.exits_ok().await;
    let (ok, refused) = phone.run(&["approve", &tid]).await;
    assert!(!ok);
    assert!(
        refused["error"].as_str().unwrap().contains("changed"),
        "{refused}"
    );
    let listed = phone.ok(&["transactions"]).await;
    assert_eq!(listed["transactions"][0]["verified"], false);
    assert_eq!(tstatus(&s, &tid).await, "0");
    s.clock.advance(301);
    assert_eq!(
        tstatus(&s, &tid).await,
        "2",
        "expired unanswered reads as declined"
    );
}
