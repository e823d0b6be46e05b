//! Family A transactions (docs/app-protocol.md, "Transactions"): a relying party asks the
//! person logged in on a browser session to confirm an amount, a beneficiary and a
//! description in the companion app. The server signs the values once, when it makes the
//! transaction, and pushes it on the account's event stream; the app checks that signature with
//! the server key it pinned, shows the values and signs its answer over them, so an answer
//! counts only for exactly what was shown, and is kept: an approval is reported only while its
//! signature still verifies over the stored values. A transaction lives within the session
//! logged in when it was made: answered once, it expires unanswered after [`TRANSACTION_TTL`]
//! or when that session ends.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use uuid::Uuid;

use crate::cache::sessions::SessionKey;
use crate::crypto::qr::{app_message, verify_account_signature};
use crate::crypto::secret::SecretHash;
use crate::crypto::transaction::{hides_text, TransactionValues};
use crate::error::{Error, Result};
use crate::model::ids::{Nonce, ServerId};
use crate::model::{Account, Transaction, TransactionStatus};
use crate::seams::events::Event;
use crate::services::audit::AuditEvent;
use crate::services::nextauth::nonce_hash;
use crate::services::Latchkey;

/// Seconds a transaction waits for its answer.
pub const TRANSACTION_TTL: i64 = 300;
/// Unanswered transactions an account may have at once; more are refused (409).
pub const MAX_PENDING: i64 = 16;
const MAX_AMOUNT: usize = 64;
const MAX_BENEFICIARY: usize = 200;
const MAX_DESCRIPTION: usize = 1000;
const MAX_DESCRIPTION_LINES: usize = 10;

/// What the relying party asks to confirm (the vendor's Transaction model).
#[derive(Clone, Debug, Default)]
pub struct TransactionRequest {
    pub amount: Option<String>,
    pub beneficiary: Option<String>,
    pub description: Option<String>,
}

/// A transaction as the app receives it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TransactionView {
    pub tid: String,
    pub server_id: ServerId,
    pub account_id: i64,
    pub amount: String,
    pub beneficiary: String,
    pub description: String,
    pub created: i64,
    pub expires: i64,
    /// The server's signature over the values (see [`TransactionValues`]).
    pub signature: String,
}

/// The API's transaction id: base64url of the id's 16 bytes.
pub fn tid(id: Uuid) -> String {
    URL_SAFE_NO_PAD.encode(id.as_bytes())
}

/// The id a transaction id names; `None` for text that names none.
pub fn parse_tid(text: &str) -> Option<Uuid> {
    let bytes: [u8; 16] = URL_SAFE_NO_PAD.decode(text).ok()?.try_into().ok()?;
    Some(Uuid::from_bytes(bytes))
}

impl Transaction {
    /// The signed values, with `tid` as the API writes it.
    pub fn values<'a>(&'a self, tid: &'a str) -> TransactionValues<'a> {
        TransactionValues {
            server_id: self.server_id.as_str(),
            tid,
            account_id: self.account_id,
            amount: &self.amount,
            beneficiary: &self.beneficiary,
            description: &self.description,
            created: self.created_at,
            expires: self.expires_at,
        }
    }

    /// The status the relying party reads: an unanswered transaction past its expiry counts as
    /// declined (nobody approved it in time).
    pub fn status_at(&self, now: i64) -> TransactionStatus {
        match self.status {
            TransactionStatus::New if self.expires_at <= now => TransactionStatus::Declined,
            status => status,
        }
    }
}

impl From<&Transaction> for TransactionView {
    fn from(t: &Transaction) -> Self {
        TransactionView {
            tid: tid(t.id),
            server_id: t.server_id.clone(),
            account_id: t.account_id,
            amount: t.amount.clone(),
            beneficiary: t.beneficiary.clone(),
            description: t.description.clone(),
            created: t.created_at,
            expires: t.expires_at,
            signature: t.signature.clone(),
        }
    }
}

/// A value as given, or empty; refused when too long or holding a character that could hide
/// what is shown ([`hides_text`]). Only the description may hold line breaks, at most
/// [`MAX_DESCRIPTION_LINES`] lines.
fn checked(value: Option<String>, name: &str, max: usize, lines: bool) -> Result<String> {
    let value = value.unwrap_or_default();
    if value.chars().count() > max {
        return Err(Error::Invalid(format!(
            "{name} must be at most {max} characters"
        )));
    }
    if value
        .chars()
        .any(|c| hides_text(c) && !(lines && c == '\n'))
    {
        return Err(Error::Invalid(format!(
            "{name} must not hold control, format or invisible characters"
        )));
    }
    if lines && value.lines().count() > MAX_DESCRIPTION_LINES {
        return Err(Error::Invalid(format!(
            "{name} must be at most {MAX_DESCRIPTION_LINES} lines"
        )));
    }
    Ok(value)
}

fn no_account() -> Error {
    Error::Forbidden("no account associated with this session".into())
}

impl Latchkey {
    /// Makes a transaction for the account logged in on the browser session (server, nonce) and
    /// pushes it to that account's app. Answers the transaction id.
    pub async fn create_transaction(
        &self,
        server_id: &ServerId,
        nonce: &Nonce,
        request: TransactionRequest,
    ) -> Result<String> {
        let amount = checked(request.amount, "amount", MAX_AMOUNT, false)?;
        let beneficiary = checked(request.beneficiary, "benificiary", MAX_BENEFICIARY, false)?;
        let description = checked(request.description, "description", MAX_DESCRIPTION, true)?;
        if amount.is_empty() && beneficiary.is_empty() && description.is_empty() {
            return Err(Error::Invalid(
                "a transaction needs an amount, a benificiary or a description".into(),
            ));
        }
        let server = self.server(server_id).await?;
        let now = self.now();
        let browser = self
            .store
            .browser_session(server_id, &nonce_hash(nonce))
            .await?
            .ok_or_else(no_account)?;
        let session_id = browser.session_id.ok_or_else(no_account)?;
        if !self.session_lives(session_id).await? {
            return Err(no_account());
        }
        let account = self
            .store
            .account(server_id, browser.account_id.ok_or_else(no_account)?)
            .await?
            .ok_or_else(no_account)?;
        if account.blocked {
            return Err(Error::Forbidden("the account is blocked".into()));
        }
        let mut transaction = Transaction {
            id: Uuid::new_v4(),
            server_id: server_id.clone(),
            account_id: account.id,
            session_id,
            amount,
            beneficiary,
            description,
            created_at: now,
            expires_at: now + TRANSACTION_TTL,
            status: TransactionStatus::New,
            answered_at: None,
            signature: String::new(),
            answer_signature: None,
        };
        let tid = tid(transaction.id);
        transaction.signature = transaction.values(&tid).sign_as_server(&server.secret_key);
        if !self
            .store
            .insert_transaction(&transaction, MAX_PENDING)
            .await?
        {
            return Err(Error::Conflict(format!(
                "the account has {MAX_PENDING} transactions waiting for an answer already"
            )));
        }
        // Pushed before it is audited: a failing audit write must not keep it from the app.
        self.sessions
            .publish(Event::TransactionRequested {
                account_id: account.id,
                transaction_id: transaction.id,
            })
            .await;
        self.audit(
            server_id,
            AuditEvent::TransactionCreated {
                account_id: account.id,
                tid: &tid,
            },
        )
        .await?;
        Ok(tid)
    }

    /// Where a transaction stands, for the relying party.
    pub async fn transaction_status(
        &self,
        server_id: &ServerId,
        tid: &str,
    ) -> Result<TransactionStatus> {
        self.server(server_id).await?;
        let transaction = self.transaction(server_id, tid).await?;
        self.reported_status(&transaction).await
    }

    /// What a transaction's status is taken to be: new only while it is unexpired and its
    /// session lives; approved only while the stored approval verifies over the stored values
    /// with the account's key (a row changed behind latchkey's back reads declined).
    async fn reported_status(&self, t: &Transaction) -> Result<TransactionStatus> {
        match t.status_at(self.now()) {
            TransactionStatus::New if !self.session_lives(t.session_id).await? => {
                Ok(TransactionStatus::Declined)
            }
            TransactionStatus::Approved => {
                let tid = tid(t.id);
                let account = self.store.account(&t.server_id, t.account_id).await?;
                let proven = match (account, t.answer_signature.as_deref()) {
                    (Some(account), Some(signature)) => {
                        t.values(&tid)
                            .verify_answer(&account.public_key, true, signature)
                    }
                    _ => false,
                };
                Ok(if proven {
                    TransactionStatus::Approved
                } else {
                    TransactionStatus::Declined
                })
            }
            status => Ok(status),
        }
    }

    /// Whether the session is live, as the hot path knows it (activity not yet flushed to the
    /// store counts).
    async fn session_lives(&self, id: Uuid) -> Result<bool> {
        match self.sessions.peek(SessionKey::Id(id)).await {
            Ok(_) => Ok(true),
            Err(Error::SessionInvalid) => Ok(false),
            Err(e) => Err(e),
        }
    }

    async fn transaction(&self, server_id: &ServerId, tid: &str) -> Result<Transaction> {
        let missing = || Error::NotFound("no transaction with this id".into());
        let id = parse_tid(tid).ok_or_else(missing)?;
        self.store
            .transaction(server_id, id)
            .await?
            .ok_or_else(missing)
    }

    /// Unanswered, unexpired transactions of an account whose sessions live (none while the
    /// account is blocked).
    pub async fn pending_transactions(&self, account: &Account) -> Result<Vec<TransactionView>> {
        let current = self.account(&account.server_id, account.id).await?;
        if current.blocked {
            return Ok(Vec::new());
        }
        let mut pending = Vec::new();
        for t in self
            .store
            .pending_transactions(account.id, self.now())
            .await?
        {
            if self.session_lives(t.session_id).await? {
                pending.push(TransactionView::from(&t));
            }
        }
        Ok(pending)
    }

    /// The transaction `id` for an account, while it is pending.
    pub(crate) async fn pending_transaction(
        &self,
        account: &Account,
        id: Uuid,
    ) -> Result<Option<TransactionView>> {
        let tid = tid(id);
        Ok(self
            .pending_transactions(account)
            .await?
            .into_iter()
            .find(|t| t.tid == tid))
    }

    /// The app's signed request for its pending transactions: the account signs a one-time
    /// challenge (from `app_challenge`) with the action `transactions`.
    pub async fn app_transactions(
        &self,
        server_id: &ServerId,
        account_id: i64,
        challenge: &str,
        signature: &str,
    ) -> Result<Vec<TransactionView>> {
        let account = self.account(server_id, account_id).await?;
        let message = app_message(
            "transactions",
            server_id.as_str(),
            challenge,
            &account_id.to_string(),
            None,
        );
        if !verify_account_signature(&account.public_key, &message, signature) {
            return Err(Error::BadCredentials);
        }
        self.store
            .take_app_challenge(&SecretHash::of(challenge.as_bytes()))
            .await?
            .filter(|c| c.purpose == "listen" && c.account_id == Some(account_id))
            .filter(|c| &c.server_id == server_id && c.expires_at > self.now())
            .ok_or(Error::BadCredentials)?;
        if account.blocked {
            return Err(Error::Forbidden("the account is blocked".into()));
        }
        self.pending_transactions(&account).await
    }

    /// Approves or declines a transaction. The signature must be the account's over the
    /// transaction's stored values and the verdict: an answer given for other values (shown
    /// after a change) does not count.
    pub async fn answer_transaction(
        &self,
        server_id: &ServerId,
        account_id: i64,
        tid: &str,
        approve: bool,
        signature: &str,
    ) -> Result<TransactionStatus> {
        // One answer for an unknown account, an unknown transaction and another account's:
        // nothing about either is told before the signature is checked.
        let missing = || Error::NotFound("no transaction with this id".into());
        let account = self
            .store
            .account(server_id, account_id)
            .await?
            .ok_or_else(missing)?;
        let transaction = self.transaction(server_id, tid).await?;
        if transaction.account_id != account_id {
            return Err(missing());
        }
        if !transaction
            .values(tid)
            .verify_answer(&account.public_key, approve, signature)
        {
            return Err(Error::BadCredentials);
        }
        if account.blocked {
            return Err(Error::Forbidden("the account is blocked".into()));
        }
        if transaction.status != TransactionStatus::New {
            return Err(Error::Conflict(
                "the transaction was already answered".into(),
            ));
        }
        if transaction.expires_at <= self.now() {
            return Err(Error::Gone("the transaction has expired".into()));
        }
        if !self.session_lives(transaction.session_id).await? {
            return Err(Error::Gone(
                "the session the transaction was made in has ended".into(),
            ));
        }
        let status = if approve {
            TransactionStatus::Approved
        } else {
            TransactionStatus::Declined
        };
        if !self
            .store
            .answer_transaction(transaction.id, status, self.now(), signature)
            .await?
        {
            return Err(Error::Conflict(
                "the transaction was already answered".into(),
            ));
        }
        self.audit(
            server_id,
            AuditEvent::TransactionAnswered {
                account_id,
                tid,
                approved: approve,
            },
        )
        .await?;
        Ok(status)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transaction_ids_round_trip_and_refuse_other_text() {
        let id = Uuid::new_v4();
        assert_eq!(parse_tid(&tid(id)), Some(id));
        assert_eq!(tid(id).len(), 22);
        assert_eq!(parse_tid("short"), None);
        assert_eq!(parse_tid("not base64 at all!!!!!"), None);
    }

    #[test]
    fn values_are_bounded_and_free_of_control_characters() {
        assert_eq!(checked(None, "amount", 4, false).unwrap(), "");
        assert!(checked(Some("12345".into()), "amount", 4, false).is_err());
        assert!(checked(Some("a\u{1b}[2J".into()), "amount", 64, false).is_err());
        assert!(checked(Some("a\nb".into()), "amount", 64, false).is_err());
        assert_eq!(
            checked(Some("a\nb".into()), "description", 64, true).unwrap(),
            "a\nb"
        );
        assert!(checked(Some("a\rb".into()), "description", 64, true).is_err());
        assert!(checked(Some("ACME\u{202e}gnp".into()), "benificiary", 64, false).is_err());
        assert!(checked(Some("1\u{200b}0".into()), "amount", 64, false).is_err());
        assert!(checked(Some("l\n".repeat(10)), "description", 64, true).is_ok());
        assert!(checked(Some("l\n".repeat(11)), "description", 64, true).is_err());
    }
}
