//! Tenants and their keys. Written by administrators and at first start, read on every
//! request that checks an API key or signs a token: plain inserts and lookups, nothing races.

use async_trait::async_trait;
use latchkey_core::crypto::sealing::Column;
use latchkey_core::crypto::secret::SecretHash;
use latchkey_core::model::ids::ServerId;
use latchkey_core::model::{ApiKey, Permissions, Role, Server, SigningKey};
use latchkey_core::store::{StoreResult, TenantStore};

use crate::rows::{
    ApiKeyRow, PermissionsRow, RoleRow, ServerRow, SigningKeyRow, SERVER_COLUMNS,
    SIGNING_KEY_COLUMNS,
};
use crate::{db, PgStore};

/// The advisory lock that queues creators of the first JWT signing key ("latchkey" in ASCII).
const FIRST_SIGNING_KEY_LOCK: i64 = 0x6c61_7463_686b_6579;

#[async_trait]
impl TenantStore for PgStore {
    async fn setting(&self, key: &str) -> StoreResult<Option<String>> {
        sqlx::query_scalar("SELECT value FROM setting WHERE key = $1")
            .bind(key)
            .fetch_optional(&self.pool)
            .await
            .map_err(db)
    }

    async fn insert_setting(&self, key: &str, value: &str) -> StoreResult<()> {
        sqlx::query("INSERT INTO setting (key, value) VALUES ($1, $2)")
            .bind(key)
            .bind(value)
            .execute(&self.pool)
            .await
            .map_err(db)?;
        Ok(())
    }

    async fn insert_server(&self, server: &Server) -> StoreResult<()> {
        sqlx::query(&format!(
            "INSERT INTO server ({SERVER_COLUMNS}) VALUES ($1, $2, $3, $4, $5)"
        ))
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
        sqlx::query_as::<_, ServerRow>(&format!(
            "SELECT {SERVER_COLUMNS} FROM server WHERE server_id = $1"
        ))
        .bind(id.as_str())
        .fetch_optional(&self.pool)
        .await
        .map_err(db)?
        .map(|r| Server::try_from(r.unsealed(&self.sealer)?))
        .transpose()
    }

    async fn servers(&self) -> StoreResult<Vec<Server>> {
        // COLLATE "C": byte order, as SQLite sorts, whatever the database's locale.
        sqlx::query_as::<_, ServerRow>(&format!(
            "SELECT {SERVER_COLUMNS} FROM server ORDER BY created_at, server_id COLLATE \"C\""
        ))
        .fetch_all(&self.pool)
        .await
        .map_err(db)?
        .into_iter()
        .map(|r| Server::try_from(r.unsealed(&self.sealer)?))
        .collect()
    }

    async fn insert_role(&self, role: &Role) -> StoreResult<()> {
        sqlx::query("INSERT INTO role (role_id, root) VALUES ($1, $2)")
            .bind(&role.id)
            .bind(role.root)
            .execute(&self.pool)
            .await
            .map_err(db)?;
        Ok(())
    }

    async fn role(&self, id: &str) -> StoreResult<Option<Role>> {
        let row = sqlx::query_as::<_, RoleRow>("SELECT role_id, root FROM role WHERE role_id = $1")
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
             VALUES ($1, $2, $3, $4, $5, $6) \
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
        let row = sqlx::query_as::<_, PermissionsRow>(
            "SELECT sessions, accounts, users, servers FROM permission \
             WHERE role_id = $1 AND server_id = $2",
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
            "INSERT INTO api_key (api_key_id, key_hash, role_id, created_at) \
             VALUES ($1, $2, $3, $4)",
        )
        .bind(key.id)
        .bind(&key.key_hash.0[..])
        .bind(&key.role_id)
        .bind(key.created_at)
        .execute(&self.pool)
        .await
        .map_err(db)?;
        Ok(())
    }

    async fn api_key(&self, key_hash: &SecretHash) -> StoreResult<Option<ApiKey>> {
        sqlx::query_as::<_, ApiKeyRow>(
            "SELECT api_key_id, key_hash, role_id, created_at FROM api_key WHERE key_hash = $1",
        )
        .bind(&key_hash.0[..])
        .fetch_optional(&self.pool)
        .await
        .map_err(db)?
        .map(ApiKey::try_from)
        .transpose()
    }

    async fn insert_signing_key(&self, key: &SigningKey) -> StoreResult<()> {
        let mut conn = self.pool.acquire().await.map_err(db)?;
        self.insert_key(&mut conn, key, "").await.map(|_| ())
    }

    async fn insert_first_signing_key(&self, key: &SigningKey) -> StoreResult<bool> {
        // NOT EXISTS alone would let two READ COMMITTED transactions both insert: the advisory
        // lock queues them, and the second's statement then sees the first's committed key.
        let mut tx = self.pool.begin().await.map_err(db)?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(FIRST_SIGNING_KEY_LOCK)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        let only_first = "WHERE NOT EXISTS (SELECT 1 FROM signing_key WHERE retired_at IS NULL)";
        let inserted = self.insert_key(&mut tx, key, only_first).await? == 1;
        tx.commit().await.map_err(db)?;
        Ok(inserted)
    }

    async fn signing_keys(&self) -> StoreResult<Vec<SigningKey>> {
        // COLLATE "C": byte order, as SQLite sorts, whatever the database's locale.
        sqlx::query_as::<_, SigningKeyRow>(&format!(
            "SELECT {SIGNING_KEY_COLUMNS} FROM signing_key \
             ORDER BY created_at DESC, kid COLLATE \"C\" DESC"
        ))
        .fetch_all(&self.pool)
        .await
        .map_err(db)?
        .into_iter()
        .map(|r| SigningKey::try_from(r.unsealed(&self.sealer)?))
        .collect()
    }

    async fn retire_signing_keys(&self, keep_kid: &str, at: i64) -> StoreResult<()> {
        sqlx::query(
            "UPDATE signing_key SET retired_at = $1 WHERE kid <> $2 AND retired_at IS NULL",
        )
        .bind(at)
        .bind(keep_kid)
        .execute(&self.pool)
        .await
        .map_err(db)?;
        Ok(())
    }
}

impl PgStore {
    /// Inserts a signing key (its private key sealed) when `condition` holds; answers the rows
    /// inserted.
    async fn insert_key(
        &self,
        conn: &mut sqlx::PgConnection,
        key: &SigningKey,
        condition: &str,
    ) -> StoreResult<u64> {
        let sql = format!(
            "INSERT INTO signing_key ({SIGNING_KEY_COLUMNS}) SELECT $1, $2, $3, $4, $5 {condition}"
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
            .execute(conn)
            .await
            .map_err(db)?
            .rows_affected())
    }
}
