#!/usr/bin/env python3
# Needs nothing beyond Python 3 (stdlib only) and built `lookalike` binaries.
"""CPU per listing of `lookalike query --json`, two or more binaries interleaved.

    python3 tools/bench/query_cpu.py --corpus DIR/corpus OLD_BINARY NEW_BINARY

Indexes the tune split's genuine images once (with the last binary, into --index), then
runs `query --json` on 120 of its 1000 x 1000 copies and on 120 of its 1000 x 1000
negatives, each binary in turn, --reps times. Prints per binary and set the median CPU
(user + system, process start included) per listing and its ratio to the first binary's.
"""
import argparse
import json
import os
import random
import resource
import statistics
import subprocess


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", required=True, help="a corpus built by tools/eval/run.py (the folder with tune/)")
    ap.add_argument("--index", default="/tmp/lookalike-query-cpu-index", help="index folder (built if missing)")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--n", type=int, default=120, help="listings per set")
    ap.add_argument("binaries", nargs="+")
    a = ap.parse_args()
    queries = [json.loads(line) for line in open(os.path.join(a.corpus, "tune", "queries.jsonl"))]
    rng = random.Random(5)
    sets = {}
    for name, want in (("copies", lambda q: q["label"] != "negative"), ("negatives", lambda q: q["label"] == "negative")):
        pick = [q for q in queries if want(q) and q["size"] == [1000, 1000]]
        rng.shuffle(pick)
        sets[name] = [os.path.join(a.corpus, q["file"]) for q in pick[: a.n]]
    if not os.path.exists(a.index):
        subprocess.run([a.binaries[-1], "index", "--data", a.index, "--brand", "bench", "--label", "authentic",
                        os.path.join(a.corpus, "tune", "genuine")], check=True, capture_output=True)
    cpu = {}
    for _ in range(a.reps):
        for name, files in sets.items():
            for b in a.binaries:
                r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
                subprocess.run([b, "query", "--data", a.index, "--json", *files], capture_output=True)
                r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
                used = r1.ru_utime - r0.ru_utime + r1.ru_stime - r0.ru_stime
                cpu.setdefault((name, b), []).append(used / len(files) * 1000)
    for name in sets:
        base = statistics.median(cpu[(name, a.binaries[0])])
        for b in a.binaries:
            m = statistics.median(cpu[(name, b)])
            print(f"{name:9} {b}: {m:.1f} ms CPU per listing (x{m / base:.2f}) over {len(sets[name])} listings")


if __name__ == "__main__":
    main()
