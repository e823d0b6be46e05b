//! Access JWTs: compact JWS signed with Ed25519 (`alg` EdDSA, `kid` in the header), claims
//! `iss`, `sub`, `sid`, `iat`, `exp`, `amr`. Keys live in the store so every process signs with
//! the same key and publishes the same JWKS; a rotation makes a new active key and keeps the old
//! public keys published until the tokens they signed have expired.
//!
//! Verification is strict (only EdDSA, only known kids, `verify_strict`, `exp` and `iss`
//! checked) and cached ([`crate::cache::verified_tokens`]): a token verified once is remembered, so a
//! repeated call costs a SHA-256 and a map lookup, not a signature check.

use std::collections::HashMap;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ed25519_dalek::{Signature, Signer, SigningKey as DalekSigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::error::{Error, Result};
use crate::model::SigningKey;

/// The claims latchkey puts in an access token.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessClaims {
    pub iss: String,
    /// The user id (e-mail for families B and D).
    pub sub: String,
    /// The session id.
    pub sid: Uuid,
    pub iat: i64,
    pub exp: i64,
    /// Unique per token (128 random bits, base64url), so no two tokens are alike, even two
    /// issued in the same second. Tokens from before it existed have none.
    #[serde(default)]
    pub jti: String,
    /// RFC 8176 authentication method references.
    pub amr: Vec<String>,
}

#[derive(Serialize, Deserialize)]
struct Header {
    alg: String,
    #[serde(default)]
    typ: Option<String>,
    #[serde(default)]
    kid: Option<String>,
}

/// One JWK of the published set.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Jwk {
    pub kty: &'static str,
    pub crv: &'static str,
    pub x: String,
    pub kid: String,
    pub alg: &'static str,
    #[serde(rename = "use")]
    pub use_: &'static str,
}

/// The signing keys as loaded from the store.
#[derive(Default)]
pub struct KeyRing {
    active: Option<(String, DalekSigningKey)>,
    /// Every key whose tokens may still be alive, by kid.
    published: HashMap<String, VerifyingKey>,
    jwks: Vec<Jwk>,
}

impl KeyRing {
    /// Builds the ring from stored keys (newest first): the newest unretired key signs; keys
    /// retired less than `ttl` ago are still published.
    pub fn from_keys(keys: &[SigningKey], now: i64, ttl: i64) -> KeyRing {
        let mut ring = KeyRing::default();
        for key in keys {
            let live = key.retired_at.is_none_or(|at| at + ttl > now);
            if !live {
                continue;
            }
            let Ok(verifying) = VerifyingKey::from_bytes(&key.public_key) else {
                tracing::error!(kid = %key.kid, "stored signing key has an invalid public key");
                continue;
            };
            if key.retired_at.is_none() && ring.active.is_none() {
                ring.active = Some((
                    key.kid.clone(),
                    DalekSigningKey::from_bytes(&key.secret_key),
                ));
            }
            ring.jwks.push(Jwk {
                kty: "OKP",
                crv: "Ed25519",
                x: URL_SAFE_NO_PAD.encode(key.public_key),
                kid: key.kid.clone(),
                alg: "EdDSA",
                use_: "sig",
            });
            ring.published.insert(key.kid.clone(), verifying);
        }
        ring
    }

    pub fn has_active(&self) -> bool {
        self.active.is_some()
    }

    pub fn jwks(&self) -> &[Jwk] {
        &self.jwks
    }

    pub fn knows(&self, kid: &str) -> bool {
        self.published.contains_key(kid)
    }

    /// Signs `claims` with the active key.
    pub fn sign(&self, claims: &AccessClaims) -> Result<String> {
        let (kid, key) = self
            .active
            .as_ref()
            .ok_or_else(|| Error::Internal("no active signing key".into()))?;
        let header = Header {
            alg: "EdDSA".into(),
            typ: Some("JWT".into()),
            kid: Some(kid.clone()),
        };
        let signing_input = format!("{}.{}", b64_json(&header)?, b64_json(claims)?);
        let signature = key.sign(signing_input.as_bytes());
        Ok(format!(
            "{signing_input}.{}",
            URL_SAFE_NO_PAD.encode(signature.to_bytes())
        ))
    }

    /// Checks the signature and the header; answers the claims unchecked for time and issuer.
    pub fn verify_signature(&self, token: &str) -> Result<AccessClaims> {
        let bad = || Error::SessionInvalid;
        let mut parts = token.split('.');
        let (Some(header), Some(claims), Some(signature), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(bad());
        };
        let header: Header = decode_json(header).ok_or_else(bad)?;
        if header.alg != "EdDSA" {
            return Err(bad());
        }
        let kid = header.kid.ok_or_else(bad)?;
        let key = self.published.get(&kid).ok_or_else(bad)?;
        let signature = URL_SAFE_NO_PAD.decode(signature).map_err(|_| bad())?;
        let signature = Signature::from_slice(&signature).map_err(|_| bad())?;
        let signing_input = &token[..header_and_claims_len(token)];
        key.verify_strict(signing_input.as_bytes(), &signature)
            .map_err(|_| bad())?;
        decode_json(claims).ok_or_else(bad)
    }
}

fn header_and_claims_len(token: &str) -> usize {
    token.rfind('.').unwrap_or(token.len())
}

fn decode_json<T: for<'de> Deserialize<'de>>(segment: &str) -> Option<T> {
    let bytes = URL_SAFE_NO_PAD.decode(segment).ok()?;
    serde_json::from_slice(&bytes).ok()
}

fn b64_json<T: Serialize>(value: &T) -> Result<String> {
    serde_json::to_vec(value)
        .map(|json| URL_SAFE_NO_PAD.encode(json))
        .map_err(|e| Error::Internal(format!("json: {e}")))
}

/// A fresh signing key with a kid derived from its public key.
pub fn generate_signing_key(now: i64) -> SigningKey {
    let key = DalekSigningKey::from_bytes(&crate::crypto::secret::random_bytes::<32>());
    let public_key = key.verifying_key().to_bytes();
    let kid = URL_SAFE_NO_PAD.encode(&Sha256::digest(public_key)[..12]);
    SigningKey {
        kid,
        secret_key: key.to_bytes(),
        public_key,
        created_at: now,
        retired_at: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(exp: i64) -> AccessClaims {
        AccessClaims {
            iss: "latchkey".into(),
            sub: "alice@example.com".into(),
            sid: Uuid::new_v4(),
            iat: 100,
            exp,
            jti: "jti".into(),
            amr: vec!["pwd".into()],
        }
    }

    #[test]
    fn tokens_signed_by_the_ring_verify_and_tampered_ones_do_not() {
        let key = generate_signing_key(0);
        let ring = KeyRing::from_keys(&[key], 0, 900);
        let signed = claims(1000);
        let token = ring.sign(&signed).unwrap();
        assert_eq!(ring.verify_signature(&token).unwrap(), signed);
        let mut tampered = token.clone();
        tampered.insert(token.find('.').unwrap() + 2, 'x');
        assert!(ring.verify_signature(&tampered).is_err());
        let other = KeyRing::from_keys(&[generate_signing_key(0)], 0, 900);
        assert!(other.verify_signature(&token).is_err());
    }

    #[test]
    fn alg_none_and_other_algorithms_are_refused() {
        let ring = KeyRing::from_keys(&[generate_signing_key(0)], 0, 900);
        let body = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims(1000)).unwrap());
        for header in [
            r#"{"alg":"none","typ":"JWT"}"#,
            r#"{"alg":"HS256","typ":"JWT","kid":"x"}"#,
        ] {
            let token = format!("{}.{body}.", URL_SAFE_NO_PAD.encode(header));
            assert!(ring.verify_signature(&token).is_err());
        }
    }

    #[test]
    fn retired_keys_stay_published_until_their_tokens_expire() {
        let mut old = generate_signing_key(0);
        old.retired_at = Some(1000);
        let new = generate_signing_key(1000);
        let ring = KeyRing::from_keys(&[new.clone(), old.clone()], 1500, 900);
        assert_eq!(ring.jwks().len(), 2);
        assert_eq!(ring.active.as_ref().unwrap().0, new.kid);
        let later = KeyRing::from_keys(&[new, old.clone()], 1901, 900);
        assert_eq!(later.jwks().len(), 1);
        assert!(!later.knows(&old.kid));
    }
}
