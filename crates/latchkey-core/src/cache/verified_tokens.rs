//! Access JWTs verified once, remembered by their hash until they expire, so a JWT call costs
//! a SHA-256 and a lookup instead of an Ed25519 verification. Bounded (quick_cache: when full,
//! the least useful entries go); the caller checks `exp` on every use, and [`sweep`] drops the
//! expired entries so they do not hold memory until evicted.
//!
//! [`sweep`]: VerifiedTokens::sweep

use quick_cache::sync::Cache;
use uuid::Uuid;

use crate::crypto::secret::SecretHash;

/// Tokens remembered at most (about 100 bytes each).
const CAPACITY: usize = 100_000;

/// What a verified access token says about its session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VerifiedToken {
    pub sid: Uuid,
    pub exp: i64,
}

pub struct VerifiedTokens(Cache<SecretHash, VerifiedToken>);

impl VerifiedTokens {
    pub fn new() -> Self {
        Self(Cache::new(CAPACITY))
    }

    pub fn get(&self, hash: &SecretHash) -> Option<VerifiedToken> {
        self.0.get(hash)
    }

    pub fn insert(&self, hash: SecretHash, token: VerifiedToken) {
        self.0.insert(hash, token);
    }

    /// Drops the tokens expired at `now`.
    pub fn sweep(&self, now: i64) {
        self.0.retain(|_, token| token.exp > now);
    }
}

impl Default for VerifiedTokens {
    fn default() -> Self {
        Self::new()
    }
}
