//! Errors in two layers: [`StoreError`] from storage backends and the domain [`Error`] that
//! services return. Neither knows HTTP; each API family renders them in its own shape.

/// What a storage backend reports.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The row asked for does not exist.
    #[error("not found")]
    NotFound,
    /// A unique key already exists. Carries no database text: it must never reach a client.
    #[error("already exists")]
    Conflict,
    /// The database's secrets were sealed with another master key (or its key file is lost):
    /// refused at open, never worked around with a new key.
    #[error("the database's secrets are sealed with another master key")]
    WrongMasterKey,
    /// Anything else (connection lost, bad migration...). Logged, answered opaquely.
    #[error("storage failure: {0}")]
    Other(String),
}

/// What a service call can fail with. The doc comment of each variant says what a client sees.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request is malformed (400 in every family) — the text says what is wrong.
    #[error("{0}")]
    Invalid(String),
    /// Credentials (password, code, token) are wrong or missing (401). The text never tells
    /// which part was wrong.
    #[error("invalid credentials")]
    BadCredentials,
    /// The session token is unknown, expired or revoked (401).
    #[error("session is expired, revoked, or does not exist")]
    SessionInvalid,
    /// The session exists but is not in the state the call needs (e.g. keepalive on a session
    /// still pending MFA): 401, as the token is not (yet) a credential for that call.
    #[error("{0}")]
    WrongState(&'static str),
    /// A CAPTCHA must be solved first (403, family D code 11). Carries the blocked session's token.
    #[error("CAPTCHA required")]
    CaptchaRequired {
        token: String,
        session_id: uuid::Uuid,
    },
    /// The refresh token is invalid, expired, already used, or its session was revoked
    /// (family B answers 416).
    #[error("refresh token is invalid, expired, reused or revoked")]
    RefreshRejected,
    /// Missing permission (403).
    #[error("{0}")]
    Forbidden(String),
    /// The thing named does not exist (404).
    #[error("{0}")]
    NotFound(String),
    /// The thing to create already exists, or the call conflicts with current state (409).
    #[error("{0}")]
    Conflict(String),
    /// The thing asked for existed but has expired (410), e.g. a push request after 60 s.
    #[error("{0}")]
    Gone(String),
    /// The client sent logins faster than its address's rate limit: 429 with `Retry-After`
    /// (seconds), in the family's error shape.
    #[error("too many logins from this address: retry after {retry_after} s")]
    RateLimited { retry_after: u64 },
    /// The password-hashing queue is full: 503 with `Retry-After` (seconds), in the family's
    /// error shape. Nothing was judged; the client may try again.
    #[error("too many logins in progress: retry after {retry_after} s")]
    Overloaded { retry_after: u64 },
    /// The server cannot answer yet (e.g. not initialised): 503 with the reason.
    #[error("{0}")]
    Unavailable(String),
    /// A failure that is not the client's: logged with context, answered as an opaque 500.
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<StoreError> for Error {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound => Error::NotFound("not found".into()),
            StoreError::Conflict => Error::Conflict("it already exists".into()),
            StoreError::Other(msg) => Error::Internal(msg),
            e @ StoreError::WrongMasterKey => Error::Internal(e.to_string()),
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
