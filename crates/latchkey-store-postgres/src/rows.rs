//! Rows as PostgreSQL answers them, and their conversion into the model. Each struct matches
//! one SELECT (or RETURNING) list; `TryFrom` checks what the column types cannot (32-byte keys
//! and digests, enum texts, u32 counters), so a query decodes with `?` and a corrupt row is a
//! store error, never a panic or a silently dropped field.

use latchkey_core::crypto::sealing::{Column, Sealer};
use latchkey_core::crypto::secret::SecretHash;
use latchkey_core::model::ids::{ServerId, UserId};
use latchkey_core::model::{
    Account, ApiKey, AppChallenge, AuditRecord, AuthMethod, BrowserSession, ClientInfo,
    LoginChallenge, MfaKind, PasswordHashes, Permissions, PushRequest, Role, ScramVerifier, Server,
    Session, SessionState, SigningKey, Transaction, TransactionStatus, User, UserCredentials,
};
use latchkey_core::store::{failure_counts_in_order, unseal, FailureCount, StoreResult};
use latchkey_core::StoreError;
use uuid::Uuid;

/// A stored value that does not decode into the model.
fn corrupt(what: &str) -> StoreError {
    StoreError::Other(format!("stored {what} is invalid"))
}

fn key32(bytes: Vec<u8>, what: &str) -> StoreResult<[u8; 32]> {
    <[u8; 32]>::try_from(bytes).map_err(|_| corrupt(what))
}

pub(crate) fn hash(bytes: Vec<u8>, what: &str) -> StoreResult<SecretHash> {
    key32(bytes, what).map(SecretHash)
}

fn opt_hash(bytes: Option<Vec<u8>>, what: &str) -> StoreResult<Option<SecretHash>> {
    bytes.map(|b| hash(b, what)).transpose()
}

/// Counters holding a Rust u32 are BIGINT columns.
pub(crate) fn counter(n: i64, what: &str) -> StoreResult<u32> {
    u32::try_from(n).map_err(|_| corrupt(what))
}

fn server_id(s: &str) -> StoreResult<ServerId> {
    ServerId::parse(s).map_err(|_| corrupt("server id"))
}

pub(crate) fn mfa_kind(s: Option<String>) -> StoreResult<Option<MfaKind>> {
    s.map(|s| MfaKind::parse(&s).ok_or_else(|| corrupt("second factor kind")))
        .transpose()
}

pub(crate) fn session_state(s: &str) -> StoreResult<SessionState> {
    SessionState::parse(s).ok_or_else(|| corrupt("session state"))
}

// --- tenants ---

pub(crate) const SERVER_COLUMNS: &str = "server_id, name, secret_key, public_key, created_at";

#[derive(sqlx::FromRow)]
pub(crate) struct ServerRow {
    server_id: String,
    name: String,
    secret_key: Vec<u8>,
    public_key: Vec<u8>,
    created_at: i64,
}

impl TryFrom<ServerRow> for Server {
    type Error = StoreError;

    fn try_from(r: ServerRow) -> StoreResult<Self> {
        Ok(Server {
            id: server_id(&r.server_id)?,
            name: r.name,
            secret_key: key32(r.secret_key, "server secret key")?,
            public_key: key32(r.public_key, "server public key")?,
            created_at: r.created_at,
        })
    }
}

#[derive(sqlx::FromRow)]
pub(crate) struct RoleRow {
    role_id: String,
    root: bool,
}

impl From<RoleRow> for Role {
    fn from(r: RoleRow) -> Self {
        Role {
            id: r.role_id,
            root: r.root,
        }
    }
}

#[derive(sqlx::FromRow)]
pub(crate) struct PermissionsRow {
    sessions: bool,
    accounts: bool,
    users: bool,
    servers: bool,
}

impl From<PermissionsRow> for Permissions {
    fn from(r: PermissionsRow) -> Self {
        Permissions {
            sessions: r.sessions,
            accounts: r.accounts,
            users: r.users,
            servers: r.servers,
        }
    }
}

#[derive(sqlx::FromRow)]
pub(crate) struct ApiKeyRow {
    api_key_id: Uuid,
    key_hash: Vec<u8>,
    role_id: String,
    created_at: i64,
}

impl TryFrom<ApiKeyRow> for ApiKey {
    type Error = StoreError;

    fn try_from(r: ApiKeyRow) -> StoreResult<Self> {
        Ok(ApiKey {
            id: r.api_key_id,
            key_hash: hash(r.key_hash, "API key hash")?,
            role_id: r.role_id,
            created_at: r.created_at,
        })
    }
}

pub(crate) const SIGNING_KEY_COLUMNS: &str = "kid, secret_key, public_key, created_at, retired_at";

#[derive(sqlx::FromRow)]
pub(crate) struct SigningKeyRow {
    kid: String,
    secret_key: Vec<u8>,
    public_key: Vec<u8>,
    created_at: i64,
    retired_at: Option<i64>,
}

impl TryFrom<SigningKeyRow> for SigningKey {
    type Error = StoreError;

    fn try_from(r: SigningKeyRow) -> StoreResult<Self> {
        Ok(SigningKey {
            kid: r.kid,
            secret_key: key32(r.secret_key, "signing secret key")?,
            public_key: key32(r.public_key, "signing public key")?,
            created_at: r.created_at,
            retired_at: r.retired_at,
        })
    }
}

// --- users ---

pub(crate) const USER_COLUMNS: &str = "user_id, server_id, userid, created_at";

pub(crate) const CREDENTIALS_COLUMNS: &str = "user_id, server_id, userid, created_at, \
    password_argon2, scram_salt, scram_iterations, scram_stored_key, scram_server_key, \
    totp_secret, totp_last_step, pin_hash";

#[derive(sqlx::FromRow)]
pub(crate) struct UserRow {
    user_id: Uuid,
    server_id: String,
    userid: String,
    created_at: i64,
}

impl TryFrom<UserRow> for User {
    type Error = StoreError;

    fn try_from(r: UserRow) -> StoreResult<Self> {
        Ok(User {
            id: r.user_id,
            server_id: server_id(&r.server_id)?,
            userid: UserId::parse(&r.userid).map_err(|_| corrupt("user name"))?,
            created_at: r.created_at,
        })
    }
}

#[derive(sqlx::FromRow)]
pub(crate) struct CredentialsRow {
    #[sqlx(flatten)]
    user: UserRow,
    password_argon2: Option<String>,
    scram_salt: Option<Vec<u8>>,
    scram_iterations: Option<i64>,
    scram_stored_key: Option<Vec<u8>>,
    scram_server_key: Option<Vec<u8>>,
    totp_secret: Option<Vec<u8>>,
    totp_last_step: i64,
    pin_hash: Option<String>,
}

impl TryFrom<CredentialsRow> for UserCredentials {
    type Error = StoreError;

    fn try_from(r: CredentialsRow) -> StoreResult<Self> {
        // A password is its argon2 hash and its SCRAM verifier, set together.
        let password = match r.password_argon2 {
            None => None,
            Some(argon2) => {
                let missing = || corrupt("SCRAM verifier");
                Some(PasswordHashes {
                    argon2,
                    scram: ScramVerifier {
                        salt: r.scram_salt.ok_or_else(missing)?,
                        iterations: counter(
                            r.scram_iterations.ok_or_else(missing)?,
                            "SCRAM iterations",
                        )?,
                        stored_key: key32(
                            r.scram_stored_key.ok_or_else(missing)?,
                            "SCRAM stored key",
                        )?,
                        server_key: key32(
                            r.scram_server_key.ok_or_else(missing)?,
                            "SCRAM server key",
                        )?,
                    },
                })
            }
        };
        Ok(UserCredentials {
            user: r.user.try_into()?,
            password,
            totp_secret: r.totp_secret,
            totp_last_step: r.totp_last_step,
            pin_hash: r.pin_hash,
        })
    }
}

// --- sealed secrets ---

impl ServerRow {
    /// The row with its secret key opened.
    pub(crate) fn unsealed(mut self, sealer: &Sealer) -> StoreResult<Self> {
        self.secret_key = unseal(sealer, Column::ServerKey, &self.server_id, &self.secret_key)?;
        Ok(self)
    }
}

impl SigningKeyRow {
    /// The row with its secret key opened.
    pub(crate) fn unsealed(mut self, sealer: &Sealer) -> StoreResult<Self> {
        self.secret_key = unseal(sealer, Column::SigningKey, &self.kid, &self.secret_key)?;
        Ok(self)
    }
}

impl CredentialsRow {
    /// The row with its TOTP secret, if any, opened.
    pub(crate) fn unsealed(mut self, sealer: &Sealer) -> StoreResult<Self> {
        if let Some(sealed) = &self.totp_secret {
            let row = self.user.user_id.to_string();
            self.totp_secret = Some(unseal(sealer, Column::TotpSecret, &row, sealed)?);
        }
        Ok(self)
    }
}

// --- sessions ---

pub(crate) const SESSION_COLUMNS: &str = "session_id, server_id, user_id, methods, state, \
    created_at, last_active_at, idle_expires_at, absolute_expires_at, client_ip, user_agent, \
    device_name, pending_mfa, mfa_failures, captcha_answer, captcha_failures, password_ok, \
    revoked_at, idle_timeout";

#[derive(sqlx::FromRow)]
pub(crate) struct SessionRow {
    session_id: Uuid,
    server_id: String,
    user_id: Option<Uuid>,
    methods: String,
    state: String,
    created_at: i64,
    last_active_at: i64,
    idle_expires_at: i64,
    absolute_expires_at: i64,
    client_ip: Option<String>,
    user_agent: Option<String>,
    device_name: Option<String>,
    pending_mfa: Option<String>,
    /// The column keeps its first name; it counts claimed attempts (`Session::mfa_attempts`).
    mfa_failures: i64,
    captcha_answer: Option<Vec<u8>>,
    captcha_failures: i64,
    password_ok: bool,
    revoked_at: Option<i64>,
    idle_timeout: i64,
}

impl TryFrom<SessionRow> for Session {
    type Error = StoreError;

    fn try_from(r: SessionRow) -> StoreResult<Self> {
        Ok(Session {
            id: r.session_id,
            server_id: server_id(&r.server_id)?,
            user_id: r.user_id,
            methods: AuthMethod::split(&r.methods),
            state: session_state(&r.state)?,
            created_at: r.created_at,
            last_active_at: r.last_active_at,
            idle_expires_at: r.idle_expires_at,
            absolute_expires_at: r.absolute_expires_at,
            idle_timeout: r.idle_timeout,
            client: ClientInfo {
                ip: r.client_ip,
                user_agent: r.user_agent,
                device_name: r.device_name,
            },
            pending_mfa: mfa_kind(r.pending_mfa)?,
            mfa_attempts: counter(r.mfa_failures, "MFA attempts")?,
            captcha_answer: opt_hash(r.captcha_answer, "CAPTCHA answer hash")?,
            captcha_failures: counter(r.captcha_failures, "CAPTCHA failures")?,
            password_ok: r.password_ok,
            revoked_at: r.revoked_at,
        })
    }
}

// --- the companion app ---

pub(crate) const ACCOUNT_COLUMNS: &str = "account_id, server_id, public_key, description, \
    user_id, blocked, client_version, created_at, last_login, last_provoke";

#[derive(sqlx::FromRow)]
pub(crate) struct AccountRow {
    account_id: i64,
    server_id: String,
    public_key: Vec<u8>,
    description: String,
    user_id: Option<Uuid>,
    blocked: bool,
    client_version: Option<String>,
    created_at: i64,
    last_login: Option<i64>,
    last_provoke: Option<i64>,
}

impl TryFrom<AccountRow> for Account {
    type Error = StoreError;

    fn try_from(r: AccountRow) -> StoreResult<Self> {
        Ok(Account {
            id: r.account_id,
            server_id: server_id(&r.server_id)?,
            public_key: key32(r.public_key, "account public key")?,
            description: r.description,
            user_id: r.user_id,
            blocked: r.blocked,
            client_version: r.client_version,
            created_at: r.created_at,
            last_login: r.last_login,
            last_provoke: r.last_provoke,
        })
    }
}

pub(crate) const BROWSER_SESSION_COLUMNS: &str = "server_id, nonce_hash, hsid_hash, \
    session_id, account_id, login_seed, login_challenge, login_expires_at, login_base_url, \
    user_context, created_at";

#[derive(sqlx::FromRow)]
pub(crate) struct BrowserSessionRow {
    server_id: String,
    nonce_hash: Vec<u8>,
    hsid_hash: Vec<u8>,
    session_id: Option<Uuid>,
    account_id: Option<i64>,
    login_seed: Option<Vec<u8>>,
    login_challenge: Option<Vec<u8>>,
    login_expires_at: Option<i64>,
    login_base_url: Option<String>,
    user_context: Option<String>,
    created_at: i64,
}

impl TryFrom<BrowserSessionRow> for BrowserSession {
    type Error = StoreError;

    fn try_from(r: BrowserSessionRow) -> StoreResult<Self> {
        // The challenge column says whether a login challenge is installed: rows written
        // before the four columns were cleared together may keep a stale base URL.
        let login = match r.login_challenge {
            None => None,
            Some(challenge) => {
                let missing = || corrupt("login challenge");
                Some(LoginChallenge {
                    seed: r.login_seed.ok_or_else(missing)?,
                    challenge_hash: hash(challenge, "login challenge hash")?,
                    expires_at: r.login_expires_at.ok_or_else(missing)?,
                    base_url: r.login_base_url.ok_or_else(missing)?,
                })
            }
        };
        Ok(BrowserSession {
            server_id: server_id(&r.server_id)?,
            nonce_hash: hash(r.nonce_hash, "browser nonce hash")?,
            hsid_hash: hash(r.hsid_hash, "hsid hash")?,
            session_id: r.session_id,
            account_id: r.account_id,
            login,
            user_context: r.user_context,
            created_at: r.created_at,
        })
    }
}

pub(crate) const APP_CHALLENGE_COLUMNS: &str =
    "challenge_hash, server_id, purpose, account_id, name, userid, expires_at";

#[derive(sqlx::FromRow)]
pub(crate) struct AppChallengeRow {
    challenge_hash: Vec<u8>,
    server_id: String,
    purpose: String,
    account_id: Option<i64>,
    name: Option<String>,
    userid: Option<String>,
    expires_at: i64,
}

impl TryFrom<AppChallengeRow> for AppChallenge {
    type Error = StoreError;

    fn try_from(r: AppChallengeRow) -> StoreResult<Self> {
        Ok(AppChallenge {
            challenge_hash: hash(r.challenge_hash, "app challenge hash")?,
            server_id: server_id(&r.server_id)?,
            purpose: r.purpose,
            account_id: r.account_id,
            name: r.name,
            userid: r.userid,
            expires_at: r.expires_at,
        })
    }
}

pub(crate) const PUSH_COLUMNS: &str = "request_id, server_id, account_id, nonce_hash, \
    user_context, created_at, expires_at, answered_at, approved";

#[derive(sqlx::FromRow)]
pub(crate) struct PushRow {
    request_id: Uuid,
    server_id: String,
    account_id: i64,
    nonce_hash: Vec<u8>,
    user_context: String,
    created_at: i64,
    expires_at: i64,
    answered_at: Option<i64>,
    approved: Option<bool>,
}

impl TryFrom<PushRow> for PushRequest {
    type Error = StoreError;

    fn try_from(r: PushRow) -> StoreResult<Self> {
        Ok(PushRequest {
            id: r.request_id,
            server_id: server_id(&r.server_id)?,
            account_id: r.account_id,
            nonce_hash: hash(r.nonce_hash, "push nonce hash")?,
            user_context: r.user_context,
            created_at: r.created_at,
            expires_at: r.expires_at,
            answered_at: r.answered_at,
            approved: r.approved,
        })
    }
}

pub(crate) const TRANSACTION_COLUMNS: &str = "transaction_id, server_id, account_id, amount, \
    beneficiary, description, created_at, expires_at, status, answered_at, signature, \
    session_id, answer_signature";

#[derive(sqlx::FromRow)]
pub(crate) struct TransactionRow {
    transaction_id: Uuid,
    server_id: String,
    account_id: i64,
    amount: String,
    beneficiary: String,
    description: String,
    created_at: i64,
    expires_at: i64,
    status: i16,
    answered_at: Option<i64>,
    signature: String,
    session_id: Uuid,
    answer_signature: Option<String>,
}

impl TryFrom<TransactionRow> for Transaction {
    type Error = StoreError;

    fn try_from(r: TransactionRow) -> StoreResult<Self> {
        Ok(Transaction {
            id: r.transaction_id,
            server_id: server_id(&r.server_id)?,
            session_id: r.session_id,
            account_id: r.account_id,
            amount: r.amount,
            beneficiary: r.beneficiary,
            description: r.description,
            created_at: r.created_at,
            expires_at: r.expires_at,
            status: TransactionStatus::from_code(r.status.into())
                .ok_or_else(|| corrupt("transaction status"))?,
            answered_at: r.answered_at,
            signature: r.signature,
            answer_signature: r.answer_signature,
        })
    }
}

// --- throttling ---

#[derive(sqlx::FromRow)]
pub(crate) struct FailureCountRow {
    failures: i64,
    captcha_required: bool,
}

/// A counter row with its key (several keys read at once).
#[derive(sqlx::FromRow)]
pub(crate) struct KeyedFailureCountRow {
    failure_key: String,
    #[sqlx(flatten)]
    count: FailureCountRow,
}

/// The counts of `keys` in their order (see [`failure_counts_in_order`]).
pub(crate) fn in_order_of(
    keys: &[&str],
    rows: Vec<KeyedFailureCountRow>,
) -> StoreResult<Vec<FailureCount>> {
    let found = rows
        .into_iter()
        .map(|r| Ok((r.failure_key, r.count.try_into()?)))
        .collect::<StoreResult<_>>()?;
    Ok(failure_counts_in_order(keys, found))
}

impl TryFrom<FailureCountRow> for FailureCount {
    type Error = StoreError;

    fn try_from(r: FailureCountRow) -> StoreResult<Self> {
        Ok(FailureCount {
            failures: u64::try_from(r.failures).map_err(|_| corrupt("failure count"))?,
            captcha_required: r.captcha_required,
        })
    }
}

// --- audit ---

pub(crate) const AUDIT_COLUMNS: &str = "at, server_id, kind, userid, session_id, ip, detail";

#[derive(sqlx::FromRow)]
pub(crate) struct AuditRow {
    at: i64,
    server_id: String,
    kind: String,
    userid: Option<String>,
    session_id: Option<Uuid>,
    ip: Option<String>,
    detail: Option<String>,
}

impl TryFrom<AuditRow> for AuditRecord {
    type Error = StoreError;

    fn try_from(r: AuditRow) -> StoreResult<Self> {
        Ok(AuditRecord {
            at: r.at,
            server_id: server_id(&r.server_id)?,
            kind: r.kind,
            userid: r.userid,
            session_id: r.session_id,
            ip: r.ip,
            detail: r.detail,
        })
    }
}

/// The columns of [`PasskeyRow`].
pub(crate) const PASSKEY_COLUMNS: &str =
    "credential_id, user_id, name, passkey, created_at, last_used_at";

#[derive(sqlx::FromRow)]
pub(crate) struct PasskeyRow {
    credential_id: Vec<u8>,
    user_id: Uuid,
    name: String,
    passkey: String,
    created_at: i64,
    last_used_at: Option<i64>,
}

impl TryFrom<PasskeyRow> for latchkey_core::model::PasskeyCredential {
    type Error = StoreError;

    fn try_from(r: PasskeyRow) -> StoreResult<Self> {
        Ok(Self {
            credential_id: r.credential_id,
            user_id: r.user_id,
            name: r.name,
            passkey: r.passkey,
            created_at: r.created_at,
            last_used_at: r.last_used_at,
        })
    }
}

/// An account with its user's name (`a.*, p.userid AS owner_userid`).
#[derive(sqlx::FromRow)]
pub(crate) struct ListedAccountRow {
    #[sqlx(flatten)]
    account: AccountRow,
    owner_userid: Option<String>,
}

impl TryFrom<ListedAccountRow> for latchkey_core::model::directory::ListedAccount {
    type Error = StoreError;

    fn try_from(r: ListedAccountRow) -> StoreResult<Self> {
        Ok(Self {
            account: Account::try_from(r.account)?,
            userid: r
                .owner_userid
                .map(|u| UserId::parse(&u).map_err(|_| corrupt("user name")))
                .transpose()?,
        })
    }
}

#[derive(sqlx::FromRow)]
pub(crate) struct UserSummaryRow {
    userid: String,
    last_login: Option<i64>,
    accounts: i64,
}

impl TryFrom<UserSummaryRow> for latchkey_core::model::directory::UserSummary {
    type Error = StoreError;

    fn try_from(r: UserSummaryRow) -> StoreResult<Self> {
        Ok(Self {
            userid: UserId::parse(&r.userid).map_err(|_| corrupt("user name"))?,
            last_login: r.last_login,
            accounts: u64::try_from(r.accounts).map_err(|_| corrupt("account count"))?,
        })
    }
}
