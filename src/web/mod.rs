//! The moderator page and its JSON API, `/metrics` and `/healthz`, served by axum on the
//! same runtime as gRPC and sharing its engine.
//!
//! | route | what |
//! |---|---|
//! | `GET /` | the page (HTML, CSS and JS compiled into the binary; no CDN) |
//! | `POST /api/match?k=&brand=&label=&nearest=` | body: image bytes → verdict and matches (JSON) |
//! | `GET /api/brands` | live entries by brand and label |
//! | `GET /api/entries?brand=&label=&offset=&limit=` | a page of live entries, newest first |
//! | `GET /api/entries/{id}` | one entry (deleted ones too) |
//! | `DELETE /api/entries/{id}` | delete (tombstone) an entry |
//! | `GET /api/entries/{id}/thumbnail` | its thumbnail (JPEG) |
//! | `GET /metrics` | Prometheus text format |
//! | `GET /healthz` | `ok` |
//!
//! With API keys configured, every `/api` route needs `Authorization: Bearer <key>`:
//! matching and thumbnails for any key; browsing, reading and deleting entries for admin
//! keys, or brand keys within their brands. `/`, `/metrics` and `/healthz` stay open.

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::net::TcpListener;

use crate::grpc::auth::{Principal, Role};
use crate::grpc::{ApiError, Content, Engine, PoolError};
use crate::index::{Entry, IndexError, Label, Selector};
use crate::matcher::{Closeness, Match, MatchResult, Thresholds, MAX_K};

const INDEX_HTML: &str = include_str!("assets/index.html");
const APP_JS: &str = include_str!("assets/app.js");
const STYLE_CSS: &str = include_str!("assets/style.css");

/// Distance at or below which a match reads as "near-identical".
pub const NEAR_IDENTICAL: u32 = 10;

/// Most entries per page of `/api/entries`.
const MAX_PAGE: u64 = 500;

/// An error as the API shows it: an HTTP status and `{"error", "code"}`.
struct WebError(ApiError);

impl From<ApiError> for WebError {
    fn from(e: ApiError) -> Self {
        WebError(e)
    }
}

impl From<IndexError> for WebError {
    fn from(e: IndexError) -> Self {
        WebError(e.into())
    }
}

impl IntoResponse for WebError {
    fn into_response(self) -> Response {
        let status = self.0.to_status();
        let http = match status.code() {
            tonic::Code::InvalidArgument => StatusCode::BAD_REQUEST,
            tonic::Code::NotFound => StatusCode::NOT_FOUND,
            tonic::Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
            tonic::Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
            tonic::Code::PermissionDenied => StatusCode::FORBIDDEN,
            tonic::Code::Unauthenticated => StatusCode::UNAUTHORIZED,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        let body = json!({"error": status.message(), "code": format!("{:?}", status.code())});
        (http, Json(body)).into_response()
    }
}

fn invalid(message: impl Into<String>) -> WebError {
    WebError(ApiError::InvalidArgument(message.into()))
}

type Shared = Arc<Engine>;

/// The caller, from the `Authorization` header (same keys as gRPC).
fn who(engine: &Engine, headers: &HeaderMap) -> Result<Principal, WebError> {
    Ok(engine.principal(headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()))?)
}

/// Run blocking engine work off the async workers, and count the request.
async fn blocking<T: Send + 'static>(
    engine: &Shared,
    endpoint: &str,
    f: impl FnOnce(&Engine) -> Result<T, ApiError> + Send + 'static,
) -> Result<T, WebError> {
    let started = Instant::now();
    let outcome = crate::grpc::blocking(engine, f).await;
    crate::grpc::record(engine, endpoint, started, &outcome);
    Ok(outcome?)
}

fn parse_label(value: Option<&str>) -> Result<Option<Label>, WebError> {
    match value.filter(|v| !v.is_empty()) {
        None => Ok(None),
        Some(v) => v.parse::<Label>().map(Some).map_err(|e| invalid(format!("label: {e}"))),
    }
}

/// How a match reads to a moderator: from its closeness (set by its confidence for an
/// image, by its distance for a hash), and why it went to review.
pub fn reading(m: &Match, t: &Thresholds) -> &'static str {
    let differed = m.parts.as_ref().is_some_and(|p| p.differed.is_some());
    match m.closeness {
        Closeness::Flag if m.distance <= NEAR_IDENTICAL.min(t.flag) => "near-identical",
        Closeness::Flag => "likely edited copy",
        Closeness::Review if differed => "a part differs (another logo?) — review",
        Closeness::Review if m.replaced.is_some() => "same layout, part replaced — review",
        Closeness::Review if m.parts.as_ref().is_some_and(|p| !p.confirmed()) => {
            "copy not confirmed part by part — review"
        }
        Closeness::Review if m.parts.as_ref().is_some_and(|p| !p.shows_all_detail()) => {
            "shows only part of the stored photo (what it cut away may be the brand's mark) — review"
        }
        Closeness::Review if m.parts.is_some() => "likely copy, not sure enough to flag — review",
        Closeness::Review => "weak — review",
        Closeness::Beyond => "not similar",
    }
}

fn thumbnail_url(id: u64) -> String {
    format!("/api/entries/{id}/thumbnail")
}

fn entry_json(e: &Entry) -> Value {
    let mut v = serde_json::to_value(e).unwrap_or(Value::Null);
    if let Value::Object(map) = &mut v {
        map.insert("thumbnail".into(), json!(thumbnail_url(e.id)));
    }
    v
}

fn match_json(m: &Match, t: &Thresholds) -> Value {
    json!({
        "id": m.entry.id,
        "brand": m.entry.brand,
        "label": m.entry.label.as_str(),
        "external_id": m.entry.external_id,
        "note": m.entry.note,
        "source": m.entry.source,
        "distance": m.distance,
        "reading": reading(m, t),
        "closeness": match m.closeness { Closeness::Flag => "flag", Closeness::Review => "review", Closeness::Beyond => "beyond" },
        "orientation": m.orientation.name(),
        "view": m.describe(),
        "verified": m.verified,
        "replaced": m.replaced,
        "parts": m.parts,
        "confidence": m.confidence,
        "thumbnail": thumbnail_url(m.entry.id),
    })
}

fn result_json(r: &MatchResult, t: &Thresholds) -> Value {
    json!({
        "verdict": r.verdict.as_str(),
        "pdq": r.pdq.to_string(),
        "quality": r.quality,
        "phash": r.phash.map(|p| format!("{p:016x}")),
        "thresholds": {"flag": t.flag, "review": t.review, "min_quality": t.min_quality, "near_identical": NEAR_IDENTICAL},
        "matches": r.matches.iter().map(|m| match_json(m, t)).collect::<Vec<_>>(),
        "hash_ms": r.hash_time.as_secs_f64() * 1e3,
        "search_ms": r.search_time.as_secs_f64() * 1e3,
    })
}

#[derive(Deserialize, Default)]
struct MatchParams {
    k: Option<usize>,
    brand: Option<String>,
    label: Option<String>,
    #[serde(default)]
    nearest: bool,
}

async fn match_image(
    State(engine): State<Shared>,
    Query(params): Query<MatchParams>,
    headers: HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<Response, WebError> {
    let started = Instant::now();
    who(&engine, &headers)?;
    let body = match body {
        Ok(body) => body,
        // Over the body limit (or a broken upload): say so as JSON, like every other error.
        Err(rejection) => {
            let status = rejection.status();
            let code = if status == StatusCode::PAYLOAD_TOO_LARGE { "ResourceExhausted" } else { "InvalidArgument" };
            let message = format!("upload refused: {}", rejection.body_text());
            return Ok((status, Json(json!({"error": message, "code": code}))).into_response());
        }
    };
    let k = params.k.unwrap_or(10);
    if k == 0 || k > MAX_K {
        return Err(invalid(format!("k must be 1-{MAX_K}, got {k}")));
    }
    let query = crate::matcher::Query {
        k,
        thresholds: Thresholds::default(),
        brand: params.brand.filter(|b| !b.is_empty()),
        label: parse_label(params.label.as_deref())?,
        nearest: params.nearest.then_some(crate::index::NearestEngine::Exact),
    };
    let t = query.thresholds;
    let content = Content::Image(body.to_vec());
    let e = engine.clone();
    let outcome = engine.pool().run(None, move || e.match_content(&content, &query, None)).await;
    let outcome = outcome.map_err(ApiError::from).and_then(|r| r);
    crate::grpc::record(&engine, "http:match", started, &outcome);
    Ok(Json(result_json(&outcome?, &t)).into_response())
}

async fn brands(State(engine): State<Shared>, headers: HeaderMap) -> Result<Json<Value>, WebError> {
    let who = who(&engine, &headers)?;
    who.may_write()?;
    let stats = blocking(&engine, "http:brands", |e| Ok(e.stats()?)).await?;
    let mut brands: Vec<Value> = Vec::new();
    // A brand key sees its own brands only.
    let visible = stats.by_brand_label.iter().filter(|(brand, _, _)| who.may_manage(brand).is_ok());
    for (brand, label, n) in visible {
        if brands.last().is_none_or(|b| b["brand"] != json!(brand)) {
            brands.push(json!({"brand": brand, "authentic": 0, "known_fake": 0}));
        }
        let last = brands.last_mut().expect("pushed above");
        last[label.as_str()] = json!(n);
    }
    let (live, deleted) =
        if who.role == Role::Admin { (json!(stats.live), json!(stats.deleted)) } else { (Value::Null, Value::Null) };
    Ok(Json(json!({"brands": brands, "live": live, "deleted": deleted})))
}

#[derive(Deserialize)]
struct ListParams {
    brand: Option<String>,
    label: Option<String>,
    offset: Option<u64>,
    limit: Option<u64>,
}

async fn entries(
    State(engine): State<Shared>,
    Query(p): Query<ListParams>,
    headers: HeaderMap,
) -> Result<Json<Value>, WebError> {
    let who = who(&engine, &headers)?;
    match p.brand.as_deref().filter(|b| !b.is_empty()) {
        Some(brand) => who.may_manage(brand)?,
        None => who.must_be_admin("list every brand's entries")?,
    }
    let label = parse_label(p.label.as_deref())?;
    let (offset, limit) = (p.offset.unwrap_or(0), p.limit.unwrap_or(50));
    if limit == 0 || limit > MAX_PAGE {
        return Err(invalid(format!("limit must be 1-{MAX_PAGE}, got {limit}")));
    }
    let brand = p.brand.filter(|b| !b.is_empty());
    let (total, list) =
        blocking(&engine, "http:entries", move |e| Ok(e.list(brand.as_deref(), label, offset, limit)?)).await?;
    Ok(Json(json!({"total": total, "offset": offset, "entries": list.iter().map(entry_json).collect::<Vec<_>>()})))
}

async fn entry(State(engine): State<Shared>, Path(id): Path<u64>, headers: HeaderMap) -> Result<Json<Value>, WebError> {
    let who = who(&engine, &headers)?;
    who.may_write()?;
    let found = blocking(&engine, "http:entry", move |e| e.find_for(&who, &Selector::Id(id))).await?;
    match found.first() {
        Some(e) => Ok(Json(entry_json(e))),
        None => Err(WebError(ApiError::NotFound(format!("no entry with id {id}")))),
    }
}

async fn delete_entry(
    State(engine): State<Shared>,
    Path(id): Path<u64>,
    headers: HeaderMap,
) -> Result<Json<Value>, WebError> {
    let who = who(&engine, &headers)?;
    let ids = blocking(&engine, "http:delete", move |e| e.delete_for(&who, &Selector::Id(id))).await?;
    if ids.is_empty() {
        return Err(WebError(ApiError::NotFound(format!("no live entry with id {id}"))));
    }
    tracing::info!(endpoint = "DELETE /api/entries", ?ids, "deleted");
    Ok(Json(json!({"deleted": ids})))
}

async fn thumbnail(
    State(engine): State<Shared>,
    Path(id): Path<u64>,
    headers: HeaderMap,
) -> Result<Response, WebError> {
    // Any key may see thumbnails: moderators compare listings with them.
    who(&engine, &headers)?;
    let jpeg = blocking(&engine, "http:thumbnail", move |e| Ok(e.thumbnail(id)?)).await?;
    match jpeg {
        Some(bytes) => Ok((
            [
                (header::CONTENT_TYPE, HeaderValue::from_static("image/jpeg")),
                (header::CACHE_CONTROL, HeaderValue::from_static("private, max-age=86400, immutable")),
            ],
            bytes,
        )
            .into_response()),
        None => Err(WebError(ApiError::NotFound(format!("no thumbnail for entry {id}")))),
    }
}

async fn metrics(State(engine): State<Shared>) -> Result<Response, WebError> {
    let e = engine.clone();
    let text = tokio::task::spawn_blocking(move || e.render_metrics())
        .await
        .map_err(|_| WebError(ApiError::Pool(PoolError::Panicked)))??;
    Ok(([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], text).into_response())
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    ([(header::CONTENT_TYPE, content_type), (header::CACHE_CONTROL, "no-cache")], body).into_response()
}

/// The routes, sharing `engine`. Uploads over `max_body_bytes` get 413.
pub fn router(engine: Arc<Engine>, max_body_bytes: usize) -> Router {
    Router::new()
        .route("/", get(|| async { Html(INDEX_HTML) }))
        .route("/assets/app.js", get(|| async { asset("text/javascript; charset=utf-8", APP_JS) }))
        .route("/assets/style.css", get(|| async { asset("text/css; charset=utf-8", STYLE_CSS) }))
        .route("/api/match", axum::routing::post(match_image))
        .route("/api/brands", get(brands))
        .route("/api/entries", get(entries))
        .route("/api/entries/{id}", get(entry).delete(delete_entry))
        .route("/api/entries/{id}/thumbnail", get(thumbnail))
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .with_state(engine)
}

/// Serve the page on `listener` until `shutdown` resolves (then finish open requests).
pub async fn serve(
    listener: TcpListener,
    engine: Arc<Engine>,
    max_body_bytes: usize,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    axum::serve(listener, router(engine, max_body_bytes)).with_graceful_shutdown(shutdown).await.context("serving HTTP")
}
