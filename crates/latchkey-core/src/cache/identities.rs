//! Who a browser session is, for `/forward-auth`: its user's name and the methods it was
//! signed in with. Both are fixed once a session is active, so an entry never needs updating;
//! the session's liveness is checked on every request by [`crate::cache::sessions`] first, so
//! an entry of a revoked session is never used (and is evicted or swept in time).

use std::sync::Arc;

use quick_cache::sync::Cache;
use uuid::Uuid;

use crate::model::ids::UserId;
use crate::model::AuthMethod;

/// Entries at most: as many as the session cache by default, far smaller each.
const CAPACITY: usize = 100_000;

/// What a proxy is told about the person behind a session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub session_id: Uuid,
    pub user_id: Uuid,
    pub userid: UserId,
    /// The session's methods (`amr`), e.g. `["pwd", "otp"]`.
    pub methods: Vec<AuthMethod>,
}

pub struct Identities(Cache<Uuid, Arc<Identity>>);

impl Identities {
    pub fn new() -> Self {
        Self(Cache::new(CAPACITY))
    }

    pub fn get(&self, session_id: &Uuid) -> Option<Arc<Identity>> {
        self.0.get(session_id)
    }

    pub fn insert(&self, identity: Arc<Identity>) {
        self.0.insert(identity.session_id, identity);
    }
}

impl Default for Identities {
    fn default() -> Self {
        Self::new()
    }
}
