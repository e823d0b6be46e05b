//! Servers' settings and activity, roles made for API keys and users, permissions by server.

use async_trait::async_trait;
use latchkey_core::model::ids::ServerId;
use latchkey_core::model::{ApiKey, Permissions};
use latchkey_core::store::{MadeApiKey, ManagementStore, StoreResult};
use sqlx::Row;
use uuid::Uuid;

use crate::{count, db, PgStore};

#[async_trait]
impl ManagementStore for PgStore {
    async fn server_config(&self, id: &ServerId) -> StoreResult<Option<String>> {
        sqlx::query_scalar("SELECT config FROM server WHERE server_id = $1")
            .bind(id.as_str())
            .fetch_optional(&self.pool)
            .await
            .map_err(db)
    }

    async fn update_server(&self, id: &ServerId, name: &str, config: &str) -> StoreResult<bool> {
        let done = sqlx::query("UPDATE server SET name = $1, config = $2 WHERE server_id = $3")
            .bind(name)
            .bind(config)
            .bind(id.as_str())
            .execute(&self.pool)
            .await
            .map_err(db)?;
        Ok(done.rows_affected() == 1)
    }

    async fn server_activity(&self, id: &ServerId) -> StoreResult<(u64, Option<i64>)> {
        let row = sqlx::query(
            "SELECT count(*) AS accounts, max(last_login) AS last_login FROM account \
             WHERE server_id = $1",
        )
        .bind(id.as_str())
        .fetch_one(&self.pool)
        .await
        .map_err(db)?;
        Ok((
            count(row.try_get("accounts").map_err(db)?)?,
            row.try_get("last_login").map_err(db)?,
        ))
    }

    async fn insert_role_with_key(
        &self,
        role_id: &str,
        description: &str,
        created_by: &str,
        key: &ApiKey,
    ) -> StoreResult<()> {
        let mut tx = self.pool.begin().await.map_err(db)?;
        sqlx::query(
            "INSERT INTO role (role_id, root, description, created_by) VALUES ($1, FALSE, $2, $3)",
        )
        .bind(role_id)
        .bind(description)
        .bind(created_by)
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        sqlx::query(
            "INSERT INTO api_key (api_key_id, key_hash, role_id, created_at) VALUES ($1, $2, $3, $4)",
        )
        .bind(key.id)
        .bind(&key.key_hash.0[..])
        .bind(&key.role_id)
        .bind(key.created_at)
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        tx.commit().await.map_err(db)
    }

    async fn api_keys_made_by(&self, created_by: &str) -> StoreResult<Vec<MadeApiKey>> {
        let rows = sqlx::query(
            "SELECT k.api_key_id, k.role_id, r.description FROM api_key k \
             JOIN role r ON r.role_id = k.role_id \
             WHERE r.created_by = $1 ORDER BY k.created_at, k.api_key_id",
        )
        .bind(created_by)
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        rows.into_iter()
            .map(|row| {
                Ok(MadeApiKey {
                    key_id: row.try_get("api_key_id").map_err(db)?,
                    role_id: row.try_get("role_id").map_err(db)?,
                    description: row.try_get("description").map_err(db)?,
                })
            })
            .collect()
    }

    async fn user_role(&self, user_id: Uuid) -> StoreResult<Option<String>> {
        sqlx::query_scalar("SELECT role_id FROM role WHERE user_id = $1")
            .bind(user_id)
            .fetch_optional(&self.pool)
            .await
            .map_err(db)
    }

    async fn ensure_user_role(&self, user_id: Uuid, role_id: &str) -> StoreResult<String> {
        sqlx::query(
            "INSERT INTO role (role_id, root, user_id) VALUES ($1, FALSE, $2) \
             ON CONFLICT (user_id) DO NOTHING",
        )
        .bind(role_id)
        .bind(user_id)
        .execute(&self.pool)
        .await
        .map_err(db)?;
        self.user_role(user_id)
            .await?
            .ok_or(latchkey_core::StoreError::NotFound)
    }

    async fn set_role_root(&self, role_id: &str, root: bool) -> StoreResult<()> {
        let done = sqlx::query("UPDATE role SET root = $1 WHERE role_id = $2")
            .bind(root)
            .bind(role_id)
            .execute(&self.pool)
            .await
            .map_err(db)?;
        if done.rows_affected() == 0 {
            return Err(latchkey_core::StoreError::NotFound);
        }
        Ok(())
    }

    async fn server_permissions(
        &self,
        server_id: &ServerId,
    ) -> StoreResult<Vec<(String, Permissions)>> {
        let rows = sqlx::query(
            "SELECT role_id, sessions, accounts, users, servers FROM permission \
             WHERE server_id = $1 ORDER BY role_id COLLATE \"C\"",
        )
        .bind(server_id.as_str())
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        rows.into_iter()
            .map(|row| {
                Ok((
                    row.try_get("role_id").map_err(db)?,
                    Permissions {
                        sessions: row.try_get("sessions").map_err(db)?,
                        accounts: row.try_get("accounts").map_err(db)?,
                        users: row.try_get("users").map_err(db)?,
                        servers: row.try_get("servers").map_err(db)?,
                    },
                ))
            })
            .collect()
    }

    async fn revoke_permissions(&self, role_id: &str, server_id: &ServerId) -> StoreResult<bool> {
        let done = sqlx::query("DELETE FROM permission WHERE role_id = $1 AND server_id = $2")
            .bind(role_id)
            .bind(server_id.as_str())
            .execute(&self.pool)
            .await
            .map_err(db)?;
        Ok(done.rows_affected() == 1)
    }
}
