//! The companion app's side of family A (docs/app-protocol.md): enrol an account from an enrol
//! QR payload, log a browser session in from a login QR payload, listen for pushed logins and
//! transactions and answer the logins (transactions: [`crate::services::transactions`]). Every call is signed by the account key over a one-time value, so neither a
//! stolen QR payload nor a replayed request logs anybody in.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use uuid::Uuid;

use std::collections::VecDeque;
use std::sync::Arc;

use tokio::sync::broadcast;

use crate::crypto::qr::{app_message, verify_account_signature, QrKind, QrPayload};
use crate::crypto::secret::{random_bytes, SecretHash};
use crate::error::{Error, Result};
use crate::model::ids::{ServerId, UserId};
use crate::model::{Account, AppChallenge, NewAccount, PushRequest, Server};
use crate::seams::events::Event;
use crate::services::audit::AuditEvent;
use crate::services::transactions::TransactionView;
use crate::services::Latchkey;

/// Seconds a listen challenge lives.
pub const LISTEN_CHALLENGE_TTL: i64 = 60;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Enrolled {
    pub account_id: i64,
    pub server_id: ServerId,
    pub userid: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppLoggedIn {
    pub server_id: ServerId,
    pub account_id: i64,
    pub userid: Option<String>,
}

/// What the app's event stream carries.
#[derive(Debug, Clone, PartialEq)]
pub enum Pushed {
    Login(PushView),
    Transaction(TransactionView),
}

/// A pushed login as the app sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct PushView {
    pub request_id: Uuid,
    pub server_id: ServerId,
    pub account_id: i64,
    pub user_context: serde_json::Value,
    pub expires: i64,
}

impl From<&PushRequest> for PushView {
    fn from(p: &PushRequest) -> Self {
        PushView {
            request_id: p.id,
            server_id: p.server_id.clone(),
            account_id: p.account_id,
            user_context: serde_json::from_str(&p.user_context).unwrap_or(serde_json::Value::Null),
            expires: p.expires_at,
        }
    }
}

fn refused() -> Error {
    Error::BadCredentials
}

impl Latchkey {
    /// Parses a payload of `kind` and checks it is this server's: answers the payload and server.
    async fn own_payload(&self, text: &str, kind: QrKind) -> Result<(QrPayload, Server)> {
        if text.len() > 4096 {
            return Err(Error::Invalid("payload is too long".into()));
        }
        let payload = QrPayload::parse(text)?;
        if payload.kind != kind {
            return Err(Error::Invalid(format!(
                "expected a {} payload",
                kind.as_str()
            )));
        }
        let server_id = ServerId::parse(&payload.server_id)?;
        let server = self.server(&server_id).await?;
        payload.verify(&server.public_key)?;
        if payload.expires <= self.now() {
            return Err(refused());
        }
        Ok((payload, server))
    }

    /// The user name an account is bound to, if any.
    pub async fn userid_of(&self, account: &Account) -> Result<Option<String>> {
        Ok(match account.user_id {
            Some(id) => self
                .store
                .user_by_id(id)
                .await?
                .map(|u| u.userid.as_str().to_owned()),
            None => None,
        })
    }

    /// Registers an app key pair as a new account of the payload's server.
    pub async fn app_enrol(
        &self,
        payload: &str,
        public_key: &str,
        signature: &str,
        client_version: Option<&str>,
    ) -> Result<Enrolled> {
        let (payload, server) = self.own_payload(payload, QrKind::Enrol).await?;
        let key: [u8; 32] = URL_SAFE_NO_PAD
            .decode(public_key)
            .ok()
            .and_then(|k| k.try_into().ok())
            .ok_or_else(|| Error::Invalid("publickey must be 32 bytes of base64url".into()))?;
        let message = app_message(
            "enrol",
            server.id.as_str(),
            &payload.challenge,
            public_key,
            None,
        );
        if !verify_account_signature(&key, &message, signature) {
            return Err(refused());
        }
        let challenge = self
            .store
            .take_app_challenge(&SecretHash::of(payload.challenge.as_bytes()))
            .await?
            .filter(|c| c.purpose == "enrol" && c.server_id == server.id)
            .filter(|c| c.expires_at > self.now())
            .ok_or_else(refused)?;
        let user = match challenge.userid.as_deref() {
            Some(userid) => Some(
                self.user_or_new(&server.id, &UserId::parse(userid)?)
                    .await?,
            ),
            None => None,
        };
        let client_version = client_version.map(|v| v.chars().take(64).collect::<String>());
        let account_id = self
            .store
            .insert_account(&NewAccount {
                server_id: server.id.clone(),
                public_key: key,
                description: challenge.name.clone().unwrap_or_default(),
                user_id: user.as_ref().map(|u| u.id),
                client_version,
                created_at: self.now(),
            })
            .await
            .map_err(|e| match e {
                crate::StoreError::Conflict => {
                    Error::Conflict("this key is already enrolled".into())
                }
                other => other.into(),
            })?;
        self.audit(
            &server.id,
            AuditEvent::AccountEnrolled {
                userid: user.as_ref().map(|u| u.userid.as_str()),
                account_id,
            },
        )
        .await?;
        Ok(Enrolled {
            account_id,
            server_id: server.id,
            userid: user.map(|u| u.userid.as_str().to_owned()),
        })
    }

    /// Answers a login QR payload: the browser session it was made for is logged in.
    pub async fn app_login(
        &self,
        payload: &str,
        account_id: i64,
        signature: &str,
    ) -> Result<AppLoggedIn> {
        let (payload, server) = self.own_payload(payload, QrKind::Login).await?;
        let account = self.account(&server.id, account_id).await?;
        let message = app_message(
            "login",
            server.id.as_str(),
            &payload.challenge,
            &account_id.to_string(),
            None,
        );
        if !verify_account_signature(&account.public_key, &message, signature) {
            return Err(refused());
        }
        if account.blocked {
            return Err(Error::Forbidden("the account is blocked".into()));
        }
        let challenge = SecretHash::of(payload.challenge.as_bytes());
        let browser = self
            .store
            .browser_session_by_challenge(&challenge)
            .await?
            .filter(|b| b.server_id == server.id)
            .ok_or_else(refused)?;
        // Exactly one request logs in with a challenge.
        if !self.store.consume_login_challenge(&challenge).await? {
            return Err(refused());
        }
        let context = browser.user_context.clone();
        self.log_in_browser(browser, &account, context.as_deref())
            .await?;
        Ok(AppLoggedIn {
            server_id: server.id,
            account_id,
            userid: self.userid_of(&account).await?,
        })
    }

    /// A fresh one-time value for an account to sign (listen requests).
    pub async fn app_challenge(
        &self,
        server_id: &ServerId,
        account_id: i64,
    ) -> Result<(String, i64)> {
        self.account(server_id, account_id).await?;
        let challenge = URL_SAFE_NO_PAD.encode(random_bytes::<32>());
        let expires = self.now() + LISTEN_CHALLENGE_TTL;
        self.store
            .insert_app_challenge(&AppChallenge {
                challenge_hash: SecretHash::of(challenge.as_bytes()),
                server_id: server_id.clone(),
                purpose: "listen".into(),
                account_id: Some(account_id),
                name: None,
                userid: None,
                expires_at: expires,
            })
            .await?;
        Ok((challenge, expires))
    }

    /// Checks a signed listen request and watches the account's pushed logins and
    /// transactions: first those pending, then each new one. Subscribes before it reads, so no
    /// push between the two is missed.
    pub async fn watch_pushes(
        self: &Arc<Self>,
        server_id: &ServerId,
        account_id: i64,
        challenge: &str,
        signature: &str,
    ) -> Result<PushWatch> {
        let events = self.subscribe();
        let (account, pending) = self
            .app_listen(server_id, account_id, challenge, signature)
            .await?;
        Ok(PushWatch {
            core: self.clone(),
            account,
            events,
            queued: pending.into(),
        })
    }

    /// Checks a signed listen request; answers the account and what is pending for it.
    async fn app_listen(
        &self,
        server_id: &ServerId,
        account_id: i64,
        challenge: &str,
        signature: &str,
    ) -> Result<(Account, Vec<Pushed>)> {
        let account = self.account(server_id, account_id).await?;
        let message = app_message(
            "listen",
            server_id.as_str(),
            challenge,
            &account_id.to_string(),
            None,
        );
        if !verify_account_signature(&account.public_key, &message, signature) {
            return Err(refused());
        }
        self.store
            .take_app_challenge(&SecretHash::of(challenge.as_bytes()))
            .await?
            .filter(|c| c.purpose == "listen" && c.account_id == Some(account_id))
            .filter(|c| &c.server_id == server_id && c.expires_at > self.now())
            .ok_or_else(refused)?;
        if account.blocked {
            return Err(Error::Forbidden("the account is blocked".into()));
        }
        let pending = self.pending_for(&account).await?;
        Ok((account, pending))
    }

    /// An account's pending logins, then its pending transactions.
    async fn pending_for(&self, account: &Account) -> Result<Vec<Pushed>> {
        let logins = self.pending_pushes(account).await?;
        let transactions = self.pending_transactions(account).await?;
        Ok(logins
            .into_iter()
            .map(Pushed::Login)
            .chain(transactions.into_iter().map(Pushed::Transaction))
            .collect())
    }

    /// Unanswered, unexpired pushes of an account (none while it is blocked).
    pub async fn pending_pushes(&self, account: &Account) -> Result<Vec<PushView>> {
        let current = self.account(&account.server_id, account.id).await?;
        if current.blocked {
            return Ok(Vec::new());
        }
        Ok(self
            .store
            .pending_pushes(account.id, self.now())
            .await?
            .iter()
            .map(PushView::from)
            .collect())
    }

    /// Approves or denies a pushed login. Approval logs in the browser session it was for.
    pub async fn answer_push(
        &self,
        server_id: &ServerId,
        account_id: i64,
        request_id: Uuid,
        approve: bool,
        signature: &str,
    ) -> Result<bool> {
        let account = self.account(server_id, account_id).await?;
        let push = self
            .store
            .push(request_id)
            .await?
            .filter(|p| &p.server_id == server_id && p.account_id == account_id)
            .ok_or_else(|| Error::NotFound("no such push request".into()))?;
        let message = app_message(
            "answer",
            server_id.as_str(),
            &request_id.to_string(),
            &account_id.to_string(),
            Some(if approve { "approve" } else { "deny" }),
        );
        if !verify_account_signature(&account.public_key, &message, signature) {
            return Err(refused());
        }
        if account.blocked {
            return Err(Error::Forbidden("the account is blocked".into()));
        }
        if push.answered_at.is_some() {
            return Err(Error::Conflict(
                "the push request was already answered".into(),
            ));
        }
        if push.expires_at <= self.now() {
            return Err(Error::Gone("the push request has expired".into()));
        }
        if !self
            .store
            .answer_push(request_id, approve, self.now())
            .await?
        {
            return Err(Error::Conflict(
                "the push request was already answered".into(),
            ));
        }
        if !approve {
            self.audit(server_id, AuditEvent::PushDenied { account_id })
                .await?;
            return Ok(false);
        }
        let browser = self
            .store
            .browser_session(server_id, &push.nonce_hash)
            .await?
            .ok_or_else(|| Error::NotFound("the browser session is gone".into()))?;
        self.log_in_browser(browser, &account, Some(&push.user_context))
            .await?;
        Ok(true)
    }

    /// The pushed request `id` for an account, while it is pending.
    pub async fn pending_push(&self, account: &Account, id: Uuid) -> Result<Option<PushView>> {
        Ok(self
            .pending_pushes(account)
            .await?
            .into_iter()
            .find(|p| p.request_id == id))
    }
}

/// The pushes of one account as they come: what the app's event stream sends.
pub struct PushWatch {
    core: Arc<Latchkey>,
    account: Account,
    events: broadcast::Receiver<Event>,
    queued: VecDeque<Pushed>,
}

impl PushWatch {
    /// The next push for the account; `None` when the events seam closes. After events may
    /// have been lost, everything pending is sent again (the app ignores repeats).
    pub async fn next(&mut self) -> Option<Pushed> {
        loop {
            if let Some(push) = self.queued.pop_front() {
                return Some(push);
            }
            let found = match self.events.recv().await {
                Ok(Event::PushRequested {
                    account_id,
                    request_id,
                }) if account_id == self.account.id => self
                    .core
                    .pending_push(&self.account, request_id)
                    .await
                    .map(|p| p.map(Pushed::Login)),
                Ok(Event::TransactionRequested {
                    account_id,
                    transaction_id,
                }) if account_id == self.account.id => self
                    .core
                    .pending_transaction(&self.account, transaction_id)
                    .await
                    .map(|t| t.map(Pushed::Transaction)),
                Ok(Event::Resync) | Err(broadcast::error::RecvError::Lagged(_)) => {
                    if let Ok(pending) = self.core.pending_for(&self.account).await {
                        self.queued.extend(pending);
                    }
                    Ok(None)
                }
                Ok(_) => Ok(None),
                Err(broadcast::error::RecvError::Closed) => return None,
            };
            match found {
                Ok(Some(push)) => return Some(push),
                Ok(None) => {}
                Err(e) => tracing::warn!(error = %e, "push watch: store read failed"),
            }
        }
    }
}
