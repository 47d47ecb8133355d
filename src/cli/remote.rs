//! `--server URL`: index, query, stats and delete against a running `lookalike serve`.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use anyhow::{bail, Context, Result};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Code;

use super::ingest::{self, Plan};
use super::{read_input, report_match, Command, DeleteArgs, IndexArgs, QueryArgs, StatsArgs, EXIT_OK, EXIT_PARTIAL};
use crate::grpc::client::{self, CatalogClient, MatcherClient};
use crate::grpc::pb;
use crate::hash::{self, DecodeLimits};
use crate::index::{Label, Selector};

/// Where the server is and how to talk to it.
pub struct Remote {
    pub url: String,
    pub api_key: Option<String>,
    pub tls_ca: Option<Vec<u8>>,
}

impl Remote {
    async fn channel(&self) -> Result<tonic::transport::Channel> {
        client::connect_with(&self.url, self.tls_ca.as_deref()).await
    }

    fn request<T>(&self, message: T) -> Result<tonic::Request<T>> {
        client::with_key(message, self.api_key.as_deref())
    }
}

pub fn run(server: &Remote, command: &Command, limits: &DecodeLimits) -> Result<u8> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the runtime")?;
    runtime.block_on(async {
        match command {
            Command::Index(args) => index(server, args, limits).await,
            Command::Query(args) => query(server, args, limits).await,
            Command::Stats(args) => stats(server, args).await,
            Command::Delete(args) => delete(server, args).await,
            _ => bail!("this command works on a local data directory only: drop --server (and stop the server, which holds the directory)"),
        }
    })
}

/// A status from the server, as an error message.
fn status_error(status: tonic::Status) -> anyhow::Error {
    anyhow::anyhow!("server: {:?}: {}", status.code(), status.message())
}

async fn index(server: &Remote, args: &IndexArgs, limits: &DecodeLimits) -> Result<u8> {
    let plan = Arc::new(Plan::new(args)?);
    let mut catalog = CatalogClient::new(server.channel().await?)
        .max_decoding_message_size(usize::MAX)
        .max_encoding_message_size(usize::MAX);
    let progress = ingest::progress_bar(plan.files.len() as u64, args.quiet);
    // Files sent, by sequence number (skipped files are not sent).
    let sent: Arc<Mutex<Vec<PathBuf>>> = Arc::default();
    let (tx, rx) = mpsc::channel::<pb::AddImageRequest>(16);
    let reader = {
        let (plan, sent, progress) = (plan.clone(), sent.clone(), progress.clone());
        let (brand, label, limits, quiet) = (args.brand.clone(), Label::from(args.label), *limits, args.quiet);
        tokio::task::spawn_blocking(move || {
            let (mut skipped, mut failed) = (0u64, 0u64);
            for path in &plan.files {
                let bytes = match read_input(path, &limits) {
                    Ok(b) => b,
                    Err(e) => {
                        progress.suspend(|| eprintln!("lookalike: {}: {e:#}", path.display()));
                        failed += 1;
                        progress.inc(1);
                        continue;
                    }
                };
                if let Err(e) = hash::sniff(&bytes) {
                    if !quiet {
                        progress.suspend(|| eprintln!("skipped {}: not an image ({e})", path.display()));
                    }
                    skipped += 1;
                    progress.inc(1);
                    continue;
                }
                let row = plan.row(path);
                let request = pb::AddImageRequest {
                    content: Some(pb::add_image_request::Content::Image(bytes)),
                    brand: brand.clone(),
                    label: client::label_to_pb(row.and_then(|r| r.label).unwrap_or(label)) as i32,
                    external_id: ingest::external_id(path, row),
                    note: row.and_then(|r| r.note.clone()).unwrap_or_default(),
                    source: path.display().to_string(),
                };
                sent.lock().expect("not poisoned").push(path.clone());
                if tx.blocking_send(request).is_err() {
                    break; // the stream ended early; reported below
                }
            }
            (skipped, failed)
        })
    };
    let mut results =
        catalog.add_images(server.request(ReceiverStream::new(rx))?).await.map_err(status_error)?.into_inner();
    let (mut added, mut present, mut failed) = (0u64, 0u64, 0u64);
    let mut answered = 0usize;
    let stream_error = loop {
        match results.message().await {
            Ok(Some(r)) => {
                answered += 1;
                match pb::AddStatus::try_from(r.status) {
                    Ok(pb::AddStatus::Added) => added += 1,
                    Ok(pb::AddStatus::AlreadyPresent) => present += 1,
                    _ => {
                        failed += 1;
                        let path =
                            sent.lock().expect("not poisoned").get(r.sequence as usize).cloned().unwrap_or_default();
                        let message = r.error.map(|e| e.message).unwrap_or_else(|| "failed".into());
                        progress.suspend(|| eprintln!("lookalike: {}: {message}", path.display()));
                    }
                }
                progress.inc(1);
            }
            Ok(None) => break None,
            Err(status) => break Some(status),
        }
    };
    drop(results);
    let (skipped, read_failed) = reader.await.context("reading files")?;
    progress.finish_and_clear();
    let unanswered = sent.lock().expect("not poisoned").len().saturating_sub(answered) as u64;
    failed += read_failed + unanswered;
    outln!(
        "indexed {added} new, {present} already present, {skipped} skipped (not images), {failed} failed — brand {}, into {}",
        args.brand,
        server.url
    );
    if let Some(status) = stream_error {
        bail!(
            "the server ended the upload: {:?}: {}; {unanswered} file(s) were not acknowledged — run the same command again (stored images are recognised and skipped)",
            status.code(),
            status.message()
        );
    }
    if failed > 0 {
        eprintln!("lookalike: {failed} file(s) failed (listed above)");
        return Ok(EXIT_PARTIAL);
    }
    Ok(EXIT_OK)
}

async fn query(server: &Remote, args: &QueryArgs, limits: &DecodeLimits) -> Result<u8> {
    if args.engine != super::EngineArg::Exact {
        bail!("--engine hnsw works on a local data directory only; the server searches exactly");
    }
    let mut matcher = MatcherClient::new(server.channel().await?)
        .max_decoding_message_size(usize::MAX)
        .max_encoding_message_size(usize::MAX);
    let mut code = EXIT_OK;
    for path in &args.images {
        let request = pb::MatchRequest {
            query: Some(pb::match_request::Query::Image(read_input(path, limits)?)),
            request_id: path.display().to_string(),
            k: Some(u32::try_from(args.k).unwrap_or(u32::MAX)),
            brand: args.brand.clone().unwrap_or_default(),
            label: args.label.map(|l| client::label_to_pb(Label::from(l)) as i32),
            flag_distance: Some(args.flag),
            review_distance: Some(args.review),
            min_quality: Some(u32::from(args.min_quality)),
            nearest: args.nearest,
            flag_confidence: Some(args.flag_confidence),
            review_confidence: Some(args.review_confidence),
        };
        let result = match matcher.r#match(server.request(request)?).await {
            Ok(r) => client::match_result_from_pb(r.into_inner()),
            Err(status) if status.code() == Code::InvalidArgument => Err(anyhow::anyhow!("{}", status.message())),
            Err(status) => return Err(status_error(status)),
        };
        code = code.max(report_match(path, result, args.json)?);
    }
    Ok(code)
}

async fn stats(server: &Remote, args: &StatsArgs) -> Result<u8> {
    let mut catalog = CatalogClient::new(server.channel().await?);
    let s = catalog.stats(server.request(pb::StatsRequest {})?).await.map_err(status_error)?.into_inner();
    let label = |l: i32| client::label_from_pb(l).map_or("?", Label::as_str);
    if args.json {
        let by: Vec<_> = s
            .by_brand_label
            .iter()
            .map(|b| serde_json::json!({"brand": b.brand, "label": label(b.label), "count": b.count}))
            .collect();
        let value = serde_json::json!({
            "server": server.url, "live": s.live, "deleted": s.deleted, "records": s.records,
            "mih_records": s.mih_records, "hnsw_points": s.hnsw_points, "bytes_on_disk": s.bytes_on_disk,
            "by_brand_label": by,
        });
        outln!("{}", serde_json::to_string_pretty(&value)?);
        return Ok(EXIT_OK);
    }
    outln!("index at {}", server.url);
    outln!("  entries   {} live, {} deleted (records in files: {})", s.live, s.deleted, s.records);
    if !s.by_brand_label.is_empty() {
        outln!("  by brand and label:");
        let w = s.by_brand_label.iter().map(|b| b.brand.chars().count()).max().unwrap_or(5);
        for b in &s.by_brand_label {
            outln!("    {:<w$}  {:<10}  {}", b.brand, label(b.label), b.count);
        }
    }
    outln!("  on disk   {} bytes", s.bytes_on_disk);
    Ok(EXIT_OK)
}

async fn delete(server: &Remote, args: &DeleteArgs) -> Result<u8> {
    let target = match args.selector()? {
        Selector::Id(id) => pb::delete_request::Target::Id(id),
        Selector::External { brand, external_id } => {
            pb::delete_request::Target::External(pb::ExternalRef { brand, external_id })
        }
    };
    let mut catalog = CatalogClient::new(server.channel().await?);
    match catalog.delete(server.request(pb::DeleteRequest { target: Some(target) })?).await {
        Ok(r) => {
            let ids = r.into_inner().deleted_ids;
            let shown: Vec<String> = ids.iter().map(u64::to_string).collect();
            outln!("deleted {} entr{} (id {})", ids.len(), if ids.len() == 1 { "y" } else { "ies" }, shown.join(", "));
            Ok(EXIT_OK)
        }
        Err(status) if status.code() == Code::NotFound => {
            eprintln!("lookalike: {}; nothing deleted", status.message());
            Ok(EXIT_PARTIAL)
        }
        Err(status) => Err(status_error(status)),
    }
}
