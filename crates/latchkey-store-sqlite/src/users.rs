//! Users and their credentials, in the `person` table ("user" is reserved in PostgreSQL).
//! Each credential is written on its own; the TOTP step is consumed by the statement that
//! checks it is newer than the last one used, so a code is accepted once; a re-derived SCRAM
//! verifier replaces only the verifier (by its salt) it was derived beside.

use async_trait::async_trait;
use latchkey_core::crypto::sealing::Column;
use latchkey_core::model::ids::{ServerId, UserId};
use latchkey_core::model::{PasswordHashes, ScramVerifier, User, UserCredentials};
use latchkey_core::store::{StoreResult, UserStore};
use uuid::Uuid;

use crate::rows::{all, maybe, CredentialsRow, UserRow};
use crate::{count, db, found, other, SqliteStore};

#[async_trait]
impl UserStore for SqliteStore {
    async fn insert_user(&self, user: &User) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO person (user_id, server_id, userid, created_at) VALUES (?, ?, ?, ?)",
        )
        .bind(user.id.to_string())
        .bind(user.server_id.as_str())
        .bind(user.userid.as_str())
        .bind(user.created_at)
        .execute(&self.pool)
        .await
        .map_err(db)?;
        Ok(())
    }

    async fn user(&self, server_id: &ServerId, userid: &UserId) -> StoreResult<Option<User>> {
        let row: Option<UserRow> = sqlx::query_as(
            "SELECT user_id, server_id, userid, created_at FROM person \
             WHERE server_id = ? AND userid = ?",
        )
        .bind(server_id.as_str())
        .bind(userid.as_str())
        .fetch_optional(&self.pool)
        .await
        .map_err(db)?;
        maybe(row)
    }

    async fn user_by_id(&self, id: Uuid) -> StoreResult<Option<User>> {
        let row: Option<UserRow> = sqlx::query_as(
            "SELECT user_id, server_id, userid, created_at FROM person WHERE user_id = ?",
        )
        .bind(id.to_string())
        .fetch_optional(&self.pool)
        .await
        .map_err(db)?;
        maybe(row)
    }

    async fn users(&self, server_id: &ServerId) -> StoreResult<Vec<User>> {
        let rows: Vec<UserRow> = sqlx::query_as(
            "SELECT user_id, server_id, userid, created_at FROM person \
             WHERE server_id = ? ORDER BY userid",
        )
        .bind(server_id.as_str())
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        all(rows)
    }

    async fn delete_user(&self, id: Uuid) -> StoreResult<bool> {
        let done = sqlx::query("DELETE FROM person WHERE user_id = ?")
            .bind(id.to_string())
            .execute(&self.pool)
            .await
            .map_err(db)?;
        Ok(done.rows_affected() > 0)
    }

    async fn credentials(
        &self,
        server_id: &ServerId,
        userid: &UserId,
    ) -> StoreResult<Option<UserCredentials>> {
        let row: Option<CredentialsRow> =
            sqlx::query_as("SELECT * FROM person WHERE server_id = ? AND userid = ?")
                .bind(server_id.as_str())
                .bind(userid.as_str())
                .fetch_optional(&self.pool)
                .await
                .map_err(db)?;
        maybe(row.map(|r| r.unsealed(&self.sealer)).transpose()?)
    }

    async fn credentials_by_id(&self, user_id: Uuid) -> StoreResult<Option<UserCredentials>> {
        let row: Option<CredentialsRow> = sqlx::query_as("SELECT * FROM person WHERE user_id = ?")
            .bind(user_id.to_string())
            .fetch_optional(&self.pool)
            .await
            .map_err(db)?;
        maybe(row.map(|r| r.unsealed(&self.sealer)).transpose()?)
    }

    async fn set_password(&self, user_id: Uuid, h: &PasswordHashes) -> StoreResult<()> {
        let done = sqlx::query(
            "UPDATE person SET password_argon2 = ?, scram_salt = ?, scram_iterations = ?, \
             scram_stored_key = ?, scram_server_key = ? WHERE user_id = ?",
        )
        .bind(&h.argon2)
        .bind(&h.scram.salt)
        .bind(i64::from(h.scram.iterations))
        .bind(&h.scram.stored_key[..])
        .bind(&h.scram.server_key[..])
        .bind(user_id.to_string())
        .execute(&self.pool)
        .await
        .map_err(db)?;
        found(done.rows_affected())
    }

    async fn set_scram_verifier(
        &self,
        user_id: Uuid,
        replacing_salt: &[u8],
        v: &ScramVerifier,
    ) -> StoreResult<bool> {
        let done = sqlx::query(
            "UPDATE person SET scram_salt = ?, scram_iterations = ?, scram_stored_key = ?, \
             scram_server_key = ? \
             WHERE user_id = ? AND password_argon2 IS NOT NULL AND scram_salt = ?",
        )
        .bind(&v.salt)
        .bind(i64::from(v.iterations))
        .bind(&v.stored_key[..])
        .bind(&v.server_key[..])
        .bind(user_id.to_string())
        .bind(replacing_salt)
        .execute(&self.pool)
        .await
        .map_err(db)?;
        Ok(done.rows_affected() == 1)
    }

    async fn scram_iteration_counts(&self, server_id: &ServerId) -> StoreResult<Vec<(u32, u64)>> {
        let rows: Vec<(i64, i64)> = sqlx::query_as(
            "SELECT scram_iterations, COUNT(*) FROM person \
             WHERE server_id = ? AND password_argon2 IS NOT NULL \
             AND scram_iterations IS NOT NULL \
             GROUP BY scram_iterations ORDER BY scram_iterations",
        )
        .bind(server_id.as_str())
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        rows.into_iter()
            .map(|(iterations, users)| {
                let iterations = u32::try_from(iterations)
                    .map_err(|_| other(format!("stored SCRAM iterations {iterations}")))?;
                Ok((iterations, count(users)?))
            })
            .collect()
    }

    async fn set_totp_secret(&self, user_id: Uuid, secret: Option<&[u8]>) -> StoreResult<()> {
        let done =
            sqlx::query("UPDATE person SET totp_secret = ?, totp_last_step = -1 WHERE user_id = ?")
                .bind(secret.map(|secret| {
                    self.sealer
                        .seal(Column::TotpSecret, &user_id.to_string(), secret)
                }))
                .bind(user_id.to_string())
                .execute(&self.pool)
                .await
                .map_err(db)?;
        found(done.rows_affected())
    }

    async fn consume_totp_step(&self, user_id: Uuid, step: i64) -> StoreResult<bool> {
        let done = sqlx::query(
            "UPDATE person SET totp_last_step = ?1 WHERE user_id = ?2 AND totp_last_step < ?1",
        )
        .bind(step)
        .bind(user_id.to_string())
        .execute(&self.pool)
        .await
        .map_err(db)?;
        Ok(done.rows_affected() == 1)
    }

    async fn set_pin_hash(&self, user_id: Uuid, pin_hash: Option<&str>) -> StoreResult<()> {
        let done = sqlx::query("UPDATE person SET pin_hash = ? WHERE user_id = ?")
            .bind(pin_hash)
            .bind(user_id.to_string())
            .execute(&self.pool)
            .await
            .map_err(db)?;
        found(done.rows_affected())
    }
}
