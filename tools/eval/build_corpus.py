# pip install pillow numpy pdqhash==0.2.8 scikit-image resvg-py==0.5.0   (or: pip install -r tools/eval/requirements.txt)
"""Build the evaluation corpus from the cached sources (see sources.py).

    python3 tools/eval/build_corpus.py --out /tmp/lookalike-eval/corpus [--small] [--seed 1]

Output (a pure function of the seed, the options and the cached sources):

  OUT/corpus.json                 options, source packages + versions, counts, build time
  OUT/SPLIT/genuine/*.jpg         the brands' genuine images (what gets indexed)
  OUT/SPLIT/genuine.jsonl         id, file, brand, label=authentic, kind, origin
  OUT/SPLIT/distractors/*.jpg     extra indexed images nobody queries for (grow the index)
  OUT/SPLIT/distractors.jsonl
  OUT/SPLIT/negsrc/*.jpg          images NOT derived from any genuine or distractor image,
  OUT/SPLIT/negsrc.jsonl          the sources of the negative queries (never indexed)
  OUT/SPLIT/queries/*.jpg         positive queries (edited genuine images) and negative
  OUT/SPLIT/queries.jsonl         queries (the same edits on negsrc images): id, file, label
                                  (positive|negative), source id, source kind, brand, tier,
                                  chain flag, and every edit with its parameters

SPLIT is `tune` or `report`: disjoint source photos and disjoint logos, so thresholds can
be tuned on one and reported on the other.

Genuine images: photographs/wallpapers from the pool (grouped into a few photo brands),
and product shots (products.py): each genuine logo brand gets two shots with different
product templates. Negative sources: the split's other photos; "hard siblings" (a genuine
product shot's exact layout -- template, colours, sizes, position -- with a different
logo); and product shots of other logos with random layouts. Distractors: more product
shots of yet other logos.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import random
import shutil
import sys
import time
from functools import lru_cache
from multiprocessing import Pool
from pathlib import Path

from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
import edits  # noqa: E402
import products  # noqa: E402
from sources import DEFAULT_CACHE  # noqa: E402

SPLITS = ["tune", "report"]

# Per split.
SIZES = {
    "default": dict(photo_limit=None, logo_brands=85, shots_per_brand=2, hard_sibling_rate=0.6,
                    other_neg_products=40, distractors=300, pos_per_source=8, neg_per_source=10),
    "small": dict(photo_limit=12, logo_brands=10, shots_per_brand=2, hard_sibling_rate=0.6,
                  other_neg_products=5, distractors=20, pos_per_source=6, neg_per_source=8),
}
GENUINE_PHOTO_SHARE = 2 / 3
PHOTOS_PER_BRAND = 5
CHAIN_EVERY = 4  # every 4th query of a source is a chain of 2-3 edits


def srng(seed: int, *parts) -> random.Random:
    return random.Random("/".join([str(seed), *map(str, parts)]))


# ----------------------------------------------------------------------------- planning

def pick_logos(icons_dir: Path, meta: list[dict], seed: int, n: int) -> list[str]:
    """n distinct-looking logos in a seeded order: enough ink, not a near-copy of another."""
    slugs = sorted(m["slug"] for m in meta)
    srng(seed, "logos").shuffle(slugs)
    chosen, sigs = [], []
    for s in slugs:
        if len(chosen) == n:
            break
        p = icons_dir / f"{s}.svg"
        if not p.exists():
            continue
        try:
            cov = products.ink_coverage(str(p))
            sig = products.logo_signature(str(p))
        except Exception:  # an SVG resvg cannot render
            continue
        if not 0.06 <= cov <= 0.85:
            continue
        if any((sig & o).sum() / max(1, (sig | o).sum()) > 0.8 for o in sigs):
            continue
        chosen.append(s)
        sigs.append(sig)
    if len(chosen) < n:
        sys.exit(f"only {len(chosen)} usable logos, {n} needed")
    return chosen


def assign_edits(sources: list[str], per_source: int, seed: int, tag: str) -> list[tuple[str, list[str], bool]]:
    """(source id, edit names, is_chain) for every query: single edits cycle through all
    edits (balanced counts, no repeat within a source), every CHAIN_EVERY-th is a chain."""
    order = [e.name for e in edits.EDITS]
    srng(seed, tag, "edit-order").shuffle(order)
    cyc = itertools.cycle(order)
    out = []
    n = 0
    for i, src in enumerate(sources):
        for j in range(per_source):
            n += 1
            if n % CHAIN_EVERY == 0:
                r = srng(seed, tag, src, j, "chain")
                out.append((src, edits.random_chain(r, r.choice([2, 3])), True))
            else:
                out.append((src, [next(cyc)], False))
    return out


def make_plan(pool: dict, icons_dir: Path, icon_meta: list[dict], seed: int, size: dict) -> dict:
    photos = sorted(pool["photos"], key=lambda p: p["id"])
    # stratified split of the photos: per package, shuffled, alternating
    by_pkg: dict[str, list[dict]] = {}
    for p in photos:
        by_pkg.setdefault(p["package"], []).append(p)
    split_photos = {s: [] for s in SPLITS}
    k = 0
    for pkg in sorted(by_pkg):
        lst = by_pkg[pkg]
        srng(seed, "photo-split", pkg).shuffle(lst)
        for p in lst:
            split_photos[SPLITS[k % 2]].append(p)
            k += 1
    n_genuine_shots = size["logo_brands"] * size["shots_per_brand"]
    n_hard = round(n_genuine_shots * size["hard_sibling_rate"])
    per_split_logos = size["logo_brands"] + n_hard + size["other_neg_products"] + size["distractors"]
    logos = pick_logos(icons_dir, icon_meta, seed, 2 * per_split_logos)
    plan = {"splits": {}}
    for si, split in enumerate(SPLITS):
        L = logos[si * per_split_logos:(si + 1) * per_split_logos]
        gen_logos = L[:size["logo_brands"]]
        hard_logos = L[size["logo_brands"]:size["logo_brands"] + n_hard]
        other_logos = L[size["logo_brands"] + n_hard:size["logo_brands"] + n_hard + size["other_neg_products"]]
        dis_logos = L[size["logo_brands"] + n_hard + size["other_neg_products"]:]
        ph = list(split_photos[split])
        srng(seed, split, "photos").shuffle(ph)
        if size["photo_limit"]:
            ph = ph[:size["photo_limit"]]
        n_gp = round(len(ph) * GENUINE_PHOTO_SHARE)
        gen_photos, neg_photos = ph[:n_gp], ph[n_gp:]
        genuine, negsrc, distractors = [], [], []
        n_photo_brands = max(1, round(len(gen_photos) / PHOTOS_PER_BRAND))
        for i, p in enumerate(gen_photos):
            r = srng(seed, split, "g-photo", p["id"])
            genuine.append({"id": f"{split}-g{len(genuine):04d}", "kind": "photo", "brand": f"photo-brand-{i % n_photo_brands + 1:02d}",
                            "photo": p, "long_side": r.randint(640, 1024)})
        for b, slug in enumerate(gen_logos):
            r = srng(seed, split, "g-logo", slug)
            for t in r.sample(products.TEMPLATES, size["shots_per_brand"]):
                genuine.append({"id": f"{split}-g{len(genuine):04d}", "kind": "product", "brand": slug,
                                "logo": slug, "layout": products.random_layout(r, t)})
        for p in neg_photos:
            r = srng(seed, split, "n-photo", p["id"])
            negsrc.append({"id": f"{split}-n{len(negsrc):04d}", "kind": "photo", "photo": p, "long_side": r.randint(640, 1024)})
        gen_products = [g for g in genuine if g["kind"] == "product"]
        r = srng(seed, split, "hard")
        for g, slug in zip(r.sample(gen_products, n_hard), hard_logos):
            negsrc.append({"id": f"{split}-n{len(negsrc):04d}", "kind": "product_hard", "logo": slug,
                           "layout": g["layout"], "sibling_of": g["id"], "sibling_brand": g["brand"]})
        for slug in other_logos:
            r = srng(seed, split, "n-logo", slug)
            negsrc.append({"id": f"{split}-n{len(negsrc):04d}", "kind": "product", "logo": slug,
                           "layout": products.random_layout(r)})
        for slug in dis_logos:
            r = srng(seed, split, "d-logo", slug)
            distractors.append({"id": f"{split}-d{len(distractors):04d}", "kind": "product", "brand": "distractors",
                                "logo": slug, "layout": products.random_layout(r)})
        queries = []
        for label, srcs, per in (("positive", genuine, size["pos_per_source"]), ("negative", negsrc, size["neg_per_source"])):
            for src, names, chain in assign_edits([s["id"] for s in srcs], per, seed, f"{split}-{label}"):
                queries.append({"label": label, "source": src, "edits": names, "chain": chain})
        for i, q in enumerate(queries):
            q["id"] = f"{split}-q{i:05d}"
        plan["splits"][split] = {"genuine": genuine, "negsrc": negsrc, "distractors": distractors, "queries": queries}
    return plan


# ----------------------------------------------------------------------------- rendering (workers)

_W: dict = {}


def _init(cfg):
    _W.update(cfg)


def _base_image(item: dict) -> Image.Image:
    if "photo" in item:
        im = Image.open(Path(_W["cache"]) / item["photo"]["path"]).convert("RGB")
        w, h = im.size
        if max(w, h) > item["long_side"]:
            s = item["long_side"] / max(w, h)
            im = im.resize((round(w * s), round(h * s)), Image.LANCZOS)
        return im
    return products.render(item["layout"], str(Path(_W["icons"]) / f"{item['logo']}.svg"))


def render_base(task):
    split, role, item = task
    im = _base_image(item)
    rel = f"{split}/{role}/{item['id']}.jpg"
    im.save(Path(_W["out"]) / rel, "JPEG", quality=95)
    rec = {"id": item["id"], "file": rel, "kind": item["kind"], "size": list(im.size)}
    if "brand" in item:
        rec["brand"] = item["brand"]
    if role != "negsrc":
        rec["label"] = "authentic"
    if "photo" in item:
        p = item["photo"]
        rec["origin"] = {"package": p["package"], "version": p["version"], "file": p["file"]}
    else:
        rec["origin"] = {"package": "simple-icons (npm)", "version": _W["icons_version"], "logo": item["logo"]}
        rec["layout"] = item["layout"]
    for k in ("sibling_of", "sibling_brand"):
        if k in item:
            rec[k] = item[k]
    return role, rec


@lru_cache(maxsize=64)
def _load(rel: str) -> Image.Image:
    return Image.open(Path(_W["out"]) / rel).convert("RGB")


def render_query(task):
    split, q, src_rel, src_rec, filler_rels = task
    rng = srng(_W["seed"], q["id"], "apply")

    def fillers(n, r):
        pool = [f for f in filler_rels if f != src_rel]
        picks = r.sample(pool, n)
        return [(Path(p).stem, _load(p)) for p in picks]

    img = _load(src_rel)
    out, done, final_q = edits.apply_chain(img, q["edits"], rng, {"fillers": fillers})
    rel = f"{split}/queries/{q['id']}.jpg"
    out.save(Path(_W["out"]) / rel, "JPEG", quality=final_q or 95)
    rec = {"id": q["id"], "file": rel, "label": q["label"], "source": q["source"], "source_kind": src_rec["kind"],
           "brand": src_rec.get("brand"), "sibling_of": src_rec.get("sibling_of"), "chain": q["chain"],
           "tier": edits.chain_tier(q["edits"]), "edits": done, "size": list(out.size),
           "jpeg_quality": final_q or 95}
    return rec


# ----------------------------------------------------------------------------- main

def write_jsonl(path: Path, recs: list[dict]):
    with open(path, "w") as f:
        for r in sorted(recs, key=lambda r: r["id"]):
            f.write(json.dumps(r, separators=(",", ":")) + "\n")


def build(out: Path, cache: Path, seed: int, small: bool, jobs: int, distractors: int | None = None) -> dict:
    t0 = time.time()
    pool_json = cache / "pool.json"
    if not pool_json.exists():
        sys.exit(f"{pool_json} missing: run `python3 tools/eval/sources.py --cache {cache}` first")
    pool = json.loads(pool_json.read_text())
    src_info = json.loads((cache / "sources.json").read_text())
    icons_pkg = Path(src_info["npm"]["simple-icons"]["dir"])
    icon_meta = json.loads((icons_pkg / "data" / "simple-icons.json").read_text())
    size = dict(SIZES["small" if small else "default"])
    if distractors is not None:
        size["distractors"] = distractors
    plan = make_plan(pool, icons_pkg / "icons", icon_meta, seed, size)
    if out.exists():
        shutil.rmtree(out)
    for split in SPLITS:
        for d in ("genuine", "negsrc", "distractors", "queries"):
            (out / split / d).mkdir(parents=True)
    cfg = {"out": str(out), "cache": str(cache), "icons": str(icons_pkg / "icons"), "seed": seed,
           "icons_version": src_info["npm"]["simple-icons"]["version"]}
    summary = {"seed": seed, "small": small, "sizes": size, "sources": src_info, "splits": {}}
    with Pool(jobs, initializer=_init, initargs=(cfg,)) as workers:
        for split in SPLITS:
            sp = plan["splits"][split]
            tasks = [(split, role, it) for role in ("genuine", "negsrc", "distractors") for it in sp[role]]
            recs: dict[str, list] = {"genuine": [], "negsrc": [], "distractors": []}
            for role, rec in workers.imap_unordered(render_base, tasks, chunksize=4):
                recs[role].append(rec)
            for role, lst in recs.items():
                write_jsonl(out / split / f"{role}.jsonl", lst)
            by_id = {r["id"]: r for lst in recs.values() for r in lst}
            filler_rels = tuple(sorted(r["file"] for r in recs["negsrc"]))
            qtasks = [(split, q, by_id[q["source"]]["file"], by_id[q["source"]], filler_rels) for q in sp["queries"]]
            qrecs = list(workers.imap_unordered(render_query, qtasks, chunksize=8))
            write_jsonl(out / split / "queries.jsonl", qrecs)
            counts = {
                "genuine": len(recs["genuine"]),
                "genuine_by_kind": _count(recs["genuine"], "kind"),
                "distractors": len(recs["distractors"]),
                "negative_sources": len(recs["negsrc"]),
                "negative_sources_by_kind": _count(recs["negsrc"], "kind"),
                "brands": len({r["brand"] for r in recs["genuine"]}),
                "queries": len(qrecs),
                "positives": sum(q["label"] == "positive" for q in qrecs),
                "negatives": sum(q["label"] == "negative" for q in qrecs),
                "queries_by_tier": _count(qrecs, "tier"),
                "chains": sum(q["chain"] for q in qrecs),
            }
            summary["splits"][split] = counts
            print(f"{split}: {json.dumps(counts)}", flush=True)
    summary["build_seconds"] = round(time.time() - t0, 1)
    (out / "corpus.json").write_text(json.dumps(summary, indent=1) + "\n")
    print(f"corpus in {out} ({summary['build_seconds']} s)")
    return summary


def _count(recs, key):
    c: dict = {}
    for r in recs:
        c[r[key]] = c.get(r[key], 0) + 1
    return dict(sorted(c.items()))


def check_outside_repo(path: Path):
    repo = Path(__file__).resolve().parents[2]
    p = path.expanduser().resolve()
    if p == repo or repo in p.parents:
        sys.exit(f"{path}: generated corpora go outside the repository ({repo})")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True, help="output directory (replaced)")
    ap.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help="sources cache (default %(default)s)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--small", action="store_true", help="a quick corpus (~30 genuine, ~350 queries per split)")
    ap.add_argument("--distractors", type=int, help="distractor images per split (default 300, --small 20)")
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 2)
    args = ap.parse_args(argv)
    check_outside_repo(args.out)
    build(args.out.expanduser().resolve(), args.cache.expanduser().resolve(), args.seed, args.small, args.jobs,
          args.distractors)
    return 0


if __name__ == "__main__":
    sys.exit(main())
