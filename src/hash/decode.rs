//! Decoding with hard limits, checked before any large allocation.

use std::io::Cursor;

use image::{DynamicImage, ImageDecoder, ImageFormat, ImageReader};

use super::ImageError;

/// Bounds on what an input may cost to decode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodeLimits {
    /// Refuse inputs larger than this many bytes.
    pub max_bytes: usize,
    /// Refuse images whose header declares more than this many pixels.
    pub max_pixels: u64,
}

impl DecodeLimits {
    /// 32 MiB of input.
    pub const DEFAULT_MAX_BYTES: usize = 32 * 1024 * 1024;
    /// 100 megapixels.
    pub const DEFAULT_MAX_PIXELS: u64 = 100_000_000;
}

impl Default for DecodeLimits {
    fn default() -> Self {
        DecodeLimits { max_bytes: Self::DEFAULT_MAX_BYTES, max_pixels: Self::DEFAULT_MAX_PIXELS }
    }
}

/// A decoded, upright image reduced to what the hashes need.
#[derive(Debug, Clone)]
pub struct DecodedImage {
    /// Luminance `0.299 R + 0.587 G + 0.114 B` in 0–255, row-major; transparent pixels
    /// are composited onto white first (how a marketplace page shows them).
    pub luma: Vec<f32>,
    /// Width after EXIF orientation.
    pub width: u32,
    /// Height after EXIF orientation.
    pub height: u32,
    /// Format name, lowercase.
    pub format: &'static str,
}

const LUMA_R: f32 = 0.299;
const LUMA_G: f32 = 0.587;
const LUMA_B: f32 = 0.114;

fn format_name(format: ImageFormat) -> &'static str {
    match format {
        ImageFormat::Jpeg => "jpeg",
        ImageFormat::Png => "png",
        ImageFormat::WebP => "webp",
        ImageFormat::Gif => "gif",
        ImageFormat::Bmp => "bmp",
        ImageFormat::Tiff => "tiff",
        _ => "unsupported",
    }
}

/// The accepted image format `bytes` start with (from the signature alone: nothing is
/// decoded), or why they are not an image.
pub fn sniff(bytes: &[u8]) -> Result<&'static str, ImageError> {
    sniff_format(bytes).map(|(_, name)| name)
}

fn sniff_format(bytes: &[u8]) -> Result<(ImageFormat, &'static str), ImageError> {
    if bytes.is_empty() {
        return Err(ImageError::Empty);
    }
    let format = image::guess_format(bytes)
        .map_err(|_| ImageError::UnknownFormat(format!("unrecognised signature {}", hex_prefix(bytes))))?;
    let name = format_name(format);
    if name == "unsupported" {
        return Err(ImageError::UnknownFormat(format!("{format:?} is not accepted")));
    }
    Ok((format, name))
}

/// Decode `bytes` to an image in its display orientation, within `limits`.
fn decode_image(bytes: &[u8], limits: &DecodeLimits) -> Result<(DynamicImage, &'static str), ImageError> {
    if bytes.is_empty() {
        return Err(ImageError::Empty);
    }
    if bytes.len() > limits.max_bytes {
        return Err(ImageError::TooManyBytes { size: bytes.len(), limit: limits.max_bytes });
    }
    let (format, name) = sniff_format(bytes)?;
    if format == ImageFormat::Jpeg && !jpeg_has_end_after_last_scan(bytes) {
        // zune-jpeg decodes a cut-off JPEG without complaint, filling the missing rows:
        // a partial upload would be hashed as a different picture.
        return Err(ImageError::Corrupt {
            format: name.to_string(),
            reason: "data ends early (truncated file: no end-of-image marker after the last scan)".into(),
        });
    }
    let corrupt = |e: image::ImageError| classify(e, name);
    let reader = ImageReader::with_format(Cursor::new(bytes), format);
    let mut decoder = reader.into_decoder().map_err(corrupt)?;
    let (width, height) = decoder.dimensions();
    let pixels = u64::from(width) * u64::from(height);
    if pixels > limits.max_pixels {
        return Err(ImageError::TooManyPixels { width, height, pixels, limit: limits.max_pixels });
    }
    if pixels == 0 {
        return Err(ImageError::NoPixels { width, height });
    }
    // The header passed; still bound the decoder's own allocations (an animated GIF or a
    // TIFF can allocate beyond width × height): 8 bytes per allowed pixel covers RGBA16.
    let mut decoder_limits = image::Limits::default();
    decoder_limits.max_alloc = Some(limits.max_pixels.saturating_mul(8));
    decoder.set_limits(decoder_limits).map_err(corrupt)?;
    let orientation = decoder.orientation().unwrap_or(image::metadata::Orientation::NoTransforms);
    let mut img = DynamicImage::from_decoder(decoder).map_err(corrupt)?;
    img.apply_orientation(orientation);
    Ok((img, name))
}

/// Decode `bytes` (first frame of an animation), apply the EXIF orientation, and
/// reduce to luminance — refusing, before decoding, input over `limits`.
pub fn decode(bytes: &[u8], limits: &DecodeLimits) -> Result<DecodedImage, ImageError> {
    let (img, format) = decode_image(bytes, limits)?;
    Ok(DecodedImage { luma: luma_plane(&img), width: img.width(), height: img.height(), format })
}

/// Like [`decode`], and also a JPEG thumbnail (at most `max_side` pixels on its longer
/// side, transparency flattened onto white) for showing the image to a person.
pub fn decode_with_thumbnail(
    bytes: &[u8],
    limits: &DecodeLimits,
    max_side: u32,
) -> Result<(DecodedImage, Vec<u8>), ImageError> {
    let (img, format) = decode_image(bytes, limits)?;
    let small = if img.width().max(img.height()) > max_side { img.thumbnail(max_side, max_side) } else { img.clone() };
    let rgb = if small.color().has_alpha() {
        let rgba = small.to_rgba8();
        image::RgbImage::from_fn(rgba.width(), rgba.height(), |x, y| {
            let p = rgba.get_pixel(x, y).0;
            let a = u16::from(p[3]);
            image::Rgb([0, 1, 2].map(|c| ((u16::from(p[c]) * a + 255 * (255 - a)) / 255) as u8))
        })
    } else {
        small.to_rgb8()
    };
    let mut jpeg = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, THUMBNAIL_QUALITY)
        .encode_image(&rgb)
        .map_err(|e| ImageError::Corrupt { format: format.to_string(), reason: format!("making a thumbnail: {e}") })?;
    let decoded = DecodedImage { luma: luma_plane(&img), width: img.width(), height: img.height(), format };
    Ok((decoded, jpeg))
}

/// JPEG quality of thumbnails.
const THUMBNAIL_QUALITY: u8 = 80;

fn luma_plane(img: &DynamicImage) -> Vec<f32> {
    match img {
        DynamicImage::ImageLuma8(gray) => gray.as_raw().iter().map(|&v| f32::from(v)).collect(),
        DynamicImage::ImageRgb8(rgb) => rgb
            .as_raw()
            .chunks_exact(3)
            .map(|p| LUMA_R * f32::from(p[0]) + LUMA_G * f32::from(p[1]) + LUMA_B * f32::from(p[2]))
            .collect(),
        other if other.color().has_alpha() => other
            .to_rgba8()
            .as_raw()
            .chunks_exact(4)
            .map(|p| {
                let alpha = f32::from(p[3]) / 255.0;
                let over_white = |c: u8| f32::from(c) * alpha + 255.0 * (1.0 - alpha);
                LUMA_R * over_white(p[0]) + LUMA_G * over_white(p[1]) + LUMA_B * over_white(p[2])
            })
            .collect(),
        other => luma_plane(&DynamicImage::ImageRgb8(other.to_rgb8())),
    }
}

fn classify(e: image::ImageError, format: &'static str) -> ImageError {
    match e {
        image::ImageError::Limits(l) => ImageError::Corrupt {
            format: format.to_string(),
            reason: format!("decoding would exceed the memory limit ({l})"),
        },
        image::ImageError::Unsupported(u) => ImageError::UnknownFormat(u.to_string()),
        image::ImageError::IoError(io) if io.kind() == std::io::ErrorKind::UnexpectedEof => {
            ImageError::Corrupt { format: format.to_string(), reason: "data ends early (truncated file)".into() }
        }
        other => ImageError::Corrupt { format: format.to_string(), reason: other.to_string() },
    }
}

/// Whether an end-of-image marker (FF D9) follows the last start-of-scan (FF DA).
/// Inside entropy-coded data every FF byte is followed by 00 (byte stuffing) or a
/// restart marker, so neither marker can appear there by accident; an EXIF thumbnail's
/// own markers come before the main image's scans.
fn jpeg_has_end_after_last_scan(bytes: &[u8]) -> bool {
    let last_scan = bytes.windows(2).rposition(|w| w == [0xFF, 0xDA]);
    match last_scan {
        Some(at) => bytes[at..].windows(2).any(|w| w == [0xFF, 0xD9]),
        None => false,
    }
}

fn hex_prefix(bytes: &[u8]) -> String {
    let shown: Vec<String> = bytes.iter().take(8).map(|b| format!("{b:02x}")).collect();
    shown.join(" ")
}
