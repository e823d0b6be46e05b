//! SCRAM-SHA-256 logins over HTTP (family B: `POST /auth/auth`, then `POST /auth/login`), with
//! the client's PBKDF2 done once ahead: per login the client computes two hashes, so what is
//! measured is the server (nonce bookkeeping, proof check, session and refresh token written).

use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use hyper::header::HeaderMap;
use hyper::Method;
use latchkey_core::crypto::scram::{auth_message, client_key, proof_from_client_key};
use serde_json::{json, Value};

use crate::load::{self, Connection};

/// Measured logins are preceded by this much unmeasured warm-up.
const WARMUP: Duration = Duration::from_secs(1);

#[derive(Clone)]
pub struct Client {
    addr: std::net::SocketAddr,
    user: Arc<str>,
    client_key: [u8; 32],
}

/// What one login answers.
struct Login {
    refresh_token: String,
    jwt: String,
    session_id: String,
}

impl Client {
    /// Learns the user's salt and iteration count and computes the ClientKey once.
    pub async fn new(url: &str, user: &str, password: &str) -> anyhow::Result<Self> {
        let addr = load::address(url)?;
        let mut connection = Connection::new(addr);
        let first = server_first(&mut connection, user, "bench-setup").await?;
        Ok(Self {
            addr,
            user: Arc::from(user),
            client_key: client_key(password, &first.salt, first.iterations),
        })
    }

    async fn login(&self, connection: &mut Connection) -> anyhow::Result<Login> {
        let client_nonce = uuid::Uuid::new_v4().simple().to_string();
        let first = server_first(connection, &self.user, &client_nonce).await?;
        let message = auth_message(
            &self.user,
            &client_nonce,
            &first.nonce,
            &first.salt,
            first.iterations,
        );
        let proof = proof_from_client_key(&self.client_key, &message);
        let body = json!({"email": &*self.user, "nonce": first.nonce,
                          "proof": STANDARD.encode(proof), "deviceName": "latchkey-bench"});
        let (headers, answer) = post(connection, "/auth/login", &body).await?;
        Ok(Login {
            refresh_token: field(&answer, "refreshToken", "/auth/login")?,
            session_id: field(&answer, "deviceId", "/auth/login")?,
            jwt: headers
                .get("session")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
                .ok_or_else(|| anyhow!("/auth/login answered no Session header"))?,
        })
    }

    /// Logs in `count` times over `connections` connections; writes one refresh token per line
    /// to `refresh_tokens`, and "<jwt> <session id>" of one login to `jwt`.
    pub async fn hand_out(
        &self,
        count: usize,
        connections: usize,
        refresh_tokens: &Path,
        jwt: Option<&Path>,
    ) -> anyhow::Result<()> {
        let next = Arc::new(AtomicUsize::new(0));
        let logins = Arc::new(Mutex::new(Vec::with_capacity(count)));
        let mut tasks = Vec::new();
        for _ in 0..connections.clamp(1, count.max(1)) {
            let (client, next, logins) = (self.clone(), next.clone(), logins.clone());
            tasks.push(tokio::spawn(async move {
                let mut connection = Connection::new(client.addr);
                while next.fetch_add(1, Ordering::Relaxed) < count {
                    let login = client.login(&mut connection).await?;
                    logins.lock().map_err(|_| anyhow!("poisoned"))?.push(login);
                }
                Ok::<_, anyhow::Error>(())
            }));
        }
        for task in tasks {
            task.await??;
        }
        let logins = std::mem::take(&mut *logins.lock().map_err(|_| anyhow!("poisoned"))?);
        let mut out = std::io::BufWriter::new(
            std::fs::File::create(refresh_tokens)
                .with_context(|| format!("creating {}", refresh_tokens.display()))?,
        );
        for login in &logins {
            writeln!(out, "{}", login.refresh_token)?;
        }
        out.flush()?;
        if let (Some(path), Some(login)) = (jwt, logins.first()) {
            std::fs::write(path, format!("{} {}\n", login.jwt, login.session_id))
                .with_context(|| format!("writing {}", path.display()))?;
        }
        Ok(())
    }

    /// Logs in as fast as the server answers for `seconds` (after a warm-up); prints
    /// `requests/s <n> p50_ms <n> p99_ms <n> errors <n>`, a login counting as one request.
    pub async fn measure(&self, connections: usize, seconds: u64) -> anyhow::Result<()> {
        let client = self.clone();
        let measured = load::closed_loop(
            self.addr,
            connections,
            WARMUP,
            Duration::from_secs(seconds),
            move |mut connection| {
                let client = client.clone();
                async move {
                    let outcome = client.login(&mut connection).await.map(drop);
                    (connection, outcome)
                }
            },
        )
        .await?;
        println!(
            "requests/s {:.0} p50_ms {:.2} p99_ms {:.2} errors {}",
            measured.ok as f64 / seconds as f64,
            f64::from(measured.p50_us) / 1000.0,
            f64::from(measured.p99_us) / 1000.0,
            measured.errors
        );
        if let Some(first) = measured.first_error {
            eprintln!("  first failed login: {first}");
        }
        Ok(())
    }
}

struct ServerFirst {
    nonce: String,
    salt: Vec<u8>,
    iterations: u32,
}

async fn server_first(
    connection: &mut Connection,
    user: &str,
    client_nonce: &str,
) -> anyhow::Result<ServerFirst> {
    let body = json!({"email": user, "nonce": client_nonce});
    let (_, first) = post(connection, "/auth/auth", &body).await?;
    Ok(ServerFirst {
        nonce: field(&first, "nonce", "/auth/auth")?,
        salt: STANDARD.decode(field(&first, "salt", "/auth/auth")?)?,
        iterations: first["iterationCount"]
            .as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .ok_or_else(|| anyhow!("/auth/auth answered no iterationCount: {first}"))?,
    })
}

/// POSTs a JSON body; answers the headers and the JSON answer of a 200, an error otherwise.
async fn post(
    connection: &mut Connection,
    path: &str,
    body: &Value,
) -> anyhow::Result<(HeaderMap, Value)> {
    let (status, headers, answer) = connection.send(Method::POST, path, &[], Some(body)).await?;
    if status != 200 {
        bail!(
            "{path} answered {status}: {}",
            String::from_utf8_lossy(&answer)
        );
    }
    Ok((headers, serde_json::from_slice(&answer)?))
}

/// A text field of an answer from `path`.
fn field(answer: &Value, name: &str, path: &str) -> anyhow::Result<String> {
    answer[name]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| anyhow!("{path} answered no {name}: {answer}"))
}
