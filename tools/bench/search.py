#!/usr/bin/env python3
# Install the peers first: pip install faiss-cpu numpy   (and gcc; then: python3 tools/bench/search.py --n 1000000,10000000)
"""Search benchmark: lookalike against FAISS and a C scan, same data, same queries, same run.

For each N and each data set (uniform random codes; clustered codes with planted near
duplicates) this

1. generates N 256-bit codes and Q queries of 8 orientation codes each from a seed
   (`searchbench gen`, raw binary files under --work that every side reads);
2. builds a lookalike index through the library API and reopens it (`searchbench build`,
   `open`, `query`): build time, bytes on disk per entry, open time cold (pages evicted
   with posix_fadvise) and warm, with and without the open-time checksum pass, resident
   memory, the exact radius-31 query over all 8 orientations (median/p99 on one thread,
   throughput on 2), recall against brute force, and the library's plain scan;
3. compiles a small C XOR+popcount scan with `gcc -O3 -march=native` and runs it over the
   same mapped codes file (the memory-bandwidth floor, ns per code);
4. runs FAISS (`IndexBinaryFlat`, `IndexBinaryMultiHash` 16 tables × 16 bits with nflip=1,
   exact to radius 31, and `IndexBinaryHNSW`) on the same codes and queries in separate
   processes, one thread for queries, answering the single orientation that was planted;
5. optionally builds lookalike's HNSW graph (slow: off unless --our-hnsw-max-n allows it)
   with the same M and efConstruction as FAISS's (--hnsw-m, --hnsw-efc), and compares the
   two HNSW engines over one ef grid (--hnsw-ef) at equal recall (--recall-targets).

Then it prints the ratios (ours vs each peer), the absolute figures, and writes Markdown.
The machine may be shared and noisy: every figure is a median over repetitions, and the
ratios compare figures taken minutes apart in the same run.
"""

import argparse
import gc
import json
import os
import shutil
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
RADIUS = 31

C_SOURCE = r"""
// XOR+popcount scan of 256-bit codes over a mapped file: the memory-bandwidth floor.
// usage: cscan CODES QUERIES NQ RADIUS < orientations (one integer per query)
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static double now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e9 + t.tv_nsec;
}
static double cpu_ns(void) {  // this thread's CPU time: excludes waiting for a core
    struct timespec t;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
    return t.tv_sec * 1e9 + t.tv_nsec;
}
static int cmp(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}
static double median(double *v, int n) { qsort(v, n, sizeof *v, cmp); return v[n / 2]; }

#define POP(x) __builtin_popcountll(x)

// The plain loop: one code at a time, append the hits.
static size_t scan1_simple(const uint64_t *restrict c, size_t n, const uint64_t *q, int r, uint32_t *restrict out) {
    size_t nh = 0;
    for (size_t i = 0; i < n; i++) {
        const uint64_t *x = c + 4 * i;
        int d = POP(x[0] ^ q[0]) + POP(x[1] ^ q[1]) + POP(x[2] ^ q[2]) + POP(x[3] ^ q[3]);
        if (d <= r) out[nh++] = (uint32_t)i;
    }
    return nh;
}

// Blocked: distances of 256 codes into a small array (vectorisable), then the hits.
#define BLOCK 256
static size_t scan1_blocked(const uint64_t *restrict c, size_t n, const uint64_t *q, int r, uint32_t *restrict out) {
    size_t nh = 0;
    uint16_t d[BLOCK];
    for (size_t b = 0; b < n; b += BLOCK) {
        size_t m = n - b < BLOCK ? n - b : BLOCK;
        const uint64_t *x = c + 4 * b;
        for (size_t i = 0; i < m; i++)
            d[i] = POP(x[4 * i] ^ q[0]) + POP(x[4 * i + 1] ^ q[1]) + POP(x[4 * i + 2] ^ q[2]) + POP(x[4 * i + 3] ^ q[3]);
        for (size_t i = 0; i < m; i++)
            if (d[i] <= r) out[nh++] = (uint32_t)(b + i);
    }
    return nh;
}

// Eight query codes per pass (the 8 orientations): best distance per code.
static size_t scan8_simple(const uint64_t *restrict c, size_t n, const uint64_t *q, int r, uint32_t *restrict out) {
    size_t nh = 0;
    for (size_t i = 0; i < n; i++) {
        const uint64_t *x = c + 4 * i;
        int best = 256;
        for (int k = 0; k < 8; k++) {
            const uint64_t *y = q + 4 * k;
            int d = POP(x[0] ^ y[0]) + POP(x[1] ^ y[1]) + POP(x[2] ^ y[2]) + POP(x[3] ^ y[3]);
            best = d < best ? d : best;
        }
        if (best <= r) out[nh++] = (uint32_t)i;
    }
    return nh;
}

static size_t scan8_blocked(const uint64_t *restrict c, size_t n, const uint64_t *q, int r, uint32_t *restrict out) {
    size_t nh = 0;
    uint16_t d[BLOCK];
    for (size_t b = 0; b < n; b += BLOCK) {
        size_t m = n - b < BLOCK ? n - b : BLOCK;
        const uint64_t *x = c + 4 * b;
        for (size_t i = 0; i < m; i++) d[i] = 256;
        for (int k = 0; k < 8; k++) {
            const uint64_t *y = q + 4 * k;
            for (size_t i = 0; i < m; i++) {
                uint16_t v = POP(x[4 * i] ^ y[0]) + POP(x[4 * i + 1] ^ y[1]) + POP(x[4 * i + 2] ^ y[2]) + POP(x[4 * i + 3] ^ y[3]);
                d[i] = v < d[i] ? v : d[i];
            }
        }
        for (size_t i = 0; i < m; i++)
            if (d[i] <= r) out[nh++] = (uint32_t)(b + i);
    }
    return nh;
}

int main(int argc, char **argv) {
    if (argc != 5) { fprintf(stderr, "usage: cscan CODES QUERIES NQ RADIUS < orientations\n"); return 2; }
    int fd = open(argv[1], O_RDONLY);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) != 0) { perror(argv[1]); return 1; }
    size_t n = st.st_size / 32;
    const uint64_t *codes = mmap(NULL, st.st_size, PROT_READ, MAP_SHARED, fd, 0);
    if (codes == MAP_FAILED) { perror("mmap"); return 1; }
    int nq = atoi(argv[3]), r = atoi(argv[4]);
    uint64_t *qs = malloc((size_t)nq * 32 * 8);
    FILE *qf = fopen(argv[2], "rb");
    if (!qf || fread(qs, 32 * 8, nq, qf) != (size_t)nq) { fprintf(stderr, "reading queries failed\n"); return 1; }
    int *orient = malloc(nq * sizeof(int));
    for (int i = 0; i < nq; i++) if (scanf("%d", &orient[i]) != 1) { fprintf(stderr, "orientations?\n"); return 1; }
    uint32_t *out = malloc(n * sizeof(uint32_t));
    double *t[4], *u[4];
    for (int k = 0; k < 4; k++) { t[k] = malloc(nq * sizeof(double)); u[k] = malloc(nq * sizeof(double)); }
    long hits[4] = {0, 0, 0, 0};
    for (int pass = 0; pass < 2; pass++) {  // the first pass pages the file in
        for (int k = 0; k < 4; k++) hits[k] = 0;
        for (int i = 0; i < nq; i++) {
            const uint64_t *q8 = qs + (size_t)i * 32, *q1 = q8 + 4 * orient[i];
            double w[5], c[5];
            w[0] = now_ns(); c[0] = cpu_ns(); hits[0] += scan1_simple(codes, n, q1, r, out);
            w[1] = now_ns(); c[1] = cpu_ns(); hits[1] += scan1_blocked(codes, n, q1, r, out);
            w[2] = now_ns(); c[2] = cpu_ns(); hits[2] += scan8_simple(codes, n, q8, r, out);
            w[3] = now_ns(); c[3] = cpu_ns(); hits[3] += scan8_blocked(codes, n, q8, r, out);
            w[4] = now_ns(); c[4] = cpu_ns();
            for (int k = 0; k < 4; k++) { t[k][i] = w[k + 1] - w[k]; u[k][i] = c[k + 1] - c[k]; }
        }
    }
    printf("{\"n\": %zu, \"queries\": %d, \"scan1_simple_ns\": %.0f, \"scan1_blocked_ns\": %.0f, "
           "\"scan8_simple_ns\": %.0f, \"scan8_blocked_ns\": %.0f, \"cpu_scan1_simple_ns\": %.0f, "
           "\"cpu_scan1_blocked_ns\": %.0f, \"cpu_scan8_simple_ns\": %.0f, \"cpu_scan8_blocked_ns\": %.0f, "
           "\"hits\": [%ld, %ld, %ld, %ld]}\n",
           n, nq, median(t[0], nq), median(t[1], nq), median(t[2], nq), median(t[3], nq),
           median(u[0], nq), median(u[1], nq), median(u[2], nq), median(u[3], nq),
           hits[0], hits[1], hits[2], hits[3]);
    return 0;
}
"""


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def rss():
    """(VmRSS, RssAnon, RssFile) of this process in bytes."""
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            for k in ("VmRSS:", "RssAnon:", "RssFile:"):
                if line.startswith(k):
                    out[k] = int(line.split()[1]) * 1024
    return out.get("VmRSS:", 0), out.get("RssAnon:", 0), out.get("RssFile:", 0)


def summary(wall, cpu):
    """Median (upper middle), p99 (nearest rank), mean, max: wall clock, and thread CPU time."""
    if not wall:
        return None

    def pct(v, p):
        v = sorted(v)
        return v[len(v) // 2] if p == 0.5 else v[max(1, min(len(v), -(-int(p * 100) * len(v) // 100))) - 1]

    return {
        "n": len(wall),
        "median_ns": pct(wall, 0.5),
        "p99_ns": pct(wall, 0.99),
        "mean_ns": sum(wall) // len(wall),
        "max_ns": max(wall),
        "cpu_median_ns": pct(cpu, 0.5),
        "cpu_p99_ns": pct(cpu, 0.99),
        "cpu_mean_ns": sum(cpu) // len(cpu),
    }


def run_json(cmd, **kw):
    log("  $", " ".join(str(c) for c in cmd))
    p = subprocess.run([str(c) for c in cmd], stdout=subprocess.PIPE, text=True, **kw)
    if p.returncode != 0:
        raise SystemExit(f"command failed ({p.returncode}): {' '.join(map(str, cmd))}")
    return json.loads(p.stdout.strip().splitlines()[-1])


def evict(path):
    """Drop a directory's (or file's) pages from the page cache, so the next open is cold."""
    paths = [os.path.join(path, f) for f in os.listdir(path)] if os.path.isdir(path) else [path]
    for p in paths:
        if os.path.isfile(p):
            fd = os.open(p, os.O_RDONLY)
            try:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)


# --------------------------------------------------------------------------------------
# Peers (FAISS), each in its own process so its memory is its own.


def peer_main(a):
    import faiss
    import numpy as np

    meta = json.load(open(os.path.join(a.data, "queries.json")))
    truth = json.load(open(os.path.join(a.data, "truth.json")))["single"]
    orient = np.array(meta["orient"])
    planted = meta["planted"]
    queries = np.fromfile(os.path.join(a.data, "queries.bin"), dtype=np.uint8).reshape(-1, 8, 32)
    nq = len(queries)
    q1 = np.ascontiguousarray(queries[np.arange(nq), orient])
    base = rss()
    codes = np.fromfile(os.path.join(a.data, "codes.bin"), dtype=np.uint8).reshape(-1, 32)
    n = len(codes)
    faiss.omp_set_num_threads(a.build_threads)
    if a.which == "flat":
        index = faiss.IndexBinaryFlat(256)
    elif a.which == "mih":
        index = faiss.IndexBinaryMultiHash(256, 16, 16)
        index.nflip = 1
    elif a.which == "hnsw":
        index = faiss.IndexBinaryHNSW(256, a.hnsw_m)
        index.hnsw.efConstruction = a.hnsw_efc
    t = time.perf_counter()
    index.add(codes)
    build_s = time.perf_counter() - t
    del codes
    gc.collect()
    after = rss()
    faiss.omp_set_num_threads(1)
    result = {
        "which": a.which,
        "n": n,
        "build_s": build_s,
        "build_threads": a.build_threads,
        "rss_index": after[0] - base[0],
        "rss_total": after[0],
    }
    if a.which == "hnsw":
        # Bytes on disk and load time of the serialized index (cold: pages evicted; then
        # warm), and the resident memory of the loaded copy, which answers the queries.
        path = os.path.join(a.data, "faiss-hnsw.index")
        t = time.perf_counter()
        faiss.write_index_binary(index, path)
        result["write_s"] = time.perf_counter() - t
        result["file_bytes"] = os.path.getsize(path)
        del index
        gc.collect()
        loads = {}
        for how in ("cold", "warm"):
            if how == "cold":
                evict(path)
            before = rss()
            t = time.perf_counter()
            index = faiss.read_index_binary(path)
            loads[how] = time.perf_counter() - t
            result[f"rss_loaded_{how}"] = rss()[0] - before[0]
            if how == "cold":
                del index
                gc.collect()
        result["load_cold_s"], result["load_warm_s"] = loads["cold"], loads["warm"]
        # The second load reuses the pages the first copy freed: only the first adds memory.
        result["rss_loaded"] = result["rss_loaded_cold"]
        os.remove(path)

    def timed(fn, qis, rounds):
        fn(qis[0])
        wall, cpu = [], []
        for _ in range(rounds):
            for qi in qis:
                t, c = time.perf_counter_ns(), time.thread_time_ns()
                fn(qi)
                cpu.append(time.thread_time_ns() - c)
                wall.append(time.perf_counter_ns() - t)
        return summary(wall, cpu)

    def range_recall():
        want = got = extra = 0
        for qi in range(nq):
            lims, D, I = index.range_search(q1[qi : qi + 1], RADIUS + 1)
            s = set(I.tolist())
            t = set(truth[qi])
            want += len(t)
            got += len(s & t)
            extra += len(s - t)
        return (got / want if want else 1.0), extra

    all_q = list(range(nq))
    few = all_q[: a.scan_queries]
    if a.which in ("flat", "mih"):
        rows = []
        flips = [1, 0] if a.which == "mih" else [None]
        for nflip in flips:
            if nflip is not None:
                index.nflip = nflip
            recall, extra = range_recall()
            one = timed(lambda qi: index.range_search(q1[qi : qi + 1], RADIUS + 1), all_q if nflip != None or n <= 2_000_000 else few, a.rounds if a.which == "mih" else 1)
            eight = None
            if nflip != 0:
                eight = timed(lambda qi: index.range_search(queries[qi], RADIUS + 1), few, 1)
            rows.append({"nflip": nflip, "recall": recall, "extra": extra, "one_orientation": one, "eight_orientations": eight})
        result["rows"] = rows
    else:
        rows = []
        for ef in a.ef:
            index.hnsw.efSearch = ef
            want = got = 0
            # An untimed pass over every query (the warm-up) measures recall on the planted ones.
            for qi in all_q:
                D, I = index.search(q1[qi : qi + 1], a.k)
                if planted[qi]:
                    s = set(I[0].tolist())
                    want += len(truth[qi])
                    got += len(s & set(truth[qi]))
            one = timed(lambda qi: index.search(q1[qi : qi + 1], a.k), all_q, a.rounds)
            log(f"  FAISS HNSW ef {ef}: recall {got / want if want else 1.0:.3f}, median {one['median_ns'] / 1e6:.3f} ms")
            rows.append({"ef": ef, "k": a.k, "recall": got / want if want else 1.0, "one_orientation": one})
        result["rows"] = rows
        result["params"] = {"m": a.hnsw_m, "ef_construction": a.hnsw_efc}
    print(json.dumps(result))


# --------------------------------------------------------------------------------------
# Driver


def cargo_build(work):
    """Build the lookalike side and copy it into WORK, so a rebuild during a long run
    cannot swap the binary under it."""
    log("building the lookalike bench binary (cargo build --release --example searchbench)")
    subprocess.run(["cargo", "build", "--release", "--example", "searchbench"], cwd=REPO, check=True)
    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(REPO, "target"))
    exe = os.path.join(work, "searchbench")
    shutil.copy2(os.path.join(target, "release", "examples", "searchbench"), exe)
    return exe


def compile_c(work):
    src = os.path.join(work, "cscan.c")
    exe = os.path.join(work, "cscan")
    with open(src, "w") as f:
        f.write(C_SOURCE)
    subprocess.run(["gcc", "-O3", "-march=native", "-o", exe, src], check=True)
    return exe


def open_times(bench, index_dir, reps):
    out = {}
    for verify in (True, False):
        cold, warm, rss_open = [], [], []
        for _ in range(reps):
            evict(index_dir)
            r = run_json([bench, "open", "--dir", index_dir, "--verify", str(verify).lower()])
            cold.append(r["open_s"])
            rss_open.append(r["rss_after_open"]["vm_rss"] - r["rss_before"]["vm_rss"])
            r = run_json([bench, "open", "--dir", index_dir, "--verify", str(verify).lower()])
            warm.append(r["open_s"])
        key = "verify" if verify else "no_verify"
        out[key] = {
            "cold_s": statistics.median(cold),
            "warm_s": statistics.median(warm),
            "rss_added_by_open": statistics.median(rss_open),
        }
    return out


def one_case(a, bench, cscan, n, kind):
    case = {"n": n, "kind": kind}
    data = os.path.join(a.work, f"{kind}-{n}")
    index_dir = os.path.join(data, "index")
    if not os.path.exists(os.path.join(data, "queries.json")):
        case["gen"] = run_json([bench, "gen", "--n", n, "--kind", kind, "--seed", a.seed, "--queries", a.queries, "--out", data])
    if os.path.exists(index_dir):
        shutil.rmtree(index_dir)
    case["build"] = run_json([bench, "build", "--codes", os.path.join(data, "codes.bin"), "--dir", index_dir])
    case["open"] = open_times(bench, index_dir, a.open_reps)
    case["ours"] = run_json(
        [bench, "query", "--dir", index_dir, "--data", data, "--rounds", a.rounds, "--scan-queries", a.scan_queries]
    )
    meta = json.load(open(os.path.join(data, "queries.json")))
    nq_c = min(a.scan_queries, len(meta["orient"]))
    log(f"  $ {cscan} (C scan, {nq_c} queries)")
    p = subprocess.run(
        [cscan, os.path.join(data, "codes.bin"), os.path.join(data, "queries.bin"), str(nq_c), str(RADIUS)],
        input=" ".join(str(o) for o in meta["orient"][:nq_c]),
        stdout=subprocess.PIPE,
        text=True,
        check=True,
    )
    case["c"] = json.loads(p.stdout)
    peers = ["flat", "mih"] + (["hnsw"] if n <= a.faiss_hnsw_max_n else [])
    case["faiss"] = {}
    ef = ",".join(str(e) for e in a.hnsw_ef)
    for which in peers:
        cmd = [sys.executable, os.path.abspath(__file__), "_peer", "--which", which, "--data", data]
        cmd += ["--scan-queries", a.scan_queries, "--build-threads", a.build_threads]
        if which == "hnsw":
            cmd += ["--rounds", a.hnsw_rounds, "--hnsw-m", a.hnsw_m, "--hnsw-efc", a.hnsw_efc, "--ef", ef, "--k", a.hnsw_k]
        else:
            cmd += ["--rounds", a.rounds]
        case["faiss"][which] = run_json(cmd)
    if n <= a.our_hnsw_max_n:
        log(f"  lookalike HNSW build (M={a.hnsw_m}, ef_construction={a.hnsw_efc}), started {time.strftime('%H:%M:%S')}")
        h = run_json([bench, "hnsw-build", "--dir", index_dir, "--max-connections", a.hnsw_m, "--ef-construction", a.hnsw_efc])
        log(f"  built in {h['build_s']:.0f} s")
        h.update(
            run_json([bench, "hnsw-query", "--dir", index_dir, "--data", data, "--ef", ef, "--k", a.hnsw_k, "--rounds", a.hnsw_rounds])
        )
        case["our_hnsw"] = h
    if not a.keep:
        shutil.rmtree(data)
    return case


# --------------------------------------------------------------------------------------
# Report


def ms(ns):
    return "–" if ns is None else f"{ns / 1e6:.3f} ms" if ns < 1e9 else f"{ns / 1e9:.2f} s"


def mb(b):
    return f"{b / 2**20:.0f} MiB" if b >= 2**20 else f"{b / 1024:.0f} KiB"


def mark(ok):
    return " ✓" if ok else " ✗"


def faiss_row(case, which, nflip=1):
    for r in case["faiss"].get(which, {}).get("rows", []):
        if r.get("nflip") in (nflip, None):
            return r
    return None


def wc(x, key="median"):
    """'wall (cpu)' of a latency summary."""
    return f"{ms(x[key + '_ns'])} ({ms(x['cpu_' + key + '_ns'])})" if x else "–"


def c_best(cc, codes):
    """The faster (by CPU time) of the C program's two loops: (wall, cpu, which)."""
    loops = [(cc[f"cpu_scan{codes}_{k}_ns"], cc[f"scan{codes}_{k}_ns"], k) for k in ("simple", "blocked")]
    cpu, wall, which = min(loops)
    return wall, cpu, which


def ratio_cell(num, den, ok=None):
    """'wall / cpu' ratios of two (wall, cpu) pairs, with a target mark on both."""
    w, c = num[0] / den[0], num[1] / den[1]
    m = "" if ok is None else (" ✓" if ok(w) and ok(c) else " ✗" if not ok(w) and not ok(c) else " ~")
    return f"{w:.2f}× / {c:.2f}×{m}"


def rss_after(o):
    """Resident memory the timed queries added: private, and pages of the mapped files."""
    a, b = o["rss_start"], o["rss_after_queries"]
    return f"+{mb(b['rss_anon'] - a['rss_anon'])} private, +{mb(b['rss_file'] - a['rss_file'])} mapped file pages"


def report(cases, a):
    lines = []
    out = lines.append
    out("## Ratios (same run, same data, same queries)")
    out("")
    out("Ours = the exact radius-31 query over all 8 orientations (`Index::search_radius`), one thread.")
    out("Each cell: wall-clock ratio / thread-CPU-time ratio (the machine is shared: CPU time leaves out")
    out("waiting for a core). ✓ = target met on both, ✗ = on neither, ~ = on one. Ratios > 1 mean ours is faster,")
    out("except in the two scan-vs-C columns (ours ÷ C, lower is better).")
    out("")
    out(
        "| N | data | FAISS MultiHash (1 orientation, exact) ÷ ours, median | same, p99 | plain 8-code scan ÷ ours, median (target ≥ 20× at 10M) "
        "| our 8-code scan ÷ C 8-code scan (target ≤ 1.3) | our 1-code scan ÷ C 1-code scan | FAISS Flat (1 orientation) ÷ ours | FAISS MultiHash (8 orientations) ÷ ours |"
    )
    out("|---|---|---|---|---|---|---|---|---|")
    for c in cases:
        o = c["ours"]
        mih, flat = faiss_row(c, "mih", 1), faiss_row(c, "flat")
        m50 = (o["mih8"]["median_ns"], o["mih8"]["cpu_median_ns"])
        m99 = (o["mih8"]["p99_ns"], o["mih8"]["cpu_p99_ns"])
        f1 = mih["one_orientation"]
        s8 = (o["scan8"]["median_ns"], o["scan8"]["cpu_median_ns"])
        s1 = (o["scan1"]["median_ns"], o["scan1"]["cpu_median_ns"])
        c8, c1 = c_best(c["c"], 8), c_best(c["c"], 1)
        big = c["n"] >= 10_000_000
        f8 = mih["eight_orientations"]
        fl = flat["one_orientation"]
        out(
            f"| {c['n']:,} | {c['kind']} "
            f"| {ratio_cell((f1['median_ns'], f1['cpu_median_ns']), m50, lambda r: r >= 1)} "
            f"| {ratio_cell((f1['p99_ns'], f1['cpu_p99_ns']), m99, lambda r: r >= 1)} "
            f"| {ratio_cell(s8, m50, (lambda r: r >= 20) if big else None)} "
            f"| {ratio_cell(s8, c8[:2], lambda r: r <= 1.3)} "
            f"| {ratio_cell(s1, c1[:2], lambda r: r <= 1.3)} "
            f"| {ratio_cell((fl['median_ns'], fl['cpu_median_ns']), m50)} "
            f"| {ratio_cell((f8['median_ns'], f8['cpu_median_ns']), m50)} |"
        )
    out("")
    out("## Exact radius-31 search, one thread: wall clock (thread CPU time)")
    out("")
    out("Medians and p99 over all queries × rounds (scans and batched 8-orientation peer queries: over the first --scan-queries queries).")
    out("")
    out("| N | data | engine | query codes | median | p99 | recall | build | memory |")
    out("|---|---|---|---|---|---|---|---|---|")
    for c in cases:
        o, b = c["ours"], c["build"]
        pre = f"| {c['n']:,} | {c['kind']} "
        exact = "" if o["exact"] else f" (NOT exact: {o['extra_hits']} extra, {o['wrong_distance']} wrong distance)"
        out(
            pre + f"| **lookalike** multi-index | 8 | {wc(o['mih8'])} | {wc(o['mih8'], 'p99')} | {o['recall']:.3f}{exact} "
            f"| {b['build_s']:.0f} s (tables {b['mih_build_s']:.1f} s) | {rss_after(o)} |"
        )
        if o.get("mih8_first_pass"):
            out(pre + f"| lookalike, first pass after open (page faults) | 8 | {wc(o['mih8_first_pass'])} | {wc(o['mih8_first_pass'], 'p99')} | | | |")
        out(pre + f"| lookalike, planted queries only | 8 | {wc(o['mih8_planted'])} | {wc(o['mih8_planted'], 'p99')} | | | |")
        out(pre + f"| lookalike, random queries only | 8 | {wc(o['mih8_random'])} | {wc(o['mih8_random'], 'p99')} | | | |")
        if o.get("radius45"):
            out(pre + f"| lookalike at radius 45 (the product's default review distance) | 8 | {wc(o['radius45'])} | {wc(o['radius45'], 'p99')} | | | |")
        out(pre + f"| lookalike plain scan (`scan::scan_radius`) | 8 | {wc(o['scan8'])} | {wc(o['scan8'], 'p99')} | 1 | none | |")
        out(pre + f"| lookalike plain scan | 1 | {wc(o['scan1'])} | {wc(o['scan1'], 'p99')} | 1 | none | |")
        for which, label in (("mih", "FAISS IndexBinaryMultiHash 16×16"), ("flat", "FAISS IndexBinaryFlat")):
            p = c["faiss"].get(which)
            if not p:
                continue
            for r in p["rows"]:
                name = label + (f", nflip {r['nflip']}" if r.get("nflip") is not None else "")
                if r.get("nflip") == 0:
                    name += " (exact only to 15)"
                out(
                    pre + f"| {name} | 1 | {wc(r['one_orientation'])} | {wc(r['one_orientation'], 'p99')} "
                    f"| {r['recall']:.3f} | {p['build_s']:.1f} s | {mb(p['rss_index'])} RSS |"
                )
                if r.get("eight_orientations"):
                    e = r["eight_orientations"]
                    out(pre + f"| {name} | 8 (one batch) | {wc(e)} | {wc(e, 'p99')} | | | |")
        cc = c["c"]
        for codes in (1, 8):
            out(
                pre + f"| C scan (`gcc -O3 -march=native`), plain loop / blocked loop | {codes} "
                f"| {ms(cc[f'scan{codes}_simple_ns'])} ({ms(cc[f'cpu_scan{codes}_simple_ns'])}) / "
                f"{ms(cc[f'scan{codes}_blocked_ns'])} ({ms(cc[f'cpu_scan{codes}_blocked_ns'])}) | | 1 | none | |"
            )
    out("")
    out("## Scan cost per code, median query: ns wall (ns CPU)")
    out("")
    out("| N | data | ours, 1 code | C, 1 code (faster loop) | ours, 8 codes per pass | C, 8 codes per pass (faster loop) |")
    out("|---|---|---|---|---|---|")
    for c in cases:
        o, n = c["ours"], c["n"]
        c1, c8 = c_best(c["c"], 1), c_best(c["c"], 8)
        per = lambda x: f"{x[0] / n:.2f} ({x[1] / n:.2f})"
        out(
            f"| {n:,} | {c['kind']} | {per((o['scan1']['median_ns'], o['scan1']['cpu_median_ns']))} | {per(c1)} {c1[2]} "
            f"| {per((o['scan8']['median_ns'], o['scan8']['cpu_median_ns']))} | {per(c8)} {c8[2]} |"
        )
    out("")
    out("## Throughput, open, memory and size")
    out("")
    out(
        "| N | data | 1 thread | 2 threads | open cold: verify / no verify | open warm: verify / no verify | RSS added by open | RSS after queries "
        "| codes+refs+tables on disk | catalog | bytes per entry: search files / all |"
    )
    out("|---|---|---|---|---|---|---|---|---|---|---|")
    for c in cases:
        o, b, op = c["ours"], c["build"], c["open"]
        v, nv = op["verify"], op["no_verify"]
        cat = b["catalog_bytes_per_entry"] * b["n"]
        out(
            f"| {c['n']:,} | {c['kind']} | {o['single_thread_qps']:.0f}/s | {o['throughput_qps']:.0f}/s "
            f"| {v['cold_s']:.2f} s / {nv['cold_s']:.3f} s | {v['warm_s']:.2f} s / {nv['warm_s']:.3f} s "
            f"| {mb(nv['rss_added_by_open'])} | {rss_after(o)} | {mb(b['search_file_bytes'])} | {mb(cat)} "
            f"| {b['search_bytes_per_entry']:.0f} / {b['bytes_per_entry']:.0f} |"
        )
    hn = [c for c in cases if "hnsw" in c["faiss"] or "our_hnsw" in c]
    if hn:
        out("")
        out("## HNSW (approximate), one orientation: recall of the planted queries' radius-31 neighbours among the k returned")
        out("")
        out("| N | data | engine | ef | median | p99 | recall | build | memory |")
        out("|---|---|---|---|---|---|---|---|---|")
        for c in hn:
            pre = f"| {c['n']:,} | {c['kind']} "
            p = c["faiss"].get("hnsw")
            if p:
                for r in p["rows"]:
                    out(
                        pre + f"| FAISS IndexBinaryHNSW M={a.hnsw_m}, efConstruction={a.hnsw_efc}, k={r['k']} | {r['ef']} "
                        f"| {wc(r['one_orientation'])} | {wc(r['one_orientation'], 'p99')} | {r['recall']:.3f} "
                        f"| {p['build_s']:.0f} s ({p['build_threads']} threads) | {mb(p['rss_index'])} RSS |"
                    )
            h = c.get("our_hnsw")
            if h:
                mem = h["rss_after_open"]["vm_rss"] - h["rss_before_open"]["vm_rss"]
                for r in h["rows"]:
                    out(
                        pre + f"| lookalike HNSW M={h['params']['max_connections']}, efConstruction={h['params']['ef_construction']}, k={r['k']} | {r['ef']} "
                        f"| {wc(r['one_orientation'])} | {wc(r['one_orientation'], 'p99')} | {r['recall']:.3f} | {h['build_s']:.0f} s | +{mb(mem)} RSS after reopen |"
                    )
            out(pre + f"| lookalike exact, 8 orientations (for scale) | | {wc(c['ours']['mih8'])} | {wc(c['ours']['mih8'], 'p99')} | 1.000 | | |")
    both = [c for c in hn if "hnsw" in c["faiss"] and "our_hnsw" in c]
    if both:
        out("")
        out(equal_recall(both, a))
    return "\n".join(lines) + "\n"


def at_recall(rows, target):
    """The row of the smallest ef whose recall reaches target, or None."""
    ok = [r for r in rows if r["recall"] >= target]
    return min(ok, key=lambda r: r["ef"]) if ok else None


def equal_recall(cases, a):
    """Both HNSW engines at the smallest ef of the grid that reaches each recall target
    (no interpolation), with the exact engine for scale; then build, size, load, memory."""
    lines = []
    out = lines.append
    out("## HNSW at equal recall, one orientation, one thread")
    out("")
    out(
        f"Recall = share of the planted queries' radius-31 neighbours (of the planted orientation) among the k returned. "
        f"ef grid: {', '.join(str(e) for e in a.hnsw_ef)}; each engine at the smallest ef of the grid that reaches the "
        f"target (no interpolation). Latency over all queries (planted and random) × {a.hnsw_rounds} rounds after a "
        "warm-up pass: wall clock (thread CPU time). Ratio = our latency ÷ FAISS's (> 1: ours slower), wall / CPU. "
        f"k = {a.hnsw_k}; both engines search with ef = k when ef < k, so the first ef is the cheapest either can run."
    )
    out("")
    out("| N | data | recall ≥ | FAISS ef | FAISS recall | FAISS median | FAISS p99 | ours ef | our recall | our median | our p99 | ours ÷ FAISS, median | same, p99 |")
    out("|---|---|---|---:|---:|---|---|---:|---:|---|---|---|---|")
    for c in cases:
        f, h = c["faiss"]["hnsw"], c["our_hnsw"]
        for target in a.recall_targets:
            fr, orr = at_recall(f["rows"], target), at_recall(h["rows"], target)

            def cells(r, rows):
                if r is None:
                    best = max(rows, key=lambda x: x["recall"])
                    return [f"not reached (best {best['recall']:.3f} at ef {best['ef']})", "", "–", "–"]
                o = r["one_orientation"]
                return [str(r["ef"]), f"{r['recall']:.3f}", wc(o), wc(o, "p99")]

            ratio = ratio99 = "–"
            if fr and orr:
                fo, oo = fr["one_orientation"], orr["one_orientation"]
                ratio = ratio_cell((oo["median_ns"], oo["cpu_median_ns"]), (fo["median_ns"], fo["cpu_median_ns"]))
                ratio99 = ratio_cell((oo["p99_ns"], oo["cpu_p99_ns"]), (fo["p99_ns"], fo["cpu_p99_ns"]))
            out(
                f"| {c['n']:,} | {c['kind']} | {target:.2f} | "
                + " | ".join(cells(fr, f["rows"]) + cells(orr, h["rows"]))
                + f" | {ratio} | {ratio99} |"
            )
    out("")
    out("Exact engine, same run (radius 31, every neighbour): one orientation (the HNSW engines' query) and all 8.")
    out("")
    out("| N | data | lookalike exact, 1 orientation, median | p99 | lookalike exact, 8 orientations, median | p99 |")
    out("|---|---|---|---|---|---|")
    for c in cases:
        e1, e8 = c["our_hnsw"].get("exact_one_orientation"), c["ours"]["mih8"]
        out(f"| {c['n']:,} | {c['kind']} | {wc(e1)} | {wc(e1, 'p99')} | {wc(e8)} | {wc(e8, 'p99')} |")
    out("")
    out(
        "| N | data | engine | build | build rate | bytes on disk (per entry) | load (page cache warm) | resident memory |"
    )
    out("|---|---|---|---|---|---|---|---|")
    for c in cases:
        f, h, n = c["faiss"]["hnsw"], c["our_hnsw"], c["n"]
        pre = f"| {n:,} | {c['kind']} "
        out(
            pre + f"| FAISS IndexBinaryHNSW M={f['params']['m']}, efConstruction={f['params']['ef_construction']} "
            f"| {f['build_s']:.1f} s ({f['build_threads']} threads) | {n / f['build_s']:,.0f}/s "
            f"| {mb(f['file_bytes'])} ({f['file_bytes'] / n:.0f}) | {f['load_warm_s']:.3f} s (cold {f['load_cold_s']:.3f} s) "
            f"| {mb(f['rss_loaded_cold'])} loaded index |"
        )
        ra, rb, rq = h["rss_before_open"], h["rss_after_open"], h.get("rss_after_queries")
        mem = f"+{mb(rb['vm_rss'] - ra['vm_rss'])} after open"
        if rq:
            mem += f", +{mb(rq['vm_rss'] - ra['vm_rss'])} after the queries (private +{mb(rq['rss_anon'] - ra['rss_anon'])})"
        out(
            pre + f"| lookalike HNSW (hnsw_rs) M={h['params']['max_connections']}, ef_construction={h['params']['ef_construction']} "
            f"| {h['build_s']:.1f} s (2 threads) | {n / h['build_s']:,.0f}/s "
            f"| {mb(h['graph_file_bytes'])} ({h['graph_file_bytes'] / n:.0f}) graph + data files | {h['open_s']:.3f} s (index open with the graph) "
            f"| {mem} |"
        )
    return "\n".join(lines)


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "_peer":
        p = argparse.ArgumentParser()
        p.add_argument("_peer")
        p.add_argument("--which", required=True, choices=["flat", "mih", "hnsw"])
        p.add_argument("--data", required=True)
        p.add_argument("--rounds", type=int, default=3)
        p.add_argument("--scan-queries", type=int, default=40)
        p.add_argument("--build-threads", type=int, default=2)
        p.add_argument("--hnsw-m", type=int, default=32)
        p.add_argument("--hnsw-efc", type=int, default=40)
        p.add_argument("--ef", type=lambda s: [int(x) for x in s.split(",")], default=[16, 64, 256])
        p.add_argument("--k", type=int, default=32)
        return peer_main(p.parse_args())
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", default="1000000,10000000", help="comma-separated index sizes")
    p.add_argument("--kinds", default="uniform,clustered")
    p.add_argument("--queries", type=int, default=200, help="queries per data set (half planted)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--rounds", type=int, default=5, help="timed passes over all queries (exact engines)")
    p.add_argument("--scan-queries", type=int, default=40, help="queries for the scans (each reads every code)")
    p.add_argument("--open-reps", type=int, default=3)
    p.add_argument("--build-threads", type=int, default=2, help="FAISS threads while building (queries use 1)")
    p.add_argument("--faiss-hnsw-max-n", type=int, default=1_000_000)
    p.add_argument("--our-hnsw-max-n", type=int, default=0, help="lookalike's HNSW build is slow (2.8-3.8 ms/insert at 100k, efConstruction 200, 2 busy cores)")
    p.add_argument("--hnsw-m", type=int, default=32, help="HNSW links per node (M; both engines)")
    p.add_argument("--hnsw-efc", type=int, default=40, help="HNSW efConstruction (both engines)")
    p.add_argument(
        "--hnsw-ef",
        type=lambda s: [int(x) for x in s.split(",")],
        default=[32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024],
        help="HNSW efSearch grid (both engines; below k both search with ef = k)",
    )
    p.add_argument("--hnsw-k", type=int, default=32, help="HNSW neighbours asked for")
    p.add_argument("--hnsw-rounds", type=int, default=3, help="timed passes over all queries per ef (HNSW)")
    p.add_argument(
        "--recall-targets",
        type=lambda s: [float(x) for x in s.split(",")],
        default=[0.9, 0.95, 0.99, 1.0],
        help="recalls at which the HNSW engines are compared (smallest ef of the grid reaching each)",
    )
    p.add_argument("--work", default="/tmp/lookalike-searchbench")
    p.add_argument("--md", default=None, help="Markdown output (default WORK/results.md)")
    p.add_argument("--keep", action="store_true", help="keep generated data and indexes")
    p.add_argument("--bench-bin", help="use this searchbench binary instead of building one")
    p.add_argument("--report-only", metavar="RESULTS_JSON", help="only print the tables of an earlier run")
    a = p.parse_args()
    if a.report_only:
        print(report(json.load(open(a.report_only)), a))
        return
    os.makedirs(a.work, exist_ok=True)
    bench = a.bench_bin or cargo_build(a.work)
    cscan = compile_c(a.work)
    cases = []
    raw = os.path.join(a.work, "results.json")
    for n in [int(x) for x in a.n.split(",")]:
        for kind in a.kinds.split(","):
            log(f"== N = {n:,}, {kind}")
            t = time.time()
            cases.append(one_case(a, bench, cscan, n, kind))
            log(f"   done in {time.time() - t:.0f} s")
            with open(raw, "w") as f:
                json.dump(cases, f, indent=1)
    text = report(cases, a)
    print(text)
    md = a.md or os.path.join(a.work, "results.md")
    with open(md, "w") as f:
        f.write("# lookalike search benchmark\n\n`python3 tools/bench/search.py " + " ".join(sys.argv[1:]) + "`\n\n" + text)
    log(f"wrote {md} and {raw}")


if __name__ == "__main__":
    main()
