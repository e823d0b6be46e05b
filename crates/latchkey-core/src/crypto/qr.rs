//! QR payloads of the companion app protocol (docs/app-protocol.md): a `latchkey://` URI naming
//! the server, where to reach it, a one-time challenge and its expiry, signed by the server's
//! identity key; plus the signature strings the app signs with an account key, and rendering of
//! a payload as a QR code PNG. Shared by the server and the app.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

use crate::error::{Error, Result};

/// Characters kept as they are in payload values (RFC 3986 unreserved).
const VALUE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QrKind {
    Login,
    Enrol,
}

impl QrKind {
    pub fn as_str(self) -> &'static str {
        match self {
            QrKind::Login => "login",
            QrKind::Enrol => "enrol",
        }
    }
}

/// A QR payload, parsed (not yet trusted: see [`QrPayload::verify`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QrPayload {
    pub kind: QrKind,
    pub server_id: String,
    pub base_url: String,
    /// base64url of the 32-byte challenge.
    pub challenge: String,
    pub expires: i64,
    /// base64url of the server's public key (enrol payloads).
    pub server_key: Option<String>,
    /// Account description (enrol payloads).
    pub name: Option<String>,
    /// User the account will be bound to (enrol payloads, optional).
    pub userid: Option<String>,
    /// base64url Ed25519 signature by the server identity key.
    pub signature: String,
}

impl QrPayload {
    /// The string the server signs.
    pub fn signed_message(&self) -> String {
        format!(
            "latchkey-qr-v1\n{}\n{}\n{}\n{}\n{}\n{}\n{}\n{}",
            self.kind.as_str(),
            self.server_id,
            self.base_url,
            self.challenge,
            self.expires,
            self.server_key.as_deref().unwrap_or(""),
            self.name.as_deref().unwrap_or(""),
            self.userid.as_deref().unwrap_or(""),
        )
    }

    /// Signs the payload with the server's identity key (seed).
    pub fn sign(mut self, server_secret: &[u8; 32]) -> QrPayload {
        let key = SigningKey::from_bytes(server_secret);
        self.signature =
            URL_SAFE_NO_PAD.encode(key.sign(self.signed_message().as_bytes()).to_bytes());
        self
    }

    /// Checks the server's signature with the given public key.
    pub fn verify(&self, server_public: &[u8; 32]) -> Result<()> {
        let bad = || Error::Invalid("the QR payload's signature does not verify".into());
        let key = VerifyingKey::from_bytes(server_public).map_err(|_| bad())?;
        let sig = URL_SAFE_NO_PAD.decode(&self.signature).map_err(|_| bad())?;
        let sig = Signature::from_slice(&sig).map_err(|_| bad())?;
        key.verify_strict(self.signed_message().as_bytes(), &sig)
            .map_err(|_| bad())
    }

    /// The URI text (what the QR code holds).
    pub fn to_uri(&self) -> String {
        let enc = |v: &str| utf8_percent_encode(v, VALUE).to_string();
        let mut uri = format!(
            "latchkey://{}?v=1&s={}&u={}&c={}&e={}",
            self.kind.as_str(),
            enc(&self.server_id),
            enc(&self.base_url),
            enc(&self.challenge),
            self.expires
        );
        for (key, value) in [
            ("pk", &self.server_key),
            ("n", &self.name),
            ("uid", &self.userid),
        ] {
            if let Some(value) = value {
                uri.push_str(&format!("&{key}={}", enc(value)));
            }
        }
        uri.push_str(&format!("&sig={}", enc(&self.signature)));
        uri
    }

    /// Parses URI text; also accepts its base64 (as LoginStatus.loginqrdata carries it).
    pub fn parse(text: &str) -> Result<QrPayload> {
        let text = text.trim();
        let decoded;
        let text = if text.starts_with("latchkey://") {
            text
        } else {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(text)
                .or_else(|_| URL_SAFE_NO_PAD.decode(text))
                .map_err(|_| Error::Invalid("not a latchkey QR payload".into()))?;
            decoded = String::from_utf8(bytes)
                .map_err(|_| Error::Invalid("not a latchkey QR payload".into()))?;
            decoded.as_str()
        };
        let bad = |why: &str| Error::Invalid(format!("malformed QR payload: {why}"));
        let rest = text
            .strip_prefix("latchkey://")
            .ok_or_else(|| bad("not a latchkey:// URI"))?;
        let (kind, query) = rest.split_once('?').ok_or_else(|| bad("no parameters"))?;
        let kind = match kind {
            "login" => QrKind::Login,
            "enrol" => QrKind::Enrol,
            _ => return Err(bad("unknown kind")),
        };
        let mut fields = std::collections::HashMap::new();
        for pair in query.split('&') {
            let (k, v) = pair
                .split_once('=')
                .ok_or_else(|| bad("parameter without value"))?;
            let v = percent_decode_str(v)
                .decode_utf8()
                .map_err(|_| bad("value is not UTF-8"))?
                .into_owned();
            if fields.insert(k.to_owned(), v).is_some() {
                return Err(bad("repeated parameter"));
            }
        }
        if fields.get("v").map(String::as_str) != Some("1") {
            return Err(bad("unsupported version"));
        }
        let mut take = |k: &str| fields.remove(k);
        let required = |v: Option<String>, k: &str| v.ok_or_else(|| bad(&format!("missing {k}")));
        let payload = QrPayload {
            kind,
            server_id: required(take("s"), "s")?,
            base_url: required(take("u"), "u")?,
            challenge: required(take("c"), "c")?,
            expires: required(take("e"), "e")?
                .parse()
                .map_err(|_| bad("e is not a number"))?,
            server_key: take("pk"),
            name: take("n"),
            userid: take("uid"),
            signature: required(take("sig"), "sig")?,
        };
        if kind == QrKind::Enrol && (payload.server_key.is_none() || payload.name.is_none()) {
            return Err(bad(
                "an enrol payload names the server key and the account name",
            ));
        }
        Ok(payload)
    }

    /// The server key an enrol payload carries, decoded.
    pub fn server_key_bytes(&self) -> Result<[u8; 32]> {
        self.server_key
            .as_deref()
            .and_then(|k| URL_SAFE_NO_PAD.decode(k).ok())
            .and_then(|k| <[u8; 32]>::try_from(k).ok())
            .ok_or_else(|| Error::Invalid("the payload carries no valid server key".into()))
    }
}

/// The string an account key signs (see the table in docs/app-protocol.md).
pub fn app_message(
    action: &str,
    server_id: &str,
    one_time: &str,
    subject: &str,
    extra: Option<&str>,
) -> String {
    let mut message = format!("latchkey-app-v1\n{action}\n{server_id}\n{one_time}\n{subject}");
    if let Some(extra) = extra {
        message.push('\n');
        message.push_str(extra);
    }
    message
}

/// Checks an account's base64url signature over `message`.
pub fn verify_account_signature(public_key: &[u8], message: &str, signature: &str) -> bool {
    let Ok(key) = <[u8; 32]>::try_from(public_key) else {
        return false;
    };
    let Ok(key) = VerifyingKey::from_bytes(&key) else {
        return false;
    };
    let Some(sig) = URL_SAFE_NO_PAD
        .decode(signature)
        .ok()
        .and_then(|s| Signature::from_slice(&s).ok())
    else {
        return false;
    };
    key.verify_strict(message.as_bytes(), &sig).is_ok()
}

/// Encodes a grey-scale image as PNG.
pub fn encode_png(
    width: u32,
    height: u32,
    pixels: &[u8],
    color: png::ColorType,
) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    {
        let mut encoder = png::Encoder::new(&mut out, width, height);
        encoder.set_color(color);
        encoder.set_depth(png::BitDepth::Eight);
        let mut writer = encoder
            .write_header()
            .map_err(|e| Error::Internal(format!("png: {e}")))?;
        writer
            .write_image_data(pixels)
            .map_err(|e| Error::Internal(format!("png: {e}")))?;
    }
    Ok(out)
}

/// A QR code of `data` as a `size`×`size` PNG, black on white: every module the same whole
/// number of pixels (decoders read uneven modules badly), centred, with a quiet zone of at
/// least 4 modules when the size allows (at least 1 otherwise).
pub fn qr_png(data: &[u8], size: u32) -> Result<Vec<u8>> {
    let code = qrcode::QrCode::with_error_correction_level(data, qrcode::EcLevel::M)
        .map_err(|e| Error::Internal(format!("qr: {e}")))?;
    let modules = code.width() as u32;
    let module_px = match size / (modules + 8) {
        0 => size / (modules + 2),
        px => px,
    };
    if module_px == 0 {
        return Err(Error::Invalid(format!(
            "s must be at least {} pixels for this payload",
            modules + 2
        )));
    }
    let offset = (size - module_px * modules) / 2;
    let colors = code.to_colors();
    let module_at = |p: u32| {
        p.checked_sub(offset)
            .map(|p| p / module_px)
            .filter(|&m| m < modules)
    };
    let mut pixels = vec![255u8; (size * size) as usize];
    for y in 0..size {
        let Some(my) = module_at(y) else { continue };
        for x in 0..size {
            let Some(mx) = module_at(x) else { continue };
            if colors[(my * modules + mx) as usize] == qrcode::Color::Dark {
                pixels[(y * size + x) as usize] = 0;
            }
        }
    }
    encode_png(size, size, &pixels, png::ColorType::Grayscale)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payload() -> QrPayload {
        QrPayload {
            kind: QrKind::Enrol,
            server_id: "srv".into(),
            base_url: "http://127.0.0.1:8080".into(),
            challenge: "abc_-".into(),
            expires: 1_800_000_120,
            server_key: Some("key".into()),
            name: Some("Alice's phone & co".into()),
            userid: Some("alice@example.com".into()),
            signature: String::new(),
        }
    }

    #[test]
    fn payloads_round_trip_through_their_uri_and_base64() {
        let seed = [7u8; 32];
        let p = payload().sign(&seed);
        let uri = p.to_uri();
        assert!(uri.starts_with("latchkey://enrol?v=1&s=srv&u=http%3A%2F%2F127.0.0.1%3A8080"));
        assert_eq!(QrPayload::parse(&uri).unwrap(), p);
        let b64 = base64::engine::general_purpose::STANDARD.encode(&uri);
        assert_eq!(QrPayload::parse(&b64).unwrap(), p);
        let public = SigningKey::from_bytes(&seed).verifying_key().to_bytes();
        p.verify(&public).unwrap();
        let other = SigningKey::from_bytes(&[8u8; 32])
            .verifying_key()
            .to_bytes();
        assert!(p.verify(&other).is_err());
        let mut tampered = p.clone();
        tampered.base_url = "http://evil.example".into();
        assert!(tampered.verify(&public).is_err());
    }

    #[test]
    fn malformed_payloads_are_refused() {
        for text in [
            "",
            "http://x",
            "latchkey://login",
            "latchkey://other?v=1",
            "latchkey://login?v=2&s=a&u=b&c=c&e=1&sig=x",
            "latchkey://login?v=1&s=a&s=b&u=b&c=c&e=1&sig=x",
            "latchkey://enrol?v=1&s=a&u=b&c=c&e=1&sig=x",
        ] {
            assert!(QrPayload::parse(text).is_err(), "{text}");
        }
    }

    #[test]
    fn qr_pngs_have_the_asked_size() {
        let png = qr_png(b"latchkey://login?v=1", 200).unwrap();
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
        assert_eq!(u32::from_be_bytes(png[16..20].try_into().unwrap()), 200);
        assert!(qr_png(b"x", 10).is_err());
    }
}
