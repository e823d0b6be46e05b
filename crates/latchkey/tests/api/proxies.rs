//! Client addresses behind reverse proxies (`trusted_proxies`), over HTTP against the real
//! server: forwarding headers count only from a trusted peer, and then from the right.

use latchkey_core::crypto::qr::QrPayload;
use latchkey_http::proxies::TrustedProxies;
use latchkey_http::HttpOptions;
use serde_json::Value;

use crate::support::db::{both_backends, TestDb};
use crate::support::server::{auth_token, test_settings, TestServer};

const ALICE: &str = "alice@example.com";
const PASSWORD: &str = "correct horse battery staple";

both_backends!(
    a_spoofed_forwarded_for_from_an_untrusted_peer_is_ignored,
    through_a_trusted_proxy_the_rightmost_untrusted_address_is_the_client,
    a_trusted_proxys_scheme_and_host_make_the_public_url
);

async fn start(db: TestDb, trusted: &[&str]) -> TestServer {
    let http = HttpOptions {
        trusted_proxies: TrustedProxies::parse(trusted).unwrap(),
        ..HttpOptions::default()
    };
    let s = TestServer::start_with_http(db, test_settings(), http).await;
    s.add_user(ALICE, PASSWORD).await;
    s
}

/// Logs in with the given forwarding headers; answers the address family C shows.
async fn address_seen(s: &TestServer, headers: &[(&str, &str)]) -> String {
    let mut login = s
        .http
        .get(s.url("/session/login"))
        .basic_auth(ALICE, Some(PASSWORD));
    for (name, value) in headers {
        login = login.header(*name, *value);
    }
    let r = login.send().await.unwrap();
    assert_eq!(r.status(), 200);
    let token = auth_token(&r);
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
    let current = list["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["isCurrent"] == true)
        .unwrap()
        .clone();
    current["ipAddress"].as_str().unwrap().to_owned()
}

async fn a_spoofed_forwarded_for_from_an_untrusted_peer_is_ignored(db: TestDb) {
    // The test client is 127.0.0.1; only 10.0.0.0/8 is trusted.
    let s = start(db, &["10.0.0.0/8"]).await;
    let seen = address_seen(&s, &[("X-Forwarded-For", "6.6.6.6")]).await;
    assert_eq!(seen, "127.0.0.1");
    let seen = address_seen(&s, &[("Forwarded", "for=6.6.6.6")]).await;
    assert_eq!(seen, "127.0.0.1");
}

async fn through_a_trusted_proxy_the_rightmost_untrusted_address_is_the_client(db: TestDb) {
    let s = start(db, &["127.0.0.1", "10.0.0.0/8"]).await;
    // The client wrote 6.6.6.6; the edge proxy appended 203.0.113.7, an inner one 10.1.1.1.
    let seen = address_seen(&s, &[("X-Forwarded-For", "6.6.6.6, 203.0.113.7, 10.1.1.1")]).await;
    assert_eq!(seen, "203.0.113.7");
    let seen = address_seen(
        &s,
        &[("Forwarded", "for=6.6.6.6, for=\"[2001:db8::5]:443\"")],
    )
    .await;
    assert_eq!(seen, "2001:db8::5");
}

async fn a_trusted_proxys_scheme_and_host_make_the_public_url(db: TestDb) {
    let qr = |s: &TestServer, proto: &'static str| {
        s.http
            .get(s.url(&format!("/servers/{}/sessions/qr/login", s.server_id)))
            .header("X-apikey", &s.api_key)
            .header("X-nonce", "bm9uY2Utb2YtYS1icm93c2Vy")
            .header("X-Forwarded-Proto", proto)
            .header("X-Forwarded-Host", "auth.example.com")
    };
    let trusted = start(db, &["127.0.0.1"]).await;
    let payload = qr(&trusted, "https")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(
        QrPayload::parse(&payload).unwrap().base_url,
        "https://auth.example.com"
    );
}
