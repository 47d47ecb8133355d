# pip install pillow numpy pdqhash==0.2.8 scikit-image resvg-py==0.5.0   (or: pip install -r tools/eval/requirements.txt)
"""Build the evaluation corpus from the cached sources (see sources.py).

    python3 tools/eval/build_corpus.py --out /tmp/lookalike-eval-a/corpus [--small] [--seed 1] [--variant a|b]
                                       [--extra-distractors N]

Output (a pure function of the seed, the variant, the options and the cached sources):

  OUT/corpus.json                 options, source packages + versions, counts, build time
  OUT/SPLIT/genuine/*.jpg         the brands' genuine images (what gets indexed)
  OUT/SPLIT/genuine.jsonl         id, file, brand, label=authentic, kind, origin, layout
  OUT/SPLIT/distractors/*.jpg     extra indexed images nobody queries for (grow the index);
  OUT/SPLIT/extra/*.jpg           with --extra-distractors N, N more (cheap random shots and
  OUT/SPLIT/distractors.jsonl     photo crops), listed in distractors.jsonl too
  OUT/SPLIT/negsrc/*.jpg          images NOT derived from any genuine or distractor image,
  OUT/SPLIT/negsrc.jsonl          the sources of the negative queries (never indexed)
  OUT/SPLIT/possrc/*.jpg          genuine stamp shots with the brand's logo recoloured
  OUT/SPLIT/possrc.jsonl          (copies: the sources of the logo_recolour positives; never indexed)
  OUT/SPLIT/queries/*.jpg         positive queries (edited genuine / recoloured images) and
  OUT/SPLIT/queries.jsonl         negative queries (the same edits on negsrc images): id, file,
                                  label, kind, source, base, brand, tier, chain, edits...

SPLIT is `tune` or `report`. The pools -- photos, stamps (cut-out objects) and logos --
are split between tune and report from the seed alone, whatever the variant, so variant
a's and variant b's tune splits draw on the same sources and neither shares any with a
report split.

Genuine images (per split): photos (a few photo brands); drawn product templates
(products.py, two per logo brand); textured stamp shots (stamps.py: one object per shot,
one or two shots per brand). Negative sources, never indexed, each tagged with a kind:

  same_shot_other_logo     a genuine shot's exact layout (object, canvas, placement, size)
                           with another brand's logo; `same_colour` true for half of the
                           stamp ones (the other logo in the genuine logo's colour) and
                           for every template one (products.py keeps the ink)
  same_object_new_layout   a genuine shot's object in a new layout with another logo
  unrelated                product shots (stamps or templates) of other objects and logos
  photo                    the split's other photos

Distractors: product shots of yet other objects and logos (+ N cheap ones with
--extra-distractors). Objects, logos and photos never cross roles within a split: a
genuine shot's object appears only in its own shots and its near-misses; the
background photos of stamp shots are photos no query is made from.
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
import stamps  # noqa: E402
from sources import DEFAULT_CACHE  # noqa: E402

SPLITS = ["tune", "report"]
VARIANTS = ["a", "b"]

# Per split. Negative queries per source are per kind of source.
SIZES = {
    "default": dict(photo_limit=None, bg_photo_share=0.2, logo_brands=40, shots_per_brand=2, hard_sibling_rate=0.6,
                    other_neg_products=20, stamp_brands=110, stamp_shots=170, new_layout_rate=0.6,
                    unrelated_stamps=100, neg_logos=260, distractor_logos=200, distractors=300,
                    pos_per_source=6, recolour_per_shot=(1, 2),
                    neg_per={"photo": 10, "product": 4, "product_hard": 3, "stamp_same_shot": 3,
                             "stamp_new_layout": 3, "stamp": 4}),
    "small": dict(photo_limit=12, bg_photo_share=0.2, logo_brands=6, shots_per_brand=2, hard_sibling_rate=0.5,
                  other_neg_products=4, stamp_brands=14, stamp_shots=20, new_layout_rate=0.6,
                  unrelated_stamps=10, neg_logos=40, distractor_logos=30, distractors=30,
                  pos_per_source=4, recolour_per_shot=(1, 1),
                  neg_per={"photo": 6, "product": 3, "product_hard": 2, "stamp_same_shot": 3,
                           "stamp_new_layout": 2, "stamp": 3}),
}
GENUINE_PHOTO_SHARE = 2 / 3
PHOTOS_PER_BRAND = 5
CHAIN_EVERY = 4  # every 4th query of a source is a chain of 2-3 edits
NEG_KIND = {"photo": "photo", "product": "unrelated", "stamp": "unrelated", "product_hard": "same_shot_other_logo",
            "stamp_same_shot": "same_shot_other_logo", "stamp_new_layout": "same_object_new_layout"}
EXTRA_MIX = (0.6, 0.2, 0.2)  # extra distractors: stamp shots, template shots, photo crops


def srng(seed: int, *parts) -> random.Random:
    return random.Random("/".join([str(seed), *map(str, parts)]))


# ----------------------------------------------------------------------------- planning

def pick_logos(icons_dir: Path, meta: list[dict], seed: int, n: int) -> list[str]:
    """n distinct-looking logos in a seeded order: enough ink, not a near-copy of another."""
    slugs = sorted(m["slug"] for m in meta)
    srng(seed, "logos").shuffle(slugs)
    import numpy as np
    chosen = []
    sigs = np.zeros((0, 24 * 24), dtype=bool)
    for s in slugs:
        if len(chosen) == n:
            break
        p = icons_dir / f"{s}.svg"
        if not p.exists():
            continue
        try:
            cov = products.ink_coverage(str(p))
            sig = products.logo_signature(str(p)).reshape(-1)
        except Exception:  # an SVG resvg cannot render
            continue
        if not 0.06 <= cov <= 0.85:
            continue
        if len(sigs):
            inter = (sigs & sig).sum(1)
            union = np.maximum(1, (sigs | sig).sum(1))
            if (inter / union).max() > 0.8:
                continue
        chosen.append(s)
        sigs = np.vstack([sigs, sig[None, :]])
    if len(chosen) < n:
        sys.exit(f"only {len(chosen)} usable logos, {n} needed")
    return chosen


def assign_edits(sources: list[tuple[str, int]], seed: int, tag: str) -> list[tuple[str, list[str], bool]]:
    """(source id, edit names, is_chain) for every query: single edits cycle through all
    edits (balanced counts, no repeat within a source), every CHAIN_EVERY-th is a chain."""
    order = [e.name for e in edits.EDITS]
    srng(seed, tag, "edit-order").shuffle(order)
    cyc = itertools.cycle(order)
    out = []
    n = 0
    for src, per_source in sources:
        for j in range(per_source):
            n += 1
            if n % CHAIN_EVERY == 0:
                r = srng(seed, tag, src, j, "chain")
                out.append((src, edits.random_chain(r, r.choice([2, 3])), True))
            else:
                out.append((src, [next(cyc)], False))
    return out


def split_pools(pool: dict, stamp_pool: list[dict], seed: int) -> dict:
    """Photos and stamps into tune/report: stratified (per package, and per package and
    category for stamps), shuffled from the seed alone (no variant: both variants share it)."""
    out = {s: {"photos": [], "stamps": []} for s in SPLITS}
    for key, items, group in (("photos", pool["photos"], lambda p: p["package"]),
                              ("stamps", stamp_pool, lambda p: (p["package"], p["category"]))):
        groups: dict = {}
        for p in sorted(items, key=lambda p: p["id"]):
            groups.setdefault(group(p), []).append(p)
        k = 0
        for g in sorted(groups):
            lst = groups[g]
            srng(seed, f"{key}-split", *([g] if isinstance(g, str) else g)).shuffle(lst)
            for p in lst:
                out[SPLITS[k % 2]][key].append(p)
                k += 1
    return out


def make_plan(pool: dict, stamp_pool: list[dict], icons_dir: Path, icon_meta: list[dict], seed: int, size: dict,
              variant: str, extra: int) -> dict:
    pools = split_pools(pool, stamp_pool, seed)
    n_template_shots = size["logo_brands"] * size["shots_per_brand"]
    n_hard = round(n_template_shots * size["hard_sibling_rate"])
    genuine_logos_n = size["logo_brands"] + size["stamp_brands"]
    per_split_logos = genuine_logos_n + size["neg_logos"] + size["distractor_logos"]
    logos = pick_logos(icons_dir, icon_meta, seed, 2 * per_split_logos)
    meta = {m["slug"]: m for m in icon_meta}
    V = variant
    plan = {"splits": {}}
    for si, split in enumerate(SPLITS):
        # ---- this split's pools, in roles (seeded without the variant)
        L = logos[si * per_split_logos:(si + 1) * per_split_logos]
        tmpl_logos = L[:size["logo_brands"]]
        stamp_logos = L[size["logo_brands"]:genuine_logos_n]
        neg_logos = L[genuine_logos_n:genuine_logos_n + size["neg_logos"]]
        dis_logos = L[genuine_logos_n + size["neg_logos"]:]
        ph = list(pools[split]["photos"])
        srng(seed, split, "photos").shuffle(ph)
        n_bg = max(2, round(len(ph) * size["bg_photo_share"]))
        bg_photos, ph = ph[:n_bg], ph[n_bg:]
        if size["photo_limit"]:
            ph = ph[:size["photo_limit"]]
        n_gp = round(len(ph) * GENUINE_PHOTO_SHARE)
        gen_photos, neg_photos = ph[:n_gp], ph[n_gp:]
        bg_gen = [p["path"] for p in bg_photos[0::2]]  # backgrounds of genuine shots (and their near-misses)
        bg_neg = [p["path"] for p in bg_photos[1::2]] or bg_gen  # of the other negatives' shots
        bg_all = [p["path"] for p in bg_photos]
        st = list(pools[split]["stamps"])
        srng(seed, split, "stamps").shuffle(st)
        n_gs, n_us = size["stamp_shots"], size["unrelated_stamps"]
        if len(st) < n_gs + n_us + 10:
            sys.exit(f"{split}: only {len(st)} stamps, {n_gs + n_us + 10} needed")
        gen_stamps, unrel_stamps, dis_stamps = st[:n_gs], st[n_gs:n_gs + n_us], st[n_gs + n_us:]
        neg_logo_cycle = itertools.cycle(srng(seed, V, split, "neg-logos").sample(neg_logos, len(neg_logos)))

        genuine, negsrc, distractors, possrc = [], [], [], []

        def gid():
            return f"{split}-g{len(genuine):04d}"

        def nid():
            return f"{split}-n{len(negsrc):04d}"

        # ---- genuine: photos
        n_photo_brands = max(1, round(len(gen_photos) / PHOTOS_PER_BRAND))
        for i, p in enumerate(gen_photos):
            r = srng(seed, V, split, "g-photo", p["id"])
            genuine.append({"id": gid(), "kind": "photo", "render": "photo",
                            "brand": f"photo-brand-{i % n_photo_brands + 1:02d}", "photo": p,
                            "long_side": r.randint(640, 1024) if V == "a" else r.randint(560, 1200)})
        # ---- genuine: drawn templates
        for slug in tmpl_logos:
            r = srng(seed, V, split, "g-logo", slug)
            for t in r.sample(products.TEMPLATES, size["shots_per_brand"]):
                genuine.append({"id": gid(), "kind": "product", "render": "product", "brand": slug, "logo": slug,
                                "layout": products.random_layout(r, t, V)})
        # ---- genuine: stamp shots (brands get 1 or 2 objects)
        r = srng(seed, V, split, "stamp-brands")
        n_two = n_gs - size["stamp_brands"]
        shots_per = [2] * n_two + [1] * (size["stamp_brands"] - n_two)
        r.shuffle(shots_per)
        k = 0
        stamp_shots = []
        for slug, n in zip(stamp_logos, shots_per):
            for _ in range(n):
                s = gen_stamps[k]
                k += 1
                rr = srng(seed, V, split, "g-stamp", s["id"])
                lay = stamps.random_layout(rr, V, s, meta[slug].get("hex"), bg_gen)
                g = {"id": gid(), "kind": "stamp", "render": "stamp", "brand": slug, "logo": slug,
                     "title": meta[slug]["title"], "stamp": s, "layout": lay}
                genuine.append(g)
                stamp_shots.append(g)
        # ---- positives' other sources: the brand's own logo recoloured (copies)
        lo, hi = size["recolour_per_shot"]
        for g in stamp_shots:
            rr = srng(seed, V, split, "recolour", g["id"])
            used = [g["layout"]["logo"]["colour"]]
            for _ in range(rr.randint(lo, hi)):
                c = stamps.other_colour(rr, g["layout"]["logo"]["colour"], g["layout"]["logo"]["bg_lum"], used)
                used.append(c)
                possrc.append({"id": f"{split}-p{len(possrc):04d}", "kind": "stamp_recolour", "render": "stamp",
                               "brand": g["brand"], "logo": g["logo"], "title": g["title"], "stamp": g["stamp"],
                               "layout": g["layout"], "colour": c, "copy_of": g["id"],
                               "recolour": {"from": g["layout"]["logo"]["colour"], "to": c}})
        # ---- negatives
        for p in neg_photos:
            rr = srng(seed, V, split, "n-photo", p["id"])
            negsrc.append({"id": nid(), "kind": "photo", "render": "photo", "photo": p,
                           "long_side": rr.randint(640, 1024) if V == "a" else rr.randint(560, 1200)})
        gen_products = [g for g in genuine if g["kind"] == "product"]
        rr = srng(seed, V, split, "hard")
        for g in rr.sample(gen_products, n_hard):
            negsrc.append({"id": nid(), "kind": "product_hard", "render": "product", "logo": next(neg_logo_cycle),
                           "layout": g["layout"], "sibling_of": g["id"], "sibling_brand": g["brand"],
                           "same_colour": True})
        for i in range(size["other_neg_products"]):
            rr = srng(seed, V, split, "n-product", i)
            negsrc.append({"id": nid(), "kind": "product", "render": "product", "logo": next(neg_logo_cycle),
                           "layout": products.random_layout(rr, None, V)})
        # near-misses of every genuine stamp shot: (a) the same shot, another logo -- half of
        # them in the genuine logo's colour; (b) for some, the same object in a new layout
        rr = srng(seed, V, split, "near-miss")
        same_col = [i % 2 == 0 for i in range(len(stamp_shots))]
        rr.shuffle(same_col)
        for g, sc in zip(stamp_shots, same_col):
            other = next(neg_logo_cycle)
            lay = g["layout"]
            if sc:
                colour = lay["logo"]["colour"]
            else:
                own = stamps.hex_rgb(meta[other].get("hex")) or [0, 0, 0]
                colour = stamps.contrasting(own, lay["logo"]["bg_lum"])
                if sum(abs(a - b) for a, b in zip(colour, lay["logo"]["colour"])) < 120:
                    colour = stamps.other_colour(rr, lay["logo"]["colour"], lay["logo"]["bg_lum"])
            negsrc.append({"id": nid(), "kind": "stamp_same_shot", "render": "stamp", "logo": other,
                           "title": meta[other]["title"], "stamp": g["stamp"], "layout": lay, "colour": colour,
                           "sibling_of": g["id"], "sibling_brand": g["brand"], "same_colour": sc})
        for g in stamp_shots:
            if rr.random() >= size["new_layout_rate"]:
                continue
            other = next(neg_logo_cycle)
            r2 = srng(seed, V, split, "new-layout", g["id"])
            lay = stamps.random_layout(r2, V, g["stamp"], meta[other].get("hex"), bg_neg)
            negsrc.append({"id": nid(), "kind": "stamp_new_layout", "render": "stamp", "logo": other,
                           "title": meta[other]["title"], "stamp": g["stamp"], "layout": lay,
                           "sibling_of": g["id"], "sibling_brand": g["brand"]})
        for s in unrel_stamps:
            other = next(neg_logo_cycle)
            r2 = srng(seed, V, split, "n-stamp", s["id"])
            negsrc.append({"id": nid(), "kind": "stamp", "render": "stamp", "logo": other,
                           "title": meta[other]["title"], "stamp": s,
                           "layout": stamps.random_layout(r2, V, s, meta[other].get("hex"), bg_neg)})
        # ---- distractors: half templates, half stamp shots, of the distractor logos and objects
        rr = srng(seed, V, split, "distractors")
        for i in range(size["distractors"]):
            slug = dis_logos[i % len(dis_logos)]
            r2 = srng(seed, V, split, "d", i)
            if i % 2 == 0:
                distractors.append({"id": f"{split}-d{len(distractors):04d}", "kind": "product", "render": "product",
                                    "brand": "distractors", "logo": slug, "layout": products.random_layout(r2, None, V)})
            else:
                s = dis_stamps[(i // 2) % len(dis_stamps)]
                distractors.append({"id": f"{split}-d{len(distractors):04d}", "kind": "stamp", "render": "stamp",
                                    "brand": "distractors", "logo": slug, "title": meta[slug]["title"], "stamp": s,
                                    "layout": stamps.random_layout(r2, V, s, meta[slug].get("hex"), bg_all)})
        # ---- extra distractors (cheap): smaller random stamp/template shots and photo crops
        extras = []
        for i in range(extra):
            r2 = srng(seed, V, split, "x", i)
            slug = r2.choice(dis_logos)
            u = r2.random()
            xid = f"{split}-x{i:05d}"
            if u < EXTRA_MIX[0]:
                s = r2.choice(dis_stamps)
                lay = stamps.random_layout(r2, r2.choice(VARIANTS), s, meta[slug].get("hex"), bg_all)
                k = r2.uniform(0.55, 0.8)
                lay["size"] = [round(lay["size"][0] * k), round(lay["size"][1] * k)]
                extras.append({"id": xid, "kind": "extra_stamp", "render": "stamp", "brand": "distractors",
                               "logo": slug, "title": meta[slug]["title"], "stamp": s, "layout": lay})
            elif u < EXTRA_MIX[0] + EXTRA_MIX[1]:
                lay = products.random_layout(r2, None, r2.choice(VARIANTS))
                lay["size"] = [round(lay["size"][0] * 0.7), round(lay["size"][1] * 0.7)]
                extras.append({"id": xid, "kind": "extra_product", "render": "product", "brand": "distractors",
                               "logo": slug, "layout": lay})
            else:
                p = r2.choice(bg_photos)
                side = r2.uniform(0.3, 0.9)
                extras.append({"id": xid, "kind": "extra_photo", "render": "photo_crop", "brand": "distractors",
                               "photo": p, "box": [round(r2.uniform(0, 1 - side), 3), round(r2.uniform(0, 1 - side), 3),
                                                   round(side, 3)], "mirror": r2.random() < 0.5,
                               "long_side": r2.randint(400, 800)})
        # ---- queries: the same edit distribution on positives and negatives
        queries = []
        pos_sources = [(g["id"], size["pos_per_source"]) for g in genuine]
        for src, names, chain in assign_edits(pos_sources, seed, f"{V}-{split}-positive"):
            queries.append({"label": "positive", "base": src, "edits": names, "chain": chain})
        # recoloured copies: alone (40%), with one edit (40%) or a chain (20%)
        order = [e.name for e in edits.EDITS]
        srng(seed, V, split, "recolour-order").shuffle(order)
        cyc = itertools.cycle(order)
        for p in possrc:
            r2 = srng(seed, V, split, "recolour-q", p["id"])
            u = r2.random()
            if u < 0.4:
                names, chain = [], False
            elif u < 0.8:
                names, chain = [next(cyc)], False
            else:
                names, chain = edits.random_chain(r2, 2), True
            queries.append({"label": "positive", "base": p["id"], "edits": names, "chain": chain, "recolour": True})
        neg_sources = [(n["id"], size["neg_per"][n["kind"]]) for n in negsrc]
        for src, names, chain in assign_edits(neg_sources, seed, f"{V}-{split}-negative"):
            queries.append({"label": "negative", "base": src, "edits": names, "chain": chain})
        for i, q in enumerate(queries):
            q["id"] = f"{split}-q{i:05d}"
        plan["splits"][split] = {"genuine": genuine, "negsrc": negsrc, "distractors": distractors, "possrc": possrc,
                                 "extra": extras, "queries": queries,
                                 "pools": {"photos_genuine": len(gen_photos), "photos_negative": len(neg_photos),
                                           "photos_background": len(bg_photos), "stamps": len(st),
                                           "stamps_genuine": len(gen_stamps), "stamps_unrelated": len(unrel_stamps),
                                           "stamps_distractor": len(dis_stamps)}}
    return plan


# ----------------------------------------------------------------------------- rendering (workers)

_W: dict = {}


def _init(cfg):
    _W.update(cfg)


@lru_cache(maxsize=32)
def _photo(rel: str) -> Image.Image:
    return Image.open(Path(_W["cache"]) / rel).convert("RGB")


def _resize_long(im: Image.Image, long_side: int) -> Image.Image:
    w, h = im.size
    if max(w, h) > long_side:
        s = long_side / max(w, h)
        im = im.resize((round(w * s), round(h * s)), Image.LANCZOS)
    return im


def _base_image(item: dict) -> Image.Image:
    how = item["render"]
    if how == "photo":
        return _resize_long(_photo(item["photo"]["path"]), item["long_side"])
    if how == "photo_crop":
        im = _photo(item["photo"]["path"])
        w, h = im.size
        x, y, side = item["box"]
        cw, ch = round(w * side), round(h * side)
        im = im.crop((round(x * w), round(y * h), round(x * w) + cw, round(y * h) + ch))
        if item["mirror"]:
            im = im.transpose(Image.FLIP_LEFT_RIGHT)
        return _resize_long(im, item["long_side"])
    svg = str(Path(_W["icons"]) / f"{item['logo']}.svg")
    if how == "product":
        return products.render(item["layout"], svg)
    lay = item["layout"]
    bg = _photo(lay["canvas"]["photo"]) if lay["canvas"]["type"] == "photo" else None
    st = stamps.load_stamp(str(Path(_W["cache"]) / item["stamp"]["path"]))
    return stamps.render(lay, st, svg, item["title"], bg, colour=item.get("colour"))


def render_base(task):
    split, role, item = task
    im = _base_image(item)
    rel = f"{split}/{role}/{item['id']}.jpg"
    im.save(Path(_W["out"]) / rel, "JPEG", quality=90 if role == "extra" else 95)
    rec = {"id": item["id"], "file": rel, "kind": item["kind"], "size": list(im.size)}
    if "brand" in item:
        rec["brand"] = item["brand"]
    if role in ("genuine", "distractors", "extra"):
        rec["label"] = "authentic"
    if role == "extra":
        return role, rec
    if "photo" in item:
        p = item["photo"]
        rec["origin"] = {"package": p["package"], "version": p["version"], "file": p["file"]}
    else:
        rec["origin"] = {"logo_package": "simple-icons (npm)", "version": _W["icons_version"], "logo": item["logo"]}
        if "stamp" in item:
            s = item["stamp"]
            rec["origin"].update({"stamp": s["id"], "package": s["package"], "stamp_version": s["version"],
                                  "file": s["file"]})
        rec["layout"] = item["layout"]
    if role == "negsrc":
        rec["neg_kind"] = NEG_KIND[item["kind"]]
    for k in ("sibling_of", "sibling_brand", "same_colour", "colour", "copy_of", "recolour"):
        if k in item:
            rec[k] = item[k]
    return role, rec


@lru_cache(maxsize=64)
def _load(rel: str) -> Image.Image:
    return Image.open(Path(_W["out"]) / rel).convert("RGB")


def render_query(task):
    split, q, src_rel, src_rec, filler_rels = task
    rng = srng(_W["seed"], _W["variant"], q["id"], "apply")

    def fillers(n, r):
        pool = [f for f in filler_rels if f != src_rel]
        picks = r.sample(pool, n)
        return [(Path(p).stem, _load(p)) for p in picks]

    img = _load(src_rel)
    out, done, final_q = edits.apply_chain(img, q["edits"], rng, {"fillers": fillers, "variant": _W["variant"]})
    rel = f"{split}/queries/{q['id']}.jpg"
    out.save(Path(_W["out"]) / rel, "JPEG", quality=final_q or 95)
    recolour = bool(q.get("recolour"))
    names = [e["name"] for e in done]
    if recolour:
        done = [{"name": edits.RECOLOUR, "tier": edits.RECOLOUR_TIER, "params": src_rec["recolour"]}] + done
    tiers = [e["tier"] for e in done]
    tier = max(tiers, key=edits.TIER_RANK.__getitem__)
    rec = {"id": q["id"], "file": rel, "label": q["label"],
           "source": src_rec.get("copy_of", q["base"]) if q["label"] == "positive" else q["base"],
           "base": q["base"], "source_kind": src_rec["kind"], "brand": src_rec.get("brand"),
           "sibling_of": src_rec.get("sibling_of"), "chain": q["chain"], "tier": tier, "edits": done,
           "size": list(out.size), "jpeg_quality": final_q or 95, "variant": _W["variant"]}
    if q["label"] == "negative":
        rec["kind"] = src_rec["neg_kind"]
        if rec["kind"] == "same_shot_other_logo":
            rec["same_colour"] = bool(src_rec.get("same_colour"))
    else:
        rec["kind"] = "copy"
        rec["logo_recolour"] = recolour
    del names
    return rec


# ----------------------------------------------------------------------------- main

def write_jsonl(path: Path, recs: list[dict]):
    with open(path, "w") as f:
        for r in sorted(recs, key=lambda r: r["id"]):
            f.write(json.dumps(r, separators=(",", ":")) + "\n")


def build(out: Path, cache: Path, seed: int, small: bool, jobs: int, distractors: int | None = None,
          variant: str = "a", extra_distractors: int = 0) -> dict:
    t0 = time.time()
    pool_json = cache / "pool.json"
    stamps_json = cache / "stamps.json"
    if not pool_json.exists() or not stamps_json.exists():
        sys.exit(f"{pool_json} or {stamps_json} missing: run `python3 tools/eval/sources.py --cache {cache}` first")
    pool = json.loads(pool_json.read_text())
    stamp_pool = json.loads(stamps_json.read_text())["stamps"]
    src_info = json.loads((cache / "sources.json").read_text())
    icons_pkg = Path(src_info["npm"]["simple-icons"]["dir"])
    icon_meta = json.loads((icons_pkg / "data" / "simple-icons.json").read_text())
    size = dict(SIZES["small" if small else "default"])
    if distractors is not None:
        size["distractors"] = distractors
    plan = make_plan(pool, stamp_pool, icons_pkg / "icons", icon_meta, seed, size, variant, extra_distractors)
    if out.exists():
        shutil.rmtree(out)
    roles = ("genuine", "negsrc", "distractors", "possrc", "extra")
    for split in SPLITS:
        for d in roles + ("queries",):
            (out / split / d).mkdir(parents=True)
    cfg = {"out": str(out), "cache": str(cache), "icons": str(icons_pkg / "icons"), "seed": seed,
           "variant": variant, "icons_version": src_info["npm"]["simple-icons"]["version"]}
    summary = {"seed": seed, "small": small, "variant": variant, "extra_distractors": extra_distractors,
               "sizes": size, "sources": src_info, "splits": {}}
    with Pool(jobs, initializer=_init, initargs=(cfg,)) as workers:
        for split in SPLITS:
            sp = plan["splits"][split]
            tasks = [(split, role, it) for role in roles for it in sp[role]]
            recs: dict[str, list] = {r: [] for r in roles}
            for role, rec in workers.imap_unordered(render_base, tasks, chunksize=4):
                recs[role].append(rec)
            for role in ("genuine", "negsrc", "possrc"):
                write_jsonl(out / split / f"{role}.jsonl", recs[role])
            write_jsonl(out / split / "distractors.jsonl", recs["distractors"] + recs["extra"])
            by_id = {r["id"]: r for role in ("genuine", "negsrc", "possrc") for r in recs[role]}
            # collage fillers: pictures unrelated to every genuine image (photos, other products)
            filler_rels = tuple(sorted(r["file"] for r in recs["negsrc"] if r["neg_kind"] in ("photo", "unrelated")))
            qtasks = [(split, q, by_id[q["base"]]["file"], by_id[q["base"]], filler_rels) for q in sp["queries"]]
            qrecs = list(workers.imap_unordered(render_query, qtasks, chunksize=8))
            write_jsonl(out / split / "queries.jsonl", qrecs)
            negs = [q for q in qrecs if q["label"] == "negative"]
            poss = [q for q in qrecs if q["label"] == "positive"]
            counts = {
                "genuine": len(recs["genuine"]),
                "genuine_by_kind": _count(recs["genuine"], "kind"),
                "distractors": len(recs["distractors"]),
                "extra_distractors": len(recs["extra"]),
                "negative_sources": len(recs["negsrc"]),
                "negative_sources_by_kind": _count(recs["negsrc"], "kind"),
                "recoloured_sources": len(recs["possrc"]),
                "brands": len({r["brand"] for r in recs["genuine"]}),
                "queries": len(qrecs),
                "positives": len(poss),
                "negatives": len(negs),
                "negatives_by_kind": _count(negs, "kind"),
                "same_shot_other_logo_same_colour": sum(bool(q.get("same_colour")) for q in negs),
                "positives_by_source_kind": _count(poss, "source_kind"),
                "positives_logo_recolour": sum(q["logo_recolour"] for q in poss),
                "queries_by_tier": _count(qrecs, "tier"),
                "chains": sum(q["chain"] for q in qrecs),
                "pools": sp["pools"],
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
    ap.add_argument("--small", action="store_true", help="a quick corpus (~60 genuine, ~500 queries per split)")
    ap.add_argument("--variant", choices=VARIANTS, default="a",
                    help="a: the default generator; b: other layouts, placements, canvases and edit parameters "
                         "(same pools' split)")
    ap.add_argument("--distractors", type=int, help="distractor images per split (default 300, --small 30)")
    ap.add_argument("--extra-distractors", type=int, default=0, metavar="N",
                    help="N more cheap distractors per split (random stamp/template shots, photo crops), e.g. 20000")
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 2)
    args = ap.parse_args(argv)
    check_outside_repo(args.out)
    build(args.out.expanduser().resolve(), args.cache.expanduser().resolve(), args.seed, args.small, args.jobs,
          args.distractors, args.variant, args.extra_distractors)
    return 0


if __name__ == "__main__":
    sys.exit(main())
