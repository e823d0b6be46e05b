//! The records latchkey keeps. Narrow on purpose: a login loads [`UserCredentials`], a session
//! check loads a [`Session`], nothing loads more than it needs.

pub mod directory;
pub mod ids;

use std::fmt;

use uuid::Uuid;

use crate::crypto::secret::SecretHash;
use crate::model::ids::{ServerId, UserId};

/// A tenant: one relying party (web site or app) with its own users and identity key.
#[derive(Clone)]
pub struct Server {
    pub id: ServerId,
    pub name: String,
    /// Ed25519 seed of the server's identity key. Never leaves the process except to the store.
    pub secret_key: [u8; 32],
    pub public_key: [u8; 32],
    pub created_at: i64,
}

impl fmt::Debug for Server {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Server")
            .field("id", &self.id)
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// A role holds a permission set per server, or the global `root`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Role {
    pub id: String,
    pub root: bool,
}

/// Per-server permissions of a role (family A's `sessions`, `accounts`, `users`, `servers`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Permissions {
    pub sessions: bool,
    pub accounts: bool,
    pub users: bool,
    pub servers: bool,
}

/// An API key as the store keeps it: only the hash of the key.
#[derive(Clone, Debug)]
pub struct ApiKey {
    pub id: Uuid,
    pub key_hash: SecretHash,
    pub role_id: String,
    pub created_at: i64,
}

/// A user as listed (no credentials).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct User {
    pub id: Uuid,
    pub server_id: ServerId,
    pub userid: UserId,
    pub created_at: i64,
}

/// The SCRAM-SHA-256 verifier (RFC 5802): enough to check a proof, not enough to log in.
#[derive(Clone, PartialEq, Eq)]
pub struct ScramVerifier {
    pub salt: Vec<u8>,
    pub iterations: u32,
    pub stored_key: [u8; 32],
    pub server_key: [u8; 32],
}

impl fmt::Debug for ScramVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScramVerifier")
            .field("iterations", &self.iterations)
            .finish_non_exhaustive()
    }
}

/// Everything derived from a password when it is set.
#[derive(Clone, PartialEq, Eq)]
pub struct PasswordHashes {
    /// PHC string of the argon2id hash.
    pub argon2: String,
    pub scram: ScramVerifier,
}

impl fmt::Debug for PasswordHashes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PasswordHashes(..)")
    }
}

/// What a login needs to know about a user.
#[derive(Clone)]
pub struct UserCredentials {
    pub user: User,
    pub password: Option<PasswordHashes>,
    /// Raw TOTP secret (RFC 6238 key), when 2FA is enabled.
    pub totp_secret: Option<Vec<u8>>,
    /// The last TOTP time step accepted; codes of this step or earlier are refused (one-time use).
    pub totp_last_step: i64,
    /// PHC string of the argon2id hash of the PIN.
    pub pin_hash: Option<String>,
}

impl UserCredentials {
    /// The second factor a login must complete, TOTP preferred when both are set.
    pub fn second_factor(&self) -> Option<MfaKind> {
        if self.totp_secret.is_some() {
            Some(MfaKind::Totp)
        } else if self.pin_hash.is_some() {
            Some(MfaKind::Pin)
        } else {
            None
        }
    }
}

/// A passkey (WebAuthn credential) of a user, as stored: its public key, signature counter and
/// backup flags live in `passkey`, webauthn-rs's own serialisation, rewritten after each use.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PasskeyCredential {
    /// The credential id the authenticator chose (unique across users: one credential is
    /// one key pair on one authenticator).
    pub credential_id: Vec<u8>,
    pub user_id: Uuid,
    /// What the person called it ("phone", "YubiKey 5").
    pub name: String,
    /// webauthn-rs's `Passkey`, as JSON.
    pub passkey: String,
    pub created_at: i64,
    pub last_used_at: Option<i64>,
}

impl fmt::Debug for UserCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UserCredentials")
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

/// A second factor (family D's `Mfa-Code`: 1 = "2FA" TOTP, 2 = "PIN").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MfaKind {
    Totp,
    Pin,
}

impl MfaKind {
    pub fn code(self) -> u8 {
        match self {
            MfaKind::Totp => 1,
            MfaKind::Pin => 2,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            MfaKind::Totp => "totp",
            MfaKind::Pin => "pin",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "totp" => Some(MfaKind::Totp),
            "pin" => Some(MfaKind::Pin),
            _ => None,
        }
    }
}

/// Where a session is in its life. Expiry is not a state: it is read off the deadlines.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SessionState {
    /// Password verified, waiting for the second factor.
    PendingMfa,
    /// Waiting for a CAPTCHA answer; the password verdict is kept in the session.
    BlockedCaptcha,
    Active,
    Revoked,
}

impl SessionState {
    pub fn as_str(self) -> &'static str {
        match self {
            SessionState::PendingMfa => "pending_mfa",
            SessionState::BlockedCaptcha => "blocked_captcha",
            SessionState::Active => "active",
            SessionState::Revoked => "revoked",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "pending_mfa" => SessionState::PendingMfa,
            "blocked_captcha" => SessionState::BlockedCaptcha,
            "active" => SessionState::Active,
            "revoked" => SessionState::Revoked,
            _ => return None,
        })
    }
}

/// How a session's owner proved who they are, as RFC 8176 `amr` values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthMethod {
    /// Password (HTTP Basic or SCRAM).
    Pwd,
    /// One-time password (TOTP).
    Otp,
    /// PIN.
    Pin,
    /// Proof of possession of a hardware-bound key (the companion app).
    Hwk,
}

impl AuthMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            AuthMethod::Pwd => "pwd",
            AuthMethod::Otp => "otp",
            AuthMethod::Pin => "pin",
            AuthMethod::Hwk => "hwk",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "pwd" => AuthMethod::Pwd,
            "otp" => AuthMethod::Otp,
            "pin" => AuthMethod::Pin,
            "hwk" => AuthMethod::Hwk,
            _ => return None,
        })
    }

    /// Every method: a [`Methods`] has room for each once.
    pub const ALL: [AuthMethod; 4] = [
        AuthMethod::Pwd,
        AuthMethod::Otp,
        AuthMethod::Pin,
        AuthMethod::Hwk,
    ];

    /// Comma-separated list, as stored (and as `/forward-auth`'s `Remote-Amr`).
    pub fn join(methods: impl IntoIterator<Item = AuthMethod>) -> String {
        methods
            .into_iter()
            .map(AuthMethod::as_str)
            .collect::<Vec<_>>()
            .join(",")
    }

    pub fn split(s: &str) -> Vec<AuthMethod> {
        s.split(',').filter_map(AuthMethod::parse).collect()
    }
}

/// A session's methods in the order they were used, each once, held in place rather than in a
/// heap block of their own (an [`Identity`] is read on every check of a reverse proxy).
#[derive(Clone, Copy, Default, PartialEq, Eq)]
pub struct Methods([Option<AuthMethod>; AuthMethod::ALL.len()]);

impl Methods {
    pub fn iter(&self) -> impl Iterator<Item = AuthMethod> + '_ {
        self.0.iter().map_while(|method| *method)
    }

    pub fn contains(&self, method: AuthMethod) -> bool {
        self.iter().any(|m| m == method)
    }
}

/// A method already held is not held twice.
impl FromIterator<AuthMethod> for Methods {
    fn from_iter<I: IntoIterator<Item = AuthMethod>>(methods: I) -> Self {
        let mut held = Methods::default();
        for method in methods {
            if let Some(free) = held.0.iter_mut().find(|m| m.is_none_or(|m| m == method)) {
                *free = Some(method);
            }
        }
        held
    }
}

impl std::fmt::Debug for Methods {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

/// Where a request came from, kept with the session and shown in session lists.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClientInfo {
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    pub device_name: Option<String>,
}

/// One logged-in (or logging-in) presence of a user, whatever the login method.
#[derive(Clone, PartialEq, Eq)]
pub struct Session {
    pub id: Uuid,
    pub server_id: ServerId,
    /// `None` only while a login of an unknown user name is held blocked on CAPTCHA.
    pub user_id: Option<Uuid>,
    pub methods: Vec<AuthMethod>,
    pub state: SessionState,
    pub created_at: i64,
    pub last_active_at: i64,
    pub idle_expires_at: i64,
    pub absolute_expires_at: i64,
    /// Seconds of inactivity this session tolerates once active: browser sessions use
    /// `session_idle_timeout`, token sessions (family B) `refresh_idle_timeout`.
    pub idle_timeout: i64,
    pub client: ClientInfo,
    /// The second factor this session waits for (state `PendingMfa`), or will wait for once
    /// its CAPTCHA is solved.
    pub pending_mfa: Option<MfaKind>,
    /// Second-factor attempts claimed so far (each is claimed before its code is judged); at
    /// the limit the session ends.
    pub mfa_attempts: u32,
    /// Hash of the answer of the CAPTCHA last shown for this session (one try each).
    pub captcha_answer: Option<SecretHash>,
    /// Wrong CAPTCHA answers so far.
    pub captcha_failures: u32,
    /// The verdict on the password of a login held blocked on CAPTCHA (kept, not told).
    pub password_ok: bool,
    pub revoked_at: Option<i64>,
}

impl Session {
    /// Live: neither revoked nor past either deadline.
    pub fn is_live(&self, now: i64) -> bool {
        self.state != SessionState::Revoked
            && now < self.idle_expires_at
            && now < self.absolute_expires_at
    }

    pub fn is_active(&self, now: i64) -> bool {
        self.state == SessionState::Active && self.is_live(now)
    }
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session")
            .field("id", &self.id)
            .field("server_id", &self.server_id)
            .field("user_id", &self.user_id)
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

/// A coalesced "last active" write: the store only ever moves these forward.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SessionTouch {
    pub id: Uuid,
    pub last_active_at: i64,
    pub idle_expires_at: i64,
}

/// An audit event as stored: what happened, to whom, when and from where. Never holds a
/// secret. Services record typed [`crate::services::audit::AuditEvent`]s, which flatten to this.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditRecord {
    pub at: i64,
    pub server_id: ServerId,
    /// e.g. `login_succeeded`, `login_failed`, `captcha_required`, `session_revoked`.
    pub kind: String,
    /// The user name as given (also for names that do not exist).
    pub userid: Option<String>,
    pub session_id: Option<Uuid>,
    pub ip: Option<String>,
    pub detail: Option<String>,
}

/// An Ed25519 key that signs access JWTs. Retired keys stay published until the tokens they
/// signed have expired.
#[derive(Clone, PartialEq, Eq)]
pub struct SigningKey {
    pub kid: String,
    pub secret_key: [u8; 32],
    pub public_key: [u8; 32],
    pub created_at: i64,
    pub retired_at: Option<i64>,
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.kid)
            .field("retired_at", &self.retired_at)
            .finish_non_exhaustive()
    }
}

/// Where a refresh token stands in its session's chain (see `services::polario`): the
/// session's current token, its one unused successor, a superseded predecessor, or unknown.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RefreshStanding {
    /// No such token (never issued, a replaced successor, or its session is gone).
    Unknown,
    /// The session's current token; `next` its unused successor, if one was answered.
    Current {
        session_id: Uuid,
        next: Option<crate::crypto::secret::SecretHash>,
    },
    /// The session's unused successor of `current`.
    Next {
        session_id: Uuid,
        current: crate::crypto::secret::SecretHash,
    },
    /// A token that was current before a successor was used: a copy is in other hands.
    Superseded { session_id: Uuid },
}

impl RefreshStanding {
    /// Where `token` stands in the chain of the session row that holds it as its current token
    /// or as its unused successor `next`.
    pub fn in_chain(
        token: &crate::crypto::secret::SecretHash,
        session_id: Uuid,
        current: Option<crate::crypto::secret::SecretHash>,
        next: Option<crate::crypto::secret::SecretHash>,
    ) -> Self {
        match (current, next) {
            (Some(current), _) if current == *token => {
                RefreshStanding::Current { session_id, next }
            }
            (Some(current), Some(_)) => RefreshStanding::Next {
                session_id,
                current,
            },
            // A successor without a current token is not made by latchkey.
            _ => RefreshStanding::Unknown,
        }
    }
}

/// One enrolled instance of the companion app: a device key pair, bound to at most one user.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Account {
    pub id: i64,
    pub server_id: ServerId,
    /// Ed25519 public key of the app.
    pub public_key: [u8; 32],
    pub description: String,
    pub user_id: Option<Uuid>,
    pub blocked: bool,
    pub client_version: Option<String>,
    pub created_at: i64,
    pub last_login: Option<i64>,
    pub last_provoke: Option<i64>,
}

/// A new account (the store assigns the id).
#[derive(Clone, Debug)]
pub struct NewAccount {
    pub server_id: ServerId,
    pub public_key: [u8; 32],
    pub description: String,
    pub user_id: Option<Uuid>,
    pub client_version: Option<String>,
    pub created_at: i64,
}

/// Who is behind an active session: what `/forward-auth` tells a reverse proxy, and what the
/// account page and the console start from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub session_id: Uuid,
    pub user_id: Uuid,
    pub userid: ids::UserId,
    /// The session's methods (`amr`), e.g. `["pwd", "otp"]`.
    pub methods: Methods,
}

/// A web site's browser session in family A, named by (server, nonce): the nonce itself is
/// never stored, only its hash.
#[derive(Clone, PartialEq, Eq)]
pub struct BrowserSession {
    pub server_id: ServerId,
    pub nonce_hash: SecretHash,
    /// Hash of the `hsid` that opens its login-status event stream.
    pub hsid_hash: SecretHash,
    /// The latchkey session it is logged in with (any family C sees), if any.
    pub session_id: Option<Uuid>,
    /// The account that last logged in here (for provoke).
    pub account_id: Option<i64>,
    /// The current login challenge, while one is installed.
    pub login: Option<LoginChallenge>,
    /// UserContext JSON given with the QR request (shown in the app, kept as device info).
    pub user_context: Option<String>,
    pub created_at: i64,
}

impl fmt::Debug for BrowserSession {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BrowserSession")
            .field("server_id", &self.server_id)
            .field("session_id", &self.session_id)
            .field("account_id", &self.account_id)
            .finish_non_exhaustive()
    }
}

/// The login challenge of a browser session's QR payload. The challenge is derived from a
/// random seed with the server key, so the same QR payload can be shown again while only the
/// seed and the challenge's hash are stored.
#[derive(Clone, PartialEq, Eq)]
pub struct LoginChallenge {
    pub seed: Vec<u8>,
    pub challenge_hash: SecretHash,
    pub expires_at: i64,
    /// The base URL the payload names (the app reaches latchkey there).
    pub base_url: String,
}

impl fmt::Debug for LoginChallenge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoginChallenge")
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

/// A one-time challenge of the app protocol (enrol, or a listen request).
#[derive(Clone, PartialEq, Eq)]
pub struct AppChallenge {
    pub challenge_hash: SecretHash,
    pub server_id: ServerId,
    /// `enrol` or `listen`.
    pub purpose: String,
    pub account_id: Option<i64>,
    /// Account description (enrol).
    pub name: Option<String>,
    /// User to bind (enrol).
    pub userid: Option<String>,
    pub expires_at: i64,
}

impl fmt::Debug for AppChallenge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AppChallenge")
            .field("server_id", &self.server_id)
            .field("purpose", &self.purpose)
            .finish_non_exhaustive()
    }
}

/// Where a family A transaction stands; the vendor's `tstatus` numbers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TransactionStatus {
    New = 0,
    Approved = 1,
    Declined = 2,
}

impl TransactionStatus {
    pub fn from_code(code: i64) -> Option<Self> {
        match code {
            0 => Some(Self::New),
            1 => Some(Self::Approved),
            2 => Some(Self::Declined),
            _ => None,
        }
    }
}

/// A transaction a relying party asked the person to confirm in the app of the account logged
/// in on a browser session (family A), with the server's signature over its values.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transaction {
    pub id: Uuid,
    pub server_id: ServerId,
    pub account_id: i64,
    /// The session logged in on the browser session it was made for: the transaction lives
    /// only as long as that session.
    pub session_id: Uuid,
    pub amount: String,
    pub beneficiary: String,
    pub description: String,
    pub created_at: i64,
    pub expires_at: i64,
    pub status: TransactionStatus,
    pub answered_at: Option<i64>,
    /// base64url Ed25519 signature by the server identity key over the values, made once.
    pub signature: String,
    /// The account's signature over the values and its verdict, kept with the answer.
    pub answer_signature: Option<String>,
}

/// A login pushed to an account's app, waiting (60 s) for approval.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PushRequest {
    pub id: Uuid,
    pub server_id: ServerId,
    pub account_id: i64,
    /// The browser session the approval logs in.
    pub nonce_hash: SecretHash,
    /// UserContext JSON shown to the person.
    pub user_context: String,
    pub created_at: i64,
    pub expires_at: i64,
    pub answered_at: Option<i64>,
    pub approved: Option<bool>,
}

#[cfg(test)]
mod tests {
    use super::{AuthMethod, Methods};

    #[test]
    fn methods_keep_their_order_hold_each_once_and_have_room_for_all() {
        let methods: Methods = [AuthMethod::Hwk, AuthMethod::Pin, AuthMethod::Hwk]
            .into_iter()
            .collect();
        assert_eq!(
            methods.iter().collect::<Vec<_>>(),
            [AuthMethod::Hwk, AuthMethod::Pin]
        );
        assert!(methods.contains(AuthMethod::Pin));
        assert!(!methods.contains(AuthMethod::Pwd));
        let all: Methods = AuthMethod::ALL.into_iter().rev().collect();
        let mut expected = AuthMethod::ALL;
        expected.reverse();
        assert_eq!(all.iter().collect::<Vec<_>>(), expected);
        assert_eq!(Methods::default().iter().count(), 0);
    }

    #[test]
    fn every_method_is_listed_in_all() {
        // A new method fails to compile here until it is listed (a `Methods` has room for
        // `ALL.len()`).
        let listed = |method: AuthMethod| match method {
            AuthMethod::Pwd | AuthMethod::Otp | AuthMethod::Pin | AuthMethod::Hwk => {
                AuthMethod::ALL.contains(&method)
            }
        };
        for method in [
            AuthMethod::Pwd,
            AuthMethod::Otp,
            AuthMethod::Pin,
            AuthMethod::Hwk,
        ] {
            assert!(listed(method), "{method:?}");
        }
    }
}
