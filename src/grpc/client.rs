//! Connecting to a running server (used by the CLI's `--server` mode).

use anyhow::{Context, Result};
use tonic::transport::{Channel, Endpoint};

pub use super::pb::catalog_client::CatalogClient;
pub use super::pb::matcher_client::MatcherClient;

/// Connect to `url` (e.g. `http://127.0.0.1:50051`, or `https://…` with the PEM
/// certificate of the authority that signed the server's certificate in `tls_ca`).
pub async fn connect(url: &str) -> Result<Channel> {
    connect_with(url, None).await
}

/// [`connect`], trusting the certificate authority in `tls_ca` (PEM) for `https` URLs.
pub async fn connect_with(url: &str, tls_ca: Option<&[u8]>) -> Result<Channel> {
    let mut endpoint = Endpoint::from_shared(url.to_string())
        .with_context(|| format!("{url:?} is not a server address (expected e.g. http://127.0.0.1:50051)"))?
        .connect_timeout(std::time::Duration::from_secs(5))
        .tcp_nodelay(true);
    if let Some(ca) = tls_ca {
        let tls = tonic::transport::ClientTlsConfig::new().ca_certificate(tonic::transport::Certificate::from_pem(ca));
        endpoint = endpoint.tls_config(tls).context("setting up TLS")?;
    } else if url.starts_with("https:") {
        anyhow::bail!("{url} uses TLS: give the certificate authority's PEM file with --tls-ca");
    }
    endpoint
        .connect()
        .await
        .with_context(|| format!("cannot reach a lookalike server at {url} (is `lookalike serve` running?)"))
}

/// Wrap a message (or stream) in a request carrying an API key, if any.
pub fn with_key<T>(message: T, api_key: Option<&str>) -> Result<tonic::Request<T>> {
    let mut request = tonic::Request::new(message);
    if let Some(key) = api_key {
        let value = format!("Bearer {key}").parse().context("the API key has characters not allowed in a header")?;
        request.metadata_mut().insert("authorization", value);
    }
    Ok(request)
}

use std::time::Duration;

use super::pb;
use crate::hash::{Hash256, Orientation};
use crate::index::{Entry, Label};
use crate::matcher::{Closeness, Match, MatchResult, Verdict};

pub fn label_from_pb(value: i32) -> Option<Label> {
    match pb::Label::try_from(value).ok()? {
        pb::Label::Authentic => Some(Label::Authentic),
        pb::Label::KnownFake => Some(Label::KnownFake),
        pb::Label::Unspecified => None,
    }
}

pub fn label_to_pb(label: Label) -> pb::Label {
    super::convert::label_to_pb(label)
}

fn orientation_from_pb(value: i32) -> Orientation {
    Orientation::ALL
        .into_iter()
        .find(|&o| super::convert::orientation_to_pb(o) as i32 == value)
        .unwrap_or(Orientation::Original)
}

/// A server's answer in the library's terms (for printing it the way a local query is
/// printed). Fields the wire does not carry (SHA-256 and hash of matched entries) are zero.
pub fn match_result_from_pb(r: pb::MatchResponse) -> anyhow::Result<MatchResult> {
    let verdict = match pb::Verdict::try_from(r.verdict) {
        Ok(pb::Verdict::KnownFake) => Verdict::KnownFake,
        Ok(pb::Verdict::BrandPhotoReused) => Verdict::BrandPhotoReused,
        Ok(pb::Verdict::Review) => Verdict::Review,
        Ok(pb::Verdict::NoMatch) => Verdict::NoMatch,
        Ok(pb::Verdict::LowQuality) => Verdict::LowQuality,
        _ => anyhow::bail!("the server sent verdict {}", r.verdict),
    };
    let matches = r
        .matches
        .into_iter()
        .map(|m| {
            let label = label_from_pb(m.label).ok_or_else(|| anyhow::anyhow!("the server sent label {}", m.label))?;
            let closeness = match pb::Closeness::try_from(m.closeness) {
                Ok(pb::Closeness::Flag) => Closeness::Flag,
                Ok(pb::Closeness::Review) => Closeness::Review,
                _ => Closeness::Beyond,
            };
            Ok(Match {
                entry: Entry {
                    id: m.id,
                    brand: m.brand,
                    label,
                    external_id: m.external_id,
                    source: m.source,
                    sha256: [0; 32],
                    pdq: Hash256::default(),
                    quality: None,
                    phash: None,
                    note: Some(m.note).filter(|n| !n.is_empty()),
                    added_at_ms: 0,
                    deleted_at_ms: None,
                    brand_no: 0,
                    views: Vec::new(),
                },
                distance: m.distance,
                orientation: orientation_from_pb(m.orientation),
                view: 0,
                query_view: 0,
                closeness,
                verified: m.verified.map(super::convert::verified_from_pb),
                replaced: m.replaced,
                parts: m.parts.map(super::convert::parts_from_pb),
                confidence: m.confidence,
                evidence: None,
            })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    Ok(MatchResult {
        pdq: r.pdq.parse().map_err(|e| anyhow::anyhow!("the server sent a bad hash: {e}"))?,
        quality: r.quality.min(100) as u8,
        phash: u64::from_str_radix(&r.phash, 16).ok(),
        verdict,
        matches,
        hash_time: Duration::from_micros(r.hash_micros),
        search_time: Duration::from_micros(r.search_micros),
    })
}
