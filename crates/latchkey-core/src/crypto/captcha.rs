//! CAPTCHA challenges: a PNG of distorted text drawn by the `captcha` crate, whose answer is
//! kept only as a hash in the blocked session. Answers compare case-insensitively.
//!
//! For automated tests only, a fixed answer can be configured (`LATCHKEY_CAPTCHA_TEST_ANSWER`);
//! the image then shows that text when the crate can draw its characters.

use captcha::filters::{Dots, Grid, Noise, Wave};
use captcha::Captcha;

use crate::crypto::secret::SecretHash;
use crate::error::Error;

pub const ANSWER_CHARS: u32 = 6;
/// Longest answer accepted, in bytes.
pub const MAX_ANSWER_BYTES: usize = 64;

pub struct Challenge {
    pub png: Vec<u8>,
    pub answer_hash: SecretHash,
}

/// Hash of an answer as typed (trimmed, case folded).
pub fn answer_hash(answer: &str) -> SecretHash {
    SecretHash::of(answer.trim().to_lowercase().as_bytes())
}

/// Draws a new challenge. CPU-bound (a few ms): call from the blocking pool.
pub fn generate(test_answer: Option<&str>) -> Result<Challenge, Error> {
    let mut c = Captcha::new();
    let supported = c.supported_chars();
    match test_answer {
        Some(answer) if answer.chars().all(|ch| supported.contains(&ch)) && !answer.is_empty() => {
            for ch in answer.chars() {
                c.set_chars(&[ch]);
                c.add_char();
            }
        }
        _ => {
            c.add_chars(ANSWER_CHARS);
        }
    }
    c.apply_filter(Noise::new(0.2))
        .apply_filter(Wave::new(2.0, 16.0).horizontal())
        .apply_filter(Wave::new(2.0, 12.0).vertical())
        .view(240, 90)
        .apply_filter(Dots::new(12))
        .apply_filter(Grid::new(24, 24));
    let png = c
        .as_png()
        .ok_or_else(|| Error::Internal("CAPTCHA image could not be encoded".into()))?;
    let answer = match test_answer {
        Some(answer) => answer.to_owned(),
        None => c.chars_as_string(),
    };
    Ok(Challenge {
        png,
        answer_hash: answer_hash(&answer),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges_are_png_images_with_a_hashed_answer() {
        let c = generate(None).unwrap();
        assert_eq!(&c.png[..8], b"\x89PNG\r\n\x1a\n");
        let fixed = generate(Some("abc123")).unwrap();
        assert!(fixed.answer_hash.ct_eq(&answer_hash(" ABC123 ")));
        assert!(!fixed.answer_hash.ct_eq(&answer_hash("abc124")));
    }
}
