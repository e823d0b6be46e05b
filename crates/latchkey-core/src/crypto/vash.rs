//! The visual hash of a server's public key: a symmetric 8×8 pattern in four shades of one hue,
//! derived from SHA-256 of the key. The server serves it as a PNG (`/vash`); the app prints the
//! same pattern as text art at enrol, so a person can compare them before trusting the key.

use sha2::{Digest, Sha256};

use crate::error::Result;

pub const CELLS: usize = 8;
const SHADES: [&str; 4] = ["  ", "░░", "▒▒", "██"];

/// Shade index (0..4) of each cell, mirrored left to right.
pub fn grid(public_key: &[u8]) -> [[u8; CELLS]; CELLS] {
    let digest = Sha256::digest(public_key);
    let mut grid = [[0u8; CELLS]; CELLS];
    for (y, row) in grid.iter_mut().enumerate() {
        for x in 0..CELLS / 2 {
            let bit = (y * CELLS / 2 + x) * 2;
            let shade = (digest[bit / 8] >> (bit % 8)) & 0b11;
            row[x] = shade;
            row[CELLS - 1 - x] = shade;
        }
    }
    grid
}

/// The hue (0..360) of the pattern, from the last byte pair of the digest.
fn hue(public_key: &[u8]) -> u16 {
    let digest = Sha256::digest(public_key);
    u16::from_be_bytes([digest[30], digest[31]]) % 360
}

/// Text art of the pattern, one line per row.
pub fn text_art(public_key: &[u8]) -> String {
    grid(public_key)
        .iter()
        .map(|row| row.iter().map(|&s| SHADES[s as usize]).collect::<String>())
        .collect::<Vec<_>>()
        .join("\n")
}

fn rgb(hue: u16, shade: u8) -> [u8; 3] {
    // HSV with full saturation; shade 0 is white, 3 the full colour darkened.
    let value = [255.0, 220.0, 170.0, 110.0][shade as usize];
    let saturation = [0.0, 0.45, 0.75, 1.0][shade as usize];
    let h = f64::from(hue) / 60.0;
    let c = value * saturation;
    let x = c * (1.0 - (h % 2.0 - 1.0).abs());
    let (r, g, b) = match h as u32 {
        0 => (c, x, 0.0),
        1 => (x, c, 0.0),
        2 => (0.0, c, x),
        3 => (0.0, x, c),
        4 => (x, 0.0, c),
        _ => (c, 0.0, x),
    };
    let m = value - c;
    [(r + m) as u8, (g + m) as u8, (b + m) as u8]
}

/// The pattern as a `size`×`size` RGB PNG.
pub fn png(public_key: &[u8], size: u32) -> Result<Vec<u8>> {
    let grid = grid(public_key);
    let hue = hue(public_key);
    let mut pixels = Vec::with_capacity((size * size * 3) as usize);
    for y in 0..size {
        let row = &grid[(y as usize * CELLS) / size as usize];
        for x in 0..size {
            pixels.extend_from_slice(&rgb(hue, row[(x as usize * CELLS) / size as usize]));
        }
    }
    crate::crypto::qr::encode_png(size, size, &pixels, png::ColorType::Rgb)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_are_symmetric_stable_and_key_specific() {
        let a = grid(&[1u8; 32]);
        assert_eq!(a, grid(&[1u8; 32]));
        assert_ne!(a, grid(&[2u8; 32]));
        for row in a {
            for x in 0..CELLS {
                assert_eq!(row[x], row[CELLS - 1 - x]);
            }
        }
        assert_eq!(text_art(&[1u8; 32]).lines().count(), CELLS);
        let image = png(&[1u8; 32], 64).unwrap();
        assert_eq!(&image[..8], b"\x89PNG\r\n\x1a\n");
    }
}
