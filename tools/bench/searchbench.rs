//! The lookalike side of the search benchmark (`tools/bench/search.py` drives it and runs
//! the peers — FAISS and a C scan — on the same files in the same run).
//!
//! Subcommands, each printing one JSON object on stdout (progress goes to stderr):
//!
//! - `gen`: N 256-bit codes, uniform or clustered (centres with members at 1–40 bits),
//!   and Q queries of 8 orientation codes each, from a seed. Half the queries are
//!   *planted*: one orientation lies within 0–31 bits of a stored code. Files: `codes.bin`
//!   (N × 32 bytes, the index's own little-endian code layout), `queries.bin` (Q × 8 × 32
//!   bytes) and `queries.json` (which queries are planted, and in which orientation).
//! - `build`: an index through the public API (`Index::add` in large batches, then
//!   `Index::refresh` for the multi-index tables): time, and bytes on disk per entry.
//! - `open`: time to open an existing index, and resident memory after it.
//! - `query`: open, then the exact radius-31 query over all 8 orientations
//!   (`Index::search_radius`): recall against an independent brute force (must be 1),
//!   single-thread latency median/p99, 2-thread throughput, memory; then the library's
//!   plain scan (`scan::scan_radius`) with 8 and with 1 query code. Also writes the
//!   brute-force answers of the single planted orientation for the peers' recall.
//! - `hnsw-build`, `hnsw-query`: build the optional HNSW graph on a built index; reopen
//!   it in a fresh process and measure memory, recall of the radius-31 neighbours of the
//!   planted orientation among the `k` returned, and latency at several `ef`.
//!
//! The 8 orientation codes of a query: lookalike has no bit-level orientation map on
//! `Hash256` (PDQ derives the variants from the DCT coefficients before thresholding at
//! the median). This bench applies the same rules at bit level — the transpose moves bit
//! (i, j) to (j, i); a coefficient whose sign the orientation flips has its bit inverted —
//! which is what PDQ does when the median is near zero. So the 8 codes of a random query
//! are related the way real PDQ variants are (one is a pure permutation, others invert
//! half the bits), rather than 8 independent random codes.
//!
//! ```text
//! cargo run --release --example searchbench -- gen --n 1000000 --kind clustered --out /tmp/sb
//! cargo run --release --example searchbench -- build --codes /tmp/sb/codes.bin --dir /tmp/sb/index
//! cargo run --release --example searchbench -- query --dir /tmp/sb/index --data /tmp/sb
//! ```

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::hint::black_box;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, ensure, Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use lookalike::hash::Hash256;
use lookalike::index::{scan, AddOutcome, Filter, HnswParams, Index, Label, NearestEngine, NewEntry, OpenOptions};
use memmap2::Mmap;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

/// The matching radius the product uses (`--flag 31`).
const RADIUS: u32 = 31;

#[derive(Parser, Debug)]
#[command(name = "searchbench", about = "lookalike side of tools/bench/search.py (see the file's header)")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Copy, Clone, Debug, ValueEnum)]
enum Kind {
    Uniform,
    Clustered,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Generate codes and queries.
    Gen {
        #[arg(long)]
        n: usize,
        #[arg(long, value_enum)]
        kind: Kind,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Number of queries (half planted, half random).
        #[arg(long, default_value_t = 200)]
        queries: usize,
        #[arg(long)]
        out: PathBuf,
    },
    /// Build an index from a codes file.
    Build {
        #[arg(long)]
        codes: PathBuf,
        #[arg(long)]
        dir: PathBuf,
        /// Entries per `Index::add` call (one catalog transaction each).
        #[arg(long, default_value_t = 100_000)]
        batch: usize,
    },
    /// Open an index and report time and memory.
    Open {
        #[arg(long)]
        dir: PathBuf,
        /// Check every file's checksum on open (the default of `Index::open`).
        #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
        verify: bool,
    },
    /// Measure the exact radius query and the plain scan.
    Query {
        #[arg(long)]
        dir: PathBuf,
        /// Directory written by `gen`.
        #[arg(long)]
        data: PathBuf,
        /// Timed passes over all queries (after one warm-up pass).
        #[arg(long, default_value_t = 5)]
        rounds: usize,
        /// Queries timed with the plain scan (each reads every code).
        #[arg(long, default_value_t = 40)]
        scan_queries: usize,
        /// Threads for the throughput figure.
        #[arg(long, default_value_t = 2)]
        threads: usize,
        /// Where to write brute-force answers (default: DATA/truth.json).
        #[arg(long)]
        truth_out: Option<PathBuf>,
    },
    /// Rewrite an index's record files and rebuild its tables (`Index::compact`), e.g. to
    /// get tables in the current layout without re-adding the entries.
    Retable {
        #[arg(long)]
        dir: PathBuf,
    },
    /// Build the HNSW graph on a built index (slow: about a millisecond per insert).
    HnswBuild {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long, default_value_t = 24)]
        max_connections: usize,
        #[arg(long, default_value_t = 200)]
        ef_construction: usize,
    },
    /// Reopen an index with its HNSW graph (in a fresh process, for its memory) and
    /// measure recall and latency.
    HnswQuery {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long)]
        data: PathBuf,
        #[arg(long, value_delimiter = ',', default_value = "32,128,512")]
        ef: Vec<usize>,
        /// Neighbours asked for.
        #[arg(long, default_value_t = 32)]
        k: usize,
        /// Timed passes over all queries per `ef` (after one warm-up pass).
        #[arg(long, default_value_t = 3)]
        rounds: usize,
    },
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let out = match cli.cmd {
        Cmd::Gen { n, kind, seed, queries, out } => gen(n, kind, seed, queries, &out)?,
        Cmd::Build { codes, dir, batch } => build(&codes, &dir, batch)?,
        Cmd::Open { dir, verify } => open(&dir, verify)?,
        Cmd::Query { dir, data, rounds, scan_queries, threads, truth_out } => {
            let truth_out = truth_out.unwrap_or_else(|| data.join("truth.json"));
            query(&dir, &data, rounds, scan_queries, threads, &truth_out)?
        }
        Cmd::Retable { dir } => {
            let started = Instant::now();
            let mut index = Index::open(&dir, OpenOptions { verify: false, ..OpenOptions::writable() })?;
            index.compact()?;
            let stats = index.stats()?;
            json!({"retable_s": started.elapsed().as_secs_f64(), "files": stats.files})
        }
        Cmd::HnswBuild { dir, max_connections, ef_construction } => {
            hnsw_build(&dir, HnswParams { max_connections, ef_construction })?
        }
        Cmd::HnswQuery { dir, data, ef, k, rounds } => hnsw_query(&dir, &data, &ef, k, rounds)?,
    };
    println!("{out}");
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Orientations at bit level

/// For each orientation (in `lookalike::hash::Orientation` order) and each source bit
/// `i·16 + j`: the destination bit and whether the bit is inverted. Mirrors
/// `transform_coefficients` in src/hash/pdq.rs.
fn orientation_maps() -> [[(u8, bool); 256]; 8] {
    let mut maps = [[(0u8, false); 256]; 8];
    for (o, map) in maps.iter_mut().enumerate() {
        for i in 0..16usize {
            for j in 0..16usize {
                let (odd_i, odd_j, odd_sum) = (i & 1 == 1, j & 1 == 1, (i + j) & 1 == 1);
                let (transpose, invert) = match o {
                    0 => (false, false),
                    1 => (true, !odd_j),
                    2 => (false, odd_sum),
                    3 => (true, !odd_i),
                    4 => (false, !odd_i),
                    5 => (false, !odd_j),
                    6 => (true, false),
                    _ => (true, odd_sum),
                };
                let dst = if transpose { j * 16 + i } else { i * 16 + j };
                map[i * 16 + j] = (dst as u8, invert);
            }
        }
    }
    maps
}

fn orient(code: &Hash256, map: &[(u8, bool); 256]) -> Hash256 {
    let mut out = [0u64; 4];
    for (src, &(dst, invert)) in map.iter().enumerate() {
        let bit = code.bit(src) ^ invert;
        out[dst as usize / 64] |= u64::from(bit) << (dst % 64);
    }
    Hash256(out)
}

/// The 8 orientation codes of an image whose hash is `base`.
fn variants(base: &Hash256, maps: &[[(u8, bool); 256]; 8]) -> [Hash256; 8] {
    std::array::from_fn(|o| orient(base, &maps[o]))
}

// ---------------------------------------------------------------------------------------
// Data

fn random_code(rng: &mut SmallRng) -> Hash256 {
    Hash256([rng.random(), rng.random(), rng.random(), rng.random()])
}

/// `c` with exactly `bits` distinct bits flipped.
fn near(c: &Hash256, bits: u32, rng: &mut SmallRng) -> Hash256 {
    let mut mask = [0u64; 4];
    let mut set = 0;
    while set < bits {
        let b = rng.random_range(0..256usize);
        if mask[b / 64] >> (b % 64) & 1 == 0 {
            mask[b / 64] |= 1 << (b % 64);
            set += 1;
        }
    }
    Hash256([c.0[0] ^ mask[0], c.0[1] ^ mask[1], c.0[2] ^ mask[2], c.0[3] ^ mask[3]])
}

fn gen(n: usize, kind: Kind, seed: u64, nq: usize, out: &Path) -> Result<Value> {
    let started = Instant::now();
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut codes: Vec<Hash256> = Vec::with_capacity(n);
    let mut clusters = 0usize;
    match kind {
        Kind::Uniform => codes.extend((0..n).map(|_| random_code(&mut rng))),
        Kind::Clustered => {
            // Clusters of 1–16 codes: a centre and members at 1–40 bits from it.
            while codes.len() < n {
                let centre = random_code(&mut rng);
                codes.push(centre);
                clusters += 1;
                let members = rng.random_range(0..16usize).min(n - codes.len());
                for _ in 0..members {
                    let d = rng.random_range(1..=40u32);
                    codes.push(near(&centre, d, &mut rng));
                }
            }
        }
    }
    let mut w = BufWriter::with_capacity(1 << 20, File::create(out.join("codes.bin"))?);
    for c in &codes {
        w.write_all(&c.to_le_bytes())?;
    }
    w.into_inner().map_err(|e| e.into_error())?.sync_all()?;

    let maps = orientation_maps();
    // The orientation that undoes each orientation, found by trying.
    let probe = random_code(&mut rng);
    let inverse: Vec<usize> = (0..8)
        .map(|o| {
            (0..8)
                .find(|&p| orient(&orient(&probe, &maps[p]), &maps[o]) == probe)
                .expect("the eight orientations form a group")
        })
        .collect();
    let (mut planted, mut orients, mut targets, mut dists) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut w = BufWriter::new(File::create(out.join("queries.bin"))?);
    for qi in 0..nq {
        let is_planted = qi % 2 == 0;
        let (base, o, target, d) = if is_planted {
            let target = rng.random_range(0..n);
            let o = rng.random_range(0..8usize);
            let d = rng.random_range(0..=RADIUS);
            let seen = near(&codes[target], d, &mut rng);
            (orient(&seen, &maps[inverse[o]]), o, target as i64, d as i64)
        } else {
            (random_code(&mut rng), 0, -1, -1)
        };
        let vs = variants(&base, &maps);
        if is_planted {
            ensure!(vs[o].distance(&codes[target as usize]) == d as u32, "planted orientation misplaced");
        }
        for v in &vs {
            w.write_all(&v.to_le_bytes())?;
        }
        planted.push(is_planted);
        orients.push(o);
        targets.push(target);
        dists.push(d);
    }
    w.flush()?;
    let meta = json!({
        "n": n, "kind": format!("{kind:?}").to_lowercase(), "seed": seed, "queries": nq,
        "clusters": clusters, "planted": planted, "orient": orients, "target": targets, "dist": dists,
        "orientations": "bit-level transpose/inversion rules of PDQ's dihedral coefficient transform",
    });
    std::fs::write(out.join("queries.json"), serde_json::to_string(&meta)?)?;
    Ok(json!({"gen_s": started.elapsed().as_secs_f64(), "n": n, "queries": nq, "clusters": clusters}))
}

struct Data {
    _map: Mmap,
    codes: &'static [[u64; 4]],
    queries: Vec<[Hash256; 8]>,
    planted: Vec<bool>,
    orient: Vec<usize>,
}

fn load_data(dir: &Path) -> Result<Data> {
    let path = dir.join("codes.bin");
    let file = File::open(&path).with_context(|| format!("opening {}", path.display()))?;
    // SAFETY: the benchmark's own data file, not modified while mapped.
    let map = unsafe { Mmap::map(&file) }?;
    // SAFETY: the map lives in the returned struct as long as the slice is used.
    let codes: &'static [[u64; 4]] = unsafe { std::mem::transmute::<&[[u64; 4]], _>(scan::as_codes(&map)) };
    let qbytes = std::fs::read(dir.join("queries.bin"))?;
    let queries: Vec<[Hash256; 8]> = qbytes
        .chunks_exact(8 * 32)
        .map(|q| std::array::from_fn(|o| Hash256::from_le_bytes(q[o * 32..o * 32 + 32].try_into().expect("32 bytes"))))
        .collect();
    let meta: Value = serde_json::from_str(&std::fs::read_to_string(dir.join("queries.json"))?)?;
    let planted: Vec<bool> = serde_json::from_value(meta["planted"].clone())?;
    let orient: Vec<usize> = serde_json::from_value(meta["orient"].clone())?;
    ensure!(planted.len() == queries.len() && orient.len() == queries.len(), "queries.json does not match queries.bin");
    Ok(Data { _map: map, codes, queries, planted, orient })
}

// ---------------------------------------------------------------------------------------
// Measurements

/// Resident memory of this process from /proc/self/status, in bytes: (VmRSS, RssAnon, RssFile).
fn rss() -> (u64, u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .unwrap_or(0)
            * 1024
    };
    (field("VmRSS:"), field("RssAnon:"), field("RssFile:"))
}

fn rss_json() -> Value {
    let (total, anon, file) = rss();
    json!({"vm_rss": total, "rss_anon": anon, "rss_file": file})
}

/// CPU time of the calling thread in nanoseconds (user + system). The machine is shared:
/// wall-clock latencies include time spent waiting for a core, CPU time does not.
fn thread_cpu_ns() -> u64 {
    #[repr(C)]
    struct Timespec {
        tv_sec: i64,
        tv_nsec: i64,
    }
    extern "C" {
        fn clock_gettime(clock: i32, tp: *mut Timespec) -> i32;
    }
    const CLOCK_THREAD_CPUTIME_ID: i32 = 3;
    let mut t = Timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: a plain libc call writing into a valid struct of the layout it expects.
    let rc = unsafe { clock_gettime(CLOCK_THREAD_CPUTIME_ID, &mut t) };
    if rc != 0 {
        return 0;
    }
    t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64
}

/// Latencies of repeated calls: wall clock and thread CPU time.
#[derive(Default)]
struct Lat {
    wall: Vec<u64>,
    cpu: Vec<u64>,
}

impl Lat {
    fn time<T>(&mut self, f: impl FnOnce() -> T) -> T {
        let (w, c) = (Instant::now(), thread_cpu_ns());
        let out = black_box(f());
        self.cpu.push(thread_cpu_ns() - c);
        self.wall.push(w.elapsed().as_nanos() as u64);
        out
    }
    fn clear(&mut self) {
        self.wall.clear();
        self.cpu.clear();
    }
    fn median_wall(&self) -> f64 {
        percentile(&self.wall, 0.5) as f64
    }
    fn median_cpu(&self) -> f64 {
        percentile(&self.cpu, 0.5) as f64
    }
    /// Median, p99, mean and max in nanoseconds, wall clock, then the same in CPU time.
    fn summary(&self) -> Value {
        if self.wall.is_empty() {
            return Value::Null;
        }
        let mean = |v: &[u64]| v.iter().sum::<u64>() / v.len() as u64;
        json!({
            "n": self.wall.len(),
            "median_ns": percentile(&self.wall, 0.5),
            "p99_ns": percentile(&self.wall, 0.99),
            "mean_ns": mean(&self.wall),
            "max_ns": percentile(&self.wall, 1.0),
            "cpu_median_ns": percentile(&self.cpu, 0.5),
            "cpu_p99_ns": percentile(&self.cpu, 0.99),
            "cpu_mean_ns": mean(&self.cpu),
        })
    }
}

/// The `p` quantile (nearest rank; the median is the upper middle).
fn percentile(ns: &[u64], p: f64) -> u64 {
    let mut v = ns.to_vec();
    v.sort_unstable();
    if p == 0.5 {
        return v[v.len() / 2];
    }
    v[((p * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1]
}

fn entry(i: usize, code: &Hash256) -> NewEntry {
    let mut sha = [0u8; 32];
    sha[..8].copy_from_slice(&(i as u64).to_le_bytes());
    NewEntry {
        brand: "bench".into(),
        label: Label::Authentic,
        external_id: i.to_string(),
        source: "synthetic".into(),
        sha256: sha,
        pdq: *code,
        quality: Some(100),
        phash: None,
        note: None,
        thumbnail: None,
        views: Vec::new(),
        features: None,
    }
}

fn build(codes_path: &Path, dir: &Path, batch: usize) -> Result<Value> {
    ensure!(!dir.exists(), "{} exists: build wants a fresh directory", dir.display());
    let file = File::open(codes_path)?;
    // SAFETY: the benchmark's own data file, not modified while mapped.
    let map = unsafe { Mmap::map(&file) }?;
    let codes = scan::as_codes(&map);
    let started = Instant::now();
    // Tables are built once at the end (`refresh`), as a bulk load should: with the
    // default tail limit every 65,536 added records would rebuild them.
    let options = OpenOptions { mih_tail_limit: u64::MAX, ..OpenOptions::writable() };
    let mut index = Index::open(dir, options)?;
    let mut first_id = None;
    for (b, chunk) in codes.chunks(batch).enumerate() {
        let entries: Vec<NewEntry> =
            chunk.iter().enumerate().map(|(i, c)| entry(b * batch + i, &Hash256(*c))).collect();
        for (i, outcome) in index.add(&entries)?.into_iter().enumerate() {
            let AddOutcome::Added(id) = outcome else { bail!("entry {} was already present", b * batch + i) };
            let first = *first_id.get_or_insert(id);
            ensure!(id == first + (b * batch + i) as u64, "entry ids are not dense: record {} got {id}", b * batch + i);
        }
        if b % 10 == 9 {
            eprintln!("  added {} of {}", (b + 1) * batch, codes.len());
        }
    }
    let add_s = started.elapsed().as_secs_f64();
    let refresh_started = Instant::now();
    index.refresh()?;
    let refresh_s = refresh_started.elapsed().as_secs_f64();
    let stats = index.stats()?;
    drop(index);
    let total_s = started.elapsed().as_secs_f64();
    let n = codes.len() as f64;
    let files: HashMap<String, u64> = stats.files.iter().cloned().collect();
    let search_bytes: u64 = stats
        .files
        .iter()
        .filter(|(name, _)| ["codes-", "refs-", "mih-"].iter().any(|p| name.starts_with(p)))
        .map(|(_, b)| b)
        .sum();
    let catalog_bytes: u64 =
        stats.files.iter().filter(|(name, _)| name.starts_with("catalog.sqlite")).map(|(_, b)| b).sum();
    let meta = json!({"first_id": first_id.unwrap_or(1), "records": codes.len()});
    std::fs::write(dir.join("searchbench.json"), meta.to_string())?;
    Ok(json!({
        "n": codes.len(),
        "add_s": add_s,
        "mih_build_s": refresh_s,
        "build_s": total_s,
        "files": files,
        "bytes_on_disk": stats.bytes_on_disk,
        "bytes_per_entry": stats.bytes_on_disk as f64 / n,
        "search_bytes_per_entry": search_bytes as f64 / n,
        "catalog_bytes_per_entry": catalog_bytes as f64 / n,
        "search_file_bytes": search_bytes,
    }))
}

fn open(dir: &Path, verify: bool) -> Result<Value> {
    let before = rss_json();
    let started = Instant::now();
    let index = Index::open(dir, OpenOptions { verify, ..OpenOptions::default() })?;
    let open_s = started.elapsed().as_secs_f64();
    let after = rss_json();
    let records = index.records();
    Ok(json!({"open_s": open_s, "verify": verify, "records": records, "rss_before": before, "rss_after_open": after}))
}

/// Independent brute force (no library kernels): per query, every record within the
/// radius of any of the 8 codes with its best distance, and every record within the
/// radius of the single planted orientation.
#[allow(clippy::type_complexity)]
fn brute_force(data: &Data) -> (Vec<HashMap<u32, u32>>, Vec<Vec<(u32, u32)>>) {
    use rayon::prelude::*;
    let per_chunk: Vec<(Vec<Vec<(u32, u32)>>, Vec<Vec<(u32, u32)>>)> = data
        .codes
        .par_chunks(1 << 16)
        .enumerate()
        .map(|(ci, chunk)| {
            let mut all = vec![Vec::new(); data.queries.len()];
            let mut one = vec![Vec::new(); data.queries.len()];
            for (i, c) in chunk.iter().enumerate() {
                let code = Hash256(*c);
                let record = (ci * (1 << 16) + i) as u32;
                for (qi, q) in data.queries.iter().enumerate() {
                    let best = q.iter().map(|v| v.distance(&code)).min().expect("8 codes");
                    if best <= RADIUS {
                        all[qi].push((record, best));
                    }
                    let d1 = q[data.orient[qi]].distance(&code);
                    if d1 <= RADIUS {
                        one[qi].push((record, d1));
                    }
                }
            }
            (all, one)
        })
        .collect();
    let mut all = vec![HashMap::new(); data.queries.len()];
    let mut one = vec![Vec::new(); data.queries.len()];
    for (a, o) in per_chunk {
        for (qi, hits) in a.into_iter().enumerate() {
            all[qi].extend(hits);
        }
        for (qi, hits) in o.into_iter().enumerate() {
            one[qi].extend(hits);
        }
    }
    (all, one)
}

fn query(
    dir: &Path,
    data_dir: &Path,
    rounds: usize,
    scan_queries: usize,
    threads: usize,
    truth_out: &Path,
) -> Result<Value> {
    let rss_start = rss_json();
    let started = Instant::now();
    let index = Index::open(dir, OpenOptions::default())?;
    let open_s = started.elapsed().as_secs_f64();
    let rss_open = rss_json();
    let meta: Value = serde_json::from_str(&std::fs::read_to_string(dir.join("searchbench.json"))?)?;
    let first_id = meta["first_id"].as_u64().context("first_id")?;

    let data = load_data(data_dir)?;
    ensure!(data.codes.len() as u64 == index.records(), "the index does not hold the data's codes");
    let n = data.codes.len();
    let filter = Filter::default();

    // Single thread: the first pass after open (which maps the table pages it touches
    // into the process: page faults), a second warm-up pass, then every query `rounds`
    // times. Before anything reads the data file, so that resident memory afterwards is
    // the index's.
    let mut first_pass = Lat::default();
    for q in &data.queries {
        first_pass.time(|| index.search_radius(q, RADIUS, &filter));
    }
    for q in &data.queries {
        black_box(index.search_radius(q, RADIUS, &filter));
    }
    let (mut lat, mut lat_planted, mut lat_random) = (Lat::default(), Lat::default(), Lat::default());
    for _ in 0..rounds {
        for (qi, q) in data.queries.iter().enumerate() {
            lat.time(|| index.search_radius(q, RADIUS, &filter));
            let part = if data.planted[qi] { &mut lat_planted } else { &mut lat_random };
            part.wall.push(*lat.wall.last().expect("just timed"));
            part.cpu.push(*lat.cpu.last().expect("just timed"));
        }
    }
    let rss_queries = rss_json();

    eprintln!("  brute force over {n} codes × {} queries", data.queries.len());
    let bf_started = Instant::now();
    let (truth, truth1) = brute_force(&data);
    let brute_force_s = bf_started.elapsed().as_secs_f64();
    // Every answer against the brute force: same entries, same distances.
    let (mut expected, mut found, mut extra, mut wrong_distance) = (0usize, 0usize, 0usize, 0usize);
    for (qi, q) in data.queries.iter().enumerate() {
        let hits = index.search_radius(q, RADIUS, &filter);
        expected += truth[qi].len();
        for h in &hits {
            let record = (h.entry - first_id) as u32;
            match truth[qi].get(&record) {
                Some(&d) if d == h.distance => found += 1,
                Some(_) => wrong_distance += 1,
                None => extra += 1,
            }
        }
    }
    let recall = if expected == 0 { 1.0 } else { found as f64 / expected as f64 };

    // The product's default match call searches to the review distance (45).
    let mut lat45 = Lat::default();
    for q in &data.queries {
        lat45.time(|| index.search_radius(q, 45, &filter));
    }

    // Throughput on `threads` threads sharing the index.
    let per_thread = rounds * data.queries.len();
    let t = Instant::now();
    std::thread::scope(|s| {
        for th in 0..threads {
            let (index, data, filter) = (&index, &data, &filter);
            s.spawn(move || {
                for i in 0..per_thread {
                    let q = &data.queries[(i + th * 7919) % data.queries.len()];
                    black_box(index.search_radius(q, RADIUS, filter));
                }
            });
        }
    });
    let mt_s = t.elapsed().as_secs_f64();
    let throughput = (per_thread * threads) as f64 / mt_s;

    // The plain scan over the same codes (mapped data file): 8 codes per pass, then 1.
    let sq = scan_queries.min(data.queries.len());
    let mut out = Vec::new();
    let (mut scan8, mut scan1) = (Lat::default(), Lat::default());
    let mut scan_mismatches = 0usize;
    for _ in 0..2 {
        // Two passes: the first also pages the file in.
        scan8.clear();
        scan1.clear();
        for (qi, q) in data.queries.iter().take(sq).enumerate() {
            out.clear();
            scan8.time(|| scan::scan_radius(data.codes, 0, q, RADIUS, &mut out));
            if out.len() != truth[qi].len() {
                scan_mismatches += 1;
            }
            out.clear();
            let o = data.orient[qi];
            scan1.time(|| scan::scan_radius(data.codes, 0, &q[o..=o], RADIUS, &mut out));
            if out.len() != truth1[qi].len() {
                scan_mismatches += 1;
            }
        }
    }

    let truth1_json: Vec<Vec<u32>> = truth1.iter().map(|v| v.iter().map(|&(r, _)| r).collect()).collect();
    let counts: Vec<usize> = truth.iter().map(|t| t.len()).collect();
    std::fs::write(truth_out, json!({"radius": RADIUS, "single": truth1_json, "all8_counts": counts}).to_string())?;
    let planted_hits: usize = truth.iter().zip(&data.planted).filter(|(_, &p)| p).map(|(t, _)| t.len()).sum();
    let random_hits: usize = truth.iter().zip(&data.planted).filter(|(_, &p)| !p).map(|(t, _)| t.len()).sum();
    Ok(json!({
        "n": n,
        "queries": data.queries.len(),
        "rounds": rounds,
        "open_s": open_s,
        "rss_start": rss_start,
        "rss_after_open": rss_open,
        "rss_after_queries": rss_queries,
        "brute_force_s": brute_force_s,
        "truth_hits": expected,
        "truth_hits_planted": planted_hits,
        "truth_hits_random": random_hits,
        "recall": recall,
        "extra_hits": extra,
        "wrong_distance": wrong_distance,
        "exact": found == expected && extra == 0 && wrong_distance == 0,
        "mih8": lat.summary(),
        "mih8_first_pass": first_pass.summary(),
        "mih8_planted": lat_planted.summary(),
        "mih8_random": lat_random.summary(),
        "radius45": lat45.summary(),
        "throughput_threads": threads,
        "throughput_qps": throughput,
        "single_thread_qps": lat.wall.len() as f64 / (lat.wall.iter().sum::<u64>() as f64 / 1e9),
        "scan8": scan8.summary(),
        "scan1": scan1.summary(),
        "scan8_ns_per_code": scan8.median_wall() / n as f64,
        "scan1_ns_per_code": scan1.median_wall() / n as f64,
        "scan8_cpu_ns_per_code": scan8.median_cpu() / n as f64,
        "scan1_cpu_ns_per_code": scan1.median_cpu() / n as f64,
        "scan_mismatches": scan_mismatches,
    }))
}

fn hnsw_build(dir: &Path, params: HnswParams) -> Result<Value> {
    let started = Instant::now();
    let mut index = Index::open(dir, OpenOptions { verify: false, ..OpenOptions::writable() })?;
    index.build_hnsw(params)?;
    let n = index.records();
    Ok(json!({
        "n": n,
        "params": {"max_connections": params.max_connections, "ef_construction": params.ef_construction},
        "build_s": started.elapsed().as_secs_f64(),
    }))
}

/// Recall and latency of the HNSW graph at each `ef`, one orientation per query (the
/// planted one; orientation 0 of the random queries), after one untimed warm-up pass;
/// then the exact radius-31 query of the same single code, for scale.
fn hnsw_query(dir: &Path, data_dir: &Path, efs: &[usize], k: usize, rounds: usize) -> Result<Value> {
    let data = load_data(data_dir)?;
    let truth: Value = serde_json::from_str(&std::fs::read_to_string(data_dir.join("truth.json"))?)?;
    let truth1: Vec<Vec<u32>> = serde_json::from_value(truth["single"].clone())?;
    let meta: Value = serde_json::from_str(&std::fs::read_to_string(dir.join("searchbench.json"))?)?;
    let first_id = meta["first_id"].as_u64().context("first_id")?;
    let before = rss_json();
    let t = Instant::now();
    let index = Index::open(dir, OpenOptions { verify: false, ..OpenOptions::default() })?;
    let open_s = t.elapsed().as_secs_f64();
    let after = rss_json();
    let filter = Filter::default();
    let mut rows = Vec::new();
    for &ef in efs {
        let engine = NearestEngine::Hnsw { ef };
        let (mut want, mut got) = (0usize, 0usize);
        // The warm-up pass also measures recall.
        for (qi, q) in data.queries.iter().enumerate() {
            let o = data.orient[qi];
            let hits = index.search_nearest(&q[o..=o], k, &filter, engine)?;
            if data.planted[qi] {
                let returned: HashSet<u32> = hits.iter().map(|h| (h.entry - first_id) as u32).collect();
                want += truth1[qi].len();
                got += truth1[qi].iter().filter(|r| returned.contains(r)).count();
            }
        }
        let mut lat = Lat::default();
        for _ in 0..rounds {
            for (qi, q) in data.queries.iter().enumerate() {
                let o = data.orient[qi];
                lat.time(|| index.search_nearest(&q[o..=o], k, &filter, engine))?;
            }
        }
        eprintln!("  ef {ef}: recall {:.3}, median {:.3} ms", got as f64 / want.max(1) as f64, lat.median_wall() / 1e6);
        rows.push(
            json!({"ef": ef, "k": k, "one_orientation": lat.summary(), "recall": got as f64 / want.max(1) as f64}),
        );
    }
    let rss_queries = rss_json();
    // The exact engine on the same single code (radius 31), same rounds.
    for (qi, q) in data.queries.iter().enumerate() {
        let o = data.orient[qi];
        black_box(index.search_radius(&q[o..=o], RADIUS, &filter));
    }
    let mut exact1 = Lat::default();
    for _ in 0..rounds {
        for (qi, q) in data.queries.iter().enumerate() {
            let o = data.orient[qi];
            exact1.time(|| index.search_radius(&q[o..=o], RADIUS, &filter));
        }
    }
    let stats = index.stats()?;
    let graph_bytes: u64 = stats.files.iter().filter(|(name, _)| name.starts_with("hnsw-")).map(|(_, b)| b).sum();
    Ok(json!({
        "n": data.codes.len(),
        "open_s": open_s,
        "rss_before_open": before,
        "rss_after_open": after,
        "rss_after_queries": rss_queries,
        "graph_file_bytes": graph_bytes,
        "rounds": rounds,
        "rows": rows,
        "exact_one_orientation": exact1.summary(),
    }))
}
