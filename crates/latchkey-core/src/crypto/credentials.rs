//! Password-derived secrets. Setting a password derives both an argon2id hash (for HTTP Basic)
//! and a SCRAM-SHA-256 verifier (RFC 5802/7677, for the SCRAM family); neither can be turned
//! back into the password. The hashing is CPU-heavy: callers run it on the hashing pool
//! ([`crate::services::hashing`]), whose workers each lend their own [`Argon2Memory`], so the
//! process never holds more argon2 memory than workers × `argon2_memory_kib`.

use argon2::password_hash::{Output, ParamsString, PasswordHash, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use hmac::{Hmac, Mac};
use rand::rngs::OsRng;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::error::Error;
use crate::model::{PasswordHashes, ScramVerifier};
use crate::settings::Argon2Params;

/// Longest password accepted, in bytes (a bound on work per request, not a policy).
pub const MAX_PASSWORD_BYTES: usize = 1024;

type HmacSha256 = Hmac<Sha256>;

/// argon2's working memory, kept by one hashing worker and reused by every hash it computes
/// (grown to the largest cost seen, never shrunk).
#[derive(Default)]
pub struct Argon2Memory(Vec<Block>);

impl Argon2Memory {
    fn blocks(&mut self, count: usize) -> &mut [Block] {
        if self.0.len() < count {
            self.0.resize(count, Block::new());
        }
        &mut self.0[..count]
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.0.len() * Block::SIZE
    }
}

fn argon2_params(params: Argon2Params) -> Result<Params, Error> {
    Params::new(
        params.memory_kib,
        params.iterations,
        params.parallelism,
        None,
    )
    .map_err(|e| Error::Internal(format!("argon2 parameters: {e}")))
}

/// argon2id PHC string of `secret` with a fresh random salt, computed in `memory`.
pub fn hash_secret(
    secret: &[u8],
    params: Argon2Params,
    memory: &mut Argon2Memory,
) -> Result<String, Error> {
    let failed = |e: &dyn std::fmt::Display| Error::Internal(format!("argon2 hashing: {e}"));
    let params = argon2_params(params)?;
    let salt = SaltString::generate(&mut OsRng);
    let mut salt_bytes = [0u8; 64];
    let salt_raw = salt.decode_b64(&mut salt_bytes).map_err(|e| failed(&e))?;
    let mut out = [0u8; Params::DEFAULT_OUTPUT_LEN];
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone())
        .hash_password_into_with_memory(
            secret,
            salt_raw,
            &mut out,
            memory.blocks(params.block_count()),
        )
        .map_err(|e| failed(&e))?;
    let hash = PasswordHash {
        algorithm: Algorithm::Argon2id.ident(),
        version: Some(Version::V0x13.into()),
        params: ParamsString::try_from(&params).map_err(|e| failed(&e))?,
        salt: Some(salt.as_salt()),
        hash: Some(Output::new(&out).map_err(|e| failed(&e))?),
    };
    Ok(hash.to_string())
}

/// Checks `secret` against a PHC string, computing in `memory`; the parameters are read from
/// the string itself. A malformed stored hash counts as a mismatch (and is logged).
pub fn verify_secret(secret: &[u8], phc: &str, memory: &mut Argon2Memory) -> bool {
    match check_phc(secret, phc, memory) {
        Ok(matches) => matches,
        Err(e) => {
            tracing::error!(error = %e, "stored argon2 hash is malformed");
            false
        }
    }
}

fn check_phc(
    secret: &[u8],
    phc: &str,
    memory: &mut Argon2Memory,
) -> Result<bool, argon2::password_hash::Error> {
    use argon2::password_hash::Error as PhcError;
    let parsed = PasswordHash::new(phc)?;
    let algorithm = Algorithm::try_from(parsed.algorithm)?;
    let version = parsed
        .version
        .map(Version::try_from)
        .transpose()?
        .unwrap_or_default();
    let params = Params::try_from(&parsed)?;
    let expected = parsed.hash.ok_or(PhcError::PhcStringField)?;
    let salt = parsed.salt.ok_or(PhcError::PhcStringField)?;
    let mut salt_bytes = [0u8; 64];
    let salt_raw = salt.decode_b64(&mut salt_bytes)?;
    let mut out = [0u8; Output::MAX_LENGTH];
    let out = &mut out[..expected.len()];
    Argon2::new(algorithm, version, params.clone())
        .hash_password_into_with_memory(secret, salt_raw, out, memory.blocks(params.block_count()))
        .map_err(PhcError::from)?;
    Ok(bool::from(out.ct_eq(expected.as_bytes())))
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

/// Derives everything a password is stored as. Slow on purpose: call from the hashing pool.
pub fn derive_password_hashes(
    password: &str,
    argon2_params: Argon2Params,
    scram_iterations: u32,
    memory: &mut Argon2Memory,
) -> Result<PasswordHashes, Error> {
    check_password_shape(password)?;
    Ok(PasswordHashes {
        argon2: hash_secret(password.as_bytes(), argon2_params, memory)?,
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
        let mut memory = Argon2Memory::default();
        let phc = hash_secret(b"correct horse", light(), &mut memory).unwrap();
        assert!(phc.starts_with("$argon2id$v=19$m=1024,t=1,p=1$"));
        assert!(verify_secret(b"correct horse", &phc, &mut memory));
        assert!(!verify_secret(b"wrong horse", &phc, &mut memory));
        assert!(!verify_secret(
            b"correct horse",
            "not a phc string",
            &mut memory
        ));
        assert_eq!(memory.bytes(), 1024 * 1024, "one worker's memory, reused");
    }

    #[test]
    fn hashes_agree_with_the_argon2_crates_own_hasher_and_verifier() {
        use argon2::password_hash::{PasswordHasher, PasswordVerifier};
        let mut memory = Argon2Memory::default();
        // Ours verifies by the reference implementation, and the other way round.
        let ours = hash_secret(b"pw", light(), &mut memory).unwrap();
        assert!(Argon2::default()
            .verify_password(b"pw", &PasswordHash::new(&ours).unwrap())
            .is_ok());
        let params = argon2_params(light()).unwrap();
        let theirs = Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
            .hash_password(b"pw", &SaltString::generate(&mut OsRng))
            .unwrap()
            .to_string();
        assert!(verify_secret(b"pw", &theirs, &mut memory));
        assert!(!verify_secret(b"pW", &theirs, &mut memory));
        // An argon2i hash (RFC 9106 parameters of another algorithm) verifies too.
        let argon2i = Argon2::new(
            Algorithm::Argon2i,
            Version::V0x13,
            argon2_params(light()).unwrap(),
        )
        .hash_password(b"pw", &SaltString::generate(&mut OsRng))
        .unwrap()
        .to_string();
        assert!(verify_secret(b"pw", &argon2i, &mut memory));
    }

    #[test]
    fn passwords_out_of_bounds_are_refused() {
        let mut memory = Argon2Memory::default();
        assert!(derive_password_hashes("", light(), 4096, &mut memory).is_err());
        assert!(derive_password_hashes(&"x".repeat(1025), light(), 4096, &mut memory).is_err());
    }
}
