//! Password login with second factor and CAPTCHA (the flows behind family D, reusable by the
//! other families). The order of checks is what keeps the server quiet about its users:
//!
//! 1. the password is always checked, against a dummy hash when the name is unknown;
//! 2. when a CAPTCHA is required, the login is held in a session blocked on CAPTCHA whatever
//!    the password, and the verdict is kept in that session, not told;
//! 3. a wrong password counts a failure for the name and for the client address alike,
//!    whether or not the name exists.

use uuid::Uuid;

use crate::cache::sessions::NewSession;
use crate::crypto::captcha;
use crate::crypto::credentials;
use crate::crypto::totp;
use crate::error::{Error, Result};
use crate::model::ids::{ServerId, UserId};
use crate::model::{AuthMethod, ClientInfo, MfaKind, Session, SessionState, UserCredentials};
use crate::services::audit::{AuditEvent, LogoutOf, Via};
use crate::services::{check_pin_shape, Latchkey};
use crate::store::CaptchaVerdict;

/// A successful first step of a password login.
#[derive(Debug)]
pub struct LoginStarted {
    pub session_id: Uuid,
    pub token: String,
    /// `Some` when the session waits for this second factor (family D answers 207).
    pub mfa: Option<MfaKind>,
}

/// What an accepted CAPTCHA answer leads to.
#[derive(Debug, PartialEq, Eq)]
pub struct Unblocked {
    pub session_id: Uuid,
    /// `Some` when the session now waits for this second factor.
    pub mfa: Option<MfaKind>,
}

impl Latchkey {
    /// Checks a user name and password. See the module docs for the order of checks.
    pub async fn password_login(
        &self,
        server: &ServerId,
        name: &str,
        password: &str,
        client: ClientInfo,
    ) -> Result<LoginStarted> {
        let userid = UserId::parse(name)?;
        if password.len() > credentials::MAX_PASSWORD_BYTES {
            return Err(Error::Invalid(format!(
                "password must be at most {} bytes",
                credentials::MAX_PASSWORD_BYTES
            )));
        }
        let creds = self.store.credentials(server, &userid).await?;
        let password_ok = self.check_password(creds.as_ref(), password).await?;
        let ip = client.ip.clone();
        let standing = self
            .throttle
            .standing(server, userid.as_str(), ip.as_deref())
            .await?;
        if !password_ok {
            self.throttle
                .record_failure(server, userid.as_str(), ip.as_deref())
                .await?;
        }
        let mfa = creds.as_ref().and_then(UserCredentials::second_factor);
        let user_id = creds.as_ref().map(|c| c.user.id);

        if standing.captcha {
            let (session, token) = self
                .sessions
                .create(NewSession {
                    idle_timeout: self.sessions.browser_idle_timeout(),
                    server_id: server.clone(),
                    user_id,
                    methods: vec![AuthMethod::Pwd],
                    state: SessionState::BlockedCaptcha,
                    client,
                    pending_mfa: mfa,
                    password_ok,
                })
                .await?;
            self.audit(
                server,
                AuditEvent::CaptchaRequired {
                    userid: userid.as_str(),
                    session: session.id,
                    ip: ip.as_deref(),
                },
            )
            .await?;
            return Err(Error::CaptchaRequired {
                token: token.text,
                session_id: session.id,
            });
        }
        if !password_ok {
            self.audit(
                server,
                AuditEvent::LoginFailed {
                    userid: userid.as_str(),
                    ip: ip.as_deref(),
                    via: Via::Password,
                },
            )
            .await?;
            return Err(Error::BadCredentials);
        }
        if let Some(creds) = creds.as_ref() {
            // A verifier derived at an older `scram_iterations` would tell this user apart.
            if let Err(e) = self.rederive_scram_if_stale(creds, password).await {
                tracing::warn!(error = %e, "re-deriving a stale SCRAM verifier failed");
            }
        }

        self.throttle
            .record_success_after(standing, server, userid.as_str())
            .await?;
        let (session, token) = self
            .sessions
            .create(NewSession {
                idle_timeout: self.sessions.browser_idle_timeout(),
                server_id: server.clone(),
                user_id,
                methods: vec![AuthMethod::Pwd],
                state: if mfa.is_some() {
                    SessionState::PendingMfa
                } else {
                    SessionState::Active
                },
                client,
                pending_mfa: mfa,
                password_ok: true,
            })
            .await?;
        self.audit(
            server,
            login_step(
                userid.as_str(),
                session.id,
                ip.as_deref(),
                mfa,
                Via::Password,
            ),
        )
        .await?;
        Ok(LoginStarted {
            session_id: session.id,
            token: token.text,
            mfa,
        })
    }

    /// argon2id check on the hashing pool; an unknown user (or one without a password) is
    /// checked against the dummy hash so the time taken does not tell.
    pub(crate) async fn check_password(
        &self,
        creds: Option<&UserCredentials>,
        password: &str,
    ) -> Result<bool> {
        let (phc, real) = match creds.and_then(|c| c.password.as_ref()) {
            Some(p) => (p.argon2.clone(), true),
            None => (self.dummy_hash().await?, false),
        };
        let matches = self.verify_on_pool(password, phc).await?;
        Ok(real && matches)
    }

    /// Completes a login pending MFA with a TOTP code or PIN. Each attempt is claimed in the
    /// store before its code is judged, so concurrent guesses never exceed
    /// `max_code_attempts`; the last allowed wrong code ends the pending session. Each TOTP
    /// code is accepted once.
    pub async fn second_factor(&self, token: &str, kind: MfaKind, code: &str) -> Result<Uuid> {
        let session = self.sessions.by_token(token).await?;
        if session.state != SessionState::PendingMfa {
            return Err(Error::WrongState(
                "the session is not waiting for a second factor",
            ));
        }
        if session.pending_mfa != Some(kind) {
            return Err(Error::Invalid(match session.pending_mfa {
                Some(MfaKind::Pin) => "this session expects auth_type PIN".into(),
                _ => "this session expects auth_type 2FA".into(),
            }));
        }
        if code.len() > 64 {
            return Err(Error::Invalid("code is too long".into()));
        }
        let max = self.settings.max_code_attempts;
        let Some(attempt) = self.store.claim_mfa_attempt(session.id, max).await? else {
            // Used up (or completed meanwhile): an active session is left alone.
            if self.store.abandon_login(session.id, self.now()).await? {
                self.sessions.ended(vec![session.id]).await;
            }
            return Err(Error::BadCredentials);
        };
        let creds = self.session_credentials(&session).await?;
        let ok = match kind {
            MfaKind::Totp => self.check_totp(&creds, code).await?,
            MfaKind::Pin => self.check_pin(&creds, code).await?,
        };
        let userid = creds.user.userid.as_str();
        let ip = session.client.ip.as_deref();
        if !ok {
            let exhausted = attempt >= max;
            if exhausted && self.store.abandon_login(session.id, self.now()).await? {
                self.sessions.ended(vec![session.id]).await;
            }
            let event = if exhausted {
                AuditEvent::MfaLocked {
                    userid,
                    session: session.id,
                    ip,
                    kind,
                }
            } else {
                AuditEvent::MfaFailed {
                    userid,
                    session: session.id,
                    ip,
                    kind,
                }
            };
            self.audit(&session.server_id, event).await?;
            return Err(Error::BadCredentials);
        }
        let method = match kind {
            MfaKind::Totp => AuthMethod::Otp,
            MfaKind::Pin => AuthMethod::Pin,
        };
        self.complete_second_factor(token, &session, method, userid, Via::SecondFactor(kind))
            .await
    }

    /// Activates a sign-in pending its second factor once the factor (`method`) is proven.
    pub(crate) async fn complete_second_factor(
        &self,
        token: &str,
        session: &Session,
        method: AuthMethod,
        userid: &str,
        via: Via,
    ) -> Result<Uuid> {
        let epoch = self.sessions.epoch();
        let transition = self.sessions.transition();
        if !self
            .store
            .complete_mfa(session.id, method, transition)
            .await?
        {
            // Revoked (or completed) by a concurrent request: this proof logs nobody in.
            return Err(Error::SessionInvalid);
        }
        self.sessions.activated(epoch, token, session);
        self.audit(
            &session.server_id,
            AuditEvent::LoginSucceeded {
                userid: Some(userid),
                session: session.id,
                ip: session.client.ip.as_deref(),
                via,
            },
        )
        .await?;
        Ok(session.id)
    }

    pub(crate) async fn session_credentials(&self, session: &Session) -> Result<UserCredentials> {
        let user_id = session.user_id.ok_or(Error::SessionInvalid)?;
        self.store
            .credentials_by_id(user_id)
            .await?
            .ok_or(Error::SessionInvalid)
    }

    async fn check_totp(&self, creds: &UserCredentials, code: &str) -> Result<bool> {
        let Some(secret) = &creds.totp_secret else {
            return Ok(false);
        };
        match totp::verify(secret, code.trim(), self.now())? {
            Some(step) if step > creds.totp_last_step => {
                Ok(self.store.consume_totp_step(creds.user.id, step).await?)
            }
            _ => Ok(false),
        }
    }

    async fn check_pin(&self, creds: &UserCredentials, pin: &str) -> Result<bool> {
        let Some(phc) = creds.pin_hash.clone() else {
            return Ok(false);
        };
        if check_pin_shape(pin).is_err() {
            return Ok(false);
        }
        self.verify_on_pool(pin, phc).await
    }

    /// Checks a secret against an argon2id PHC string on the hashing pool.
    async fn verify_on_pool(&self, secret: &str, phc: String) -> Result<bool> {
        let secret = secret.to_owned();
        self.hashing
            .run(move |memory| Ok(credentials::verify_secret(secret.as_bytes(), &phc, memory)))
            .await
    }

    /// Draws a fresh CAPTCHA for a session blocked on one (replacing any earlier challenge).
    pub async fn captcha_image(&self, token: &str) -> Result<Vec<u8>> {
        let session = self.sessions.by_token(token).await?;
        if session.state != SessionState::BlockedCaptcha {
            return Err(Error::WrongState("the session is not blocked on a CAPTCHA"));
        }
        let test_answer = self.settings.captcha_test_answer.clone();
        let challenge = self
            .hashing
            .run(move |_| captcha::generate(test_answer.as_deref()))
            .await?;
        if !self
            .store
            .set_captcha_answer(session.id, &challenge.answer_hash)
            .await?
        {
            return Err(Error::WrongState("the session is not blocked on a CAPTCHA"));
        }
        Ok(challenge.png)
    }

    /// Checks a CAPTCHA answer. Each challenge takes one answer, consumed by the statement
    /// that judges it. The login goes on only when the answer is right AND the password kept
    /// with the session was right; a right answer with a wrong password ends the session
    /// without telling which part was wrong.
    pub async fn unblock_captcha(&self, token: &str, answer: &str) -> Result<Unblocked> {
        if answer.trim().is_empty() || answer.len() > captcha::MAX_ANSWER_BYTES {
            return Err(Error::Invalid(format!(
                "token must be 1 to {} bytes",
                captcha::MAX_ANSWER_BYTES
            )));
        }
        let session = self.sessions.by_token(token).await?;
        if session.state != SessionState::BlockedCaptcha {
            return Err(Error::WrongState("the session is not blocked on a CAPTCHA"));
        }
        let ip = session.client.ip.as_deref();
        let epoch = self.sessions.epoch();
        let verdict = self
            .store
            .answer_captcha(
                session.id,
                &captcha::answer_hash(answer),
                self.settings.max_code_attempts,
                self.sessions.transition(),
            )
            .await?;
        let mfa = match verdict {
            CaptchaVerdict::NotBlocked => {
                return Err(Error::WrongState("the session is not blocked on a CAPTCHA"))
            }
            CaptchaVerdict::Wrong { .. } | CaptchaVerdict::PasswordWrong => {
                if matches!(
                    verdict,
                    CaptchaVerdict::Wrong { ended: true } | CaptchaVerdict::PasswordWrong
                ) {
                    self.sessions.ended(vec![session.id]).await;
                }
                self.audit(
                    &session.server_id,
                    AuditEvent::CaptchaFailed {
                        session: session.id,
                        ip,
                    },
                )
                .await?;
                return Err(Error::BadCredentials);
            }
            CaptchaVerdict::Passed { mfa } => mfa,
        };
        let creds = self.session_credentials(&session).await?;
        let userid = creds.user.userid.as_str();
        self.throttle
            .record_success(&session.server_id, userid)
            .await?;
        if mfa.is_none() {
            self.sessions.activated(epoch, token, &session);
        }
        self.audit(
            &session.server_id,
            login_step(userid, session.id, ip, mfa, Via::Captcha),
        )
        .await?;
        Ok(Unblocked {
            session_id: session.id,
            mfa,
        })
    }

    /// Keeps an active session alive (the hot path; see [`crate::cache::sessions`]).
    pub async fn keepalive(&self, token: &str) -> Result<Uuid> {
        Ok(self.sessions.keepalive(token).await?.id)
    }

    /// [`Latchkey::keepalive`] when memory alone answers it; `None` is not a no:
    /// the async check decides.
    pub fn keepalive_now(&self, token: &str) -> Option<Uuid> {
        Some(self.sessions.keepalive_now(token)?.id)
    }

    /// Ends the session a token names, whatever its state.
    pub async fn logout(&self, token: &str) -> Result<Uuid> {
        let session = self.sessions.by_token(token).await?;
        self.sessions.revoke(session.id).await?;
        self.audit(
            &session.server_id,
            AuditEvent::Logout {
                session: session.id,
                ip: session.client.ip.as_deref(),
                of: LogoutOf::SessionToken,
            },
        )
        .await?;
        Ok(session.id)
    }
}

/// The audit event of a first factor accepted: the login is done, or waits for `mfa`.
fn login_step<'a>(
    userid: &'a str,
    session: Uuid,
    ip: Option<&'a str>,
    mfa: Option<MfaKind>,
    via: Via,
) -> AuditEvent<'a> {
    match mfa {
        Some(_) => AuditEvent::LoginPendingMfa {
            userid,
            session,
            ip,
            via,
        },
        None => AuditEvent::LoginSucceeded {
            userid: Some(userid),
            session,
            ip,
            via,
        },
    }
}
