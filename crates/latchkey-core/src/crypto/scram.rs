//! SCRAM-SHA-256 (RFC 5802, RFC 7677) without channel binding, as family B carries it in JSON:
//! the pieces of the AuthMessage, proof verification and the server signature. Pure functions;
//! the exchange itself (server nonces that carry the handshake, sessions) is in
//! [`crate::services::polario`].

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use sha2::{Digest, Sha256};

use crate::crypto::credentials::{hmac_sha256, normalize_password, salted_password};
use crate::crypto::secret::ct_eq;
use crate::error::{Error, Result};
use crate::model::ScramVerifier;

/// The gs2 header `n,,` in base64: no channel binding, no authzid.
pub const CHANNEL_BINDING: &str = "biws";
/// Longest client nonce accepted.
pub const MAX_NONCE_LEN: usize = 256;

/// The user name as it appears in `n=`: SASLprep'ed (raw when SASLprep refuses it), with `=`
/// and `,` escaped as `=3D` and `=2C`.
pub fn saslname(name: &str) -> String {
    let prepared = stringprep::saslprep(name)
        .map(|p| p.into_owned())
        .unwrap_or_else(|_| name.to_owned());
    prepared.replace('=', "=3D").replace(',', "=2C")
}

/// A nonce is printable ASCII without `,` (RFC 5802 `printable`).
pub fn check_nonce(nonce: &str, what: &str) -> Result<()> {
    let ok = !nonce.is_empty()
        && nonce.len() <= MAX_NONCE_LEN * 2
        && nonce
            .bytes()
            .all(|b| (0x21..=0x7e).contains(&b) && b != b',');
    if ok {
        Ok(())
    } else {
        Err(Error::Invalid(format!(
            "{what} must be 1 to {MAX_NONCE_LEN} printable ASCII characters without ','"
        )))
    }
}

/// client-first-bare `,` server-first `,` client-final-without-proof.
pub fn auth_message(
    name: &str,
    client_nonce: &str,
    nonce: &str,
    salt: &[u8],
    iterations: u32,
) -> String {
    format!(
        "n={},r={client_nonce},r={nonce},s={},i={iterations},c={CHANNEL_BINDING},r={nonce}",
        saslname(name),
        STANDARD.encode(salt)
    )
}

/// Does `proof` prove knowledge of the password behind `verifier`? Constant-time.
pub fn verify_proof(verifier: &ScramVerifier, auth_message: &str, proof: &[u8]) -> bool {
    if proof.len() != 32 {
        return false;
    }
    let client_signature = hmac_sha256(&verifier.stored_key, auth_message.as_bytes());
    let client_key: Vec<u8> = proof
        .iter()
        .zip(client_signature.iter())
        .map(|(p, s)| p ^ s)
        .collect();
    ct_eq(&Sha256::digest(&client_key), &verifier.stored_key)
}

/// ClientProof, the client side of the exchange (for latchkey's own clients: the benchmark and
/// tests; the end-to-end tests use an independent SCRAM implementation).
pub fn client_proof(password: &str, salt: &[u8], iterations: u32, auth_message: &str) -> [u8; 32] {
    proof_from_client_key(&client_key(password, salt, iterations), auth_message)
}

/// ClientKey: the costly part of a proof (PBKDF2), the same for every login of one verifier, so
/// a client may compute it once ([`proof_from_client_key`] then costs two hashes).
pub fn client_key(password: &str, salt: &[u8], iterations: u32) -> [u8; 32] {
    let salted = salted_password(&normalize_password(password), salt, iterations);
    hmac_sha256(&salted, b"Client Key")
}

/// ClientProof from a ClientKey: ClientKey XOR HMAC(H(ClientKey), AuthMessage).
pub fn proof_from_client_key(client_key: &[u8; 32], auth_message: &str) -> [u8; 32] {
    let stored_key: [u8; 32] = Sha256::digest(client_key).into();
    let signature = hmac_sha256(&stored_key, auth_message.as_bytes());
    let mut proof = *client_key;
    for (p, s) in proof.iter_mut().zip(signature) {
        *p ^= s;
    }
    proof
}

/// ServerSignature: what the client checks to know it talked to a server holding the verifier.
pub fn server_signature(verifier: &ScramVerifier, auth_message: &str) -> [u8; 32] {
    hmac_sha256(&verifier.server_key, auth_message.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::credentials::scram_verifier;

    // RFC 7677 section 3.
    const CLIENT_NONCE: &str = "rOprNGfwEbeRWgbNEkqO";
    const NONCE: &str = "rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";
    const SALT: &str = "W22ZaJ0SNY7soEsUEjb6gQ==";
    const PROOF: &str = "dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=";
    const SERVER_SIGNATURE: &str = "6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=";

    #[test]
    fn the_rfc_7677_exchange_verifies_and_signs_as_published() {
        let salt = STANDARD.decode(SALT).unwrap();
        let verifier = scram_verifier("pencil", salt.clone(), 4096);
        let message = auth_message("user", CLIENT_NONCE, NONCE, &salt, 4096);
        assert_eq!(
            message,
            format!("n=user,r={CLIENT_NONCE},r={NONCE},s={SALT},i=4096,c=biws,r={NONCE}")
        );
        assert!(verify_proof(
            &verifier,
            &message,
            &STANDARD.decode(PROOF).unwrap()
        ));
        assert_eq!(
            STANDARD.encode(server_signature(&verifier, &message)),
            SERVER_SIGNATURE
        );
        let mut wrong = STANDARD.decode(PROOF).unwrap();
        wrong[0] ^= 1;
        assert!(!verify_proof(&verifier, &message, &wrong));
        assert!(!verify_proof(&verifier, &message, &wrong[..31]));
    }

    #[test]
    fn names_are_escaped_and_nonces_checked() {
        assert_eq!(saslname("a=b,c"), "a=3Db=2Cc");
        assert!(check_nonce("abc%$", "nonce").is_ok());
        assert!(check_nonce("a,b", "nonce").is_err());
        assert!(check_nonce("", "nonce").is_err());
        assert!(check_nonce("é", "nonce").is_err());
    }
}
