//! latchkey's own admin API: root keys only, and what it creates works in the families.

use serde_json::{json, Value};

use crate::support::db::{both_backends, TestDb};
use crate::support::server::{auth_token, TestServer};

both_backends!(
    only_root_keys_may_administer,
    servers_keys_and_permissions_made_here_work_in_nextauth,
    users_and_credentials_made_here_work_in_quatrix
);

fn admin(
    s: &TestServer,
    method: reqwest::Method,
    path: &str,
    key: &str,
) -> reqwest::RequestBuilder {
    s.http
        .request(method, s.url(&format!("/admin{path}")))
        .header("X-apikey", key.to_owned())
}

async fn only_root_keys_may_administer(db: TestDb) {
    let s = TestServer::start(db).await;
    let created: Value = admin(&s, reqwest::Method::POST, "/apikeys", &s.api_key)
        .json(&json!({"role": "site"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let site_key = created["apikey"].as_str().unwrap();
    assert_eq!(created["role"], "site");
    let r = admin(&s, reqwest::Method::GET, "/servers", site_key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"], "forbidden");
    let r = admin(&s, reqwest::Method::GET, "/servers", "nope")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = s.http.get(s.url("/admin/servers")).send().await.unwrap();
    assert_eq!(r.status(), 401);
    for role in ["", "has space", &"r".repeat(65)] {
        let r = admin(&s, reqwest::Method::POST, "/apikeys", &s.api_key)
            .json(&json!({"role": role}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{role:?}");
    }
    // A second root key made here is root too.
    let root2: Value = admin(&s, reqwest::Method::POST, "/apikeys", &s.api_key)
        .json(&json!({"role": "root"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let r = admin(
        &s,
        reqwest::Method::GET,
        "/servers",
        root2["apikey"].as_str().unwrap(),
    )
    .send()
    .await
    .unwrap();
    assert_eq!(r.status(), 200);
}

async fn servers_keys_and_permissions_made_here_work_in_nextauth(db: TestDb) {
    let s = TestServer::start(db).await;
    let r = admin(&s, reqwest::Method::POST, "/servers", &s.api_key)
        .json(&json!({"name": "shop"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let shop: Value = r.json().await.unwrap();
    let shop_id = shop["serverid"].as_str().unwrap();
    assert_eq!(shop["publickey"].as_str().unwrap().len(), 43);
    let all: Value = admin(&s, reqwest::Method::GET, "/servers", &s.api_key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(all.as_array().unwrap().len(), 2);

    let key: Value = admin(&s, reqwest::Method::POST, "/apikeys", &s.api_key)
        .json(&json!({"role": "shop-site"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let key = key["apikey"].as_str().unwrap();
    let status = |server: String| {
        s.http
            .get(s.url(&format!("/servers/{server}/sessions/")))
            .header("X-apikey", key)
            .header("X-nonce", "c29tZS1icm93c2VyLW5vbmNl")
            .send()
    };
    assert_eq!(status(shop_id.to_owned()).await.unwrap().status(), 403);
    let r = admin(
        &s,
        reqwest::Method::PUT,
        &format!("/servers/{shop_id}/permissions/shop-site"),
        &s.api_key,
    )
    .json(&json!({"sessions": true}))
    .send()
    .await
    .unwrap();
    assert_eq!(
        r.json::<Value>().await.unwrap(),
        json!({"sessions": true, "accounts": false, "users": false, "servers": false})
    );
    assert_eq!(status(shop_id.to_owned()).await.unwrap().status(), 200);
    // Only on that server.
    assert_eq!(status(s.server_id.to_string()).await.unwrap().status(), 403);
    let r = admin(
        &s,
        reqwest::Method::PUT,
        &format!("/servers/{shop_id}/permissions/ghost"),
        &s.api_key,
    )
    .json(&json!({"sessions": true}))
    .send()
    .await
    .unwrap();
    assert_eq!(r.status(), 404);
    let r = admin(
        &s,
        reqwest::Method::PUT,
        "/servers/AAAAAAAAAAAAAAAAAAAAAA/permissions/shop-site",
        &s.api_key,
    )
    .json(&json!({}))
    .send()
    .await
    .unwrap();
    assert_eq!(r.status(), 404);

    let jwks = |s: &TestServer| s.http.get(s.url("/.well-known/jwks.json")).send();
    let before: Value = jwks(&s).await.unwrap().json().await.unwrap();
    let rotated: Value = admin(
        &s,
        reqwest::Method::POST,
        "/signing-keys/rotate",
        &s.api_key,
    )
    .send()
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    let after: Value = jwks(&s).await.unwrap().json().await.unwrap();
    assert_eq!(
        after["keys"].as_array().unwrap().len(),
        before["keys"].as_array().unwrap().len() + 1
    );
    let kids: Vec<&Value> = after["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| &k["kid"])
        .collect();
    assert!(kids.contains(&&rotated["kid"]), "{kids:?}");
}

async fn users_and_credentials_made_here_work_in_quatrix(db: TestDb) {
    let s = TestServer::start(db).await;
    let sid = s.server_id.to_string();
    let r = admin(
        &s,
        reqwest::Method::POST,
        &format!("/servers/{sid}/users"),
        &s.api_key,
    )
    .json(&json!({"userid": "dora@example.com", "password": "first password"}))
    .send()
    .await
    .unwrap();
    assert_eq!(r.status(), 201);
    let again = admin(
        &s,
        reqwest::Method::POST,
        &format!("/servers/{sid}/users"),
        &s.api_key,
    )
    .json(&json!({"userid": "dora@example.com"}))
    .send()
    .await
    .unwrap();
    assert_eq!(again.status(), 409);
    let bad = admin(
        &s,
        reqwest::Method::POST,
        &format!("/servers/{sid}/users"),
        &s.api_key,
    )
    .json(&json!({"userid": "a:b"}))
    .send()
    .await
    .unwrap();
    assert_eq!(bad.status(), 400);
    assert_eq!(
        s.basic_login("dora@example.com", "first password")
            .await
            .status(),
        200
    );

    let r = admin(
        &s,
        reqwest::Method::PUT,
        &format!("/servers/{sid}/users/dora@example.com/password"),
        &s.api_key,
    )
    .json(&json!({"password": "second password"}))
    .send()
    .await
    .unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(
        s.basic_login("dora@example.com", "first password")
            .await
            .status(),
        401
    );
    assert_eq!(
        s.basic_login("dora@example.com", "second password")
            .await
            .status(),
        200
    );

    let totp: Value = admin(
        &s,
        reqwest::Method::POST,
        &format!("/servers/{sid}/users/dora@example.com/totp"),
        &s.api_key,
    )
    .send()
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    assert!(totp["otpauth"]
        .as_str()
        .unwrap()
        .starts_with("otpauth://totp/"));
    assert!(totp["otpauth"]
        .as_str()
        .unwrap()
        .contains(totp["secret"].as_str().unwrap()));
    let r = s.basic_login("dora@example.com", "second password").await;
    assert_eq!(r.status(), 207);
    assert_eq!(r.headers()["mfa-code"], "1");

    let r = admin(
        &s,
        reqwest::Method::PUT,
        &format!("/servers/{sid}/users/dora@example.com/pin"),
        &s.api_key,
    )
    .json(&json!({"pin": "12"}))
    .send()
    .await
    .unwrap();
    assert_eq!(r.status(), 400);
    let r = admin(
        &s,
        reqwest::Method::PUT,
        &format!("/servers/{sid}/users/nobody/pin"),
        &s.api_key,
    )
    .json(&json!({"pin": "1234"}))
    .send()
    .await
    .unwrap();
    assert_eq!(r.status(), 404);

    // Deleting a user ends its sessions at once.
    admin(
        &s,
        reqwest::Method::POST,
        &format!("/servers/{sid}/users"),
        &s.api_key,
    )
    .json(&json!({"userid": "eve", "password": "eve password"}))
    .send()
    .await
    .unwrap();
    let token = auth_token(&s.basic_login("eve", "eve password").await);
    let r = admin(
        &s,
        reqwest::Method::DELETE,
        &format!("/servers/{sid}/users/eve"),
        &s.api_key,
    )
    .send()
    .await
    .unwrap();
    assert_eq!(r.status(), 204);
    let keep = s
        .http
        .get(s.url("/session/keepalive"))
        .header("X-Auth-Token", &token)
        .send()
        .await
        .unwrap();
    assert_eq!(keep.status(), 401);
    assert_eq!(s.basic_login("eve", "eve password").await.status(), 401);
    let r = admin(
        &s,
        reqwest::Method::DELETE,
        &format!("/servers/{sid}/users/eve"),
        &s.api_key,
    )
    .send()
    .await
    .unwrap();
    assert_eq!(r.status(), 404);
}
