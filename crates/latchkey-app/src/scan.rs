//! Scanning a QR payload: from its text (`latchkey://...`), from the base64 of that text (as
//! LoginStatus.loginqrdata carries it), from standard input (`-`), or from a PNG of the QR code.
//!
//! PNGs are decoded with rqrr, a reader independent of the `qrcode` encoder the server draws
//! with, so each checks the other. Images come from outside (a screenshot, a download), so their
//! size is bounded and a panic inside the decoder becomes an error instead of a crash.

use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use latchkey_core::crypto::qr::QrPayload;

/// Larger files are not QR code pictures.
const MAX_FILE_BYTES: u64 = 32 * 1024 * 1024;
/// Largest width or height decoded, in pixels.
const MAX_SIDE: u32 = 8000;
/// Largest side a picture is enlarged to when it does not read as it is.
const MAX_ENLARGED: u32 = 4000;

/// Where the payload comes from (the command line's `PAYLOAD` or `--png IMAGE`).
pub enum Source {
    Text(String),
    Png(PathBuf),
}

/// Reads and parses the payload (its signature is not checked here).
pub fn scan(source: &Source) -> Result<QrPayload> {
    match source {
        Source::Text(text) if text == "-" => {
            let mut text = String::new();
            std::io::stdin()
                .take(MAX_FILE_BYTES)
                .read_to_string(&mut text)
                .context("cannot read the payload from standard input")?;
            parse(&text)
        }
        Source::Text(text) => parse(text),
        Source::Png(path) => {
            let texts = decode_png(&read_image(path)?)
                .with_context(|| format!("cannot read a QR code from {}", path.display()))?;
            let mut last_error = None;
            for text in &texts {
                match parse(text) {
                    Ok(payload) => return Ok(payload),
                    Err(e) => last_error = Some(e),
                }
            }
            Err(last_error.unwrap_or_else(|| anyhow!("no QR code found")))
                .with_context(|| format!("no latchkey QR code in {}", path.display()))
        }
    }
}

fn parse(text: &str) -> Result<QrPayload> {
    QrPayload::parse(text).map_err(|e| anyhow!("{e}"))
}

fn read_image(path: &Path) -> Result<Vec<u8>> {
    let file =
        std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut bytes = Vec::new();
    file.take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .with_context(|| format!("cannot read {}", path.display()))?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        bail!("{} is too large for a QR code picture", path.display());
    }
    Ok(bytes)
}

/// The text of every QR code found in a PNG image.
pub fn decode_png(bytes: &[u8]) -> Result<Vec<String>> {
    let image = image::load_from_memory_with_format(bytes, image::ImageFormat::Png)
        .context("not a readable PNG image")?;
    if image.width() > MAX_SIDE || image.height() > MAX_SIDE {
        bail!("the image is larger than {MAX_SIDE}×{MAX_SIDE} pixels");
    }
    let grey = image.to_luma8();
    // rqrr misses codes drawn with few pixels per module, or with modules of uneven width (the
    // server scales to any size it is asked); the same picture enlarged reads reliably.
    let mut found = Vec::new();
    for scale in [1, 2, 3, 4] {
        if scale > 1 && grey.width().max(grey.height()) * scale > MAX_ENLARGED {
            break;
        }
        found = detect(&grey, scale)?;
        if !found.is_empty() {
            break;
        }
    }
    if found.is_empty() {
        bail!("no QR code found");
    }
    Ok(found)
}

/// The texts of the QR codes rqrr reads in `grey` enlarged `scale` times.
fn detect(grey: &image::GrayImage, scale: u32) -> Result<Vec<String>> {
    let scale = scale as usize;
    std::panic::catch_unwind(|| {
        let mut prepared = rqrr::PreparedImage::prepare_from_greyscale(
            grey.width() as usize * scale,
            grey.height() as usize * scale,
            |x, y| grey.get_pixel((x / scale) as u32, (y / scale) as u32).0[0],
        );
        prepared
            .detect_grids()
            .iter()
            .filter_map(|grid| grid.decode().ok().map(|(_, text)| text))
            .collect::<Vec<String>>()
    })
    .map_err(|_| anyhow!("the QR decoder failed on this image"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::SigningKey;
    use latchkey_core::crypto::qr::{qr_png, QrKind};

    fn payload() -> QrPayload {
        QrPayload {
            kind: QrKind::Enrol,
            server_id: "c3J2LWlk".into(),
            base_url: "http://127.0.0.1:8080".into(),
            challenge: "q1w2e3r4t5y6u7i8o9p0a1s2d3f4g5h6j7k8l9z0x1c".into(),
            expires: 1_800_000_120,
            server_key: Some("S2V5S2V5S2V5S2V5S2V5S2V5S2V5S2V5S2V5S2V5S2U".into()),
            name: Some("Alice's phone".into()),
            userid: Some("alice@example.com".into()),
            signature: String::new(),
        }
        .sign(&SigningKey::from_bytes(&[3; 32]).to_bytes())
    }

    #[test]
    fn a_payload_drawn_as_a_png_decodes_to_the_same_text() {
        let uri = payload().to_uri();
        for size in [170, 200, 300, 500, 1000, 2000] {
            let png = qr_png(uri.as_bytes(), size).unwrap();
            assert_eq!(decode_png(&png).unwrap(), vec![uri.clone()]);
        }

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("qr.png");
        std::fs::write(&path, qr_png(uri.as_bytes(), 400).unwrap()).unwrap();
        assert_eq!(scan(&Source::Png(path)).unwrap(), payload());
    }

    #[test]
    fn payloads_are_read_from_their_text_or_its_base64() {
        use base64::Engine;
        let uri = payload().to_uri();
        let b64 = base64::engine::general_purpose::STANDARD.encode(&uri);
        assert_eq!(scan(&Source::Text(uri)).unwrap(), payload());
        assert_eq!(scan(&Source::Text(b64)).unwrap(), payload());
        assert!(scan(&Source::Text("hello".into())).is_err());
    }

    #[test]
    fn pictures_without_a_latchkey_qr_code_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let other = dir.path().join("other.png");
        std::fs::write(&other, qr_png(b"https://example.com/", 300).unwrap()).unwrap();
        let err = format!("{:#}", scan(&Source::Png(other)).err().unwrap());
        assert!(err.contains("no latchkey QR code"), "{err}");

        let mut blank = Vec::new();
        image::DynamicImage::ImageLuma8(image::GrayImage::from_pixel(64, 64, image::Luma([255])))
            .write_to(
                &mut std::io::Cursor::new(&mut blank),
                image::ImageFormat::Png,
            )
            .unwrap();
        let err = decode_png(&blank).err().unwrap().to_string();
        assert!(err.contains("no QR code found"), "{err}");

        let noise = dir.path().join("noise.png");
        std::fs::write(&noise, b"not a png at all").unwrap();
        assert!(scan(&Source::Png(noise)).is_err());
        assert!(scan(&Source::Png(dir.path().join("missing.png"))).is_err());
    }
}
