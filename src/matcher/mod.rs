//! Query policy: one image → its PDQ orientations → exact search → merged matches →
//! a verdict a pipeline can act on without reading distances.

use std::time::{Duration, Instant};

use crate::hash::{self, DecodeLimits, Hash256, ImageError, ImageHashes, Orientation};
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

/// The distances and quality floor behind a verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Thresholds {
    /// At or below: act automatically.
    pub flag: u32,
    /// At or below (and above `flag`): a moderator looks.
    pub review: u32,
    /// Below this PDQ quality, no verdict.
    pub min_quality: u8,
}

impl Thresholds {
    pub const DEFAULT_FLAG: u32 = 31;
    pub const DEFAULT_REVIEW: u32 = 45;
    pub const DEFAULT_MIN_QUALITY: u8 = 50;

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
        Ok(())
    }
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds { flag: Self::DEFAULT_FLAG, review: Self::DEFAULT_REVIEW, min_quality: Self::DEFAULT_MIN_QUALITY }
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
    /// Which view of the query matched (same numbering).
    pub query_view: u8,
    pub closeness: Closeness,
}

impl Match {
    /// How the listing relates to the stored photo, in words for a person.
    pub fn describe(&self) -> String {
        let turned = self.orientation.describe_match();
        match (self.query_view, self.view) {
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
    let hashes = hash::hash_image(bytes, limits)?;
    let hash_time = started.elapsed();
    let mut result = match_hashes(index, &hashes, query)?;
    result.hash_time = hash_time;
    Ok(result)
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
    let trimmed = hashes.trimmed.as_ref();
    let rescore = Rescore { whole: hashes.pdq.dihedral, content: trimmed.map(|t| t.pdq.dihedral) };
    let mut codes = hashes.pdq.dihedral.to_vec();
    codes.extend(trimmed.iter().flat_map(|t| t.pdq.dihedral));
    let quality = hashes.views().iter().map(|v| v.quality).max().unwrap_or(0);
    match_queries(index, hashes.pdq.hash(), quality, Some(hashes.phash), &codes, Some(&rescore), query)
}

/// The query's views, to score each candidate over the allowed pairs of views.
struct Rescore {
    whole: [Hash256; 8],
    content: Option<[Hash256; 8]>,
}

impl Rescore {
    /// Best (distance, orientation, stored view, query view) over the allowed pairs.
    fn score(&self, entry: &Entry) -> Option<(u32, u8, u8, u8)> {
        let stored_content = entry.views.first();
        let mut pairs: Vec<(&[Hash256; 8], u8, &Hash256, u8)> = vec![(&self.whole, 0, &entry.pdq, 0)];
        if let Some(v) = stored_content {
            pairs.push((&self.whole, 0, v, 1));
        }
        if let Some(c) = &self.content {
            pairs.push((c, 1, &entry.pdq, 0));
            if let Some(v) = stored_content {
                pairs.push((c, 1, v, 1));
            }
        }
        pairs
            .into_iter()
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
    rescore: Option<&Rescore>,
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
            })
        })
        .collect();
    // Known fakes first among equal distances.
    matches.sort_by_key(|m| (m.distance, m.entry.label != Label::KnownFake, m.entry.id));
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
    match matches.first() {
        Some(m) if m.distance <= t.flag => match m.entry.label {
            Label::KnownFake => Verdict::KnownFake,
            Label::Authentic => Verdict::BrandPhotoReused,
        },
        Some(m) if m.distance <= t.review => Verdict::Review,
        _ => Verdict::NoMatch,
    }
}
