# pip install pdqhash==0.2.8 imagehash pillow numpy   (or: pip install -r tools/requirements.txt)
"""Hashing speed: lookalike against Meta's PDQ (PyPI `pdqhash`, on a Pillow decode),
`imagehash.phash`, and Pillow's own decode, on the same files in the same run.

    cargo build --release --example hashbench
    python3 tools/pdq_reference.py corpus /tmp/pdq-corpus      # real photos, once
    python3 tools/bench/hashing.py /tmp/pdq-corpus [--repeat 7] [--markdown out.md]

Every figure is a median of CPU time of the measuring thread (not wall time), per image,
so the other load of a shared machine matters less; ratios are computed per image, then
the median ratio per size group is printed. Groups: by the file name's size tag
(jpg800, jpg1500, crop3000x2000, png1024, webp1200, prog1200) as the corpus tool writes it.

Columns:
  lookalike      file bytes -> PDQ + its 8 orientations + pHash (+ the trimmed view
                 when the image has plain borders), `hash_image`
  pdqhash        Pillow full RGB decode + pdqhash.compute_dihedral (the reference)
  pillow full    Pillow decode to RGB at full size (what pdqhash is fed)
  pillow L       Pillow decode to luminance at full size (`draft("L", size)`: libjpeg-turbo
                 skips colour conversion) -- the decode lookalike itself does, the
                 entropy-decoding floor at the scale lookalike decodes to
  pillow 1/2     Pillow DCT-scaled decode (`draft`) to half size, luminance
  phash          Pillow decode + imagehash.phash
"""
import argparse
import collections
import json
import os
import re
import statistics
import subprocess
import sys
import time

import numpy as np
from PIL import Image, ImageOps

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def cpu_ms(fn, repeat):
    times = []
    for _ in range(repeat):
        t = time.thread_time()
        fn()
        times.append((time.thread_time() - t) * 1e3)
    return statistics.median(times)


def group_of(path):
    m = re.search(r"_(jpg\d+|crop\d+x\d+|png\d+|webp\d+|prog\d+|exif\d_\d+)\.", os.path.basename(path))
    if not m:
        return "other"
    g = m.group(1)
    return re.sub(r"exif\d_", "exif_", g)


def peers(path, repeat):
    import imagehash
    import pdqhash

    def pil_rgb():
        with Image.open(path) as im:
            return np.asarray(ImageOps.exif_transpose(im).convert("RGB"))

    def pil_l(scale):
        def run():
            with Image.open(path) as im:
                if im.format == "JPEG":
                    im.draft("L", (im.width // scale, im.height // scale))
                return np.asarray(im.convert("L"))
        return run

    rgb = pil_rgb()
    out = {
        "pillow full": cpu_ms(pil_rgb, repeat),
        "pillow L": cpu_ms(pil_l(1), repeat),
        "pillow 1/2": cpu_ms(pil_l(2), repeat),
        "pdqhash": cpu_ms(lambda: pdqhash.compute_dihedral(pil_rgb()), repeat),
        "pdqhash (hash only)": cpu_ms(lambda: pdqhash.compute_dihedral(rgb), repeat),
        "phash": cpu_ms(lambda: imagehash.phash(Image.open(path)), repeat),
    }
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("paths", nargs="+", help="image files or directories")
    ap.add_argument("--repeat", type=int, default=7)
    target = os.environ.get("CARGO_TARGET_DIR") or os.path.join(ROOT, "target")
    ap.add_argument("--lookalike-bench", default=os.path.join(target, "release/examples/hashbench"),
                    help="the hashbench binary (default: $CARGO_TARGET_DIR or ./target, release/examples/hashbench)")
    ap.add_argument("--markdown", help="also write the tables here")
    args = ap.parse_args()
    files = []
    for p in args.paths:
        if os.path.isdir(p):
            files += sorted(os.path.join(p, f) for f in os.listdir(p) if f.lower().endswith((".jpg", ".jpeg", ".png", ".webp")))
        else:
            files.append(p)
    if not os.path.exists(args.lookalike_bench):
        sys.exit(f"{args.lookalike_bench} missing: run `cargo build --release --example hashbench` first")
    load = os.getloadavg()
    proc = subprocess.run([args.lookalike_bench, "--repeat", str(args.repeat), *files], capture_output=True, text=True, check=True)
    lines = [json.loads(l) for l in proc.stdout.splitlines()]
    ours = {l["file"]: l for l in lines if "file" in l}
    all_cores = next(l for l in lines if "all_cores" in l)

    rows = collections.defaultdict(list)
    for f in files:
        p = peers(f, args.repeat)
        o = ours[f]
        rows[group_of(f)].append({**p, "lookalike": o["total_ms"], "decode": o["decode_ms"], "hash": o["hash_ms"]})

    med = lambda xs: statistics.median(xs)
    out = []
    out.append(f"Hashing, CPU ms per image (median over {args.repeat} runs, then over the images of a group); "
               f"load average at start {load[0]:.1f}, {os.cpu_count()} cores.\n")
    out.append("| group | n | lookalike vs pdqhash (speed-up) | lookalike / pillow L decode | lookalike / pillow 1/2 decode | lookalike vs phash (speed-up) |")
    out.append("|---|---:|---:|---:|---:|---:|")
    for g, rs in sorted(rows.items()):
        out.append(f"| {g} | {len(rs)} | {med([r['pdqhash'] / r['lookalike'] for r in rs]):.1f}× | "
                   f"{med([r['lookalike'] / r['pillow L'] for r in rs]):.2f} | {med([r['lookalike'] / r['pillow 1/2'] for r in rs]):.2f} | "
                   f"{med([r['phash'] / r['lookalike'] for r in rs]):.1f}× |")
    out.append("")
    out.append("| group | lookalike total | (decode | hash) | pdqhash | pdqhash hash only | pillow full | pillow L | pillow 1/2 | phash |")
    out.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for g, rs in sorted(rows.items()):
        m = lambda k: med([r[k] for r in rs])
        out.append(f"| {g} | {m('lookalike'):.1f} | {m('decode'):.1f} | {m('hash'):.1f} | {m('pdqhash'):.1f} | "
                   f"{m('pdqhash (hash only)'):.1f} | {m('pillow full'):.1f} | {m('pillow L'):.1f} | {m('pillow 1/2'):.1f} | {m('phash'):.1f} |")
    out.append("")
    out.append(f"lookalike on all {all_cores['all_cores']} cores (wall clock): {all_cores['images_per_s']:.0f} images/s "
               f"over {all_cores['images']} images.")
    text = "\n".join(out)
    print(text)
    if args.markdown:
        with open(args.markdown, "w") as fh:
            fh.write(text + "\n")


if __name__ == "__main__":
    main()
