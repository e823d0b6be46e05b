//! The validated runtime settings the services read. The binary turns flags, environment and
//! the TOML file into this; tests build it directly.

/// Argon2id cost parameters (OWASP: m = 19 MiB, t = 2, p = 1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Argon2Params {
    pub memory_kib: u32,
    pub iterations: u32,
    pub parallelism: u32,
}

impl Default for Argon2Params {
    fn default() -> Self {
        Self {
            memory_kib: 19 * 1024,
            iterations: 2,
            parallelism: 1,
        }
    }
}

#[derive(Clone)]
pub struct Settings {
    /// PBKDF2 iterations of the SCRAM verifier, read when a password is set.
    pub scram_iterations: u32,
    pub argon2: Argon2Params,
    /// Seconds without activity after which a session expires.
    pub session_idle_timeout: i64,
    /// Seconds a token session (family B) may go without a refresh or call before it expires.
    pub refresh_idle_timeout: i64,
    /// Seconds after creation after which a session expires whatever its activity.
    pub session_max_lifetime: i64,
    /// Seconds a session may wait for its second factor or CAPTCHA.
    pub login_step_timeout: i64,
    /// Lifetime of access JWTs in seconds.
    pub access_token_ttl: i64,
    /// The `iss` claim of access JWTs.
    pub jwt_issuer: String,
    /// Failed logins of one user name within `failure_window` that make a CAPTCHA required.
    pub captcha_after_failures: u64,
    /// Failed logins from one client address within `failure_window` that make a CAPTCHA required.
    pub captcha_after_failures_per_address: u64,
    /// Seconds over which failed logins are counted.
    pub failure_window: i64,
    /// Wrong second-factor codes (or CAPTCHA answers) that end a pending session.
    pub max_code_attempts: u32,
    /// Base URL the companion app reaches latchkey at (in QR payloads); `None`: from the request.
    pub public_url: Option<String>,
    /// Test-only: every CAPTCHA's answer is this value. Never set by default.
    pub captcha_test_answer: Option<String>,
    /// Sessions kept in the hot-path cache at most.
    pub session_cache_capacity: usize,
    /// Threads that hash passwords and PINs (argon2id, PBKDF2), each reusing its own memory.
    pub hash_workers: usize,
    /// Hashing jobs that may wait for a worker; beyond it a login is refused with 503.
    pub hash_queue: usize,
    /// Logins per second one client address may make (a token bucket); 0 turns it off.
    pub login_rate_per_address: u32,
    /// Logins one client address may make at once before its rate applies.
    pub login_burst_per_address: u32,
    /// The password policy applied wherever a password is set.
    pub password_policy: PasswordPolicy,
    /// Days audit events are kept; older ones are purged. 0 keeps them forever.
    pub audit_retention_days: u32,
}

/// What a new password must be: long enough (in characters), not the user's own id, and not in
/// a list of forbidden passwords (compared without case).
#[derive(Clone, Debug)]
pub struct PasswordPolicy {
    pub min_length: usize,
    /// Lowercased; empty: no list.
    pub forbidden: std::sync::Arc<std::collections::HashSet<String>>,
}

impl Default for PasswordPolicy {
    fn default() -> Self {
        Self {
            min_length: 8,
            forbidden: Default::default(),
        }
    }
}

impl PasswordPolicy {
    /// Why `password` is refused for `userid`, if it is.
    pub fn refusal(&self, userid: &str, password: &str) -> Option<String> {
        if password.chars().count() < self.min_length {
            return Some(format!(
                "the password is too short: at least {} characters",
                self.min_length
            ));
        }
        if password.eq_ignore_ascii_case(userid) {
            return Some("the password must not be the user id".into());
        }
        if self.forbidden.contains(&password.to_lowercase()) {
            return Some("the password is in the list of forbidden passwords".into());
        }
        None
    }
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            scram_iterations: 600_000,
            argon2: Argon2Params::default(),
            session_idle_timeout: 900,
            refresh_idle_timeout: 7 * 24 * 3600,
            session_max_lifetime: 30 * 24 * 3600,
            login_step_timeout: 300,
            access_token_ttl: 900,
            jwt_issuer: "latchkey".into(),
            captcha_after_failures: 5,
            captcha_after_failures_per_address: 50,
            failure_window: 900,
            max_code_attempts: 5,
            public_url: None,
            captcha_test_answer: None,
            session_cache_capacity: 1_000_000,
            hash_workers: std::thread::available_parallelism().map_or(2, |n| n.get()),
            hash_queue: 32,
            login_rate_per_address: 2,
            login_burst_per_address: 10,
            password_policy: PasswordPolicy::default(),
            audit_retention_days: 90,
        }
    }
}

impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settings")
            .field("scram_iterations", &self.scram_iterations)
            .field("argon2", &self.argon2)
            .field("session_idle_timeout", &self.session_idle_timeout)
            .field("session_max_lifetime", &self.session_max_lifetime)
            .field("access_token_ttl", &self.access_token_ttl)
            .field("captcha_after_failures", &self.captcha_after_failures)
            .field(
                "captcha_after_failures_per_address",
                &self.captcha_after_failures_per_address,
            )
            .field("captcha_test_answer", &self.captcha_test_answer.is_some())
            .field("hash_workers", &self.hash_workers)
            .field("hash_queue", &self.hash_queue)
            .field("login_rate_per_address", &self.login_rate_per_address)
            .field("login_burst_per_address", &self.login_burst_per_address)
            .field("password_min_length", &self.password_policy.min_length)
            .field("audit_retention_days", &self.audit_retention_days)
            .finish_non_exhaustive()
    }
}
