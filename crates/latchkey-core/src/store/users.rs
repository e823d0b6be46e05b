//! Users and their credentials. Each credential is written on its own; the one-time TOTP step
//! is consumed by the statement that checks it is newer than the last one used, and a SCRAM
//! verifier is re-derived only over the verifier it replaces.

use async_trait::async_trait;
use uuid::Uuid;

use super::StoreResult;
use crate::model::ids::{ServerId, UserId};
use crate::model::{PasswordHashes, ScramVerifier, User, UserCredentials};

#[async_trait]
pub trait UserStore: Send + Sync + 'static {
    /// Conflict when the user name is taken on that server.
    async fn insert_user(&self, user: &User) -> StoreResult<()>;
    async fn user(&self, server_id: &ServerId, userid: &UserId) -> StoreResult<Option<User>>;
    async fn user_by_id(&self, id: Uuid) -> StoreResult<Option<User>>;
    async fn users(&self, server_id: &ServerId) -> StoreResult<Vec<User>>;
    /// Deletes the user and (by cascade) its sessions. False when there was none.
    async fn delete_user(&self, id: Uuid) -> StoreResult<bool>;
    async fn credentials(
        &self,
        server_id: &ServerId,
        userid: &UserId,
    ) -> StoreResult<Option<UserCredentials>>;
    /// The credentials of a user named by its internal id.
    async fn credentials_by_id(&self, user_id: Uuid) -> StoreResult<Option<UserCredentials>>;
    /// NotFound when there is no such user.
    async fn set_password(&self, user_id: Uuid, hashes: &PasswordHashes) -> StoreResult<()>;
    /// Replaces the SCRAM verifier only (never the argon2id hash) of a user whose stored
    /// verifier still has the salt `replacing_salt`, in one conditional UPDATE. False when the
    /// user is gone, has no password, or its verifier changed meanwhile (a password set since
    /// wins over a re-derivation from the old password).
    async fn set_scram_verifier(
        &self,
        user_id: Uuid,
        replacing_salt: &[u8],
        verifier: &ScramVerifier,
    ) -> StoreResult<bool>;
    /// How many users of the server have a password, per SCRAM iteration count: `(count of
    /// iterations, users)`, lowest iteration count first, no entry for a count nobody has.
    async fn scram_iteration_counts(&self, server_id: &ServerId) -> StoreResult<Vec<(u32, u64)>>;
    /// Sets or clears the TOTP secret; resets the last accepted step. NotFound when no user.
    async fn set_totp_secret(&self, user_id: Uuid, secret: Option<&[u8]>) -> StoreResult<()>;
    /// Records `step` as used when it is later than the last used one, in one statement.
    /// False when that step (or a later one) was already used: the code is refused.
    async fn consume_totp_step(&self, user_id: Uuid, step: i64) -> StoreResult<bool>;
    /// NotFound when there is no such user.
    async fn set_pin_hash(&self, user_id: Uuid, pin_hash: Option<&str>) -> StoreResult<()>;
}
