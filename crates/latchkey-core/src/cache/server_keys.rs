//! Servers' ids and keys, read from the store once per process. A server is never re-keyed nor
//! deleted, so what is cached here never goes stale and no other process has to say when it
//! changes; its name can change and is not kept here. Logins read a server's key on every
//! message (SCRAM: twice per login), which was one store read each.

use std::sync::Arc;

use quick_cache::sync::Cache;

use crate::model::ids::ServerId;
use crate::model::Server;

/// Servers remembered at most; past that, the least used are read again when asked for.
const CAPACITY: usize = 1_024;

/// The parts of a [`Server`] that never change.
pub struct ServerKeys {
    pub id: ServerId,
    /// Ed25519 seed of the server's identity key (also the key of its HMACs).
    pub secret_key: [u8; 32],
    pub public_key: [u8; 32],
}

impl From<Server> for ServerKeys {
    fn from(server: Server) -> Self {
        Self {
            id: server.id,
            secret_key: server.secret_key,
            public_key: server.public_key,
        }
    }
}

/// Only servers that exist are remembered (an unknown id is asked of the store every time),
/// so the cache holds at most the servers there are, and at most [`CAPACITY`].
pub struct ServerKeysCache(Cache<ServerId, Arc<ServerKeys>>);

impl ServerKeysCache {
    pub fn new() -> Self {
        Self(Cache::new(CAPACITY))
    }

    pub fn get(&self, id: &ServerId) -> Option<Arc<ServerKeys>> {
        self.0.get(id)
    }

    pub fn remember(&self, server: Server) -> Arc<ServerKeys> {
        let keys = Arc::new(ServerKeys::from(server));
        self.0.insert(keys.id.clone(), keys.clone());
        keys
    }
}

impl Default for ServerKeysCache {
    fn default() -> Self {
        Self::new()
    }
}
