//! The HTTP side of `serve`: the moderator page's JSON API, thumbnails, /metrics and
//! /healthz, on a real loopback port, sharing an engine with the gRPC service.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;

use common::{fixture, jpeg};
use image::imageops;
use lookalike::grpc::{Content, Engine, EngineOptions};
use lookalike::index::{Label, NewEntry};
use serde_json::Value;

/// A response: status code, headers (lowercased names), body.
struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&self.body)))
    }

    fn text(&self) -> String {
        String::from_utf8(self.body.clone()).unwrap()
    }
}

/// One HTTP/1.1 request on a fresh connection (`Connection: close`), read to the end.
fn http(addr: SocketAddr, method: &str, path: &str, body: &[u8]) -> Reply {
    let mut conn = TcpStream::connect(addr).unwrap();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    conn.write_all(head.as_bytes()).unwrap();
    // A refused upload may be answered before the whole body is read.
    let _ = conn.write_all(body);
    let mut raw = Vec::new();
    conn.read_to_end(&mut raw).unwrap();
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").expect("a header block");
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    let mut lines = head.lines();
    let status = lines.next().unwrap().split_whitespace().nth(1).unwrap().parse().unwrap();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let mut body = raw[split + 4..].to_vec();
    if headers.iter().any(|(n, v)| n == "transfer-encoding" && v.contains("chunked")) {
        body = unchunk(&body);
    }
    Reply { status, headers, body }
}

fn unchunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let line_end = data.windows(2).position(|w| w == b"\r\n").unwrap();
        let size = usize::from_str_radix(std::str::from_utf8(&data[..line_end]).unwrap().trim(), 16).unwrap();
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&data[line_end + 2..line_end + 2 + size]);
        data = &data[line_end + 2 + size + 2..];
    }
}

struct Site {
    addr: SocketAddr,
    engine: Arc<Engine>,
    _dir: tempfile::TempDir,
}

/// An engine with the fixture photos (one of them a known fake), served on 127.0.0.1:0.
async fn site(max_body: usize) -> Site {
    let dir = tempfile::tempdir().unwrap();
    let engine = Arc::new(Engine::open(dir.path(), EngineOptions::default()).unwrap());
    let mut entries = Vec::new();
    for (name, label) in [
        ("astronaut.jpg", Label::Authentic),
        ("coffee.jpg", Label::Authentic),
        ("chelsea.png", Label::Authentic),
        ("hubble_deep_field_blur.jpg", Label::KnownFake),
    ] {
        let h = engine.hash(&Content::Image(std::fs::read(fixture(name)).unwrap())).unwrap();
        entries.push(NewEntry {
            brand: "acme".into(),
            label,
            external_id: name.into(),
            source: name.into(),
            sha256: h.sha256,
            pdq: h.pdq,
            quality: h.quality,
            phash: h.phash,
            note: Some(format!("{name} note")),
            thumbnail: h.thumbnail,
            views: h.views,
            features: h.features,
        });
    }
    engine.add(&entries, "test").unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(lookalike::web::serve(listener, engine.clone(), max_body, std::future::pending()));
    Site { addr, engine, _dir: dir }
}

/// Run blocking client calls off the runtime that serves them.
async fn call<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_shows_matches_with_thumbnails_and_readings() {
    let site = site(32 << 20).await;
    let addr = site.addr;
    // A mirrored, re-encoded copy of a catalog photo.
    let astronaut = image::open(fixture("astronaut.jpg")).unwrap().to_rgb8();
    let edited = jpeg(&imageops::flip_horizontal(&astronaut), 70);
    let reply = call(move || http(addr, "POST", "/api/match?k=3", &edited)).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let v = reply.json();
    assert_eq!(v["verdict"], "BRAND_PHOTO_REUSED");
    assert_eq!(v["pdq"].as_str().unwrap().len(), 64);
    let first = &v["matches"][0];
    assert_eq!(first["external_id"], "astronaut.jpg");
    assert_eq!(first["label"], "authentic");
    assert!(first["view"].as_str().unwrap().starts_with("mirrored left to right"), "{first}");
    assert_eq!(first["note"], "astronaut.jpg note");
    let distance = first["distance"].as_u64().unwrap();
    let expected_reading = if distance <= 10 { "near-identical" } else { "likely edited copy" };
    assert_eq!(first["reading"], expected_reading);
    assert_eq!(v["thresholds"]["flag"], lookalike::matcher::Thresholds::DEFAULT_FLAG);

    // Its thumbnail: a JPEG at most 512 px on a side, with the photo's aspect.
    let thumb_url = first["thumbnail"].as_str().unwrap().to_string();
    let reply = call(move || http(addr, "GET", &thumb_url, b"")).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("content-type"), Some("image/jpeg"));
    let thumb = image::load_from_memory(&reply.body).unwrap();
    assert_eq!(thumb.width().max(thumb.height()), lookalike::hash::THUMBNAIL_SIDE);
    assert_eq!(thumb.width(), thumb.height()); // astronaut.jpg is square

    // A known fake, re-encoded.
    let fake = image::open(fixture("hubble_deep_field_blur.jpg")).unwrap().to_rgb8();
    let bytes = jpeg(&fake, 50);
    let v = call(move || http(addr, "POST", "/api/match", &bytes)).await.json();
    assert_eq!(v["verdict"], "KNOWN_FAKE");
    assert_eq!(v["matches"][0]["label"], "known_fake");

    // Bad input: a precise JSON error with the right HTTP status.
    let reply = call(move || http(addr, "POST", "/api/match", b"not an image at all")).await;
    assert_eq!(reply.status, 400);
    assert_eq!(reply.json()["code"], "InvalidArgument");
    assert!(reply.json()["error"].as_str().unwrap().contains("not a supported image"));
    let reply = call(move || http(addr, "POST", "/api/match", b"")).await;
    assert_eq!((reply.status, reply.json()["code"].as_str()), (400, Some("InvalidArgument")));
    let reply = call(move || http(addr, "POST", "/api/match?k=0", b"x")).await;
    assert_eq!(reply.status, 400);
    let reply = call(move || http(addr, "POST", "/api/match?label=maybe", b"x")).await;
    assert_eq!(reply.status, 400);
    assert!(reply.text().contains("label"));
    let reply = call(move || http(addr, "GET", "/api/entries/424242/thumbnail", b"")).await;
    assert_eq!(reply.status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catalog_browsing_and_delete() {
    let site = site(32 << 20).await;
    let addr = site.addr;
    let v = call(move || http(addr, "GET", "/api/brands", b"")).await.json();
    assert_eq!(v["live"], 4);
    assert_eq!(v["brands"][0]["brand"], "acme");
    assert_eq!((v["brands"][0]["authentic"].as_u64(), v["brands"][0]["known_fake"].as_u64()), (Some(3), Some(1)));

    // Pages, newest first, filtered by label.
    let v = call(move || http(addr, "GET", "/api/entries?brand=acme&label=authentic&limit=2", b"")).await.json();
    assert_eq!(v["total"], 3);
    let page: Vec<&str> = v["entries"].as_array().unwrap().iter().map(|e| e["external_id"].as_str().unwrap()).collect();
    assert_eq!(page, ["chelsea.png", "coffee.jpg"]);
    let v =
        call(move || http(addr, "GET", "/api/entries?brand=acme&label=authentic&limit=2&offset=2", b"")).await.json();
    assert_eq!(v["entries"][0]["external_id"], "astronaut.jpg");
    let id = v["entries"][0]["id"].as_u64().unwrap();
    assert_eq!(v["entries"][0]["thumbnail"], format!("/api/entries/{id}/thumbnail"));
    let reply = call(move || http(addr, "GET", "/api/entries?limit=100000", b"")).await;
    assert_eq!(reply.status, 400);

    // One entry; delete it; it is gone from browsing and matching, still readable by id.
    let v = call(move || http(addr, "GET", &format!("/api/entries/{id}"), b"")).await.json();
    assert_eq!(v["external_id"], "astronaut.jpg");
    assert!(v["deleted_at_ms"].is_null());
    let reply = call(move || http(addr, "DELETE", &format!("/api/entries/{id}"), b"")).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.json()["deleted"][0], id);
    let reply = call(move || http(addr, "DELETE", &format!("/api/entries/{id}"), b"")).await;
    assert_eq!(reply.status, 404);
    let v = call(move || http(addr, "GET", &format!("/api/entries/{id}"), b"")).await.json();
    assert!(v["deleted_at_ms"].is_number());
    let v = call(move || http(addr, "GET", "/api/brands", b"")).await.json();
    assert_eq!(v["live"], 3);
    let bytes = std::fs::read(fixture("astronaut.jpg")).unwrap();
    let v = call(move || http(addr, "POST", "/api/match", &bytes)).await.json();
    assert_eq!(v["verdict"], "NO_MATCH");
    let reply = call(move || http(addr, "GET", "/api/entries/999", b"")).await;
    assert_eq!(reply.status, 404);
    drop(site.engine);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_parse_and_count_requests() {
    let site = site(64 * 1024).await;
    let addr = site.addr;
    let bytes = std::fs::read(fixture("coffee.jpg")).unwrap();
    assert!(bytes.len() < 64 * 1024);
    let reply = call(move || http(addr, "POST", "/api/match", &bytes)).await;
    assert_eq!(reply.status, 200);
    call(move || http(addr, "POST", "/api/match", b"junk")).await;
    // Over the body limit: 413, before any decoding.
    let big = vec![0u8; 200 * 1024];
    let reply = call(move || http(addr, "POST", "/api/match", &big)).await;
    assert_eq!(reply.status, 413);
    assert_eq!(reply.json()["code"], "ResourceExhausted");

    let reply = call(move || http(addr, "GET", "/healthz", b"")).await;
    assert_eq!((reply.status, reply.text().trim()), (200, "ok"));

    let reply = call(move || http(addr, "GET", "/metrics", b"")).await;
    assert_eq!(reply.status, 200);
    assert!(reply.header("content-type").unwrap().starts_with("application/openmetrics-text"));
    let text = reply.text();
    // Every sample line is `name{labels} value` with a number; the exposition ends with # EOF.
    let mut samples = std::collections::HashMap::new();
    for line in text.lines().filter(|l| !l.starts_with('#') && !l.is_empty()) {
        let (name, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("bad line {line:?}"));
        let value: f64 = value.parse().unwrap_or_else(|_| panic!("bad value in {line:?}"));
        samples.insert(name.to_string(), value);
    }
    assert_eq!(text.lines().last(), Some("# EOF"));
    assert_eq!(samples[r#"lookalike_requests_total{rpc="http:match",code="Ok"}"#], 1.0);
    assert_eq!(samples[r#"lookalike_requests_total{rpc="http:match",code="InvalidArgument"}"#], 1.0);
    assert_eq!(samples[r#"lookalike_index_entries{label="authentic"}"#], 3.0);
    assert_eq!(samples[r#"lookalike_index_entries{label="known_fake"}"#], 1.0);
    assert_eq!(samples["lookalike_work_queued"], 0.0);
    assert_eq!(samples["lookalike_rejected_for_load_total"], 0.0);
    // 4 catalog images at setup + 2 uploads that decoded (the junk one did not).
    assert_eq!(samples["lookalike_images_hashed_total"], 5.0);
    assert_eq!(samples[r#"lookalike_request_duration_seconds_count{rpc="http:match"}"#], 2.0);
}
