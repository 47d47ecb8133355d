//! Load generator for the lookalike gRPC service: how fast does `Matcher` answer, and what
//! does the service cost on top of matching in-process?
//!
//! Inputs are real photographs (by default the sample photos in `tests/fixtures`), each
//! decoded, resized to about `--size`×`--size` pixels (aspect ratio kept, EXIF orientation
//! applied) and re-encoded in memory as JPEG quality 90, so every request carries a
//! ~1000×1000 JPEG like a marketplace listing photo. The catalog holds the same images, so
//! every query is a hit; each answer's PDQ hash is checked against the local hash.
//!
//! With `--as-is` the files' own bytes are sent instead (e.g. a folder of 1000×1000
//! listing JPEGs); with `--index DIR` the server and the in-process engine each get a copy
//! of that data directory instead of a catalog of the photos, so answers need not be hits.
//!
//! Modes:
//! - `match`: unary `Match` calls on one connection, one after another or `--concurrency`
//!   at once: latency p50/p90/p99/max and calls/s, beside the server's own `total_micros`
//!   and `hash_micros`, which split the latency into work done by the server and transport
//!   around it.
//! - `stream`: one `MatchStream` with `--in-flight` requests outstanding: throughput and
//!   per-item latency (answers come out of order; `request_id` pairs them with requests).
//! - `inproc`: the same images through `Engine::match_content`, on one thread and on
//!   `--threads` threads (default: all cores): the floor the service is measured against.
//! - `all`: the three on the same images, run by run in turns (the in-process engine opens
//!   its own copy of the catalog while the server runs), then the ratios.
//! - `overload`: phase 1 finds the sustainable Match rate (closed loop, 4 × cores callers);
//!   phase 2 offers twice that, open loop (every request its own task, `--deadline` 2 s),
//!   for `--duration` (300 s); phase 3 offers half of it for `--recovery` (30 s). Per
//!   `--window` (10 s): sent, OK, RESOURCE_EXHAUSTED, DEADLINE_EXCEEDED, other, lost,
//!   admitted p50/p99 and the server's VmRSS; then a verdict. Fails if a request got no
//!   status, or VmRSS grew over phase 2 by more than `--rss-margin` % (and 16 MiB).
//! - `memory`: `--clients` (16) connections send ~30 MiB bodies in turn for `--duration`
//!   (60 s): a noisy JPEG and a 100-megapixel PNG that decode, random junk, and a PNG
//!   header declaring 60000×60000 followed by junk. The server's VmRSS is sampled every
//!   20 ms; its peak and VmHWM are set against the bound its limits imply. `--streams`
//!   puts several requests on each connection, `--max-in-flight` / `--max-queued` go to
//!   the server. Both modes need a spawned server (they read /proc/PID/status).
//!
//! Every mode warms up (`--warmup`, 1 s), then runs `--repeat` times for `--duration`
//! seconds; with several benchmarks (`all`), round by round, one run of each per round and
//! the order rotating, so that a change in machine load falls on all of them. A call counts
//! if it completed inside the window; throughput is calls over the window. Tables show each
//! run and the median over runs. On a small, noisy machine, quote the medians and ratios,
//! not single runs.
//!
//! Server: by default (`--spawn`) a fresh one. A temporary data directory gets a catalog
//! through `lookalike index`, then `lookalike --data DIR serve --listen 127.0.0.1:0` starts
//! (its HTTP side on an ephemeral port too; the gRPC address is read from its log), and at
//! the end it gets SIGTERM and must exit 0. Under `cargo run` the `lookalike` binary of the
//! same profile is rebuilt first, so it matches the source. `--server URL` measures a
//! running server instead, with whatever catalog it has. The in-process engine opens a
//! copy of the spawned server's data directory (an open index holds an exclusive writer
//! lock); with `--server` it gets a temporary catalog of its own (or a copy of `--index`).
//!
//! Where `/proc` exists, every run reads the CPU time of the process doing the work (the
//! spawned server, or this process in-process) and of the client (this process), shown
//! per call; each table ends with the minor page faults per call and the kernel's share of
//! the working process's CPU time: a quick way to see costs that are neither gRPC nor
//! hashing.
//!
//! The client runs on a single-threaded runtime and sends prepared bytes, so it costs
//! little (its CPU time is in the tables), but a spawned server shares the cores with it.
//!
//! ```text
//! cargo run --release --example loadgen -- all --duration 5 --repeat 3
//! cargo run --release --example loadgen -- all --images /tmp/q1000 --as-is --index DATA --concurrency 4
//! cargo run --release --example loadgen -- stream --in-flight 16
//! cargo run --release --example loadgen -- match --server http://127.0.0.1:50051
//! cargo run --release --example loadgen -- inproc --images ~/photos --size 1500
//! cargo run --release --example loadgen -- overload
//! cargo run --release --example loadgen -- memory --max-in-flight 1
//! ```

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader, Cursor, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use clap::{Parser, ValueEnum};
use image::{DynamicImage, ImageDecoder, ImageEncoder};
use lookalike::grpc::client::{connect, MatcherClient};
use lookalike::grpc::{pb, Content, Engine, EngineOptions, ServeOptions};
use lookalike::hash::{hash_image, DecodeLimits};
use lookalike::matcher::Query;
use rand::rngs::SmallRng;
use rand::{RngCore, SeedableRng};
use tokio::task::JoinSet;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;

/// The allocator the `lookalike` binary uses, so that in-process matching is the same work
/// (glibc's malloc costs page faults on every 1000×1000 decode; see src/main.rs).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
        cargo run --release --example loadgen -- match --server http://127.0.0.1:50051\n  \
        cargo run --release --example loadgen -- overload --duration 300\n  \
        cargo run --release --example loadgen -- memory --clients 16 --duration 60"
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
    /// Send the files' own bytes, neither resized nor re-encoded (--size and --jpeg-quality
    /// are ignored).
    #[arg(long)]
    as_is: bool,
    /// Serve, and match in-process against, copies of this data directory (left untouched)
    /// instead of a catalog of the photos; answers need not be hits.
    #[arg(long, value_name = "DIR")]
    index: Option<PathBuf>,
    /// Measure a running server at this address (e.g. http://127.0.0.1:50051) instead of
    /// spawning one. Its catalog is used as it is.
    #[arg(long, value_name = "URL")]
    server: Option<String>,
    /// Spawn a fresh server on a temporary catalog of the photos (the default without --server).
    #[arg(long, conflicts_with = "server")]
    spawn: bool,
    /// Seconds measured per run [default: 10; overload: 300, its phase 2; memory: 60].
    #[arg(long, value_name = "SECS")]
    duration: Option<f64>,
    /// Seconds of warm-up per mode before the measured runs.
    #[arg(long, default_value_t = 1.0, value_name = "SECS")]
    warmup: f64,
    /// Measured runs per mode; the summary is the median over runs.
    #[arg(long, default_value_t = 3, value_name = "R", value_parser = clap::value_parser!(u32).range(1..))]
    repeat: u32,
    /// Requests outstanding on the MatchStream (stream mode).
    #[arg(long, default_value_t = 8, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=10_000))]
    in_flight: u32,
    /// Unary Match calls outstanding at once on the connection (match mode); above 1 they
    /// are set against the in-process run on --threads threads.
    #[arg(long, default_value_t = 1, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=1000))]
    concurrency: u32,
    /// Threads for the "all cores" in-process run [default: the number of cores].
    /// Several (e.g. 2,4) give one in-process run each.
    #[arg(long, value_name = "N,...", value_delimiter = ',', value_parser = clap::value_parser!(u32).range(1..=1024))]
    threads: Vec<u32>,
    /// overload: seconds of phase 1, which finds the sustainable rate (closed loop).
    #[arg(long, default_value_t = 15.0, value_name = "SECS")]
    calibrate: f64,
    /// overload: seconds of phase 3, at half the sustainable rate.
    #[arg(long, default_value_t = 30.0, value_name = "SECS")]
    recovery: f64,
    /// overload: seconds per table row.
    #[arg(long, default_value_t = 10.0, value_name = "SECS")]
    window: f64,
    /// overload, memory: deadline of every request (grpc-timeout) [default: overload 2, memory 30].
    #[arg(long, value_name = "SECS")]
    deadline: Option<f64>,
    /// overload: fail if the server's VmRSS grows over phase 2 by more than this percentage
    /// (and more than 16 MiB).
    #[arg(long, default_value_t = 20.0, value_name = "PCT")]
    rss_margin: f64,
    /// memory: concurrent clients, each on its own connection.
    #[arg(long, default_value_t = 16, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=1000))]
    clients: u32,
    /// memory: requests each client keeps outstanding on its connection (HTTP/2 streams).
    #[arg(long, default_value_t = 1, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=1000))]
    streams: u32,
    /// memory: payload kinds sent in turn.
    #[arg(long, value_delimiter = ',', default_value = "jpeg,png,junk,bomb", value_parser = ["jpeg", "png", "junk", "bomb"])]
    kinds: Vec<String>,
    /// memory: size of every payload in MiB (under the server's 32 MiB message limit).
    #[arg(long, default_value_t = 30.0, value_name = "MIB")]
    payload_mib: f64,
    /// --max-in-flight of the spawned server [default: its own, 2 × cores].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    max_in_flight: Option<u64>,
    /// --max-queued of the spawned server [default: its own, 8 × cores].
    #[arg(long, value_name = "N")]
    max_queued: Option<u64>,
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
    /// A spawned server at 2× its sustainable Match rate for --duration (after calibrating),
    /// then at 0.5×: outcomes, latency and server VmRSS per --window.
    Overload,
    /// A spawned server fed ~30 MB images (and junk) by --clients connections: peak VmRSS
    /// against the bound the server's limits imply.
    Memory,
}

impl Args {
    fn duration(&self) -> Duration {
        let default = match self.mode {
            Mode::Overload => 300.0,
            Mode::Memory => 60.0,
            _ => 10.0,
        };
        Duration::from_secs_f64(self.duration.unwrap_or(default))
    }

    fn deadline(&self) -> Duration {
        Duration::from_secs_f64(self.deadline.unwrap_or(if self.mode == Mode::Memory { 30.0 } else { 2.0 }))
    }

    fn warmup(&self) -> Duration {
        Duration::from_secs_f64(self.warmup)
    }

    fn check(&self) -> Result<()> {
        let positive = |x: f64| x.is_finite() && x > 0.0;
        ensure!(self.duration.is_none_or(positive), "--duration must be positive");
        ensure!(self.deadline.is_none_or(positive), "--deadline must be positive");
        ensure!(
            positive(self.calibrate) && positive(self.recovery) && positive(self.window),
            "--calibrate, --recovery and --window must be positive"
        );
        ensure!(positive(self.payload_mib) && self.payload_mib < 32.0, "--payload-mib must be between 0 and 32");
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

/// A file sent as it is.
fn read_photo(path: &Path) -> Result<Photo> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let size = image::ImageReader::new(Cursor::new(&bytes)).with_guessed_format()?.into_dimensions()?;
    let hashes = hash_image(&bytes, &DecodeLimits::default()).context("hashing the photo")?;
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    Ok(Photo {
        name,
        original: size,
        size,
        jpeg: bytes,
        pdq: hashes.pdq.hash().to_string(),
        quality: hashes.pdq.quality,
    })
}

/// The photos in `dir`: resized and re-encoded, or with `size` None, as they are.
fn load_photos(dir: &Path, size: Option<u32>, quality: u8) -> Result<Vec<Photo>> {
    let mut paths = Vec::new();
    for item in std::fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
        let path = item.with_context(|| format!("listing {}", dir.display()))?.path();
        if is_photo(&path) {
            paths.push(path);
        }
    }
    paths.sort();
    ensure!(!paths.is_empty(), "no JPEG, PNG or WebP files in {}", dir.display());
    let prepare = |p: &PathBuf| match size {
        Some(size) => prepare_photo(p, size, quality),
        None => read_photo(p),
    };
    paths.iter().map(|p| prepare(p).with_context(|| format!("{}", p.display()))).collect()
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

    /// A copy of the data directory `from` (which is only read).
    fn copy_of(from: &Path) -> Result<Catalog> {
        fn copy_tree(from: &Path, to: &Path) -> Result<()> {
            std::fs::create_dir(to).with_context(|| format!("creating {}", to.display()))?;
            for item in std::fs::read_dir(from).with_context(|| format!("listing {}", from.display()))? {
                let item = item?;
                let target = to.join(item.file_name());
                if item.file_type()?.is_dir() {
                    copy_tree(&item.path(), &target)?;
                } else {
                    std::fs::copy(item.path(), &target)
                        .with_context(|| format!("copying {}", item.path().display()))?;
                }
            }
            Ok(())
        }
        ensure!(from.join("manifest.json").is_file(), "{} is not a lookalike data directory", from.display());
        let dir = tempfile::Builder::new().prefix("loadgen-").tempdir().context("creating a temporary directory")?;
        let catalog = Catalog { dir };
        copy_tree(from, &catalog.data())?;
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

    fn start(bin: &Path, data: &Path, extra: &[String]) -> Result<Server> {
        let mut child = lookalike_command(bin, data)
            // Ephemeral ports for gRPC and for the HTTP side (moderator page, metrics), which
            // stays on as deployed but must not collide with another server on its default port.
            .args(["serve", "--listen", "127.0.0.1:0", "--http", "127.0.0.1:0"])
            .args(extra)
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
    /// What the process doing the work (the server, or this one in-process) spent.
    work: Option<Spent>,
    /// What this process spent as the client (gRPC modes only).
    client: Option<Spent>,
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
    /// CPU milliseconds per call of the process doing the work.
    work_cpu: Option<f64>,
    /// CPU milliseconds per call of the client.
    client_cpu: Option<f64>,
    /// Minor page faults per call of the process doing the work.
    faults: Option<f64>,
    /// Kernel share of the working process's CPU time, in percent.
    kernel_pct: Option<f64>,
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
        let per_call = |spent: Option<Spent>| spent.map(|s| s.cpu_secs() * 1e3 / calls.max(1.0));
        Stats {
            calls,
            per_sec: calls / self.window.as_secs_f64(),
            p50: percentile_ms(&self.latency, 0.5),
            p90: percentile_ms(&self.latency, 0.9),
            p99: percentile_ms(&self.latency, 0.99),
            max: percentile_ms(&self.latency, 1.0),
            server_p50: (!self.server.is_empty()).then(|| percentile_ms(&self.server, 0.5)),
            hash_p50: percentile_ms(&self.hash, 0.5),
            work_cpu: per_call(self.work),
            client_cpu: per_call(self.client),
            faults: self.work.map(|s| s.minor_faults as f64 / calls.max(1.0)),
            kernel_pct: self
                .work
                .map(|s| 100.0 * s.system_ticks as f64 / (s.user_ticks + s.system_ticks).max(1) as f64),
        }
    }
}

/// Field by field median over runs.
fn median_stats(runs: &[Stats]) -> Stats {
    let m = |f: fn(&Stats) -> f64| median(runs.iter().map(f).collect());
    let m_opt = |f: fn(&Stats) -> Option<f64>| {
        runs.iter().all(|s| f(s).is_some()).then(|| median(runs.iter().filter_map(f).collect()))
    };
    Stats {
        calls: m(|s| s.calls),
        per_sec: m(|s| s.per_sec),
        p50: m(|s| s.p50),
        p90: m(|s| s.p90),
        p99: m(|s| s.p99),
        max: m(|s| s.max),
        server_p50: m_opt(|s| s.server_p50),
        hash_p50: m(|s| s.hash_p50),
        work_cpu: m_opt(|s| s.work_cpu),
        client_cpu: m_opt(|s| s.client_cpu),
        faults: m_opt(|s| s.faults),
        kernel_pct: m_opt(|s| s.kernel_pct),
    }
}

/// Minor page faults and CPU ticks of a process so far (Linux `/proc/PID/stat`).
#[derive(Clone, Copy)]
struct ProcCounters {
    minor_faults: u64,
    user_ticks: u64,
    system_ticks: u64,
}

/// What a process spent between two readings of its counters.
#[derive(Clone, Copy)]
struct Spent {
    minor_faults: u64,
    user_ticks: u64,
    system_ticks: u64,
}

impl Spent {
    fn cpu_secs(&self) -> f64 {
        // SAFETY: sysconf has no preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
        (self.user_ticks + self.system_ticks) as f64 / hz
    }
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

    fn since(pid: u32, before: Option<ProcCounters>) -> Option<Spent> {
        let (before, after) = (before?, ProcCounters::read(pid)?);
        Some(Spent {
            minor_faults: after.minor_faults.saturating_sub(before.minor_faults),
            user_ticks: after.user_ticks.saturating_sub(before.user_ticks),
            system_ticks: after.system_ticks.saturating_sub(before.system_ticks),
        })
    }
}

/// Prints a table of runs and their median. `work` names the process doing the work;
/// `client`: whether this process was only the client (its CPU shown apart).
fn print_table(title: &str, rate_unit: &str, work: &str, client: bool, runs: &[Stats]) -> Stats {
    println!("\n== {title} ==");
    println!(
        "{:>6} {:>7} {:>9} {:>8} {:>8} {:>8} {:>8} {:>11} {:>9} {:>9} {:>10}",
        "run",
        "calls",
        rate_unit,
        "p50 ms",
        "p90 ms",
        "p99 ms",
        "max ms",
        "server p50",
        "hash p50",
        "CPU ms",
        "client CPU"
    );
    let row = |label: &str, s: &Stats| {
        let opt = |v: Option<f64>| v.map_or_else(|| "-".to_string(), |v| format!("{v:.2}"));
        println!(
            "{label:>6} {:>7.0} {:>9.2} {:>8.2} {:>8.2} {:>8.2} {:>8.2} {:>11} {:>9.2} {:>9} {:>10}",
            s.calls,
            s.per_sec,
            s.p50,
            s.p90,
            s.p99,
            s.max,
            opt(s.server_p50),
            s.hash_p50,
            opt(s.work_cpu),
            opt(s.client_cpu)
        );
    };
    for (r, s) in runs.iter().enumerate() {
        row(&(r + 1).to_string(), s);
    }
    let median = median_stats(runs);
    row("median", &median);
    let client = if client { "; client: this process" } else { "" };
    if let (Some(faults), Some(kernel)) = (median.faults, median.kernel_pct) {
        println!(
            "  CPU ms per call: {work}{client}. {work}: {faults:.0} minor page faults per call; {kernel:.0}% of its CPU time in the kernel"
        );
    }
    median
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

/// `concurrency` callers on one connection, each making unary calls one after another for
/// `duration`, cycling through the photos from its own starting point.
async fn match_run(
    client: &MatcherClient<Channel>,
    photos: &Arc<Vec<Photo>>,
    concurrency: usize,
    duration: Duration,
) -> Result<Run> {
    let requests: Arc<Vec<pb::MatchRequest>> = Arc::new(photos.iter().map(match_request).collect());
    let end = Instant::now() + duration;
    let mut callers = JoinSet::new();
    for c in 0..concurrency {
        let (mut client, photos, requests) = (client.clone(), photos.clone(), requests.clone());
        callers.spawn(async move {
            let mut run = Run::default();
            for k in (0..photos.len()).cycle().skip(c * photos.len() / concurrency) {
                if Instant::now() >= end {
                    break;
                }
                let (photo, request) = (&photos[k], requests[k].clone());
                let sent = Instant::now();
                let response =
                    client.r#match(request).await.with_context(|| format!("Match({})", photo.name))?.into_inner();
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
            anyhow::Ok(run)
        });
    }
    let mut run = Run { window: duration, ..Run::default() };
    while let Some(part) = callers.join_next().await {
        let part = part.context("a caller panicked")??;
        run.latency.extend(part.latency);
        run.server.extend(part.server);
        run.hash.extend(part.hash);
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
                    for k in (0..photos.len()).cycle().skip(t * photos.len() / threads) {
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

/// One kind of measured run.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Bench {
    Unary,
    Stream,
    /// In-process on this many threads.
    Inproc(usize),
}

/// What the measurements run against: a client of the service and/or an in-process engine.
struct Bed<'a> {
    args: &'a Args,
    photos: Arc<Vec<Photo>>,
    client: Option<MatcherClient<Channel>>,
    /// The spawned server's pid (its CPU time is read from /proc).
    server_pid: Option<u32>,
    engine: Option<Engine>,
    contents: Vec<Content>,
}

impl Bed<'_> {
    fn title(&self, bench: Bench) -> String {
        match bench {
            Bench::Unary => match self.args.concurrency {
                1 => "Match: unary, one connection, sequential".to_string(),
                n => format!("Match: unary, one connection, {n} calls at once"),
            },
            Bench::Stream => format!("MatchStream: one stream, {} requests in flight", self.args.in_flight),
            Bench::Inproc(1) => "in-process: Engine::match_content, 1 thread".to_string(),
            Bench::Inproc(n) => format!("in-process: Engine::match_content, {n} threads"),
        }
    }

    /// One run of `bench` for `duration`, with the CPU time the processes spent on it.
    fn run(&mut self, runtime: &tokio::runtime::Runtime, bench: Bench, duration: Duration, tag: &str) -> Result<Run> {
        let me = std::process::id();
        let work_pid = match bench {
            Bench::Inproc(_) => Some(me),
            _ => self.server_pid,
        };
        let work_before = work_pid.and_then(ProcCounters::read);
        let me_before = ProcCounters::read(me);
        let mut run = match bench {
            Bench::Unary => {
                let client = self.client.as_ref().context("no client")?;
                runtime.block_on(match_run(client, &self.photos, self.args.concurrency as usize, duration))?
            }
            Bench::Stream => {
                let client = self.client.as_mut().context("no client")?;
                let in_flight = self.args.in_flight as usize;
                runtime.block_on(stream_run(client, &self.photos, in_flight, duration, tag))?
            }
            Bench::Inproc(n) => {
                let engine = self.engine.as_ref().context("no in-process engine")?;
                inproc_run(engine, &self.photos, &self.contents, n, duration)?
            }
        };
        run.work = work_pid.and_then(|pid| ProcCounters::since(pid, work_before));
        if !matches!(bench, Bench::Inproc(_)) {
            run.client = ProcCounters::since(me, me_before);
        }
        Ok(run)
    }
}

/// One bench's runs, round by round, and their median.
struct Measured {
    bench: Bench,
    median: Stats,
    runs: Vec<Stats>,
}

/// Warm every bench up, then `--repeat` rounds of one run each, the order rotating from
/// round to round so that drifting machine load spreads over all of them. Prints the
/// tables and returns each bench's median and runs (in round order).
fn measure(bed: &mut Bed, runtime: &tokio::runtime::Runtime, benches: &[Bench]) -> Result<Vec<Measured>> {
    let args = bed.args;
    for &bench in benches {
        bed.run(runtime, bench, args.warmup(), "warmup").with_context(|| format!("warm-up of {bench:?}"))?;
    }
    let mut runs: Vec<Vec<Stats>> = vec![Vec::new(); benches.len()];
    for r in 0..args.repeat as usize {
        for i in 0..benches.len() {
            let b = (i + r) % benches.len();
            let stats = bed.run(runtime, benches[b], args.duration(), &format!("run{}", r + 1))?.stats();
            eprintln!(
                "loadgen: round {}/{}: {:<50} {:>7.1}/s p50 {:>6.2} ms p99 {:>6.2} ms (load {})",
                r + 1,
                args.repeat,
                bed.title(benches[b]),
                stats.per_sec,
                stats.p50,
                stats.p99,
                load_average()
            );
            runs[b].push(stats);
        }
    }
    let mut medians = Vec::new();
    for (&bench, runs) in benches.iter().zip(&runs) {
        let (unit, work, client) = match bench {
            Bench::Unary => ("calls/s", "server process", true),
            Bench::Stream => ("images/s", "server process", true),
            Bench::Inproc(_) => ("calls/s", "this process", false),
        };
        let work = if bed.server_pid.is_none() && client { "server (not watched)" } else { work };
        medians.push(Measured {
            bench,
            median: print_table(&bed.title(bench), unit, work, client, runs),
            runs: runs.clone(),
        });
    }
    Ok(medians)
}

fn print_ratios(args: &Args, measured: &[Measured]) {
    let find = |wanted: Bench| measured.iter().find(|m| m.bench == wanted);
    let threaded: Vec<(usize, &Measured)> = measured
        .iter()
        .filter_map(|m| match m.bench {
            Bench::Inproc(n) if n > 1 => Some((n, m)),
            _ => None,
        })
        .collect();
    println!("\n== Service against in-process (medians over runs) ==");
    let cpu = |s: &Stats| match (s.work_cpu, s.client_cpu) {
        (Some(w), Some(c)) => format!("{:.2} ms (server {w:.2} + client {c:.2})", w + c),
        (Some(w), None) => format!("{w:.2} ms"),
        _ => "-".to_string(),
    };
    let total_cpu = |s: &Stats| Some(s.work_cpu? + s.client_cpu.unwrap_or(0.0));
    let compare = |what: &str, service: &Measured, n: usize, local: &Measured| {
        // Runs of the same round ran back to back, under much the same machine load.
        let paired = median(service.runs.iter().zip(&local.runs).map(|(s, l)| s.per_sec / l.per_sec).collect());
        let (service, local) = (&service.median, &local.median);
        println!(
            "{what} throughput / in-process {n}-thread throughput: {:.1} / {:.1} per s = {:.2} (median of per-round ratios {paired:.2})",
            service.per_sec,
            local.per_sec,
            service.per_sec / local.per_sec
        );
        if let (Some(s), Some(l)) = (total_cpu(service), total_cpu(local)) {
            println!(
                "  CPU per image: {} / in-process {}; images per CPU-second, {what} / in-process: {:.2}",
                cpu(service),
                cpu(local),
                l / s
            );
        }
    };
    if let Some(stream) = find(Bench::Stream) {
        for (n, local) in &threaded {
            compare("MatchStream", stream, *n, local);
        }
    }
    let Some(unary) = find(Bench::Unary) else { return };
    let c = args.concurrency as usize;
    let base = match c {
        1 => find(Bench::Inproc(1)).map(|o| (1, o)),
        _ => threaded.iter().find(|(n, _)| *n == c).or(threaded.first()).copied(),
    };
    let Some((n, o)) = base else { return };
    compare("Match", unary, n, o);
    let (unary, o) = (&unary.median, &o.median);
    println!("Match p50 / in-process {n}-thread p50: {:.2} / {:.2} ms = {:.2}", unary.p50, o.p50, unary.p50 / o.p50);
    if let Some(server) = unary.server_p50 {
        println!(
            "Match p50 = server total {server:.2} ms (of which hashing {:.2} ms) + client and transport {:.2} ms",
            unary.hash_p50,
            unary.p50 - server
        );
        println!(
            "Hashing p50, server / in-process {n} thread(s): {:.2} / {:.2} ms = {:.2}",
            unary.hash_p50,
            o.hash_p50,
            unary.hash_p50 / o.hash_p50
        );
    }
    if let (Some(server), Some(local)) = (unary.faults, o.faults) {
        println!("Minor page faults per call, server (Match) / in-process: {server:.0} / {local:.0}");
    }
}

// ---- overload and memory: a spawned server under pressure, its memory read from /proc ----

/// A `/proc/PID/status` field given in kB (VmRSS, VmHWM), in bytes.
fn proc_status_bytes(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let value = status.lines().find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))?;
    Some(value.trim().strip_suffix("kB")?.trim().parse::<u64>().ok()? * 1024)
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// The 1, 5 and 15 minute load averages.
fn load_average() -> String {
    let text = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    text.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
}

/// VmRSS of a process, sampled on a thread of its own (not slowed by the client's runtime).
struct RssSampler {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<Vec<(Instant, u64)>>,
}

impl RssSampler {
    fn start(pid: u32, every: Duration) -> RssSampler {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut samples = Vec::new();
            while !flag.load(Ordering::Relaxed) {
                samples.extend(proc_status_bytes(pid, "VmRSS").map(|rss| (Instant::now(), rss)));
                std::thread::sleep(every);
            }
            samples
        });
        RssSampler { stop, thread }
    }

    fn finish(self) -> Vec<(Instant, u64)> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap_or_default()
    }
}

/// Largest sample in [from, to).
fn rss_max(samples: &[(Instant, u64)], from: Instant, to: Instant) -> Option<u64> {
    samples.iter().filter(|(t, _)| *t >= from && *t < to).map(|(_, rss)| *rss).max()
}

/// What became of one request. `ClientTimeout`: the client's own timer fired before the
/// server's DEADLINE_EXCEEDED arrived. `Hung`: nothing at all within deadline + 5 s.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum Reply {
    Ok,
    Busy,
    Deadline,
    ClientTimeout,
    Invalid,
    Wrong,
    Other(i32),
    Hung,
}

const HUNG_AFTER: Duration = Duration::from_secs(5);

/// One unary Match with a deadline; an OK answer must carry `expect` (a PDQ hash), if given.
async fn timed_match(
    mut client: MatcherClient<Channel>,
    message: pb::MatchRequest,
    deadline: Duration,
    expect: Option<&str>,
) -> (Reply, Duration) {
    let mut request = tonic::Request::new(message);
    request.set_timeout(deadline);
    let started = Instant::now();
    let reply = match tokio::time::timeout(deadline + HUNG_AFTER, client.r#match(request)).await {
        Err(_) => Reply::Hung,
        Ok(Ok(r)) if r.get_ref().error.is_none() && expect.is_none_or(|pdq| r.get_ref().pdq == pdq) => Reply::Ok,
        Ok(Ok(_)) => Reply::Wrong,
        Ok(Err(s)) => match s.code() {
            tonic::Code::ResourceExhausted => Reply::Busy,
            tonic::Code::DeadlineExceeded => Reply::Deadline,
            tonic::Code::Cancelled if s.message().contains("Timeout expired") => Reply::ClientTimeout,
            tonic::Code::InvalidArgument => Reply::Invalid,
            code => Reply::Other(code as i32),
        },
    };
    (reply, started.elapsed())
}

/// Outcomes of a set of requests, and the latencies of the successful ones.
#[derive(Default)]
struct Tally {
    sent: usize,
    replies: BTreeMap<Reply, usize>,
    ok: Vec<Duration>,
}

impl Tally {
    fn add(&mut self, reply: Reply, latency: Duration) {
        *self.replies.entry(reply).or_default() += 1;
        if reply == Reply::Ok {
            self.ok.push(latency);
        }
    }

    fn count(&self, which: impl Fn(Reply) -> bool) -> usize {
        self.replies.iter().filter(|(r, _)| which(**r)).map(|(_, n)| n).sum()
    }

    /// Requests with no status: hung, or never reported at all.
    fn lost(&self) -> usize {
        self.sent - self.count(|r| r != Reply::Hung)
    }

    fn percentile(&self, p: f64) -> f64 {
        let mut ok = self.ok.clone();
        ok.sort_unstable();
        percentile_ms(&ok, p)
    }
}

/// How /metrics names the status of a reply (or what happened instead of one).
fn code_name(reply: Reply) -> String {
    match reply {
        Reply::Ok => "Ok".into(),
        Reply::Busy => "ResourceExhausted".into(),
        Reply::Deadline => "DeadlineExceeded".into(),
        Reply::Invalid => "InvalidArgument".into(),
        Reply::Other(c) => format!("{:?}", tonic::Code::from(c)),
        other => format!("{other:?} (client side)"),
    }
}

/// Replies by status, e.g. {"InvalidArgument": 3, "Ok": 10}.
fn by_code<'a>(replies: impl Iterator<Item = &'a Reply>) -> BTreeMap<String, u64> {
    let mut counts = BTreeMap::new();
    replies.for_each(|r| *counts.entry(code_name(*r)).or_default() += 1);
    counts
}

/// The spawned server's `lookalike_requests_total` for `rpc`, by code (from /metrics).
fn server_request_counts(server: &Server, rpc: &str) -> Option<BTreeMap<String, u64>> {
    let lines = lines_of(&server.log);
    let addr: SocketAddr =
        lines.iter().find_map(|l| l.split_once("moderator page on http://")?.1.split('/').next()?.parse().ok())?;
    let mut stream = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    stream.write_all(b"GET /metrics HTTP/1.0\r\nHost: loadgen\r\n\r\n").ok()?;
    let mut text = String::new();
    std::io::Read::read_to_string(&mut stream, &mut text).ok()?;
    let wanted = format!("rpc=\"{rpc}\"");
    let counts = text.lines().filter(|l| l.starts_with("lookalike_requests_total{") && l.contains(&wanted));
    let parse = |l: &str| -> Option<(String, u64)> {
        let code = l.split_once("code=\"")?.1.split('"').next()?.to_string();
        Some((code, l.rsplit(' ').next()?.parse::<f64>().ok()? as u64))
    };
    Some(counts.filter_map(parse).collect())
}

/// The overload run's ledger: every request sent (phase, offset from the phase's start),
/// and every answer (phase, offset, reply, latency).
#[derive(Default)]
struct Ledger {
    sent: Vec<(usize, Duration)>,
    done: Vec<(usize, Duration, Reply, Duration)>,
}

type Shared<T> = Arc<Mutex<T>>;

fn locked<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Requests ready to clone, with the PDQ hash each answer must carry.
type Prepared = Arc<Vec<(pb::MatchRequest, String)>>;

/// One request of `phase` on a task of its own, recorded in the ledger when it ends.
fn send_one(
    tasks: &mut JoinSet<()>,
    client: &MatcherClient<Channel>,
    prepared: &Prepared,
    n: usize,
    phase: (usize, Instant),
    deadline: Duration,
    ledger: &Shared<Ledger>,
) {
    let at = phase.1.elapsed();
    locked(ledger).sent.push((phase.0, at));
    let (client, prepared, ledger) = (client.clone(), prepared.clone(), ledger.clone());
    tasks.spawn(async move {
        let (request, pdq) = &prepared[n % prepared.len()];
        let (reply, latency) = timed_match(client, request.clone(), deadline, Some(pdq)).await;
        locked(&ledger).done.push((phase.0, at, reply, latency));
    });
}

/// Closed loop: `workers` callers one request after another each, for `length`.
async fn closed_loop(
    client: &MatcherClient<Channel>,
    prepared: &Prepared,
    workers: usize,
    phase: (usize, Instant),
    length: Duration,
    deadline: Duration,
    ledger: &Shared<Ledger>,
) {
    let mut callers = JoinSet::new();
    for w in 0..workers {
        let (client, prepared, ledger) = (client.clone(), prepared.clone(), ledger.clone());
        callers.spawn(async move {
            let mut n = w;
            while phase.1.elapsed() < length {
                let mut one = JoinSet::new();
                send_one(&mut one, &client, &prepared, n, phase, deadline, &ledger);
                while one.join_next().await.is_some() {}
                n += 1;
            }
        });
    }
    while callers.join_next().await.is_some() {}
}

/// Open loop: a request every 1/`rate` s for `length`, each on its own task (left in
/// `tasks`), whatever happens to the earlier ones. Prints progress every `window`.
#[allow(clippy::too_many_arguments)]
async fn open_loop(
    tasks: &mut JoinSet<()>,
    client: &MatcherClient<Channel>,
    prepared: &Prepared,
    rate: f64,
    phase: (usize, Instant),
    length: Duration,
    deadline: Duration,
    ledger: &Shared<Ledger>,
    (window, pid): (Duration, u32),
) {
    let mut next_report = window;
    for n in 0.. {
        let due = Duration::from_secs_f64(n as f64 / rate);
        if due >= length {
            break;
        }
        tokio::time::sleep_until(tokio::time::Instant::from_std(phase.1 + due)).await;
        send_one(tasks, client, prepared, n, phase, deadline, ledger);
        while tasks.try_join_next().is_some() {}
        if due >= next_report {
            let done = by_code(locked(ledger).done.iter().filter(|d| d.0 == phase.0).map(|d| &d.2));
            let rss = proc_status_bytes(pid, "VmRSS").map_or(f64::NAN, mib);
            eprintln!(
                "loadgen: phase {} at {:>3.0} s: sent {n}, {done:?}, VmRSS {rss:.1} MiB",
                phase.0 + 1,
                due.as_secs_f64()
            );
            next_report += window;
        }
    }
}

/// What `overload` measured, phase by phase: (name, start, length, target rate).
struct PhaseRun {
    name: &'static str,
    began: Instant,
    length: Duration,
}

/// Overload: calibrate, 2× for --duration, 0.5× for --recovery. Ok(false) when a request
/// was lost or memory grew beyond the margin.
async fn overload(args: &Args, server: &Server, photos: &[Photo]) -> Result<bool> {
    let pid = server.child.id();
    let url = format!("http://{}", server.addr);
    let client = MatcherClient::new(connect(&url).await?);
    let prepared: Prepared = Arc::new(photos.iter().map(|p| (match_request(p), p.pdq.clone())).collect());
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get()) as u64;
    let in_flight = args.max_in_flight.unwrap_or(2 * cores);
    let queued = args.max_queued.unwrap_or(8 * cores);
    let (deadline, window) = (args.deadline(), Duration::from_secs_f64(args.window));
    let ledger: Shared<Ledger> = Arc::default();
    let workers = (2 * in_flight).min(in_flight + queued).max(1) as usize;
    println!(
        "\nserver pool: {in_flight} in flight + {queued} queued; request deadline {:.1} s; load average at start {}",
        deadline.as_secs_f64(),
        load_average()
    );
    let idle_rss = proc_status_bytes(pid, "VmRSS").unwrap_or(0);
    // The warm-up is phase 9: in the ledger (for the /metrics cross-check), not in the table.
    closed_loop(&client, &prepared, workers, (9, Instant::now()), args.warmup(), deadline, &ledger).await;
    let sampler = RssSampler::start(pid, Duration::from_millis(100));

    let calibrate = Duration::from_secs_f64(args.calibrate);
    let mut phases = vec![PhaseRun { name: "1 calib", began: Instant::now(), length: calibrate }];
    eprintln!("loadgen: phase 1: closed loop, {workers} callers, {:.0} s", calibrate.as_secs_f64());
    closed_loop(&client, &prepared, workers, (0, phases[0].began), calibrate, deadline, &ledger).await;
    let calibrated = locked(&ledger).done.iter().filter(|d| d.0 == 0 && d.2 == Reply::Ok && d.1 < calibrate).count();
    let rate = calibrated as f64 / calibrate.as_secs_f64();
    ensure!(rate > 0.0, "phase 1 had no successful Match call: nothing to calibrate on");
    println!("phase 1: sustainable rate {rate:.1} Match/s ({workers} callers in a closed loop)");

    let mut tasks = JoinSet::new();
    let (length2, length3) = (args.duration(), Duration::from_secs_f64(args.recovery));
    // Phase 3 runs at half the sustainable rate: the calibrated one, or what phase 2 (which
    // saturates the server) admitted over its last minute if less, since other jobs on a
    // shared machine can take capacity away meanwhile.
    let mut rate3 = rate / 2.0;
    for (phase, name, length) in [(1, "2 over", length2), (2, "3 recov", length3)] {
        let began = Instant::now();
        phases.push(PhaseRun { name, began, length });
        let target = if phase == 1 { 2.0 * rate } else { rate3 };
        eprintln!("loadgen: phase {}: open loop at {target:.1}/s for {:.0} s", phase + 1, length.as_secs_f64());
        let p = (phase, began);
        open_loop(&mut tasks, &client, &prepared, target, p, length, deadline, &ledger, (window, pid)).await;
        if phase == 1 {
            let span = (length.saturating_sub(Duration::from_secs(61)), length.saturating_sub(Duration::from_secs(1)));
            let ok = locked(&ledger)
                .done
                .iter()
                .filter(|d| d.0 == 1 && d.2 == Reply::Ok && d.1 >= span.0 && d.1 < span.1)
                .count();
            let recent = ok as f64 / (span.1 - span.0).as_secs_f64().max(1e-3);
            rate3 = rate3.min(recent / 2.0);
            println!("phase 3 rate: 0.5 × min(calibrated {rate:.1}/s, admitted over phase 2's last minute {recent:.1}/s) = {rate3:.1}/s");
        }
    }
    let mut panicked = 0;
    while let Some(joined) = tasks.join_next().await {
        panicked += usize::from(joined.is_err());
    }
    let ended = Instant::now();
    let rss = sampler.finish();
    let hwm = proc_status_bytes(pid, "VmHWM").unwrap_or(0);
    let ledger = std::mem::take(&mut *locked(&ledger));

    // Per window and per phase.
    println!(
        "\n{:<8} {:>9} {:>6} {:>6} {:>6} {:>6} {:>6} {:>5} {:>7} {:>8} {:>8} {:>9}",
        "phase", "window s", "sent", "OK", "BUSY", "DEADLN", "other", "lost", "OK/s", "p50 ms", "p99 ms", "RSS MiB"
    );
    let row = |phase: &str, span: &str, t: &Tally, secs: f64, rss: Option<u64>| {
        let deadline = t.count(|r| matches!(r, Reply::Deadline | Reply::ClientTimeout));
        let other = t.count(|r| matches!(r, Reply::Invalid | Reply::Wrong | Reply::Other(_)));
        println!(
            "{phase:<8} {span:>9} {:>6} {:>6} {:>6} {deadline:>6} {other:>6} {:>5} {:>7.1} {:>8.1} {:>8.1} {:>9}",
            t.sent,
            t.ok.len(),
            t.count(|r| r == Reply::Busy),
            t.lost(),
            t.ok.len() as f64 / secs,
            t.percentile(0.5),
            t.percentile(0.99),
            rss.map_or_else(|| "-".into(), |b| format!("{:.1}", mib(b)))
        );
    };
    let mut totals: Vec<Tally> = Vec::new();
    let (mut window_rss, mut window_p99): (Vec<Vec<u64>>, Vec<Vec<f64>>) = (Vec::new(), Vec::new());
    for (p, phase) in phases.iter().enumerate() {
        let windows = (phase.length.as_secs_f64() / window.as_secs_f64()).ceil().max(1.0) as usize;
        let slot = |at: &Duration| ((at.as_secs_f64() / window.as_secs_f64()) as usize).min(windows - 1);
        let mut per: Vec<Tally> = (0..windows).map(|_| Tally::default()).collect();
        let mut total = Tally::default();
        for (_, at) in ledger.sent.iter().filter(|s| s.0 == p) {
            per[slot(at)].sent += 1;
            total.sent += 1;
        }
        for (_, at, reply, latency) in ledger.done.iter().filter(|d| d.0 == p) {
            per[slot(at)].add(*reply, *latency);
            total.add(*reply, *latency);
        }
        let (mut maxima, mut p99s) = (Vec::new(), Vec::new());
        for (w, t) in per.iter().enumerate() {
            let from = window.mul_f64(w as f64);
            let to = (from + window).min(phase.length);
            let r = rss_max(&rss, phase.began + from, phase.began + to);
            maxima.extend(r);
            p99s.push(t.percentile(0.99));
            let span = format!("{:.0}-{:.0}", from.as_secs_f64(), to.as_secs_f64());
            row(phase.name, &span, t, (to - from).as_secs_f64(), r);
        }
        let end = phases.get(p + 1).map_or(ended, |next| next.began);
        row(phase.name, "all", &total, phase.length.as_secs_f64(), rss_max(&rss, phase.began, end));
        println!();
        totals.push(total);
        window_rss.push(maxima);
        window_p99.push(p99s);
    }

    // Verdict.
    let sent: usize = totals.iter().map(|t| t.sent).sum();
    let answered: usize = totals.iter().map(|t| t.count(|r| r != Reply::Hung)).sum();
    let hung: usize = totals.iter().map(|t| t.count(|r| r == Reply::Hung)).sum();
    let lost = sent - answered;
    println!("== Verdict ==  (load average at end {})", load_average());
    println!(
        "accounting: {sent} sent, {answered} with exactly one status, {hung} hung past deadline + {} s, {} never reported, {panicked} tasks panicked → {}",
        HUNG_AFTER.as_secs(),
        lost - hung,
        if lost == 0 && panicked == 0 { "PASS" } else { "FAIL: requests lost" }
    );
    if let Some(server_counts) = server_request_counts(server, "Match") {
        let client_counts = by_code(ledger.done.iter().map(|d| &d.2));
        let same = if server_counts == client_counts { "the same" } else { "DIFFERENT" };
        println!(
            "server /metrics, Match by code (warm-up included): {server_counts:?}; client: {client_counts:?} → {same}"
        );
    }
    let (p1, p1_50, p2) = (totals[0].percentile(0.99), totals[0].percentile(0.5), totals[1].percentile(0.99));
    // Admitted requests wait behind at most in-flight + queued others, so by Little's law
    // their mean latency is about (in flight + queued) / throughput; the deadline caps all.
    let (secs2, t2) = (args.duration().as_secs_f64(), &totals[1]);
    let admitted = t2.ok.len() as f64 / secs2;
    let mean_ms = t2.ok.iter().map(Duration::as_secs_f64).sum::<f64>() * 1e3 / t2.ok.len().max(1) as f64;
    let worst_p99 = window_p99[1].iter().copied().fold(0.0, f64::max);
    let deadlines = t2.count(|r| matches!(r, Reply::Deadline | Reply::ClientTimeout));
    println!(
        "phase 2: offered {:.1}/s, admitted {admitted:.1}/s ({:.0}% of the calibrated rate), BUSY {:.1}%, DEADLINE {deadlines}; \
         admitted mean {mean_ms:.0} ms (Little: {} / {admitted:.1}/s = {:.0} ms), p99 {p2:.1} ms, worst window p99 {worst_p99:.1} ms → {}",
        t2.sent as f64 / secs2,
        100.0 * admitted / rate,
        100.0 * t2.count(|r| r == Reply::Busy) as f64 / t2.sent.max(1) as f64,
        in_flight + queued,
        (in_flight + queued) as f64 * 1e3 / admitted,
        if worst_p99 < deadline.as_secs_f64() * 1e3 && deadlines == 0 { "bounded (under the deadline)" } else { "WARN: unbounded" }
    );
    // Growth: the largest window of phase 2's second half against the largest of its first
    // half (which absorbs the allocator's and thread pool's warm-up); trend: the second half.
    let w2 = &window_rss[1];
    let (first, second) = w2.split_at(w2.len() / 2);
    let (start, end) = (first.iter().copied().max().unwrap_or(0), second.iter().copied().max().unwrap_or(0));
    let allowed = (start as f64 * args.rss_margin / 100.0).max(16.0 * 1024.0 * 1024.0);
    let grew = end as f64 - start as f64 > allowed;
    println!(
        "memory: VmRSS idle {:.1} MiB; phase 2 max over its first half {:.1} MiB, over its second half {:.1} MiB ({:+.1} MiB), \
         trend over the second half {:+.2} MiB/min; VmHWM {:.1} MiB; allowed growth max({}%, 16 MiB) = {:.1} MiB → {}",
        mib(idle_rss),
        mib(start),
        mib(end),
        (end as f64 - start as f64) / 1048576.0,
        slope_per_min(second, window),
        mib(hwm),
        args.rss_margin,
        allowed / 1048576.0,
        if grew { "FAIL: memory grew" } else { "PASS" }
    );
    // Phase 3 after its first window, which still drains phase 2's queue.
    let mut settled =
        Tally { sent: ledger.sent.iter().filter(|s| s.0 == 2 && s.1 >= window).count(), ..Tally::default() };
    ledger.done.iter().filter(|d| d.0 == 2 && d.1 >= window).for_each(|d| settled.add(d.2, d.3));
    for (label, t) in [("phase 3 (0.5×)", &totals[2]), ("  after its first window", &settled)] {
        let busy = t.count(|r| r == Reply::Busy);
        println!(
            "{label}: {} sent, BUSY {busy} ({:.2}%), DEADLINE {}; p50 {:.1} ms, p99 {:.1} ms (phase 1: p50 {p1_50:.1} ms, p99 {p1:.1} ms)",
            t.sent,
            100.0 * busy as f64 / t.sent.max(1) as f64,
            t.count(|r| matches!(r, Reply::Deadline | Reply::ClientTimeout)),
            t.percentile(0.5),
            t.percentile(0.99),
        );
    }
    // Recovered: (nearly) every request admitted, and no queueing left: p50 at or under
    // phase 1's (which ran saturated). The p99 is shown; on a shared machine it is noise.
    let recovered =
        settled.count(|r| r != Reply::Ok) as f64 <= 0.01 * settled.sent as f64 && settled.percentile(0.5) <= p1_50;
    println!("  → {}", if recovered { "recovered" } else { "WARN: not recovered" });
    Ok(lost == 0 && panicked == 0 && !grew)
}

/// Least-squares slope of per-window values (bytes), in MiB per minute.
fn slope_per_min(values: &[u64], window: Duration) -> f64 {
    let n = values.len() as f64;
    if n < 2.0 {
        return 0.0;
    }
    let xs: Vec<f64> = (0..values.len()).map(|i| i as f64 * window.as_secs_f64() / 60.0).collect();
    let (mx, my) = (xs.iter().sum::<f64>() / n, values.iter().map(|&v| mib(v)).sum::<f64>() / n);
    let num: f64 = xs.iter().zip(values).map(|(x, &v)| (x - mx) * (mib(v) - my)).sum();
    num / xs.iter().map(|x| (x - mx).powi(2)).sum::<f64>()
}

/// A memory-mode request body.
struct Payload {
    kind: &'static str,
    about: String,
    bytes: Vec<u8>,
}

/// Noisy gradient RGB pixels (a photo-like image that compresses badly).
fn noisy_pixels(w: u32, h: u32, rng: &mut SmallRng) -> image::RgbImage {
    image::RgbImage::from_fn(w, h, |x, y| {
        let n = rng.next_u32();
        let base = [(x / 7) as u8, (y / 5) as u8, ((x + y) / 11) as u8];
        image::Rgb([0, 1, 2].map(|c| base[c].wrapping_add((n >> (8 * c)) as u8 / 3)))
    })
}

/// Four ~`target`-byte bodies: a noisy JPEG that decodes, a PNG at the pixel limit that
/// decodes, random junk, and a PNG header declaring 60000×60000 followed by junk.
fn memory_payloads(target: usize, max_pixels: u64) -> Result<Vec<Payload>> {
    let mut rng = SmallRng::seed_from_u64(0x10ad);
    let jpeg_of = |img: &image::RgbImage| -> Result<Vec<u8>> {
        let mut out = Vec::new();
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 92).encode_image(img)?;
        Ok(out)
    };
    // JPEG: size the image from a sample's bytes per pixel, then shrink until it fits.
    let per_pixel = jpeg_of(&noisy_pixels(512, 512, &mut rng))?.len() as f64 / (512.0 * 512.0);
    let mut pixels = (target as f64 * 0.98 / per_pixel).min(max_pixels as f64);
    let jpeg = loop {
        let w = (pixels * 4.0 / 3.0).sqrt() as u32;
        let h = (pixels / f64::from(w)) as u32;
        let bytes = jpeg_of(&noisy_pixels(w, h, &mut rng))?;
        if bytes.len() <= target {
            break Payload {
                kind: "jpeg",
                about: format!("noisy JPEG q92 {w}×{h} ({:.1} MP)", f64::from(w * h) / 1e6),
                bytes,
            };
        }
        pixels *= 0.97 * target as f64 / bytes.len() as f64;
    };
    // PNG: as many pixels as the limit allows, a gradient with `n` rows of noise spread
    // over it; `n` sized from the cost of the gradient alone, then shrunk until it fits.
    let side = (max_pixels as f64).sqrt() as u32;
    let (w, h) = (side, (max_pixels / u64::from(side)) as u32);
    let mut png_with = |n: u32| -> Result<Vec<u8>> {
        let mut img =
            image::RgbImage::from_fn(w, h, |x, y| image::Rgb([(x / 40) as u8, (y / 40) as u8, (y / 80) as u8]));
        for row in img.rows_mut().step_by((h / n.max(1)).max(1) as usize).take(n as usize) {
            row.for_each(|p| p.0 = rng.next_u32().to_le_bytes()[..3].try_into().unwrap_or([0; 3]));
        }
        let mut png = Vec::new();
        let (fast, adaptive) = (image::codecs::png::CompressionType::Fast, image::codecs::png::FilterType::Adaptive);
        image::codecs::png::PngEncoder::new_with_quality(&mut png, fast, adaptive).write_image(
            &img,
            w,
            h,
            image::ExtendedColorType::Rgb8,
        )?;
        Ok(png)
    };
    let base = png_with(0)?.len() as f64;
    let mut n = ((target as f64 * 0.97 - base) / (3.0 * f64::from(w))).max(0.0);
    let png = loop {
        let bytes = png_with(n as u32)?;
        if bytes.len() <= target {
            break bytes;
        }
        ensure!(n >= 1.0, "a {w}×{h} gradient PNG alone is {base} bytes, over {target}");
        n *= (target as f64 * 0.95 - base) / (bytes.len() as f64 - base);
    };
    let png = Payload {
        kind: "png",
        about: format!("PNG RGB8 {w}×{h} ({:.1} MP)", f64::from(w) * f64::from(h) / 1e6),
        bytes: png,
    };
    // Junk: random bytes (no image signature).
    let mut junk = vec![0u8; target];
    rng.fill_bytes(&mut junk);
    junk[..4].copy_from_slice(b"junk");
    // Bomb: a valid PNG signature and IHDR declaring 60000×60000 RGB, then junk in an IDAT.
    let mut bomb = b"\x89PNG\r\n\x1a\n".to_vec();
    let chunk = |out: &mut Vec<u8>, kind: &[u8], data: &[u8]| {
        out.extend((data.len() as u32).to_be_bytes());
        let start = out.len();
        out.extend(kind);
        out.extend(data);
        let crc = crc32fast::hash(&out[start..]);
        out.extend(crc.to_be_bytes());
    };
    let ihdr: Vec<u8> =
        [60000u32.to_be_bytes(), 60000u32.to_be_bytes()].concat().into_iter().chain([8, 2, 0, 0, 0]).collect();
    chunk(&mut bomb, b"IHDR", &ihdr);
    let filler = target - bomb.len() - 12;
    chunk(&mut bomb, b"IDAT", &junk[..filler]);
    Ok(vec![
        jpeg,
        png,
        Payload { kind: "junk", about: "random bytes".into(), bytes: junk },
        Payload { kind: "bomb", about: "PNG header 60000×60000, then junk".into(), bytes: bomb },
    ])
}

/// Memory: --clients connections sending the payloads in turn for --duration; peak VmRSS
/// against the bound. Ok(false) when the peak is over the bound.
async fn memory(args: &Args, server: &Server) -> Result<bool> {
    let pid = server.child.id();
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get()) as u64;
    let in_flight = args.max_in_flight.unwrap_or(2 * cores);
    let queued = args.max_queued.unwrap_or(8 * cores);
    let max_message = ServeOptions::default().max_message_bytes as u64;
    let max_pixels = DecodeLimits::DEFAULT_MAX_PIXELS;
    let target = (args.payload_mib * 1048576.0) as usize;
    let made = Instant::now();
    let mut payloads = memory_payloads(target, max_pixels)?;
    payloads.retain(|p| args.kinds.iter().any(|k| k == p.kind));
    let payloads = Arc::new(payloads);
    println!("\npayloads (made in {:.1} s):", made.elapsed().as_secs_f64());
    for p in payloads.iter() {
        println!("  {:<5} {:>9} bytes ({:.1} MiB)  {}", p.kind, p.bytes.len(), mib(p.bytes.len() as u64), p.about);
    }
    let url = format!("http://{}", server.addr);
    let (clients, streams, deadline, duration) =
        (args.clients as usize, args.streams as usize, args.deadline(), args.duration());
    println!(
        "server pool: {in_flight} in flight + {queued} queued; {clients} clients, one connection each, {streams} request(s) outstanding on each; deadline {:.0} s; load average at start {}",
        deadline.as_secs_f64(),
        load_average()
    );
    let idle = proc_status_bytes(pid, "VmRSS").unwrap_or(0);
    let sampler = RssSampler::start(pid, Duration::from_millis(20));
    let began = Instant::now();
    let results: Shared<Vec<(usize, Reply, Duration)>> = Arc::default();
    let (mut callers, mut clients_of) = (JoinSet::new(), Vec::new());
    for (c, s) in (0..clients).flat_map(|c| (0..streams).map(move |s| (c, s))) {
        if s == 0 {
            clients_of.push(MatcherClient::new(connect(&url).await?));
        }
        let (client, payloads, results) = (clients_of[c].clone(), payloads.clone(), results.clone());
        callers.spawn(async move {
            for n in c * streams + s.. {
                if began.elapsed() >= duration {
                    break;
                }
                let kind = n % payloads.len();
                let request = pb::MatchRequest {
                    query: Some(pb::match_request::Query::Image(payloads[kind].bytes.clone())),
                    ..Default::default()
                };
                let (reply, latency) = timed_match(client.clone(), request, deadline, None).await;
                locked(&results).push((kind, reply, latency));
            }
        });
    }
    while callers.join_next().await.is_some() {}
    let load_ended = Instant::now();
    let elapsed = (load_ended - began).as_secs_f64();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after = proc_status_bytes(pid, "VmRSS").unwrap_or(0);
    tokio::time::sleep(Duration::from_secs(12)).await;
    let later = proc_status_bytes(pid, "VmRSS").unwrap_or(0);
    let rss = sampler.finish();
    let hwm = proc_status_bytes(pid, "VmHWM").unwrap_or(0);
    let results = std::mem::take(&mut *locked(&results));

    println!(
        "\n{:<6} {:>6} {:>6} {:>8} {:>6} {:>8} {:>6} {:>5} {:>9} {:>9}",
        "kind", "sent", "OK", "INVALID", "BUSY", "DEADLINE", "other", "lost", "p50 ms", "max ms"
    );
    for (k, p) in payloads.iter().enumerate() {
        let (mut t, mut latencies) = (Tally::default(), Vec::new());
        for (_, reply, latency) in results.iter().filter(|r| r.0 == k) {
            t.add(*reply, *latency);
            latencies.push(*latency);
        }
        t.sent = latencies.len();
        latencies.sort_unstable();
        println!(
            "{:<6} {:>6} {:>6} {:>8} {:>6} {:>8} {:>6} {:>5} {:>9.0} {:>9.0}",
            p.kind,
            t.sent,
            t.ok.len(),
            t.count(|r| r == Reply::Invalid),
            t.count(|r| r == Reply::Busy),
            t.count(|r| matches!(r, Reply::Deadline | Reply::ClientTimeout)),
            t.count(|r| matches!(r, Reply::Wrong | Reply::Other(_))),
            t.count(|r| r == Reply::Hung),
            percentile_ms(&latencies, 0.5),
            percentile_ms(&latencies, 1.0),
        );
    }
    let bytes_sent: u64 = results.iter().map(|r| payloads[r.0].bytes.len() as u64).sum();
    println!(
        "total: {} requests in {:.0} s ({:.1}/s, {:.0} MiB/s of payload); by status: {:?}",
        results.len(),
        elapsed,
        results.len() as f64 / elapsed,
        mib(bytes_sent) / elapsed,
        by_code(results.iter().map(|r| &r.1))
    );
    if let Some(counts) = server_request_counts(server, "Match") {
        println!("server /metrics, Match by code: {counts:?}");
    }
    print!("server VmRSS, max per 5 s (MiB):");
    for s in (0..).map(|i| Duration::from_secs(5 * i)).take_while(|s| began + *s < load_ended) {
        print!(
            " {:.0}",
            rss_max(&rss, began + s, (began + s + Duration::from_secs(5)).min(load_ended)).map_or(f64::NAN, mib)
        );
    }
    let sampled_peak = rss.iter().map(|s| s.1).max().unwrap_or(0);
    println!(
        "\nserver VmRSS: idle {:.1} MiB, sampled peak {:.1} MiB; after the load +3 s {:.1} MiB, +15 s {:.1} MiB; VmHWM {:.1} MiB",
        mib(idle),
        mib(sampled_peak),
        mib(after),
        mib(later),
        mib(hwm)
    );
    // The formula: a whole message buffered per connection, a decoded image per job, the
    // index (the idle RSS). Per the code: every outstanding request (clients × streams: the
    // server does not limit HTTP/2 streams) holds tonic's buffer and, briefly, the decoded
    // copy of its bytes; a job holds the decoded image (RGB8 3 B/px, RGBA8 4) and its f32
    // luma plane (4 B/px), plus conversions and allocator slack: the README budgets 12 B/px
    // (a 100 MP PNG alone measured 0.78 GB over idle at a785e6f, 1.1 GB at f7ffe40).
    let (conns, outstanding) = (clients as u64, (clients * streams) as u64);
    let (rgb, mp) = (in_flight * max_pixels * 3, max_pixels / 1_000_000);
    let formula = idle + conns * max_message + rgb;
    let code = idle + 2 * outstanding * max_message + in_flight * max_pixels * 12;
    println!(
        "bound (formula): idle {:.0} + {conns} connections × {:.0} MiB + {in_flight} in flight × {mp} MP × 3 B/px (RGB8) {:.0} = {:.0} MiB",
        mib(idle),
        mib(max_message),
        mib(rgb),
        mib(formula)
    );
    println!(
        "bound (per the code): idle {:.0} + 2 × {outstanding} outstanding × {:.0} MiB + {in_flight} in flight × {mp} MP × 12 B/px {:.0} = {:.0} MiB",
        mib(idle),
        mib(max_message),
        mib(in_flight * max_pixels * 12),
        mib(code)
    );
    let peak = hwm.max(sampled_peak);
    println!(
        "verdict: peak {:.0} MiB = {:.0}% of the formula, {:.0}% of the per-code bound → {}  (load average at end {})",
        mib(peak),
        100.0 * peak as f64 / formula as f64,
        100.0 * peak as f64 / code as f64,
        if peak <= code { "bounded" } else { "FAIL: over the bound" },
        load_average()
    );
    Ok(peak <= code && !results.iter().any(|r| r.1 == Reply::Hung))
}

/// The spawned server's --max-in-flight and --max-queued, where given.
fn server_limits(args: &Args) -> Vec<String> {
    let mut extra = Vec::new();
    for (flag, value) in [("--max-in-flight", args.max_in_flight), ("--max-queued", args.max_queued)] {
        extra.extend(value.map(|v| [flag.to_string(), v.to_string()]).into_iter().flatten());
    }
    extra
}

/// overload and memory: spawn a server on the photos' catalog, run the mode, stop it.
fn pressure(args: &Args, photos: &[Photo]) -> Result<()> {
    ensure!(
        args.server.is_none(),
        "{:?} reads the server's memory from /proc: it spawns its own server (drop --server)",
        args.mode
    );
    let bin = lookalike_binary(args.lookalike_bin.as_deref())?;
    let catalog = Catalog::build(&bin, photos)?;
    let extra = server_limits(args);
    let server = Server::start(&bin, &catalog.data(), &extra)?;
    let shown = extra.iter().map(|a| format!(" {a}")).collect::<String>();
    println!("server: spawned lookalike serve{shown} (pid {}) on {}", server.child.id(), server.addr);
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let passed = runtime.block_on(async {
        match args.mode {
            Mode::Memory => memory(args, &server).await,
            _ => overload(args, &server, photos).await,
        }
    })?;
    drop(runtime);
    server.stop()?;
    ensure!(passed, "{:?}: the verdict above failed", args.mode);
    Ok(())
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
    let (secs, warmup, repeat) = (args.duration().as_secs_f64(), args.warmup, args.repeat);
    match args.mode {
        Mode::Overload | Mode::Memory => println!("machine: {cores} cores; loadgen build: {profile}; {secs} s under load"),
        _ => println!("machine: {cores} cores; loadgen build: {profile}; {secs} s per run after {warmup} s warm-up, {repeat} runs per mode"),
    }

    let default_images = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let (images_dir, images_shown) = match &args.images {
        Some(dir) => (dir.clone(), dir.display().to_string()),
        None => (default_images, "tests/fixtures".to_string()),
    };
    let photos = load_photos(&images_dir, (!args.as_is).then_some(args.size), args.jpeg_quality)?;
    let total: usize = photos.iter().map(|p| p.jpeg.len()).sum();
    let how = if args.as_is {
        "sent as they are".to_string()
    } else {
        format!("resized to about {s}×{s} and re-encoded as JPEG quality {}", args.jpeg_quality, s = args.size)
    };
    println!(
        "photos: {} from {images_shown}, {how}, {:.0} KB on average:",
        photos.len(),
        total as f64 / photos.len() as f64 / 1024.0,
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

    if matches!(args.mode, Mode::Overload | Mode::Memory) {
        return pressure(args, &photos);
    }
    let mut threads: Vec<usize> = args.threads.iter().map(|&t| t as usize).collect();
    if threads.is_empty() {
        threads.push(cores);
    }
    let mut benches = Vec::new();
    if matches!(args.mode, Mode::Stream | Mode::All) {
        benches.push(Bench::Stream);
    }
    if matches!(args.mode, Mode::Match | Mode::All) {
        benches.push(Bench::Unary);
    }
    if args.mode == Mode::Inproc || (args.mode == Mode::All && args.concurrency == 1) {
        benches.push(Bench::Inproc(1));
    }
    if matches!(args.mode, Mode::Inproc | Mode::All) {
        for &n in threads.iter().filter(|&&n| n > 1) {
            if !benches.contains(&Bench::Inproc(n)) {
                benches.push(Bench::Inproc(n));
            }
        }
    }
    let wants_service = matches!(args.mode, Mode::Match | Mode::Stream | Mode::All);
    let wants_inproc = matches!(args.mode, Mode::Inproc | Mode::All);
    let remote = if args.spawn { None } else { args.server.clone() };

    // The data directories: the server's and the in-process engine's own copy (an open
    // index holds an exclusive writer lock, and both are open at once).
    let bin = if wants_service && remote.is_none() || args.index.is_none() {
        Some(lookalike_binary(args.lookalike_bin.as_deref())?)
    } else {
        None
    };
    let source = match &args.index {
        Some(dir) => {
            println!("catalog: copies of {}", dir.display());
            None
        }
        None => Some(Catalog::build(bin.as_deref().context("no lookalike binary")?, &photos)?),
    };
    let source_dir = match (&args.index, &source) {
        (Some(dir), _) => dir.clone(),
        (None, Some(catalog)) => catalog.data(),
        (None, None) => unreachable!("a catalog is built without --index"),
    };
    let inproc_data = if wants_inproc { Some(Catalog::copy_of(&source_dir)?) } else { None };
    let server_data = if wants_service && remote.is_none() { Some(Catalog::copy_of(&source_dir)?) } else { None };

    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let (server, client) = if wants_service {
        let (url, server) = match &remote {
            Some(url) => {
                println!("server: {url} (already running; its catalog as it is)");
                (url.clone(), None)
            }
            None => {
                let bin = bin.as_deref().context("no lookalike binary")?;
                let data = server_data.as_ref().context("no data directory to serve")?;
                let extra = server_limits(args);
                let server = Server::start(bin, &data.data(), &extra)?;
                let shown = extra.iter().map(|a| format!(" {a}")).collect::<String>();
                println!("server: spawned lookalike serve{shown} (pid {}) on {}", server.child.id(), server.addr);
                (format!("http://{}", server.addr), Some(server))
            }
        };
        let client = MatcherClient::new(runtime.block_on(connect(&url))?);
        (server, Some(client))
    } else {
        (None, None)
    };
    let engine = match &inproc_data {
        Some(data) => {
            if remote.is_some() && args.index.is_none() {
                println!("in-process: a temporary catalog of the photos (not the server's)");
            }
            Some(
                Engine::open(&data.data(), EngineOptions::default())
                    .map_err(|e| anyhow::anyhow!("opening the index {} in-process: {e}", data.data().display()))?,
            )
        }
        None => None,
    };
    let contents: Vec<Content> =
        if engine.is_some() { photos.iter().map(|p| Content::Image(p.jpeg.clone())).collect() } else { Vec::new() };
    let mut bed = Bed {
        args,
        photos: Arc::new(photos),
        client,
        server_pid: server.as_ref().map(|s| s.child.id()),
        engine,
        contents,
    };
    println!("load average before: {}", load_average());
    let medians = measure(&mut bed, &runtime, &benches)?;
    println!("\nload average after: {}", load_average());
    drop(bed); // closes the connection
    drop(runtime);
    if let Some(server) = server {
        server.stop()?;
    }
    if args.mode == Mode::All {
        print_ratios(args, &medians);
    }
    Ok(())
}
