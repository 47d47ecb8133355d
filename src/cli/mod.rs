//! The command line: parse, validate, call the library, print. No policy lives here.

/// `println!` for a command's results, through standard output's lock, returning the
/// write's error (a closed pipe: `lookalike query … | head -1`) instead of panicking on
/// it; see [`StdoutClosed`].
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        writeln!(std::io::stdout().lock(), $($arg)*).map_err($crate::cli::StdoutClosed::from)?
    }};
}

/// `print!` the same way as [`outln!`].
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        write!(std::io::stdout().lock(), $($arg)*).map_err($crate::cli::StdoutClosed::from)?
    }};
}

mod ingest;
mod output;
mod remote;

/// Writing a result to standard output failed. When the reader has gone (a closed pipe),
/// the command ends quietly with exit code 0, as `cat` and `grep` do.
#[derive(Debug, thiserror::Error)]
#[error("writing to standard output: {0}")]
pub struct StdoutClosed(#[from] std::io::Error);

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::grpc;
use crate::hash::{self, DecodeLimits};
use crate::index::{HnswParams, Index, Label, NearestEngine, OpenOptions, Selector};
use crate::matcher::{self, Query, Thresholds, Verdict};

/// Exit code: everything asked for was done and found.
pub const EXIT_OK: u8 = 0;
/// Exit code: a query matched nothing, a file failed, or nothing was deleted.
pub const EXIT_PARTIAL: u8 = 1;
/// Exit code: usage error or fatal error.
pub const EXIT_ERROR: u8 = 2;

#[derive(Parser, Debug)]
#[command(
    name = "lookalike",
    version,
    about = "Catch counterfeit listings by image: index brands' photos, match listing images against them.",
    long_about = "Catch counterfeit listings by image.\n\n\
        Brands register their genuine product photos (label `authentic`) and photos of seized \
        counterfeits (`known_fake`); each image is reduced to a PDQ perceptual hash (and a pHash) \
        and stored in an index directory. A listing image is matched against all eight \
        rotations/mirrors of its hash and gets a verdict: KNOWN_FAKE, BRAND_PHOTO_REUSED, REVIEW, \
        NO_MATCH or LOW_QUALITY.\n\n\
        Exit codes: 0 ok; 1 a query matched nothing, some files failed, or nothing was deleted; \
        2 usage or fatal error.",
    after_help = "Examples:\n  \
        lookalike serve\n  \
        lookalike index catalog/acme/ --brand acme --label authentic --server http://127.0.0.1:50051\n  \
        lookalike index catalog/acme/ --brand acme --label authentic\n  \
        lookalike query listing.jpg\n  \
        lookalike query --json a.jpg b.webp\n  \
        lookalike hash photo.png\n  \
        lookalike stats"
)]
pub struct Cli {
    /// Index directory (created by `index` if missing).
    #[arg(long, global = true, env = "LOOKALIKE_DATA", default_value = "index-data", value_name = "DIR")]
    pub data: PathBuf,
    /// More log output on stderr (-v info, -vv debug). RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Talk to a running `lookalike serve` at this address instead of opening the data
    /// directory (for index, query, stats and delete).
    #[arg(long, global = true, env = "LOOKALIKE_SERVER", value_name = "URL")]
    pub server: Option<String>,
    /// API key sent to the server (`authorization: Bearer …`).
    #[arg(long, global = true, env = "LOOKALIKE_API_KEY", value_name = "KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// Certificate authority (PEM) to trust for an `https://` server.
    #[arg(long, global = true, value_name = "PEM")]
    pub tls_ca: Option<PathBuf>,
    #[command(flatten)]
    pub limits: LimitArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// Input limits, applied before decoding.
#[derive(Args, Debug, Clone)]
pub struct LimitArgs {
    /// Refuse image files larger than this many bytes.
    #[arg(long, global = true, default_value_t = DecodeLimits::DEFAULT_MAX_BYTES, value_name = "BYTES")]
    pub max_bytes: usize,
    /// Refuse images whose header declares more pixels than this (decompression bombs).
    #[arg(long, global = true, default_value_t = DecodeLimits::DEFAULT_MAX_PIXELS, value_name = "PIXELS")]
    pub max_pixels: u64,
}

impl LimitArgs {
    fn limits(&self) -> DecodeLimits {
        DecodeLimits { max_bytes: self.max_bytes, max_pixels: self.max_pixels }
    }
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the gRPC service (Catalog and Matcher, plus health and reflection) on the data
    /// directory.
    ///
    /// Listing pipelines call Matcher.Match / Matcher.MatchStream; brands load catalogs with
    /// Catalog.AddImages (or `lookalike index --server URL`). Every add is on disk before it
    /// is acknowledged. SIGTERM or Ctrl-C: stop accepting, finish requests in flight (up to
    /// --grace), exit 0. The API is in proto/lookalike/v1/lookalike.proto; reflection
    /// serves it too (`grpcurl -plaintext 127.0.0.1:50051 list`).
    Serve(ServeArgs),
    /// Manage API keys for `serve --keys FILE`: keys are stored as hashes, shown once.
    ///
    /// Roles: `admin` (everything), `brand` (add, delete and read entries of its --brand
    /// list; match across all brands), `matcher` (match only).
    Keys(KeysArgs),
    /// Add images (files or directories, walked recursively) to the index.
    ///
    /// Files are hashed on all cores and written in batches (the next batch is hashed
    /// while the last one is written). Re-indexing a file already stored for the same
    /// brand and label (same SHA-256) does nothing and costs only reading it, so an
    /// interrupted run can simply be run again. Non-image files are skipped; broken
    /// images are reported one line each and counted as failed (exit code 1).
    Index(IndexArgs),
    /// Match images against the index and print the nearest entries and a verdict.
    ///
    /// Each image's PDQ hash is searched in all eight rotations/mirrors, its local
    /// features are checked against the closest stored photos, a stored photo they fit
    /// (or the hash finds close) is compared with it part by part, and each match gets
    /// a confidence (0-1: the probability that the listing is a copy of it). Verdicts:
    /// KNOWN_FAKE / BRAND_PHOTO_REUSED (best match at or above --flag-confidence, no part
    /// of the stored photo replaced, and not a crop that leaves part of it out), REVIEW
    /// (at or above --review-confidence, or a part replaced: another logo on the same
    /// shot?, or such a crop), NO_MATCH, LOW_QUALITY (quality under
    /// --min-quality). Exit code 1 if any image matched nothing (NO_MATCH, LOW_QUALITY)
    /// or failed.
    Query(QueryArgs),
    /// Print the PDQ hash (64 hex digits, ThreatExchange convention), its quality and
    /// the 64-bit pHash of image files.
    Hash(HashArgs),
    /// Show entry counts by brand and label, file sizes and index parameters.
    Stats(StatsArgs),
    /// Delete (tombstone) entries; they are never returned again. `compact` reclaims space.
    Delete(DeleteArgs),
    /// Rewrite the index files without deleted entries.
    Compact,
    /// Rebuild every derived index file from the catalog (after a damaged-file error).
    Repair,
    /// Build the HNSW graph used by `query --nearest --engine hnsw`.
    ///
    /// Approximate and slow to build; the exact engine is the default for everything
    /// (see the README's measurements).
    Hnsw(HnswArgs),
}

#[derive(Args, Debug)]
pub struct KeysArgs {
    #[command(subcommand)]
    pub action: KeysAction,
}

#[derive(Subcommand, Debug)]
pub enum KeysAction {
    /// Make a new key, store its hash in FILE (created if missing) and print the key once.
    Add {
        /// The key file.
        #[arg(long, value_name = "FILE")]
        file: PathBuf,
        /// Who holds the key (shown in logs and the audit log).
        #[arg(long)]
        name: String,
        #[arg(long, value_enum)]
        role: grpc::auth::Role,
        /// A brand this key manages (repeat for several); required for role brand.
        #[arg(long = "brand", value_name = "BRAND")]
        brands: Vec<String>,
    },
    /// List the keys in FILE (names, roles, brands; never the keys).
    List {
        #[arg(long, value_name = "FILE")]
        file: PathBuf,
    },
}

#[derive(Args, Debug)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:50051", value_name = "ADDR:PORT")]
    pub listen: std::net::SocketAddr,
    /// Largest request message accepted (checked before decoding); larger ones get
    /// RESOURCE_EXHAUSTED.
    #[arg(long, default_value_t = 32 * 1024 * 1024, value_name = "BYTES")]
    pub max_message_bytes: usize,
    /// Images decoded and matched at once [default: 2 × cores].
    #[arg(long, value_name = "N")]
    pub max_in_flight: Option<usize>,
    /// Images waiting for a worker before new ones get RESOURCE_EXHAUSTED [default: 8 × cores].
    #[arg(long, value_name = "N")]
    pub max_queued: Option<usize>,
    /// Address of the moderator page, /metrics and /healthz (HTTP).
    #[arg(long, default_value = "127.0.0.1:8080", value_name = "ADDR:PORT", conflicts_with = "no_http")]
    pub http: std::net::SocketAddr,
    /// Serve gRPC only: no moderator page, no /metrics.
    #[arg(long)]
    pub no_http: bool,
    /// API keys (JSON, made with `lookalike keys add`). Without it every call is allowed,
    /// and only loopback addresses may be served.
    #[arg(long, value_name = "FILE")]
    pub keys: Option<PathBuf>,
    /// Serve a non-loopback address without API keys anyway.
    #[arg(long)]
    pub insecure: bool,
    /// TLS certificate chain (PEM) for gRPC; with --tls-key.
    #[arg(long, value_name = "PEM", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// TLS private key (PEM) for gRPC; with --tls-cert.
    #[arg(long, value_name = "PEM", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Seconds in-flight requests get to finish after SIGTERM / Ctrl-C.
    #[arg(long, default_value_t = 10, value_name = "SECONDS")]
    pub grace: u64,
}

#[derive(Args, Debug)]
pub struct IndexArgs {
    /// Image files or directories (walked recursively). Optional with --manifest.
    pub paths: Vec<PathBuf>,
    /// Brand the images belong to.
    #[arg(long)]
    pub brand: String,
    /// What the images are: the brand's genuine photos, or photos of seized fakes.
    #[arg(long, value_enum)]
    pub label: LabelArg,
    /// CSV with rows `path,external_id[,label][,note]` (paths relative to the CSV's
    /// folder; a header row is allowed). Listed files get these ids; others use their
    /// file stem. Without PATHS, exactly the listed files are indexed.
    #[arg(long, value_name = "CSV")]
    pub manifest: Option<PathBuf>,
    /// Files hashed per written batch.
    #[arg(long, default_value_t = 256, value_name = "N")]
    pub batch: usize,
    /// No progress bar, no per-file lines; only the summary and errors.
    #[arg(short, long)]
    pub quiet: bool,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum LabelArg {
    Authentic,
    KnownFake,
}

impl From<LabelArg> for Label {
    fn from(l: LabelArg) -> Label {
        match l {
            LabelArg::Authentic => Label::Authentic,
            LabelArg::KnownFake => Label::KnownFake,
        }
    }
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum EngineArg {
    /// Exact scan over every code.
    Exact,
    /// HNSW graph (approximate; build it first with `lookalike hnsw`).
    Hnsw,
}

#[derive(Args, Debug)]
pub struct QueryArgs {
    /// Image files to match; `-` reads one image from standard input.
    #[arg(required = true)]
    pub images: Vec<PathBuf>,
    /// One JSON object per line per image instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Most matches shown per image.
    #[arg(short, long, default_value_t = 10)]
    pub k: usize,
    /// Confidence (0-1: the probability that the listing is a copy of the stored photo)
    /// at or above which a match is acted on automatically. Raise it for fewer wrong
    /// flags, lower it to catch more copies. A match whose part-by-part comparison finds
    /// a part of the stored photo (its logo, most often) replaced goes to review whatever
    /// its confidence. The default flagged at most 0.1% of tools/eval's tune negatives.
    #[arg(long, default_value_t = Thresholds::DEFAULT_FLAG_CONFIDENCE, value_name = "0-1")]
    pub flag_confidence: f32,
    /// Confidence at or above which a match goes to a moderator.
    #[arg(long, default_value_t = Thresholds::DEFAULT_REVIEW_CONFIDENCE, value_name = "0-1")]
    pub review_confidence: f32,
    /// Distance (bits of 256) at or below which a match of a precomputed hash (`--hash`
    /// queries, which have no pixels to compare) is acted on automatically.
    #[arg(long, default_value_t = Thresholds::DEFAULT_FLAG, value_name = "BITS")]
    pub flag: u32,
    /// Radius of the hash search (bits): matches beyond it are found only by the
    /// local-feature check. For precomputed hashes, the distance at or below which a
    /// match goes to a moderator.
    #[arg(long, default_value_t = Thresholds::DEFAULT_REVIEW, value_name = "BITS")]
    pub review: u32,
    /// PDQ quality under which no verdict is given.
    #[arg(long, default_value_t = Thresholds::DEFAULT_MIN_QUALITY, value_name = "0-100")]
    pub min_quality: u8,
    /// Only match this brand's entries.
    #[arg(long)]
    pub brand: Option<String>,
    /// Only match entries with this label.
    #[arg(long, value_enum)]
    pub label: Option<LabelArg>,
    /// Show the k nearest entries even beyond the review distance.
    #[arg(long)]
    pub nearest: bool,
    /// Engine for --nearest.
    #[arg(long, value_enum, default_value = "exact", requires = "nearest")]
    pub engine: EngineArg,
    /// HNSW search breadth (with --engine hnsw).
    #[arg(long, default_value_t = 128)]
    pub ef: usize,
}

#[derive(Args, Debug)]
pub struct HashArgs {
    /// Image files; `-` reads one image from standard input.
    #[arg(required = true)]
    pub images: Vec<PathBuf>,
    /// One JSON object per line.
    #[arg(long)]
    pub json: bool,
    /// Also print the hashes of the 8 rotations/mirrors.
    #[arg(long)]
    pub orientations: bool,
}

#[derive(Args, Debug)]
pub struct StatsArgs {
    /// JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
#[command(group(clap::ArgGroup::new("which").required(true).args(["id", "external_id"])))]
pub struct DeleteArgs {
    /// Internal id of the entry.
    #[arg(long)]
    pub id: Option<u64>,
    /// Brand of the entries (with --external-id).
    #[arg(long, requires = "external_id")]
    pub brand: Option<String>,
    /// External id of the entries (with --brand): every live entry with it is deleted.
    #[arg(long, requires = "brand")]
    pub external_id: Option<String>,
}

impl DeleteArgs {
    /// Which entries the arguments name.
    fn selector(&self) -> Result<Selector> {
        match (self.id, &self.brand, &self.external_id) {
            (Some(id), None, None) => Ok(Selector::Id(id)),
            (None, Some(brand), Some(external_id)) => {
                Ok(Selector::External { brand: brand.clone(), external_id: external_id.clone() })
            }
            _ => bail!("give either --id, or --brand with --external-id"),
        }
    }
}

#[derive(Args, Debug)]
pub struct HnswArgs {
    /// Links per node per layer.
    #[arg(long, default_value_t = HnswParams::default().max_connections)]
    pub max_connections: usize,
    /// Candidate list size while building.
    #[arg(long, default_value_t = HnswParams::default().ef_construction)]
    pub ef_construction: usize,
}

/// Run a parsed command line; returns the process exit code.
pub fn run(cli: Cli) -> Result<u8> {
    let limits = cli.limits.limits();
    if let Command::Serve(args) = &cli.command {
        // LOOKALIKE_SERVER, set for the clients of this server, does not apply to it.
        return serve(&cli.data, args, &limits);
    }
    if let Command::Keys(args) = &cli.command {
        return keys(args);
    }
    if let Some(server) = &cli.server {
        let tls_ca = match &cli.tls_ca {
            Some(p) => Some(std::fs::read(p).with_context(|| format!("reading --tls-ca {}", p.display()))?),
            None => None,
        };
        let remote = remote::Remote { url: server.clone(), api_key: cli.api_key.clone(), tls_ca };
        return remote::run(&remote, &cli.command, &limits);
    }
    match cli.command {
        Command::Serve(_) | Command::Keys(_) => unreachable!("handled above"),
        Command::Index(args) => ingest::run(&cli.data, &args, &limits),
        Command::Query(args) => query(&cli.data, &args, &limits),
        Command::Hash(args) => hash_files(&args, &limits),
        Command::Stats(args) => stats(&cli.data, &args),
        Command::Delete(args) => delete(&cli.data, &args),
        Command::Compact => {
            let mut index = open_writable(&cli.data)?;
            let dropped = index.compact()?;
            outln!("compacted {}: dropped {dropped} deleted records, {} remain", cli.data.display(), index.records());
            Ok(EXIT_OK)
        }
        Command::Repair => {
            let n = Index::repair(&cli.data).with_context(|| format!("repairing {}", cli.data.display()))?;
            outln!("rebuilt {} from its catalog: {n} live entries", cli.data.display());
            Ok(EXIT_OK)
        }
        Command::Hnsw(args) => {
            let mut index = open_writable(&cli.data)?;
            let params = HnswParams { max_connections: args.max_connections, ef_construction: args.ef_construction };
            if !(2..=256).contains(&params.max_connections) || params.ef_construction == 0 {
                bail!("--max-connections must be 2–256 and --ef-construction positive");
            }
            let started = std::time::Instant::now();
            index.build_hnsw(params)?;
            outln!("built an HNSW graph over {} records in {:.1} s", index.records(), started.elapsed().as_secs_f64());
            Ok(EXIT_OK)
        }
    }
}

fn serve(data: &Path, args: &ServeArgs, limits: &DecodeLimits) -> Result<u8> {
    let defaults = grpc::EngineOptions::default();
    let options = grpc::EngineOptions {
        limits: *limits,
        max_in_flight: args.max_in_flight.unwrap_or(defaults.max_in_flight),
        max_queued: args.max_queued.unwrap_or(defaults.max_queued),
    };
    if options.max_in_flight == 0 {
        bail!("--max-in-flight must be at least 1");
    }
    let auth = match &args.keys {
        Some(path) => grpc::auth::Auth::from_file(path)?,
        None => grpc::auth::Auth::open(),
    };
    if !auth.is_enforced() {
        let exposed: Vec<String> = std::iter::once(args.listen)
            .chain((!args.no_http).then_some(args.http))
            .filter(|a| !a.ip().is_loopback())
            .map(|a| a.to_string())
            .collect();
        if !exposed.is_empty() && !args.insecure {
            bail!(
                "refusing to serve {} without API keys: anyone on the network could change the catalog. \
                 Give --keys FILE (make one with `lookalike keys add`), listen on 127.0.0.1, or pass --insecure",
                exposed.join(" and ")
            );
        }
    }
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some((
            std::fs::read(cert).with_context(|| format!("reading --tls-cert {}", cert.display()))?,
            std::fs::read(key).with_context(|| format!("reading --tls-key {}", key.display()))?,
        )),
        (None, None) => None,
        _ => bail!("--tls-cert and --tls-key go together"),
    };
    let serve_options = grpc::ServeOptions {
        max_message_bytes: args.max_message_bytes,
        grace: std::time::Duration::from_secs(args.grace),
        tls,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the runtime")?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .with_context(|| format!("cannot listen on {}", args.listen))?;
        let addr = listener.local_addr().context("reading the bound address")?;
        let dir = data.to_path_buf();
        let engine =
            tokio::task::spawn_blocking(move || grpc::Engine::open(&dir, options.clone()).map(|e| (e, options)))
                .await
                .context("opening the index")?;
        let (mut engine, options) = engine.with_context(|| format!("opening index {}", data.display()))?;
        if !auth.is_enforced() {
            tracing::warn!("no --keys: every call is allowed without an API key");
        }
        engine.set_auth(auth);
        let stats = engine.stats()?;
        let shutdown = shutdown_signal()?;
        tracing::info!(
            data = %data.display(),
            live_entries = stats.live,
            max_in_flight = options.max_in_flight,
            max_queued = options.max_queued,
            max_message_bytes = serve_options.max_message_bytes,
            "serving gRPC on {addr}"
        );
        let engine = std::sync::Arc::new(engine);
        // One signal stops both servers.
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let stopped = move || {
            let mut rx = stop_rx.clone();
            async move {
                let _ = rx.wait_for(|stop| *stop).await;
            }
        };
        let http = if args.no_http {
            None
        } else {
            let listener = tokio::net::TcpListener::bind(args.http).await.with_context(|| {
                format!("cannot listen on {} for HTTP (choose another with --http, or --no-http)", args.http)
            })?;
            let addr = listener.local_addr().context("reading the bound address")?;
            tracing::info!("moderator page on http://{addr}/ (metrics on /metrics)");
            Some(tokio::spawn(crate::web::serve(listener, engine.clone(), serve_options.max_message_bytes, stopped())))
        };
        tokio::spawn(async move {
            shutdown.await;
            let _ = stop_tx.send(true);
        });
        let grpc_result = grpc::serve(listener, engine, &serve_options, stopped()).await;
        if let Some(http) = http {
            // Open page requests are short; they get the same grace period.
            match tokio::time::timeout(serve_options.grace, http).await {
                Ok(joined) => joined.context("HTTP server task")??,
                Err(_) => tracing::warn!("grace period over: closing open HTTP connections"),
            }
        }
        grpc_result
    })?;
    Ok(EXIT_OK)
}

fn keys(args: &KeysArgs) -> Result<u8> {
    match &args.action {
        KeysAction::Add { file, name, role, brands } => {
            let mut keys = if file.exists() { grpc::auth::KeyFile::load(file)? } else { Default::default() };
            let key = keys.add(name, *role, brands.clone())?;
            keys.store(file)?;
            eprintln!("added key {name:?} ({role:?}) to {}; it is shown only now:", file.display());
            outln!("{key}");
        }
        KeysAction::List { file } => {
            for k in grpc::auth::KeyFile::load(file)?.keys {
                outln!("{}\t{:?}\t{}", k.name, k.role, k.brands.join(","));
            }
        }
    }
    Ok(EXIT_OK)
}

/// Listens for Ctrl-C and SIGTERM from now on, and resolves on either. The handlers are
/// installed when this is called, not when the future is first polled: a signal sent as
/// soon as the server is announced (and reachable) must not kill it mid-write.
fn shutdown_signal() -> Result<impl std::future::Future<Output = ()>> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate()).context("listening for SIGTERM")?;
        let mut interrupt = signal(SignalKind::interrupt()).context("listening for Ctrl-C")?;
        Ok(async move {
            tokio::select! {
                _ = interrupt.recv() => tracing::info!("Ctrl-C received"),
                _ = term.recv() => tracing::info!("SIGTERM received"),
            }
        })
    }
    #[cfg(not(unix))]
    Ok(async {
        let _ = tokio::signal::ctrl_c().await;
        tracing::info!("Ctrl-C received");
    })
}

fn open_read(data: &Path) -> Result<Index> {
    Index::open(data, OpenOptions::default()).with_context(|| format!("opening index {}", data.display()))
}

fn open_writable(data: &Path) -> Result<Index> {
    Index::open(data, OpenOptions::writable()).with_context(|| format!("opening index {}", data.display()))
}

/// Read an input argument: a file, or standard input for `-`.
fn read_input(path: &Path, limits: &DecodeLimits) -> Result<Vec<u8>> {
    let mut bytes = Vec::new();
    if path == Path::new("-") {
        std::io::stdin().take(limits.max_bytes as u64 + 1).read_to_end(&mut bytes).context("reading standard input")?;
    } else {
        let file = std::fs::File::open(path).with_context(|| format!("{}", path.display()))?;
        file.take(limits.max_bytes as u64 + 1)
            .read_to_end(&mut bytes)
            .with_context(|| format!("reading {}", path.display()))?;
    }
    Ok(bytes)
}

fn query(data: &Path, args: &QueryArgs, limits: &DecodeLimits) -> Result<u8> {
    let q = Query {
        k: args.k,
        thresholds: Thresholds {
            flag: args.flag,
            review: args.review,
            min_quality: args.min_quality,
            flag_confidence: args.flag_confidence,
            review_confidence: args.review_confidence,
        },
        brand: args.brand.clone(),
        label: args.label.map(Label::from),
        nearest: args.nearest.then_some(match args.engine {
            EngineArg::Exact => NearestEngine::Exact,
            EngineArg::Hnsw => NearestEngine::Hnsw { ef: args.ef },
        }),
    };
    q.thresholds.validate()?;
    if q.k == 0 || q.k > matcher::MAX_K {
        bail!("-k must be between 1 and {}", matcher::MAX_K);
    }
    let index = open_read(data)?;
    if matches!(q.nearest, Some(NearestEngine::Hnsw { .. })) && !index.has_hnsw() {
        bail!("{} has no HNSW graph: build it with `lookalike hnsw`, or use --engine exact", data.display());
    }
    let mut code = EXIT_OK;
    for path in &args.images {
        let result = read_input(path, limits).and_then(|bytes| Ok(matcher::match_image(&index, &bytes, limits, &q)?));
        code = code.max(report_match(path, result, args.json)?);
    }
    Ok(code)
}

/// Print one queried image's result (table or JSON line) or its error, the same way for
/// local and remote queries. Returns the exit code it calls for: 1 when the image matched
/// nothing, was too flat to judge, or failed.
fn report_match(path: &Path, result: Result<matcher::MatchResult>, json: bool) -> Result<u8> {
    match result {
        Ok(r) => {
            if json {
                outln!("{}", output::match_json(path, &r));
            } else {
                out!("{}", output::match_table(path, &r));
            }
            Ok(if matches!(r.verdict, Verdict::NoMatch | Verdict::LowQuality) { EXIT_PARTIAL } else { EXIT_OK })
        }
        Err(e) => {
            if json {
                outln!("{}", serde_json::json!({"path": path.display().to_string(), "error": format!("{e:#}")}));
            }
            eprintln!("lookalike: {}: {e:#}", path.display());
            Ok(EXIT_PARTIAL)
        }
    }
}

fn hash_files(args: &HashArgs, limits: &DecodeLimits) -> Result<u8> {
    let mut code = EXIT_OK;
    for path in &args.images {
        let result = read_input(path, limits).and_then(|bytes| Ok(hash::hash_image(&bytes, limits)?));
        match result {
            Ok(h) => {
                if args.json {
                    outln!("{}", output::hash_json(path, &h, args.orientations));
                } else {
                    out!("{}", output::hash_text(path, &h, args.orientations));
                }
            }
            Err(e) => {
                code = EXIT_PARTIAL;
                eprintln!("lookalike: {}: {e:#}", path.display());
            }
        }
    }
    Ok(code)
}

fn stats(data: &Path, args: &StatsArgs) -> Result<u8> {
    let index = open_read(data)?;
    let stats = index.stats()?;
    if args.json {
        outln!("{}", serde_json::to_string_pretty(&stats)?);
    } else {
        out!("{}", output::stats_text(&stats));
    }
    Ok(EXIT_OK)
}

fn delete(data: &Path, args: &DeleteArgs) -> Result<u8> {
    let selector = args.selector()?;
    let mut index = open_writable(data)?;
    let ids = index.delete(&selector)?;
    crate::audit::AuditLog::open(data)
        .and_then(|audit| audit.deleted(&crate::audit::local_actor(), &selector, &ids))
        .with_context(|| format!("writing the audit log in {}", data.display()))?;
    if ids.is_empty() {
        eprintln!("lookalike: no live entry matches; nothing deleted");
        return Ok(EXIT_PARTIAL);
    }
    let shown: Vec<String> = ids.iter().map(u64::to_string).collect();
    outln!(
        "deleted {} entr{} (id {}); run `lookalike compact` to reclaim space",
        ids.len(),
        if ids.len() == 1 { "y" } else { "ies" },
        shown.join(", ")
    );
    Ok(EXIT_OK)
}

/// Entry point for the binary: parse, set up logging, run, map errors to exit codes.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() { EXIT_ERROR } else { EXIT_OK };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    let default_level = match cli.verbose {
        // The server reports its address and lifecycle; commands stay quiet.
        0 if matches!(cli.command, Command::Serve(_)) => "info",
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(format!("lookalike={default_level},warn")));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let outcome = run(cli).and_then(|code| {
        use std::io::Write as _;
        std::io::stdout().flush().map_err(StdoutClosed::from)?;
        Ok(code)
    });
    match outcome {
        Ok(code) => ExitCode::from(code),
        Err(e) if e.downcast_ref::<StdoutClosed>().is_some_and(|c| c.0.kind() == std::io::ErrorKind::BrokenPipe) => {
            ExitCode::from(EXIT_OK)
        }
        Err(e) => {
            eprintln!("lookalike: error: {e:#}");
            ExitCode::from(EXIT_ERROR)
        }
    }
}
