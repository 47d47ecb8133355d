//! Helpers shared by the integration tests: fixture paths and generated photographs.
#![allow(dead_code)] // each test crate uses a different subset

use std::f32::consts::TAU;
use std::path::{Path, PathBuf};

use image::{ImageFormat, RgbImage};
use lookalike::hash::{index_image, DecodeLimits};
use lookalike::index::{Index, Label, NewEntry};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

/// A smooth, detailed "photo": per channel, a sum of random separable cosines and
/// Gaussian blobs. Each seed gives a different image with a high PDQ quality.
pub fn photo(seed: u64, w: u32, h: u32) -> RgbImage {
    let mut rng = SmallRng::seed_from_u64(seed);
    let (wu, hu) = (w as usize, h as usize);
    // plane += column(y) × row(x)
    let add = |plane: &mut [f32], row: &[f32], column: &[f32]| {
        for (line, &vy) in plane.chunks_exact_mut(wu).zip(column) {
            for (p, &vx) in line.iter_mut().zip(row) {
                *p += vx * vy;
            }
        }
    };
    let mut planes = vec![vec![0f32; wu * hu]; 3];
    for plane in &mut planes {
        for _ in 0..8 {
            let (fx, fy) = (rng.random_range(0.3..7.0f32), rng.random_range(0.3..7.0f32));
            let (px, py) = (rng.random_range(0.0..TAU), rng.random_range(0.0..TAU));
            let amp = rng.random_range(10.0..35.0f32);
            let cx: Vec<f32> = (0..wu).map(|x| amp * (TAU * fx * x as f32 / w as f32 + px).cos()).collect();
            let cy: Vec<f32> = (0..hu).map(|y| (TAU * fy * y as f32 / h as f32 + py).cos()).collect();
            add(plane, &cx, &cy);
        }
        for _ in 0..5 {
            let (mx, my) = (rng.random_range(0.0..w as f32), rng.random_range(0.0..h as f32));
            let s = rng.random_range(0.04..0.2f32) * w.min(h) as f32;
            let amp = rng.random_range(-80.0..80.0f32);
            let gx: Vec<f32> = (0..wu).map(|x| amp * (-((x as f32 - mx) / s).powi(2)).exp()).collect();
            let gy: Vec<f32> = (0..hu).map(|y| (-((y as f32 - my) / s).powi(2)).exp()).collect();
            add(plane, &gx, &gy);
        }
    }
    RgbImage::from_fn(w, h, |x, y| {
        let i = y as usize * wu + x as usize;
        image::Rgb([0, 1, 2].map(|c| (128.0 + planes[c][i]).clamp(0.0, 255.0) as u8))
    })
}

/// Encode as JPEG at `quality`.
pub fn jpeg(img: &RgbImage, quality: u8) -> Vec<u8> {
    let mut bytes = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut bytes, quality).encode_image(img).unwrap();
    bytes
}

/// Encode in a lossless format.
pub fn encode(img: &RgbImage, format: ImageFormat) -> Vec<u8> {
    let mut bytes = std::io::Cursor::new(Vec::new());
    img.write_to(&mut bytes, format).unwrap();
    bytes.into_inner()
}

/// A PNG whose header declares `w`×`h` pixels, followed by a few bytes of junk data
/// (the header is all a decompression bomb needs to be refused).
pub fn png_declaring(w: u32, h: u32) -> Vec<u8> {
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut chunk = |kind: &[u8; 4], data: &[u8]| {
        out.extend_from_slice(&(data.len() as u32).to_be_bytes());
        let mut body = kind.to_vec();
        body.extend_from_slice(data);
        out.extend_from_slice(&body);
        out.extend_from_slice(&crc32fast::hash(&body).to_be_bytes());
    };
    let mut ihdr = Vec::new();
    ihdr.extend_from_slice(&w.to_be_bytes());
    ihdr.extend_from_slice(&h.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]); // 8-bit RGB
    chunk(b"IHDR", &ihdr);
    chunk(b"IDAT", &[0x78, 0x9c, 0x01, 0x02]);
    chunk(b"IEND", &[]);
    out
}

/// Index `bytes` (decoded, hashed and with features, as `lookalike index` does) as the
/// authentic photo `name` of `brand`.
pub fn add_authentic(index: &mut Index, brand: &str, name: &str, bytes: &[u8]) {
    let (h, thumbnail, features) = index_image(bytes, &DecodeLimits::default()).unwrap();
    let entry = NewEntry {
        brand: brand.into(),
        label: Label::Authentic,
        external_id: name.into(),
        source: name.into(),
        sha256: lookalike::hash::sha256(bytes),
        pdq: h.pdq.hash(),
        quality: Some(h.pdq.quality),
        phash: Some(h.phash),
        note: None,
        thumbnail: Some(thumbnail),
        features: Some(features),
        views: h.extra_views(),
    };
    index.add(&[entry]).unwrap();
}
