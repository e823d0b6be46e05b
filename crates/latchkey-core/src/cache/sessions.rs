//! Sessions of every login method, and the hot path that checks them.
//!
//! Checking an active session must not touch the database: active sessions are kept in bounded
//! caches, by the hash of their bearer token ([`super::by_token`]: reads borrow the entry and
//! write nothing) or by their id (quick_cache: a sharded map whose reads take one shard's read
//! lock and set a bit; when full it evicts the least useful entry), whichever they are checked
//! by; a session enters at its first check, not at its creation. An entry's deadlines are
//! checked on every use, and [`Sessions::sweep`] drops the expired ones so they do not hold
//! memory until evicted. A cache entry that looks expired is
//! re-read from the store before the answer is no, so another process that kept the session
//! alive is believed.
//!
//! Activity moves the idle deadline in steps: a check moves it only when that gains at least
//! [`activity_step`] (a tenth of the idle timeout, 1 to 60 s), and each move is written to the
//! store in coalesced batches by [`Sessions::flush`] within a second. A session therefore
//! expires between `idle_timeout - step` and `idle_timeout` after its last check, the same in
//! memory and in the store (so every process, the listings and the revocations see one
//! deadline), and a million sessions checked every few seconds cost a write each per step,
//! not per second. "Last active" is kept to the second in memory and written with the steps;
//! a listing first writes its user's ([`Sessions::flush_user`]) so it shows and orders by it.
//!
//! A session's identity (who is behind it: what a reverse proxy's check answers) is read from
//! the store once and then kept in its entry, so it leaves with the entry too.
//!
//! Revocation removes the entry here at once and is published on the [`Events`] seam, so every
//! other process sharing the store drops it too; a process that may have missed events
//! forgets its whole cache. A store read that raced a revocation must not put the revoked
//! session back: every removal bumps an epoch before it takes the admission lock, and an
//! admission checks the epoch and inserts under that lock (see [`Sessions::admit`]). A
//! revocation names a session by id; the token cache's index from id to token hash lets it
//! reach the token entry even after the id entry was evicted.
//!
//! Each thread keeps sessions it checked recently by id in a small table in front of the id
//! cache ([`super::front`]): a check found there reads the entry without writing its reference
//! count. A front slot is believed only while no entry has left the id cache, and no session
//! was revoked, since it was filled (each moves [`Sessions`]' `departures` once the entry is
//! out).
//!
//! State changes themselves are single conditional statements in the store (see
//! [`crate::store`]); this type only keeps the cache in step with them.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use once_cell::race::OnceBox;
use quick_cache::sync::Cache;
use quick_cache::{DefaultHashBuilder, Lifecycle, UnitWeighter};
use uuid::Uuid;

use super::by_token::{TokenCache, Tracked};
use super::front::Front;
use crate::crypto::secret::{IssuedToken, SecretHash};
use crate::error::{Error, Result};
use crate::model::ids::ServerId;
use crate::model::{
    AuditRecord, AuthMethod, ClientInfo, Identity, MfaKind, Session, SessionState, SessionTouch,
};
use crate::seams::clock::Clock;
use crate::seams::events::{Event, Events};
use crate::settings::Settings;
use crate::store::{Store, Transition};

/// What the hot path needs of an active session: 56 bytes, 80 with the `Arc`'s counts and
/// the allocator's header (with 64-bit times, or the identity inline, it would take a 96-byte
/// block). Times are [`CacheTimes`].
#[derive(Debug)]
struct CachedSession {
    id: Uuid,
    user_id: Uuid,
    absolute_expires_at: u32,
    idle_expires_at: AtomicU32,
    /// Seconds (bounded by a `u32` when cached).
    idle_timeout: u32,
    /// The second of the last check counted as activity by this process (at first, the
    /// stored "last active").
    touched_at: AtomicU32,
    /// Who is behind the session, once a caller asked ([`Sessions::keepalive_identity`]): it
    /// never changes for a session, and it leaves with the entry.
    identity: OnceBox<Identity>,
}

impl CachedSession {
    fn active(&self) -> ActiveSession {
        ActiveSession {
            id: self.id,
            user_id: self.user_id,
        }
    }
}

impl Tracked for CachedSession {
    fn session_id(&self) -> Uuid {
        self.id
    }

    fn last_active(&self) -> u32 {
        self.touched_at.load(Ordering::Relaxed)
    }
}

/// The times of cached entries, in seconds since a base 2^31 s before the cache was made, in
/// a `u32` (68 years either side of its making). A time out of that range is clamped: a
/// deadline then reads earlier than it is, and an entry that looks expired is re-read from
/// the store before the answer is no, so the answer stays the store's.
#[derive(Clone, Copy, Debug)]
struct CacheTimes {
    base: i64,
}

impl CacheTimes {
    fn around(now: i64) -> Self {
        Self {
            base: now.saturating_sub(1 << 31),
        }
    }

    fn of(self, time: i64) -> u32 {
        u32::try_from(time.saturating_sub(self.base).max(0)).unwrap_or(u32::MAX)
    }

    fn time(self, cached: u32) -> i64 {
        self.base.saturating_add(i64::from(cached))
    }
}

/// The longest step of a session's idle deadline (see the module documentation).
const MAX_ACTIVITY_STEP: i64 = 60;

/// How far a check must move a session's idle deadline for the move to be made (and written).
pub fn activity_step(idle_timeout: i64) -> i64 {
    (idle_timeout / 10).clamp(1, MAX_ACTIVITY_STEP)
}

/// How a request names its session: by bearer token, or by the `sid` of a verified JWT.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SessionKey {
    Token(SecretHash),
    Id(Uuid),
}

impl SessionKey {
    /// The key of a bearer token: its hash.
    pub fn of_token(token: &[u8]) -> Self {
        SessionKey::Token(SecretHash::of(token))
    }
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

/// Moves the departures for what an insert into `by_id` pushed out.
#[derive(Clone)]
struct CountEvicted(Arc<AtomicU64>);

impl Lifecycle<Uuid, Arc<CachedSession>> for CountEvicted {
    type RequestState = ();

    fn begin_request(&self) -> Self::RequestState {}

    fn on_evict(&self, _: &mut Self::RequestState, _: Uuid, _: Arc<CachedSession>) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

type IdCache = Cache<Uuid, Arc<CachedSession>, UnitWeighter, DefaultHashBuilder, CountEvicted>;

pub struct Sessions {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    idle_timeout: i64,
    max_lifetime: i64,
    login_step_timeout: i64,
    events: Arc<dyn Events>,
    /// Sessions checked by bearer token (families A and D), with the index from session id to
    /// token that revocations by id use.
    by_token: TokenCache<CachedSession>,
    /// Sessions checked by id (the `sid` of a JWT, family C's validate).
    by_id: IdCache,
    /// Each thread's last sessions checked by id ([`super::front`]).
    id_front: Front<Arc<CachedSession>>,
    /// Bumped whenever entries have left the id cache (eviction, replacement, sweep) and by
    /// every revocation and resync (see [`Sessions::depart`]): a front slot filled before is
    /// not believed.
    departures: Arc<AtomicU64>,
    /// Bumped by every removal from the caches (see [`Sessions::admit`]).
    epoch: AtomicU64,
    /// Held by an admission from its epoch check to its insert, and by removals (see
    /// [`Sessions::admit`]).
    admission: Mutex<()>,
    times: CacheTimes,
    dirty: Mutex<HashMap<Uuid, SessionTouch>>,
}

impl Sessions {
    pub fn new(
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        events: Arc<dyn Events>,
        settings: &Settings,
    ) -> Self {
        let capacity = settings.session_cache_capacity.max(1);
        let departures = Arc::new(AtomicU64::new(0));
        let by_id = IdCache::with(
            capacity,
            capacity as u64,
            UnitWeighter,
            DefaultHashBuilder::default(),
            CountEvicted(departures.clone()),
        );
        Self {
            events,
            store,
            idle_timeout: settings.session_idle_timeout,
            max_lifetime: settings.session_max_lifetime,
            login_step_timeout: settings.login_step_timeout,
            by_token: TokenCache::new(capacity),
            by_id,
            id_front: Front::new(),
            departures,
            epoch: AtomicU64::new(0),
            admission: Mutex::new(()),
            times: CacheTimes::around(clock.now()),
            clock,
            dirty: Mutex::new(HashMap::new()),
        }
    }

    /// The idle timeout of browser sessions (families A and D).
    pub fn browser_idle_timeout(&self) -> i64 {
        self.idle_timeout
    }

    /// The clock values of a transition made now.
    pub fn transition(&self) -> Transition {
        Transition {
            now: self.clock.now(),
            login_step_timeout: self.login_step_timeout,
        }
    }

    /// Creates a session and answers it with its bearer token (the only time the token exists
    /// in clear).
    pub async fn create(&self, new: NewSession) -> Result<(Session, IssuedToken)> {
        self.create_with(new, None, |_| None).await
    }

    /// [`Sessions::create`], with the session's refresh chain started at `refresh` and the
    /// audit record `audit` makes of the session written with it (a login that answers a
    /// refresh token writes once).
    pub async fn create_with(
        &self,
        new: NewSession,
        refresh: Option<&SecretHash>,
        audit: impl FnOnce(&Session) -> Option<AuditRecord> + Send,
    ) -> Result<(Session, IssuedToken)> {
        let now = self.clock.now();
        let absolute = now + self.max_lifetime;
        let timeout = match new.state {
            SessionState::Active => new.idle_timeout,
            _ => self.login_step_timeout.min(new.idle_timeout),
        };
        let session = Session {
            id: Uuid::new_v4(),
            server_id: new.server_id,
            user_id: new.user_id,
            methods: new.methods,
            state: new.state,
            created_at: now,
            last_active_at: now,
            idle_expires_at: (now + timeout).min(absolute),
            absolute_expires_at: absolute,
            idle_timeout: new.idle_timeout,
            client: new.client,
            pending_mfa: new.pending_mfa,
            mfa_attempts: 0,
            captcha_answer: None,
            captcha_failures: 0,
            password_ok: new.password_ok,
            revoked_at: None,
        };
        let token = IssuedToken::generate();
        // Not cached yet: many sessions are never checked by this token (JWT and browser
        // sessions), and the first check reads the store once.
        let record = audit(&session);
        self.store
            .insert_session(&session, &token.hash, refresh, record.as_ref())
            .await?;
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
        if let Some(idle) = self
            .by_token
            .read(&hash, |entry| entry.idle_expires_at.load(Ordering::Relaxed))
        {
            session.idle_expires_at = session.idle_expires_at.max(self.times.time(idle));
        }
        if session.is_live(now) {
            Ok(session)
        } else {
            Err(Error::SessionInvalid)
        }
    }

    /// The epoch to pass to [`Sessions::admit`]: read it before the store read or the
    /// transition whose result will be cached.
    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::SeqCst)
    }

    /// A session that became active (by a transition made after `epoch` was read) joins the
    /// cache with the idle deadline the transition gave it, unless a removal happened
    /// meanwhile. `session` is the session as read before the transition.
    pub fn activated(&self, epoch: u64, token: &str, session: &Session) {
        let now = self.clock.now();
        let active = Session {
            state: SessionState::Active,
            idle_expires_at: now
                .saturating_add(session.idle_timeout.min(session.absolute_expires_at - now)),
            ..session.clone()
        };
        if active.is_active(now) && active.user_id.is_some() {
            self.admit(epoch, Some(SecretHash::of(token.as_bytes())), &active);
        }
    }

    /// The hot path for bearer tokens: checks that a token names an active, unexpired session
    /// and moves its idle deadline.
    pub async fn keepalive(&self, token: &str) -> Result<ActiveSession> {
        self.check(SessionKey::of_token(token.as_bytes())).await
    }

    /// [`Sessions::keepalive`] when memory alone answers it; `None` is not a no (see
    /// [`Sessions::check_now`]).
    pub fn keepalive_now(&self, token: &str) -> Option<ActiveSession> {
        self.check_now(SessionKey::of_token(token.as_bytes()), true)
    }

    /// [`Sessions::keepalive`], answering who is behind the session: read from the store at
    /// the first ask of a cached session (by `load`), then kept in its entry. The hot path of
    /// a reverse proxy's check, which asks for every request it passes.
    pub async fn keepalive_identity<R>(
        &self,
        token: &[u8],
        load: impl AsyncFnOnce(ActiveSession) -> Result<Identity>,
        answer: impl Fn(&Identity) -> R,
    ) -> Result<R> {
        let key = SessionKey::of_token(token);
        if let Some(answered) = self.identity_now(key, &answer) {
            return Ok(answered);
        }
        let entry = self.lookup_entry(key, true, self.clock.now()).await?;
        if let Some(identity) = entry.identity.get() {
            return Ok(answer(identity));
        }
        let identity = load(entry.active()).await?;
        Ok(answer(entry.identity.get_or_init(|| Box::new(identity))))
    }

    /// [`Sessions::keepalive_identity`] when memory alone answers it (the session cached,
    /// unexpired, its identity loaded): no future, no store. `None` is not a no: ask
    /// [`Sessions::keepalive_identity`], which decides.
    pub fn keepalive_identity_now<R>(
        &self,
        token: &[u8],
        answer: impl Fn(&Identity) -> R,
    ) -> Option<R> {
        self.identity_now(SessionKey::of_token(token), &answer)
    }

    fn identity_now<R>(&self, key: SessionKey, answer: impl Fn(&Identity) -> R) -> Option<R> {
        self.in_memory(key, true, self.clock.now(), |entry| {
            entry.identity.get().map(&answer)
        })
    }

    /// Checks that a session is active and unexpired and counts the call as activity. No
    /// database round trip while the cache entry is fresh.
    pub async fn check(&self, key: SessionKey) -> Result<ActiveSession> {
        self.lookup(key, true).await
    }

    /// [`Sessions::check`] (with `touch`) or [`Sessions::peek`] when memory alone answers it:
    /// no future, no store. `None` is not a no: ask them, which decide.
    pub fn check_now(&self, key: SessionKey, touch: bool) -> Option<ActiveSession> {
        self.in_memory(key, touch, self.clock.now(), |entry| Some(entry.active()))
    }

    /// Like [`Sessions::check`], without counting as activity (e.g. validating another session).
    pub async fn peek(&self, key: SessionKey) -> Result<ActiveSession> {
        self.lookup(key, false).await
    }

    async fn lookup(&self, key: SessionKey, touch: bool) -> Result<ActiveSession> {
        if let Some(found) = self.check_now(key, touch) {
            return Ok(found);
        }
        Ok(self
            .lookup_entry(key, touch, self.clock.now())
            .await?
            .active())
    }

    /// `answer` of the entry kept for `key`, borrowed where nothing is written to it (the
    /// token cache, this thread's front of the id cache), when it is unexpired at `now` (then
    /// counted as activity when `touch`); `None`: not kept there, expired, or `answer` found
    /// nothing.
    fn in_memory<R>(
        &self,
        key: SessionKey,
        touch: bool,
        now: i64,
        answer: impl FnOnce(&CachedSession) -> Option<R>,
    ) -> Option<R> {
        let answer = |entry: &CachedSession| {
            if !self.unexpired(entry, now) {
                return None;
            }
            if touch {
                self.extend(entry, now);
            }
            answer(entry)
        };
        match key {
            SessionKey::Token(hash) => self.by_token.read(&hash, |entry| answer(entry)).flatten(),
            SessionKey::Id(id) => {
                let departures = self.departures.load(Ordering::SeqCst);
                self.id_front
                    .read(id.as_u128(), departures, |entry| answer(entry))
            }
        }
    }

    /// Whether an entry's deadlines are after `now` by this process's knowledge.
    fn unexpired(&self, entry: &CachedSession, now: i64) -> bool {
        let second = self.times.of(now);
        second < entry.absolute_expires_at && second < entry.idle_expires_at.load(Ordering::Relaxed)
    }

    /// The cache entry of an active session, loaded from the store on a miss; kept in this
    /// thread's front when checked by id.
    async fn lookup_entry(
        &self,
        key: SessionKey,
        touch: bool,
        now: i64,
    ) -> Result<Arc<CachedSession>> {
        // Read before the caches: a removal after it leaves the front slot filled below unused.
        let departures = self.departures.load(Ordering::SeqCst);
        let keep_in_front = |entry: &Arc<CachedSession>| {
            if let SessionKey::Id(id) = key {
                self.id_front.fill(id.as_u128(), departures, entry.clone());
            }
        };
        // This process's own knowledge of the idle deadline, which may be ahead of the store
        // while activity waits to be flushed.
        let mut known_idle = i64::MIN;
        if let Some(entry) = self.cached_entry(key) {
            if self.unexpired(&entry, now) {
                if touch {
                    self.extend(&entry, now);
                }
                keep_in_front(&entry);
                return Ok(entry);
            }
            known_idle = self
                .times
                .time(entry.idle_expires_at.load(Ordering::Relaxed));
        }
        // Miss, or expired by this process's reckoning: the store decides on the state
        // (revocations), the later of the two idle deadlines decides on expiry.
        let epoch = self.epoch();
        let (found, token) = match key {
            SessionKey::Token(hash) => (self.store.session_by_token(&hash).await?, Some(hash)),
            SessionKey::Id(id) => (self.store.session(id).await?, None),
        };
        let Some(mut session) = found else {
            return Err(Error::SessionInvalid);
        };
        session.idle_expires_at = session.idle_expires_at.max(known_idle);
        let (true, Some(_)) = (session.is_active(now), session.user_id) else {
            self.forget(session.id);
            return Err(Error::SessionInvalid);
        };
        let entry = self.admit(epoch, token, &session);
        if touch {
            self.extend(&entry, now);
        }
        keep_in_front(&entry);
        Ok(entry)
    }

    fn cached_entry(&self, key: SessionKey) -> Option<Arc<CachedSession>> {
        match key {
            SessionKey::Token(hash) => self.by_token.get(&hash),
            SessionKey::Id(id) => self.by_id.get(&id),
        }
    }

    /// A session's entry, cached under its id or under its token.
    fn entry_of(&self, id: Uuid) -> Option<Arc<CachedSession>> {
        self.by_id
            .get(&id)
            .or_else(|| self.by_token.get_by_session(id))
    }

    /// Puts an active session (as read from the store after `epoch` was read) in the cache,
    /// under its token when it was found by one, else under its id; an entry the session
    /// already has under the other key is shared, so both see the same activity. When any
    /// removal happened since `epoch`, the entry is not cached: it may be a session revoked
    /// between the store read and now. A removal bumps the epoch, then takes the admission lock
    /// that this check and the insert are made under: it comes either before the check, or
    /// after the insert and removes the entry itself, so no check made after a revocation
    /// returned can find its session cached. (The entry is answered to the caller either way:
    /// its store read came first.)
    fn admit(
        &self,
        epoch: u64,
        token: Option<SecretHash>,
        session: &Session,
    ) -> Arc<CachedSession> {
        let existing = self.entry_of(session.id);
        let entry = match existing {
            Some(entry) => {
                entry
                    .idle_expires_at
                    .fetch_max(self.times.of(session.idle_expires_at), Ordering::Relaxed);
                entry
            }
            None => Arc::new(CachedSession {
                id: session.id,
                user_id: session.user_id.unwrap_or_default(),
                absolute_expires_at: self.times.of(session.absolute_expires_at),
                idle_timeout: u32::try_from(session.idle_timeout.max(0)).unwrap_or(u32::MAX),
                idle_expires_at: AtomicU32::new(self.times.of(session.idle_expires_at)),
                touched_at: AtomicU32::new(self.times.of(session.last_active_at)),
                identity: OnceBox::new(),
            }),
        };
        let _admitting = self.admit_lock();
        if self.epoch() == epoch {
            match token {
                Some(hash) => self.by_token.insert(hash, entry.clone()),
                None => self.by_id.insert(session.id, entry.clone()),
            }
        }
        entry
    }

    fn admit_lock(&self) -> std::sync::MutexGuard<'_, ()> {
        self.admission.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn extend(&self, entry: &CachedSession, now: i64) {
        // Times are in seconds: after the first check of a second, the others of that second
        // have nothing new to record (and only read the entry, which every core may then
        // keep a copy of).
        let second = self.times.of(now);
        if entry.touched_at.load(Ordering::Relaxed) == second
            || entry.touched_at.swap(second, Ordering::Relaxed) == second
        {
            return;
        }
        // The deadline moves (and is written) only by whole steps: the other checks of a busy
        // session take no shared lock and cost the store nothing.
        let timeout = entry.idle_timeout;
        let idle = second
            .saturating_add(timeout)
            .min(entry.absolute_expires_at);
        let step = activity_step(i64::from(timeout)) as u32;
        if idle
            < entry
                .idle_expires_at
                .load(Ordering::Relaxed)
                .saturating_add(step)
        {
            return;
        }
        entry.idle_expires_at.fetch_max(idle, Ordering::Relaxed);
        self.mark_dirty(SessionTouch {
            id: entry.id,
            last_active_at: now,
            idle_expires_at: self.times.time(idle),
        });
    }

    /// Queues activity for the next flush; a later touch of the same session wins field by
    /// field (both only move forward).
    fn mark_dirty(&self, touch: SessionTouch) {
        if let Ok(mut dirty) = self.dirty.lock() {
            let queued = dirty.entry(touch.id).or_insert(touch);
            queued.last_active_at = queued.last_active_at.max(touch.last_active_at);
            queued.idle_expires_at = queued.idle_expires_at.max(touch.idle_expires_at);
        }
    }

    /// Writes what this process knows of one user's activity, "last active" to the second, with
    /// everything else queued: a listing that follows shows it and orders by it.
    pub async fn flush_user(&self, user_id: Uuid) -> Result<usize> {
        let now = self.clock.now();
        let ids = self.store.user_session_ids(user_id, now).await?;
        for id in ids {
            let Some(entry) = self.entry_of(id) else {
                continue;
            };
            // At first the stored value, which the store keeps (it only moves forward).
            self.mark_dirty(SessionTouch {
                id,
                last_active_at: self.times.time(entry.touched_at.load(Ordering::Relaxed)),
                idle_expires_at: self
                    .times
                    .time(entry.idle_expires_at.load(Ordering::Relaxed)),
            });
        }
        self.flush().await
    }

    /// Writes coalesced activity to the store. Answers how many sessions were written.
    pub async fn flush(&self) -> Result<usize> {
        let batch: Vec<SessionTouch> = match self.dirty.lock() {
            // Taken whole, not drained: a drained map keeps its capacity, which after a burst
            // of many distinct sessions would hold memory for all of them.
            Ok(mut dirty) => std::mem::take(&mut *dirty).into_values().collect(),
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
        let revoked = self.store.revoke_session(id, self.clock.now()).await?;
        self.ended(vec![id]).await;
        Ok(revoked)
    }

    /// Revokes every live session of a user; answers how many.
    pub async fn revoke_all_of_user(&self, user_id: Uuid) -> Result<usize> {
        self.revoke_all_of_user_but(user_id, None).await
    }

    /// Revokes every live session of a user (any state) but `except`, in one statement.
    pub async fn revoke_all_of_user_but(
        &self,
        user_id: Uuid,
        except: Option<Uuid>,
    ) -> Result<usize> {
        // Activity only this process knows of must count: a session alive in memory is live.
        self.flush().await?;
        let ids = self
            .store
            .revoke_user_sessions(user_id, except, self.clock.now())
            .await?;
        let count = ids.len();
        if count > 0 {
            self.ended(ids).await;
        }
        Ok(count)
    }

    /// Sessions that ended in the store (revoked, abandoned, changed owner) leave this cache at
    /// once and every other process's through the events seam. A failure to publish is logged,
    /// not returned: the change itself is in the store, and listeners resync after a lost
    /// connection.
    pub async fn ended(&self, ids: Vec<Uuid>) {
        for id in &ids {
            self.forget(*id);
        }
        if let Err(e) = self.events.publish(Event::SessionsRevoked(ids)).await {
            tracing::error!(error = %e, "publishing a revocation failed");
        }
    }

    /// Applies an event from the seam to this process's cache.
    pub fn apply(&self, event: &Event) {
        match event {
            Event::SessionsRevoked(ids) => {
                for id in ids {
                    self.forget(*id);
                }
            }
            Event::Resync => {
                self.epoch.fetch_add(1, Ordering::SeqCst);
                let _admitting = self.admit_lock();
                self.by_token.clear();
                self.by_id.clear();
                self.depart();
            }
            Event::BrowserChanged { .. }
            | Event::PushRequested { .. }
            | Event::TransactionRequested { .. } => {}
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

    /// Entries in the hot-path caches (for metrics and memory checks): sessions checked by
    /// token plus sessions checked by id.
    pub fn cached(&self) -> usize {
        self.by_token.len() + self.by_id.len()
    }

    /// Drops the entries whose session has expired by `now` as this process knows it (their
    /// tokens leave the index too). An expired entry is never believed anyway: this only frees
    /// memory.
    pub fn sweep(&self, now: i64) {
        let alive = |entry: &CachedSession| {
            let keep = self.unexpired(entry, now);
            if !keep {
                self.depart();
            }
            keep
        };
        self.by_id.retain(|_, entry| alive(entry));
        // Not a departure: the fronts keep only what was checked by id (and the deadlines of
        // an entry they share with a token are checked on every hit).
        self.by_token.retain(|entry| self.unexpired(entry, now));
    }

    /// Marks entries' leaving the caches (see `departures`), once they are out of them (or,
    /// from inside the id cache — its eviction hook, `retain`'s closure in the sweep — under
    /// the shard lock that removes them): a check that read the count before the removal and
    /// found the entry fills a slot the new count leaves unused, and one that read the new
    /// count cannot find the entry. (Moved before the removal, a check could read the new
    /// count, still find the entry, and keep it in its front.)
    fn depart(&self) {
        self.departures.fetch_add(1, Ordering::SeqCst);
    }

    /// Drops a session from this process's caches and its pending activity.
    fn forget(&self, id: Uuid) {
        // Bump first: an admission racing this removal then sees the epoch moved.
        self.epoch.fetch_add(1, Ordering::SeqCst);
        self.remove_entries(id);
        if let Ok(mut dirty) = self.dirty.lock() {
            dirty.remove(&id);
        }
    }

    /// Removes a session's entries, by id and by token.
    fn remove_entries(&self, id: Uuid) {
        let _admitting = self.admit_lock();
        self.by_id.remove(&id);
        self.by_token.remove_session(id);
        self.depart();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cached_session_fits_an_80_byte_allocation_with_its_arc() {
        // The Arc's two counts (16) and glibc's chunk header (8) come on top.
        assert_eq!(std::mem::size_of::<CachedSession>(), 56);
    }

    #[test]
    fn cached_times_are_exact_for_68_years_either_side_and_clamped_beyond() {
        let now = 1_800_000_000_i64;
        let times = CacheTimes::around(now);
        let year = 365 * 24 * 3600;
        for time in [now, now - 1, now + 900, now - 60 * year, now + 60 * year] {
            assert_eq!(times.time(times.of(time)), time);
        }
        // Beyond the range a deadline reads earlier (the store is then asked), and order holds.
        assert_eq!(times.of(now + 100 * year), u32::MAX);
        assert_eq!(times.of(now - 100 * year), 0);
        assert_eq!(times.of(i64::MAX), u32::MAX);
        assert_eq!(times.of(i64::MIN), 0);
        assert!(times.of(now) < times.of(now + 1));
        // Near the ends of i64 (a test clock at 0, a lifetime of i64::MAX) nothing overflows.
        let early = CacheTimes::around(i64::MIN + 5);
        assert_eq!(early.time(early.of(i64::MIN + 10)), i64::MIN + 10);
    }
}
