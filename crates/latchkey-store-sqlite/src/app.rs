//! Family A and the companion app: accounts, browser sessions named by (server, nonce), one-time
//! app challenges and pushed login requests. A browser session changes field by field, each
//! change one conditional statement: its login challenge is installed only when none is
//! current and consumed once, and its session pointer moves by compare-and-set
//! (`session_id IS ?`), so a QR login racing another login or a logout never overwrites what
//! the other wrote.

use async_trait::async_trait;
use latchkey_core::crypto::secret::SecretHash;
use latchkey_core::model::ids::ServerId;
use latchkey_core::model::{
    Account, AppChallenge, BrowserSession, LoginChallenge, NewAccount, PushRequest, Transaction,
    TransactionStatus,
};
use latchkey_core::store::{AppStore, StoreResult};
use latchkey_core::StoreError;
use uuid::Uuid;

use crate::rows::{
    all, maybe, AccountRow, AppChallengeRow, BrowserSessionRow, PushRow, TransactionRow,
};
use crate::{db, found, SqliteStore};

#[async_trait]
impl AppStore for SqliteStore {
    // --- companion app accounts ---

    async fn insert_account(&self, a: &NewAccount) -> StoreResult<i64> {
        sqlx::query_scalar(
            "INSERT INTO account (server_id, public_key, description, user_id, client_version, \
             created_at) VALUES (?, ?, ?, ?, ?, ?) RETURNING account_id",
        )
        .bind(a.server_id.as_str())
        .bind(&a.public_key[..])
        .bind(&a.description)
        .bind(a.user_id.map(|u| u.to_string()))
        .bind(&a.client_version)
        .bind(a.created_at)
        .fetch_one(&self.pool)
        .await
        .map_err(db)
    }

    async fn account(&self, server_id: &ServerId, account_id: i64) -> StoreResult<Option<Account>> {
        let row: Option<AccountRow> =
            sqlx::query_as("SELECT * FROM account WHERE server_id = ? AND account_id = ?")
                .bind(server_id.as_str())
                .bind(account_id)
                .fetch_optional(&self.pool)
                .await
                .map_err(db)?;
        maybe(row)
    }

    async fn user_accounts(&self, user_id: Uuid) -> StoreResult<Vec<Account>> {
        let rows: Vec<AccountRow> =
            sqlx::query_as("SELECT * FROM account WHERE user_id = ? ORDER BY account_id")
                .bind(user_id.to_string())
                .fetch_all(&self.pool)
                .await
                .map_err(db)?;
        all(rows)
    }

    async fn set_account_user(&self, account_id: i64, user_id: Option<Uuid>) -> StoreResult<()> {
        let done = sqlx::query("UPDATE account SET user_id = ? WHERE account_id = ?")
            .bind(user_id.map(|u| u.to_string()))
            .bind(account_id)
            .execute(&self.pool)
            .await
            .map_err(db)?;
        found(done.rows_affected())
    }

    async fn set_account_blocked(&self, account_id: i64, blocked: bool) -> StoreResult<()> {
        let done = sqlx::query("UPDATE account SET blocked = ? WHERE account_id = ?")
            .bind(blocked)
            .bind(account_id)
            .execute(&self.pool)
            .await
            .map_err(db)?;
        found(done.rows_affected())
    }

    async fn touch_account(
        &self,
        account_id: i64,
        last_login: Option<i64>,
        last_provoke: Option<i64>,
    ) -> StoreResult<()> {
        let done = sqlx::query(
            "UPDATE account SET last_login = COALESCE(?, last_login), \
             last_provoke = COALESCE(?, last_provoke) WHERE account_id = ?",
        )
        .bind(last_login)
        .bind(last_provoke)
        .bind(account_id)
        .execute(&self.pool)
        .await
        .map_err(db)?;
        found(done.rows_affected())
    }

    // --- browser sessions ---

    async fn ensure_browser_session(&self, b: &BrowserSession) -> StoreResult<BrowserSession> {
        sqlx::query(
            "INSERT INTO browser_session (server_id, nonce_hash, hsid_hash, created_at) \
             VALUES (?, ?, ?, ?) ON CONFLICT (server_id, nonce_hash) DO NOTHING",
        )
        .bind(b.server_id.as_str())
        .bind(&b.nonce_hash.0[..])
        .bind(&b.hsid_hash.0[..])
        .bind(b.created_at)
        .execute(&self.pool)
        .await
        .map_err(db)?;
        self.browser_session(&b.server_id, &b.nonce_hash)
            .await?
            .ok_or(StoreError::NotFound)
    }

    async fn browser_session(
        &self,
        server_id: &ServerId,
        nonce_hash: &SecretHash,
    ) -> StoreResult<Option<BrowserSession>> {
        let row: Option<BrowserSessionRow> =
            sqlx::query_as("SELECT * FROM browser_session WHERE server_id = ? AND nonce_hash = ?")
                .bind(server_id.as_str())
                .bind(&nonce_hash.0[..])
                .fetch_optional(&self.pool)
                .await
                .map_err(db)?;
        maybe(row)
    }

    async fn browser_session_by_hsid(
        &self,
        hsid_hash: &SecretHash,
    ) -> StoreResult<Option<BrowserSession>> {
        let row: Option<BrowserSessionRow> =
            sqlx::query_as("SELECT * FROM browser_session WHERE hsid_hash = ?")
                .bind(&hsid_hash.0[..])
                .fetch_optional(&self.pool)
                .await
                .map_err(db)?;
        maybe(row)
    }

    async fn browser_session_by_challenge(
        &self,
        challenge_hash: &SecretHash,
    ) -> StoreResult<Option<BrowserSession>> {
        let row: Option<BrowserSessionRow> =
            sqlx::query_as("SELECT * FROM browser_session WHERE login_challenge = ?")
                .bind(&challenge_hash.0[..])
                .fetch_optional(&self.pool)
                .await
                .map_err(db)?;
        maybe(row)
    }

    async fn set_browser_user_context(
        &self,
        server_id: &ServerId,
        nonce_hash: &SecretHash,
        user_context: &str,
    ) -> StoreResult<()> {
        sqlx::query(
            "UPDATE browser_session SET user_context = ? WHERE server_id = ? AND nonce_hash = ?",
        )
        .bind(user_context)
        .bind(server_id.as_str())
        .bind(&nonce_hash.0[..])
        .execute(&self.pool)
        .await
        .map_err(db)?;
        Ok(())
    }

    async fn renew_login_challenge(
        &self,
        server_id: &ServerId,
        nonce_hash: &SecretHash,
        c: &LoginChallenge,
        now: i64,
    ) -> StoreResult<bool> {
        let done = sqlx::query(
            "UPDATE browser_session SET login_seed = ?, login_challenge = ?, \
             login_expires_at = ?, login_base_url = ? \
             WHERE server_id = ? AND nonce_hash = ? \
             AND (login_challenge IS NULL OR login_expires_at IS NULL OR login_expires_at <= ?)",
        )
        .bind(&c.seed)
        .bind(&c.challenge_hash.0[..])
        .bind(c.expires_at)
        .bind(&c.base_url)
        .bind(server_id.as_str())
        .bind(&nonce_hash.0[..])
        .bind(now)
        .execute(&self.pool)
        .await
        .map_err(db)?;
        Ok(done.rows_affected() == 1)
    }

    async fn consume_login_challenge(&self, challenge_hash: &SecretHash) -> StoreResult<bool> {
        let done = sqlx::query(
            "UPDATE browser_session SET login_seed = NULL, login_challenge = NULL, \
             login_expires_at = NULL, login_base_url = NULL WHERE login_challenge = ?",
        )
        .bind(&challenge_hash.0[..])
        .execute(&self.pool)
        .await
        .map_err(db)?;
        Ok(done.rows_affected() == 1)
    }

    async fn set_browser_login(
        &self,
        server_id: &ServerId,
        nonce_hash: &SecretHash,
        previous: Option<Uuid>,
        session_id: Uuid,
        account_id: i64,
    ) -> StoreResult<bool> {
        // `IS` compares NULL with NULL as equal: "still logged out" is a value to compare too.
        let done = sqlx::query(
            "UPDATE browser_session SET session_id = ?, account_id = ?, login_seed = NULL, \
             login_challenge = NULL, login_expires_at = NULL, login_base_url = NULL \
             WHERE server_id = ? AND nonce_hash = ? AND session_id IS ?",
        )
        .bind(session_id.to_string())
        .bind(account_id)
        .bind(server_id.as_str())
        .bind(&nonce_hash.0[..])
        .bind(previous.map(|p| p.to_string()))
        .execute(&self.pool)
        .await
        .map_err(db)?;
        Ok(done.rows_affected() == 1)
    }

    async fn clear_browser_login(
        &self,
        server_id: &ServerId,
        nonce_hash: &SecretHash,
        previous: Uuid,
    ) -> StoreResult<bool> {
        let done = sqlx::query(
            "UPDATE browser_session SET session_id = NULL \
             WHERE server_id = ? AND nonce_hash = ? AND session_id = ?",
        )
        .bind(server_id.as_str())
        .bind(&nonce_hash.0[..])
        .bind(previous.to_string())
        .execute(&self.pool)
        .await
        .map_err(db)?;
        Ok(done.rows_affected() == 1)
    }

    // --- app challenges and pushes ---

    async fn insert_app_challenge(&self, c: &AppChallenge) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO app_challenge (challenge_hash, server_id, purpose, account_id, name, \
             userid, expires_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&c.challenge_hash.0[..])
        .bind(c.server_id.as_str())
        .bind(&c.purpose)
        .bind(c.account_id)
        .bind(&c.name)
        .bind(&c.userid)
        .bind(c.expires_at)
        .execute(&self.pool)
        .await
        .map_err(db)?;
        Ok(())
    }

    async fn take_app_challenge(
        &self,
        challenge_hash: &SecretHash,
    ) -> StoreResult<Option<AppChallenge>> {
        let row: Option<AppChallengeRow> =
            sqlx::query_as("DELETE FROM app_challenge WHERE challenge_hash = ? RETURNING *")
                .bind(&challenge_hash.0[..])
                .fetch_optional(&self.pool)
                .await
                .map_err(db)?;
        maybe(row)
    }

    async fn insert_push(&self, p: &PushRequest) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO push_request (request_id, server_id, account_id, nonce_hash, \
             user_context, created_at, expires_at, answered_at, approved) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(p.id.to_string())
        .bind(p.server_id.as_str())
        .bind(p.account_id)
        .bind(&p.nonce_hash.0[..])
        .bind(&p.user_context)
        .bind(p.created_at)
        .bind(p.expires_at)
        .bind(p.answered_at)
        .bind(p.approved)
        .execute(&self.pool)
        .await
        .map_err(db)?;
        Ok(())
    }

    async fn push(&self, id: Uuid) -> StoreResult<Option<PushRequest>> {
        let row: Option<PushRow> =
            sqlx::query_as("SELECT * FROM push_request WHERE request_id = ?")
                .bind(id.to_string())
                .fetch_optional(&self.pool)
                .await
                .map_err(db)?;
        maybe(row)
    }

    async fn answer_push(&self, id: Uuid, approved: bool, at: i64) -> StoreResult<bool> {
        let done = sqlx::query(
            "UPDATE push_request SET answered_at = ?1, approved = ?2 \
             WHERE request_id = ?3 AND answered_at IS NULL AND expires_at > ?1",
        )
        .bind(at)
        .bind(approved)
        .bind(id.to_string())
        .execute(&self.pool)
        .await
        .map_err(db)?;
        Ok(done.rows_affected() == 1)
    }

    async fn pending_pushes(&self, account_id: i64, now: i64) -> StoreResult<Vec<PushRequest>> {
        let rows: Vec<PushRow> = sqlx::query_as(
            "SELECT * FROM push_request WHERE account_id = ? AND answered_at IS NULL \
             AND expires_at > ? ORDER BY created_at, request_id",
        )
        .bind(account_id)
        .bind(now)
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        all(rows)
    }

    async fn insert_transaction(&self, t: &Transaction, limit: i64) -> StoreResult<bool> {
        // One statement: the count and the insert see the same database (SQLite serialises
        // writers), so the bound holds under concurrent requests.
        let done = sqlx::query(
            "INSERT INTO app_transaction (transaction_id, server_id, account_id, amount, \
             beneficiary, description, created_at, expires_at, status, answered_at, signature, \
             session_id, answer_signature) \
             SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?13, ?14 \
             WHERE (SELECT count(*) FROM app_transaction WHERE account_id = ?3 \
                    AND status = 0 AND expires_at > ?7) < ?12",
        )
        .bind(t.id.to_string())
        .bind(t.server_id.as_str())
        .bind(t.account_id)
        .bind(&t.amount)
        .bind(&t.beneficiary)
        .bind(&t.description)
        .bind(t.created_at)
        .bind(t.expires_at)
        .bind(t.status as i64)
        .bind(t.answered_at)
        .bind(&t.signature)
        .bind(limit)
        .bind(t.session_id.to_string())
        .bind(&t.answer_signature)
        .execute(&self.pool)
        .await
        .map_err(db)?;
        Ok(done.rows_affected() == 1)
    }

    async fn transaction(
        &self,
        server_id: &ServerId,
        id: Uuid,
    ) -> StoreResult<Option<Transaction>> {
        let row: Option<TransactionRow> = sqlx::query_as(
            "SELECT * FROM app_transaction WHERE transaction_id = ? AND server_id = ?",
        )
        .bind(id.to_string())
        .bind(server_id.as_str())
        .fetch_optional(&self.pool)
        .await
        .map_err(db)?;
        maybe(row)
    }

    async fn answer_transaction(
        &self,
        id: Uuid,
        status: TransactionStatus,
        at: i64,
        signature: &str,
    ) -> StoreResult<bool> {
        let done = sqlx::query(
            "UPDATE app_transaction SET status = ?1, answered_at = ?2, answer_signature = ?4 \
             WHERE transaction_id = ?3 AND status = 0 AND expires_at > ?2",
        )
        .bind(status as i64)
        .bind(at)
        .bind(id.to_string())
        .bind(signature)
        .execute(&self.pool)
        .await
        .map_err(db)?;
        Ok(done.rows_affected() == 1)
    }

    async fn pending_transactions(
        &self,
        account_id: i64,
        now: i64,
    ) -> StoreResult<Vec<Transaction>> {
        let rows: Vec<TransactionRow> = sqlx::query_as(
            "SELECT * FROM app_transaction WHERE account_id = ? AND status = 0 \
             AND expires_at > ? ORDER BY created_at, transaction_id",
        )
        .bind(account_id)
        .bind(now)
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        all(rows)
    }
}
