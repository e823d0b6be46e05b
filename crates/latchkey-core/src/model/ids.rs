//! Identifiers parsed at the edge: once a value is a [`ServerId`] or a [`UserId`] it is known
//! to be well formed, so the services never re-check.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use compact_str::CompactString;
use serde::{Deserialize, Serialize};

use crate::error::Error;

/// A server (tenant) id: base64url of 16 random bytes (22 characters).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ServerId(String);

impl ServerId {
    pub fn generate() -> Self {
        Self(URL_SAFE_NO_PAD.encode(crate::crypto::secret::random_bytes::<16>()))
    }

    /// Accepts 1..=64 characters of the base64url alphabet.
    pub fn parse(s: &str) -> Result<Self, Error> {
        let ok = (1..=64).contains(&s.len())
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if ok {
            Ok(Self(s.to_owned()))
        } else {
            Err(Error::Invalid(
                "server id must be 1 to 64 base64url characters".into(),
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for ServerId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A user name as people type it (for families B and D, the e-mail address). Compared exactly.
/// Held in place up to 24 bytes (most e-mail addresses), so a cached session's identity is
/// one heap block for the reverse proxy's check to read.
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct UserId(CompactString);

impl UserId {
    pub const MAX_BYTES: usize = 256;

    /// 1..=256 bytes of UTF-8 without control characters, without ':' (it separates name and
    /// password in HTTP Basic) and without leading or trailing white space.
    pub fn parse(s: &str) -> Result<Self, Error> {
        if s.is_empty() || s.len() > Self::MAX_BYTES {
            return Err(Error::Invalid(format!(
                "user name must be 1 to {} bytes",
                Self::MAX_BYTES
            )));
        }
        if s.chars().any(|c| c.is_control() || c == ':') || s.trim() != s {
            return Err(Error::Invalid(
                "user name must not contain control characters or ':' nor start or end with white space"
                    .into(),
            ));
        }
        Ok(Self(CompactString::from(s)))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for UserId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::fmt::Debug for UserId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "UserId({})", self.0)
    }
}

/// A web site's name for one browser session (family A `X-nonce`): 16 to 128 characters of
/// the base64 or base64url alphabet, `=` padding allowed at the end.
#[derive(Clone, PartialEq, Eq)]
pub struct Nonce(String);

impl Nonce {
    pub fn parse(s: &str) -> Result<Self, Error> {
        let body = s.trim_end_matches('=');
        let ok = (16..=128).contains(&s.len())
            && s.len() - body.len() <= 2
            && body
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'-' | b'_'));
        if ok {
            Ok(Self(s.to_owned()))
        } else {
            Err(Error::Invalid(
                "X-nonce must be 16 to 128 characters of the base64 or base64url alphabet".into(),
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Nonce {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Nonce(..)")
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn nonces_are_16_to_128_base64_characters() {
        assert!(Nonce::parse("abcdefghijklmnop").is_ok());
        assert!(Nonce::parse("abcdefghijklmn+/==").is_ok());
        assert!(Nonce::parse("abcdefghijklmn-_").is_ok());
        assert!(Nonce::parse("short").is_err());
        assert!(Nonce::parse(&"a".repeat(129)).is_err());
        assert!(Nonce::parse("abcdefghijklmnop===").is_err());
        assert!(Nonce::parse("abcdefgh=ijklmnop").is_err());
        assert!(Nonce::parse("abcdefghijklmnop!").is_err());
    }

    use super::*;

    #[test]
    fn user_names_are_bounded_and_free_of_separators() {
        assert!(UserId::parse("alice@example.com").is_ok());
        assert!(UserId::parse("").is_err());
        assert!(UserId::parse("a:b").is_err());
        assert!(UserId::parse(" alice").is_err());
        assert!(UserId::parse("al\u{0}ice").is_err());
        assert!(UserId::parse(&"x".repeat(257)).is_err());
        assert!(UserId::parse(&"x".repeat(256)).is_ok());
    }

    #[test]
    fn server_ids_use_the_base64url_alphabet() {
        assert!(ServerId::parse(ServerId::generate().as_str()).is_ok());
        assert!(ServerId::parse("a/b").is_err());
        assert!(ServerId::parse("").is_err());
    }
}
