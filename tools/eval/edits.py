# pip install pillow numpy   (or: pip install -r tools/eval/requirements.txt)
"""The edits a counterfeiter (or a marketplace) applies to a photo, grouped in tiers.

Every edit is `fn(img, rng, ctx) -> (img, params)`: `img` a PIL RGB image, `rng` a
`random.Random` owned by the caller (so a corpus is a pure function of its seed), `ctx`
gives edits that need other pictures (the 2x2 collage) a `fillers(n, rng)` callback.
`params` is what was done, recorded in the corpus manifest.

Tiers (see README.md for the exact ranges):
  easy    jpeg q30-90, resize 0.25-2x, brightness/contrast/gamma, mild saturation
  medium  crop <= 10% per side length, text/price overlay, pad to square, mirror,
          grayscale, blur, noise, hue shift
  hard    off-centre crop of 20-30% per side length, rotation 90/270 and 180, small
          rotation +-3-10 deg, screenshot frame (picture = 60-80% of the canvas area),
          2x2 collage, perspective

ctx["variant"] = "b" switches to other parameters (PROFILES["b"]) and other templates:
pad to 4:5 / 16:9 with blurred bars, a phone-app screenshot (picture 45-70% of the
screen), an uneven 2x2 collage, a translucent shop watermark with the text labels.

`logo_recolour` (the brand's logo re-rendered in another colour, build_corpus.py) is not
an image edit but is named and tiered like one (medium): RECOLOUR below.
"""

from __future__ import annotations

import io
import math
import random
from dataclasses import dataclass
from typing import Callable

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageFilter, ImageFont, ImageOps

RESAMPLE = Image.BICUBIC

# Edit parameters per corpus variant (ctx["variant"], default "a"). Variant "b" uses other
# ranges and other screenshot / collage / pad templates, so a method tuned on variant a
# is also measured on edits it was not tuned on.
PROFILES = {
    "a": {"jpeg": (30, 90), "resize": (0.25, 2.0), "brightness": (0.7, 1.3), "contrast": (0.7, 1.3),
          "gamma": (0.6, 1.6), "saturation": (0.6, 1.4), "crop_small": (0.03, 0.10), "text_size": (0.05, 0.12),
          "text_items": (1, 2), "blur": (0.8, 3.0), "noise": (4, 14), "hue": (15, 60),
          "crop_offcentre": (0.20, 0.30), "offcentre_share": (0.8, 1.0), "rotate_small": (3, 10),
          "screenshot_cover": (0.60, 0.80), "perspective": (0.06, 0.15), "perspective_jitter": 0.02},
    "b": {"jpeg": (20, 75), "resize": (0.2, 1.6), "brightness": (0.6, 1.4), "contrast": (0.6, 1.4),
          "gamma": (0.5, 1.8), "saturation": (0.5, 1.5), "crop_small": (0.06, 0.14), "text_size": (0.04, 0.09),
          "text_items": (2, 3), "blur": (0.5, 2.2), "noise": (3, 18), "hue": (10, 90),
          "crop_offcentre": (0.15, 0.35), "offcentre_share": (0.65, 1.0), "rotate_small": (2, 15),
          "screenshot_cover": (0.45, 0.70), "perspective": (0.12, 0.25), "perspective_jitter": 0.03},
}


def P(ctx) -> dict:
    return PROFILES[(ctx or {}).get("variant", "a")]


def V(ctx) -> str:
    return (ctx or {}).get("variant", "a")


@dataclass(frozen=True)
class Edit:
    name: str
    tier: str
    stage: int  # order inside a chain: geometry < colour < overlay/layout < encode
    fn: Callable


def _font(size: int) -> ImageFont.FreeTypeFont:
    # Pillow's bundled scalable font (needs Pillow >= 10.1 with FreeType): no system fonts.
    return ImageFont.load_default(size=max(8, int(size)))


def _u(rng: random.Random, lo: float, hi: float, nd: int = 3) -> float:
    return round(rng.uniform(lo, hi), nd)


# ------------------------------------------------------------------ easy

def jpeg(img, rng, ctx):
    q = rng.randint(*P(ctx)["jpeg"])
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=q)
    buf.seek(0)
    out = Image.open(buf).convert("RGB")
    return out, {"quality": q}


def resize(img, rng, ctx):
    lo, hi = P(ctx)["resize"]
    s = round(math.exp(rng.uniform(math.log(lo), math.log(hi))), 3)
    w, h = img.size
    size = (max(16, round(w * s)), max(16, round(h * s)))
    return img.resize(size, Image.LANCZOS if s < 1 else RESAMPLE), {"scale": s, "size": list(size)}


def brightness(img, rng, ctx):
    f = _u(rng, *P(ctx)["brightness"])
    return ImageEnhance.Brightness(img).enhance(f), {"factor": f}


def contrast(img, rng, ctx):
    f = _u(rng, *P(ctx)["contrast"])
    return ImageEnhance.Contrast(img).enhance(f), {"factor": f}


def gamma(img, rng, ctx):
    g = _u(rng, *P(ctx)["gamma"])
    lut = [min(255, round(255 * (i / 255) ** g)) for i in range(256)]
    return img.point(lut * 3), {"gamma": g}


def saturation(img, rng, ctx):
    f = _u(rng, *P(ctx)["saturation"])
    return ImageEnhance.Color(img).enhance(f), {"factor": f}


# ------------------------------------------------------------------ medium

def _crop(img, rng, lo, hi, offcentre, share_range=(0.8, 1.0)):
    w, h = img.size
    fx, fy = _u(rng, lo, hi), _u(rng, lo, hi)
    box = []
    for size, f in ((w, fx), (h, fy)):
        cut = round(size * f)
        if offcentre:  # most of the cut on one side
            a_, b_ = share_range
            share = rng.uniform(1 - b_, 1 - a_) if rng.random() < 0.5 else rng.uniform(a_, b_)
        else:
            share = rng.random()
        a = round(cut * share)
        box.append((a, a + size - cut))
    l, r = box[0]
    t, b = box[1]
    return img.crop((l, t, r, b)), {"cut_w": fx, "cut_h": fy, "box": [l, t, r, b]}


def crop_small(img, rng, ctx):
    return _crop(img, rng, *P(ctx)["crop_small"], offcentre=False)


PRICE_TEXTS = ["${p}", "{p} EUR", "GBP {p}", "SALE -{d}%", "ONLY ${p}", "NEW", "FREE SHIPPING", "HOT DEAL",
               "-{d}% TODAY", "BEST SELLER", "{p} USD", "LIMITED"]
BOX_COLOURS = [(220, 30, 40), (255, 210, 0), (255, 255, 255), (20, 20, 20), (0, 120, 215), (30, 160, 70)]


def text_overlay(img, rng, ctx):
    img = img.copy()
    w, h = img.size
    d = ImageDraw.Draw(img, "RGBA")
    items = []
    p = P(ctx)
    for _ in range(rng.randint(*p["text_items"])):
        t = rng.choice(PRICE_TEXTS).format(p=f"{rng.randint(5, 499)}.{rng.choice(['99', '95', '00', '49'])}",
                                            d=rng.choice([10, 20, 30, 40, 50, 70]))
        size = max(10, round(min(w, h) * rng.uniform(*p["text_size"])))
        font = _font(size)
        l, tp, r, b = d.textbbox((0, 0), t, font=font)
        tw, th = r - l, b - tp
        pad = size // 4
        x = rng.randint(0, max(0, w - tw - 2 * pad))
        y = rng.randint(0, max(0, h - th - 2 * pad))
        bg = rng.choice(BOX_COLOURS)
        fg = (255, 255, 255) if sum(bg) < 400 else (0, 0, 0)
        alpha = rng.choice([255, 255, 200, 160])
        d.rectangle((x, y, x + tw + 2 * pad, y + th + 2 * pad), fill=bg + (alpha,))
        d.text((x + pad - l, y + pad - tp), t, font=font, fill=fg + (255,))
        items.append({"text": t, "size": size, "at": [x, y], "box_alpha": alpha})
    if V(ctx) == "b" and rng.random() < 0.5:  # a shop's translucent watermark across the picture
        t = rng.choice(["best_deals_24", "SHOP-OUTLET", "@top.seller", "ORIGINAL 100%"])
        size = max(12, round(min(w, h) * rng.uniform(0.06, 0.1)))
        layer = Image.new("RGBA", img.size, (0, 0, 0, 0))
        ImageDraw.Draw(layer).text((w * rng.uniform(0.05, 0.3), h * rng.uniform(0.3, 0.6)), t, font=_font(size),
                                   fill=(255, 255, 255, rng.choice([70, 100, 130])))
        layer = layer.rotate(rng.uniform(-30, 30), resample=RESAMPLE)
        img = Image.alpha_composite(img.convert("RGBA"), layer).convert("RGB")
        items.append({"watermark": t, "size": size})
    return img, {"items": items}


def pad_square(img, rng, ctx):
    w, h = img.size
    if V(ctx) == "b":  # b: pad to 4:5 or 16:9 (or 1:1), bars of a blurred stretch of the picture or a colour
        aspect = rng.choice([0.8, 16 / 9, 1.0])
        W, H = (max(w, round(h * aspect)), max(h, round(w / aspect)))
        if (W, H) == (w, h):
            W, H = round(w * 1.12), round(h * 1.12)
        if rng.random() < 0.5:
            out = img.resize((W, H), Image.BILINEAR).filter(ImageFilter.GaussianBlur(max(W, H) / 30))
            colour = "blurred"
        else:
            colour = rng.choice([(250, 250, 250), (20, 20, 20), (230, 225, 215)])
            out = Image.new("RGB", (W, H), colour)
            colour = list(colour)
        out.paste(img, ((W - w) // 2, (H - h) // 2))
        return out, {"colour": colour, "size": [W, H], "aspect": round(aspect, 3)}
    n = max(w, h)
    colour = rng.choice([(255, 255, 255), (0, 0, 0), (240, 240, 240), (128, 128, 128)])
    out = Image.new("RGB", (n, n), colour)
    if w == h:  # already square: add a margin instead
        n2 = round(n * 1.15)
        out = Image.new("RGB", (n2, n2), colour)
        out.paste(img, ((n2 - w) // 2, (n2 - h) // 2))
        return out, {"colour": list(colour), "size": [n2, n2]}
    out.paste(img, ((n - w) // 2, (n - h) // 2))
    return out, {"colour": list(colour), "size": [n, n]}


def mirror(img, rng, ctx):
    return ImageOps.mirror(img), {"axis": "left-right"}


def grayscale(img, rng, ctx):
    return img.convert("L").convert("RGB"), {}


def blur(img, rng, ctx):
    r = round(rng.uniform(*P(ctx)["blur"]) * max(img.size) / 1000, 2)
    return img.filter(ImageFilter.GaussianBlur(max(0.5, r))), {"radius": max(0.5, r)}


def noise(img, rng, ctx):
    sigma = _u(rng, *P(ctx)["noise"], 1)
    nrng = np.random.default_rng(rng.getrandbits(63))
    a = np.asarray(img, dtype=np.float32)
    a = a + nrng.normal(0, sigma, a.shape).astype(np.float32)
    return Image.fromarray(np.clip(a + 0.5, 0, 255).astype(np.uint8)), {"sigma": sigma}


def hue_shift(img, rng, ctx):
    deg = rng.choice([-1, 1]) * rng.randint(*P(ctx)["hue"])
    hsv = np.asarray(img.convert("HSV")).copy()
    hsv[..., 0] = (hsv[..., 0].astype(np.int16) + round(deg * 256 / 360)) % 256
    return Image.fromarray(hsv, "HSV").convert("RGB"), {"degrees": deg}


# ------------------------------------------------------------------ hard

def crop_offcentre(img, rng, ctx):
    return _crop(img, rng, *P(ctx)["crop_offcentre"], offcentre=True, share_range=P(ctx)["offcentre_share"])


def rotate90(img, rng, ctx):
    ang = rng.choice([90, 270])
    return img.transpose(Image.ROTATE_90 if ang == 90 else Image.ROTATE_270), {"degrees_ccw": ang}


def rotate180(img, rng, ctx):
    return img.transpose(Image.ROTATE_180), {"degrees_ccw": 180}


def rotate_small(img, rng, ctx):
    ang = rng.choice([-1, 1]) * _u(rng, *P(ctx)["rotate_small"], 1)
    fill = rng.choice([(255, 255, 255), (0, 0, 0)] if V(ctx) == "a" else [(128, 128, 128), (240, 240, 240), (30, 30, 30)])
    return img.rotate(ang, resample=RESAMPLE, expand=True, fillcolor=fill), {"degrees_ccw": ang, "fill": list(fill)}


UI_WORDS = ["Add to cart", "Buy now", "Free delivery", "In stock", "Seller: best_deals_24", "4.8 (2,113)",
            "Similar items", "Ships from Hong Kong", "Original quality", "Sponsored", "Top rated"]


def screenshot(img, rng, ctx):
    """A marketplace page or app screen grab: the picture covers 60-80% of the canvas
    (variant b: a phone app page, 45-70%)."""
    if V(ctx) == "b":
        return screenshot_app(img, rng, ctx)
    cover = _u(rng, 0.60, 0.80)
    s = _u(rng, 0.6, 1.0)
    w, h = max(16, round(img.size[0] * s)), max(16, round(img.size[1] * s))
    pic = img.resize((w, h), Image.LANCZOS)
    extra = 1 / cover  # canvas area / picture area
    fx = rng.uniform(1.02, min(1.25, extra / 1.02))  # width factor
    fy = extra / fx
    cw, ch = round(w * fx), round(h * fy)
    dark = rng.random() < 0.3
    bg = (24, 24, 28) if dark else (255, 255, 255)
    ink = (230, 230, 230) if dark else (30, 30, 30)
    grey = (70, 70, 76) if dark else (225, 225, 225)
    canvas = Image.new("RGB", (cw, ch), bg)
    d = ImageDraw.Draw(canvas)
    top = round((ch - h) * rng.uniform(0.3, 0.6))
    left = rng.randint(0, cw - w)
    fs = max(9, round(0.028 * max(cw, ch)))
    f, fb = _font(fs), _font(round(fs * 1.3))
    bar = max(4, min(top // 3, round(fs * 1.2)))
    d.rectangle((0, 0, cw, bar), fill=(rng.randint(0, 60), rng.randint(0, 90), rng.randint(60, 200)))
    if top - bar >= fs + 4:
        d.text((8, bar + 2), rng.choice(["Original brand product", "Premium quality item", "Hot sale 2024"]),
               font=f, fill=ink)
    y = top + h + 4
    while y + fs * 1.5 < ch:
        kind = rng.random()
        if kind < 0.3:
            d.text((8, y), f"${rng.randint(5, 300)}.99", font=fb, fill=(200, 30, 30))
            y += round(fs * 1.8)
        elif kind < 0.6:
            word = rng.choice(UI_WORDS)
            bw = max(rng.randint(cw // 4, cw // 2), round(d.textlength(word, font=f)) + 16)
            d.rounded_rectangle((8, y, 8 + bw, y + round(fs * 1.5)), radius=fs // 2, fill=(250, 180, 0))
            d.text((16, y + fs // 5), word, font=f, fill=(0, 0, 0))
            y += round(fs * 2)
        elif kind < 0.8:
            d.text((8, y), rng.choice(UI_WORDS), font=f, fill=ink)
            y += round(fs * 1.5)
        else:
            t = min(round(fs * 3), ch - y - 2)
            for x in range(8, cw - t, t + 6):
                d.rectangle((x, y, x + t, y + t), fill=grey)
            y += t + 6
    yy = top
    for word in ["Home", "Deals", "Shoes", "Bags", "Watches", "More"]:  # side menu, where it fits
        if yy + fs > top + h or d.textlength(word, font=f) > left - 6:
            break
        d.text((4, yy), word, font=f, fill=ink)
        yy += round(fs * 1.6)
    canvas.paste(pic, (left, top))  # the picture last: no chrome drawn over it
    area = (w * h) / (cw * ch)
    return canvas, {"cover": round(area, 3), "picture_scale": s, "canvas": [cw, ch], "at": [left, top], "dark": dark}


def collage2x2(img, rng, ctx):
    w, h = img.size
    if V(ctx) == "b":
        return collage_uneven(img, rng, ctx)
    gut = rng.randint(2, 10)
    cw, chh = (w - gut) // 2, (h - gut) // 2
    cell = rng.randrange(4)
    others = ctx["fillers"](3, rng)
    canvas = Image.new("RGB", (2 * cw + gut, 2 * chh + gut), (255, 255, 255))
    pics, k = [], 0
    for i in range(4):
        if i == cell:
            p = ImageOps.fit(img, (cw, chh), Image.LANCZOS)
            pics.append("query")
        else:
            name, other = others[k]
            k += 1
            p = ImageOps.fit(other, (cw, chh), Image.LANCZOS)
            pics.append(name)
        canvas.paste(p, ((i % 2) * (cw + gut), (i // 2) * (chh + gut)))
    return canvas, {"cell": cell, "cells": pics, "gutter": gut}


def screenshot_app(img, rng, ctx):
    """Variant b: a phone app's product page: top bar, the picture (rounded corners) over
    45-70% of the screen, a thumbnail strip, price and buttons, a bottom navigation bar."""
    cover = _u(rng, *P(ctx)["screenshot_cover"])
    w0, h0 = img.size
    cw = rng.choice([720, 828, 1080])
    s = cw * rng.uniform(0.86, 1.0) / w0
    w, h = max(16, round(w0 * s)), max(16, round(h0 * s))
    ch = max(h + 40, round(w * h / cover / cw))
    dark = rng.random() < 0.4
    bg = (18, 18, 20) if dark else (246, 246, 248)
    ink = (235, 235, 235) if dark else (20, 20, 20)
    canvas = Image.new("RGB", (cw, ch), bg)
    d = ImageDraw.Draw(canvas)
    fs = max(10, round(cw * 0.035))
    f = _font(fs)
    bar = round(fs * 2.4)
    top = min(bar + rng.randint(0, fs), ch - h)
    d.rectangle((0, 0, cw, bar), fill=(255, 255, 255) if not dark else (35, 35, 40))
    d.text((fs, bar // 2 - fs // 2), rng.choice(["< Back", "Search products", "Shop"]), font=f, fill=ink)
    left = (cw - w) // 2
    pic = img.resize((w, h), Image.LANCZOS)
    m = Image.new("L", (w, h), 0)
    ImageDraw.Draw(m).rounded_rectangle((0, 0, w - 1, h - 1), radius=max(2, round(min(w, h) * 0.04)), fill=255)
    canvas.paste(pic, (left, top), m)
    y = top + h + fs // 2
    if y + fs * 3 < ch:
        t = min(round(fs * 2.6), ch - y - 2)
        for x in range(fs, cw - t, t + fs // 2):
            d.rounded_rectangle((x, y, x + t, y + t), radius=fs // 3, fill=(60, 60, 66) if dark else (220, 220, 226))
        y += t + fs // 2
    while y + fs * 2 < ch - bar:
        if rng.random() < 0.4:
            d.text((fs, y), f"US ${rng.randint(3, 250)}.{rng.choice(['99', '49', '00'])}", font=_font(round(fs * 1.4)),
                   fill=(230, 60, 40))
            y += round(fs * 2.2)
        else:
            d.text((fs, y), rng.choice(UI_WORDS), font=f, fill=ink)
            y += round(fs * 1.7)
    d.rectangle((0, ch - bar, cw, ch), fill=(255, 255, 255) if not dark else (35, 35, 40))
    for i, word in enumerate(["Home", "Cart", "Me"]):
        d.text((fs + i * cw // 3, ch - bar + bar // 3), word, font=f, fill=ink)
    area = (w * h) / (cw * ch)
    return canvas, {"template": "app", "cover": round(area, 3), "picture_scale": round(s, 3), "canvas": [cw, ch],
                    "at": [left, top], "dark": dark}


def collage_uneven(img, rng, ctx):
    """Variant b: a 2x2 collage with uneven cells (the picture's cell 40-60% of each side)
    and thick coloured gutters."""
    w, h = img.size
    gut = rng.randint(6, 24)
    fx, fy = rng.uniform(0.4, 0.6), rng.uniform(0.4, 0.6)
    colour = rng.choice([(255, 255, 255), (240, 240, 240), (20, 20, 20), (250, 220, 200)])
    W, H = w, h
    xs = [0, round((W - gut) * fx) + gut]
    ws = [round((W - gut) * fx), W - gut - round((W - gut) * fx)]
    ys = [0, round((H - gut) * fy) + gut]
    hs = [round((H - gut) * fy), H - gut - round((H - gut) * fy)]
    cell = rng.randrange(4)
    others = ctx["fillers"](3, rng)
    canvas = Image.new("RGB", (W, H), colour)
    pics, k = [], 0
    for i in range(4):
        cx, cy = i % 2, i // 2
        size = (max(8, ws[cx]), max(8, hs[cy]))
        if i == cell:
            p = ImageOps.fit(img, size, Image.LANCZOS)
            pics.append("query")
        else:
            name, other = others[k]
            k += 1
            p = ImageOps.fit(other, size, Image.LANCZOS)
            pics.append(name)
        canvas.paste(p, (xs[cx], ys[cy]))
    return canvas, {"template": "uneven", "cell": cell, "cells": pics, "gutter": gut,
                    "split": [round(fx, 3), round(fy, 3)]}


def _perspective_coeffs(src, dst):
    # coefficients mapping output (dst) points to input (src) points, as PIL wants
    m = []
    for (x, y), (u, v) in zip(dst, src):
        m.append([x, y, 1, 0, 0, 0, -u * x, -u * y])
        m.append([0, 0, 0, x, y, 1, -v * x, -v * y])
    a = np.array(m, dtype=np.float64)
    b = np.array([c for p in src for c in p], dtype=np.float64)
    return np.linalg.solve(a, b).tolist()


def perspective(img, rng, ctx):
    w, h = img.size
    k = _u(rng, *P(ctx)["perspective"])
    side = rng.choice(["left", "right", "top", "bottom"])
    dx, dy = k * w, k * h
    dst = [[0, 0], [w, 0], [w, h], [0, h]]
    if side == "left":
        dst[0][1] += dy; dst[3][1] -= dy
    elif side == "right":
        dst[1][1] += dy; dst[2][1] -= dy
    elif side == "top":
        dst[0][0] += dx; dst[1][0] -= dx
    else:
        dst[3][0] += dx; dst[2][0] -= dx
    j = P(ctx)["perspective_jitter"]
    jitter = [[p[0] + rng.uniform(-j, j) * w, p[1] + rng.uniform(-j, j) * h] for p in dst]
    coeffs = _perspective_coeffs([(0, 0), (w, 0), (w, h), (0, h)], jitter)
    out = img.transform((w, h), Image.PERSPECTIVE, coeffs, RESAMPLE, fillcolor=(255, 255, 255))
    return out, {"strength": k, "side": side}


EDITS = [
    Edit("jpeg", "easy", 9, jpeg),
    Edit("resize", "easy", 8, resize),
    Edit("brightness", "easy", 3, brightness),
    Edit("contrast", "easy", 3, contrast),
    Edit("gamma", "easy", 3, gamma),
    Edit("saturation", "easy", 3, saturation),
    Edit("crop_small", "medium", 1, crop_small),
    Edit("text_overlay", "medium", 5, text_overlay),
    Edit("pad_square", "medium", 6, pad_square),
    Edit("mirror", "medium", 2, mirror),
    Edit("grayscale", "medium", 4, grayscale),
    Edit("blur", "medium", 4, blur),
    Edit("noise", "medium", 4, noise),
    Edit("hue_shift", "medium", 3, hue_shift),
    Edit("crop_offcentre", "hard", 1, crop_offcentre),
    Edit("rotate90", "hard", 2, rotate90),
    Edit("rotate180", "hard", 2, rotate180),
    Edit("rotate_small", "hard", 2, rotate_small),
    Edit("screenshot", "hard", 7, screenshot),
    Edit("collage2x2", "hard", 7, collage2x2),
    Edit("perspective", "hard", 2, perspective),
]
BY_NAME = {e.name: e for e in EDITS}
RECOLOUR = "logo_recolour"
RECOLOUR_TIER = "medium"
TIERS = ["easy", "medium", "hard"]
TIER_RANK = {t: i for i, t in enumerate(TIERS)}
# Edits that do not go together in one chain (same group: at most one of them).
EXCLUSIVE = [{"rotate90", "rotate180", "rotate_small", "perspective"}, {"crop_small", "crop_offcentre"},
             {"screenshot", "collage2x2", "pad_square"}, {"grayscale", "hue_shift", "saturation"}]


def random_chain(rng: random.Random, length: int) -> list[str]:
    """2-3 compatible edits, at most one hard, in a natural order."""
    while True:
        names = rng.sample([e.name for e in EDITS], length)
        if sum(BY_NAME[n].tier == "hard" for n in names) > 1:
            continue
        if any(len(g & set(names)) > 1 for g in EXCLUSIVE):
            continue
        return sorted(names, key=lambda n: (BY_NAME[n].stage, n))


def apply_chain(img: Image.Image, names: list[str], rng: random.Random, ctx: dict):
    """Apply the edits in order. Returns (image, records, jpeg_quality): when the chain ends
    with `jpeg`, that last re-encode is left to the caller's save (jpeg_quality is its
    quality) so the file is not compressed twice; otherwise jpeg_quality is None."""
    done = []
    final_q = None
    for i, n in enumerate(names):
        e = BY_NAME[n]
        if n == "jpeg" and i == len(names) - 1:
            q = rng.randint(*P(ctx)["jpeg"])
            done.append({"name": n, "tier": e.tier, "params": {"quality": q}})
            final_q = q
            break
        img, params = e.fn(img, rng, ctx)
        if img.mode != "RGB":
            img = img.convert("RGB")
        done.append({"name": n, "tier": e.tier, "params": params})
    return img, done, final_q


def chain_tier(names: list[str]) -> str:
    return max((BY_NAME[n].tier for n in names), key=TIER_RANK.__getitem__)
