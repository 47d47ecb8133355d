//! Hashing speed of lookalike on image files, for `tools/bench/hashing.py` (which runs
//! the peers on the same files in the same run and prints the ratios).
//!
//! `cargo run --release --example hashbench -- [--repeat N] FILE...` prints one JSON
//! line per file: median CPU milliseconds (this thread's CPU clock, so other load on the
//! machine matters less than for wall time) of decoding, of hashing the decoded plane,
//! and of the whole `hash_image` path; then one line with the all-core throughput.
//!
//! `--work index` measures `index_image` instead (what `lookalike index` computes per
//! file: hashes, local features, thumbnail); `--all-cores-only` skips the per-file lines
//! (`tools/bench/indexing.py` uses both).

use std::time::Instant;

use lookalike::hash::{decode, hash_decoded, hash_image, index_image, DecodeLimits};
use rayon::prelude::*;

fn thread_cpu_ms() -> f64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: a valid clock id and a pointer to a timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as f64 * 1e3 + ts.tv_nsec as f64 / 1e6
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn timed<T>(f: impl FnOnce() -> T) -> (T, f64) {
    let start = thread_cpu_ms();
    let out = f();
    (out, thread_cpu_ms() - start)
}

fn main() {
    let mut args = std::env::args().skip(1).peekable();
    let mut repeat = 7usize;
    let mut files = Vec::new();
    let mut index_work = false;
    let mut per_file = true;
    while let Some(a) = args.next() {
        match a.as_str() {
            "--repeat" => repeat = args.next().and_then(|v| v.parse().ok()).expect("--repeat N"),
            "--work" => match args.next().as_deref() {
                Some("hash") => index_work = false,
                Some("index") => index_work = true,
                other => panic!("--work hash|index, got {other:?}"),
            },
            "--all-cores-only" => per_file = false,
            "-h" | "--help" => {
                eprintln!("usage: hashbench [--repeat N] [--work hash|index] [--all-cores-only] FILE...");
                return;
            }
            _ => files.push(a),
        }
    }
    let limits = DecodeLimits::default();
    let data: Vec<(String, Vec<u8>)> =
        files.iter().map(|f| (f.clone(), std::fs::read(f).unwrap_or_else(|e| panic!("{f}: {e}")))).collect();
    for (name, bytes) in data.iter().filter(|_| per_file) {
        let (mut dec, mut hash, mut total) = (Vec::new(), Vec::new(), Vec::new());
        let mut dims = (0, 0, 0, 0);
        for _ in 0..repeat {
            let (decoded, d) = timed(|| decode(bytes, &limits).expect("decodes"));
            dims = (decoded.width, decoded.height, decoded.plane_width, decoded.plane_height);
            let (_, h) = timed(|| hash_decoded(&decoded));
            let (_, t) = timed(|| hash_image(bytes, &limits).expect("hashes"));
            dec.push(d);
            hash.push(h);
            total.push(t);
        }
        println!(
            "{}",
            serde_json::json!({
                "file": name,
                "width": dims.0, "height": dims.1, "plane_width": dims.2, "plane_height": dims.3,
                "decode_ms": median(dec), "hash_ms": median(hash), "total_ms": median(total),
            })
        );
    }
    // All cores: every file `repeat` times, spread over rayon's threads (wall clock).
    let jobs: Vec<&Vec<u8>> = (0..repeat).flat_map(|_| data.iter().map(|(_, b)| b)).collect();
    let started = Instant::now();
    jobs.par_iter().for_each(|b| {
        if index_work {
            index_image(b, &limits).expect("indexes");
        } else {
            hash_image(b, &limits).expect("hashes");
        }
    });
    let secs = started.elapsed().as_secs_f64();
    println!(
        "{}",
        serde_json::json!({
            "work": if index_work { "index" } else { "hash" },
            "all_cores": rayon::current_num_threads(), "images": jobs.len(), "images_per_s": jobs.len() as f64 / secs,
        })
    );
}
