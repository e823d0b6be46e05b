//! Who may use the admin console, and what it may do (docs/admin-console.md). A person signed
//! in with a cookie session is admitted when their user's role (the vendor's user role,
//! getOrCreateUserRole) is the root role or holds permissions on a server, and when the
//! session was signed in with the password (app and passkey sign-ins are not enough: an app
//! account can be bound to a user name by an integration's API key). Each action then needs
//! the permission the vendor's API asks for the same operation, on that server; only the root
//! role acts on another administrator. The actions themselves are the core operations the APIs
//! use; this module only decides access and adds the few operations the console needs beyond
//! them.

use uuid::Uuid;

use super::access::Permission;
use super::audit::AuditEvent;
use super::Latchkey;
use crate::error::{Error, Result};
use crate::model::ids::{ServerId, UserId};
use crate::model::{AuthMethod, Permissions, Server};
use crate::store::AuditQuery;

/// Logins counted at most for the console's "logins in the last minute".
const MAX_COUNTED_LOGINS: u64 = 10_000;

/// What the signed-in person may do in the console.
#[derive(Clone, Debug)]
pub struct ConsoleAccess {
    pub userid: UserId,
    pub role_id: String,
    pub root: bool,
    /// The servers the person manages, with their permissions there (all of them for root).
    pub servers: Vec<(Server, Permissions)>,
}

impl ConsoleAccess {
    /// The person's permissions on `server`; `Forbidden` unless `needed` is among them.
    pub fn require(&self, server: &ServerId, needed: Permission) -> Result<()> {
        let held = self
            .servers
            .iter()
            .find(|(s, _)| &s.id == server)
            .map(|(_, p)| *p)
            .unwrap_or_default();
        let ok = match needed {
            Permission::Sessions => held.sessions,
            Permission::Accounts => held.accounts,
            Permission::Users => held.users,
            Permission::Servers => held.servers,
        };
        if ok {
            Ok(())
        } else {
            Err(Error::Forbidden(format!(
                "you need the {} permission on that server",
                needed.as_str()
            )))
        }
    }

    /// `Forbidden` unless the person holds the root role (the spec's global permissions).
    pub fn require_root(&self) -> Result<()> {
        if self.root {
            Ok(())
        } else {
            Err(Error::Forbidden("only the root role may do this".into()))
        }
    }
}

impl Latchkey {
    /// The console access of the person a browser session token names. `SessionInvalid` when
    /// the session is not live; `Forbidden` when the person manages nothing.
    pub async fn console_access(&self, token: &str) -> Result<ConsoleAccess> {
        let identity = self.identity_of(token).await?;
        let refused = || Error::Forbidden("your account does not manage any server".into());
        if !identity.methods.contains(AuthMethod::Pwd) {
            return Err(Error::Forbidden(
                "the console needs a sign-in with your password (and second factor): sign out \
                 and sign in with them"
                    .into(),
            ));
        }
        let role_id = self
            .store
            .user_role(identity.user_id)
            .await?
            .ok_or_else(refused)?;
        let role = self.store.role(&role_id).await?.ok_or_else(refused)?;
        let mut servers = Vec::new();
        for server in self.store.servers().await? {
            let held = self.permissions(&role, &server.id).await?;
            if held != Permissions::default() {
                servers.push((server, held));
            }
        }
        if !role.root && servers.is_empty() {
            return Err(refused());
        }
        Ok(ConsoleAccess {
            userid: identity.userid.clone(),
            role_id,
            root: role.root,
            servers,
        })
    }

    /// Gives a user's role the root role's powers, or takes them away together with every
    /// permission the role holds on any server: the operator's way to make (or unmake) a
    /// console administrator. Answers the role id.
    pub async fn set_user_root(
        &self,
        server: &ServerId,
        userid: &UserId,
        root: bool,
    ) -> Result<String> {
        let role_id = self.user_role_made(server, userid.as_str()).await?;
        self.store.set_role_root(&role_id, root).await?;
        if !root {
            for s in self.store.servers().await? {
                self.store.revoke_permissions(&role_id, &s.id).await?;
            }
        }
        self.audit(
            server,
            AuditEvent::RootSet {
                userid: userid.as_str(),
                root,
            },
        )
        .await?;
        Ok(role_id)
    }

    /// Unbinds an app account from its user (the account stays, bound to nobody).
    pub async fn unbind_account(&self, server: &ServerId, account_id: i64) -> Result<()> {
        self.account(server, account_id).await?;
        self.store.set_account_user(account_id, None).await?;
        self.audit(server, AuditEvent::AccountUnbound { account_id })
            .await
    }

    /// `Forbidden` when `userid` is an administrator (their role is root) and the person acting
    /// is not root: a server's administrator cannot end the sessions or reset the second
    /// factors of the one who made them.
    pub async fn console_may_act_on(
        &self,
        access: &ConsoleAccess,
        server: &ServerId,
        userid: &UserId,
    ) -> Result<()> {
        if access.root {
            return Ok(());
        }
        let user = self.user(server, userid).await?;
        let root = match self.store.user_role(user.id).await? {
            Some(role) => self.store.role(&role).await?.is_some_and(|r| r.root),
            None => false,
        };
        if root {
            return Err(Error::Forbidden(
                "only the root role acts on an administrator".into(),
            ));
        }
        Ok(())
    }

    /// Revokes one session of a user (`NotFound` when the session is not that user's).
    pub async fn revoke_session_of(
        &self,
        server: &ServerId,
        userid: &UserId,
        id: Uuid,
    ) -> Result<bool> {
        let user = self.user(server, userid).await?;
        match self.store.session(id).await? {
            Some(session) if session.user_id == Some(user.id) => {
                self.revoke_session_as_operator(id).await
            }
            _ => Err(Error::NotFound(format!("{userid} has no session {id}"))),
        }
    }

    /// Successful logins on a server within the last minute (counted up to 10,000).
    pub async fn logins_last_minute(&self, server: &ServerId) -> Result<u64> {
        let query = AuditQuery {
            userid: None,
            kind: Some("login_succeeded".into()),
            since: Some(self.now() - 60),
            limit: MAX_COUNTED_LOGINS,
        };
        Ok(self.store.audit_events(server, &query).await?.len() as u64)
    }
}
