//! TOTP second factor (RFC 6238: HMAC-SHA-1, 6 digits, 30 s steps, one step of skew either
//! way). Verification reports which time step matched so the caller can make each code
//! usable once (the store keeps the last accepted step per user).

use totp_rs::{Algorithm, Secret, TOTP};

use crate::crypto::secret::ct_eq;
use crate::error::Error;

pub const DIGITS: usize = 6;
pub const STEP_SECONDS: u64 = 30;
/// Secret length in bytes (160 bits, as RFC 4226 recommends).
pub const SECRET_BYTES: usize = 20;

fn totp(secret: &[u8], issuer: Option<String>, account: String) -> Result<TOTP, Error> {
    TOTP::new(
        Algorithm::SHA1,
        DIGITS,
        1,
        STEP_SECONDS,
        secret.to_vec(),
        issuer,
        account,
    )
    .map_err(|e| Error::Internal(format!("totp: {e}")))
}

/// A fresh random TOTP secret.
pub fn generate_secret() -> Vec<u8> {
    crate::crypto::secret::random_bytes::<SECRET_BYTES>().to_vec()
}

/// The `otpauth://totp/...` URI an authenticator app scans, and the base32 secret.
pub fn provisioning(secret: &[u8], issuer: &str, account: &str) -> Result<(String, String), Error> {
    // otpauth labels use ':' as the issuer separator; keep it out of both parts.
    let clean = |s: &str| s.replace(':', " ");
    let t = totp(secret, Some(clean(issuer)), clean(account))?;
    Ok((
        t.get_url(),
        Secret::Raw(secret.to_vec()).to_encoded().to_string(),
    ))
}

/// The code of one time step.
/// The secret of a base32 text as [`provisioning`] writes it; `None` unless it is one.
pub fn secret_from_base32(text: &str) -> Option<Vec<u8>> {
    Secret::Encoded(text.trim().to_owned())
        .to_bytes()
        .ok()
        .filter(|secret| secret.len() == SECRET_BYTES)
}

pub fn code_at_step(secret: &[u8], step: i64) -> Result<String, Error> {
    let t = totp(secret, None, String::new())?;
    Ok(t.generate(step.max(0) as u64 * STEP_SECONDS))
}

/// Checks `code` at `now` with ±1 step of skew. Answers the matching step, latest first.
pub fn verify(secret: &[u8], code: &str, now: i64) -> Result<Option<i64>, Error> {
    if code.len() != DIGITS || !code.bytes().all(|b| b.is_ascii_digit()) {
        return Ok(None);
    }
    let current = now.div_euclid(STEP_SECONDS as i64);
    for step in [current + 1, current, current - 1] {
        if ct_eq(code_at_step(secret, step)?.as_bytes(), code.as_bytes()) {
            return Ok(Some(step));
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    // RFC 6238 appendix B, SHA-1 rows (8 digits there; the last 6 digits are the 6-digit code,
    // since both are the same truncated value modulo 10^digits).
    const RFC_SECRET: &[u8] = b"12345678901234567890";
    const VECTORS: &[(i64, &str)] = &[
        (59, "94287082"),
        (1111111109, "07081804"),
        (1111111111, "14050471"),
        (1234567890, "89005924"),
        (2000000000, "69279037"),
        (20000000000, "65353130"),
    ];

    #[test]
    fn codes_match_the_rfc_6238_vectors() {
        for (time, expected) in VECTORS {
            let code = code_at_step(RFC_SECRET, time / 30).unwrap();
            assert_eq!(code, expected[2..], "time {time}");
        }
    }

    #[test]
    fn verification_allows_one_step_of_skew_and_reports_the_step() {
        let now = 1111111109;
        let step = now / 30;
        let previous = code_at_step(RFC_SECRET, step - 1).unwrap();
        let next = code_at_step(RFC_SECRET, step + 1).unwrap();
        let too_old = code_at_step(RFC_SECRET, step - 2).unwrap();
        assert_eq!(verify(RFC_SECRET, &previous, now).unwrap(), Some(step - 1));
        assert_eq!(verify(RFC_SECRET, &next, now).unwrap(), Some(step + 1));
        assert_eq!(verify(RFC_SECRET, &too_old, now).unwrap(), None);
        assert_eq!(verify(RFC_SECRET, "12345", now).unwrap(), None);
        assert_eq!(verify(RFC_SECRET, "abcdef", now).unwrap(), None);
    }

    #[test]
    fn provisioning_uri_carries_issuer_account_and_secret() {
        let (uri, base32) = provisioning(RFC_SECRET, "Example: Inc", "alice@example.com").unwrap();
        assert!(uri.starts_with("otpauth://totp/"));
        assert!(uri.contains(&base32));
        assert!(uri.contains("alice%40example.com") || uri.contains("alice@example.com"));
    }
}
