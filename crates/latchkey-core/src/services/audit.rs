//! The audit trail as typed events: each variant names what happened and carries its facts as
//! named fields, so a call site cannot swap a session id for an address or invent a kind.
//! [`AuditEvent::record`] flattens an event to the stored [`AuditRecord`] (kind, user name,
//! session, address, detail). No variant has a field that could hold a secret.

use uuid::Uuid;

use crate::error::Result;
use crate::model::ids::ServerId;
use crate::model::{AuditRecord, MfaKind};
use crate::services::Latchkey;

/// How a login step was made, as the audit detail names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Via {
    Password,
    Scram,
    Captcha,
    SecondFactor(MfaKind),
    App { account_id: i64 },
    Passkey,
}

impl Via {
    fn detail(self) -> String {
        match self {
            Via::Password => "password".into(),
            Via::Scram => "scram".into(),
            Via::Captcha => "captcha".into(),
            Via::SecondFactor(kind) => kind.as_str().into(),
            Via::App { account_id } => format!("app account {account_id}"),
            Via::Passkey => "passkey".into(),
        }
    }
}

/// What a logout ended: a session token (family D), an access JWT's session (family B) or a
/// family A browser session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogoutOf {
    SessionToken,
    AccessToken,
    Browser,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AuditEvent<'a> {
    UserCreated {
        userid: &'a str,
    },
    UserDeleted {
        userid: &'a str,
    },
    PasswordSet {
        userid: &'a str,
    },
    TotpEnabled {
        userid: &'a str,
    },
    PinSet {
        userid: &'a str,
    },
    TotpRemoved {
        userid: &'a str,
    },
    PinRemoved {
        userid: &'a str,
    },
    PasskeyAdded {
        userid: &'a str,
    },
    AccountDeleted {
        account_id: i64,
    },
    UserAccountsDeleted {
        userid: &'a str,
        count: u64,
    },
    PasskeyRemoved {
        userid: &'a str,
    },
    /// The operator revoked sessions (command line): one by id, or all of a user's.
    RevokedByOperator {
        userid: Option<&'a str>,
        session: Option<Uuid>,
        count: usize,
    },
    LoginFailed {
        userid: &'a str,
        ip: Option<&'a str>,
        via: Via,
    },
    CaptchaRequired {
        userid: &'a str,
        session: Uuid,
        ip: Option<&'a str>,
    },
    CaptchaFailed {
        session: Uuid,
        ip: Option<&'a str>,
    },
    LoginPendingMfa {
        userid: &'a str,
        session: Uuid,
        ip: Option<&'a str>,
        via: Via,
    },
    LoginSucceeded {
        userid: Option<&'a str>,
        session: Uuid,
        ip: Option<&'a str>,
        via: Via,
    },
    MfaFailed {
        userid: &'a str,
        session: Uuid,
        ip: Option<&'a str>,
        kind: MfaKind,
    },
    MfaLocked {
        userid: &'a str,
        session: Uuid,
        ip: Option<&'a str>,
        kind: MfaKind,
    },
    Logout {
        session: Uuid,
        ip: Option<&'a str>,
        of: LogoutOf,
    },
    SessionRevoked {
        session: Uuid,
        by_session: Uuid,
    },
    SessionsRevoked {
        userid: &'a str,
        by_session: Uuid,
        count: usize,
    },
    RefreshTokenReused {
        session: Uuid,
        revoked: bool,
    },
    AccountEnrolled {
        userid: Option<&'a str>,
        account_id: i64,
    },
    AccountUserSet {
        userid: &'a str,
        account_id: i64,
        session: Option<Uuid>,
    },
    AccountBlocked {
        account_id: i64,
        blocked: bool,
    },
    PushDenied {
        account_id: i64,
    },
    TransactionCreated {
        account_id: i64,
        tid: &'a str,
    },
    AccountUnbound {
        account_id: i64,
    },
    /// An API key with a role of its own, made by role `by`.
    ApiKeyCreated {
        role: &'a str,
        by: &'a str,
    },
    /// A role's permissions on the server were set (`acl` empty: taken away).
    PermissionsSet {
        role: &'a str,
        acl: String,
    },
    /// A user's role was given (or lost) the root role's powers.
    RootSet {
        userid: &'a str,
        root: bool,
    },
    TransactionAnswered {
        account_id: i64,
        tid: &'a str,
        approved: bool,
    },
}

impl AuditEvent<'_> {
    /// The stored form: a snake_case kind, the user name, session, address and detail.
    pub fn record(&self, server_id: &ServerId, at: i64) -> AuditRecord {
        use AuditEvent::*;
        let (kind, userid, session, ip, detail): (&str, Option<&str>, _, _, Option<String>) =
            match *self {
                UserCreated { userid } => ("user_created", Some(userid), None, None, None),
                UserDeleted { userid } => ("user_deleted", Some(userid), None, None, None),
                PasswordSet { userid } => ("password_set", Some(userid), None, None, None),
                TotpEnabled { userid } => ("totp_enabled", Some(userid), None, None, None),
                PinSet { userid } => ("pin_set", Some(userid), None, None, None),
                TotpRemoved { userid } => ("totp_removed", Some(userid), None, None, None),
                PinRemoved { userid } => ("pin_removed", Some(userid), None, None, None),
                PasskeyAdded { userid } => ("passkey_added", Some(userid), None, None, None),
                AccountDeleted { account_id } => (
                    "account_deleted",
                    None,
                    None,
                    None,
                    Some(format!("account {account_id}")),
                ),
                UserAccountsDeleted { userid, count } => (
                    "user_accounts_deleted",
                    Some(userid),
                    None,
                    None,
                    Some(format!("{count} accounts")),
                ),
                PasskeyRemoved { userid } => ("passkey_removed", Some(userid), None, None, None),
                RevokedByOperator {
                    userid,
                    session,
                    count,
                } => (
                    "revoked_by_operator",
                    userid,
                    session,
                    None,
                    Some(format!("{count} sessions")),
                ),
                LoginFailed { userid, ip, via } => {
                    ("login_failed", Some(userid), None, ip, Some(via.detail()))
                }
                CaptchaRequired {
                    userid,
                    session,
                    ip,
                } => ("captcha_required", Some(userid), Some(session), ip, None),
                CaptchaFailed { session, ip } => ("captcha_failed", None, Some(session), ip, None),
                LoginPendingMfa {
                    userid,
                    session,
                    ip,
                    via,
                } => (
                    "login_pending_mfa",
                    Some(userid),
                    Some(session),
                    ip,
                    Some(via.detail()),
                ),
                LoginSucceeded {
                    userid,
                    session,
                    ip,
                    via,
                } => (
                    "login_succeeded",
                    userid,
                    Some(session),
                    ip,
                    Some(via.detail()),
                ),
                MfaFailed {
                    userid,
                    session,
                    ip,
                    kind,
                } => (
                    "mfa_failed",
                    Some(userid),
                    Some(session),
                    ip,
                    Some(kind.as_str().into()),
                ),
                MfaLocked {
                    userid,
                    session,
                    ip,
                    kind,
                } => (
                    "mfa_locked",
                    Some(userid),
                    Some(session),
                    ip,
                    Some(kind.as_str().into()),
                ),
                Logout { session, ip, of } => (
                    "logout",
                    None,
                    Some(session),
                    ip,
                    match of {
                        LogoutOf::SessionToken => None,
                        LogoutOf::AccessToken => Some("token".into()),
                        LogoutOf::Browser => Some("browser".into()),
                    },
                ),
                SessionRevoked {
                    session,
                    by_session,
                } => (
                    "session_revoked",
                    None,
                    Some(session),
                    None,
                    Some(format!("by session {by_session}")),
                ),
                SessionsRevoked {
                    userid,
                    by_session,
                    count,
                } => (
                    "sessions_revoked",
                    Some(userid),
                    Some(by_session),
                    None,
                    Some(format!("{count} sessions")),
                ),
                RefreshTokenReused { session, revoked } => (
                    "refresh_token_reused",
                    None,
                    Some(session),
                    None,
                    Some(format!("session revoked: {revoked}")),
                ),
                AccountEnrolled { userid, account_id } => (
                    "account_enrolled",
                    userid,
                    None,
                    None,
                    Some(format!("account {account_id}")),
                ),
                AccountUserSet {
                    userid,
                    account_id,
                    session,
                } => (
                    "account_user_set",
                    Some(userid),
                    session,
                    None,
                    Some(format!("account {account_id}")),
                ),
                AccountBlocked {
                    account_id,
                    blocked,
                } => (
                    if blocked {
                        "account_blocked"
                    } else {
                        "account_unblocked"
                    },
                    None,
                    None,
                    None,
                    Some(format!("account {account_id}")),
                ),
                PushDenied { account_id } => (
                    "push_denied",
                    None,
                    None,
                    None,
                    Some(format!("account {account_id}")),
                ),
                ApiKeyCreated { role, by } => (
                    "api_key_created",
                    None,
                    None,
                    None,
                    Some(format!("role {role}, made by role {by}")),
                ),
                PermissionsSet { role, ref acl } => (
                    "permissions_set",
                    None,
                    None,
                    None,
                    Some(format!("role {role}: {acl}")),
                ),
                AccountUnbound { account_id } => (
                    "account_unbound",
                    None,
                    None,
                    None,
                    Some(format!("account {account_id}")),
                ),
                RootSet { userid, root } => (
                    if root { "root_granted" } else { "root_revoked" },
                    Some(userid),
                    None,
                    None,
                    None,
                ),
                TransactionCreated { account_id, tid } => (
                    "transaction_created",
                    None,
                    None,
                    None,
                    Some(format!("account {account_id}, transaction {tid}")),
                ),
                TransactionAnswered {
                    account_id,
                    tid,
                    approved,
                } => (
                    if approved {
                        "transaction_approved"
                    } else {
                        "transaction_declined"
                    },
                    None,
                    None,
                    None,
                    Some(format!("account {account_id}, transaction {tid}")),
                ),
            };
        AuditRecord {
            at,
            server_id: server_id.clone(),
            kind: kind.to_owned(),
            userid: userid.map(str::to_owned),
            session_id: session,
            ip: ip.map(str::to_owned),
            detail,
        }
    }
}

impl Latchkey {
    /// Records an audit event (and logs it under target `latchkey::audit`).
    pub async fn audit(&self, server: &ServerId, event: AuditEvent<'_>) -> Result<()> {
        let record = self.audit_record(server, event);
        self.store.insert_audit(&record).await?;
        Ok(())
    }

    /// The record of `event`, logged (target `latchkey::audit`) but not yet stored: for a
    /// write that stores it with what it records.
    pub(crate) fn audit_record(&self, server: &ServerId, event: AuditEvent<'_>) -> AuditRecord {
        let record = event.record(server, self.now());
        tracing::info!(
            target: "latchkey::audit",
            server = %server,
            kind = record.kind,
            userid = record.userid.as_deref(),
            session = record.session_id.map(tracing::field::display),
            ip = record.ip.as_deref(),
            detail = record.detail.as_deref(),
            "audit"
        );
        record
    }

    /// A server's audit records that match `query`, newest first.
    pub async fn audit_events(
        &self,
        server: &ServerId,
        query: &crate::store::AuditQuery,
    ) -> Result<Vec<AuditRecord>> {
        Ok(self.store.audit_events(server, query).await?)
    }
}
