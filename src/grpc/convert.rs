//! Requests in, responses out: every field is checked here, with a message that names it.
//! Public so that fuzzing and other front ends can check requests exactly as the server does.

use std::time::Duration;

use super::engine::{Content, Hashed};
use super::error::ApiError;
use super::pb;
use crate::hash::{Hash256, Orientation};
use crate::index::{self, AddOutcome, Entry, Label, NewEntry, Selector, Stats, MAX_EXTERNAL_ID_BYTES};
use crate::matcher::parts::{Aligned, Differed, Parts};
use crate::matcher::{Closeness, MatchResult, Query, Thresholds, Verdict, Verified, MAX_K};

fn invalid(message: impl Into<String>) -> ApiError {
    ApiError::InvalidArgument(message.into())
}

/// Default number of matches returned.
pub const DEFAULT_K: u32 = 10;

pub fn label_from_pb(value: i32, field: &str) -> Result<Label, ApiError> {
    match pb::Label::try_from(value) {
        Ok(pb::Label::Authentic) => Ok(Label::Authentic),
        Ok(pb::Label::KnownFake) => Ok(Label::KnownFake),
        Ok(pb::Label::Unspecified) => {
            Err(invalid(format!("{field} is LABEL_UNSPECIFIED: set LABEL_AUTHENTIC or LABEL_KNOWN_FAKE")))
        }
        Err(_) => Err(invalid(format!("{field} has unknown value {value}"))),
    }
}

pub fn label_to_pb(label: Label) -> pb::Label {
    match label {
        Label::Authentic => pb::Label::Authentic,
        Label::KnownFake => pb::Label::KnownFake,
    }
}

fn verdict_to_pb(v: Verdict) -> pb::Verdict {
    match v {
        Verdict::KnownFake => pb::Verdict::KnownFake,
        Verdict::BrandPhotoReused => pb::Verdict::BrandPhotoReused,
        Verdict::Review => pb::Verdict::Review,
        Verdict::NoMatch => pb::Verdict::NoMatch,
        Verdict::LowQuality => pb::Verdict::LowQuality,
    }
}

/// The local-feature check's findings as the API carries them, and back (for the CLI's
/// remote mode), kept side by side so a new field is added to both.
fn quad_to_pb(q: [[f32; 2]; 4]) -> Vec<pb::Point> {
    q.iter().map(|&[x, y]| pb::Point { x, y }).collect()
}

pub fn parts_to_pb(p: Parts) -> pb::PartComparison {
    pb::PartComparison {
        detail_cells: p.detail_cells,
        agreement: p.agreement,
        detail_in_view: p.detail_in_view,
        differed: p.differed.map(|d| pb::Differed {
            x0: d.rect[0],
            y0: d.rect[1],
            x1: d.rect[2],
            y1: d.rect[3],
            share: d.share,
        }),
        in_view: p.in_view,
        listing_quad: quad_to_pb(p.listing_quad),
        stored_quad: quad_to_pb(p.stored_quad),
        aligned_by_hash: p.aligned == Aligned::ByHash,
    }
}

pub fn parts_from_pb(p: pb::PartComparison) -> Parts {
    let quad = |q: &[pb::Point]| {
        let mut out = [[0.0; 2]; 4];
        for (o, p) in out.iter_mut().zip(q) {
            *o = [p.x, p.y];
        }
        out
    };
    Parts {
        detail_cells: p.detail_cells,
        agreement: p.agreement,
        detail_in_view: p.detail_in_view,
        differed: p.differed.map(|d| Differed { rect: [d.x0, d.y0, d.x1, d.y1], share: d.share }),
        in_view: p.in_view,
        listing_quad: quad(&p.listing_quad),
        stored_quad: quad(&p.stored_quad),
        aligned: if p.aligned_by_hash { Aligned::ByHash } else { Aligned::ByFeatures },
    }
}

pub fn verified_to_pb(v: Verified) -> pb::Verification {
    pb::Verification {
        inliers: v.inliers,
        distinct: v.distinct,
        mirrored: v.mirrored,
        scale: v.scale,
        rotation_deg: v.rotation_deg,
        listing_coverage: v.listing_coverage,
        stored_coverage: v.stored_coverage,
    }
}

pub fn verified_from_pb(v: pb::Verification) -> Verified {
    Verified {
        inliers: v.inliers,
        distinct: v.distinct,
        mirrored: v.mirrored,
        scale: v.scale,
        rotation_deg: v.rotation_deg,
        listing_coverage: v.listing_coverage,
        stored_coverage: v.stored_coverage,
    }
}

pub fn orientation_to_pb(o: Orientation) -> pb::Orientation {
    match o {
        Orientation::Original => pb::Orientation::Original,
        Orientation::Rotate90 => pb::Orientation::Rotate90,
        Orientation::Rotate180 => pb::Orientation::Rotate180,
        Orientation::Rotate270 => pb::Orientation::Rotate270,
        Orientation::FlipX => pb::Orientation::FlipX,
        Orientation::FlipY => pb::Orientation::FlipY,
        Orientation::FlipPlus1 => pb::Orientation::Transpose,
        Orientation::FlipMinus1 => pb::Orientation::Transverse,
    }
}

fn closeness_to_pb(c: Closeness) -> pb::Closeness {
    match c {
        Closeness::Flag => pb::Closeness::Flag,
        Closeness::Review => pb::Closeness::Review,
        Closeness::Beyond => pb::Closeness::Beyond,
    }
}

fn precomputed(h: &pb::PrecomputedHash) -> Result<Content, ApiError> {
    let pdq: Hash256 =
        h.pdq.trim().parse().map_err(|e| invalid(format!("hash.pdq {:?} is not a PDQ hash: {e}", h.pdq)))?;
    let quality = match h.quality {
        Some(q) if q > 100 => return Err(invalid(format!("hash.quality must be 0-100, got {q}"))),
        Some(q) => Some(q as u8),
        None => None,
    };
    Ok(Content::Hash { pdq, quality })
}

/// An item of `AddImages`, checked: what to hash, and the entry minus its hashes.
pub struct AddItem {
    pub content: Content,
    pub entry: NewEntry,
}

pub fn add_item(req: pb::AddImageRequest) -> Result<AddItem, ApiError> {
    let content = match req.content {
        Some(pb::add_image_request::Content::Image(bytes)) => Content::Image(bytes),
        Some(pb::add_image_request::Content::Hash(h)) => precomputed(&h)?,
        None => return Err(invalid("set either image or hash")),
    };
    let entry = NewEntry {
        brand: req.brand,
        label: label_from_pb(req.label, "label")?,
        external_id: req.external_id,
        source: if req.source.is_empty() { "grpc".into() } else { req.source },
        sha256: [0; 32],
        pdq: Hash256::default(),
        quality: None,
        phash: None,
        note: Some(req.note).filter(|n| !n.is_empty()),
        thumbnail: None,
        views: Vec::new(),
        features: None,
    };
    // Refuse bad text before spending time on the image.
    index::validate_entry(&entry)?;
    Ok(AddItem { content, entry })
}

pub fn with_hashes(mut entry: NewEntry, h: &Hashed) -> NewEntry {
    entry.sha256 = h.sha256;
    entry.pdq = h.pdq;
    entry.quality = h.quality;
    entry.phash = h.phash;
    entry.thumbnail = h.thumbnail.clone();
    entry.views = h.views.clone();
    entry.features = h.features.clone();
    entry
}

pub fn add_result(sequence: u64, entry: &NewEntry, outcome: AddOutcome) -> pb::AddImageResult {
    let (status, id) = match outcome {
        AddOutcome::Added(id) => (pb::AddStatus::Added, id),
        AddOutcome::AlreadyPresent(id) => (pb::AddStatus::AlreadyPresent, id),
    };
    pb::AddImageResult {
        sequence,
        external_id: entry.external_id.clone(),
        status: status as i32,
        id,
        error: None,
        pdq: entry.pdq.to_string(),
        quality: entry.quality.map(u32::from),
    }
}

pub fn add_failure(sequence: u64, external_id: String, error: &ApiError) -> pb::AddImageResult {
    pb::AddImageResult {
        sequence,
        external_id,
        status: pb::AddStatus::Failed as i32,
        id: 0,
        error: Some(error.to_item()),
        pdq: String::new(),
        quality: None,
    }
}

fn external(e: pb::ExternalRef) -> Result<Selector, ApiError> {
    if e.brand.trim().is_empty() {
        return Err(invalid("external.brand is empty"));
    }
    if e.external_id.is_empty() {
        return Err(invalid("external.external_id is empty"));
    }
    Ok(Selector::External { brand: e.brand, external_id: e.external_id })
}

pub fn delete_selector(req: pb::DeleteRequest) -> Result<Selector, ApiError> {
    match req.target {
        Some(pb::delete_request::Target::Id(id)) => Ok(Selector::Id(id)),
        Some(pb::delete_request::Target::External(e)) => external(e),
        None => Err(invalid("set either id or external")),
    }
}

pub fn get_selector(req: pb::GetRequest) -> Result<Selector, ApiError> {
    match req.target {
        Some(pb::get_request::Target::Id(id)) => Ok(Selector::Id(id)),
        Some(pb::get_request::Target::External(e)) => external(e),
        None => Err(invalid("set either id or external")),
    }
}

pub fn describe(selector: &Selector) -> String {
    match selector {
        Selector::Id(id) => format!("no entry with id {id}"),
        Selector::External { brand, external_id } => {
            format!("no entry of brand {brand:?} with external id {external_id:?}")
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub fn entry_to_pb(e: Entry) -> pb::Entry {
    pb::Entry {
        id: e.id,
        brand: e.brand,
        label: label_to_pb(e.label) as i32,
        external_id: e.external_id,
        source: e.source,
        sha256: hex(&e.sha256),
        pdq: e.pdq.to_string(),
        quality: e.quality.map(u32::from),
        phash: e.phash.map(|p| format!("{p:016x}")).unwrap_or_default(),
        note: e.note.unwrap_or_default(),
        added_at_ms: e.added_at_ms,
        deleted_at_ms: e.deleted_at_ms,
    }
}

pub fn stats_to_pb(s: Stats) -> pb::StatsResponse {
    pb::StatsResponse {
        live: s.live,
        deleted: s.deleted,
        records: s.records,
        mih_records: s.mih_records,
        hnsw_points: s.hnsw_points,
        bytes_on_disk: s.bytes_on_disk,
        by_brand_label: s
            .by_brand_label
            .into_iter()
            .map(|(brand, label, count)| pb::BrandCount { brand, label: label_to_pb(label) as i32, count })
            .collect(),
    }
}

/// A checked `MatchRequest`.
pub struct MatchItem {
    pub request_id: String,
    pub content: Content,
    pub query: Query,
}

fn distance(value: Option<u32>, default: u32, field: &str) -> Result<u32, ApiError> {
    match value {
        Some(d) if d > 128 => Err(invalid(format!("{field} must be 0-128, got {d}"))),
        Some(d) => Ok(d),
        None => Ok(default),
    }
}

fn confidence(value: Option<f32>, default: f32, field: &str) -> Result<f32, ApiError> {
    match value {
        Some(c) if !(0.0..=1.0).contains(&c) => Err(invalid(format!("{field} must be 0-1, got {c}"))),
        Some(c) => Ok(c),
        None => Ok(default),
    }
}

/// Check a request; `request_id` is returned even when the rest is invalid (so a stream
/// can label its error).
pub fn match_item(req: pb::MatchRequest) -> Result<MatchItem, (String, ApiError)> {
    let request_id = req.request_id.clone();
    match_item_inner(req).map_err(|e| (request_id, e))
}

fn match_item_inner(req: pb::MatchRequest) -> Result<MatchItem, ApiError> {
    if req.request_id.len() > MAX_EXTERNAL_ID_BYTES {
        return Err(invalid(format!(
            "request_id is {} bytes, over the limit of {MAX_EXTERNAL_ID_BYTES}",
            req.request_id.len()
        )));
    }
    let content = match req.query {
        Some(pb::match_request::Query::Image(bytes)) => Content::Image(bytes),
        Some(pb::match_request::Query::Hash(h)) => precomputed(&h)?,
        None => return Err(invalid("set either image or hash")),
    };
    let k = req.k.unwrap_or(DEFAULT_K);
    if k == 0 || k as usize > MAX_K {
        return Err(invalid(format!("k must be 1-{MAX_K}, got {k}")));
    }
    let defaults = Thresholds::default();
    let min_quality = match req.min_quality {
        Some(q) if q > 100 => return Err(invalid(format!("min_quality must be 0-100, got {q}"))),
        Some(q) => q as u8,
        None => defaults.min_quality,
    };
    // An unset distance adapts to the other one, so either can be given alone.
    let thresholds = Thresholds {
        flag: distance(req.flag_distance, defaults.flag.min(req.review_distance.unwrap_or(u32::MAX)), "flag_distance")?,
        review: distance(req.review_distance, defaults.review.max(req.flag_distance.unwrap_or(0)), "review_distance")?,
        min_quality,
        flag_confidence: confidence(
            req.flag_confidence,
            defaults.flag_confidence.max(req.review_confidence.unwrap_or(0.0)),
            "flag_confidence",
        )?,
        review_confidence: confidence(
            req.review_confidence,
            defaults.review_confidence.min(req.flag_confidence.unwrap_or(1.0)),
            "review_confidence",
        )?,
    };
    thresholds.validate().map_err(|e| invalid(e.to_string()))?;
    // Exactly as stored (brands with surrounding spaces are refused when added).
    let brand = Some(req.brand).filter(|b| !b.is_empty());
    let label = req.label.map(|l| label_from_pb(l, "label")).transpose()?;
    let query = Query {
        k: k as usize,
        thresholds,
        brand,
        label,
        nearest: req.nearest.then_some(crate::index::NearestEngine::Exact),
    };
    Ok(MatchItem { request_id: req.request_id, content, query })
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

pub fn match_response(request_id: String, r: MatchResult, total: Duration) -> pb::MatchResponse {
    pb::MatchResponse {
        request_id,
        error: None,
        pdq: r.pdq.to_string(),
        quality: u32::from(r.quality),
        phash: r.phash.map(|p| format!("{p:016x}")).unwrap_or_default(),
        verdict: verdict_to_pb(r.verdict) as i32,
        matches: r
            .matches
            .into_iter()
            .map(|m| pb::Match {
                view: m.describe(),
                id: m.entry.id,
                brand: m.entry.brand,
                label: label_to_pb(m.entry.label) as i32,
                external_id: m.entry.external_id,
                distance: m.distance,
                orientation: orientation_to_pb(m.orientation) as i32,
                closeness: closeness_to_pb(m.closeness) as i32,
                note: m.entry.note.unwrap_or_default(),
                source: m.entry.source,
                verified: m.verified.map(verified_to_pb),
                replaced: m.replaced,
                confidence: m.confidence,
                parts: m.parts.map(parts_to_pb),
            })
            .collect(),
        hash_micros: micros(r.hash_time),
        search_micros: micros(r.search_time),
        total_micros: micros(total),
    }
}

pub fn match_failure(request_id: String, error: &ApiError) -> pb::MatchResponse {
    pb::MatchResponse { request_id, error: Some(error.to_item()), ..Default::default() }
}
