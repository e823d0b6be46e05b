//! Passkeys, in the `passkey` table. The credential id is the primary key, so an
//! authenticator's credential is stored once. Removing a passkey locks the user's row first,
//! then deletes only while the user keeps another way to sign in: two removals at once run one
//! after the other, and the second sees the first's result.

use async_trait::async_trait;
use latchkey_core::model::PasskeyCredential;
use latchkey_core::store::{PasskeyRemoval, PasskeyStore, StoreResult};
use uuid::Uuid;

use crate::rows::{PasskeyRow, PASSKEY_COLUMNS};
use crate::{db, PgStore};

#[async_trait]
impl PasskeyStore for PgStore {
    async fn insert_passkey(&self, passkey: &PasskeyCredential) -> StoreResult<bool> {
        let done = sqlx::query(&format!(
            "INSERT INTO passkey ({PASSKEY_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6) \
             ON CONFLICT (credential_id) DO NOTHING"
        ))
        .bind(&passkey.credential_id)
        .bind(passkey.user_id)
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
        sqlx::query_as::<_, PasskeyRow>(&format!(
            "SELECT {PASSKEY_COLUMNS} FROM passkey WHERE user_id = $1 \
             ORDER BY created_at, credential_id"
        ))
        .bind(user_id)
        .fetch_all(&self.pool)
        .await
        .map_err(db)?
        .into_iter()
        .map(PasskeyCredential::try_from)
        .collect()
    }

    async fn passkey(&self, credential_id: &[u8]) -> StoreResult<Option<PasskeyCredential>> {
        sqlx::query_as::<_, PasskeyRow>(&format!(
            "SELECT {PASSKEY_COLUMNS} FROM passkey WHERE credential_id = $1"
        ))
        .bind(credential_id)
        .fetch_optional(&self.pool)
        .await
        .map_err(db)?
        .map(PasskeyCredential::try_from)
        .transpose()
    }

    async fn record_passkey_use(
        &self,
        credential_id: &[u8],
        old: &str,
        passkey: &str,
        at: i64,
    ) -> StoreResult<bool> {
        let done = sqlx::query(
            "UPDATE passkey SET passkey = $1, last_used_at = $2 WHERE credential_id = $3 AND passkey = $4",
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
            sqlx::query("UPDATE passkey SET name = $1 WHERE user_id = $2 AND credential_id = $3")
                .bind(name)
                .bind(user_id)
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
        let mut tx = self.pool.begin().await.map_err(db)?;
        sqlx::query("SELECT 1 FROM person WHERE user_id = $1 FOR UPDATE")
            .bind(user_id)
            .fetch_optional(&mut *tx)
            .await
            .map_err(db)?;
        let done = sqlx::query(
            "DELETE FROM passkey WHERE user_id = $1 AND credential_id = $2 AND ( \
                 EXISTS (SELECT 1 FROM person \
                         WHERE user_id = $1 AND password_argon2 IS NOT NULL) \
              OR EXISTS (SELECT 1 FROM passkey \
                         WHERE user_id = $1 AND credential_id <> $2) \
              OR EXISTS (SELECT 1 FROM account WHERE user_id = $1 AND NOT blocked))",
        )
        .bind(user_id)
        .bind(credential_id)
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        let removal = if done.rows_affected() == 1 {
            PasskeyRemoval::Removed
        } else {
            let owner: Option<Uuid> =
                sqlx::query_scalar("SELECT user_id FROM passkey WHERE credential_id = $1")
                    .bind(credential_id)
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(db)?;
            if owner == Some(user_id) {
                PasskeyRemoval::LastSignInMethod
            } else {
                PasskeyRemoval::NotFound
            }
        };
        tx.commit().await.map_err(db)?;
        Ok(removal)
    }
}
