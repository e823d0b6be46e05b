//! What latchkey's own pages and `/forward-auth` need beyond the family flows they reuse
//! (the password, second-factor and CAPTCHA steps are family D's, in [`crate::services::quatrix`]):
//! the second factor a pending sign-in waits for, the identity of a browser session (which
//! the HTTP layer keeps for `/forward-auth`, a hot path), and revoking every
//! other session of the person, the changes a person makes to their own account (password,
//! PIN, TOTP) from the account page, and the sign-in page's own login QR code: the browser is
//! a family A browser session (on the default server) whose nonce only it knows, and the login
//! the companion app makes there becomes the browser's session.

use crate::cache::sessions::{ActiveSession, NewSession};
use crate::crypto::totp;
use crate::error::{Error, Result};
use crate::model::ids::{Nonce, ServerId};
use crate::model::{ClientInfo, Identity, MfaKind, Session, SessionState, User};
use crate::services::audit::{AuditEvent, Via};
use crate::services::nextauth::{hsid, nonce_hash};
use crate::services::quatrix::LoginStarted;
use crate::services::{Latchkey, TotpEnrolment};

impl Latchkey {
    /// The second factor a sign-in pending MFA waits for.
    pub async fn pending_second_factor(&self, token: &str) -> Result<MfaKind> {
        let session = self.sessions.by_token(token).await?;
        match (session.state, session.pending_mfa) {
            (SessionState::PendingMfa, Some(kind)) => Ok(kind),
            _ => Err(Error::WrongState(
                "the session does not wait for a second factor",
            )),
        }
    }

    /// The active session a browser's cookie names, checked as a keepalive is (counts as
    /// activity). No store read while the session is cached.
    pub async fn browser_session(&self, token: &str) -> Result<ActiveSession> {
        self.sessions.keepalive(token).await
    }

    /// Is the sign-in a browser's cookie names held by the CAPTCHA rule?
    pub async fn captcha_pending(&self, token: &str) -> bool {
        self.sessions
            .by_token(token)
            .await
            .is_ok_and(|s| s.state == SessionState::BlockedCaptcha)
    }

    /// Who is behind an active session token (the account page, the console); counts as
    /// activity.
    pub async fn identity_of(&self, token: &str) -> Result<Identity> {
        self.browser_identity(token.as_bytes(), Identity::clone)
            .await
    }

    /// Who is behind the active session a browser's cookie names, given to `answer` (a reverse
    /// proxy's check asks for every request it passes); counts as activity. Read from the
    /// store at the first ask of a cached session, then kept with it: it never changes for a
    /// session.
    pub async fn browser_identity<R>(
        &self,
        token: &[u8],
        answer: impl Fn(&Identity) -> R,
    ) -> Result<R> {
        self.sessions
            .keepalive_identity(token, async |active| self.identity(active).await, answer)
            .await
    }

    /// [`Latchkey::browser_identity`] when memory alone answers it; `None` is not a no:
    /// the async check decides.
    pub fn browser_identity_now<R>(
        &self,
        token: &[u8],
        answer: impl Fn(&Identity) -> R,
    ) -> Option<R> {
        self.sessions.keepalive_identity_now(token, answer)
    }

    /// Who is behind a session found active. Reads the store.
    async fn identity(&self, active: ActiveSession) -> Result<Identity> {
        let session = self
            .store
            .session(active.id)
            .await?
            .ok_or(Error::SessionInvalid)?;
        let user = self
            .store
            .user_by_id(active.user_id)
            .await?
            .ok_or(Error::SessionInvalid)?;
        Ok(Identity {
            session_id: active.id,
            user_id: active.user_id,
            userid: user.userid,
            methods: session.methods.into_iter().collect(),
        })
    }

    /// The live sessions of the caller's user, newest activity first (at most `limit`).
    pub async fn own_sessions(&self, caller: ActiveSession, limit: u64) -> Result<Vec<Session>> {
        self.sessions.flush_user(caller.user_id).await?;
        Ok(self
            .store
            .user_sessions(caller.user_id, self.now(), 0, limit)
            .await?)
    }

    /// Revokes every live session of the caller's user (whatever its state: a pending sign-in
    /// too) but the caller's own, in one statement; answers how many.
    pub async fn revoke_other_sessions(&self, caller: ActiveSession) -> Result<usize> {
        let revoked = self
            .sessions
            .revoke_all_of_user_but(caller.user_id, Some(caller.id))
            .await?;
        if let Some(user) = self.store.user_by_id(caller.user_id).await? {
            self.audit(
                &user.server_id,
                AuditEvent::SessionsRevoked {
                    userid: user.userid.as_str(),
                    by_session: caller.id,
                    count: revoked,
                },
            )
            .await?;
        }
        Ok(revoked)
    }

    /// The user behind a browser's active session.
    async fn account_user(&self, caller: ActiveSession) -> Result<User> {
        self.store
            .user_by_id(caller.user_id)
            .await?
            .ok_or(Error::SessionInvalid)
    }

    /// Which second factors the caller has: (TOTP, PIN).
    pub async fn own_second_factors(&self, caller: ActiveSession) -> Result<(bool, bool)> {
        let user = self.account_user(caller).await?;
        let creds = self
            .store
            .credentials(&user.server_id, &user.userid)
            .await?
            .ok_or(Error::SessionInvalid)?;
        Ok((creds.totp_secret.is_some(), creds.pin_hash.is_some()))
    }

    /// The caller's user, once their current password is checked (argon2id on the hashing
    /// pool, as a sign-in checks it). A wrong one counts as a failed sign-in of the name, so
    /// the CAPTCHA rule follows guessing here as it does at /login.
    pub(crate) async fn recheck_password(
        &self,
        caller: ActiveSession,
        current: &str,
    ) -> Result<User> {
        let user = self.account_user(caller).await?;
        let creds = self
            .store
            .credentials(&user.server_id, &user.userid)
            .await?;
        if !self.check_password(creds.as_ref(), current).await? {
            self.throttle
                .record_failure(&user.server_id, user.userid.as_str(), None)
                .await?;
            return Err(Error::BadCredentials);
        }
        Ok(user)
    }

    /// Changes the caller's password once the current one is checked; the new one meets the
    /// password policy. Every other session of the user is revoked.
    pub async fn change_own_password(
        &self,
        caller: ActiveSession,
        current: &str,
        new: &str,
    ) -> Result<()> {
        let user = self.recheck_password(caller, current).await?;
        self.set_password(&user.server_id, &user.userid, new)
            .await?;
        // Whoever else knew the old password is signed out everywhere.
        self.revoke_other_sessions(caller).await.map(|_| ())
    }

    /// Sets (or replaces) the caller's PIN, once their current password is checked.
    pub async fn set_own_pin(&self, caller: ActiveSession, current: &str, pin: &str) -> Result<()> {
        let user = self.recheck_password(caller, current).await?;
        self.set_pin(&user.server_id, &user.userid, pin).await
    }

    /// Removes one of the caller's second factors, once their current password is checked;
    /// false when there was none.
    pub async fn remove_own_second_factor(
        &self,
        caller: ActiveSession,
        current: &str,
        kind: MfaKind,
    ) -> Result<bool> {
        let user = self.recheck_password(caller, current).await?;
        match kind {
            MfaKind::Totp => self.remove_totp(&user.server_id, &user.userid).await,
            MfaKind::Pin => self.remove_pin(&user.server_id, &user.userid).await,
        }
    }

    /// What the caller scans to set up TOTP: for a new secret (`None`), or again for the one
    /// being set up. Nothing is stored until [`Latchkey::confirm_own_totp`] sees a code of it.
    pub async fn own_totp_enrolment(
        &self,
        caller: ActiveSession,
        secret_base32: Option<&str>,
    ) -> Result<TotpEnrolment> {
        let secret = match secret_base32 {
            None => totp::generate_secret(),
            Some(text) => totp::secret_from_base32(text)
                .ok_or_else(|| Error::Invalid("the authenticator secret is malformed".into()))?,
        };
        let user = self.account_user(caller).await?;
        let issuer = self.server(&user.server_id).await?.name;
        let (otpauth_uri, secret_base32) =
            totp::provisioning(&secret, &issuer, user.userid.as_str())?;
        Ok(TotpEnrolment {
            otpauth_uri,
            secret_base32,
        })
    }

    /// Turns TOTP on with the secret the caller scanned, once their current password is checked
    /// and a current code of the secret is shown (replacing any earlier secret); that code is
    /// then used up, as a sign-in's would be. `BadCredentials` for a wrong password or code.
    pub async fn confirm_own_totp(
        &self,
        caller: ActiveSession,
        current: &str,
        secret_base32: &str,
        code: &str,
    ) -> Result<()> {
        let secret = totp::secret_from_base32(secret_base32)
            .ok_or_else(|| Error::Invalid("the authenticator secret is malformed".into()))?;
        let user = self.recheck_password(caller, current).await?;
        let Some(step) = totp::verify(&secret, code.trim(), self.now())? else {
            return Err(Error::BadCredentials);
        };
        self.store.set_totp_secret(user.id, Some(&secret)).await?;
        self.store.consume_totp_step(user.id, step).await?;
        self.audit(
            &user.server_id,
            AuditEvent::TotpEnabled {
                userid: user.userid.as_str(),
            },
        )
        .await
    }

    /// The `hsid` of the browser session (server, nonce): what the sign-in page watches its
    /// own login status with. Reads the server, writes nothing.
    pub async fn browser_hsid(&self, server_id: &ServerId, nonce: &Nonce) -> Result<String> {
        Ok(hsid(&self.server(server_id).await?, nonce))
    }

    /// Signs a browser in as the user the companion app logged in on its browser session
    /// (server, nonce): the app's login is taken off the nonce by compare-and-set (so it is
    /// claimed once), revoked, and replaced by a session of this browser's own with the same
    /// methods (`hwk`). `WrongState` while the app has not logged in there; `Invalid` when the
    /// app's account is not linked to a user.
    pub async fn claim_app_sign_in(
        &self,
        server_id: &ServerId,
        nonce: &Nonce,
        client: ClientInfo,
    ) -> Result<LoginStarted> {
        let not_yet = || Error::WrongState("the app has not confirmed this sign-in");
        let browser = self
            .store
            .browser_session(server_id, &nonce_hash(nonce))
            .await?
            .ok_or_else(not_yet)?;
        let app_session_id = browser.session_id.ok_or_else(not_yet)?;
        let app_session = self
            .store
            .session(app_session_id)
            .await?
            .filter(|s| s.is_active(self.now()))
            .ok_or_else(not_yet)?;
        if !self
            .store
            .clear_browser_login(server_id, &browser.nonce_hash, app_session_id)
            .await?
        {
            return Err(not_yet());
        }
        self.browser_changed(&browser).await;
        // Revoked meanwhile (the account blocked, the user's sessions ended): no sign-in.
        if !self.sessions.revoke(app_session_id).await? {
            return Err(not_yet());
        }
        // Taken off the nonce either way, so the page does not try again and again.
        let user_id = app_session.user_id.ok_or_else(|| {
            Error::Invalid("the app's account is not linked to a user of this server".into())
        })?;
        let ip = client.ip.clone();
        let (session, token) = self
            .sessions
            .create(NewSession {
                idle_timeout: self.sessions.browser_idle_timeout(),
                server_id: server_id.clone(),
                user_id: Some(user_id),
                methods: app_session.methods.clone(),
                state: SessionState::Active,
                client,
                pending_mfa: None,
                password_ok: true,
            })
            .await?;
        let user = self.store.user_by_id(user_id).await?;
        self.audit(
            server_id,
            AuditEvent::LoginSucceeded {
                userid: user.as_ref().map(|u| u.userid.as_str()),
                session: session.id,
                ip: ip.as_deref(),
                via: Via::App {
                    account_id: browser.account_id.unwrap_or_default(),
                },
            },
        )
        .await?;
        Ok(LoginStarted {
            session_id: session.id,
            token: token.text,
            mfa: None,
        })
    }
}
