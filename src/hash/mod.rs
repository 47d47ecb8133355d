//! Bytes → decoded pixels (bounded) → perceptual hashes.
//!
//! Everything here is a pure function of the input bytes and the [`DecodeLimits`]:
//! no I/O, no global state. [`hash_image`] is the one entry point the rest of the
//! crate uses.

mod decode;
mod deskew;
mod hash256;
pub mod pdq;
mod phash;
mod trim;

pub use decode::{decode, decode_with_thumbnail, sniff, DecodeLimits, DecodedImage, HASH_SHORT_SIDE};
pub use hash256::{Hash256, ParseHashError};
pub use pdq::{Orientation, PdqHashes};

use sha2::{Digest, Sha256};

/// Why an image could not be hashed. Every variant is the caller's input's fault
/// (bad or hostile bytes), never a server fault.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum ImageError {
    #[error("empty input: zero bytes")]
    Empty,
    #[error("input is {size} bytes, over the limit of {limit} bytes")]
    TooManyBytes { size: usize, limit: usize },
    #[error("not a supported image (JPEG, PNG, WebP, GIF, BMP or TIFF): {0}")]
    UnknownFormat(String),
    #[error("image declares {width}×{height} = {pixels} pixels, over the limit of {limit} pixels")]
    TooManyPixels { width: u32, height: u32, pixels: u64, limit: u64 },
    #[error("image has no pixels ({width}×{height})")]
    NoPixels { width: u32, height: u32 },
    #[error(
        "image declares {width}×{height} = {pixels} pixels in only {bytes} bytes (more than {per_byte} pixels per byte): \
         refused as a likely decompression bomb"
    )]
    Implausible { width: u32, height: u32, pixels: u64, bytes: usize, per_byte: u64 },
    #[error("corrupt or truncated {format} image: {reason}")]
    Corrupt { format: String, reason: String },
}

/// Everything computed from one image.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageHashes {
    /// PDQ hash, quality and the 8 dihedral variants.
    pub pdq: PdqHashes,
    /// 64-bit DCT pHash (image_hasher, median), the secondary hash.
    pub phash: u64,
    /// Width after EXIF orientation.
    pub width: u32,
    /// Height after EXIF orientation.
    pub height: u32,
    /// Format the bytes were decoded as (lowercase, e.g. `jpeg`).
    pub format: &'static str,
    /// The image with its uniform borders trimmed (letterboxing, padding, the plain
    /// field around a product), when that removes a worthwhile share of it.
    pub trimmed: Option<Trimmed>,
    /// PDQ of each tile when the image is a collage (split by uniform gutters through
    /// its middle; see [`trim::collage_tiles`]): computed for queries only, empty
    /// otherwise.
    pub tiles: Vec<View>,
    /// PDQ of the picture framed inside the image (a screenshot's photo among the page's
    /// text and buttons; see [`trim::framed_picture`]) and of its content inside its own
    /// uniform borders: computed for queries only, empty otherwise.
    pub framed: Vec<View>,
    /// PDQ of the image turned upright when its straight edges show a small rotation
    /// ([`deskew::skew`]), whole and inside the uniform borders the turn leaves:
    /// computed for queries only, empty otherwise.
    pub upright: Vec<View>,
}

/// A part of an image hashed on its own (a collage's tile, a screenshot's picture, the
/// image turned upright), and where it lies in the image.
#[derive(Debug, Clone, PartialEq)]
pub struct View {
    pub pdq: PdqHashes,
    pub frame: Frame,
}

/// Where a view lies in its image: the affine map from a point of the view, in shares
/// of its width and height (0–1), to the image's luma plane, in pixels (pixel `i`
/// spans `[i, i + 1)`): `x = a·u + b·v + c`, `y = d·u + e·v + f` for `[a, b, c, d, e, f]`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Frame(pub [f32; 6]);

impl Frame {
    /// The axis-aligned rectangle `x, y, width, height` of the plane.
    pub fn rect(x: f32, y: f32, width: f32, height: f32) -> Frame {
        Frame([width, 0.0, x, 0.0, height, y])
    }

    /// The affine map that agrees with `map` at the view's corners (0, 0), (1, 0) and
    /// (0, 1): `map` itself when it is affine.
    pub fn of(map: impl Fn(f32, f32) -> (f32, f32)) -> Frame {
        let o = map(0.0, 0.0);
        let eu = map(1.0, 0.0);
        let ev = map(0.0, 1.0);
        Frame([eu.0 - o.0, ev.0 - o.0, o.0, eu.1 - o.1, ev.1 - o.1, o.1])
    }

    /// The point of the plane at (`u`, `v`) of the view.
    pub fn at(&self, u: f32, v: f32) -> (f32, f32) {
        let [a, b, c, d, e, f] = self.0;
        (a * u + b * v + c, d * u + e * v + f)
    }

    /// The map as a 3×3 homography, row-major (the form `features` transforms take).
    pub fn matrix(&self) -> [f32; 9] {
        let [a, b, c, d, e, f] = self.0;
        [a, b, c, d, e, f, 0.0, 0.0, 1.0]
    }

    /// This frame seen from a plane that is itself turned by `degrees` (counter-clockwise
    /// as seen) about the centre of a `width × height` plane ([`deskew::rotate`]): the
    /// frame's points mapped back to the plane before the turn.
    fn unturned(self, degrees: f32, width: usize, height: usize) -> Frame {
        let (sin, cos) = degrees.to_radians().sin_cos();
        let (cx, cy) = (width as f32 / 2.0, height as f32 / 2.0);
        Frame::of(|u, v| {
            // As `deskew::rotate` finds an output pixel's source.
            let (x, y) = self.at(u, v);
            let (dx, dy) = (x - cx, y - cy);
            (cx + dx * cos - dy * sin, cy + dx * sin + dy * cos)
        })
    }

    /// The frame of a rectangle given in this frame's view pixels (the view being
    /// `width × height`).
    fn inner(self, r: trim::Rect, width: usize, height: usize) -> Frame {
        let (w, h) = (width as f32, height as f32);
        Frame::of(|u, v| self.at((r.x as f32 + u * r.width as f32) / w, (r.y as f32 + v * r.height as f32) / h))
    }
}

/// PDQ of an image's content inside its uniform borders.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trimmed {
    pub pdq: PdqHashes,
    /// The content rectangle in image pixels: x, y, width, height.
    pub rect: [u32; 4],
}

impl ImageHashes {
    /// The hashes stored for each view of the image: the whole image (view 0), then the
    /// trimmed content (view 1) if there is one.
    pub fn views(&self) -> Vec<&PdqHashes> {
        std::iter::once(&self.pdq).chain(self.trimmed.as_ref().map(|t| &t.pdq)).collect()
    }

    /// The hashes stored beside the whole-image hash, as views 1, 2, … of an entry.
    pub fn extra_views(&self) -> Vec<Hash256> {
        self.trimmed.iter().map(|t| t.pdq.hash()).collect()
    }
}

/// The rectangle of a decoded image's content inside its uniform borders (what its
/// trimmed view, [`Trimmed`], is hashed on), as shares of its width and height:
/// `[x0, y0, x1, y1]`.
pub fn content_share(decoded: &DecodedImage) -> Option<[f32; 4]> {
    let (w, h) = (decoded.plane_width as usize, decoded.plane_height as usize);
    let r = trim::content_rect(&decoded.luma, w, h)?;
    let (w, h) = (w as f32, h as f32);
    Some([r.x as f32 / w, r.y as f32 / h, (r.x + r.width) as f32 / w, (r.y + r.height) as f32 / h])
}

/// SHA-256 of the raw bytes, the identity of a file for idempotent re-indexing.
pub fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

/// Decode `bytes` within `limits` and compute all hashes.
pub fn hash_image(bytes: &[u8], limits: &DecodeLimits) -> Result<ImageHashes, ImageError> {
    let decoded = decode(bytes, limits)?;
    Ok(hash_decoded(&decoded))
}

/// Longer side of the thumbnails kept for the moderator page and for comparing a
/// listing with the stored photo part by part (`matcher::parts`), in pixels: the
/// working image's side, so a logo 2% of the photo wide still spans 10 of its pixels.
/// (256 px left such a logo 5 pixels wide, where any two dark marks look alike; 512
/// costs 20.4 KB a photo instead of 7.5 on `tools/eval`'s genuine images.)
pub const THUMBNAIL_SIDE: u32 = 512;

/// What indexing keeps of an image: its hashes, a thumbnail (see [`THUMBNAIL_SIDE`]) and
/// its local features in stored form (`features::to_bytes`, default extraction).
pub fn index_image(bytes: &[u8], limits: &DecodeLimits) -> Result<(ImageHashes, Vec<u8>, Vec<u8>), ImageError> {
    let (decoded, thumbnail) = decode_with_thumbnail(bytes, limits, THUMBNAIL_SIDE)?;
    let features = crate::features::extract_decoded(&decoded, &crate::features::ExtractParams::default());
    Ok((hash_decoded(&decoded), thumbnail, crate::features::to_bytes(&features)))
}

/// A listing image, ready to be matched: its hashes, and its local features
/// (`features::ExtractParams::query`) with the size of the working image they are in.
pub struct Analysis {
    pub hashes: ImageHashes,
    pub features: Vec<crate::features::Feature>,
    pub working_size: (u32, u32),
    /// The decoded luma plane ([`DecodedImage::luma`]), for comparing the listing with a
    /// stored photo part by part.
    pub luma: Vec<f32>,
    /// Its width and height.
    pub plane_size: (u32, u32),
}

/// Decode `bytes` within `limits`, compute all hashes and the local features.
pub fn analyze(bytes: &[u8], limits: &DecodeLimits) -> Result<Analysis, ImageError> {
    let decoded = decode(bytes, limits)?;
    let params = crate::features::ExtractParams::query();
    let features = crate::features::extract_decoded(&decoded, &params);
    let working_size = crate::features::working_size(decoded.plane_width, decoded.plane_height, &params);
    let tiles = collage_tiles(&decoded);
    let (w, h) = (decoded.plane_width as usize, decoded.plane_height as usize);
    let small = trim::reduced(&decoded.luma, w, h, trim::FRAME_SIDE);
    let framed = framed_picture(&decoded, &small);
    let upright = upright(&decoded, &small);
    let plane_size = (decoded.plane_width, decoded.plane_height);
    let mut hashes = hash_decoded(&decoded);
    hashes.tiles = tiles;
    hashes.framed = framed;
    hashes.upright = upright;
    Ok(Analysis { hashes, features, working_size, luma: decoded.luma, plane_size })
}

/// PDQ of each tile of a collage ([`trim::collage_tiles`]) and of its content inside
/// its own uniform borders, those with detail enough to hash ([`MIN_TILE_QUALITY`]).
/// Empty unless two tiles or more have such detail: a product shot whose plain field
/// reaches the middle on one side splits into the product and nothing.
fn collage_tiles(decoded: &DecodedImage) -> Vec<View> {
    let (w, h) = (decoded.plane_width as usize, decoded.plane_height as usize);
    let mut scratch = pdq::PdqScratch::default();
    let mut hashes = Vec::new();
    let mut detailed = 0;
    for tile in trim::collage_tiles(&decoded.luma, w, h) {
        if tile.width < w / 5 || tile.height < h / 5 {
            continue;
        }
        let frame = Frame::rect(tile.x as f32, tile.y as f32, tile.width as f32, tile.height as f32);
        let plane = trim::crop(&decoded.luma, w, tile);
        let content =
            trim::content_rect(&plane, tile.width, tile.height).map(|c| (trim::crop(&plane, tile.width, c), c));
        let whole = pdq::hash_luma(&plane, tile.width, tile.height, &mut scratch);
        if whole.quality < MIN_TILE_QUALITY {
            continue;
        }
        detailed += 1;
        hashes.push(View { pdq: whole, frame });
        if let Some((inside, c)) = content {
            let pdq = pdq::hash_luma(&inside, c.width, c.height, &mut scratch);
            if pdq.quality >= MIN_TILE_QUALITY {
                hashes.push(View { pdq, frame: frame.inner(c, tile.width, tile.height) });
            }
        }
    }
    if detailed < 2 {
        hashes.clear();
    }
    hashes
}

/// PDQ of the picture framed inside the image ([`trim::framed_picture`]) and of its
/// content inside its own uniform borders, each when it has detail enough to hash.
fn framed_picture(decoded: &DecodedImage, small: &trim::Reduced<'_>) -> Vec<View> {
    let (w, h) = (decoded.plane_width as usize, decoded.plane_height as usize);
    let Some(rect) = trim::framed_picture_reduced(&decoded.luma, w, h, small) else {
        return Vec::new();
    };
    // A boxy product on a plain field is framed by its own outline: that is the
    // trimmed view, hashed already.
    let near = |a: usize, b: usize, len: usize| a.abs_diff(b) <= len / 50 + 2;
    if trim::content_rect(&decoded.luma, w, h).is_some_and(|c| {
        near(c.x, rect.x, w) && near(c.y, rect.y, h) && near(c.width, rect.width, w) && near(c.height, rect.height, h)
    }) {
        return Vec::new();
    }
    let frame = Frame::rect(rect.x as f32, rect.y as f32, rect.width as f32, rect.height as f32);
    content_and_whole(&trim::crop(&decoded.luma, w, rect), rect.width, rect.height, frame)
}

/// PDQ of the image turned upright ([`deskew::skew`], [`deskew::rotate`]), whole and
/// inside the uniform borders that the fill of the turn leaves (the photo itself), each
/// when it has detail enough to hash. Empty when no small rotation shows.
fn upright(decoded: &DecodedImage, small: &trim::Reduced<'_>) -> Vec<View> {
    let (w, h) = (decoded.plane_width as usize, decoded.plane_height as usize);
    // The angle does not depend on the scale: read it on the reduced plane.
    let Some(degrees) = deskew::skew(&small.plane, small.width, small.height) else {
        return Vec::new();
    };
    let fill = deskew::border_level(&decoded.luma, w, h);
    let frame = Frame::rect(0.0, 0.0, w as f32, h as f32).unturned(-degrees, w, h);
    content_and_whole(&deskew::rotate(&decoded.luma, w, h, -degrees, fill), w, h, frame)
}

/// PDQ of a `width × height` plane inside its own uniform borders (when it has them)
/// and whole, those with detail enough to match ([`MIN_TILE_QUALITY`]); `frame` is
/// where the plane lies in the image.
fn content_and_whole(plane: &[f32], width: usize, height: usize, frame: Frame) -> Vec<View> {
    let mut scratch = pdq::PdqScratch::default();
    let mut hashes = Vec::new();
    if let Some(c) = trim::content_rect(plane, width, height) {
        let pdq = pdq::hash_luma(&trim::crop(plane, width, c), c.width, c.height, &mut scratch);
        hashes.push(View { pdq, frame: frame.inner(c, width, height) });
    }
    hashes.push(View { pdq: pdq::hash_luma(plane, width, height, &mut scratch), frame });
    hashes.retain(|v| v.pdq.quality >= MIN_TILE_QUALITY);
    hashes
}

/// Least PDQ quality of a collage tile worth matching (PDQ's own advice: below 50 a
/// hash is unreliable; a blank tile scores near 0).
const MIN_TILE_QUALITY: u8 = 50;

/// Compute all hashes of an already decoded image.
pub fn hash_decoded(decoded: &DecodedImage) -> ImageHashes {
    let (w, h) = (decoded.plane_width as usize, decoded.plane_height as usize);
    let mut scratch = pdq::PdqScratch::default();
    let trimmed = trim::content_rect(&decoded.luma, w, h).map(|rect| {
        let content = trim::crop(&decoded.luma, w, rect);
        let pdq = pdq::hash_luma(&content, rect.width, rect.height, &mut scratch);
        // Back to image pixels (the plane may be box-averaged).
        let (sx, sy) = (decoded.width as f64 / w as f64, decoded.height as f64 / h as f64);
        let scale = |v: usize, s: f64| (v as f64 * s).round() as u32;
        Trimmed { pdq, rect: [scale(rect.x, sx), scale(rect.y, sy), scale(rect.width, sx), scale(rect.height, sy)] }
    });
    let filtered = pdq::filter_and_decimate(&decoded.luma, w, h, &mut scratch);
    let pdq = if decoded.width.min(decoded.height) < pdq::MIN_HASHABLE_SIDE as u32 {
        pdq::PdqHashes::too_small()
    } else {
        pdq::hash_64x64(&filtered)
    };
    let phash = phash::phash_64(&filtered);
    ImageHashes {
        pdq,
        phash,
        width: decoded.width,
        height: decoded.height,
        format: decoded.format,
        trimmed,
        tiles: Vec::new(),
        framed: Vec::new(),
        upright: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A plane with structure everywhere (no two places alike).
    fn plane(w: usize, h: usize) -> Vec<f32> {
        (0..h)
            .flat_map(|y| (0..w).map(move |x| (x as f32 * 0.7 + y as f32 * 1.3 + (x * y) as f32 * 0.01) % 255.0))
            .collect()
    }

    #[test]
    fn an_upright_views_frame_finds_its_pixels_in_the_image() {
        let (w, h) = (120, 80);
        let luma = plane(w, h);
        for degrees in [-7.0f32, 3.0, 12.0] {
            let turned = deskew::rotate(&luma, w, h, degrees, 0.0);
            let frame = Frame::rect(0.0, 0.0, w as f32, h as f32).unturned(degrees, w, h);
            for (x, y) in [(60, 40), (50, 30), (70, 45), (40, 50)] {
                let (u, v) = ((x as f32 + 0.5) / w as f32, (y as f32 + 0.5) / h as f32);
                let (sx, sy) = frame.at(u, v);
                let (sx, sy) = (sx.floor() as usize, sy.floor() as usize);
                let want = luma[sy * w + sx];
                let got = turned[y * w + x];
                // Bilinear sampling against the nearest pixel: within a pixel's step.
                assert!((got - want).abs() < 3.0, "{degrees}°: ({x}, {y}) is {got}, its source ({sx}, {sy}) {want}");
            }
        }
    }

    #[test]
    fn an_inner_rectangle_is_placed_inside_its_frame() {
        let outer = Frame::rect(100.0, 50.0, 200.0, 100.0);
        let inner = outer.inner(trim::Rect { x: 20, y: 10, width: 100, height: 40 }, 200, 100);
        assert_eq!(inner.at(0.0, 0.0), (120.0, 60.0));
        assert_eq!(inner.at(1.0, 1.0), (220.0, 100.0));
    }
}
