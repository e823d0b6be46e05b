//! `listen`: keeps one Server-Sent Events stream open per account and answers the login requests
//! and transactions pushed on it (transactions: [`crate::transactions`]).
//!
//! One task per account owns its stream: it asks for a challenge, signs it (action `listen`),
//! connects, and when the stream drops it reconnects with a fresh challenge after a growing pause.
//! A refusal (401, 403 blocked, 404 unknown: retrying cannot help) ends that account's task; the
//! command fails once no account is left. The tasks report to one loop that asks the person and
//! answers, one request at a time, so prompts never interleave; a request the server sends again
//! after a reconnect (pending pushes come first on every connection) is answered only once.

use std::collections::HashSet;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use futures_util::StreamExt;
use latchkey_core::crypto::qr::app_message;
use latchkey_wire::{Push, TransactionPush};
use reqwest::{Response, StatusCode};
use serde_json::{json, Value};
use tokio::sync::mpsc;

use crate::client::{printable, Client, ClientError};
use crate::commands::unix_now;
use crate::keystore::{Account, KeyStore};
use crate::output::{note, Output};

const FIRST_PAUSE: Duration = Duration::from_secs(1);
const MAX_PAUSE: Duration = Duration::from_secs(30);
/// The server comments every 15 s; this long without a byte means the connection is dead.
const IDLE_LIMIT: Duration = Duration::from_secs(45);
/// An event line longer than this is not the protocol's.
const MAX_LINE: usize = 1024 * 1024;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    Ask,
    ApproveAll,
    DenyAll,
}

pub struct Options {
    pub decision: Decision,
    pub once: bool,
    pub accountid: Option<i64>,
}

/// What an account's stream task tells the answering loop.
enum Report {
    Connected(usize),
    Dropped {
        index: usize,
        why: String,
        retry_in: Duration,
    },
    Refused {
        index: usize,
        why: String,
    },
    Push {
        index: usize,
        push: Push,
    },
    Transaction {
        index: usize,
        transaction: TransactionPush,
    },
}

/// The request id of a push as it goes into the path and the signature; none when empty.
fn request_id(push: &Push) -> Option<String> {
    Some(push.requestid.clone()).filter(|id| !id.is_empty())
}

pub async fn listen(store_path: &Path, options: Options, out: Output) -> Result<()> {
    let store = KeyStore::load(store_path)?;
    let mut streams: Vec<(Account, Client)> = Vec::new();
    for account in store.accounts {
        if options.accountid.is_some_and(|id| id != account.accountid) {
            continue;
        }
        let client = Client::new(&account.baseurl)
            .with_context(|| format!("account {}", account.accountid))?;
        if client.is_plain_remote() {
            note(&format!(
                "warning: {} is reached over plain http: others on the network can see this exchange",
                account.baseurl
            ));
        }
        streams.push((account, client));
    }
    if streams.is_empty() {
        match options.accountid {
            Some(id) => bail!("the key store has no account {id}"),
            None => bail!("the key store has no accounts: enrol one first"),
        }
    }

    let (tx, mut rx) = mpsc::channel(16);
    for (index, (account, client)) in streams.iter().enumerate() {
        tokio::spawn(keep_stream(
            index,
            account.clone(),
            client.clone(),
            tx.clone(),
        ));
    }
    drop(tx);

    let mut alive = vec![true; streams.len()];
    let mut connected = vec![false; streams.len()];
    let mut announced = false;
    let mut answered: HashSet<(usize, String)> = HashSet::new();
    let mut person = Person::default();

    while let Some(report) = rx.recv().await {
        match report {
            Report::Connected(index) => {
                let account = &streams[index].0;
                note(&format!(
                    "listening for account {} on {} ({})",
                    account.accountid, account.serverid, account.baseurl
                ));
                connected[index] = true;
            }
            Report::Dropped {
                index,
                why,
                retry_in,
            } => {
                let account = &streams[index].0;
                note(&format!(
                    "account {} on {}: {why}; connecting again in {} s",
                    account.accountid,
                    account.serverid,
                    retry_in.as_secs()
                ));
            }
            Report::Refused { index, why } => {
                alive[index] = false;
                if !alive.contains(&true) {
                    bail!("{why}");
                }
                let account = &streams[index].0;
                note(&format!("latchkey-app: error: {why}"));
                if out.json {
                    out.emit(
                        &json!({
                            "error": why,
                            "serverid": account.serverid,
                            "accountid": account.accountid,
                        }),
                        String::new,
                    );
                }
            }
            Report::Push { index, push } => {
                let (account, client) = &streams[index];
                if push.serverid != account.serverid || push.accountid != account.accountid {
                    note(&format!(
                        "ignoring a push for account {} on {} that came on the stream of account {} on {}",
                        push.accountid, push.serverid, account.accountid, account.serverid
                    ));
                    continue;
                }
                let Some(requestid) = request_id(&push) else {
                    note("ignoring a push without a request id");
                    continue;
                };
                if !answered.insert((index, requestid.clone())) {
                    continue;
                }
                answer(
                    account,
                    client,
                    &push,
                    &requestid,
                    options.decision,
                    &mut person,
                    out,
                )
                .await;
                if options.once {
                    return Ok(());
                }
            }
            Report::Transaction { index, transaction } => {
                let (account, client) = &streams[index];
                if !answered.insert((index, format!("transaction {}", transaction.tid))) {
                    continue;
                }
                crate::transactions::handle(
                    account,
                    client,
                    &transaction,
                    options.decision,
                    &mut person,
                    out,
                )
                .await;
                if options.once {
                    return Ok(());
                }
            }
        }
        let ready = (0..streams.len()).all(|i| !alive[i] || connected[i]);
        if !announced && ready {
            announced = true;
            if out.json {
                for (i, (account, _)) in streams.iter().enumerate() {
                    if alive[i] {
                        out.emit(
                            &json!({
                                "listening": true,
                                "accountid": account.accountid,
                                "serverid": account.serverid,
                            }),
                            String::new,
                        );
                    }
                }
            }
        }
    }
    bail!("every event stream ended")
}

/// Shows one pushed request, gets the decision, sends the signed answer and reports it.
async fn answer(
    account: &Account,
    client: &Client,
    push: &Push,
    requestid: &str,
    decision: Decision,
    person: &mut Person,
    out: Output,
) {
    note(&describe(account, requestid, push));
    let approve = match decision {
        Decision::ApproveAll => true,
        Decision::DenyAll => false,
        Decision::Ask => person.approves("Approve this login?", push.expires).await,
    };
    let verdict = if approve { "approve" } else { "deny" };
    let message = app_message(
        "answer",
        &account.serverid,
        requestid,
        &account.accountid.to_string(),
        Some(verdict),
    );
    let result = match account.sign(&message) {
        Ok(signature) => client
            .answer(
                requestid,
                &account.serverid,
                account.accountid,
                approve,
                &signature,
            )
            .await
            .map_err(|e| (e.code(), e.to_string())),
        Err(e) => Err(("signing_failed".to_owned(), format!("{e:#}"))),
    };

    let mut line = json!({
        "requestid": push.requestid,
        "serverid": account.serverid,
        "accountid": account.accountid,
        "approved": approve,
        "usercontext": push.usercontext,
    });
    let what = format!(
        "request {requestid} for account {} on {}",
        account.accountid, account.serverid
    );
    match result {
        Ok(answer) => {
            line["loggedin"] = json!(answer.loggedin);
            out.emit(&line, || {
                let done = if answer.loggedin {
                    "logged in"
                } else {
                    "not logged in"
                };
                let said = if approve { "approved" } else { "denied" };
                format!("{what}: {said}, {done}")
            });
        }
        Err((code, message)) => {
            note(&format!("{what} could not be answered: {message}"));
            line["error"] = json!(code);
            line["message"] = json!(message);
            out.emit(&line, || format!("{what}: not answered ({code})"));
        }
    }
}

/// The pushed request as the person reads it before deciding. Every value the relying party
/// chose is stripped of control characters (no terminal escapes).
fn describe(account: &Account, requestid: &str, push: &Push) -> String {
    let mut text = format!(
        "Login request {} for account {}{} on {}",
        printable(requestid),
        account.accountid,
        account
            .userid
            .as_deref()
            .map(|u| format!(" ({})", printable(u)))
            .unwrap_or_default(),
        account.serverid
    );
    text.push_str(&format!(
        ", expires in {} s",
        (push.expires - unix_now()).max(0)
    ));
    text.push(':');
    let mut shown = false;
    for (key, label) in [("announceinfo", "announced by"), ("sessioninfo", "session")] {
        let Some(info) = push.usercontext.get(key).filter(|v| v.is_object()) else {
            continue;
        };
        let mut parts = Vec::new();
        if let Some(ip) = info.get("ip").and_then(Value::as_str) {
            parts.push(format!("ip {}", printable(ip)));
        }
        if let Some(agent) = info.get("useragent").and_then(Value::as_str) {
            parts.push(format!("browser {:?}", printable(agent)));
        }
        if let Some(extra) = info.get("info").filter(|v| !v.is_null()) {
            parts.push(format!("info {}", printable(&extra.to_string())));
        }
        if info.get("logo").is_some_and(|v| !v.is_null()) {
            parts.push("with a logo".into());
        }
        if parts.is_empty() {
            parts.push("(nothing)".into());
        }
        text.push_str(&format!("\n  {label}: {}", parts.join(", ")));
        shown = true;
    }
    if !shown {
        text.push_str("\n  (no details given)");
    }
    text
}

/// The person at the terminal. Standard input is read by one thread for the whole run, so a
/// question left unanswered until its request expired does not leave a reader behind that
/// would swallow the next answer.
#[derive(Default)]
pub struct Person {
    lines: Option<mpsc::Receiver<String>>,
    gone: bool,
}

impl Person {
    /// Asks y/n; anything but yes, silence until `deadline` (unix seconds) or a closed standard
    /// input is no.
    pub async fn approves(&mut self, question: &str, deadline: i64) -> bool {
        if self.gone {
            return false;
        }
        let lines = self.lines.get_or_insert_with(|| {
            let (tx, rx) = mpsc::channel(4);
            std::thread::spawn(move || {
                let mut line = String::new();
                while std::io::stdin().read_line(&mut line).is_ok_and(|n| n > 0) {
                    if tx.blocking_send(std::mem::take(&mut line)).is_err() {
                        return;
                    }
                }
            });
            rx
        });
        {
            use std::io::Write;
            let mut stderr = std::io::stderr().lock();
            let _ = write!(stderr, "{question} [y/N] ");
            let _ = stderr.flush();
        }
        let wait = Duration::from_secs((deadline - unix_now()).max(1) as u64);
        match tokio::time::timeout(wait, lines.recv()).await {
            Ok(Some(line)) => matches!(line.trim().to_lowercase().as_str(), "y" | "yes"),
            Ok(None) => {
                self.gone = true;
                note("\nno answer on standard input: no");
                false
            }
            Err(_) => {
                note("\nno answer before it expired: no");
                false
            }
        }
    }
}

/// Why a connection attempt failed, and whether trying again can help.
enum Failure {
    Retry(String),
    Refused(String),
}

/// Keeps the event stream of one account open until it is refused or the loop is gone.
async fn keep_stream(index: usize, account: Account, client: Client, tx: mpsc::Sender<Report>) {
    let mut pause = FIRST_PAUSE;
    loop {
        let why = match connect(&account, &client).await {
            Ok(response) => {
                if tx.send(Report::Connected(index)).await.is_err() {
                    return;
                }
                let since = Instant::now();
                let Some(why) = read_stream(index, response, &tx).await else {
                    return;
                };
                if since.elapsed() > MAX_PAUSE {
                    pause = FIRST_PAUSE;
                }
                why
            }
            Err(Failure::Refused(why)) => {
                let _ = tx.send(Report::Refused { index, why }).await;
                return;
            }
            Err(Failure::Retry(why)) => why,
        };
        let report = Report::Dropped {
            index,
            why,
            retry_in: pause,
        };
        if tx.send(report).await.is_err() {
            return;
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(MAX_PAUSE);
    }
}

async fn connect(account: &Account, client: &Client) -> Result<Response, Failure> {
    let failed = |e: ClientError| classify(account, e);
    let challenge = client
        .challenge(&account.serverid, account.accountid)
        .await
        .map_err(failed)?;
    let message = app_message(
        "listen",
        &account.serverid,
        &challenge.challenge,
        &account.accountid.to_string(),
        None,
    );
    let signature = account
        .sign(&message)
        .map_err(|e| Failure::Refused(format!("{e:#}")))?;
    client
        .events(
            &account.serverid,
            account.accountid,
            &challenge.challenge,
            &signature,
        )
        .await
        .map_err(failed)
}

fn classify(account: &Account, e: ClientError) -> Failure {
    let who = format!(
        "account {} on server {}",
        account.accountid, account.serverid
    );
    match e.status() {
        Some(StatusCode::FORBIDDEN) => Failure::Refused(format!(
            "the server refuses {who}: the account is blocked ({e})"
        )),
        Some(StatusCode::NOT_FOUND) => {
            Failure::Refused(format!("the server does not know {who} ({e})"))
        }
        Some(StatusCode::UNAUTHORIZED) => Failure::Refused(format!(
            "the server does not accept the signature of {who} ({e})"
        )),
        Some(StatusCode::REQUEST_TIMEOUT | StatusCode::TOO_MANY_REQUESTS) => {
            Failure::Retry(e.to_string())
        }
        Some(status) if status.is_client_error() => Failure::Refused(format!("{who}: {e}")),
        _ => Failure::Retry(format!("{:#}", anyhow::Error::from(e))),
    }
}

/// Forwards the pushes of one open stream; returns why it ended, or `None` when the loop is gone.
async fn read_stream(
    index: usize,
    response: Response,
    tx: &mpsc::Sender<Report>,
) -> Option<String> {
    let mut body = response.bytes_stream();
    let mut parser = SseParser::default();
    loop {
        let chunk = match tokio::time::timeout(IDLE_LIMIT, body.next()).await {
            Err(_) => return Some(format!("nothing heard for {} s", IDLE_LIMIT.as_secs())),
            Ok(None) => return Some("the server closed the event stream".into()),
            Ok(Some(Err(e))) => {
                return Some(format!("the event stream broke: {}", e.without_url()))
            }
            Ok(Some(Ok(chunk))) => chunk,
        };
        let events = match parser.feed(&chunk) {
            Ok(events) => events,
            Err(why) => return Some(why),
        };
        for event in events {
            let report = match event.name.as_str() {
                "push" => serde_json::from_str::<Push>(&event.data)
                    .map(|push| Report::Push { index, push }),
                "transaction" => serde_json::from_str::<TransactionPush>(&event.data)
                    .map(|transaction| Report::Transaction { index, transaction }),
                _ => continue,
            };
            match report {
                Ok(report) => {
                    if tx.send(report).await.is_err() {
                        return None;
                    }
                }
                Err(e) => note(&format!("ignoring a malformed {}: {e}", event.name)),
            }
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
struct SseEvent {
    name: String,
    data: String,
}

/// Server-Sent Events framing: lines `field: value`, an event ends at a blank line, lines
/// starting with `:` are comments (keep-alives).
#[derive(Default)]
struct SseParser {
    buffer: Vec<u8>,
    name: String,
    data: Vec<String>,
}

impl SseParser {
    fn feed(&mut self, chunk: &[u8]) -> Result<Vec<SseEvent>, String> {
        self.buffer.extend_from_slice(chunk);
        let mut events = Vec::new();
        while let Some(end) = self.buffer.iter().position(|&b| b == b'\n') {
            let mut line: Vec<u8> = self.buffer.drain(..=end).collect();
            line.pop();
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            let line = String::from_utf8_lossy(&line);
            if line.is_empty() {
                let name = std::mem::take(&mut self.name);
                if !self.data.is_empty() {
                    events.push(SseEvent {
                        name: if name.is_empty() {
                            "message".into()
                        } else {
                            name
                        },
                        data: std::mem::take(&mut self.data).join("\n"),
                    });
                }
                continue;
            }
            if line.starts_with(':') {
                continue;
            }
            let (field, value) = match line.split_once(':') {
                Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
                None => (line.as_ref(), ""),
            };
            match field {
                "event" => self.name = value.to_owned(),
                "data" => self.data.push(value.to_owned()),
                _ => {}
            }
        }
        let pending = self.buffer.len() + self.data.iter().map(String::len).sum::<usize>();
        if pending > MAX_LINE {
            return Err("the server sent an oversized event".into());
        }
        Ok(events)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_split_on_blank_lines_across_chunks() {
        let mut parser = SseParser::default();
        let text = ": keep-alive\n\nevent: push\ndata: {\"a\":\r\ndata: 1}\r\n\r\ndata: x\n\nevent: other\nid: 3\ndata: y\n\n";
        let mut events = Vec::new();
        for chunk in text.as_bytes().chunks(5) {
            events.extend(parser.feed(chunk).unwrap());
        }
        assert_eq!(
            events,
            vec![
                SseEvent {
                    name: "push".into(),
                    data: "{\"a\":\n1}".into()
                },
                SseEvent {
                    name: "message".into(),
                    data: "x".into()
                },
                SseEvent {
                    name: "other".into(),
                    data: "y".into()
                },
            ]
        );
    }

    #[test]
    fn an_endless_line_is_an_error_not_a_memory_leak() {
        let mut parser = SseParser::default();
        let chunk = vec![b'x'; 64 * 1024];
        let mut failed = false;
        for _ in 0..20 {
            if parser.feed(&chunk).is_err() {
                failed = true;
                break;
            }
        }
        assert!(failed);
    }

    #[test]
    fn pushes_are_read_as_the_server_sends_them() {
        let push: Push = serde_json::from_str(
            r#"{"requestid": "r-1", "serverid": "s", "accountid": 3, "usercontext": {}, "expires": 5}"#,
        )
        .unwrap();
        assert_eq!(request_id(&push).as_deref(), Some("r-1"));
        let push: Push = serde_json::from_str(
            r#"{"requestid": "", "serverid": "s", "accountid": 3, "usercontext": null, "expires": 5}"#,
        )
        .unwrap();
        assert_eq!(request_id(&push), None);
        assert!(serde_json::from_str::<Push>(
            r#"{"requestid": 12, "serverid": "s", "accountid": 3}"#
        )
        .is_err());
    }

    #[test]
    fn user_context_is_shown_without_terminal_escapes() {
        let account = Account {
            accountid: 3,
            serverid: "srv".into(),
            baseurl: "http://127.0.0.1:1".into(),
            serverkey: String::new(),
            name: "phone".into(),
            userid: Some("alice".into()),
            publickey: String::new(),
            secretkey: crate::keystore::SecretKey::new(&ed25519_dalek::SigningKey::from_bytes(
                &[1; 32],
            )),
            enrolled: 0,
        };
        let push: Push = serde_json::from_str(
            r#"{"requestid": "r", "serverid": "srv", "accountid": 3, "usercontext":
                {"sessioninfo": {"ip": "10.0.0.1", "useragent": "evil\u001b[2J", "info": {"k": "v"}}},
                "expires": 5}"#,
        )
        .unwrap();
        let text = describe(&account, "r", &push);
        assert!(text.contains("ip 10.0.0.1"), "{text}");
        assert!(text.contains("info {\"k\":\"v\"}"), "{text}");
        assert!(!text.contains('\u{1b}'), "{text}");
    }
}
