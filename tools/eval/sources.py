# pip install pillow numpy pdqhash==0.2.8 scikit-image resvg-py==0.5.0   (or: pip install -r tools/eval/requirements.txt)
"""Fetch the evaluation's source images once, into a cache directory outside the repo.

Everything comes from package registries, nothing from the web:

* photographs and wallpaper art from Debian packages (`apt-get download` + `dpkg-deb -x`,
  no install): DEBIAN_PACKAGES below;
* the sample photos bundled in the scikit-image wheel (no pooch download);
* brand logos from the npm package `simple-icons` (`npm install` into the cache).

The cache gets a *pool*: every source photo resized to at most 1024 px on the long side,
alpha composited onto white, stored as PNG, listed in pool.json with its package, version,
file, licence pointer, size and PDQ quality. Sources whose PDQ quality is under
MIN_QUALITY (flat gradients), and near-duplicates of an earlier source (PDQ distance
<= 40 in any of the 8 orientations, e.g. colour variants of one wallpaper), are dropped
and listed in pool.json's "dropped". The logos are not rasterised here: the corpus
builder renders them (resvg) at the size it needs.

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


def fetch_debs(cache: Path) -> dict:
    debs = cache / "debs"
    debs.mkdir(parents=True, exist_ok=True)
    info = {}
    for pkg in DEBIAN_PACKAGES:
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


def build_pool(cache: Path, deb_info: dict, refresh: bool) -> dict:
    import pdqhash
    import skimage
    pool_dir = cache / "pool"
    pool_json = cache / "pool.json"
    if pool_json.exists() and not refresh:
        return json.loads(pool_json.read_text())
    shutil.rmtree(pool_dir, ignore_errors=True)
    pool_dir.mkdir(parents=True)
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


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help="cache directory (default %(default)s)")
    ap.add_argument("--simple-icons-version", default=SIMPLE_ICONS_VERSION)
    ap.add_argument("--refresh", action="store_true", help="rebuild the photo pool")
    args = ap.parse_args(argv)
    cache = args.cache.expanduser().resolve()
    repo = Path(__file__).resolve().parents[2]
    if cache == repo or repo in cache.parents:
        sys.exit(f"the cache must live outside the repository ({repo})")
    for tool in ("apt-get", "dpkg-deb"):
        if not shutil.which(tool):
            sys.exit(f"{tool} not found: the sources need a Debian/Ubuntu machine")
    cache.mkdir(parents=True, exist_ok=True)
    deb_info = fetch_debs(cache)
    icons = fetch_simple_icons(cache, args.simple_icons_version)
    pool = build_pool(cache, deb_info, args.refresh)
    import skimage
    sources = {"debian": deb_info, "npm": {"simple-icons": icons},
               "pypi": {"scikit-image": skimage.__version__}}
    (cache / "sources.json").write_text(json.dumps(sources, indent=1) + "\n")
    print(f"pool: {len(pool['photos'])} photos kept, {len(pool['dropped'])} dropped; "
          f"simple-icons {icons['version']} ({icons['icons']} logos); cache {cache}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
