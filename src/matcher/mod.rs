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
    match_queries(index, pdq, quality, None, &[pdq], query)
}

/// Match an image in all eight orientations. An image with uniform borders (padding,
/// letterboxing, the plain field around a product) is matched by its content alone,
/// against both the whole stored photos and their own trimmed content: two different
/// products on the same white layout share most of their pixels, so comparing whole
/// images would call them copies. The quality judged is that of what was compared.
pub fn match_hashes(index: &Index, hashes: &ImageHashes, query: &Query) -> Result<MatchResult, MatchError> {
    let (view, pdq) = match &hashes.trimmed {
        Some(t) => (1, &t.pdq),
        None => (0, &hashes.pdq),
    };
    let mut result = match_queries(index, hashes.pdq.hash(), pdq.quality, Some(hashes.phash), &pdq.dihedral, query)?;
    for m in &mut result.matches {
        m.query_view = view;
    }
    Ok(result)
}

fn match_queries(
    index: &Index,
    pdq: Hash256,
    quality: u8,
    phash: Option<u64>,
    queries: &[Hash256],
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
    let mut hits = match query.nearest {
        Some(engine) => index.search_nearest(queries, query.k, &filter, engine)?,
        None => index.search_radius(queries, t.review, &filter),
    };
    // Known fakes first among equal distances.
    hits.sort_by_key(|h| (h.distance, h.label != Label::KnownFake, h.entry));
    hits.truncate(query.k);
    let ids: Vec<_> = hits.iter().map(|h| h.entry).collect();
    let mut entries = index.entries(&ids)?;
    let matches: Vec<Match> = hits
        .iter()
        .filter_map(|h| {
            let entry = entries.remove(&h.entry)?;
            let closeness = if h.distance <= t.flag {
                Closeness::Flag
            } else if h.distance <= t.review {
                Closeness::Review
            } else {
                Closeness::Beyond
            };
            Some(Match {
                entry,
                distance: h.distance,
                orientation: Orientation::from_index(h.query).unwrap_or(Orientation::Original),
                view: h.view,
                query_view: 0,
                closeness,
            })
        })
        .collect();
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
