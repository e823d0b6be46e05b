//! Family A's management of servers and access, as the vendor's Servers and Management
//! operations describe it (docs/nextauth-management.md): servers with the settings of the
//! vendor's Server model, API keys that each come with a role of their own, the roles'
//! permissions on a server (an ACL of `sessions`, `accounts`, `users`, `servers`), and a role
//! per user.

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::crypto::secret::{random_bytes, IssuedToken};
use crate::error::{Error, Result};
use crate::model::ids::{ServerId, UserId};
use crate::model::{ApiKey, Permissions, Role, Server};
use crate::services::audit::AuditEvent;
use crate::services::Latchkey;
use crate::store::MadeApiKey;

/// Longest text setting, and most server flags.
const MAX_SETTING_CHARS: usize = 2048;
const MAX_FLAGS: usize = 32;
/// A logo (base64) of at most 48 KiB.
const MAX_LOGO_CHARS: usize = 48 * 1024;

/// The settings of a server that the vendor's Server model carries besides its id, key and
/// activity. Stored as one JSON document; what the model leaves out is not kept.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerSettings {
    #[serde(default)]
    pub logo: String,
    #[serde(default, rename = "pinTimeout")]
    pub pin_timeout: i64,
    #[serde(default, rename = "pinTransTimeout")]
    pub pin_trans_timeout: i64,
    #[serde(default, rename = "pingTime")]
    pub ping_time: i64,
    #[serde(default, rename = "serverFlags")]
    pub server_flags: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub appname: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub appandroid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub appios: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub appurl: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub siteurl: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wsurl: Option<String>,
}

impl ServerSettings {
    /// `Invalid` names the first setting out of bounds.
    pub fn check(&self) -> Result<()> {
        let text = |name: &str, value: &str, max: usize| {
            if value.chars().count() > max || value.chars().any(char::is_control) {
                Err(Error::Invalid(format!(
                    "{name} is at most {max} characters, none a control character"
                )))
            } else {
                Ok(())
            }
        };
        text("logo", &self.logo, MAX_LOGO_CHARS)?;
        if !self.logo.is_empty() && STANDARD.decode(&self.logo).is_err() {
            return Err(Error::Invalid("logo must be base64".into()));
        }
        for (name, value) in [
            ("pinTimeout", self.pin_timeout),
            ("pinTransTimeout", self.pin_trans_timeout),
        ] {
            if !(-1..=525_600).contains(&value) {
                return Err(Error::Invalid(format!(
                    "{name} is -1 (never) or 0 to 525600 minutes"
                )));
            }
        }
        if !(0..=86_400).contains(&self.ping_time) {
            return Err(Error::Invalid("pingTime is 0 to 86400 seconds".into()));
        }
        if self.server_flags.len() > MAX_FLAGS {
            return Err(Error::Invalid(format!("at most {MAX_FLAGS} serverFlags")));
        }
        for flag in &self.server_flags {
            text("a server flag", flag, 64)?;
        }
        for (name, value) in [
            ("appname", &self.appname),
            ("appandroid", &self.appandroid),
            ("appios", &self.appios),
            ("appurl", &self.appurl),
            ("siteurl", &self.siteurl),
            ("wsurl", &self.wsurl),
        ] {
            if let Some(value) = value {
                text(name, value, MAX_SETTING_CHARS)?;
            }
        }
        Ok(())
    }
}

/// A server as the vendor's Server model shows it.
#[derive(Clone, Debug)]
pub struct ServerInfo {
    pub id: ServerId,
    pub name: String,
    /// Base64 of the server's Ed25519 public key.
    pub public_key: String,
    pub settings: ServerSettings,
    pub account_count: u64,
    pub last_login: Option<i64>,
}

/// The ACL names of a role's permissions, in the vendor's order.
pub fn acl(p: &Permissions) -> Vec<&'static str> {
    [
        ("sessions", p.sessions),
        ("accounts", p.accounts),
        ("users", p.users),
        ("servers", p.servers),
    ]
    .into_iter()
    .filter_map(|(name, held)| held.then_some(name))
    .collect()
}

/// Permissions from ACL names; `Invalid` for a name that is none.
pub fn permissions_from(names: &[String]) -> Result<Permissions> {
    let mut p = Permissions::default();
    for name in names {
        match name.trim() {
            "sessions" => p.sessions = true,
            "accounts" => p.accounts = true,
            "users" => p.users = true,
            "servers" => p.servers = true,
            other => {
                return Err(Error::Invalid(format!(
                    "{other:?} is not a permission (sessions, accounts, users, servers)"
                )))
            }
        }
    }
    Ok(p)
}

/// A server's name: trimmed, 1 to 200 bytes, no control character.
fn server_name(name: &str) -> Result<&str> {
    let name = name.trim();
    if name.is_empty() || name.len() > 200 || name.chars().any(char::is_control) {
        return Err(Error::Invalid(
            "serverName is 1 to 200 bytes, none a control character".into(),
        ));
    }
    Ok(name)
}

/// A new role id: 16 random bytes, base64url.
fn new_role_id() -> String {
    URL_SAFE_NO_PAD.encode(random_bytes::<16>())
}

impl Latchkey {
    async fn server_info_of(&self, server: Server) -> Result<ServerInfo> {
        let settings = match self.store.server_config(&server.id).await? {
            Some(json) => serde_json::from_str(&json)
                .map_err(|e| Error::Internal(format!("stored server settings: {e}")))?,
            None => return Err(Error::NotFound(format!("no server {}", server.id))),
        };
        let (account_count, last_login) = self.store.server_activity(&server.id).await?;
        Ok(ServerInfo {
            public_key: STANDARD.encode(server.public_key),
            id: server.id,
            name: server.name,
            settings,
            account_count,
            last_login,
        })
    }

    pub async fn server_info(&self, id: &ServerId) -> Result<ServerInfo> {
        let server = self.server(id).await?;
        self.server_info_of(server).await
    }

    /// The servers `role` holds the `servers` permission on (every one for root), in order of
    /// creation, paged; with how many there are.
    pub async fn visible_servers(
        &self,
        role: &Role,
        limit: u64,
        offset: u64,
    ) -> Result<(Vec<ServerInfo>, u64)> {
        let mut visible = Vec::new();
        for server in self.store.servers().await? {
            if self.permissions(role, &server.id).await?.servers {
                visible.push(server);
            }
        }
        let total = visible.len() as u64;
        let mut page = Vec::new();
        for server in visible
            .into_iter()
            .skip(usize::try_from(offset).unwrap_or(usize::MAX))
            .take(usize::try_from(limit).unwrap_or(usize::MAX))
        {
            page.push(self.server_info_of(server).await?);
        }
        Ok((page, total))
    }

    /// Creates a server with its settings.
    pub async fn create_configured_server(
        &self,
        name: &str,
        settings: &ServerSettings,
    ) -> Result<ServerInfo> {
        settings.check()?;
        let name = server_name(name)?;
        let server = self.create_server(name).await?;
        self.update_server_settings(&server.id, name, settings)
            .await
    }

    /// Renames a server and replaces its settings.
    pub async fn update_server_settings(
        &self,
        id: &ServerId,
        name: &str,
        settings: &ServerSettings,
    ) -> Result<ServerInfo> {
        settings.check()?;
        let name = server_name(name)?;
        let json = serde_json::to_string(settings)
            .map_err(|e| Error::Internal(format!("server settings: {e}")))?;
        if !self.store.update_server(id, name, &json).await? {
            return Err(Error::NotFound(format!("no server {id}")));
        }
        self.server_info(id).await
    }

    /// The API keys of the roles `role_id` made (never the keys themselves).
    pub async fn api_keys_made_by(&self, role_id: &str) -> Result<Vec<MadeApiKey>> {
        Ok(self.store.api_keys_made_by(role_id).await?)
    }

    /// A new API key with a new role of its own, described by `description`, made by
    /// `created_by`. The key text is answered once; the role starts without permissions.
    pub async fn create_described_api_key(
        &self,
        created_by: &str,
        description: &str,
    ) -> Result<(IssuedToken, String)> {
        let description = description.trim();
        if description.is_empty()
            || description.chars().count() > 200
            || description.chars().any(char::is_control)
        {
            return Err(Error::Invalid(
                "description is 1 to 200 characters, none a control character".into(),
            ));
        }
        let role_id = new_role_id();
        let token = IssuedToken::generate();
        let key = ApiKey {
            id: Uuid::new_v4(),
            key_hash: token.hash,
            role_id: role_id.clone(),
            created_at: self.now(),
        };
        self.store
            .insert_role_with_key(&role_id, description, created_by, &key)
            .await?;
        self.audit(
            &self.default_server().await?,
            AuditEvent::ApiKeyCreated {
                role: &role_id,
                by: created_by,
            },
        )
        .await?;
        Ok((token, role_id))
    }

    /// Every role's permissions on a server (roles with none left out).
    pub async fn server_permissions(
        &self,
        server: &ServerId,
    ) -> Result<Vec<(String, Permissions)>> {
        Ok(self
            .store
            .server_permissions(server)
            .await?
            .into_iter()
            .filter(|(_, p)| *p != Permissions::default())
            .collect())
    }

    async fn known_role(&self, role_id: &str) -> Result<Role> {
        // An id no role can have names none (and never reaches the database).
        if role_id.is_empty() || role_id.len() > 256 || role_id.chars().any(char::is_control) {
            return Err(Error::NotFound(format!("no role {role_id:?}")));
        }
        self.store
            .role(role_id)
            .await?
            .ok_or_else(|| Error::NotFound(format!("no role {role_id}")))
    }

    /// One role's permissions on a server (`NotFound` for an unknown role).
    pub async fn role_permissions(&self, server: &ServerId, role_id: &str) -> Result<Permissions> {
        let role = self.known_role(role_id).await?;
        self.permissions(&role, server).await
    }

    /// Replaces a role's permissions on a server with the named ones.
    pub async fn grant_acl(
        &self,
        server: &ServerId,
        role_id: &str,
        names: &[String],
    ) -> Result<()> {
        let permissions = permissions_from(names)?;
        self.known_role(role_id).await?;
        self.store
            .set_permissions(role_id, server, permissions)
            .await?;
        self.audit(
            server,
            AuditEvent::PermissionsSet {
                role: role_id,
                acl: acl(&permissions).join(","),
            },
        )
        .await
    }

    /// Takes every permission of a role on a server away.
    pub async fn revoke_acl(&self, server: &ServerId, role_id: &str) -> Result<()> {
        self.known_role(role_id).await?;
        self.store.revoke_permissions(role_id, server).await?;
        self.audit(
            server,
            AuditEvent::PermissionsSet {
                role: role_id,
                acl: String::new(),
            },
        )
        .await
    }

    /// The role made for a user (`NotFound` for an unknown user, or one without a role).
    pub async fn user_role(&self, server: &ServerId, userid: &str) -> Result<String> {
        let user = self.user(server, &UserId::parse(userid)?).await?;
        self.store
            .user_role(user.id)
            .await?
            .ok_or_else(|| Error::NotFound(format!("user {userid} has no role")))
    }

    /// The role of a user, made now when the user has none.
    pub async fn user_role_made(&self, server: &ServerId, userid: &str) -> Result<String> {
        let user = self.user(server, &UserId::parse(userid)?).await?;
        Ok(self.store.ensure_user_role(user.id, &new_role_id()).await?)
    }
}
