//! `latchkey-app`: the companion app of latchkey as a command line program (docs/app-protocol.md).
//!
//! This file only parses the command line and turns the outcome into an exit status: 0 on
//! success, 1 on failure with one line on standard error (and `{"error": ...}` on standard output
//! with `--json`), 2 for a malformed command line. The work is in the modules:
//! [`keystore`] (accounts and keys on disk), [`scan`] (payload text, base64 or PNG),
//! [`client`] (HTTP), [`commands`] (enrol, login, accounts), [`listen`] (pushes),
//! [`transactions`] (what a web site asks to confirm).

mod client;
mod commands;
mod keystore;
mod listen;
mod output;
mod scan;
mod transactions;

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::listen::Decision;
use crate::output::Output;
use crate::scan::Source;

#[derive(Parser)]
#[command(
    name = "latchkey-app",
    version,
    about = "The latchkey companion app: enrol accounts, log in by QR code, approve pushed logins and transactions."
)]
struct Cli {
    /// The key store file (created with mode 0600 at the first enrol). It holds secret keys.
    #[arg(long, value_name = "FILE", env = "LATCHKEY_APP_STORE")]
    store: PathBuf,
    /// Print JSON on standard output: one object per command, one line per event for `listen`.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Enrol a new account from an enrol QR code; shows the server's visual hash to compare.
    Enrol {
        #[command(flatten)]
        payload: PayloadArgs,
    },
    /// Log in the browser session that shows a login QR code.
    Login {
        #[command(flatten)]
        payload: PayloadArgs,
        /// The account to log in with when several are enrolled on that server.
        #[arg(long, value_name = "N")]
        account: Option<i64>,
    },
    /// Wait for login requests and transactions pushed by the servers and answer them.
    Listen {
        /// Approve every request, and every transaction whose values verify, without asking.
        #[arg(long, conflicts_with = "deny_all")]
        approve_all: bool,
        /// Deny every request and decline every transaction without asking.
        #[arg(long)]
        deny_all: bool,
        /// Return after handling one request.
        #[arg(long)]
        once: bool,
        /// Listen for this account only.
        #[arg(long, value_name = "N")]
        account: Option<i64>,
    },
    /// List the enrolled accounts (never their keys).
    Accounts,
    /// List the transactions waiting for an answer, each checked against the server's key.
    Transactions {
        /// This account only.
        #[arg(long, value_name = "N")]
        account: Option<i64>,
    },
    /// Approve a waiting transaction, after checking it is what the server signed.
    Approve {
        /// The transaction id, as `transactions` lists it (base64url: it may start with `-`).
        #[arg(allow_hyphen_values = true)]
        tid: String,
        /// Look for it under this account only.
        #[arg(long, value_name = "N")]
        account: Option<i64>,
    },
    /// Decline a waiting transaction, after checking it is what the server signed.
    Decline {
        /// The transaction id, as `transactions` lists it (base64url: it may start with `-`).
        #[arg(allow_hyphen_values = true)]
        tid: String,
        /// Look for it under this account only.
        #[arg(long, value_name = "N")]
        account: Option<i64>,
    },
}

#[derive(Args)]
#[group(required = true, multiple = false)]
struct PayloadArgs {
    /// The QR payload text (latchkey://...), its base64, or - to read it from standard input.
    payload: Option<String>,
    /// A PNG picture of the QR code.
    #[arg(long, value_name = "IMAGE")]
    png: Option<PathBuf>,
}

impl PayloadArgs {
    fn source(self) -> Source {
        match (self.payload, self.png) {
            (_, Some(path)) => Source::Png(path),
            (Some(text), None) => Source::Text(text),
            // clap's group makes one of them required.
            (None, None) => Source::Text(String::new()),
        }
    }
}

fn main() {
    let args: Vec<_> = std::env::args_os().collect();
    let cli = match Cli::try_parse_from(&args) {
        Ok(cli) => cli,
        Err(e) => {
            if e.use_stderr() && args.iter().any(|a| a == "--json") {
                // clap's text is several lines with usage hints: keep the message, on one line.
                let text = e.to_string();
                let message = text.split("\n\n").next().unwrap_or_default();
                let message = message.split_whitespace().collect::<Vec<_>>().join(" ");
                Output { json: true }.emit(
                    &serde_json::json!({ "error": message.trim_start_matches("error: ") }),
                    String::new,
                );
            }
            let _ = e.print();
            std::process::exit(e.exit_code());
        }
    };
    let out = Output { json: cli.json };
    let code = match run(cli) {
        Ok(()) => 0,
        Err(e) => {
            out.error(&format!("{e:#}"));
            1
        }
    };
    // Exit here rather than by dropping the runtime: a thread may still wait on standard input.
    std::process::exit(code);
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let out = Output { json: cli.json };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let store = cli.store;
    runtime.block_on(async move {
        match cli.command {
            Command::Enrol { payload } => commands::enrol(&store, &payload.source(), out).await,
            Command::Login { payload, account } => {
                commands::login(&store, &payload.source(), account, out).await
            }
            Command::Listen {
                approve_all,
                deny_all,
                once,
                account,
            } => {
                let decision = match (approve_all, deny_all) {
                    (true, _) => Decision::ApproveAll,
                    (_, true) => Decision::DenyAll,
                    _ => Decision::Ask,
                };
                let options = listen::Options {
                    decision,
                    once,
                    accountid: account,
                };
                listen::listen(&store, options, out).await
            }
            Command::Accounts => commands::accounts(&store, out),
            Command::Transactions { account } => transactions::list(&store, account, out).await,
            Command::Approve { tid, account } => {
                transactions::answer(&store, &tid, true, account, out).await
            }
            Command::Decline { tid, account } => {
                transactions::answer(&store, &tid, false, account, out).await
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn the_contract_command_lines_parse() {
        for line in [
            "latchkey-app --store s enrol latchkey://enrol?v=1 --json",
            "latchkey-app --store s enrol --png qr.png",
            "latchkey-app --store s login bGF0Y2hrZXk6Ly8= --json --account 3",
            "latchkey-app --store s listen --approve-all --once --json",
            "latchkey-app --store s --json listen --deny-all",
            "latchkey-app --store s accounts --json",
            "latchkey-app --store s transactions --json",
            "latchkey-app --store s --json approve dGlk --account 3",
            "latchkey-app --store s decline dGlk",
            // A base64url transaction id may start with a hyphen.
            "latchkey-app --store s --json decline -pcuy1yjQOeYsxkmaY0MDg",
            "latchkey-app --store s approve -pcuy1yjQOeYsxkmaY0MDg --account 3",
        ] {
            assert!(
                Cli::try_parse_from(line.split(' ')).is_ok(),
                "{line} should parse"
            );
        }
        for line in [
            "latchkey-app --store s enrol",
            "latchkey-app --store s enrol x --png qr.png",
            "latchkey-app --store s listen --approve-all --deny-all",
            "latchkey-app --store s approve",
        ] {
            assert!(
                Cli::try_parse_from(line.split(' ')).is_err(),
                "{line} should not parse"
            );
        }
    }
}
