//! Passkeys (WebAuthn, through webauthn-rs): registered from the account page, then used as
//! the first factor (a discoverable credential: no user name typed; `amr` `hwk`) or as the
//! second after a password (in place of the TOTP code or PIN).
//!
//! The relying party is `public_url`: its host is the RP id, its origin the expected origin.
//! Without a `public_url` whose host is a domain name (browsers refuse IP addresses as RP ids)
//! passkeys are not offered.
//!
//! A ceremony's state does not wait in the store (a flood of sign-in pages would otherwise be
//! a flood of rows): it travels with the page as a *ticket*, webauthn-rs's state serialised
//! with its purpose, what it is bound to (the browser session) and its expiry, authenticated by
//! an HMAC under a key derived from the default server's secret key. Finishing a ceremony
//! records the ticket as used (the SCRAM handshakes' table: one INSERT, single use across
//! processes) before the browser's answer is judged, so a ticket and its challenge serve once.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::{Deserialize, Serialize};
use uuid::Uuid;
use webauthn_rs::prelude::{
    CreationChallengeResponse, DiscoverableAuthentication, DiscoverableKey, Passkey,
    PasskeyAuthentication, PasskeyRegistration, PublicKeyCredential, RegisterPublicKeyCredential,
    Url,
};
use webauthn_rs::{Webauthn, WebauthnBuilder};

use crate::cache::sessions::{ActiveSession, NewSession};
use crate::crypto::credentials::hmac_sha256;
use crate::crypto::secret::{ct_eq, SecretHash};
use crate::error::{Error, Result};
use crate::model::{AuthMethod, ClientInfo, PasskeyCredential, SessionState};
use crate::services::audit::{AuditEvent, Via};
use crate::services::quatrix::LoginStarted;
use crate::services::Latchkey;
use crate::store::PasskeyRemoval;

/// Seconds a ceremony (a page offering a passkey) stays usable.
const TICKET_TTL: i64 = 600;
const TICKET_KEY_LABEL: &[u8] = b"latchkey webauthn ceremony ticket v1";
/// Longest ticket or browser answer read (a second factor's ticket carries every passkey of
/// the user: 20 RSA keys come to about 30 KiB).
const MAX_TICKET_BYTES: usize = 48 * 1024;
const MAX_CREDENTIAL_BYTES: usize = 16 * 1024;
/// Characters of a passkey's name.
const MAX_NAME_CHARS: usize = 64;
/// Passkeys one user may hold.
pub const MAX_PASSKEYS: usize = 20;

/// The relying party passkeys are made for and checked against.
pub struct RelyingParty(Webauthn);

impl RelyingParty {
    /// The relying party of `public_url`; `None` (with the reason) when it cannot be one.
    pub fn of_public_url(public_url: &str) -> std::result::Result<RelyingParty, String> {
        let url = Url::parse(public_url).map_err(|e| format!("public_url: {e}"))?;
        let host = url
            .domain()
            .ok_or("public_url's host is not a domain name (browsers refuse IP addresses)")?
            .to_owned();
        let webauthn = WebauthnBuilder::new(&host, &url)
            .and_then(|b| b.rp_name("latchkey").build())
            .map_err(|e| format!("public_url cannot be a WebAuthn relying party: {e}"))?;
        Ok(RelyingParty(webauthn))
    }
}

/// What a page needs to run a ceremony in the browser: the options for
/// `navigator.credentials.create/get` (JSON, binary fields base64url) and the ticket to post
/// back with the browser's answer.
#[derive(Debug)]
pub struct PasskeyChallenge {
    pub options: String,
    pub ticket: String,
}

#[derive(Serialize, Deserialize)]
enum Ceremony {
    /// Adding a passkey to the user of browser session `session`.
    Register {
        session: Uuid,
        name: String,
        state: PasskeyRegistration,
    },
    /// Signing in with any discoverable passkey.
    SignIn { state: DiscoverableAuthentication },
    /// The second factor of the pending sign-in `session`.
    SecondFactor {
        session: Uuid,
        state: PasskeyAuthentication,
    },
}

#[derive(Serialize, Deserialize)]
struct Ticket {
    expires_at: i64,
    ceremony: Ceremony,
}

/// A passkey as the account page lists it.
#[derive(Debug, Clone)]
pub struct PasskeySummary {
    /// The credential id, base64url: how forms name it.
    pub id: String,
    pub name: String,
    pub created_at: i64,
    pub last_used_at: Option<i64>,
    /// Synced to other devices by its provider (the authenticator's backup-state flag).
    pub backed_up: bool,
}

fn bad_answer(e: impl std::fmt::Display) -> Error {
    tracing::debug!(error = %e, "passkey answer refused");
    Error::BadCredentials
}

fn parse_credential<T: serde::de::DeserializeOwned>(json: &str) -> Result<T> {
    if json.len() > MAX_CREDENTIAL_BYTES {
        return Err(Error::Invalid("the passkey answer is too long".into()));
    }
    serde_json::from_str(json)
        .map_err(|_| Error::Invalid("the browser's passkey answer could not be read".into()))
}

/// The signature counter a stored passkey last saw.
fn stored_counter(stored: &PasskeyCredential) -> u32 {
    serde_json::from_str::<serde_json::Value>(&stored.passkey)
        .ok()
        .and_then(|v| v.pointer("/cred/counter").and_then(|c| c.as_u64()))
        .and_then(|c| u32::try_from(c).ok())
        .unwrap_or(0)
}

fn stored_passkey(stored: &PasskeyCredential) -> Result<Passkey> {
    serde_json::from_str(&stored.passkey)
        .map_err(|e| Error::Internal(format!("stored passkey is malformed: {e}")))
}

fn options_json(options: &impl Serialize) -> Result<String> {
    serde_json::to_string(options).map_err(|e| Error::Internal(format!("passkey options: {e}")))
}

/// A passkey's name: trimmed, 1 to 64 characters, no control characters.
fn passkey_name(name: &str) -> Result<String> {
    let name = name.trim();
    if name.is_empty()
        || name.chars().count() > MAX_NAME_CHARS
        || name.chars().any(char::is_control)
    {
        return Err(Error::Invalid(format!(
            "a passkey's name is 1 to {MAX_NAME_CHARS} characters"
        )));
    }
    Ok(name.to_owned())
}

/// A passkey id as forms carry it (base64url of the credential id).
fn credential_id(text: &str) -> Result<Vec<u8>> {
    URL_SAFE_NO_PAD
        .decode(text.trim())
        .ok()
        .filter(|id| !id.is_empty() && id.len() <= 1023)
        .ok_or_else(|| Error::Invalid("not a passkey id".into()))
}

impl Latchkey {
    /// Are passkeys offered (a `public_url` that can be a relying party)?
    pub fn passkeys_enabled(&self) -> bool {
        self.relying_party.is_some()
    }

    fn relying_party(&self) -> Result<&Webauthn> {
        self.relying_party
            .as_ref()
            .map(|rp| &rp.0)
            .ok_or_else(|| Error::Invalid("passkeys need public_url set to a domain name".into()))
    }

    /// Derived once per process: the default server's identity key never changes, and every
    /// sign-in page issues a ticket.
    async fn ticket_key(&self) -> Result<[u8; 32]> {
        self.passkey_ticket_key
            .get_or_try_init(|| async {
                let server = self.server(&self.default_server().await?).await?;
                Ok(hmac_sha256(&server.secret_key, TICKET_KEY_LABEL))
            })
            .await
            .copied()
    }

    async fn issue_ticket(&self, ceremony: Ceremony, options: String) -> Result<PasskeyChallenge> {
        let ticket = Ticket {
            expires_at: self.now() + TICKET_TTL,
            ceremony,
        };
        let payload = serde_json::to_vec(&ticket)
            .map_err(|e| Error::Internal(format!("passkey ticket: {e}")))?;
        let mac = hmac_sha256(&self.ticket_key().await?, &payload);
        Ok(PasskeyChallenge {
            options,
            ticket: format!(
                "{}.{}",
                URL_SAFE_NO_PAD.encode(&payload),
                URL_SAFE_NO_PAD.encode(mac)
            ),
        })
    }

    /// The ceremony a ticket carries, when this server issued it, it has not expired and it
    /// was not used before; it is used from now on.
    async fn redeem_ticket(&self, ticket: &str) -> Result<Ceremony> {
        let refused =
            || Error::Invalid("this passkey request is unknown or was used: try again".into());
        if ticket.len() > MAX_TICKET_BYTES {
            return Err(refused());
        }
        let (payload, mac) = ticket.split_once('.').ok_or_else(refused)?;
        let payload = URL_SAFE_NO_PAD.decode(payload).map_err(|_| refused())?;
        let mac = URL_SAFE_NO_PAD.decode(mac).map_err(|_| refused())?;
        if !ct_eq(&hmac_sha256(&self.ticket_key().await?, &payload), &mac) {
            return Err(refused());
        }
        let ticket: Ticket = serde_json::from_slice(&payload).map_err(|_| refused())?;
        if ticket.expires_at <= self.now() {
            return Err(Error::Invalid(
                "this passkey request expired: try again".into(),
            ));
        }
        if !self
            .store
            .record_used_handshake(&SecretHash::of(&payload), ticket.expires_at)
            .await?
        {
            return Err(refused());
        }
        Ok(ticket.ceremony)
    }

    /// The caller's passkeys, oldest first.
    pub async fn own_passkeys(&self, caller: ActiveSession) -> Result<Vec<PasskeySummary>> {
        let stored = self.store.user_passkeys(caller.user_id).await?;
        Ok(stored
            .into_iter()
            .map(|p| {
                let backed_up = serde_json::from_str::<serde_json::Value>(&p.passkey)
                    .ok()
                    .and_then(|v| v.pointer("/cred/backup_state").and_then(|b| b.as_bool()))
                    .unwrap_or(false);
                PasskeySummary {
                    id: URL_SAFE_NO_PAD.encode(&p.credential_id),
                    name: p.name,
                    created_at: p.created_at,
                    last_used_at: p.last_used_at,
                    backed_up,
                }
            })
            .collect())
    }

    /// Starts adding a passkey named `name` to the caller, once their current password is
    /// checked. The authenticator is told which credentials the user has, so it makes no
    /// second passkey for the same user.
    pub async fn start_passkey_registration(
        &self,
        caller: ActiveSession,
        current: &str,
        name: &str,
    ) -> Result<PasskeyChallenge> {
        let rp = self.relying_party()?;
        let name = passkey_name(name)?;
        let user = self.recheck_password(caller, current).await?;
        let existing = self.store.user_passkeys(user.id).await?;
        if existing.len() >= MAX_PASSKEYS {
            return Err(Error::Invalid(format!(
                "an account holds at most {MAX_PASSKEYS} passkeys: remove one first"
            )));
        }
        let exclude = existing
            .iter()
            .map(|p| stored_passkey(p).map(|k| k.cred_id().clone()))
            .collect::<Result<Vec<_>>>()?;
        let (mut options, state) = rp
            .start_passkey_registration(
                user.id,
                user.userid.as_str(),
                user.userid.as_str(),
                Some(exclude),
            )
            .map_err(|e| Error::Internal(format!("passkey registration: {e}")))?;
        require_discoverable(&mut options);
        self.issue_ticket(
            Ceremony::Register {
                session: caller.id,
                name,
                state,
            },
            options_json(&options.public_key)?,
        )
        .await
    }

    /// Stores the passkey the browser made for the ceremony `ticket` started.
    pub async fn finish_passkey_registration(
        &self,
        caller: ActiveSession,
        ticket: &str,
        credential: &str,
    ) -> Result<String> {
        let rp = self.relying_party()?;
        let answer: RegisterPublicKeyCredential = parse_credential(credential)?;
        let Ceremony::Register {
            session,
            name,
            state,
        } = self.redeem_ticket(ticket).await?
        else {
            return Err(Error::Invalid("not a passkey registration".into()));
        };
        if session != caller.id {
            return Err(Error::Invalid(
                "this passkey request belongs to another sign-in".into(),
            ));
        }
        let passkey = rp
            .finish_passkey_registration(&answer, &state)
            .map_err(bad_answer)?;
        let user = self
            .store
            .user_by_id(caller.user_id)
            .await?
            .ok_or(Error::SessionInvalid)?;
        if self.store.user_passkeys(user.id).await?.len() >= MAX_PASSKEYS {
            return Err(Error::Invalid(format!(
                "an account holds at most {MAX_PASSKEYS} passkeys: remove one first"
            )));
        }
        let stored = PasskeyCredential {
            credential_id: passkey.cred_id().to_vec(),
            user_id: user.id,
            name: name.clone(),
            passkey: serde_json::to_string(&passkey)
                .map_err(|e| Error::Internal(format!("passkey: {e}")))?,
            created_at: self.now(),
            last_used_at: None,
        };
        if !self.store.insert_passkey(&stored).await? {
            return Err(Error::Conflict(
                "this authenticator already holds a passkey for an account here".into(),
            ));
        }
        self.audit(
            &user.server_id,
            AuditEvent::PasskeyAdded {
                userid: user.userid.as_str(),
            },
        )
        .await?;
        Ok(name)
    }

    /// Renames one of the caller's passkeys.
    pub async fn rename_own_passkey(
        &self,
        caller: ActiveSession,
        id: &str,
        name: &str,
    ) -> Result<()> {
        let name = passkey_name(name)?;
        if self
            .store
            .rename_passkey(caller.user_id, &credential_id(id)?, &name)
            .await?
        {
            Ok(())
        } else {
            Err(Error::NotFound("no such passkey".into()))
        }
    }

    /// Removes one of the caller's passkeys, once their current password is checked; refused
    /// when it is the last way they have to sign in.
    pub async fn remove_own_passkey(
        &self,
        caller: ActiveSession,
        current: &str,
        id: &str,
    ) -> Result<()> {
        let id = credential_id(id)?;
        let user = self.recheck_password(caller, current).await?;
        match self.store.delete_passkey(user.id, &id).await? {
            PasskeyRemoval::Removed => {
                self.audit(
                    &user.server_id,
                    AuditEvent::PasskeyRemoved {
                        userid: user.userid.as_str(),
                    },
                )
                .await
            }
            PasskeyRemoval::NotFound => Err(Error::NotFound("no such passkey".into())),
            PasskeyRemoval::LastSignInMethod => Err(Error::Conflict(
                "this passkey is the last way to sign in to the account".into(),
            )),
        }
    }

    /// A sign-in with any passkey the browser can offer (also through autofill): no user name.
    pub async fn start_passkey_sign_in(&self) -> Result<PasskeyChallenge> {
        let (options, state) = self
            .relying_party()?
            .start_discoverable_authentication()
            .map_err(|e| Error::Internal(format!("passkey sign-in: {e}")))?;
        self.issue_ticket(
            Ceremony::SignIn { state },
            options_json(&options.public_key)?,
        )
        .await
    }

    /// Signs in the user whose passkey answered the ceremony `ticket` started: a new active
    /// session with `amr` `hwk`. `BadCredentials` for an answer that does not verify or names
    /// no stored passkey.
    pub async fn finish_passkey_sign_in(
        &self,
        ticket: &str,
        credential: &str,
        client: ClientInfo,
    ) -> Result<LoginStarted> {
        let rp = self.relying_party()?;
        let answer: PublicKeyCredential = parse_credential(credential)?;
        let Ceremony::SignIn { state } = self.redeem_ticket(ticket).await? else {
            return Err(Error::Invalid("not a passkey sign-in".into()));
        };
        let (user_handle, id) = rp
            .identify_discoverable_authentication(&answer)
            .map_err(bad_answer)?;
        let stored = self
            .store
            .passkey(id)
            .await?
            .filter(|p| p.user_id == user_handle)
            .ok_or(Error::BadCredentials)?;
        let user = self
            .store
            .user_by_id(stored.user_id)
            .await?
            .ok_or(Error::BadCredentials)?;
        let mut passkey = stored_passkey(&stored)?;
        let result = match rp.finish_discoverable_authentication(
            &answer,
            state,
            &[DiscoverableKey::from(&passkey)],
        ) {
            Ok(result) => result,
            Err(e) => {
                self.audit(
                    &user.server_id,
                    AuditEvent::LoginFailed {
                        userid: user.userid.as_str(),
                        ip: client.ip.as_deref(),
                        via: Via::Passkey,
                    },
                )
                .await?;
                return Err(bad_answer(e));
            }
        };
        passkey.update_credential(&result);
        self.record_passkey_use(&stored, &passkey).await?;
        let ip = client.ip.clone();
        let (session, token) = self
            .sessions
            .create(NewSession {
                idle_timeout: self.sessions.browser_idle_timeout(),
                server_id: user.server_id.clone(),
                user_id: Some(user.id),
                methods: vec![AuthMethod::Hwk],
                state: SessionState::Active,
                client,
                pending_mfa: None,
                password_ok: true,
            })
            .await?;
        self.audit(
            &user.server_id,
            AuditEvent::LoginSucceeded {
                userid: Some(user.userid.as_str()),
                session: session.id,
                ip: ip.as_deref(),
                via: Via::Passkey,
            },
        )
        .await?;
        Ok(LoginStarted {
            session_id: session.id,
            token: token.text,
            mfa: None,
        })
    }

    /// Stores a passkey's state after a use, over the state that use was judged against: of
    /// two uses at once one writes, so the stored counter never goes back.
    async fn record_passkey_use(
        &self,
        stored: &PasskeyCredential,
        passkey: &Passkey,
    ) -> Result<()> {
        let json =
            serde_json::to_string(passkey).map_err(|e| Error::Internal(format!("passkey: {e}")))?;
        self.store
            .record_passkey_use(&stored.credential_id, &stored.passkey, &json, self.now())
            .await?;
        Ok(())
    }

    /// A passkey ceremony for the sign-in pending its second factor that `token` names, when
    /// its user has passkeys (and passkeys are offered).
    pub async fn start_passkey_second_factor(
        &self,
        token: &str,
    ) -> Result<Option<PasskeyChallenge>> {
        let Some(rp) = self.relying_party.as_ref().map(|rp| &rp.0) else {
            return Ok(None);
        };
        let session = self.sessions.by_token(token).await?;
        let (SessionState::PendingMfa, Some(user_id)) = (session.state, session.user_id) else {
            return Err(Error::WrongState(
                "the session does not wait for a second factor",
            ));
        };
        // One unreadable stored passkey must not keep the person from the code field.
        let passkeys: Vec<Passkey> = self
            .store
            .user_passkeys(user_id)
            .await?
            .iter()
            .filter_map(|p| {
                stored_passkey(p)
                    .map_err(|e| tracing::warn!(error = %e, "passkey skipped"))
                    .ok()
            })
            .collect();
        if passkeys.is_empty() {
            return Ok(None);
        }
        let (options, state) = rp
            .start_passkey_authentication(&passkeys)
            .map_err(|e| Error::Internal(format!("passkey second factor: {e}")))?;
        let ceremony = Ceremony::SecondFactor {
            session: session.id,
            state,
        };
        Ok(Some(
            self.issue_ticket(ceremony, options_json(&options.public_key)?)
                .await?,
        ))
    }

    /// Completes the sign-in pending its second factor that `token` names with one of its
    /// user's passkeys (`amr` gains `hwk`).
    pub async fn finish_passkey_second_factor(
        &self,
        token: &str,
        ticket: &str,
        credential: &str,
    ) -> Result<Uuid> {
        let rp = self.relying_party()?;
        let answer: PublicKeyCredential = parse_credential(credential)?;
        let session = self.sessions.by_token(token).await?;
        if session.state != SessionState::PendingMfa {
            return Err(Error::WrongState(
                "the session is not waiting for a second factor",
            ));
        }
        let Ceremony::SecondFactor {
            session: bound,
            state,
        } = self.redeem_ticket(ticket).await?
        else {
            return Err(Error::Invalid("not a passkey second factor".into()));
        };
        if bound != session.id {
            return Err(Error::Invalid(
                "this passkey request belongs to another sign-in".into(),
            ));
        }
        let creds = self.session_credentials(&session).await?;
        let userid = creds.user.userid.as_str();
        let result = match rp.finish_passkey_authentication(&answer, &state) {
            Ok(result) => result,
            Err(e) => {
                self.audit(
                    &session.server_id,
                    AuditEvent::LoginFailed {
                        userid,
                        ip: session.client.ip.as_deref(),
                        via: Via::Passkey,
                    },
                )
                .await?;
                return Err(bad_answer(e));
            }
        };
        // The ticket holds the credentials as they were when the page was shown: the passkey
        // must still be the user's, and its counter must move on from the one stored now.
        let stored = self
            .store
            .passkey(result.cred_id().as_ref())
            .await?
            .filter(|p| p.user_id == creds.user.id)
            .ok_or(Error::BadCredentials)?;
        let last = stored_counter(&stored);
        if (result.counter() != 0 || last != 0) && result.counter() <= last {
            return Err(bad_answer(
                "the signature counter went back: a cloned authenticator?",
            ));
        }
        let mut passkey = stored_passkey(&stored)?;
        passkey.update_credential(&result);
        self.record_passkey_use(&stored, &passkey).await?;
        self.complete_second_factor(token, &session, AuthMethod::Hwk, userid, Via::Passkey)
            .await
    }
}

/// Passkeys are discoverable credentials with user verification: a sign-in needs no user name.
fn require_discoverable(options: &mut CreationChallengeResponse) {
    use webauthn_rs_proto::{ResidentKeyRequirement, UserVerificationPolicy};
    let selection = options
        .public_key
        .authenticator_selection
        .get_or_insert_with(Default::default);
    selection.resident_key = Some(ResidentKeyRequirement::Required);
    selection.require_resident_key = true;
    selection.user_verification = UserVerificationPolicy::Required;
}
