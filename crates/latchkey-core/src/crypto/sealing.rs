//! Secrets at rest: the servers' identity keys, the JWT signing keys and TOTP secrets are
//! stored sealed with XChaCha20-Poly1305 under a master key (the key-encryption key) that is
//! never in the database: a copied database file or dump reveals none of them.
//!
//! A sealed value is `version (1) ‖ nonce (24, random) ‖ ciphertext ‖ tag (16)`. Its associated
//! data names the column and the row (`server.secret_key` and the server id, say), so a value
//! moved into another row, or another column, does not open. A check value sealed at the same
//! time as the rows tells at open whether the master key is the one the database was sealed
//! with, before any secret is needed.
//!
//! The master key file holds the 32-byte key in standard base64 on one line.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use rand::RngCore;

const VERSION: u8 = 1;
const NONCE_LEN: usize = 24;
/// Bytes a sealed value has beyond its plaintext.
pub const OVERHEAD: usize = 1 + NONCE_LEN + 16;
const CHECK_ROW: &str = "master key check";
const CHECK_PLAINTEXT: &[u8] = b"latchkey";

/// Which stored secret a sealed value is: part of its associated data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Column {
    /// `server.secret_key`, by server id.
    ServerKey,
    /// `signing_key.secret_key`, by kid.
    SigningKey,
    /// `person.totp_secret`, by user id.
    TotpSecret,
    /// The check value, in `setting`.
    Check,
}

impl Column {
    /// Every stored secret that is sealed: where it lives, for the stores' sealing of rows an
    /// earlier version stored in clear.
    pub const STORED: [Column; 3] = [Column::ServerKey, Column::SigningKey, Column::TotpSecret];

    /// `(table, id column, secret column)` of a stored secret (`None` for the check value).
    pub fn place(self) -> Option<(&'static str, &'static str, &'static str)> {
        match self {
            Column::ServerKey => Some(("server", "server_id", "secret_key")),
            Column::SigningKey => Some(("signing_key", "kid", "secret_key")),
            Column::TotpSecret => Some(("person", "user_id", "totp_secret")),
            Column::Check => None,
        }
    }

    fn label(self) -> &'static [u8] {
        match self {
            Column::ServerKey => b"server.secret_key",
            Column::SigningKey => b"signing_key.secret_key",
            Column::TotpSecret => b"person.totp_secret",
            Column::Check => b"setting.master_key_check",
        }
    }
}

/// Why a master key or a sealed value cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SealError {
    #[error("the master key file does not hold a base64-encoded 32-byte key")]
    MalformedKey,
    #[error("the sealed value does not open with this master key (wrong key, or moved)")]
    DoesNotOpen,
}

/// The master key.
pub struct MasterKey([u8; 32]);

impl MasterKey {
    pub fn generate() -> Self {
        let mut key = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut key);
        Self(key)
    }

    /// Reads the key file's text.
    pub fn from_file_text(text: &str) -> Result<Self, SealError> {
        let bytes = STANDARD
            .decode(text.trim())
            .map_err(|_| SealError::MalformedKey)?;
        let key = <[u8; 32]>::try_from(bytes.as_slice()).map_err(|_| SealError::MalformedKey)?;
        Ok(Self(key))
    }

    /// The key file's text.
    pub fn to_file_text(&self) -> String {
        format!("{}\n", STANDARD.encode(self.0))
    }
}

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKey(..)")
    }
}

/// Seals and opens stored secrets with one master key.
#[derive(Clone)]
pub struct Sealer {
    cipher: XChaCha20Poly1305,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sealer(..)")
    }
}

fn associated_data(column: Column, row: &str) -> Vec<u8> {
    let mut aad = Vec::with_capacity(column.label().len() + 1 + row.len());
    aad.extend_from_slice(column.label());
    aad.push(0);
    aad.extend_from_slice(row.as_bytes());
    aad
}

impl Sealer {
    pub fn new(key: &MasterKey) -> Self {
        Self {
            cipher: XChaCha20Poly1305::new(&key.0.into()),
        }
    }

    /// Seals `plaintext`, the `column` secret of the row `row`.
    pub fn seal(&self, column: Column, row: &str, plaintext: &[u8]) -> Vec<u8> {
        let mut nonce = [0u8; NONCE_LEN];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        let aad = associated_data(column, row);
        // Encryption with a valid key and nonce cannot fail for inputs this small.
        let ciphertext = self
            .cipher
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: plaintext,
                    aad: &aad,
                },
            )
            .unwrap_or_default();
        let mut sealed = Vec::with_capacity(OVERHEAD + plaintext.len());
        sealed.push(VERSION);
        sealed.extend_from_slice(&nonce);
        sealed.extend_from_slice(&ciphertext);
        sealed
    }

    /// Opens what [`Sealer::seal`] made for the same column and row.
    pub fn open(&self, column: Column, row: &str, sealed: &[u8]) -> Result<Vec<u8>, SealError> {
        if sealed.len() < OVERHEAD || sealed[0] != VERSION {
            return Err(SealError::DoesNotOpen);
        }
        let (nonce, ciphertext) = sealed[1..].split_at(NONCE_LEN);
        let aad = associated_data(column, row);
        self.cipher
            .decrypt(
                XNonce::from_slice(nonce),
                Payload {
                    msg: ciphertext,
                    aad: &aad,
                },
            )
            .map_err(|_| SealError::DoesNotOpen)
    }

    /// The check value stored with sealed rows (base64, for a text setting).
    pub fn check_value(&self) -> String {
        STANDARD.encode(self.seal(Column::Check, CHECK_ROW, CHECK_PLAINTEXT))
    }

    /// Whether `value` is a check value made with this master key.
    pub fn verifies(&self, value: &str) -> bool {
        STANDARD
            .decode(value)
            .ok()
            .and_then(|sealed| self.open(Column::Check, CHECK_ROW, &sealed).ok())
            .is_some_and(|plain| plain == CHECK_PLAINTEXT)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn a_sealed_value_opens_only_with_its_key_column_and_row() {
        let key = MasterKey::generate();
        let sealer = Sealer::new(&key);
        let sealed = sealer.seal(Column::TotpSecret, "user-1", b"JBSWY3DPEHPK3PXP");
        assert_eq!(sealed.len(), OVERHEAD + 16);
        assert!(!sealed.windows(16).any(|w| w == b"JBSWY3DPEHPK3PXP"));
        assert_eq!(
            sealer.open(Column::TotpSecret, "user-1", &sealed).unwrap(),
            b"JBSWY3DPEHPK3PXP"
        );
        // Another row, another column, another key, a flipped bit: none opens.
        let other = Sealer::new(&MasterKey::generate());
        assert!(sealer.open(Column::TotpSecret, "user-2", &sealed).is_err());
        assert!(sealer.open(Column::ServerKey, "user-1", &sealed).is_err());
        assert!(other.open(Column::TotpSecret, "user-1", &sealed).is_err());
        let mut flipped = sealed.clone();
        flipped[30] ^= 1;
        assert!(sealer.open(Column::TotpSecret, "user-1", &flipped).is_err());
        assert!(sealer
            .open(Column::TotpSecret, "user-1", &[1, 2, 3])
            .is_err());
        // Two seals of one value differ (random nonces).
        assert_ne!(
            sealed,
            sealer.seal(Column::TotpSecret, "user-1", b"JBSWY3DPEHPK3PXP")
        );
    }

    #[test]
    fn the_key_file_round_trips_and_the_check_value_tells_keys_apart() {
        let key = MasterKey::generate();
        let text = key.to_file_text();
        let again = MasterKey::from_file_text(&text).unwrap();
        let check = Sealer::new(&key).check_value();
        assert!(Sealer::new(&again).verifies(&check));
        assert!(!Sealer::new(&MasterKey::generate()).verifies(&check));
        assert!(!Sealer::new(&key).verifies("not base64!"));
        for bad in ["", "c2hvcnQ=", "not base64 at all"] {
            assert_eq!(
                MasterKey::from_file_text(bad).unwrap_err(),
                SealError::MalformedKey
            );
        }
    }
}
