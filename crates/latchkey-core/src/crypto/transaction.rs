//! What is signed about a family A transaction (docs/app-protocol.md, "Transactions"): the
//! server signs the values when the relying party makes the transaction, the app checks that
//! signature against the server key it pinned at enrol before it shows anything, and signs its
//! answer over the very values it showed. Both messages are JSON arrays, so no value can run
//! into the next. Shared by the server and the app.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ed25519_dalek::{Signer, SigningKey};
use unicode_properties::{GeneralCategory, UnicodeGeneralCategory};

use super::qr::verify_account_signature;

/// True for a character that must not be in a value shown to confirm: control and format
/// characters (bidirectional overrides, zero-width characters, the byte order mark), line and
/// paragraph separators, private-use, surrogate and unassigned code points. Each could make
/// what the person reads differ from what is signed.
pub fn hides_text(c: char) -> bool {
    matches!(
        c.general_category(),
        GeneralCategory::Control
            | GeneralCategory::Format
            | GeneralCategory::LineSeparator
            | GeneralCategory::ParagraphSeparator
            | GeneralCategory::PrivateUse
            | GeneralCategory::Surrogate
            | GeneralCategory::Unassigned
    )
}

/// The values of a transaction that are shown to the person and signed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TransactionValues<'a> {
    pub server_id: &'a str,
    /// The transaction id as the API writes it (base64url).
    pub tid: &'a str,
    pub account_id: i64,
    pub amount: &'a str,
    pub beneficiary: &'a str,
    pub description: &'a str,
    pub created: i64,
    pub expires: i64,
}

impl TransactionValues<'_> {
    fn message(&self, purpose: &str, verdict: Option<&str>) -> String {
        let mut parts = vec![
            serde_json::json!(purpose),
            self.server_id.into(),
            self.tid.into(),
            self.account_id.into(),
            self.amount.into(),
            self.beneficiary.into(),
            self.description.into(),
            self.created.into(),
            self.expires.into(),
        ];
        if let Some(verdict) = verdict {
            parts.push(verdict.into());
        }
        serde_json::Value::Array(parts).to_string()
    }

    /// What the server signs with its identity key when the transaction is made.
    pub fn server_message(&self) -> String {
        self.message("latchkey-transaction-v1", None)
    }

    /// What the app signs with the account key to approve or decline.
    pub fn answer_message(&self, approve: bool) -> String {
        self.message(
            "latchkey-transaction-answer-v1",
            Some(if approve { "approve" } else { "decline" }),
        )
    }

    /// The server's base64url signature over the values.
    pub fn sign_as_server(&self, server_secret: &[u8; 32]) -> String {
        let key = SigningKey::from_bytes(server_secret);
        URL_SAFE_NO_PAD.encode(key.sign(self.server_message().as_bytes()).to_bytes())
    }

    /// True when `signature` is the server's (key `server_public`) over these values.
    pub fn verify_server(&self, server_public: &[u8; 32], signature: &str) -> bool {
        // The same Ed25519 check as an account's signature, with the server's key.
        verify_account_signature(server_public, &self.server_message(), signature)
    }

    /// True when `signature` is the account's answer over these values.
    pub fn verify_answer(&self, account_public: &[u8], approve: bool, signature: &str) -> bool {
        verify_account_signature(account_public, &self.answer_message(approve), signature)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values<'a>(amount: &'a str, description: &'a str) -> TransactionValues<'a> {
        TransactionValues {
            server_id: "srv",
            tid: "t1",
            account_id: 7,
            amount,
            beneficiary: "ACME",
            description,
            created: 10,
            expires: 310,
        }
    }

    #[test]
    fn the_server_signature_covers_every_value() {
        let secret = [9u8; 32];
        let public = SigningKey::from_bytes(&secret).verifying_key().to_bytes();
        let signed = values("10.00 EUR", "order 1");
        let signature = signed.sign_as_server(&secret);
        assert!(signed.verify_server(&public, &signature));
        assert!(!values("1000.00 EUR", "order 1").verify_server(&public, &signature));
        assert!(!values("10.00 EUR", "order 2").verify_server(&public, &signature));
        let other = SigningKey::from_bytes(&[8u8; 32])
            .verifying_key()
            .to_bytes();
        assert!(!signed.verify_server(&other, &signature));
        assert!(!signed.verify_server(&public, "not base64!"));
    }

    #[test]
    fn invisible_and_direction_changing_characters_hide_text() {
        for c in [
            '\u{1b}', '\n', '\u{202e}', '\u{2066}', '\u{200b}', '\u{feff}', '\u{2028}', '\u{e000}',
        ] {
            assert!(hides_text(c), "{c:?}");
        }
        for c in ['a', '\u{20ac}', ' ', '\u{e9}', '\u{4e2d}', '-'] {
            assert!(!hides_text(c), "{c:?}");
        }
    }

    #[test]
    fn values_cannot_run_into_each_other() {
        // Moving text from one field to the next changes the message.
        let a = values("10\",\"x", "y");
        let b = values("10", "x\",\"y");
        assert_ne!(a.server_message(), b.server_message());
        assert_ne!(a.answer_message(true), a.answer_message(false));
    }

    #[test]
    fn an_answer_verifies_only_for_its_verdict_and_values() {
        let key = SigningKey::from_bytes(&[3u8; 32]);
        let public = key.verifying_key().to_bytes();
        let shown = values("10.00 EUR", "order 1");
        let signature =
            URL_SAFE_NO_PAD.encode(key.sign(shown.answer_message(true).as_bytes()).to_bytes());
        assert!(shown.verify_answer(&public, true, &signature));
        assert!(!shown.verify_answer(&public, false, &signature));
        assert!(!values("99.00 EUR", "order 1").verify_answer(&public, true, &signature));
    }
}
