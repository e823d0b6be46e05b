//! The operator's commands on users, sessions and the audit trail (`latchkey user ...`,
//! `latchkey sessions ...`, `latchkey audit`), and the output convention every command follows:
//! a result goes to standard output, as a sentence or table for a person, or with `--json` as
//! one JSON object for a script; errors go to standard error with a non-zero exit (main.rs).
//! Two results are fixed by the contract: `init` prints one JSON line, and `user totp` prints the
//! otpauth URI (its QR code goes to standard error, for the person at the terminal).

use std::io::{BufRead, IsTerminal};

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use latchkey_core::services::administration::UserOverview;
use latchkey_core::store::AuditQuery;
use latchkey_core::{Latchkey, UserId};
use serde_json::{json, Value};
use uuid::Uuid;

/// How results are printed.
#[derive(Clone, Copy, Debug)]
pub struct Output {
    pub json: bool,
}

impl Output {
    /// Prints a result: `value` as one JSON line with `--json`, else what `human` says.
    pub fn result(&self, value: Value, human: impl FnOnce() -> String) {
        if self.json {
            println!("{value}");
        } else {
            println!("{}", human());
        }
    }
}

#[derive(Subcommand)]
pub enum UserCommand {
    /// Add a user, with a password read from standard input (or none, if you say so).
    Add {
        userid: String,
        /// Server id (default: the default server).
        #[arg(long)]
        server: Option<String>,
        /// Read the password from the first line of standard input.
        #[arg(long, conflicts_with = "no_password")]
        password_stdin: bool,
        /// Create the user without a password (it logs in with the companion app only).
        #[arg(long)]
        no_password: bool,
    },
    /// Set a new password, read from standard input.
    Password {
        userid: String,
        #[arg(long)]
        server: Option<String>,
    },
    /// Enable TOTP: prints the otpauth:// URI (and its QR code on a terminal) once.
    Totp {
        userid: String,
        #[arg(long)]
        server: Option<String>,
        /// Replace an existing TOTP secret (the old authenticator entry stops working).
        #[arg(long, conflicts_with = "remove")]
        replace: bool,
        /// Remove TOTP instead.
        #[arg(long)]
        remove: bool,
        /// Print the QR code on standard error even when it is not a terminal.
        #[arg(long)]
        qr: bool,
    },
    /// Set the PIN second factor, read from standard input (or remove it).
    Pin {
        userid: String,
        #[arg(long)]
        server: Option<String>,
        /// Read the PIN from the first line of standard input.
        #[arg(long, conflicts_with = "remove")]
        pin_stdin: bool,
        /// Remove the PIN instead.
        #[arg(long)]
        remove: bool,
    },
    /// List the users of a server.
    List {
        #[arg(long)]
        server: Option<String>,
    },
    /// Show one user: credentials and live sessions.
    Show {
        userid: String,
        #[arg(long)]
        server: Option<String>,
    },
    /// Delete a user and all its sessions.
    Delete {
        userid: String,
        #[arg(long)]
        server: Option<String>,
    },
    /// Make a user of the default server (where /login signs in) an administrator: their
    /// role gets the root role's powers and the admin console at /admin admits them; --revoke
    /// takes those powers and the role's permissions away.
    Admin {
        userid: String,
        /// Take the root powers away instead.
        #[arg(long)]
        revoke: bool,
    },
}

#[derive(Subcommand)]
pub enum SessionsCommand {
    /// A user's live sessions, newest activity first.
    List {
        userid: String,
        #[arg(long)]
        server: Option<String>,
        /// At most this many.
        #[arg(long, default_value_t = 100)]
        limit: u64,
    },
    /// Revoke one session by id, or every session of a user.
    Revoke {
        /// The session id.
        #[arg(required_unless_present = "user", conflicts_with = "user")]
        id: Option<String>,
        /// Revoke every session of this user instead.
        #[arg(long)]
        user: Option<String>,
        /// The user's server (with --user; a session id names its server itself).
        #[arg(long, requires = "user")]
        server: Option<String>,
    },
}

/// Which audit events to print.
#[derive(Args)]
pub struct AuditFilter {
    /// Only events of this user id (as given at login, also for names that do not exist).
    #[arg(long)]
    user: Option<String>,
    /// Only events of this kind (e.g. login_failed, login_succeeded, session_revoked).
    #[arg(long)]
    kind: Option<String>,
    /// Only events this recent (e.g. 15m, 2h, 7d).
    #[arg(long)]
    since: Option<String>,
    /// At most this many.
    #[arg(long, default_value_t = 50)]
    limit: u64,
    #[arg(long)]
    server: Option<String>,
}

fn read_stdin_line(what: &str) -> anyhow::Result<String> {
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .with_context(|| format!("reading the {what} from standard input"))?;
    let line = line.trim_end_matches(['\n', '\r']).to_owned();
    if line.is_empty() {
        bail!("no {what} on standard input");
    }
    Ok(line)
}

fn overview_json(o: &UserOverview) -> Value {
    json!({
        "userid": o.user.userid,
        "created_at": o.user.created_at,
        "password": o.password,
        "totp": o.totp,
        "pin": o.pin,
        "active_sessions": o.active_sessions,
    })
}

fn yes_no(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "no"
    }
}

/// The QR code of `text` as Unicode half blocks (two modules per character, quiet zone kept).
pub fn terminal_qr(text: &str) -> anyhow::Result<String> {
    let code = qrcode::QrCode::new(text.as_bytes()).context("making the QR code")?;
    Ok(code
        .render::<qrcode::render::unicode::Dense1x2>()
        .dark_color(qrcode::render::unicode::Dense1x2::Light)
        .light_color(qrcode::render::unicode::Dense1x2::Dark)
        .build())
}

/// Prints the result of removing a second factor (`field` in JSON, `name` for a person).
fn report_removal(out: Output, userid: &UserId, field: &str, name: &str, removed: bool) {
    out.result(
        json!({"userid": userid, field: false, "removed": removed}),
        || {
            if removed {
                format!("{name} removed from {userid}")
            } else {
                format!("{userid} had no {name}")
            }
        },
    );
}

pub async fn user(core: &Latchkey, command: UserCommand, out: Output) -> anyhow::Result<()> {
    match command {
        UserCommand::Add {
            userid,
            server,
            password_stdin,
            no_password,
        } => {
            if !password_stdin && !no_password {
                bail!(
                    "give the password on standard input with --password-stdin, or create a \
                     user without one with --no-password"
                );
            }
            let server = core.server_or_default(server.as_deref()).await?;
            let userid = UserId::parse(&userid)?;
            let password = if password_stdin {
                Some(read_stdin_line("password")?)
            } else {
                None
            };
            let user = core.add_user(&server, &userid, password.as_deref()).await?;
            out.result(
                json!({"userid": user.userid, "serverid": server, "password": password.is_some()}),
                || match password {
                    Some(_) => format!("added {} with a password", user.userid),
                    None => format!("added {} without a password", user.userid),
                },
            );
        }
        UserCommand::Password { userid, server } => {
            let server = core.server_or_default(server.as_deref()).await?;
            let userid = UserId::parse(&userid)?;
            let password = read_stdin_line("password")?;
            core.set_password(&server, &userid, &password).await?;
            out.result(json!({"userid": userid, "password": "set"}), || {
                format!("password set for {userid}")
            });
        }
        UserCommand::Totp {
            userid,
            server,
            replace,
            remove,
            qr,
        } => {
            let server = core.server_or_default(server.as_deref()).await?;
            let userid = UserId::parse(&userid)?;
            if remove {
                let removed = core.remove_totp(&server, &userid).await?;
                report_removal(out, &userid, "totp", "TOTP", removed);
                return Ok(());
            }
            if core.user_overview(&server, &userid).await?.totp && !replace {
                bail!(
                    "{userid} already has TOTP: pass --replace to give it a new secret (its \
                     authenticator's current entry then stops working), or --remove"
                );
            }
            let enrolment = core.enable_totp(&server, &userid).await?;
            if qr || std::io::stderr().is_terminal() {
                eprintln!("{}", terminal_qr(&enrolment.otpauth_uri)?);
            }
            if out.json {
                out.result(
                    json!({"userid": userid, "otpauth_uri": enrolment.otpauth_uri, "secret": enrolment.secret_base32}),
                    String::new,
                );
            } else {
                println!("{}", enrolment.otpauth_uri);
            }
        }
        UserCommand::Pin {
            userid,
            server,
            pin_stdin,
            remove,
        } => {
            let server = core.server_or_default(server.as_deref()).await?;
            let userid = UserId::parse(&userid)?;
            if remove {
                let removed = core.remove_pin(&server, &userid).await?;
                report_removal(out, &userid, "pin", "PIN", removed);
                return Ok(());
            }
            if !pin_stdin {
                bail!("pass --pin-stdin and write the PIN to standard input (PINs never go on the command line), or --remove");
            }
            let pin = read_stdin_line("PIN")?;
            core.set_pin(&server, &userid, &pin).await?;
            out.result(json!({"userid": userid, "pin": true}), || {
                format!("PIN set for {userid}")
            });
        }
        UserCommand::List { server } => {
            let server = core.server_or_default(server.as_deref()).await?;
            let users = core.user_overviews(&server).await?;
            out.result(
                json!({"serverid": server, "users": users.iter().map(overview_json).collect::<Vec<_>>()}),
                || {
                    let mut text = format!(
                        "{:<40} {:>8} {:>4} {:>3} {:>8}",
                        "USER", "PASSWORD", "TOTP", "PIN", "SESSIONS"
                    );
                    for u in &users {
                        text.push_str(&format!(
                            "\n{:<40} {:>8} {:>4} {:>3} {:>8}",
                            u.user.userid.as_str(),
                            yes_no(u.password),
                            yes_no(u.totp),
                            yes_no(u.pin),
                            u.active_sessions
                        ));
                    }
                    text
                },
            );
        }
        UserCommand::Show { userid, server } => {
            let server = core.server_or_default(server.as_deref()).await?;
            let o = core
                .user_overview(&server, &UserId::parse(&userid)?)
                .await?;
            out.result(overview_json(&o), || {
                format!(
                    "user      {}\nid        {}\ncreated   {}\npassword  {}\ntotp      {}\npin       {}\nsessions  {} live",
                    o.user.userid,
                    o.user.id,
                    o.user.created_at,
                    yes_no(o.password),
                    yes_no(o.totp),
                    yes_no(o.pin),
                    o.active_sessions
                )
            });
        }
        UserCommand::Delete { userid, server } => {
            let server = core.server_or_default(server.as_deref()).await?;
            let userid = UserId::parse(&userid)?;
            core.delete_user(&server, &userid).await?;
            out.result(json!({"userid": userid, "deleted": true}), || {
                format!("deleted {userid} and its sessions")
            });
        }
        UserCommand::Admin { userid, revoke } => {
            let server = core.default_server().await?;
            let userid = UserId::parse(&userid)?;
            let role = core.set_user_root(&server, &userid, !revoke).await?;
            out.result(
                json!({"userid": userid, "role": role, "root": !revoke}),
                || {
                    if revoke {
                        format!("{userid} is no longer an administrator")
                    } else {
                        format!("{userid} is an administrator (role {role})")
                    }
                },
            );
        }
    }
    Ok(())
}

pub async fn sessions(
    core: &Latchkey,
    command: SessionsCommand,
    out: Output,
) -> anyhow::Result<()> {
    match command {
        SessionsCommand::List {
            userid,
            server,
            limit,
        } => {
            let server = core.server_or_default(server.as_deref()).await?;
            let sessions = core
                .sessions_of(&server, &UserId::parse(&userid)?, limit)
                .await?;
            let rows: Vec<Value> = sessions
                .iter()
                .map(|s| {
                    json!({
                        "id": s.id,
                        "methods": s.methods.iter().map(|m| m.as_str()).collect::<Vec<_>>(),
                        "created_at": s.created_at,
                        "last_active_at": s.last_active_at,
                        "ip": s.client.ip,
                        "user_agent": s.client.user_agent,
                        "device": s.client.device_name,
                    })
                })
                .collect();
            out.result(json!({"userid": userid, "sessions": rows}), || {
                let mut text = format!(
                    "{:<36} {:<10} {:>12} {:<39} DEVICE",
                    "SESSION", "METHODS", "LAST ACTIVE", "ADDRESS"
                );
                for s in &sessions {
                    let methods: Vec<&str> = s.methods.iter().map(|m| m.as_str()).collect();
                    text.push_str(&format!(
                        "\n{:<36} {:<10} {:>12} {:<39} {}",
                        s.id,
                        methods.join(","),
                        s.last_active_at,
                        s.client.ip.as_deref().unwrap_or("-"),
                        s.client
                            .device_name
                            .as_deref()
                            .or(s.client.user_agent.as_deref())
                            .unwrap_or("-")
                    ));
                }
                text
            });
        }
        SessionsCommand::Revoke { id, user, server } => match (id, user) {
            (Some(id), None) => {
                let id = Uuid::parse_str(&id)
                    .map_err(|_| anyhow::anyhow!("{id:?} is not a session id"))?;
                let revoked = core.revoke_session_as_operator(id).await?;
                out.result(json!({"session": id, "revoked": revoked}), || {
                    if revoked {
                        format!("revoked session {id}")
                    } else {
                        format!("session {id} was not live")
                    }
                });
            }
            (None, Some(userid)) => {
                let server = core.server_or_default(server.as_deref()).await?;
                let userid = UserId::parse(&userid)?;
                let count = core
                    .revoke_user_sessions_as_operator(&server, &userid)
                    .await?;
                out.result(json!({"userid": userid, "revoked": count}), || {
                    format!("revoked {count} sessions of {userid}")
                });
            }
            _ => bail!("name a session id, or a user with --user"),
        },
    }
    Ok(())
}

pub async fn audit(core: &Latchkey, filter: AuditFilter, out: Output) -> anyhow::Result<()> {
    let server = core.server_or_default(filter.server.as_deref()).await?;
    let since = match &filter.since {
        Some(text) => {
            let ago = humantime::parse_duration(text)
                .map_err(|e| anyhow::anyhow!("--since {text:?}: {e}; write e.g. 15m, 2h, 7d"))?;
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0);
            Some(i64::try_from(now.saturating_sub(ago.as_secs())).unwrap_or(0))
        }
        None => None,
    };
    let query = AuditQuery {
        userid: filter.user,
        kind: filter.kind,
        since,
        limit: filter.limit,
    };
    let events = core.audit_events(&server, &query).await?;
    let rows: Vec<Value> = events
        .iter()
        .map(|e| {
            json!({
                "at": e.at,
                "kind": e.kind,
                "userid": e.userid,
                "session": e.session_id,
                "ip": e.ip,
                "detail": e.detail,
            })
        })
        .collect();
    out.result(json!({"serverid": server, "events": rows}), || {
        let mut text = format!(
            "{:<20} {:<22} {:<32} {:<39} DETAIL",
            "AT (UTC)", "KIND", "USER", "ADDRESS"
        );
        for e in &events {
            let at = time::OffsetDateTime::from_unix_timestamp(e.at)
                .ok()
                .and_then(|t| {
                    t.format(time::macros::format_description!(
                        "[year]-[month]-[day] [hour]:[minute]:[second]"
                    ))
                    .ok()
                })
                .unwrap_or_else(|| e.at.to_string());
            text.push_str(&format!(
                "\n{:<20} {:<22} {:<32} {:<39} {}",
                at,
                e.kind,
                e.userid.as_deref().unwrap_or("-"),
                e.ip.as_deref().unwrap_or("-"),
                e.detail.as_deref().unwrap_or("")
            ));
        }
        text
    });
    Ok(())
}
