//! Access JWTs verified once, remembered by their hash until they expire, so a JWT call costs
//! a SHA-256 and a lookup instead of an Ed25519 verification. Bounded: when full, the least
//! useful entries go; an entry leaves on its own at the token's `exp`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use moka::sync::Cache;
use moka::Expiry;
use uuid::Uuid;

use crate::crypto::secret::SecretHash;
use crate::seams::clock::Clock;

/// Tokens remembered at most (about 100 bytes each).
const CAPACITY: u64 = 100_000;

/// What a verified access token says about its session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VerifiedToken {
    pub sid: Uuid,
    pub exp: i64,
}

struct UntilExp {
    clock: Arc<dyn Clock>,
}

impl Expiry<SecretHash, VerifiedToken> for UntilExp {
    fn expire_after_create(
        &self,
        _key: &SecretHash,
        value: &VerifiedToken,
        _created_at: Instant,
    ) -> Option<Duration> {
        Some(Duration::from_secs(
            value.exp.saturating_sub(self.clock.now()).max(1) as u64,
        ))
    }
}

pub struct VerifiedTokens(Cache<SecretHash, VerifiedToken>);

impl VerifiedTokens {
    pub fn new(clock: Arc<dyn Clock>) -> Self {
        Self(
            Cache::builder()
                .max_capacity(CAPACITY)
                .expire_after(UntilExp { clock })
                .build(),
        )
    }

    pub fn get(&self, hash: &SecretHash) -> Option<VerifiedToken> {
        self.0.get(hash)
    }

    pub fn insert(&self, hash: SecretHash, token: VerifiedToken) {
        self.0.insert(hash, token);
    }
}
