//! Password-derived secrets. Setting a password derives both an argon2id hash (for HTTP Basic)
//! and a SCRAM-SHA-256 verifier (RFC 5802/7677, for the SCRAM family); neither can be turned
//! back into the password. The hashing is CPU-heavy and callers run it on the blocking pool.

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use hmac::{Hmac, Mac};
use rand::rngs::OsRng;
use sha2::{Digest, Sha256};

use crate::error::Error;
use crate::model::{PasswordHashes, ScramVerifier};
use crate::settings::Argon2Params;

/// Longest password accepted, in bytes (a bound on work per request, not a policy).
pub const MAX_PASSWORD_BYTES: usize = 1024;

type HmacSha256 = Hmac<Sha256>;

fn argon2(params: Argon2Params) -> Result<Argon2<'static>, Error> {
    let params = Params::new(
        params.memory_kib,
        params.iterations,
        params.parallelism,
        None,
    )
    .map_err(|e| Error::Internal(format!("argon2 parameters: {e}")))?;
    Ok(Argon2::new(Algorithm::Argon2id, Version::V0x13, params))
}

/// argon2id PHC string of `secret` with a fresh random salt.
pub fn hash_secret(secret: &[u8], params: Argon2Params) -> Result<String, Error> {
    let salt = SaltString::generate(&mut OsRng);
    argon2(params)?
        .hash_password(secret, &salt)
        .map(|h| h.to_string())
        .map_err(|e| Error::Internal(format!("argon2 hashing: {e}")))
}

/// Checks `secret` against a PHC string; the parameters are read from the string itself.
/// A malformed stored hash counts as a mismatch (and is logged).
pub fn verify_secret(secret: &[u8], phc: &str) -> bool {
    match PasswordHash::new(phc) {
        Ok(parsed) => Argon2::default().verify_password(secret, &parsed).is_ok(),
        Err(e) => {
            tracing::error!(error = %e, "stored argon2 hash is malformed");
            false
        }
    }
}

/// SASLprep (RFC 4013) of a password, falling back to the raw bytes for strings SASLprep
/// refuses, as PostgreSQL does, so every UTF-8 password can be set and used.
pub fn normalize_password(password: &str) -> Vec<u8> {
    match stringprep::saslprep(password) {
        Ok(prepared) => prepared.as_bytes().to_vec(),
        Err(_) => password.as_bytes().to_vec(),
    }
}

pub fn hmac_sha256(key: &[u8], data: &[u8]) -> [u8; 32] {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut mac = match HmacSha256::new_from_slice(key) {
        Ok(mac) => mac,
        Err(_) => unreachable_hmac(),
    };
    mac.update(data);
    mac.finalize().into_bytes().into()
}

#[cold]
fn unreachable_hmac() -> HmacSha256 {
    // HMAC's new_from_slice only fails for fixed-size-key MACs; SHA-256 HMAC takes any key.
    #[allow(clippy::expect_used)]
    HmacSha256::new_from_slice(&[0u8; 32]).expect("HMAC accepts any key length")
}

/// SaltedPassword of RFC 5802: PBKDF2-HMAC-SHA-256.
pub fn salted_password(normalized: &[u8], salt: &[u8], iterations: u32) -> [u8; 32] {
    let mut out = [0u8; 32];
    pbkdf2::pbkdf2_hmac::<Sha256>(normalized, salt, iterations, &mut out);
    out
}

/// The SCRAM-SHA-256 verifier of a password with the given salt and iteration count.
pub fn scram_verifier(password: &str, salt: Vec<u8>, iterations: u32) -> ScramVerifier {
    let salted = salted_password(&normalize_password(password), &salt, iterations);
    let client_key = hmac_sha256(&salted, b"Client Key");
    ScramVerifier {
        stored_key: Sha256::digest(client_key).into(),
        server_key: hmac_sha256(&salted, b"Server Key"),
        salt,
        iterations,
    }
}

/// Derives everything a password is stored as. Slow on purpose: call from the blocking pool.
pub fn derive_password_hashes(
    password: &str,
    argon2_params: Argon2Params,
    scram_iterations: u32,
) -> Result<PasswordHashes, Error> {
    check_password_shape(password)?;
    Ok(PasswordHashes {
        argon2: hash_secret(password.as_bytes(), argon2_params)?,
        scram: scram_verifier(
            password,
            crate::crypto::secret::random_bytes::<16>().to_vec(),
            scram_iterations,
        ),
    })
}

/// A password to set must be 1..=1024 bytes.
pub fn check_password_shape(password: &str) -> Result<(), Error> {
    if password.is_empty() || password.len() > MAX_PASSWORD_BYTES {
        return Err(Error::Invalid(format!(
            "password must be 1 to {MAX_PASSWORD_BYTES} bytes"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn light() -> Argon2Params {
        Argon2Params {
            memory_kib: 1024,
            iterations: 1,
            parallelism: 1,
        }
    }

    #[test]
    fn argon2id_hashes_verify_only_the_right_secret() {
        let phc = hash_secret(b"correct horse", light()).unwrap();
        assert!(phc.starts_with("$argon2id$"));
        assert!(verify_secret(b"correct horse", &phc));
        assert!(!verify_secret(b"wrong horse", &phc));
        assert!(!verify_secret(b"correct horse", "not a phc string"));
    }

    #[test]
    fn passwords_out_of_bounds_are_refused() {
        assert!(derive_password_hashes("", light(), 4096).is_err());
        assert!(derive_password_hashes(&"x".repeat(1025), light(), 4096).is_err());
    }
}
