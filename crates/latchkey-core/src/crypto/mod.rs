//! The cryptography of latchkey, each piece from a well-kept crate where one fits: secrets and
//! their hashes, password hashing and SCRAM verifiers, TOTP, EdDSA JWTs, signed QR payloads
//! and transactions, the visual hash of a server key, CAPTCHA images, and the sealing of secrets at rest.

pub mod captcha;
pub mod credentials;
pub mod jwt;
pub mod qr;
pub mod scram;
pub mod sealing;
pub mod secret;
pub mod totp;
pub mod transaction;
pub mod vash;
