# pip install pillow numpy resvg-py==0.5.0   (or: pip install -r tools/eval/requirements.txt)
"""Product-style shots: a brand logo (npm simple-icons, rendered with resvg) printed on a
product (t-shirt, mug, box, tote bag, bottle, or the logo alone as a print/sticker) on a
white background, as marketplace listings show them.

A *layout* (template, canvas, product and ink colours, sizes, offsets, shadow) is a plain
dict drawn from a seeded rng; `render(layout, logo_svg_path)` is a pure function of it.
The same layout with a different logo is the hard false-positive case: two different
brands' products photographed the same way.
"""

from __future__ import annotations

import functools
import io
import random
import re
from pathlib import Path

import numpy as np
from PIL import Image, ImageChops, ImageDraw, ImageFilter

TEMPLATES = ["print", "tee", "mug", "box", "tote", "bottle"]
PRODUCT_COLOURS = [(250, 250, 250), (25, 25, 28), (30, 45, 90), (128, 130, 135), (180, 30, 40), (215, 200, 170),
                   (40, 110, 60), (240, 200, 60), (90, 60, 140), (200, 210, 225), (150, 90, 50), (20, 120, 160)]
INKS = [(0, 0, 0), (255, 255, 255), (200, 20, 30), (0, 90, 200), (240, 190, 0), (20, 140, 70), (120, 120, 120)]


def _lum(c):
    return 0.299 * c[0] + 0.587 * c[1] + 0.114 * c[2]


def random_layout(rng: random.Random, template: str | None = None, variant: str = "a") -> dict:
    """Variant "a": the original ranges; "b": other canvas sizes, smaller products further
    off centre, smaller logos, greyer backgrounds."""
    t = template or rng.choice(TEMPLATES)
    b = variant == "b"
    w = rng.choice([720, 840, 1100] if b else [800, 900, 1000])
    h = rng.choice([w, round(w * 0.75), round(w * 1.33)] if b else [w, w, round(w * 1.25), round(w * 0.8)])
    prod = rng.choice(PRODUCT_COLOURS) if t != "print" else (255, 255, 255)
    inks = [c for c in INKS if abs(_lum(c) - _lum(prod)) > 70]
    ink = rng.choice(inks)
    return {
        "template": t, "size": [w, h], "product": list(prod), "ink": list(ink),
        "scale": round(rng.uniform(0.5, 0.7) if b else rng.uniform(0.62, 0.85), 3),  # product height / canvas height (approx.)
        "dx": round(rng.uniform(-0.12, 0.12) if b else rng.uniform(-0.05, 0.05), 3),
        "dy": round(rng.uniform(-0.08, 0.08) if b else rng.uniform(-0.04, 0.04), 3),
        "logo": round((rng.uniform(0.18, 0.34) if t != "print" else rng.uniform(0.3, 0.5)) if b else
                      (rng.uniform(0.32, 0.5) if t != "print" else rng.uniform(0.45, 0.7)), 3),  # logo box / product width
        "logo_dy": round(rng.uniform(-0.08, 0.08), 3),
        "shadow": round(rng.uniform(0.15, 0.45), 3),
        "shade": round(rng.uniform(0.0, 0.18), 3),        # vertical shading on the product
        "bg": rng.choice([238, 242, 246, 250] if b else [255, 255, 252, 248]),
    }


@functools.lru_cache(maxsize=512)
def _svg_text(path: str) -> str:
    return Path(path).read_text()


def logo_mask(svg_path: str, px: int) -> Image.Image:
    """The logo's coverage as an L image px x px (the icons are 24x24 viewBox squares)."""
    import resvg_py
    svg = _svg_text(svg_path)
    svg = re.sub(r"<svg\b", '<svg fill="#000000"', svg, count=1)
    png = resvg_py.svg_to_bytes(svg_string=svg, width=px, height=px)
    im = Image.open(io.BytesIO(bytes(png)))
    im.load()
    return im.getchannel("A") if "A" in im.getbands() else ImageChops.invert(im.convert("L"))


def ink_coverage(svg_path: str) -> float:
    m = np.asarray(logo_mask(svg_path, 48), dtype=np.float32) / 255
    return float(m.mean())


def logo_signature(svg_path: str) -> np.ndarray:
    return (np.asarray(logo_mask(svg_path, 24), dtype=np.float32) / 255 > 0.5)


def logo_rgba(svg_path: str, px: int, colour) -> Image.Image:
    m = logo_mask(svg_path, px)
    im = Image.new("RGBA", m.size, tuple(colour) + (0,))
    im.putalpha(m)
    return im


def render(layout: dict, svg_path: str) -> Image.Image:
    W, H = layout["size"]
    bgv = layout["bg"]
    img = Image.new("RGB", (W, H), (bgv, bgv, bgv))
    prod = tuple(layout["product"])
    ink = tuple(layout["ink"])
    t = layout["template"]
    ph = layout["scale"] * H
    cx = W / 2 + layout["dx"] * W
    cy = H / 2 + layout["dy"] * H
    mask = Image.new("L", (W, H), 0)
    d = ImageDraw.Draw(mask)
    outline = None
    if t == "print":
        pw = min(W * 0.8, ph)
        box = (cx - pw / 2, cy - pw / 2, cx + pw / 2, cy + pw / 2)
        logo_w = layout["logo"] * min(W, H)
        logo_c = (cx, cy + layout["logo_dy"] * pw * 0.3)
    elif t == "tee":
        pw = min(W * 0.9, ph * 1.05)
        top, bot = cy - ph / 2, cy + ph / 2
        sh = pw * 0.5  # shoulder width half
        body = pw * 0.36
        pts = [(cx - pw * 0.12, top), (cx - sh * 0.55, top + ph * 0.04), (cx - pw / 2, top + ph * 0.25),
               (cx - pw * 0.40, top + ph * 0.36), (cx - body, top + ph * 0.28), (cx - body, bot),
               (cx + body, bot), (cx + body, top + ph * 0.28), (cx + pw * 0.40, top + ph * 0.36),
               (cx + pw / 2, top + ph * 0.25), (cx + sh * 0.55, top + ph * 0.04), (cx + pw * 0.12, top)]
        d.polygon(pts, fill=255)
        d.ellipse((cx - pw * 0.12, top - ph * 0.06, cx + pw * 0.12, top + ph * 0.08), fill=0)
        box = (cx - pw / 2, top, cx + pw / 2, bot)
        logo_w = layout["logo"] * 2 * body
        logo_c = (cx, top + ph * (0.42 + layout["logo_dy"]))
    elif t == "mug":
        pw = min(ph * 0.75, W * 0.6)
        l, r = cx - pw / 2 - pw * 0.1, cx + pw / 2 - pw * 0.1
        top, bot = cy - ph / 2, cy + ph / 2
        hw = pw * 0.42
        d.ellipse((r - hw * 0.45, cy - ph * 0.28, r + hw * 0.75, cy + ph * 0.22), fill=255)
        d.ellipse((r - hw * 0.15, cy - ph * 0.17, r + hw * 0.48, cy + ph * 0.11), fill=0)
        d.rounded_rectangle((l, top, r, bot), radius=pw * 0.08, fill=255)
        box = (l, top, r + hw * 0.75, bot)
        logo_w = layout["logo"] * (r - l) * 1.3
        logo_c = ((l + r) / 2, cy + layout["logo_dy"] * ph)
    elif t == "box":
        pw = min(W * 0.7, ph * 0.8)
        depth = pw * 0.25
        l, r = cx - pw / 2 - depth / 2, cx + pw / 2 - depth / 2
        top, bot = cy - ph / 2 + depth, cy + ph / 2
        d.rectangle((l, top, r, bot), fill=255)
        d.polygon([(l, top), (l + depth, top - depth), (r + depth, top - depth), (r, top)], fill=200)
        d.polygon([(r, top), (r + depth, top - depth), (r + depth, bot - depth), (r, bot)], fill=150)
        box = (l, top - depth, r + depth, bot)
        logo_w = layout["logo"] * pw * 1.3
        logo_c = ((l + r) / 2, (top + bot) / 2 + layout["logo_dy"] * ph)
    elif t == "tote":
        pw = min(W * 0.8, ph * 0.8)
        top, bot = cy - ph / 2 + ph * 0.3, cy + ph / 2
        l, r = cx - pw / 2, cx + pw / 2
        d.polygon([(l + pw * 0.03, top), (r - pw * 0.03, top), (r, bot), (l, bot)], fill=255)
        hw = max(4, pw * 0.035)
        for hx in (cx - pw * 0.22, cx + pw * 0.22):
            d.arc((hx - pw * 0.13, top - ph * 0.3, hx + pw * 0.13, top + ph * 0.25), 180, 360, fill=255, width=round(hw))
        box = (l, top - ph * 0.3, r, bot)
        logo_w = layout["logo"] * pw * 1.2
        logo_c = (cx, (top + bot) / 2 + layout["logo_dy"] * ph)
    else:  # bottle
        pw = ph * 0.36
        top, bot = cy - ph / 2, cy + ph / 2
        neck = pw * 0.36
        d.rounded_rectangle((cx - neck / 2, top, cx + neck / 2, top + ph * 0.3), radius=neck * 0.2, fill=255)
        d.rounded_rectangle((cx - pw / 2, top + ph * 0.22, cx + pw / 2, bot), radius=pw * 0.22, fill=255)
        box = (cx - pw / 2, top, cx + pw / 2, bot)
        logo_w = layout["logo"] * pw * 1.9
        logo_c = (cx, top + ph * (0.62 + layout["logo_dy"]))
    if t != "print":
        # soft floor shadow, then the product in its colour (lighter/darker faces where drawn so)
        sh = Image.new("L", (W, H), 0)
        sd = ImageDraw.Draw(sh)
        l, tp, r, b = box
        sd.ellipse((l + (r - l) * 0.05, b - (b - tp) * 0.03, r - (r - l) * 0.05, b + (b - tp) * 0.05),
                   fill=round(255 * layout["shadow"]))
        sh = sh.filter(ImageFilter.GaussianBlur(max(2, (r - l) * 0.04)))
        img.paste((90, 90, 90), (0, 0), sh)
        # work inside the product's bounding box only (the rest of the canvas is untouched)
        bb = mask.getbbox() or (0, 0, 1, 1)
        m = np.asarray(mask.crop(bb), dtype=np.float32) / 255
        face = np.empty(m.shape + (3,), np.float32)
        face[:] = np.array(prod, np.float32)
        face *= (0.55 + 0.45 * m)[..., None]  # the box's top/side faces are drawn at 200/150
        amount = layout["shade"]
        if amount > 0:  # darker towards the bottom and the right: a studio light from above-left
            l, tp, r, b = (round(v) for v in box)
            ys = np.clip((np.arange(bb[1], bb[3]) - tp) / max(1, b - tp), 0, 1)[:, None]
            xs = np.clip((np.arange(bb[0], bb[2]) - l) / max(1, r - l), 0, 1)[None, :]
            face *= (1 - amount * (0.7 * ys + 0.3 * xs))[..., None]
        solid = Image.fromarray(np.clip(face, 0, 255).astype(np.uint8))
        full = mask.point(lambda v: 255 if v > 0 else 0)
        img.paste(solid, bb[:2], full.crop(bb))
        if _lum(prod) > 225:
            outline = full.filter(ImageFilter.FIND_EDGES)
            img.paste((200, 200, 200), (0, 0), outline)
    lw = max(8, round(logo_w))
    lm = logo_mask(svg_path, lw)
    img.paste(ink, (round(logo_c[0] - lw / 2), round(logo_c[1] - lw / 2)), lm)
    return img
