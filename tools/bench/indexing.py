# No install needed beyond Python 3 and a release build: cargo build --release --bin lookalike --example hashbench
"""Bulk indexing speed: `lookalike index` against the all-core throughput of the work it
does per file, on the same files in the same run.

    cargo build --release --bin lookalike --example hashbench
    python3 tools/bench/indexing.py DIR_OR_FILES... [--rounds 5] [--batch 256]

Each round runs, in turn (the order rotating from round to round):
  hash        `hashbench --work hash`: file bytes -> PDQ + 8 orientations + pHash on all
              cores, in process, nothing written (the issue's reference: "hashing")
  index work  `hashbench --work index`: `index_image` on all cores, in process, nothing
              written: the hashes plus the 256 local features and the thumbnail that an
              indexed image also needs
  index       `lookalike index` into a fresh directory: the same work plus reading the
              files, SHA-256, the catalog (SQLite, fsync per batch), the record files and
              the multi-index tables at the end

and prints medians over the rounds of images per second (wall clock) and the ratios
index / hash and index / index work: the first is what the issue's target names (>= 0.9),
the second shows what writing costs on top of the work itself.
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
IMAGE_EXT = (".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff")


def files_of(paths):
    out = []
    for p in paths:
        if os.path.isdir(p):
            for root, _, names in os.walk(p, followlinks=True):
                out += [os.path.join(root, n) for n in sorted(names) if n.lower().endswith(IMAGE_EXT)]
        else:
            out.append(p)
    return out


def hashbench(exe, work, files):
    out = subprocess.run([exe, "--all-cores-only", "--repeat", "1", "--work", work, *files],
                         check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])["images_per_s"]


def index_run(exe, paths, batch, workdir):
    data = tempfile.mkdtemp(prefix="idx-", dir=workdir)
    try:
        started = time.perf_counter()
        before = os.times()
        subprocess.run([exe, "index", "--data", data, "--brand", "bench", "--label", "authentic", "-q",
                        "--batch", str(batch), *paths], check=True, capture_output=True)
        after = os.times()
        wall = time.perf_counter() - started
        cpu = (after.children_user - before.children_user) + (after.children_system - before.children_system)
        return wall, cpu
    finally:
        shutil.rmtree(data, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("paths", nargs="+", help="image files or folders")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--batch", type=int, default=256, help="`lookalike index --batch`")
    ap.add_argument("--lookalike", default=os.path.join(ROOT, "target/release/lookalike"))
    ap.add_argument("--hashbench", default=os.path.join(ROOT, "target/release/examples/hashbench"))
    ap.add_argument("--workdir", default=None, help="where the temporary indexes go (default: system temp)")
    args = ap.parse_args()
    files = files_of(args.paths)
    if not files:
        sys.exit("no image files found")
    for exe in (args.lookalike, args.hashbench):
        if not os.path.exists(exe):
            sys.exit(f"{exe} is missing: cargo build --release --bin lookalike --example hashbench")
    n = len(files)
    rates = {"hash": [], "index work": [], "index": []}
    cpu_ms = []
    for r in range(args.rounds):
        order = ["hash", "index work", "index"]
        order = order[r % 3:] + order[:r % 3]
        for what in order:
            if what == "hash":
                rates[what].append(hashbench(args.hashbench, "hash", files))
            elif what == "index work":
                rates[what].append(hashbench(args.hashbench, "index", files))
            else:
                wall, cpu = index_run(args.lookalike, args.paths, args.batch, args.workdir)
                rates[what].append(n / wall)
                cpu_ms.append(1000 * cpu / n)
        print(f"round {r + 1}: " + ", ".join(f"{k} {v[-1]:.0f}/s" for k, v in rates.items()), file=sys.stderr)
    med = {k: statistics.median(v) for k, v in rates.items()}
    per_round = lambda a, b: statistics.median(x / y for x, y in zip(rates[a], rates[b]))
    load = os.getloadavg()
    print(f"{n} files, {args.rounds} rounds, {os.cpu_count()} cores, load average {load[0]:.1f} at the end\n")
    print("| | images/s, all cores (median) |")
    print("|---|---:|")
    for k in ("hash", "index work", "index"):
        print(f"| {k} | {med[k]:.0f} |")
    print(f"\n`lookalike index` CPU per image: {statistics.median(cpu_ms):.2f} ms (median over rounds)")
    print(f"index / hash: {per_round('index', 'hash'):.2f} (median of per-round ratios; the issue's target: >= 0.90)")
    print(f"index / index work: {per_round('index', 'index work'):.2f} (what reading, SHA-256 and writing cost on top)")


if __name__ == "__main__":
    main()
