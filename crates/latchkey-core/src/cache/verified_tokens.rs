//! Access JWTs verified once, remembered until they expire, so a JWT call costs a lookup
//! instead of an Ed25519 verification. Entries are keyed by the token's own text: hashing it
//! with SHA-256 first (as session tokens are, whose hash is what the store knows) cost a JWT
//! check its seven blocks, more than everything else the check does. The lookup hashes the
//! token's last bytes ([`hashed_part`]) with the map's keyed hash, and a candidate is compared
//! with the whole presented token in constant time ([`same_bytes`]). Bounded by the bytes the
//! tokens take (quick_cache: when full, the least useful entries go); the caller checks `exp`
//! on every use, and [`sweep`] drops the expired entries so they do not hold memory until
//! evicted.
//!
//! [`sweep`]: VerifiedTokens::sweep

use std::hash::{Hash, Hasher};

use quick_cache::sync::Cache;
use quick_cache::{DefaultHashBuilder, Equivalent, Weighter};
use uuid::Uuid;

/// The memory the cached tokens may take, counting each entry's text and bookkeeping
/// ([`ENTRY_OVERHEAD`]): 16 MiB, about 35 000 tokens of 400 bytes.
const CAPACITY_BYTES: u64 = 16 << 20;
/// An entry's bytes besides its text: the key's box and length, the value, the map's slot.
const ENTRY_OVERHEAD: u64 = 64;
/// Tokens of the usual size that fit, for sizing the map.
const ESTIMATED_TOKENS: usize = 35_000;

/// What a verified access token says about its session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VerifiedToken {
    pub sid: Uuid,
    pub exp: i64,
}

/// The bytes of a token its entry is found by: its last 32, a JWT's signature. Only verified
/// tokens are stored, and they differ there; a presented token that shares them with a stored
/// one is compared with it in full. (Hashing all of a JWT's 400 bytes cost its lookup more
/// than the rest of it.)
fn hashed_part(token: &[u8]) -> &[u8] {
    &token[token.len().saturating_sub(HASHED_BYTES)..]
}

const HASHED_BYTES: usize = 32;

/// A verified token's text. It hashes as [`Presented`] does.
struct TokenText(Box<[u8]>);

impl Hash for TokenText {
    fn hash<H: Hasher>(&self, state: &mut H) {
        hashed_part(&self.0).hash(state);
    }
}

impl PartialEq for TokenText {
    fn eq(&self, other: &Self) -> bool {
        same_bytes(&self.0, &other.0)
    }
}

impl Eq for TokenText {}

/// A token as presented by a request, looked up without being copied.
struct Presented<'a>(&'a [u8]);

impl Hash for Presented<'_> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        hashed_part(self.0).hash(state);
    }
}

impl Equivalent<TokenText> for Presented<'_> {
    fn equivalent(&self, key: &TokenText) -> bool {
        same_bytes(self.0, &key.0)
    }
}

/// Equal bytes, compared without a branch on their contents (every byte is read whatever
/// differs first), so the time taken does not tell how much of a token was right. The length
/// is not secret.
fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |diff, (x, y)| diff | (x ^ y)) == 0
}

#[derive(Clone)]
struct TokenBytes;

impl Weighter<TokenText, VerifiedToken> for TokenBytes {
    fn weight(&self, key: &TokenText, _: &VerifiedToken) -> u64 {
        key.0.len() as u64 + ENTRY_OVERHEAD
    }
}

pub struct VerifiedTokens(Cache<TokenText, VerifiedToken, TokenBytes, DefaultHashBuilder>);

impl VerifiedTokens {
    pub fn new() -> Self {
        Self(Cache::with_weighter(
            ESTIMATED_TOKENS,
            CAPACITY_BYTES,
            TokenBytes,
        ))
    }

    pub fn get(&self, token: &[u8]) -> Option<VerifiedToken> {
        self.0.get(&Presented(token))
    }

    pub fn insert(&self, token: &str, verified: VerifiedToken) {
        self.0.insert(TokenText(token.as_bytes().into()), verified);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_is_found_by_its_exact_text_only() {
        let tokens = VerifiedTokens::new();
        let verified = VerifiedToken {
            sid: Uuid::new_v4(),
            exp: 100,
        };
        tokens.insert("header.payload.signature", verified);
        assert_eq!(tokens.get(b"header.payload.signature"), Some(verified));
        for other in [
            "header.payload.signaturf",
            "header.payload.signatur",
            "header.payload.signature.",
            "Header.payload.signature",
            "",
        ] {
            assert_eq!(tokens.get(other.as_bytes()), None, "{other}");
        }
        tokens.sweep(100);
        assert_eq!(tokens.get(b"header.payload.signature"), None);
    }

    #[test]
    fn tokens_that_end_alike_are_told_apart() {
        let tokens = VerifiedTokens::new();
        let stored = format!("{}.{}", "h".repeat(300), "s".repeat(86));
        let verified = VerifiedToken {
            sid: Uuid::new_v4(),
            exp: 100,
        };
        tokens.insert(&stored, verified);
        // The same last 32 bytes (the part hashed), another start.
        let forged = format!("{}.{}", "x".repeat(300), "s".repeat(86));
        assert_eq!(tokens.get(forged.as_bytes()), None);
        assert_eq!(tokens.get(stored.as_bytes()), Some(verified));
    }

    #[test]
    fn bytes_are_the_same_only_when_all_of_them_are() {
        assert!(same_bytes(b"", b""));
        assert!(same_bytes(b"abc", b"abc"));
        assert!(!same_bytes(b"abc", b"abd"));
        assert!(!same_bytes(b"abc", b"ab"));
        assert!(!same_bytes(b"xbc", b"abc"));
    }

    #[test]
    fn the_cache_is_bounded_by_the_bytes_of_its_tokens() {
        let tokens = VerifiedTokens::new();
        let token = |i: usize| format!("{i:0400}");
        let n = (CAPACITY_BYTES / (400 + ENTRY_OVERHEAD)) as usize * 2;
        for i in 0..n {
            let verified = VerifiedToken {
                sid: Uuid::nil(),
                exp: i64::MAX,
            };
            tokens.insert(&token(i), verified);
        }
        assert!(tokens.0.weight() <= CAPACITY_BYTES, "{}", tokens.0.weight());
        assert!(tokens.0.len() <= n / 2, "{}", tokens.0.len());
    }
}
