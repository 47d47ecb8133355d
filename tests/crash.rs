//! Crash safety with the real binary.
//!
//! 1. `acknowledged_adds_survive_random_sigkills`: several clients stream `AddImages` into a
//!    `lookalike serve` child process that is SIGKILLed at seeded random moments, round after
//!    round, and restarted on the same data directory. Every acknowledged entry must be there
//!    exactly once after each restart; unacknowledged items may or may not be, but never
//!    twice, and re-sending them tells which (ALREADY_PRESENT with the stored id, or ADDED).
//! 2. Torn writes: with the server stopped, one file is truncated or has a byte flipped; the
//!    server must then refuse to start with an error naming the file and `lookalike repair`,
//!    or start and answer correctly. After `lookalike repair` every entry is found again.
//!    Record files and the manifest (`torn_record_and_manifest_files_…`), the multi-index
//!    tables (`torn_multi_index_tables_…`), a manifest naming a file that does not exist
//!    (`manifest_naming_a_missing_file_…`), and a catalog that lost its last transaction
//!    (`catalog_losing_its_last_transaction_…`: the records are then ahead of it).
//!
//! The long version (more rounds, clients, bigger images) is `tools/soak.sh`, which runs the
//! first test with these variables: `LOOKALIKE_SOAK_ROUNDS` (20), `LOOKALIKE_SOAK_CLIENTS`
//! (3), `LOOKALIKE_SOAK_SIDE` (image side in pixels, 64), `LOOKALIKE_SOAK_SEED` (1),
//! `LOOKALIKE_SOAK_MAX_DELAY_MS` (longest a round streams before its kill, 1500).

mod common;

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use common::{jpeg, photo};
use lookalike::grpc::client::{connect, CatalogClient, MatcherClient};
use lookalike::grpc::pb::{self, add_image_request, get_request, match_request};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use tonic::transport::Channel;
use tonic::Code;

const BIN: &str = env!("CARGO_BIN_EXE_lookalike");

/// Longest a (debug build) server may take to open its index and listen.
const START_LIMIT: Duration = Duration::from_secs(30);

fn env_u64(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(v) => v.trim().parse().unwrap_or_else(|_| panic!("{name}={v:?} is not a number")),
        Err(_) => default,
    }
}

/// The binary with a clean environment for the variables it reads.
fn command() -> Command {
    let mut cmd = Command::new(BIN);
    for var in ["RUST_LOG", "LOOKALIKE_DATA", "LOOKALIKE_SERVER", "LOOKALIKE_API_KEY"] {
        cmd.env_remove(var);
    }
    cmd
}

fn spawn_server(data: &Path, extra: &[&str]) -> Child {
    command()
        .args(["--data", data.to_str().unwrap(), "serve", "--listen", "127.0.0.1:0", "--no-http", "--grace", "5"])
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// `lookalike serve` as a child process, with its log collected.
struct Server {
    child: Child,
    url: String,
    log: Arc<Mutex<Vec<String>>>,
}

/// How a start ended: serving, or the process exited first (with its whole log).
enum Start {
    Serving(Server),
    Exited(ExitStatus, Vec<String>),
}

impl Start {
    fn serving(self, what: &str) -> Server {
        match self {
            Start::Serving(s) => s,
            Start::Exited(status, log) => {
                panic!("{what}: the server exited with {status} instead:\n{}", log.join("\n"))
            }
        }
    }
}

impl Server {
    /// Start on `data` and wait (at most [`START_LIMIT`]) for it to listen or exit.
    fn start(data: &Path) -> Start {
        Server::start_with(data, &[])
    }

    /// [`Server::start`] with more `serve` options.
    fn start_with(data: &Path, extra: &[&str]) -> Start {
        let mut child = spawn_server(data, extra);
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel();
        {
            let log = log.clone();
            // Reads the whole log (the server never blocks on a full pipe) until it exits.
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines() {
                    let Ok(line) = line else { break };
                    if let Some(rest) = line.split("serving gRPC on ").nth(1) {
                        let _ = tx.send(format!("http://{}", rest.split_whitespace().next().unwrap()));
                    }
                    log.lock().unwrap().push(line);
                }
            });
        }
        match rx.recv_timeout(START_LIMIT) {
            Ok(url) => Start::Serving(Server { child, url, log }),
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                let status = child.wait().unwrap();
                let log = log.lock().unwrap().clone();
                Start::Exited(status, log)
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("the server did not listen within {START_LIMIT:?}:\n{}", log.lock().unwrap().join("\n"));
            }
        }
    }

    fn log(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }

    async fn channel(&self) -> Channel {
        connect(&self.url).await.unwrap()
    }

    fn kill(&mut self) {
        self.child.kill().unwrap(); // SIGKILL
        self.child.wait().unwrap();
    }

    /// SIGTERM: the server must exit 0 within its grace period.
    fn stop(mut self) {
        let pid = self.child.id().to_string();
        assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(20) {
            if let Some(status) = self.child.try_wait().unwrap() {
                assert!(status.success(), "exit after SIGTERM: {status}\n{}", self.log().join("\n"));
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        self.kill();
        panic!("the server did not exit within 20 s of SIGTERM");
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // A failed assertion must not leave a server running.
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

async fn get(
    catalog: &mut CatalogClient<Channel>,
    target: get_request::Target,
) -> Result<Vec<pb::Entry>, tonic::Status> {
    catalog.get(pb::GetRequest { target: Some(target) }).await.map(|r| r.into_inner().entries)
}

fn external(brand: &str, external_id: &str) -> get_request::Target {
    get_request::Target::External(pb::ExternalRef { brand: brand.into(), external_id: external_id.into() })
}

async fn stats(channel: &Channel) -> pb::StatsResponse {
    CatalogClient::new(channel.clone()).stats(pb::StatsRequest {}).await.unwrap().into_inner()
}

/// Matches at distance 0 of a query: (id, external id) of each.
async fn exact_matches(matcher: &mut MatcherClient<Channel>, query: match_request::Query) -> Vec<(u64, String)> {
    let request = pb::MatchRequest { query: Some(query), k: Some(50), ..Default::default() };
    let r = matcher.r#match(request).await.unwrap().into_inner();
    r.matches.iter().filter(|m| m.distance == 0).map(|m| (m.id, m.external_id.clone())).collect()
}

/// What the server should say about one stored entry.
#[derive(Debug, Clone)]
struct Expected {
    id: u64,
    brand: String,
    label: pb::Label,
    external_id: String,
}

/// Get by id and by brand + external id both give exactly this live entry.
async fn check_entry(catalog: &mut CatalogClient<Channel>, want: &Expected) {
    let by_id = get(catalog, get_request::Target::Id(want.id))
        .await
        .unwrap_or_else(|s| panic!("acknowledged entry {want:?} is missing: {s:?}"));
    assert_eq!(by_id.len(), 1, "{by_id:?}");
    let got = &by_id[0];
    assert_eq!(
        (got.id, got.brand.as_str(), got.label, got.external_id.as_str(), got.deleted_at_ms),
        (want.id, want.brand.as_str(), want.label as i32, want.external_id.as_str(), None),
        "entry {} read back wrong",
        want.id
    );
    let by_external = get(catalog, external(&want.brand, &want.external_id))
        .await
        .unwrap_or_else(|s| panic!("{want:?} not found by external id: {s:?}"));
    let ids: Vec<_> = by_external.iter().map(|e| (e.id, e.deleted_at_ms)).collect();
    assert_eq!(ids, vec![(want.id, None)], "{want:?}: by brand + external id");
}

/// Run `f` over `items` on `tasks` concurrent tasks, each with its own clone of `channel`.
async fn for_all<T, F, Fut>(channel: &Channel, items: Vec<T>, tasks: usize, f: F)
where
    T: Send + 'static,
    F: Fn(Channel, T) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let queue = Arc::new(Mutex::new(items));
    let f = Arc::new(f);
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..tasks {
        let (queue, f, channel) = (queue.clone(), f.clone(), channel.clone());
        set.spawn(async move {
            loop {
                let item = queue.lock().unwrap().pop();
                match item {
                    Some(item) => f(channel.clone(), item).await,
                    None => break,
                }
            }
        });
    }
    while let Some(r) = set.join_next().await {
        if let Err(e) = r {
            std::panic::resume_unwind(e.into_panic());
        }
    }
}

// ---------------------------------------------------------------------------------------
// 1. SIGKILL at random moments under concurrent AddImages streams.
// ---------------------------------------------------------------------------------------

const BRANDS: [&str; 2] = ["acme", "globex"];

/// Item `i` of client `c`: a distinct photograph, its brand, label and external id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct Item {
    client: usize,
    index: u64,
}

impl Item {
    fn seed(self, base: u64) -> u64 {
        base.wrapping_mul(1_000_003).wrapping_add(self.client as u64 * 10_000_000 + self.index)
    }
    fn brand(self) -> &'static str {
        BRANDS[(self.client + self.index as usize) % BRANDS.len()]
    }
    fn label(self) -> pb::Label {
        if self.index.is_multiple_of(3) {
            pb::Label::KnownFake
        } else {
            pb::Label::Authentic
        }
    }
    fn external_id(self) -> String {
        format!("c{}-{:06}", self.client, self.index)
    }
    fn bytes(self, cfg: &Soak) -> Vec<u8> {
        jpeg(&photo(self.seed(cfg.seed), cfg.side, cfg.side), 90)
    }
    fn request(self, cfg: &Soak) -> pb::AddImageRequest {
        pb::AddImageRequest {
            content: Some(add_image_request::Content::Image(self.bytes(cfg))),
            brand: self.brand().into(),
            label: self.label() as i32,
            external_id: self.external_id(),
            note: format!("soak item {} of client {}", self.index, self.client),
            source: String::new(),
        }
    }
    fn expected(self, id: u64) -> Expected {
        Expected { id, brand: self.brand().into(), label: self.label(), external_id: self.external_id() }
    }
}

#[derive(Debug, Clone)]
struct Soak {
    rounds: u64,
    clients: usize,
    side: u32,
    seed: u64,
    max_delay_ms: u64,
}

impl Soak {
    fn from_env() -> Soak {
        Soak {
            rounds: env_u64("LOOKALIKE_SOAK_ROUNDS", 20),
            clients: env_u64("LOOKALIKE_SOAK_CLIENTS", 3).max(1) as usize,
            side: env_u64("LOOKALIKE_SOAK_SIDE", 64).max(32) as u32,
            seed: env_u64("LOOKALIKE_SOAK_SEED", 1),
            max_delay_ms: env_u64("LOOKALIKE_SOAK_MAX_DELAY_MS", 1500).max(30),
        }
    }
}

/// One client's items: a prefix acknowledged (results come in order, and every round
/// resumes at the first unacknowledged item), then some sent without an answer.
#[derive(Default)]
struct ClientLog {
    /// Id and status of items `0..acked.len()`.
    acked: Vec<(u64, pb::AddStatus)>,
    /// Items `0..sent` have been handed to a stream (possibly never read by the server).
    sent: u64,
}

#[derive(Default, Debug)]
struct Tally {
    added: u64,
    already_present: u64,
    resent: u64,
    entry_checks: u64,
    match_checks: u64,
    catch_ups: u64,
    dropped_codes: u64,
    startup_kills: u64,
    slowest_start: Duration,
    final_resends: u64,
}

/// What one round of one client's stream did.
struct StreamOutcome {
    acks: Vec<pb::AddImageResult>,
    sent: u64,
}

/// Stream the client's items from its first unacknowledged one until the server dies,
/// collecting results (checked for order and external id here; for status by the caller).
async fn stream_client(channel: Channel, cfg: Arc<Soak>, client: usize, from: u64) -> StreamOutcome {
    let sent = Arc::new(AtomicU64::new(from));
    let (tx, rx) = tokio::sync::mpsc::channel(8);
    let producer = {
        let (sent, cfg) = (sent.clone(), cfg.clone());
        tokio::spawn(async move {
            for index in from.. {
                let item = Item { client, index };
                let request = { tokio::task::block_in_place(|| item.request(&cfg)) };
                if tx.send(request).await.is_err() {
                    break;
                }
                sent.store(index + 1, Ordering::SeqCst);
            }
        })
    };
    let mut acks = Vec::new();
    let mut catalog = CatalogClient::new(channel);
    if let Ok(response) = catalog.add_images(tokio_stream::wrappers::ReceiverStream::new(rx)).await {
        let mut results = response.into_inner();
        // The stream never ends by itself: it ends with an error when the server dies.
        while let Ok(Some(r)) = results.message().await {
            let item = Item { client, index: from + acks.len() as u64 };
            assert_eq!(r.sequence, acks.len() as u64, "results out of order: {r:?}");
            assert_eq!(r.external_id, item.external_id(), "{r:?}");
            acks.push(r);
        }
    }
    producer.abort();
    let _ = producer.await;
    StreamOutcome { acks, sent: sent.load(Ordering::SeqCst) }
}

/// After a restart: every item ever sent is stored at most once, every acknowledged one
/// exactly once with its metadata; Stats agrees; a sample matches at distance 0. Returns
/// the stored id of every sent item that is present.
async fn check_all(
    server: &Server,
    cfg: &Soak,
    logs: &[ClientLog],
    rng: &mut SmallRng,
    tally: &mut Tally,
) -> HashMap<Item, u64> {
    let channel = server.channel().await;
    let mut items = Vec::new();
    for (client, log) in logs.iter().enumerate() {
        for index in 0..log.sent {
            let acked = log.acked.get(index as usize).map(|&(id, _)| id);
            items.push((Item { client, index }, acked));
        }
    }
    let present = Arc::new(Mutex::new(HashMap::new()));
    let checks = Arc::new(AtomicU64::new(0));
    {
        let (present, checks) = (present.clone(), checks.clone());
        for_all(&channel, items, 4, move |channel, (item, acked): (Item, Option<u64>)| {
            let (present, checks) = (present.clone(), checks.clone());
            async move {
                let mut catalog = CatalogClient::new(channel);
                match acked {
                    Some(id) => {
                        check_entry(&mut catalog, &item.expected(id)).await;
                        checks.fetch_add(1, Ordering::Relaxed);
                        present.lock().unwrap().insert(item, id);
                    }
                    None => match get(&mut catalog, external(item.brand(), &item.external_id())).await {
                        Ok(entries) => {
                            // Not acknowledged, stored anyway (the kill came after the commit): once.
                            assert_eq!(entries.len(), 1, "unacknowledged {item:?} stored more than once: {entries:?}");
                            let e = &entries[0];
                            assert!(e.deleted_at_ms.is_none() && e.label == item.label() as i32, "{e:?}");
                            check_entry(&mut catalog, &item.expected(e.id)).await;
                            present.lock().unwrap().insert(item, e.id);
                        }
                        Err(s) if s.code() == Code::NotFound => {}
                        Err(s) => panic!("Get {item:?}: {s:?}"),
                    },
                }
            }
        })
        .await;
    }
    tally.entry_checks += checks.load(Ordering::Relaxed);
    let present = std::mem::take(&mut *present.lock().unwrap());
    let distinct: HashSet<u64> = present.values().copied().collect();
    assert_eq!(distinct.len(), present.len(), "two items share an entry id");
    let s = stats(&channel).await;
    assert_eq!(s.live, distinct.len() as u64, "Stats.live vs the entries found: {s:?}");
    assert_eq!((s.deleted, s.records), (0, s.live), "one record per live entry: {s:?}");

    // Search: the last acknowledged items of each client (the writes a kill is most likely to
    // have cut short) and a few random ones; each found once, at distance 0.
    let mut sample = Vec::new();
    for (client, log) in logs.iter().enumerate() {
        let n = log.acked.len() as u64;
        for index in n.saturating_sub(2)..n {
            sample.push(Item { client, index });
        }
        for _ in 0..2 {
            if n > 0 {
                sample.push(Item { client, index: rng.random_range(0..n) });
            }
        }
    }
    let mut matcher = MatcherClient::new(channel);
    for item in sample {
        let id = logs[item.client].acked[item.index as usize].0;
        let exact = exact_matches(&mut matcher, match_request::Query::Image(item.bytes(cfg))).await;
        assert_eq!(exact, vec![(id, item.external_id())], "{item:?} (entry {id}) searched by its image");
        tally.match_checks += 1;
    }
    present
}

/// Notes what a start-up log says about repairs it made; fails on errors and panics.
fn check_startup_log(log: &[String], tally: &mut Tally) {
    for line in log {
        assert!(!line.contains("ERROR") && !line.contains("panicked"), "start-up log: {line}\n{}", log.join("\n"));
        if line.contains("appending catalog entries missing from the record files") {
            tally.catch_ups += 1;
        }
        if line.contains("dropping codes of an interrupted append") {
            tally.dropped_codes += 1;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_adds_survive_random_sigkills() {
    let cfg = Arc::new(Soak::from_env());
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut rng = SmallRng::seed_from_u64(cfg.seed ^ 0x5eed_c4a5);
    let mut logs: Vec<ClientLog> = (0..cfg.clients).map(|_| ClientLog::default()).collect();
    let mut ids: HashMap<u64, Item> = HashMap::new();
    let mut tally = Tally::default();
    // Each stream has up to the pool's width (2 × cores by default) of its items queued for
    // hashing; leave room for every client's, so no item is refused as "busy" (overload is
    // tested in tests/grpc.rs; here a FAILED item fails the test).
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let queued = ((cfg.clients + 1) * 2 * cores).max(8 * cores).to_string();
    let serve_args = ["--max-queued", queued.as_str()];

    for round in 0..=cfg.rounds {
        // Every fourth round also kills a server while it opens the index (the start-up
        // appends what a previous kill left out of the record files).
        if round % 4 == 3 {
            let mut child = spawn_server(&data, &serve_args);
            std::thread::sleep(Duration::from_millis(rng.random_range(0..40)));
            child.kill().unwrap();
            child.wait().unwrap();
            tally.startup_kills += 1;
        }
        let t0 = Instant::now();
        let mut server = Server::start_with(&data, &serve_args).serving(&format!("round {round}: start after a kill"));
        let start_time = t0.elapsed();
        tally.slowest_start = tally.slowest_start.max(start_time);
        check_startup_log(&server.log(), &mut tally);
        let present = check_all(&server, &cfg, &logs, &mut rng, &mut tally).await;
        if round == cfg.rounds {
            // The last start: re-send everything (acknowledged or not), without a kill.
            resend_everything(&server, &cfg, &logs, &present, &mut tally).await;
            let after = check_all(&server, &cfg, &logs, &mut rng, &mut tally).await;
            let sent: u64 = logs.iter().map(|l| l.sent).sum();
            assert_eq!(after.len() as u64, sent, "every item sent is stored once re-sent");
            let s = stats(&server.channel().await).await;
            assert_eq!(s.live, sent);
            server.stop();
            let t = &tally;
            eprintln!(
                "crash soak: {rounds} rounds survived ({rounds} SIGKILLs while {clients} clients streamed {side}x{side} \
                 images, {startup} more during start-up; slowest start {slowest} ms); {acked} items acknowledged \
                 ({added} added, {present} already present: stored before a kill without an answer; {resent} had \
                 been sent before a kill); {catch_ups} start-ups appended records a kill left out, {dropped} dropped \
                 half-appended codes; {checks} entry checks, {matches} match checks, {resends} items re-sent at the \
                 end; {live} entries at the end, each once; {secs:.1} s",
                rounds = cfg.rounds,
                clients = cfg.clients,
                side = cfg.side,
                startup = t.startup_kills,
                slowest = t.slowest_start.as_millis(),
                acked = t.added + t.already_present,
                added = t.added,
                present = t.already_present,
                resent = t.resent,
                catch_ups = t.catch_ups,
                dropped = t.dropped_codes,
                checks = t.entry_checks,
                matches = t.match_checks,
                resends = t.final_resends,
                live = s.live,
                secs = started.elapsed().as_secs_f64()
            );
            return;
        }

        // Stream from every client; kill at a random moment.
        let channel = server.channel().await;
        let mut streams = Vec::new();
        let before: Vec<(u64, u64)> = logs.iter().map(|l| (l.acked.len() as u64, l.sent)).collect();
        for (client, &(from, _)) in before.iter().enumerate() {
            streams.push(tokio::spawn(stream_client(channel.clone(), cfg.clone(), client, from)));
        }
        // Mostly well into the streams; sometimes right after they open.
        let delay =
            if rng.random_bool(0.2) { rng.random_range(0..30) } else { rng.random_range(30..=cfg.max_delay_ms) };
        tokio::time::sleep(Duration::from_millis(delay)).await;
        server.kill();
        for (client, stream) in streams.into_iter().enumerate() {
            let outcome = stream.await.unwrap();
            let sent_before = before[client].1;
            let log = &mut logs[client];
            for r in outcome.acks {
                let item = Item { client, index: log.acked.len() as u64 };
                let status = pb::AddStatus::try_from(r.status).unwrap();
                let resent = item.index < sent_before;
                match (status, present.get(&item)) {
                    // Re-sent after a kill that had stored it: the stored entry, not a new one.
                    (pb::AddStatus::AlreadyPresent, Some(&id)) if resent => assert_eq!(r.id, id, "{item:?}: {r:?}"),
                    (pb::AddStatus::Added, None) => {}
                    _ => panic!(
                        "round {round}: {item:?} (re-sent: {resent}, stored before: {:?}) answered {r:?}",
                        present.get(&item)
                    ),
                }
                tally.resent += u64::from(resent);
                match status {
                    pb::AddStatus::Added => tally.added += 1,
                    _ => tally.already_present += 1,
                }
                if let Some(other) = ids.insert(r.id, item) {
                    assert_eq!(other, item, "entry id {} acknowledged for two items", r.id);
                }
                log.acked.push((r.id, status));
            }
            log.sent = log.sent.max(outcome.sent);
        }
        let acked: u64 = logs.iter().map(|l| l.acked.len() as u64).sum();
        eprintln!(
            "round {round}: started in {} ms, killed after {delay} ms; {acked} acknowledged so far",
            start_time.as_millis()
        );
    }
}

/// Send every item once more: stored ones are ALREADY_PRESENT with their id, others ADDED.
async fn resend_everything(
    server: &Server,
    cfg: &Arc<Soak>,
    logs: &[ClientLog],
    present: &HashMap<Item, u64>,
    tally: &mut Tally,
) {
    let channel = server.channel().await;
    let mut catalog = CatalogClient::new(channel);
    for (client, log) in logs.iter().enumerate() {
        let items: Vec<Item> = (0..log.sent).map(|index| Item { client, index }).collect();
        let cfg = cfg.clone();
        let requests = items.clone().into_iter().map(move |i| i.request(&cfg));
        let results: Vec<pb::AddImageResult> = {
            use tokio_stream::StreamExt;
            catalog
                .add_images(tokio_stream::iter(requests))
                .await
                .unwrap()
                .into_inner()
                .collect::<Result<_, _>>()
                .await
                .unwrap()
        };
        assert_eq!(results.len(), items.len());
        for (item, r) in items.iter().zip(&results) {
            let status = pb::AddStatus::try_from(r.status).unwrap();
            match present.get(item) {
                Some(&id) => assert_eq!((status, r.id), (pb::AddStatus::AlreadyPresent, id), "{item:?}: {r:?}"),
                None => assert_eq!(status, pb::AddStatus::Added, "{item:?}: {r:?}"),
            }
            tally.final_resends += 1;
        }
    }
}

// ---------------------------------------------------------------------------------------
// 2. Torn writes: damaged files with the server stopped.
// ---------------------------------------------------------------------------------------

/// A stored entry and the query that must find it at distance 0.
#[derive(Debug, Clone)]
struct Known {
    want: Expected,
    query: match_request::Query,
}

fn hash_query(pdq: &str) -> match_request::Query {
    match_request::Query::Hash(pb::PrecomputedHash { pdq: pdq.into(), quality: None })
}

/// Add `requests` on one stream; every one must be ADDED. Returns the entries with their queries.
async fn add_known(channel: &Channel, requests: Vec<pb::AddImageRequest>) -> Vec<Known> {
    use tokio_stream::StreamExt;
    let mut catalog = CatalogClient::new(channel.clone());
    let results: Vec<pb::AddImageResult> = catalog
        .add_images(tokio_stream::iter(requests.clone()))
        .await
        .unwrap()
        .into_inner()
        .collect::<Result<_, _>>()
        .await
        .unwrap();
    assert_eq!(results.len(), requests.len());
    requests
        .into_iter()
        .zip(results)
        .map(|(q, r)| {
            assert_eq!(pb::AddStatus::try_from(r.status), Ok(pb::AddStatus::Added), "{r:?}");
            let query = match q.content.unwrap() {
                add_image_request::Content::Image(bytes) => match_request::Query::Image(bytes),
                add_image_request::Content::Hash(h) => hash_query(&h.pdq),
            };
            let label = pb::Label::try_from(q.label).unwrap();
            Known { want: Expected { id: r.id, brand: q.brand, label, external_id: q.external_id }, query }
        })
        .collect()
}

fn image_request(seed: u64, brand: &str, label: pb::Label, external_id: String) -> pb::AddImageRequest {
    pb::AddImageRequest {
        content: Some(add_image_request::Content::Image(jpeg(&photo(seed, 64, 64), 90))),
        brand: brand.into(),
        label: label as i32,
        external_id,
        note: String::new(),
        source: String::new(),
    }
}

fn hash_request(rng: &mut SmallRng, brand: &str, external_id: String) -> pb::AddImageRequest {
    let pdq: String = (0..64).map(|_| char::from_digit(rng.random_range(0..16), 16).unwrap()).collect();
    pb::AddImageRequest {
        content: Some(add_image_request::Content::Hash(pb::PrecomputedHash { pdq, quality: Some(90) })),
        brand: brand.into(),
        label: pb::Label::KnownFake as i32,
        external_id,
        note: String::new(),
        source: String::new(),
    }
}

/// Every entry reads back right (Get by id and by external id) and its query finds it, and
/// only it, at distance 0; the index holds exactly these entries.
async fn check_known(server: &Server, known: &[Known], total: u64) -> pb::StatsResponse {
    let channel = server.channel().await;
    for_all(&channel, known.to_vec(), 4, |channel, k: Known| async move {
        check_entry(&mut CatalogClient::new(channel.clone()), &k.want).await;
        let exact = exact_matches(&mut MatcherClient::new(channel), k.query.clone()).await;
        assert_eq!(exact, vec![(k.want.id, k.want.external_id.clone())], "{:?} searched", k.want);
    })
    .await;
    let s = stats(&channel).await;
    assert_eq!((s.live, s.deleted, s.records), (total, 0, total), "{s:?}");
    s
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
}

/// The one file in `dir` whose name starts with `prefix`.
fn file_named(dir: &Path, prefix: &str) -> PathBuf {
    let found: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_str().unwrap().starts_with(prefix))
        .collect();
    assert_eq!(found.len(), 1, "files {prefix}* in the data directory: {found:?}");
    found.into_iter().next().unwrap()
}

fn flip_byte(path: &Path, offset: u64) {
    use std::os::unix::fs::FileExt;
    let file = std::fs::OpenOptions::new().read(true).write(true).open(path).unwrap();
    let mut b = [0u8];
    file.read_exact_at(&mut b, offset).unwrap();
    file.write_all_at(&[b[0] ^ 0x10], offset).unwrap();
}

fn truncate_by(path: &Path, bytes: u64) {
    let file = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    let len = file.metadata().unwrap().len();
    file.set_len(len - bytes).unwrap();
}

/// Record files: a 4096-byte header page, then the committed records.
const RECORDS_AT: u64 = 4096;

/// How one damaged file must be handled.
struct Damage {
    what: &'static str,
    /// Name prefix of the file damaged (for the error message).
    file: &'static str,
    damage: fn(&Path),
    /// Refusing is wrong here: the damage is one the design recovers from by itself.
    must_serve: bool,
}

/// Outcomes of one damage case, for the summary.
struct Outcome {
    what: &'static str,
    refused: Option<String>,
}

/// Damage a copy of `base`, start a server on it (refused with a clear error, or serving
/// correct answers), then `lookalike repair` and check every entry again.
async fn damage_then_repair(base: &Path, work: &Path, case: &Damage, known: &[Known], total: u64) -> Outcome {
    let data = work.join(case.what.replace(|c: char| !c.is_ascii_alphanumeric(), "-"));
    copy_dir(base, &data);
    let damaged = file_named(&data, case.file);
    let damaged_name = damaged.file_name().unwrap().to_str().unwrap().to_owned();
    (case.damage)(&damaged);
    let mut known = known.to_vec();
    let mut total = total;
    let refused = match Server::start(&data) {
        Start::Exited(status, log) => {
            assert!(!case.must_serve, "{}: the server refused to start:\n{}", case.what, log.join("\n"));
            assert!(!status.success(), "{}: exit {status}", case.what);
            let error = log.iter().rev().find(|l| l.contains("error")).cloned().unwrap_or_default();
            assert!(
                error.contains(&damaged_name) && error.contains("lookalike repair"),
                "{}: the error must name {damaged_name} and `lookalike repair`:\n{}",
                case.what,
                log.join("\n")
            );
            Some(error)
        }
        Start::Serving(mut server) => {
            // Serving after damage: then every answer must be right, and it must keep
            // accepting writes that survive a SIGKILL.
            check_known(&server, &known, total).await;
            let extra: Vec<_> = (0..10u64)
                .map(|i| image_request(70_000 + i, "after-damage", pb::Label::Authentic, format!("extra-{i}")))
                .collect();
            known.extend(add_known(&server.channel().await, extra).await);
            total += 10;
            check_known(&server, &known, total).await;
            server.kill();
            let server = Server::start(&data).serving(&format!("{}: restart after writes", case.what));
            check_known(&server, &known, total).await;
            server.stop();
            None
        }
    };
    let out = command().args(["--data", data.to_str().unwrap(), "repair"]).output().unwrap();
    assert!(
        out.status.success(),
        "{}: repair failed: {}{}",
        case.what,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let server = Server::start(&data).serving(&format!("{}: after repair", case.what));
    let s = check_known(&server, &known, total).await;
    if total >= 16_384 {
        assert_eq!(s.mih_records, total, "repair rebuilds the multi-index tables: {s:?}");
    }
    server.stop();
    std::fs::remove_dir_all(&data).unwrap();
    Outcome { what: case.what, refused }
}

fn report(test: &str, outcomes: &[Outcome], started: Instant) {
    for o in outcomes {
        match &o.refused {
            Some(error) => eprintln!("{test}: {}: refused: {error}", o.what),
            None => eprintln!("{test}: {}: served correct answers", o.what),
        }
    }
    let refused = outcomes.iter().filter(|o| o.refused.is_some()).count();
    eprintln!(
        "{test}: {} damage cases ({refused} refused, {} served correctly), each repaired and fully checked; {:.1} s",
        outcomes.len(),
        outcomes.len() - refused,
        started.elapsed().as_secs_f64()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn torn_record_and_manifest_files_are_refused_or_harmless_and_repair_restores() {
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("base");
    let mut rng = SmallRng::seed_from_u64(77);
    let server = Server::start(&base).serving("empty index");
    let channel = server.channel().await;
    let mut requests = Vec::new();
    for i in 0..120u64 {
        let label = if i.is_multiple_of(4) { pb::Label::KnownFake } else { pb::Label::Authentic };
        requests.push(image_request(90_000 + i, BRANDS[i as usize % 2], label, format!("img-{i}")));
    }
    for i in 0..30 {
        requests.push(hash_request(&mut rng, "hashes", format!("hash-{i}")));
    }
    let known = add_known(&channel, requests).await;
    let total = known.len() as u64;
    check_known(&server, &known, total).await;
    server.stop();
    let names: Vec<String> =
        std::fs::read_dir(&base).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    assert!(names.iter().all(|n| !n.starts_with("mih-")), "no tables below 16384 records: {names:?}");

    let cases = [
        Damage {
            what: "codes: a flipped byte in a committed record",
            file: "codes-",
            damage: |p| flip_byte(p, RECORDS_AT + 77 * 32 + 5),
            must_serve: false,
        },
        Damage {
            what: "codes: torn header (count and checksums zeroed)",
            file: "codes-",
            damage: |p| {
                use std::os::unix::fs::FileExt;
                std::fs::OpenOptions::new().write(true).open(p).unwrap().write_all_at(&[0; 16], 16).unwrap();
            },
            must_serve: false,
        },
        Damage { what: "refs: truncated mid-record", file: "refs-", damage: |p| truncate_by(p, 7), must_serve: false },
        Damage {
            what: "refs: truncated inside the header",
            file: "refs-",
            damage: |p| std::fs::OpenOptions::new().write(true).open(p).unwrap().set_len(20).unwrap(),
            must_serve: false,
        },
        Damage {
            what: "refs: a flipped byte in a committed record",
            file: "refs-",
            damage: |p| flip_byte(p, RECORDS_AT + 3 * 16 + 1),
            must_serve: false,
        },
        Damage {
            what: "codes and refs: garbage past the committed records (torn append)",
            file: "codes-",
            damage: |p| {
                for path in [
                    p.to_owned(),
                    p.with_file_name(p.file_name().unwrap().to_str().unwrap().replace("codes-", "refs-")),
                ] {
                    use std::io::Write;
                    let mut f = std::fs::OpenOptions::new().append(true).open(path).unwrap();
                    f.write_all(&[0xa5; 1000]).unwrap();
                }
            },
            must_serve: true,
        },
        Damage {
            what: "manifest.json: cut in half",
            file: "manifest.json",
            damage: |p| truncate_by(p, std::fs::metadata(p).unwrap().len() / 2),
            must_serve: false,
        },
        Damage {
            what: "manifest.json: empty",
            file: "manifest.json",
            damage: |p| std::fs::write(p, b"").unwrap(),
            must_serve: false,
        },
        Damage {
            what: "manifest.json: a flipped byte",
            file: "manifest.json",
            damage: |p| flip_byte(p, 0),
            must_serve: false,
        },
    ];
    let mut outcomes = Vec::new();
    for case in &cases {
        outcomes.push(damage_then_repair(&base, dir.path(), case, &known, total).await);
    }
    report("torn writes", &outcomes, started);
}

/// A manifest whose file name lost a bit names a file that does not exist: the server
/// must say the manifest is damaged and point to `lookalike repair` (which fixes it), not
/// only report a missing `codes-!.bin`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manifest_naming_a_missing_file_is_reported_as_damage() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("base");
    let server = Server::start(&base).serving("empty index");
    let requests =
        (0..20u64).map(|i| image_request(95_000 + i, "acme", pb::Label::Authentic, format!("m-{i}"))).collect();
    let known = add_known(&server.channel().await, requests).await;
    server.stop();
    let case = Damage {
        what: "manifest.json: a flipped bit in the codes file name",
        file: "manifest.json",
        damage: |p| {
            let text = std::fs::read_to_string(p).unwrap();
            let at = text.find("\"codes-").unwrap() + "\"codes-".len();
            flip_byte(p, at as u64); // codes-1.bin → codes-!.bin
        },
        must_serve: false,
    };
    let outcome = damage_then_repair(&base, dir.path(), &case, &known, known.len() as u64).await;
    report("manifest file name", &[outcome], Instant::now());
}

/// The multi-index tables exist only past 16,384 records: load that many precomputed hashes
/// (fast: no image work) with a wide stream window so they are written in large batches,
/// then let `lookalike index` build the tables, as it does at the end of every run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn torn_multi_index_tables_are_refused_and_repair_restores() {
    const HASHES: u64 = 16_400;
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("base");
    let mut rng = SmallRng::seed_from_u64(78);
    let server = Server::start_with(&base, &["--max-in-flight", "256", "--max-queued", "1024"]).serving("empty index");
    let channel = server.channel().await;
    let mut requests: Vec<_> = (0..HASHES).map(|i| hash_request(&mut rng, "bulk", format!("h-{i}"))).collect();
    requests.extend((0..40u64).map(|i| image_request(80_000 + i, "acme", pb::Label::Authentic, format!("img-{i}"))));
    let added = add_known(&channel, requests).await;
    server.stop();
    let folder = dir.path().join("cli");
    std::fs::create_dir_all(&folder).unwrap();
    for i in 0..10u64 {
        std::fs::write(folder.join(format!("cli-{i}.jpg")), jpeg(&photo(85_000 + i, 64, 64), 90)).unwrap();
    }
    let out = command()
        .args([
            "--data",
            base.to_str().unwrap(),
            "index",
            folder.to_str().unwrap(),
            "--brand",
            "cli",
            "--label",
            "authentic",
            "--quiet",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    let total = HASHES + 50;

    // Every image entry, and every 16th hash entry (all of them would take long to check;
    // the counts are checked exactly).
    let mut known: Vec<Known> = added
        .into_iter()
        .enumerate()
        .filter(|(i, k)| i.is_multiple_of(16) || k.want.brand != "bulk")
        .map(|(_, k)| k)
        .collect();
    let server = Server::start(&base).serving("base with tables");
    let mut catalog = CatalogClient::new(server.channel().await);
    for i in 0..10u64 {
        let external_id = format!("cli-{i}");
        let entries = get(&mut catalog, external("cli", &external_id)).await.unwrap();
        assert_eq!(entries.len(), 1, "{entries:?}");
        let want = Expected { id: entries[0].id, brand: "cli".into(), label: pb::Label::Authentic, external_id };
        known.push(Known { want, query: match_request::Query::Image(jpeg(&photo(85_000 + i, 64, 64), 90)) });
    }
    let s = check_known(&server, &known, total).await;
    assert_eq!(s.mih_records, total, "the index run built the tables: {s:?}");
    server.stop();
    // 16 tables of 65,537 bucket offsets and one record number per record, after a page.
    let len = std::fs::metadata(file_named(&base, "mih-")).unwrap().len();
    assert_eq!(len, 4096 + 16 * (65_537 + total) * 4);
    // A hash query (one orientation) probes these tables; an image query's eight scan.

    let cases = [
        Damage {
            what: "mih: a flipped byte in a table's record numbers",
            file: "mih-",
            // Table 3's record numbers: 4096 + 3 tables + this table's 65,537 offsets, in.
            damage: |p| {
                let records = HASHES + 50;
                let table = (65_537 + records) * 4;
                flip_byte(p, 4096 + 3 * table + 65_537 * 4 + 1234 * 4 + 1)
            },
            must_serve: false,
        },
        Damage {
            what: "mih: a flipped byte in a table's bucket offsets",
            file: "mih-",
            damage: |p| flip_byte(p, 4096 + 40_000 * 4 + 2),
            must_serve: false,
        },
        Damage { what: "mih: truncated by 4 bytes", file: "mih-", damage: |p| truncate_by(p, 4), must_serve: false },
        Damage {
            what: "mih: torn header (record count zeroed)",
            file: "mih-",
            damage: |p| {
                use std::os::unix::fs::FileExt;
                std::fs::OpenOptions::new().write(true).open(p).unwrap().write_all_at(&[0; 8], 20).unwrap();
            },
            must_serve: false,
        },
    ];
    let mut outcomes = Vec::new();
    for case in &cases {
        outcomes.push(damage_then_repair(&base, dir.path(), case, &known, total).await);
    }
    report("torn tables", &outcomes, started);
}

/// Each entry is either all there (Get by id and external id, found by its query at
/// distance 0) or all gone (neither, and no match); Stats counts the ones there. Returns
/// which are there.
async fn check_present_or_gone(server: &Server, known: &[Known]) -> Vec<bool> {
    let channel = server.channel().await;
    let mut there = Vec::new();
    for k in known {
        let mut catalog = CatalogClient::new(channel.clone());
        let exact = exact_matches(&mut MatcherClient::new(channel.clone()), k.query.clone()).await;
        match get(&mut catalog, get_request::Target::Id(k.want.id)).await {
            Ok(_) => {
                check_entry(&mut catalog, &k.want).await;
                assert_eq!(exact, vec![(k.want.id, k.want.external_id.clone())], "{:?} searched", k.want);
                there.push(true);
            }
            Err(s) if s.code() == Code::NotFound => {
                let by_external = get(&mut catalog, external(&k.want.brand, &k.want.external_id)).await;
                assert_eq!(by_external.map_err(|s| s.code()), Err(Code::NotFound), "{:?}", k.want);
                assert_eq!(exact, vec![], "{:?} is gone from the catalog but still matches", k.want);
                there.push(false);
            }
            Err(s) => panic!("Get {:?}: {s:?}", k.want),
        }
    }
    let s = stats(&channel).await;
    let n = there.iter().filter(|&&t| t).count() as u64;
    assert_eq!((s.live, s.records), (n, n), "{s:?}");
    there
}

/// The catalog loses its last transaction after the records were appended (as if a disk had
/// dropped an acknowledged write of the SQLite WAL): the record files are then ahead of the
/// source of truth. The server must not answer with entries the catalog no longer has.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catalog_losing_its_last_transaction_is_refused_and_repair_follows_the_catalog() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut server = Server::start(&data).serving("empty index");
    let requests =
        (0..60u64).map(|i| image_request(60_000 + i, "acme", pb::Label::Authentic, format!("w-{i}"))).collect();
    let known = add_known(&server.channel().await, requests).await;
    server.kill(); // SIGKILL: the WAL is not checkpointed
    let wal = data.join("catalog.sqlite-wal");
    let len = std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0);
    assert!(len > 4096, "the catalog's WAL holds the transactions ({len} bytes)");
    truncate_by(&wal, 100); // the last frame, and with it the last transaction, is torn

    let refused = match Server::start(&data) {
        Start::Exited(status, log) => {
            assert!(!status.success());
            let error = log.iter().rev().find(|l| l.contains("error")).cloned().unwrap_or_default();
            assert!(
                error.contains("lookalike repair"),
                "the error must point to `lookalike repair`:\n{}",
                log.join("\n")
            );
            Some(error)
        }
        Start::Serving(server) => {
            let there = check_present_or_gone(&server, &known).await;
            server.stop();
            eprintln!("catalog torn: served; {} of {} entries kept", there.iter().filter(|&&t| t).count(), known.len());
            None
        }
    };
    let out = command().args(["--data", data.to_str().unwrap(), "repair"]).output().unwrap();
    assert!(out.status.success(), "{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    let server = Server::start(&data).serving("after repair");
    let there = check_present_or_gone(&server, &known).await;
    server.stop();
    // What the catalog kept is a prefix of what was added: only the last transaction is lost.
    let kept = there.iter().filter(|&&t| t).count();
    assert!(there[..kept].iter().all(|&t| t) && kept < known.len() && kept > 0, "{there:?}");
    eprintln!(
        "catalog torn: {}; after repair {kept} of {} entries (the lost transaction held {})",
        refused.as_deref().unwrap_or("served"),
        known.len(),
        known.len() - kept
    );
}
