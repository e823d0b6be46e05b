//! A real latchkey server for black-box tests: the production router and store on port 0, a
//! fresh database, and a [`ManualClock`] the test moves instead of sleeping.

use std::collections::BTreeMap;
use std::sync::Arc;

use latchkey_core::settings::Argon2Params;
use latchkey_core::{Latchkey, ManualClock, ServerId, Settings, Store, UserId};
use latchkey_http::HttpOptions;
use tokio::sync::oneshot;

use crate::db::{Backend, TestDb};

/// A fixed, realistic start time (2027-01-15) so TOTP steps are deterministic.
pub const START: i64 = 1_800_000_000;

/// Cheap hashing so the suite stays fast (the timing test asks for real costs), and no
/// per-address login rate (every test logs in from 127.0.0.1; the admission tests turn it on).
pub fn test_settings() -> Settings {
    Settings {
        login_rate_per_address: 0,
        scram_iterations: 4096,
        argon2: Argon2Params {
            memory_kib: 4096,
            iterations: 1,
            parallelism: 1,
        },
        ..Settings::default()
    }
}

pub struct TestServer {
    /// `http://127.0.0.1:PORT` (`https://localhost:PORT` with TLS).
    pub base: String,
    /// `http://127.0.0.1:PORT` of the management listener, when the options ask for one.
    pub management: Option<String>,
    /// The TLS configuration in use, when the options ask for HTTPS (to reload it).
    pub tls: Option<Arc<latchkey_http::Tls>>,
    pub clock: Arc<ManualClock>,
    pub core: Arc<Latchkey>,
    /// The test's own handle on the database, to look behind the server's back.
    pub store: Arc<dyn Store>,
    pub server_id: ServerId,
    /// The root API key `init` made.
    pub api_key: String,
    pub http: reqwest::Client,
    shutdown: Option<oneshot::Sender<()>>,
    // Dropped last: the database outlives the server (and is shared by `another_process`).
    db: Arc<TestDb>,
}

impl TestServer {
    pub async fn start(db: TestDb) -> TestServer {
        Self::start_with(db, test_settings()).await
    }

    pub async fn start_with(db: TestDb, settings: Settings) -> TestServer {
        Self::start_with_http(db, settings, HttpOptions::default()).await
    }

    /// With HTTP options of the test's choosing (connection caps, timeouts).
    pub async fn start_with_http(db: TestDb, settings: Settings, http: HttpOptions) -> TestServer {
        Self::start_listening(db, settings, http, "127.0.0.1:0".into()).await
    }

    /// Served at `http://localhost:PORT`, its `public_url` (a domain name, as passkeys need:
    /// browsers refuse IP addresses as WebAuthn relying parties), on a free port.
    pub async fn start_at_localhost(
        db: TestDb,
        mut settings: Settings,
        http: HttpOptions,
    ) -> TestServer {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        settings.public_url = Some(format!("http://localhost:{port}"));
        Self::start_listening(db, settings, http, format!("127.0.0.1:{port}")).await
    }

    async fn start_listening(
        db: TestDb,
        settings: Settings,
        http: HttpOptions,
        listen: String,
    ) -> TestServer {
        let clock = Arc::new(ManualClock::new(START));
        let (core, store) = Self::core(&db, clock.clone(), settings).await;
        let init = core.init("test server").await.unwrap();
        Self::serve(
            Arc::new(db),
            core,
            store,
            clock,
            (init.server_id, init.api_key.text),
            http,
            &listen,
        )
        .await
    }

    /// A second latchkey process on the same database (its own caches, clock and events
    /// listener), as behind a load balancer.
    pub async fn another_process(&self) -> TestServer {
        self.another_process_with(self.core.settings.clone()).await
    }

    /// A second latchkey process on the same database with other settings, as after a
    /// restart with a changed configuration (or during a rolling one).
    pub async fn another_process_with(&self, settings: Settings) -> TestServer {
        let clock = Arc::new(ManualClock::new(self.clock_now()));
        let (core, store) = Self::core(&self.db, clock.clone(), settings).await;
        Self::serve(
            self.db.clone(),
            core,
            store,
            clock,
            (self.server_id.clone(), self.api_key.clone()),
            HttpOptions::default(),
            "127.0.0.1:0",
        )
        .await
    }

    async fn core(
        db: &TestDb,
        clock: Arc<ManualClock>,
        settings: Settings,
    ) -> (Arc<Latchkey>, Arc<dyn Store>) {
        let (store, events) = latchkey::open_backend(db.url(), &db.master_key_file())
            .await
            .unwrap();
        let core = Latchkey::with_events(store.clone(), clock, settings, events);
        (core, store)
    }

    async fn serve(
        db: Arc<TestDb>,
        core: Arc<Latchkey>,
        store: Arc<dyn Store>,
        clock: Arc<ManualClock>,
        (server_id, api_key): (ServerId, String),
        http: HttpOptions,
        listen: &str,
    ) -> TestServer {
        let server = latchkey_http::build(core.clone(), http, listen)
            .await
            .unwrap();
        let port = server.local_addr().unwrap().port();
        let base = match (server.tls(), &core.settings.public_url) {
            (Some(_), _) => format!("https://localhost:{port}"),
            (None, Some(url)) if url.starts_with("http://localhost:") => url.clone(),
            (None, _) => format!("http://127.0.0.1:{port}"),
        };
        let management = server.management_addr().map(|a| format!("http://{a}"));
        let tls = server.tls();
        let (tx, rx) = oneshot::channel();
        tokio::spawn(server.run(async {
            let _ = rx.await;
        }));
        TestServer {
            base,
            management,
            tls,
            clock,
            core,
            store,
            server_id,
            api_key,
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            shutdown: Some(tx),
            db,
        }
    }

    /// The number of rows of every table of the database (migration bookkeeping included), by
    /// table name, read through a connection of its own.
    pub async fn row_counts(&self) -> BTreeMap<String, i64> {
        use sqlx::Connection;
        let mut counts = BTreeMap::new();
        match self.db.backend() {
            Backend::Sqlite => {
                let mut conn = sqlx::SqliteConnection::connect(self.db.url())
                    .await
                    .unwrap();
                let tables: Vec<String> = sqlx::query_scalar(
                    "SELECT name FROM sqlite_master \
                     WHERE type = 'table' AND name NOT LIKE 'sqlite_%'",
                )
                .fetch_all(&mut conn)
                .await
                .unwrap();
                for table in tables {
                    let rows: i64 =
                        sqlx::query_scalar(&format!("SELECT COUNT(*) FROM \"{table}\""))
                            .fetch_one(&mut conn)
                            .await
                            .unwrap();
                    counts.insert(table, rows);
                }
                conn.close().await.ok();
            }
            Backend::Postgres => {
                let mut conn = sqlx::PgConnection::connect(self.db.url()).await.unwrap();
                let tables: Vec<String> = sqlx::query_scalar(
                    "SELECT tablename::TEXT FROM pg_tables WHERE schemaname = current_schema()",
                )
                .fetch_all(&mut conn)
                .await
                .unwrap();
                for table in tables {
                    let rows: i64 =
                        sqlx::query_scalar(&format!("SELECT COUNT(*) FROM \"{table}\""))
                            .fetch_one(&mut conn)
                            .await
                            .unwrap();
                    counts.insert(table, rows);
                }
                conn.close().await.ok();
            }
        }
        assert!(!counts.is_empty(), "no tables found");
        counts
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub async fn add_user(&self, userid: &str, password: &str) {
        self.core
            .add_user(
                &self.server_id,
                &UserId::parse(userid).unwrap(),
                Some(password),
            )
            .await
            .unwrap();
    }

    /// Enables TOTP and answers the raw secret, read back from the otpauth URI as an
    /// authenticator app would.
    pub async fn enable_totp(&self, userid: &str) -> Vec<u8> {
        let enrolment = self
            .core
            .enable_totp(&self.server_id, &UserId::parse(userid).unwrap())
            .await
            .unwrap();
        let totp = totp_rs::TOTP::from_url(&enrolment.otpauth_uri).unwrap();
        totp.secret
    }

    pub async fn set_pin(&self, userid: &str, pin: &str) {
        self.core
            .set_pin(&self.server_id, &UserId::parse(userid).unwrap(), pin)
            .await
            .unwrap();
    }

    /// The TOTP code an authenticator shows at the server's current time (totp-rs, not
    /// latchkey's code).
    pub fn totp_code(&self, secret: &[u8]) -> String {
        self.totp_code_at(secret, self.clock_now())
    }

    pub fn totp_code_at(&self, secret: &[u8], time: i64) -> String {
        let totp = totp_rs::TOTP::new_unchecked(
            totp_rs::Algorithm::SHA1,
            6,
            1,
            30,
            secret.to_vec(),
            None,
            String::new(),
        );
        totp.generate(time as u64)
    }

    pub fn clock_now(&self) -> i64 {
        use latchkey_core::Clock;
        self.clock.now()
    }

    /// GET /session/login with Basic credentials.
    pub async fn basic_login(&self, user: &str, password: &str) -> reqwest::Response {
        self.http
            .get(self.url("/session/login"))
            .basic_auth(user, Some(password))
            .send()
            .await
            .unwrap()
    }
}

impl TestServer {
    /// The database under this server.
    pub fn db(&self) -> &TestDb {
        &self.db
    }

    /// Begins the shutdown, as SIGTERM does: `/readyz` turns 503, the public listener stops
    /// accepting, and requests in flight finish (within `drain_timeout`).
    pub fn begin_shutdown(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// The `X-Auth-Token` of a response.
pub fn auth_token(response: &reqwest::Response) -> String {
    response
        .headers()
        .get("x-auth-token")
        .expect("X-Auth-Token header")
        .to_str()
        .unwrap()
        .to_owned()
}

/// Asserts a family D ErrorModel body with the given status and code; answers the body.
pub async fn assert_error_model(
    response: reqwest::Response,
    status: u16,
    code: i64,
) -> serde_json::Value {
    assert_eq!(response.status().as_u16(), status, "status");
    let body: serde_json::Value = response.json().await.expect("a JSON ErrorModel");
    assert!(body["msg"].is_string(), "msg in {body}");
    assert_eq!(body["code"], code, "code in {body}");
    assert!(body["details"].is_object(), "details in {body}");
    body
}
