//! What the benchmark measures against: the real latchkey server and a hello-world axum server,
//! both in this process on loopback port 0, the seeded sessions and a JWT from a real login.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use latchkey_core::crypto::scram::client_proof;
use latchkey_core::crypto::secret::IssuedToken;
use latchkey_core::model::{AuthMethod, ClientInfo, Session, SessionState};
use latchkey_core::{Latchkey, ServerId, Settings, Store, SystemClock, UserId};
use latchkey_http::HttpOptions;
use serde_json::{json, Value};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use uuid::Uuid;

use crate::load;

pub const USER: &str = "bench@example.com";
pub const PASSWORD: &str = "correct horse battery staple";
/// The hello-world body.
pub const HELLO: &str = "Hello, World!";

/// Both servers, running; stopped by [`Servers::stop`].
pub struct Servers {
    pub core: Arc<Latchkey>,
    /// The bench's own handle on the database, for seeding sessions behind the core's back.
    pub store: Arc<dyn Store>,
    pub server_id: ServerId,
    pub user_id: Uuid,
    pub latchkey_addr: SocketAddr,
    pub hello_addr: SocketAddr,
    pub database: String,
    shutdowns: Vec<oneshot::Sender<()>>,
    tasks: Vec<JoinHandle<std::io::Result<()>>>,
    /// The SQLite database's folder, removed when dropped (after the servers stop).
    _dir: tempfile::TempDir,
}

/// Production settings, except a cheap SCRAM verifier (only the set-up login pays it).
pub fn settings() -> Settings {
    Settings {
        scram_iterations: 4096,
        ..Settings::default()
    }
}

/// Starts both servers on the current runtime. `database`: a PostgreSQL URL naming an empty
/// database, or `None` for a fresh SQLite file in a temporary folder.
pub async fn start(database: Option<&str>, settings: Settings) -> anyhow::Result<Servers> {
    // The SQLite file (when no PostgreSQL URL is given) and the master key file.
    let dir = tempfile::tempdir().context("creating a temporary folder")?;
    let url = match database {
        Some(url) => url.to_owned(),
        None => format!("sqlite://{}/latchkey.db", dir.path().display()),
    };
    // As `latchkey serve` does: in-process events for SQLite, LISTEN/NOTIFY for PostgreSQL.
    let (store, events) = latchkey::open_backend(&url, &dir.path().join("master.key")).await?;
    let core = Latchkey::with_events(store.clone(), Arc::new(SystemClock), settings, events);
    let init = core
        .init("bench server")
        .await
        .context("initialising the database (it must be empty)")?;
    let user = core
        .add_user(&init.server_id, &UserId::parse(USER)?, Some(PASSWORD))
        .await?;

    let mut shutdowns = Vec::new();
    let mut tasks = Vec::new();

    let server = latchkey_http::build(core.clone(), HttpOptions::default(), "127.0.0.1:0").await?;
    let latchkey_addr = server.local_addr()?;
    let (tx, rx) = oneshot::channel::<()>();
    shutdowns.push(tx);
    tasks.push(tokio::spawn(async move {
        server
            .run(async {
                let _ = rx.await;
            })
            .await;
        Ok(())
    }));

    let hello = axum::Router::new().route("/", axum::routing::get(|| async { HELLO }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let hello_addr = listener.local_addr()?;
    let (tx, rx) = oneshot::channel::<()>();
    shutdowns.push(tx);
    tasks.push(tokio::spawn(async move {
        axum::serve(listener, hello)
            .with_graceful_shutdown(async {
                let _ = rx.await;
            })
            .await
    }));

    Ok(Servers {
        core,
        store,
        server_id: init.server_id,
        user_id: user.id,
        latchkey_addr,
        hello_addr,
        database: latchkey::redact(&url),
        shutdowns,
        tasks,
        _dir: dir,
    })
}

impl Servers {
    /// Stops both servers (latchkey flushes pending session activity) and removes the
    /// temporary database.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        for tx in self.shutdowns.drain(..) {
            let _ = tx.send(());
        }
        for task in self.tasks.drain(..) {
            match tokio::time::timeout(Duration::from_secs(10), task).await {
                Ok(joined) => joined??,
                Err(_) => eprintln!("latchkey-bench: a server did not stop within 10 s"),
            }
        }
        Ok(())
    }
}

/// The sessions driving the load: token texts and ids of a sample of the seeded sessions.
pub struct Seeded {
    pub tokens: Vec<String>,
    pub ids: Vec<Uuid>,
    pub seconds: f64,
}

/// Stores `count` active sessions of the bench user straight into the store (so none is in the
/// hot-path cache), `concurrency` inserts in flight; keeps the tokens of the first `sample`.
pub async fn seed(
    servers: &Servers,
    count: usize,
    sample: usize,
    concurrency: usize,
    progress: bool,
) -> anyhow::Result<Seeded> {
    let start = Instant::now();
    let next = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let now = servers.core.now();
    let lifetime = servers.core.settings.session_max_lifetime;
    let mut workers = Vec::new();
    for _ in 0..concurrency.max(1) {
        let (next, done, stop) = (next.clone(), done.clone(), stop.clone());
        let store = servers.store.clone();
        let server_id = servers.server_id.clone();
        let user_id = servers.user_id;
        workers.push(tokio::spawn(async move {
            let mut kept = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= count {
                    break;
                }
                let token = IssuedToken::generate();
                let session = Session {
                    id: Uuid::new_v4(),
                    server_id: server_id.clone(),
                    user_id: Some(user_id),
                    methods: vec![AuthMethod::Pwd],
                    state: SessionState::Active,
                    created_at: now,
                    last_active_at: now,
                    idle_expires_at: now + lifetime,
                    absolute_expires_at: now + lifetime,
                    idle_timeout: 900,
                    client: ClientInfo {
                        ip: Some("127.0.0.1".into()),
                        user_agent: Some("latchkey-bench".into()),
                        device_name: None,
                    },
                    pending_mfa: None,
                    mfa_attempts: 0,
                    captcha_answer: None,
                    captcha_failures: 0,
                    password_ok: true,
                    revoked_at: None,
                };
                if let Err(e) = store.insert_session(&session, &token.hash).await {
                    stop.store(true, Ordering::Relaxed);
                    return Err(anyhow!("inserting session {i}: {e}"));
                }
                done.fetch_add(1, Ordering::Relaxed);
                if i < sample {
                    kept.push((i, token.text, session.id));
                }
            }
            Ok::<_, anyhow::Error>(kept)
        }));
    }
    let reporter = progress.then(|| {
        let done = done.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(5));
            tick.tick().await;
            loop {
                tick.tick().await;
                let n = done.load(Ordering::Relaxed);
                let rate = n as f64 / start.elapsed().as_secs_f64();
                let eta = (count.saturating_sub(n)) as f64 / rate.max(1.0);
                eprintln!("    seeded {n}/{count} ({rate:.0}/s, ~{eta:.0} s to go)");
            }
        })
    });
    let mut kept = Vec::with_capacity(sample.min(count));
    let mut failure = None;
    for worker in workers {
        match worker.await? {
            Ok(mut k) => kept.append(&mut k),
            Err(e) => failure = failure.or(Some(e)),
        }
    }
    if let Some(reporter) = reporter {
        reporter.abort();
    }
    if let Some(e) = failure {
        return Err(e);
    }
    kept.sort_unstable_by_key(|(i, _, _)| *i);
    let (tokens, ids) = kept.into_iter().map(|(_, t, id)| (t, id)).unzip();
    Ok(Seeded {
        tokens,
        ids,
        seconds: start.elapsed().as_secs_f64(),
    })
}

/// A real SCRAM-SHA-256 login over HTTP (family B). Answers the access JWT (response header
/// `Session`) and the session id (`deviceId`).
pub async fn scram_login(addr: SocketAddr) -> anyhow::Result<(String, Uuid)> {
    let client_nonce = "bench+client+nonce+0123456789";
    let (status, _, body) = load::post_json(
        addr,
        "/auth/auth",
        &json!({"email": USER, "nonce": client_nonce}),
    )
    .await?;
    if status != 200 {
        bail!(
            "POST /auth/auth answered {status}: {}",
            String::from_utf8_lossy(&body)
        );
    }
    let first: Value = serde_json::from_slice(&body)?;
    let field = |name: &str| {
        first[name]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| anyhow!("POST /auth/auth answered no {name}: {first}"))
    };
    let nonce = field("nonce")?;
    let salt_b64 = field("salt")?;
    let iterations = first["iterationCount"]
        .as_u64()
        .and_then(|n| u32::try_from(n).ok())
        .ok_or_else(|| anyhow!("POST /auth/auth answered no iterationCount: {first}"))?;
    let salt = STANDARD.decode(&salt_b64)?;
    let auth_message =
        format!("n={USER},r={client_nonce},r={nonce},s={salt_b64},i={iterations},c=biws,r={nonce}");
    let proof = client_proof(PASSWORD, &salt, iterations, &auth_message);
    let (status, headers, body) = load::post_json(
        addr,
        "/auth/login",
        &json!({"email": USER, "nonce": nonce, "proof": STANDARD.encode(proof),
                "deviceName": "latchkey-bench"}),
    )
    .await?;
    if status != 200 {
        bail!(
            "POST /auth/login answered {status}: {}",
            String::from_utf8_lossy(&body)
        );
    }
    let jwt = headers
        .get("session")
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| anyhow!("POST /auth/login answered no Session header"))?
        .to_owned();
    let answer: Value = serde_json::from_slice(&body)?;
    let session_id = answer["deviceId"]
        .as_str()
        .and_then(|s| Uuid::parse_str(s).ok())
        .ok_or_else(|| anyhow!("POST /auth/login answered no deviceId: {answer}"))?;
    Ok((jwt, session_id))
}
