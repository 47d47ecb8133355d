//! Load generator for the lookalike gRPC service: how fast does `Matcher` answer, and what
//! does the service cost on top of matching in-process?
//!
//! Inputs are real photographs (by default the sample photos in `tests/fixtures`), each
//! decoded, resized to about `--size`×`--size` pixels (aspect ratio kept, EXIF orientation
//! applied) and re-encoded in memory as JPEG quality 90, so every request carries a
//! ~1000×1000 JPEG like a marketplace listing photo. The catalog holds the same images, so
//! every query is a hit; each answer's PDQ hash is checked against the local hash.
//!
//! Modes:
//! - `match`: one connection, sequential unary `Match` calls: latency p50/p90/p99/max and
//!   calls/s, beside the server's own `total_micros` and `hash_micros`, which split the
//!   latency into work done by the server and transport around it.
//! - `stream`: one `MatchStream` with `--in-flight` requests outstanding: throughput and
//!   per-item latency (answers come out of order; `request_id` pairs them with requests).
//! - `inproc`: the same images through `Engine::match_content`, on one thread and on
//!   `--threads` threads (default: all cores): the floor the service is measured against.
//! - `all`: the three in turn on the same images, then the ratios.
//!
//! Every mode warms up (`--warmup`, 1 s), then runs `--repeat` times for `--duration`
//! seconds. A call counts if it completed inside the window; throughput is calls over the
//! window. Tables show each run and the median over runs. On a small, noisy machine, quote
//! the medians and ratios, not single runs.
//!
//! Server: by default (`--spawn`) a fresh one. A temporary data directory gets a catalog
//! through `lookalike index`, then `lookalike --data DIR serve --listen 127.0.0.1:0` starts
//! (its HTTP side on an ephemeral port too; the gRPC address is read from its log), and at
//! the end it gets SIGTERM and must exit 0. Under `cargo run` the `lookalike` binary of the
//! same profile is rebuilt first, so it matches the source. `--server URL` measures a
//! running server instead, with whatever catalog it has. The in-process engine opens the
//! spawned server's data directory after the server has exited (an open index holds an
//! exclusive writer lock); with `--server` it gets a temporary catalog of its own.
//!
//! Where `/proc` exists, each table ends with the minor page faults per call and the
//! kernel's share of CPU time of the process doing the work (the spawned server, or this
//! process in-process): a quick way to see costs that are neither gRPC nor hashing.
//!
//! The client runs on a single-threaded runtime and sends prepared bytes, so it costs
//! little, but a spawned server still shares the cores with it.
//!
//! ```text
//! cargo run --release --example loadgen -- all --duration 5 --repeat 3
//! cargo run --release --example loadgen -- stream --in-flight 16
//! cargo run --release --example loadgen -- match --server http://127.0.0.1:50051
//! cargo run --release --example loadgen -- inproc --images ~/photos --size 1500
//! ```

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Cursor, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use clap::{Parser, ValueEnum};
use image::{DynamicImage, ImageDecoder};
use lookalike::grpc::client::{connect, MatcherClient};
use lookalike::grpc::{pb, Content, Engine, EngineOptions};
use lookalike::hash::{hash_image, DecodeLimits};
use lookalike::matcher::Query;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;

#[derive(Parser, Debug)]
#[command(
    name = "loadgen",
    about = "Measure the lookalike gRPC service's latency and throughput, and compare it with in-process matching.",
    long_about = "Measure the lookalike gRPC service's latency and throughput, and compare it with \
        in-process matching.\n\n\
        Requests are real photos resized to about SIZE×SIZE and re-encoded as JPEG. By default a \
        fresh server is started on a temporary catalog of the same photos, and stopped (SIGTERM, \
        must exit 0) at the end. Each mode warms up, then runs --repeat times for --duration \
        seconds; tables give each run and the median over runs.",
    after_help = "Examples:\n  \
        cargo run --release --example loadgen -- all --duration 5 --repeat 3\n  \
        cargo run --release --example loadgen -- stream --in-flight 16\n  \
        cargo run --release --example loadgen -- match --server http://127.0.0.1:50051"
)]
struct Args {
    /// What to measure.
    #[arg(value_enum)]
    mode: Mode,
    /// Folder of photos (JPEG, PNG or WebP; not walked recursively) [default: the crate's
    /// tests/fixtures].
    #[arg(long, value_name = "DIR")]
    images: Option<PathBuf>,
    /// Resize every photo to about SIZE×SIZE pixels (same pixel count, aspect ratio kept).
    #[arg(long, default_value_t = 1000, value_name = "SIZE", value_parser = clap::value_parser!(u32).range(16..=8000))]
    size: u32,
    /// JPEG quality of the re-encoded photos.
    #[arg(long, default_value_t = 90, value_name = "1-100", value_parser = clap::value_parser!(u8).range(1..=100))]
    jpeg_quality: u8,
    /// Measure a running server at this address (e.g. http://127.0.0.1:50051) instead of
    /// spawning one. Its catalog is used as it is.
    #[arg(long, value_name = "URL")]
    server: Option<String>,
    /// Spawn a fresh server on a temporary catalog of the photos (the default without --server).
    #[arg(long, conflicts_with = "server")]
    spawn: bool,
    /// Seconds measured per run.
    #[arg(long, default_value_t = 10.0, value_name = "SECS")]
    duration: f64,
    /// Seconds of warm-up per mode before the measured runs.
    #[arg(long, default_value_t = 1.0, value_name = "SECS")]
    warmup: f64,
    /// Measured runs per mode; the summary is the median over runs.
    #[arg(long, default_value_t = 3, value_name = "R", value_parser = clap::value_parser!(u32).range(1..))]
    repeat: u32,
    /// Requests outstanding on the MatchStream (stream mode).
    #[arg(long, default_value_t = 8, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=10_000))]
    in_flight: u32,
    /// Threads for the "all cores" in-process run [default: the number of cores].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=1024))]
    threads: Option<u32>,
    /// The `lookalike` binary used to build the catalog and serve [default: the one beside
    /// this example's build directory, rebuilt first when run through cargo].
    #[arg(long, value_name = "PATH")]
    lookalike_bin: Option<PathBuf>,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Sequential unary Match calls on one connection: latency percentiles and calls/s.
    Match,
    /// One MatchStream with --in-flight requests outstanding: images/s and per-item latency.
    Stream,
    /// Engine::match_content in this process, on one thread and on all cores.
    Inproc,
    /// match, stream and inproc on the same photos, then the service/in-process ratios.
    All,
}

impl Args {
    fn duration(&self) -> Duration {
        Duration::from_secs_f64(self.duration)
    }

    fn warmup(&self) -> Duration {
        Duration::from_secs_f64(self.warmup)
    }

    fn check(&self) -> Result<()> {
        ensure!(self.duration.is_finite() && self.duration > 0.0, "--duration must be positive");
        ensure!(self.warmup.is_finite() && self.warmup >= 0.0, "--warmup must be zero or positive");
        Ok(())
    }
}

/// One request image, prepared once.
struct Photo {
    name: String,
    original: (u32, u32),
    size: (u32, u32),
    jpeg: Vec<u8>,
    /// The PDQ hash every answer for this photo must carry (64 hex digits).
    pdq: String,
    quality: u8,
}

fn is_photo(path: &Path) -> bool {
    let ext = path.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase);
    matches!(ext.as_deref(), Some("jpg" | "jpeg" | "png" | "webp")) && path.is_file()
}

/// Decode (EXIF orientation applied), resize to about `size`² pixels, re-encode as JPEG.
fn prepare_photo(path: &Path, size: u32, quality: u8) -> Result<Photo> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let mut decoder = image::ImageReader::new(Cursor::new(&bytes)).with_guessed_format()?.into_decoder()?;
    let orientation = decoder.orientation()?;
    let mut img = DynamicImage::from_decoder(decoder)?;
    img.apply_orientation(orientation);
    let (w, h) = (img.width(), img.height());
    let scale = f64::from(size) / (f64::from(w) * f64::from(h)).sqrt();
    let (nw, nh) = ((f64::from(w) * scale).round().max(1.0) as u32, (f64::from(h) * scale).round().max(1.0) as u32);
    let rgb = img.resize_exact(nw, nh, image::imageops::FilterType::CatmullRom).to_rgb8();
    let mut jpeg = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, quality).encode_image(&rgb)?;
    let hashes = hash_image(&jpeg, &DecodeLimits::default()).context("hashing the re-encoded photo")?;
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    Ok(Photo {
        name,
        original: (w, h),
        size: (nw, nh),
        jpeg,
        pdq: hashes.pdq.hash().to_string(),
        quality: hashes.pdq.quality,
    })
}

fn load_photos(dir: &Path, size: u32, quality: u8) -> Result<Vec<Photo>> {
    let mut paths = Vec::new();
    for item in std::fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
        let path = item.with_context(|| format!("listing {}", dir.display()))?.path();
        if is_photo(&path) {
            paths.push(path);
        }
    }
    paths.sort();
    ensure!(!paths.is_empty(), "no JPEG, PNG or WebP files in {}", dir.display());
    paths.iter().map(|p| prepare_photo(p, size, quality).with_context(|| format!("{}", p.display()))).collect()
}

/// Quote an argument for a POSIX shell when it needs it.
fn shell_quote(arg: &str) -> String {
    let plain = !arg.is_empty()
        && arg.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/' | ':' | '=' | ',' | '+'));
    if plain {
        arg.to_string()
    } else {
        format!("'{}'", arg.replace('\'', r"'\''"))
    }
}

/// The `lookalike` binary: the given one, or the one in this example's target directory
/// (`target/<profile>/examples/loadgen` → `target/<profile>/lookalike`), built first with
/// the same profile when running under cargo (which sets `CARGO` and `CARGO_MANIFEST_DIR`).
fn lookalike_binary(explicit: Option<&Path>) -> Result<PathBuf> {
    if let Some(path) = explicit {
        ensure!(path.is_file(), "--lookalike-bin {}: no such file", path.display());
        return Ok(path.to_path_buf());
    }
    let exe = std::env::current_exe().context("locating this executable")?;
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .context("this executable is not in a cargo target directory: pass --lookalike-bin")?;
    let bin = profile_dir.join(format!("lookalike{}", std::env::consts::EXE_SUFFIX));
    if let (Some(cargo), Some(manifest_dir)) = (std::env::var_os("CARGO"), std::env::var_os("CARGO_MANIFEST_DIR")) {
        let mut build = Command::new(cargo);
        build.args(["build", "--quiet", "--bin", "lookalike", "--manifest-path"]);
        build.arg(Path::new(&manifest_dir).join("Cargo.toml"));
        match profile_dir.file_name().and_then(|n| n.to_str()) {
            Some("release") => {
                build.arg("--release");
            }
            Some("debug") | None => {}
            Some(profile) => {
                build.args(["--profile", profile]);
            }
        }
        eprintln!("loadgen: building the lookalike binary (cargo build --bin lookalike)...");
        let status = build.status().context("running cargo build")?;
        ensure!(status.success(), "cargo build --bin lookalike failed ({status})");
    }
    ensure!(
        bin.is_file(),
        "{} not found: build it (cargo build --release --bin lookalike) or pass --lookalike-bin",
        bin.display()
    );
    Ok(bin)
}

/// A `lookalike` command with no settings inherited from the environment that would change
/// what it does (a server address, a data directory, log filters).
fn lookalike_command(bin: &Path, data: &Path) -> Command {
    let mut cmd = Command::new(bin);
    cmd.env_remove("LOOKALIKE_SERVER").env_remove("LOOKALIKE_DATA").env_remove("RUST_LOG");
    cmd.arg("--data").arg(data);
    cmd
}

/// A temporary data directory with the photos indexed by `lookalike index`.
struct Catalog {
    dir: tempfile::TempDir,
}

impl Catalog {
    fn build(bin: &Path, photos: &[Photo]) -> Result<Catalog> {
        let dir = tempfile::Builder::new().prefix("loadgen-").tempdir().context("creating a temporary directory")?;
        let images = dir.path().join("images");
        std::fs::create_dir(&images)?;
        for (i, photo) in photos.iter().enumerate() {
            let stem = Path::new(&photo.name).file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
            std::fs::write(images.join(format!("{i:03}-{stem}.jpg")), &photo.jpeg)?;
        }
        let catalog = Catalog { dir };
        let output = lookalike_command(bin, &catalog.data())
            .arg("index")
            .arg(&images)
            .args(["--brand", "loadgen", "--label", "authentic", "--quiet"])
            .stdin(Stdio::null())
            .output()
            .context("running lookalike index")?;
        ensure!(
            output.status.success(),
            "lookalike index failed ({}):\n{}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        println!(
            "catalog: lookalike index → {}",
            String::from_utf8_lossy(&output.stdout)
                .trim()
                .replace(&catalog.data().display().to_string(), "a temporary data directory")
        );
        Ok(catalog)
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("index")
    }
}

/// A `lookalike serve` child process. Dropping it kills the process (on error paths);
/// [`Server::stop`] is the orderly end.
struct Server {
    child: Child,
    addr: SocketAddr,
    log: Arc<Mutex<Vec<String>>>,
    reader: Option<JoinHandle<()>>,
}

/// What the server has logged so far.
fn lines_of(log: &Mutex<Vec<String>>) -> Vec<String> {
    log.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
}

/// The address in the server's "serving gRPC on ADDR" log line.
fn served_addr(line: &str) -> Option<SocketAddr> {
    line.split_once("serving gRPC on ")?.1.split_whitespace().next()?.parse().ok()
}

impl Server {
    const STARTUP: Duration = Duration::from_secs(30);
    /// The server's own grace period is 10 s; give it a little more.
    const SHUTDOWN: Duration = Duration::from_secs(15);

    fn start(bin: &Path, data: &Path) -> Result<Server> {
        let mut child = lookalike_command(bin, data)
            // Ephemeral ports for gRPC and for the HTTP side (moderator page, metrics), which
            // stays on as deployed but must not collide with another server on its default port.
            .args(["serve", "--listen", "127.0.0.1:0", "--http", "127.0.0.1:0"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let stderr = child.stderr.take().context("the server's stderr is not piped")?;
        let log = Arc::new(Mutex::new(Vec::new()));
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        // Keep draining stderr for the server's whole life: a full pipe would block it.
        let reader = std::thread::spawn({
            let log = log.clone();
            move || {
                for line in BufReader::new(stderr).lines() {
                    let Ok(line) = line else { break };
                    if let Some(addr) = served_addr(&line) {
                        let _ = addr_tx.send(addr);
                    }
                    log.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(line);
                }
            }
        });
        let addr = match addr_rx.recv_timeout(Self::STARTUP) {
            Ok(addr) => addr,
            Err(_) => {
                let _ = child.kill();
                let status = child.wait()?;
                let _ = reader.join();
                bail!("the server did not report its address ({status}); its log:\n{}", lines_of(&log).join("\n"))
            }
        };
        Ok(Server { child, addr, log, reader: Some(reader) })
    }

    /// SIGTERM, wait for the exit, require status 0; print what the log says about problems.
    fn stop(mut self) -> Result<()> {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill").args(["-TERM", &pid]).status().context("running kill")?;
        ensure!(sent.success(), "kill -TERM {pid} failed ({sent})");
        let asked = Instant::now();
        let status = loop {
            if let Some(status) = self.child.try_wait()? {
                break status;
            }
            if asked.elapsed() > Self::SHUTDOWN {
                let _ = self.child.kill();
                self.child.wait()?;
                bail!(
                    "the server did not exit within {:?} of SIGTERM; its log:\n{}",
                    Self::SHUTDOWN,
                    lines_of(&self.log).join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        let took = asked.elapsed();
        if let Some(reader) = self.reader.take() {
            let _ = reader.join(); // the pipe is closed: the reader has seen every line
        }
        ensure!(
            status.success(),
            "the server exited with {status} after SIGTERM; its log:\n{}",
            lines_of(&self.log).join("\n")
        );
        let lines = lines_of(&self.log);
        let problems: Vec<&String> = lines.iter().filter(|l| l.contains("WARN") || l.contains("ERROR")).collect();
        println!(
            "server: SIGTERM → exited 0 in {:.0} ms; {} log lines, {} warnings/errors",
            took.as_secs_f64() * 1e3,
            lines.len(),
            problems.len()
        );
        for line in problems.iter().take(10) {
            println!("  {line}");
        }
        Ok(())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// What one measured run saw. Only calls that completed inside the window count.
#[derive(Default)]
struct Run {
    window: Duration,
    /// Per call, as the caller saw it.
    latency: Vec<Duration>,
    /// Per call, the server's `total_micros` (gRPC modes only).
    server: Vec<Duration>,
    /// Per call, decoding and hashing as the engine timed it.
    hash: Vec<Duration>,
}

/// A run's numbers; times in milliseconds.
#[derive(Clone, Copy)]
struct Stats {
    calls: f64,
    per_sec: f64,
    p50: f64,
    p90: f64,
    p99: f64,
    max: f64,
    server_p50: Option<f64>,
    hash_p50: f64,
}

/// Nearest-rank percentile of sorted samples, in milliseconds.
fn percentile_ms(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = (p * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1].as_secs_f64() * 1e3
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    match xs.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => xs[n / 2],
        n => (xs[n / 2 - 1] + xs[n / 2]) / 2.0,
    }
}

impl Run {
    fn record(&mut self, latency: Duration, server: Option<Duration>, hash: Duration) {
        self.latency.push(latency);
        self.server.extend(server);
        self.hash.push(hash);
    }

    fn stats(mut self) -> Stats {
        self.latency.sort_unstable();
        self.server.sort_unstable();
        self.hash.sort_unstable();
        let calls = self.latency.len() as f64;
        Stats {
            calls,
            per_sec: calls / self.window.as_secs_f64(),
            p50: percentile_ms(&self.latency, 0.5),
            p90: percentile_ms(&self.latency, 0.9),
            p99: percentile_ms(&self.latency, 0.99),
            max: percentile_ms(&self.latency, 1.0),
            server_p50: (!self.server.is_empty()).then(|| percentile_ms(&self.server, 0.5)),
            hash_p50: percentile_ms(&self.hash, 0.5),
        }
    }
}

/// Field by field median over runs.
fn median_stats(runs: &[Stats]) -> Stats {
    let m = |f: fn(&Stats) -> f64| median(runs.iter().map(f).collect());
    Stats {
        calls: m(|s| s.calls),
        per_sec: m(|s| s.per_sec),
        p50: m(|s| s.p50),
        p90: m(|s| s.p90),
        p99: m(|s| s.p99),
        max: m(|s| s.max),
        server_p50: runs.iter().all(|s| s.server_p50.is_some()).then(|| m(|s| s.server_p50.unwrap_or(f64::NAN))),
        hash_p50: m(|s| s.hash_p50),
    }
}

/// Minor page faults and CPU ticks of a process so far (Linux `/proc/PID/stat`).
#[derive(Clone, Copy)]
struct ProcCounters {
    minor_faults: u64,
    user_ticks: u64,
    system_ticks: u64,
}

impl ProcCounters {
    /// None where there is no `/proc` (or the process is gone).
    fn read(pid: u32) -> Option<ProcCounters> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // After the command name (in parentheses, may hold spaces) come fields 3, 4, ...:
        // minflt is field 10, utime 14, stime 15.
        let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
        let field = |n: usize| fields.get(n - 3)?.parse().ok();
        Some(ProcCounters { minor_faults: field(10)?, user_ticks: field(14)?, system_ticks: field(15)? })
    }
}

/// A process watched over a table's measured runs.
struct Watched {
    who: &'static str,
    pid: u32,
    before: ProcCounters,
}

/// Prints a table row by row as runs finish (the long modes show progress that way), and
/// what the process doing the work (`watch`: a name and a pid) spent meanwhile.
struct Table {
    watched: Option<Watched>,
}

impl Table {
    fn start(title: &str, rate_unit: &str, watch: Option<(&'static str, u32)>) -> Table {
        println!("\n== {title} ==");
        println!(
            "{:>6} {:>7} {:>9} {:>8} {:>8} {:>8} {:>8} {:>11} {:>9}",
            "run", "calls", rate_unit, "p50 ms", "p90 ms", "p99 ms", "max ms", "server p50", "hash p50"
        );
        let watched = watch.and_then(|(who, pid)| ProcCounters::read(pid).map(|before| Watched { who, pid, before }));
        Table { watched }
    }

    fn row(&self, label: &str, s: &Stats) {
        let server = s.server_p50.map_or_else(|| "-".to_string(), |v| format!("{v:.2}"));
        println!(
            "{label:>6} {:>7.0} {:>9.2} {:>8.2} {:>8.2} {:>8.2} {:>8.2} {server:>11} {:>9.2}",
            s.calls, s.per_sec, s.p50, s.p90, s.p99, s.max, s.hash_p50
        );
        let _ = std::io::stdout().flush();
    }

    /// The median row, and the watched process's page faults per call and kernel share of
    /// its CPU time over the runs.
    fn finish(self, runs: &[Stats]) -> Outcome {
        let median = median_stats(runs);
        self.row("median", &median);
        let mut faults_per_call = None;
        if let Some(w) = &self.watched {
            if let Some(after) = ProcCounters::read(w.pid) {
                let calls: f64 = runs.iter().map(|s| s.calls).sum();
                let faults = after.minor_faults.saturating_sub(w.before.minor_faults) as f64 / calls.max(1.0);
                let system = after.system_ticks.saturating_sub(w.before.system_ticks) as f64;
                let user = after.user_ticks.saturating_sub(w.before.user_ticks) as f64;
                println!(
                    "  {} over these runs: {faults:.0} minor page faults per call; {:.0}% of its CPU time in the kernel",
                    w.who,
                    100.0 * system / (user + system).max(1.0)
                );
                faults_per_call = Some(faults);
            }
        }
        Outcome { median, faults_per_call }
    }
}

/// What a table found: its median row, and the page faults per call of the process that
/// did the work (where `/proc` tells).
#[derive(Clone, Copy)]
struct Outcome {
    median: Stats,
    faults_per_call: Option<f64>,
}

/// The answer must be a success carrying the photo's hash.
fn check_answer(response: &pb::MatchResponse, photo: &Photo) -> Result<()> {
    if let Some(e) = &response.error {
        bail!("{}: the server answered with error code {}: {}", photo.name, e.code, e.message);
    }
    ensure!(
        response.pdq == photo.pdq,
        "{}: the server's PDQ hash {} differs from the local one {}",
        photo.name,
        response.pdq,
        photo.pdq
    );
    Ok(())
}

fn match_request(photo: &Photo) -> pb::MatchRequest {
    pb::MatchRequest { query: Some(pb::match_request::Query::Image(photo.jpeg.clone())), ..Default::default() }
}

/// Sequential unary calls for `duration`, cycling through the photos.
async fn match_run(client: &mut MatcherClient<Channel>, photos: &[Photo], duration: Duration) -> Result<Run> {
    let requests: Vec<pb::MatchRequest> = photos.iter().map(match_request).collect();
    let mut run = Run { window: duration, ..Run::default() };
    let end = Instant::now() + duration;
    for (photo, template) in photos.iter().zip(&requests).cycle() {
        if Instant::now() >= end {
            break;
        }
        let request = template.clone();
        let sent = Instant::now();
        let response = client.r#match(request).await.with_context(|| format!("Match({})", photo.name))?.into_inner();
        let done = Instant::now();
        check_answer(&response, photo)?;
        if done <= end {
            run.record(
                done - sent,
                Some(Duration::from_micros(response.total_micros)),
                Duration::from_micros(response.hash_micros),
            );
        }
    }
    Ok(run)
}

/// One MatchStream kept at `in_flight` outstanding requests for `duration`, then drained
/// (answers after the window are checked but not counted). `tag` makes request ids unique.
async fn stream_run(
    client: &mut MatcherClient<Channel>,
    photos: &[Photo],
    in_flight: usize,
    duration: Duration,
    tag: &str,
) -> Result<Run> {
    let requests: Vec<pb::MatchRequest> = photos.iter().map(match_request).collect();
    let (tx, rx) = tokio::sync::mpsc::channel(in_flight);
    let mut tx = Some(tx);
    let mut pending: HashMap<String, (Instant, usize)> = HashMap::with_capacity(in_flight);
    let mut sent_count = 0usize;
    let mut next_request = |pending: &mut HashMap<String, (Instant, usize)>| {
        let k = sent_count % photos.len();
        let mut request = requests[k].clone();
        request.request_id = format!("{tag}-{sent_count}");
        pending.insert(request.request_id.clone(), (Instant::now(), k));
        sent_count += 1;
        request
    };
    let started = Instant::now();
    let end = started + duration;
    // The first window goes into the channel before the call, so nothing waits on headers.
    for _ in 0..in_flight {
        let request = next_request(&mut pending);
        tx.as_ref().context("request channel closed")?.send(request).await.context("queueing a request")?;
    }
    let mut inbound = client.match_stream(ReceiverStream::new(rx)).await.context("opening MatchStream")?.into_inner();
    let mut run = Run { window: duration, ..Run::default() };
    while let Some(response) = inbound.message().await.context("reading MatchStream")? {
        let done = Instant::now();
        let (sent, k) = pending
            .remove(&response.request_id)
            .with_context(|| format!("answer with unknown or repeated request_id {:?}", response.request_id))?;
        check_answer(&response, &photos[k])?;
        if done <= end {
            run.record(
                done - sent,
                Some(Duration::from_micros(response.total_micros)),
                Duration::from_micros(response.hash_micros),
            );
        }
        match &tx {
            Some(sender) if done < end => {
                let request = next_request(&mut pending);
                sender.send(request).await.context("queueing a request")?;
            }
            // Window over: close our side; the server answers what is pending, then ends.
            Some(_) => tx = None,
            None => {}
        }
    }
    ensure!(pending.is_empty(), "MatchStream ended with {} requests unanswered", pending.len());
    Ok(run)
}

/// `threads` threads calling `Engine::match_content` for `duration`, each cycling through
/// the photos from its own starting point.
fn inproc_run(
    engine: &Engine,
    photos: &[Photo],
    contents: &[Content],
    threads: usize,
    duration: Duration,
) -> Result<Run> {
    let query = Query::default();
    let end = Instant::now() + duration;
    let per_thread: Vec<Result<Run>> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|t| {
                let query = &query;
                scope.spawn(move || -> Result<Run> {
                    let mut run = Run::default();
                    for k in (0..photos.len()).cycle().skip(t) {
                        if Instant::now() >= end {
                            break;
                        }
                        let sent = Instant::now();
                        let result = engine
                            .match_content(&contents[k], query, None)
                            .map_err(|e| anyhow::anyhow!("{}: in-process match failed: {e}", photos[k].name))?;
                        let done = Instant::now();
                        ensure!(result.pdq.to_string() == photos[k].pdq, "{}: in-process hash differs", photos[k].name);
                        if done <= end {
                            run.record(done - sent, None, result.hash_time);
                        }
                    }
                    Ok(run)
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().unwrap_or_else(|_| Err(anyhow::anyhow!("a worker panicked")))).collect()
    });
    let mut run = Run { window: duration, ..Run::default() };
    for part in per_thread {
        let part = part?;
        run.latency.extend(part.latency);
        run.hash.extend(part.hash);
    }
    Ok(run)
}

/// The summaries the ratios are made of.
#[derive(Default)]
struct Summary {
    unary: Option<Outcome>,
    stream: Option<Outcome>,
    one_thread: Option<Outcome>,
    all_cores: Option<(usize, Outcome)>,
}

/// Match and MatchStream against `url`; `server_pid` is the spawned server's, if any.
async fn service_benchmarks(
    args: &Args,
    url: &str,
    server_pid: Option<u32>,
    photos: &[Photo],
    summary: &mut Summary,
) -> Result<()> {
    let watch = server_pid.map(|pid| ("server process", pid));
    let channel = connect(url).await?;
    let mut client = MatcherClient::new(channel);
    let (duration, warmup) = (args.duration(), args.warmup());
    if matches!(args.mode, Mode::Match | Mode::All) {
        match_run(&mut client, photos, warmup).await.context("warm-up")?;
        let table = Table::start("Match: unary, one connection, sequential", "calls/s", watch);
        let mut runs = Vec::new();
        for r in 1..=args.repeat {
            let stats = match_run(&mut client, photos, duration).await?.stats();
            table.row(&r.to_string(), &stats);
            runs.push(stats);
        }
        summary.unary = Some(table.finish(&runs));
    }
    if matches!(args.mode, Mode::Stream | Mode::All) {
        let in_flight = args.in_flight as usize;
        stream_run(&mut client, photos, in_flight, warmup, "warmup").await.context("warm-up")?;
        let title = format!("MatchStream: one stream, {in_flight} requests in flight");
        let table = Table::start(&title, "images/s", watch);
        let mut runs = Vec::new();
        for r in 1..=args.repeat {
            let stats = stream_run(&mut client, photos, in_flight, duration, &format!("run{r}")).await?.stats();
            table.row(&r.to_string(), &stats);
            runs.push(stats);
        }
        summary.stream = Some(table.finish(&runs));
    }
    Ok(())
}

fn inproc_benchmarks(args: &Args, data: &Path, photos: &[Photo], summary: &mut Summary) -> Result<()> {
    let engine = Engine::open(data, EngineOptions::default())
        .map_err(|e| anyhow::anyhow!("opening the index {} in-process: {e}", data.display()))?;
    let contents: Vec<Content> = photos.iter().map(|p| Content::Image(p.jpeg.clone())).collect();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let threads = args.threads.map_or(cores, |t| t as usize);
    let measure = |n: usize| -> Result<Outcome> {
        inproc_run(&engine, photos, &contents, n, args.warmup()).context("warm-up")?;
        let plural = if n == 1 { "" } else { "s" };
        let table = Table::start(
            &format!("in-process: Engine::match_content, {n} thread{plural}"),
            "calls/s",
            Some(("this process", std::process::id())),
        );
        let mut runs = Vec::new();
        for r in 1..=args.repeat {
            let stats = inproc_run(&engine, photos, &contents, n, args.duration())?.stats();
            table.row(&r.to_string(), &stats);
            runs.push(stats);
        }
        Ok(table.finish(&runs))
    };
    let one = measure(1)?;
    summary.one_thread = Some(one);
    summary.all_cores = Some((threads, if threads == 1 { one } else { measure(threads)? }));
    Ok(())
}

fn print_ratios(summary: &Summary) {
    println!("\n== Service against in-process (medians over runs) ==");
    if let (Some(stream), Some((n, all))) = (&summary.stream, &summary.all_cores) {
        let (stream, all) = (&stream.median, &all.median);
        println!(
            "MatchStream throughput / in-process {n}-thread throughput: {:.1} / {:.1} images/s = {:.2}",
            stream.per_sec,
            all.per_sec,
            stream.per_sec / all.per_sec
        );
    }
    let (Some(unary), Some(one)) = (&summary.unary, &summary.one_thread) else { return };
    let (u, o) = (&unary.median, &one.median);
    println!(
        "Match p50 / in-process 1-thread p50:                  {:.2} / {:.2} ms = {:.2}",
        u.p50,
        o.p50,
        u.p50 / o.p50
    );
    println!(
        "Match calls/s / in-process 1-thread calls/s:          {:.1} / {:.1} = {:.2}",
        u.per_sec,
        o.per_sec,
        u.per_sec / o.per_sec
    );
    if let Some(server) = u.server_p50 {
        println!(
            "Match p50 = server total {server:.2} ms (of which hashing {:.2} ms) + client and transport {:.2} ms",
            u.hash_p50,
            u.p50 - server
        );
        println!(
            "Hashing p50, server / in-process 1 thread:            {:.2} / {:.2} ms = {:.2}",
            u.hash_p50,
            o.hash_p50,
            u.hash_p50 / o.hash_p50
        );
    }
    if let (Some(server), Some(local)) = (unary.faults_per_call, one.faults_per_call) {
        println!("Minor page faults per call, server (Match) / in-process 1 thread: {server:.0} / {local:.0}");
    }
}

fn main() -> ExitCode {
    match run(&Args::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("loadgen: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> Result<()> {
    args.check()?;
    let shown: Vec<String> = std::env::args().skip(1).map(|a| shell_quote(&a)).collect();
    println!("command: cargo run --release --example loadgen -- {}", shown.join(" "));
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let profile = if cfg!(debug_assertions) { "debug (numbers are meaningless: use --release)" } else { "release" };
    println!(
        "machine: {cores} cores; loadgen build: {profile}; {} s per run after {} s warm-up, {} runs per mode",
        args.duration, args.warmup, args.repeat
    );

    let default_images = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let (images_dir, images_shown) = match &args.images {
        Some(dir) => (dir.clone(), dir.display().to_string()),
        None => (default_images, "tests/fixtures".to_string()),
    };
    let photos = load_photos(&images_dir, args.size, args.jpeg_quality)?;
    let total: usize = photos.iter().map(|p| p.jpeg.len()).sum();
    println!(
        "photos: {} from {images_shown}, resized to about {s}×{s} and re-encoded as JPEG quality {}, {:.0} KB on average:",
        photos.len(),
        args.jpeg_quality,
        total as f64 / photos.len() as f64 / 1024.0,
        s = args.size
    );
    for p in &photos {
        println!(
            "  {:<28} {:>5}×{:<5} → {:>5}×{:<5} {:>7} bytes  PDQ quality {:>3}",
            p.name,
            p.original.0,
            p.original.1,
            p.size.0,
            p.size.1,
            p.jpeg.len(),
            p.quality
        );
    }

    let wants_service = matches!(args.mode, Mode::Match | Mode::Stream | Mode::All);
    let wants_inproc = matches!(args.mode, Mode::Inproc | Mode::All);
    let remote = if args.spawn { None } else { args.server.clone() };
    let local = if wants_inproc || (wants_service && remote.is_none()) {
        let bin = lookalike_binary(args.lookalike_bin.as_deref())?;
        let catalog = Catalog::build(&bin, &photos)?;
        Some((bin, catalog))
    } else {
        None
    };

    let mut summary = Summary::default();
    if wants_service {
        let (url, server) = match &remote {
            Some(url) => {
                println!("server: {url} (already running; its catalog as it is)");
                (url.clone(), None)
            }
            None => {
                let (bin, catalog) = local.as_ref().context("no local catalog to serve")?;
                let server = Server::start(bin, &catalog.data())?;
                println!(
                    "server: spawned lookalike serve (pid {}) on {} over the temporary catalog",
                    server.child.id(),
                    server.addr
                );
                (format!("http://{}", server.addr), Some(server))
            }
        };
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let server_pid = server.as_ref().map(|s| s.child.id());
        runtime.block_on(service_benchmarks(args, &url, server_pid, &photos, &mut summary))?;
        drop(runtime); // closes the connection
        if let Some(server) = server {
            server.stop()?;
        }
    }
    if wants_inproc {
        let (_, catalog) = local.as_ref().context("no local catalog")?;
        if remote.is_some() {
            println!("\nin-process: a temporary catalog of the photos (not the server's)");
        }
        inproc_benchmarks(args, &catalog.data(), &photos, &mut summary)?;
    }
    if args.mode == Mode::All {
        print_ratios(&summary);
    }
    Ok(())
}
