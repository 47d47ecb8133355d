# pip install pillow numpy pdqhash==0.2.8 imagehash==4.3.2   (or: pip install -r tools/eval/requirements.txt)
"""Score lookalike against its peers on one split of a corpus built by build_corpus.py.

    python3 tools/eval/score.py --corpus /tmp/lookalike-eval/corpus --split report \\
        --lookalike target/release/lookalike --results tools/eval/results.md

In one run, on the same files, every method indexes the split's genuine images (plus its
distractors) and matches every query by exact nearest-neighbour search:

  lookalike     the release CLI: `lookalike index --data TMP --brand B --label authentic
                --manifest CSV` per brand, then `lookalike query --data TMP --json --nearest
                -k 5 FILES...` over chunks of files (several processes at once). Its score
                comes from lookalike_score() below -- the one place to change when
                lookalike's output grows (e.g. a verification score).
  pdq           PyPI pdqhash (Meta's C++ PDQ), original orientation only.
  pdq-dihedral  pdqhash.compute_dihedral: the best of the query's 8 rotations/mirrors.
  phash, dhash  PyPI imagehash (64-bit), on the same Pillow-decoded image.

Python methods search with numpy (XOR + popcount over every indexed code: exact).

lookalike is also read at its defaults: a query is flagged when its verdict is KNOWN_FAKE
or BRAND_PHOTO_REUSED (REVIEW is not a flag); false-flag rates per negative kind
(queries.jsonl `kind`: same_shot_other_logo split by same_colour, same_object_new_layout,
unrelated, photo) and, per positive tier, the share flagged (or flagged or REVIEW) with
the right source. When its matches carry a `confidence`, it is scored by that too
("lookalike-confidence") with a reliability table. Every query's raw `query --json`
object goes to CORPUS/lookalike-SPLIT.jsonl (with "query": its id).

Metrics per method. A query's score is its best match's score (lower = more similar).
Thresholds are chosen on the negative queries' scores: the largest threshold whose false
positive rate (share of negatives scoring <= it) is <= 1% or <= 0.1%. At each: TPR (share
of positives scoring <= it). Top-1 source accuracy: among positives matched at the 0.1%
threshold, the share whose best match is the exact image they were made from (ties are
broken by each method's own ranking). Per tier and per edit: TPR at the 0.1% threshold
(per edit: single-edit queries only; chains have their own row). Hashing throughput:
images per second per core for decode + hash (lookalike: its own hash_ms, which includes
decoding and all 8 orientations + pHash; Python: Pillow decode + the hash).
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import math
import os
import platform
import resource
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from multiprocessing import Pool
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import edits as edits_mod  # noqa: E402

FPR_TARGETS = (0.01, 0.001)
METHODS = ["lookalike", "pdq", "pdq-dihedral", "phash", "dhash"]
# "lookalike-confidence" is not a method of its own: the same lookalike run scored by its
# best match's confidence, reported when the binary gives one.
REPORT_METHODS = ["lookalike", "lookalike-confidence", "pdq", "pdq-dihedral", "phash", "dhash"]
BITS = {"lookalike": 256, "pdq": 256, "pdq-dihedral": 256, "phash": 64, "dhash": 64}


# ============================================================================ lookalike adapter

def score_distance(result: dict) -> tuple[float, str | None]:
    """Today's score: the best match's PDQ Hamming distance (bits of 256), lower is better."""
    matches = result.get("matches") or []
    if "error" in result or not matches:
        return math.inf, None
    best = matches[0]
    return float(best["distance"]), best.get("external_id")


# Added to the distance of a match the local-feature check found to be another logo on
# the stored layout (`replaced`): lookalike never flags such a match, only sends it to
# review, so it ranks after every plain hash distance (at most 256 bits).
REPLACED_PENALTY = 256.0


def score_verified(result: dict) -> tuple[float, str | None]:
    """The full pipeline, as lookalike's verdict sees it: a match the local-feature check
    verified (lookalike flags it) ranks before every hash distance, by its distinct
    matching corners (more is better, hence negated); a match it found replaced
    (another logo on the stored layout: review, never flag) after every plain distance;
    otherwise the best match's PDQ distance."""
    matches = result.get("matches") or []
    if "error" in result or not matches:
        return math.inf, None
    best = matches[0]
    v = best.get("verified")
    if v:
        return -float(v["distinct"]), best.get("external_id")
    if best.get("replaced") is not None:
        return REPLACED_PENALTY + float(best["distance"]), best.get("external_id")
    return float(best["distance"]), best.get("external_id")


def score_confidence(result: dict) -> tuple[float, str | None]:
    """The best match's `confidence` (higher = more likely a copy), negated. NaN when the
    binary gives no confidence (older builds): the scorer is then skipped."""
    matches = result.get("matches") or []
    if "error" in result or not matches:
        return math.inf, None
    best = matches[0]
    c = best.get("confidence")
    if c is None:
        return math.nan, best.get("external_id")
    return -float(c), best.get("external_id")


LOOKALIKE_SCORERS = {
    "distance": score_distance,
    "verified": score_verified,
    "confidence": score_confidence,
}
FLAG_VERDICTS = {"KNOWN_FAKE", "BRAND_PHOTO_REUSED"}


def lookalike_verdict(result: dict) -> tuple[str, str | None]:
    """(verdict, the external id of the match it rests on): lookalike's verdict is its
    best match's (matches are sorted best first)."""
    if "error" in result:
        return "ERROR", None
    matches = result.get("matches") or []
    return result.get("verdict", "?"), (matches[0].get("external_id") if matches else None)


def lookalike_score(result: dict, how: str = "distance") -> tuple[float, str | None]:
    """THE adapter from one `lookalike query --json` object to (score, best source id).

    Lower score = more similar; the source id is the best match's external_id (the
    corpus gives every indexed file its image id as external id). Everything else in this
    scorer is independent of lookalike's output format."""
    return LOOKALIKE_SCORERS[how](result)


# ============================================================================ lookalike runner

def run_lookalike(exe: Path, indexed: list[dict], queries: list[dict], corpus: Path, jobs: int,
                  chunk: int, how: str, workdir: Path | None) -> dict:
    if workdir is not None:
        workdir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="lookalike-eval-", dir=workdir))
    data = tmp / "data"
    try:
        # Run a private copy: others may rebuild target/release/lookalike while this runs,
        # and one run must use one binary for indexing and every query.
        snap = tmp / "lookalike"
        shutil.copy2(exe, snap)
        ident = binary_identity(exe, snap)
        exe = snap
        by_brand: dict[str, list[dict]] = defaultdict(list)
        for r in indexed:
            by_brand[r["brand"]].append(r)
        t0 = time.perf_counter()
        for i, (brand, recs) in enumerate(sorted(by_brand.items())):
            man = tmp / f"brand-{i:04d}.csv"
            with open(man, "w", newline="") as f:
                w = csv.writer(f)
                for r in recs:
                    w.writerow([str((corpus / r["file"]).resolve()), r["id"]])
            proc = subprocess.run([str(exe), "index", "--data", str(data), "--brand", brand, "--label", "authentic",
                                   "--manifest", str(man), "-q"], capture_output=True, text=True)
            if proc.returncode != 0:
                raise RuntimeError(f"lookalike index failed for brand {brand}: {proc.stderr.strip()[-1000:]}")
        index_s = time.perf_counter() - t0
        stats = json.loads(subprocess.run([str(exe), "stats", "--data", str(data), "--json"], capture_output=True,
                                          text=True, check=True).stdout)
        # queries: chunks of files per process, `jobs` processes at a time
        paths = [str((corpus / q["file"]).resolve()) for q in queries]
        chunks = [paths[i:i + chunk] for i in range(0, len(paths), chunk)]
        results: dict[str, dict] = {}
        ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        running: list[tuple[subprocess.Popen, list[str]]] = []
        pending = list(chunks)
        while pending or running:
            while pending and len(running) < jobs:
                c = pending.pop(0)
                p = subprocess.Popen([str(exe), "query", "--data", str(data), "--json", "--nearest", "-k", "5", *c],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                running.append((p, c))
            p, c = running.pop(0)
            out, err = p.communicate()
            if p.returncode not in (0, 1):
                raise RuntimeError(f"lookalike query failed ({p.returncode}): {err.strip()[-1000:]}")
            for line in out.splitlines():
                if line.strip():
                    obj = json.loads(line)
                    results[obj["path"]] = obj
        query_s = time.perf_counter() - t0
        ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        query_cpu = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    scores, best, hash_ms, search_ms, errors = [], [], [], [], 0
    raw = []
    for p in paths:
        obj = results.get(p, {"error": "no output"})
        raw.append(obj)
        s, b = lookalike_score(obj, how)
        scores.append(s)
        best.append(b)
        if "error" in obj:
            errors += 1
        else:
            hash_ms.append(obj["hash_ms"])
            search_ms.append(obj["search_ms"])
    return {"scores": np.array(scores, dtype=np.float64), "best": best, "errors": errors, "raw": raw,
            "index_seconds": index_s, "query_seconds": query_s, "query_cpu_seconds": query_cpu, "binary": ident,
            "index_calls": len(by_brand),
            "query_calls": len(chunks), "indexed_records": stats,
            "hash_ms_mean": float(np.mean(hash_ms)) if hash_ms else math.nan,
            "search_ms_mean": float(np.mean(search_ms)) if search_ms else math.nan}


def binary_identity(original: Path, copy: Path) -> dict:
    import hashlib
    h = hashlib.sha256()
    with open(copy, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    st = copy.stat()
    return {"path": str(original), "sha256": h.hexdigest()[:16],
            "mtime": dt.datetime.fromtimestamp(st.st_mtime).strftime("%Y-%m-%d %H:%M:%S")}


def source_state(exe: Path) -> str:
    """git describe of the checkout the binary sits in (if any) and whether it has local changes."""
    for d in [exe.resolve().parent, *exe.resolve().parents]:
        if (d / ".git").exists():
            desc = subprocess.run(["git", "-C", str(d), "describe", "--always", "--dirty"], capture_output=True,
                                  text=True).stdout.strip()
            n = len(subprocess.run(["git", "-C", str(d), "status", "--porcelain", "--untracked-files=no"],
                                   capture_output=True, text=True).stdout.splitlines())
            return desc + (f", {n} tracked files modified" if n else "")
    return "not in a git checkout"


# ============================================================================ Python methods

def _hash_file(task):
    """Decode once with Pillow, then hash with every Python method, timing each.

    For queries (dihedral=True) the plain PDQ hash is taken from compute_dihedral()'s
    first (original-orientation) hash, which is the same computation; pdqhash.compute() is
    still run, for its timing and as a check, on every `plain_every`-th query."""
    path, dihedral, time_plain = task
    import imagehash
    import pdqhash
    from PIL import Image
    out = {}
    clock = time.thread_time  # CPU time of this thread: robust to other load on the machine
    t0, w0 = clock(), time.perf_counter()
    im = Image.open(path).convert("RGB")
    arr = np.asarray(im)
    out["t_decode"], out["w_decode"] = clock() - t0, time.perf_counter() - w0
    plain = None
    if not dihedral or time_plain:
        t0 = clock()
        h, _q = pdqhash.compute(arr)
        out["t_pdq"] = clock() - t0
        plain = np.packbits(np.asarray(h, dtype=np.uint8)).tobytes()
    if dihedral:
        t0 = clock()
        hs, _q = pdqhash.compute_dihedral(arr)
        out["t_pdq-dihedral"] = clock() - t0
        packed = [np.packbits(np.asarray(x, dtype=np.uint8)).tobytes() for x in hs]
        out["pdq-dihedral"] = b"".join(packed)
        if plain is not None and plain != packed[0]:
            out["pdq_mismatch"] = True
        plain = packed[0]
    out["pdq"] = plain
    for name, fn in (("phash", imagehash.phash), ("dhash", imagehash.dhash)):
        t0 = clock()
        ih = fn(im)
        out[f"t_{name}"] = clock() - t0
        out[name] = np.packbits(ih.hash.flatten().astype(np.uint8)).tobytes()
    return out


def hash_all(paths: list[str], dihedral: bool, jobs: int, plain_every: int = 1) -> list[dict]:
    tasks = [(p, dihedral, i % plain_every == 0) for i, p in enumerate(paths)]
    if jobs <= 1:
        return [_hash_file(t) for t in tasks]
    with Pool(jobs) as pool:
        return list(pool.imap(_hash_file, tasks, chunksize=16))


def _codes(recs: list[dict], key: str, nbytes: int) -> np.ndarray:
    a = np.frombuffer(b"".join(r[key] for r in recs), dtype=np.uint8)
    return a.reshape(len(recs), -1, nbytes)  # [n, variants, bytes]


def nearest(qcodes: np.ndarray, icodes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Exact: for each query (any of its variants) the min Hamming distance to any indexed
    code and the index of that code (first in index order on ties)."""
    nb = icodes.shape[-1]
    words = nb // 8
    iq = icodes[:, 0, :].copy().view(np.uint64).reshape(len(icodes), words)
    best_d = np.empty(len(qcodes), dtype=np.int64)
    best_i = np.empty(len(qcodes), dtype=np.int64)
    step = 256
    for s in range(0, len(qcodes), step):
        q = qcodes[s:s + step].copy().view(np.uint64).reshape(-1, qcodes.shape[1], words)
        d = np.bitwise_count(q[:, :, None, :] ^ iq[None, None, :, :]).sum(-1, dtype=np.int64)  # [b, v, n]
        d = d.min(axis=1)
        best_i[s:s + step] = d.argmin(axis=1)
        best_d[s:s + step] = d.min(axis=1)
    return best_d, best_i


def run_python_methods(indexed: list[dict], queries: list[dict], corpus: Path, jobs: int, plain_every: int) -> dict:
    ipaths = [str(corpus / r["file"]) for r in indexed]
    qpaths = [str(corpus / q["file"]) for q in queries]
    t0 = time.perf_counter()
    ih = hash_all(ipaths, False, jobs)
    qh = hash_all(qpaths, True, jobs, plain_every)
    wall = time.perf_counter() - t0
    ids = [r["id"] for r in indexed]
    out = {}
    dec = np.array([h["t_decode"] for h in qh])
    for m, key, nbytes in (("pdq", "pdq", 32), ("pdq-dihedral", "pdq-dihedral", 32), ("phash", "phash", 8),
                           ("dhash", "dhash", 8)):
        icodes = _codes(ih, "pdq" if m == "pdq-dihedral" else key, nbytes)
        qcodes = _codes(qh, key, nbytes)
        d, i = nearest(qcodes, icodes)
        t = np.array([h[f"t_{m}"] for h in qh if f"t_{m}" in h])
        out[m] = {"timed": len(t), "scores": d.astype(np.float64), "best": [ids[k] for k in i],
                  "decode_ms_mean": float(dec.mean() * 1000), "hash_ms_mean": float(t.mean() * 1000),
                  "decode_wall_ms_mean": float(np.mean([h["w_decode"] for h in qh]) * 1000),
                  "images_per_s": float(1.0 / (dec.mean() + t.mean()))}
    out["_wall"] = wall
    out["_pdq_mismatch"] = sum(1 for h in qh if h.get("pdq_mismatch"))
    return out


# ============================================================================ metrics

def threshold_at(neg: np.ndarray, target: float, candidates: np.ndarray) -> float:
    """The largest candidate score t (a score some query got) with FPR(t) = share of
    negatives scoring <= t that is <= target; -inf if there is none."""
    srt = np.sort(neg)
    vals = np.unique(candidates[np.isfinite(candidates)])
    fpr = np.searchsorted(srt, vals, side="right") / max(1, len(srt))
    ok = vals[fpr <= target]
    return float(ok.max()) if len(ok) else -math.inf


NEAR_MISS = {"same_shot_other_logo", "same_object_new_layout", "product_hard"}


def neg_group(q: dict) -> str:
    """A negative's kind (queries.jsonl `kind`; corpora before it: `source_kind`), the
    same-shot ones split by whether the other logo has the genuine logo's colour."""
    k = q.get("kind") or q["source_kind"]
    if k == "same_shot_other_logo":
        return k + (" (same colour)" if q.get("same_colour") else " (other colour)")
    return k


def pos_group(q: dict) -> str:
    k = q["source_kind"]
    return "stamp" if k == "stamp_recolour" else k


def metrics(scores: np.ndarray, best: list, queries: list[dict]) -> dict:
    lab = np.array([q["label"] == "positive" for q in queries])
    pos, neg = scores[lab], scores[~lab]
    res = {"n_pos": int(lab.sum()), "n_neg": int((~lab).sum())}
    for f in FPR_TARGETS:
        t = threshold_at(neg, f, scores)
        res[f"thr@{f}"] = t
        res[f"fpr@{f}"] = float(np.mean(neg <= t))
        res[f"fp@{f}"] = int(np.sum(neg <= t))
        res[f"tpr@{f}"] = float(np.mean(pos <= t))
    t = res[f"thr@{FPR_TARGETS[-1]}"]
    matched = [(q, b) for q, s, b in zip(queries, scores, best) if q["label"] == "positive" and s <= t]
    res["top1_n"] = len(matched)
    res["top1"] = float(np.mean([b == q["source"] for q, b in matched])) if matched else math.nan
    allpos = [(q, b) for q, b in zip(queries, best) if q["label"] == "positive"]
    res["top1_all"] = float(np.mean([b == q["source"] for q, b in allpos])) if allpos else math.nan

    def tpr_where(pred):
        sel = [s <= t for q, s in zip(queries, scores) if q["label"] == "positive" and pred(q)]
        return (float(np.mean(sel)) if sel else math.nan, len(sel))

    res["tier"] = {tier: tpr_where(lambda q, tier=tier: not q["chain"] and q["tier"] == tier)
                   for tier in edits_mod.TIERS}
    res["tier_all"] = {tier: tpr_where(lambda q, tier=tier: q["tier"] == tier) for tier in edits_mod.TIERS}
    res["chains"] = tpr_where(lambda q: q["chain"])
    res["edit"] = {e.name: tpr_where(lambda q, n=e.name: not q["chain"] and q["edits"] and q["edits"][0]["name"] == n)
                   for e in edits_mod.EDITS}
    res["recolour"] = tpr_where(lambda q: bool(q.get("logo_recolour")))
    res["recolour_alone"] = tpr_where(lambda q: bool(q.get("logo_recolour")) and len(q["edits"]) == 1)
    res["recolour_edited"] = tpr_where(lambda q: bool(q.get("logo_recolour")) and len(q["edits"]) > 1)
    res["pos_kind"] = {k: tpr_where(lambda q, k=k: pos_group(q) == k)
                       for k in sorted({pos_group(q) for q in queries if q["label"] == "positive"})}
    # the same without the near-miss negatives (another logo on a genuine shot or object)
    keep = np.array([q["label"] == "positive" or neg_group(q).split(" (")[0] not in NEAR_MISS for q in queries])
    neg2 = scores[keep & ~lab]
    res["no_hard"] = {"n_neg": int(len(neg2))}
    for f in FPR_TARGETS:
        t2 = threshold_at(neg2, f, scores)
        res["no_hard"][f"thr@{f}"] = t2
        res["no_hard"][f"tpr@{f}"] = float(np.mean(pos <= t2))
    # negatives: where the false positives come from
    t1 = res[f"thr@{FPR_TARGETS[0]}"]
    kinds = sorted({neg_group(q) for q in queries if q["label"] == "negative"})
    res["neg_kind"] = {}
    for k in kinds:
        s = np.array([sc for q, sc in zip(queries, scores) if q["label"] == "negative" and neg_group(q) == k])
        res["neg_kind"][k] = {"n": len(s), "median": float(np.median(s)), "p1": float(np.percentile(s, 1)),
                              "fp@1%": int((s <= t1).sum()), "fp@0.1%": int((s <= t).sum())}
    return res


def verdict_metrics(raw: list[dict], queries: list[dict]) -> dict:
    """lookalike at its defaults: a query is flagged when its verdict is KNOWN_FAKE or
    BRAND_PHOTO_REUSED (REVIEW is not a flag); a positive counts when the verdict's match
    is the image it was made from."""
    rows = []
    for q, obj in zip(queries, raw):
        v, ext = lookalike_verdict(obj)
        rows.append((q, v in FLAG_VERDICTS, v == "REVIEW", ext == q["source"]))
    out = {"neg": {}, "pos": {}}
    negs = [r for r in rows if r[0]["label"] == "negative"]
    for k in ["all negatives"] + sorted({neg_group(r[0]) for r in negs}) + \
            (["same_shot_other_logo (all)"] if any(neg_group(r[0]).startswith("same_shot") for r in negs) else []):
        sel = [r for r in negs if k == "all negatives" or neg_group(r[0]) == k or
               (k == "same_shot_other_logo (all)" and neg_group(r[0]).startswith("same_shot"))]
        out["neg"][k] = {"n": len(sel), "flag": sum(r[1] for r in sel), "review": sum(r[2] for r in sel)}
    pos = [r for r in rows if r[0]["label"] == "positive"]
    groups = [("all positives", lambda q: True)] + \
             [(f"{t} (incl. chains)", lambda q, t=t: q["tier"] == t) for t in edits_mod.TIERS] + \
             [(f"{t}, single edit", lambda q, t=t: q["tier"] == t and not q["chain"]) for t in edits_mod.TIERS] + \
             [("chains", lambda q: q["chain"]), ("logo_recolour", lambda q: bool(q.get("logo_recolour")))] + \
             [(f"source: {k}", lambda q, k=k: pos_group(q) == k) for k in sorted({pos_group(r[0]) for r in pos})]
    for name, pred in groups:
        sel = [r for r in pos if pred(r[0])]
        out["pos"][name] = {"n": len(sel), "flag_right": sum(r[1] and r[3] for r in sel),
                            "flag_or_review_right": sum((r[1] or r[2]) and r[3] for r in sel),
                            "flag_wrong": sum(r[1] and not r[3] for r in sel)}
    return out


def reliability(conf: np.ndarray, queries: list[dict], best: list) -> list[dict]:
    """10 bins of predicted confidence vs the observed share of true copies (positives)
    and of positives whose best match is their own source."""
    lab = np.array([q["label"] == "positive" for q in queries])
    right = np.array([q["label"] == "positive" and b == q["source"] for q, b in zip(queries, best)])
    c = np.where(np.isfinite(conf), conf, 0.0)
    lo, hi = (0.0, 1.0) if (c.min() >= 0 and c.max() <= 1) else (float(c.min()), float(c.max()))
    edges = np.linspace(lo, hi, 11)
    out = []
    for i in range(10):
        sel = (c >= edges[i]) & ((c < edges[i + 1]) if i < 9 else (c <= edges[i + 1]))
        n = int(sel.sum())
        out.append({"lo": float(edges[i]), "hi": float(edges[i + 1]), "n": n,
                    "mean_conf": float(c[sel].mean()) if n else math.nan,
                    "copies": float(lab[sel].mean()) if n else math.nan,
                    "right_source": float(right[sel].mean()) if n else math.nan})
    return out


# ============================================================================ report

def fmt_pct(x):
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.1f}%"


def fmt_thr(t):
    return "-inf" if t == -math.inf else (f"{t:g}")


def md_table(head: list[str], rows: list[list[str]], align: str | None = None) -> str:
    align = align or ("l" + "r" * (len(head) - 1))
    sep = ["---:" if a == "r" else "---" for a in align]
    lines = ["| " + " | ".join(head) + " |", "| " + " | ".join(sep) + " |"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def fmt_short(m: str, t: float) -> str:
    """A score as its method states it: lookalike-confidence's as the confidence itself."""
    if m == "lookalike-confidence":
        return "–" if not math.isfinite(t) else f"{-t:.4g}"
    return fmt_thr(t) if t == -math.inf else f"{t:g}"


def fmt_threshold(m: str, t: float) -> str:
    if m == "lookalike-confidence":
        return "–" if t == -math.inf else f"confidence ≥ {-t:.4g}"
    return f"≤ {fmt_thr(t)} of {BITS[m]}"


def render_report(ctx: dict, res: dict, perf: dict) -> str:
    methods = [m for m in REPORT_METHODS if m in res]
    out = [f"# lookalike evaluation — split `{ctx['split']}`", ""]
    out.append(f"Generated {ctx['when']} by `{ctx['command']}`.")
    out.append("")
    out.append(f"- Corpus: `{ctx['corpus']}` (seed {ctx['seed']}{', --small' if ctx['small'] else ''}), split "
               f"`{ctx['split']}`: {ctx['n_genuine']} genuine images ({ctx['genuine_kinds']}) in "
               f"{ctx['n_brands']} brands + {ctx['n_distractors']} distractors indexed; "
               f"{ctx['n_pos']} positive and {ctx['n_neg']} negative queries ({ctx['neg_kinds']}).")
    b = ctx.get("binary") or {}
    out.append(f"- lookalike: `{ctx['lookalike']}` (sha256 {b.get('sha256', '?')}…, built {b.get('mtime', '?')}; "
               f"source: {ctx['git']}), score = `{ctx['lookalike_score']}`; "
               f"pdqhash {ctx['versions']['pdqhash']}, imagehash {ctx['versions']['imagehash']}, "
               f"Pillow {ctx['versions']['pillow']}, numpy {ctx['versions']['numpy']}.")
    out.append(f"- Machine: {ctx['machine']}; {ctx['jobs']} worker processes per method.")
    out.append("")
    out.append("## Summary")
    out.append("")
    if ctx["lookalike_score"] == "verified":
        out.append("lookalike's score: a match its local-feature check verified (which it flags) counts as "
                   "minus its distinct matching corners, below every distance; one it found to be another "
                   "logo on the stored layout (`replaced`: sent to review, never flagged) counts as its "
                   "distance plus 256, above every distance; otherwise, as for every method, the best "
                   "match's Hamming distance.")
        out.append("")
    out.append("Score = best match's Hamming distance (lower = closer; lookalike-confidence: the best match's "
               "confidence, higher = closer). Thresholds are set on the negatives; "
               "TPR = share of positives at or under them. Top-1 = among positives matched at the 0.1% "
               "threshold, share whose best match is their own source image.")
    out.append("")
    rows = []
    for m in methods:
        r = res[m]
        rows.append([m, fmt_pct(r["tpr@0.01"]), f"{fmt_threshold(m, r['thr@0.01'])} ({r['fp@0.01']} FP)",
                     fmt_pct(r["tpr@0.001"]), f"{fmt_threshold(m, r['thr@0.001'])} ({r['fp@0.001']} FP)",
                     f"{fmt_pct(r['top1'])} (n={r['top1_n']})",
                     fmt_pct(r["top1_all"]), f"{perf[m]['images_per_s']:.0f}"])
    out.append(md_table(["method", "TPR @ FPR 1%", "distance threshold", "TPR @ FPR 0.1%", "distance threshold",
                         "top-1 source acc. (matched @ 0.1%)", "top-1, all positives", "hash images/s per core"],
                        rows))
    n_neg = res[methods[0]]["n_neg"]
    if n_neg < 2000:
        out.append("")
        out.append(f"With {n_neg} negatives, FPR 0.1% allows {int(n_neg * 0.001)} false positive(s): "
                   "that column is noisy.")
    out.append("")
    nh = res[methods[0]]["no_hard"]["n_neg"]
    out.append(f"Without the near-miss negatives (`same_shot_other_logo`, `same_object_new_layout`: another "
               f"logo on a genuine shot or its object), thresholds set on the other {nh} negatives only:")
    out.append("")
    rows = [[m, fmt_pct(res[m]["no_hard"]["tpr@0.01"]), fmt_short(m, res[m]["no_hard"]["thr@0.01"]),
             fmt_pct(res[m]["no_hard"]["tpr@0.001"]), fmt_short(m, res[m]["no_hard"]["thr@0.001"])] for m in methods]
    out.append(md_table(["method", "TPR @ FPR 1%", "threshold", "TPR @ FPR 0.1%", "threshold"], rows))
    out.append("")
    out.append("## TPR per tier (at the FPR 0.1% threshold)")
    out.append("")
    any_m = res[methods[0]]
    head = ["method"] + [f"{t} (n={any_m['tier'][t][1]})" for t in edits_mod.TIERS] + \
           [f"chains (n={any_m['chains'][1]})"] + [f"all {t} incl. chains (n={any_m['tier_all'][t][1]})"
                                                 for t in edits_mod.TIERS] + \
           [f"logo_recolour (n={any_m['recolour'][1]})"] + \
           [f"source {k} (n={v[1]})" for k, v in any_m["pos_kind"].items()]
    rows = [[m] + [fmt_pct(res[m]["tier"][t][0]) for t in edits_mod.TIERS] + [fmt_pct(res[m]["chains"][0])] +
            [fmt_pct(res[m]["tier_all"][t][0]) for t in edits_mod.TIERS] + [fmt_pct(res[m]["recolour"][0])] +
            [fmt_pct(res[m]["pos_kind"][k][0]) for k in any_m["pos_kind"]] for m in methods]
    out.append(md_table(head, rows))
    out.append("")
    out.append("## TPR per edit (single-edit queries, at the FPR 0.1% threshold)")
    out.append("")
    rows = []
    for e in edits_mod.EDITS:
        n = any_m["edit"][e.name][1]
        rows.append([e.name, e.tier, str(n)] + [fmt_pct(res[m]["edit"][e.name][0]) for m in methods])
    rows.append(["chain of 2–3", "max of its edits", str(any_m["chains"][1])] +
                [fmt_pct(res[m]["chains"][0]) for m in methods])
    rows.append(["logo_recolour alone", edits_mod.RECOLOUR_TIER, str(any_m["recolour_alone"][1])] +
                [fmt_pct(res[m]["recolour_alone"][0]) for m in methods])
    rows.append(["logo_recolour + edits", "max of its edits", str(any_m["recolour_edited"][1])] +
                [fmt_pct(res[m]["recolour_edited"][0]) for m in methods])
    out.append(md_table(["edit", "tier", "n"] + methods, rows, "llr" + "r" * len(methods)))
    out.append("")
    out.append("## Negatives: where false positives come from")
    out.append("")
    out.append("Per kind of negative: median and 1st-percentile best-match score, and false positives "
               "at the 1% / 0.1% thresholds. `same_shot_other_logo` = a genuine shot's exact frame with another "
               "brand's logo (same colour as the genuine logo or not); `same_object_new_layout` = a genuine "
               "shot's object in another layout with another logo; `unrelated` = product shots of other "
               "objects and logos; `photo` = other photos. For lookalike-confidence the numbers are "
               "confidences (higher = closer): its median and 99th percentile.")
    out.append("")
    kinds = list(any_m["neg_kind"])
    head = ["method"] + [f"{k} (n={any_m['neg_kind'][k]['n']}): median / p1 / FP 1% / FP 0.1%" for k in kinds]
    rows = [[m] + [f"{fmt_short(m, res[m]['neg_kind'][k]['median'])} / {fmt_short(m, res[m]['neg_kind'][k]['p1'])} / "
                   f"{res[m]['neg_kind'][k]['fp@1%']} / {res[m]['neg_kind'][k]['fp@0.1%']}" for k in kinds]
            for m in methods]
    out.append(md_table(head, rows))
    out.append("")
    if ctx.get("verdicts"):
        vm = ctx["verdicts"]
        out.append("## lookalike at its defaults (verdicts)")
        out.append("")
        out.append("A query is *flagged* when lookalike's verdict is KNOWN_FAKE or BRAND_PHOTO_REUSED (REVIEW is "
                   "not a flag). Negatives: share flagged (false flags) and share sent to REVIEW, per kind.")
        out.append("")
        rows = [[k, str(v["n"]), f"{fmt_pct(v['flag'] / v['n'] if v['n'] else math.nan)} ({v['flag']})",
                 f"{fmt_pct(v['review'] / v['n'] if v['n'] else math.nan)} ({v['review']})"]
                for k, v in vm["neg"].items()]
        out.append(md_table(["negatives", "n", "flagged", "REVIEW"], rows, "lrrr"))
        out.append("")
        out.append("Positives: flagged with the right source (the verdict's match is the image the query was made "
                   "from), flagged or REVIEW with the right source, and flagged with a wrong source.")
        out.append("")
        rows = [[k, str(v["n"]), fmt_pct(v["flag_right"] / v["n"] if v["n"] else math.nan),
                 fmt_pct(v["flag_or_review_right"] / v["n"] if v["n"] else math.nan), str(v["flag_wrong"])]
                for k, v in vm["pos"].items()]
        out.append(md_table(["positives", "n", "flagged, right source", "flagged or REVIEW, right source",
                             "flagged, wrong source"], rows, "lrrrr"))
        out.append("")
    if ctx.get("confidence_note"):
        out.append("## lookalike by confidence")
        out.append("")
        out.append(ctx["confidence_note"])
        out.append("")
        if ctx.get("reliability"):
            out.append("Reliability: queries binned by their best match's confidence; observed share of true copies "
                       "(positives) and of positives whose best match is their own source.")
            out.append("")
            rows = [[f"{b['lo']:.2f}–{b['hi']:.2f}", str(b["n"]),
                     "–" if math.isnan(b["mean_conf"]) else f"{b['mean_conf']:.3f}",
                     fmt_pct(b["copies"]), fmt_pct(b["right_source"])] for b in ctx["reliability"]]
            out.append(md_table(["confidence", "n", "mean confidence", "copies", "copies, right source"], rows,
                                "lrrrr"))
            out.append("")
    out.append("## Throughput")
    out.append("")
    rows = []
    for m in [m for m in methods if m in perf]:
        p = perf[m]
        rows.append([m, f"{p['images_per_s']:.0f}", p["detail"]])
    out.append(md_table(["method", "images/s per core", "detail"], rows, "lrl"))
    out.append("")
    out.append("Per-core rates from CPU time (thread CPU time per call for the Python methods, the query "
               "processes' CPU time for lookalike), so other load on the machine does not skew them; the Python "
               "methods share one Pillow decode (counted in each rate).")
    out.append("")
    if "lookalike" in res:
        lk = perf["lookalike"]
        out.append(f"lookalike end to end: indexing {ctx['n_genuine'] + ctx['n_distractors']} images took "
                   f"{lk['index_seconds']:.1f} s in {lk['index_calls']} `index` calls (one per brand); "
                   f"{ctx['n_pos'] + ctx['n_neg']} queries took {lk['query_seconds']:.1f} s wall in "
                   f"{lk['query_calls']} `query` calls, {ctx['jobs']} at a time "
                   f"({(ctx['n_pos'] + ctx['n_neg']) / lk['query_seconds']:.0f} queries/s); "
                   f"{lk['errors']} errors.")
        out.append("")
        if BITS.get("lookalike") == 256 and ctx["lookalike_score"] == "distance":
            r = ctx["fixed"]
            out.append(f"At lookalike's own flag distance (31): TPR {fmt_pct(r['tpr31'])}, FPR {fmt_pct(r['fpr31'])}; "
                       f"at its review distance (45): TPR {fmt_pct(r['tpr45'])}, FPR {fmt_pct(r['fpr45'])}.")
            out.append("")
    out.append(f"Total scoring time {ctx['total_seconds']:.0f} s.")
    out.append("")
    return "\n".join(out)


def main(argv=None, ctx_command: str | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", type=Path, required=True, help="corpus directory (build_corpus.py --out)")
    ap.add_argument("--split", choices=["tune", "report"], default="report")
    ap.add_argument("--lookalike", type=Path, default=Path(__file__).resolve().parents[2] / "target/release/lookalike")
    ap.add_argument("--lookalike-score", choices=sorted(LOOKALIKE_SCORERS), default="verified")
    ap.add_argument("--lookalike-source", metavar="TEXT",
                    help="what the binary was built from, for the report (default: git describe of its checkout)")
    ap.add_argument("--methods", default=",".join(METHODS), help="comma-separated subset of " + ",".join(METHODS))
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 2, help="processes per method")
    ap.add_argument("--plain-pdq-every", type=int, default=4, metavar="N",
                    help="run pdqhash.compute() (timing + check) on every N-th query; the plain PDQ hash "
                         "is otherwise compute_dihedral()'s original orientation, the same bits (default 4)")
    ap.add_argument("--chunk", type=int, default=250, help="files per `lookalike query` call")
    ap.add_argument("--results", type=Path, help="write the Markdown report here (default: CORPUS/results-SPLIT.md)")
    ap.add_argument("--workdir", type=Path, help="where lookalike's temporary index goes (default: system temp)")
    ap.add_argument("--no-distractors", action="store_true", help="index the genuine images only")
    args = ap.parse_args(argv)
    t_start = time.perf_counter()
    corpus = args.corpus.expanduser().resolve()
    split = corpus / args.split
    load = lambda name: [json.loads(l) for l in open(split / name)]  # noqa: E731
    genuine = load("genuine.jsonl")
    distractors = [] if args.no_distractors else load("distractors.jsonl")
    queries = load("queries.jsonl")
    for r in genuine + distractors + queries:
        r["file"] = str(Path(r["file"]))
    indexed = genuine + distractors
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = set(methods) - set(METHODS)
    if unknown:
        sys.exit(f"unknown methods: {', '.join(sorted(unknown))}")
    cinfo = json.loads((corpus / "corpus.json").read_text())
    print(f"split {args.split}: {len(genuine)} genuine + {len(distractors)} distractors indexed, "
          f"{len(queries)} queries", flush=True)

    res, perf = {}, {}
    fixed = {}
    if "lookalike" in methods:
        exe = args.lookalike.resolve()
        if not exe.exists():
            sys.exit(f"{exe} not found: run `cargo build --release` first")
        print("lookalike: indexing and querying ...", flush=True)
        lk = run_lookalike(exe, indexed, queries, corpus, args.jobs, args.chunk, args.lookalike_score, args.workdir)
        # every query's raw answer, for fitting a confidence model on per-match evidence later
        raw_path = corpus / f"lookalike-{args.split}.jsonl"
        with open(raw_path, "w") as f:
            for q, obj in zip(queries, lk["raw"]):
                f.write(json.dumps({"query": q["id"], **obj}, separators=(",", ":")) + "\n")
        conf = [score_confidence(o) for o in lk["raw"]]
        has_conf = any(not math.isnan(c[0]) and math.isfinite(c[0]) for c in conf)
        if args.lookalike_score == "confidence" and not has_conf:
            print("  the binary gives no `confidence`: scoring lookalike by `verified` instead", flush=True)
            args.lookalike_score = "verified"
            sc = [score_verified(o) for o in lk["raw"]]
            lk["scores"] = np.array([x[0] for x in sc], dtype=np.float64)
            lk["best"] = [x[1] for x in sc]
        res["lookalike"] = metrics(lk["scores"], lk["best"], queries)
        verdicts = verdict_metrics(lk["raw"], queries)
        if has_conf:
            cs = np.array([math.inf if math.isnan(c[0]) else c[0] for c in conf], dtype=np.float64)
            cbest = [c[1] for c in conf]
            res["lookalike-confidence"] = metrics(cs, cbest, queries)
            perf["lookalike-confidence"] = None  # filled below from lookalike's
            rel = reliability(np.where(np.isfinite(cs), -cs, 0.0), queries, cbest)
            conf_note = ("`lookalike-confidence` in the tables above: the same run, each query scored by its best "
                         "match's `confidence` (higher = more likely a copy); thresholds set on the negatives.")
        else:
            rel = None
            conf_note = ("The binary's matches carry no `confidence` field: the confidence scorer and the "
                         "reliability table are skipped.")
        cpu_ms = 1000.0 * lk["query_cpu_seconds"] / len(queries)
        perf["lookalike"] = {"images_per_s": 1000.0 / cpu_ms,
                             "detail": f"CPU {cpu_ms:.1f} ms per query image, everything included (process start "
                                       f"amortised, read, decode, PDQ + its 8 orientations, pHash, search, JSON); "
                                       f"its own wall-clock hash_ms (decode + hash) {lk['hash_ms_mean']:.1f} ms, "
                                       f"search_ms {lk['search_ms_mean']:.2f} ms",
                             **{k: lk[k] for k in ("index_seconds", "query_seconds", "index_calls", "query_calls",
                                                   "errors")}}
        lab = np.array([q["label"] == "positive" for q in queries])
        for d in (31, 45):
            fixed[f"tpr{d}"] = float(np.mean(lk["scores"][lab] <= d))
            fixed[f"fpr{d}"] = float(np.mean(lk["scores"][~lab] <= d))
        if "lookalike-confidence" in perf:
            perf["lookalike-confidence"] = dict(perf["lookalike"], detail="the lookalike run above")
        print(f"  done: index {lk['index_seconds']:.1f} s, queries {lk['query_seconds']:.1f} s", flush=True)
        all_scores = {"lookalike": lk}
    else:
        all_scores = {}
    py = [m for m in methods if m != "lookalike"]
    if py:
        print(f"python methods ({', '.join(py)}): hashing ...", flush=True)
        pm = run_python_methods(indexed, queries, corpus, args.jobs, args.plain_pdq_every)
        print(f"  done in {pm['_wall']:.1f} s", flush=True)
        if pm["_pdq_mismatch"]:
            print(f"WARNING: pdqhash.compute() != compute_dihedral()[0] on {pm['_pdq_mismatch']} images", flush=True)
        for m in py:
            r = pm[m]
            res[m] = metrics(r["scores"], r["best"], queries)
            perf[m] = {"images_per_s": r["images_per_s"],
                       "detail": f"CPU: Pillow decode {r['decode_ms_mean']:.1f} ms + hash {r['hash_ms_mean']:.1f} ms"
                                 + (f" (timed on {r['timed']} of {len(queries)} queries)" if r["timed"] < len(queries) else "")}
            all_scores[m] = r
    # per-query scores for digging
    with open(corpus / f"scores-{args.split}.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["query", "label", "kind", "source", "tier", "chain", "edits"] +
                   [f"{m}_{k}" for m in all_scores for k in ("score", "best")])
        for i, q in enumerate(queries):
            w.writerow([q["id"], q["label"], neg_group(q) if q["label"] == "negative" else pos_group(q), q["source"],
                        q["tier"], int(q["chain"]),
                        "+".join(e["name"] for e in q["edits"])] +
                       [v for m in all_scores for v in (all_scores[m]["scores"][i], all_scores[m]["best"][i])])

    import imagehash
    import PIL
    try:
        import importlib.metadata as im
        pdq_v = im.version("pdqhash")
    except Exception:
        pdq_v = "?"
    git = args.lookalike_source or source_state(args.lookalike)
    sp = cinfo["splits"][args.split]
    ctx = {
        "split": args.split, "when": dt.datetime.now().strftime("%Y-%m-%d %H:%M"),
        "command": ctx_command or "python3 tools/eval/score.py " + shlex.join(argv if argv is not None else sys.argv[1:]),
        "corpus": str(corpus), "seed": cinfo["seed"], "small": cinfo["small"],
        "n_genuine": len(genuine), "genuine_kinds": ", ".join(f"{v} {k}" for k, v in sp["genuine_by_kind"].items()),
        "n_brands": sp["brands"], "n_distractors": len(distractors),
        "n_pos": sum(q["label"] == "positive" for q in queries), "n_neg": sum(q["label"] == "negative" for q in queries),
        "neg_kinds": ", ".join(f"{v} {k}" for k, v in
                               sorted(_count(neg_group(q) for q in queries if q["label"] == "negative").items())),
        "lookalike": str(args.lookalike), "lookalike_score": args.lookalike_score, "git": git,
        "versions": {"pdqhash": pdq_v, "imagehash": imagehash.__version__, "pillow": PIL.__version__,
                     "numpy": np.__version__},
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, load average "
                   f"{', '.join(f'{x:.1f}' for x in os.getloadavg())} at the end",
        "jobs": args.jobs, "fixed": fixed,
        "verdicts": verdicts if "lookalike" in methods else None,
        "confidence_note": conf_note if "lookalike" in methods else None,
        "reliability": rel if "lookalike" in methods else None, "binary": all_scores.get("lookalike", {}).get("binary"),
        "total_seconds": time.perf_counter() - t_start,
    }
    report = render_report(ctx, res, perf)
    results = args.results or corpus / f"results-{args.split}.md"
    results.parent.mkdir(parents=True, exist_ok=True)
    results.write_text(report)
    print()
    print(report)
    print(f"(written to {results}; per-query scores in {corpus / f'scores-{args.split}.csv'}"
          + (f"; lookalike's raw answers in {corpus / f'lookalike-{args.split}.jsonl'}" if "lookalike" in methods
             else "") + ")")
    return 0


def _count(it):
    c: dict = {}
    for x in it:
        c[x] = c.get(x, 0) + 1
    return c


if __name__ == "__main__":
    sys.exit(main())
