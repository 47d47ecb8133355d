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

/// A few hundred bytes that declare a 25-megapixel canvas: under the pixel limit, but
/// no real image compresses that far, and decoding it would cost seconds and a gigabyte.
#[test]
fn tiny_file_declaring_a_huge_canvas_is_refused() {
    let err = hash_image(&png_declaring(5_000, 5_000), &DecodeLimits::default()).unwrap_err();
    assert!(matches!(err, ImageError::Implausible { width: 5_000, height: 5_000, pixels: 25_000_000, .. }), "{err:?}");
    assert!(err.to_string().contains("decompression bomb"), "{err}");

    // The same trick in a JPEG: a real 16×16 JPEG whose frame header is patched to 6000×6000.
    let mut jpeg = common::jpeg(&common::photo(1, 16, 16), 90);
    let sof = jpeg.windows(2).position(|w| w == [0xFF, 0xC0]).expect("baseline JPEG has SOF0");
    jpeg[sof + 5..sof + 9].copy_from_slice(&[0x17, 0x70, 0x17, 0x70]);
    let err = hash_image(&jpeg, &DecodeLimits::default()).unwrap_err();
    assert!(matches!(err, ImageError::Implausible { width: 6_000, height: 6_000, .. }), "{err:?}");
}

/// Large photos are box-averaged before PDQ's filter: the result must stay within a few
/// bits of hashing the full-size plane, and the reported size is the real one.
#[test]
fn large_images_hash_close_to_their_full_size_plane() {
    let img = common::photo(7, 2400, 1800);
    let bytes = common::encode(&img, image::ImageFormat::Png);
    let reduced = hash_image(&bytes, &DecodeLimits::default()).unwrap();
    assert_eq!((reduced.width, reduced.height), (2400, 1800));
    let decoded = lookalike::hash::decode(&bytes, &DecodeLimits::default()).unwrap();
    assert_eq!((decoded.plane_width, decoded.plane_height), (800, 600), "averaged by 3");

    let full: Vec<f32> =
        img.pixels().map(|p| 0.299 * f32::from(p[0]) + 0.587 * f32::from(p[1]) + 0.114 * f32::from(p[2])).collect();
    let full_hash =
        lookalike::hash::pdq::hash_luma(&full, 2400, 1800, &mut lookalike::hash::pdq::PdqScratch::default());
    let d = reduced.pdq.hash().distance(&full_hash.hash());
    assert!(d <= 8, "reduced plane is {d} bits from the full-size hash");
}
