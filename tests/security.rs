//! Access control, TLS and the audit log, against real servers on loopback ports.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;

use common::{fixture, jpeg, photo};
use lookalike::grpc::auth::{Auth, KeyFile, Role};
use lookalike::grpc::client::{self, CatalogClient, MatcherClient};
use lookalike::grpc::pb::{self, add_image_request, match_request};
use lookalike::grpc::{Engine, EngineOptions, ServeOptions};
use tonic::transport::Channel;
use tonic::Code;

struct Keys {
    admin: String,
    acme: String,
    globex: String,
    matcher: String,
}

fn make_keys(path: &Path) -> Keys {
    let mut file = KeyFile::default();
    let keys = Keys {
        admin: file.add("ops", Role::Admin, vec![]).unwrap(),
        acme: file.add("acme-team", Role::Brand, vec!["acme".into()]).unwrap(),
        globex: file.add("globex-team", Role::Brand, vec!["globex".into()]).unwrap(),
        matcher: file.add("pipeline", Role::Matcher, vec![]).unwrap(),
    };
    file.store(path).unwrap();
    keys
}

fn add(bytes: Vec<u8>, brand: &str, external_id: &str) -> pb::AddImageRequest {
    pb::AddImageRequest {
        content: Some(add_image_request::Content::Image(bytes)),
        brand: brand.into(),
        label: pb::Label::Authentic as i32,
        external_id: external_id.into(),
        note: String::new(),
        source: String::new(),
    }
}

fn req<T>(message: T, key: Option<&str>) -> tonic::Request<T> {
    client::with_key(message, key).unwrap()
}

async fn add_all(
    channel: &Channel,
    key: Option<&str>,
    items: Vec<pb::AddImageRequest>,
) -> Result<Vec<pb::AddImageResult>, tonic::Status> {
    let mut catalog = CatalogClient::new(channel.clone());
    let mut stream = catalog.add_images(req(tokio_stream::iter(items), key)).await?.into_inner();
    let mut out = Vec::new();
    while let Some(r) = stream.message().await? {
        out.push(r);
    }
    Ok(out)
}

async fn start(dir: &Path, auth: Auth, tls: Option<(Vec<u8>, Vec<u8>)>) -> (std::net::SocketAddr, Arc<Engine>) {
    let mut engine = Engine::open(dir, EngineOptions::default()).unwrap();
    engine.set_auth(auth);
    let engine = Arc::new(engine);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let options = ServeOptions { tls, ..ServeOptions::default() };
    let e = engine.clone();
    tokio::spawn(async move { lookalike::grpc::serve(listener, e, &options, std::future::pending()).await });
    (addr, engine)
}

fn code<T: std::fmt::Debug>(r: Result<T, tonic::Status>) -> Code {
    match r {
        Ok(_) => Code::Ok,
        Err(s) => s.code(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_roles_and_brand_isolation() {
    let dir = tempfile::tempdir().unwrap();
    let keys = make_keys(&dir.path().join("keys.json"));
    let auth = Auth::from_file(&dir.path().join("keys.json")).unwrap();
    let (addr, _engine) = start(&dir.path().join("data"), auth, None).await;
    let channel = client::connect(&format!("http://{addr}")).await.unwrap();
    let coffee = std::fs::read(fixture("coffee.jpg")).unwrap();
    let match_coffee =
        || pb::MatchRequest { query: Some(match_request::Query::Image(coffee.clone())), ..Default::default() };

    // Health stays open; everything else needs a key.
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel.clone());
    let r = health.check(tonic_health::pb::HealthCheckRequest { service: String::new() }).await.unwrap().into_inner();
    assert_eq!(r.status, tonic_health::pb::health_check_response::ServingStatus::Serving as i32);
    let mut matcher = MatcherClient::new(channel.clone());
    let status = matcher.r#match(req(match_coffee(), None)).await.unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
    assert_eq!(code(matcher.r#match(req(match_coffee(), Some("lk_not_a_key"))).await), Code::Unauthenticated);
    assert_eq!(code(add_all(&channel, None, vec![add(coffee.clone(), "acme", "x")]).await), Code::Unauthenticated);

    // Brand keys add to their own brand only, item by item.
    let acme = add_all(
        &channel,
        Some(&keys.acme),
        vec![add(coffee.clone(), "acme", "acme-coffee"), add(jpeg(&photo(1, 128, 128), 90), "globex", "sneaky")],
    )
    .await
    .unwrap();
    assert_eq!(acme[0].status, pb::AddStatus::Added as i32);
    assert_eq!(acme[1].status, pb::AddStatus::Failed as i32);
    assert_eq!(acme[1].error.as_ref().unwrap().code, Code::PermissionDenied as i32);
    let globex =
        add_all(&channel, Some(&keys.globex), vec![add(jpeg(&photo(2, 128, 128), 90), "globex", "g1")]).await.unwrap();
    assert_eq!(globex[0].status, pb::AddStatus::Added as i32);
    let (acme_id, globex_id) = (acme[0].id, globex[0].id);

    // The matcher key matches (across brands) but cannot write or read catalogs.
    let r = matcher.r#match(req(match_coffee(), Some(&keys.matcher))).await.unwrap().into_inner();
    assert_eq!(r.matches[0].id, acme_id);
    assert_eq!(
        code(add_all(&channel, Some(&keys.matcher), vec![add(coffee.clone(), "acme", "m")]).await),
        Code::PermissionDenied
    );
    let mut catalog = CatalogClient::new(channel.clone());
    let by_id = |id| pb::DeleteRequest { target: Some(pb::delete_request::Target::Id(id)) };
    let get_id = |id| pb::GetRequest { target: Some(pb::get_request::Target::Id(id)) };
    assert_eq!(code(catalog.delete(req(by_id(acme_id), Some(&keys.matcher))).await), Code::PermissionDenied);
    assert_eq!(code(catalog.stats(req(pb::StatsRequest {}, Some(&keys.matcher))).await), Code::PermissionDenied);

    // A brand key can never touch another brand's entries, by id or by external id.
    assert_eq!(code(catalog.delete(req(by_id(globex_id), Some(&keys.acme))).await), Code::PermissionDenied);
    let external = pb::DeleteRequest {
        target: Some(pb::delete_request::Target::External(pb::ExternalRef {
            brand: "globex".into(),
            external_id: "g1".into(),
        })),
    };
    assert_eq!(code(catalog.delete(req(external, Some(&keys.acme))).await), Code::PermissionDenied);
    assert_eq!(code(catalog.get(req(get_id(globex_id), Some(&keys.acme))).await), Code::PermissionDenied);
    assert_eq!(code(catalog.stats(req(pb::StatsRequest {}, Some(&keys.acme))).await), Code::PermissionDenied);
    // ...and the globex entry is untouched.
    let e = catalog.get(req(get_id(globex_id), Some(&keys.admin))).await.unwrap().into_inner().entries.remove(0);
    assert!(e.deleted_at_ms.is_none());
    // Its own: read and delete.
    assert_eq!(code(catalog.get(req(get_id(acme_id), Some(&keys.acme))).await), Code::Ok);
    assert_eq!(code(catalog.delete(req(by_id(acme_id), Some(&keys.acme))).await), Code::Ok);
    // Admin: everything.
    assert_eq!(code(catalog.stats(req(pb::StatsRequest {}, Some(&keys.admin))).await), Code::Ok);
    assert_eq!(code(catalog.delete(req(by_id(globex_id), Some(&keys.admin))).await), Code::Ok);

    // The audit log has every write and delete, with who did it; never a key.
    let audit = std::fs::read_to_string(dir.path().join("data/audit.jsonl")).unwrap();
    let lines: Vec<serde_json::Value> = audit.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let summary: Vec<(String, String)> =
        lines.iter().map(|l| (l["actor"].as_str().unwrap().into(), l["action"].as_str().unwrap().into())).collect();
    let expected = [("acme-team", "add"), ("globex-team", "add"), ("acme-team", "delete"), ("ops", "delete")];
    assert_eq!(summary, expected.map(|(a, b)| (a.to_string(), b.to_string())));
    assert_eq!(lines[0]["external_id"], "acme-coffee");
    assert_eq!(lines[3]["deleted_ids"][0], globex_id);
    assert!(lines.iter().all(|l| l["at_ms"].as_i64().unwrap() > 0));
    for key in [&keys.admin, &keys.acme, &keys.globex, &keys.matcher] {
        assert!(!audit.contains(key.as_str()));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_a_self_signed_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let (cert_pem, key_pem) = (cert.cert.pem(), cert.signing_key.serialize_pem());
    let (addr, _engine) =
        start(dir.path(), Auth::open(), Some((cert_pem.clone().into_bytes(), key_pem.into_bytes()))).await;
    let url = format!("https://localhost:{}", addr.port());
    let channel = client::connect_with(&url, Some(cert_pem.as_bytes())).await.unwrap();
    let items = vec![add(std::fs::read(fixture("coffee.jpg")).unwrap(), "acme", "c")];
    let added = add_all(&channel, None, items).await.unwrap();
    assert_eq!(added[0].status, pb::AddStatus::Added as i32);
    let mut matcher = MatcherClient::new(channel);
    let request = pb::MatchRequest {
        query: Some(match_request::Query::Image(std::fs::read(fixture("coffee.jpg")).unwrap())),
        ..Default::default()
    };
    let r = matcher.r#match(request.clone()).await.unwrap().into_inner();
    assert_eq!(r.matches[0].id, added[0].id);
    // Plain text to a TLS port gets nowhere; an https URL without the CA is refused up front.
    let plain = client::connect(&format!("http://127.0.0.1:{}", addr.port())).await;
    if let Ok(channel) = plain {
        assert!(MatcherClient::new(channel).r#match(request).await.is_err());
    }
    let err = client::connect(&url).await.unwrap_err();
    assert!(format!("{err:#}").contains("--tls-ca"), "{err:#}");
}

#[test]
fn non_loopback_without_keys_needs_insecure() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let out = Command::new(env!("CARGO_BIN_EXE_lookalike"))
        .args(["--data", data.to_str().unwrap(), "serve", "--listen", "0.0.0.0:0", "--no-http"])
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("without API keys") && stderr.contains("--insecure"), "{stderr}");

    // The key tool prints a key once and stores only its hash.
    let keys = dir.path().join("keys.json");
    let out = Command::new(env!("CARGO_BIN_EXE_lookalike"))
        .args(["keys", "add", "--file", keys.to_str().unwrap(), "--name", "acme", "--role", "brand", "--brand", "acme"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let key = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert!(key.starts_with("lk_") && key.len() == 67);
    assert!(!std::fs::read_to_string(&keys).unwrap().contains(&key));
}
