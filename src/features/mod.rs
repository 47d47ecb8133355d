//! Local features: the stage that catches what a global hash cannot — hard crops, a
//! photo inside a screenshot or a collage, small rotations, mild perspective, a logo on
//! another photo.
//!
//! [`extract`] turns a luma plane into at most [`ExtractParams::max_features`] oriented
//! FAST keypoints with 256-bit steered-BRIEF descriptors (ORB-style: FAST-9 corners
//! ranked by Harris response, spread over a grid, on a 4-level pyramid with scale step
//! √2, orientation by intensity centroid, a fixed pattern smoothed by a σ = 2 Gaussian).
//! Descriptors are `[u64; 4]`, like [`crate::hash::Hash256`], so they fit the same
//! Hamming machinery.
//!
//! [`verify`] decides whether two images show the same picture (or one contains part
//! of the other): mutual nearest neighbours in Hamming distance with a ratio test, then
//! a deterministic RANSAC of a similarity transform, refined to an affine transform and
//! then a homography. It accepts on at least [`VerifyParams::min_inliers`]
//! geometrically consistent matches that cover a good part of one of the two images and
//! of what they share (see [`Verification`]).
//!
//! Everything is computed on a *working image* whose longer side is
//! [`ExtractParams::working_side`] (512): feature coordinates and the transform are in
//! working-image pixels ([`working_size`] says how big that is for an image), which
//! bounds the cost whatever the upload size and makes images of different resolutions
//! comparable.
//!
//! Mirrors: descriptors are built so that a left–right mirror of the image only swaps
//! bit pairs; [`mirrored`] turns the features of an image into those of its mirror
//! without re-extracting, so a mirrored copy is caught by a second `verify` call.
//!
//! Storage: [`to_bytes`] / [`from_bytes`], [`BYTES_PER_FEATURE`] (38) bytes a feature
//! plus a [`HEADER_BYTES`] (5) byte header: 9,733 bytes for the default 256 features.
//! Extracted features are already quantised to what is stored, so a round trip is exact.
//!
//! # Use
//! ```no_run
//! use lookalike::features::{extract_decoded, mirrored, verify, working_size, ExtractParams, VerifyParams};
//! # fn demo(stored_image: &lookalike::hash::DecodedImage, listing: &lookalike::hash::DecodedImage) {
//! // At indexing: 256 features per image, stored with `to_bytes`.
//! let stored = extract_decoded(stored_image, &ExtractParams::default());
//! // At query time: more features for the listing, which may hold the picture in a corner.
//! let params = ExtractParams::query();
//! let query = extract_decoded(listing, &params);
//! let found = verify(&query, &stored, &VerifyParams::default()).or_else(|| {
//!     let (w, _) = working_size(listing.plane_width, listing.plane_height, &params);
//!     verify(&mirrored(&query, w), &stored, &VerifyParams::default()) // a mirrored copy
//! });
//! # }
//! ```
//!
//! # Limits (measured by the tests and the `report` test in `tests.rs`)
//! - Corners need texture: a blurred or flat image (the blurred Hubble fixture: 55
//!   features) survives rotations and mirrors but not crops or collages.
//! - Wordmarks in the same font that share two or more letters in the same arrangement
//!   can verify on that shared part (35 of 504 pairs of different marks in the tests'
//!   stick font: KRUSTY / VAULT, MINT / TWIN, FLAME / WHEAT…); different logos with
//!   different emblems, and words without such a run, do not.
//! - A thin line-art logo drawn straight onto a busy photo (no card behind it) is not
//!   found: most of each descriptor's patch is the photo.
//! - Strong perspective (the far edge at 60 % of the near one) is found for most photos,
//!   not all: the RANSAC seeds are similarities.

mod detect;
mod matching;
mod pattern;

#[cfg(test)]
mod tests;

use std::f32::consts::TAU;

pub use matching::{invert_transform, map_with, Verification};

/// Ratio between the sides of consecutive pyramid levels.
pub const SCALE_FACTOR: f32 = std::f32::consts::SQRT_2;
/// Most pyramid levels [`ExtractParams::levels`] may ask for.
pub const MAX_LEVELS: u8 = 8;
/// Bounds on [`ExtractParams::working_side`] (the upper one keeps stored coordinates in
/// 16 bits at 1/32 pixel).
pub const MIN_WORKING_SIDE: u32 = 64;
pub const MAX_WORKING_SIDE: u32 = 2047;
/// Most features one image may have (the stored count is 16 bits).
pub const MAX_FEATURES: usize = u16::MAX as usize;

/// Version byte of the stored form. Bump it when anything that changes descriptor bits
/// or coordinates changes (pattern, smoothing, orientation, working size rules).
pub const FORMAT_VERSION: u8 = 1;
const MAGIC: [u8; 2] = *b"LF";
/// Size of the stored header: magic (2), version (1), count (2, little-endian).
pub const HEADER_BYTES: usize = 5;
/// Size of one stored feature: x and y (u16, 1/32 px), angle (u8, 1/256 turn), level
/// (u8), descriptor (32 bytes, word 0 first, little-endian).
pub const BYTES_PER_FEATURE: usize = 38;

/// One keypoint and its descriptor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Feature {
    /// Position in working-image pixels (pixel centres at integers), a multiple of 1/32.
    pub x: Q,
    pub y: Q,
    /// Pyramid level it was found at: its patch is `31 · SCALE_FACTOR^level` working
    /// pixels across.
    pub level: u8,
    /// Orientation in 1/256 turns, y down (64 = pointing down the image).
    pub angle: u8,
    /// 256-bit steered BRIEF descriptor; bit `k` is bit `k % 64` of word `k / 64`.
    pub desc: [u64; 4],
}

/// A coordinate in 1/32 working pixels (the stored precision).
pub type Q = u16;

impl Feature {
    /// Position in working-image pixels.
    pub fn pos(&self) -> (f32, f32) {
        (f32::from(self.x) / 32.0, f32::from(self.y) / 32.0)
    }

    /// Orientation in radians (y down).
    pub fn angle_rad(&self) -> f32 {
        f32::from(self.angle) * TAU / 256.0
    }

    /// Patch scale relative to level 0.
    pub fn scale(&self) -> f32 {
        SCALE_FACTOR.powi(i32::from(self.level))
    }

    /// Hamming distance between descriptors (0–256).
    #[inline]
    pub fn distance(&self, other: &Feature) -> u32 {
        hamming(&self.desc, &other.desc)
    }
}

/// Hamming distance between two 256-bit codes.
#[inline]
pub fn hamming(a: &[u64; 4], b: &[u64; 4]) -> u32 {
    (a[0] ^ b[0]).count_ones() + (a[1] ^ b[1]).count_ones() + (a[2] ^ b[2]).count_ones() + (a[3] ^ b[3]).count_ones()
}

/// How features are extracted. The defaults are for images stored in an index;
/// [`ExtractParams::query`] spends more on the image being checked.
#[derive(Debug, Clone, PartialEq)]
pub struct ExtractParams {
    /// Longer side of the working image, in pixels (clamped to 64–2047). Changing it
    /// makes features incomparable with stored ones.
    pub working_side: u32,
    /// Pyramid levels (1–8), each [`SCALE_FACTOR`] smaller than the last. 4 levels cover
    /// scale changes from 1/2.8 to 2.8 between two images.
    pub levels: u8,
    /// Share of the budget per level: level `l` gets a share ∝ `level_weight^l`.
    pub level_weight: f32,
    /// At most this many features per image.
    pub max_features: usize,
    /// FAST threshold on 0–255 luma; a level with too few corners is retried with
    /// `fast_threshold_low`.
    pub fast_threshold: u8,
    pub fast_threshold_low: u8,
    /// Side of the grid cells that spread the features, in level pixels.
    pub cell: usize,
}

impl Default for ExtractParams {
    fn default() -> Self {
        ExtractParams {
            working_side: 512,
            levels: 4,
            level_weight: 0.75,
            max_features: 256,
            fast_threshold: 20,
            fast_threshold_low: 8,
            cell: 32,
        }
    }
}

impl ExtractParams {
    /// For the image being checked (not stored): more features, so that a picture that
    /// fills only part of it (a collage tile, a screenshot) still gets enough of them.
    pub fn query() -> Self {
        ExtractParams { max_features: 512, ..ExtractParams::default() }
    }
}

/// Size of the working image for a `width`×`height` image: longer side
/// `params.working_side`, aspect kept. Feature coordinates are in these pixels.
pub fn working_size(width: u32, height: u32, params: &ExtractParams) -> (u32, u32) {
    let side = params.working_side.clamp(MIN_WORKING_SIDE, MAX_WORKING_SIDE);
    let (w, h) = detect::working_size(width, height, side);
    (w as u32, h as u32)
}

/// Features of a row-major luma plane (0–255, e.g. [`crate::hash::DecodedImage::luma`]).
/// The strongest corners first within each pyramid level, coarser levels after finer.
///
/// # Panics
/// If `luma.len() != width × height`.
pub fn extract(luma: &[f32], width: u32, height: u32, params: &ExtractParams) -> Vec<Feature> {
    let mut params = params.clone();
    params.max_features = params.max_features.min(MAX_FEATURES);
    detect::extract(luma, width, height, &params)
}

/// [`extract`] on a decoded image's luma plane (`plane_width × plane_height`: large
/// images come box-averaged to a shorter side of at least 512, still more than the
/// working image needs). Coordinates are in the working image of that plane: use
/// [`working_size`] with `plane_width` and `plane_height`.
pub fn extract_decoded(image: &crate::hash::DecodedImage, params: &ExtractParams) -> Vec<Feature> {
    extract(&image.luma, image.plane_width, image.plane_height, params)
}

/// The features of the left–right mirror of an image whose working image is
/// `working_width` pixels wide (see [`working_size`]), computed from its own features.
/// Verifying `mirrored(query)` against a candidate catches a mirrored copy.
pub fn mirrored(features: &[Feature], working_width: u32) -> Vec<Feature> {
    const EVEN: u64 = 0x5555_5555_5555_5555;
    let right = (working_width.saturating_sub(1) * 32).min(u32::from(u16::MAX)) as u16;
    features
        .iter()
        .map(|f| Feature {
            x: right.saturating_sub(f.x),
            y: f.y,
            level: f.level,
            angle: 128u8.wrapping_sub(f.angle),
            desc: f.desc.map(|d| ((d >> 1) & EVEN) | ((d & EVEN) << 1)),
        })
        .collect()
}

/// A geometric model, from the stiffest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Model {
    /// Rotation, uniform scale, translation (4 degrees of freedom).
    Similarity,
    /// Plus shear and aspect change (6).
    Affine,
    /// Plus perspective (8): a photo of a screen or a print taken at an angle.
    Homography,
}

/// How two feature sets are compared.
#[derive(Debug, Clone, PartialEq)]
pub struct VerifyParams {
    /// A descriptor match must be within this Hamming distance (of 256).
    pub max_distance: u32,
    /// Lowe's ratio test: best distance < `ratio` × second best (1.0 turns it off).
    pub ratio: f32,
    /// Keep only pairs that are each other's nearest neighbour.
    pub mutual: bool,
    /// A match is an inlier when the transform puts the query point within this many
    /// working pixels of the candidate point…
    pub inlier_px: f32,
    /// …its orientations agree with the transform's rotation within this many degrees…
    pub angle_tolerance_deg: f32,
    /// …and its pyramid levels agree with the transform's scale within this many levels.
    pub level_tolerance: f32,
    /// Accepted range of the transform's scale (candidate size / query size).
    pub min_scale: f32,
    pub max_scale: f32,
    /// RANSAC hypotheses at most (fewer when a good model is found early).
    pub max_iterations: usize,
    /// Seed of RANSAC's sampling: the same inputs always give the same answer.
    pub seed: u64,
    /// The most general model the RANSAC similarity is refined to.
    pub model: Model,
    /// An affine transform may stretch one direction at most this much more than the other.
    pub max_anisotropy: f32,
    /// Accept with at least this many (distinct) inliers…
    pub min_inliers: usize,
    /// …covering at least this share of one of the two images (see
    /// [`Verification::query_coverage`]): a crop covers most of the query; a collage
    /// tile, a screenshot's photo or a placed logo most of the candidate; a single letter
    /// two wordmarks in one font have in common, well under half (two or more shared
    /// letters in the same arrangement can pass: see the module's limits)…
    pub min_coverage: f32,
    /// …spanning at least this share of the region the two images share under the
    /// transform (see [`Verification::span`])…
    pub min_span: f32,
    /// …and matching at least this share of the features in the shared region (see
    /// [`Verification::inlier_ratio`]; copies measure 0.18–0.95, chance alignments of
    /// repeated strokes 0.01–0.3).
    pub min_inlier_ratio: f32,
}

impl Default for VerifyParams {
    fn default() -> Self {
        VerifyParams {
            max_distance: 64,
            ratio: 0.8,
            mutual: true,
            inlier_px: 6.0,
            angle_tolerance_deg: 30.0,
            level_tolerance: 1.5,
            min_scale: 0.2,
            max_scale: 5.0,
            max_iterations: 1000,
            seed: 0x5EED,
            model: Model::Homography,
            max_anisotropy: 2.0,
            min_inliers: 12,
            min_coverage: 0.5,
            min_span: 0.5,
            min_inlier_ratio: 0.1,
        }
    }
}

/// Whether `query` and `candidate` show the same picture, or one shows part of the
/// other: `Some` with the transform (query working pixels → candidate working pixels)
/// when at least `params.min_inliers` matches agree on it, `None` otherwise.
pub fn verify(query: &[Feature], candidate: &[Feature], params: &VerifyParams) -> Option<Verification> {
    matching::verify(query, candidate, params, params.min_inliers).filter(|v| v.accepted(params))
}

/// Like [`verify`], but returns the best model found whatever its inlier count (for
/// tuning and diagnostics); `None` only when there were too few matches to fit one.
pub fn best_model(query: &[Feature], candidate: &[Feature], params: &VerifyParams) -> Option<Verification> {
    matching::verify(query, candidate, params, 2)
}

/// Why stored features could not be read.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum FeaturesError {
    #[error("not stored features (bad magic)")]
    BadMagic,
    #[error("stored features are format version {0}, this build reads version {FORMAT_VERSION}")]
    Version(u8),
    #[error("stored features: {count} features need {expected} bytes, got {got}")]
    Length { count: usize, expected: usize, got: usize },
    #[error("stored feature {index} has pyramid level {level}, at most {} allowed", MAX_LEVELS - 1)]
    Level { index: usize, level: u8 },
}

/// The stored form of an image's features: [`HEADER_BYTES`] + [`BYTES_PER_FEATURE`] ×
/// count bytes.
///
/// # Panics
/// If there are more than [`MAX_FEATURES`] features.
pub fn to_bytes(features: &[Feature]) -> Vec<u8> {
    assert!(features.len() <= MAX_FEATURES, "{} features, at most {MAX_FEATURES} stored", features.len());
    let mut out = Vec::with_capacity(HEADER_BYTES + BYTES_PER_FEATURE * features.len());
    out.extend_from_slice(&MAGIC);
    out.push(FORMAT_VERSION);
    out.extend_from_slice(&(features.len() as u16).to_le_bytes());
    for f in features {
        out.extend_from_slice(&f.x.to_le_bytes());
        out.extend_from_slice(&f.y.to_le_bytes());
        out.push(f.angle);
        out.push(f.level);
        for word in f.desc {
            out.extend_from_slice(&word.to_le_bytes());
        }
    }
    out
}

/// Inverse of [`to_bytes`].
pub fn from_bytes(bytes: &[u8]) -> Result<Vec<Feature>, FeaturesError> {
    if bytes.len() < HEADER_BYTES || bytes[..2] != MAGIC {
        return Err(FeaturesError::BadMagic);
    }
    if bytes[2] != FORMAT_VERSION {
        return Err(FeaturesError::Version(bytes[2]));
    }
    let count = usize::from(u16::from_le_bytes([bytes[3], bytes[4]]));
    let expected = HEADER_BYTES + count * BYTES_PER_FEATURE;
    if bytes.len() != expected {
        return Err(FeaturesError::Length { count, expected, got: bytes.len() });
    }
    bytes[HEADER_BYTES..]
        .chunks_exact(BYTES_PER_FEATURE)
        .enumerate()
        .map(|(index, b)| {
            let level = b[5];
            if level >= MAX_LEVELS {
                return Err(FeaturesError::Level { index, level });
            }
            let word = |k: usize| u64::from_le_bytes(b[6 + 8 * k..14 + 8 * k].try_into().expect("8 bytes"));
            Ok(Feature {
                x: u16::from_le_bytes([b[0], b[1]]),
                y: u16::from_le_bytes([b[2], b[3]]),
                angle: b[4],
                level,
                desc: [word(0), word(1), word(2), word(3)],
            })
        })
        .collect()
}

/// A working-image coordinate in stored precision (1/32 px).
fn quantize_coord(v: f32) -> Q {
    (v * 32.0).round().clamp(0.0, f32::from(u16::MAX)) as u16
}

/// An angle in radians as 1/256 turns.
fn quantize_angle(a: f32) -> u8 {
    ((a / TAU * 256.0).round() as i32).rem_euclid(256) as u8
}
