//! Configuration: defaults < TOML file < `LATCHKEY_*` environment < command-line flags.
//!
//! The file format ([`FileConfig`]) is separate from the validated runtime [`Config`]. Unknown
//! keys are rejected, in the file and in the environment alike (environment variables are read
//! into the same structure, so `LATCHKEY_SESION_IDLE_TIMEOUT` is an error, not silence).
//! Secrets may come from a file: `LATCHKEY_DATABASE_FILE` names a file holding the URL.
//! Durations are seconds or humantime text (`15m`, `2h`, `30d`). Variables with the companion
//! app's prefix, `LATCHKEY_APP_`, are the app's and are ignored here.

use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context};
use latchkey_core::settings::Argon2Params;
use latchkey_core::{ServerId, Settings};
use latchkey_http::proxies::TrustedProxies;
use latchkey_http::HttpOptions;
use serde::Deserialize;

pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
pub const DEFAULT_DATABASE: &str = "sqlite://./latchkey-data/latchkey.db";

/// Environment variables that are not configuration keys.
const NON_CONFIG_ENV: &[&str] = &[
    "LATCHKEY_CONFIG",
    "LATCHKEY_LOG",
    "LATCHKEY_CAPTCHA_TEST_ANSWER",
    "LATCHKEY_TEST_POSTGRES_URL",
    "LATCHKEY_DATABASE_FILE",
];

/// The companion app's own environment variables (e.g. `LATCHKEY_APP_STORE`).
pub const APP_ENV_PREFIX: &str = "LATCHKEY_APP_";

/// Keys whose values are lists; in the environment, comma-separated.
const LIST_KEYS: &[&str] = &["trusted_proxies", "allowed_return_origins"];

/// Keys whose values are strings even when they look like numbers.
const STRING_KEYS: &[&str] = &[
    "listen",
    "database",
    "default_server",
    "log_format",
    "jwt_issuer",
    "public_url",
    "tls_cert",
    "tls_key",
    "management_listen",
    "master_key_file",
    "forbidden_passwords_file",
    "cookie_domain",
];

/// Every configuration key; all optional, as in the file.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub listen: Option<String>,
    pub database: Option<String>,
    /// The server families B, C and D act on (default: the one `latchkey init` made).
    pub default_server: Option<String>,
    pub scram_iterations: Option<u32>,
    pub argon2_memory_kib: Option<u32>,
    pub argon2_iterations: Option<u32>,
    pub argon2_parallelism: Option<u32>,
    pub session_idle_timeout: Option<Seconds>,
    pub session_max_lifetime: Option<Seconds>,
    /// Seconds a token session (family B) may go unused before it expires.
    pub refresh_idle_timeout: Option<Seconds>,
    pub access_token_ttl: Option<Seconds>,
    /// The `iss` claim of access JWTs.
    pub jwt_issuer: Option<String>,
    /// Base URL the companion app reaches latchkey at (put in QR payloads).
    pub public_url: Option<String>,
    pub captcha_after_failures: Option<u64>,
    pub captcha_after_failures_per_address: Option<u64>,
    pub failure_window: Option<Seconds>,
    /// Replaced by `trusted_proxies`: refused with a message saying so.
    pub trust_forwarded_for: Option<bool>,
    /// Reverse proxies (addresses, CIDR ranges) whose forwarding headers are believed.
    pub trusted_proxies: Option<Vec<String>>,
    /// Second-factor codes (and CAPTCHA answers) a pending login may try.
    pub max_code_attempts: Option<u32>,
    /// How long a login may wait for its second factor or CAPTCHA.
    pub login_step_timeout: Option<Seconds>,
    /// Sessions kept in the hot-path cache at most.
    pub session_cache_capacity: Option<u64>,
    /// Password-hashing threads (default: one per core).
    pub hash_workers: Option<u64>,
    /// Hashing jobs that may wait; beyond, logins get 503.
    pub hash_queue: Option<u64>,
    /// Logins per second per client address (0: no limit).
    pub login_rate_per_address: Option<u64>,
    pub login_burst_per_address: Option<u64>,
    /// Seconds a connection may take to send a request head.
    pub header_read_timeout: Option<Seconds>,
    /// Seconds a keep-alive connection may sit idle.
    pub idle_timeout: Option<Seconds>,
    /// Open connections at most (default: from the open-file limit).
    pub max_connections: Option<u64>,
    /// Seconds a request (not an event stream) may take.
    pub request_timeout: Option<Seconds>,
    /// Open event streams at most (default: half the connection cap).
    pub max_event_streams: Option<u64>,
    /// Seconds an event stream lives.
    pub event_stream_max_lifetime: Option<Seconds>,
    /// "text" (default) or "json".
    pub log_format: Option<String>,
    /// PEM certificate chain: with `tls_key`, latchkey serves HTTPS itself.
    pub tls_cert: Option<String>,
    /// PEM private key of `tls_cert`.
    pub tls_key: Option<String>,
    /// A second listener for /metrics, /healthz and /readyz.
    pub management_listen: Option<String>,
    /// Seconds requests in flight may take to finish at shutdown.
    pub drain_timeout: Option<Seconds>,
    /// One log line per request (target latchkey::access).
    pub access_log: Option<bool>,
    /// The key-encryption key's file (default: beside the SQLite file).
    pub master_key_file: Option<String>,
    /// Shortest password accepted, in characters.
    pub password_min_length: Option<u64>,
    /// A file of forbidden passwords, one per line (compared without case).
    pub forbidden_passwords_file: Option<String>,
    /// Days audit events are kept (0: forever).
    pub audit_retention_days: Option<u64>,
    /// The `Domain` of the browser session cookie (default: host-only).
    pub cookie_domain: Option<String>,
    /// Origins a browser sign-in may return to (`return_to`).
    pub allowed_return_origins: Option<Vec<String>>,
}

macro_rules! overlay {
    ($high:expr, $low:expr, $($field:ident),*) => {
        FileConfig { $($field: $high.$field.or($low.$field)),* }
    };
}

impl FileConfig {
    /// Values of `self` win over those of `lower`.
    pub fn over(self, lower: FileConfig) -> FileConfig {
        overlay!(
            self,
            lower,
            listen,
            database,
            default_server,
            scram_iterations,
            argon2_memory_kib,
            argon2_iterations,
            argon2_parallelism,
            session_idle_timeout,
            session_max_lifetime,
            refresh_idle_timeout,
            access_token_ttl,
            jwt_issuer,
            public_url,
            captcha_after_failures,
            captcha_after_failures_per_address,
            failure_window,
            trust_forwarded_for,
            trusted_proxies,
            max_code_attempts,
            login_step_timeout,
            session_cache_capacity,
            hash_workers,
            hash_queue,
            login_rate_per_address,
            login_burst_per_address,
            header_read_timeout,
            idle_timeout,
            max_connections,
            request_timeout,
            max_event_streams,
            event_stream_max_lifetime,
            log_format,
            tls_cert,
            tls_key,
            management_listen,
            drain_timeout,
            access_log,
            master_key_file,
            password_min_length,
            forbidden_passwords_file,
            audit_retention_days,
            cookie_domain,
            allowed_return_origins
        )
    }

    pub fn from_file(path: &Path) -> anyhow::Result<FileConfig> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading config file {}", path.display()))?;
        toml::from_str(&text).with_context(|| format!("in config file {}", path.display()))
    }

    /// Reads `LATCHKEY_*` variables from `vars` (the process environment in production).
    pub fn from_env(vars: impl Iterator<Item = (String, String)>) -> anyhow::Result<FileConfig> {
        let mut table = toml::Table::new();
        let mut database_file = None;
        for (name, value) in vars {
            let Some(key) = name.strip_prefix("LATCHKEY_") else {
                continue;
            };
            if name == "LATCHKEY_DATABASE_FILE" {
                database_file = Some(value);
                continue;
            }
            if NON_CONFIG_ENV.contains(&name.as_str()) || name.starts_with(APP_ENV_PREFIX) {
                continue;
            }
            let key = key.to_ascii_lowercase();
            let parsed = if LIST_KEYS.contains(&key.as_str()) {
                toml::Value::Array(
                    value
                        .split(',')
                        .map(str::trim)
                        .filter(|v| !v.is_empty())
                        .map(|v| toml::Value::String(v.to_owned()))
                        .collect(),
                )
            } else if STRING_KEYS.contains(&key.as_str()) {
                toml::Value::String(value)
            } else if let Ok(n) = value.parse::<i64>() {
                toml::Value::Integer(n)
            } else if let Ok(b) = value.parse::<bool>() {
                toml::Value::Boolean(b)
            } else {
                toml::Value::String(value)
            };
            table.insert(key, parsed);
        }
        let mut config: FileConfig = table
            .try_into()
            .context("in LATCHKEY_* environment variables")?;
        if let Some(path) = database_file {
            if config.database.is_none() {
                let url = std::fs::read_to_string(&path)
                    .with_context(|| format!("reading LATCHKEY_DATABASE_FILE {path}"))?;
                config.database = Some(url.trim().to_owned());
            }
        }
        Ok(config)
    }
}

impl Config {
    /// The effective configuration as TOML, every key with its value (defaults included), the
    /// database URL's password redacted. What `latchkey config check` prints.
    pub fn effective_toml(&self) -> String {
        let s = &self.settings;
        let h = &self.http;
        let mut t = toml::Table::new();
        let mut put = |key: &str, value: toml::Value| {
            t.insert(key.to_owned(), value);
        };
        let int = |n: i64| toml::Value::Integer(n);
        let secs = |d: Duration| toml::Value::Integer(d.as_secs() as i64);
        put("listen", toml::Value::String(self.listen.clone()));
        put(
            "database",
            toml::Value::String(crate::redact(&self.database)),
        );
        if let Some(id) = &self.default_server {
            put(
                "default_server",
                toml::Value::String(id.as_str().to_owned()),
            );
        }
        put("scram_iterations", int(s.scram_iterations.into()));
        put("argon2_memory_kib", int(s.argon2.memory_kib.into()));
        put("argon2_iterations", int(s.argon2.iterations.into()));
        put("argon2_parallelism", int(s.argon2.parallelism.into()));
        put("session_idle_timeout", int(s.session_idle_timeout));
        put("session_max_lifetime", int(s.session_max_lifetime));
        put("refresh_idle_timeout", int(s.refresh_idle_timeout));
        put("access_token_ttl", int(s.access_token_ttl));
        put("jwt_issuer", toml::Value::String(s.jwt_issuer.clone()));
        if let Some(url) = &s.public_url {
            put("public_url", toml::Value::String(url.clone()));
        }
        put(
            "captcha_after_failures",
            int(s.captcha_after_failures as i64),
        );
        put(
            "captcha_after_failures_per_address",
            int(s.captcha_after_failures_per_address as i64),
        );
        put("failure_window", int(s.failure_window));
        put("max_code_attempts", int(s.max_code_attempts.into()));
        put("login_step_timeout", int(s.login_step_timeout));
        put(
            "session_cache_capacity",
            int(s.session_cache_capacity as i64),
        );
        put(
            "password_min_length",
            int(s.password_policy.min_length as i64),
        );
        if let Some(path) = &self.forbidden_passwords_file {
            put(
                "forbidden_passwords_file",
                toml::Value::String(path.clone()),
            );
        }
        put("audit_retention_days", int(s.audit_retention_days.into()));
        put("hash_workers", int(s.hash_workers as i64));
        put("hash_queue", int(s.hash_queue as i64));
        put(
            "login_rate_per_address",
            int(s.login_rate_per_address.into()),
        );
        put(
            "login_burst_per_address",
            int(s.login_burst_per_address.into()),
        );
        put(
            "trusted_proxies",
            toml::Value::Array(
                h.trusted_proxies
                    .to_strings()
                    .into_iter()
                    .map(toml::Value::String)
                    .collect(),
            ),
        );
        put(
            "allowed_return_origins",
            toml::Value::Array(
                h.allowed_return_origins
                    .iter()
                    .cloned()
                    .map(toml::Value::String)
                    .collect(),
            ),
        );
        if let Some(domain) = &h.cookie_domain {
            put("cookie_domain", toml::Value::String(domain.clone()));
        }
        if let Some(tls) = &h.tls {
            put(
                "tls_cert",
                toml::Value::String(tls.cert.display().to_string()),
            );
            put(
                "tls_key",
                toml::Value::String(tls.key.display().to_string()),
            );
        }
        if let Some(address) = &h.management_listen {
            put("management_listen", toml::Value::String(address.clone()));
        }
        if let Some(path) = &self.master_key_file {
            put(
                "master_key_file",
                toml::Value::String(path.display().to_string()),
            );
        }
        put("drain_timeout", secs(h.drain_timeout));
        put("access_log", toml::Value::Boolean(h.access_log));
        put("header_read_timeout", secs(h.header_read_timeout));
        put("idle_timeout", secs(h.idle_timeout));
        if let Some(n) = h.max_connections {
            put("max_connections", int(n as i64));
        }
        put("request_timeout", secs(h.request_timeout));
        if let Some(n) = h.max_event_streams {
            put("max_event_streams", int(n as i64));
        }
        put(
            "event_stream_max_lifetime",
            secs(h.event_stream_max_lifetime),
        );
        put(
            "log_format",
            toml::Value::String(
                match self.log_format {
                    LogFormat::Text => "text",
                    LogFormat::Json => "json",
                }
                .into(),
            ),
        );
        toml::to_string(&t).unwrap_or_default()
    }
}

/// A duration in the configuration: whole seconds, or humantime text such as `15m`, `2h 30m`,
/// `30d` (in the environment, digits are seconds and anything else is text).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum Seconds {
    Whole(i64),
    Text(String),
}

impl Seconds {
    pub fn seconds(&self, key: &str) -> anyhow::Result<i64> {
        match self {
            Seconds::Whole(n) => Ok(*n),
            Seconds::Text(text) => humantime::parse_duration(text)
                .map_err(|e| {
                    anyhow::anyhow!(
                        "{key}: {text:?} is not a duration ({e}); write seconds or e.g. \"15m\""
                    )
                })
                .and_then(|d| {
                    i64::try_from(d.as_secs()).map_err(|_| anyhow::anyhow!("{key} is too long"))
                }),
        }
    }
}

impl Config {
    /// The master key file, or why there is none.
    pub fn master_key_file(&self) -> anyhow::Result<&Path> {
        self.master_key_file.as_deref().ok_or_else(|| {
            anyhow::anyhow!(
                "with PostgreSQL, set master_key_file (LATCHKEY_MASTER_KEY_FILE): every latchkey \
                 process on the database needs the same key file, which `latchkey init` creates"
            )
        })
    }
}

/// An allowed return origin, as a browser serialises it (`https://app.example.com`, no path).
fn origin_of(text: &str) -> anyhow::Result<String> {
    let url = url::Url::parse(text.trim())
        .map_err(|e| anyhow::anyhow!("allowed_return_origins: {text:?} is not an origin: {e}"))?;
    if !matches!(url.scheme(), "http" | "https")
        || !matches!(url.path(), "" | "/")
        || url.query().is_some()
    {
        bail!("allowed_return_origins: {text:?} must be a scheme and host only, such as https://app.example.com");
    }
    Ok(url.origin().ascii_serialization())
}

/// The forbidden passwords of a file, one per line, lowercased (blank lines and lines starting
/// with `#` skipped).
fn forbidden_passwords(path: &Path) -> anyhow::Result<std::collections::HashSet<String>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading forbidden_passwords_file {}", path.display()))?;
    Ok(text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_lowercase)
        .collect())
}

/// A relative path made absolute against the working directory.
fn absolute(path: &Path) -> anyhow::Result<std::path::PathBuf> {
    if path.is_absolute() {
        return Ok(path.to_owned());
    }
    let cwd = std::env::current_dir().context("reading the working directory")?;
    Ok(cwd
        .join(path)
        .components()
        .filter(|c| !matches!(c, std::path::Component::CurDir))
        .collect())
}

/// A relative `sqlite://` path made absolute against the working directory at start, so that
/// which file is used is said once in the logs and never changes with a later `cd`.
fn absolute_sqlite(url: String) -> anyhow::Result<String> {
    let Some(path) = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
    else {
        return Ok(url);
    };
    let path = Path::new(path);
    if path.is_absolute() || path.as_os_str().is_empty() {
        return Ok(url);
    }
    Ok(format!("sqlite://{}", absolute(path)?.display()))
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// The validated runtime configuration.
#[derive(Clone, Debug)]
pub struct Config {
    pub listen: String,
    pub database: String,
    /// The master key file: configured, or beside the SQLite file; `None` with PostgreSQL and
    /// none configured (an error when the database is opened).
    pub master_key_file: Option<std::path::PathBuf>,
    /// As configured (its words are in `settings.password_policy`).
    pub forbidden_passwords_file: Option<String>,
    pub default_server: Option<ServerId>,
    pub settings: Settings,
    pub http: HttpOptions,
    pub log_format: LogFormat,
}

impl Config {
    /// Merges flags over environment over file over defaults, and validates.
    pub fn load(
        flags: FileConfig,
        config_file: Option<&Path>,
        env: impl Iterator<Item = (String, String)>,
    ) -> anyhow::Result<Config> {
        let file = match config_file {
            Some(path) => FileConfig::from_file(path)?,
            None => FileConfig::default(),
        };
        let merged = flags.over(FileConfig::from_env(env)?).over(file);
        Config::validate(merged)
    }

    pub fn validate(c: FileConfig) -> anyhow::Result<Config> {
        let d = Settings::default();
        let per_second = |name: &str, v: Option<u64>, default: u32| -> anyhow::Result<u32> {
            match v {
                None => Ok(default),
                Some(v) => {
                    u32::try_from(v).map_err(|_| anyhow::anyhow!("{name} is too large: {v}"))
                }
            }
        };
        let positive = |name: &str, v: Option<Seconds>, default: i64| -> anyhow::Result<i64> {
            let v = match v {
                Some(v) => v.seconds(name)?,
                None => default,
            };
            if v <= 0 {
                bail!("{name} must be a positive duration, got {v} seconds");
            }
            Ok(v)
        };
        let scram_iterations = c.scram_iterations.unwrap_or(d.scram_iterations);
        if scram_iterations < 4096 {
            bail!("scram_iterations must be at least 4096 (RFC 7677), got {scram_iterations}");
        }
        let argon2 = Argon2Params {
            memory_kib: c.argon2_memory_kib.unwrap_or(d.argon2.memory_kib),
            iterations: c.argon2_iterations.unwrap_or(d.argon2.iterations),
            parallelism: c.argon2_parallelism.unwrap_or(d.argon2.parallelism),
        };
        if argon2.parallelism == 0
            || argon2.iterations == 0
            || argon2.memory_kib < 8 * argon2.parallelism
        {
            bail!("argon2 parameters are out of range: {argon2:?}");
        }
        let captcha_after_failures = c.captcha_after_failures.unwrap_or(d.captcha_after_failures);
        let captcha_after_failures_per_address = c
            .captcha_after_failures_per_address
            .unwrap_or(d.captcha_after_failures_per_address);
        if captcha_after_failures == 0 || captcha_after_failures_per_address == 0 {
            bail!(
                "captcha_after_failures and captcha_after_failures_per_address must be at least 1"
            );
        }
        let settings = Settings {
            scram_iterations,
            argon2,
            session_idle_timeout: positive(
                "session_idle_timeout",
                c.session_idle_timeout,
                d.session_idle_timeout,
            )?,
            session_max_lifetime: positive(
                "session_max_lifetime",
                c.session_max_lifetime,
                d.session_max_lifetime,
            )?,
            refresh_idle_timeout: positive(
                "refresh_idle_timeout",
                c.refresh_idle_timeout,
                d.refresh_idle_timeout,
            )?,
            access_token_ttl: positive("access_token_ttl", c.access_token_ttl, d.access_token_ttl)?,
            jwt_issuer: match c.jwt_issuer {
                Some(iss) if iss.trim().is_empty() => bail!("jwt_issuer must not be empty"),
                Some(iss) => iss,
                None => d.jwt_issuer.clone(),
            },
            failure_window: positive("failure_window", c.failure_window, d.failure_window)?,
            captcha_after_failures,
            captcha_after_failures_per_address,
            public_url: match c.public_url {
                Some(url) if !(url.starts_with("http://") || url.starts_with("https://")) => {
                    bail!("public_url must start with http:// or https://, got {url:?}")
                }
                url => url.map(|u| u.trim_end_matches('/').to_owned()),
            },
            hash_workers: match c.hash_workers {
                Some(n) if !(1..=256).contains(&n) => {
                    bail!("hash_workers must be 1 to 256, got {n}")
                }
                Some(n) => n as usize,
                None => d.hash_workers,
            },
            hash_queue: match c.hash_queue {
                Some(n) if !(1..=100_000).contains(&n) => {
                    bail!("hash_queue must be 1 to 100000, got {n}")
                }
                Some(n) => n as usize,
                None => d.hash_queue,
            },
            login_rate_per_address: per_second(
                "login_rate_per_address",
                c.login_rate_per_address,
                d.login_rate_per_address,
            )?,
            login_burst_per_address: per_second(
                "login_burst_per_address",
                c.login_burst_per_address,
                d.login_burst_per_address,
            )?,
            max_code_attempts: match c.max_code_attempts {
                Some(n) if !(1..=100).contains(&n) => {
                    bail!("max_code_attempts must be 1 to 100, got {n}")
                }
                Some(n) => n,
                None => d.max_code_attempts,
            },
            login_step_timeout: positive(
                "login_step_timeout",
                c.login_step_timeout,
                d.login_step_timeout,
            )?,
            password_policy: latchkey_core::settings::PasswordPolicy {
                min_length: match c.password_min_length {
                    Some(n) if !(1..=1024).contains(&n) => {
                        bail!("password_min_length must be 1 to 1024, got {n}")
                    }
                    Some(n) => n as usize,
                    None => d.password_policy.min_length,
                },
                forbidden: match &c.forbidden_passwords_file {
                    Some(path) => std::sync::Arc::new(forbidden_passwords(Path::new(path))?),
                    None => d.password_policy.forbidden.clone(),
                },
            },
            audit_retention_days: match c.audit_retention_days {
                Some(n) => u32::try_from(n)
                    .map_err(|_| anyhow::anyhow!("audit_retention_days is too large: {n}"))?,
                None => d.audit_retention_days,
            },
            session_cache_capacity: match c.session_cache_capacity {
                Some(0) => bail!("session_cache_capacity must be at least 1"),
                Some(n) => usize::try_from(n)?,
                None => d.session_cache_capacity,
            },
            ..d
        };
        let seconds =
            |name: &str, v: Option<Seconds>, default: Duration| -> anyhow::Result<Duration> {
                Ok(Duration::from_secs(
                    positive(name, v, default.as_secs() as i64)? as u64,
                ))
            };
        if c.trust_forwarded_for.is_some() {
            bail!(
                "trust_forwarded_for was replaced by trusted_proxies: list the addresses (or CIDR \
                 ranges) of the proxies in front of latchkey, e.g. trusted_proxies = [\"127.0.0.1\"]"
            );
        }
        let h = HttpOptions::default();
        let tls = match (c.tls_cert, c.tls_key) {
            (Some(cert), Some(key)) => Some(latchkey_http::TlsFiles {
                cert: cert.into(),
                key: key.into(),
            }),
            (None, None) => None,
            _ => bail!("tls_cert and tls_key go together: set both to serve HTTPS, or neither"),
        };
        let http = HttpOptions {
            tls,
            management_listen: c.management_listen,
            drain_timeout: match c.drain_timeout {
                Some(v) => match v.seconds("drain_timeout")? {
                    n if n < 0 => bail!("drain_timeout must not be negative, got {n} seconds"),
                    n => Duration::from_secs(n as u64),
                },
                None => h.drain_timeout,
            },
            access_log: c.access_log.unwrap_or(h.access_log),
            trusted_proxies: TrustedProxies::parse(c.trusted_proxies.as_deref().unwrap_or(&[]))
                .map_err(|e| anyhow::anyhow!("trusted_proxies: {e}"))?,
            cookie_domain: match c.cookie_domain {
                Some(d)
                    if !d.contains('.')
                        || d.starts_with('.')
                        || d.ends_with('.')
                        || !d
                            .bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b"-.".contains(&b)) =>
                {
                    bail!("cookie_domain must be a host name such as example.com, got {d:?}")
                }
                d => d.map(|d| d.to_ascii_lowercase()),
            },
            allowed_return_origins: c
                .allowed_return_origins
                .unwrap_or_default()
                .iter()
                .map(|o| origin_of(o))
                .collect::<anyhow::Result<_>>()?,
            header_read_timeout: seconds(
                "header_read_timeout",
                c.header_read_timeout,
                h.header_read_timeout,
            )?,
            idle_timeout: seconds("idle_timeout", c.idle_timeout, h.idle_timeout)?,
            max_connections: match c.max_connections {
                Some(0) => bail!("max_connections must be at least 1"),
                n => n.map(|n| n as usize),
            },
            request_timeout: seconds("request_timeout", c.request_timeout, h.request_timeout)?,
            max_event_streams: c.max_event_streams.map(|n| n as usize),
            event_stream_max_lifetime: seconds(
                "event_stream_max_lifetime",
                c.event_stream_max_lifetime,
                h.event_stream_max_lifetime,
            )?,
        };
        let default_server = c
            .default_server
            .as_deref()
            .map(ServerId::parse)
            .transpose()
            .map_err(|e| anyhow::anyhow!("default_server: {e}"))?;
        let log_format = match c.log_format.as_deref() {
            None | Some("text") => LogFormat::Text,
            Some("json") => LogFormat::Json,
            Some(other) => bail!("log_format must be \"text\" or \"json\", got {other:?}"),
        };
        let database = absolute_sqlite(c.database.unwrap_or_else(|| DEFAULT_DATABASE.to_owned()))?;
        let master_key_file = match c.master_key_file {
            Some(path) if path.trim().is_empty() => bail!("master_key_file must not be empty"),
            Some(path) => Some(absolute(Path::new(&path))?),
            None => crate::master_key::default_path(&database),
        };
        if let (Some(domain), Some(url)) = (&http.cookie_domain, &settings.public_url) {
            let host = url::Url::parse(url)
                .ok()
                .and_then(|u| u.host_str().map(str::to_ascii_lowercase))
                .unwrap_or_default();
            if !(host == *domain || host.ends_with(&format!(".{domain}"))) {
                bail!(
                    "cookie_domain {domain:?} must be public_url's host or a parent of it \
                     (public_url is {url}): browsers drop other cookies"
                );
            }
        }
        Ok(Config {
            listen: c.listen.unwrap_or_else(|| DEFAULT_LISTEN.to_owned()),
            database,
            master_key_file,
            forbidden_passwords_file: c.forbidden_passwords_file.clone(),
            default_server,
            settings,
            http,
            log_format,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> impl Iterator<Item = (String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<Vec<_>>()
            .into_iter()
    }

    #[test]
    fn flags_beat_environment_which_beats_the_file_which_beats_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("latchkey.toml");
        std::fs::write(
            &file,
            "listen = \"127.0.0.1:1\"\nsession_idle_timeout = 60\ncaptcha_after_failures = 9\n",
        )
        .unwrap();
        let flags = FileConfig {
            listen: Some("127.0.0.1:3".into()),
            ..Default::default()
        };
        let c = Config::load(
            flags,
            Some(&file),
            env(&[
                ("LATCHKEY_LISTEN", "127.0.0.1:2"),
                ("LATCHKEY_SESSION_IDLE_TIMEOUT", "120"),
                ("PATH", "/bin"),
            ]),
        )
        .unwrap();
        assert_eq!(c.listen, "127.0.0.1:3");
        assert_eq!(c.settings.session_idle_timeout, 120);
        assert_eq!(c.settings.captcha_after_failures, 9);
        assert_eq!(c.settings.session_max_lifetime, 30 * 24 * 3600);
        let cwd = std::env::current_dir().unwrap();
        assert_eq!(
            c.database,
            format!("sqlite://{}/latchkey-data/latchkey.db", cwd.display()),
            "the default data path is made absolute at start"
        );
    }

    #[test]
    fn durations_take_seconds_or_humantime_text() {
        let c = Config::load(
            FileConfig::default(),
            None,
            env(&[
                ("LATCHKEY_SESSION_IDLE_TIMEOUT", "15m"),
                ("LATCHKEY_SESSION_MAX_LIFETIME", "30d"),
                ("LATCHKEY_LOGIN_STEP_TIMEOUT", "90"),
                ("LATCHKEY_REQUEST_TIMEOUT", "1m 30s"),
            ]),
        )
        .unwrap();
        assert_eq!(c.settings.session_idle_timeout, 900);
        assert_eq!(c.settings.session_max_lifetime, 30 * 86_400);
        assert_eq!(c.settings.login_step_timeout, 90);
        assert_eq!(c.http.request_timeout, Duration::from_secs(90));
        let err = Config::load(
            FileConfig::default(),
            None,
            env(&[("LATCHKEY_IDLE_TIMEOUT", "soon")]),
        )
        .unwrap_err();
        assert!(format!("{err:#}").contains("idle_timeout"), "{err:#}");
    }

    #[test]
    fn every_setting_that_matters_is_configurable() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("latchkey.toml");
        std::fs::write(
            &file,
            "max_code_attempts = 3\nsession_cache_capacity = 1000\nlogin_step_timeout = \"2m\"\n\
             hash_workers = 1\nhash_queue = 4\nlogin_rate_per_address = 7\n",
        )
        .unwrap();
        let c = Config::load(FileConfig::default(), Some(&file), env(&[])).unwrap();
        assert_eq!(c.settings.max_code_attempts, 3);
        assert_eq!(c.settings.session_cache_capacity, 1000);
        assert_eq!(c.settings.login_step_timeout, 120);
        assert_eq!(c.settings.hash_workers, 1);
        assert_eq!(c.settings.hash_queue, 4);
        assert_eq!(c.settings.login_rate_per_address, 7);
    }

    #[test]
    fn cookie_domain_must_cover_the_public_url_and_return_origins_are_origins() {
        let load = |vars: &[(&str, &str)]| Config::load(FileConfig::default(), None, env(vars));
        let c = load(&[
            ("LATCHKEY_PUBLIC_URL", "https://auth.example.com"),
            ("LATCHKEY_COOKIE_DOMAIN", "Example.com"),
            (
                "LATCHKEY_ALLOWED_RETURN_ORIGINS",
                "https://App.example.com/, http://127.0.0.1:3000",
            ),
        ])
        .unwrap();
        assert_eq!(c.http.cookie_domain.as_deref(), Some("example.com"));
        assert_eq!(
            c.http.allowed_return_origins,
            vec!["https://app.example.com", "http://127.0.0.1:3000"]
        );
        for (vars, key) in [
            (
                vec![
                    ("LATCHKEY_PUBLIC_URL", "https://auth.example.com"),
                    ("LATCHKEY_COOKIE_DOMAIN", "other.org"),
                ],
                "cookie_domain",
            ),
            (vec![("LATCHKEY_COOKIE_DOMAIN", "com")], "cookie_domain"),
            (
                vec![("LATCHKEY_COOKIE_DOMAIN", ".example.com")],
                "cookie_domain",
            ),
            (
                vec![(
                    "LATCHKEY_ALLOWED_RETURN_ORIGINS",
                    "https://app.example.com/path",
                )],
                "allowed_return_origins",
            ),
            (
                vec![("LATCHKEY_ALLOWED_RETURN_ORIGINS", "app.example.com")],
                "allowed_return_origins",
            ),
        ] {
            let err = load(&vars).unwrap_err();
            assert!(format!("{err:#}").contains(key), "{vars:?}: {err:#}");
        }
    }

    #[test]
    fn trusted_proxies_come_as_a_list_and_the_old_switch_is_refused() {
        let c = Config::load(
            FileConfig::default(),
            None,
            env(&[("LATCHKEY_TRUSTED_PROXIES", "127.0.0.1, 10.0.0.0/8")]),
        )
        .unwrap();
        assert!(c.http.trusted_proxies.trusts("10.1.2.3".parse().unwrap()));
        assert!(!c.http.trusted_proxies.trusts("192.0.2.1".parse().unwrap()));
        let err = Config::load(
            FileConfig::default(),
            None,
            env(&[("LATCHKEY_TRUSTED_PROXIES", "proxy.local")]),
        )
        .unwrap_err();
        assert!(format!("{err:#}").contains("trusted_proxies"), "{err:#}");
        let err = Config::load(
            FileConfig::default(),
            None,
            env(&[("LATCHKEY_TRUST_FORWARDED_FOR", "true")]),
        )
        .unwrap_err();
        assert!(format!("{err:#}").contains("trusted_proxies"), "{err:#}");
    }

    #[test]
    fn the_companion_apps_variables_are_not_the_servers() {
        let c = Config::load(
            FileConfig::default(),
            None,
            env(&[("LATCHKEY_APP_STORE", "/tmp/keys.json")]),
        );
        assert!(c.is_ok(), "{:?}", c.err());
    }

    #[test]
    fn unknown_keys_are_rejected_in_file_and_environment() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("latchkey.toml");
        std::fs::write(&file, "sesion_idle_timeout = 60\n").unwrap();
        let err = Config::load(FileConfig::default(), Some(&file), env(&[])).unwrap_err();
        assert!(
            format!("{err:#}").contains("sesion_idle_timeout"),
            "{err:#}"
        );
        let err =
            Config::load(FileConfig::default(), None, env(&[("LATCHKEY_LISTN", "x")])).unwrap_err();
        assert!(format!("{err:#}").contains("listn"), "{err:#}");
    }

    #[test]
    fn bad_values_are_refused_with_the_key_named() {
        let err = Config::load(
            FileConfig::default(),
            None,
            env(&[("LATCHKEY_SESSION_IDLE_TIMEOUT", "-5")]),
        )
        .unwrap_err();
        assert!(format!("{err:#}").contains("session_idle_timeout"));
        let err = Config::load(
            FileConfig::default(),
            None,
            env(&[("LATCHKEY_SCRAM_ITERATIONS", "abc")]),
        )
        .unwrap_err();
        assert!(format!("{err:#}").contains("scram_iterations"), "{err:#}");
    }

    #[test]
    fn the_database_url_can_come_from_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("db-url");
        std::fs::write(&secret, "postgres://u:p@localhost/x\n").unwrap();
        let c = Config::load(
            FileConfig::default(),
            None,
            env(&[("LATCHKEY_DATABASE_FILE", secret.to_str().unwrap())]),
        )
        .unwrap();
        assert_eq!(c.database, "postgres://u:p@localhost/x");
    }

    /// The packaged configuration lists every key (commented, with its default): each key
    /// `config check` can print appears there.
    #[test]
    fn the_packaged_configuration_lists_every_key() {
        let dir = tempfile::tempdir().unwrap();
        let words = dir.path().join("forbidden.txt");
        std::fs::write(&words, "password\n").unwrap();
        let all = FileConfig {
            default_server: Some("AAAAAAAAAAAAAAAAAAAAAA".into()),
            public_url: Some("https://auth.example.com".into()),
            tls_cert: Some("/c.pem".into()),
            tls_key: Some("/k.pem".into()),
            management_listen: Some("127.0.0.1:9090".into()),
            max_connections: Some(10),
            max_event_streams: Some(5),
            forbidden_passwords_file: Some(words.display().to_string()),
            ..FileConfig::default()
        };
        let config = Config::validate(all).unwrap();
        let effective: toml::Table = toml::from_str(&config.effective_toml()).unwrap();
        let packaged = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../packaging/latchkey.toml"
        ))
        .unwrap();
        let listed: std::collections::HashSet<&str> = packaged
            .lines()
            .filter_map(|l| l.trim_start_matches('#').trim().split_once(" = "))
            .map(|(key, _)| key)
            .collect();
        let missing: Vec<&String> = effective
            .keys()
            .filter(|k| !listed.contains(k.as_str()))
            .collect();
        assert!(
            missing.is_empty(),
            "keys missing from packaging/latchkey.toml: {missing:?}"
        );
    }
}
