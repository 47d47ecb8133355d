//! Search latency at 100k and 1M entries of random 256-bit codes with planted near
//! duplicates: the exact radius-31 query over all 8 orientations (multi-index tables),
//! the plain 8-orientation scan it replaces, and the exact k-nearest scan.
//! Run: `cargo bench --bench search`.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use lookalike::hash::Hash256;
use lookalike::index::{scan, Filter, Index, Label, NearestEngine, NewEntry, OpenOptions};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

fn code(rng: &mut SmallRng) -> Hash256 {
    Hash256([rng.random(), rng.random(), rng.random(), rng.random()])
}

fn near(c: Hash256, bits: u32, rng: &mut SmallRng) -> Hash256 {
    let mut out = c;
    for _ in 0..bits {
        let b = rng.random_range(0..256usize);
        out.0[b / 64] ^= 1 << (b % 64);
    }
    out
}

fn build(n: usize, rng: &mut SmallRng) -> (tempfile::TempDir, Index, Vec<Hash256>) {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut index = Index::open(dir.path(), OpenOptions::writable()).expect("opens");
    let mut centres = Vec::new();
    let mut batch = Vec::with_capacity(50_000);
    for i in 0..n {
        let c = if i % 100 == 0 {
            let c = code(rng);
            centres.push(c);
            c
        } else if i % 100 < 5 {
            near(*centres.last().expect("a centre"), (i % 100) as u32 * 6, rng)
        } else {
            code(rng)
        };
        let mut sha = [0u8; 32];
        sha[..8].copy_from_slice(&(i as u64).to_le_bytes());
        batch.push(NewEntry {
            brand: "bench".into(),
            label: Label::Authentic,
            external_id: i.to_string(),
            source: "synthetic".into(),
            sha256: sha,
            pdq: c,
            quality: Some(100),
            phash: None,
            note: None,
            thumbnail: None,
            features: None,
            views: Vec::new(),
        });
        if batch.len() == 50_000 {
            index.add(&batch).expect("adds");
            batch.clear();
        }
    }
    index.add(&batch).expect("adds");
    index.refresh().expect("tables build");
    (dir, index, centres)
}

fn bench_search(c: &mut Criterion) {
    let mut rng = SmallRng::seed_from_u64(42);
    let mut group = c.benchmark_group("search");
    group.sample_size(20);
    for n in [100_000usize, 1_000_000] {
        let (_dir, index, centres) = build(n, &mut rng);
        // Eight query codes per image: one near a planted cluster, seven random.
        let queries: Vec<Vec<Hash256>> = (0..64)
            .map(|i| {
                let mut q: Vec<Hash256> = (0..7).map(|_| code(&mut rng)).collect();
                q.insert(i % 8, near(centres[i % centres.len()], 4, &mut rng));
                q
            })
            .collect();
        let mut i = 0;
        group.bench_function(BenchmarkId::new("radius31_8orient_mih", n), |b| {
            b.iter(|| {
                i = (i + 1) % queries.len();
                index.search_radius(&queries[i], 31, &Filter::default())
            })
        });
        group.bench_function(BenchmarkId::new("nearest10_8orient_scan", n), |b| {
            b.iter(|| {
                i = (i + 1) % queries.len();
                index.search_nearest(&queries[i], 10, &Filter::default(), NearestEngine::Exact).expect("searches")
            })
        });
        let codes: Vec<[u64; 4]> = (0..n).map(|_| code(&mut rng).0).collect();
        group.bench_function(BenchmarkId::new("radius31_8orient_plain_scan", n), |b| {
            let mut out = Vec::new();
            b.iter(|| {
                i = (i + 1) % queries.len();
                out.clear();
                scan::scan_radius(&codes, 0, &queries[i], 31, &mut out);
                out.len()
            })
        });
    }
    group.finish();
}

fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    statm.split_whitespace().nth(1).and_then(|p| p.parse::<u64>().ok()).unwrap_or(0) * 4096
}

/// HNSW against the exact engine on the same index: build rate, memory after reload,
/// recall of the radius-31 neighbours, and latency (criterion) of both.
fn bench_hnsw(c: &mut Criterion) {
    let n: usize = std::env::var("LOOKALIKE_BENCH_HNSW_N").ok().and_then(|v| v.parse().ok()).unwrap_or(50_000);
    let mut rng = SmallRng::seed_from_u64(7);
    let (dir, mut index, centres) = build(n, &mut rng);
    let started = std::time::Instant::now();
    index.build_hnsw(lookalike::index::HnswParams::default()).expect("graph builds");
    let build_s = started.elapsed().as_secs_f64();
    drop(index);
    let before = rss_bytes();
    let index = Index::open(dir.path(), OpenOptions::default()).expect("reopens");
    let after = rss_bytes();
    let queries: Vec<Hash256> = centres.iter().map(|c| near(*c, 4, &mut rng)).collect();
    let (mut found, mut total) = (0usize, 0usize);
    for q in &queries {
        let exact = index.search_radius(&[*q], 31, &Filter::default());
        let approx =
            index.search_nearest(&[*q], 10, &Filter::default(), NearestEngine::Hnsw { ef: 128 }).expect("searches");
        total += exact.len();
        found += exact.iter().filter(|e| approx.iter().any(|a| a.entry == e.entry)).count();
    }
    eprintln!(
        "hnsw n={n}: build {build_s:.1} s ({:.0} inserts/s), RSS after reopen +{:.0} bytes/entry, recall of radius-31 neighbours at ef=128: {:.3} ({found}/{total})",
        n as f64 / build_s,
        after.saturating_sub(before) as f64 / n as f64,
        found as f64 / total.max(1) as f64
    );
    let mut group = c.benchmark_group("hnsw_vs_exact");
    group.sample_size(30);
    let mut i = 0;
    group.bench_function(BenchmarkId::new("hnsw_nearest10_ef128", n), |b| {
        b.iter(|| {
            i = (i + 1) % queries.len();
            index
                .search_nearest(&queries[i..=i], 10, &Filter::default(), NearestEngine::Hnsw { ef: 128 })
                .expect("searches")
        })
    });
    group.bench_function(BenchmarkId::new("exact_nearest10_scan", n), |b| {
        b.iter(|| {
            i = (i + 1) % queries.len();
            index.search_nearest(&queries[i..=i], 10, &Filter::default(), NearestEngine::Exact).expect("searches")
        })
    });
    group.bench_function(BenchmarkId::new("exact_radius31_mih", n), |b| {
        b.iter(|| {
            i = (i + 1) % queries.len();
            index.search_radius(&queries[i..=i], 31, &Filter::default())
        })
    });
    group.finish();
}

criterion_group!(benches, bench_search, bench_hnsw);
criterion_main!(benches);
