//! Configuration: defaults < TOML file < `LATCHKEY_*` environment < command-line flags.
//!
//! The file format ([`FileConfig`]) is separate from the validated runtime [`Config`]. Unknown
//! keys are rejected, in the file and in the environment alike (environment variables are read
//! into the same structure, so `LATCHKEY_SESION_IDLE_TIMEOUT` is an error, not silence).
//! Secrets may come from a file: `LATCHKEY_DATABASE_FILE` names a file holding the URL.

use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context};
use latchkey_core::settings::Argon2Params;
use latchkey_core::{ServerId, Settings};
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

/// Keys whose values are strings even when they look like numbers.
const STRING_KEYS: &[&str] = &[
    "listen",
    "database",
    "default_server",
    "log_format",
    "jwt_issuer",
    "public_url",
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
    pub session_idle_timeout: Option<i64>,
    pub session_max_lifetime: Option<i64>,
    /// Seconds a token session (family B) may go unused before it expires.
    pub refresh_idle_timeout: Option<i64>,
    pub access_token_ttl: Option<i64>,
    /// The `iss` claim of access JWTs.
    pub jwt_issuer: Option<String>,
    /// Base URL the companion app reaches latchkey at (put in QR payloads).
    pub public_url: Option<String>,
    pub captcha_after_failures: Option<u64>,
    pub captcha_after_failures_per_address: Option<u64>,
    pub failure_window: Option<i64>,
    pub trust_forwarded_for: Option<bool>,
    /// Password-hashing threads (default: one per core).
    pub hash_workers: Option<u64>,
    /// Hashing jobs that may wait; beyond, logins get 503.
    pub hash_queue: Option<u64>,
    /// Logins per second per client address (0: no limit).
    pub login_rate_per_address: Option<u64>,
    pub login_burst_per_address: Option<u64>,
    /// Seconds a connection may take to send a request head.
    pub header_read_timeout: Option<i64>,
    /// Seconds a keep-alive connection may sit idle.
    pub idle_timeout: Option<i64>,
    /// Open connections at most (default: from the open-file limit).
    pub max_connections: Option<u64>,
    /// Seconds a request (not an event stream) may take.
    pub request_timeout: Option<i64>,
    /// Open event streams at most (default: half the connection cap).
    pub max_event_streams: Option<u64>,
    /// Seconds an event stream lives.
    pub event_stream_max_lifetime: Option<i64>,
    /// "text" (default) or "json".
    pub log_format: Option<String>,
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
            log_format
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
            if NON_CONFIG_ENV.contains(&name.as_str()) {
                continue;
            }
            let key = key.to_ascii_lowercase();
            let parsed = if STRING_KEYS.contains(&key.as_str()) {
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
        let positive = |name: &str, v: Option<i64>, default: i64| -> anyhow::Result<i64> {
            let v = v.unwrap_or(default);
            if v <= 0 {
                bail!("{name} must be a positive number of seconds, got {v}");
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
                Some(n) if n > 100_000 => bail!("hash_queue must be at most 100000, got {n}"),
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
            ..d
        };
        let seconds = |name: &str, v: Option<i64>, default: Duration| -> anyhow::Result<Duration> {
            match v {
                None => Ok(default),
                Some(v) if v <= 0 => bail!("{name} must be a positive number of seconds, got {v}"),
                Some(v) => Ok(Duration::from_secs(v as u64)),
            }
        };
        let h = HttpOptions::default();
        let http = HttpOptions {
            trust_forwarded_for: c.trust_forwarded_for.unwrap_or(false),
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
        Ok(Config {
            listen: c.listen.unwrap_or_else(|| DEFAULT_LISTEN.to_owned()),
            database: c.database.unwrap_or_else(|| DEFAULT_DATABASE.to_owned()),
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
        assert_eq!(c.database, DEFAULT_DATABASE);
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
}
