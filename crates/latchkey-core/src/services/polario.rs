//! Token sessions (family B): SCRAM-SHA-256 login, access JWTs, rotating refresh tokens with
//! theft detection, logout — and the signing keys behind the JWTs.
//!
//! - Each SCRAM handshake lives in the store (so the final message may reach another process),
//!   is taken (deleted) by the final message whatever its outcome, and dies after 60 s.
//! - Unknown e-mails get a handshake too, with a salt derived from the server's key and the
//!   configured iteration count, so the first answer tells nothing.
//! - Refresh tokens are 256-bit, stored hashed, single use: each refresh answers the next one.
//!   Presenting a used one revokes the session (someone else holds a copy).
//! - A JWT stays verifiable offline until `exp`, but latchkey refuses a JWT whose session was
//!   revoked at once (every latchkey endpoint checks the session behind `sid`).

use std::sync::atomic::Ordering;
use std::sync::Arc;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use uuid::Uuid;

use crate::cache::sessions::{ActiveSession, NewSession, SessionKey};
use crate::cache::verified_tokens::VerifiedToken;
use crate::crypto::credentials::hmac_sha256;
use crate::crypto::jwt::{generate_signing_key, AccessClaims, Jwk, KeyRing};
use crate::crypto::scram;
use crate::crypto::secret::{IssuedToken, SecretHash};
use crate::error::{Error, Result};
use crate::model::ids::{ServerId, UserId};
use crate::model::{AuthMethod, ClientInfo, RefreshUse, ScramHandshake, Session, SessionState};
use crate::services::audit::{AuditEvent, LogoutOf, Via};
use crate::services::Latchkey;

/// Seconds a SCRAM handshake may wait for its final message.
pub const HANDSHAKE_TTL: i64 = 60;
/// Seconds between reloads of the signing keys when an unknown `kid` shows up.
const KEY_RELOAD_MIN_INTERVAL: i64 = 5;
/// Longest refresh token looked up (issued ones are 43 characters).
const MAX_REFRESH_TOKEN_LEN: usize = 128;
/// Longest JWT looked at.
const MAX_JWT_LEN: usize = 4096;

/// The server-first message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScramChallenge {
    /// Client nonce + server nonce.
    pub nonce: String,
    pub salt: Vec<u8>,
    pub iterations: u32,
    /// Unix time the handshake dies.
    pub expires: i64,
}

/// What a successful login or refresh hands out.
#[derive(Debug)]
pub struct TokenGrant {
    pub session_id: Uuid,
    pub access_token: String,
    pub refresh_token: String,
    /// ServerSignature of the SCRAM exchange (login only).
    pub server_signature: Option<[u8; 32]>,
}

/// Optional device facts of the final message, shown in session lists.
#[derive(Debug, Clone, Default)]
pub struct DeviceFacts {
    pub browser: Option<String>,
    pub device_name: Option<String>,
    pub os: Option<String>,
    pub os_version: Option<String>,
}

impl DeviceFacts {
    /// "deviceName (browser, os osVersion)", with whatever parts are present.
    pub fn describe(&self) -> Option<String> {
        let clean = |s: &Option<String>| {
            s.as_deref()
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| s.chars().take(100).collect::<String>())
        };
        let os = match (clean(&self.os), clean(&self.os_version)) {
            (Some(os), Some(v)) => Some(format!("{os} {v}")),
            (os, _) => os,
        };
        let details: Vec<String> = [clean(&self.browser), os].into_iter().flatten().collect();
        match (clean(&self.device_name), details.is_empty()) {
            (Some(name), true) => Some(name),
            (Some(name), false) => Some(format!("{name} ({})", details.join(", "))),
            (None, false) => Some(details.join(", ")),
            (None, true) => None,
        }
    }
}

impl Latchkey {
    /// SCRAM client-first: answers the server-first message and remembers the handshake.
    pub async fn scram_first(
        &self,
        server_id: &ServerId,
        email: &str,
        client_nonce: &str,
        platform: Option<&str>,
    ) -> Result<ScramChallenge> {
        let userid = UserId::parse(email)?;
        scram::check_nonce(client_nonce, "nonce")?;
        if client_nonce.len() > scram::MAX_NONCE_LEN {
            return Err(Error::Invalid("nonce is too long".into()));
        }
        check_platform(platform)?;
        let server = self.server(server_id).await?;
        let (salt, iterations) = match self
            .store
            .credentials(server_id, &userid)
            .await?
            .and_then(|c| c.password)
        {
            Some(p) => (p.scram.salt, p.scram.iterations),
            None => (
                // Same shape and stable per name, so a second ask gives the same answer.
                hmac_sha256(
                    &server.secret_key,
                    format!("latchkey scram salt\0{email}").as_bytes(),
                )[..16]
                    .to_vec(),
                self.settings.scram_iterations,
            ),
        };
        let server_nonce = IssuedToken::generate().text;
        let nonce = format!("{client_nonce}{server_nonce}");
        let expires = self.now() + HANDSHAKE_TTL;
        self.store
            .insert_handshake(&ScramHandshake {
                nonce_hash: SecretHash::of(nonce.as_bytes()),
                server_id: server_id.clone(),
                email: email.to_owned(),
                client_nonce: client_nonce.to_owned(),
                salt: salt.clone(),
                iterations,
                platform: platform.map(str::to_owned),
                expires_at: expires,
            })
            .await?;
        Ok(ScramChallenge {
            nonce,
            salt,
            iterations,
            expires,
        })
    }

    /// SCRAM client-final: checks the proof and, for a user without second factor or CAPTCHA
    /// requirement, opens a token session.
    #[allow(clippy::too_many_arguments)]
    pub async fn scram_final(
        &self,
        server_id: &ServerId,
        email: &str,
        nonce: &str,
        proof_b64: &str,
        platform: Option<&str>,
        device: DeviceFacts,
        mut client: ClientInfo,
    ) -> Result<TokenGrant> {
        let userid = UserId::parse(email)?;
        scram::check_nonce(nonce, "nonce")?;
        let gone = || Error::Invalid("unknown, expired or already used SCRAM handshake".into());
        let handshake = self
            .store
            .take_handshake(&SecretHash::of(nonce.as_bytes()))
            .await?
            .ok_or_else(gone)?;
        if handshake.expires_at <= self.now() || &handshake.server_id != server_id {
            return Err(gone());
        }
        if handshake.email != email {
            return Err(Error::Invalid(
                "email does not match the first message".into(),
            ));
        }
        if handshake.platform.as_deref() != platform {
            return Err(Error::Invalid(
                "Platform header does not match the first message".into(),
            ));
        }
        let proof = STANDARD
            .decode(proof_b64)
            .map_err(|_| Error::Invalid("proof is not base64".into()))?;
        if proof.len() != 32 {
            return Err(Error::Invalid("proof must be 32 bytes (SHA-256)".into()));
        }
        let auth_message = scram::auth_message(
            email,
            &handshake.client_nonce,
            nonce,
            &handshake.salt,
            handshake.iterations,
        );
        let creds = self.store.credentials(server_id, &userid).await?;
        let verifier = creds
            .as_ref()
            .and_then(|c| c.password.as_ref())
            .map(|p| &p.scram)
            .filter(|v| v.salt == handshake.salt && v.iterations == handshake.iterations);
        let proof_ok = verifier.is_some_and(|v| scram::verify_proof(v, &auth_message, &proof));

        let ip = client.ip.clone();
        let captcha = self
            .throttle
            .captcha_needed(server_id, email, ip.as_deref())
            .await?;
        if !proof_ok {
            self.throttle
                .record_failure(server_id, email, ip.as_deref())
                .await?;
        }
        if captcha {
            // As in family D, the verdict on the password is not told while a CAPTCHA is due.
            return Err(Error::Forbidden(
                "CAPTCHA required: log in through GET /session/login and solve it first".into(),
            ));
        }
        let (Some(creds), Some(verifier), true) = (creds.as_ref(), verifier, proof_ok) else {
            self.audit(
                server_id,
                AuditEvent::LoginFailed {
                    userid: email,
                    ip: ip.as_deref(),
                    via: Via::Scram,
                },
            )
            .await?;
            return Err(Error::BadCredentials);
        };
        self.throttle.record_success(server_id, email).await?;
        if creds.second_factor().is_some() {
            return Err(Error::Forbidden(
                "a second factor is required: log in through GET /session/login".into(),
            ));
        }
        client.device_name = device.describe();
        let (session, _unused_bearer) = self
            .sessions
            .create(NewSession {
                idle_timeout: self.settings.refresh_idle_timeout,
                server_id: server_id.clone(),
                user_id: Some(creds.user.id),
                methods: vec![AuthMethod::Pwd],
                state: SessionState::Active,
                client,
                pending_mfa: None,
                password_ok: true,
            })
            .await?;
        let refresh_token = self.issue_refresh_token(session.id).await?;
        let access_token = self
            .issue_access_token(&session, &creds.user.userid)
            .await?;
        self.audit(
            server_id,
            AuditEvent::LoginSucceeded {
                userid: Some(email),
                session: session.id,
                ip: ip.as_deref(),
                via: Via::Scram,
            },
        )
        .await?;
        Ok(TokenGrant {
            session_id: session.id,
            access_token,
            refresh_token,
            server_signature: Some(scram::server_signature(verifier, &auth_message)),
        })
    }

    async fn issue_refresh_token(&self, session_id: Uuid) -> Result<String> {
        let token = IssuedToken::generate();
        self.store
            .insert_refresh_token(&token.hash, session_id, self.now())
            .await?;
        Ok(token.text)
    }

    /// Rotates a refresh token: answers a new access token and the next refresh token. A token
    /// used before revokes its whole session.
    pub async fn refresh(&self, refresh_token: &str) -> Result<TokenGrant> {
        if refresh_token.is_empty() || refresh_token.len() > MAX_REFRESH_TOKEN_LEN {
            return Err(Error::RefreshRejected);
        }
        let hash = SecretHash::of(refresh_token.as_bytes());
        let session_id = match self.store.use_refresh_token(&hash, self.now()).await? {
            RefreshUse::Unknown => return Err(Error::RefreshRejected),
            RefreshUse::Reused { session_id } => {
                let revoked = self.sessions.revoke(session_id).await?;
                if let Some(s) = self.store.session(session_id).await? {
                    self.audit(
                        &s.server_id,
                        AuditEvent::RefreshTokenReused {
                            session: session_id,
                            revoked,
                        },
                    )
                    .await?;
                }
                return Err(Error::RefreshRejected);
            }
            RefreshUse::Fresh { session_id } => session_id,
        };
        let active = self
            .sessions
            .check(SessionKey::Id(session_id))
            .await
            .map_err(|_| Error::RefreshRejected)?;
        let session = self
            .store
            .session(session_id)
            .await?
            .ok_or(Error::RefreshRejected)?;
        let user = self
            .store
            .user_by_id(active.user_id)
            .await?
            .ok_or(Error::RefreshRejected)?;
        let refresh_token = self.issue_refresh_token(session_id).await?;
        let access_token = self.issue_access_token(&session, &user.userid).await?;
        Ok(TokenGrant {
            session_id,
            access_token,
            refresh_token,
            server_signature: None,
        })
    }

    /// Logs out the session of an access token (and so all its refresh tokens).
    pub async fn token_logout(&self, access_token: &str) -> Result<Uuid> {
        let active = self.authenticate_access_token(access_token).await?;
        self.sessions.revoke(active.id).await?;
        if let Some(s) = self.store.session(active.id).await? {
            self.audit(
                &s.server_id,
                AuditEvent::Logout {
                    session: active.id,
                    ip: s.client.ip.as_deref(),
                    of: LogoutOf::AccessToken,
                },
            )
            .await?;
        }
        Ok(active.id)
    }

    /// A valid access token of a live session: signature, `exp`, `iss`, then the session.
    pub async fn authenticate_access_token(&self, token: &str) -> Result<ActiveSession> {
        let verified = self.verify_access_token(token).await?;
        self.sessions.check(SessionKey::Id(verified.sid)).await
    }

    /// Checks an access token's signature and claims (not its session). A token verified once
    /// is remembered by its hash until it expires.
    pub async fn verify_access_token(&self, token: &str) -> Result<VerifiedToken> {
        if token.len() > MAX_JWT_LEN {
            return Err(Error::SessionInvalid);
        }
        let now = self.now();
        let hash = SecretHash::of(token.as_bytes());
        let verified = match self.verified_tokens.get(&hash) {
            Some(verified) => verified,
            None => {
                let mut ring = self.key_ring();
                if !ring.knows(&kid_of(token).unwrap_or_default()) {
                    // Perhaps another process rotated the keys: reload, at most every few seconds.
                    let last = self.keys_loaded_at.load(Ordering::Relaxed);
                    if now - last >= KEY_RELOAD_MIN_INTERVAL {
                        ring = self.load_signing_keys().await?;
                    }
                }
                let claims = ring.verify_signature(token)?;
                if claims.iss != self.settings.jwt_issuer {
                    return Err(Error::SessionInvalid);
                }
                let verified = VerifiedToken {
                    sid: claims.sid,
                    exp: claims.exp,
                };
                self.verified_tokens.insert(hash, verified);
                verified
            }
        };
        if verified.exp <= now {
            return Err(Error::SessionInvalid);
        }
        Ok(verified)
    }

    async fn issue_access_token(&self, session: &Session, userid: &UserId) -> Result<String> {
        let now = self.now();
        let claims = AccessClaims {
            iss: self.settings.jwt_issuer.clone(),
            sub: userid.as_str().to_owned(),
            sid: session.id,
            iat: now,
            exp: (now + self.settings.access_token_ttl).min(session.absolute_expires_at),
            amr: session
                .methods
                .iter()
                .map(|m| m.as_str().to_owned())
                .collect(),
        };
        let mut ring = self.key_ring();
        if !ring.has_active() {
            ring = self.load_signing_keys().await?;
        }
        ring.sign(&claims)
    }

    fn key_ring(&self) -> Arc<KeyRing> {
        match self.keys.read() {
            Ok(ring) => ring.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// (Re)loads the signing keys from the store, creating the first one when there is none.
    pub async fn load_signing_keys(&self) -> Result<Arc<KeyRing>> {
        let now = self.now();
        let mut keys = self.store.signing_keys().await?;
        if !keys.iter().any(|k| k.retired_at.is_none()) {
            let key = generate_signing_key(now);
            self.store.insert_signing_key(&key).await?;
            keys.insert(0, key);
        }
        let ring = Arc::new(KeyRing::from_keys(
            &keys,
            now,
            self.settings.access_token_ttl,
        ));
        if let Ok(mut slot) = self.keys.write() {
            *slot = ring.clone();
        }
        self.keys_loaded_at.store(now, Ordering::Relaxed);
        Ok(ring)
    }

    /// Makes a new signing key active; older keys stay published until their tokens expire.
    pub async fn rotate_signing_key(&self) -> Result<String> {
        let key = generate_signing_key(self.now());
        self.store.insert_signing_key(&key).await?;
        self.store.retire_signing_keys(&key.kid, self.now()).await?;
        self.load_signing_keys().await?;
        Ok(key.kid)
    }

    /// The published keys (JWKS `keys`).
    pub async fn jwks(&self) -> Result<Vec<Jwk>> {
        let mut ring = self.key_ring();
        if !ring.has_active() {
            ring = self.load_signing_keys().await?;
        }
        Ok(ring.jwks().to_vec())
    }
}

fn kid_of(token: &str) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct KidOnly {
        kid: Option<String>,
    }
    let header = token.split('.').next()?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(header)
        .ok()?;
    serde_json::from_slice::<KidOnly>(&bytes).ok()?.kid
}

/// The optional `Platform` header: 1..=64 printable ASCII characters.
fn check_platform(platform: Option<&str>) -> Result<()> {
    match platform {
        Some(p)
            if p.is_empty() || p.len() > 64 || !p.bytes().all(|b| (0x20..0x7f).contains(&b)) =>
        {
            Err(Error::Invalid(
                "Platform must be 1 to 64 printable ASCII characters".into(),
            ))
        }
        _ => Ok(()),
    }
}
