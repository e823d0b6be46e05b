//! Tenants and their keys: settings, servers, roles, permissions, API keys, JWT signing keys.

use async_trait::async_trait;

use super::StoreResult;
use crate::crypto::secret::SecretHash;
use crate::model::ids::ServerId;
use crate::model::{ApiKey, Permissions, Role, Server, SigningKey};

#[async_trait]
pub trait TenantStore: Send + Sync + 'static {
    // --- settings: a small key/value table (e.g. the default server) ---

    async fn setting(&self, key: &str) -> StoreResult<Option<String>>;
    /// Conflict when the key is already set.
    async fn insert_setting(&self, key: &str, value: &str) -> StoreResult<()>;

    // --- servers ---

    async fn insert_server(&self, server: &Server) -> StoreResult<()>;
    async fn server(&self, id: &ServerId) -> StoreResult<Option<Server>>;
    async fn servers(&self) -> StoreResult<Vec<Server>>;

    // --- roles, permissions and API keys ---

    async fn insert_role(&self, role: &Role) -> StoreResult<()>;
    async fn role(&self, id: &str) -> StoreResult<Option<Role>>;
    /// Sets (replaces) a role's permissions on one server.
    async fn set_permissions(
        &self,
        role_id: &str,
        server_id: &ServerId,
        permissions: Permissions,
    ) -> StoreResult<()>;
    /// A role's permissions on one server; all false when none were granted.
    async fn permissions(&self, role_id: &str, server_id: &ServerId) -> StoreResult<Permissions>;
    async fn insert_api_key(&self, key: &ApiKey) -> StoreResult<()>;
    async fn api_key(&self, key_hash: &SecretHash) -> StoreResult<Option<ApiKey>>;

    // --- JWT signing keys ---

    async fn insert_signing_key(&self, key: &SigningKey) -> StoreResult<()>;
    /// Inserts `key` only while no unretired key exists; answers whether it did. Callers of
    /// any number of processes racing to create the first key create exactly one between them.
    async fn insert_first_signing_key(&self, key: &SigningKey) -> StoreResult<bool>;
    /// All signing keys, newest first.
    async fn signing_keys(&self) -> StoreResult<Vec<SigningKey>>;
    /// Retires every unretired key but `keep_kid`.
    async fn retire_signing_keys(&self, keep_kid: &str, at: i64) -> StoreResult<()>;
}
