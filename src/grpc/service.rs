//! The `Catalog` and `Matcher` services.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant as StdInstant};

use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use super::auth::Principal;
use super::convert::{self, AddItem, MatchItem};
use super::engine::Engine;
use super::error::ApiError;
use super::pb;
use super::pool::PoolError;
use crate::index::{AddOutcome, NewEntry};
use crate::matcher::MatchResult;

/// The server gives up a little before the client's deadline (a tenth of the timeout,
/// within these bounds), so that its DEADLINE_EXCEEDED reaches the client before the
/// client's own timer fires.
const DEADLINE_MARGIN: (Duration, Duration) = (Duration::from_millis(5), Duration::from_millis(250));

/// When a call's headers reached the server, set by a layer in front of the services.
/// Deadlines count from here, not from when the whole (possibly 32 MiB) body was read.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Arrived(pub StdInstant);

/// Most items written to the index in one transaction by `AddImages`.
const MAX_WRITE_BATCH: usize = 256;

/// The deadline a client set with `grpc-timeout`, if any.
fn deadline_of<T>(request: &Request<T>) -> Option<Instant> {
    let value = request.metadata().get("grpc-timeout")?.to_str().ok()?;
    let timeout = parse_grpc_timeout(value)?;
    let margin = (timeout / 10).clamp(DEADLINE_MARGIN.0, DEADLINE_MARGIN.1);
    let start = request.extensions().get::<Arrived>().map_or_else(Instant::now, |a| Instant::from_std(a.0));
    Some(start + timeout.saturating_sub(margin))
}

/// `grpc-timeout`: up to 8 digits and a unit (H, M, S, m, u, n).
fn parse_grpc_timeout(value: &str) -> Option<Duration> {
    if !(2..=9).contains(&value.len()) || !value.is_ascii() {
        return None;
    }
    let (digits, unit) = value.split_at(value.len() - 1);
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n * 3600),
        "M" => Duration::from_secs(n * 60),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

async fn within<T>(deadline: Option<Instant>, work: impl Future<Output = Result<T, ApiError>>) -> Result<T, ApiError> {
    match deadline {
        Some(d) => tokio::time::timeout_at(d, work).await.unwrap_or(Err(PoolError::DeadlineExceeded.into())),
        None => work.await,
    }
}

/// The caller of a request (UNAUTHENTICATED if keys are required and it has none).
fn principal<T>(engine: &Engine, request: &Request<T>) -> Result<Principal, ApiError> {
    engine.principal(request.metadata().get("authorization").and_then(|v| v.to_str().ok()))
}

/// Run blocking engine work that is not image work (catalog reads and writes).
pub(crate) async fn blocking<T: Send + 'static>(
    engine: &Arc<Engine>,
    f: impl FnOnce(&Engine) -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    let engine = engine.clone();
    tokio::task::spawn_blocking(move || f(&engine)).await.map_err(|_| ApiError::Pool(PoolError::Panicked))?
}

/// Count a finished request in the metrics.
pub(crate) fn record<T>(engine: &Engine, rpc: &str, started: StdInstant, outcome: &Result<T, ApiError>) {
    let code = match outcome {
        Ok(_) => tonic::Code::Ok,
        Err(e) => e.code(),
    };
    engine.metrics().request(rpc, &format!("{code:?}"), started.elapsed().as_secs_f64());
}

fn log_outcome<T>(engine: &Engine, rpc: &str, what: &str, started: StdInstant, outcome: &Result<T, ApiError>) {
    record(engine, rpc, started, outcome);
    let micros = started.elapsed().as_micros() as u64;
    match outcome {
        Ok(_) => tracing::debug!(rpc, what, micros, "ok"),
        Err(e) => tracing::warn!(rpc, what, micros, code = ?e.code(), error = %e, "failed"),
    }
}

fn log_denied(engine: &Engine, rpc: &str, e: &ApiError) {
    engine.metrics().request(rpc, &format!("{:?}", e.code()), 0.0);
    tracing::warn!(rpc, code = ?e.code(), error = %e, "refused");
}

pub struct CatalogService {
    engine: Arc<Engine>,
}

impl CatalogService {
    pub fn new(engine: Arc<Engine>) -> Self {
        CatalogService { engine }
    }
}

/// One `AddImages` item on its way: checked and being hashed.
struct Pending {
    sequence: u64,
    external_id: String,
    job: JoinHandle<Result<NewEntry, ApiError>>,
}

/// What the reader hands the writer, in stream order.
enum Step {
    Item(Pending),
    /// The inbound stream failed (or the deadline passed): answer what came before, then this.
    End(Status),
}

impl Pending {
    async fn resolve(self) -> (u64, String, Result<NewEntry, ApiError>) {
        let result = self.job.await.unwrap_or_else(|_| Err(PoolError::Panicked.into()));
        (self.sequence, self.external_id, result)
    }
}

type ResultSender = mpsc::Sender<Result<pb::AddImageResult, Status>>;

/// Reads `AddImages` requests, checks them and starts hashing (up to the pool's width at
/// once per stream), and passes them on in order.
async fn read_add_stream(
    engine: Arc<Engine>,
    who: Arc<Principal>,
    mut inbound: Streaming<pb::AddImageRequest>,
    deadline: Option<Instant>,
    steps: mpsc::Sender<Step>,
) {
    // At most the pool's width of this stream's items are hashed at once, so a stream alone
    // never overflows the pool's queue; beyond that the stream is not read.
    let window = Arc::new(Semaphore::new(engine.pool().max_in_flight()));
    let mut sequence = 0u64;
    loop {
        let Ok(slot) = window.clone().acquire_owned().await else { break };
        let next = within(deadline, async { inbound.message().await.map_err(ApiError::Transport) }).await;
        let req = match next {
            Ok(Some(req)) => req,
            Ok(None) => break,
            Err(e) => {
                let _ = steps.send(Step::End(e.to_status())).await;
                break;
            }
        };
        let external_id = req.external_id.clone();
        let engine = engine.clone();
        let who = who.clone();
        let job = tokio::spawn(async move {
            let AddItem { content, entry } = convert::add_item(req)?;
            who.may_manage(&entry.brand)?;
            let e = engine.clone();
            let hashed = engine.pool().run(deadline, move || e.hash(&content)).await;
            drop(slot);
            Ok(convert::with_hashes(entry, &hashed??))
        });
        if steps.send(Step::Item(Pending { sequence, external_id, job })).await.is_err() {
            break; // the writer stopped: the client has gone
        }
        sequence += 1;
    }
}

#[derive(Default)]
struct AddTally {
    added: u64,
    present: u64,
    failed: u64,
}

/// Takes hashed items in order, writes them in batches (each batch durable before any of
/// its results is sent), and answers.
async fn write_add_stream(
    engine: Arc<Engine>,
    who: Arc<Principal>,
    mut steps: mpsc::Receiver<Step>,
    out: ResultSender,
) -> AddTally {
    let mut tally = AddTally::default();
    let mut carry: Option<Step> = None;
    loop {
        let step = match carry.take() {
            Some(s) => s,
            None => match steps.recv().await {
                Some(s) => s,
                None => break,
            },
        };
        let first = match step {
            Step::Item(p) => p,
            Step::End(status) => {
                let _ = out.send(Err(status)).await;
                break;
            }
        };
        // Batch the first item with those already hashed behind it.
        let mut batch = vec![first.resolve().await];
        while batch.len() < MAX_WRITE_BATCH {
            match steps.try_recv() {
                Ok(Step::Item(p)) if p.job.is_finished() => batch.push(p.resolve().await),
                Ok(other) => {
                    carry = Some(other);
                    break;
                }
                Err(_) => break,
            }
        }
        let entries: Vec<NewEntry> = batch.iter().filter_map(|(_, _, r)| r.as_ref().ok().cloned()).collect();
        let written: Result<Vec<AddOutcome>, ApiError> = if entries.is_empty() {
            Ok(Vec::new())
        } else {
            {
                let actor = who.name.clone();
                blocking(&engine, move |e| Ok(e.add(&entries, &actor)?)).await
            }
        };
        let mut outcomes = match &written {
            Ok(o) => o.iter().copied(),
            Err(_) => [].iter().copied(),
        };
        for (sequence, external_id, item) in batch {
            let result = match (&item, &written) {
                (Ok(entry), Ok(_)) => match outcomes.next() {
                    Some(outcome) => {
                        match outcome {
                            AddOutcome::Added(_) => tally.added += 1,
                            AddOutcome::AlreadyPresent(_) => tally.present += 1,
                        }
                        convert::add_result(sequence, entry, outcome)
                    }
                    None => {
                        tally.failed += 1;
                        let e = ApiError::Pool(PoolError::Panicked);
                        convert::add_failure(sequence, external_id, &e)
                    }
                },
                (Ok(_), Err(e)) | (Err(e), _) => {
                    tally.failed += 1;
                    tracing::warn!(rpc = "AddImages", sequence, external_id, code = ?e.code(), error = %e, "item failed");
                    convert::add_failure(sequence, external_id, e)
                }
            };
            if out.send(Ok(result)).await.is_err() {
                return tally; // the client has gone; what was written stays written
            }
        }
    }
    tally
}

#[tonic::async_trait]
impl pb::catalog_server::Catalog for CatalogService {
    type AddImagesStream = ReceiverStream<Result<pb::AddImageResult, Status>>;

    async fn add_images(
        &self,
        request: Request<Streaming<pb::AddImageRequest>>,
    ) -> Result<Response<Self::AddImagesStream>, Status> {
        let deadline = deadline_of(&request);
        let who = principal(&self.engine, &request).and_then(|w| w.may_write().map(|()| w));
        let who = Arc::new(who.inspect_err(|e| log_denied(&self.engine, "AddImages", e))?);
        let inbound = request.into_inner();
        let window = self.engine.pool().max_in_flight();
        let (steps_tx, steps_rx) = mpsc::channel(window);
        let (out_tx, out_rx) = mpsc::channel(window * 2);
        tokio::spawn(read_add_stream(self.engine.clone(), who.clone(), inbound, deadline, steps_tx));
        let engine = self.engine.clone();
        tokio::spawn(async move {
            let started = StdInstant::now();
            let t = write_add_stream(engine.clone(), who, steps_rx, out_tx).await;
            let outcome: Result<(), ApiError> = Ok(());
            record(&engine, "AddImages", started, &outcome);
            tracing::debug!(
                rpc = "AddImages",
                added = t.added,
                already_present = t.present,
                failed = t.failed,
                micros = started.elapsed().as_micros() as u64,
                "stream ended"
            );
        });
        Ok(Response::new(ReceiverStream::new(out_rx)))
    }

    async fn delete(&self, request: Request<pb::DeleteRequest>) -> Result<Response<pb::DeleteResponse>, Status> {
        let started = StdInstant::now();
        let deadline = deadline_of(&request);
        let outcome = async {
            let who = principal(&self.engine, &request)?;
            who.may_write()?;
            let selector = convert::delete_selector(request.into_inner())?;
            let s = selector.clone();
            let ids = within(deadline, blocking(&self.engine, move |e| e.delete_for(&who, &s))).await?;
            if ids.is_empty() {
                return Err(ApiError::NotFound(convert::describe(&selector)));
            }
            tracing::info!(rpc = "Delete", ?selector, ?ids, "deleted");
            Ok(ids)
        }
        .await;
        log_outcome(&self.engine, "Delete", "", started, &outcome);
        Ok(Response::new(pb::DeleteResponse { deleted_ids: outcome? }))
    }

    async fn get(&self, request: Request<pb::GetRequest>) -> Result<Response<pb::GetResponse>, Status> {
        let started = StdInstant::now();
        let deadline = deadline_of(&request);
        let outcome = async {
            let who = principal(&self.engine, &request)?;
            who.may_write()?;
            let selector = convert::get_selector(request.into_inner())?;
            let s = selector.clone();
            let entries = within(deadline, blocking(&self.engine, move |e| e.find_for(&who, &s))).await?;
            if entries.is_empty() {
                return Err(ApiError::NotFound(convert::describe(&selector)));
            }
            Ok(entries)
        }
        .await;
        log_outcome(&self.engine, "Get", "", started, &outcome);
        Ok(Response::new(pb::GetResponse { entries: outcome?.into_iter().map(convert::entry_to_pb).collect() }))
    }

    async fn stats(&self, request: Request<pb::StatsRequest>) -> Result<Response<pb::StatsResponse>, Status> {
        let started = StdInstant::now();
        let deadline = deadline_of(&request);
        let who = principal(&self.engine, &request).and_then(|w| w.must_be_admin("read whole-index statistics"));
        let outcome = match who {
            Ok(()) => within(deadline, blocking(&self.engine, |e| Ok(e.stats()?))).await,
            Err(e) => Err(e),
        };
        log_outcome(&self.engine, "Stats", "", started, &outcome);
        Ok(Response::new(convert::stats_to_pb(outcome?)))
    }
}

pub struct MatcherService {
    engine: Arc<Engine>,
}

impl MatcherService {
    pub fn new(engine: Arc<Engine>) -> Self {
        MatcherService { engine }
    }
}

/// Match one checked item on the pool.
async fn run_match(engine: &Arc<Engine>, item: MatchItem, deadline: Option<Instant>) -> Result<MatchResult, ApiError> {
    let e = engine.clone();
    let MatchItem { content, query, .. } = item;
    let until = deadline.map(Instant::into_std);
    within(deadline, async { engine.pool().run(deadline, move || e.match_content(&content, &query, until)).await? })
        .await
}

/// Check and match one request; the request id is kept for the answer either way.
async fn answer(
    engine: &Arc<Engine>,
    request: pb::MatchRequest,
    deadline: Option<Instant>,
) -> (String, Result<MatchResult, ApiError>) {
    match convert::match_item(request) {
        Ok(item) => {
            let id = item.request_id.clone();
            (id, run_match(engine, item, deadline).await)
        }
        Err((id, e)) => (id, Err(e)),
    }
}

fn log_match(
    engine: &Engine,
    rpc: &str,
    request_id: &str,
    started: StdInstant,
    outcome: &Result<MatchResult, ApiError>,
) {
    record(engine, rpc, started, outcome);
    let micros = started.elapsed().as_micros() as u64;
    match outcome {
        Ok(r) => {
            tracing::debug!(rpc, request_id, verdict = r.verdict.as_str(), matches = r.matches.len(), micros, "ok")
        }
        Err(e) => tracing::warn!(rpc, request_id, micros, code = ?e.code(), error = %e, "failed"),
    }
}

#[tonic::async_trait]
impl pb::matcher_server::Matcher for MatcherService {
    type MatchStreamStream = ReceiverStream<Result<pb::MatchResponse, Status>>;

    async fn r#match(&self, request: Request<pb::MatchRequest>) -> Result<Response<pb::MatchResponse>, Status> {
        let started = StdInstant::now();
        let deadline = deadline_of(&request);
        let (request_id, outcome) = match principal(&self.engine, &request) {
            Ok(_) => answer(&self.engine, request.into_inner(), deadline).await,
            Err(e) => (request.into_inner().request_id, Err(e)),
        };
        log_match(&self.engine, "Match", &request_id, started, &outcome);
        Ok(Response::new(convert::match_response(request_id, outcome?, started.elapsed())))
    }

    async fn match_stream(
        &self,
        request: Request<Streaming<pb::MatchRequest>>,
    ) -> Result<Response<Self::MatchStreamStream>, Status> {
        let deadline = deadline_of(&request);
        principal(&self.engine, &request).inspect_err(|e| log_denied(&self.engine, "MatchStream", e))?;
        let mut inbound = request.into_inner();
        let engine = self.engine.clone();
        // Per stream, at most this many items are in progress: the pool's width, and as many
        // again waiting for a slot (within the pool's queue), so that the next item is ready
        // when a slot frees. Beyond it the stream is not read, and HTTP/2 flow control holds
        // the client back.
        let pool = engine.pool();
        let width = pool.max_in_flight() + pool.max_in_flight().min(pool.max_queued());
        let window = Arc::new(Semaphore::new(width));
        let (tx, rx) = mpsc::channel(width * 2);
        tokio::spawn(async move {
            loop {
                let Ok(slot) = window.clone().acquire_owned().await else { break };
                let next = within(deadline, async { inbound.message().await.map_err(ApiError::Transport) }).await;
                let req = match next {
                    Ok(Some(req)) => req,
                    Ok(None) => break,
                    Err(e) => {
                        let _ = tx.send(Err(e.to_status())).await;
                        break;
                    }
                };
                let (engine, tx) = (engine.clone(), tx.clone());
                tokio::spawn(async move {
                    let started = StdInstant::now();
                    let (request_id, outcome) = answer(&engine, req, deadline).await;
                    log_match(&engine, "MatchStream", &request_id, started, &outcome);
                    let response = match outcome {
                        Ok(r) => convert::match_response(request_id, r, started.elapsed()),
                        Err(e) => convert::match_failure(request_id, &e),
                    };
                    let _ = tx.send(Ok(response)).await;
                    drop(slot); // only now: a client that does not read its answers is not read either
                });
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeout_header() {
        assert_eq!(parse_grpc_timeout("100m"), Some(Duration::from_millis(100)));
        assert_eq!(parse_grpc_timeout("2S"), Some(Duration::from_secs(2)));
        assert_eq!(parse_grpc_timeout("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_grpc_timeout("99999999n"), Some(Duration::from_nanos(99_999_999)));
        for bad in ["", "m", "100", "123456789S", "10x", "-1S", "1.5S"] {
            assert_eq!(parse_grpc_timeout(bad), None, "{bad:?}");
        }
    }
}
