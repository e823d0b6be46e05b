//! The storage seam. Two real backends implement it (SQLite embedded, PostgreSQL shared);
//! services hold it as `Arc<dyn Store>`. Methods are small and each is one statement or one
//! transaction, so both backends stay near copies of each other and the contract test suite
//! runs every method on both.

use async_trait::async_trait;
use uuid::Uuid;

use crate::error::StoreError;
use crate::ids::{ServerId, UserId};
use crate::model::{
    Account, ApiKey, AppChallenge, AuditEvent, BrowserSession, NewAccount, PasswordHashes,
    Permissions, PushRequest, RefreshUse, Role, ScramHandshake, Server, Session, SessionTouch,
    SigningKey, User, UserCredentials,
};
use crate::secret::SecretHash;

pub type StoreResult<T> = Result<T, StoreError>;

#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// The backend's name (`sqlite`, `postgres`), for logs and `/readyz`.
    fn backend(&self) -> &'static str;

    /// One round trip: is the database reachable?
    async fn ping(&self) -> StoreResult<()>;

    // --- settings: a small key/value table (e.g. the default server) ---

    async fn setting(&self, key: &str) -> StoreResult<Option<String>>;
    /// Conflict when the key is already set.
    async fn insert_setting(&self, key: &str, value: &str) -> StoreResult<()>;

    // --- servers ---

    async fn insert_server(&self, server: &Server) -> StoreResult<()>;
    async fn server(&self, id: &ServerId) -> StoreResult<Option<Server>>;
    async fn servers(&self) -> StoreResult<Vec<Server>>;

    // --- roles, permissions and API keys ---

    async fn insert_role(&self, role: &Role) -> StoreResult<()>;
    async fn role(&self, id: &str) -> StoreResult<Option<Role>>;
    /// Sets (replaces) a role's permissions on one server.
    async fn set_permissions(
        &self,
        role_id: &str,
        server_id: &ServerId,
        permissions: Permissions,
    ) -> StoreResult<()>;
    /// A role's permissions on one server; all false when none were granted.
    async fn permissions(&self, role_id: &str, server_id: &ServerId) -> StoreResult<Permissions>;
    async fn insert_api_key(&self, key: &ApiKey) -> StoreResult<()>;
    async fn api_key(&self, key_hash: &SecretHash) -> StoreResult<Option<ApiKey>>;

    // --- users and their credentials ---

    /// Conflict when the user name is taken on that server.
    async fn insert_user(&self, user: &User) -> StoreResult<()>;
    async fn user(&self, server_id: &ServerId, userid: &UserId) -> StoreResult<Option<User>>;
    async fn user_by_id(&self, id: Uuid) -> StoreResult<Option<User>>;
    async fn users(&self, server_id: &ServerId) -> StoreResult<Vec<User>>;
    /// Deletes the user and (by cascade) its sessions. False when there was none.
    async fn delete_user(&self, id: Uuid) -> StoreResult<bool>;
    async fn credentials(
        &self,
        server_id: &ServerId,
        userid: &UserId,
    ) -> StoreResult<Option<UserCredentials>>;
    async fn set_password(&self, user_id: Uuid, hashes: &PasswordHashes) -> StoreResult<()>;
    /// Sets or clears the TOTP secret; resets the last accepted step.
    async fn set_totp_secret(&self, user_id: Uuid, secret: Option<&[u8]>) -> StoreResult<()>;
    /// Atomically records `step` as used when it is later than the last used one. False when
    /// that step (or a later one) was already used: the code is refused (one-time use).
    async fn consume_totp_step(&self, user_id: Uuid, step: i64) -> StoreResult<bool>;
    async fn set_pin_hash(&self, user_id: Uuid, pin_hash: Option<&str>) -> StoreResult<()>;

    // --- sessions ---

    /// Stores a new session under the hash of its bearer token.
    async fn insert_session(&self, session: &Session, token_hash: &SecretHash) -> StoreResult<()>;
    async fn session(&self, id: Uuid) -> StoreResult<Option<Session>>;
    async fn session_by_token(&self, token_hash: &SecretHash) -> StoreResult<Option<Session>>;
    /// Writes every mutable field of the session (state, methods, deadlines, login progress).
    async fn update_session(&self, session: &Session) -> StoreResult<()>;
    /// Coalesced activity: moves `last_active_at` and `idle_expires_at` forward (never back).
    async fn touch_sessions(&self, touches: &[SessionTouch]) -> StoreResult<()>;
    /// Revokes one session. False when it was already revoked or does not exist.
    async fn revoke_session(&self, id: Uuid, at: i64) -> StoreResult<bool>;
    /// Revokes every live session of a user; answers the ids revoked.
    async fn revoke_user_sessions(&self, user_id: Uuid, now: i64) -> StoreResult<Vec<Uuid>>;
    /// A user's active, unexpired sessions, newest activity first.
    async fn user_sessions(
        &self,
        user_id: Uuid,
        now: i64,
        offset: u64,
        limit: u64,
    ) -> StoreResult<Vec<Session>>;
    async fn count_user_sessions(&self, user_id: Uuid, now: i64) -> StoreResult<u64>;
    /// Active, unexpired sessions of all users (for the metrics gauge).
    async fn count_active_sessions(&self, now: i64) -> StoreResult<u64>;

    // --- refresh tokens (family B) ---

    async fn insert_refresh_token(
        &self,
        token_hash: &SecretHash,
        session_id: Uuid,
        created_at: i64,
    ) -> StoreResult<()>;
    /// Atomically marks the token used. Answers whether it was fresh, already used, or unknown;
    /// of two concurrent uses exactly one sees `Fresh`.
    async fn use_refresh_token(&self, token_hash: &SecretHash, at: i64) -> StoreResult<RefreshUse>;

    // --- SCRAM handshakes (family B) ---

    async fn insert_handshake(&self, handshake: &ScramHandshake) -> StoreResult<()>;
    /// Removes and answers the handshake (whether expired or not): each is usable once.
    async fn take_handshake(&self, nonce_hash: &SecretHash) -> StoreResult<Option<ScramHandshake>>;

    // --- JWT signing keys ---

    async fn insert_signing_key(&self, key: &SigningKey) -> StoreResult<()>;
    /// All signing keys, newest first.
    async fn signing_keys(&self) -> StoreResult<Vec<SigningKey>>;
    /// Retires every unretired key but `keep_kid`.
    async fn retire_signing_keys(&self, keep_kid: &str, at: i64) -> StoreResult<()>;

    // --- companion app accounts (family A) ---

    /// Answers the new account's id. Conflict when the public key is enrolled on that server.
    async fn insert_account(&self, account: &NewAccount) -> StoreResult<i64>;
    async fn account(&self, server_id: &ServerId, account_id: i64) -> StoreResult<Option<Account>>;
    /// A user's accounts, oldest first.
    async fn user_accounts(&self, user_id: Uuid) -> StoreResult<Vec<Account>>;
    /// NotFound when there is no such account.
    async fn set_account_user(&self, account_id: i64, user_id: Option<Uuid>) -> StoreResult<()>;
    async fn set_account_blocked(&self, account_id: i64, blocked: bool) -> StoreResult<()>;
    /// Records a login and/or a provoke time (each only when given).
    async fn touch_account(
        &self,
        account_id: i64,
        last_login: Option<i64>,
        last_provoke: Option<i64>,
    ) -> StoreResult<()>;

    // --- browser sessions (family A) ---

    /// Inserts unless (server, nonce hash) exists; answers the stored record either way.
    async fn ensure_browser_session(&self, fresh: &BrowserSession) -> StoreResult<BrowserSession>;
    async fn browser_session(
        &self,
        server_id: &ServerId,
        nonce_hash: &SecretHash,
    ) -> StoreResult<Option<BrowserSession>>;
    async fn browser_session_by_hsid(
        &self,
        hsid_hash: &SecretHash,
    ) -> StoreResult<Option<BrowserSession>>;
    async fn browser_session_by_challenge(
        &self,
        challenge_hash: &SecretHash,
    ) -> StoreResult<Option<BrowserSession>>;
    /// Writes every mutable field (session, account, login challenge, user context).
    async fn update_browser_session(&self, session: &BrowserSession) -> StoreResult<()>;
    /// Atomically clears the login challenge `challenge_hash` of a browser session. False when
    /// it was no longer there (used by a concurrent request): each challenge logs in once.
    async fn consume_login_challenge(&self, challenge_hash: &SecretHash) -> StoreResult<bool>;

    // --- app challenges and pushes ---

    async fn insert_app_challenge(&self, challenge: &AppChallenge) -> StoreResult<()>;
    /// Removes and answers the challenge: each is usable once.
    async fn take_app_challenge(
        &self,
        challenge_hash: &SecretHash,
    ) -> StoreResult<Option<AppChallenge>>;
    async fn insert_push(&self, push: &PushRequest) -> StoreResult<()>;
    async fn push(&self, id: Uuid) -> StoreResult<Option<PushRequest>>;
    /// Atomically records the answer. False when the request was already answered.
    async fn answer_push(&self, id: Uuid, approved: bool, at: i64) -> StoreResult<bool>;
    /// An account's unanswered pushes that expire after `now`, oldest first.
    async fn pending_pushes(&self, account_id: i64, now: i64) -> StoreResult<Vec<PushRequest>>;

    // --- brute-force accounting ---

    /// Records one failed login under `key` (a hashed user name or client address).
    async fn record_failure(&self, key: &str, at: i64) -> StoreResult<()>;
    async fn failures_since(&self, key: &str, since: i64) -> StoreResult<u64>;
    async fn clear_failures(&self, key: &str) -> StoreResult<()>;
    /// Marks `key` as needing a CAPTCHA until cleared (idempotent).
    async fn require_captcha(&self, key: &str, since: i64) -> StoreResult<()>;
    async fn captcha_required(&self, key: &str) -> StoreResult<bool>;
    async fn clear_captcha_requirement(&self, key: &str) -> StoreResult<()>;

    // --- audit ---

    async fn insert_audit(&self, event: &AuditEvent) -> StoreResult<()>;
    /// The newest events of a server first.
    async fn audit_events(&self, server_id: &ServerId, limit: u64) -> StoreResult<Vec<AuditEvent>>;

    // --- housekeeping ---

    /// Deletes failures older than `failures_before`, sessions dead since before
    /// `sessions_before` (with their refresh tokens), SCRAM handshakes and app challenges expired
    /// before `failures_before`, and push requests expired before `sessions_before`. Answers the
    /// number of rows removed (not counting rows removed by cascade).
    async fn purge(&self, failures_before: i64, sessions_before: i64) -> StoreResult<u64>;
}
