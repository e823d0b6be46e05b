//! Family C (session management) over HTTP, across families: sessions made by Basic login
//! (family D) and by SCRAM (family B) are listed, counted, validated and revoked alike, with
//! either kind of bearer credential.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use latchkey_core::crypto::scram::client_proof;
use serde_json::{json, Value};

use crate::support::db::{both_backends, TestDb};
use crate::support::server::{auth_token, TestServer};

const ALICE: &str = "alice@example.com";
const BOB: &str = "bob@example.com";
const PASSWORD: &str = "correct horse battery staple";

both_backends!(
    sessions_of_every_nextauthre_listed_newest_activity_first_with_device_info,
    pagination_clamps_the_limit_and_refuses_non_numbers,
    revoking_through_nestjs_kills_a_jwt_and_a_session_token_at_once,
    only_your_own_live_sessions_can_be_revoked,
    revoking_all_sessions_logs_out_every_device_including_this_one,
    validation_tells_active_sessions_from_all_others,
    validations_answered_from_memory_agree_with_the_store,
    anything_but_a_live_bearer_credential_is_unauthorized,
    sessions_still_logging_in_are_neither_listed_nor_credentials
);

/// A SCRAM login with latchkey's own client proof (the independent-client test is in polario.rs).
async fn scram_login(
    s: &TestServer,
    email: &str,
    password: &str,
    device: Value,
) -> (String, Value) {
    let client_nonce = "fyko+d2lbbFgONRv9qkxdawL";
    let first: Value = s
        .http
        .post(s.url("/auth/auth"))
        .json(&json!({"email": email, "nonce": client_nonce}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let nonce = first["nonce"].as_str().unwrap();
    let salt_b64 = first["salt"].as_str().unwrap();
    let iterations = first["iterationCount"].as_u64().unwrap() as u32;
    let salt = STANDARD.decode(salt_b64).unwrap();
    let auth_message = format!(
        "n={email},r={client_nonce},r={nonce},s={salt_b64},i={iterations},c=biws,r={nonce}"
    );
    let proof = client_proof(password, &salt, iterations, &auth_message);
    let mut body = json!({"email": email, "nonce": nonce, "proof": STANDARD.encode(proof)});
    if let (Some(body), Some(device)) = (body.as_object_mut(), device.as_object()) {
        body.extend(device.clone());
    }
    let r = s
        .http
        .post(s.url("/auth/login"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let jwt = r.headers()["session"].to_str().unwrap().to_owned();
    (jwt, r.json().await.unwrap())
}

async fn basic_login_as(s: &TestServer, user: &str, agent: &str) -> (String, String) {
    let r = s
        .http
        .get(s.url("/session/login"))
        .basic_auth(user, Some(PASSWORD))
        .header("User-Agent", agent)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let token = auth_token(&r);
    let body: Value = r.json().await.unwrap();
    (token, body["session_id"].as_str().unwrap().to_owned())
}

async fn get(s: &TestServer, path: &str, bearer: &str) -> reqwest::Response {
    s.http
        .get(s.url(path))
        .bearer_auth(bearer)
        .send()
        .await
        .unwrap()
}

async fn delete(s: &TestServer, path: &str, bearer: &str) -> reqwest::Response {
    s.http
        .delete(s.url(path))
        .bearer_auth(bearer)
        .send()
        .await
        .unwrap()
}

async fn assert_nest_error(r: reqwest::Response, status: u16) -> Value {
    assert_eq!(r.status().as_u16(), status);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["statusCode"], status, "{body}");
    assert!(body["message"].is_string(), "{body}");
    assert!(body["error"].is_string(), "{body}");
    body
}

async fn users(s: &TestServer) {
    s.add_user(ALICE, PASSWORD).await;
    s.add_user(BOB, PASSWORD).await;
}

async fn sessions_of_every_nextauthre_listed_newest_activity_first_with_device_info(db: TestDb) {
    let s = TestServer::start(db).await;
    users(&s).await;
    let (d_token, d_id) = basic_login_as(&s, ALICE, "Firefox/140 (X11; Linux)").await;
    s.clock.advance(10);
    let (jwt, b) = scram_login(
        &s,
        ALICE,
        PASSWORD,
        json!({"deviceName": "Pixel 9", "browser": "App", "os": "Android", "osVersion": "16"}),
    )
    .await;
    let b_id = b["deviceId"].as_str().unwrap().to_owned();
    s.clock.advance(10);
    basic_login_as(&s, BOB, "curl/8").await;

    let list: Value = get(&s, "/sessions", &jwt).await.json().await.unwrap();
    assert_eq!(list["total"], 2, "{list}");
    assert_eq!(
        (
            list["page"].clone(),
            list["limit"].clone(),
            list["totalPages"].clone()
        ),
        (json!(1), json!(10), json!(1))
    );
    let sessions = list["sessions"].as_array().unwrap();
    // The JWT call itself counts as activity of the family B session: it is the newest.
    assert_eq!(sessions[0]["id"], b_id);
    assert_eq!(sessions[0]["isCurrent"], true);
    assert_eq!(sessions[0]["deviceInfo"], "Pixel 9 (App, Android 16)");
    assert_eq!(sessions[1]["id"], d_id);
    assert_eq!(sessions[1]["isCurrent"], false);
    assert_eq!(sessions[1]["deviceInfo"], "Firefox/140 (X11; Linux)");
    for session in sessions {
        assert_eq!(session["ipAddress"], "127.0.0.1");
        assert!(session["location"].is_null());
        let created = session["createdAt"].as_str().unwrap();
        assert!(
            created.starts_with("2027-01-15T") && created.ends_with('Z'),
            "{created}"
        );
        assert!(session["lastActiveAt"].is_string());
    }

    // Activity on the family D session (via its own token, here through family C) puts it first.
    s.clock.advance(10);
    let list: Value = get(&s, "/sessions", &d_token).await.json().await.unwrap();
    assert_eq!(list["sessions"][0]["id"], d_id);
    assert_eq!(list["sessions"][0]["isCurrent"], true);
    let last_active = list["sessions"][0]["lastActiveAt"].as_str().unwrap();
    assert_eq!(last_active, "2027-01-15T08:00:30Z");
    let count: Value = get(&s, "/sessions/count", &d_token)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(count, json!({"count": 2}));
}

async fn pagination_clamps_the_limit_and_refuses_non_numbers(db: TestDb) {
    let s = TestServer::start(db).await;
    users(&s).await;
    let mut ids = Vec::new();
    for i in 0..3 {
        ids.push(basic_login_as(&s, ALICE, &format!("agent {i}")).await);
        s.clock.advance(5);
    }
    let (token, _) = &ids[0];
    let page = |q: &'static str| {
        let s = &s;
        async move { get(s, &format!("/sessions?{q}"), token).await }
    };
    let p1: Value = page("limit=2&page=1").await.json().await.unwrap();
    assert_eq!(p1["sessions"].as_array().unwrap().len(), 2);
    assert_eq!(
        (p1["total"].clone(), p1["totalPages"].clone()),
        (json!(3), json!(2))
    );
    let p2: Value = page("limit=2&page=2").await.json().await.unwrap();
    assert_eq!(p2["sessions"].as_array().unwrap().len(), 1);
    let seen: Vec<&Value> = p1["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .chain(p2["sessions"].as_array().unwrap())
        .map(|s| &s["id"])
        .collect();
    assert_eq!(seen.len(), 3);
    assert!(seen.windows(2).all(|w| w[0] != w[1]));
    let past: Value = page("limit=2&page=3").await.json().await.unwrap();
    assert_eq!(past["sessions"], json!([]));
    assert_eq!(
        (past["total"].clone(), past["page"].clone()),
        (json!(3), json!(3))
    );
    let zero: Value = page("limit=0").await.json().await.unwrap();
    assert_eq!(zero["limit"], 1);
    assert_eq!(zero["sessions"].as_array().unwrap().len(), 1);
    let big: Value = page("limit=51").await.json().await.unwrap();
    assert_eq!(big["limit"], 50);
    let first: Value = page("page=0").await.json().await.unwrap();
    assert_eq!(first["page"], 1);
    for q in ["limit=abc", "page=abc", "page=1.5", "limit=%FF"] {
        assert_nest_error(page(q).await, 400).await;
    }
    let other = ids[2].1.clone();
    let marked: Value = get(&s, &format!("/sessions?currentSessionId={other}"), token)
        .await
        .json()
        .await
        .unwrap();
    let current: Vec<&Value> = marked["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["isCurrent"] == true)
        .map(|s| &s["id"])
        .collect();
    assert_eq!(current, vec![&json!(other)]);
}

async fn revoking_through_nestjs_kills_a_jwt_and_a_session_token_at_once(db: TestDb) {
    let s = TestServer::start(db).await;
    users(&s).await;
    let (d_token, d_id) = basic_login_as(&s, ALICE, "browser").await;
    let (jwt, b) = scram_login(&s, ALICE, PASSWORD, json!({})).await;
    let b_id = b["deviceId"].as_str().unwrap().to_owned();
    let refresh = b["refreshToken"].as_str().unwrap().to_owned();

    // The family B JWT revokes the family D session...
    let r: Value = delete(&s, &format!("/sessions/{d_id}"), &jwt)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        r,
        json!({"success": true, "message": "Session revoked successfully"})
    );
    let keep = s
        .http
        .get(s.url("/session/keepalive"))
        .header("X-Auth-Token", &d_token)
        .send()
        .await
        .unwrap();
    assert_eq!(keep.status(), 401);
    assert_nest_error(get(&s, "/sessions", &d_token).await, 401).await;

    // ...and a fresh family D token revokes the family B session: JWT and refresh token die.
    let (d2_token, _) = basic_login_as(&s, ALICE, "browser 2").await;
    assert_eq!(
        delete(&s, &format!("/sessions/{b_id}"), &d2_token)
            .await
            .status(),
        200
    );
    assert_nest_error(get(&s, "/sessions/count", &jwt).await, 401).await;
    let logout = s
        .http
        .get(s.url("/auth/logout"))
        .header("Session", &jwt)
        .send()
        .await
        .unwrap();
    assert_eq!(logout.status(), 401);
    let refreshed = s
        .http
        .post(s.url("/auth/session"))
        .json(&json!({"refreshToken": refresh}))
        .send()
        .await
        .unwrap();
    assert_eq!(refreshed.status(), 416);
}

async fn only_your_own_live_sessions_can_be_revoked(db: TestDb) {
    let s = TestServer::start(db).await;
    users(&s).await;
    let (alice, alice_id) = basic_login_as(&s, ALICE, "a").await;
    let (bob, bob_id) = basic_login_as(&s, BOB, "b").await;
    assert_nest_error(
        delete(&s, &format!("/sessions/{bob_id}"), &alice).await,
        403,
    )
    .await;
    assert_nest_error(
        delete(&s, &format!("/sessions/{}", uuid::Uuid::new_v4()), &alice).await,
        404,
    )
    .await;
    assert_nest_error(delete(&s, "/sessions/not-a-uuid", &alice).await, 404).await;
    // Bob's session survived Alice's attempt.
    assert_eq!(get(&s, "/sessions/count", &bob).await.status(), 200);
    let (alice2, alice2_id) = basic_login_as(&s, ALICE, "a2").await;
    assert_eq!(
        delete(&s, &format!("/sessions/{alice2_id}"), &alice)
            .await
            .status(),
        200
    );
    assert_nest_error(
        delete(&s, &format!("/sessions/{alice2_id}"), &alice).await,
        404,
    )
    .await;
    assert_nest_error(get(&s, "/sessions", &alice2).await, 401).await;
    // Revoking your own current session works too, and ends it.
    assert_eq!(
        delete(&s, &format!("/sessions/{alice_id}"), &alice)
            .await
            .status(),
        200
    );
    assert_nest_error(get(&s, "/sessions", &alice).await, 401).await;
}

async fn revoking_all_sessions_logs_out_every_device_including_this_one(db: TestDb) {
    let s = TestServer::start(db).await;
    users(&s).await;
    let (a1, _) = basic_login_as(&s, ALICE, "1").await;
    let (a2, _) = basic_login_as(&s, ALICE, "2").await;
    let (jwt, _) = scram_login(&s, ALICE, PASSWORD, json!({})).await;
    let (bob, _) = basic_login_as(&s, BOB, "b").await;
    let r: Value = delete(&s, "/sessions", &a1).await.json().await.unwrap();
    assert_eq!(
        r,
        json!({"success": true, "message": "Logged out from 3 device(s)", "revokedCount": 3})
    );
    for token in [&a1, &a2, &jwt] {
        assert_nest_error(get(&s, "/sessions/count", token).await, 401).await;
    }
    let bobs: Value = get(&s, "/sessions/count", &bob).await.json().await.unwrap();
    assert_eq!(bobs["count"], 1);
}

async fn validation_tells_active_sessions_from_all_others(db: TestDb) {
    let s = TestServer::start(db).await;
    users(&s).await;
    let (alice, alice_id) = basic_login_as(&s, ALICE, "a").await;
    let (_, bob_id) = basic_login_as(&s, BOB, "b").await;
    let (_, gone_id) = basic_login_as(&s, ALICE, "gone").await;
    delete(&s, &format!("/sessions/{gone_id}"), &alice).await;
    let check = |id: String| {
        let s = &s;
        let alice = &alice;
        async move {
            get(s, &format!("/sessions/validate/{id}"), alice)
                .await
                .json::<Value>()
                .await
                .unwrap()
        }
    };
    let active = json!({"valid": true, "message": "Session is active"});
    // The id is percent-decoded, as a path parameter is (here: its hyphens).
    assert_eq!(check(alice_id.replace('-', "%2D")).await, active);
    assert_eq!(check(alice_id).await, active);
    let invalid =
        json!({"valid": false, "message": "Session is expired, revoked, or does not exist"});
    assert_eq!(check(bob_id).await, invalid);
    assert_eq!(check(gone_id).await, invalid);
    assert_eq!(check(uuid::Uuid::new_v4().to_string()).await, invalid);
    assert_eq!(check("garbage".into()).await, invalid);
    assert_eq!(check("%FF".into()).await, invalid);
}

/// The server's core asked whether the caller `bearer` may validate session `id`, first as the
/// handler asks (`None`: the caller is refused), then as the route's answer from memory asks
/// (`None`: memory does not settle it). Both within one poll of this task, so the sync check
/// reads the per-thread front of the id cache that the async one just filled, as on a worker.
async fn decided_and_settled(
    s: &TestServer,
    bearer: &str,
    id: &str,
) -> (Option<bool>, Option<bool>) {
    let (core, bearer, id) = (
        &s.core,
        bearer.as_bytes(),
        uuid::Uuid::parse_str(id).unwrap(),
    );
    let decided = match core.authenticate_bearer(bearer).await {
        Ok(caller) => Some(core.validate_session(caller, id).await.unwrap()),
        Err(_) => None,
    };
    let settled = core
        .authenticate_bearer_now(bearer)
        .and_then(|caller| core.validate_session_now(caller, id));
    (decided, settled)
}

/// Once the caller's session and the one validated are cached, validation is answered from
/// memory (the route's answer made in the request's call): over HTTP, and asked of the core
/// directly, each answer memory gives must be the one the handler gives, and memory must leave
/// alone what it does not settle.
async fn validations_answered_from_memory_agree_with_the_store(db: TestDb) {
    let s = TestServer::start(db).await;
    users(&s).await;
    let (jwt, b) = scram_login(&s, ALICE, PASSWORD, json!({})).await;
    let jwt_id = b["deviceId"].as_str().unwrap().to_owned();
    let (other, other_id) = basic_login_as(&s, ALICE, "other").await;
    let (spare, _) = basic_login_as(&s, ALICE, "spare").await;
    let (bob, bob_id) = basic_login_as(&s, BOB, "b").await;
    let valid = |id: String, bearer: String| {
        let s = &s;
        async move {
            let r = get(s, &format!("/sessions/validate/{id}"), &bearer).await;
            assert_eq!(r.status(), 200);
            r.json::<Value>().await.unwrap()["valid"].clone()
        }
    };
    // Each checked once: cached from then on.
    for token in [&jwt, &other, &spare, &bob] {
        assert_eq!(get(&s, "/sessions/count", token).await.status(), 200);
    }
    for _ in 0..2 {
        assert_eq!(valid(jwt_id.clone(), jwt.clone()).await, true);
        assert_eq!(valid(other_id.clone(), jwt.clone()).await, true);
        // Another user's session, cached and active: not the caller's to validate.
        assert_eq!(valid(bob_id.clone(), jwt.clone()).await, false);
        assert_eq!(valid(jwt_id.clone(), bob.clone()).await, false);
    }
    let (yes, no) = ((Some(true), Some(true)), (Some(false), Some(false)));
    assert_eq!(decided_and_settled(&s, &jwt, &jwt_id).await, yes);
    assert_eq!(decided_and_settled(&s, &jwt, &other_id).await, yes);
    assert_eq!(decided_and_settled(&s, &other, &jwt_id).await, yes);
    assert_eq!(decided_and_settled(&s, &jwt, &bob_id).await, no);
    assert_eq!(decided_and_settled(&s, &bob, &jwt_id).await, no);
    let other_uuid = uuid::Uuid::parse_str(&other_id).unwrap();
    assert_eq!(s.core.keepalive_now(&other), Some(other_uuid));
    // Revoked: gone from memory at once.
    delete(&s, &format!("/sessions/{other_id}"), &other).await;
    assert_eq!(valid(other_id.clone(), jwt.clone()).await, false);
    assert_eq!(
        decided_and_settled(&s, &jwt, &other_id).await,
        (Some(false), None)
    );
    assert_eq!(decided_and_settled(&s, &other, &jwt_id).await, (None, None));
    assert_eq!(s.core.keepalive_now(&other), None);
    assert_nest_error(
        get(&s, &format!("/sessions/validate/{other_id}"), &other).await,
        401,
    )
    .await;
    // A JWT verified before, past its expiry while its session lives on: refused.
    s.clock.advance(500);
    assert_eq!(valid(jwt_id.clone(), jwt.clone()).await, true);
    assert_eq!(valid(jwt_id.clone(), spare.clone()).await, true);
    s.clock.advance(401);
    assert_nest_error(
        get(&s, &format!("/sessions/validate/{jwt_id}"), &jwt).await,
        401,
    )
    .await;
    assert_eq!(decided_and_settled(&s, &jwt, &jwt_id).await, (None, None));
    assert_eq!(valid(jwt_id.clone(), spare.clone()).await, true);
    assert_eq!(decided_and_settled(&s, &spare, &jwt_id).await, yes);
    // Idle past its timeout in memory: refused (bob was last active at 0).
    assert_nest_error(
        get(&s, &format!("/sessions/validate/{bob_id}"), &bob).await,
        401,
    )
    .await;
}

async fn anything_but_a_live_bearer_credential_is_unauthorized(db: TestDb) {
    let s = TestServer::start(db).await;
    users(&s).await;
    let (token, _) = basic_login_as(&s, ALICE, "a").await;
    let no_header = s.http.get(s.url("/sessions")).send().await.unwrap();
    let body = assert_nest_error(no_header, 401).await;
    assert_eq!(body["error"], "Unauthorized");
    let basic = s
        .http
        .get(s.url("/sessions"))
        .basic_auth(ALICE, Some(PASSWORD))
        .send()
        .await
        .unwrap();
    assert_nest_error(basic, 401).await;
    for bearer in [
        "garbage",
        "a.b.c",
        "eyJhbGciOiJub25lIn0.e30.",
        &"x".repeat(5000),
    ] {
        assert_nest_error(get(&s, "/sessions", bearer).await, 401).await;
    }
    // An expired session token.
    s.clock.advance(901);
    assert_nest_error(get(&s, "/sessions", &token).await, 401).await;
}

async fn sessions_still_logging_in_are_neither_listed_nor_credentials(db: TestDb) {
    let s = TestServer::start(db).await;
    users(&s).await;
    s.set_pin(ALICE, "4711").await;
    let token = auth_token(&s.basic_login(ALICE, PASSWORD).await);
    // Pending MFA: not a credential yet.
    assert_nest_error(get(&s, "/sessions", &token).await, 401).await;
    let r = s
        .http
        .post(s.url("/session/login"))
        .header("X-Auth-Token", &token)
        .json(&json!({"auth_type": "PIN", "code": "4711"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // A second login left pending MFA is not listed.
    assert_eq!(s.basic_login(ALICE, PASSWORD).await.status(), 207);
    let list: Value = get(&s, "/sessions", &token).await.json().await.unwrap();
    assert_eq!(list["total"], 1);
    assert_eq!(list["sessions"].as_array().unwrap().len(), 1);
}
