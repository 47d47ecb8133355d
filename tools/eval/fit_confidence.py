# pip install numpy   (or: pip install -r tools/eval/requirements.txt)
"""Fit lookalike's match confidence (src/matcher/confidence.rs) on a tune split.

    python3 tools/eval/score.py --corpus DIR/corpus --split tune --methods lookalike
    python3 tools/eval/fit_confidence.py --corpus DIR/corpus --split tune

score.py saves every query's `lookalike query --json` answer to CORPUS/lookalike-SPLIT.jsonl.
Each match there carries `evidence`: the model's inputs, named as in
`confidence::FEATURES`. A match is a *copy* when the query is a positive and the match is
the very image it was made from (its external id is the genuine image's id); every other
match (of a negative query, or another image for a positive one) is not.

The model is a logistic regression with a light L2 penalty (Newton's method). Weights
whose sign would make the confidence fall as the evidence for a copy grows (closer
hashes, more inliers, more agreement; or rise with a replaced part) are pinned to 0 and
the rest refitted, so the confidence is monotone in each piece of evidence.

Then it picks the two levels: `flag` = the lowest confidence at which at most
--max-false-flags of the split's negative queries (share) would be flagged (their best
match that nothing vetoes), and never under --min-flag (0.5: a copy more likely than
not, since a wrong flag costs as much as a missed copy), and `review` = the lowest at which at most --max-review of
them would go to review or be flagged. It prints the Rust constants to paste into
src/matcher/confidence.rs and src/matcher/mod.rs, the flagged shares per tier, and a
reliability table. Use the tune split only: reporting is done on the report splits.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from pathlib import Path

import numpy as np

# The model's inputs in order, read from the one place that defines them.
CONFIDENCE_RS = Path(__file__).resolve().parents[2] / "src" / "matcher" / "confidence.rs"


def features_of(source: Path) -> list[str]:
    m = re.search(r"pub const FEATURES: \[&str; \d+\] = \[(.*?)\];", source.read_text(), re.S)
    if not m:
        sys.exit(f"{source}: no `pub const FEATURES` list found")
    return re.findall(r'"(\w+)"', m.group(1))


FEATURES = features_of(CONFIDENCE_RS)
# +1: must not lower the confidence as it grows; -1: must not raise it; 0: free.
SIGNS = {
    "distance": -1,
    "phash_distance": -1,
    "verified": +1,
    "ln_inliers": +1,
    "ln_distinct": +1,
    "coverage": +1,
    "compared": 0,
    "agreement": +1,
    "differed": -1,
    "differed_share": -1,
    "replaced": -1,
    "ln_detail": 0,
    "detail_in_view": +1,
    "uncompared_distance": -1,
    "hash_fit": 0,
}


_unsigned = [f for f in FEATURES if f not in SIGNS]
if _unsigned:
    sys.exit(f"no sign constraint for {_unsigned}: add them to SIGNS")


def load(corpus: Path, split: str):
    queries = {}
    for line in open(corpus / split / "queries.jsonl"):
        q = json.loads(line)
        queries[q["id"]] = q
    rows, labels, owners, answers = [], [], [], []
    for line in open(corpus / f"lookalike-{split}.jsonl"):
        r = json.loads(line)
        q = queries[r["query"]]
        answers.append((q, r))
        for m in r.get("matches", []):
            ev = m.get("evidence")
            if ev is None:
                continue
            missing = [f for f in FEATURES if f not in ev]
            if missing:
                sys.exit(f"answers lack {missing}: rerun score.py with a build of the current source")
            rows.append([float(ev[f]) for f in FEATURES])
            labels.append(1.0 if q["label"] == "positive" and m["external_id"] == q["source"] else 0.0)
            owners.append(q["id"])
    if not rows:
        sys.exit("no match carries `evidence`: run score.py with a lookalike that prints it")
    return np.array(rows), np.array(labels), owners, answers


def fit(x: np.ndarray, y: np.ndarray, l2: float, free: list[bool]) -> np.ndarray:
    """Intercept + weights (zero where not free), by Newton's method."""
    cols = [i for i, f in enumerate(free) if f]
    a = np.hstack([np.ones((len(x), 1)), x[:, cols]])
    w = np.zeros(a.shape[1])
    pen = np.full(a.shape[1], l2)
    pen[0] = 0.0
    for _ in range(100):
        p = 1.0 / (1.0 + np.exp(-np.clip(a @ w, -30, 30)))
        grad = a.T @ (p - y) + pen * w
        hess = (a * (p * (1 - p))[:, None]).T @ a + np.diag(pen + 1e-9)
        step = np.linalg.solve(hess, grad)
        w -= step
        if np.abs(step).max() < 1e-8:
            break
    out = np.zeros(1 + x.shape[1])
    out[0] = w[0]
    for j, i in enumerate(cols):
        out[1 + i] = w[1 + j]
    return out


def fit_monotone(x, y, l2):
    free = [True] * len(FEATURES)
    while True:
        w = fit(x, y, l2, free)
        wrong = [i for i, f in enumerate(FEATURES) if free[i] and SIGNS[f] * w[1 + i] < 0]
        if not wrong:
            return w
        # Pin the most wrong one and refit.
        worst = max(wrong, key=lambda i: abs(w[1 + i]))
        free[worst] = False


def confidence(w, ev: dict) -> float:
    z = w[0] + sum(w[1 + i] * float(ev.get(f, 0.0)) for i, f in enumerate(FEATURES))
    return 1.0 / (1.0 + math.exp(-z))


def vetoed(m: dict) -> bool:
    return not m["evidence"].get("can_flag", True)


def best(w, r: dict):
    """(best flaggable confidence, its external id), (best confidence of any match, its
    id), and the external ids of the matches sent to review whatever their confidence
    (a part of the stored photo replaced: see `matcher::judge`)."""
    flag, review, vetoed_ids = (0.0, None), (0.0, None), []
    for m in r.get("matches", []):
        ev = m.get("evidence")
        if ev is None:
            continue
        c = confidence(w, ev)
        if c > review[0]:
            review = (c, m["external_id"])
        if vetoed(m):
            if m.get("parts") is not None or m.get("replaced") is not None:
                vetoed_ids.append(m["external_id"])
        elif c > flag[0]:
            flag = (c, m["external_id"])
    return flag, review, vetoed_ids


def lowest_level(scores: list[float], max_share: float) -> float:
    """The lowest level at which at most max_share of `scores` are >= it."""
    s = sorted(scores, reverse=True)
    allowed = int(math.floor(max_share * len(s)))
    if allowed >= len(s):
        return 0.0
    # Strictly above the (allowed+1)-th highest score.
    return float(np.nextafter(np.float32(s[allowed]), np.float32(2.0)))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", type=Path, required=True)
    ap.add_argument("--split", default="tune")
    ap.add_argument("--l2", type=float, default=1.0, help="L2 penalty on the weights (not the intercept)")
    ap.add_argument("--max-false-flags", type=float, default=0.001, help="share of negatives flagged at most")
    ap.add_argument(
        "--min-flag",
        type=float,
        default=0.5,
        help="flag level at least this: a copy more likely than not (a wrong flag costs as much as a missed copy)",
    )
    ap.add_argument("--max-review", type=float, default=0.10, help="share of negatives flagged or reviewed at most")
    ap.add_argument("--weights", help="score with these comma-separated intercept,weights instead of fitting")
    args = ap.parse_args(argv)

    x, y, _, answers = load(args.corpus, args.split)
    if args.weights:
        w = np.array([float(v) for v in args.weights.split(",")])
    else:
        w = fit_monotone(x, y, args.l2)
    print(f"{len(y)} matches ({int(y.sum())} copies) from {len(answers)} queries of {args.corpus}/{args.split}")
    neg = [best(w, r) for q, r in answers if q["label"] == "negative"]
    # Where the vetoes leave few flaggable negatives, the share alone would set the level
    # at whatever the last of them scored, however low: never under --min-flag.
    flag_level = max(args.min_flag, lowest_level([f[0] for f, _, _ in neg], args.max_false_flags))
    review_level = min(flag_level, lowest_level([rv[0] for _, rv, _ in neg], args.max_review))

    print("\n// src/matcher/confidence.rs")
    print("pub const MODEL: Model = Model {")
    print(f"    intercept: {w[0]:.4},")
    print("    weights: [" + ", ".join(f"{v:.4}" for v in w[1:]) + "],")
    print("};")
    print("\n// src/matcher/mod.rs (Thresholds)")
    print(f"pub const DEFAULT_FLAG_CONFIDENCE: f32 = {flag_level:.4};")
    print(f"pub const DEFAULT_REVIEW_CONFIDENCE: f32 = {review_level:.4};")
    for f, v in zip(FEATURES, w[1:]):
        print(f"  {f:16s} {v:+.4f}")

    # What the levels do on this split.
    tiers: dict[str, list] = {}
    negs = {"flag": 0, "review": 0, "n": 0}
    kinds: dict[str, list] = {}
    for q, r in answers:
        f, rv, vetoed_ids = best(w, r)
        flagged = f[0] >= flag_level
        reviewed = not flagged and (rv[0] >= review_level or bool(vetoed_ids))
        if q["label"] == "negative":
            negs["n"] += 1
            negs["flag"] += flagged
            negs["review"] += reviewed
            kinds.setdefault(q.get("kind", "?"), []).append(flagged)
        else:
            right_flag = flagged and f[1] == q["source"]
            right_any = right_flag or (rv[0] >= review_level and rv[1] == q["source"]) or q["source"] in vetoed_ids
            tiers.setdefault(q["tier"], []).append((right_flag, right_any))
    print(f"\nnegatives: flagged {negs['flag']}/{negs['n']}, review {negs['review']}/{negs['n']}")
    for k, v in sorted(kinds.items()):
        print(f"  {k:28s} flagged {sum(v)}/{len(v)}")
    for t in ["easy", "medium", "hard"]:
        v = tiers.get(t, [])
        if v:
            print(f"positives {t:6s}: flagged right {sum(a for a, _ in v) / len(v):.3f}, "
                  f"flagged or review right {sum(b for _, b in v) / len(v):.3f} (n={len(v)})")
    # Reliability (per match).
    p = 1.0 / (1.0 + np.exp(-(w[0] + x @ w[1:])))
    print("\nreliability (per match): bin, n, mean predicted, observed")
    for b in range(10):
        sel = (p >= b / 10) & ((p < (b + 1) / 10) if b < 9 else (p <= 1.0))
        if sel.any():
            print(f"  {b / 10:.1f}-{(b + 1) / 10:.1f}  {sel.sum():6d}  {p[sel].mean():.3f}  {y[sel].mean():.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
