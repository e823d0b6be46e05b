//! latchkey-bench: the tools `bench/*.sh` drive the real `latchkey serve` binary with
//! (docs/benchmarks.md). wrk measures the plain routes; these commands do what wrk cannot:
//!
//! - `hello`: the hello-world axum handler every ratio is taken against, built with the same
//!   profile and runtime as `latchkey serve`;
//! - `seed`: stores sessions straight into a database (as many as a benchmark needs, quickly)
//!   and writes their tokens for wrk's scripts;
//! - `prime`: one keepalive per token, so each session is loaded into the server's cache the way
//!   production loads it (first use = one store read); with `--identities`, one `/forward-auth`
//!   per token, which loads the session's identity too;
//! - `scram`: SCRAM-SHA-256 logins over HTTP with the client's PBKDF2 computed once ahead, either
//!   to hand out refresh tokens and a JWT, or as a closed-loop load measuring logins per second.

mod hello;
mod load;
mod scram;
mod seed;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "latchkey-bench",
    about = "Tools of latchkey's benchmarks (bench/*.sh)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Serve `Hello, World!` on GET / (the baseline of every ratio).
    Hello {
        #[arg(long, default_value = "127.0.0.1:8081")]
        listen: String,
    },
    /// Store active sessions of one user straight into the database (the server need not run).
    Seed {
        /// The database, as in latchkey's configuration.
        #[arg(long)]
        database: String,
        /// The master key file of that database.
        #[arg(long)]
        master_key_file: PathBuf,
        /// The user (e-mail) the sessions belong to; must exist.
        #[arg(long)]
        user: String,
        #[arg(long)]
        sessions: usize,
        /// Write the tokens of the first `--sample` sessions here, one per line.
        #[arg(long)]
        tokens: PathBuf,
        #[arg(long, default_value_t = usize::MAX)]
        sample: usize,
        /// Inserts in flight (SQLite has one writer: more does not help).
        #[arg(long, default_value_t = 4)]
        concurrency: usize,
    },
    /// One `GET /session/keepalive` per token of the file; fails unless every answer is 200.
    Prime {
        /// latchkey's base URL.
        #[arg(long)]
        url: String,
        #[arg(long)]
        tokens: PathBuf,
        #[arg(long, default_value_t = 64)]
        connections: usize,
        /// Ask `/forward-auth` with each token as the session cookie instead, which loads the
        /// session's identity too.
        #[arg(long)]
        identities: bool,
    },
    /// SCRAM-SHA-256 logins (family B): `--logins N` hands out tokens; `--seconds S` measures.
    Scram {
        #[arg(long)]
        url: String,
        #[arg(long)]
        user: String,
        /// The password, read from this environment variable.
        #[arg(long, default_value = "BENCH_PASSWORD")]
        password_env: String,
        /// Log in this many times, writing one refresh token per line to `--refresh-tokens`
        /// and the first login's access JWT and session id to `--jwt` ("<jwt> <session id>").
        #[arg(long, requires = "refresh_tokens")]
        logins: Option<usize>,
        #[arg(long)]
        refresh_tokens: Option<PathBuf>,
        #[arg(long)]
        jwt: Option<PathBuf>,
        /// Measure logins for this long instead (prints `requests/s`, `p50`, `p99`, `errors`).
        #[arg(long, conflicts_with = "logins")]
        seconds: Option<u64>,
        #[arg(long, default_value_t = 64)]
        connections: usize,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("latchkey-bench: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let outcome = runtime.block_on(async {
        match cli.command {
            Command::Hello { listen } => hello::serve(&listen).await,
            Command::Seed {
                database,
                master_key_file,
                user,
                sessions,
                tokens,
                sample,
                concurrency,
            } => {
                seed::seed(seed::Plan {
                    database: &database,
                    master_key_file: &master_key_file,
                    user: &user,
                    sessions,
                    sample,
                    concurrency,
                    tokens: &tokens,
                })
                .await
            }
            Command::Prime {
                url,
                tokens,
                connections,
                identities,
            } => load::prime(&url, &tokens, connections, identities).await,
            Command::Scram {
                url,
                user,
                password_env,
                logins,
                refresh_tokens,
                jwt,
                seconds,
                connections,
            } => {
                let password = std::env::var(&password_env)
                    .map_err(|_| anyhow::anyhow!("set the password in ${password_env}"))?;
                let client = scram::Client::new(&url, &user, &password).await?;
                match (logins, refresh_tokens, seconds) {
                    (Some(n), Some(out), _) => {
                        client.hand_out(n, connections, &out, jwt.as_deref()).await
                    }
                    (None, _, Some(seconds)) => client.measure(connections, seconds).await,
                    _ => Err(anyhow::anyhow!(
                        "give --logins N --refresh-tokens FILE, or --seconds S"
                    )),
                }
            }
        }
    });
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("latchkey-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}
