# pip install pillow numpy resvg-py==0.5.0   (or: pip install -r tools/eval/requirements.txt)
"""Textured product shots: a cut-out object ("stamp": a photo or clip-art with alpha from
tuxpaint-stamps-default or openclipart-png, see sources.py) on a canvas, with a brand
logo (simple-icons, rendered by resvg) as a corner badge, under the object (optionally
with the brand's name beside it: a wordmark), or printed on the object.

A *layout* is a plain dict drawn by `random_layout(rng, variant, stamp, ...)`;
`render(layout, stamp_rgba, svg_path, title, bg_photo)` is a pure function of it. The
logo itself (which SVG, which title) is not part of the layout: the same layout with
another brand's logo is "the same shot with another logo" (a near-miss negative), the
same layout with `logo.colour` changed is the brand's own logo recoloured (a copy).

Variant "a" (default) and "b" draw from different canvases, placements and sizes:

  a  canvas white / light grey / soft gradient / blurred photo; object 55-85% of the
     short side; shadow drop or floor; logo: badge (corner, plain or on a rounded
     plate, 8-25% of the object's width), below (12-35%, wordmark half the time), on
     the object (10-45%, opacity 0.75-1, slight warp, texture through the ink)
  b  canvas dark grey / paper with grain / two-tone wall and floor / photo; object
     40-70% of the short side, further off centre; logo: a round sticker on the
     object's edge (12-30%), a header above the object (15-40%, wordmark), on the
     object (15-50%, multiplied into the texture, stronger warp)
"""

from __future__ import annotations

import functools
import math
import random

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont, ImageOps

from products import _lum, logo_mask

PALETTE = [(0, 0, 0), (255, 255, 255), (200, 20, 30), (0, 90, 200), (240, 190, 0), (20, 140, 70),
           (120, 120, 120), (230, 90, 20), (120, 40, 150), (0, 150, 160), (240, 80, 150), (90, 60, 30)]
PLACES = {"a": ["badge", "below", "on"], "b": ["sticker", "above", "on"]}
MIN_LOGO_CANVAS = 0.035  # smallest logo: this share of the canvas's short side


def _u(rng, lo, hi, nd=3):
    return round(rng.uniform(lo, hi), nd)


def hex_rgb(h: str | None):
    if not h:
        return None
    h = h.lstrip("#")
    return [int(h[i:i + 2], 16) for i in (0, 2, 4)]


def _light(rng, lo=215, hi=252):
    base = rng.randint(lo, hi)
    return [min(255, max(0, base + rng.randint(-12, 12))) for _ in range(3)]


def canvas_lum(canvas: dict) -> float:
    t = canvas["type"]
    if t in ("photo",):
        return 190.0
    if t in ("gradient", "split"):
        return (_lum(canvas["c0"]) + _lum(canvas["c1"])) / 2
    return _lum(canvas["c0"])


def contrasting(colour, bg_lum: float, rng: random.Random | None = None):
    """`colour` if it stands out from a background of luminance bg_lum, else black/white."""
    if abs(_lum(colour) - bg_lum) >= 55:
        return list(colour)
    return [0, 0, 0] if bg_lum > 128 else [255, 255, 255]


def random_canvas(rng: random.Random, variant: str, bg_photos: list[str]) -> dict:
    if variant == "b":
        t = rng.choices(["dark", "paper", "split", "photo"], [0.2, 0.3, 0.3, 0.2 if bg_photos else 0])[0]
    else:
        t = rng.choices(["white", "grey", "gradient", "photo"], [0.35, 0.2, 0.3, 0.15 if bg_photos else 0])[0]
    c = {"type": t}
    if t == "white":
        v = rng.choice([255, 255, 253, 250])
        c["c0"] = [v, v, v]
    elif t == "grey":
        v = rng.randint(222, 242)
        c["c0"] = [v, v, v]
    elif t == "gradient":
        c["c0"], c["c1"] = _light(rng, 225, 255), _light(rng, 190, 235)
        c["angle"] = rng.choice([90, 90, 45, 135, 0])
    elif t == "dark":
        v = rng.randint(28, 70)
        c["c0"] = [v, v + rng.randint(0, 6), v + rng.randint(0, 10)]
    elif t == "paper":
        c["c0"] = _light(rng, 205, 240)
        c["grain"] = _u(rng, 4, 12, 1)
        c["grain_seed"] = rng.randrange(1 << 30)
    elif t == "split":
        c["c0"], c["c1"] = _light(rng, 200, 245), _light(rng, 150, 215)
        c["horizon"] = _u(rng, 0.55, 0.8)
    else:
        c["photo"] = rng.choice(bg_photos)
        c["crop"] = [_u(rng, 0, 0.4), _u(rng, 0, 0.4), _u(rng, 0.5, 0.6)]  # x, y, share of the side
        c["blur"] = _u(rng, 6, 18, 1) if variant == "a" else _u(rng, 2, 8, 1)
        c["fade"] = _u(rng, 0.25, 0.6) if variant == "a" else _u(rng, 0.1, 0.35)
    return c


def random_layout(rng: random.Random, variant: str, stamp: dict, genuine_hex: str | None,
                  bg_photos: list[str], place: str | None = None, size_frac: float | None = None) -> dict:
    """A shot of `stamp` (its stamps.json record): canvas, object placement, shadow, and
    where, how big and in which colour the logo goes."""
    b = variant == "b"
    w = rng.choice([720, 900, 1100] if b else [800, 900, 1000])
    h = rng.choice([w, round(w * 0.75), round(w * 1.33)] if b else [w, w, round(w * 1.25), round(w * 0.8)])
    canvas = random_canvas(rng, variant, bg_photos)
    place = place or rng.choice(PLACES[variant])
    sw, sh = stamp["size"]
    obj = {"long": _u(rng, 0.40, 0.70) if b else _u(rng, 0.55, 0.85),
           "cx": _u(rng, -0.12, 0.12) if b else _u(rng, -0.05, 0.05),
           "cy": _u(rng, -0.08, 0.08) if b else _u(rng, -0.04, 0.04),
           "mirror": rng.random() < 0.3}
    if place in ("below", "above"):
        obj["long"] = round(obj["long"] * 0.85, 3)
        obj["cy"] = round(obj["cy"] + (-0.07 if place == "below" else 0.07), 3)
    shadow = None
    if rng.random() < (0.6 if not b else 0.45):
        if rng.random() < 0.5:
            shadow = {"type": "drop", "alpha": _u(rng, 0.2, 0.5), "blur": _u(rng, 0.01, 0.04),
                      "dx": _u(rng, -0.02, 0.03), "dy": _u(rng, 0.01, 0.04)}
        else:
            shadow = {"type": "floor", "alpha": _u(rng, 0.2, 0.5), "blur": _u(rng, 0.03, 0.07)}
    # logo size as a share of the object's width: often 10-25%, sometimes up to 50%
    if size_frac is None:
        lo, hi = {"badge": (0.08, 0.25), "below": (0.12, 0.35), "on": (0.10, 0.45),
                  "sticker": (0.12, 0.30), "above": (0.15, 0.40)}[place]
        size_frac = _u(rng, lo, hi) if rng.random() < 0.4 else _u(rng, max(lo, 0.10), min(hi, 0.25))
    logo = {"place": place, "frac": size_frac}
    bg_lum = canvas_lum(canvas)
    if place == "badge":
        logo["corner"] = rng.choice(["tl", "tr", "bl", "br"])
        logo["margin"] = _u(rng, 0.03, 0.07)
        logo["plate"] = rng.choice([None, None, "round"])
        if logo["plate"]:
            logo["plate_fill"] = rng.choice([[255, 255, 255], [20, 20, 20], [235, 235, 235]])
            bg_lum = _lum(logo["plate_fill"])
    elif place == "sticker":
        logo["angle"] = rng.randrange(360)  # where on the object's outline the sticker sits
        logo["plate_fill"] = rng.choice([[255, 255, 255], [250, 220, 0], [20, 20, 20], [220, 30, 40]])
        bg_lum = _lum(logo["plate_fill"])
    elif place in ("below", "above"):
        logo["wordmark"] = rng.random() < (0.5 if place == "below" else 0.8)
        logo["gap"] = _u(rng, 0.02, 0.06)
        logo["align"] = rng.choice(["centre", "centre", "left"])
    else:  # on the object
        logo["u"], logo["v"] = _u(rng, 0.3, 0.7), _u(rng, 0.3, 0.65)
        logo["opacity"] = _u(rng, 0.75, 1.0) if not b else _u(rng, 0.8, 1.0)
        logo["warp"] = _u(rng, 0.0, 0.06) if not b else _u(rng, 0.04, 0.12)
        logo["blend"] = "texture" if not b else rng.choice(["multiply", "texture"])
        logo["rotate"] = _u(rng, -8, 8, 1) if rng.random() < 0.4 else 0.0
        bg_lum = stamp.get("mean_lum", 128)
        if logo["blend"] == "multiply":
            bg_lum = max(bg_lum, 200)  # a multiplied ink darkens: keep it dark
    colour = hex_rgb(genuine_hex) if (genuine_hex and rng.random() < 0.5) else list(rng.choice(PALETTE))
    if place == "on" and logo["blend"] == "multiply" and _lum(colour) > 150:
        colour = list(rng.choice([c for c in PALETTE if _lum(c) < 120]))
    logo["colour"] = contrasting(colour, bg_lum)
    logo["bg_lum"] = round(bg_lum, 1)
    return {"kind": "stamp", "variant": variant, "stamp": stamp["id"], "size": [w, h], "canvas": canvas,
            "obj": obj, "shadow": shadow, "logo": logo}


def other_colour(rng: random.Random, colour, bg_lum: float, avoid=()):
    """A colour clearly different from `colour` (and from `avoid`) that still stands out."""
    cands = [list(c) for c in PALETTE]
    h = hex_rgb(None)
    del h
    rng.shuffle(cands)
    for c in cands:
        if sum(abs(a - b) for a, b in zip(c, colour)) < 150:
            continue
        if any(sum(abs(a - b) for a, b in zip(c, o)) < 90 for o in avoid):
            continue
        if abs(_lum(c) - bg_lum) < 55:
            continue
        return c
    return [0, 0, 0] if _lum(colour) > 128 else [255, 255, 255]


# ----------------------------------------------------------------------------- rendering

def _font(size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.load_default(size=max(8, int(size)))


def _canvas(c: dict, W: int, H: int, bg_photo: Image.Image | None) -> Image.Image:
    t = c["type"]
    if t in ("white", "grey", "dark"):
        return Image.new("RGB", (W, H), tuple(c["c0"]))
    if t == "gradient":
        a = math.radians(c["angle"])
        ys, xs = np.mgrid[0:H, 0:W].astype(np.float32)
        p = (xs / W) * math.cos(a) + (ys / H) * math.sin(a)
        p = (p - p.min()) / max(1e-6, p.max() - p.min())
        c0, c1 = np.array(c["c0"], np.float32), np.array(c["c1"], np.float32)
        img = c0 * (1 - p[..., None]) + c1 * p[..., None]
        return Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))
    if t == "paper":
        r = np.random.default_rng(c["grain_seed"])
        n = r.normal(0, c["grain"], (H // 2 + 1, W // 2 + 1)).astype(np.float32)
        n = np.asarray(Image.fromarray(n, "F").resize((W, H), Image.BILINEAR))
        img = np.array(c["c0"], np.float32)[None, None, :] + n[..., None]
        return Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))
    if t == "split":
        img = Image.new("RGB", (W, H), tuple(c["c0"]))
        hy = round(c["horizon"] * H)
        img.paste(tuple(c["c1"]), (0, hy, W, H))
        return img.filter(ImageFilter.GaussianBlur(max(1, H * 0.006)))
    # photo: a crop of a (distractor-only) photo, blurred and faded towards white
    pw, ph = bg_photo.size
    side = c["crop"][2]
    cw, ch = max(16, round(pw * side)), max(16, round(ph * side))
    x, y = round(c["crop"][0] * (pw - cw)), round(c["crop"][1] * (ph - ch))
    crop = bg_photo.crop((x, y, x + cw, y + ch))
    crop = ImageOps.fit(crop, (W, H), Image.BILINEAR)
    crop = crop.filter(ImageFilter.GaussianBlur(c["blur"] * W / 1000))
    return Image.blend(crop, Image.new("RGB", (W, H), (255, 255, 255)), c["fade"])


def _warp(mask: Image.Image, amount: float) -> Image.Image:
    """A slight bulge: rows shifted sideways along a half sine (printing on a curved surface)."""
    if amount <= 0:
        return mask
    a = np.asarray(mask)
    h, w = a.shape
    out = np.zeros_like(a)
    shift = (amount * w * np.sin(np.pi * np.arange(h) / max(1, h - 1))).round().astype(int)
    cols = np.arange(w)
    for y in range(h):
        src = cols - shift[y] + (shift.max() // 2)
        ok = (src >= 0) & (src < w)
        out[y, ok] = a[y, src[ok]]
    return Image.fromarray(out)


def _best_spot(alpha: np.ndarray, s: int, u: float, v: float) -> tuple[int, int]:
    """Top-left of an s x s box inside the object's alpha with the most coverage, the one
    nearest (u, v) of the object among the near-best."""
    h, w = alpha.shape
    if s >= min(h, w):
        return max(0, (w - s) // 2), max(0, (h - s) // 2)
    ii = np.pad((alpha > 128).astype(np.int32).cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    step = max(1, s // 8)
    ys = np.arange(0, h - s + 1, step)
    xs = np.arange(0, w - s + 1, step)
    Y, X = np.meshgrid(ys, xs, indexing="ij")
    cov = (ii[Y + s, X + s] - ii[Y, X + s] - ii[Y + s, X] + ii[Y, X]) / (s * s)
    best = cov.max()
    ok = cov >= best * 0.97 - 1e-9
    d = (X + s / 2 - u * w) ** 2 + (Y + s / 2 - v * h) ** 2
    d = np.where(ok, d, np.inf)
    k = np.unravel_index(np.argmin(d), d.shape)
    return int(X[k]), int(Y[k])


def _wordmark(svg_path: str, title: str, px: int, colour) -> Image.Image:
    """The icon, then the brand's name beside it, in one colour (RGBA)."""
    icon = logo_mask(svg_path, px)
    font = _font(round(px * 0.62))
    d0 = ImageDraw.Draw(Image.new("L", (1, 1)))
    text = title[:18]
    l, t, r, b = d0.textbbox((0, 0), text, font=font)
    gap = round(px * 0.25)
    W = px + gap + (r - l)
    m = Image.new("L", (W, px), 0)
    m.paste(icon, (0, 0))
    ImageDraw.Draw(m).text((px + gap - l, (px - (b - t)) // 2 - t), text, font=font, fill=255)
    im = Image.new("RGBA", m.size, tuple(colour) + (0,))
    im.putalpha(m)
    return im


def _icon(svg_path: str, px: int, colour) -> Image.Image:
    m = logo_mask(svg_path, px)
    im = Image.new("RGBA", m.size, tuple(colour) + (0,))
    im.putalpha(m)
    return im


def render(layout: dict, stamp: Image.Image, svg_path: str, title: str, bg_photo: Image.Image | None = None,
           colour=None) -> Image.Image:
    """The shot. `colour` overrides layout["logo"]["colour"] (the recoloured copies)."""
    W, H = layout["size"]
    img = _canvas(layout["canvas"], W, H, bg_photo).convert("RGBA")
    o = layout["obj"]
    st = stamp.convert("RGBA")
    if o["mirror"]:
        st = ImageOps.mirror(st)
    s = o["long"] * min(W, H) / max(st.size)
    ow, oh = max(8, round(st.size[0] * s)), max(8, round(st.size[1] * s))
    st = st.resize((ow, oh), Image.LANCZOS if s < 1 else Image.BICUBIC)
    ox = round(W / 2 + o["cx"] * W - ow / 2)
    oy = round(H / 2 + o["cy"] * H - oh / 2)
    sh = layout["shadow"]
    if sh:
        layer = Image.new("L", (W, H), 0)
        if sh["type"] == "drop":
            a = st.getchannel("A").point(lambda v, k=sh["alpha"]: round(v * k))
            layer.paste(a, (ox + round(sh["dx"] * W), oy + round(sh["dy"] * H)))
        else:
            ImageDraw.Draw(layer).ellipse((ox + ow * 0.08, oy + oh * 0.94, ox + ow * 0.92, oy + oh * 1.04),
                                          fill=round(255 * sh["alpha"]))
        layer = layer.filter(ImageFilter.GaussianBlur(max(1, sh["blur"] * W)))
        img.paste((40, 40, 40, 255), (0, 0), layer)
    lg = layout["logo"]
    col = list(colour if colour is not None else lg["colour"])
    # the logo's size is a share of the object's width -- of at least 0.6 x its height for
    # tall narrow objects (a bottle, a guitar) -- and never under 3.5% of the canvas
    px = max(12, round(lg["frac"] * max(ow, 0.6 * oh)), round(MIN_LOGO_CANVAS * min(W, H)))
    place = lg["place"]
    if place == "on":
        arr = np.asarray(st).astype(np.float32)
        alpha = arr[..., 3]
        px = min(px, ow, oh)
        mask = logo_mask(svg_path, px)
        if lg.get("rotate"):
            mask = mask.rotate(lg["rotate"], resample=Image.BICUBIC)
        mask = _warp(mask, lg["warp"])
        x, y = _best_spot(alpha, px, lg["u"], lg["v"])
        m = np.zeros(alpha.shape, np.float32)
        mm = np.asarray(mask, np.float32)[:oh - y, :ow - x] / 255
        m[y:y + mm.shape[0], x:x + mm.shape[1]] = mm
        m *= (alpha / 255) * lg["opacity"]
        rgb = arr[..., :3]
        ink = np.array(col, np.float32)
        if lg["blend"] == "multiply":
            out = rgb * (1 - m[..., None]) + (rgb * ink / 255) * m[..., None]
        else:  # the ink modulated by the object's own shading: texture shows through
            lum = rgb @ np.array([0.299, 0.587, 0.114], np.float32)
            sel = m > 0.05
            ref = float(lum[sel].mean()) if sel.any() else 128.0
            shade = np.clip((lum + 20) / (ref + 20), 0.6, 1.35) ** 0.6
            out = rgb * (1 - m[..., None]) + np.clip(ink * shade[..., None], 0, 255) * m[..., None]
        arr[..., :3] = out
        st = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "RGBA")
        img.alpha_composite(st, (ox, oy)) if ox >= 0 and oy >= 0 else img.paste(st, (ox, oy), st)
        return img.convert("RGB")
    if ox >= 0 and oy >= 0:
        img.alpha_composite(st, (ox, oy))
    else:
        img.paste(st, (ox, oy), st)
    d = ImageDraw.Draw(img)
    if place == "badge":
        logo = _icon(svg_path, px, col)
        pad = round(px * 0.25) if lg.get("plate") else 0
        bw, bh = logo.size[0] + 2 * pad, logo.size[1] + 2 * pad
        mg = round(lg["margin"] * min(W, H))
        x = mg if lg["corner"][1] == "l" else W - mg - bw
        y = mg if lg["corner"][0] == "t" else H - mg - bh
        if lg.get("plate"):
            d.rounded_rectangle((x, y, x + bw, y + bh), radius=round(bw * 0.18), fill=tuple(lg["plate_fill"]) + (255,))
        img.alpha_composite(logo, (x + pad, y + pad))
    elif place == "sticker":
        logo = _icon(svg_path, px, col)
        r = round(px * 0.78)
        a = math.radians(lg["angle"])
        # on the object's bounding ellipse, pulled 15% inwards: overlapping its edge
        cx = ox + ow / 2 + math.cos(a) * ow / 2 * 0.85
        cy = oy + oh / 2 + math.sin(a) * oh / 2 * 0.85
        cx = min(max(cx, r + 2), W - r - 2)
        cy = min(max(cy, r + 2), H - r - 2)
        d.ellipse((cx - r, cy - r, cx + r, cy + r), fill=tuple(lg["plate_fill"]) + (255,))
        img.alpha_composite(logo, (round(cx - px / 2), round(cy - px / 2)))
    else:  # below / above
        logo = _wordmark(svg_path, title, px, col) if lg["wordmark"] else _icon(svg_path, px, col)
        if logo.size[0] > W - 8:
            k = (W - 8) / logo.size[0]
            logo = logo.resize((max(1, round(logo.size[0] * k)), max(1, round(logo.size[1] * k))), Image.LANCZOS)
        gap = round(lg["gap"] * H)
        y = oy + oh + gap if place == "below" else oy - gap - logo.size[1]
        y = min(max(2, y), H - logo.size[1] - 2)
        if lg["align"] == "left":
            x = max(2, ox)
        else:
            x = round(ox + ow / 2 - logo.size[0] / 2)
        x = min(max(2, x), W - logo.size[0] - 2)
        img.alpha_composite(logo, (x, y))
    return img.convert("RGB")


@functools.lru_cache(maxsize=256)
def load_stamp(path: str) -> Image.Image:
    im = Image.open(path)
    im.load()
    return im.convert("RGBA")
