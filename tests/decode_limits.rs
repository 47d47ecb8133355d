//! Hostile and broken inputs are refused with a precise error, before any large
//! allocation.

mod common;

use common::png_declaring;
use lookalike::hash::{hash_image, DecodeLimits, ImageError};

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)).unwrap()
}

#[test]
fn zero_bytes_is_refused() {
    assert_eq!(hash_image(&[], &DecodeLimits::default()), Err(ImageError::Empty));
}

#[test]
fn random_bytes_are_not_an_image() {
    let bytes: Vec<u8> = (0..4096u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
    let err = hash_image(&bytes, &DecodeLimits::default()).unwrap_err();
    assert!(matches!(err, ImageError::UnknownFormat(_)), "{err:?}");
    assert!(err.to_string().starts_with("not a supported image"), "{err}");
}

#[test]
fn decompression_bomb_is_refused_from_its_header() {
    let err = hash_image(&png_declaring(60_000, 60_000), &DecodeLimits::default()).unwrap_err();
    assert_eq!(
        err,
        ImageError::TooManyPixels { width: 60_000, height: 60_000, pixels: 3_600_000_000, limit: 100_000_000 }
    );
    assert!(err.to_string().contains("over the limit of 100000000 pixels"), "{err}");
}

#[test]
fn pixel_limit_is_configurable() {
    let bytes = fixture("astronaut.jpg");
    let tight = DecodeLimits { max_pixels: 512 * 511, ..DecodeLimits::default() };
    assert!(matches!(hash_image(&bytes, &tight), Err(ImageError::TooManyPixels { width: 512, height: 512, .. })));
    assert!(hash_image(&bytes, &DecodeLimits { max_pixels: 512 * 512, ..tight }).is_ok());
}

#[test]
fn byte_limit_is_checked_before_decoding() {
    let bytes = fixture("astronaut.jpg");
    let limits = DecodeLimits { max_bytes: 1000, ..DecodeLimits::default() };
    assert_eq!(hash_image(&bytes, &limits), Err(ImageError::TooManyBytes { size: bytes.len(), limit: 1000 }));
}

#[test]
fn truncated_jpeg_and_png_are_corrupt() {
    for name in ["astronaut.jpg", "chelsea.png"] {
        let bytes = fixture(name);
        let cut = &bytes[..bytes.len() / 2];
        match hash_image(cut, &DecodeLimits::default()) {
            Err(ImageError::Corrupt { format, reason }) => {
                assert!(name.ends_with(if format == "jpeg" { ".jpg" } else { ".png" }), "{name}: format {format}");
                assert!(!reason.is_empty());
            }
            other => panic!("{name} cut in half: expected a corrupt-image error, got {other:?}"),
        }
    }
}

#[test]
fn header_only_png_with_junk_data_is_corrupt_not_a_panic() {
    let err = hash_image(&png_declaring(64, 64), &DecodeLimits::default()).unwrap_err();
    assert!(matches!(err, ImageError::Corrupt { .. }), "{err:?}");
}

#[test]
fn one_pixel_image_hashes_with_zero_quality() {
    let mut png = Vec::new();
    image::RgbImage::from_pixel(1, 1, image::Rgb([10, 200, 30]))
        .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
        .unwrap();
    let h = hash_image(&png, &DecodeLimits::default()).unwrap();
    assert_eq!((h.width, h.height, h.pdq.quality), (1, 1, 0));
}
