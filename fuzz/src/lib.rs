//! What the fuzz targets run, shared with `tests/fuzz_regressions.rs` so that a saved input
//! is replayed through exactly the code that found it.
//!
//! Every function here takes arbitrary bytes and must return normally: a panic, an abort,
//! running out of memory or taking seconds is the bug. Decode errors and refused requests
//! are the expected outcome for almost every input. Beyond "does not crash", a few cheap
//! invariants are asserted on the accepted ones (the pixel limit was honoured, the format
//! is the one the signature names, a refused request keeps its id).

use lookalike::grpc::convert::{self, MatchItem};
use lookalike::grpc::{pb, ApiError, Content};
use lookalike::hash::{self, DecodeLimits, ImageError, ImageHashes};
use lookalike::matcher::MAX_K;
use prost::Message;

/// The fuzzer's decode limits: far below the server's defaults, so that time goes into
/// parsing headers and chunks rather than into decoding huge (valid) images. An image
/// declaring more pixels must be refused from its header, before its pixels are allocated.
pub const LIMITS: DecodeLimits = DecodeLimits { max_bytes: 1 << 20, max_pixels: 4_000_000 };

/// Decode and hash `data` as an uploaded image (the `decode_hash` target).
pub fn decode_hash(data: &[u8]) -> Result<ImageHashes, ImageError> {
    check_image(data, true)
}

/// What became of one request message: `Ok` if the check accepted it (and its image, if
/// it carried one, was hashed), else the error as the client would read it.
pub type Outcome = Result<(), String>;

/// Decode `data` as each request message in turn, check it as the server does, and hash
/// any image the check accepts (the `grpc_request` target). Returns the outcome of each
/// message type the bytes decode as (bytes that are not valid protobuf decode as none).
pub fn grpc_request(data: &[u8]) -> Vec<(&'static str, Outcome)> {
    let mut outcomes = Vec::new();
    if let Ok(req) = pb::MatchRequest::decode(data) {
        outcomes.push(("MatchRequest", check_match(req)));
    }
    if let Ok(req) = pb::AddImageRequest::decode(data) {
        outcomes.push(("AddImageRequest", check_add(req)));
    }
    if let Ok(req) = pb::DeleteRequest::decode(data) {
        let selector = convert::delete_selector(req).map_err(error_text);
        outcomes.push((
            "DeleteRequest",
            selector.map(|s| {
                let _ = convert::describe(&s);
            }),
        ));
    }
    if let Ok(req) = pb::GetRequest::decode(data) {
        let selector = convert::get_selector(req).map_err(error_text);
        outcomes.push((
            "GetRequest",
            selector.map(|s| {
                let _ = convert::describe(&s);
            }),
        ));
    }
    outcomes
}

fn check_match(req: pb::MatchRequest) -> Outcome {
    let request_id = req.request_id.clone();
    match convert::match_item(req) {
        Ok(MatchItem { request_id: id, content, query }) => {
            assert_eq!(id, request_id, "match_item changed the request id");
            assert!((1..=MAX_K).contains(&query.k), "accepted k = {}", query.k);
            let t = query.thresholds;
            assert!(t.flag <= t.review && t.review <= 128 && t.min_quality <= 100, "accepted thresholds {t:?}");
            match content {
                // Matching hashes without a thumbnail (as the server's Match does).
                Content::Image(bytes) => check_image(&bytes, false).map(|_| ()).map_err(|e| error_text(e.into())),
                Content::Hash { quality, .. } => {
                    assert!(quality.is_none_or(|q| q <= 100), "accepted quality {quality:?}");
                    Ok(())
                }
            }
        }
        Err((id, error)) => {
            assert_eq!(id, request_id, "a refused request lost its id");
            let _ = convert::match_failure(id, &error);
            Err(error_text(error))
        }
    }
}

fn check_add(req: pb::AddImageRequest) -> Outcome {
    let external_id = req.external_id.clone();
    match convert::add_item(req) {
        Ok(item) => match item.content {
            // Adding keeps a thumbnail (as the server's AddImages does).
            Content::Image(bytes) => check_image(&bytes, true).map(|_| ()).map_err(|e| error_text(e.into())),
            Content::Hash { .. } => Ok(()),
        },
        Err(error) => {
            let _ = convert::add_failure(0, external_id, &error);
            Err(error_text(error))
        }
    }
}

/// Render an error as the server would send it (formatting must not panic either).
fn error_text(error: ApiError) -> String {
    let status = error.to_status();
    format!("{:?}: {}", status.code(), status.message())
}

/// Hash `data` within [`LIMITS`] (with `thumbnail`, through the entry point indexing uses,
/// which also makes the thumbnail and the local features) and check what an accepted
/// image gives.
fn check_image(data: &[u8], thumbnail: bool) -> Result<ImageHashes, ImageError> {
    let result = if thumbnail {
        hash::index_image(data, &LIMITS).map(|(h, jpeg, features)| {
            assert!(jpeg.starts_with(&[0xFF, 0xD8]) && jpeg.ends_with(&[0xFF, 0xD9]), "thumbnail is not a JPEG");
            lookalike::features::from_bytes(&features).expect("stored features read back");
            h
        })
    } else {
        hash::hash_image(data, &LIMITS)
    };
    match &result {
        Ok(h) => check_hashes(data, h),
        Err(e) => {
            if let ImageError::TooManyBytes { .. } = e {
                assert!(data.len() > LIMITS.max_bytes);
            }
            let _ = e.to_string();
        }
    }
    result
}

fn check_hashes(data: &[u8], h: &ImageHashes) {
    let pixels = u64::from(h.width) * u64::from(h.height);
    assert!(pixels > 0 && pixels <= LIMITS.max_pixels, "decoded {}×{} beyond the limit", h.width, h.height);
    assert!(data.len() <= LIMITS.max_bytes);
    assert_eq!(hash::sniff(data).ok(), Some(h.format), "decoded as a format the signature does not name");
    assert!(h.pdq.quality <= 100, "PDQ quality {}", h.pdq.quality);
}
