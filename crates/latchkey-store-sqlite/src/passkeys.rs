//! Passkeys, in the `passkey` table. The credential id is the primary key, so an
//! authenticator's credential is stored once; removing a passkey checks, in the DELETE itself,
//! that the user keeps another way to sign in (SQLite runs one writer at a time).

use async_trait::async_trait;
use latchkey_core::model::PasskeyCredential;
use latchkey_core::store::{PasskeyRemoval, PasskeyStore, StoreResult};
use uuid::Uuid;

use crate::rows::{all, maybe, PasskeyRow, PASSKEY_COLUMNS};
use crate::{db, SqliteStore};

#[async_trait]
impl PasskeyStore for SqliteStore {
    async fn insert_passkey(&self, passkey: &PasskeyCredential) -> StoreResult<bool> {
        let done = sqlx::query(&format!(
            "INSERT INTO passkey ({PASSKEY_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?) \
             ON CONFLICT (credential_id) DO NOTHING"
        ))
        .bind(&passkey.credential_id)
        .bind(passkey.user_id.to_string())
        .bind(&passkey.name)
        .bind(&passkey.passkey)
        .bind(passkey.created_at)
        .bind(passkey.last_used_at)
        .execute(&self.pool)
        .await
        .map_err(db)?;
        Ok(done.rows_affected() == 1)
    }

    async fn user_passkeys(&self, user_id: Uuid) -> StoreResult<Vec<PasskeyCredential>> {
        let rows: Vec<PasskeyRow> = sqlx::query_as(&format!(
            "SELECT {PASSKEY_COLUMNS} FROM passkey WHERE user_id = ? \
             ORDER BY created_at, credential_id"
        ))
        .bind(user_id.to_string())
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        all(rows)
    }

    async fn passkey(&self, credential_id: &[u8]) -> StoreResult<Option<PasskeyCredential>> {
        let row: Option<PasskeyRow> = sqlx::query_as(&format!(
            "SELECT {PASSKEY_COLUMNS} FROM passkey WHERE credential_id = ?"
        ))
        .bind(credential_id)
        .fetch_optional(&self.pool)
        .await
        .map_err(db)?;
        maybe(row)
    }

    async fn record_passkey_use(
        &self,
        credential_id: &[u8],
        old: &str,
        passkey: &str,
        at: i64,
    ) -> StoreResult<bool> {
        let done = sqlx::query(
            "UPDATE passkey SET passkey = ?, last_used_at = ? WHERE credential_id = ? AND passkey = ?",
        )
        .bind(passkey)
        .bind(at)
        .bind(credential_id)
        .bind(old)
        .execute(&self.pool)
        .await
        .map_err(db)?;
        Ok(done.rows_affected() == 1)
    }

    async fn rename_passkey(
        &self,
        user_id: Uuid,
        credential_id: &[u8],
        name: &str,
    ) -> StoreResult<bool> {
        let done =
            sqlx::query("UPDATE passkey SET name = ? WHERE user_id = ? AND credential_id = ?")
                .bind(name)
                .bind(user_id.to_string())
                .bind(credential_id)
                .execute(&self.pool)
                .await
                .map_err(db)?;
        Ok(done.rows_affected() == 1)
    }

    async fn delete_passkey(
        &self,
        user_id: Uuid,
        credential_id: &[u8],
    ) -> StoreResult<PasskeyRemoval> {
        let user = user_id.to_string();
        let done = sqlx::query(
            "DELETE FROM passkey WHERE user_id = ?1 AND credential_id = ?2 AND ( \
                 EXISTS (SELECT 1 FROM person \
                         WHERE user_id = ?1 AND password_argon2 IS NOT NULL) \
              OR EXISTS (SELECT 1 FROM passkey \
                         WHERE user_id = ?1 AND credential_id <> ?2) \
              OR EXISTS (SELECT 1 FROM account WHERE user_id = ?1 AND blocked = 0))",
        )
        .bind(&user)
        .bind(credential_id)
        .execute(&self.pool)
        .await
        .map_err(db)?;
        if done.rows_affected() == 1 {
            return Ok(PasskeyRemoval::Removed);
        }
        match self.passkey(credential_id).await? {
            Some(found) if found.user_id == user_id => Ok(PasskeyRemoval::LastSignInMethod),
            Some(_) | None => Ok(PasskeyRemoval::NotFound),
        }
    }
}
