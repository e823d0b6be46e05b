//! Family A and the companion app: app accounts, browser sessions named by (server, nonce),
//! one-time app challenges, pushed login requests and transactions. A browser session is
//! changed field by field: its login challenge is renewed only when none is current, consumed
//! once, and its session pointer moves by compare-and-set, so a QR login racing another login
//! or a logout never overwrites what the other wrote. A pushed request or a transaction is
//! answered once, by the statement that finds it unanswered.

use async_trait::async_trait;
use uuid::Uuid;

use super::StoreResult;
use crate::crypto::secret::SecretHash;
use crate::model::ids::ServerId;
use crate::model::{
    Account, AppChallenge, BrowserSession, LoginChallenge, NewAccount, PushRequest, Transaction,
    TransactionStatus,
};

#[async_trait]
pub trait AppStore: Send + Sync + 'static {
    // --- companion app accounts ---

    /// Answers the new account's id. Conflict when the public key is enrolled on that server.
    async fn insert_account(&self, account: &NewAccount) -> StoreResult<i64>;
    async fn account(&self, server_id: &ServerId, account_id: i64) -> StoreResult<Option<Account>>;
    /// A user's accounts, oldest first.
    async fn user_accounts(&self, user_id: Uuid) -> StoreResult<Vec<Account>>;
    /// NotFound when there is no such account.
    async fn set_account_user(&self, account_id: i64, user_id: Option<Uuid>) -> StoreResult<()>;
    /// NotFound when there is no such account.
    async fn set_account_blocked(&self, account_id: i64, blocked: bool) -> StoreResult<()>;
    /// Records a login and/or a provoke time (each only when given).
    async fn touch_account(
        &self,
        account_id: i64,
        last_login: Option<i64>,
        last_provoke: Option<i64>,
    ) -> StoreResult<()>;

    // --- browser sessions ---

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
    /// Keeps the UserContext JSON given with a QR request, for the login it leads to.
    async fn set_browser_user_context(
        &self,
        server_id: &ServerId,
        nonce_hash: &SecretHash,
        user_context: &str,
    ) -> StoreResult<()>;
    /// Installs `challenge` as the browser session's login challenge unless one that expires
    /// after `now` is there. True when installed; false leaves the current one in place.
    async fn renew_login_challenge(
        &self,
        server_id: &ServerId,
        nonce_hash: &SecretHash,
        challenge: &LoginChallenge,
        now: i64,
    ) -> StoreResult<bool>;
    /// Clears the login challenge `challenge_hash`. False when it was no longer there (used
    /// by a concurrent request): each challenge logs in once.
    async fn consume_login_challenge(&self, challenge_hash: &SecretHash) -> StoreResult<bool>;
    /// Points the browser session at `session_id` (logged in by `account_id`) and drops its
    /// login challenge, only if it still points at `previous`. False when another request
    /// moved the pointer first: the caller reads again and retries.
    async fn set_browser_login(
        &self,
        server_id: &ServerId,
        nonce_hash: &SecretHash,
        previous: Option<Uuid>,
        session_id: Uuid,
        account_id: i64,
    ) -> StoreResult<bool>;
    /// Clears the session pointer if it still names `previous`. False otherwise.
    async fn clear_browser_login(
        &self,
        server_id: &ServerId,
        nonce_hash: &SecretHash,
        previous: Uuid,
    ) -> StoreResult<bool>;

    // --- app challenges and pushes ---

    async fn insert_app_challenge(&self, challenge: &AppChallenge) -> StoreResult<()>;
    /// Removes and answers the challenge: each is usable once.
    async fn take_app_challenge(
        &self,
        challenge_hash: &SecretHash,
    ) -> StoreResult<Option<AppChallenge>>;
    async fn insert_push(&self, push: &PushRequest) -> StoreResult<()>;
    async fn push(&self, id: Uuid) -> StoreResult<Option<PushRequest>>;
    /// Records the answer in the statement that finds it unanswered and unexpired at `at`.
    /// False when the request was already answered or has expired.
    async fn answer_push(&self, id: Uuid, approved: bool, at: i64) -> StoreResult<bool>;
    /// An account's unanswered pushes that expire after `now`, oldest first.
    async fn pending_pushes(&self, account_id: i64, now: i64) -> StoreResult<Vec<PushRequest>>;

    // --- transactions ---

    /// Inserts the transaction unless its account has `limit` pending ones (new, expiring
    /// after the transaction's `created_at`) already. False when refused for that.
    async fn insert_transaction(&self, transaction: &Transaction, limit: i64) -> StoreResult<bool>;
    async fn transaction(&self, server_id: &ServerId, id: Uuid)
        -> StoreResult<Option<Transaction>>;
    /// Records the answer and its signature in the statement that finds the transaction new
    /// and unexpired at `at`. False when it was already answered or has expired.
    async fn answer_transaction(
        &self,
        id: Uuid,
        status: TransactionStatus,
        at: i64,
        signature: &str,
    ) -> StoreResult<bool>;
    /// An account's new transactions that expire after `now`, oldest first.
    async fn pending_transactions(
        &self,
        account_id: i64,
        now: i64,
    ) -> StoreResult<Vec<Transaction>>;
}
