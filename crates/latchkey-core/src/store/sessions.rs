//! Sessions: created whole, then changed only by transitions. Every transition is one
//! conditional statement naming the state it leaves, and reports whether it happened; there
//! is no method that writes a whole session back.

use async_trait::async_trait;
use uuid::Uuid;

use super::StoreResult;
use crate::crypto::secret::SecretHash;
use crate::model::{AuditRecord, AuthMethod, MfaKind, Session, SessionTouch};

/// The clock values a transition needs: the new idle deadline is
/// `min(now + timeout, absolute deadline)`, where `timeout` is the session's own idle timeout
/// when it becomes active and `min(login_step_timeout, idle timeout)` while a login step waits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Transition {
    pub now: i64,
    pub login_step_timeout: i64,
}

/// What one answer to a session's CAPTCHA did (the challenge is used up either way).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CaptchaVerdict {
    /// The session was not blocked on a CAPTCHA (any more).
    NotBlocked,
    /// Wrong answer (or no challenge drawn). `ended` when that was the last allowed attempt.
    Wrong { ended: bool },
    /// Right answer, but the password kept with the login was wrong: the session ended.
    PasswordWrong,
    /// Right answer and right password: the session is active, or pending this second factor.
    Passed { mfa: Option<MfaKind> },
}

/// Callers check that a session is live (unexpired) before a transition; the transitions
/// check the state they leave. Only `complete_mfa` also checks the deadlines, as the step that
/// makes a session a credential.
#[async_trait]
pub trait SessionStore: Send + Sync + 'static {
    /// Stores a new session under the hash of its bearer token; with `refresh`, its refresh
    /// chain starts at that token in the same statement (as
    /// [`super::TokenStore::start_refresh_chain`] would after it); with `audit`, that record
    /// is written with it, never without it: on PostgreSQL in the same statement (one commit
    /// for both), on SQLite right after it.
    async fn insert_session(
        &self,
        session: &Session,
        token_hash: &SecretHash,
        refresh: Option<&SecretHash>,
        audit: Option<&AuditRecord>,
    ) -> StoreResult<()>;
    async fn session(&self, id: Uuid) -> StoreResult<Option<Session>>;
    async fn session_by_token(&self, token_hash: &SecretHash) -> StoreResult<Option<Session>>;

    /// Claims one second-factor attempt of a session pending MFA, before the code is judged:
    /// answers the attempt's number when it is at most `max_attempts`, `None` when the session
    /// is not pending MFA or its attempts are used up. Concurrent guesses each take a number,
    /// so no more than `max_attempts` codes are ever judged.
    async fn claim_mfa_attempt(&self, id: Uuid, max_attempts: u32) -> StoreResult<Option<u32>>;
    /// `pending_mfa` → `active`, adding `method`. False when the session was no longer pending
    /// (revoked meanwhile, or completed by a concurrent request).
    async fn complete_mfa(&self, id: Uuid, method: AuthMethod, at: Transition)
        -> StoreResult<bool>;
    /// Keeps the answer hash of a freshly drawn CAPTCHA. False unless blocked on CAPTCHA.
    async fn set_captcha_answer(&self, id: Uuid, answer: &SecretHash) -> StoreResult<bool>;
    /// Judges one answer and uses the challenge up, in one conditional statement per outcome;
    /// `max_failures` wrong answers end the session. A session past a deadline at `at.now`
    /// answers `NotBlocked`.
    async fn answer_captcha(
        &self,
        id: Uuid,
        answer: &SecretHash,
        max_failures: u32,
        at: Transition,
    ) -> StoreResult<CaptchaVerdict>;
    /// Ends a login that has not become active (pending MFA or blocked on CAPTCHA). False when
    /// the session is active or already ended: an active session is never ended here.
    async fn abandon_login(&self, id: Uuid, at: i64) -> StoreResult<bool>;
    /// Gives a live session to another user (family A `registeruser`). False when revoked.
    async fn set_session_user(&self, id: Uuid, user_id: Uuid) -> StoreResult<bool>;

    /// Coalesced activity: moves `last_active_at` and `idle_expires_at` forward (never back),
    /// on active sessions only.
    async fn touch_sessions(&self, touches: &[SessionTouch]) -> StoreResult<()>;
    /// Revokes one session. False when it was already revoked or does not exist.
    async fn revoke_session(&self, id: Uuid, at: i64) -> StoreResult<bool>;
    /// Revokes every live session of a user (any state) but `except`; answers the ids revoked.
    async fn revoke_user_sessions(
        &self,
        user_id: Uuid,
        except: Option<Uuid>,
        now: i64,
    ) -> StoreResult<Vec<Uuid>>;
    /// A user's active, unexpired sessions, newest activity first.
    async fn user_sessions(
        &self,
        user_id: Uuid,
        now: i64,
        offset: u64,
        limit: u64,
    ) -> StoreResult<Vec<Session>>;
    async fn count_user_sessions(&self, user_id: Uuid, now: i64) -> StoreResult<u64>;
    /// The ids of a user's active, unexpired sessions, in no particular order.
    async fn user_session_ids(&self, user_id: Uuid, now: i64) -> StoreResult<Vec<Uuid>>;
    /// Active, unexpired sessions of all users (for the metrics gauge).
    async fn count_active_sessions(&self, now: i64) -> StoreResult<u64>;
}
