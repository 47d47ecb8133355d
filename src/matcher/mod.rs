//! Query policy: one image → its PDQ orientations → exact search → merged matches →
//! a verdict a pipeline can act on without reading distances.
//!
//! Unless a stored photo's hash is identical, a second stage looks
//! for what a global hash cannot see (a crop, a screenshot, a collage, a small
//! rotation): the listing's local features vote for stored entries, and the few with
//! the most votes, plus the closest hash matches, are checked geometrically
//! (`features::verify`). A verified entry is flagged; a hash match the check finds to be
//! another logo on the stored layout goes to review.

pub mod confidence;
pub mod parts;

use std::time::{Duration, Instant};

use crate::features::{self, Feature, VerifyParams};
use crate::hash::{self, Analysis, DecodeLimits, Hash256, ImageError, ImageHashes, Orientation};
use crate::index::{Entry, Filter, Index, IndexError, Label, NearestEngine};

/// What the service concludes about a listing image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Verdict {
    /// Within the flag distance of a registered counterfeit photo.
    KnownFake,
    /// Within the flag distance of a brand's genuine photo (reused or lightly edited).
    BrandPhotoReused,
    /// Nothing within the flag distance, but something within the review distance:
    /// send to a moderator.
    Review,
    /// Nothing within the review distance.
    NoMatch,
    /// Too little detail to hash reliably (blank, flat): no verdict.
    LowQuality,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::KnownFake => "KNOWN_FAKE",
            Verdict::BrandPhotoReused => "BRAND_PHOTO_REUSED",
            Verdict::Review => "REVIEW",
            Verdict::NoMatch => "NO_MATCH",
            Verdict::LowQuality => "LOW_QUALITY",
        }
    }
}

/// The confidence levels, distances and quality floor behind a verdict.
///
/// An image query's matches are judged by their [`Match::confidence`]: at or above
/// `flag_confidence` a match is acted on automatically (unless the part-by-part
/// comparison found a part of the stored photo replaced), at or above
/// `review_confidence` a moderator looks. The bit distances judge hash-only queries
/// (a precomputed PDQ hash, which has no pixels to compare), and `review` is also the
/// radius of every query's hash search.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Thresholds {
    /// At or below: act automatically (hash-only queries).
    pub flag: u32,
    /// At or below (and above `flag`): a moderator looks (hash-only queries); the hash
    /// search's radius for all.
    pub review: u32,
    /// Below this PDQ quality, no verdict.
    pub min_quality: u8,
    /// At or above: act automatically (image queries).
    pub flag_confidence: f32,
    /// At or above (and below `flag_confidence`): a moderator looks (image queries).
    pub review_confidence: f32,
}

impl Thresholds {
    /// For precomputed hashes (no pixels, no local features): 12 bits flagged 75.9% of
    /// the copies of the first `tools/eval` corpus' tune split and none of its 1,580
    /// negatives; 31 (Meta's recommendation for PDQ) flagged 4.9% of them, nearly all
    /// another logo on a genuine shot's exact layout.
    pub const DEFAULT_FLAG: u32 = 12;
    pub const DEFAULT_REVIEW: u32 = 45;
    pub const DEFAULT_MIN_QUALITY: u8 = 50;
    /// Chosen by `tools/eval/fit_confidence.py` on the tune split of `tools/eval`
    /// (variant a): a copy more likely than not (a wrong flag costs as much as a missed
    /// copy). What may not be acted on at all (a part replaced, a crop, a copy not
    /// confirmed part by part) is vetoed before it, and of the rest none of the split's
    /// 1,546 negatives reached 0.5.
    pub const DEFAULT_FLAG_CONFIDENCE: f32 = 0.5;
    /// Chosen on the same split for at most 10% of the negatives sent to review by their
    /// confidence alone (0.4051); a match with a part replaced goes to review whatever
    /// its confidence.
    pub const DEFAULT_REVIEW_CONFIDENCE: f32 = 0.4051;

    /// Check the distances are usable.
    pub fn validate(&self) -> Result<(), MatchError> {
        if self.flag > self.review {
            return Err(MatchError::InvalidArgument(format!(
                "flag distance {} is above review distance {}: flag must be ≤ review",
                self.flag, self.review
            )));
        }
        if self.review > 128 {
            return Err(MatchError::InvalidArgument(format!(
                "review distance {} is over 128 of 256 bits: that matches unrelated images",
                self.review
            )));
        }
        if self.min_quality > 100 {
            return Err(MatchError::InvalidArgument(format!("minimum quality {} is over 100", self.min_quality)));
        }
        for (name, c) in [("flag confidence", self.flag_confidence), ("review confidence", self.review_confidence)] {
            if !(0.0..=1.0).contains(&c) {
                return Err(MatchError::InvalidArgument(format!("{name} {c} is not between 0 and 1")));
            }
        }
        if self.review_confidence > self.flag_confidence {
            return Err(MatchError::InvalidArgument(format!(
                "review confidence {} is above flag confidence {}: review must be ≤ flag",
                self.review_confidence, self.flag_confidence
            )));
        }
        Ok(())
    }
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds {
            flag: Self::DEFAULT_FLAG,
            review: Self::DEFAULT_REVIEW,
            min_quality: Self::DEFAULT_MIN_QUALITY,
            flag_confidence: Self::DEFAULT_FLAG_CONFIDENCE,
            review_confidence: Self::DEFAULT_REVIEW_CONFIDENCE,
        }
    }
}

/// How to answer one query.
#[derive(Debug, Clone)]
pub struct Query {
    /// Maximum matches returned.
    pub k: usize,
    pub thresholds: Thresholds,
    /// Only this brand's entries.
    pub brand: Option<String>,
    /// Only entries with this label.
    pub label: Option<Label>,
    /// Return the k nearest entries even beyond the review distance, with this engine.
    pub nearest: Option<NearestEngine>,
}

/// Largest `k` accepted.
pub const MAX_K: usize = 1000;

impl Default for Query {
    fn default() -> Self {
        Query { k: 10, thresholds: Thresholds::default(), brand: None, label: None, nearest: None }
    }
}

/// How close a match is, in the thresholds' terms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Closeness {
    /// At or below the flag distance.
    Flag,
    /// Above flag, at or below review.
    Review,
    /// Beyond the review distance (only with nearest-neighbour queries).
    Beyond,
}

/// One matched entry.
#[derive(Debug, Clone)]
pub struct Match {
    pub entry: Entry,
    pub distance: u32,
    /// The orientation of the query's hash that matched.
    pub orientation: Orientation,
    /// Which stored view matched (0: the whole image, 1: its content inside uniform borders).
    pub view: u8,
    /// Which view of the query matched: 0 the whole listing, 1 its content inside
    /// uniform borders, [`TILE_VIEW`] a tile of a collage, [`FRAMED_VIEW`] the picture
    /// framed inside it (a screenshot), [`UPRIGHT_VIEW`] the listing turned upright.
    pub query_view: u8,
    pub closeness: Closeness,
    /// Set when the local-feature check found the stored photo in the listing (or the
    /// listing in it): what a global hash misses.
    pub verified: Option<Verified>,
    /// Set when the local-feature check found the listing to be this stored photo's
    /// exact frame with a corner-rich part of it replaced (another logo on the same
    /// product layout, most often): the share of the stored photo's corners that are
    /// gone (see [`MAX_LOST_SHARE`]). Such a match is not flagged on its hash distance
    /// alone: it goes to review.
    pub replaced: Option<f32>,
    /// The stored photo and the listing compared part by part through the fitted
    /// transform ([`parts::compare`]), for every match the local features fit. A compact
    /// detail-rich part replaced sends the match to review; a comparison that does not
    /// confirm the copy keeps it from being flagged.
    pub parts: Option<parts::Parts>,
    /// The probability (0–1) that the listing is a copy of this stored photo, from all
    /// the evidence ([`confidence::MODEL`]); `None` for hash-only queries.
    pub confidence: Option<f32>,
    /// What the confidence was computed from.
    pub evidence: Option<confidence::Evidence>,
}

/// What the local-feature check found.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Verified {
    /// Corners that agree on one geometric transform.
    pub inliers: u32,
    /// Of those, the ones no other stored photo among the candidates shares (a product's
    /// silhouette or a studio edge that many catalog photos have is not evidence of a
    /// copy; a logo's or a photo's own corners are). When the listing shows the stored
    /// photo's exact frame, shared means another candidate has a near-equal corner
    /// anywhere; otherwise, at the same place (see `MIN_OWN_IN_PLACE`).
    pub distinct: u32,
    /// Found in the mirrored listing.
    pub mirrored: bool,
    /// Size of the stored photo's picture in the listing relative to the stored photo's
    /// working image (< 1: the listing shows it smaller, e.g. in a collage).
    pub scale: f32,
    /// Rotation between the two, degrees.
    pub rotation_deg: f32,
    /// Share of the listing and of the stored photo the matching corners span (0–1).
    pub listing_coverage: f32,
    pub stored_coverage: f32,
}

impl Match {
    /// How the listing relates to the stored photo, in words for a person.
    pub fn describe(&self) -> String {
        let turned = self.orientation.describe_match();
        if let Some(v) = &self.verified {
            let mirrored = if v.mirrored { "mirrored, " } else { "" };
            let whole = v.stored_coverage >= 0.8 && v.listing_coverage >= 0.8;
            if self.distance <= Thresholds::DEFAULT_FLAG || (whole && self.distance <= Thresholds::DEFAULT_REVIEW) {
                // The hash found it too: its orientation and view say it in words.
                return format!("{}, confirmed by {} matching corners", self.hash_words(turned), v.inliers);
            }
            let part = if whole {
                "the same picture"
            } else if v.listing_coverage >= v.stored_coverage {
                "part of the stored photo fills the listing (a crop)"
            } else {
                "the stored photo appears inside the listing (a screenshot, collage or placed copy)"
            };
            return format!(
                "{part}: {} matching corners, {mirrored}scale {:.2}, turned {:.0}°",
                v.inliers,
                1.0 / v.scale.max(1e-3),
                // (+ 0.0 makes a negative zero print as 0)
                v.rotation_deg.round() + 0.0
            );
        }
        if let Some(lost) = self.replaced {
            return format!(
                "{turned}, but a part of the stored photo holding {:.0}% of its corners is replaced \
                 (another logo on the same layout?)",
                lost * 100.0
            );
        }
        self.hash_words(turned)
    }

    /// Which views of the two the hash matched, in words, after `turned` (the
    /// orientation's words).
    fn hash_words(&self, turned: &str) -> String {
        match (self.query_view, self.view) {
            (TILE_VIEW, _) => format!("{turned}, as one tile of the listing (a collage)"),
            (FRAMED_VIEW, _) => format!("{turned}, as the picture framed inside the listing (a screenshot or a page)"),
            (UPRIGHT_VIEW, _) => format!("{turned}, once the listing is turned upright (it was rotated a few degrees)"),
            (0, 0) => turned.to_string(),
            (1, 0) => format!("{turned}, once the listing's plain borders are trimmed"),
            (0, _) => format!("{turned}, against the stored photo without its plain borders"),
            _ => format!("{turned}, both without their plain borders"),
        }
    }
}

/// The answer for one image.
#[derive(Debug, Clone)]
pub struct MatchResult {
    pub pdq: Hash256,
    pub quality: u8,
    pub phash: Option<u64>,
    pub verdict: Verdict,
    pub matches: Vec<Match>,
    /// Time spent decoding and hashing (zero for hash queries).
    pub hash_time: Duration,
    /// Time spent searching and reading metadata.
    pub search_time: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum MatchError {
    #[error(transparent)]
    Image(#[from] ImageError),
    #[error(transparent)]
    Index(#[from] IndexError),
    #[error("{0}")]
    InvalidArgument(String),
}

/// Decode and hash `bytes`, then match.
pub fn match_image(
    index: &Index,
    bytes: &[u8],
    limits: &DecodeLimits,
    query: &Query,
) -> Result<MatchResult, MatchError> {
    query.thresholds.validate()?;
    let started = Instant::now();
    let analysis = hash::analyze(bytes, limits)?;
    let hash_time = started.elapsed();
    let mut result = match_analysis(index, &analysis, query)?;
    result.hash_time = hash_time;
    Ok(result)
}

/// Stored entries checked geometrically per query, at most (those with the most votes).
/// 16 rather than 8: on the tune split 0.6 points more copies verified, for about
/// 1.2 ms more CPU per non-matching 1000×1000 listing (8.2 → 9.4 ms, whole pipeline).
pub const FEATURE_CANDIDATES: usize = 16;
/// Entries with the most votes that a verified entry's corners are compared with to
/// count its distinct ones (see [`Verified::distinct`]).
const CANDIDATE_POOL: usize = 24;
/// Fewest descriptor votes for an entry to be checked.
pub const MIN_FEATURE_VOTES: u32 = 4;
/// Fewest distinct matching corners (see [`Verified::distinct`]) for a verified entry to
/// be flagged. Set on the tune split of `tools/eval` (the most any negative reached
/// there was 29: a different logo on a plain product shot of the same layout); checked
/// on the report split.
pub const MIN_DISTINCT_CORNERS: u32 = 30;

/// Hash matches (within the review distance, best first) that the local-feature check
/// verifies even when their corners won few votes: a stored photo the hash finds close
/// but whose corners the listing lacks is another logo on its layout, and the check
/// tells so only if it looks.
const HASH_CANDIDATES: usize = 3;

/// [`match_hashes`], then the local-feature check (see the module's documentation),
/// the part-by-part comparison of every match with a fitted transform
/// ([`parts::compare`]), and each match's confidence ([`confidence::MODEL`]), which sets
/// its closeness (see [`Thresholds`]).
///
/// Identical hashes used to skip the checks. They no longer do: a small logo swapped on
/// a large shot can leave PDQ unmoved, and only the comparison sees it.
pub fn match_analysis(index: &Index, analysis: &Analysis, query: &Query) -> Result<MatchResult, MatchError> {
    let mut result = match_hashes(index, &analysis.hashes, query)?;
    if result.verdict == Verdict::LowQuality {
        return Ok(result);
    }
    let started = Instant::now();
    let close: Vec<u64> = result
        .matches
        .iter()
        .filter(|m| m.distance <= query.thresholds.review)
        .map(|m| m.entry.id)
        .take(HASH_CANDIDATES)
        .collect();
    let Checked { verified, replaced, fits } =
        check_features(index, &analysis.features, analysis.working_size, &close)?;
    for m in &mut result.matches {
        if let Some(&(_, lost)) = replaced.iter().find(|(id, _)| *id == m.entry.id) {
            m.replaced = Some(lost);
            if m.closeness == Closeness::Flag {
                m.closeness = Closeness::Review;
            }
        }
    }
    // Entries the hash search did not return are read from the catalog.
    let missing: Vec<_> =
        verified.iter().map(|(id, _)| *id).filter(|id| !result.matches.iter().any(|m| m.entry.id == *id)).collect();
    let mut entries = if missing.is_empty() { Default::default() } else { index.entries(&missing)? };
    let rescore = Rescore { hashes: &analysis.hashes };
    for (id, v) in verified {
        if let Some(m) = result.matches.iter_mut().find(|m| m.entry.id == id) {
            m.verified = Some(v);
            m.closeness = Closeness::Flag;
            m.replaced = None;
            continue;
        }
        let Some(entry) = entries.remove(&id) else { continue };
        // (Deleted entries never come back from `feature_candidates`.)
        if query.brand.as_ref().is_some_and(|b| *b != entry.brand) || query.label.is_some_and(|l| l != entry.label) {
            continue;
        }
        let Some((distance, orientation, view, query_view)) = rescore.score(&entry) else { continue };
        result.matches.push(Match {
            entry,
            distance,
            orientation: Orientation::from_index(orientation).unwrap_or(Orientation::Original),
            view,
            query_view,
            closeness: Closeness::Flag,
            verified: Some(v),
            replaced: None,
            parts: None,
            confidence: None,
            evidence: None,
        });
    }
    compare_parts(index, analysis, &fits, query.thresholds.review, &mut result.matches)?;
    judge(&mut result.matches, result.phash, query);
    sort_matches(&mut result.matches);
    result.matches.truncate(query.k);
    result.verdict = verdict(result.quality, &result.matches, query.thresholds);
    result.search_time += started.elapsed();
    Ok(result)
}

/// Hash matches the local features fitted no transform for that are compared part by
/// part through the one their hash match implies ([`hash_fit`]), at most: the closest.
pub const HASH_FITS: usize = 3;

/// Compare part by part ([`parts::compare`]) each match with a fitted transform, and the
/// closest [`HASH_FITS`] hash matches within `review` bits without one (through
/// [`hash_fit`]), with the stored photo's thumbnail; [`judge`] reads what it found.
///
/// A hash match alone cannot tell another brand's logo on the same shot from a copy
/// when the logo is small: PDQ sees the whole frame, and a swapped badge moves it by a
/// few bits. The features often fit nothing on such shots (a plain object, a turn, a
/// grey copy). The hash match itself says how the two line up, and the comparison
/// decides.
fn compare_parts(
    index: &Index,
    analysis: &Analysis,
    fits: &[(u64, parts::Fit)],
    review: u32,
    matches: &mut [Match],
) -> Result<(), MatchError> {
    let (pw, ph) = analysis.plane_size;
    let listing = parts::Plane { px: &analysis.luma, width: pw as usize, height: ph as usize };
    let mut hash_fits = 0;
    for m in matches.iter_mut() {
        let fitted = fits.iter().find(|(id, _)| *id == m.entry.id).map(|&(_, fit)| fit);
        if fitted.is_none() {
            if m.distance > review || hash_fits == HASH_FITS || m.view > 1 {
                continue;
            }
            hash_fits += 1;
        }
        let Some(thumbnail) = index.thumbnail(m.entry.id)? else { continue };
        // A stored thumbnail that does not decode compares as nothing: the match is
        // judged by its distance, as one without a fit.
        let Ok(stored) = hash::decode(&thumbnail, &DecodeLimits::default()) else { continue };
        let working =
            features::working_size(stored.plane_width, stored.plane_height, &features::ExtractParams::default());
        let fit = match fitted {
            Some(fit) => fit,
            None => match hash_fit(m, &analysis.hashes, analysis.plane_size, &stored, working) {
                Some(fit) => fit,
                None => continue,
            },
        };
        let plane =
            parts::Plane { px: &stored.luma, width: stored.plane_width as usize, height: stored.plane_height as usize };
        m.parts = parts::compare(plane, working, listing, &fit);
    }
    Ok(())
}

/// The transform a hash match implies: the listing's matched view (the whole listing,
/// its content inside uniform borders, a collage's tile, a screenshot's picture, the
/// listing turned upright: [`hash::Frame`] says where it lies) onto the stored photo's
/// (whole, or its content inside its own borders, found again on the thumbnail), turned
/// by the orientation that matched. PDQ hashes a view squeezed to a square, so views
/// whose hashes are close line up corner to corner; the comparison's slide takes up the
/// pixel or two this is off. `plane` is the size of the listing's luma plane, and
/// `stored_working` that of the stored photo's working image.
fn hash_fit(
    m: &Match,
    hashes: &ImageHashes,
    plane: (u32, u32),
    stored: &hash::DecodedImage,
    stored_working: (u32, u32),
) -> Option<parts::Fit> {
    let (pw, ph) = (plane.0 as f32, plane.1 as f32);
    let frame = match m.query_view {
        0 => hash::Frame::rect(0.0, 0.0, pw, ph),
        1 => {
            // The trimmed rectangle is in image pixels.
            let [x, y, w, h] = hashes.trimmed.as_ref()?.rect.map(|v| v as f32);
            let (sx, sy) = (pw / hashes.width as f32, ph / hashes.height as f32);
            hash::Frame::rect(x * sx, y * sy, w * sx, h * sy)
        }
        number => {
            let views = match number {
                TILE_VIEW => &hashes.tiles,
                FRAMED_VIEW => &hashes.framed,
                UPRIGHT_VIEW => &hashes.upright,
                _ => return None,
            };
            // The view of that kind whose hash made the match's distance.
            let code = if m.view == 0 { &m.entry.pdq } else { m.entry.views.first()? };
            views.iter().find(|v| v.pdq.dihedral[m.orientation as usize].distance(code) == m.distance)?.frame
        }
    };
    let [sx0, sy0, sx1, sy1] = match m.view {
        0 => [0.0, 0.0, 1.0, 1.0],
        1 => hash::content_share(stored)?,
        _ => return None,
    };
    let (sw, sh) = (stored_working.0 as f32, stored_working.1 as f32);
    // Listing plane pixel → share of its view → turned → share of the stored view →
    // stored working pixel: affine throughout.
    let to_view = features::invert_transform(&frame.matrix())?;
    // In pixel indices (a pixel's centre at its index), as the features' transforms are.
    let transform = hash::Frame::of(|x, y| {
        let (u, v) = features::map_with(&to_view, x + 0.5, y + 0.5);
        let (u, v) = m.orientation.map(u, v);
        ((sx0 + u * (sx1 - sx0)) * sw - 0.5, (sy0 + v * (sy1 - sy0)) * sh - 0.5)
    })
    .matrix();
    transform.iter().all(|v| v.is_finite()).then_some(parts::Fit {
        transform,
        mirrored: false,
        listing_working: plane,
        aligned: parts::Aligned::ByHash,
    })
}

/// Each match's confidence, and its closeness. A match with nothing compared (no fitted
/// transform) is judged by its distance, as a hash query is. Otherwise: flagged at or above
/// `flag_confidence` unless something vetoes acting automatically (a part-by-part
/// comparison that does not confirm the copy, a replaced part in the exact frame);
/// review at or above `review_confidence`, or whatever the confidence when a part of
/// the stored photo was replaced; else beyond (kept only for nearest-neighbour queries).
fn judge(matches: &mut Vec<Match>, query_phash: Option<u64>, query: &Query) {
    let t = query.thresholds;
    for m in matches.iter_mut() {
        let evidence = confidence::Evidence::of(m, query_phash);
        let c = confidence::MODEL.confidence(&evidence);
        // A stored photo the listing's features fit, but a part of which the listing
        // shows replaced, is for a person to look at whatever the confidence: another
        // brand's logo on the same shot, or a knockoff's.
        let replaced = m.replaced.is_some() || m.parts.as_ref().is_some_and(|p| p.differed.is_some());
        m.closeness = if m.parts.is_none() && m.replaced.is_none() {
            // Nothing was compared (no fitted transform: too few corners, or a match of
            // the hash alone): the distance judges, as for a hash query.
            if m.distance <= t.flag {
                Closeness::Flag
            } else if m.distance <= t.review || c >= t.review_confidence {
                Closeness::Review
            } else {
                Closeness::Beyond
            }
        } else if c >= t.flag_confidence && evidence.can_flag {
            Closeness::Flag
        } else if c >= t.review_confidence || replaced {
            Closeness::Review
        } else {
            Closeness::Beyond
        };
        m.confidence = Some(c);
        m.evidence = Some(evidence);
    }
    if query.nearest.is_none() {
        matches.retain(|m| m.closeness != Closeness::Beyond);
    }
}

/// What the local-feature check found among the candidates.
#[derive(Debug, Default)]
struct Checked {
    /// Entries the listing's features verify against, best first.
    verified: Vec<(u64, Verified)>,
    /// Entries whose exact frame the listing shows with a corner-rich part replaced, and
    /// the share of their corners that went ([`features::Verification::lost_share`]).
    replaced: Vec<(u64, f32)>,
    /// The fitted transform of each verified entry.
    fits: Vec<(u64, parts::Fit)>,
}

/// Verify the listing's features against the entries with the most descriptor votes
/// and against `close`, the hash search's closest entries.
fn check_features(index: &Index, query: &[Feature], working: (u32, u32), close: &[u64]) -> Result<Checked, MatchError> {
    let working_width = working.0;
    let params = VerifyParams::default();
    let mut checked = Checked::default();
    if query.len() < params.min_inliers {
        return Ok(checked);
    }
    let mirrored = features::mirrored(query, working_width);
    let mut candidates = index.feature_candidates(query, MIN_FEATURE_VOTES, CANDIDATE_POOL)?;
    for (id, votes) in index.feature_candidates(&mirrored, MIN_FEATURE_VOTES, CANDIDATE_POOL)? {
        match candidates.iter_mut().find(|c| c.0 == id) {
            Some(c) => c.1 = c.1.max(votes),
            None => candidates.push((id, votes)),
        }
    }
    candidates.sort_unstable_by_key(|&(id, votes)| (std::cmp::Reverse(votes), id));
    candidates.truncate(CANDIDATE_POOL);
    let mut ids: Vec<_> = candidates.iter().map(|c| c.0).collect();
    // Checked: the best-voted, then the close hash matches they leave out. The whole
    // pool (and the close matches) is what distinct corners are counted against.
    let mut check: Vec<u64> = ids.iter().copied().take(FEATURE_CANDIDATES).collect();
    for &id in close {
        if !check.contains(&id) {
            check.push(id);
        }
        if !ids.contains(&id) {
            ids.push(id);
        }
    }
    let stored = index.features(&ids)?;
    for &id in &check {
        let Some(candidate) = stored.get(&id) else { continue };
        let found = features::verify(query, candidate, &params)
            .map(|v| (v, false))
            .or_else(|| features::verify(&mirrored, candidate, &params).map(|v| (v, true)));
        let Some((mut v, mut is_mirrored)) = found else { continue };
        let same = same_frame(&v, working);
        // Share of the stored photo's corners lost, when the listing is its exact frame.
        let mut lost = if same { v.lost_share(candidate) } else { 0.0 };
        if !is_mirrored && lost > MAX_LOST_SHARE {
            // A symmetric product fits both ways round on its symmetric corners, so a
            // mirrored copy of it looks replaced, and another logo on it mirrored can
            // look like a copy: when the mirrored fit is better and keeps the frame
            // whole, the corners cannot tell which, and the hash distance decides.
            if let Some(m) = features::verify(&mirrored, candidate, &params).filter(|m| m.inliers > v.inliers) {
                let mirrored_lost = m.lost_share(candidate);
                if !same_frame(&m, working) || mirrored_lost <= MAX_LOST_SHARE {
                    continue;
                }
                (v, is_mirrored, lost) = (m, true, mirrored_lost);
            }
        }
        let q = if is_mirrored { &mirrored } else { query };
        let fit = parts::Fit {
            transform: v.transform,
            mirrored: is_mirrored,
            listing_working: working,
            aligned: parts::Aligned::ByFeatures,
        };
        if lost > MAX_LOST_SHARE && !overlay_hides_loss(&v, q, candidate, lost) {
            // The listing is the stored photo's exact frame with a corner-rich part of
            // it replaced: another brand's logo on the same product layout looks like
            // this. (A sticker over a plain part loses little.)
            checked.replaced.push((id, lost));
            checked.fits.push((id, fit));
            continue;
        }
        let others: Vec<&Vec<Feature>> = stored.iter().filter(|(other, _)| **other != id).map(|(_, f)| f).collect();
        let (own_anywhere, own_in_place) = own_corners(&v, q, candidate, &others);
        let lost_in_view = v.lost_share_in_view(candidate, working);
        let accepted = own_anywhere >= MIN_DISTINCT_CORNERS
            || (own_anywhere >= MIN_DISTINCT_INTACT && lost_in_view <= MAX_LOST_INTACT)
            || (!same
                && ((own_in_place >= MIN_OWN_IN_PLACE && lost_in_view <= MAX_LOST_IN_PLACE)
                    || (own_in_place >= MIN_OWN_IN_PLACE_INTACT && lost_in_view <= MAX_LOST_INTACT)));
        if !accepted {
            continue;
        }
        let distinct = if same { own_anywhere } else { own_in_place };
        checked.fits.push((id, fit));
        checked.verified.push((
            id,
            Verified {
                inliers: v.inliers as u32,
                distinct,
                mirrored: is_mirrored,
                scale: v.scale,
                rotation_deg: v.rotation_deg,
                listing_coverage: v.query_coverage,
                stored_coverage: v.candidate_coverage,
            },
        ));
    }
    checked.verified.sort_by_key(|(id, v)| (std::cmp::Reverse(v.distinct), std::cmp::Reverse(v.inliers), *id));
    Ok(checked)
}

/// Whether the transform maps the listing's working image onto the whole of the stored
/// photo's (longer side 512 in both): the same frame, up to a quarter turn or a mirror.
fn same_frame(v: &features::Verification, working: (u32, u32)) -> bool {
    const TOLERANCE: f32 = 0.025;
    let (w, h) = (working.0 as f32, working.1 as f32);
    let corners = [(0.0, 0.0), (w, 0.0), (0.0, h), (w, h)].map(|(x, y)| v.map(x, y));
    let (mut x0, mut y0, mut x1, mut y1) = (f32::MAX, f32::MAX, f32::MIN, f32::MIN);
    for &(x, y) in &corners {
        (x0, y0, x1, y1) = (x0.min(x), y0.min(y), x1.max(x), y1.max(y));
    }
    let side = features::ExtractParams::default().working_side as f32;
    let tol = TOLERANCE * side;
    // Every mapped corner must sit on a corner of the box they span (no rotation but
    // quarter turns), the box must start at the origin and its longer side be the
    // working side.
    let on_box_corner = corners.iter().all(|&(x, y)| {
        ((x - x0).abs() < tol || (x - x1).abs() < tol) && ((y - y0).abs() < tol || (y - y1).abs() < tol)
    });
    on_box_corner && x0.abs() < tol && y0.abs() < tol && ((x1 - x0).max(y1 - y0) - side).abs() < tol
}

/// Fewer distinct corners suffice (at least this many) when the listing keeps intact
/// the part of the stored photo it shows: at most [`MAX_LOST_INTACT`] of the stored
/// features the transform puts inside the listing lie in regions with no inlier
/// ([`features::Verification::lost_share_in_view`]). A crop, a turn or a perspective
/// view of a copy keeps what it shows; another logo on a stored layout, seen through
/// the same edits, loses the logo. Set on the tune split of `tools/eval`: negatives with
/// 8 or more distinct corners lost 0.23 or more in view, those that lost 0.10 or less
/// had at most 2 distinct corners; 95 more copies verified (192 → 287), no negative.
pub const MIN_DISTINCT_INTACT: u32 = 10;
/// See [`MIN_DISTINCT_INTACT`].
pub const MAX_LOST_INTACT: f32 = 0.10;

/// Most of a stored photo's features that may lie in regions the listing lost (see
/// [`features::Verification::lost_share`]) when the listing shows its exact frame. Set
/// on the tune split of `tools/eval`: different logos on the same product layout lost
/// 0.23 or more whenever they had 10 or more distinct corners (0.05 at the least, with
/// fewer); price stickers and text on copies lost a median 0.02.
pub const MAX_LOST_SHARE: f32 = 0.15;

/// More of a stored photo's corners may be lost in its exact frame (up to this share)
/// when an overlay hides them: at least [`MIN_ADDED_OVER_PLAIN`] of the listing's
/// corners appeared over plain parts of the stored photo, and no more than
/// [`MAX_LOST_SHARE`] of its corners were lost away from those parts
/// ([`features::Verification::overlay_shares`]). A sticker or a price banner over the
/// logo spills over the plain field around it; another logo swapped in place does not,
/// and stickers elsewhere on it are not beside the logo it lost.
///
/// Set on the tune split of `tools/eval`: the same-layout negatives that lost at most
/// 0.35 had at most 0.15 of their corners appear over plain parts (a wider logo on a
/// plain T-shirt); of the 22 copies with text over them that lost more than 0.15, 15
/// had 0.25 or more. One negative with a sticker of its own lost 0.36 (0.54 over plain
/// parts): the 0.30 cap is what keeps it out.
pub const MAX_LOST_UNDER_OVERLAY: f32 = 0.30;
/// See [`MAX_LOST_UNDER_OVERLAY`].
pub const MIN_ADDED_OVER_PLAIN: f32 = 0.25;

/// Whether an overlay explains the `lost` share of the stored photo's corners in its
/// exact frame (see [`MAX_LOST_UNDER_OVERLAY`]).
fn overlay_hides_loss(v: &features::Verification, query: &[Feature], candidate: &[Feature], lost: f32) -> bool {
    lost <= MAX_LOST_UNDER_OVERLAY && {
        let (added_over_plain, unexplained) = v.overlay_shares(query, candidate);
        added_over_plain >= MIN_ADDED_OVER_PLAIN && unexplained <= MAX_LOST_SHARE
    }
}

/// A matched corner is shared when another candidate has a descriptor at most this many
/// bits further from the listing's than the matched one.
const SHARED_SLACK: u32 = 8;

/// How near (working pixels, each axis) to a matched corner's place in the stored photo
/// another candidate's near-equal descriptor must sit for the corner to be shared in
/// place (see [`own_corners`]).
const SHARED_RADIUS: f32 = 32.0;

/// When the listing does not show the stored photo's exact frame, fewest corners it
/// shares with no other candidate *in place* (see [`own_corners`]) for the stored photo
/// to be verified, with at most [`MAX_LOST_IN_PLACE`] of its corners in view lost; or
/// [`MIN_OWN_IN_PLACE_INTACT`] with at most [`MAX_LOST_INTACT`] lost.
///
/// Set on the tune split of `tools/eval`: there the negatives that lost at most 0.30
/// in view had at most 23 such corners, and those that lost at most 0.10 at most 12;
/// 2.0 points more copies found (82.6% → 84.6% at FPR 0.1%), no negative added.
/// (In the exact frame, sibling layouts align everywhere, so a place says nothing:
/// there the corners must be the stored photo's own anywhere.)
pub const MIN_OWN_IN_PLACE: u32 = 30;
/// See [`MIN_OWN_IN_PLACE`].
pub const MAX_LOST_IN_PLACE: f32 = 0.30;
/// See [`MIN_OWN_IN_PLACE`].
pub const MIN_OWN_IN_PLACE_INTACT: u32 = 20;

/// Of the verification's matched corners, (those no other candidate has a near-equal
/// descriptor for anywhere, those no other candidate has one for within
/// [`SHARED_RADIUS`] of the same place in its own working image).
///
/// The first is strict: a letter or a circle of one logo finds a near twin in some other
/// logo, so a copy with 80 matched corners can keep 5. The second counts as shared only
/// what catalog photos have in common where they have it: a product template's outline,
/// a studio edge.
fn own_corners(
    v: &features::Verification,
    query: &[Feature],
    candidate: &[Feature],
    others: &[&Vec<Feature>],
) -> (u32, u32) {
    let (mut anywhere, mut in_place) = (0usize, 0usize);
    for &(qi, ci) in &v.pairs {
        let desc = &query[qi as usize].desc;
        let own = features::hamming(desc, &candidate[ci as usize].desc);
        let (cx, cy) = candidate[ci as usize].pos();
        let (mut shared, mut shared_here) = (false, false);
        for f in others.iter().flat_map(|fs| fs.iter()) {
            if features::hamming(desc, &f.desc) <= own + SHARED_SLACK {
                shared = true;
                let (x, y) = f.pos();
                if (x - cx).abs() <= SHARED_RADIUS && (y - cy).abs() <= SHARED_RADIUS {
                    shared_here = true;
                    break;
                }
            }
        }
        anywhere += usize::from(!shared);
        in_place += usize::from(!shared_here);
    }
    (anywhere.min(v.inliers) as u32, in_place.min(v.inliers) as u32)
}

/// Best first: flagged (by distance or verified) before review before beyond, then by
/// distance, known fakes first among equals.
fn sort_matches(matches: &mut [Match]) {
    let rank = |c: Closeness| match c {
        Closeness::Flag => 0,
        Closeness::Review => 1,
        Closeness::Beyond => 2,
    };
    matches.sort_by_key(|m| {
        (
            rank(m.closeness),
            std::cmp::Reverse(m.confidence.map_or(0, |c| (c * 1e6) as i64)),
            std::cmp::Reverse(m.verified.as_ref().map_or(0, |v| v.inliers)),
            m.distance,
            m.entry.label != Label::KnownFake,
            m.entry.id,
        )
    });
}

/// Match a precomputed PDQ hash (only its own orientation: the other seven need the
/// image's DCT coefficients, which a hash alone does not carry).
pub fn match_hash(index: &Index, pdq: Hash256, quality: u8, query: &Query) -> Result<MatchResult, MatchError> {
    match_queries(index, pdq, quality, None, &[pdq], None, query)
}

/// Match an image in all eight orientations, as a whole and, when it has uniform
/// borders (padding, letterboxing, the plain field around a product), by its content
/// inside them: against both the whole stored photos and their own trimmed content.
/// The best pair of views decides. The quality judged is the best of the views.
///
/// Comparing contents alone when a plain field surrounds the query (two different
/// products on one white layout land close as whole images) was tried and dropped: the
/// edge of a soft shadow or a gradient moves with brightness or contrast, so trimmed
/// contents of the same shot can land 40+ bits apart, and easy edits were lost
/// (tools/eval tune split: easy tier 80% against 95% for plain dihedral PDQ).
pub fn match_hashes(index: &Index, hashes: &ImageHashes, query: &Query) -> Result<MatchResult, MatchError> {
    let rescore = Rescore { hashes };
    let codes: Vec<Hash256> = rescore.views().flat_map(|(dihedral, _)| dihedral.iter().copied()).collect();
    let quality = hashes.views().iter().map(|v| v.quality).max().unwrap_or(0);
    match_queries(index, hashes.pdq.hash(), quality, Some(hashes.phash), &codes, Some(&rescore), query)
}

/// The query's views, to search with and to score each candidate over the allowed
/// pairs of views.
struct Rescore<'a> {
    hashes: &'a ImageHashes,
}

/// The query view number of a collage's tiles (0: the whole listing, 1: its content
/// inside uniform borders).
pub const TILE_VIEW: u8 = 2;
/// The query view number of the picture framed inside the listing (a screenshot's
/// photo), whole or inside its own uniform borders.
pub const FRAMED_VIEW: u8 = 3;
/// The query view number of the listing turned upright when it shows a small rotation.
pub const UPRIGHT_VIEW: u8 = 4;

impl Rescore<'_> {
    /// Each view's 8 orientations with its query view number: the whole listing, its
    /// content inside uniform borders, a collage's tiles ([`TILE_VIEW`]), the picture
    /// framed inside it ([`FRAMED_VIEW`]), the listing turned upright ([`UPRIGHT_VIEW`]).
    fn views(&self) -> impl Iterator<Item = (&[Hash256; 8], u8)> {
        fn tagged(views: &[hash::View], number: u8) -> impl Iterator<Item = (&[Hash256; 8], u8)> {
            views.iter().map(move |v| (&v.pdq.dihedral, number))
        }
        let h = self.hashes;
        std::iter::once((&h.pdq.dihedral, 0))
            .chain(h.trimmed.iter().map(|t| (&t.pdq.dihedral, 1)))
            .chain(tagged(&h.tiles, TILE_VIEW))
            .chain(tagged(&h.framed, FRAMED_VIEW))
            .chain(tagged(&h.upright, UPRIGHT_VIEW))
    }

    /// Best (distance, orientation, stored view, query view) over the allowed pairs.
    fn score(&self, entry: &Entry) -> Option<(u32, u8, u8, u8)> {
        let stored: Vec<(&Hash256, u8)> =
            std::iter::once((&entry.pdq, 0)).chain(entry.views.first().map(|v| (v, 1))).collect();
        self.views()
            .flat_map(|(q, qv)| stored.iter().map(move |&(code, v)| (q, qv, code, v)))
            .flat_map(|(q, qv, stored, v)| {
                q.iter().enumerate().map(move |(o, code)| (code.distance(stored), o as u8, v, qv))
            })
            .min_by_key(|&(d, o, v, qv)| (d, qv, v, o))
    }
}

fn match_queries(
    index: &Index,
    pdq: Hash256,
    quality: u8,
    phash: Option<u64>,
    queries: &[Hash256],
    rescore: Option<&Rescore<'_>>,
    query: &Query,
) -> Result<MatchResult, MatchError> {
    query.thresholds.validate()?;
    if query.k == 0 || query.k > MAX_K {
        return Err(MatchError::InvalidArgument(format!("k must be between 1 and {MAX_K}, got {}", query.k)));
    }
    let started = Instant::now();
    let t = query.thresholds;
    let brand_no = match &query.brand {
        Some(b) => match index.brand_no(b)? {
            Some(n) => Some(n),
            // An unknown brand has no entries: nothing can match.
            None => return Ok(empty_result(pdq, quality, phash, t, started)),
        },
        None => None,
    };
    let filter = Filter { brand_no, label: query.label };
    let hits = match query.nearest {
        Some(engine) => index.search_nearest(queries, query.k, &filter, engine)?,
        None => index.search_radius(queries, t.review, &filter),
    };
    let ids: Vec<_> = hits.iter().map(|h| h.entry).collect();
    let mut entries = index.entries(&ids)?;
    let mut matches: Vec<Match> = hits
        .iter()
        .filter_map(|h| {
            let entry = entries.remove(&h.entry)?;
            let (distance, orientation, view, query_view) = match rescore {
                Some(r) => r.score(&entry)?,
                None => (h.distance, h.query, h.view, 0),
            };
            if query.nearest.is_none() && distance > t.review {
                return None;
            }
            let closeness = if distance <= t.flag {
                Closeness::Flag
            } else if distance <= t.review {
                Closeness::Review
            } else {
                Closeness::Beyond
            };
            Some(Match {
                entry,
                distance,
                orientation: Orientation::from_index(orientation).unwrap_or(Orientation::Original),
                view,
                query_view,
                closeness,
                verified: None,
                replaced: None,
                parts: None,
                confidence: None,
                evidence: None,
            })
        })
        .collect();
    sort_matches(&mut matches);
    matches.truncate(query.k);
    let verdict = verdict(quality, &matches, t);
    Ok(MatchResult { pdq, quality, phash, verdict, matches, hash_time: Duration::ZERO, search_time: started.elapsed() })
}

fn empty_result(pdq: Hash256, quality: u8, phash: Option<u64>, t: Thresholds, started: Instant) -> MatchResult {
    MatchResult {
        pdq,
        quality,
        phash,
        verdict: verdict(quality, &[], t),
        matches: Vec::new(),
        hash_time: Duration::ZERO,
        search_time: started.elapsed(),
    }
}

/// The verdict for matches sorted best first (known fakes first at equal distance).
pub fn verdict(quality: u8, matches: &[Match], t: Thresholds) -> Verdict {
    if quality < t.min_quality {
        return Verdict::LowQuality;
    }
    match matches.first().map(|m| (m.closeness, m.entry.label)) {
        Some((Closeness::Flag, Label::KnownFake)) => Verdict::KnownFake,
        Some((Closeness::Flag, Label::Authentic)) => Verdict::BrandPhotoReused,
        Some((Closeness::Review, _)) => Verdict::Review,
        _ => Verdict::NoMatch,
    }
}
