//! Wiring: the services, health and reflection, limits, and graceful shutdown.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use tokio::net::TcpListener;
use tokio_stream::StreamExt;
use tonic::transport::Server;
use tonic_health::ServingStatus;

use super::engine::Engine;
use super::pb::{self, catalog_server::CatalogServer, matcher_server::MatcherServer};
use super::service::{Arrived, CatalogService, MatcherService};

/// Concurrent HTTP/2 streams (calls) one connection may have open: each may hold up
/// to `max_message_bytes` while it is received.
pub const MAX_STREAMS_PER_CONNECTION: u32 = 32;

/// How the server runs.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// Largest request message accepted, checked before anything is decoded.
    pub max_message_bytes: usize,
    /// After a shutdown signal, how long in-flight requests may take to finish.
    pub grace: Duration,
    /// Serve TLS with this certificate chain and private key (PEM).
    pub tls: Option<(Vec<u8>, Vec<u8>)>,
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions { max_message_bytes: 32 * 1024 * 1024, grace: Duration::from_secs(10), tls: None }
    }
}

/// Unary calls: tonic's statuses for requests too large or undecodable travel in the
/// response headers; correct them there (streams are corrected in `error.rs`).
fn correct_status(mut response: http::Response<tonic::body::Body>) -> http::Response<tonic::body::Body> {
    let headers = response.headers();
    let code = headers.get("grpc-status").and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<i32>().ok());
    let Some(code) = code.map(tonic::Code::from) else { return response };
    let message = headers
        .get("grpc-message")
        .and_then(|m| m.to_str().ok())
        .map(|m| percent_encoding::percent_decode_str(m).decode_utf8_lossy().into_owned())
        .unwrap_or_default();
    let corrected = super::error::corrected_code(code, &message);
    if corrected != code {
        response.headers_mut().insert("grpc-status", http::HeaderValue::from(corrected as i32));
    }
    response
}

/// Records when the call's headers arrived: its deadline counts from then.
fn stamp_arrival<B>(mut request: http::Request<B>) -> http::Request<B> {
    request.extensions_mut().insert(Arrived(std::time::Instant::now()));
    request
}

/// Serve on `listener` until `shutdown` resolves. Then: report NOT_SERVING on health,
/// stop accepting, let in-flight requests finish for up to `options.grace`, wait for any
/// write in progress, and return. Every acknowledged write is already on disk.
pub async fn serve(
    listener: TcpListener,
    engine: Arc<Engine>,
    options: &ServeOptions,
    shutdown: impl Future<Output = ()>,
) -> Result<()> {
    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_serving::<CatalogServer<CatalogService>>().await;
    health.set_serving::<MatcherServer<MatcherService>>().await;
    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .context("building the reflection service")?;
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()
        .context("building the reflection service")?;
    let max = options.max_message_bytes;
    let catalog = CatalogServer::new(CatalogService::new(engine.clone()))
        .max_decoding_message_size(max)
        .max_encoding_message_size(max);
    let matcher = MatcherServer::new(MatcherService::new(engine.clone()))
        .max_decoding_message_size(max)
        .max_encoding_message_size(max);

    // Small answers must not wait for Nagle's algorithm.
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener).map(|conn| {
        if let Ok(stream) = &conn {
            let _ = stream.set_nodelay(true);
        }
        conn
    });
    let stop = Arc::new(tokio::sync::Notify::new());
    // hyper's default of 200 concurrent streams per connection is lifted by tonic; each
    // stream may buffer a whole message before the work pool can refuse it, so cap it.
    let mut builder = Server::builder().max_concurrent_streams(Some(MAX_STREAMS_PER_CONNECTION));
    if let Some((cert, key)) = &options.tls {
        let identity = tonic::transport::Identity::from_pem(cert, key);
        builder = builder
            .tls_config(tonic::transport::ServerTlsConfig::new().identity(identity))
            .context("setting up TLS (check --tls-cert and --tls-key)")?;
    }
    let server = builder
        .layer(tower::util::MapRequestLayer::new(stamp_arrival))
        .layer(tower::util::MapResponseLayer::new(correct_status))
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(catalog)
        .add_service(matcher)
        .serve_with_incoming_shutdown(incoming, {
            let stop = stop.clone();
            async move { stop.notified().await }
        });
    tokio::pin!(server);
    tokio::select! {
        result = &mut server => return result.context("serving gRPC"),
        () = shutdown => {}
    }
    tracing::info!(grace = ?options.grace, "shutting down: no new connections; finishing requests in flight");
    health.set_service_status("", ServingStatus::NotServing).await;
    health.set_not_serving::<CatalogServer<CatalogService>>().await;
    health.set_not_serving::<MatcherServer<MatcherService>>().await;
    stop.notify_one();
    match tokio::time::timeout(options.grace, &mut server).await {
        Ok(result) => result.context("serving gRPC")?,
        Err(_) => tracing::warn!("grace period over: closing the streams still open"),
    }
    let e = engine.clone();
    tokio::task::spawn_blocking(move || e.quiesce()).await.context("waiting for writes to finish")?;
    tracing::info!("stopped");
    Ok(())
}
