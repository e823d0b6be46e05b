//! Transactions: what a web site asks the person to confirm (an amount, a beneficiary, a
//! description). They arrive on `listen`'s event stream, or are fetched by `transactions`,
//! `approve` and `decline`.
//!
//! What you see is what you sign: a transaction is shown only when the server's signature over
//! its values verifies against the server key pinned at enrol, and the answer is the account's
//! signature over those same values and the verdict. A transaction whose values do not verify
//! (changed after the server made it) is refused: never shown as genuine, never signed, left to
//! expire (which the web site reads as declined).

use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use latchkey_core::crypto::qr::app_message;
use latchkey_core::crypto::transaction::{hides_text, TransactionValues};
use latchkey_wire::TransactionPush;
use serde_json::{json, Value};

use crate::client::Client;
use crate::commands::unix_now;
use crate::keystore::{Account, KeyStore};
use crate::listen::{Decision, Person};
use crate::output::{note, Output};

/// The values as signed.
fn values(t: &TransactionPush) -> TransactionValues<'_> {
    TransactionValues {
        server_id: &t.serverid,
        tid: &t.tid,
        account_id: t.accountid,
        amount: &t.amount,
        beneficiary: &t.beneficiary,
        description: &t.description,
        created: t.created,
        expires: t.expires,
    }
}

/// Why a transaction cannot be trusted, if it cannot.
pub fn distrust(account: &Account, t: &TransactionPush) -> Option<String> {
    if t.serverid != account.serverid || t.accountid != account.accountid {
        return Some(format!(
            "it names account {} on {}, not this account",
            t.accountid,
            shown(&t.serverid)
        ));
    }
    let key = match account.pinned_key() {
        Ok(key) => key,
        Err(e) => return Some(format!("{e:#}")),
    };
    if !values(t).verify_server(&key, &t.signature) {
        return Some(
            "its values do not carry the server's signature: they were changed after the server made it"
                .into(),
        );
    }
    None
}

/// A value the web site chose, as shown: without anything that could hide text
/// ([`hides_text`]: terminal escapes, direction overrides, invisible characters). The server
/// refuses such values; this holds even against a server that did not.
fn shown(text: &str) -> String {
    text.chars().filter(|c| !hides_text(*c)).collect()
}

/// The transaction as the person reads it. Each line of the description is marked, so no
/// description can pass for the amount or the beneficiary; those two are repeated in the
/// question ([`question`]).
pub fn describe(account: &Account, t: &TransactionPush) -> String {
    let userid = account
        .userid
        .as_deref()
        .map(|u| format!(" ({})", shown(u)))
        .unwrap_or_default();
    let description: Vec<String> = t
        .description
        .lines()
        .map(|line| format!("\n    | {}", shown(line)))
        .collect();
    format!(
        "Transaction {} for account {}{userid} on {}, expires in {} s:\n  amount: {}\n  beneficiary: {}\n  description:{}",
        shown(&t.tid),
        account.accountid,
        shown(&account.serverid),
        (t.expires - unix_now()).max(0),
        shown(&t.amount),
        shown(&t.beneficiary),
        description.concat(),
    )
}

/// The question asked, naming what is approved.
pub fn question(t: &TransactionPush) -> String {
    format!("Approve {} to {}?", shown(&t.amount), shown(&t.beneficiary))
}

/// The JSON line that reports a transaction (before its outcome is added).
fn report(t: &TransactionPush) -> Value {
    json!({
        "tid": t.tid,
        "serverid": t.serverid,
        "accountid": t.accountid,
        "amount": t.amount,
        "beneficiary": t.beneficiary,
        "description": t.description,
        "expires": t.expires,
    })
}

/// Signs the verdict over the values and sends it; answers whether it is now approved.
async fn send(
    account: &Account,
    client: &Client,
    t: &TransactionPush,
    approve: bool,
) -> Result<bool> {
    let signature = account.sign(&values(t).answer_message(approve))?;
    let answered = client
        .answer_transaction(
            &t.tid,
            &account.serverid,
            account.accountid,
            approve,
            &signature,
        )
        .await?;
    Ok(answered.approved)
}

/// Handles one transaction that came on `listen`'s stream: refuses it when untrusted, else
/// shows it, gets the decision, answers and reports.
pub async fn handle(
    account: &Account,
    client: &Client,
    t: &TransactionPush,
    decision: Decision,
    person: &mut Person,
    out: Output,
) {
    let mut line = report(t);
    let what = format!("transaction {}", shown(&t.tid));
    if let Some(why) = distrust(account, t) {
        note(&format!("refusing {what}: {why}"));
        line["refused"] = json!(why);
        out.emit(&line, || format!("{what}: refused ({why})"));
        return;
    }
    note(&describe(account, t));
    let approve = match decision {
        Decision::ApproveAll => true,
        Decision::DenyAll => false,
        Decision::Ask => person.approves(&question(t), t.expires).await,
    };
    line["approved"] = json!(approve);
    match send(account, client, t, approve).await {
        Ok(_) => out.emit(&line, || {
            format!("{what}: {}", if approve { "approved" } else { "declined" })
        }),
        Err(e) => {
            let message = format!("{e:#}");
            note(&format!("{what} could not be answered: {message}"));
            line["error"] = json!(message);
            out.emit(&line, || format!("{what}: not answered ({message})"));
        }
    }
}

/// The pending transactions of one account, fetched with a signed request.
async fn pending(account: &Account, client: &Client) -> Result<Vec<TransactionPush>> {
    let challenge = client
        .challenge(&account.serverid, account.accountid)
        .await?;
    let message = app_message(
        "transactions",
        &account.serverid,
        &challenge.challenge,
        &account.accountid.to_string(),
        None,
    );
    let signature = account.sign(&message)?;
    Ok(client
        .transactions(
            &account.serverid,
            account.accountid,
            &challenge.challenge,
            &signature,
        )
        .await?
        .transactions)
}

/// The store's accounts (or the one asked for), each with a client.
fn accounts(store_path: &Path, accountid: Option<i64>) -> Result<Vec<(Account, Client)>> {
    let store = KeyStore::load(store_path)?;
    let chosen: Vec<(Account, Client)> = store
        .accounts
        .into_iter()
        .filter(|a| accountid.is_none_or(|id| id == a.accountid))
        .map(|a| {
            let client =
                Client::new(&a.baseurl).with_context(|| format!("account {}", a.accountid))?;
            Ok((a, client))
        })
        .collect::<Result<_>>()?;
    if chosen.is_empty() {
        match accountid {
            Some(id) => bail!("the key store has no account {id}"),
            None => bail!("the key store has no accounts: enrol one first"),
        }
    }
    Ok(chosen)
}

/// `transactions`: lists what waits for an answer, each marked trusted or refused.
pub async fn list(store_path: &Path, accountid: Option<i64>, out: Output) -> Result<()> {
    let mut listed = Vec::new();
    let mut text = Vec::new();
    for (account, client) in accounts(store_path, accountid)? {
        let waiting = pending(&account, &client)
            .await
            .with_context(|| format!("account {} on {}", account.accountid, account.serverid))?;
        for t in waiting {
            let mut line = report(&t);
            match distrust(&account, &t) {
                None => {
                    line["verified"] = json!(true);
                    text.push(describe(&account, &t));
                }
                Some(why) => {
                    line["verified"] = json!(false);
                    text.push(format!("Transaction {} refused: {why}", shown(&t.tid)));
                    line["refused"] = json!(why);
                }
            }
            listed.push(line);
        }
    }
    out.emit(&json!({ "transactions": listed }), || {
        if text.is_empty() {
            "no transactions waiting".into()
        } else {
            text.join("\n")
        }
    });
    Ok(())
}

/// `approve TID` / `decline TID`: answers one pending transaction, after checking it.
pub async fn answer(
    store_path: &Path,
    tid: &str,
    approve: bool,
    accountid: Option<i64>,
    out: Output,
) -> Result<()> {
    for (account, client) in accounts(store_path, accountid)? {
        let waiting = pending(&account, &client)
            .await
            .with_context(|| format!("account {} on {}", account.accountid, account.serverid))?;
        let Some(t) = waiting.into_iter().find(|t| t.tid == tid) else {
            continue;
        };
        if let Some(why) = distrust(&account, &t) {
            bail!("refusing transaction {}: {why}", shown(tid));
        }
        note(&describe(&account, &t));
        let approved = send(&account, &client, &t, approve).await?;
        let mut line = report(&t);
        line["approved"] = json!(approved);
        out.emit(&line, || {
            format!(
                "transaction {}: {}",
                shown(tid),
                if approved { "approved" } else { "declined" }
            )
        });
        return Ok(());
    }
    Err(anyhow!(
        "no pending transaction {} for the key store's accounts (answered, expired or unknown)",
        shown(tid)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keystore::SecretKey;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;
    use ed25519_dalek::SigningKey;

    fn account(server_secret: &[u8; 32]) -> Account {
        Account {
            accountid: 3,
            serverid: "srv".into(),
            baseurl: "http://127.0.0.1:1".into(),
            serverkey: URL_SAFE_NO_PAD.encode(
                SigningKey::from_bytes(server_secret)
                    .verifying_key()
                    .to_bytes(),
            ),
            name: "phone".into(),
            userid: Some("alice".into()),
            publickey: String::new(),
            secretkey: SecretKey::new(&SigningKey::from_bytes(&[1; 32])),
            enrolled: 0,
        }
    }

    fn signed(server_secret: &[u8; 32], amount: &str) -> TransactionPush {
        let mut t = TransactionPush {
            tid: "dGlk".into(),
            serverid: "srv".into(),
            accountid: 3,
            amount: amount.into(),
            beneficiary: "ACME".into(),
            description: "order 1\nsecond line \u{1b}[2J".into(),
            created: 1,
            expires: 301,
            signature: String::new(),
        };
        t.signature = values(&t).sign_as_server(server_secret);
        t
    }

    #[test]
    fn only_what_the_pinned_server_signed_is_trusted() {
        let secret = [5u8; 32];
        let account = account(&secret);
        assert_eq!(distrust(&account, &signed(&secret, "10 EUR")), None);
        let mut changed = signed(&secret, "10 EUR");
        changed.amount = "10000 EUR".into();
        assert!(distrust(&account, &changed).unwrap().contains("changed"));
        assert!(distrust(&account, &signed(&[6u8; 32], "10 EUR")).is_some());
        let mut elsewhere = signed(&secret, "10 EUR");
        elsewhere.accountid = 4;
        assert!(distrust(&account, &elsewhere).is_some());
    }

    #[test]
    fn the_description_keeps_its_lines_but_no_escapes() {
        let secret = [5u8; 32];
        let text = describe(&account(&secret), &signed(&secret, "10 EUR"));
        assert!(text.contains("amount: 10 EUR"), "{text}");
        assert!(
            text.contains("\n    | order 1\n    | second line"),
            "{text}"
        );
        assert!(!text.contains('\u{1b}'), "{text}");
        let mut t = signed(&secret, "10\u{202e}0 EUR");
        t.beneficiary = "AC\u{200b}ME".into();
        assert_eq!(question(&t), "Approve 100 EUR to ACME?");
    }
}
