# pip install pdqhash==0.2.8 pillow numpy scikit-image   (or: pip install -r tools/requirements.txt)
"""Reference PDQ hashes (Meta's C++ PDQ via the PyPI `pdqhash` wrapper) for `lookalike`.

Subcommands (run `python3 tools/pdq_reference.py SUBCOMMAND --help` for details):

  fixtures   regenerate tests/fixtures/reference.json (and LICENSE.md) from the fixture
             images; --rebuild-images re-creates the images themselves from scikit-image's
             bundled sample photos; --check only verifies reference.json is up to date.
  compare    hash images with `lookalike hash --json FILE` and with pdqhash, and report the
             Hamming distances (gate: quality>=80 mean <= 3 bits and p95 <= 10 bits).
  corpus     build a ~57-image photo corpus (not for git) from Debian wallpaper packages.
  explain    print pdqhash's view of one image (hash, quality, dihedrals, DCT, near-median
             coefficients) to debug a mismatch.
  selftest   re-check the conventions documented below (hex order, dihedral order, EXIF).

How the reference decodes an image (the same everywhere in this script):
  ImageOps.exif_transpose(Image.open(path)).convert("RGB") -> uint8 HxWx3 -> pdqhash.compute
  Alpha is DROPPED (Pillow's RGBA->RGB / LA->RGB conversion keeps the colour channels
  as-is, no compositing). Grey images are replicated to R=G=B by convert("RGB").

==================================================================================
Conventions verified against the C++ in the pdqhash 0.2.8 sdist
(`pip download --no-binary :all: --no-deps --no-build-isolation pdqhash==0.2.8`, which
vendors ThreatExchange/pdq/cpp):

* Hash bits.  pdq/cpp/hashing/pdqhashing.cpp pdqBuffer16x16ToBits(): bit k = i*16+j is set
  iff dct[i][j] > median, where dct is the 16x16 output of dct64To16 (i = vertical
  frequency 1..16 (row of D*A*D^T), j = horizontal frequency 1..16) and the median is
  torben() over the 256 values (the lower median, element 128 of 256 in sorted order).
  pdq/cpp/common/pdqhashtypes.h: setBit(k) does w[(k&255)>>4] |= 1<<(k&15) (w is uint16[16]);
  Hash256::format() prints w[15], w[14], ..., w[0] as "%04hx" each.
  => hex string == the 256-bit big-endian integer whose bit k (LSB = bit 0) is hash bit k.
* pdqhash's Python vectors.  pdqhash/bindings.pyx hash_to_vector():
      np.array([(w[(k & 255) >> 4] >> (k & 15)) & 1 for k in range(256)])[::-1]
  i.e. vector[m] = hash bit (255 - m): the vector is MSB-first, so the hex string is simply
  the vector read as a 256-digit binary number (vector_to_hex below).  compute_float()
  returns buffer16x16.flatten()[::-1], i.e. float_vector[m] = dct[(255-m)//16][(255-m)%16].
* Verified three ways: (1) I compiled the sdist's C++ (pdqhashing.cpp, downscaling.cpp,
  torben.cpp, pdqhashtypes.cpp, pdqhamming.cpp) into a tiny harness that runs
  fillFloatLumaFromRGB + pdqHash256FromFloatLuma / pdqDihedralHash256esFromFloatLuma and
  prints Hash256::format(); for 7 scikit-image photos the C++ hex strings (plain and all 8
  dihedral) equal vector_to_hex(pdqhash.compute*(...)) exactly (astronaut's is kept below as
  KNOWN_ASTRONAUT_HEX; `selftest` re-checks it).  (2) `selftest` checks that the hex built
  from compute_float() with bit k = dct_flat[k] > lower-median equals the hex from compute().
  (3) hashtool256's dumpBits() prints w[15] bit 15 first ... w[0] bit 0 last, which is the
  order of pdqhash's vectors (its unit tests compare against that output).

* Dihedral order (pdqhash.compute_dihedral == pdqDihedralHash256esFromFloatLuma argument
  order): original, rotate90, rotate180, rotate270, flipX, flipY, flipPlus1, flipMinus1.
  Meaning, checked by hashing the transformed pixels (`selftest`; nearest transform wins by
  a margin of ~100 bits):
    rotate90   = rotate 90 deg counter-clockwise   (numpy np.rot90(a, 1))
    rotate180  = rotate 180 deg
    rotate270  = rotate 90 deg clockwise           (np.rot90(a, 3))
    flipX      = upside-down (rows reversed, a[::-1])
    flipY      = left-right mirror (columns reversed, a[:, ::-1])
    flipPlus1  = transpose about the main diagonal (a.transpose(1, 0, 2))
    flipMinus1 = transpose about the anti-diagonal
  The C++ derives them in the DCT domain (sign flips of odd/even frequency rows/cols and a
  16x16 transpose, dct16OriginalTo* in pdqhashing.cpp) from ONE downsample of the original,
  so they differ from hashing the transformed pixels by up to ~16 bits (the decimation grid
  is not symmetric).  A port must use the DCT-domain transforms to match them exactly.

* Luma.  C++ fillFloatLumaFromRGB: Y = 0.299*R + 0.587*G + 0.114*B in float32 (coefficients
  are `const float`).  pdqhash's bindings.pyx computes the same expression in numpy
  float64 and then casts to float32 (this was bit-identical to the C++ harness on every
  image I tried).  Grey input: C++ has fillFloatLumaFromGrey (Y = value); via
  convert("RGB") the float64 sum gives the same value.
* Downsampling.  pdqhash calls pdqHash256FromFloatLuma on the FULL-resolution luma: no
  pre-resize.  That function: if min(rows, cols) < 5 -> hash all zero, quality 0; if exactly
  64x64 -> used as is; otherwise a "Jarosz" filter = 2 passes of (box filter along rows,
  then along columns) with window = (dim + 127) // 128 (integer division; computed from
  numCols for the along-rows pass and numRows for the along-columns pass; a window of 1
  is the identity), then decimation to 64x64 by sampling
  in[int((i + 0.5) * rows / 64)][int((j + 0.5) * cols / 64)] (no interpolation; small images
  are effectively nearest-neighbour upsampled).  Box filter edge handling: see box1DFloat
  (the window is truncated at the edges and the mean is over the pixels actually inside).
  NOTE: Meta's CLI pdq-photo-hasher (pdq/cpp/io/pdqio.cpp) additionally resizes any image
  with a side > 512 to exactly 512x512 with CImg (aspect NOT kept) before hashing;
  pdqhash (and therefore this script's reference) does NOT do that.
* Quality.  pdqImageDomainQualityMetric on the 64x64 buffer: sum over vertical and
  horizontal neighbour pairs of abs(int((u - v) * 100 / 255)) (truncation toward zero,
  float math), then int(sum / 90), capped at 100.
==================================================================================
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter, ImageOps

try:
    import pdqhash
except ImportError:  # pragma: no cover - message for humans
    sys.exit("pdqhash is not installed: pip install pdqhash==0.2.8 pillow numpy scikit-image")

Image.MAX_IMAGE_PIXELS = None  # the corpus has 5120x2880 sources; they are trusted files

SCRIPT_DIR = Path(__file__).resolve().parent
DEFAULT_FIXTURE_DIR = SCRIPT_DIR.parent / "tests" / "fixtures"

DIHEDRAL_NAMES = [
    "original", "rotate90", "rotate180", "rotate270",
    "flipX", "flipY", "flipPlus1", "flipMinus1",
]

# C++ Hash256::format() of the astronaut photo (skimage.data.astronaut(), 512x512 RGB uint8)
# from the harness compiled from the pdqhash 0.2.8 sdist's C++ (see module docstring).
KNOWN_ASTRONAUT_HEX = "2d6b1af3a956c529e79ca3d2526fa834d4196c81cedd04de0a26b855fc99b724"

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff"}
EXIF_ORIENTATION_TAG = 0x0112


# ----------------------------------------------------------------------------------------
# Hash conventions
# ----------------------------------------------------------------------------------------

def vector_to_hex(vec) -> str:
    """pdqhash bit vector (MSB-first: vec[m] is hash bit 255-m) -> ThreatExchange hex."""
    bits = [int(b) for b in vec]
    if len(bits) != 256 or any(b not in (0, 1) for b in bits):
        raise ValueError("expected 256 bits")
    return "%064x" % int("".join(map(str, bits)), 2)


def hex_to_int(hex_str: str) -> int:
    s = hex_str.strip().lower()
    if len(s) != 64 or any(c not in "0123456789abcdef" for c in s):
        raise ValueError(f"not a 64-digit hex PDQ hash: {hex_str!r}")
    return int(s, 16)


def hash_bit(hex_str: str, k: int) -> int:
    """Hash bit k (k = i*16 + j for DCT row i, column j) of a ThreatExchange hex string."""
    return (hex_to_int(hex_str) >> k) & 1


def bits_to_hex(bits_by_k) -> str:
    """Hash bits indexed by k (bits_by_k[k] = bit k = dct[k//16][k%16] > median) -> hex."""
    value = 0
    for k, b in enumerate(bits_by_k):
        if b:
            value |= 1 << k
    return "%064x" % value


def hex_to_bits(hex_str: str) -> list[int]:
    """Inverse of bits_to_hex: list of 256 bits indexed by k."""
    v = hex_to_int(hex_str)
    return [(v >> k) & 1 for k in range(256)]


def hamming(a: str, b: str) -> int:
    return bin(hex_to_int(a) ^ hex_to_int(b)).count("1")


def torben_lower_median(values) -> float:
    """What torben() returns for n=256 distinct values: the 128th smallest (lower median)."""
    s = sorted(float(v) for v in values)
    return s[(len(s) + 1) // 2 - 1]


def dct16_from_pdqhash(rgb: np.ndarray) -> tuple[np.ndarray, int]:
    """16x16 DCT output (dct[i][j], i = vertical frequency) and quality, via compute_float."""
    vec, quality = pdqhash.compute_float(rgb)
    flat_by_k = np.asarray(vec, dtype=np.float64)[::-1]  # undo the [::-1] in bindings.pyx
    return flat_by_k.reshape(16, 16), int(quality)


# ----------------------------------------------------------------------------------------
# Decoding and reference hashing
# ----------------------------------------------------------------------------------------

def exif_orientation(img: Image.Image) -> int:
    try:
        return int(img.getexif().get(EXIF_ORIENTATION_TAG, 1) or 1)
    except Exception:
        return 1


def load_rgb(path) -> tuple[np.ndarray, dict]:
    """Decode exactly as the reference does: exif_transpose, then convert('RGB') (alpha dropped)."""
    with Image.open(path) as img:
        info = {"format": img.format, "mode": img.mode, "exif_orientation": exif_orientation(img)}
        upright = ImageOps.exif_transpose(img)
        rgb = np.ascontiguousarray(np.asarray(upright.convert("RGB"), dtype=np.uint8))
    info["width"], info["height"] = rgb.shape[1], rgb.shape[0]
    return rgb, info


def reference_for_array(rgb: np.ndarray) -> dict:
    vec, quality = pdqhash.compute(rgb)
    vecs, dquality = pdqhash.compute_dihedral(rgb)
    out = {
        "pdq": vector_to_hex(vec),
        "quality": int(quality),
        "dihedral": [vector_to_hex(v) for v in vecs],
        "dihedral_names": list(DIHEDRAL_NAMES),
    }
    if out["dihedral"][0] != out["pdq"] or int(dquality) != out["quality"]:
        raise RuntimeError("pdqhash compute/compute_dihedral disagree on the original")
    return out


def reference_for_file(path) -> dict:
    rgb, info = load_rgb(path)
    ref = reference_for_array(rgb)
    ref.update(width=info["width"], height=info["height"], source_info=info)
    return ref


# ----------------------------------------------------------------------------------------
# EXIF orientation helpers
# ----------------------------------------------------------------------------------------

# Pillow's exif_transpose applies, for orientation o, this transpose to the stored pixels:
_EXIF_APPLY = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
# ... so the pixels to STORE for an upright image are the inverse transform of it.
_EXIF_STORE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_90,   # stored = upright turned 90 deg CCW; viewer turns it CW
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_270,
}


def stored_pixels_for_orientation(upright: Image.Image, orientation: int) -> Image.Image:
    if orientation == 1:
        return upright.copy()
    return upright.transpose(_EXIF_STORE[orientation])


def exif_bytes(orientation: int) -> bytes:
    exif = Image.Exif()
    exif[EXIF_ORIENTATION_TAG] = orientation
    return exif.tobytes()


def resize_long_side(img: Image.Image, long_side: int) -> Image.Image:
    w, h = img.size
    if max(w, h) <= long_side:
        return img.copy()
    scale = long_side / max(w, h)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return img.resize(size, Image.Resampling.LANCZOS)


def cover_crop(img: Image.Image, tw: int, th: int) -> Image.Image:
    """Scale (down only) so the image covers tw x th, then take the centred tw x th crop."""
    w, h = img.size
    scale = max(tw / w, th / h)
    if scale < 1:
        img = img.resize((max(tw, round(w * scale)), max(th, round(h * scale))),
                         Image.Resampling.LANCZOS)
        w, h = img.size
    left, top = (w - tw) // 2, (h - th) // 2
    return img.crop((left, top, left + tw, top + th))


# ----------------------------------------------------------------------------------------
# fixtures
# ----------------------------------------------------------------------------------------

# All sources are photographs bundled in the scikit-image wheel (no network download); the
# licence text is quoted from the docstrings of skimage.data.<name>().
SKIMAGE_SOURCES = {
    "astronaut": ("Eileen Collins, NASA (NASA Great Images database)",
                  "Public domain (\"No known copyright restrictions, released into the public domain.\")"),
    "coffee": ("Rachel Michetti, courtesy of Pikolo Espresso Bar",
               "CC0 (\"No copyright restrictions. CC0 by the photographer\")"),
    "rocket": ("SpaceX, launch of DSCOVR on Falcon 9",
               "Public domain (SpaceX released its photos into the public domain)"),
    "hubble_deep_field": ("NASA / Hubble eXtreme Deep Field (HubbleSite)",
                          "Public domain (NASA imagery \"may be freely used in the public domain\")"),
    "chelsea": ("Stefan van der Walt (Chelsea the cat)",
                "CC0 (\"No copyright restrictions. CC0 by the photographer\")"),
    "camera": ("Lav Varshney",
               "CC0 (\"No copyright restrictions. CC0 by the photographer\")"),
    "retina": ("Mikael Haggstrom (Wikimedia Commons, Fundus photograph of normal left eye)",
               "CC0 1.0 Universal Public Domain Dedication"),
}

FIXTURES = [
    {"file": "astronaut.jpg", "source": "astronaut",
     "what": "RGB baseline JPEG, quality 90, 4:2:0, 512x512 (unchanged size)"},
    {"file": "coffee.jpg", "source": "coffee",
     "what": "RGB baseline JPEG, quality 90, 4:2:0, resized 600x400 -> 512x341"},
    {"file": "rocket_exif6.jpg", "source": "rocket",
     "what": "RGB JPEG, quality 90, EXIF Orientation=6: stored pixels 342x512 (photo turned "
             "90 deg counter-clockwise); after applying EXIF (rotate 90 deg clockwise) it is "
             "the upright 512x342 photo (resized from 640x427)"},
    {"file": "hubble_deep_field_blur.jpg", "source": "hubble_deep_field",
     "what": "RGB progressive JPEG, quality 90, 4:4:4, resized 1000x872 -> 512x446 and Gaussian "
             "blur radius 8 so that PDQ quality is ~50 (below the 80 threshold)"},
    {"file": "chelsea.png", "source": "chelsea",
     "what": "RGB 8-bit PNG, resized 451x300 -> 400x266"},
    {"file": "retina_rgba.png", "source": "retina",
     "what": "RGBA 8-bit PNG, resized 1411x1411 -> 400x400; alpha is a radial fade added here "
             "(opaque centre, fully transparent corners) with the original colours kept under "
             "it. The reference DROPS alpha (convert('RGB')); 'pdq_alpha_over_white' in "
             "reference.json is the hash after compositing onto white instead"},
    {"file": "camera_gray.png", "source": "camera",
     "what": "8-bit greyscale (L) PNG, resized 512x512 -> 400x400"},
    {"file": "coffee_tiny.png", "source": "coffee",
     "what": "RGB PNG 60x40 (both sides < 64: PDQ's decimation upsamples), resized from 600x400"},
]


def _skimage_image(name: str) -> Image.Image:
    import skimage.data  # noqa: only needed for --rebuild-images

    arr = getattr(skimage.data, name)()
    return Image.fromarray(arr)


def build_fixture_images(fixture_dir: Path) -> None:
    fixture_dir.mkdir(parents=True, exist_ok=True)
    lanczos = Image.Resampling.LANCZOS

    def out(name):
        return fixture_dir / name

    img = _skimage_image("astronaut").convert("RGB")
    img.save(out("astronaut.jpg"), "JPEG", quality=90)

    img = _skimage_image("coffee").convert("RGB").resize((512, 341), lanczos)
    img.save(out("coffee.jpg"), "JPEG", quality=90)

    upright = _skimage_image("rocket").convert("RGB").resize((512, 342), lanczos)
    stored = stored_pixels_for_orientation(upright, 6)
    assert stored.size == (342, 512)
    stored.save(out("rocket_exif6.jpg"), "JPEG", quality=90, exif=exif_bytes(6))

    img = _skimage_image("hubble_deep_field").convert("RGB").resize((512, 446), lanczos)
    img = img.filter(ImageFilter.GaussianBlur(8))
    img.save(out("hubble_deep_field_blur.jpg"), "JPEG", quality=90, progressive=True,
             subsampling=0)

    img = _skimage_image("chelsea").convert("RGB").resize((400, 266), lanczos)
    img.save(out("chelsea.png"), "PNG")

    img = _skimage_image("retina").convert("RGB").resize((400, 400), lanczos)
    yy, xx = np.mgrid[0:400, 0:400].astype(np.float64)
    r = np.hypot((xx - 199.5) / 200.0, (yy - 199.5) / 200.0)  # 0 centre, ~1.41 corners
    alpha = np.clip((1.0 - r) / 0.45, 0.0, 1.0)  # opaque for r <= 0.55, 0 for r >= 1
    alpha8 = np.round(alpha * 255.0).astype(np.uint8)
    rgba = np.dstack([np.asarray(img, dtype=np.uint8), alpha8])
    Image.fromarray(rgba, "RGBA").save(out("retina_rgba.png"), "PNG")

    img = _skimage_image("camera").convert("L").resize((400, 400), lanczos)
    img.save(out("camera_gray.png"), "PNG")

    img = _skimage_image("coffee").convert("RGB").resize((60, 40), lanczos)
    img.save(out("coffee_tiny.png"), "PNG")


def fixture_reference(fixture_dir: Path) -> list[dict]:
    entries = []
    for spec in FIXTURES:
        path = fixture_dir / spec["file"]
        if not path.exists():
            raise FileNotFoundError(f"{path} is missing (run with --rebuild-images)")
        ref = reference_for_file(path)
        entry = {
            "file": spec["file"],
            "width": ref["width"],
            "height": ref["height"],
            "pdq": ref["pdq"],
            "quality": ref["quality"],
            "dihedral": ref["dihedral"],
            "dihedral_names": ref["dihedral_names"],
            "format": ref["source_info"]["format"],
            "mode": ref["source_info"]["mode"],
            "exif_orientation": ref["source_info"]["exif_orientation"],
        }
        if ref["source_info"]["mode"] in ("RGBA", "LA", "PA"):
            with Image.open(path) as img:
                up = ImageOps.exif_transpose(img).convert("RGBA")
                white = Image.new("RGBA", up.size, (255, 255, 255, 255))
                comp = np.ascontiguousarray(
                    np.asarray(Image.alpha_composite(white, up).convert("RGB"), dtype=np.uint8))
            vec, _ = pdqhash.compute(comp)
            entry["pdq_alpha_over_white"] = vector_to_hex(vec)
        entries.append(entry)
    return entries


def fixture_license_md() -> str:
    lines = [
        "# Test fixture images: sources and licences",
        "",
        "All images are derived from photographs bundled in the scikit-image Python package",
        "(`skimage/data/`, installed from PyPI; BSD-3-Clause package, images under the",
        "licences below as stated in the docstrings of `skimage.data.<name>()`).",
        "They were resized / re-encoded (and where noted modified) by",
        "`python3 tools/pdq_reference.py fixtures --rebuild-images`.",
        "`reference.json` holds PDQ hashes computed by the PyPI package `pdqhash` (Meta's",
        "C++ PDQ, BSD licence) on Pillow's decode of each file (EXIF orientation applied,",
        "converted to RGB with alpha dropped).",
        "",
        "| File | Source (`skimage.data`) | Author / origin | Licence | What it is |",
        "| --- | --- | --- | --- | --- |",
    ]
    for spec in FIXTURES:
        author, licence = SKIMAGE_SOURCES[spec["source"]]
        lines.append(f"| `{spec['file']}` | `{spec['source']}` | {author} | {licence} | {spec['what']} |")
    lines += ["", "`reference.json` is generated data (no creative content); same terms as the repository.", ""]
    return "\n".join(lines)


def cmd_fixtures(args) -> int:
    fixture_dir = Path(args.dir)
    if args.rebuild_images and args.check:
        print("--check and --rebuild-images are exclusive", file=sys.stderr)
        return 2
    if args.rebuild_images:
        build_fixture_images(fixture_dir)
    entries = fixture_reference(fixture_dir)
    text = json.dumps(entries, indent=2) + "\n"
    ref_path = fixture_dir / "reference.json"
    if args.check:
        old = ref_path.read_text() if ref_path.exists() else ""
        if old == text:
            print(f"{ref_path}: up to date ({len(entries)} fixtures)")
            return 0
        print(f"{ref_path}: DIFFERS from a fresh computation", file=sys.stderr)
        try:
            old_by_file = {e["file"]: e for e in json.loads(old)}
        except Exception:
            old_by_file = {}
        for e in entries:
            o = old_by_file.get(e["file"])
            if o != e:
                print(f"  {e['file']}: stored={o and o.get('pdq')} q={o and o.get('quality')}"
                      f" fresh={e['pdq']} q={e['quality']}", file=sys.stderr)
        return 1
    ref_path.write_text(text)
    (fixture_dir / "LICENSE.md").write_text(fixture_license_md())
    total = 0
    print(f"{'file':32} {'W x H':>9}  {'bytes':>7}  {'mode':5} q    pdq")
    for e in entries:
        size = (fixture_dir / e["file"]).stat().st_size
        total += size
        print(f"{e['file']:32} {e['width']:4}x{e['height']:<4}  {size:7}  {e['mode']:5} "
              f"{e['quality']:3}  {e['pdq']}")
    print(f"wrote {ref_path} ({len(entries)} fixtures, {total} bytes of images)")
    return 0


# ----------------------------------------------------------------------------------------
# compare
# ----------------------------------------------------------------------------------------

def collect_images(paths) -> list[Path]:
    files: list[Path] = []
    for p in paths:
        p = Path(p)
        if p.is_dir():
            files.extend(sorted(f for f in p.rglob("*")
                                if f.is_file() and f.suffix.lower() in IMAGE_EXTENSIONS))
        elif p.exists():
            files.append(p)
        else:
            print(f"warning: {p} does not exist, skipped", file=sys.stderr)
    seen, unique = set(), []
    for f in files:
        key = str(f.resolve())
        if key not in seen:
            seen.add(key)
            unique.append(f)
    return unique


def run_lookalike(binary: str, path: Path, timeout: float) -> tuple[dict | None, str | None]:
    cmd = [binary, "hash", "--json", str(path)]
    try:
        proc = subprocess.run(cmd, capture_output=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return None, f"timeout after {timeout:g}s"
    except OSError as e:
        return None, f"cannot run {binary}: {e}"
    stderr = proc.stderr.decode("utf-8", "replace").strip()
    if proc.returncode != 0:
        tail = stderr.splitlines()[-1] if stderr else ""
        return None, f"exit {proc.returncode}: {tail}"[:300]
    objs = []
    for line in proc.stdout.decode("utf-8", "replace").splitlines():
        line = line.strip()
        if not line.startswith("{"):
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(obj, dict) and "pdq" in obj:
            objs.append(obj)
    if not objs:
        return None, "no JSON object with a 'pdq' field on stdout"
    chosen = next((o for o in objs if o.get("path") == str(path)), objs[0])
    try:
        chosen["pdq"] = "%064x" % hex_to_int(str(chosen["pdq"]))
    except ValueError as e:
        return None, str(e)
    return chosen, None


def nearest_rank(sorted_vals, pct: float):
    if not sorted_vals:
        return None
    rank = max(1, math.ceil(pct / 100.0 * len(sorted_vals)))
    return sorted_vals[rank - 1]


def summarize(distances) -> dict:
    d = sorted(distances)
    if not d:
        return {"count": 0, "mean": None, "median": None, "p95": None, "max": None}
    return {"count": len(d), "mean": round(statistics.fmean(d), 3),
            "median": statistics.median(d), "p95": nearest_rank(d, 95), "max": d[-1]}


def fmt_summary(label: str, s: dict) -> str:
    if not s["count"]:
        return f"{label}: count=0"
    return (f"{label}: count={s['count']} mean={s['mean']:.2f} median={s['median']:g} "
            f"p95={s['p95']} max={s['max']}")


def cmd_compare(args) -> int:
    files = collect_images(args.paths)
    if not files:
        print("no image files found", file=sys.stderr)
        return 2
    results, errors = [], 0
    name_w = min(64, max(12, max(len(str(f)) for f in files)))

    def short(f) -> str:
        s = str(f)
        return s if len(s) <= name_w else "..." + s[-(name_w - 3):]
    print(f"{'file':{name_w}}  {'size':>11}  {'refQ':>4}  {'ourQ':>4}  {'dist':>4}  note")
    for f in files:
        rec = {"file": str(f)}
        try:
            ref = reference_for_file(f)
        except Exception as e:  # Pillow/pdqhash failure: nothing to compare against
            rec["error"] = f"reference failed: {e}"
            results.append(rec)
            errors += 1
            print(f"{short(f):{name_w}}  {'':>11}  {'':>4}  {'':>4}  {'':>4}  SKIP {rec['error']}")
            continue
        rec["ref"] = {"pdq": ref["pdq"], "quality": ref["quality"],
                      "width": ref["width"], "height": ref["height"]}
        ours, err = run_lookalike(args.lookalike, f, args.timeout)
        size = f"{ref['width']}x{ref['height']}"
        if err:
            rec["error"] = f"lookalike failed: {err}"
            results.append(rec)
            errors += 1
            print(f"{short(f):{name_w}}  {size:>11}  {ref['quality']:4}  {'':>4}  {'':>4}  SKIP {rec['error']}")
            continue
        rec["ours"] = ours
        rec["distance"] = hamming(ref["pdq"], ours["pdq"])
        notes = []
        if (ours.get("width"), ours.get("height")) != (ref["width"], ref["height"]):
            notes.append(f"DIMS ours={ours.get('width')}x{ours.get('height')}")
            rec["dims_mismatch"] = True
        oq = ours.get("quality")
        results.append(rec)
        oq_s = f"{oq:4}" if isinstance(oq, int) else f"{str(oq):>4}"
        print(f"{short(f):{name_w}}  {size:>11}  {ref['quality']:4}  {oq_s}  "
              f"{rec['distance']:4}  {' '.join(notes)}")

    ok = [r for r in results if "distance" in r]
    hq = [r for r in ok if r["ref"]["quality"] >= args.min_quality]
    s_all = summarize([r["distance"] for r in ok])
    s_hq = summarize([r["distance"] for r in hq])
    qdiff = [abs(r["ours"]["quality"] - r["ref"]["quality"]) for r in ok
             if isinstance(r["ours"].get("quality"), int)]
    dims_bad = sum(1 for r in ok if r.get("dims_mismatch"))
    print()
    print(f"images: {len(files)} total, {len(ok)} compared, {errors} skipped (errors)")
    print(fmt_summary("all", s_all))
    print(fmt_summary(f"ref quality >= {args.min_quality}", s_hq))
    if qdiff:
        print(f"quality |ours-ref|: mean={statistics.fmean(qdiff):.2f} max={max(qdiff)}; "
              f"dimension mismatches: {dims_bad}")
    failed = []
    if not s_hq["count"]:
        failed.append(f"no image with ref quality >= {args.min_quality} was compared")
    else:
        if s_hq["mean"] > args.max_mean:
            failed.append(f"mean {s_hq['mean']:.2f} > {args.max_mean:g}")
        if s_hq["p95"] > args.max_p95:
            failed.append(f"p95 {s_hq['p95']} > {args.max_p95:g}")
    if args.fail_on_errors and errors:
        failed.append(f"{errors} image(s) could not be compared")
    verdict = "FAIL: " + "; ".join(failed) if failed else "PASS"
    print(f"gate (ref quality >= {args.min_quality}: mean <= {args.max_mean:g}, "
          f"p95 <= {args.max_p95:g}): {verdict}")
    if args.json_out:
        doc = {
            "lookalike": args.lookalike,
            "reference": f"pdqhash {getattr(pdqhash, '__version__', '?')} via Pillow "
                         "exif_transpose + convert('RGB')",
            "thresholds": {"min_quality": args.min_quality, "max_mean": args.max_mean,
                           "max_p95": args.max_p95, "p95_method": "nearest-rank"},
            "summary": {"all": s_all, "quality_gated": s_hq, "errors": errors,
                        "dims_mismatches": dims_bad},
            "pass": not failed,
            "failures": failed,
            "results": results,
        }
        Path(args.json_out).write_text(json.dumps(doc, indent=2) + "\n")
        print(f"wrote {args.json_out}")
    if not ok:
        return 2
    return 1 if failed else 0


# ----------------------------------------------------------------------------------------
# corpus
# ----------------------------------------------------------------------------------------

# Photographic wallpapers only (abstract/rendered art in the same packages is excluded).
# Each selector: (package, glob relative to the extracted package root).
CORPUS_SELECTORS = [
    ("lomiri-wallpapers-16.04", "usr/share/backgrounds/*_by_*.jpg"),
    ("lomiri-wallpapers-20.04", "usr/share/backgrounds/Kleiber_by_Lukas_Baubkus.jpg"),
    ("mate-backgrounds", "usr/share/backgrounds/mate/nature/*.jpg"),
] + [
    ("plasma-workspace-wallpapers", f"usr/share/wallpapers/{name}/contents/images/*")
    for name in ["BytheWater", "ColdRipple", "ColorfulCups", "DarkestHour", "EveningGlow",
                 "FallenLeaf", "Grey", "Kite", "OneStandsOut", "Path", "summer_1am"]
]
# lomiri-wallpapers-16.04 also contains one abstract render; it is excluded by name.
CORPUS_EXCLUDE = {"umang_by_Abhishek_Mudgal.jpg"}
EXIF_CYCLE = [6, 8, 3, 5, 7, 2, 4]


def _run(cmd, cwd=None):
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stderr.strip()[-500:]}")
    return proc.stdout


def _corpus_sources(root: Path, packages: list[str]) -> list[tuple[str, Path]]:
    chosen: list[tuple[str, Path]] = []
    seen_hash = set()
    for pkg, pattern in CORPUS_SELECTORS:
        if pkg not in packages:
            continue
        base = root / pkg
        matches = sorted(p for p in base.glob(pattern)
                         if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
                         and p.name not in CORPUS_EXCLUDE)
        if "/contents/images/" in pattern:
            # KDE wallpaper package: one picture in several sizes (often identical files):
            # keep the largest.
            best = None
            for p in matches:
                with Image.open(p) as im:
                    area = im.size[0] * im.size[1]
                if best is None or area > best[0]:
                    best = (area, p)
            matches = [best[1]] if best else []
        for p in matches:
            digest = hashlib.sha256(p.read_bytes()).hexdigest()
            if digest in seen_hash:
                continue
            seen_hash.add(digest)
            chosen.append((pkg, p))
    return chosen


def _save(img: Image.Image, path: Path, fmt: str, **kw) -> None:
    if fmt == "JPEG" and img.mode not in ("RGB", "L"):
        img = img.convert("RGB")
    if fmt == "WEBP" and img.mode not in ("RGB", "RGBA"):
        img = img.convert("RGB")
    img.save(path, fmt, **kw)


def cmd_corpus(args) -> int:
    outdir = Path(args.outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    packages = args.packages or sorted({p for p, _ in CORPUS_SELECTORS})
    for tool in ("apt-get", "dpkg-deb"):
        if not shutil.which(tool):
            print(f"{tool} not found: the corpus needs a Debian/Ubuntu machine", file=sys.stderr)
            return 2
    work = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="pdq-corpus-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        debs = work / "debs"
        debs.mkdir(exist_ok=True)
        pkg_info = {}
        for pkg in packages:
            existing = sorted(debs.glob(f"{pkg}_*.deb"))
            if not existing:
                print(f"apt-get download {pkg} ...", flush=True)
                try:
                    _run(["apt-get", "download", pkg], cwd=debs)
                except RuntimeError as e:
                    print(f"{e}\n(hint: run `apt-get update` first)", file=sys.stderr)
                    return 2
                existing = sorted(debs.glob(f"{pkg}_*.deb"))
            deb = existing[-1]
            version = _run(["dpkg-deb", "-f", str(deb), "Version"]).strip()
            dest = work / "x" / pkg
            if not dest.exists():
                dest.parent.mkdir(parents=True, exist_ok=True)
                _run(["dpkg-deb", "-x", str(deb), str(dest)])
            pkg_info[pkg] = {"version": version, "deb": deb.name,
                             "copyright": f"usr/share/doc/{pkg}/copyright"}
        sources = _corpus_sources(work / "x", packages)
        print(f"{len(sources)} photographic source images")
        manifest = []
        for i, (pkg, src) in enumerate(sources):
            with Image.open(src) as im0:
                im = ImageOps.exif_transpose(im0)
                im = im.convert("L") if im.mode in ("L", "LA", "I;16") else im.convert("RGB")
            slug = src.stem if pkg != "plasma-workspace-wallpapers" else src.parts[-4]
            slug = "".join(c if c.isalnum() else "_" for c in slug)[:40]
            variants = []
            kind = i % 3
            if kind == 0:
                variants.append(("jpg800", resize_long_side(im, 800), "JPEG", ".jpg",
                                 dict(quality=90), 1))
            elif kind == 1:
                variants.append(("jpg1500", resize_long_side(im, 1500), "JPEG", ".jpg",
                                 dict(quality=85), 1))
            else:
                w, h = im.size
                tw, th = (3000, 2000) if w >= h else (2000, 3000)
                if w >= tw and h >= th:
                    variants.append(("crop3000x2000", cover_crop(im, tw, th), "JPEG", ".jpg",
                                     dict(quality=92), 1))
                else:  # too small for a 3000x2000 crop without upscaling
                    variants.append(("jpg1500", resize_long_side(im, 1500), "JPEG", ".jpg",
                                     dict(quality=85), 1))
            if i % 2 == 0:
                extra = (i // 2) % 4
                if extra == 0:
                    variants.append(("png1024", resize_long_side(im, 1024), "PNG", ".png", {}, 1))
                elif extra == 1:
                    variants.append(("webp1200", resize_long_side(im, 1200), "WEBP", ".webp",
                                     dict(quality=85, method=4), 1))
                elif extra == 2:
                    o = EXIF_CYCLE[(i // 8) % len(EXIF_CYCLE)]
                    variants.append((f"exif{o}_1000", resize_long_side(im, 1000), "JPEG", ".jpg",
                                     dict(quality=88), o))
                else:
                    variants.append(("prog1200", resize_long_side(im, 1200), "JPEG", ".jpg",
                                     dict(quality=75, progressive=True), 1))
            for tag, upright, fmt, ext, kw, orient in variants:
                name = f"{i:02d}_{slug}_{tag}{ext}"
                stored = stored_pixels_for_orientation(upright, orient)
                if orient != 1:
                    kw = dict(kw, exif=exif_bytes(orient))
                _save(stored, outdir / name, fmt, **kw)
                manifest.append({
                    "file": name, "package": pkg, "package_version": pkg_info[pkg]["version"],
                    "source": str(src.relative_to(work / "x" / pkg)),
                    "variant": tag, "format": fmt, "mode": stored.mode,
                    "upright_size": list(upright.size), "exif_orientation": orient,
                    "bytes": (outdir / name).stat().st_size,
                })
                print(f"  {name:55} {upright.size[0]}x{upright.size[1]}")
        doc = {"packages": pkg_info, "licences": "see each package's copyright file "
               "(lomiri: CC-BY/CC-BY-SA/CC0 per file; mate-backgrounds & "
               "plasma-workspace-wallpapers: GPL-2+)", "images": manifest}
        (outdir / "manifest.json").write_text(json.dumps(doc, indent=2) + "\n")
        total = sum(m["bytes"] for m in manifest)
        print(f"\nwrote {len(manifest)} images ({total / 1e6:.1f} MB) + manifest.json to {outdir}")
        print("Debian packages used:")
        for pkg, info in pkg_info.items():
            n = sum(1 for m in manifest if m["package"] == pkg)
            print(f"  {pkg} {info['version']}  ({n} images)")
        return 0
    finally:
        if not args.keep_workdir and not args.workdir:
            shutil.rmtree(work, ignore_errors=True)


# ----------------------------------------------------------------------------------------
# explain / selftest
# ----------------------------------------------------------------------------------------

def cmd_explain(args) -> int:
    rgb, info = load_rgb(args.file)
    ref = reference_for_array(rgb)
    dct, q = dct16_from_pdqhash(rgb)
    med = torben_lower_median(dct.flatten())
    print(f"file: {args.file}  format={info['format']} mode={info['mode']} "
          f"exif_orientation={info['exif_orientation']}  decoded (upright) {info['width']}x{info['height']}")
    print(f"pdq: {ref['pdq']}  quality: {ref['quality']}")
    for name, h in zip(DIHEDRAL_NAMES, ref["dihedral"]):
        print(f"  {name:11} {h}")
    margins = np.abs(dct.flatten() - med)
    scale = float(np.std(dct))
    print(f"DCT 16x16 (row i = vertical freq, col j = horizontal; bit k=i*16+j), median={med:.4f}:")
    for i in range(16):
        print("  " + " ".join(f"{v:8.1f}" for v in dct[i]))
    for frac in (0.001, 0.01, 0.05):
        n = int((margins < frac * scale).sum()) - 1  # minus the median element itself
        print(f"other coefficients within {frac:g}*std of the median (fragile bits): {n}")
    print("(the median element itself is never set: bits use a strict '>'; exactly 128 bits "
          "are set when the 256 values are distinct)")
    order = np.argsort(margins)[:8]
    print("closest to median (k, i, j, value):",
          ", ".join(f"({k},{k // 16},{k % 16},{dct.flatten()[k]:.3f})" for k in order))
    return 0


def cmd_selftest(args) -> int:
    import skimage.data

    ok = True

    def check(cond, msg):
        nonlocal ok
        print(("ok   " if cond else "FAIL ") + msg)
        ok = ok and bool(cond)

    astro = np.ascontiguousarray(skimage.data.astronaut())
    h = vector_to_hex(pdqhash.compute(astro)[0])
    check(h == KNOWN_ASTRONAUT_HEX, f"astronaut hex equals C++ Hash256::format() ({h})")
    check(bits_to_hex(hex_to_bits(h)) == h, "hex_to_bits/bits_to_hex round trip")

    for name in ("astronaut", "coffee", "chelsea", "rocket"):
        a = np.ascontiguousarray(getattr(skimage.data, name)())
        dct, _ = dct16_from_pdqhash(a)
        med = torben_lower_median(dct.flatten())
        bits = [int(dct[k // 16][k % 16] > med) for k in range(256)]
        check(bits_to_hex(bits) == vector_to_hex(pdqhash.compute(a)[0]),
              f"{name}: bit k = dct[k//16][k%16] > median matches compute()")

    transforms = {
        "original": lambda a: a,
        "rotate90": lambda a: np.rot90(a, 1),           # counter-clockwise
        "rotate180": lambda a: np.rot90(a, 2),
        "rotate270": lambda a: np.rot90(a, 3),          # clockwise
        "flipX": lambda a: a[::-1],                     # upside-down
        "flipY": lambda a: a[:, ::-1],                  # mirror
        "flipPlus1": lambda a: a.transpose(1, 0, 2),    # main diagonal
        "flipMinus1": lambda a: np.rot90(a, 2).transpose(1, 0, 2),  # anti-diagonal
    }
    for name in ("astronaut", "coffee", "rocket"):
        a = np.ascontiguousarray(getattr(skimage.data, name)())
        dih = [vector_to_hex(v) for v in pdqhash.compute_dihedral(a)[0]]
        direct = {k: vector_to_hex(pdqhash.compute(np.ascontiguousarray(f(a)))[0])
                  for k, f in transforms.items()}
        for idx, dname in enumerate(DIHEDRAL_NAMES):
            dists = {k: hamming(dih[idx], v) for k, v in direct.items()}
            best = min(dists, key=dists.get)
            check(best == dname and dists[best] <= 32,
                  f"{name}: dihedral[{idx}] ~ hash of {dname}-transformed pixels "
                  f"(distance {dists[dname]}, next best {sorted(dists.values())[1]})")

    base = Image.fromarray(np.ascontiguousarray(skimage.data.chelsea())).convert("RGB")
    with tempfile.TemporaryDirectory() as td:
        for o in range(1, 9):
            p = Path(td) / f"o{o}.png"
            stored_pixels_for_orientation(base, o).save(p, "PNG", exif=exif_bytes(o))
            rgb, info = load_rgb(p)
            check(info["exif_orientation"] == o and np.array_equal(rgb, np.asarray(base)),
                  f"EXIF orientation {o}: stored pixels + exif_transpose give the upright image")
    print("selftest: " + ("PASS" if ok else "FAIL"))
    return 0 if ok else 1


# ----------------------------------------------------------------------------------------

def main(argv=None) -> int:
    ap = argparse.ArgumentParser(
        description="PDQ reference hashes (pdqhash = Meta's C++ PDQ) for lookalike: fixtures, "
                    "agreement check against the lookalike binary, and a photo corpus.",
        epilog="Hex convention: ThreatExchange Hash256::format(), i.e. the 256-bit big-endian "
               "integer whose bit k (LSB=0) is 1 iff DCT[k//16][k%16] > median. "
               "Decode: Pillow, exif_transpose, convert('RGB') (alpha dropped).",
    )
    sub = ap.add_subparsers(dest="cmd", required=True)

    p = sub.add_parser("fixtures", help="regenerate tests/fixtures/reference.json (+ LICENSE.md)",
                       description="Recompute reference.json (deterministic: it only depends on "
                                   "the image files and pdqhash/Pillow) and LICENSE.md.")
    p.add_argument("--dir", default=str(DEFAULT_FIXTURE_DIR),
                   help="fixture directory (default: tests/fixtures next to this tools/ dir)")
    p.add_argument("--rebuild-images", action="store_true",
                   help="also re-create the fixture images from scikit-image's bundled photos "
                        "(bytes depend on the Pillow/libjpeg/zlib versions)")
    p.add_argument("--check", action="store_true",
                   help="do not write anything; exit 1 if reference.json is out of date")
    p.set_defaults(func=cmd_fixtures)

    p = sub.add_parser("compare", help="Hamming distance between lookalike and pdqhash",
                       description="For each image run `LOOKALIKE hash --json FILE`, compute "
                                   "pdqhash's reference on the same file, print a table and "
                                   "summary; exit 1 if, over images with reference quality >= "
                                   "--min-quality, mean > --max-mean or p95 > --max-p95 "
                                   "(p95 = nearest rank). Exit 2 if nothing could be compared.")
    p.add_argument("--lookalike", required=True, help="path to the lookalike binary")
    p.add_argument("paths", nargs="+", help="image files and/or directories (searched recursively)")
    p.add_argument("--json-out", help="write all results and the summary to this JSON file")
    p.add_argument("--min-quality", type=int, default=80, help="quality gate (default 80)")
    p.add_argument("--max-mean", type=float, default=3.0, help="max mean distance (default 3)")
    p.add_argument("--max-p95", type=float, default=10.0, help="max p95 distance (default 10)")
    p.add_argument("--timeout", type=float, default=120.0, help="seconds per lookalike call")
    p.add_argument("--fail-on-errors", action="store_true",
                   help="also fail if lookalike (or the reference) could not hash some file")
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser("corpus", help="build a photo corpus from Debian wallpaper packages",
                       description="apt-get download (no install) + dpkg-deb -x of "
                                   "photographic wallpaper packages, re-encoded to JPEG "
                                   "(~800 px, ~1500 px, 3000x2000 crops, EXIF-rotated, "
                                   "progressive), PNG and WebP. Deterministic for given package "
                                   "versions. Needs `apt-get update` to have been run.")
    p.add_argument("outdir", help="output directory (keep it out of git)")
    p.add_argument("--packages", nargs="*",
                   help="restrict to these packages (default: all of "
                        + ", ".join(sorted({p for p, _ in CORPUS_SELECTORS})) + ")")
    p.add_argument("--workdir", help="where to download/extract .debs (default: a temp dir, "
                                     "deleted afterwards; a given dir is kept and reused)")
    p.add_argument("--keep-workdir", action="store_true", help="keep the temp dir")
    p.set_defaults(func=cmd_corpus)

    p = sub.add_parser("explain", help="print pdqhash's hash, quality, dihedrals and DCT of an image")
    p.add_argument("file")
    p.set_defaults(func=cmd_explain)

    p = sub.add_parser("selftest", help="re-verify the hex/dihedral/EXIF conventions")
    p.set_defaults(func=cmd_selftest)

    args = ap.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
