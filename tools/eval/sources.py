# pip install pillow numpy pdqhash==0.2.8 scikit-image resvg-py==0.5.0   (or: pip install -r tools/eval/requirements.txt)
"""Fetch the evaluation's source images once, into a cache directory outside the repo.

Everything comes from package registries, nothing from the web:

* photographs and wallpaper art from Debian packages (`apt-get download` + `dpkg-deb -x`,
  no install): DEBIAN_PACKAGES below;
* the sample photos bundled in the scikit-image wheel (no pooch download);
* brand logos from the npm package `simple-icons` (`npm install` into the cache);
* cut-out objects with alpha ("stamps": photos and clip-art of animals, food, clothes,
  vehicles, household things...) from Debian `tuxpaint-stamps-default` and
  `openclipart-png`: STAMP_PACKAGES below. They become the textured product shots.

The cache gets a *pool*: every source photo resized to at most 1024 px on the long side,
alpha composited onto white, stored as PNG, listed in pool.json with its package, version,
file, licence pointer, size and PDQ quality. Sources whose PDQ quality is under
MIN_QUALITY (flat gradients), and near-duplicates of an earlier source (PDQ distance
<= 40 in any of the 8 orientations, e.g. colour variants of one wallpaper), are dropped
and listed in pool.json's "dropped". The logos are not rasterised here: the corpus
builder renders them (resvg) at the size it needs.

The stamps go to stamps/ (RGBA PNG trimmed to the object, <= STAMP_LONG_SIDE px) and
stamps.json. Kept: a real cut-out (8-92% of the picture opaque, not a filled rectangle),
>= 200 px (PNG; tuxpaint's SVG-only stamps are rendered by resvg), textured enough
(>= 150 distinct colours on the object). Then, across the photos and every stamp,
near-duplicates are dropped by content (packages ship one picture under several names,
tuxpaint ships colour and size variants): PDQ of the stamp on white <= 40 bits from a
kept photo or stamp in any of the 8 orientations, or the same alpha silhouette (IoU >=
0.93 in any orientation, 24x24 after trimming, similar aspect) with PDQ <= 90 bits.

    python3 tools/eval/sources.py --cache ~/.cache/lookalike-eval

Needs `apt-get update` to have been run once on the machine, npm, and network access to
the Debian archive and the npm registry (the only network this tool uses). Re-running
reuses what is already in the cache (`--refresh` rebuilds the pool).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

Image.MAX_IMAGE_PIXELS = None  # the wallpapers are trusted package files (up to 6000x4000)

DEFAULT_CACHE = Path(os.environ.get("LOOKALIKE_EVAL_CACHE", Path.home() / ".cache" / "lookalike-eval"))
SIMPLE_ICONS_VERSION = "16.37.0"
POOL_LONG_SIDE = 1024
MIN_QUALITY = 50  # lookalike's default --min-quality: below it a photo gets LOW_QUALITY
DUPLICATE_BITS = 40

# Debian packages and which of their files are sources. "family" groups files that are
# one picture (sizes, light/dark or colour variants): only one file per family is kept.
DEBIAN_PACKAGES = {
    "lomiri-wallpapers-16.04": ["usr/share/backgrounds/*.jpg"],
    "lomiri-wallpapers-20.04": ["usr/share/backgrounds/*.jpg"],
    "lomiri-wallpapers": ["usr/share/backgrounds/*.png"],
    "mate-backgrounds": ["usr/share/backgrounds/mate/*/*.jpg", "usr/share/backgrounds/mate/*/*.png"],
    "plasma-workspace-wallpapers": ["usr/share/wallpapers/*/contents/images/*"],
    "gnome-backgrounds": ["usr/share/backgrounds/gnome/*.webp"],
    "sway-backgrounds": ["usr/share/backgrounds/sway/*.png"],
    "ukui-wallpapers": ["usr/share/backgrounds/*.jpg", "usr/share/backgrounds/*.png"],
}
# Cut-out objects with alpha (the textured product shots). Per package: which files, and
# which of their top-level categories (first folder under `root`) are left out (flat
# symbols, letters, flags, road signs, UI icons).
STAMP_PACKAGES = {
    "tuxpaint-stamps-default": {"root": "usr/share/tuxpaint/stamps", "suffixes": [".png", ".svg"],
                                "exclude": ["symbols/alphabets", "symbols/math", "symbols/shapes", "symbols/music",
                                            "symbols/chess", "town/flags", "town/roadsigns"]},
    "openclipart-png": {"root": "usr/share/openclipart/png", "suffixes": [".png"],
                        "exclude": ["computer", "shapes", "signs_and_symbols", "special", "logos", "buttons",
                                    "geography", "education"]},
}
STAMP_LONG_SIDE = 768
STAMP_MIN_SIDE = 200
STAMP_SVG_SIDE = 640
STAMP_MIN_COLOURS = 150
SILHOUETTE = 24
SILHOUETTE_IOU = 0.93
SILHOUETTE_BITS = 90
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp"}

# Photos shipped inside the scikit-image wheel (skimage/data). Left out: synthetic test
# patterns (chessboard, phantom, logo, color), binary masks (horse), the right view of
# the motorcycle stereo pair (near-duplicate of the left), microaneurysms (a retina crop),
# multi-page TIFFs and the GIF.
SKIMAGE_FILES = ["astronaut.png", "brick.png", "camera.png", "cell.png", "chelsea.png",
                 "clock_motion.png", "coffee.png", "coins.png", "grass.png", "gravel.png",
                 "hubble_deep_field.jpg", "ihc.png", "moon.png", "motorcycle_left.png",
                 "page.png", "retina.jpg", "rocket.jpg", "text.png"]


def family_of(pkg: str, rel: str) -> str:
    """Files that show the same picture share a family key."""
    p = Path(rel)
    if pkg == "plasma-workspace-wallpapers":
        return p.parts[3]  # usr/share/wallpapers/<Name>/contents/images/<size>
    if pkg == "gnome-backgrounds":
        return p.stem.rsplit("-", 1)[0]  # adwaita-l / adwaita-d
    if pkg == "sway-backgrounds":
        return "sway"
    name = p.stem
    if name.startswith("Elephants"):
        return "Elephants"
    if name.startswith("Ubuntu-Mate-") and name.endswith("-no-logo"):
        return "Ubuntu-Mate-no-logo"  # one aurora picture in four colour grades
    if name.startswith("MATE-Stripes-"):
        return "MATE-Stripes"
    return name


def run(cmd: list[str], cwd: Path | None = None) -> str:
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stderr.strip()[-800:]}")
    return proc.stdout


def fetch_debs(cache: Path, packages=None) -> dict:
    debs = cache / "debs"
    debs.mkdir(parents=True, exist_ok=True)
    info = {}
    for pkg in (packages or DEBIAN_PACKAGES):
        existing = sorted(debs.glob(f"{pkg}_*.deb"))
        if not existing:
            print(f"apt-get download {pkg}", flush=True)
            try:
                run(["apt-get", "download", pkg], cwd=debs)
            except RuntimeError as e:
                sys.exit(f"{e}\n(hint: run `apt-get update` first)")
            existing = sorted(debs.glob(f"{pkg}_*.deb"))
        deb = existing[-1]
        dest = cache / "x" / pkg
        if not dest.exists():
            tmp = dest.with_name(pkg + ".partial")
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
            run(["dpkg-deb", "-x", str(deb), str(tmp)])
            tmp.rename(dest)
        version = run(["dpkg-deb", "-f", str(deb), "Version"]).strip()
        info[pkg] = {"version": version, "deb": deb.name,
                     "copyright": f"/usr/share/doc/{pkg}/copyright (inside the .deb)"}
    return info


def fetch_simple_icons(cache: Path, version: str) -> dict:
    root = cache / "npm"
    pkg_dir = root / "node_modules" / "simple-icons"
    pkg_json = pkg_dir / "package.json"
    if not pkg_json.exists() or json.loads(pkg_json.read_text())["version"] != version:
        if not shutil.which("npm"):
            sys.exit("npm not found: `apt-get install npm` (needed once, for the simple-icons logos)")
        root.mkdir(parents=True, exist_ok=True)
        print(f"npm install simple-icons@{version}", flush=True)
        run(["npm", "install", "--no-audit", "--no-fund", "--prefix", str(root), f"simple-icons@{version}"])
    n = len(list((pkg_dir / "icons").glob("*.svg")))
    return {"version": json.loads(pkg_json.read_text())["version"], "dir": str(pkg_dir), "icons": n,
            "licence": "CC0-1.0 (data); logos are their owners' trademarks, see DISCLAIMER.md"}


def load_rgb(path: Path, long_side: int) -> Image.Image:
    with Image.open(path) as im:
        if im.format == "JPEG":
            # decode at a reduced DCT scale when the picture is much larger than needed
            im.draft("RGB", (long_side, long_side))
        im = ImageOps.exif_transpose(im)
        if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
            rgba = im.convert("RGBA")
            white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            im = Image.alpha_composite(white, rgba).convert("RGB")
        else:
            im = im.convert("RGB")
    w, h = im.size
    if max(w, h) > long_side:
        s = long_side / max(w, h)
        im = im.resize((max(1, round(w * s)), max(1, round(h * s))), Image.LANCZOS)
    return im


def candidates(cache: Path) -> list[dict]:
    out = []
    for pkg, globs in DEBIAN_PACKAGES.items():
        root = cache / "x" / pkg
        files = sorted({p for g in globs for p in root.glob(g)
                        if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and "screenshot" not in p.name})
        fams: dict[str, list[Path]] = {}
        for p in files:
            fams.setdefault(family_of(pkg, str(p.relative_to(root))), []).append(p)
        for fam, paths in sorted(fams.items()):
            # one file per family: the smallest landscape one that is still >= the pool size
            def key(p: Path):
                with Image.open(p) as im:
                    w, h = im.size
                return (h > w, max(w, h) < POOL_LONG_SIDE, w * h, str(p))
            best = min(paths, key=key)
            out.append({"origin": "debian", "package": pkg, "file": str(best.relative_to(root)),
                        "path": best, "family": fam})
    import skimage
    skdir = Path(skimage.__file__).parent / "data"
    for name in SKIMAGE_FILES:
        p = skdir / name
        if p.exists():
            out.append({"origin": "pypi", "package": "scikit-image", "file": f"skimage/data/{name}",
                        "path": p, "family": Path(name).stem})
    return out


def slug(s: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in s)[:48]


def reuse_or_reset(out_dir: Path, index_json: Path, refresh: bool) -> dict | None:
    """What an earlier run built (its index JSON), unless `refresh`; else None, with
    `out_dir` emptied for a new build."""
    if index_json.exists() and not refresh:
        return json.loads(index_json.read_text())
    shutil.rmtree(out_dir, ignore_errors=True)
    out_dir.mkdir(parents=True)
    return None


def build_pool(cache: Path, deb_info: dict, refresh: bool) -> dict:
    import pdqhash
    import skimage
    pool_dir = cache / "pool"
    pool_json = cache / "pool.json"
    if (made := reuse_or_reset(pool_dir, pool_json, refresh)) is not None:
        return made
    photos, dropped = [], []
    kept_hashes: list[tuple[str, np.ndarray]] = []
    for c in candidates(cache):
        im = load_rgb(c["path"], POOL_LONG_SIDE)
        arr = np.asarray(im)
        hashes, quality = pdqhash.compute_dihedral(arr)
        base = np.asarray(hashes[0], dtype=np.uint8)
        pid = f"{slug(c['package'])}__{slug(c['family'])}"
        rec = {"id": pid, "package": c["package"],
               "version": deb_info[c["package"]]["version"] if c["origin"] == "debian" else skimage.__version__,
               "origin": c["origin"], "file": c["file"], "size": list(im.size), "pdq_quality": int(quality)}
        if quality < MIN_QUALITY:
            dropped.append({**rec, "why": f"PDQ quality {quality} < {MIN_QUALITY}"})
            continue
        dup = None
        for other_id, other in kept_hashes:
            d = min(int(np.count_nonzero(np.asarray(h, dtype=np.uint8) != other)) for h in hashes)
            if d <= DUPLICATE_BITS:
                dup = (other_id, d)
                break
        if dup:
            dropped.append({**rec, "why": f"near-duplicate of {dup[0]} ({dup[1]} bits)"})
            continue
        kept_hashes.append((pid, base))
        im.save(pool_dir / f"{pid}.png", optimize=False, compress_level=1)
        rec["path"] = f"pool/{pid}.png"
        photos.append(rec)
        print(f"  {pid:60} {im.size[0]}x{im.size[1]} q={quality}", flush=True)
    doc = {"photos": photos, "dropped": dropped}
    pool_json.write_text(json.dumps(doc, indent=1) + "\n")
    return doc


# ----------------------------------------------------------------------------- stamps

def stamp_candidates(cache: Path) -> list[dict]:
    out = []
    for pkg, spec in STAMP_PACKAGES.items():
        root = cache / "x" / pkg / spec["root"]
        files = sorted(p for p in root.rglob("*") if p.is_file() and not p.is_symlink()
                       and p.suffix.lower() in spec["suffixes"])
        stems = {p.with_suffix("") for p in files if p.suffix.lower() == ".png"}
        for p in files:
            rel = str(p.relative_to(root))
            if any(rel.startswith(x + "/") for x in spec["exclude"]):
                continue
            if p.suffix.lower() == ".svg" and p.with_suffix("") in stems:
                continue  # tuxpaint ships some stamps as PNG and SVG: the PNG is the stamp
            out.append({"package": pkg, "file": f"{spec['root']}/{rel}", "path": p, "category": rel.split("/")[0]})
    return out


def load_stamp(path: Path) -> Image.Image | None:
    """The object as RGBA trimmed to its alpha box (+2% margin), <= STAMP_LONG_SIDE."""
    if path.suffix.lower() == ".svg":
        import resvg_py
        try:
            svg = path.read_text(errors="replace")
            png = resvg_py.svg_to_bytes(svg_string=svg, width=STAMP_SVG_SIDE)
        except Exception:
            return None
        import io
        im = Image.open(io.BytesIO(bytes(png)))
        im.load()
    else:
        im = Image.open(path)
        if max(im.size) < STAMP_MIN_SIDE:
            return None
        if max(im.size) > 3 * STAMP_LONG_SIDE:
            im.thumbnail((3 * STAMP_LONG_SIDE, 3 * STAMP_LONG_SIDE))
    if im.mode not in ("RGBA", "LA", "PA") and not (im.mode == "P" and "transparency" in im.info) and \
            "transparency" not in im.info:
        return None  # no alpha: not a cut-out
    im = im.convert("RGBA")
    a = im.getchannel("A")
    bb = a.point(lambda v: 255 if v > 24 else 0).getbbox()
    if bb is None:
        return None
    w, h = bb[2] - bb[0], bb[3] - bb[1]
    m = round(0.02 * max(w, h))
    im = im.crop((max(0, bb[0] - m), max(0, bb[1] - m), min(im.size[0], bb[2] + m), min(im.size[1], bb[3] + m)))
    if max(im.size) > STAMP_LONG_SIDE:
        s = STAMP_LONG_SIDE / max(im.size)
        im = im.resize((max(1, round(im.size[0] * s)), max(1, round(im.size[1] * s))), Image.LANCZOS)
    return im


def silhouettes(alpha: np.ndarray) -> np.ndarray:
    """The alpha silhouette as SILHOUETTE^2 bits in the 8 orientations: [8, S*S] bool."""
    m = Image.fromarray(alpha).resize((SILHOUETTE, SILHOUETTE), Image.BILINEAR)
    b = np.asarray(m) > 127
    outs = []
    for k in range(4):
        r = np.rot90(b, k)
        outs += [r, r[:, ::-1]]
    return np.stack([o.reshape(-1) for o in outs])


def on_white(im: Image.Image, bg=(255, 255, 255)) -> Image.Image:
    base = Image.new("RGBA", im.size, bg + (255,))
    return Image.alpha_composite(base, im).convert("RGB")


def build_stamps(cache: Path, deb_info: dict, photos: list[dict], refresh: bool) -> dict:
    import pdqhash
    out_dir = cache / "stamps"
    js = cache / "stamps.json"
    if (made := reuse_or_reset(out_dir, js, refresh)) is not None:
        return made
    # every kept photo's PDQ (original orientation) takes part in the de-duplication
    kept_pdq = []
    kept_ids = []
    for p in photos:
        h, _q = pdqhash.compute(np.asarray(Image.open(cache / p["path"]).convert("RGB")))
        kept_pdq.append(np.asarray(h, dtype=bool))
        kept_ids.append(p["id"])
    kept_sil: list[np.ndarray | None] = [None] * len(kept_pdq)
    kept_aspect: list[float] = [0.0] * len(kept_pdq)
    stamps, dropped = [], []
    for c in stamp_candidates(cache):
        base = {"package": c["package"], "version": deb_info[c["package"]]["version"], "file": c["file"],
                "category": c["category"]}
        try:
            im = load_stamp(c["path"])
        except Exception as e:  # a broken file in a package
            dropped.append({**base, "why": f"unreadable: {e}"})
            continue
        if im is None:
            dropped.append({**base, "why": "no alpha, too small or empty"})
            continue
        a = np.asarray(im.getchannel("A"))
        opaque = a > 128
        share = float(opaque.mean())
        if not 0.08 <= share <= 0.92:
            dropped.append({**base, "why": f"opaque share {share:.2f} (not a cut-out)"})
            continue
        rgb = np.asarray(im.convert("RGB"))[opaque]
        q = (rgb // 8).astype(np.int32)
        colours = int(len(np.unique(q[:, 0] * 1024 + q[:, 1] * 32 + q[:, 2])))
        if colours < STAMP_MIN_COLOURS:
            dropped.append({**base, "why": f"{colours} colours (flat)"})
            continue
        white = on_white(im)
        small = white.copy()
        small.thumbnail((512, 512))
        hashes, quality = pdqhash.compute_dihedral(np.asarray(small))
        hs = np.asarray(hashes, dtype=bool)  # [8, 256]
        sil = silhouettes(a)
        aspect = im.size[0] / im.size[1]
        dup = None
        if kept_pdq:
            K = np.stack(kept_pdq)  # [n, 256]
            d = (hs[:, None, :] != K[None, :, :]).sum(-1).min(0)  # [n]
            j = int(d.argmin())
            if d[j] <= DUPLICATE_BITS:
                dup = (kept_ids[j], f"PDQ {int(d[j])} bits")
            else:
                for j in np.flatnonzero(d <= SILHOUETTE_BITS):
                    ks = kept_sil[j]
                    if ks is None:
                        continue
                    ka = kept_aspect[j]
                    if not (abs(np.log(aspect / ka)) < 0.1 or abs(np.log(aspect * ka)) < 0.1):
                        continue
                    inter = (sil & ks[None, :]).sum(1)
                    union = (sil | ks[None, :]).sum(1)
                    iou = float((inter / np.maximum(1, union)).max())
                    if iou >= SILHOUETTE_IOU:
                        dup = (kept_ids[j], f"silhouette IoU {iou:.2f}, PDQ {int(d[j])} bits")
                        break
        if dup:
            dropped.append({**base, "why": f"near-duplicate of {dup[0]} ({dup[1]})"})
            continue
        sid = f"{slug(c['package'])}__{slug(str(Path(c['file']).relative_to(STAMP_PACKAGES[c['package']]['root']).with_suffix('')))}"
        if sid in kept_ids:
            sid += "_svg"
        im.save(out_dir / f"{sid}.png", compress_level=1)
        lum = rgb @ np.array([0.299, 0.587, 0.114])
        rec = {"id": sid, **base, "path": f"stamps/{sid}.png", "size": list(im.size), "opaque": round(share, 3),
               "colours": colours, "mean_rgb": [round(float(x)) for x in rgb.mean(0)],
               "mean_lum": round(float(lum.mean()), 1), "pdq_quality": int(quality)}
        stamps.append(rec)
        kept_pdq.append(hs[0])
        kept_ids.append(sid)
        kept_sil.append(sil[0])
        kept_aspect.append(aspect)
    doc = {"stamps": stamps, "dropped": dropped,
           "rules": {"long_side": STAMP_LONG_SIDE, "min_side": STAMP_MIN_SIDE, "min_colours": STAMP_MIN_COLOURS,
                     "duplicate_bits": DUPLICATE_BITS, "silhouette_iou": SILHOUETTE_IOU,
                     "silhouette_bits": SILHOUETTE_BITS}}
    js.write_text(json.dumps(doc, indent=1) + "\n")
    by = {}
    for r in stamps:
        by[r["package"]] = by.get(r["package"], 0) + 1
    print(f"stamps: {len(stamps)} kept {by}, {len(dropped)} dropped "
          f"({sum('near-duplicate' in d['why'] for d in dropped)} as near-duplicates)", flush=True)
    return doc


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help="cache directory (default %(default)s)")
    ap.add_argument("--simple-icons-version", default=SIMPLE_ICONS_VERSION)
    ap.add_argument("--refresh", action="store_true", help="rebuild the photo pool and the stamps")
    ap.add_argument("--refresh-stamps", action="store_true", help="rebuild the stamps only")
    args = ap.parse_args(argv)
    cache = args.cache.expanduser().resolve()
    repo = Path(__file__).resolve().parents[2]
    if cache == repo or repo in cache.parents:
        sys.exit(f"the cache must live outside the repository ({repo})")
    for tool in ("apt-get", "dpkg-deb"):
        if not shutil.which(tool):
            sys.exit(f"{tool} not found: the sources need a Debian/Ubuntu machine")
    cache.mkdir(parents=True, exist_ok=True)
    deb_info = fetch_debs(cache, list(DEBIAN_PACKAGES) + list(STAMP_PACKAGES))
    icons = fetch_simple_icons(cache, args.simple_icons_version)
    pool = build_pool(cache, deb_info, args.refresh)
    stamps = build_stamps(cache, deb_info, pool["photos"], args.refresh or args.refresh_stamps)
    import skimage
    sources = {"debian": deb_info, "npm": {"simple-icons": icons},
               "pypi": {"scikit-image": skimage.__version__},
               "stamps": {"kept": len(stamps["stamps"]), "dropped": len(stamps["dropped"])}}
    (cache / "sources.json").write_text(json.dumps(sources, indent=1) + "\n")
    print(f"pool: {len(pool['photos'])} photos kept, {len(pool['dropped'])} dropped; "
          f"{len(stamps['stamps'])} stamps kept, {len(stamps['dropped'])} dropped; "
          f"simple-icons {icons['version']} ({icons['icons']} logos); cache {cache}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
