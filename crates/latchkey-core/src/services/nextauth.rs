//! Family A (nextAuth): browser sessions named by (server, nonce), logged in by the companion
//! app — by scanning a login QR code or by approving a pushed ("provoked") login.
//!
//! A browser session that logs in gets an ordinary latchkey session (method `hwk`), so family
//! C lists and revokes it like any other; the browser session only points at it. The login QR
//! payload of a browser session stays the same until it is used or expires: its challenge is
//! derived from a stored random seed with the server key, so the challenge itself is never
//! stored, only its hash.

use std::sync::Arc;

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use tokio::sync::broadcast;
use uuid::Uuid;

use crate::cache::sessions::NewSession;
use crate::crypto::credentials::hmac_sha256;
use crate::crypto::qr::{QrKind, QrPayload};
use crate::crypto::secret::{random_bytes, SecretHash};
use crate::error::{Error, Result};
use crate::model::ids::{Nonce, ServerId, UserId};
use crate::model::{
    Account, AppChallenge, AuthMethod, BrowserSession, ClientInfo, LoginChallenge, PushRequest,
    Server, SessionState, User,
};
use crate::seams::events::Event;
use crate::services::audit::{AuditEvent, LogoutOf, Via};
use crate::services::Latchkey;

/// Seconds a QR payload's challenge lives.
pub const QR_TTL: i64 = 120;
/// Seconds a pushed login request waits for its answer.
pub const PUSH_TTL: i64 = 60;

/// LoginStatus of family A.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoginStatus {
    pub loggedin: bool,
    pub userid: Option<String>,
    pub accountid: Option<i64>,
    /// Base64 public key of the app account logged in.
    pub pk: Option<String>,
    pub canprovoke: bool,
    /// Base64 of the current login QR payload (absent in event streams).
    pub loginqrdata: Option<String>,
    pub hsid: String,
}

pub(crate) fn nonce_hash(nonce: &Nonce) -> SecretHash {
    SecretHash::of(nonce.as_str().as_bytes())
}

/// The `hsid` of a browser session: unguessable without the server key, stable per nonce.
pub(crate) fn hsid(server: &Server, nonce: &Nonce) -> String {
    URL_SAFE_NO_PAD.encode(hmac_sha256(
        &server.secret_key,
        format!("latchkey hsid\0{}", nonce.as_str()).as_bytes(),
    ))
}

fn login_challenge(server: &Server, seed: &[u8]) -> String {
    let mut message = b"latchkey login challenge\0".to_vec();
    message.extend_from_slice(seed);
    URL_SAFE_NO_PAD.encode(hmac_sha256(&server.secret_key, &message))
}

/// Device facts of a UserContext (`sessioninfo` preferred over `announceinfo`).
fn client_of(user_context: &serde_json::Value) -> ClientInfo {
    let info = |field: &str| {
        ["sessioninfo", "announceinfo"].iter().find_map(|part| {
            user_context
                .get(part)?
                .get(field)?
                .as_str()
                .map(|s| s.chars().take(512).collect::<String>())
        })
    };
    let extra = ["sessioninfo", "announceinfo"]
        .iter()
        .find_map(|part| user_context.get(part)?.get("info"))
        .map(|v| v.to_string().chars().take(200).collect::<String>());
    let user_agent = info("useragent");
    let device_name = match (&user_agent, extra) {
        (Some(ua), Some(extra)) => Some(format!("{ua} {extra}")),
        (Some(ua), None) => Some(ua.clone()),
        (None, extra) => extra,
    };
    ClientInfo {
        ip: info("ip"),
        user_agent,
        device_name,
    }
}

/// Parses an optional UserContext JSON body: absent or an object.
pub fn parse_user_context(body: &[u8]) -> Result<Option<String>> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    match serde_json::from_slice::<serde_json::Value>(body) {
        Ok(v @ serde_json::Value::Object(_)) => Ok(Some(v.to_string())),
        _ => Err(Error::Invalid(
            "the body must be a UserContext JSON object".into(),
        )),
    }
}

impl Latchkey {
    /// The browser session of (server, nonce), created on first sight.
    async fn browser(&self, server: &Server, nonce: &Nonce) -> Result<BrowserSession> {
        Ok(self
            .store
            .ensure_browser_session(&BrowserSession {
                server_id: server.id.clone(),
                nonce_hash: nonce_hash(nonce),
                hsid_hash: SecretHash::of(hsid(server, nonce).as_bytes()),
                session_id: None,
                account_id: None,
                login: None,
                user_context: None,
                created_at: self.now(),
            })
            .await?)
    }

    /// The login QR payload of a browser session: the current one while it is unused and
    /// unexpired, else a fresh one. A given UserContext is kept for the login it leads to.
    pub async fn login_qr(
        &self,
        server_id: &ServerId,
        nonce: &Nonce,
        base_url: &str,
        user_context: Option<String>,
    ) -> Result<String> {
        let server = self.server(server_id).await?;
        let browser = self.browser(&server, nonce).await?;
        if let Some(context) = user_context {
            self.store
                .set_browser_user_context(&server.id, &browser.nonce_hash, &context)
                .await?;
        }
        self.current_login_payload(&server, browser, base_url).await
    }

    /// The browser session's current login challenge as a signed QR payload; a fresh one is
    /// installed (by a statement that leaves a current one in place) when there is none.
    async fn current_login_payload(
        &self,
        server: &Server,
        mut browser: BrowserSession,
        base_url: &str,
    ) -> Result<String> {
        let now = self.now();
        let login = loop {
            match browser.login {
                Some(login) if login.expires_at > now => break login,
                _ => {}
            }
            let seed = random_bytes::<16>().to_vec();
            let fresh = LoginChallenge {
                challenge_hash: SecretHash::of(login_challenge(server, &seed).as_bytes()),
                seed,
                expires_at: now + QR_TTL,
                base_url: base_url.to_owned(),
            };
            if self
                .store
                .renew_login_challenge(&server.id, &browser.nonce_hash, &fresh, now)
                .await?
            {
                break fresh;
            }
            // A concurrent request installed one first: show that one.
            browser = self
                .store
                .browser_session(&server.id, &browser.nonce_hash)
                .await?
                .ok_or_else(|| Error::NotFound("the browser session is gone".into()))?;
        };
        Ok(QrPayload {
            kind: QrKind::Login,
            server_id: server.id.as_str().to_owned(),
            base_url: login.base_url,
            challenge: login_challenge(server, &login.seed),
            expires: login.expires_at,
            server_key: None,
            name: None,
            userid: None,
            signature: String::new(),
        }
        .sign(&server.secret_key)
        .to_uri())
    }

    /// LoginStatus of (server, nonce), with its current login QR payload.
    pub async fn login_status(
        &self,
        server_id: &ServerId,
        nonce: &Nonce,
        base_url: &str,
    ) -> Result<LoginStatus> {
        let server = self.server(server_id).await?;
        let browser = self.browser(&server, nonce).await?;
        let mut status = self.status_of(&browser, hsid(&server, nonce)).await?;
        let payload = self
            .current_login_payload(&server, browser, base_url)
            .await?;
        status.loginqrdata = Some(STANDARD.encode(payload));
        Ok(status)
    }

    /// The browser session an `hsid` names (for its event stream).
    async fn browser_by_hsid(&self, server_id: &ServerId, hsid: &str) -> Result<BrowserSession> {
        self.server(server_id).await?;
        match self
            .store
            .browser_session_by_hsid(&SecretHash::of(hsid.as_bytes()))
            .await?
        {
            Some(b) if &b.server_id == server_id => Ok(b),
            _ => Err(Error::NotFound("no browser session for this hsid".into())),
        }
    }

    /// LoginStatus of a browser session, without QR data.
    async fn status_of(&self, browser: &BrowserSession, hsid: String) -> Result<LoginStatus> {
        let now = self.now();
        let session = match browser.session_id {
            Some(id) => self.store.session(id).await?.filter(|s| s.is_active(now)),
            None => None,
        };
        let account = match browser.account_id {
            Some(id) => self.store.account(&browser.server_id, id).await?,
            None => None,
        };
        let loggedin = session.is_some();
        let userid = match session.as_ref().and_then(|s| s.user_id) {
            Some(user_id) => self
                .store
                .user_by_id(user_id)
                .await?
                .map(|u| u.userid.as_str().to_owned()),
            None => None,
        };
        let shown = account.as_ref().filter(|_| loggedin);
        Ok(LoginStatus {
            loggedin,
            userid,
            accountid: shown.map(|a| a.id),
            pk: shown.map(|a| STANDARD.encode(a.public_key)),
            canprovoke: account.as_ref().is_some_and(|a| !a.blocked),
            loginqrdata: None,
            hsid,
        })
    }

    /// Logs a browser session out (idempotent).
    pub async fn browser_logout(&self, server_id: &ServerId, nonce: &Nonce) -> Result<()> {
        let server = self.server(server_id).await?;
        let mut browser = self.browser(&server, nonce).await?;
        while let Some(id) = browser.session_id {
            if self
                .store
                .clear_browser_login(server_id, &browser.nonce_hash, id)
                .await?
            {
                self.sessions.revoke(id).await?;
                self.audit(
                    server_id,
                    AuditEvent::Logout {
                        session: id,
                        ip: None,
                        of: LogoutOf::Browser,
                    },
                )
                .await?;
                break;
            }
            // A concurrent login moved the pointer: log out what is there now.
            browser = self.browser(&server, nonce).await?;
        }
        self.browser_changed(&browser).await;
        Ok(())
    }

    pub(crate) async fn browser_changed(&self, browser: &BrowserSession) {
        self.sessions
            .publish(Event::BrowserChanged {
                server_id: browser.server_id.as_str().to_owned(),
                nonce_hash: browser.nonce_hash.0,
            })
            .await;
    }

    /// Logs a browser session in as `account`'s user (after a QR scan or an approved push).
    /// The browser's pointer moves by compare-and-set: of two logins racing on one browser
    /// session, the later one wins and the earlier one's session is revoked, never orphaned.
    pub(crate) async fn log_in_browser(
        &self,
        mut browser: BrowserSession,
        account: &Account,
        user_context: Option<&str>,
    ) -> Result<Uuid> {
        let context: serde_json::Value = user_context
            .and_then(|c| serde_json::from_str(c).ok())
            .unwrap_or(serde_json::Value::Null);
        let (session, _unused_bearer) = self
            .sessions
            .create(NewSession {
                idle_timeout: self.sessions.browser_idle_timeout(),
                server_id: browser.server_id.clone(),
                user_id: account.user_id,
                methods: vec![AuthMethod::Hwk],
                state: SessionState::Active,
                client: client_of(&context),
                pending_mfa: None,
                password_ok: true,
            })
            .await?;
        // Any login uses up the browser's current QR payload: the next status shows a fresh one.
        loop {
            let previous = browser.session_id;
            if self
                .store
                .set_browser_login(
                    &browser.server_id,
                    &browser.nonce_hash,
                    previous,
                    session.id,
                    account.id,
                )
                .await?
            {
                if let Some(old) = previous {
                    self.sessions.revoke(old).await?;
                }
                break;
            }
            browser = self
                .store
                .browser_session(&browser.server_id, &browser.nonce_hash)
                .await?
                .ok_or_else(|| Error::NotFound("the browser session is gone".into()))?;
        }
        self.store
            .touch_account(account.id, Some(self.now()), None)
            .await?;
        let userid = match account.user_id {
            Some(id) => self.store.user_by_id(id).await?.map(|u| u.userid),
            None => None,
        };
        self.audit(
            &browser.server_id,
            AuditEvent::LoginSucceeded {
                userid: userid.as_ref().map(UserId::as_str),
                session: session.id,
                ip: session.client.ip.as_deref(),
                via: Via::App {
                    account_id: account.id,
                },
            },
        )
        .await?;
        self.browser_changed(&browser).await;
        Ok(session.id)
    }

    /// Pushes a login request for (server, nonce) to the account that last logged in there.
    /// `Conflict` when there is none (LoginStatus.canprovoke was false).
    pub async fn provoke_login(
        &self,
        server_id: &ServerId,
        nonce: &Nonce,
        user_context: Option<String>,
    ) -> Result<()> {
        let server = self.server(server_id).await?;
        let browser = self.browser(&server, nonce).await?;
        let account = match browser.account_id {
            Some(id) => self.store.account(server_id, id).await?,
            None => None,
        };
        match account {
            Some(account) if !account.blocked => {
                self.push_login(&browser, &account, user_context).await
            }
            _ => Err(Error::Conflict(
                "no app account can be asked to log in this browser session".into(),
            )),
        }
    }

    /// Pushes a login request to one account. `NotFound` / `Forbidden` (blocked).
    pub async fn provoke_account(
        &self,
        server_id: &ServerId,
        nonce: &Nonce,
        account_id: i64,
        user_context: Option<String>,
    ) -> Result<()> {
        let server = self.server(server_id).await?;
        let account = self.account(server_id, account_id).await?;
        if account.blocked {
            return Err(Error::Forbidden("the account is blocked".into()));
        }
        let browser = self.browser(&server, nonce).await?;
        self.push_login(&browser, &account, user_context).await
    }

    /// Pushes a login request to every unblocked account of a user. `NotFound` when none.
    pub async fn provoke_user(
        &self,
        server_id: &ServerId,
        nonce: &Nonce,
        userid: &str,
        user_context: Option<String>,
    ) -> Result<()> {
        let server = self.server(server_id).await?;
        let none = || Error::NotFound("the user has no account to ask".into());
        let userid = UserId::parse(userid).map_err(|_| none())?;
        let user = self
            .store
            .user(server_id, &userid)
            .await?
            .ok_or_else(none)?;
        let accounts: Vec<Account> = self
            .store
            .user_accounts(user.id)
            .await?
            .into_iter()
            .filter(|a| !a.blocked)
            .collect();
        if accounts.is_empty() {
            return Err(none());
        }
        let browser = self.browser(&server, nonce).await?;
        for account in &accounts {
            self.push_login(&browser, account, user_context.clone())
                .await?;
        }
        Ok(())
    }

    async fn push_login(
        &self,
        browser: &BrowserSession,
        account: &Account,
        user_context: Option<String>,
    ) -> Result<()> {
        let now = self.now();
        let push = PushRequest {
            id: Uuid::new_v4(),
            server_id: browser.server_id.clone(),
            account_id: account.id,
            nonce_hash: browser.nonce_hash,
            user_context: user_context
                .or_else(|| browser.user_context.clone())
                .unwrap_or_else(|| "{}".into()),
            created_at: now,
            expires_at: now + PUSH_TTL,
            answered_at: None,
            approved: None,
        };
        self.store.insert_push(&push).await?;
        self.store
            .touch_account(account.id, None, Some(now))
            .await?;
        self.sessions
            .publish(Event::PushRequested {
                account_id: account.id,
                request_id: push.id,
            })
            .await;
        Ok(())
    }

    pub async fn account(&self, server_id: &ServerId, account_id: i64) -> Result<Account> {
        self.store
            .account(server_id, account_id)
            .await?
            .ok_or_else(|| Error::NotFound(format!("no account {account_id}")))
    }

    /// The user of that name, created (without credentials) when it does not exist yet:
    /// family A user ids are the web site's own.
    pub(crate) async fn user_or_new(&self, server_id: &ServerId, userid: &UserId) -> Result<User> {
        if let Some(user) = self.store.user(server_id, userid).await? {
            return Ok(user);
        }
        match self.add_user(server_id, userid, None).await {
            Ok(user) => Ok(user),
            // Created meanwhile by a concurrent request.
            Err(Error::Conflict(_)) => self.user(server_id, userid).await,
            Err(e) => Err(e),
        }
    }

    /// An enrol QR payload for a new app account named `name`, bound to `userid` when given.
    pub async fn enrol_qr(
        &self,
        server_id: &ServerId,
        name: &str,
        userid: Option<&str>,
        base_url: &str,
    ) -> Result<String> {
        let name = name.trim();
        if name.is_empty() || name.chars().count() > 100 || name.chars().any(char::is_control) {
            return Err(Error::Invalid(
                "name must be 1 to 100 characters without control characters".into(),
            ));
        }
        if let Some(userid) = userid {
            UserId::parse(userid)?;
        }
        let server = self.server(server_id).await?;
        let challenge = URL_SAFE_NO_PAD.encode(random_bytes::<32>());
        let expires = self.now() + QR_TTL;
        self.store
            .insert_app_challenge(&AppChallenge {
                challenge_hash: SecretHash::of(challenge.as_bytes()),
                server_id: server_id.clone(),
                purpose: "enrol".into(),
                account_id: None,
                name: Some(name.to_owned()),
                userid: userid.map(str::to_owned),
                expires_at: expires,
            })
            .await?;
        Ok(QrPayload {
            kind: QrKind::Enrol,
            server_id: server_id.as_str().to_owned(),
            base_url: base_url.to_owned(),
            challenge,
            expires,
            server_key: Some(URL_SAFE_NO_PAD.encode(server.public_key)),
            name: Some(name.to_owned()),
            userid: userid.map(str::to_owned),
            signature: String::new(),
        }
        .sign(&server.secret_key)
        .to_uri())
    }

    /// Binds `userid` to the account logged in on (server, nonce). `Conflict` when no account
    /// is logged in there; `Forbidden` for an invalid user name.
    pub async fn register_user(
        &self,
        server_id: &ServerId,
        nonce: &Nonce,
        userid: &str,
    ) -> Result<()> {
        let userid = UserId::parse(userid)
            .map_err(|e| Error::Forbidden(format!("invalid user name: {e}")))?;
        let server = self.server(server_id).await?;
        let browser = self.browser(&server, nonce).await?;
        let hsid = hsid(&server, nonce);
        let status = self.status_of(&browser, hsid).await?;
        let (true, Some(account_id), Some(session_id)) =
            (status.loggedin, browser.account_id, browser.session_id)
        else {
            return Err(Error::Conflict(
                "no app account is logged in on this browser session".into(),
            ));
        };
        let user = self.user_or_new(server_id, &userid).await?;
        self.store
            .set_account_user(account_id, Some(user.id))
            .await?;
        // The browser session is now that user's session (family C lists it there); caches
        // forget the old owner.
        if self.store.set_session_user(session_id, user.id).await? {
            self.sessions.ended(vec![session_id]).await;
        }
        self.audit(
            server_id,
            AuditEvent::AccountUserSet {
                userid: userid.as_str(),
                account_id,
                session: Some(session_id),
            },
        )
        .await?;
        self.browser_changed(&browser).await;
        Ok(())
    }

    /// Moves an account to another user. `Forbidden` invalid user name, `NotFound` no account.
    pub async fn set_account_user(
        &self,
        server_id: &ServerId,
        account_id: i64,
        userid: &str,
    ) -> Result<Account> {
        let userid = UserId::parse(userid)
            .map_err(|e| Error::Forbidden(format!("invalid user name: {e}")))?;
        self.account(server_id, account_id).await?;
        let user = self.user_or_new(server_id, &userid).await?;
        self.store
            .set_account_user(account_id, Some(user.id))
            .await?;
        self.audit(
            server_id,
            AuditEvent::AccountUserSet {
                userid: userid.as_str(),
                account_id,
                session: None,
            },
        )
        .await?;
        self.account(server_id, account_id).await
    }

    /// Blocks or unblocks an account: a blocked account can neither log in nor get pushes.
    pub async fn set_account_blocked(
        &self,
        server_id: &ServerId,
        account_id: i64,
        blocked: bool,
    ) -> Result<Account> {
        self.account(server_id, account_id).await?;
        self.store.set_account_blocked(account_id, blocked).await?;
        self.audit(
            server_id,
            AuditEvent::AccountBlocked {
                account_id,
                blocked,
            },
        )
        .await?;
        self.account(server_id, account_id).await
    }

    /// The server's identity public key (for the visual hash).
    pub async fn server_public_key(&self, server_id: &ServerId) -> Result<[u8; 32]> {
        Ok(self.server(server_id).await?.public_key)
    }
}

/// A browser session's login status as it changes: what its event stream sends.
pub struct LoginStatusWatch {
    core: Arc<Latchkey>,
    browser: BrowserSession,
    hsid: String,
    events: broadcast::Receiver<Event>,
    last: Option<LoginStatus>,
}

impl Latchkey {
    /// Watches the browser session an `hsid` names. Subscribes before it reads, so no change
    /// between the two is missed. `NotFound` for an unknown server or hsid.
    pub async fn watch_login_status(
        self: &Arc<Self>,
        server_id: &ServerId,
        hsid: &str,
    ) -> Result<LoginStatusWatch> {
        let events = self.subscribe();
        let browser = self.browser_by_hsid(server_id, hsid).await?;
        Ok(LoginStatusWatch {
            core: self.clone(),
            browser,
            hsid: hsid.to_owned(),
            events,
            last: None,
        })
    }
}

impl LoginStatusWatch {
    fn concerns(&self, event: &Event) -> bool {
        match event {
            Event::BrowserChanged {
                server_id,
                nonce_hash,
            } => {
                server_id == self.browser.server_id.as_str()
                    && *nonce_hash == self.browser.nonce_hash.0
            }
            Event::SessionsRevoked(ids) => {
                self.browser.session_id.is_some_and(|id| ids.contains(&id))
            }
            Event::Resync => true,
            Event::PushRequested { .. } | Event::TransactionRequested { .. } => false,
        }
    }

    /// The next LoginStatus (without QR data) that differs from the last one answered; the
    /// first call answers the current one. `None` when the events seam closes or the browser
    /// session is gone.
    pub async fn next(&mut self) -> Option<LoginStatus> {
        loop {
            if self.last.is_some() {
                match self.events.recv().await {
                    Ok(event) if !self.concerns(&event) => continue,
                    Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(broadcast::error::RecvError::Closed) => return None,
                }
                match self
                    .core
                    .store
                    .browser_session(&self.browser.server_id, &self.browser.nonce_hash)
                    .await
                {
                    Ok(Some(browser)) => self.browser = browser,
                    Ok(None) => return None,
                    Err(e) => {
                        tracing::warn!(error = %e, "login status watch: store read failed");
                        continue;
                    }
                }
            }
            let status = self
                .core
                .status_of(&self.browser, self.hsid.clone())
                .await
                .ok()?;
            if self.last.as_ref() != Some(&status) {
                self.last = Some(status.clone());
                return Some(status);
            }
        }
    }
}
