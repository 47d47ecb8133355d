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
    /// Luminance `0.299 R + 0.587 G + 0.114 B` in 0–255, row-major, `plane_width ×
    /// plane_height`; transparent pixels are composited onto white first (how a
    /// marketplace page shows them). Large images are box-averaged by a whole factor
    /// (see [`HASH_SHORT_SIDE`]).
    pub luma: Vec<f32>,
    /// Width of the luma plane.
    pub plane_width: u32,
    /// Height of the luma plane.
    pub plane_height: u32,
    /// Width of the image after EXIF orientation.
    pub width: u32,
    /// Height of the image after EXIF orientation.
    pub height: u32,
    /// Format name, lowercase.
    pub format: &'static str,
}

/// Images whose shorter side is at least twice this are box-averaged by
/// `shorter side / HASH_SHORT_SIDE` (rounded down) before hashing, so the luma plane
/// keeps a shorter side between this and twice this. PDQ's own filter averages
/// `side / 128` pixels, so this pre-averaging is nearly invisible in the hash (see the
/// README's agreement figures) while cutting the filter's work by the factor squared.
pub const HASH_SHORT_SIDE: usize = 512;

/// Above this many pixels, an image must carry at least one byte per
/// [`MAX_PIXELS_PER_BYTE`] pixels: no photograph or product shot compresses further,
/// and a tiny file that declares a huge canvas would cost seconds and gigabytes to decode.
const BOMB_CHECK_PIXELS: u64 = 16_000_000;
/// See [`BOMB_CHECK_PIXELS`]. A flat-colour PNG reaches about 350 pixels per byte.
const MAX_PIXELS_PER_BYTE: u64 = 4_000;

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

/// The checks every input passes before a decoder sees it: size, signature, and for
/// JPEG an end marker after the last scan.
fn precheck(bytes: &[u8], limits: &DecodeLimits) -> Result<(ImageFormat, &'static str), ImageError> {
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
    Ok((format, name))
}

/// Refuse, from the header alone, a canvas too large, empty, or implausibly large for
/// the number of bytes that describe it.
fn check_declared(width: u32, height: u32, bytes: usize, limits: &DecodeLimits) -> Result<(), ImageError> {
    let pixels = u64::from(width) * u64::from(height);
    if pixels > limits.max_pixels {
        return Err(ImageError::TooManyPixels { width, height, pixels, limit: limits.max_pixels });
    }
    if pixels == 0 {
        return Err(ImageError::NoPixels { width, height });
    }
    if pixels > BOMB_CHECK_PIXELS && pixels / MAX_PIXELS_PER_BYTE > bytes as u64 {
        return Err(ImageError::Implausible { width, height, pixels, bytes, per_byte: MAX_PIXELS_PER_BYTE });
    }
    Ok(())
}

/// Decoded JPEG luma planes up to this many bytes keep their buffer for the thread's
/// next image; larger ones are freed (a rare 100-megapixel upload should not pin
/// 100 MB per thread).
const KEEP_LUMA_BUFFER: usize = 16 * 1024 * 1024;

thread_local! {
    /// zune-jpeg's 8-bit output, reused: a fresh multi-megabyte buffer per image costs
    /// page faults (see the allocator note in `main.rs`).
    static JPEG_LUMA: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// A JPEG's luminance (its Y channel, which is `0.299 R + 0.587 G + 0.114 B`) and EXIF
/// orientation, without converting or upsampling the colour channels, handed to `use_plane`
/// as `(pixels, width, height, orientation)`. `None` for a JPEG that is not YCbCr or grey
/// (CMYK, …): the general decoder handles those.
fn decode_jpeg_luma<R>(
    bytes: &[u8],
    limits: &DecodeLimits,
    use_plane: impl FnOnce(&[u8], u32, u32, image::metadata::Orientation) -> R,
) -> Result<Option<R>, ImageError> {
    use zune_core::colorspace::ColorSpace;
    let corrupt =
        |e: zune_jpeg::errors::DecodeErrors| ImageError::Corrupt { format: "jpeg".into(), reason: e.to_string() };
    let options = zune_core::options::DecoderOptions::default()
        .set_strict_mode(false)
        .set_max_width(usize::from(u16::MAX))
        .set_max_height(usize::from(u16::MAX))
        .jpeg_set_out_colorspace(ColorSpace::Luma);
    let mut decoder = zune_jpeg::JpegDecoder::new_with_options(zune_core::bytestream::ZCursor::new(bytes), options);
    decoder.decode_headers().map_err(corrupt)?;
    let (width, height) = decoder.dimensions().expect("headers were decoded");
    let (width, height) = (width as u32, height as u32);
    check_declared(width, height, bytes.len(), limits)?;
    if !matches!(decoder.input_colorspace(), Some(ColorSpace::YCbCr | ColorSpace::Luma)) {
        return Ok(None);
    }
    let orientation = decoder
        .exif()
        .and_then(|exif| image::metadata::Orientation::from_exif_chunk(exif))
        .unwrap_or(image::metadata::Orientation::NoTransforms);
    let size = decoder.output_buffer_size().expect("headers were decoded");
    if size != width as usize * height as usize {
        return Err(ImageError::Corrupt {
            format: "jpeg".into(),
            reason: "decoder would return a different number of pixels than the header declares".into(),
        });
    }
    JPEG_LUMA.with_borrow_mut(|pixels| {
        // Zeroed each time, as a fresh buffer would be: whatever a corrupt stream leaves
        // unwritten must not depend on the thread's previous image.
        pixels.clear();
        pixels.resize(size, 0);
        let decoded = decoder.decode_into(pixels).map_err(corrupt);
        let result = decoded.map(|()| use_plane(pixels, width, height, orientation));
        if pixels.capacity() > KEEP_LUMA_BUFFER {
            *pixels = Vec::new();
        }
        result.map(Some)
    })
}

/// The luma plane of `bytes` for hashing: JPEGs through [`decode_jpeg_luma`], the
/// rest through `decoded` (decoding it if the caller has not).
fn hash_plane(
    bytes: &[u8],
    format: ImageFormat,
    name: &'static str,
    limits: &DecodeLimits,
    decoded: Option<&DynamicImage>,
) -> Result<DecodedImage, ImageError> {
    if format == ImageFormat::Jpeg {
        let plane = decode_jpeg_luma(bytes, limits, |pixels, width, height, orientation| {
            if orientation == image::metadata::Orientation::NoTransforms {
                return (reduce_u8(pixels, width as usize, height as usize), width, height);
            }
            let gray = image::GrayImage::from_raw(width, height, pixels.to_vec()).expect("size was checked");
            let mut img = DynamicImage::ImageLuma8(gray);
            img.apply_orientation(orientation);
            let gray = img.into_luma8();
            let (width, height) = gray.dimensions();
            (reduce_u8(gray.as_raw(), width as usize, height as usize), width, height)
        })?;
        if let Some(((luma, pw, ph), width, height)) = plane {
            return Ok(DecodedImage { luma, plane_width: pw, plane_height: ph, width, height, format: name });
        }
    }
    let owned;
    let img = match decoded {
        Some(img) => img,
        None => {
            owned = decode_image(bytes, limits)?.0;
            &owned
        }
    };
    let (width, height) = (img.width(), img.height());
    let full = luma_plane(img);
    let (luma, pw, ph) = reduce(full, width as usize, height as usize);
    Ok(DecodedImage { luma, plane_width: pw, plane_height: ph, width, height, format: name })
}

/// The whole factor a `width × height` plane is box-averaged by before hashing: the
/// largest that keeps the shorter side at least [`HASH_SHORT_SIDE`] (1 when none does).
fn reduce_factor(width: usize, height: usize) -> usize {
    (width.min(height) / HASH_SHORT_SIDE).max(1)
}

/// Box-average a plane by [`reduce_factor`] (when that is 2 or more), dropping the few
/// rows and columns past a whole block. Returns the plane and its size.
fn reduce(plane: Vec<f32>, width: usize, height: usize) -> (Vec<f32>, u32, u32) {
    let factor = reduce_factor(width, height);
    if factor < 2 {
        return (plane, width as u32, height as u32);
    }
    let (ow, oh) = (width / factor, height / factor);
    let mut out = vec![0f32; ow * oh];
    let norm = 1.0 / (factor * factor) as f32;
    for (oy, acc) in out.chunks_exact_mut(ow).enumerate() {
        for row in plane[oy * factor * width..].chunks(width).take(factor) {
            for (a, block) in acc.iter_mut().zip(row.chunks_exact(factor)) {
                *a += block.iter().sum::<f32>();
            }
        }
        acc.iter_mut().for_each(|a| *a *= norm);
    }
    (out, ow as u32, oh as u32)
}

/// [`reduce`] for 8-bit pixels, summing in integers (the same values: every partial
/// sum is an integer well inside `f32`'s exact range).
fn reduce_u8(plane: &[u8], width: usize, height: usize) -> (Vec<f32>, u32, u32) {
    let factor = reduce_factor(width, height);
    if factor < 2 {
        return (plane.iter().map(|&v| f32::from(v)).collect(), width as u32, height as u32);
    }
    let (ow, oh) = (width / factor, height / factor);
    let norm = 1.0 / (factor * factor) as f32;
    let mut out = Vec::with_capacity(ow * oh);
    let mut sums = vec![0u32; ow];
    for oy in 0..oh {
        sums.fill(0);
        for row in plane[oy * factor * width..].chunks(width).take(factor) {
            if factor == 2 {
                for (s, pair) in sums.iter_mut().zip(row.chunks_exact(2)) {
                    *s += u32::from(pair[0]) + u32::from(pair[1]);
                }
            } else {
                for (s, block) in sums.iter_mut().zip(row.chunks_exact(factor)) {
                    *s += block.iter().map(|&v| u32::from(v)).sum::<u32>();
                }
            }
        }
        out.extend(sums.iter().map(|&s| s as f32 * norm));
    }
    (out, ow as u32, oh as u32)
}

/// Decode `bytes` to an image in its display orientation, within `limits`.
fn decode_image(bytes: &[u8], limits: &DecodeLimits) -> Result<(DynamicImage, &'static str), ImageError> {
    let (format, name) = precheck(bytes, limits)?;
    let corrupt = |e: image::ImageError| classify(e, name);
    let reader = ImageReader::with_format(Cursor::new(bytes), format);
    let mut decoder = reader.into_decoder().map_err(corrupt)?;
    let (width, height) = decoder.dimensions();
    check_declared(width, height, bytes.len(), limits)?;
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
    let (format, name) = precheck(bytes, limits)?;
    hash_plane(bytes, format, name, limits, None)
}

/// Like [`decode`], and also a JPEG thumbnail (at most `max_side` pixels on its longer
/// side, transparency flattened onto white) for showing the image to a person.
pub fn decode_with_thumbnail(
    bytes: &[u8],
    limits: &DecodeLimits,
    max_side: u32,
) -> Result<(DecodedImage, Vec<u8>), ImageError> {
    let (img, name) = decode_image(bytes, limits)?;
    let format = sniff_format(bytes)?.0;
    let small = if img.width().max(img.height()) > max_side { thumbnail(&img, max_side) } else { img.clone() };
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
        .map_err(|e| ImageError::Corrupt { format: name.to_string(), reason: format!("making a thumbnail: {e}") })?;
    // A JPEG is hashed from its own luminance channel (as `decode` does), so the same
    // bytes hash the same whether indexed or queried.
    let decoded = hash_plane(bytes, format, name, limits, Some(&img))?;
    Ok((decoded, jpeg))
}

/// `img.thumbnail(max_side, max_side)`, pixel for pixel. For 8-bit RGB shrunk at least
/// a whole source pixel per output pixel each way (the usual case), every output pixel is
/// the rounded mean of a block of source pixels, summed here a row slice at a time with
/// the same windows, integer sums and rounding as `image::imageops::thumbnail`, which
/// reads them a pixel at a time through its generic pixel access (a quarter of the CPU
/// of indexing a 1000×1000 JPEG); other images go through `image`.
fn thumbnail(img: &DynamicImage, max_side: u32) -> DynamicImage {
    let (width, height) = (img.width(), img.height());
    let (nw, nh) = thumbnail_size(width, height, max_side);
    let DynamicImage::ImageRgb8(rgb) = img else { return img.thumbnail_exact(nw, nh) };
    // Source windows `lo..hi` of each output column or row, as `imageops::thumbnail`
    // computes them; `None` if one is empty (its fractional-pixel cases).
    let windows = |size: u32, n: u32| -> Option<Vec<(usize, usize)>> {
        let ratio = size as f32 / n as f32;
        (0..n)
            .map(|o| {
                let lo_f = o as f32 * ratio;
                let hi_f = lo_f + ratio;
                let lo = (lo_f.ceil() as u32).min(size - 1);
                let hi = (hi_f.ceil() as u32).clamp(lo, size);
                (lo != hi).then_some((lo as usize, hi as usize))
            })
            .collect()
    };
    let (Some(cols), Some(rows)) = (windows(width, nw), windows(height, nh)) else {
        return img.thumbnail_exact(nw, nh);
    };
    let (src, stride) = (rgb.as_raw(), width as usize * 3);
    let mut out = Vec::with_capacity(nw as usize * nh as usize * 3);
    let mut sums = vec![[0u32; 3]; cols.len()];
    for &(bottom, top) in &rows {
        sums.fill([0; 3]);
        for line in src[bottom * stride..top * stride].chunks_exact(stride) {
            for (sum, &(left, right)) in sums.iter_mut().zip(&cols) {
                for px in line[left * 3..right * 3].chunks_exact(3) {
                    sum[0] += u32::from(px[0]);
                    sum[1] += u32::from(px[1]);
                    sum[2] += u32::from(px[2]);
                }
            }
        }
        for (sum, &(left, right)) in sums.iter().zip(&cols) {
            let n = ((right - left) * (top - bottom)) as u32;
            out.extend(sum.map(|v| ((v + n / 2) / n).min(255) as u8));
        }
    }
    DynamicImage::ImageRgb8(image::RgbImage::from_raw(nw, nh, out).expect("nw × nh × 3 bytes"))
}

/// The size `DynamicImage::thumbnail(max_side, max_side)` shrinks a `width × height`
/// image to (aspect kept, rounded, at least 1).
fn thumbnail_size(width: u32, height: u32, max_side: u32) -> (u32, u32) {
    let ratio = (f64::from(max_side) / f64::from(width)).min(f64::from(max_side) / f64::from(height));
    let side = |v: u32| ((f64::from(v) * ratio).round() as u64).clamp(1, u64::from(u32::MAX)) as u32;
    (side(width), side(height))
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
///
/// Found from the end: the answer is yes exactly when the last of all start-of-scan and
/// end-of-image markers is an end-of-image marker and some scan precedes it. A whole
/// file ends with its end marker, so this reads a few bytes at the end and the headers up
/// to the first scan, not the whole file twice.
fn jpeg_has_end_after_last_scan(bytes: &[u8]) -> bool {
    let last_marker = bytes.windows(2).rposition(|w| w == [0xFF, 0xD9] || w == [0xFF, 0xDA]);
    match last_marker {
        Some(at) if bytes[at + 1] == 0xD9 => bytes[..at].windows(2).any(|w| w == [0xFF, 0xDA]),
        _ => false,
    }
}

fn hex_prefix(bytes: &[u8]) -> String {
    let shown: Vec<String> = bytes.iter().take(8).map(|b| format!("{b:02x}")).collect();
    shown.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thumbnails_are_those_of_the_image_crate() {
        let side = crate::hash::THUMBNAIL_SIDE;
        let mut state = 0x2545_F491_4F6C_DD1Du64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for (w, h) in
            [(1000, 1000), (1000, 800), (655, 414), (257, 256), (300, 1000), (511, 3), (2000, 1333), (600, 300)]
        {
            // Smooth gradients plus noise, so that rounding of the means is exercised.
            let rgb = image::RgbImage::from_fn(w, h, |x, y| {
                let n = next();
                image::Rgb([(x * 255 / w) as u8 ^ (n as u8 & 7), (y * 255 / h) as u8, (n >> 8) as u8])
            });
            let img = DynamicImage::ImageRgb8(rgb);
            let expected = img.thumbnail(side, side);
            assert_eq!(thumbnail_size(w, h, side), (expected.width(), expected.height()), "{w}×{h}");
            assert_eq!(thumbnail(&img, side), expected, "{w}×{h}");
            let gray = DynamicImage::ImageLuma8(img.to_luma8());
            assert_eq!(thumbnail(&gray, side), gray.thumbnail(side, side), "{w}×{h}");
        }
    }

    #[test]
    fn end_marker_check_agrees_with_scanning_from_the_last_scan() {
        // The plain definition: find the last start-of-scan, then look for an end after it.
        let plain = |bytes: &[u8]| match bytes.windows(2).rposition(|w| w == [0xFF, 0xDA]) {
            Some(at) => bytes[at..].windows(2).any(|w| w == [0xFF, 0xD9]),
            None => false,
        };
        // Every string of up to 8 bytes over the bytes that matter.
        let alphabet = [0x00, 0xFF, 0xD9, 0xDA];
        for len in 0..=8u32 {
            for code in 0..4usize.pow(len) {
                let bytes: Vec<u8> = (0..len).map(|i| alphabet[code / 4usize.pow(i) % 4]).collect();
                assert_eq!(jpeg_has_end_after_last_scan(&bytes), plain(&bytes), "{bytes:02x?}");
            }
        }
    }
}
