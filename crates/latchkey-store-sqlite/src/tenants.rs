//! Tenants and their keys: settings, servers, roles, permissions, API keys and JWT signing
//! keys. Written rarely (setup, administration), read often; each write is one plain insert
//! or upsert.

use async_trait::async_trait;
use latchkey_core::crypto::sealing::Column;
use latchkey_core::crypto::secret::SecretHash;
use latchkey_core::model::ids::ServerId;
use latchkey_core::model::{ApiKey, Permissions, Role, Server, SigningKey};
use latchkey_core::store::{StoreResult, TenantStore};

use crate::rows::{all, maybe, ApiKeyRow, PermissionsRow, RoleRow, ServerRow, SigningKeyRow};
use crate::{db, SqliteStore};

#[async_trait]
impl TenantStore for SqliteStore {
    async fn setting(&self, key: &str) -> StoreResult<Option<String>> {
        sqlx::query_scalar("SELECT value FROM setting WHERE key = ?")
            .bind(key)
            .fetch_optional(&self.pool)
            .await
            .map_err(db)
    }

    async fn insert_setting(&self, key: &str, value: &str) -> StoreResult<()> {
        sqlx::query("INSERT INTO setting (key, value) VALUES (?, ?)")
            .bind(key)
            .bind(value)
            .execute(&self.pool)
            .await
            .map_err(db)?;
        Ok(())
    }

    async fn insert_server(&self, server: &Server) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO server (server_id, name, secret_key, public_key, created_at) \
             VALUES (?, ?, ?, ?, ?)",
        )
        .bind(server.id.as_str())
        .bind(&server.name)
        .bind(
            self.sealer
                .seal(Column::ServerKey, server.id.as_str(), &server.secret_key),
        )
        .bind(&server.public_key[..])
        .bind(server.created_at)
        .execute(&self.pool)
        .await
        .map_err(db)?;
        Ok(())
    }

    async fn server(&self, id: &ServerId) -> StoreResult<Option<Server>> {
        let row: Option<ServerRow> = sqlx::query_as("SELECT * FROM server WHERE server_id = ?")
            .bind(id.as_str())
            .fetch_optional(&self.pool)
            .await
            .map_err(db)?;
        maybe(row.map(|r| r.unsealed(&self.sealer)).transpose()?)
    }

    async fn servers(&self) -> StoreResult<Vec<Server>> {
        let rows: Vec<ServerRow> =
            sqlx::query_as("SELECT * FROM server ORDER BY created_at, server_id")
                .fetch_all(&self.pool)
                .await
                .map_err(db)?;
        let rows = rows
            .into_iter()
            .map(|r| r.unsealed(&self.sealer))
            .collect::<StoreResult<Vec<_>>>()?;
        all(rows)
    }

    async fn insert_role(&self, role: &Role) -> StoreResult<()> {
        sqlx::query("INSERT INTO role (role_id, root) VALUES (?, ?)")
            .bind(&role.id)
            .bind(role.root)
            .execute(&self.pool)
            .await
            .map_err(db)?;
        Ok(())
    }

    async fn role(&self, id: &str) -> StoreResult<Option<Role>> {
        let row: Option<RoleRow> =
            sqlx::query_as("SELECT role_id, root FROM role WHERE role_id = ?")
                .bind(id)
                .fetch_optional(&self.pool)
                .await
                .map_err(db)?;
        Ok(row.map(Role::from))
    }

    async fn set_permissions(
        &self,
        role_id: &str,
        server_id: &ServerId,
        p: Permissions,
    ) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO permission (role_id, server_id, sessions, accounts, users, servers) \
             VALUES (?, ?, ?, ?, ?, ?) \
             ON CONFLICT (role_id, server_id) DO UPDATE SET sessions = excluded.sessions, \
             accounts = excluded.accounts, users = excluded.users, servers = excluded.servers",
        )
        .bind(role_id)
        .bind(server_id.as_str())
        .bind(p.sessions)
        .bind(p.accounts)
        .bind(p.users)
        .bind(p.servers)
        .execute(&self.pool)
        .await
        .map_err(db)?;
        Ok(())
    }

    async fn permissions(&self, role_id: &str, server_id: &ServerId) -> StoreResult<Permissions> {
        let row: Option<PermissionsRow> = sqlx::query_as(
            "SELECT sessions, accounts, users, servers FROM permission \
             WHERE role_id = ? AND server_id = ?",
        )
        .bind(role_id)
        .bind(server_id.as_str())
        .fetch_optional(&self.pool)
        .await
        .map_err(db)?;
        Ok(row.map(Permissions::from).unwrap_or_default())
    }

    async fn insert_api_key(&self, key: &ApiKey) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO api_key (api_key_id, key_hash, role_id, created_at) VALUES (?, ?, ?, ?)",
        )
        .bind(key.id.to_string())
        .bind(&key.key_hash.0[..])
        .bind(&key.role_id)
        .bind(key.created_at)
        .execute(&self.pool)
        .await
        .map_err(db)?;
        Ok(())
    }

    async fn api_key(&self, key_hash: &SecretHash) -> StoreResult<Option<ApiKey>> {
        let row: Option<ApiKeyRow> = sqlx::query_as(
            "SELECT api_key_id, key_hash, role_id, created_at FROM api_key WHERE key_hash = ?",
        )
        .bind(&key_hash.0[..])
        .fetch_optional(&self.pool)
        .await
        .map_err(db)?;
        maybe(row)
    }

    async fn insert_signing_key(&self, key: &SigningKey) -> StoreResult<()> {
        self.insert_key(key, "").await.map(|_| ())
    }

    async fn insert_first_signing_key(&self, key: &SigningKey) -> StoreResult<bool> {
        // One statement: SQLite takes the write lock before its NOT EXISTS reads.
        let only_first = "WHERE NOT EXISTS (SELECT 1 FROM signing_key WHERE retired_at IS NULL)";
        Ok(self.insert_key(key, only_first).await? == 1)
    }

    async fn signing_keys(&self) -> StoreResult<Vec<SigningKey>> {
        let rows: Vec<SigningKeyRow> =
            sqlx::query_as("SELECT * FROM signing_key ORDER BY created_at DESC, kid DESC")
                .fetch_all(&self.pool)
                .await
                .map_err(db)?;
        let rows = rows
            .into_iter()
            .map(|r| r.unsealed(&self.sealer))
            .collect::<StoreResult<Vec<_>>>()?;
        all(rows)
    }

    async fn retire_signing_keys(&self, keep_kid: &str, at: i64) -> StoreResult<()> {
        sqlx::query("UPDATE signing_key SET retired_at = ? WHERE kid <> ? AND retired_at IS NULL")
            .bind(at)
            .bind(keep_kid)
            .execute(&self.pool)
            .await
            .map_err(db)?;
        Ok(())
    }
}

impl SqliteStore {
    /// Inserts a signing key (its private key sealed) when `condition` holds; answers the rows
    /// inserted.
    async fn insert_key(&self, key: &SigningKey, condition: &str) -> StoreResult<u64> {
        let sql = format!(
            "INSERT INTO signing_key (kid, secret_key, public_key, created_at, retired_at) \
             SELECT ?, ?, ?, ?, ? {condition}"
        );
        Ok(sqlx::query(&sql)
            .bind(&key.kid)
            .bind(
                self.sealer
                    .seal(Column::SigningKey, &key.kid, &key.secret_key),
            )
            .bind(&key.public_key[..])
            .bind(key.created_at)
            .bind(key.retired_at)
            .execute(&self.pool)
            .await
            .map_err(db)?
            .rows_affected())
    }
}
