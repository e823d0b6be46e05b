//! Seeding: active sessions written straight into the store through `Store::insert_session`
//! (thousands per second, where logins over HTTP would take minutes for a million), shaped as a
//! password login makes them. None is in a server's cache until it is first used.

use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context};
use latchkey_core::crypto::secret::IssuedToken;
use latchkey_core::model::{AuthMethod, ClientInfo, Session, SessionState};
use latchkey_core::{Clock, Settings, SystemClock, UserId};
use uuid::Uuid;

pub struct Plan<'a> {
    pub database: &'a str,
    pub master_key_file: &'a Path,
    pub user: &'a str,
    pub sessions: usize,
    pub sample: usize,
    pub concurrency: usize,
    pub tokens: &'a Path,
}

pub async fn seed(plan: Plan<'_>) -> anyhow::Result<()> {
    let store = latchkey::open_store(plan.database, plan.master_key_file).await?;
    let userid = UserId::parse(plan.user)?;
    let mut owner = None;
    for server in store.servers().await? {
        if let Some(user) = store.user(&server.id, &userid).await? {
            owner = Some((server.id, user.id));
            break;
        }
    }
    let (server_id, user_id) = owner.ok_or_else(|| {
        anyhow!(
            "no user {} in {}",
            plan.user,
            latchkey::redact(plan.database)
        )
    })?;

    let start = Instant::now();
    let now = SystemClock.now();
    let lifetime = Settings::default().session_max_lifetime;
    let next = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut workers = Vec::new();
    for _ in 0..plan.concurrency.max(1) {
        let (next, stop, store) = (next.clone(), stop.clone(), store.clone());
        let (server_id, count, sample) = (server_id.clone(), plan.sessions, plan.sample);
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
                if let Err(e) = store
                    .insert_session(&session, &token.hash, None, None)
                    .await
                {
                    stop.store(true, Ordering::Relaxed);
                    return Err(anyhow!("inserting session {i}: {e}"));
                }
                if i < sample {
                    kept.push((i, token.text));
                }
            }
            Ok::<_, anyhow::Error>(kept)
        }));
    }
    let reporter = tokio::spawn({
        let next = next.clone();
        let count = plan.sessions;
        async move {
            let mut tick = tokio::time::interval(Duration::from_secs(10));
            tick.tick().await;
            loop {
                tick.tick().await;
                let n = next.load(Ordering::Relaxed).min(count);
                eprintln!(
                    "  seeded {n}/{count} ({:.0}/s)",
                    n as f64 / start.elapsed().as_secs_f64()
                );
            }
        }
    });
    let mut kept = Vec::new();
    let mut failure = None;
    for worker in workers {
        match worker.await? {
            Ok(mut k) => kept.append(&mut k),
            Err(e) => failure = failure.or(Some(e)),
        }
    }
    reporter.abort();
    if let Some(e) = failure {
        return Err(e);
    }
    kept.sort_unstable_by_key(|(i, _)| *i);
    let mut out = std::io::BufWriter::new(
        std::fs::File::create(plan.tokens)
            .with_context(|| format!("creating {}", plan.tokens.display()))?,
    );
    for (_, token) in &kept {
        writeln!(out, "{token}")?;
    }
    out.flush()?;
    eprintln!(
        "  {} sessions seeded in {:.1} s; {} tokens in {}",
        plan.sessions,
        start.elapsed().as_secs_f64(),
        kept.len(),
        plan.tokens.display()
    );
    Ok(())
}
