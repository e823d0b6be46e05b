//! The sign-in pages driven in Debian's Chromium over WebDriver (chromedriver, started per test
//! on a free port): what a person does, clicked and typed, with a screenshot of each page at a
//! phone's and a desktop's width saved to `target/screenshots/` (`LATCHKEY_SCREENSHOTS` to put
//! them elsewhere). Ignored without Chromium: `.ci/run` installs `chromium` and
//! `chromium-driver` and runs them (`cargo test -- --ignored in_chromium`).

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use latchkey_core::Settings;
use latchkey_http::HttpOptions;
use serde_json::json;

use crate::support::db::{Backend, TestDb};
use crate::support::server::{auth_token, test_settings, TestServer};

const ALICE: &str = "alice@example.com";
const PASSWORD: &str = "correct horse battery staple";
const ANSWER: &str = "k3w9xp";

/// chromedriver and one headless Chromium session; both end on drop.
struct Chromium {
    client: Client,
    driver: Child,
}

impl Chromium {
    async fn start() -> Chromium {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver (Debian's chromium-driver) on the PATH");
        let capabilities = json!({
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": "/usr/bin/chromium",
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                         "--disable-dev-shm-usage", "--window-size=1280,900"],
            },
        });
        let capabilities = capabilities.as_object().unwrap().clone();
        let url = format!("http://127.0.0.1:{port}");
        let mut last = None;
        for _ in 0..100 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            match ClientBuilder::new(HttpConnector::new())
                .capabilities(capabilities.clone())
                .connect(&url)
                .await
            {
                Ok(client) => return Chromium { client, driver },
                Err(e) => last = Some(e),
            }
        }
        panic!("no WebDriver session: {last:?}");
    }

    async fn open(&self, url: &str) {
        self.client.goto(url).await.unwrap();
    }

    async fn fill(&self, id: &str, text: &str) {
        let field = self.client.find(Locator::Id(id)).await.unwrap();
        field.clear().await.unwrap();
        field.send_keys(text).await.unwrap();
    }

    /// Submits the page's form and waits until the next page has replaced this one.
    async fn submit(&self) {
        let page = self.client.find(Locator::Css("main")).await.unwrap();
        self.client
            .find(Locator::Css("main form button[type=submit]"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        Self::until_gone(page).await;
    }

    /// Waits until `element` left the page (its page was navigated away from).
    async fn until_gone(element: fantoccini::elements::Element) {
        for _ in 0..100 {
            if element.text().await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the page did not change");
    }

    async fn path(&self) -> String {
        self.client.current_url().await.unwrap().path().to_owned()
    }

    async fn text(&self) -> String {
        self.client
            .find(Locator::Css("main"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// Saves this page at a phone's width and at a desktop's, as `<name>-phone.png` and
    /// `<name>-desktop.png`.
    async fn screenshots(&self, name: &str) {
        let dir = std::env::var_os("LATCHKEY_SCREENSHOTS")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/screenshots")
            });
        std::fs::create_dir_all(&dir).unwrap();
        for (width, height, label) in [(390, 844, "phone"), (1280, 900, "desktop")] {
            self.client.set_window_size(width, height).await.unwrap();
            let png = self.client.screenshot().await.unwrap();
            assert!(png.starts_with(b"\x89PNG"));
            std::fs::write(dir.join(format!("{name}-{label}.png")), png).unwrap();
        }
    }

    async fn session_cookie(&self) -> Option<String> {
        self.client
            .get_all_cookies()
            .await
            .unwrap()
            .into_iter()
            .find(|c| c.name() == "latchkey_session")
            .map(|c| c.value().to_owned())
    }
}

impl Drop for Chromium {
    fn drop(&mut self) {
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

async fn server(settings: Settings, http: HttpOptions) -> TestServer {
    let db = TestDb::new(Backend::Sqlite).await.unwrap();
    let s = TestServer::start_with_http(db, settings, http).await;
    s.add_user(ALICE, PASSWORD).await;
    s
}

async fn keeps_alive(s: &TestServer, token: &str) -> bool {
    s.http
        .get(s.url("/session/keepalive"))
        .header("X-Auth-Token", token)
        .send()
        .await
        .unwrap()
        .status()
        == 200
}

#[tokio::test]
#[ignore = "needs Debian's chromium and chromium-driver (.ci/run installs them): cargo test -- --ignored in_chromium"]
async fn password_sign_in_then_revoking_another_session_in_chromium() {
    let s = server(test_settings(), HttpOptions::default()).await;
    let browser = Chromium::start().await;
    browser.open(&s.url("/login")).await;
    browser.screenshots("login").await;
    browser.fill("username", ALICE).await;
    browser.fill("password", "not the password").await;
    browser.submit().await;
    assert!(browser
        .text()
        .await
        .contains("The user name or password is wrong"));
    browser.screenshots("login-error").await;
    // The typed name is kept; the password is asked again.
    browser.fill("password", PASSWORD).await;
    browser.submit().await;
    assert_eq!(browser.path().await, "/account");
    assert!(browser.text().await.contains(ALICE));

    // Another device signs in (family D); the account page shows it and revokes it.
    let other = s.basic_login(ALICE, PASSWORD).await;
    let other_token = auth_token(&other);
    assert!(keeps_alive(&s, &other_token).await);
    browser.open(&s.url("/account")).await;
    browser.screenshots("account").await;
    let rows = browser
        .client
        .find_all(Locator::Css("tbody tr"))
        .await
        .unwrap();
    assert_eq!(rows.len(), 2);
    let revoke = browser
        .client
        .find(Locator::Css("tbody tr:not(.current) button"))
        .await
        .unwrap();
    let page = browser.client.find(Locator::Css("main")).await.unwrap();
    revoke.click().await.unwrap();
    Chromium::until_gone(page).await;
    assert_eq!(browser.path().await, "/account");
    assert!(!keeps_alive(&s, &other_token).await, "revoked at once");
    let rows = browser
        .client
        .find_all(Locator::Css("tbody tr"))
        .await
        .unwrap();
    assert_eq!(rows.len(), 1);
    let own = browser.session_cookie().await.unwrap();
    assert!(
        keeps_alive(&s, &own).await,
        "this browser's session lives on"
    );
}

#[tokio::test]
#[ignore = "needs Debian's chromium and chromium-driver (.ci/run installs them): cargo test -- --ignored in_chromium"]
async fn password_and_totp_sign_in_in_chromium() {
    let s = server(test_settings(), HttpOptions::default()).await;
    let secret = s.enable_totp(ALICE).await;
    let browser = Chromium::start().await;
    browser.open(&s.url("/login")).await;
    browser.fill("username", ALICE).await;
    browser.fill("password", PASSWORD).await;
    browser.submit().await;
    assert!(browser.text().await.contains("authenticator app"));
    browser.screenshots("code").await;
    browser.fill("code", "000000").await;
    browser.submit().await;
    assert!(browser.text().await.contains("That code is wrong"));
    browser.fill("code", &s.totp_code(&secret)).await;
    browser.submit().await;
    assert_eq!(browser.path().await, "/account");
}

#[tokio::test]
#[ignore = "needs Debian's chromium and chromium-driver (.ci/run installs them): cargo test -- --ignored in_chromium"]
async fn the_captcha_path_in_chromium() {
    let settings = Settings {
        captcha_test_answer: Some(ANSWER.into()),
        ..test_settings()
    };
    let s = server(settings, HttpOptions::default()).await;
    let browser = Chromium::start().await;
    browser.open(&s.url("/login")).await;
    for _ in 0..5 {
        browser.fill("username", ALICE).await;
        browser.fill("password", "wrong").await;
        browser.submit().await;
    }
    browser.fill("username", ALICE).await;
    browser.fill("password", PASSWORD).await;
    browser.submit().await;
    assert!(browser.text().await.contains("Type the characters"));
    let loaded = browser
        .client
        .execute(
            "return document.querySelector('main img').naturalWidth",
            vec![],
        )
        .await
        .unwrap();
    assert!(loaded.as_u64().unwrap_or(0) > 0, "the CAPTCHA image loaded");
    browser.screenshots("captcha").await;
    browser.fill("answer", ANSWER).await;
    browser.submit().await;
    assert_eq!(browser.path().await, "/account");
}

#[tokio::test]
#[ignore = "needs Debian's chromium and chromium-driver (.ci/run installs them): cargo test -- --ignored in_chromium"]
async fn return_to_allowed_and_refused_and_a_form_without_csrf_in_chromium() {
    // The allowed origin is a page the test serves, so Chromium really lands there.
    let landing = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let origin = format!("http://127.0.0.1:{}", landing.local_addr().unwrap().port());
    tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        while let Ok((mut stream, _)) = landing.accept().await {
            let mut buf = [0u8; 4096];
            let _ = stream.read(&mut buf).await;
            let body = "<!doctype html><title>app</title><main>the app</main>";
            let answer = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.write_all(answer.as_bytes()).await;
        }
    });
    let http = HttpOptions {
        allowed_return_origins: vec![origin.clone()],
        ..HttpOptions::default()
    };
    let s = server(test_settings(), http).await;
    let browser = Chromium::start().await;

    // A form whose CSRF field was removed is refused, and nothing is signed in.
    browser.open(&s.url("/login")).await;
    browser
        .client
        .execute(
            "document.querySelector('input[name=csrf]').remove()",
            vec![],
        )
        .await
        .unwrap();
    browser.fill("username", ALICE).await;
    browser.fill("password", PASSWORD).await;
    browser.submit().await;
    assert!(browser.text().await.contains("This form has expired"));
    assert!(browser.session_cookie().await.is_none());

    let refused =
        url::form_urlencoded::byte_serialize(b"https://evil.example/steal").collect::<String>();
    browser
        .open(&s.url(&format!("/login?return_to={refused}")))
        .await;
    browser.fill("username", ALICE).await;
    browser.fill("password", PASSWORD).await;
    browser.submit().await;
    assert_eq!(browser.path().await, "/account");

    let allowed = format!("{origin}/orders");
    let allowed_q = url::form_urlencoded::byte_serialize(allowed.as_bytes()).collect::<String>();
    browser
        .open(&s.url(&format!("/login?return_to={allowed_q}")))
        .await;
    // Signed in already: straight on to the application.
    assert_eq!(
        browser.client.current_url().await.unwrap().as_str(),
        allowed
    );
    assert!(browser.text().await.contains("the app"));

    // A fresh browser: the sign-in form's redirect reaches the application (the page's
    // form-action allows the listed origins, which Chromium holds a form's redirect to).
    let fresh = Chromium::start().await;
    fresh
        .open(&s.url(&format!("/login?return_to={allowed_q}")))
        .await;
    fresh.fill("username", ALICE).await;
    fresh.fill("password", PASSWORD).await;
    fresh.submit().await;
    assert_eq!(fresh.client.current_url().await.unwrap().as_str(), allowed);
    assert!(fresh.text().await.contains("the app"));
}

#[tokio::test]
#[ignore = "needs Debian's chromium and chromium-driver (.ci/run installs them): cargo test -- --ignored in_chromium"]
async fn totp_enrolled_from_the_account_page_in_chromium() {
    let s = server(test_settings(), HttpOptions::default()).await;
    let browser = Chromium::start().await;
    browser.open(&s.url("/login")).await;
    browser.fill("username", ALICE).await;
    browser.fill("password", PASSWORD).await;
    browser.submit().await;
    assert_eq!(browser.path().await, "/account");
    browser.screenshots("account-factors").await;
    let page = browser.client.find(Locator::Css("main")).await.unwrap();
    browser
        .client
        .find(Locator::Css("form[action='/account/totp/start'] button"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    Chromium::until_gone(page).await;
    browser.client.set_window_size(1280, 900).await.unwrap();
    // The QR code as Chromium drew it, read by rqrr (an independent decoder).
    let png = browser
        .client
        .find(Locator::Css("figure.qr"))
        .await
        .unwrap()
        .screenshot()
        .await
        .unwrap();
    let uri = decode_qr(&png);
    assert!(uri.starts_with("otpauth://totp/"), "{uri}");
    let shown = browser
        .client
        .find(Locator::Id("totp-secret"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(uri.contains(&format!("secret={shown}")), "{uri} vs {shown}");
    browser.screenshots("totp-setup").await;
    let totp = totp_rs::TOTP::from_url(&uri).unwrap();
    browser.fill("current", PASSWORD).await;
    browser.fill("code", &s.totp_code(&totp.secret)).await;
    browser.submit().await;
    assert_eq!(browser.path().await, "/account");
    assert!(browser
        .text()
        .await
        .contains("Your authenticator app is set up"));

    // The next sign-in asks for the code.
    let other = Chromium::start().await;
    other.open(&s.url("/login")).await;
    other.fill("username", ALICE).await;
    other.fill("password", PASSWORD).await;
    other.submit().await;
    assert!(other.text().await.contains("authenticator app"));
    s.clock.advance(30);
    other.fill("code", &s.totp_code(&totp.secret)).await;
    other.submit().await;
    assert_eq!(other.path().await, "/account");
}

/// A command of WebDriver's WebAuthn extension (WebAuthn Level 2, §11): virtual authenticators
/// inside Chromium, and the credentials they hold.
#[derive(Debug)]
struct WebAuthnCommand {
    method: reqwest::Method,
    /// Under `session/{id}/webauthn/`.
    path: String,
    body: Option<serde_json::Value>,
}

impl fantoccini::wd::WebDriverCompatibleCommand for WebAuthnCommand {
    fn endpoint(
        &self,
        base_url: &url::Url,
        session_id: Option<&str>,
    ) -> Result<url::Url, url::ParseError> {
        base_url.join(&format!(
            "session/{}/webauthn/{}",
            session_id.unwrap_or_default(),
            self.path
        ))
    }

    fn method_and_body(&self, _: &url::Url) -> (reqwest::Method, Option<String>) {
        (
            self.method.clone(),
            self.body.as_ref().map(|b| b.to_string()),
        )
    }
}

impl Chromium {
    /// Adds a CTAP2 platform authenticator that keeps discoverable credentials and verifies
    /// its user at once; answers its id.
    async fn add_virtual_authenticator(&self) -> String {
        let added = self
            .client
            .issue_cmd(WebAuthnCommand {
                method: reqwest::Method::POST,
                path: "authenticator".into(),
                body: Some(json!({
                    "protocol": "ctap2",
                    "transport": "internal",
                    "hasResidentKey": true,
                    "hasUserVerification": true,
                    "isUserVerified": true,
                    "automaticPresenceSimulation": true,
                })),
            })
            .await
            .unwrap();
        added.as_str().unwrap().to_owned()
    }

    /// The credentials a virtual authenticator holds (private keys included).
    async fn credentials(&self, authenticator: &str) -> Vec<serde_json::Value> {
        let listed = self
            .client
            .issue_cmd(WebAuthnCommand {
                method: reqwest::Method::GET,
                path: format!("authenticator/{authenticator}/credentials"),
                body: None,
            })
            .await
            .unwrap();
        listed.as_array().unwrap().clone()
    }

    async fn add_credential(&self, authenticator: &str, credential: serde_json::Value) {
        self.client
            .issue_cmd(WebAuthnCommand {
                method: reqwest::Method::POST,
                path: format!("authenticator/{authenticator}/credential"),
                body: Some(credential),
            })
            .await
            .unwrap();
    }

    async fn click(&self, css: &str) {
        let page = self.client.find(Locator::Css("main")).await.unwrap();
        self.client
            .find(Locator::Css(css))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        Self::until_gone(page).await;
    }

    /// Clicks the passkey button once the page's script has shown it.
    async fn use_passkey(&self) {
        let button = self
            .client
            .wait()
            .for_element(Locator::Css("button[data-passkey-start]:not([hidden])"))
            .await
            .unwrap();
        let page = self.client.find(Locator::Css("main")).await.unwrap();
        button.click().await.unwrap();
        Self::until_gone(page).await;
    }

    /// Waits until the browser is at `path` (by itself: a script posted a form).
    async fn until_at(&self, path: &str) {
        for _ in 0..200 {
            if self.path().await == path {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the browser stayed at {}", self.path().await);
    }
}

async fn amr_of(s: &TestServer, token: &str) -> String {
    let checked = s
        .http
        .get(s.url("/forward-auth"))
        .header("Cookie", format!("latchkey_session={token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(checked.status(), 200);
    checked.headers()["remote-amr"].to_str().unwrap().to_owned()
}

#[tokio::test]
#[ignore = "needs Debian's chromium and chromium-driver (.ci/run installs them): cargo test -- --ignored in_chromium"]
async fn a_passkey_added_from_the_account_page_signs_in_without_a_name_in_chromium() {
    let db = TestDb::new(Backend::Sqlite).await.unwrap();
    let s = TestServer::start_at_localhost(db, test_settings(), HttpOptions::default()).await;
    s.add_user(ALICE, PASSWORD).await;
    let browser = Chromium::start().await;
    let authenticator = browser.add_virtual_authenticator().await;
    browser.open(&s.url("/login")).await;
    browser.fill("username", ALICE).await;
    browser.fill("password", PASSWORD).await;
    browser.submit().await;
    assert_eq!(browser.path().await, "/account");
    assert!(browser.text().await.contains("You have no passkey yet"));

    browser.fill("passkey-name", "laptop").await;
    browser.fill("current-passkey", PASSWORD).await;
    browser
        .click("form[action='/account/passkeys/start'] button")
        .await;
    assert!(browser.text().await.contains("Add a passkey"));
    browser.screenshots("passkey-add").await;
    browser.use_passkey().await;
    assert_eq!(browser.path().await, "/account");
    let text = browser.text().await;
    assert!(text.contains("Your passkey was added"), "{text}");
    assert!(text.contains("laptop"), "{text}");
    browser.screenshots("account-passkeys").await;
    let user = s
        .core
        .user(&s.server_id, &latchkey_core::UserId::parse(ALICE).unwrap())
        .await
        .unwrap();
    let stored = s.store.user_passkeys(user.id).await.unwrap();
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].last_used_at, None);
    let held = browser.credentials(&authenticator).await;
    assert_eq!(held.len(), 1);
    assert_eq!(held[0]["isResidentCredential"], true, "{held:?}");

    // The same authenticator makes no second passkey for the account.
    browser.fill("passkey-name", "again").await;
    browser.fill("current-passkey", PASSWORD).await;
    browser
        .click("form[action='/account/passkeys/start'] button")
        .await;
    let button = browser
        .client
        .wait()
        .for_element(Locator::Css("button[data-passkey-start]:not([hidden])"))
        .await
        .unwrap();
    button.click().await.unwrap();
    let error = browser
        .client
        .wait()
        .for_element(Locator::Css("[data-passkey-error]:not([hidden])"))
        .await
        .unwrap();
    assert!(error.text().await.unwrap().contains("No passkey was made"));
    assert_eq!(s.store.user_passkeys(user.id).await.unwrap().len(), 1);

    // Signed out, the sign-in page offers the passkey in the user name's autofill (conditional
    // mediation); Chromium's virtual authenticator picks it at once, so the page signs in by
    // itself, no user name typed.
    browser.open(&s.url("/account")).await;
    browser.click("form[action='/logout'] button").await;
    browser.until_at("/account").await;
    assert!(browser.text().await.contains(ALICE));
    let token = browser.session_cookie().await.unwrap();
    assert!(keeps_alive(&s, &token).await);
    assert_eq!(amr_of(&s, &token).await, "hwk");
    let used = s.store.user_passkeys(user.id).await.unwrap();
    assert!(used[0].last_used_at.is_some());

    // As the second step after a password, in place of the TOTP code: another browser whose
    // authenticator holds a copy of the key that is not discoverable (so its sign-in page
    // offers nothing by itself), clicking "Use a passkey".
    s.enable_totp(ALICE).await;
    let other = Chromium::start().await;
    let other_authenticator = other.add_virtual_authenticator().await;
    // First a copy taken before the last sign-in: its signature counter went backwards (a
    // cloned authenticator), so it is refused and the code is still asked.
    let mut stale = held[0].clone();
    stale["isResidentCredential"] = json!(false);
    other.add_credential(&other_authenticator, stale).await;
    other.open(&s.url("/login")).await;
    other.fill("username", ALICE).await;
    other.fill("password", PASSWORD).await;
    other.submit().await;
    assert!(other.text().await.contains("authenticator app"));
    other.screenshots("code-passkey").await;
    other.use_passkey().await;
    let text = other.text().await;
    assert!(text.contains("not one of this account"), "{text}");
    assert!(text.contains("authenticator app"), "{text}");
    other
        .client
        .issue_cmd(WebAuthnCommand {
            method: reqwest::Method::DELETE,
            path: format!("authenticator/{other_authenticator}/credentials"),
            body: None,
        })
        .await
        .unwrap();
    // Then a copy with the counter the server last saw.
    let mut copy = browser.credentials(&authenticator).await[0].clone();
    copy["isResidentCredential"] = json!(false);
    other.add_credential(&other_authenticator, copy).await;
    other.use_passkey().await;
    assert_eq!(other.path().await, "/account", "{}", other.text().await);
    let token = other.session_cookie().await.unwrap();
    assert_eq!(amr_of(&s, &token).await, "pwd,hwk");
}

/// The companion app binary, built beside `latchkey` (the workspace's tests build both).
fn app_binary() -> PathBuf {
    let app = std::path::Path::new(env!("CARGO_BIN_EXE_latchkey")).with_file_name("latchkey-app");
    assert!(
        app.exists(),
        "{} (build the workspace: cargo test --workspace)",
        app.display()
    );
    app
}

/// Runs the companion app with its key store `store` (a process of its own, awaited: the
/// server answers it from this test's runtime); answers the JSON it printed.
async fn run_app(store: &std::path::Path, args: &[&str]) -> serde_json::Value {
    let out = tokio::process::Command::new(app_binary())
        .arg("--store")
        .arg(store)
        .arg("--json")
        .args(args)
        .env_remove("LATCHKEY_APP_STORE")
        .stdin(Stdio::null())
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "latchkey-app {args:?}: {stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(stdout.trim()).unwrap()
}

#[tokio::test]
#[ignore = "needs Debian's chromium and chromium-driver (.ci/run installs them): cargo test -- --ignored in_chromium"]
async fn the_companion_app_signs_the_browser_in_from_its_qr_code_in_chromium() {
    let s = server(test_settings(), HttpOptions::default()).await;
    // The person's phone (the real app binary, enrolled for alice from the enrol QR code), and
    // a stray phone enrolled for nobody.
    let phones = tempfile::tempdir().unwrap();
    let alices = phones.path().join("alice.json");
    let strays = phones.path().join("stray.json");
    let enrolled = enrol_phone(&s, &alices, "phone&userid=alice%40example.com").await;
    assert_eq!(enrolled["userid"], ALICE);
    enrol_phone(&s, &strays, "stray").await;

    let browser = Chromium::start().await;
    browser.open(&s.url("/login")).await;
    browser.screenshots("login-qr").await;
    // A login by an account linked to nobody: the page does not go on by itself, and going on
    // by hand is refused; the code then shown is a new one.
    let payload = shown_login_qr(&browser).await;
    run_app(&strays, &["login", &payload]).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(browser.path().await, "/login", "{}", browser.text().await);
    browser.click("form#qr-sign-in button").await;
    assert!(browser.text().await.contains("not linked to a user"));
    let fresh = shown_login_qr(&browser).await;
    assert_ne!(fresh, payload);

    // alice's phone scans the code Chromium shows; the page learns it over SSE and goes on.
    let logged_in = run_app(&alices, &["login", &fresh]).await;
    assert_eq!(logged_in["accountid"], enrolled["accountid"], "{logged_in}");
    browser.until_at("/account").await;
    assert!(browser.text().await.contains(ALICE));
    let token = browser.session_cookie().await.unwrap();
    assert!(keeps_alive(&s, &token).await);
    assert_eq!(amr_of(&s, &token).await, "hwk");
    // The code's cookie is gone: the next sign-in page shows another browser session's code.
    let cookies = browser.client.get_all_cookies().await.unwrap();
    assert!(cookies
        .iter()
        .all(|c| c.name() != "latchkey_qr" || c.value().is_empty()));
}

/// Enrols the app whose key store is `store` from an enrol QR code PNG (`name` may carry more
/// query parameters); answers what the app printed.
async fn enrol_phone(s: &TestServer, store: &std::path::Path, name: &str) -> serde_json::Value {
    let enrol = s
        .http
        .get(s.url(&format!(
            "/servers/{}/sessions/qr/enrol?name={name}&img=png&s=400",
            s.server_id
        )))
        .header("X-apikey", &s.api_key)
        .header("X-nonce", "ZW5yb2xtZW50LWJyb3dzZXI")
        .send()
        .await
        .unwrap();
    assert_eq!(enrol.status(), 200);
    let png = store.with_extension("png");
    std::fs::write(&png, enrol.bytes().await.unwrap()).unwrap();
    run_app(store, &["enrol", "--png", png.to_str().unwrap()]).await
}

/// The login QR code the sign-in page shows, once its image has loaded (the browser session
/// exists and the page watches it), as Chromium draws it, read by rqrr.
async fn shown_login_qr(browser: &Chromium) -> String {
    let image = browser
        .client
        .wait()
        .for_element(Locator::Css("img#login-qr"))
        .await
        .unwrap();
    for _ in 0..100 {
        let width = browser
            .client
            .execute(
                "return document.getElementById('login-qr').naturalWidth",
                vec![],
            )
            .await
            .unwrap();
        if width.as_u64().is_some_and(|w| w > 0) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    browser.client.set_window_size(1280, 900).await.unwrap();
    let payload = decode_qr(&image.screenshot().await.unwrap());
    assert!(payload.starts_with("latchkey://login?"), "{payload}");
    payload
}

/// The text of the one QR code in a PNG screenshot.
fn decode_qr(png: &[u8]) -> String {
    let image = image::load_from_memory(png).unwrap().to_luma8();
    let (w, h) = image.dimensions();
    let mut prepared =
        rqrr::PreparedImage::prepare_from_greyscale(w as usize, h as usize, |x, y| {
            image.get_pixel(x as u32, y as u32).0[0]
        });
    let grids = prepared.detect_grids();
    assert_eq!(grids.len(), 1, "one QR code in the screenshot");
    grids[0].decode().unwrap().1
}

#[tokio::test]
#[ignore = "needs Debian's chromium and chromium-driver (.ci/run installs them): cargo test -- --ignored in_chromium"]
async fn the_admin_console_finds_a_user_revokes_blocks_and_makes_a_key_in_chromium() {
    let s = server(test_settings(), HttpOptions::default()).await;
    let bob = "bob@example.com";
    s.add_user(bob, PASSWORD).await;
    // bob signs in elsewhere (family D) and has a phone enrolled for him.
    let bobs = auth_token(&s.basic_login(bob, PASSWORD).await);
    assert!(keeps_alive(&s, &bobs).await);
    let phones = tempfile::tempdir().unwrap();
    let phone = phones.path().join("bob.json");
    let enrolled = enrol_phone(&s, &phone, "phone&userid=bob%40example.com").await;
    let account = enrolled["accountid"].as_i64().unwrap();

    // alice is an ordinary user: signed in, she is refused the console.
    let browser = Chromium::start().await;
    browser.open(&s.url("/admin")).await;
    assert_eq!(browser.path().await, "/login");
    browser.fill("username", ALICE).await;
    browser.fill("password", PASSWORD).await;
    browser.submit().await;
    assert_eq!(browser.path().await, "/admin");
    assert!(
        browser.text().await.contains("does not manage any server"),
        "{}",
        browser.text().await
    );

    // Made an administrator (`latchkey user admin`), she sees her servers and live counts.
    s.core
        .set_user_root(
            &s.server_id,
            &latchkey_core::UserId::parse(ALICE).unwrap(),
            true,
        )
        .await
        .unwrap();
    browser.open(&s.url("/admin")).await;
    let home = browser.text().await;
    assert!(home.contains("with the root role"), "{home}");
    assert!(home.contains(s.server_id.as_str()), "{home}");
    let active: u64 = browser
        .client
        .find(Locator::Id("active-sessions"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
        .parse()
        .unwrap();
    assert!(active >= 2, "alice's and bob's sessions: {active}");
    browser.screenshots("admin-home").await;

    // Find bob, open him, revoke his session: his token fails at once.
    browser
        .open(&s.url(&format!("/admin/console/users?server={}", s.server_id)))
        .await;
    browser.fill("q", "BOB").await;
    browser.click("form[role=search] button").await;
    let found = browser.text().await;
    assert!(found.contains(bob) && !found.contains(ALICE), "{found}");
    browser.click("tbody a").await;
    assert_eq!(browser.path().await, "/admin/console/user");
    browser.screenshots("admin-user").await;
    browser
        .click("form[action='/admin/console/user'] button[value=session]")
        .await;
    assert!(!keeps_alive(&s, &bobs).await, "revoked from the console");
    assert!(browser.text().await.contains(bob));

    // Block his app account from his page: a provoked login to it is then refused.
    browser.click("button[value=block]").await;
    assert!(browser.text().await.contains("blocked"));
    let provoke = s
        .http
        .post(s.url(&format!(
            "/servers/{}/accounts/{account}/provokelogin",
            s.server_id
        )))
        .header("X-apikey", &s.api_key)
        .header("X-nonce", "cHJvdm9rZWQtYnJvd3Nlcg")
        .send()
        .await
        .unwrap();
    assert_eq!(provoke.status(), 403);

    // Create an API key: shown once, and it works (its role gets permissions from the form).
    browser
        .open(&s.url(&format!("/admin/console/keys?server={}", s.server_id)))
        .await;
    browser.fill("description", "shop back office").await;
    browser
        .click("form[action='/admin/console/keys'] button")
        .await;
    let key = browser
        .client
        .find(Locator::Id("new-key"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let role = browser
        .client
        .find(Locator::Id("new-role"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(browser.text().await.contains("shop back office"));
    browser.screenshots("admin-keys").await;
    browser.fill("grant-role", &role).await;
    browser
        .client
        .find(Locator::Css("input[name=users]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    browser
        .click("form[action='/admin/console/grant'] button")
        .await;
    assert!(browser.text().await.contains(&role));
    let users = s
        .http
        .get(s.url(&format!("/servers/{}/users/", s.server_id)))
        .header("X-apikey", &key)
        .send()
        .await
        .unwrap();
    assert_eq!(users.status(), 200, "the new key holds users");

    // The audit log shows what the console did.
    browser
        .open(&s.url(&format!(
            "/admin/console/audit?server={}&kind=account_blocked",
            s.server_id
        )))
        .await;
    assert!(browser.text().await.contains(&format!("account {account}")));
    browser.screenshots("admin-audit").await;

    // The server's settings: renamed and a PIN timeout set, as updateServer would.
    browser.open(&s.url("/admin")).await;
    browser.click("a[aria-label^='Settings of']").await;
    browser.fill("name", "Shop").await;
    browser.fill("pin_timeout", "15").await;
    browser.screenshots("admin-server").await;
    browser.submit().await;
    assert_eq!(browser.path().await, "/admin");
    let home = browser.text().await;
    assert!(
        home.contains("Shop") && home.contains("PIN timeout 15 min"),
        "{home}"
    );
    let info = s.core.server_info(&s.server_id).await.unwrap();
    assert_eq!(
        (info.name.as_str(), info.settings.pin_timeout),
        ("Shop", 15)
    );
}
