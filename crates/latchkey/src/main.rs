//! The `latchkey` command: `init`, `serve`, `migrate`, `backup`, `keys`, `config` and `user ...`. Thin on purpose: it
//! parses arguments, loads the configuration, opens the store and calls the core.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{bail, Context};
use clap::{Args, Parser, Subcommand};
use latchkey::config::{Config, FileConfig, LogFormat};
use latchkey::operator;
use latchkey_core::{Latchkey, SystemClock};

#[derive(Parser)]
#[command(
    name = "latchkey",
    version,
    about = "Self-hosted authentication and session server"
)]
struct Cli {
    /// Print each result as one JSON object on standard output (for scripts).
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Args, Clone, Default)]
struct Common {
    /// Database URL: sqlite://PATH (default ./latchkey-data/latchkey.db) or postgres://...
    #[arg(long, global = true)]
    database: Option<String>,
    /// TOML configuration file.
    #[arg(long, global = true, env = "LATCHKEY_CONFIG")]
    config: Option<PathBuf>,
}

#[derive(Subcommand)]
enum Command {
    /// Create the schema, the default server and a root API key (prints them as JSON).
    Init {
        /// Name of the default server.
        #[arg(long, default_value = "latchkey")]
        name: String,
        #[command(flatten)]
        common: Common,
    },
    /// Serve every API family.
    Serve {
        /// Address to listen on (default 127.0.0.1:8080).
        #[arg(long)]
        listen: Option<String>,
        #[command(flatten)]
        common: Common,
    },
    /// Create or upgrade the schema, then exit.
    Migrate {
        #[command(flatten)]
        common: Common,
    },
    /// Write a consistent copy of the live SQLite database to FILE (a new file), while latchkey
    /// serves. The master key file is not in the copy: back it up apart. For PostgreSQL, use
    /// pg_dump (docs/operating.md).
    Backup {
        /// Where to write the copy; must not exist.
        file: PathBuf,
        #[command(flatten)]
        common: Common,
    },
    /// Manage the keys that sign access JWTs.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
        #[command(flatten)]
        common: Common,
    },
    /// Inspect the configuration.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
        #[command(flatten)]
        common: Common,
    },
    /// Manage users.
    User {
        #[command(subcommand)]
        command: operator::UserCommand,
        #[command(flatten)]
        common: Common,
    },
    /// List and revoke sessions.
    Sessions {
        #[command(subcommand)]
        command: operator::SessionsCommand,
        #[command(flatten)]
        common: Common,
    },
    /// Read the audit trail, newest first.
    Audit {
        #[command(flatten)]
        filter: operator::AuditFilter,
        #[command(flatten)]
        common: Common,
    },
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Make a new signing key active. Older keys stay published in the JWKS until the tokens
    /// they signed have expired; running servers pick the new key up within a minute.
    Rotate,
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Load the configuration (flags, environment, file, defaults) and print what takes effect,
    /// every key with its value, the database password redacted. Exits non-zero, saying
    /// which key is wrong, when it does not load.
    Check {
        /// Address to listen on, as `serve --listen` would take it.
        #[arg(long)]
        listen: Option<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("latchkey: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("latchkey: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Loads the configuration of an administrative command and starts its logging.
fn load(common: &Common, listen: Option<String>) -> anyhow::Result<Config> {
    let config = load_quietly(common, listen)?;
    init_logging(config.log_format, "warn");
    Ok(config)
}

fn load_quietly(common: &Common, listen: Option<String>) -> anyhow::Result<Config> {
    let flags = FileConfig {
        listen,
        database: common.database.clone(),
        ..Default::default()
    };
    Config::load(flags, common.config.as_deref(), std::env::vars())
}

/// Logs go to standard error: from `info` for the server, from `warn` for the other commands
/// (whose results are their output); `LATCHKEY_LOG` overrides either.
fn init_logging(format: LogFormat, default_level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("LATCHKEY_LOG")
        .or_else(|_| tracing_subscriber::EnvFilter::try_from_default_env())
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    // Colours only for a person at a terminal: never into files, pipes or journald.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

async fn core(config: &Config) -> anyhow::Result<Arc<Latchkey>> {
    let (store, events) =
        latchkey::open_backend(&config.database, config.master_key_file()?).await?;
    let mut settings = config.settings.clone();
    settings.captcha_test_answer = std::env::var("LATCHKEY_CAPTCHA_TEST_ANSWER").ok();
    let core = Latchkey::with_events(store, Arc::new(SystemClock), settings, events);
    if let Some(id) = &config.default_server {
        core.set_default_server(id.clone())?;
    }
    Ok(core)
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let out = operator::Output { json: cli.json };
    match cli.command {
        Command::Init { name, common } => {
            let config = load(&common, None)?;
            let core = core(&config).await?;
            let done = core.init(&name).await?;
            println!(
                "{}",
                serde_json::json!({"serverid": done.server_id, "apikey": done.api_key.text})
            );
            Ok(())
        }
        Command::Migrate { common } => {
            let config = load(&common, None)?;
            latchkey::open_store(&config.database, config.master_key_file()?).await?;
            out.result(serde_json::json!({"migrated": true}), || {
                "the schema is up to date".to_owned()
            });
            Ok(())
        }
        Command::Serve { listen, common } => {
            // SIGHUP has its handler from the very start: a `systemctl reload` during start-up
            // must not end the process (its default action).
            #[cfg(unix)]
            let hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
                .context("listening for SIGHUP")?;
            let config = load_quietly(&common, listen)?;
            init_logging(config.log_format, "info");
            serve(
                config,
                #[cfg(unix)]
                hangup,
            )
            .await
        }
        Command::Backup { file, common } => {
            let config = load(&common, None)?;
            if !config.database.starts_with("sqlite:") {
                bail!(
                    "latchkey backup copies SQLite databases; for PostgreSQL use pg_dump, e.g. \
                     pg_dump --format=custom --file=latchkey.dump DATABASE_URL \
                     (see docs/operating.md)"
                );
            }
            let bytes = latchkey_store_sqlite::backup(&config.database, &file)
                .await
                .with_context(|| format!("backing up to {}", file.display()))?;
            if let Some(key) = &config.master_key_file {
                eprintln!(
                    "latchkey: the backup holds no master key: keep a copy of {} apart from it",
                    key.display()
                );
            }
            let file = file.display().to_string();
            out.result(serde_json::json!({"backup": file, "bytes": bytes}), || {
                format!("backed up to {file} ({bytes} bytes)")
            });
            Ok(())
        }
        Command::Keys {
            command: KeysCommand::Rotate,
            common,
        } => {
            let config = load(&common, None)?;
            let core = core(&config).await?;
            let kid = core.rotate_signing_key().await?;
            out.result(serde_json::json!({ "kid": kid }), || {
                format!("new signing key {kid}; the previous ones stay published until their tokens expire")
            });
            Ok(())
        }
        Command::Config {
            command: ConfigCommand::Check { listen },
            common,
        } => {
            let config = load(&common, listen)?;
            let toml = config.effective_toml();
            if out.json {
                let table: toml::Table = toml::from_str(&toml)?;
                println!("{}", serde_json::to_string(&table)?);
            } else {
                print!("{toml}");
            }
            Ok(())
        }
        Command::User { command, common } => {
            let config = load(&common, None)?;
            let core = core(&config).await?;
            operator::user(&core, command, out).await
        }
        Command::Sessions { command, common } => {
            let config = load(&common, None)?;
            let core = core(&config).await?;
            operator::sessions(&core, command, out).await
        }
        Command::Audit { filter, common } => {
            let config = load(&common, None)?;
            let core = core(&config).await?;
            operator::audit(&core, filter, out).await
        }
    }
}

async fn serve(
    config: Config,
    #[cfg(unix)] hangup: tokio::signal::unix::Signal,
) -> anyhow::Result<()> {
    let core = core(&config).await?;
    if core.settings.captcha_test_answer.is_some() {
        tracing::warn!(
            "LATCHKEY_CAPTCHA_TEST_ANSWER is set: every CAPTCHA has a fixed, known answer. \
             This is for automated tests only and must never be set in production!"
        );
    }
    if let Some(id) = &config.default_server {
        // A default_server naming no server would make every family answer 401 to every
        // right password: refuse to start instead.
        core.server(id).await.with_context(|| {
            format!("default_server {id} (configuration) names no server in the database")
        })?;
    }
    match core.default_server().await {
        Ok(id) => tracing::info!(server = %id, "default server"),
        Err(_) => tracing::warn!("not initialised yet: run `latchkey init` (serving anyway)"),
    }
    let server = latchkey_http::build(core, config.http.clone(), &config.listen).await?;
    #[cfg(unix)]
    tokio::spawn(reload_on_hangup(hangup, server.tls()));
    tracing::info!(
        listen = %server.local_addr()?,
        tls = server.tls().is_some(),
        management = server.management_addr().map(|a| a.to_string()).as_deref().unwrap_or("-"),
        database = %latchkey::redact(&config.database),
        "latchkey is serving"
    );
    server.run(shutdown_signal()).await;
    tracing::info!("latchkey stopped");
    Ok(())
}

/// SIGHUP (`systemctl reload`): read the certificate and key again (renewed by certbot, say).
/// Connections accepted afterwards use them; open ones keep theirs. A failed reload keeps the
/// files in use. Without TLS there is nothing to reload, but SIGHUP must still not end the
/// process (its default action).
#[cfg(unix)]
async fn reload_on_hangup(
    mut hangup: tokio::signal::unix::Signal,
    tls: Option<Arc<latchkey_http::Tls>>,
) {
    while hangup.recv().await.is_some() {
        match tls.as_deref().map(latchkey_http::Tls::reload) {
            None => tracing::info!(
                "SIGHUP: nothing to reload (no TLS); other settings take effect at a restart"
            ),
            Some(Ok(())) => tracing::info!("TLS certificate and key reloaded"),
            Some(Err(e)) => tracing::error!(
                error = %e,
                "TLS reload failed; still serving the previous certificate"
            ),
        }
    }
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
