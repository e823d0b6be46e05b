//! Who may call family A: an API key (`X-apikey`) belongs to a role; a role holds permissions
//! per server, or is `root`. A root key may act as another role (`X-su`). The order of the
//! answers is fixed: unknown key 401, then unknown server 404, then missing permission 403.

use crate::error::{Error, Result};
use crate::model::ids::ServerId;
use crate::model::{Permissions, Role};
use crate::services::Latchkey;

/// One of family A's per-server permissions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Permission {
    Sessions,
    Accounts,
    Users,
    Servers,
}

impl Permission {
    fn held_in(self, p: &Permissions) -> bool {
        match self {
            Permission::Sessions => p.sessions,
            Permission::Accounts => p.accounts,
            Permission::Users => p.users,
            Permission::Servers => p.servers,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Permission::Sessions => "sessions",
            Permission::Accounts => "accounts",
            Permission::Users => "users",
            Permission::Servers => "servers",
        }
    }
}

/// Proof that the caller may act on a server. Its fields are private: only
/// [`Latchkey::authorize`] makes one.
#[derive(Debug, Clone)]
pub struct Authorized {
    server: ServerId,
    role: String,
}

impl Authorized {
    pub fn server(&self) -> &ServerId {
        &self.server
    }

    pub fn role(&self) -> &str {
        &self.role
    }

    pub fn into_server(self) -> ServerId {
        self.server
    }
}

/// Proof that the caller holds a key of the root role. Only [`Latchkey::authorize_root`]
/// makes one.
#[derive(Debug)]
pub struct RootKey(());

impl Latchkey {
    /// Checks an API key (and optional `X-su` role) for any one of `any_of` on `server` (as
    /// given in the path: a malformed id is an unknown server).
    pub async fn authorize(
        &self,
        api_key: Option<&str>,
        su: Option<&str>,
        server: &str,
        any_of: &[Permission],
    ) -> Result<Authorized> {
        let role = self.acting_role(api_key, su).await?;
        let unknown = || Error::NotFound(format!("no server {server}"));
        let server = ServerId::parse(server).map_err(|_| unknown())?;
        self.store.server(&server).await?.ok_or_else(unknown)?;
        let held = self.permissions(&role, &server).await?;
        if any_of.iter().any(|p| p.held_in(&held)) {
            Ok(Authorized {
                server,
                role: role.id,
            })
        } else {
            let names: Vec<&str> = any_of.iter().map(|p| p.as_str()).collect();
            Err(Error::Forbidden(format!(
                "the key's role lacks the {} permission on this server",
                names.join(" or ")
            )))
        }
    }

    /// Checks an API key (and optional `X-su` role) for a global permission (the vendor's
    /// global `servers`: attributes that are not a server's own, privileged attributes), which
    /// only the root role holds. Answers the acting role's id.
    pub async fn authorize_global(
        &self,
        api_key: Option<&str>,
        su: Option<&str>,
    ) -> Result<String> {
        let role = self.acting_role(api_key, su).await?;
        if role.root {
            Ok(role.id)
        } else {
            Err(Error::Forbidden(
                "the key's role lacks the global servers permission (root only)".into(),
            ))
        }
    }

    /// The role a request acts as: its key's, or with `X-su` (root keys only) that role.
    pub async fn acting_role(&self, api_key: Option<&str>, su: Option<&str>) -> Result<Role> {
        let key = api_key
            .filter(|k| !k.is_empty() && k.len() <= 256)
            .ok_or(Error::BadCredentials)?;
        let own = self
            .role_of_api_key(key)
            .await?
            .ok_or(Error::BadCredentials)?;
        match su {
            None => Ok(own),
            Some(_) if !own.root => {
                Err(Error::Forbidden("X-su needs a key of the root role".into()))
            }
            Some(role_id) => self
                .store
                .role(role_id)
                .await?
                .ok_or_else(|| Error::Forbidden(format!("X-su: no role {role_id:?}"))),
        }
    }

    /// Checks that an API key belongs to the root role: `BadCredentials` for a missing or
    /// unknown key, `Forbidden` for another role's key.
    pub async fn authorize_root(&self, api_key: Option<&str>) -> Result<RootKey> {
        let key = api_key
            .filter(|k| !k.is_empty() && k.len() <= 256)
            .ok_or(Error::BadCredentials)?;
        match self.role_of_api_key(key).await? {
            Some(role) if role.root => Ok(RootKey(())),
            Some(_) => Err(Error::Forbidden(
                "the admin API needs a key of the root role".into(),
            )),
            None => Err(Error::BadCredentials),
        }
    }

    /// The role of that id, created (not root, no permissions) when it does not exist.
    pub async fn ensure_role(&self, role_id: &str) -> Result<Role> {
        if let Some(role) = self.store.role(role_id).await? {
            return Ok(role);
        }
        let role = Role {
            id: role_id.to_owned(),
            root: false,
        };
        match self.store.insert_role(&role).await {
            Ok(()) | Err(crate::StoreError::Conflict) => Ok(role),
            Err(e) => Err(e.into()),
        }
    }

    /// Creates the role when needed and sets its permissions on one server.
    pub async fn grant(
        &self,
        role_id: &str,
        server: &ServerId,
        permissions: Permissions,
    ) -> Result<()> {
        self.ensure_role(role_id).await?;
        Ok(self
            .store
            .set_permissions(role_id, server, permissions)
            .await?)
    }

    /// Sets an existing role's permissions on one server. `NotFound` for an unknown role.
    pub async fn set_role_permissions(
        &self,
        role_id: &str,
        server: &ServerId,
        permissions: Permissions,
    ) -> Result<()> {
        self.store
            .role(role_id)
            .await?
            .ok_or_else(|| Error::NotFound(format!("no role {role_id:?}")))?;
        Ok(self
            .store
            .set_permissions(role_id, server, permissions)
            .await?)
    }
}
