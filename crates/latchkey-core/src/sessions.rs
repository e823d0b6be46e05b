//! Sessions of every login method, and the hot path that checks them.
//!
//! Checking an active session must not touch the database: active sessions are kept in a
//! bounded in-memory cache keyed by the hash of their token, "last active" moves in memory and
//! is written to the store in coalesced batches by [`Sessions::flush`] (the HTTP layer calls it
//! every second and at shutdown). A cache entry that looks expired is re-read from the store
//! before the answer is no, so another process that kept the session alive is believed.
//! Revocation removes the entry here at once and is published on the [`Events`] seam, so every
//! other process sharing the store drops it too (PostgreSQL LISTEN/NOTIFY); a process that may
//! have missed events forgets its whole cache.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use uuid::Uuid;

use crate::clock::Clock;
use crate::error::{Error, Result};
use crate::events::{Event, Events};
use crate::ids::ServerId;
use crate::model::{AuthMethod, ClientInfo, MfaKind, Session, SessionState, SessionTouch};
use crate::secret::{IssuedToken, SecretHash};
use crate::settings::Settings;
use crate::store::Store;

/// What the hot path needs of an active session (~150 bytes with the map overhead).
#[derive(Debug)]
struct CachedSession {
    id: Uuid,
    user_id: Uuid,
    /// The hash it is found by in `id_of_token`, for sessions with a bearer token.
    token: Option<SecretHash>,
    absolute_expires_at: i64,
    idle_timeout: i64,
    idle_expires_at: AtomicI64,
}

#[derive(Default)]
struct CacheMaps {
    by_id: HashMap<Uuid, Arc<CachedSession>>,
    /// Sessions with a bearer token (families A and D) are also found by its hash.
    id_of_token: HashMap<SecretHash, Uuid>,
}

/// How a request names its session: by bearer token, or by the `sid` of a verified JWT.
#[derive(Clone, Copy, Debug)]
pub enum SessionKey {
    Token(SecretHash),
    Id(Uuid),
}

/// An active session as the hot path answers it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ActiveSession {
    pub id: Uuid,
    pub user_id: Uuid,
}

/// What a new session starts as.
#[derive(Debug, Clone)]
pub struct NewSession {
    /// Idle timeout once active (see [`Session::idle_timeout`]).
    pub idle_timeout: i64,
    pub server_id: ServerId,
    pub user_id: Option<Uuid>,
    pub methods: Vec<AuthMethod>,
    pub state: SessionState,
    pub client: ClientInfo,
    pub pending_mfa: Option<MfaKind>,
    pub password_ok: bool,
}

pub struct Sessions {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    idle_timeout: i64,
    max_lifetime: i64,
    login_step_timeout: i64,
    capacity: usize,
    events: Arc<dyn Events>,
    cache: RwLock<CacheMaps>,
    dirty: Mutex<HashMap<Uuid, SessionTouch>>,
}

impl Sessions {
    pub fn new(
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        events: Arc<dyn Events>,
        settings: &Settings,
    ) -> Self {
        Self {
            events,
            store,
            clock,
            idle_timeout: settings.session_idle_timeout,
            max_lifetime: settings.session_max_lifetime,
            login_step_timeout: settings.login_step_timeout,
            capacity: settings.session_cache_capacity,
            cache: RwLock::new(CacheMaps::default()),
            dirty: Mutex::new(HashMap::new()),
        }
    }

    /// The idle timeout of browser sessions (families A and D).
    pub fn browser_idle_timeout(&self) -> i64 {
        self.idle_timeout
    }

    /// Idle deadline for a session in `state` at `now`, never past its absolute deadline.
    fn idle_deadline(
        &self,
        state: SessionState,
        now: i64,
        absolute: i64,
        idle_timeout: i64,
    ) -> i64 {
        let timeout = match state {
            SessionState::Active => idle_timeout,
            _ => self.login_step_timeout.min(idle_timeout),
        };
        (now + timeout).min(absolute)
    }

    /// Creates a session and answers it with its bearer token (the only time the token exists
    /// in clear).
    pub async fn create(&self, new: NewSession) -> Result<(Session, IssuedToken)> {
        let now = self.clock.now();
        let absolute = now + self.max_lifetime;
        let session = Session {
            id: Uuid::new_v4(),
            server_id: new.server_id,
            user_id: new.user_id,
            methods: new.methods,
            state: new.state,
            created_at: now,
            last_active_at: now,
            idle_expires_at: self.idle_deadline(new.state, now, absolute, new.idle_timeout),
            absolute_expires_at: absolute,
            idle_timeout: new.idle_timeout,
            client: new.client,
            pending_mfa: new.pending_mfa,
            mfa_failures: 0,
            captcha_answer: None,
            captcha_failures: 0,
            password_ok: new.password_ok,
            revoked_at: None,
        };
        let token = IssuedToken::generate();
        self.store.insert_session(&session, &token.hash).await?;
        if session.state == SessionState::Active {
            self.cache_insert(Some(token.hash), &session);
        }
        Ok((session, token))
    }

    /// The live session (any state) a token names; `SessionInvalid` otherwise. Reads the store.
    pub async fn by_token(&self, token: &str) -> Result<Session> {
        let hash = SecretHash::of(token.as_bytes());
        let now = self.clock.now();
        let Some(mut session) = self.store.session_by_token(&hash).await? else {
            return Err(Error::SessionInvalid);
        };
        // Activity of this process not yet flushed counts too.
        if let Some(entry) = self.cache_get(SessionKey::Token(hash)) {
            let idle = entry.idle_expires_at.load(Ordering::Relaxed);
            session.idle_expires_at = session.idle_expires_at.max(idle);
        }
        if session.is_live(now) {
            Ok(session)
        } else {
            Err(Error::SessionInvalid)
        }
    }

    /// Writes a changed session (state, progress) and moves its idle deadline for the new
    /// state. Sessions that become active join the cache; others leave it.
    pub async fn save(&self, session: &mut Session, token: Option<&str>) -> Result<()> {
        let now = self.clock.now();
        if session.state != SessionState::Revoked {
            session.last_active_at = now;
            session.idle_expires_at = self.idle_deadline(
                session.state,
                now,
                session.absolute_expires_at,
                session.idle_timeout,
            );
        } else if session.revoked_at.is_none() {
            session.revoked_at = Some(now);
        }
        self.store.update_session(session).await?;
        self.cache_remove(session.id);
        if session.state == SessionState::Revoked {
            self.publish_revoked(vec![session.id]).await;
        }
        if session.state == SessionState::Active {
            let hash = token.map(|t| SecretHash::of(t.as_bytes()));
            self.cache_insert(hash, session);
        }
        Ok(())
    }

    /// The hot path for bearer tokens: checks that a token names an active, unexpired session
    /// and moves its idle deadline.
    pub async fn keepalive(&self, token: &str) -> Result<ActiveSession> {
        self.check(SessionKey::Token(SecretHash::of(token.as_bytes())))
            .await
    }

    /// Checks that a session is active and unexpired and counts the call as activity. No
    /// database round trip while the cache entry is fresh.
    pub async fn check(&self, key: SessionKey) -> Result<ActiveSession> {
        self.lookup(key, true).await
    }

    /// Like [`Sessions::check`], without counting as activity (e.g. validating another session).
    pub async fn peek(&self, key: SessionKey) -> Result<ActiveSession> {
        self.lookup(key, false).await
    }

    async fn lookup(&self, key: SessionKey, touch: bool) -> Result<ActiveSession> {
        let now = self.clock.now();
        // This process's own knowledge of the idle deadline, which may be ahead of the store
        // while activity waits to be flushed.
        let mut known_idle = i64::MIN;
        if let Some(entry) = self.cache_get(key) {
            let idle = entry.idle_expires_at.load(Ordering::Relaxed);
            if now < entry.absolute_expires_at && now < idle {
                if touch {
                    self.extend(&entry, now);
                }
                return Ok(ActiveSession {
                    id: entry.id,
                    user_id: entry.user_id,
                });
            }
            known_idle = idle;
        }
        // Miss, or expired by this process's reckoning: the store decides on the state
        // (revocations), the later of the two idle deadlines decides on expiry.
        let (found, token) = match key {
            SessionKey::Token(hash) => (self.store.session_by_token(&hash).await?, Some(hash)),
            SessionKey::Id(id) => (self.store.session(id).await?, None),
        };
        let Some(mut session) = found else {
            return Err(Error::SessionInvalid);
        };
        session.idle_expires_at = session.idle_expires_at.max(known_idle);
        let (true, Some(user_id)) = (session.is_active(now), session.user_id) else {
            self.cache_remove(session.id);
            return Err(Error::SessionInvalid);
        };
        let entry = self.cache_insert(token, &session);
        if touch {
            self.extend(&entry, now);
        }
        Ok(ActiveSession {
            id: session.id,
            user_id,
        })
    }

    fn extend(&self, entry: &CachedSession, now: i64) {
        let idle = (now + entry.idle_timeout).min(entry.absolute_expires_at);
        entry.idle_expires_at.fetch_max(idle, Ordering::Relaxed);
        if let Ok(mut dirty) = self.dirty.lock() {
            dirty.insert(
                entry.id,
                SessionTouch {
                    id: entry.id,
                    last_active_at: now,
                    idle_expires_at: idle,
                },
            );
        }
    }

    /// Writes coalesced activity to the store. Answers how many sessions were written.
    pub async fn flush(&self) -> Result<usize> {
        let batch: Vec<SessionTouch> = match self.dirty.lock() {
            Ok(mut dirty) => dirty.drain().map(|(_, t)| t).collect(),
            Err(_) => return Err(Error::Internal("session activity lock poisoned".into())),
        };
        if batch.is_empty() {
            return Ok(0);
        }
        if let Err(e) = self.store.touch_sessions(&batch).await {
            // Put the batch back so the next flush retries it (newer touches win).
            if let Ok(mut dirty) = self.dirty.lock() {
                for t in batch {
                    dirty.entry(t.id).or_insert(t);
                }
            }
            return Err(e.into());
        }
        Ok(batch.len())
    }

    /// Revokes one session at once, here and in the store.
    pub async fn revoke(&self, id: Uuid) -> Result<bool> {
        self.cache_remove(id);
        let revoked = self.store.revoke_session(id, self.clock.now()).await?;
        self.publish_revoked(vec![id]).await;
        Ok(revoked)
    }

    /// Revokes every live session of a user; answers how many.
    pub async fn revoke_all_of_user(&self, user_id: Uuid) -> Result<usize> {
        let ids = self
            .store
            .revoke_user_sessions(user_id, self.clock.now())
            .await?;
        for id in &ids {
            self.cache_remove(*id);
        }
        let count = ids.len();
        if count > 0 {
            self.publish_revoked(ids).await;
        }
        Ok(count)
    }

    /// Tells the other processes (and this one's listeners). A failure is logged, not returned:
    /// the revocation itself is in the store, and listeners resync after a lost connection.
    async fn publish_revoked(&self, ids: Vec<Uuid>) {
        if let Err(e) = self.events.publish(Event::SessionsRevoked(ids)).await {
            tracing::error!(error = %e, "publishing a revocation failed");
        }
    }

    /// Applies an event from the seam to this process's cache.
    pub fn apply(&self, event: &Event) {
        match event {
            Event::SessionsRevoked(ids) => {
                for id in ids {
                    self.cache_remove(*id);
                }
            }
            Event::Resync => {
                if let Ok(mut cache) = self.cache.write() {
                    *cache = CacheMaps::default();
                }
            }
            Event::BrowserChanged { .. } | Event::PushRequested { .. } => {}
        }
    }

    /// Subscribes to the events seam (for streams that watch other events).
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<Event> {
        self.events.subscribe()
    }

    /// Publishes an event to every process.
    pub async fn publish(&self, event: Event) {
        if let Err(e) = self.events.publish(event).await {
            tracing::error!(error = %e, "publishing an event failed");
        }
    }

    /// Applies events until the seam closes. Run once per process, beside the server.
    pub async fn follow_events(&self) {
        let mut events = self.events.subscribe();
        loop {
            match events.recv().await {
                Ok(event) => self.apply(&event),
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                    self.apply(&Event::Resync)
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            }
        }
    }

    /// Sessions in the hot-path cache (for metrics and memory checks).
    pub fn cached(&self) -> usize {
        self.cache.read().map(|c| c.by_id.len()).unwrap_or(0)
    }

    fn cache_get(&self, key: SessionKey) -> Option<Arc<CachedSession>> {
        let cache = self.cache.read().ok()?;
        let id = match key {
            SessionKey::Token(hash) => *cache.id_of_token.get(&hash)?,
            SessionKey::Id(id) => id,
        };
        cache.by_id.get(&id).cloned()
    }

    fn cache_insert(&self, token: Option<SecretHash>, session: &Session) -> Arc<CachedSession> {
        let mut cache = match self.cache.write() {
            Ok(cache) => cache,
            Err(poisoned) => poisoned.into_inner(),
        };
        let previous = cache.by_id.get(&session.id).cloned();
        let entry = Arc::new(CachedSession {
            id: session.id,
            user_id: session.user_id.unwrap_or_default(),
            token: token.or(previous.as_ref().and_then(|p| p.token)),
            absolute_expires_at: session.absolute_expires_at,
            idle_timeout: session.idle_timeout,
            idle_expires_at: AtomicI64::new(session.idle_expires_at),
        });
        if previous.is_some() || cache.by_id.len() < self.capacity {
            cache.by_id.insert(session.id, entry.clone());
            if let Some(hash) = entry.token {
                cache.id_of_token.insert(hash, session.id);
            }
        }
        entry
    }

    fn cache_remove(&self, id: Uuid) {
        if let Ok(mut cache) = self.cache.write() {
            if let Some(token) = cache.by_id.remove(&id).and_then(|e| e.token) {
                cache.id_of_token.remove(&token);
            }
        }
        if let Ok(mut dirty) = self.dirty.lock() {
            dirty.remove(&id);
        }
    }
}
