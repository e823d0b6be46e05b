//! Passkeys (WebAuthn credentials) of users. A credential id is unique across users (one key
//! pair on one authenticator); the ceremonies' one-time challenges are not rows here: they
//! travel signed with the ceremony and are recorded as used by
//! [`super::TokenStore::record_used_handshake`] when finished (see `services::passkeys`).

use async_trait::async_trait;
use uuid::Uuid;

use super::StoreResult;
use crate::model::PasskeyCredential;

#[async_trait]
pub trait PasskeyStore: Send + Sync + 'static {
    /// Stores a new passkey; false (nothing changed) when its credential id is stored already,
    /// for this user or another.
    async fn insert_passkey(&self, passkey: &PasskeyCredential) -> StoreResult<bool>;
    /// The user's passkeys, oldest first.
    async fn user_passkeys(&self, user_id: Uuid) -> StoreResult<Vec<PasskeyCredential>>;
    async fn passkey(&self, credential_id: &[u8]) -> StoreResult<Option<PasskeyCredential>>;
    /// Rewrites a passkey's stored state (counter, backup flags) after a use at `at`, while it
    /// is still `old` (compare-and-set); false when it moved on meanwhile or is gone.
    async fn record_passkey_use(
        &self,
        credential_id: &[u8],
        old: &str,
        passkey: &str,
        at: i64,
    ) -> StoreResult<bool>;
    /// Renames one of the user's passkeys; false when the user has no such passkey.
    async fn rename_passkey(
        &self,
        user_id: Uuid,
        credential_id: &[u8],
        name: &str,
    ) -> StoreResult<bool>;
    /// Deletes one of the user's passkeys unless it is their last way to sign in (no password,
    /// no other passkey, no companion app account): in one statement (PostgreSQL: under the
    /// user's row lock), so two removals at once cannot both take the last two.
    async fn delete_passkey(
        &self,
        user_id: Uuid,
        credential_id: &[u8],
    ) -> StoreResult<PasskeyRemoval>;
}

/// What [`PasskeyStore::delete_passkey`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PasskeyRemoval {
    Removed,
    /// The user has no such passkey.
    NotFound,
    /// It is the user's last way to sign in: kept.
    LastSignInMethod,
}
