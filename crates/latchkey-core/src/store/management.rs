//! Family A's management of servers and access: a server's settings (the vendor's Server
//! model, kept as one JSON document) and activity, roles made for an API key or a user, the
//! keys a role made, and every role's permissions on a server.

use async_trait::async_trait;
use uuid::Uuid;

use super::StoreResult;
use crate::model::ids::ServerId;
use crate::model::{ApiKey, Permissions};

/// An API key as listed: never the key itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MadeApiKey {
    pub key_id: Uuid,
    pub role_id: String,
    pub description: Option<String>,
}

#[async_trait]
pub trait ManagementStore: Send + Sync + 'static {
    /// A server's settings document (`{}` when none was set); `None` for an unknown server.
    async fn server_config(&self, id: &ServerId) -> StoreResult<Option<String>>;
    /// Renames a server and replaces its settings; false for an unknown server.
    async fn update_server(&self, id: &ServerId, name: &str, config: &str) -> StoreResult<bool>;
    /// How many accounts a server has, and its latest login.
    async fn server_activity(&self, id: &ServerId) -> StoreResult<(u64, Option<i64>)>;

    /// Makes a role (not root) with a description, recorded as made by `created_by`, and its
    /// first API key, in one transaction.
    async fn insert_role_with_key(
        &self,
        role_id: &str,
        description: &str,
        created_by: &str,
        key: &ApiKey,
    ) -> StoreResult<()>;
    /// The API keys of the roles `created_by` made, oldest first.
    async fn api_keys_made_by(&self, created_by: &str) -> StoreResult<Vec<MadeApiKey>>;
    /// The role made for a user, if any.
    async fn user_role(&self, user_id: Uuid) -> StoreResult<Option<String>>;
    /// The user's role: `role_id` is made for the user unless they have one already (of two
    /// at once, one is made and both answer it).
    async fn ensure_user_role(&self, user_id: Uuid, role_id: &str) -> StoreResult<String>;
    /// Makes a role root or not; NotFound for an unknown role.
    async fn set_role_root(&self, role_id: &str, root: bool) -> StoreResult<()>;

    /// Every role's permissions on a server, by role id.
    async fn server_permissions(
        &self,
        server_id: &ServerId,
    ) -> StoreResult<Vec<(String, Permissions)>>;
    /// Takes every permission of a role on a server away; false when it had none recorded.
    async fn revoke_permissions(&self, role_id: &str, server_id: &ServerId) -> StoreResult<bool>;
}
