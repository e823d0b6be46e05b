//! Sign-in for people in a browser, over HTTP without a browser engine (the pages work without
//! JavaScript, so plain form posts drive them as a browser would): `/login` with its password,
//! second-factor and CAPTCHA steps, the `latchkey_session` cookie as a session of the model,
//! CSRF tokens, `return_to`, `/account` and `/forward-auth`.

use std::collections::HashMap;

use latchkey_core::Settings;
use latchkey_http::proxies::TrustedProxies;
use latchkey_http::HttpOptions;
use reqwest::header::{HeaderMap, LOCATION, SET_COOKIE};
use reqwest::StatusCode;
use serde_json::Value;

use crate::support::db::{both_backends, TestDb};
use crate::support::server::{test_settings, TestServer};

const ALICE: &str = "alice@example.com";
const PASSWORD: &str = "correct horse battery staple";
const ANSWER: &str = "k3w9xp";
const APP: &str = "https://app.example.com";

both_backends!(
    a_password_sign_in_gives_a_cookie_session_that_family_c_and_forward_auth_accept,
    return_to_is_followed_only_to_allowed_origins,
    form_posts_without_the_csrf_token_are_refused,
    a_totp_sign_in_asks_for_the_code_before_the_cookie_works,
    the_captcha_rule_holds_a_browser_sign_in_until_it_is_answered,
    revoking_another_session_from_the_account_page_kills_it_at_once,
    signing_out_ends_the_session_and_takes_the_cookie,
    forward_auth_redirects_to_login_only_for_trusted_proxies_that_ask,
    the_account_page_changes_the_password_and_the_second_factors,
    passkey_tickets_are_this_servers_and_serve_once,
    the_account_page_guards_passkey_changes,
    the_login_qr_code_is_this_browsers_and_waits_for_the_app,
    page_routes_answer_refusals_as_pages,
    the_admin_console_admits_password_administrators_and_scopes_what_they_do,
);

/// Behind Debian's nginx (`auth_request`), started on a loopback port: a protected location
/// redirects to the sign-in without a cookie, and passes `Remote-User` upstream with one.
#[tokio::test]
#[ignore = "needs Debian's nginx (.ci/run installs it): cargo test -- --ignored behind_nginx"]
async fn forward_auth_behind_nginx() {
    let db = TestDb::new(crate::support::db::Backend::Sqlite)
        .await
        .unwrap();
    let http = HttpOptions {
        trusted_proxies: TrustedProxies::parse(&["127.0.0.1".to_owned()]).unwrap(),
        ..HttpOptions::default()
    };
    let s = TestServer::start_with_http(db, test_settings(), http).await;
    s.add_user(ALICE, PASSWORD).await;
    let upstream = echo_remote_user().await;
    let nginx = Nginx::start(&s.base, upstream);

    let mut b = Browser::new(&s);
    let app = format!("{}/reports?year=2026", nginx.base);
    let r = b.send(b.http.get(&app)).await;
    assert_eq!(r.status, 302, "{}", r.html);
    assert!(
        r.location()
            .starts_with(&format!("{}/login?return_to=http://127.0.0.1:", s.base)),
        "{}",
        r.location()
    );
    assert_eq!(b.sign_in(ALICE, PASSWORD).await.status, 303);
    // The application's own cookies pass; the session cookie does not reach it.
    b.cookies.insert("theme".into(), "dark".into());
    let r = b.send(b.http.get(&app)).await;
    assert_eq!(r.status, 200, "{}", r.html);
    let (user, cookies) = r.html.split_once('\n').unwrap();
    assert_eq!(user, format!("remote-user={ALICE}"));
    assert!(cookies.contains("theme=dark"), "{cookies}");
    assert!(!cookies.contains("latchkey_session"), "{cookies}");
}

/// An upstream application that answers with the `Remote-User` and `Cookie` headers it was
/// given, one per line.
async fn echo_remote_user() -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let mut head = Vec::new();
            let mut buf = [0u8; 1024];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                match stream.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => head.extend_from_slice(&buf[..n]),
                }
            }
            let head = String::from_utf8_lossy(&head).to_string();
            let header = |name: &str| {
                head.lines()
                    .find_map(|l| {
                        let (key, value) = l.split_once(": ")?;
                        key.eq_ignore_ascii_case(name).then_some(value)
                    })
                    .unwrap_or("")
                    .to_owned()
            };
            let body = format!(
                "remote-user={}\ncookie={}",
                header("remote-user"),
                header("cookie")
            );
            let answer = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.write_all(answer.as_bytes()).await;
        }
    });
    port
}

/// nginx in the foreground on a free loopback port, stopped on drop.
struct Nginx {
    base: String,
    child: std::process::Child,
    _dir: tempfile::TempDir,
}

impl Nginx {
    fn start(latchkey: &str, upstream: u16) -> Nginx {
        let dir = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let d = dir.path().display();
        let config = format!(
            // One process (no workers outliving a killed master).
            r#"master_process off;
pid {d}/nginx.pid;
error_log {d}/error.log;
events {{}}
http {{
  access_log off;
  client_body_temp_path {d}/body; proxy_temp_path {d}/proxy; fastcgi_temp_path {d}/fastcgi;
  uwsgi_temp_path {d}/uwsgi; scgi_temp_path {d}/scgi;
  map $http_cookie $cookie_for_app {{
    default $http_cookie;
    "~^(?<before>(?:[^;]*;)*?)\s*latchkey_session=[^;]*;?\s*(?<after>.*)$" "$before$after";
  }}
  server {{
    listen 127.0.0.1:{port};
    location = /_latchkey {{
      internal;
      proxy_pass {latchkey}/forward-auth;
      proxy_pass_request_body off;
      proxy_set_header Content-Length "";
      proxy_set_header X-Forwarded-Proto $scheme;
      proxy_set_header X-Forwarded-Host $host;
      proxy_set_header X-Forwarded-Uri $request_uri;
    }}
    location / {{
      auth_request /_latchkey;
      auth_request_set $latchkey_user $upstream_http_remote_user;
      proxy_set_header Remote-User $latchkey_user;
      proxy_set_header Cookie $cookie_for_app;
      error_page 401 = @signin;
      proxy_pass http://127.0.0.1:{upstream};
    }}
    location @signin {{
      return 302 {latchkey}/login?return_to=$scheme://$http_host$request_uri;
    }}
  }}
}}
"#
        );
        std::fs::write(dir.path().join("nginx.conf"), config).unwrap();
        let child = std::process::Command::new("nginx")
            .arg("-p")
            .arg(dir.path())
            .arg("-c")
            .arg(dir.path().join("nginx.conf"))
            .args(["-g", "daemon off;"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("nginx (Debian's package nginx or nginx-light) on the PATH");
        let started = (0..100).any(|_| {
            std::thread::sleep(std::time::Duration::from_millis(50));
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        if !started {
            let mut child = child;
            let _ = child.kill();
            let output = child.wait_with_output().unwrap();
            panic!(
                "nginx did not start: {}{}",
                String::from_utf8_lossy(&output.stderr),
                std::fs::read_to_string(dir.path().join("error.log")).unwrap_or_default()
            );
        }
        Nginx {
            base: format!("http://127.0.0.1:{port}"),
            child,
            _dir: dir,
        }
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One browser: its cookies, no automatic redirects (the tests read each one).
struct Browser {
    http: reqwest::Client,
    base: String,
    cookies: HashMap<String, String>,
}

struct Page {
    status: StatusCode,
    headers: HeaderMap,
    html: String,
}

impl Page {
    fn location(&self) -> &str {
        self.headers
            .get(LOCATION)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    /// The value of the hidden field `name`.
    fn field(&self, name: &str) -> String {
        let marker = format!("name=\"{name}\" value=\"");
        let start = self
            .html
            .find(&marker)
            .unwrap_or_else(|| panic!("no field {name} in {}", self.html))
            + marker.len();
        let end = self.html[start..].find('"').unwrap() + start;
        self.html[start..end].to_owned()
    }
}

impl Browser {
    fn new(s: &TestServer) -> Browser {
        Browser {
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            base: s.base.clone(),
            cookies: HashMap::new(),
        }
    }

    fn cookie_header(&self) -> String {
        self.cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    async fn send(&mut self, request: reqwest::RequestBuilder) -> Page {
        let r = request
            .header("cookie", self.cookie_header())
            .send()
            .await
            .unwrap();
        for set in r.headers().get_all(SET_COOKIE) {
            let set = set.to_str().unwrap();
            let (pair, attributes) = set.split_once(';').unwrap_or((set, ""));
            let (name, value) = pair.split_once('=').unwrap();
            if attributes.contains("Max-Age=0") {
                self.cookies.remove(name);
            } else {
                self.cookies.insert(name.to_owned(), value.to_owned());
            }
        }
        Page {
            status: r.status(),
            headers: r.headers().clone(),
            html: r.text().await.unwrap(),
        }
    }

    async fn get(&mut self, path: &str) -> Page {
        let request = self.http.get(format!("{}{path}", self.base));
        self.send(request).await
    }

    async fn post(&mut self, path: &str, form: &[(&str, &str)]) -> Page {
        let request = self.http.post(format!("{}{path}", self.base)).form(form);
        self.send(request).await
    }

    fn session(&self) -> Option<&str> {
        self.cookies.get("latchkey_session").map(String::as_str)
    }

    /// Opens /login and posts the password form.
    async fn sign_in(&mut self, user: &str, password: &str) -> Page {
        let login = self.get("/login").await;
        assert_eq!(login.status, 200, "{}", login.html);
        let csrf = login.field("csrf");
        self.post(
            "/login",
            &[
                ("csrf", &csrf),
                ("username", user),
                ("password", password),
                ("return_to", ""),
            ],
        )
        .await
    }

    async fn forward_auth(&mut self) -> Page {
        self.get("/forward-auth").await
    }
}

fn settings_with_captcha() -> Settings {
    Settings {
        captcha_test_answer: Some(ANSWER.into()),
        ..test_settings()
    }
}

async fn start(db: TestDb) -> TestServer {
    let http = HttpOptions {
        allowed_return_origins: vec![APP.to_owned()],
        ..HttpOptions::default()
    };
    let s = TestServer::start_with_http(db, settings_with_captcha(), http).await;
    s.add_user(ALICE, PASSWORD).await;
    s
}

async fn a_password_sign_in_gives_a_cookie_session_that_family_c_and_forward_auth_accept(
    db: TestDb,
) {
    let s = start(db).await;
    let mut b = Browser::new(&s);
    let login = b.get("/login").await;
    assert_eq!(login.status, 200);
    let csp = login.headers["content-security-policy"].to_str().unwrap();
    assert!(
        csp.contains("default-src 'none'") && csp.contains("frame-ancestors 'none'"),
        "{csp}"
    );
    assert!(login.html.contains("autocomplete=\"username webauthn\""));
    assert!(login.html.contains("autocomplete=\"current-password\""));
    assert!(login.html.contains("<label for=\"password\">"));
    assert!(b.cookies.contains_key("latchkey_csrf"));

    let wrong = b.sign_in(ALICE, "not the password").await;
    assert_eq!(wrong.status, 401);
    assert!(wrong.html.contains("role=\"alert\""), "{}", wrong.html);
    assert!(b.session().is_none());

    let done = b.sign_in(ALICE, PASSWORD).await;
    assert_eq!(done.status, 303, "{}", done.html);
    assert_eq!(done.location(), "/account");
    let set = done.headers[SET_COOKIE].to_str().unwrap();
    assert!(
        set.contains("HttpOnly") && set.contains("SameSite=Lax") && set.contains("Path=/"),
        "{set}"
    );
    let token = b.session().unwrap().to_owned();

    let account = b.get("/account").await;
    assert_eq!(account.status, 200);
    assert!(account.html.contains(ALICE));
    assert!(account.html.contains("(this browser)"));

    // An ordinary session of the model: family C lists it and reports it active.
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
    assert_eq!(list["total"], 1, "{list}");
    assert_eq!(list["sessions"][0]["isCurrent"], true, "{list}");

    let allowed = b.forward_auth().await;
    assert_eq!(allowed.status, 200);
    assert_eq!(allowed.headers["remote-user"], ALICE);
    assert_eq!(allowed.headers["remote-amr"], "pwd");
    assert_eq!(
        allowed.headers["remote-session"].to_str().unwrap(),
        list["sessions"][0]["id"].as_str().unwrap()
    );
    let mut stranger = Browser::new(&s);
    assert_eq!(stranger.forward_auth().await.status, 401);
}

async fn return_to_is_followed_only_to_allowed_origins(db: TestDb) {
    let s = start(db).await;
    for (return_to, expected) in [
        (format!("{APP}/orders?id=7"), format!("{APP}/orders?id=7")),
        (
            "https://evil.example.com/".to_owned(),
            "/account".to_owned(),
        ),
        (
            "https://app.example.com.evil.example/".to_owned(),
            "/account".to_owned(),
        ),
        ("javascript:alert(1)".to_owned(), "/account".to_owned()),
    ] {
        let mut b = Browser::new(&s);
        let query: String = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("return_to", &return_to)
            .finish();
        let login = b.get(&format!("/login?{query}")).await;
        let kept = login.field("return_to").replace("&amp;", "&");
        let csrf = login.field("csrf");
        let done = b
            .post(
                "/login",
                &[
                    ("csrf", &csrf),
                    ("username", ALICE),
                    ("password", PASSWORD),
                    ("return_to", &kept),
                ],
            )
            .await;
        assert_eq!(done.status, 303, "{return_to}");
        assert_eq!(done.location(), expected, "{return_to}");
        // Signed in already: /login sends the browser on at once.
        let again = b.get(&format!("/login?{query}")).await;
        assert_eq!(again.status, 303);
        assert_eq!(again.location(), expected);
    }
}

async fn form_posts_without_the_csrf_token_are_refused(db: TestDb) {
    let s = start(db).await;
    let mut b = Browser::new(&s);
    let login = b.get("/login").await;
    let csrf = login.field("csrf");
    for form in [
        vec![("username", ALICE), ("password", PASSWORD)],
        vec![
            ("csrf", "A".repeat(43).leak() as &str),
            ("username", ALICE),
            ("password", PASSWORD),
        ],
    ] {
        let refused = b.post("/login", &form).await;
        assert_eq!(refused.status, 403, "{}", refused.html);
        assert!(b.session().is_none());
    }
    // Another browser's token does not serve either (it is not this browser's cookie).
    let mut other = Browser::new(&s);
    let refused = other
        .post(
            "/login",
            &[("csrf", &csrf), ("username", ALICE), ("password", PASSWORD)],
        )
        .await;
    assert_eq!(refused.status, 403);

    // A post from another site (a sibling subdomain that tossed its own cookie included) is
    // refused even with a matching token.
    let cross = b
        .http
        .post(format!("{}/login", b.base))
        .header("sec-fetch-site", "same-site")
        .form(&[
            ("csrf", csrf.as_str()),
            ("username", ALICE),
            ("password", PASSWORD),
        ]);
    assert_eq!(b.send(cross).await.status, 403);

    // Signed in, the account forms need it too.
    assert_eq!(b.sign_in(ALICE, PASSWORD).await.status, 303);
    let account = b.get("/account").await;
    assert!(account
        .html
        .contains("<title>Your account · latchkey</title>"));
    assert_ne!(
        account.field("csrf"),
        csrf,
        "the session's own token once signed in"
    );
    assert_eq!(b.post("/logout", &[]).await.status, 403);
    assert_eq!(
        b.post("/account/sessions/revoke-others", &[("csrf", "x")])
            .await
            .status,
        403
    );
    assert_eq!(
        b.forward_auth().await.status,
        200,
        "the session is untouched"
    );
}

async fn a_totp_sign_in_asks_for_the_code_before_the_cookie_works(db: TestDb) {
    let s = start(db).await;
    let secret = s.enable_totp(ALICE).await;
    let mut b = Browser::new(&s);
    let step = b.sign_in(ALICE, PASSWORD).await;
    assert_eq!(step.status, 200, "{}", step.html);
    assert!(
        step.html.contains("autocomplete=\"one-time-code\""),
        "{}",
        step.html
    );
    assert!(b.session().is_some());
    assert_eq!(
        b.forward_auth().await.status,
        401,
        "a pending sign-in is no session yet"
    );

    let csrf = step.field("csrf");
    let wrong = b
        .post("/login/code", &[("csrf", &csrf), ("code", "000000")])
        .await;
    assert_eq!(wrong.status, 401);
    assert!(wrong.html.contains("That code is wrong"));
    let code = s.totp_code(&secret);
    let done = b
        .post("/login/code", &[("csrf", &csrf), ("code", &code)])
        .await;
    assert_eq!(done.status, 303, "{}", done.html);
    let allowed = b.forward_auth().await;
    assert_eq!(allowed.status, 200);
    assert_eq!(allowed.headers["remote-amr"], "pwd,otp");
}

async fn the_captcha_rule_holds_a_browser_sign_in_until_it_is_answered(db: TestDb) {
    let s = start(db).await;
    let mut b = Browser::new(&s);
    for _ in 0..5 {
        assert_eq!(b.sign_in(ALICE, "wrong").await.status, 401);
    }
    let held = b.sign_in(ALICE, PASSWORD).await;
    assert_eq!(held.status, 200, "{}", held.html);
    assert!(
        held.html.contains("src=\"/login/captcha.png\""),
        "{}",
        held.html
    );
    assert_eq!(b.forward_auth().await.status, 401);
    let image = s
        .http
        .get(s.url("/login/captcha.png"))
        .header("cookie", b.cookie_header())
        .send()
        .await
        .unwrap();
    assert_eq!(image.status(), 200);
    assert_eq!(image.headers()["content-type"], "image/png");
    let png = image.bytes().await.unwrap();
    assert!(png.starts_with(b"\x89PNG"));

    let csrf = held.field("csrf");
    let wrong = b
        .post("/login/captcha", &[("csrf", &csrf), ("answer", "nope")])
        .await;
    assert_eq!(wrong.status, 401);
    assert!(wrong.html.contains("try the new image"), "{}", wrong.html);
    b.get("/login/captcha.png").await;
    let done = b
        .post("/login/captcha", &[("csrf", &csrf), ("answer", ANSWER)])
        .await;
    assert_eq!(done.status, 303, "{}", done.html);
    assert_eq!(b.forward_auth().await.status, 200);
}

async fn revoking_another_session_from_the_account_page_kills_it_at_once(db: TestDb) {
    let s = start(db).await;
    let (mut phone, mut laptop, mut tablet) =
        (Browser::new(&s), Browser::new(&s), Browser::new(&s));
    for b in [&mut phone, &mut laptop, &mut tablet] {
        assert_eq!(b.sign_in(ALICE, PASSWORD).await.status, 303);
        assert_eq!(b.forward_auth().await.status, 200, "cached now");
    }
    let laptop_session = laptop.forward_auth().await.headers["remote-session"]
        .to_str()
        .unwrap()
        .to_owned();
    let account = phone.get("/account").await;
    assert!(account.html.contains(&laptop_session));
    let csrf = account.field("csrf");
    let revoked = phone
        .post(
            "/account/sessions/revoke",
            &[("csrf", &csrf), ("session_id", &laptop_session)],
        )
        .await;
    assert_eq!(revoked.status, 303, "{}", revoked.html);
    assert_eq!(revoked.location(), "/account");
    assert_eq!(laptop.forward_auth().await.status, 401);
    let back = laptop.get("/account").await;
    assert_eq!((back.status.as_u16(), back.location()), (303, "/login"));
    assert_eq!(tablet.forward_auth().await.status, 200);

    let others = phone
        .post("/account/sessions/revoke-others", &[("csrf", &csrf)])
        .await;
    assert_eq!(others.status, 303);
    assert_eq!(tablet.forward_auth().await.status, 401);
    assert_eq!(
        phone.forward_auth().await.status,
        200,
        "this browser's own stays"
    );
}

async fn signing_out_ends_the_session_and_takes_the_cookie(db: TestDb) {
    let s = start(db).await;
    let mut b = Browser::new(&s);
    assert_eq!(b.sign_in(ALICE, PASSWORD).await.status, 303);
    let token = b.session().unwrap().to_owned();
    let csrf = b.get("/account").await.field("csrf");
    let out = b.post("/logout", &[("csrf", &csrf)]).await;
    assert_eq!((out.status.as_u16(), out.location()), (303, "/login"));
    assert!(b.session().is_none(), "the cookie is taken away");
    // The token itself is dead, not just forgotten by the browser.
    let r = s
        .http
        .get(s.url("/session/keepalive"))
        .header("X-Auth-Token", &token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
}

async fn forward_auth_redirects_to_login_only_for_trusted_proxies_that_ask(db: TestDb) {
    let forwarded = [
        ("x-forwarded-proto", "https"),
        ("x-forwarded-host", "app.example.com"),
        ("x-forwarded-uri", "/reports?year=2026"),
    ];
    let ask = |s: &TestServer, query: &str| {
        let mut request = s.http.get(s.url(&format!("/forward-auth{query}")));
        for (name, value) in forwarded {
            request = request.header(name, value);
        }
        request
    };
    let untrusted_db = TestDb::new(db.backend()).await.unwrap();
    let untrusted = TestServer::start_with(untrusted_db, test_settings()).await;
    let r = ask(&untrusted, "?rd=1").send().await.unwrap();
    assert_eq!(
        r.status(),
        401,
        "forwarded headers from an untrusted peer are ignored"
    );
    drop(untrusted);

    let http = HttpOptions {
        trusted_proxies: TrustedProxies::parse(&["127.0.0.1".to_owned()]).unwrap(),
        ..HttpOptions::default()
    };
    let s = TestServer::start_with_http(db, test_settings(), http).await;
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let plain = client.execute(ask(&s, "").build().unwrap()).await.unwrap();
    assert_eq!(plain.status(), 401, "no redirect unless asked");
    let r = client
        .execute(ask(&s, "?rd=1").build().unwrap())
        .await
        .unwrap();
    assert_eq!(r.status(), 302);
    assert_eq!(
        r.headers()[LOCATION],
        "/login?return_to=https%3A%2F%2Fapp.example.com%2Freports%3Fyear%3D2026"
    );
}

async fn the_account_page_changes_the_password_and_the_second_factors(db: TestDb) {
    let s = start(db).await;
    let mut b = Browser::new(&s);
    assert_eq!(b.sign_in(ALICE, PASSWORD).await.status, 303);
    let csrf = b.get("/account").await.field("csrf");
    let new_password = "a much longer new passphrase";

    // The password: the current one is asked, the new one twice.
    let change = |current: &'static str, new: &'static str, confirm: &'static str| {
        vec![
            ("csrf", csrf.clone()),
            ("current", current.into()),
            ("new", new.into()),
            ("confirm", confirm.into()),
        ]
    };
    for (form, status, message) in [
        (
            change(
                "wrong",
                "a much longer new passphrase",
                "a much longer new passphrase",
            ),
            401,
            "current password is wrong",
        ),
        (
            change(
                PASSWORD,
                "a much longer new passphrase",
                "something else entirely",
            ),
            400,
            "differ",
        ),
    ] {
        let form: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let page = b.post("/account/password", &form).await;
        assert_eq!(page.status, status, "{}", page.html);
        assert!(page.html.contains(message), "{}", page.html);
    }
    let done = b
        .post(
            "/account/password",
            &[
                ("csrf", &csrf),
                ("current", PASSWORD),
                ("new", new_password),
                ("confirm", new_password),
            ],
        )
        .await;
    assert_eq!(
        (done.status.as_u16(), done.location()),
        (303, "/account?done=password")
    );
    assert!(b
        .get("/account?done=password")
        .await
        .html
        .contains("Your password was changed"));
    assert_eq!(Browser::new(&s).sign_in(ALICE, PASSWORD).await.status, 401);
    assert_eq!(
        Browser::new(&s).sign_in(ALICE, new_password).await.status,
        303
    );

    // A PIN: asked at the next sign-in, until removed.
    assert_eq!(
        b.post(
            "/account/pin",
            &[("csrf", &csrf), ("current", new_password), ("pin", "12")]
        )
        .await
        .status,
        400
    );
    assert_eq!(
        b.post(
            "/account/pin",
            &[("csrf", &csrf), ("current", "wrong"), ("pin", "2468")]
        )
        .await
        .status,
        401,
        "the password is asked again"
    );
    assert_eq!(
        b.post(
            "/account/pin",
            &[("csrf", &csrf), ("current", new_password), ("pin", "2468")]
        )
        .await
        .status,
        303
    );
    let mut next = Browser::new(&s);
    let step = next.sign_in(ALICE, new_password).await;
    assert_eq!(step.status, 200);
    assert!(
        step.html.contains("<label for=\"code\">PIN</label>"),
        "{}",
        step.html
    );
    let code_csrf = step.field("csrf");
    assert_eq!(
        next.post("/login/code", &[("csrf", &code_csrf), ("code", "2468")])
            .await
            .status,
        303
    );
    assert_eq!(
        b.post(
            "/account/pin/remove",
            &[("csrf", &csrf), ("current", new_password)]
        )
        .await
        .status,
        303
    );
    assert_eq!(
        Browser::new(&s).sign_in(ALICE, new_password).await.status,
        303
    );

    // TOTP: nothing changes until a code of the scanned secret is shown.
    let setup = b.post("/account/totp/start", &[("csrf", &csrf)]).await;
    assert_eq!(setup.status, 200, "{}", setup.html);
    assert!(setup.html.contains("<svg"), "the QR code is inline");
    let secret = setup.field("secret");
    assert_eq!(
        Browser::new(&s).sign_in(ALICE, new_password).await.status,
        303,
        "not on yet"
    );
    let wrong = b
        .post(
            "/account/totp/confirm",
            &[
                ("csrf", &csrf),
                ("current", new_password),
                ("secret", &secret),
                ("code", "000000"),
            ],
        )
        .await;
    assert_eq!(wrong.status, 401);
    assert_eq!(
        wrong.field("secret"),
        secret,
        "the same secret is offered again"
    );
    let raw = totp_rs::Secret::Encoded(secret.clone()).to_bytes().unwrap();
    let code = s.totp_code(&raw);
    let on = b
        .post(
            "/account/totp/confirm",
            &[
                ("csrf", &csrf),
                ("current", new_password),
                ("secret", &secret),
                ("code", &code),
            ],
        )
        .await;
    assert_eq!(
        (on.status.as_u16(), on.location()),
        (303, "/account?done=totp")
    );
    let mut next = Browser::new(&s);
    let step = next.sign_in(ALICE, new_password).await;
    assert!(step.html.contains("authenticator app"), "{}", step.html);
    let step_csrf = step.field("csrf");
    let reused = next
        .post("/login/code", &[("csrf", &step_csrf), ("code", &code)])
        .await;
    assert_eq!(reused.status, 401, "the confirming code is used up");
    assert_eq!(
        b.post(
            "/account/totp/remove",
            &[("csrf", &csrf), ("current", new_password)]
        )
        .await
        .status,
        303
    );
    assert_eq!(
        Browser::new(&s).sign_in(ALICE, new_password).await.status,
        303
    );

    // Every one of these forms needs the CSRF token.
    for path in [
        "/account/password",
        "/account/pin",
        "/account/pin/remove",
        "/account/totp/start",
        "/account/totp/remove",
    ] {
        assert_eq!(b.post(path, &[("pin", "2468")]).await.status, 403, "{path}");
    }
}

/// A browser's answer that parses but proves nothing (no user handle, no signature).
const BOGUS_ASSERTION: &str = r#"{"id":"AAAA","rawId":"AAAA","type":"public-key","response":{"authenticatorData":"AAAA","clientDataJSON":"AAAA","signature":"AAAA","userHandle":null},"extensions":{}}"#;

async fn passkey_tickets_are_this_servers_and_serve_once(db: TestDb) {
    // Without a public_url that is a domain name, no passkey is offered.
    let plain = TestServer::start_with_http(
        TestDb::new(db.backend()).await.unwrap(),
        test_settings(),
        HttpOptions::default(),
    )
    .await;
    let page = Browser::new(&plain).get("/login").await;
    assert!(!page.html.contains("data-passkey"), "{}", page.html);

    let s = TestServer::start_at_localhost(db, test_settings(), HttpOptions::default()).await;
    s.add_user(ALICE, PASSWORD).await;
    let mut b = Browser::new(&s);
    let login = b.get("/login").await;
    assert!(
        login.html.contains("data-passkey-autofill"),
        "{}",
        login.html
    );
    assert!(login.html.contains("<script src=\"/assets/latchkey.js\""));
    let policy = login.headers["content-security-policy"].to_str().unwrap();
    assert!(policy.contains("script-src 'self';"), "{policy}");
    let script = b.get("/assets/latchkey.js").await;
    assert_eq!(script.status, 200);
    assert!(script.headers["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/javascript"));

    let csrf = login.field("csrf");
    let ticket = login.field("ticket");
    // A ticket altered by one character is not this server's.
    let (payload, mac) = ticket.split_once('.').unwrap();
    let flipped = if payload.starts_with('e') { 'f' } else { 'e' };
    let forged = format!("{flipped}{}.{mac}", &payload[1..]);
    let refused = post_passkey(&s, &csrf, &forged, BOGUS_ASSERTION).await;
    assert_eq!(refused.status, 400, "{}", refused.html);
    assert!(
        refused.html.contains("unknown or was used"),
        "{}",
        refused.html
    );

    // The real one is judged once: the answer proves nothing, and the ticket is then spent.
    let judged = post_passkey(&s, &csrf, &ticket, BOGUS_ASSERTION).await;
    assert_eq!(judged.status, 401, "{}", judged.html);
    assert!(
        judged.html.contains("not one of an account here"),
        "{}",
        judged.html
    );
    assert!(
        !judged.headers.contains_key(SET_COOKIE)
            || !judged
                .headers
                .get_all(SET_COOKIE)
                .iter()
                .any(|c| c.to_str().unwrap().starts_with("latchkey_session="))
    );
    let replayed = post_passkey(&s, &csrf, &ticket, BOGUS_ASSERTION).await;
    assert_eq!(replayed.status, 400, "{}", replayed.html);
    assert!(
        replayed.html.contains("unknown or was used"),
        "{}",
        replayed.html
    );

    // An unreadable answer is refused before the ticket is looked at.
    let fresh = b.get("/login").await.field("ticket");
    let garbled = post_passkey(&s, &csrf, &fresh, "{not json").await;
    assert_eq!(garbled.status, 400, "{}", garbled.html);
    assert!(
        garbled.html.contains("could not be read"),
        "{}",
        garbled.html
    );
}

/// Posts a passkey sign-in from a browser holding only the CSRF cookie `csrf`.
async fn post_passkey(s: &TestServer, csrf: &str, ticket: &str, credential: &str) -> Page {
    let mut b = Browser::new(s);
    b.cookies = HashMap::from([("latchkey_csrf".to_owned(), csrf.to_owned())]);
    b.post(
        "/login/passkey",
        &[
            ("csrf", csrf),
            ("ticket", ticket),
            ("credential", credential),
            ("return_to", ""),
        ],
    )
    .await
}

async fn the_account_page_guards_passkey_changes(db: TestDb) {
    let s = TestServer::start_at_localhost(db, test_settings(), HttpOptions::default()).await;
    s.add_user(ALICE, PASSWORD).await;
    let mut b = Browser::new(&s);
    let signed_in = b.sign_in(ALICE, PASSWORD).await;
    assert_eq!(signed_in.status, 303);
    let account = b.get("/account").await;
    assert!(
        account.html.contains("You have no passkey yet"),
        "{}",
        account.html
    );
    let csrf = account.field("csrf");

    // Adding one asks the password again; a wrong one changes nothing.
    let wrong = b
        .post(
            "/account/passkeys/start",
            &[("csrf", &csrf), ("current", "not it"), ("name", "laptop")],
        )
        .await;
    assert_eq!(wrong.status, 401, "{}", wrong.html);
    let nameless = b
        .post(
            "/account/passkeys/start",
            &[("csrf", &csrf), ("current", PASSWORD), ("name", "  ")],
        )
        .await;
    assert_eq!(nameless.status, 400, "{}", nameless.html);
    let started = b
        .post(
            "/account/passkeys/start",
            &[("csrf", &csrf), ("current", PASSWORD), ("name", "laptop")],
        )
        .await;
    assert_eq!(started.status, 200, "{}", started.html);
    assert!(started.html.contains("data-passkey=\"create\""));
    // The options name the user and ask for a discoverable credential with verification.
    let options_start = started.html.find("-options\">").unwrap() + "-options\">".len();
    let options_end = started.html[options_start..].find("</script>").unwrap() + options_start;
    let options: Value = serde_json::from_str(&started.html[options_start..options_end]).unwrap();
    assert_eq!(options["rp"]["id"], "localhost");
    assert_eq!(options["user"]["name"], ALICE);
    assert_eq!(options["authenticatorSelection"]["residentKey"], "required");
    assert_eq!(
        options["authenticatorSelection"]["userVerification"],
        "required"
    );

    // Its ticket belongs to this sign-in: another session of the user cannot finish with it.
    let ticket = started.field("ticket");
    let mut other = Browser::new(&s);
    other.sign_in(ALICE, PASSWORD).await;
    let other_csrf = other.get("/account").await.field("csrf");
    let stolen = other
        .post(
            "/account/passkeys/finish",
            &[
                ("csrf", &other_csrf),
                ("ticket", &ticket),
                ("credential", "{}"),
            ],
        )
        .await;
    assert_eq!(stolen.status, 400, "{}", stolen.html);

    // Unknown passkeys are not found, renamed or removed.
    let removed = b
        .post(
            "/account/passkeys/remove",
            &[("csrf", &csrf), ("current", PASSWORD), ("id", "AAAA")],
        )
        .await;
    assert_eq!(removed.status, 404, "{}", removed.html);
    let renamed = b
        .post(
            "/account/passkeys/rename",
            &[("csrf", &csrf), ("id", "AAAA"), ("name", "x")],
        )
        .await;
    assert_eq!(renamed.status, 404, "{}", renamed.html);
    let malformed = b
        .post(
            "/account/passkeys/rename",
            &[("csrf", &csrf), ("id", "not base64!"), ("name", "x")],
        )
        .await;
    assert_eq!(malformed.status, 400, "{}", malformed.html);
}

async fn the_login_qr_code_is_this_browsers_and_waits_for_the_app(db: TestDb) {
    let s = start(db).await;
    // No sign-in page seen, no code.
    let mut stranger = Browser::new(&s);
    let none = stranger.get("/login/qr.png").await;
    assert_eq!(none.status, 404, "{}", none.html);

    let mut b = Browser::new(&s);
    let login = b.get("/login").await;
    let nonce = b
        .cookies
        .get("latchkey_qr")
        .cloned()
        .expect("a latchkey_qr cookie");
    assert_eq!(nonce.len(), 43);
    let set = login
        .headers
        .get_all(SET_COOKIE)
        .iter()
        .map(|c| c.to_str().unwrap().to_owned())
        .find(|c| c.starts_with("latchkey_qr="))
        .unwrap();
    assert!(set.contains("HttpOnly") && set.ends_with("Path=/"), "{set}");
    let events = format!("/servers/{}/sessions/events?hsid=", s.server_id);
    assert!(login.html.contains(&events), "{}", login.html);
    let policy = login.headers["content-security-policy"].to_str().unwrap();
    assert!(policy.contains("connect-src 'self';"), "{policy}");

    // The image makes the browser session; the same code until it is used or expires.
    let request = b.http.get(s.url("/login/qr.png"));
    let first = b.send(request).await;
    assert_eq!(first.status, 200);
    assert_eq!(first.headers["content-type"], "image/png");
    // Family A sees the same browser session under the cookie's nonce, not logged in.
    let status: Value = s
        .http
        .get(s.url(&format!("/servers/{}/sessions/", s.server_id)))
        .header("X-apikey", &s.api_key)
        .header("X-nonce", &nonce)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(status["loggedin"], false);
    assert!(login.html.contains(status["hsid"].as_str().unwrap()));

    // A browser sending two such cookies (one planted by another host) is given a new one.
    let request = b.http.get(s.url("/login")).header(
        "cookie",
        format!("latchkey_qr={nonce}; latchkey_qr=planted{}", &nonce[7..]),
    );
    let twice = request.send().await.unwrap();
    let renewed = twice
        .headers()
        .get_all(SET_COOKIE)
        .iter()
        .map(|c| c.to_str().unwrap().to_owned())
        .find(|c| c.starts_with("latchkey_qr="))
        .expect("a new latchkey_qr cookie");
    assert!(
        !renewed.contains(&nonce) && !renewed.contains("planted"),
        "{renewed}"
    );

    // Continuing before the app confirmed signs nobody in.
    let csrf = login.field("csrf");
    let early = b
        .post("/login/app", &[("csrf", &csrf), ("return_to", "")])
        .await;
    assert_eq!(early.status, 409, "{}", early.html);
    assert!(early.html.contains("has not confirmed"), "{}", early.html);
    assert!(b.session().is_none());
    let forged = b
        .post(
            "/login/app",
            &[("csrf", "not the token"), ("return_to", "")],
        )
        .await;
    assert_eq!(forged.status, 403);
}

async fn page_routes_answer_refusals_as_pages(db: TestDb) {
    let settings = Settings {
        login_rate_per_address: 1,
        login_burst_per_address: 2,
        ..test_settings()
    };
    let s = TestServer::start_with(db, settings).await;
    s.add_user(ALICE, PASSWORD).await;
    let is_page = |page: &Page| {
        page.headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
            && page.headers.contains_key("content-security-policy")
            && page.headers["x-frame-options"] == "DENY"
    };
    let mut b = Browser::new(&s);
    // Past the address's burst, the sign-in form's post is refused by the guard, as a page.
    let mut last = None;
    for _ in 0..3 {
        last = Some(b.sign_in(ALICE, "wrong password").await);
    }
    let refused = last.unwrap();
    assert_eq!(refused.status, 429, "{}", refused.html);
    assert!(is_page(&refused), "{:?}", refused.headers);
    assert!(
        refused.html.contains("Too many attempts"),
        "{}",
        refused.html
    );
    assert!(refused.headers.contains_key("retry-after"));

    // An unknown page, a wrong method, an oversized body: pages too.
    let unknown = b.get("/account/nothing-here").await;
    assert_eq!(unknown.status, 404);
    assert!(is_page(&unknown) && unknown.html.contains("No such page"));
    let wrong_method = b.get("/logout").await;
    assert_eq!(wrong_method.status, 405);
    assert!(is_page(&wrong_method));
    // A connection of its own: the server answers before reading the body, then closes.
    let too_big = reqwest::Client::new()
        .post(s.url("/account/password"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(vec![b'a'; 70 * 1024])
        .send()
        .await
        .unwrap();
    assert_eq!(too_big.status(), 413);
    assert!(too_big.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    assert!(too_big.headers().contains_key("content-security-policy"));
    // The APIs keep their own shapes.
    let api = b.get("/session/nothing-here").await;
    assert!(api.headers["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/json"));
}

async fn the_admin_console_admits_password_administrators_and_scopes_what_they_do(db: TestDb) {
    use latchkey_core::UserId;
    let s = start(db).await;
    let sid = s.server_id.as_str().to_owned();
    let (bob, carol) = ("bob@example.com", "carol@example.com");
    s.add_user(bob, PASSWORD).await;
    s.add_user(carol, PASSWORD).await;

    // No session: to the sign-in page and back.
    let mut anonymous = Browser::new(&s);
    let r = anonymous.get("/admin").await;
    assert_eq!(
        (r.status.as_u16(), r.location()),
        (303, "/login?return_to=/admin")
    );

    // alice is root; bob holds `users` on the default server through his user role.
    s.core
        .set_user_root(&s.server_id, &UserId::parse(ALICE).unwrap(), true)
        .await
        .unwrap();
    let bobs_role = s.core.user_role_made(&s.server_id, bob).await.unwrap();
    s.core
        .grant_acl(&s.server_id, &bobs_role, &["users".to_owned()])
        .await
        .unwrap();
    let (mut a, mut b, mut c) = (Browser::new(&s), Browser::new(&s), Browser::new(&s));
    for (browser, user) in [(&mut a, ALICE), (&mut b, bob), (&mut c, carol)] {
        assert_eq!(browser.sign_in(user, PASSWORD).await.status, 303);
    }

    // carol manages nothing.
    let refused = c.get("/admin").await;
    assert_eq!(refused.status, 403);
    assert!(refused.html.contains("does not manage any server"));

    // bob: no server details without `servers`, no root pages, no accounts, no audit.
    let home = b.get("/admin").await;
    assert_eq!(home.status, 200, "{}", home.html);
    assert!(home.html.contains("Needs the servers permission"));
    assert!(!home.html.contains("/admin/console/keys"));
    assert!(!home.html.contains("active-sessions"));
    for page in [
        "/admin/console/keys".to_owned(),
        format!("/admin/console/accounts?server={sid}"),
        format!("/admin/console/audit?server={sid}"),
    ] {
        assert_eq!(b.get(&page).await.status, 403, "{page}");
    }
    // A server that is not his: 404, as for one that does not exist.
    let other = s.core.create_server("elsewhere").await.unwrap();
    let r = b
        .get(&format!(
            "/admin/console/users?server={}",
            other.id.as_str()
        ))
        .await;
    assert_eq!(r.status, 404);

    // bob ends carol's sessions, but not alice's: she is an administrator.
    let user = b
        .get(&format!(
            "/admin/console/user?server={sid}&userid=carol%40example.com"
        ))
        .await;
    assert_eq!(user.status, 200, "{}", user.html);
    let csrf = user.field("csrf");
    let done = b
        .post(
            "/admin/console/user",
            &[
                ("csrf", &csrf),
                ("server", &sid),
                ("userid", carol),
                ("action", "sessions"),
            ],
        )
        .await;
    assert_eq!(done.status, 303, "{}", done.html);
    assert_eq!(c.forward_auth().await.status, 401);
    let refused = b
        .post(
            "/admin/console/user",
            &[
                ("csrf", &csrf),
                ("server", &sid),
                ("userid", ALICE),
                ("action", "sessions"),
            ],
        )
        .await;
    assert_eq!(refused.status, 403, "{}", refused.html);
    assert_eq!(a.forward_auth().await.status, 200);
    // A session id that is not the named user's: 404, nothing revoked.
    let alices = a.forward_auth().await.headers["remote-session"]
        .to_str()
        .unwrap()
        .to_owned();
    let r = b
        .post(
            "/admin/console/user",
            &[
                ("csrf", &csrf),
                ("server", &sid),
                ("userid", carol),
                ("action", "session"),
                ("session_id", &alices),
            ],
        )
        .await;
    assert_eq!(r.status, 404, "{}", r.html);
    assert_eq!(a.forward_auth().await.status, 200);
    // Without the CSRF token: refused.
    let r = b
        .post(
            "/admin/console/user",
            &[
                ("csrf", "forged"),
                ("server", &sid),
                ("userid", carol),
                ("action", "sessions"),
            ],
        )
        .await;
    assert_eq!(r.status, 403);

    // alice (root) sees the keys page; an app sign-in alone would not open the console.
    assert_eq!(a.get("/admin/console/keys").await.status, 200);
    let mut by_app = Browser::new(&s);
    let login = by_app.get("/login").await;
    let nonce = by_app.cookies.get("latchkey_qr").cloned().unwrap();
    let phone = crate::nextauth::enrol(&s, Some(ALICE)).await;
    let payload = s
        .http
        .get(s.url(&format!("/servers/{sid}/sessions/qr/login")))
        .header("X-apikey", &s.api_key)
        .header("X-nonce", &nonce)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(phone.login(&s, &payload).await.status(), 200);
    let signed_in = by_app
        .post(
            "/login/app",
            &[("csrf", &login.field("csrf")), ("return_to", "")],
        )
        .await;
    assert_eq!(signed_in.status, 303, "{}", signed_in.html);
    let refused = by_app.get("/admin").await;
    assert_eq!(refused.status, 403);
    assert!(
        refused.html.contains("with your password"),
        "{}",
        refused.html
    );

    // Revoked, bob loses his permissions too.
    s.core
        .set_user_root(&s.server_id, &UserId::parse(bob).unwrap(), false)
        .await
        .unwrap();
    assert_eq!(b.get("/admin").await.status, 403);
}
