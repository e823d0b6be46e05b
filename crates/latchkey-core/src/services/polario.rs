//! Token sessions (family B): SCRAM-SHA-256 login, access JWTs, rotating refresh tokens with
//! theft detection, logout — and the signing keys behind the JWTs.
//!
//! - A SCRAM first message stores nothing. The server nonce carries the handshake: a version
//!   byte, its expiry, the salt and iteration count answered, 16 random bytes, and a truncated
//!   HMAC-SHA-256 under a key derived from the server's key that binds all of these and the
//!   client nonce, e-mail and `Platform` header. The final message splits the combined nonce
//!   from the right (the server nonce has a fixed length), checks the MAC in constant time and
//!   the expiry (60 s), then records the handshake as used in one INSERT (single use, across
//!   processes) before the proof is judged. Only used handshakes are rows.
//! - Unknown e-mails get a handshake too, with a salt derived from the server's key, and an
//!   iteration count drawn per name (an HMAC of the name under the server's key) from the
//!   counts the server's users have, weighted by how many have each; a known user answers its
//!   own. A verifier is re-derived at the current `scram_iterations` whenever a password is
//!   set or checked in clear ([`Latchkey::rederive_scram_if_stale`]), so the counts in use
//!   converge on the setting and neither answer tells whether a name exists.
//! - Refresh tokens are 256-bit, stored hashed, and rotate when the client takes part: each
//!   refresh answers a successor, and the presented token stays valid until that successor is
//!   first used (then the successor is current and its predecessor superseded). A session has
//!   at most one unused successor: refreshing again with the current token replaces it (the
//!   replaced one is kept as superseded: presented later, it revokes the session, for it means
//!   two holders of the current token, as when a thief refreshes before the client). So a
//!   client that never reads the successor (one generated from the vendor's spec) keeps
//!   working with its login token, and one that adopts each successor gets full rotation.
//!   Presenting a superseded token revokes the session (someone else holds a copy). Each step
//!   is a compare-and-set on the session row; a step that finds the row moved looks again.
//! - A JWT stays verifiable offline until `exp`, but latchkey refuses a JWT whose session was
//!   revoked at once (every latchkey endpoint checks the session behind `sid`).

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use uuid::Uuid;

use crate::cache::server_keys::ServerKeys;
use crate::cache::sessions::{ActiveSession, NewSession, SessionKey};
use crate::cache::verified_tokens::VerifiedToken;
use crate::crypto::credentials::{self, hmac_sha256};
use crate::crypto::jwt::{generate_signing_key, AccessClaims, Jwk, KeyRing};
use crate::crypto::scram;
use crate::crypto::secret::{ct_eq, random_bytes, IssuedToken, SecretHash};
use crate::error::{Error, Result};
use crate::model::ids::{ServerId, UserId};
use crate::model::{
    AuthMethod, ClientInfo, RefreshStanding, Session, SessionState, UserCredentials,
};
use crate::services::audit::{AuditEvent, LogoutOf, Via};
use crate::services::Latchkey;

/// Seconds a SCRAM handshake may wait for its final message.
pub const HANDSHAKE_TTL: i64 = 60;
/// Characters of the server nonce (base64url without padding): the combined nonce of a final
/// message is the client nonce followed by exactly this many characters.
pub const SERVER_NONCE_LEN: usize = (SERVER_NONCE_BYTES * 4).div_ceil(3);
/// Bytes of the salt of every verifier latchkey derives (and of the salts of unknown names).
const SALT_LEN: usize = 16;
/// The layout of the server nonce, first byte.
const SERVER_NONCE_VERSION: u8 = 1;
/// version | expires (i64, big-endian) | iterations (u32, big-endian) | salt | random.
const SERVER_NONCE_HEAD: usize = 1 + 8 + 4 + SALT_LEN + 16;
/// HMAC-SHA-256 truncated to 128 bits: forging one takes 2^128 guesses, each a request.
const SERVER_NONCE_MAC: usize = 16;
const SERVER_NONCE_BYTES: usize = SERVER_NONCE_HEAD + SERVER_NONCE_MAC;
/// Label of the key that authenticates server nonces, derived from the server's key.
const SERVER_NONCE_KEY_LABEL: &[u8] = b"latchkey scram server nonce key v1";
/// Seconds the iteration counts in use on a server are remembered (per process).
const ITERATION_COUNTS_TTL: i64 = 60;
/// Seconds between reloads of the signing keys when an unknown `kid` shows up.
const KEY_RELOAD_MIN_INTERVAL: i64 = 5;
/// Compare-and-set passes of one refresh grant before it gives up (503) under contention.
const REFRESH_ATTEMPTS: usize = 4;
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

/// What a server nonce carries from the first message to the final one.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Handshake {
    expires_at: i64,
    iterations: u32,
    salt: [u8; SALT_LEN],
}

/// What a server nonce is bound to besides what it carries: a nonce issued for one server,
/// client nonce, e-mail and `Platform` header opens for exactly those.
struct Binding<'a> {
    server: &'a ServerKeys,
    client_nonce: &'a str,
    email: &'a str,
    platform: Option<&'a str>,
}

impl Binding<'_> {
    /// The truncated HMAC over the nonce's head and every bound value, each length-prefixed.
    fn mac(&self, head: &[u8]) -> [u8; SERVER_NONCE_MAC] {
        let key = hmac_sha256(&self.server.secret_key, SERVER_NONCE_KEY_LABEL);
        let mut message = Vec::with_capacity(head.len() + 64 + self.client_nonce.len());
        message.extend_from_slice(head);
        for field in [self.server.id.as_str(), self.client_nonce, self.email] {
            push_field(&mut message, field);
        }
        match self.platform {
            None => message.push(0),
            Some(platform) => {
                message.push(1);
                push_field(&mut message, platform);
            }
        }
        let full = hmac_sha256(&key, &message);
        let mut mac = [0u8; SERVER_NONCE_MAC];
        mac.copy_from_slice(&full[..SERVER_NONCE_MAC]);
        mac
    }

    /// The server nonce of `handshake`, with fresh random bytes.
    fn issue(&self, handshake: &Handshake) -> String {
        let mut raw = Vec::with_capacity(SERVER_NONCE_BYTES);
        raw.push(SERVER_NONCE_VERSION);
        raw.extend_from_slice(&handshake.expires_at.to_be_bytes());
        raw.extend_from_slice(&handshake.iterations.to_be_bytes());
        raw.extend_from_slice(&handshake.salt);
        raw.extend_from_slice(&random_bytes::<16>());
        let mac = self.mac(&raw);
        raw.extend_from_slice(&mac);
        URL_SAFE_NO_PAD.encode(raw)
    }

    /// The handshake a server nonce carries, when it was issued by this server for exactly
    /// these bound values (expiry not judged here). The MAC is compared in constant time.
    fn open(&self, server_nonce: &str) -> Option<Handshake> {
        if server_nonce.len() != SERVER_NONCE_LEN {
            return None;
        }
        let raw = URL_SAFE_NO_PAD.decode(server_nonce).ok()?;
        if raw.len() != SERVER_NONCE_BYTES || raw.first() != Some(&SERVER_NONCE_VERSION) {
            return None;
        }
        let (head, mac) = raw.split_at(SERVER_NONCE_HEAD);
        if !ct_eq(&self.mac(head), mac) {
            return None;
        }
        let expires_at = i64::from_be_bytes(head.get(1..9)?.try_into().ok()?);
        let iterations = u32::from_be_bytes(head.get(9..13)?.try_into().ok()?);
        let salt = head.get(13..13 + SALT_LEN)?.try_into().ok()?;
        Some(Handshake {
            expires_at,
            iterations,
            salt,
        })
    }
}

fn push_field(message: &mut Vec<u8>, field: &str) {
    let len = u64::try_from(field.len()).unwrap_or(u64::MAX);
    message.extend_from_slice(&len.to_be_bytes());
    message.extend_from_slice(field.as_bytes());
}

/// Users with a password per SCRAM iteration count on one server, lowest count first.
pub(crate) type IterationCounts = Arc<[(u32, u64)]>;

/// The iteration counts in use per server as this process last read them, and when: unknown
/// names draw from them on every first message, so the store is asked at most once a minute
/// per server (and an unknown name costs the same store round trips as a known one). Bounded
/// by the number of servers.
#[derive(Default)]
pub(crate) struct IterationCountsCache(Mutex<HashMap<ServerId, (i64, IterationCounts)>>);

impl IterationCountsCache {
    fn entries(&self) -> MutexGuard<'_, HashMap<ServerId, (i64, IterationCounts)>> {
        // The entries are plain values: a panic elsewhere cannot leave them half-changed.
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn get(&self, server_id: &ServerId, now: i64) -> Option<IterationCounts> {
        self.entries()
            .get(server_id)
            .filter(|(read_at, _)| (0..ITERATION_COUNTS_TTL).contains(&(now - read_at)))
            .map(|(_, counts)| counts.clone())
    }

    fn remember(&self, server_id: &ServerId, read_at: i64, counts: IterationCounts) {
        self.entries().insert(server_id.clone(), (read_at, counts));
    }

    fn forget(&self, server_id: &ServerId) {
        self.entries().remove(server_id);
    }
}

/// The iteration count of an unknown name: the count of the `pick`-th user (mod the number of
/// users with a password) in `counts`, so each count is answered as often as users have it.
/// None when nobody has a password.
fn draw_iterations(counts: &[(u32, u64)], pick: u64) -> Option<u32> {
    let total = counts
        .iter()
        .fold(0u64, |total, &(_, users)| total.saturating_add(users));
    if total == 0 {
        return None;
    }
    let mut left = pick % total;
    for &(iterations, users) in counts {
        if left < users {
            return Some(iterations);
        }
        left -= users;
    }
    counts.last().map(|&(iterations, _)| iterations)
}

impl Latchkey {
    /// SCRAM client-first: answers the server-first message. Stores nothing: the server nonce
    /// carries the handshake, authenticated by the server's key.
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
        let server = self.server_keys(server_id).await?;
        let stored = self
            .store
            .credentials(server_id, &userid)
            .await?
            .and_then(|c| c.password)
            .and_then(|p| {
                Some((
                    <[u8; SALT_LEN]>::try_from(p.scram.salt).ok()?,
                    p.scram.iterations,
                ))
            });
        let (salt, iterations) = match stored {
            Some(known) => known,
            None => {
                // Same shape and stable per name, so a second ask gives the same answer.
                let derived = hmac_sha256(
                    &server.secret_key,
                    format!("latchkey scram salt\0{email}").as_bytes(),
                );
                let mut salt = [0u8; SALT_LEN];
                salt.copy_from_slice(&derived[..SALT_LEN]);
                (salt, self.unknown_name_iterations(&server, email).await?)
            }
        };
        let handshake = Handshake {
            expires_at: self.now() + HANDSHAKE_TTL,
            iterations,
            salt,
        };
        let server_nonce = Binding {
            server: &server,
            client_nonce,
            email,
            platform,
        }
        .issue(&handshake);
        Ok(ScramChallenge {
            nonce: format!("{client_nonce}{server_nonce}"),
            salt: salt.to_vec(),
            iterations,
            expires: handshake.expires_at,
        })
    }

    /// The iteration count a name without a verifier answers: drawn from the counts in use on
    /// the server by an HMAC of the name (stable per name while the counts stay), the current
    /// setting when nobody has a password.
    async fn unknown_name_iterations(&self, server: &ServerKeys, email: &str) -> Result<u32> {
        let counts = self.iteration_counts_in_use(&server.id).await?;
        let digest = hmac_sha256(
            &server.secret_key,
            format!("latchkey scram iterations\0{email}").as_bytes(),
        );
        let mut pick = [0u8; 8];
        pick.copy_from_slice(&digest[..8]);
        Ok(draw_iterations(&counts, u64::from_be_bytes(pick))
            .unwrap_or(self.settings.scram_iterations))
    }

    async fn iteration_counts_in_use(&self, server_id: &ServerId) -> Result<IterationCounts> {
        let now = self.now();
        if let Some(counts) = self.iteration_counts.get(server_id, now) {
            return Ok(counts);
        }
        let counts: IterationCounts = self.store.scram_iteration_counts(server_id).await?.into();
        self.iteration_counts
            .remember(server_id, now, counts.clone());
        Ok(counts)
    }

    /// After a password was checked in clear against the argon2id hash of `user` (as read
    /// before the check): when its SCRAM verifier was derived at another iteration count than
    /// the current `scram_iterations` setting (or with a salt of another length), derives a new
    /// one (PBKDF2, fresh salt) and stores it in place of the old one only, leaving the argon2id
    /// hash alone. A password set meanwhile wins (the store replaces only the verifier it was
    /// handed). So the iteration counts in use converge on the setting, and a user's answer
    /// in the first message does not tell that its password predates a change of the setting.
    // Called by the Basic password login (services/quatrix.rs) after a right password.
    pub(crate) async fn rederive_scram_if_stale(
        &self,
        user: &UserCredentials,
        password: &str,
    ) -> Result<()> {
        let Some(stored) = user.password.as_ref().map(|p| &p.scram) else {
            return Ok(());
        };
        let iterations = self.settings.scram_iterations;
        if stored.iterations == iterations && stored.salt.len() == SALT_LEN {
            return Ok(());
        }
        let password = password.to_owned();
        // PBKDF2 on the hashing pool, like every password derivation.
        let verifier = self
            .hashing
            .run(move |_memory| {
                Ok(credentials::scram_verifier(
                    &password,
                    random_bytes::<SALT_LEN>().to_vec(),
                    iterations,
                ))
            })
            .await?;
        if self
            .store
            .set_scram_verifier(user.user.id, &stored.salt, &verifier)
            .await?
        {
            // This process answers with the new counts at once; others within a minute.
            self.iteration_counts.forget(&user.user.server_id);
        }
        Ok(())
    }

    /// SCRAM client-final: opens the handshake the server nonce carries, records it as used,
    /// checks the proof and, for a user without second factor or CAPTCHA requirement, opens a
    /// token session.
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
        let unknown = || {
            Error::Invalid(
                "unknown SCRAM handshake, or email or Platform header not those of the first \
                 message"
                    .into(),
            )
        };
        // The server nonce has a fixed length: the client nonce is what comes before it.
        let (client_nonce, server_nonce) = nonce
            .len()
            .checked_sub(SERVER_NONCE_LEN)
            .filter(|&at| at > 0)
            .and_then(|at| nonce.split_at_checked(at))
            .ok_or_else(unknown)?;
        let server = self.server_keys(server_id).await?;
        let handshake = Binding {
            server: &server,
            client_nonce,
            email,
            platform,
        }
        .open(server_nonce)
        .ok_or_else(unknown)?;
        if handshake.expires_at <= self.now() {
            return Err(Error::Invalid("expired SCRAM handshake".into()));
        }
        // Recorded before the proof is judged: a replay gets no second judgement.
        if !self
            .store
            .record_used_handshake(&SecretHash::of(nonce.as_bytes()), handshake.expires_at)
            .await?
        {
            return Err(Error::Invalid("SCRAM handshake already used".into()));
        }
        let proof = STANDARD
            .decode(proof_b64)
            .map_err(|_| Error::Invalid("proof is not base64".into()))?;
        if proof.len() != 32 {
            return Err(Error::Invalid("proof must be 32 bytes (SHA-256)".into()));
        }
        let auth_message = scram::auth_message(
            email,
            client_nonce,
            nonce,
            &handshake.salt,
            handshake.iterations,
        );
        let creds = self.store.credentials(server_id, &userid).await?;
        // The verifier must still be the one the first message answered for.
        let verifier = creds
            .as_ref()
            .and_then(|c| c.password.as_ref())
            .map(|p| &p.scram)
            .filter(|v| v.salt == handshake.salt && v.iterations == handshake.iterations);
        let proof_ok = verifier.is_some_and(|v| scram::verify_proof(v, &auth_message, &proof));

        let ip = client.ip.clone();
        let standing = self
            .throttle
            .standing(server_id, email, ip.as_deref())
            .await?;
        if !proof_ok {
            self.throttle
                .record_failure(server_id, email, ip.as_deref())
                .await?;
        }
        if standing.captcha {
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
        self.throttle
            .record_success_after(standing, server_id, email)
            .await?;
        if creds.second_factor().is_some() {
            return Err(Error::Forbidden(
                "a second factor is required: log in through GET /session/login".into(),
            ));
        }
        client.device_name = device.describe();
        let refresh_token = IssuedToken::generate();
        let (session, _unused_bearer) = self
            .sessions
            .create_with(
                NewSession {
                    idle_timeout: self.settings.refresh_idle_timeout,
                    server_id: server_id.clone(),
                    user_id: Some(creds.user.id),
                    methods: vec![AuthMethod::Pwd],
                    state: SessionState::Active,
                    client,
                    pending_mfa: None,
                    password_ok: true,
                },
                Some(&refresh_token.hash),
                // Written with the session (on PostgreSQL, one commit for both).
                |session| {
                    Some(self.audit_record(
                        server_id,
                        AuditEvent::LoginSucceeded {
                            userid: Some(email),
                            session: session.id,
                            ip: ip.as_deref(),
                            via: Via::Scram,
                        },
                    ))
                },
            )
            .await?;
        let refresh_token = refresh_token.text;
        let access_token = self
            .issue_access_token(&session, &creds.user.userid)
            .await?;
        Ok(TokenGrant {
            session_id: session.id,
            access_token,
            refresh_token,
            server_signature: Some(scram::server_signature(verifier, &auth_message)),
        })
    }

    /// A refresh grant: a new access token and a successor refresh token (see the module
    /// documentation for the rotation). A superseded token revokes its whole session.
    pub async fn refresh(&self, refresh_token: &str) -> Result<TokenGrant> {
        if refresh_token.is_empty() || refresh_token.len() > MAX_REFRESH_TOKEN_LEN {
            return Err(Error::RefreshRejected);
        }
        let presented = SecretHash::of(refresh_token.as_bytes());
        let successor = IssuedToken::generate();
        // Each pass is one compare-and-set; one that loses to a concurrent grant looks again.
        for _ in 0..REFRESH_ATTEMPTS {
            let moved = match self.store.refresh_standing(&presented).await? {
                RefreshStanding::Unknown => return Err(Error::RefreshRejected),
                RefreshStanding::Superseded { session_id } => {
                    self.refresh_token_reused(session_id).await?;
                    return Err(Error::RefreshRejected);
                }
                RefreshStanding::Current { session_id, next } => self
                    .store
                    .replace_refresh_successor(
                        session_id,
                        &presented,
                        next.as_ref(),
                        &successor.hash,
                        self.now(),
                    )
                    .await?
                    .then_some(session_id),
                RefreshStanding::Next {
                    session_id,
                    current,
                } => self
                    .store
                    .promote_refresh_successor(
                        session_id,
                        &current,
                        &presented,
                        &successor.hash,
                        self.now(),
                    )
                    .await?
                    .then_some(session_id),
            };
            if let Some(session_id) = moved {
                return self.refresh_grant(session_id, successor.text).await;
            }
        }
        Err(Error::Unavailable(
            "the session's refresh token changed under too many concurrent refreshes".into(),
        ))
    }

    /// The access token of a refresh grant, if the session is still active.
    async fn refresh_grant(&self, session_id: Uuid, refresh_token: String) -> Result<TokenGrant> {
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
        let access_token = self.issue_access_token(&session, &user.userid).await?;
        Ok(TokenGrant {
            session_id,
            access_token,
            refresh_token,
            server_signature: None,
        })
    }

    /// A superseded refresh token came back: someone else holds a copy. The session ends.
    async fn refresh_token_reused(&self, session_id: Uuid) -> Result<()> {
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
        Ok(())
    }

    /// Logs out the session of an access token (and so all its refresh tokens).
    pub async fn token_logout(&self, access_token: &str) -> Result<Uuid> {
        let active = self
            .authenticate_access_token(access_token.as_bytes())
            .await?;
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
    pub async fn authenticate_access_token(&self, token: &[u8]) -> Result<ActiveSession> {
        let verified = self.verify_access_token(token).await?;
        self.sessions.check(SessionKey::Id(verified.sid)).await
    }

    /// [`Latchkey::authenticate_access_token`] when memory alone answers it (the token
    /// verified before, its session cached); `None` is not a no:
    /// the async check decides.
    pub fn authenticate_access_token_now(&self, token: &[u8]) -> Option<ActiveSession> {
        let verified = self.verified_tokens.get(token)?;
        if verified.exp <= self.now() {
            return None;
        }
        self.sessions.check_now(SessionKey::Id(verified.sid), true)
    }

    /// Checks an access token's signature and claims (not its session). A token verified once
    /// is remembered until it expires, and is then found by its bytes alone.
    pub async fn verify_access_token(&self, token: &[u8]) -> Result<VerifiedToken> {
        if token.len() > MAX_JWT_LEN {
            return Err(Error::SessionInvalid);
        }
        let now = self.now();
        let verified = match self.verified_tokens.get(token) {
            Some(verified) => verified,
            None => {
                let token = std::str::from_utf8(token).map_err(|_| Error::SessionInvalid)?;
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
                self.verified_tokens.insert(token, verified);
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
            jti: URL_SAFE_NO_PAD.encode(random_bytes::<16>()),
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
            // Callers racing here (the start-up reload and a first login, or several processes)
            // create one key between them, and every ring is built from the store's answer.
            self.store
                .insert_first_signing_key(&generate_signing_key(now))
                .await?;
            keys = self.store.signing_keys().await?;
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    fn server(key_byte: u8) -> ServerKeys {
        ServerKeys {
            id: ServerId::generate(),
            secret_key: [key_byte; 32],
            public_key: [0; 32],
        }
    }

    fn handshake() -> Handshake {
        Handshake {
            expires_at: 1_800_000_060,
            iterations: 600_000,
            salt: [0x80; SALT_LEN],
        }
    }

    #[test]
    fn a_server_nonce_opens_for_exactly_what_it_was_issued_for() {
        let server = server(7);
        let binding = Binding {
            server: &server,
            client_nonce: "fyko+d2lbbFgONRv9qkxdawL",
            email: "alice@example.com",
            platform: Some("ios"),
        };
        let nonce = binding.issue(&handshake());
        assert_eq!(nonce.len(), SERVER_NONCE_LEN);
        assert_eq!(SERVER_NONCE_LEN, 82);
        assert!(nonce
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
        assert_eq!(binding.open(&nonce), Some(handshake()));
        assert_ne!(binding.issue(&handshake()), nonce, "random bytes in each");

        let other_server = self::server(8);
        for (what, other) in [
            (
                "another client nonce",
                Binding {
                    client_nonce: "fyko+d2lbbFgONRv9qkxdawM",
                    ..binding
                },
            ),
            (
                "another e-mail",
                Binding {
                    email: "bob@example.com",
                    ..binding
                },
            ),
            (
                "no Platform",
                Binding {
                    platform: None,
                    ..binding
                },
            ),
            (
                "another Platform",
                Binding {
                    platform: Some("android"),
                    ..binding
                },
            ),
            (
                "another server",
                Binding {
                    server: &other_server,
                    ..binding
                },
            ),
            (
                // Length prefixes: moving a character from one field to the next changes the MAC.
                "a shifted boundary",
                Binding {
                    client_nonce: "fyko+d2lbbFgONRv9qkxdaw",
                    email: "Lalice@example.com",
                    ..binding
                },
            ),
        ] {
            assert_eq!(other.open(&nonce), None, "{what}");
        }

        // Every byte of the nonce is authenticated (or checked), and only the canonical text
        // decodes (so a replay cannot vary the text of one nonce).
        let raw = URL_SAFE_NO_PAD.decode(&nonce).unwrap();
        for i in 0..raw.len() {
            let mut changed = raw.clone();
            changed[i] ^= 1;
            assert_eq!(
                binding.open(&URL_SAFE_NO_PAD.encode(&changed)),
                None,
                "byte {i}"
            );
        }
        let last = nonce.chars().last().unwrap();
        for c in ('A'..='Z')
            .chain('a'..='z')
            .chain('0'..='9')
            .chain(['-', '_'])
        {
            if c != last {
                let mut text = nonce.clone();
                text.pop();
                text.push(c);
                assert_eq!(binding.open(&text), None, "last character {c}");
            }
        }
        for garbage in [
            "",
            "abc",
            &nonce[1..],
            &format!("{nonce}A"),
            &"A".repeat(82),
        ] {
            assert_eq!(binding.open(garbage), None, "{garbage:?}");
        }
    }

    #[test]
    fn unknown_names_draw_counts_as_often_as_users_have_them() {
        assert_eq!(draw_iterations(&[], 5), None);
        assert_eq!(draw_iterations(&[(4096, 0)], 5), None);
        assert_eq!(draw_iterations(&[(4096, 1)], u64::MAX), Some(4096));
        let counts = [(4096, 3), (600_000, 1)];
        let drawn: Vec<u32> = (0..8)
            .map(|pick| draw_iterations(&counts, pick).unwrap())
            .collect();
        assert_eq!(
            drawn,
            [4096, 4096, 4096, 600_000, 4096, 4096, 4096, 600_000]
        );
        assert_eq!(
            draw_iterations(&[(1, u64::MAX), (2, u64::MAX)], u64::MAX),
            Some(1),
            "saturating total"
        );
    }
}
