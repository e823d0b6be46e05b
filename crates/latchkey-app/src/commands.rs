//! The one-shot commands: enrol, login, accounts.
//!
//! Trust is decided before anything is sent: an enrol payload must verify against the server key
//! it carries (and the person is shown that key's visual hash to compare with the server's), a
//! login payload against the key pinned at enrol for its server. Both are refused locally once
//! expired. Secrets are generated here and leave only as signatures; the key store file is the
//! only place the secret key is written.

use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ed25519_dalek::{Signer, SigningKey};
use latchkey_core::crypto::qr::{app_message, QrKind, QrPayload};
use serde_json::json;

use crate::client::Client;
use crate::keystore::{Account, KeyStore, SecretKey};
use crate::output::{note, Output};
use crate::scan::{scan, Source};

pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or_default()
}

/// Refuses a payload whose challenge has expired: the server would refuse it too.
fn check_fresh(payload: &QrPayload, now: i64) -> Result<()> {
    if payload.expires < now {
        bail!(
            "the QR code expired {} s ago: ask for a fresh one",
            now - payload.expires
        );
    }
    Ok(())
}

fn check_kind(payload: &QrPayload, kind: QrKind) -> Result<()> {
    if payload.kind != kind {
        let other = payload.kind.as_str();
        bail!(
            "this QR code is for {other}, not for {}: use `latchkey-app {other}`",
            kind.as_str()
        )
    }
    Ok(())
}

fn client_for(payload: &QrPayload) -> Result<Client> {
    let client = Client::new(&payload.base_url)?;
    if client.is_plain_remote() {
        note(&format!(
            "warning: {} is reached over plain http: others on the network can see this exchange",
            payload.base_url
        ));
    }
    Ok(client)
}

pub async fn enrol(store_path: &Path, source: &Source, out: Output) -> Result<()> {
    let payload = scan(source)?;
    check_kind(&payload, QrKind::Enrol)?;
    let server_key = payload.server_key_bytes().map_err(|e| anyhow!("{e}"))?;
    payload.verify(&server_key).map_err(|_| {
        anyhow!(
            "refusing the enrol QR code: its signature does not verify against the server key \
             it carries"
        )
    })?;
    check_fresh(&payload, unix_now())?;
    let serverkey = URL_SAFE_NO_PAD.encode(server_key);
    let name = payload.name.clone().unwrap_or_default();

    // Read the store before enrolling, so a broken store fails before the server has an account
    // this app could not keep.
    let store = KeyStore::load(store_path)?;
    let repinned = store.pinned_differently(&payload.server_id, &serverkey);
    if !repinned.is_empty() {
        note(&format!(
            "WARNING: server {} now shows another key than the one pinned by account(s) {:?}: \
             if you did not expect that, someone may be impersonating it",
            payload.server_id, repinned
        ));
    }
    note(&format!(
        "Server {} ({}) identifies itself with this visual hash:\n\n{}\n\n\
         Compare it with the server's visual hash picture (GET /servers/{}/vash, shown by the \
         site that gave you this code): if they differ, this is not that server, do not use this \
         account.",
        payload.server_id,
        payload.base_url,
        latchkey_core::crypto::vash::text_art(&server_key),
        payload.server_id
    ));

    let client = client_for(&payload)?;
    let key = SigningKey::generate(&mut rand::rngs::OsRng);
    let publickey = URL_SAFE_NO_PAD.encode(key.verifying_key().to_bytes());
    let message = app_message(
        "enrol",
        &payload.server_id,
        &payload.challenge,
        &publickey,
        None,
    );
    let signature = URL_SAFE_NO_PAD.encode(key.sign(message.as_bytes()).to_bytes());
    let answer = client
        .enrol(&payload.to_uri(), &publickey, &signature)
        .await?;
    if answer.serverid != payload.server_id {
        bail!(
            "the server answered for server {} instead of {}",
            answer.serverid,
            payload.server_id
        );
    }

    let account = Account {
        accountid: answer.accountid,
        serverid: payload.server_id.clone(),
        baseurl: payload.base_url.clone(),
        serverkey,
        name,
        userid: answer.userid,
        publickey,
        secretkey: SecretKey::new(&key),
        enrolled: unix_now(),
    };
    KeyStore::update(store_path, |store| {
        store.add(account.clone());
        Ok(())
    })
    .with_context(|| {
        format!(
            "the server enrolled account {}, but the key store could not keep it",
            account.accountid
        )
    })?;

    out.emit(
        &json!({
            "accountid": account.accountid,
            "serverid": account.serverid,
            "userid": account.userid,
            "baseurl": account.baseurl,
            "name": account.name,
        }),
        || {
            format!(
                "Enrolled account {} on server {} ({}){}",
                account.accountid,
                account.serverid,
                account.baseurl,
                user_suffix(&account.userid)
            )
        },
    );
    Ok(())
}

pub async fn login(
    store_path: &Path,
    source: &Source,
    accountid: Option<i64>,
    out: Output,
) -> Result<()> {
    let payload = scan(source)?;
    check_kind(&payload, QrKind::Login)?;
    let store = KeyStore::load(store_path)?;
    let found = store.for_login(&payload, accountid)?;
    check_fresh(&payload, unix_now())?;
    let account = found.account;
    if !found.others.is_empty() {
        note(&format!(
            "accounts {:?} could also answer; using account {} (enrolled last): choose with \
             --account",
            found.others, account.accountid
        ));
    }

    let client = client_for(&payload)?;
    let message = app_message(
        "login",
        &payload.server_id,
        &payload.challenge,
        &account.accountid.to_string(),
        None,
    );
    let answer = client
        .login(
            &payload.to_uri(),
            account.accountid,
            &account.sign(&message)?,
        )
        .await?;

    // The user may have been bound after enrol (registeruser): keep the store current.
    if answer.userid.is_some() && answer.userid != account.userid {
        let (serverid, id, userid) = (
            account.serverid.clone(),
            account.accountid,
            answer.userid.clone(),
        );
        let kept = KeyStore::update(store_path, |store| {
            for a in &mut store.accounts {
                if a.serverid == serverid && a.accountid == id {
                    a.userid = userid.clone();
                }
            }
            Ok(())
        });
        if let Err(e) = kept {
            note(&format!(
                "warning: could not record the account's user: {e:#}"
            ));
        }
    }

    out.emit(
        &json!({
            "serverid": answer.serverid,
            "accountid": answer.accountid,
            "userid": answer.userid,
        }),
        || {
            format!(
                "Logged in with account {} on server {}{}",
                answer.accountid,
                answer.serverid,
                user_suffix(&answer.userid)
            )
        },
    );
    Ok(())
}

pub fn accounts(store_path: &Path, out: Output) -> Result<()> {
    let store = KeyStore::load(store_path)?;
    let list: Vec<_> = store
        .accounts
        .iter()
        .map(|a| {
            json!({
                "accountid": a.accountid,
                "serverid": a.serverid,
                "baseurl": a.baseurl,
                "name": a.name,
                "userid": a.userid,
            })
        })
        .collect();
    out.emit(&json!({ "accounts": list }), || {
        if store.accounts.is_empty() {
            return "No accounts: enrol one with `latchkey-app enrol`.".into();
        }
        store
            .accounts
            .iter()
            .map(|a| {
                format!(
                    "account {} on server {} ({}): {:?}{}",
                    a.accountid,
                    a.serverid,
                    a.baseurl,
                    a.name,
                    user_suffix(&a.userid)
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    });
    Ok(())
}

fn user_suffix(userid: &Option<String>) -> String {
    match userid {
        Some(u) => format!(", user {u}"),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payload(kind: QrKind, expires: i64) -> QrPayload {
        QrPayload {
            kind,
            server_id: "srv".into(),
            base_url: "http://127.0.0.1:1".into(),
            challenge: "Y2hhbGxlbmdl".into(),
            expires,
            server_key: None,
            name: None,
            userid: None,
            signature: String::new(),
        }
    }

    #[test]
    fn expired_payloads_are_refused_before_anything_is_sent() {
        assert!(check_fresh(&payload(QrKind::Login, 100), 100).is_ok());
        let err = check_fresh(&payload(QrKind::Login, 99), 100)
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("expired"), "{err}");
    }

    #[test]
    fn a_payload_of_the_other_kind_names_the_right_command() {
        let err = check_kind(&payload(QrKind::Enrol, 0), QrKind::Login)
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("latchkey-app enrol"), "{err}");
    }
}
