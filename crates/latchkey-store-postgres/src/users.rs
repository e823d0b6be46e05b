//! Users and their credentials. Each credential is one UPDATE of its own columns, so setting a
//! PIN never overwrites a password set concurrently; a TOTP step is consumed by the UPDATE that
//! finds it newer than the last one used; a re-derived SCRAM verifier replaces only the
//! verifier (by its salt) it was derived beside.

use async_trait::async_trait;
use latchkey_core::crypto::sealing::Column;
use latchkey_core::model::ids::{ServerId, UserId};
use latchkey_core::model::{PasswordHashes, ScramVerifier, User, UserCredentials};
use latchkey_core::store::{StoreResult, UserStore};
use uuid::Uuid;

use crate::rows::{counter, CredentialsRow, UserRow, CREDENTIALS_COLUMNS, USER_COLUMNS};
use crate::{count, db, found, PgStore};

#[async_trait]
impl UserStore for PgStore {
    async fn insert_user(&self, user: &User) -> StoreResult<()> {
        sqlx::query(&format!(
            "INSERT INTO person ({USER_COLUMNS}) VALUES ($1, $2, $3, $4)"
        ))
        .bind(user.id)
        .bind(user.server_id.as_str())
        .bind(user.userid.as_str())
        .bind(user.created_at)
        .execute(&self.pool)
        .await
        .map_err(db)?;
        Ok(())
    }

    async fn user(&self, server_id: &ServerId, userid: &UserId) -> StoreResult<Option<User>> {
        sqlx::query_as::<_, UserRow>(&format!(
            "SELECT {USER_COLUMNS} FROM person WHERE server_id = $1 AND userid = $2"
        ))
        .bind(server_id.as_str())
        .bind(userid.as_str())
        .fetch_optional(&self.pool)
        .await
        .map_err(db)?
        .map(User::try_from)
        .transpose()
    }

    async fn user_by_id(&self, id: Uuid) -> StoreResult<Option<User>> {
        sqlx::query_as::<_, UserRow>(&format!(
            "SELECT {USER_COLUMNS} FROM person WHERE user_id = $1"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await
        .map_err(db)?
        .map(User::try_from)
        .transpose()
    }

    async fn users(&self, server_id: &ServerId) -> StoreResult<Vec<User>> {
        // COLLATE "C": byte order, as SQLite sorts, whatever the database's locale.
        sqlx::query_as::<_, UserRow>(&format!(
            "SELECT {USER_COLUMNS} FROM person WHERE server_id = $1 \
             ORDER BY userid COLLATE \"C\""
        ))
        .bind(server_id.as_str())
        .fetch_all(&self.pool)
        .await
        .map_err(db)?
        .into_iter()
        .map(User::try_from)
        .collect()
    }

    async fn delete_user(&self, id: Uuid) -> StoreResult<bool> {
        let done = sqlx::query("DELETE FROM person WHERE user_id = $1")
            .bind(id)
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
        sqlx::query_as::<_, CredentialsRow>(&format!(
            "SELECT {CREDENTIALS_COLUMNS} FROM person WHERE server_id = $1 AND userid = $2"
        ))
        .bind(server_id.as_str())
        .bind(userid.as_str())
        .fetch_optional(&self.pool)
        .await
        .map_err(db)?
        .map(|r| UserCredentials::try_from(r.unsealed(&self.sealer)?))
        .transpose()
    }

    async fn credentials_by_id(&self, user_id: Uuid) -> StoreResult<Option<UserCredentials>> {
        sqlx::query_as::<_, CredentialsRow>(&format!(
            "SELECT {CREDENTIALS_COLUMNS} FROM person WHERE user_id = $1"
        ))
        .bind(user_id)
        .fetch_optional(&self.pool)
        .await
        .map_err(db)?
        .map(|r| UserCredentials::try_from(r.unsealed(&self.sealer)?))
        .transpose()
    }

    async fn set_password(&self, user_id: Uuid, h: &PasswordHashes) -> StoreResult<()> {
        let done = sqlx::query(
            "UPDATE person SET password_argon2 = $1, scram_salt = $2, scram_iterations = $3, \
             scram_stored_key = $4, scram_server_key = $5 WHERE user_id = $6",
        )
        .bind(&h.argon2)
        .bind(&h.scram.salt)
        .bind(i64::from(h.scram.iterations))
        .bind(&h.scram.stored_key[..])
        .bind(&h.scram.server_key[..])
        .bind(user_id)
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
        // One conditional UPDATE: a password set concurrently changes the salt first (and
        // this update then finds no row) or after (and replaces this verifier with its own).
        let done = sqlx::query(
            "UPDATE person SET scram_salt = $1, scram_iterations = $2, scram_stored_key = $3, \
             scram_server_key = $4 \
             WHERE user_id = $5 AND password_argon2 IS NOT NULL AND scram_salt = $6",
        )
        .bind(&v.salt)
        .bind(i64::from(v.iterations))
        .bind(&v.stored_key[..])
        .bind(&v.server_key[..])
        .bind(user_id)
        .bind(replacing_salt)
        .execute(&self.pool)
        .await
        .map_err(db)?;
        Ok(done.rows_affected() == 1)
    }

    async fn scram_iteration_counts(&self, server_id: &ServerId) -> StoreResult<Vec<(u32, u64)>> {
        let rows: Vec<(i64, i64)> = sqlx::query_as(
            "SELECT scram_iterations, COUNT(*) FROM person \
             WHERE server_id = $1 AND password_argon2 IS NOT NULL \
             AND scram_iterations IS NOT NULL \
             GROUP BY scram_iterations ORDER BY scram_iterations",
        )
        .bind(server_id.as_str())
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        rows.into_iter()
            .map(|(iterations, users)| {
                Ok((counter(iterations, "SCRAM iterations")?, count(users)?))
            })
            .collect()
    }

    async fn set_totp_secret(&self, user_id: Uuid, secret: Option<&[u8]>) -> StoreResult<()> {
        let done = sqlx::query(
            "UPDATE person SET totp_secret = $1, totp_last_step = -1 WHERE user_id = $2",
        )
        .bind(secret.map(|secret| {
            self.sealer
                .seal(Column::TotpSecret, &user_id.to_string(), secret)
        }))
        .bind(user_id)
        .execute(&self.pool)
        .await
        .map_err(db)?;
        found(done.rows_affected())
    }

    async fn consume_totp_step(&self, user_id: Uuid, step: i64) -> StoreResult<bool> {
        // One conditional UPDATE: of two processes checking the same code, one row lock
        // decides and the loser re-reads the new step and updates nothing.
        let done = sqlx::query(
            "UPDATE person SET totp_last_step = $1 WHERE user_id = $2 AND totp_last_step < $1",
        )
        .bind(step)
        .bind(user_id)
        .execute(&self.pool)
        .await
        .map_err(db)?;
        Ok(done.rows_affected() == 1)
    }

    async fn set_pin_hash(&self, user_id: Uuid, pin_hash: Option<&str>) -> StoreResult<()> {
        let done = sqlx::query("UPDATE person SET pin_hash = $1 WHERE user_id = $2")
            .bind(pin_hash)
            .bind(user_id)
            .execute(&self.pool)
            .await
            .map_err(db)?;
        found(done.rows_affected())
    }
}
