//! The gRPC service end to end: a real server on a loopback port (in this process, or the
//! real binary where a process must die), the generated tonic clients, real images.

mod common;

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use common::{encode, fixture, jpeg, photo};
use image::{imageops, ImageFormat, RgbImage};
use lookalike::grpc::client::{CatalogClient, MatcherClient};
use lookalike::grpc::pb::{self, add_image_request, match_request};
use lookalike::grpc::{self, Engine, EngineOptions, ServeOptions};
use lookalike::hash::{hash_image, DecodeLimits};
use tokio::sync::oneshot;
use tokio_stream::StreamExt;
use tonic::transport::Channel;
use tonic::Code;

const BIN: &str = env!("CARGO_BIN_EXE_lookalike");

/// A server running in this process on 127.0.0.1:0.
struct Server {
    url: String,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Server {
    async fn start(dir: &Path, engine: EngineOptions, serve: ServeOptions) -> Server {
        let engine = Arc::new(Engine::open(dir, engine).expect("open index"));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            grpc::serve(listener, engine, &serve, async {
                let _ = stopped.await;
            })
            .await
        });
        Server { url, stop: Some(stop), task }
    }

    async fn default(dir: &Path) -> Server {
        Server::start(dir, EngineOptions::default(), ServeOptions::default()).await
    }

    async fn channel(&self) -> Channel {
        grpc::client::connect(&self.url).await.unwrap()
    }

    async fn catalog(&self) -> CatalogClient<Channel> {
        CatalogClient::new(self.channel().await).max_encoding_message_size(usize::MAX)
    }

    async fn matcher(&self) -> MatcherClient<Channel> {
        MatcherClient::new(self.channel().await).max_encoding_message_size(usize::MAX)
    }

    async fn stop(mut self) {
        self.stop.take().unwrap().send(()).unwrap();
        self.task.await.unwrap().unwrap();
    }
}

fn add_request(bytes: Vec<u8>, brand: &str, label: pb::Label, external_id: &str) -> pb::AddImageRequest {
    pb::AddImageRequest {
        content: Some(add_image_request::Content::Image(bytes)),
        brand: brand.into(),
        label: label as i32,
        external_id: external_id.into(),
        note: String::new(),
        source: String::new(),
    }
}

fn match_image(bytes: Vec<u8>) -> pb::MatchRequest {
    pb::MatchRequest { query: Some(match_request::Query::Image(bytes)), ..Default::default() }
}

async fn add_all(catalog: &mut CatalogClient<Channel>, items: Vec<pb::AddImageRequest>) -> Vec<pb::AddImageResult> {
    let n = items.len();
    let results: Vec<_> = catalog
        .add_images(tokio_stream::iter(items))
        .await
        .unwrap()
        .into_inner()
        .collect::<Result<Vec<_>, _>>()
        .await
        .unwrap();
    assert_eq!(results.len(), n, "one result per request");
    for (i, r) in results.iter().enumerate() {
        assert_eq!(r.sequence, i as u64, "results come in request order");
    }
    results
}

fn status_of(r: &pb::AddImageResult) -> pb::AddStatus {
    pb::AddStatus::try_from(r.status).unwrap()
}

fn verdict_of(r: &pb::MatchResponse) -> pb::Verdict {
    pb::Verdict::try_from(r.verdict).unwrap()
}

fn read(name: &str) -> Vec<u8> {
    std::fs::read(fixture(name)).unwrap()
}

fn load(name: &str) -> RgbImage {
    image::open(fixture(name)).unwrap().to_rgb8()
}

/// The fixture photos loaded as a small catalog: four authentic, one known fake.
const AUTHENTIC: [&str; 4] = ["astronaut.jpg", "coffee.jpg", "chelsea.png", "camera_gray.png"];
const FAKE: &str = "hubble_deep_field_blur.jpg";

async fn load_catalog(server: &Server) -> HashMap<String, u64> {
    let mut catalog = server.catalog().await;
    let mut items: Vec<_> = AUTHENTIC.iter().map(|f| add_request(read(f), "acme", pb::Label::Authentic, f)).collect();
    items.push(add_request(read(FAKE), "acme", pb::Label::KnownFake, FAKE));
    let results = add_all(&mut catalog, items).await;
    results
        .iter()
        .map(|r| {
            assert_eq!(status_of(r), pb::AddStatus::Added, "{r:?}");
            assert!(r.id > 0 && r.pdq.len() == 64);
            (r.external_id.clone(), r.id)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catalog_over_the_stream_then_edited_copies_match() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::default(dir.path()).await;
    let ids = load_catalog(&server).await;

    // The same bytes again: already present, same id; nothing new stored.
    let mut catalog = server.catalog().await;
    let again = add_all(&mut catalog, vec![add_request(read("coffee.jpg"), "acme", pb::Label::Authentic, "x")]).await;
    assert_eq!(status_of(&again[0]), pb::AddStatus::AlreadyPresent);
    assert_eq!(again[0].id, ids["coffee.jpg"]);

    let mut matcher = server.matcher().await;
    // A half-size JPEG re-encode of an authentic photo: the brand's photo reused.
    let astronaut = load("astronaut.jpg");
    let small = imageops::resize(&astronaut, 256, 256, imageops::FilterType::Triangle);
    let r = matcher.r#match(match_image(jpeg(&small, 60))).await.unwrap().into_inner();
    assert_eq!(verdict_of(&r), pb::Verdict::BrandPhotoReused, "{r:?}");
    assert_eq!(r.matches[0].id, ids["astronaut.jpg"]);
    assert_eq!(r.matches[0].brand, "acme");
    assert_eq!(r.matches[0].external_id, "astronaut.jpg");
    assert!(r.matches[0].distance <= 31);
    assert_eq!(r.pdq.len(), 64);
    assert_eq!(r.phash.len(), 16);
    assert!(r.hash_micros > 0 && r.total_micros >= r.hash_micros);

    // A mirrored copy: found through another orientation, said in words.
    let mirrored = imageops::flip_horizontal(&load("coffee.jpg"));
    let r = matcher.r#match(match_image(jpeg(&mirrored, 85))).await.unwrap().into_inner();
    assert_eq!(verdict_of(&r), pb::Verdict::BrandPhotoReused, "{r:?}");
    assert_eq!(r.matches[0].id, ids["coffee.jpg"]);
    assert_eq!(pb::Orientation::try_from(r.matches[0].orientation), Ok(pb::Orientation::FlipY));
    assert!(r.matches[0].view.starts_with("mirrored left to right"), "{:?}", r.matches[0]);

    // A re-encoded known fake.
    let fake = load(FAKE);
    let r = matcher.r#match(match_image(jpeg(&fake, 50))).await.unwrap().into_inner();
    assert_eq!(verdict_of(&r), pb::Verdict::KnownFake, "{r:?}");
    assert_eq!(pb::Label::try_from(r.matches[0].label), Ok(pb::Label::KnownFake));

    // An unrelated photograph: nothing.
    let r = matcher.r#match(match_image(read("rocket_exif6.jpg"))).await.unwrap().into_inner();
    assert_eq!(verdict_of(&r), pb::Verdict::NoMatch, "{r:?}");
    assert!(r.matches.is_empty());

    // ...unless the nearest entries are asked for.
    let mut req = match_image(read("rocket_exif6.jpg"));
    req.nearest = true;
    req.k = Some(2);
    let r = matcher.r#match(req).await.unwrap().into_inner();
    assert_eq!(r.matches.len(), 2);
    assert!(r.matches.iter().all(|m| m.closeness == pb::Closeness::Beyond as i32));

    // Filters: only known fakes; only another brand.
    let mut req = match_image(jpeg(&small, 60));
    req.label = Some(pb::Label::KnownFake as i32);
    assert_eq!(verdict_of(&matcher.r#match(req).await.unwrap().into_inner()), pb::Verdict::NoMatch);
    let mut req = match_image(jpeg(&small, 60));
    req.brand = "globex".into();
    assert_eq!(verdict_of(&matcher.r#match(req).await.unwrap().into_inner()), pb::Verdict::NoMatch);

    // A precomputed hash matches its own orientation.
    let stored = catalog
        .get(pb::GetRequest { target: Some(pb::get_request::Target::Id(ids["chelsea.png"])) })
        .await
        .unwrap()
        .into_inner()
        .entries
        .remove(0);
    let req = pb::MatchRequest {
        query: Some(match_request::Query::Hash(pb::PrecomputedHash { pdq: stored.pdq.clone(), quality: None })),
        ..Default::default()
    };
    let r = matcher.r#match(req).await.unwrap().into_inner();
    assert_eq!((r.matches[0].id, r.matches[0].distance), (ids["chelsea.png"], 0));

    // Get by brand + external id, and Stats.
    let got = catalog
        .get(pb::GetRequest {
            target: Some(pb::get_request::Target::External(pb::ExternalRef {
                brand: "acme".into(),
                external_id: "coffee.jpg".into(),
            })),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.entries.len(), 1);
    assert_eq!(got.entries[0].id, ids["coffee.jpg"]);
    assert_eq!(got.entries[0].source, "grpc");
    let stats = catalog.stats(pb::StatsRequest {}).await.unwrap().into_inner();
    // One record per entry, plus one for each photo with plain borders (its trimmed view).
    let views: u64 = AUTHENTIC
        .iter()
        .chain([&FAKE])
        .map(|f| 1 + hash_image(&read(f), &DecodeLimits::default()).unwrap().extra_views().len() as u64)
        .sum();
    assert_eq!((stats.live, stats.deleted, stats.records), (5, 0, views));

    // Delete, then the photo no longer matches and a second delete finds nothing.
    let deleted = catalog
        .delete(pb::DeleteRequest { target: Some(pb::delete_request::Target::Id(ids["astronaut.jpg"])) })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(deleted.deleted_ids, vec![ids["astronaut.jpg"]]);
    let r = matcher.r#match(match_image(jpeg(&small, 60))).await.unwrap().into_inner();
    assert!(r.matches.iter().all(|m| m.id != ids["astronaut.jpg"]), "{r:?}");
    let again = catalog
        .delete(pb::DeleteRequest { target: Some(pb::delete_request::Target::Id(ids["astronaut.jpg"])) })
        .await
        .unwrap_err();
    assert_eq!(again.code(), Code::NotFound);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_exact_statuses_and_the_server_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let serve = ServeOptions { max_message_bytes: 1 << 20, ..ServeOptions::default() };
    let server = Server::start(dir.path(), EngineOptions::default(), serve).await;
    let ids = load_catalog(&server).await;
    let mut matcher = server.matcher().await;
    let mut catalog = server.catalog().await;

    let expect = |result: Result<tonic::Response<pb::MatchResponse>, tonic::Status>, code: Code, words: &str| {
        let status = result.expect_err("should fail");
        assert_eq!(status.code(), code, "{status:?}");
        assert!(status.message().contains(words), "{:?} lacks {words:?}", status.message());
    };
    expect(matcher.r#match(match_image(b"definitely not an image".to_vec())).await, Code::InvalidArgument, "image");
    expect(matcher.r#match(match_image(Vec::new())).await, Code::InvalidArgument, "empty");
    let jpeg_bytes = read("coffee.jpg");
    let truncated = jpeg_bytes[..jpeg_bytes.len() / 2].to_vec();
    expect(matcher.r#match(match_image(truncated)).await, Code::InvalidArgument, "truncated");
    expect(matcher.r#match(pb::MatchRequest::default()).await, Code::InvalidArgument, "set either image or hash");
    let mut req = match_image(read("coffee.jpg"));
    req.label = Some(pb::Label::Unspecified as i32);
    expect(matcher.r#match(req).await, Code::InvalidArgument, "LABEL_UNSPECIFIED");
    let mut req = match_image(read("coffee.jpg"));
    req.label = Some(99);
    expect(matcher.r#match(req).await, Code::InvalidArgument, "unknown value 99");
    for k in [0, 1_000_000_000] {
        let mut req = match_image(read("coffee.jpg"));
        req.k = Some(k);
        expect(matcher.r#match(req).await, Code::InvalidArgument, "k must be");
    }
    let mut req = match_image(read("coffee.jpg"));
    req.flag_distance = Some(50);
    req.review_distance = Some(40);
    expect(matcher.r#match(req).await, Code::InvalidArgument, "flag");
    // Either distance alone is fine: the other adapts.
    let mut req = match_image(read("coffee.jpg"));
    req.review_distance = Some(10);
    assert_eq!(matcher.r#match(req).await.unwrap().into_inner().matches[0].id, ids["coffee.jpg"]);
    let req = pb::MatchRequest {
        query: Some(match_request::Query::Hash(pb::PrecomputedHash { pdq: "abc".into(), quality: None })),
        ..Default::default()
    };
    expect(matcher.r#match(req).await, Code::InvalidArgument, "not a PDQ hash");
    // Over the message limit: refused before anything is decoded.
    let big = photo(7, 1400, 1400);
    let big = encode(&big, ImageFormat::Png);
    assert!(big.len() > 1 << 20);
    expect(matcher.r#match(match_image(big.clone())).await, Code::ResourceExhausted, "too large");

    // Catalog: unknown ids, an empty selector.
    let status = catalog.get(pb::GetRequest { target: Some(pb::get_request::Target::Id(999_999)) }).await.unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    assert!(status.message().contains("999999"));
    let status = catalog.delete(pb::DeleteRequest { target: None }).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);

    // AddImages: bad items fail alone, the good ones around them are stored.
    let bad_label = add_request(read("rocket_exif6.jpg"), "acme", pb::Label::Unspecified, "rocket");
    let items = vec![
        add_request(read("coffee_tiny.png"), "acme", pb::Label::Authentic, "tiny"),
        bad_label,
        add_request(b"GIF89a garbage".to_vec(), "acme", pb::Label::Authentic, "garbage"),
        add_request(read("rocket_exif6.jpg"), "", pb::Label::Authentic, "no brand"),
        add_request(read("rocket_exif6.jpg"), "acme", pb::Label::Authentic, &"x".repeat(501)),
        add_request(read("rocket_exif6.jpg"), " acme", pb::Label::Authentic, "spaces"),
        add_request(read("rocket_exif6.jpg"), "acme", pb::Label::Authentic, "rocket"),
    ];
    let results = add_all(&mut catalog, items).await;
    let summary: Vec<_> = results.iter().map(|r| (status_of(r), r.error.as_ref().map(|e| e.code))).collect();
    let invalid = Some(Code::InvalidArgument as i32);
    assert_eq!(
        summary,
        vec![
            (pb::AddStatus::Added, None),
            (pb::AddStatus::Failed, invalid),
            (pb::AddStatus::Failed, invalid),
            (pb::AddStatus::Failed, invalid),
            (pb::AddStatus::Failed, invalid),
            (pb::AddStatus::Failed, invalid),
            (pb::AddStatus::Added, None),
        ]
    );
    assert!(results[5].error.as_ref().unwrap().message.contains("leading or trailing spaces"));
    assert!(results[1].error.as_ref().unwrap().message.contains("LABEL_UNSPECIFIED"));
    assert!(results[3].error.as_ref().unwrap().message.contains("brand is empty"));
    assert!(results[4].error.as_ref().unwrap().message.contains("external id"));

    // An item over the message limit ends the upload stream with RESOURCE_EXHAUSTED,
    // after the items before it were answered.
    let items = vec![
        add_request(jpeg(&photo(1, 200, 200), 90), "acme", pb::Label::Authentic, "before"),
        add_request(big, "acme", pb::Label::Authentic, "too big"),
    ];
    let mut stream = catalog.add_images(tokio_stream::iter(items)).await.unwrap().into_inner();
    let first = stream.message().await.unwrap().unwrap();
    assert_eq!(status_of(&first), pb::AddStatus::Added);
    let end = stream.message().await.unwrap_err();
    assert_eq!(end.code(), Code::ResourceExhausted, "{end:?}");

    // Still serving, nothing lost.
    let r = matcher.r#match(match_image(read("coffee.jpg"))).await.unwrap().into_inner();
    assert_eq!(r.matches[0].id, ids["coffee.jpg"]);
    let stats = catalog.stats(pb::StatsRequest {}).await.unwrap().into_inner();
    assert_eq!(stats.live, 5 + 3);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn match_stream_answers_every_request_id_once() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::default(dir.path()).await;
    let ids = load_catalog(&server).await;
    let mut matcher = server.matcher().await;
    let mut requests = Vec::new();
    let mut expected = HashMap::new();
    for (i, name) in AUTHENTIC.iter().cycle().take(24).enumerate() {
        let id = format!("listing-{i}");
        let mut req = match_image(read(name));
        req.request_id = id.clone();
        expected.insert(id, Some(ids[*name]));
        requests.push(req);
    }
    // A broken item in the middle fails alone.
    let mut broken = match_image(b"\x89PNG\r\n\x1a\n broken".to_vec());
    broken.request_id = "broken".into();
    expected.insert("broken".into(), None);
    requests.insert(10, broken);

    let responses: Vec<_> = matcher
        .match_stream(tokio_stream::iter(requests))
        .await
        .unwrap()
        .into_inner()
        .collect::<Result<Vec<_>, _>>()
        .await
        .unwrap();
    assert_eq!(responses.len(), expected.len());
    let mut seen = HashSet::new();
    for r in responses {
        assert!(seen.insert(r.request_id.clone()), "{} answered twice", r.request_id);
        match expected[&r.request_id] {
            Some(id) => {
                assert!(r.error.is_none(), "{r:?}");
                assert_eq!(r.matches[0].id, id);
                assert_eq!(r.matches[0].distance, 0);
            }
            None => assert_eq!(r.error.unwrap().code, Code::InvalidArgument as i32),
        }
    }
    server.stop().await;
}

/// A large photo that takes a while to decode and hash.
fn slow_image() -> Vec<u8> {
    jpeg(&photo(99, 4000, 4000), 90)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deadlines_are_deadline_exceeded_not_cancelled() {
    let dir = tempfile::tempdir().unwrap();
    let engine = EngineOptions { max_in_flight: 1, max_queued: 32, ..EngineOptions::default() };
    let server = Server::start(dir.path(), engine, ServeOptions::default()).await;
    load_catalog(&server).await;
    let slow = slow_image();
    let mut matcher = server.matcher().await;

    // A stream whose next request never comes: the server ends it at the deadline.
    let (_hold, rx) = tokio::sync::mpsc::channel::<pb::MatchRequest>(1);
    let mut req = tonic::Request::new(tokio_stream::wrappers::ReceiverStream::new(rx));
    req.set_timeout(Duration::from_millis(300));
    let mut answers = matcher.match_stream(req).await.unwrap().into_inner();
    let status = answers.message().await.unwrap_err();
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");

    // A unary call queued behind more work than its deadline allows (a 4000x4000 JPEG
    // takes 50 ms or more each; twenty of them run before it on the single slot). The
    // server answers a tenth of the timeout early, 60 ms here: room for a loaded machine.
    let ahead: Vec<_> = (0..20)
        .map(|_| {
            let (mut m, bytes) = (matcher.clone(), slow.clone());
            tokio::spawn(async move { m.r#match(match_image(bytes)).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(20)).await;
    let mut req = tonic::Request::new(match_image(slow.clone()));
    req.set_timeout(Duration::from_millis(600));
    let status = matcher.r#match(req).await.unwrap_err();
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    for call in ahead {
        call.await.unwrap().unwrap();
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overload_is_resource_exhausted_and_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let engine = EngineOptions { max_in_flight: 1, max_queued: 1, ..EngineOptions::default() };
    let server = Server::start(dir.path(), engine, ServeOptions::default()).await;
    load_catalog(&server).await;
    let slow = slow_image();
    let mut matcher = server.matcher().await;

    // More than one running and one waiting: the rest are refused at once.
    let calls: Vec<_> = (0..6)
        .map(|_| {
            let mut m = matcher.clone();
            let bytes = slow.clone();
            tokio::spawn(async move { m.r#match(match_image(bytes)).await })
        })
        .collect();
    let mut codes = Vec::new();
    for c in calls {
        codes.push(match c.await.unwrap() {
            Ok(_) => Code::Ok,
            Err(s) => {
                if s.code() == Code::ResourceExhausted {
                    assert!(s.message().contains("busy"), "{s:?}");
                }
                s.code()
            }
        });
    }
    let ok = codes.iter().filter(|&&c| c == Code::Ok).count();
    let busy = codes.iter().filter(|&&c| c == Code::ResourceExhausted).count();
    assert_eq!(ok + busy, codes.len(), "{codes:?}");
    assert!(ok >= 1 && busy >= 1, "{codes:?}");

    // Recovered.
    let r = matcher.r#match(match_image(read("coffee.jpg"))).await.unwrap().into_inner();
    assert_eq!(verdict_of(&r), pb::Verdict::BrandPhotoReused);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_uploads_and_matches_are_consistent() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::default(dir.path()).await;
    let (streams, per_stream) = (4u64, 20u64);
    let mut uploads = Vec::new();
    for s in 0..streams {
        let mut catalog = server.catalog().await;
        uploads.push(tokio::spawn(async move {
            let items: Vec<_> = (0..per_stream)
                .map(|i| {
                    let seed = 1000 + s * per_stream + i;
                    add_request(jpeg(&photo(seed, 160, 160), 90), "acme", pb::Label::Authentic, &format!("p{seed}"))
                })
                .collect();
            add_all(&mut catalog, items).await
        }));
    }
    // Matches run while the uploads write; every answer is well-formed.
    let mut matcher = server.matcher().await;
    for i in 0..10 {
        let r = matcher.r#match(match_image(jpeg(&photo(1000 + i, 160, 160), 80))).await.unwrap().into_inner();
        for m in &r.matches {
            assert_eq!(m.brand, "acme");
            assert!(m.external_id.starts_with('p'));
        }
    }
    let mut ids = HashSet::new();
    for u in uploads {
        for r in u.await.unwrap() {
            assert_eq!(status_of(&r), pb::AddStatus::Added, "{r:?}");
            assert!(ids.insert(r.id), "id {} given twice", r.id);
        }
    }
    assert_eq!(ids.len() as u64, streams * per_stream);
    let stats = server.catalog().await.stats(pb::StatsRequest {}).await.unwrap().into_inner();
    assert_eq!((stats.live, stats.records), (streams * per_stream, streams * per_stream));
    // Each upload is found by its own image.
    let r = matcher.r#match(match_image(jpeg(&photo(1000 + 17, 160, 160), 90))).await.unwrap().into_inner();
    assert_eq!(r.matches[0].external_id, "p1017");
    assert_eq!(r.matches[0].distance, 0);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_reflection_answer() {
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::{health_client::HealthClient, HealthCheckRequest};
    let dir = tempfile::tempdir().unwrap();
    let server = Server::default(dir.path()).await;
    let mut health = HealthClient::new(server.channel().await);
    for service in ["", "lookalike.v1.Catalog", "lookalike.v1.Matcher"] {
        let r = health.check(HealthCheckRequest { service: service.into() }).await.unwrap().into_inner();
        assert_eq!(r.status, ServingStatus::Serving as i32, "{service:?}");
    }

    use tonic_reflection::pb::{v1, v1alpha};
    let list = v1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(v1::server_reflection_request::MessageRequest::ListServices(String::new())),
    };
    let mut client = v1::server_reflection_client::ServerReflectionClient::new(server.channel().await);
    let mut answers = client.server_reflection_info(tokio_stream::iter([list])).await.unwrap().into_inner();
    let names: Vec<String> = match answers.message().await.unwrap().unwrap().message_response.unwrap() {
        v1::server_reflection_response::MessageResponse::ListServicesResponse(l) => {
            l.service.into_iter().map(|s| s.name).collect()
        }
        other => panic!("{other:?}"),
    };
    for expected in ["lookalike.v1.Catalog", "lookalike.v1.Matcher", "grpc.health.v1.Health"] {
        assert!(names.iter().any(|n| n == expected), "{names:?}");
    }
    let list = v1alpha::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(v1alpha::server_reflection_request::MessageRequest::FileContainingSymbol(
            "lookalike.v1.Matcher".into(),
        )),
    };
    let mut client = v1alpha::server_reflection_client::ServerReflectionClient::new(server.channel().await);
    let mut answers = client.server_reflection_info(tokio_stream::iter([list])).await.unwrap().into_inner();
    match answers.message().await.unwrap().unwrap().message_response.unwrap() {
        v1alpha::server_reflection_response::MessageResponse::FileDescriptorResponse(f) => {
            assert!(!f.file_descriptor_proto.is_empty())
        }
        other => panic!("{other:?}"),
    }
    server.stop().await;
}

/// The real binary, serving a data directory on a free port.
struct Process {
    child: Child,
    url: String,
}

impl Process {
    fn start(data: &Path) -> Process {
        let mut child = Command::new(BIN)
            .args(["--data", data.to_str().unwrap(), "serve", "--listen", "127.0.0.1:0", "--no-http", "--grace", "5"])
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let url = loop {
            let line = lines.next().expect("server exited before listening").unwrap();
            if let Some(rest) = line.split("serving gRPC on ").nth(1) {
                break format!("http://{}", rest.split_whitespace().next().unwrap());
            }
        };
        // Keep draining the log so the server never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Process { child, url }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_entries_survive_sigkill_and_sigterm_exits_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut server = Process::start(&data);
    let mut catalog = CatalogClient::new(grpc::client::connect(&server.url).await.unwrap());
    // Upload many; kill the server while the stream is still going.
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tokio::spawn(async move {
        for seed in 0..400u64 {
            let item =
                add_request(jpeg(&photo(5000 + seed, 96, 96), 90), "acme", pb::Label::Authentic, &format!("k{seed}"));
            if tx.send(item).await.is_err() {
                break;
            }
        }
    });
    let mut results = catalog.add_images(tokio_stream::wrappers::ReceiverStream::new(rx)).await.unwrap().into_inner();
    let mut acked = Vec::new();
    while acked.len() < 40 {
        let r = results.message().await.unwrap().unwrap();
        assert_eq!(status_of(&r), pb::AddStatus::Added);
        acked.push((r.id, r.external_id));
    }
    server.child.kill().unwrap(); // SIGKILL
    server.child.wait().unwrap();
    // Whatever else the stream says, it ends with an error: the server is gone.
    while let Ok(Some(r)) = results.message().await {
        acked.push((r.id, r.external_id));
    }

    let mut server = Process::start(&data);
    let channel = grpc::client::connect(&server.url).await.unwrap();
    let mut catalog = CatalogClient::new(channel.clone());
    for (id, external_id) in &acked {
        let got = catalog
            .get(pb::GetRequest { target: Some(pb::get_request::Target::Id(*id)) })
            .await
            .unwrap_or_else(|s| panic!("acknowledged entry {id} lost: {s:?}"))
            .into_inner();
        assert_eq!(&got.entries[0].external_id, external_id);
        assert!(got.entries[0].deleted_at_ms.is_none());
    }
    // Searchable, and exactly once.
    let mut matcher = MatcherClient::new(channel);
    let seed: u64 = acked[acked.len() / 2].1[1..].parse().unwrap();
    let r = matcher.r#match(match_image(jpeg(&photo(5000 + seed, 96, 96), 90))).await.unwrap().into_inner();
    let exact: Vec<_> = r.matches.iter().filter(|m| m.distance == 0).collect();
    assert_eq!(exact.len(), 1, "{r:?}");
    assert_eq!(exact[0].external_id, format!("k{seed}"));

    // SIGTERM: finishes and exits 0.
    let status = Command::new("kill").args(["-TERM", &server.child.id().to_string()]).status().unwrap();
    assert!(status.success());
    let exit = wait_timeout(&mut server.child, Duration::from_secs(15)).expect("server did not exit after SIGTERM");
    assert!(exit.success(), "{exit:?}");
}

fn wait_timeout(child: &mut Child, limit: Duration) -> Option<std::process::ExitStatus> {
    let start = std::time::Instant::now();
    while start.elapsed() < limit {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    None
}

/// `MatchRequest` as raw bytes: the same field numbers, but `request_id` is bytes, so it
/// can carry invalid UTF-8 (which no well-behaved client would send).
#[derive(Clone, PartialEq, prost::Message)]
struct RawMatchRequest {
    #[prost(bytes = "vec", tag = "1")]
    image: Vec<u8>,
    #[prost(bytes = "vec", tag = "3")]
    request_id: Vec<u8>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undecodable_messages_are_invalid_argument() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::default(dir.path()).await;
    load_catalog(&server).await;
    let raw = RawMatchRequest { image: read("coffee.jpg"), request_id: vec![0xff, 0xfe, b'x'] };
    let path = http::uri::PathAndQuery::from_static("/lookalike.v1.Matcher/Match");
    let mut grpc = tonic::client::Grpc::new(server.channel().await);
    grpc.ready().await.unwrap();
    let codec = tonic_prost::ProstCodec::<RawMatchRequest, pb::MatchResponse>::default();
    let status = grpc.unary(tonic::Request::new(raw.clone()), path, codec).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(status.message().contains("UTF-8"), "{status:?}");

    // In a stream: the stream ends with the same status.
    let path = http::uri::PathAndQuery::from_static("/lookalike.v1.Matcher/MatchStream");
    let mut grpc = tonic::client::Grpc::new(server.channel().await);
    grpc.ready().await.unwrap();
    let codec = tonic_prost::ProstCodec::<RawMatchRequest, pb::MatchResponse>::default();
    let mut answers =
        grpc.streaming(tonic::Request::new(tokio_stream::iter([raw])), path, codec).await.unwrap().into_inner();
    let status = loop {
        match answers.message().await {
            Ok(Some(_)) => continue,
            Ok(None) => panic!("the stream ended without an error"),
            Err(status) => break status,
        }
    };
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");

    // Still serving.
    let r = server.matcher().await.r#match(match_image(read("coffee.jpg"))).await.unwrap().into_inner();
    assert_eq!(verdict_of(&r), pb::Verdict::BrandPhotoReused);
    server.stop().await;
}
