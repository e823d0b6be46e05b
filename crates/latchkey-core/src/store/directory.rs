//! Family A's management data: attributes at each scope, and the listings of accounts and
//! users. Setting a scope's attributes replaces them all in one transaction; updating merges
//! the given keys in one transaction that also checks the scope's size, so concurrent updates
//! can never grow a scope past its bound.

use async_trait::async_trait;
use uuid::Uuid;

use super::StoreResult;
use crate::model::directory::{
    AccountColumn, AttributeScope, Attributes, ListedAccount, Listing, Page, UserColumn,
    UserSummary,
};
use crate::model::ids::ServerId;

#[async_trait]
pub trait DirectoryStore: Send + Sync + 'static {
    async fn attributes(&self, scope: &AttributeScope) -> StoreResult<Attributes>;
    /// Makes `attributes` the scope's whole set.
    async fn replace_attributes(
        &self,
        scope: &AttributeScope,
        attributes: &Attributes,
    ) -> StoreResult<()>;
    /// Sets the given keys, keeping the others; false (nothing changed) when the scope would
    /// then hold more than `max_keys`.
    async fn merge_attributes(
        &self,
        scope: &AttributeScope,
        attributes: &Attributes,
        max_keys: u64,
    ) -> StoreResult<bool>;
    /// Deletes every attribute of the scope; answers how many.
    async fn delete_attributes(&self, scope: &AttributeScope) -> StoreResult<u64>;
    async fn delete_attribute(&self, scope: &AttributeScope, key: &str) -> StoreResult<bool>;

    /// The server's accounts the listing asks for (the filter applies to their users'
    /// attributes), with the count of all that match.
    async fn list_accounts(
        &self,
        server_id: &ServerId,
        listing: &Listing<AccountColumn>,
    ) -> StoreResult<Page<ListedAccount>>;
    /// The server's users the listing asks for, aggregated over their accounts.
    async fn list_users(
        &self,
        server_id: &ServerId,
        listing: &Listing<UserColumn>,
    ) -> StoreResult<Page<UserSummary>>;
    /// Deletes one account of the server (its pushed requests go with it; browser sessions
    /// forget it).
    async fn delete_account(&self, server_id: &ServerId, account_id: i64) -> StoreResult<bool>;
    /// Deletes every account of a user; answers how many.
    async fn delete_user_accounts(&self, user_id: Uuid) -> StoreResult<u64>;
}
