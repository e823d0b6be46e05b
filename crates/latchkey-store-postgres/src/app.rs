//! Family A and the companion app. A browser session row is shared by every process that
//! serves its web site, its QR login and its event stream, so it is changed field by field:
//! the login challenge is installed only when none is current and cleared by the statement that
//! checks it, and the session pointer moves by compare-and-set (`session_id IS NOT DISTINCT FROM
//! previous`): a QR login racing another login or a logout never overwrites what the other
//! wrote, the loser sees false and reads again. A transaction is inserted under its account's
//! row lock, so concurrent inserts cannot pass the bound on pending transactions together.

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
    AccountRow, AppChallengeRow, BrowserSessionRow, PushRow, TransactionRow, ACCOUNT_COLUMNS,
    APP_CHALLENGE_COLUMNS, BROWSER_SESSION_COLUMNS, PUSH_COLUMNS, TRANSACTION_COLUMNS,
};
use crate::{db, found, PgStore};

#[async_trait]
impl AppStore for PgStore {
    async fn insert_account(&self, a: &NewAccount) -> StoreResult<i64> {
        // A conflicting insert still draws an id from the sequence: ids may have gaps.
        sqlx::query_scalar(
            "INSERT INTO account (server_id, public_key, description, user_id, client_version, \
             created_at) VALUES ($1, $2, $3, $4, $5, $6) RETURNING account_id",
        )
        .bind(a.server_id.as_str())
        .bind(&a.public_key[..])
        .bind(&a.description)
        .bind(a.user_id)
        .bind(&a.client_version)
        .bind(a.created_at)
        .fetch_one(&self.pool)
        .await
        .map_err(db)
    }

    async fn account(&self, server_id: &ServerId, account_id: i64) -> StoreResult<Option<Account>> {
        sqlx::query_as::<_, AccountRow>(&format!(
            "SELECT {ACCOUNT_COLUMNS} FROM account WHERE server_id = $1 AND account_id = $2"
        ))
        .bind(server_id.as_str())
        .bind(account_id)
        .fetch_optional(&self.pool)
        .await
        .map_err(db)?
        .map(Account::try_from)
        .transpose()
    }

    async fn user_accounts(&self, user_id: Uuid) -> StoreResult<Vec<Account>> {
        sqlx::query_as::<_, AccountRow>(&format!(
            "SELECT {ACCOUNT_COLUMNS} FROM account WHERE user_id = $1 ORDER BY account_id"
        ))
        .bind(user_id)
        .fetch_all(&self.pool)
        .await
        .map_err(db)?
        .into_iter()
        .map(Account::try_from)
        .collect()
    }

    async fn set_account_user(&self, account_id: i64, user_id: Option<Uuid>) -> StoreResult<()> {
        let done = sqlx::query("UPDATE account SET user_id = $1 WHERE account_id = $2")
            .bind(user_id)
            .bind(account_id)
            .execute(&self.pool)
            .await
            .map_err(db)?;
        found(done.rows_affected())
    }

    async fn set_account_blocked(&self, account_id: i64, blocked: bool) -> StoreResult<()> {
        let done = sqlx::query("UPDATE account SET blocked = $1 WHERE account_id = $2")
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
            "UPDATE account SET last_login = COALESCE($1, last_login), \
             last_provoke = COALESCE($2, last_provoke) WHERE account_id = $3",
        )
        .bind(last_login)
        .bind(last_provoke)
        .bind(account_id)
        .execute(&self.pool)
        .await
        .map_err(db)?;
        found(done.rows_affected())
    }

    async fn ensure_browser_session(&self, b: &BrowserSession) -> StoreResult<BrowserSession> {
        // Two statements, not one: a concurrent insert of the same key makes this one wait and
        // then do nothing, and only a new statement's snapshot sees the row it committed.
        sqlx::query(
            "INSERT INTO browser_session (server_id, nonce_hash, hsid_hash, created_at) \
             VALUES ($1, $2, $3, $4) ON CONFLICT (server_id, nonce_hash) DO NOTHING",
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
        sqlx::query_as::<_, BrowserSessionRow>(&format!(
            "SELECT {BROWSER_SESSION_COLUMNS} FROM browser_session \
             WHERE server_id = $1 AND nonce_hash = $2"
        ))
        .bind(server_id.as_str())
        .bind(&nonce_hash.0[..])
        .fetch_optional(&self.pool)
        .await
        .map_err(db)?
        .map(BrowserSession::try_from)
        .transpose()
    }

    async fn browser_session_by_hsid(
        &self,
        hsid_hash: &SecretHash,
    ) -> StoreResult<Option<BrowserSession>> {
        sqlx::query_as::<_, BrowserSessionRow>(&format!(
            "SELECT {BROWSER_SESSION_COLUMNS} FROM browser_session WHERE hsid_hash = $1"
        ))
        .bind(&hsid_hash.0[..])
        .fetch_optional(&self.pool)
        .await
        .map_err(db)?
        .map(BrowserSession::try_from)
        .transpose()
    }

    async fn browser_session_by_challenge(
        &self,
        challenge_hash: &SecretHash,
    ) -> StoreResult<Option<BrowserSession>> {
        sqlx::query_as::<_, BrowserSessionRow>(&format!(
            "SELECT {BROWSER_SESSION_COLUMNS} FROM browser_session WHERE login_challenge = $1"
        ))
        .bind(&challenge_hash.0[..])
        .fetch_optional(&self.pool)
        .await
        .map_err(db)?
        .map(BrowserSession::try_from)
        .transpose()
    }

    async fn set_browser_user_context(
        &self,
        server_id: &ServerId,
        nonce_hash: &SecretHash,
        user_context: &str,
    ) -> StoreResult<()> {
        sqlx::query(
            "UPDATE browser_session SET user_context = $3 \
             WHERE server_id = $1 AND nonce_hash = $2",
        )
        .bind(server_id.as_str())
        .bind(&nonce_hash.0[..])
        .bind(user_context)
        .execute(&self.pool)
        .await
        .map_err(db)?;
        Ok(())
    }

    async fn renew_login_challenge(
        &self,
        server_id: &ServerId,
        nonce_hash: &SecretHash,
        challenge: &LoginChallenge,
        now: i64,
    ) -> StoreResult<bool> {
        // Of two processes renewing at once, the second re-checks the condition on the row the
        // first committed, finds a current challenge and keeps it: one QR payload at a time.
        let done = sqlx::query(
            "UPDATE browser_session SET login_seed = $3, login_challenge = $4, \
                 login_expires_at = $5, login_base_url = $6 \
             WHERE server_id = $1 AND nonce_hash = $2 \
             AND (login_challenge IS NULL OR login_expires_at IS NULL \
                  OR login_expires_at <= $7)",
        )
        .bind(server_id.as_str())
        .bind(&nonce_hash.0[..])
        .bind(&challenge.seed)
        .bind(&challenge.challenge_hash.0[..])
        .bind(challenge.expires_at)
        .bind(&challenge.base_url)
        .bind(now)
        .execute(&self.pool)
        .await
        .map_err(db)?;
        Ok(done.rows_affected() == 1)
    }

    async fn consume_login_challenge(&self, challenge_hash: &SecretHash) -> StoreResult<bool> {
        // A concurrent update of the row waits for the first, then re-checks the condition on
        // the row it committed (challenge now NULL) and updates nothing: one true only.
        let done = sqlx::query(
            "UPDATE browser_session SET login_challenge = NULL, login_seed = NULL, \
             login_expires_at = NULL, login_base_url = NULL WHERE login_challenge = $1",
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
        // Compare-and-set: IS NOT DISTINCT FROM so that `previous = None` matches NULL.
        let done = sqlx::query(
            "UPDATE browser_session SET session_id = $4, account_id = $5, \
                 login_seed = NULL, login_challenge = NULL, login_expires_at = NULL, \
                 login_base_url = NULL \
             WHERE server_id = $1 AND nonce_hash = $2 AND session_id IS NOT DISTINCT FROM $3",
        )
        .bind(server_id.as_str())
        .bind(&nonce_hash.0[..])
        .bind(previous)
        .bind(session_id)
        .bind(account_id)
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
             WHERE server_id = $1 AND nonce_hash = $2 AND session_id = $3",
        )
        .bind(server_id.as_str())
        .bind(&nonce_hash.0[..])
        .bind(previous)
        .execute(&self.pool)
        .await
        .map_err(db)?;
        Ok(done.rows_affected() == 1)
    }

    async fn insert_app_challenge(&self, c: &AppChallenge) -> StoreResult<()> {
        sqlx::query(&format!(
            "INSERT INTO app_challenge ({APP_CHALLENGE_COLUMNS}) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)"
        ))
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
        // A concurrent take waits for the first delete, then finds no row: usable once.
        sqlx::query_as::<_, AppChallengeRow>(&format!(
            "DELETE FROM app_challenge WHERE challenge_hash = $1 \
             RETURNING {APP_CHALLENGE_COLUMNS}"
        ))
        .bind(&challenge_hash.0[..])
        .fetch_optional(&self.pool)
        .await
        .map_err(db)?
        .map(AppChallenge::try_from)
        .transpose()
    }

    async fn insert_push(&self, p: &PushRequest) -> StoreResult<()> {
        sqlx::query(&format!(
            "INSERT INTO push_request ({PUSH_COLUMNS}) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
        ))
        .bind(p.id)
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
        sqlx::query_as::<_, PushRow>(&format!(
            "SELECT {PUSH_COLUMNS} FROM push_request WHERE request_id = $1"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await
        .map_err(db)?
        .map(PushRequest::try_from)
        .transpose()
    }

    async fn answer_push(&self, id: Uuid, approved: bool, at: i64) -> StoreResult<bool> {
        // As consume_login_challenge: a racing answer re-checks `answered_at IS NULL` on the
        // committed row and updates nothing; an expired request takes no answer.
        let done = sqlx::query(
            "UPDATE push_request SET answered_at = $1, approved = $2 \
             WHERE request_id = $3 AND answered_at IS NULL AND expires_at > $1",
        )
        .bind(at)
        .bind(approved)
        .bind(id)
        .execute(&self.pool)
        .await
        .map_err(db)?;
        Ok(done.rows_affected() == 1)
    }

    async fn pending_pushes(&self, account_id: i64, now: i64) -> StoreResult<Vec<PushRequest>> {
        // UUIDs compare byte by byte, as their lowercase text does in SQLite.
        sqlx::query_as::<_, PushRow>(&format!(
            "SELECT {PUSH_COLUMNS} FROM push_request WHERE account_id = $1 \
             AND answered_at IS NULL AND expires_at > $2 ORDER BY created_at, request_id"
        ))
        .bind(account_id)
        .bind(now)
        .fetch_all(&self.pool)
        .await
        .map_err(db)?
        .into_iter()
        .map(PushRequest::try_from)
        .collect()
    }

    async fn insert_transaction(&self, t: &Transaction, limit: i64) -> StoreResult<bool> {
        let mut tx = self.pool.begin().await.map_err(db)?;
        // The count below runs after the lock is ours, so it sees every insert committed before.
        let account: Option<i64> =
            sqlx::query_scalar("SELECT account_id FROM account WHERE account_id = $1 FOR UPDATE")
                .bind(t.account_id)
                .fetch_optional(&mut *tx)
                .await
                .map_err(db)?;
        if account.is_none() {
            return Err(StoreError::NotFound);
        }
        let done = sqlx::query(&format!(
            "INSERT INTO app_transaction ({TRANSACTION_COLUMNS}) \
             SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $13, $14 \
             WHERE (SELECT count(*) FROM app_transaction WHERE account_id = $3 \
                    AND status = 0 AND expires_at > $7) < $12"
        ))
        .bind(t.id)
        .bind(t.server_id.as_str())
        .bind(t.account_id)
        .bind(&t.amount)
        .bind(&t.beneficiary)
        .bind(&t.description)
        .bind(t.created_at)
        .bind(t.expires_at)
        .bind(t.status as i16)
        .bind(t.answered_at)
        .bind(&t.signature)
        .bind(limit)
        .bind(t.session_id)
        .bind(&t.answer_signature)
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        tx.commit().await.map_err(db)?;
        Ok(done.rows_affected() == 1)
    }

    async fn transaction(
        &self,
        server_id: &ServerId,
        id: Uuid,
    ) -> StoreResult<Option<Transaction>> {
        sqlx::query_as::<_, TransactionRow>(&format!(
            "SELECT {TRANSACTION_COLUMNS} FROM app_transaction \
             WHERE transaction_id = $1 AND server_id = $2"
        ))
        .bind(id)
        .bind(server_id.as_str())
        .fetch_optional(&self.pool)
        .await
        .map_err(db)?
        .map(Transaction::try_from)
        .transpose()
    }

    async fn answer_transaction(
        &self,
        id: Uuid,
        status: TransactionStatus,
        at: i64,
        signature: &str,
    ) -> StoreResult<bool> {
        // As answer_push: a racing answer re-checks `status = 0` on the committed row.
        let done = sqlx::query(
            "UPDATE app_transaction SET status = $1, answered_at = $2, answer_signature = $4 \
             WHERE transaction_id = $3 AND status = 0 AND expires_at > $2",
        )
        .bind(status as i16)
        .bind(at)
        .bind(id)
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
        sqlx::query_as::<_, TransactionRow>(&format!(
            "SELECT {TRANSACTION_COLUMNS} FROM app_transaction WHERE account_id = $1 \
             AND status = 0 AND expires_at > $2 ORDER BY created_at, transaction_id"
        ))
        .bind(account_id)
        .bind(now)
        .fetch_all(&self.pool)
        .await
        .map_err(db)?
        .into_iter()
        .map(Transaction::try_from)
        .collect()
    }
}
