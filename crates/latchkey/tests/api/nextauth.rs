//! Family A (nextAuth) and the app protocol over HTTP, with the test playing the companion app
//! (its own Ed25519 keys, signing as docs/app-protocol.md says) so every attack can be aimed
//! precisely. The real app binary is driven in app_e2e.rs.

use std::time::Duration;

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use ed25519_dalek::{Signer, SigningKey};
use latchkey_core::crypto::qr::{app_message, QrPayload};
use latchkey_core::crypto::transaction::TransactionValues;
use latchkey_core::model::Permissions;
use serde_json::{json, Value};

use crate::support::db::{both_backends, TestDb};
use crate::support::server::{auth_token, TestServer};
use crate::support::sse::SseReader;

pub(crate) const NONCE: &str = "bm9uY2Utb2YtYS1icm93c2Vy";
const ALICE: &str = "alice@example.com";
const PASSWORD: &str = "correct horse battery staple";

both_backends!(
    a_qr_login_logs_the_browser_session_in_and_nestjs_sees_it,
    the_login_qr_stays_the_same_until_used_or_expired,
    qr_payloads_cannot_be_replayed_forged_expired_or_used_by_another_key,
    a_provoked_login_is_pushed_to_the_app_and_approved_once,
    denied_and_expired_pushes_log_nobody_in,
    provoking_needs_an_account_to_ask,
    blocked_accounts_can_neither_log_in_nor_get_pushes,
    the_login_status_stream_follows_logins_and_revocations,
    users_are_registered_and_accounts_moved,
    api_keys_need_the_permission_on_that_server,
    bad_nextauth_input_gets_400,
    transactions_need_a_logged_in_account_and_answers_signed_over_their_values,
    transactions_live_within_their_session_and_refuse_hidden_text_strangers_and_blocked_accounts
);

pub(crate) struct App {
    key: SigningKey,
    pub(crate) account: i64,
    server: String,
}

fn sign(key: &SigningKey, message: &str) -> String {
    URL_SAFE_NO_PAD.encode(key.sign(message.as_bytes()).to_bytes())
}

fn new_key() -> SigningKey {
    SigningKey::from_bytes(&rand_bytes())
}

fn rand_bytes() -> [u8; 32] {
    let mut seed = [0u8; 32];
    seed.copy_from_slice(uuid::Uuid::new_v4().as_bytes().repeat(2).as_slice());
    seed
}

pub(crate) fn fam_a(
    s: &TestServer,
    method: reqwest::Method,
    path: &str,
) -> reqwest::RequestBuilder {
    s.http
        .request(method, s.url(&format!("/servers/{}{path}", s.server_id)))
        .header("X-apikey", &s.api_key)
        .header("X-nonce", NONCE)
}

pub(crate) async fn status(s: &TestServer, nonce: &str) -> Value {
    let r = s
        .http
        .get(s.url(&format!("/servers/{}/sessions/", s.server_id)))
        .header("X-apikey", &s.api_key)
        .header("X-nonce", nonce)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r.json().await.unwrap()
}

async fn text(r: reqwest::RequestBuilder) -> String {
    let r = r.send().await.unwrap();
    assert_eq!(r.status(), 200);
    r.text().await.unwrap()
}

pub(crate) async fn enrol(s: &TestServer, userid: Option<&str>) -> App {
    let mut path = "/sessions/qr/enrol?name=Alice%27s%20phone".to_owned();
    if let Some(userid) = userid {
        path.push_str(&format!("&userid={userid}"));
    }
    let payload = text(fam_a(s, reqwest::Method::GET, &path)).await;
    let parsed = QrPayload::parse(&payload).unwrap();
    let key = new_key();
    let public = URL_SAFE_NO_PAD.encode(key.verifying_key().to_bytes());
    let signature = sign(
        &key,
        &app_message("enrol", &parsed.server_id, &parsed.challenge, &public, None),
    );
    let r = s
        .http
        .post(s.url("/app/v1/enrol"))
        .json(&json!({"payload": payload, "publickey": public, "signature": signature, "clientVersion": "test 1"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["serverid"], s.server_id.as_str());
    assert_eq!(body["userid"], json!(userid));
    App {
        key,
        account: body["accountid"].as_i64().unwrap(),
        server: parsed.server_id,
    }
}

impl App {
    pub(crate) async fn login(&self, s: &TestServer, payload: &str) -> reqwest::Response {
        let parsed = QrPayload::parse(payload).unwrap();
        let signature = sign(
            &self.key,
            &app_message(
                "login",
                &parsed.server_id,
                &parsed.challenge,
                &self.account.to_string(),
                None,
            ),
        );
        s.http
            .post(s.url("/app/v1/login"))
            .json(&json!({"payload": payload, "accountid": self.account, "signature": signature}))
            .send()
            .await
            .unwrap()
    }

    pub(crate) async fn listen(&self, s: &TestServer) -> reqwest::Response {
        let c: Value = s
            .http
            .post(s.url("/app/v1/challenge"))
            .json(&json!({"serverid": self.server, "accountid": self.account}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let challenge = c["challenge"].as_str().unwrap();
        let signature = sign(
            &self.key,
            &app_message(
                "listen",
                &self.server,
                challenge,
                &self.account.to_string(),
                None,
            ),
        );
        s.http
            .get(s.url("/app/v1/events"))
            .query(&[
                ("serverid", self.server.as_str()),
                ("accountid", &self.account.to_string()),
                ("challenge", challenge),
                ("signature", &signature),
            ])
            .send()
            .await
            .unwrap()
    }

    pub(crate) async fn answer(
        &self,
        s: &TestServer,
        request: &str,
        approve: bool,
    ) -> reqwest::Response {
        self.answer_request(s, request, approve)
            .send()
            .await
            .unwrap()
    }

    /// The signed answer to a push, not sent yet.
    pub(crate) fn answer_request(
        &self,
        s: &TestServer,
        request: &str,
        approve: bool,
    ) -> reqwest::RequestBuilder {
        let signature = sign(
            &self.key,
            &app_message(
                "answer",
                &self.server,
                request,
                &self.account.to_string(),
                Some(if approve { "approve" } else { "deny" }),
            ),
        );
        s.http
            .post(s.url(&format!("/app/v1/push/{request}")))
            .json(&json!({"serverid": self.server, "accountid": self.account, "approve": approve, "signature": signature}))
    }
}

pub(crate) async fn login_payload(s: &TestServer) -> String {
    text(fam_a(s, reqwest::Method::GET, "/sessions/qr/login")).await
}

async fn a_qr_login_logs_the_browser_session_in_and_nestjs_sees_it(db: TestDb) {
    let s = TestServer::start(db).await;
    s.add_user(ALICE, PASSWORD).await;
    let app = enrol(&s, Some(ALICE)).await;
    let before = status(&s, NONCE).await;
    assert_eq!(before["loggedin"], false);
    assert_eq!(before["canprovoke"], false);
    let payload = text(
        fam_a(&s, reqwest::Method::GET, "/sessions/qr/login").json(&json!({
            "sessioninfo": {"ip": "203.0.113.9", "useragent": "Firefox/140", "info": {"page": "checkout"}}
        })),
    )
    .await;
    let r = app.login(&s, &payload).await;
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["userid"], ALICE);
    let after = status(&s, NONCE).await;
    assert_eq!(after["loggedin"], true);
    assert_eq!(after["userid"], ALICE);
    assert_eq!(after["accountid"], app.account);
    assert_eq!(
        after["pk"],
        STANDARD.encode(app.key.verifying_key().to_bytes())
    );
    assert_eq!(after["canprovoke"], true);
    assert_eq!(after["hsid"], before["hsid"]);

    // Family C lists the QR session among Alice's, with the UserContext as device info.
    let token = auth_token(&s.basic_login(ALICE, PASSWORD).await);
    let list: Value = s
        .http
        .get(s.url("/sessions"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list["total"], 2);
    let qr = list["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["isCurrent"] == false)
        .unwrap()
        .clone();
    assert_eq!(qr["ipAddress"], "203.0.113.9");
    assert!(qr["deviceInfo"].as_str().unwrap().contains("Firefox/140"));
    // ... and revoking it there logs the browser out.
    let id = qr["id"].as_str().unwrap();
    let r = s
        .http
        .delete(s.url(&format!("/sessions/{id}")))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(status(&s, NONCE).await["loggedin"], false);

    // Logging in again and logging out through family A.
    let payload = login_payload(&s).await;
    assert_eq!(app.login(&s, &payload).await.status(), 200);
    assert_eq!(status(&s, NONCE).await["loggedin"], true);
    for _ in 0..2 {
        let r = fam_a(&s, reqwest::Method::POST, "/sessions/logout")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    let out = status(&s, NONCE).await;
    assert_eq!(out["loggedin"], false);
    assert_eq!(out["canprovoke"], true);
}

async fn the_login_qr_stays_the_same_until_used_or_expired(db: TestDb) {
    let s = TestServer::start(db).await;
    let app = enrol(&s, None).await;
    let first = login_payload(&s).await;
    assert_eq!(login_payload(&s).await, first);
    let st = status(&s, NONCE).await;
    assert_eq!(
        STANDARD
            .decode(st["loginqrdata"].as_str().unwrap())
            .unwrap(),
        first.as_bytes()
    );
    s.clock.advance(121);
    let second = login_payload(&s).await;
    assert_ne!(second, first);
    assert_eq!(app.login(&s, &second).await.status(), 200);
    let third = login_payload(&s).await;
    assert_ne!(third, second);
    // An account without a user logs in without a userid.
    let st = status(&s, NONCE).await;
    assert_eq!(st["loggedin"], true);
    assert!(st.get("userid").is_none());
}

async fn qr_payloads_cannot_be_replayed_forged_expired_or_used_by_another_key(db: TestDb) {
    let s = TestServer::start(db).await;
    let app = enrol(&s, None).await;
    let payload = login_payload(&s).await;
    assert_eq!(app.login(&s, &payload).await.status(), 200);
    // Replayed.
    assert_eq!(app.login(&s, &payload).await.status(), 401);

    // Signed by another server's key: refused before anything else.
    fam_a(&s, reqwest::Method::POST, "/sessions/logout")
        .send()
        .await
        .unwrap();
    let fresh = QrPayload::parse(&login_payload(&s).await).unwrap();
    let forged = fresh.clone().sign(&[9u8; 32]).to_uri();
    assert_eq!(app.login(&s, &forged).await.status(), 400);
    // A payload whose challenge was tampered with.
    let mut tampered = fresh.clone();
    tampered.challenge = URL_SAFE_NO_PAD.encode([1u8; 32]);
    assert_eq!(app.login(&s, &tampered.to_uri()).await.status(), 400);

    // Another account's key signing for this account.
    let other = enrol(&s, None).await;
    let impostor = App {
        key: other.key,
        account: app.account,
        server: app.server.clone(),
    };
    assert_eq!(impostor.login(&s, &fresh.to_uri()).await.status(), 401);
    assert_eq!(status(&s, NONCE).await["loggedin"], false);

    // Expired.
    s.clock.advance(121);
    assert_eq!(app.login(&s, &fresh.to_uri()).await.status(), 401);
    // Unknown account.
    let ghost = App {
        key: new_key(),
        account: 9999,
        server: app.server.clone(),
    };
    assert_eq!(
        ghost.login(&s, &login_payload(&s).await).await.status(),
        404
    );

    // An enrol payload is used once, and its signature binds the key.
    let payload = text(fam_a(&s, reqwest::Method::GET, "/sessions/qr/enrol?name=x")).await;
    let parsed = QrPayload::parse(&payload).unwrap();
    let key = new_key();
    let public = URL_SAFE_NO_PAD.encode(key.verifying_key().to_bytes());
    let wrong = sign(
        &new_key(),
        &app_message("enrol", &parsed.server_id, &parsed.challenge, &public, None),
    );
    let r = s
        .http
        .post(s.url("/app/v1/enrol"))
        .json(&json!({"payload": payload, "publickey": public, "signature": wrong}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let right = sign(
        &key,
        &app_message("enrol", &parsed.server_id, &parsed.challenge, &public, None),
    );
    let enrol_once = || {
        s.http
            .post(s.url("/app/v1/enrol"))
            .json(&json!({"payload": payload, "publickey": public, "signature": right}))
            .send()
    };
    assert_eq!(enrol_once().await.unwrap().status(), 200);
    assert_eq!(enrol_once().await.unwrap().status(), 401);

    // A nonce of another server: the same nonce there is another browser session.
    let other_server = s.core.create_server("other").await.unwrap();
    let r = s
        .http
        .get(s.url(&format!("/servers/{}/sessions/", other_server.id)))
        .header("X-apikey", &s.api_key)
        .header("X-nonce", NONCE)
        .send()
        .await
        .unwrap();
    let there: Value = r.json().await.unwrap();
    assert_eq!(there["loggedin"], false);
    assert_ne!(there["hsid"], status(&s, NONCE).await["hsid"]);
    let other_payload = STANDARD
        .decode(there["loginqrdata"].as_str().unwrap())
        .unwrap();
    // Our account does not exist on the other server.
    let r = app
        .login(&s, std::str::from_utf8(&other_payload).unwrap())
        .await;
    assert_eq!(r.status(), 404);
    assert_eq!(status(&s, NONCE).await["loggedin"], false);
}

pub(crate) async fn first_push(reader: &mut SseReader) -> Value {
    let (name, data) = reader.next(Duration::from_secs(5)).await;
    assert_eq!(name, "push");
    serde_json::from_str(&data).unwrap()
}

pub(crate) async fn logged_in_then_out(s: &TestServer, app: &App) {
    let payload = login_payload(s).await;
    assert_eq!(app.login(s, &payload).await.status(), 200);
    fam_a(s, reqwest::Method::POST, "/sessions/logout")
        .send()
        .await
        .unwrap();
}

async fn a_provoked_login_is_pushed_to_the_app_and_approved_once(db: TestDb) {
    let s = TestServer::start(db).await;
    let app = enrol(&s, Some(ALICE)).await;
    logged_in_then_out(&s, &app).await;
    let mut pushes = SseReader::new(app.listen(&s).await);
    let r = fam_a(&s, reqwest::Method::POST, "/sessions/provokelogin")
        .json(&json!({"announceinfo": {"ip": "198.51.100.7", "useragent": "Safari", "info": {"why": "checkout"}}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let push = first_push(&mut pushes).await;
    assert_eq!(push["accountid"], app.account);
    assert_eq!(push["serverid"], s.server_id.as_str());
    assert_eq!(push["usercontext"]["announceinfo"]["useragent"], "Safari");
    let request = push["requestid"].as_str().unwrap();
    let r = app.answer(&s, request, true).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap(), json!({"loggedin": true}));
    let st = status(&s, NONCE).await;
    assert_eq!(st["loggedin"], true);
    assert_eq!(st["userid"], ALICE);
    // Approved twice: refused.
    assert_eq!(app.answer(&s, request, true).await.status(), 409);
    // A forged answer (another key) is refused too.
    let other = App {
        key: new_key(),
        account: app.account,
        server: app.server.clone(),
    };
    fam_a(&s, reqwest::Method::POST, "/sessions/provokelogin")
        .send()
        .await
        .unwrap();
    let push = first_push(&mut pushes).await;
    assert_eq!(
        other
            .answer(&s, push["requestid"].as_str().unwrap(), true)
            .await
            .status(),
        401
    );

    // Provoking a specific account and a user's accounts.
    let r = fam_a(
        &s,
        reqwest::Method::POST,
        &format!("/accounts/{}/provokelogin", app.account),
    )
    .send()
    .await
    .unwrap();
    assert_eq!(r.status(), 200);
    first_push(&mut pushes).await;
    let r = fam_a(
        &s,
        reqwest::Method::POST,
        &format!("/users/{ALICE}/provokelogin"),
    )
    .send()
    .await
    .unwrap();
    assert_eq!(r.status(), 200);
    first_push(&mut pushes).await;
}

async fn denied_and_expired_pushes_log_nobody_in(db: TestDb) {
    let s = TestServer::start(db).await;
    let app = enrol(&s, Some(ALICE)).await;
    logged_in_then_out(&s, &app).await;
    let mut pushes = SseReader::new(app.listen(&s).await);
    fam_a(&s, reqwest::Method::POST, "/sessions/provokelogin")
        .send()
        .await
        .unwrap();
    let push = first_push(&mut pushes).await;
    let r = app
        .answer(&s, push["requestid"].as_str().unwrap(), false)
        .await;
    assert_eq!(r.json::<Value>().await.unwrap(), json!({"loggedin": false}));
    assert_eq!(status(&s, NONCE).await["loggedin"], false);

    fam_a(&s, reqwest::Method::POST, "/sessions/provokelogin")
        .send()
        .await
        .unwrap();
    let push = first_push(&mut pushes).await;
    s.clock.advance(61);
    let r = app
        .answer(&s, push["requestid"].as_str().unwrap(), true)
        .await;
    assert_eq!(r.status(), 410);
    assert_eq!(status(&s, NONCE).await["loggedin"], false);
    // An unknown request.
    let r = app
        .answer(&s, &uuid::Uuid::new_v4().to_string(), true)
        .await;
    assert_eq!(r.status(), 404);
}

async fn provoking_needs_an_account_to_ask(db: TestDb) {
    let s = TestServer::start(db).await;
    s.add_user(ALICE, PASSWORD).await;
    let r = fam_a(&s, reqwest::Method::POST, "/sessions/provokelogin")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 409);
    let body: Value = r.json().await.unwrap();
    assert!(body["error"].is_string() && body["message"].is_string());
    let r = fam_a(&s, reqwest::Method::POST, "/accounts/77/provokelogin")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let r = fam_a(
        &s,
        reqwest::Method::POST,
        &format!("/users/{ALICE}/provokelogin"),
    )
    .send()
    .await
    .unwrap();
    assert_eq!(r.status(), 404);
    let r = fam_a(&s, reqwest::Method::POST, "/users/nobody/provokelogin")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
}

async fn blocked_accounts_can_neither_log_in_nor_get_pushes(db: TestDb) {
    let s = TestServer::start(db).await;
    let app = enrol(&s, Some(ALICE)).await;
    logged_in_then_out(&s, &app).await;
    let r = fam_a(
        &s,
        reqwest::Method::PUT,
        &format!("/accounts/{}/blocked?blocked=true", app.account),
    )
    .send()
    .await
    .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["blocked"], true);
    assert_eq!(status(&s, NONCE).await["canprovoke"], false);
    assert_eq!(app.login(&s, &login_payload(&s).await).await.status(), 403);
    assert_eq!(app.listen(&s).await.status(), 403);
    let r = fam_a(&s, reqwest::Method::POST, "/sessions/provokelogin")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 409);
    let r = fam_a(
        &s,
        reqwest::Method::POST,
        &format!("/accounts/{}/provokelogin", app.account),
    )
    .send()
    .await
    .unwrap();
    assert_eq!(r.status(), 403);
    let r = fam_a(
        &s,
        reqwest::Method::POST,
        &format!("/users/{ALICE}/provokelogin"),
    )
    .send()
    .await
    .unwrap();
    assert_eq!(r.status(), 404);
    // Unblocked, it works again.
    fam_a(
        &s,
        reqwest::Method::PUT,
        &format!("/accounts/{}/blocked?blocked=false", app.account),
    )
    .send()
    .await
    .unwrap();
    assert_eq!(app.login(&s, &login_payload(&s).await).await.status(), 200);
}

async fn the_login_status_stream_follows_logins_and_revocations(db: TestDb) {
    let s = TestServer::start(db).await;
    let app = enrol(&s, Some(ALICE)).await;
    let hsid = status(&s, NONCE).await["hsid"].as_str().unwrap().to_owned();
    let open = |hsid: String| {
        s.http
            .get(s.url(&format!("/servers/{}/sessions/events", s.server_id)))
            .query(&[("hsid", hsid)])
            .send()
    };
    let mut events = SseReader::new(open(hsid.clone()).await.unwrap());
    let (name, data) = events.next(Duration::from_secs(5)).await;
    assert_eq!(name, "status");
    let first: Value = serde_json::from_str(&data).unwrap();
    assert_eq!(first["loggedin"], false);
    assert!(first.get("loginqrdata").is_none());
    assert_eq!(app.login(&s, &login_payload(&s).await).await.status(), 200);
    let (_, data) = events.next(Duration::from_secs(5)).await;
    let logged: Value = serde_json::from_str(&data).unwrap();
    assert_eq!(logged["loggedin"], true);
    assert_eq!(logged["userid"], ALICE);
    fam_a(&s, reqwest::Method::POST, "/sessions/logout")
        .send()
        .await
        .unwrap();
    let (_, data) = events.next(Duration::from_secs(5)).await;
    assert_eq!(
        serde_json::from_str::<Value>(&data).unwrap()["loggedin"],
        false
    );
    // Unrelated activity sends nothing.
    status(&s, "c29tZS1vdGhlci1icm93c2Vy").await;
    assert!(events.quiet_for(Duration::from_millis(300)).await);
    // An unknown hsid is 404.
    assert_eq!(open("nope".into()).await.unwrap().status(), 404);
}

async fn users_are_registered_and_accounts_moved(db: TestDb) {
    let s = TestServer::start(db).await;
    let app = enrol(&s, None).await;
    let register = |userid: &'static str| {
        fam_a(&s, reqwest::Method::POST, "/sessions/registeruser")
            .query(&[("userid", userid)])
            .send()
    };
    assert_eq!(register("bob").await.unwrap().status(), 409);
    assert_eq!(app.login(&s, &login_payload(&s).await).await.status(), 200);
    assert_eq!(register("bad:name").await.unwrap().status(), 403);
    assert_eq!(register("bob").await.unwrap().status(), 200);
    assert_eq!(status(&s, NONCE).await["userid"], "bob");

    let r = fam_a(
        &s,
        reqwest::Method::PUT,
        &format!("/accounts/{}/user", app.account),
    )
    .query(&[("userid", "carol")])
    .send()
    .await
    .unwrap();
    assert_eq!(r.status(), 200);
    let account: Value = r.json().await.unwrap();
    assert_eq!(account["id"], app.account);
    assert_eq!(account["userid"], "carol");
    assert_eq!(account["description"], "Alice's phone");
    assert_eq!(account["blocked"], false);
    assert_eq!(account["clientVersion"], "test 1");
    assert!(account["created"].is_i64() && account["lastlogin"].is_i64());
    let r = fam_a(&s, reqwest::Method::PUT, "/accounts/12345/user")
        .query(&[("userid", "x")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let r = fam_a(
        &s,
        reqwest::Method::PUT,
        &format!("/accounts/{}/user", app.account),
    )
    .query(&[("userid", "")])
    .send()
    .await
    .unwrap();
    assert_eq!(r.status(), 403);
}

async fn api_keys_need_the_permission_on_that_server(db: TestDb) {
    let s = TestServer::start(db).await;
    let app = enrol(&s, None).await;
    s.core
        .grant(
            "site",
            &s.server_id,
            Permissions {
                sessions: true,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    s.core
        .grant(
            "support",
            &s.server_id,
            Permissions {
                accounts: true,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let site = s.core.create_api_key("site").await.unwrap().text;
    let support = s.core.create_api_key("support").await.unwrap().text;
    let call = |key: &str, method: reqwest::Method, path: &str| {
        s.http
            .request(method, s.url(&format!("/servers/{}{path}", s.server_id)))
            .header("X-apikey", key.to_owned())
            .header("X-nonce", NONCE)
            .send()
    };
    use reqwest::Method;
    assert_eq!(
        call(&site, Method::GET, "/sessions/")
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        call(&support, Method::GET, "/sessions/")
            .await
            .unwrap()
            .status(),
        403
    );
    assert_eq!(
        call(&site, Method::POST, "/sessions/registeruser?userid=x")
            .await
            .unwrap()
            .status(),
        403
    );
    let move_account = format!("/accounts/{}/user?userid=dave", app.account);
    assert_eq!(
        call(&site, Method::PUT, &move_account)
            .await
            .unwrap()
            .status(),
        403
    );
    assert_eq!(
        call(&support, Method::PUT, &move_account)
            .await
            .unwrap()
            .status(),
        200
    );
    // Account provoke accepts `sessions` or `accounts`.
    let provoke = format!("/accounts/{}/provokelogin", app.account);
    assert_eq!(
        call(&support, Method::POST, &provoke)
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        call("unknown-key", Method::GET, "/sessions/")
            .await
            .unwrap()
            .status(),
        401
    );
    let no_key = s
        .http
        .get(s.url(&format!("/servers/{}/sessions/", s.server_id)))
        .header("X-nonce", NONCE)
        .send()
        .await
        .unwrap();
    assert_eq!(no_key.status(), 401);
    // Unknown server (after the key is checked).
    let r = s
        .http
        .get(s.url("/servers/AAAAAAAAAAAAAAAAAAAAAA/sessions/"))
        .header("X-apikey", &site)
        .header("X-nonce", NONCE)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    // Permissions are per server.
    let other = s.core.create_server("other").await.unwrap();
    let r = s
        .http
        .get(s.url(&format!("/servers/{}/sessions/", other.id)))
        .header("X-apikey", &site)
        .header("X-nonce", NONCE)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    // X-su: only a root key may act as another role, and then has that role's permissions.
    let su = |key: &str, role: &str| {
        s.http
            .get(s.url(&format!("/servers/{}/sessions/", s.server_id)))
            .header("X-apikey", key.to_owned())
            .header("X-su", role.to_owned())
            .header("X-nonce", NONCE)
            .send()
    };
    assert_eq!(su(&site, "support").await.unwrap().status(), 403);
    assert_eq!(su(&s.api_key, "support").await.unwrap().status(), 403);
    assert_eq!(su(&s.api_key, "site").await.unwrap().status(), 200);
    assert_eq!(su(&s.api_key, "no-such-role").await.unwrap().status(), 403);
    // vash: `sessions` or `servers`.
    let vash = call(&site, Method::GET, "/vash").await.unwrap();
    assert_eq!(vash.status(), 200);
    assert_eq!(vash.headers()["content-type"], "image/png");
    assert_eq!(
        call(&support, Method::GET, "/vash").await.unwrap().status(),
        403
    );
}

async fn bad_nextauth_input_gets_400(db: TestDb) {
    let s = TestServer::start(db).await;
    let with_nonce = |nonce: &str| {
        s.http
            .get(s.url(&format!("/servers/{}/sessions/", s.server_id)))
            .header("X-apikey", &s.api_key)
            .header("X-nonce", nonce.to_owned())
            .send()
    };
    for nonce in [
        "short",
        "has spaces in it....",
        "!!!!!!!!!!!!!!!!!!!!",
        &"a".repeat(129),
        "abcdefghijklmnop===",
    ] {
        assert_eq!(with_nonce(nonce).await.unwrap().status(), 400, "{nonce}");
    }
    assert_eq!(with_nonce(&"a".repeat(128)).await.unwrap().status(), 200);
    assert_eq!(
        with_nonce("abcdefghijklmn+/==").await.unwrap().status(),
        200
    );
    let no_nonce = s
        .http
        .get(s.url(&format!("/servers/{}/sessions/", s.server_id)))
        .header("X-apikey", &s.api_key)
        .send()
        .await
        .unwrap();
    assert_eq!(no_nonce.status(), 400);
    for q in ["img=png&s=63", "img=png&s=2001", "img=png&s=abc", "img=gif"] {
        let r = fam_a(&s, reqwest::Method::GET, &format!("/sessions/qr/login?{q}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{q}");
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["error"], "invalid_request");
    }
    let r = fam_a(&s, reqwest::Method::GET, "/sessions/qr/login?img=png&s=64")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let png = r.bytes().await.unwrap();
    assert_eq!(u32::from_be_bytes(png[16..20].try_into().unwrap()), 64);
    let r = fam_a(&s, reqwest::Method::GET, "/sessions/qr/login")
        .body("not json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let r = fam_a(&s, reqwest::Method::GET, "/sessions/qr/enrol")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let r = fam_a(
        &s,
        reqwest::Method::GET,
        "/sessions/qr/enrol?name=x&userid=a:b",
    )
    .send()
    .await
    .unwrap();
    assert_eq!(r.status(), 400);
    let r = fam_a(&s, reqwest::Method::POST, "/accounts/abc/provokelogin")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let r = s
        .http
        .post(s.url("/app/v1/login"))
        .json(&json!({"payload": "garbage", "accountid": 1, "signature": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let r = s
        .http
        .post(s.url("/app/v1/login"))
        .body("{")
        .header("content-type", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
}

/// The values a pushed transaction carries, as signed.
fn values_of(t: &Value) -> TransactionValues<'_> {
    TransactionValues {
        server_id: t["serverid"].as_str().unwrap(),
        tid: t["tid"].as_str().unwrap(),
        account_id: t["accountid"].as_i64().unwrap(),
        amount: t["amount"].as_str().unwrap(),
        beneficiary: t["beneficiary"].as_str().unwrap(),
        description: t["description"].as_str().unwrap(),
        created: t["created"].as_i64().unwrap(),
        expires: t["expires"].as_i64().unwrap(),
    }
}

/// A transaction made on `NONCE`; answers its id.
async fn made_transaction(s: &TestServer, amount: &str) -> String {
    let r = fam_a(s, reqwest::Method::POST, "/sessions/transactions")
        .json(&json!({"amount": amount, "benificiary": "ACME"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r.json::<Value>().await.unwrap()["tid"]
        .as_str()
        .unwrap()
        .to_owned()
}

async fn tstatus(s: &TestServer, tid: &str) -> Value {
    let r = fam_a(s, reqwest::Method::GET, &format!("/transactions/{tid}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r.json::<Value>().await.unwrap()["tstatus"].clone()
}

impl App {
    /// The account's pending transactions, fetched as the app does.
    async fn pending_transactions(&self, s: &TestServer) -> Vec<Value> {
        let c: Value = s
            .http
            .post(s.url("/app/v1/challenge"))
            .json(&json!({"serverid": self.server, "accountid": self.account}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let challenge = c["challenge"].as_str().unwrap();
        let signature = sign(
            &self.key,
            &app_message(
                "transactions",
                &self.server,
                challenge,
                &self.account.to_string(),
                None,
            ),
        );
        let r = s
            .http
            .post(s.url("/app/v1/transactions"))
            .json(&json!({"serverid": self.server, "accountid": self.account, "challenge": challenge, "signature": signature}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        r.json::<Value>().await.unwrap()["transactions"]
            .as_array()
            .unwrap()
            .clone()
    }

    async fn answer_transaction(
        &self,
        s: &TestServer,
        shown: &TransactionValues<'_>,
        approve: bool,
    ) -> reqwest::Response {
        let signature = sign(&self.key, &shown.answer_message(approve));
        s.http
            .post(s.url(&format!("/app/v1/transactions/{}", shown.tid)))
            .json(&json!({"serverid": self.server, "accountid": self.account, "approve": approve, "signature": signature}))
            .send()
            .await
            .unwrap()
    }
}

async fn transactions_need_a_logged_in_account_and_answers_signed_over_their_values(db: TestDb) {
    let s = TestServer::start(db).await;
    let create = |body: Value| {
        fam_a(&s, reqwest::Method::POST, "/sessions/transactions")
            .json(&body)
            .send()
    };
    let order = json!({"amount": "10.00 EUR", "benificiary": "ACME", "description": "order 1"});
    // No account logged in on this nonce: the spec's 403.
    assert_eq!(create(order.clone()).await.unwrap().status(), 403);
    let app = enrol(&s, Some(ALICE)).await;
    logged_in_then_out(&s, &app).await;
    assert_eq!(
        create(order.clone()).await.unwrap().status(),
        403,
        "logged out: no account associated with the session"
    );
    let payload = login_payload(&s).await;
    assert_eq!(app.login(&s, &payload).await.status(), 200);

    // Malformed or oversized values: 400, nothing made.
    for bad in [
        json!({}),
        json!({"amount": "x".repeat(65)}),
        json!({"amount": "1\u{1b}[2J"}),
        json!({"amount": 10}),
    ] {
        assert_eq!(create(bad.clone()).await.unwrap().status(), 400, "{bad}");
    }

    let mut pushes = SseReader::new(app.listen(&s).await);
    let r = create(order.clone()).await.unwrap();
    assert_eq!(r.status(), 200);
    let tid = r.json::<Value>().await.unwrap()["tid"]
        .as_str()
        .unwrap()
        .to_owned();
    let (name, data) = pushes.next(Duration::from_secs(5)).await;
    assert_eq!(name, "transaction");
    let pushed: Value = serde_json::from_str(&data).unwrap();
    assert_eq!(pushed["tid"], tid.as_str());
    assert_eq!(pushed["beneficiary"], "ACME");
    let shown = values_of(&pushed);
    // The server's signature verifies against its public key.
    let server_key = {
        let enrol = text(fam_a(&s, reqwest::Method::GET, "/sessions/qr/enrol?name=x")).await;
        QrPayload::parse(&enrol)
            .unwrap()
            .server_key_bytes()
            .unwrap()
    };
    assert!(shown.verify_server(&server_key, pushed["signature"].as_str().unwrap()));

    let result = |tid: String| {
        let s = &s;
        async move {
            let r = fam_a(s, reqwest::Method::GET, &format!("/transactions/{tid}"))
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        }
    };
    assert_eq!(result(tid.clone()).await, (200, json!({"tstatus": "0"})));

    // An approval signed over other values (what a tampered screen showed) does not count,
    // nor does one by another key.
    let other_amount = TransactionValues {
        amount: "1.00 EUR",
        ..shown.clone()
    };
    assert_eq!(
        app.answer_transaction(&s, &other_amount, true)
            .await
            .status(),
        401
    );
    let stranger = App {
        key: new_key(),
        account: app.account,
        server: app.server.clone(),
    };
    assert_eq!(
        stranger.answer_transaction(&s, &shown, true).await.status(),
        401
    );
    assert_eq!(result(tid.clone()).await.1["tstatus"], "0");
    let r = app.answer_transaction(&s, &shown, true).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap(), json!({"approved": true}));
    assert_eq!(result(tid.clone()).await.1["tstatus"], "1");
    // Answered once.
    assert_eq!(
        app.answer_transaction(&s, &shown, false).await.status(),
        409
    );
    assert_eq!(result(tid.clone()).await.1["tstatus"], "1");

    // Unknown ids: 404 (well-formed or not).
    assert_eq!(result("AAAAAAAAAAAAAAAAAAAAAA".into()).await.0, 404);
    assert_eq!(result("nope".into()).await.0, 404);

    // At most 16 waiting per account; the 17th is refused until one is answered or expires.
    for _ in 0..16 {
        assert_eq!(create(order.clone()).await.unwrap().status(), 200);
    }
    let r = create(order.clone()).await.unwrap();
    assert_eq!(r.status(), 409);
    s.clock.advance(301);
    let r = create(order.clone()).await.unwrap();
    assert_eq!(r.status(), 200);
    let late = r.json::<Value>().await.unwrap()["tid"]
        .as_str()
        .unwrap()
        .to_owned();
    s.clock.advance(301);
    assert_eq!(
        result(late).await.1["tstatus"],
        "2",
        "expired unanswered: declined"
    );

    // The sessions permission on that server is needed.
    let r = s
        .http
        .get(s.url(&format!("/servers/{}/transactions/{tid}", s.server_id)))
        .header("X-apikey", "wrong")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
}

async fn transactions_live_within_their_session_and_refuse_hidden_text_strangers_and_blocked_accounts(
    db: TestDb,
) {
    let s = TestServer::start(db).await;
    let app = enrol(&s, Some(ALICE)).await;
    let payload = login_payload(&s).await;
    assert_eq!(app.login(&s, &payload).await.status(), 200);

    // Text that could hide what is shown is refused when the transaction is made.
    for bad in [
        json!({"benificiary": "ACME\u{202e}gnp.exe"}),
        json!({"amount": "1\u{200b}00 EUR"}),
        json!({"amount": "100\u{feff}"}),
        json!({"description": "line\n".repeat(11)}),
    ] {
        let r = fam_a(&s, reqwest::Method::POST, "/sessions/transactions")
            .json(&bad)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{bad}");
    }

    // The listing takes a fresh challenge signed for `transactions`: one signed for another
    // action, or used already, is refused.
    let challenge = |app: &App| {
        let body = json!({"serverid": app.server, "accountid": app.account});
        let http = s.http.clone();
        let url = s.url("/app/v1/challenge");
        async move {
            let c: Value = http
                .post(url)
                .json(&body)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            c["challenge"].as_str().unwrap().to_owned()
        }
    };
    let list_with = |challenge: &str, action: &str| {
        let signature = sign(
            &app.key,
            &app_message(
                action,
                &app.server,
                challenge,
                &app.account.to_string(),
                None,
            ),
        );
        s.http
            .post(s.url("/app/v1/transactions"))
            .json(&json!({"serverid": app.server, "accountid": app.account, "challenge": challenge, "signature": signature}))
            .send()
    };
    let fresh = challenge(&app).await;
    assert_eq!(list_with(&fresh, "listen").await.unwrap().status(), 401);
    let fresh = challenge(&app).await;
    assert_eq!(
        list_with(&fresh, "transactions").await.unwrap().status(),
        200
    );
    assert_eq!(
        list_with(&fresh, "transactions").await.unwrap().status(),
        401,
        "a challenge serves once"
    );

    // Another account cannot answer alice's transaction, whatever it signs.
    let tid = made_transaction(&s, "5.00 EUR").await;
    let pending = app.pending_transactions(&s).await;
    assert_eq!(pending.len(), 1);
    let shown = values_of(&pending[0]);
    let bob = enrol(&s, Some("bob@example.com")).await;
    let as_bob = TransactionValues {
        account_id: bob.account,
        ..shown.clone()
    };
    assert_eq!(
        bob.answer_transaction(&s, &as_bob, true).await.status(),
        404
    );
    assert_eq!(bob.answer_transaction(&s, &shown, true).await.status(), 404);
    assert!(bob.pending_transactions(&s).await.is_empty());

    // A blocked account can neither get nor answer one.
    let block = |blocked: bool| {
        fam_a(
            &s,
            reqwest::Method::PUT,
            &format!("/accounts/{}/blocked?blocked={blocked}", app.account),
        )
        .send()
    };
    assert_eq!(block(true).await.unwrap().status(), 200);
    assert_eq!(app.answer_transaction(&s, &shown, true).await.status(), 403);
    let r = fam_a(&s, reqwest::Method::POST, "/sessions/transactions")
        .json(&json!({"amount": "1"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(block(false).await.unwrap().status(), 200);
    assert_eq!(tstatus(&s, &tid).await, "0");

    // An approval written into the database, not signed by the app, is not believed.
    s.db()
        .execute("UPDATE app_transaction SET status = 1")
        .await;
    assert_eq!(tstatus(&s, &tid).await, "2");

    // A transaction lives within its session: after a logout it cannot be approved and reads
    // declined; the app no longer lists it.
    let tid = made_transaction(&s, "6.00 EUR").await;
    let pending = app.pending_transactions(&s).await;
    let last = pending
        .iter()
        .find(|t| t["tid"] == tid.as_str())
        .expect("listed");
    let shown = values_of(last);
    fam_a(&s, reqwest::Method::POST, "/sessions/logout")
        .send()
        .await
        .unwrap();
    assert_eq!(tstatus(&s, &tid).await, "2");
    assert!(app.pending_transactions(&s).await.is_empty());
    assert_eq!(app.answer_transaction(&s, &shown, true).await.status(), 410);

    // Expired: 410 for the app too.
    let payload = login_payload(&s).await;
    assert_eq!(app.login(&s, &payload).await.status(), 200);
    made_transaction(&s, "7.00 EUR").await;
    let pending = app.pending_transactions(&s).await;
    let shown = values_of(&pending[0]);
    s.clock.advance(301);
    assert_eq!(app.answer_transaction(&s, &shown, true).await.status(), 410);
}
