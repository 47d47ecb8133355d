#!/usr/bin/env python3
"""Write the hand-made fuzz regression seeds into tests/fuzz-regressions/.

    python3 tools/fuzz_seeds.py            # (re)write the seeds, print what was written

tests/fuzz_regressions.rs replays every file in that directory through both fuzz
harnesses (image decode + hash, and gRPC request decode + check), and tools/fuzz.sh copies
them into the fuzz corpora as starting points. The files are committed; rerun this script
only to change them. Each is under 10 KB.

Names: `<target>-<what>`, where target is the fuzz target the input is aimed at
(decode_hash or grpc_request); crashes saved by tools/fuzz.sh are `<target>-<hash>`.

The nasty inputs (decompression bombs declared in headers, truncations, absurd counts,
out-of-range request fields) are built byte by byte with the standard library. A few
small valid images of every accepted format (GIF, BMP, TIFF, WebP, ...) are made with
Pillow (tools/requirements.txt) so the fuzzer starts inside each decoder; without Pillow
those are skipped.
"""

import io
import struct
import sys
import zlib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "tests" / "fuzz-regressions"
FIXTURES = ROOT / "tests" / "fixtures"
MAX_SIZE = 10 * 1024

# ---------------------------------------------------------------- images, by hand


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png(width: int, height: int, idat: bytes, color_type: int = 2, extra: bytes = b"") -> bytes:
    ihdr = struct.pack(">IIBBBBB", width, height, 8, color_type, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", ihdr)
        + extra
        + png_chunk(b"IDAT", idat)
        + png_chunk(b"IEND", b"")
    )


def png_gray(width: int, height: int) -> bytes:
    """A valid, all-black 8-bit grayscale PNG (compresses to almost nothing)."""
    raw = (b"\x00" + b"\x00" * width) * height
    return png(width, height, zlib.compress(raw, 9), color_type=0)


def gif(screen: tuple, frame: tuple, offset: tuple = (0, 0)) -> bytes:
    """A GIF89a with a 2-colour global table and one frame holding a single pixel of data."""
    out = b"GIF89a" + struct.pack("<HHBBB", screen[0], screen[1], 0x80, 0, 0)
    out += b"\x00\x00\x00\xff\xff\xff"
    out += b"\x2c" + struct.pack("<HHHHB", offset[0], offset[1], frame[0], frame[1], 0)
    out += b"\x02\x02\x44\x01\x00"  # LZW min code size 2: clear, index 0, end
    return out + b"\x3b"


def tiff(entries: list, tail: bytes = b"") -> bytes:
    """A little-endian TIFF with one IFD. entries: (tag, type, count, value); type 3 =
    SHORT, 4 = LONG. Values are inline (the fuzz inputs lie about counts on purpose)."""
    entries = sorted(entries)
    ifd = struct.pack("<H", len(entries))
    for tag, typ, count, value in entries:
        packed = struct.pack("<HI", value, 0)[:4] if typ == 3 else struct.pack("<I", value)
        ifd += struct.pack("<HHI", tag, typ, count) + packed
    ifd += struct.pack("<I", 0)
    return b"II*\x00" + struct.pack("<I", 8) + ifd + tail


def tiff_gray(width, height, rows_per_strip, strip_count, byte_count, offset=8, tile=None):
    entries = [
        (256, 4, 1, width),
        (257, 4, 1, height),
        (258, 3, 1, 8),
        (259, 3, 1, 1),
        (262, 3, 1, 1),
        (277, 3, 1, 1),
    ]
    if tile is None:
        entries += [(273, 4, strip_count, offset), (278, 4, 1, rows_per_strip), (279, 4, strip_count, byte_count)]
    else:
        tw, th = tile
        entries += [(322, 3, 1, tw), (323, 3, 1, th), (324, 4, strip_count, offset), (325, 4, strip_count, byte_count)]
    return tiff(entries, tail=b"\x80" * 64)


def bmp(width, height, bpp=24, compression=0, pixels=b"\x00" * 16, palette=b""):
    """A BMP with a BITMAPINFOHEADER; `palette` is 4 bytes (B, G, R, 0) per colour."""
    colours = len(palette) // 4
    dib = struct.pack("<IiiHHIIiiII", 40, width, height, 1, bpp, compression, len(pixels), 2835, 2835, colours, 0)
    offset = 14 + len(dib) + len(palette)
    return b"BM" + struct.pack("<IHHI", offset + len(pixels), 0, 0, offset) + dib + palette + pixels


def webp_vp8x(width: int, height: int) -> bytes:
    body = b"VP8X" + struct.pack("<I", 10) + b"\x00\x00\x00\x00"
    body += (width - 1).to_bytes(3, "little") + (height - 1).to_bytes(3, "little")
    return b"RIFF" + struct.pack("<I", 4 + len(body)) + b"WEBP" + body


def jpeg_with_size(jpeg: bytes, width: int, height: int) -> bytes:
    """Rewrite the frame header (SOF0/SOF2) of `jpeg` to declare width × height."""
    for marker in (b"\xff\xc0", b"\xff\xc2"):
        at = jpeg.find(marker)
        if at >= 0:
            return jpeg[: at + 5] + struct.pack(">HH", height, width) + jpeg[at + 9 :]
    raise ValueError("no SOF0/SOF2 marker")


# ---------------------------------------------------------------- protobuf, by hand


def varint(n: int) -> bytes:
    n &= (1 << 64) - 1  # negative int32 values are sign-extended to 10 bytes
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def field_varint(number: int, value: int) -> bytes:
    return varint(number << 3) + varint(value)


def field_bytes(number: int, value: bytes) -> bytes:
    return varint(number << 3 | 2) + varint(len(value)) + value


def precomputed_hash(pdq: str, quality=None) -> bytes:
    out = field_bytes(1, pdq.encode())
    if quality is not None:
        out += field_varint(2, quality)
    return out


# MatchRequest: 1 image, 2 hash, 3 request_id, 4 k, 5 brand, 6 label, 7 flag_distance,
# 8 review_distance, 9 min_quality, 10 nearest.
# AddImageRequest: 1 image, 2 hash, 3 brand, 4 label, 5 external_id, 6 note, 7 source.
# DeleteRequest / GetRequest: 1 id, 2 external { 1 brand, 2 external_id }.


def add_request(content: bytes, brand=b"acme", label=1, external_id=b"sku-1", note=b"") -> bytes:
    out = content + field_bytes(3, brand) + field_varint(4, label) + field_bytes(5, external_id)
    return out + (field_bytes(6, note) if note else b"")


# ---------------------------------------------------------------- the seeds


def hand_made() -> dict:
    tiny_png = png_gray(1, 1)
    bomb_png = png(60_000, 60_000, b"\x78\x9c\x01\x02")
    huge_gif = gif((65_535, 65_535), (1, 1))
    hubble = (FIXTURES / "hubble_deep_field_blur.jpg").read_bytes()
    hex64 = "0123456789abcdef" * 4
    seeds = {
        # Images: every declared size over the fuzzer's 4-megapixel limit must be refused
        # from the header, before anything is allocated.
        "decode_hash-empty": b"",
        "decode_hash-png-60000x60000": bomb_png,
        "decode_hash-png-1x4294967295": png(1, 0xFFFF_FFFF, b"\x78\x9c\x01\x02"),
        "decode_hash-png-0x0": png(0, 0, b"\x78\x9c\x03\x00\x00\x00\x00\x01"),
        # Exactly at the limit (2000 × 2000 = 4 000 000): accepted, decoded, hashed.
        "decode_hash-png-2000x2000-at-limit": png_gray(2000, 2000),
        "decode_hash-png-2001x2000-over-limit": png_gray(2001, 2000),
        # An APNG whose first frame claims to be far larger than the image.
        "decode_hash-png-apng-frame-60000x60000": png(
            1,
            1,
            zlib.compress(b"\x00\x00\x00\x00"),
            extra=png_chunk(b"acTL", struct.pack(">II", 1, 0))
            + png_chunk(b"fcTL", struct.pack(">IIIIIHHBB", 0, 60_000, 60_000, 0, 0, 1, 1, 0, 0)),
        ),
        # 8 MB of zeros in a compressed text chunk of a 1×1 image.
        "decode_hash-png-ztxt-8mb": png(
            1,
            1,
            zlib.compress(b"\x00\x00\x00\x00"),
            extra=png_chunk(b"zTXt", b"Comment\x00\x00" + zlib.compress(b"\x00" * (8 << 20), 9)),
        ),
        "decode_hash-gif-screen-65535x65535": huge_gif,
        # A 1×1 screen whose frame claims 60000 × 60000 at the far corner.
        "decode_hash-gif-frame-beyond-screen": gif((1, 1), (60_000, 60_000), (65_535, 65_535)),
        "decode_hash-gif-truncated": huge_gif[:20],
        # Cut in the middle of the scan: no end-of-image marker.
        "decode_hash-jpeg-truncated": hubble[:6000],
        # Cut, then an end-of-image marker appended: passes the marker check, data missing.
        "decode_hash-jpeg-truncated-with-eoi": hubble[:6000] + b"\xff\xd9",
        "decode_hash-jpeg-soi-only": b"\xff\xd8\xff",
        # 16 strips of 1 row declared as 268 million strips (a 1 GiB offsets array).
        "decode_hash-tiff-absurd-strip-count": tiff_gray(16, 16, 1, 0x1000_0000, 1),
        "decode_hash-tiff-strip-bytes-4gib": tiff_gray(16, 16, 16, 1, 0xFFFF_FFFF),
        "decode_hash-tiff-rows-per-strip-zero": tiff_gray(16, 16, 0, 1, 64, offset=0x60),
        "decode_hash-tiff-tile-0x0": tiff_gray(16, 16, 0, 1, 64, offset=0x60, tile=(0, 0)),
        "decode_hash-tiff-65535x65535": tiff_gray(65_535, 65_535, 1, 1, 64, offset=0x60),
        "decode_hash-bmp-100000x-100000": bmp(100_000, -100_000),
        "decode_hash-bmp-height-i32-min": bmp(1, -(2**31)),
        "decode_hash-bmp-rle8-1999x2000": bmp(1999, 2000, bpp=8, compression=1, pixels=b"\x00\x01" * 8),
        # Tiny files that decode to a full-size canvas (at the fuzzer's 4-megapixel limit):
        # the decoders fill what the data leaves out. Accepted today; the cost per input
        # byte is the point (at the server's 100-megapixel limit the same tricks cost
        # about a gigabyte and seconds per request).
        "decode_hash-gif-screen-2000x2000-one-pixel": gif((2000, 2000), (1, 1)),
        "decode_hash-bmp-rle8-2000x2000-end-of-bitmap": bmp(
            2000, 2000, bpp=8, compression=1, pixels=b"\x00\x01", palette=b"\x00\x00\x00\x00\xff\xff\xff\x00"
        ),
        "decode_hash-webp-vp8x-16777216x16777216": webp_vp8x(1 << 24, 1 << 24),
        "decode_hash-webp-riff-only": b"RIFF\x04\x00\x00\x00WEBP",
        # Requests.
        "grpc_request-match-huge-k": field_bytes(1, tiny_png) + field_varint(4, 0xFFFF_FFFF),
        "grpc_request-match-k-zero": field_bytes(2, precomputed_hash(hex64)) + field_varint(4, 0),
        "grpc_request-match-k-1000-distances-128": field_bytes(2, precomputed_hash(hex64))
        + field_varint(4, 1000)
        + field_varint(7, 128)
        + field_varint(8, 128)
        + field_varint(9, 100),
        "grpc_request-match-flag-above-review": field_bytes(1, tiny_png) + field_varint(7, 100) + field_varint(8, 10),
        "grpc_request-match-distance-u32-max": field_bytes(1, tiny_png) + field_varint(7, 0xFFFF_FFFF),
        "grpc_request-match-label-negative": field_bytes(1, tiny_png) + field_varint(6, -1),
        "grpc_request-match-quality-u32-max": field_bytes(2, precomputed_hash(hex64, 0xFFFF_FFFF)),
        # 64 bytes of PDQ that are 32 two-byte characters.
        "grpc_request-match-pdq-multibyte": field_bytes(2, precomputed_hash("é" * 32)),
        "grpc_request-match-pdq-padded": field_bytes(2, precomputed_hash("\u3000" + hex64 + " \t\n")),
        "grpc_request-match-request-id-600-bytes": field_bytes(1, tiny_png) + field_bytes(3, b"r" * 600),
        "grpc_request-match-png-bomb": field_bytes(1, bomb_png) + field_bytes(3, b"bomb"),
        "grpc_request-match-gif-huge-screen": field_bytes(1, huge_gif) + field_varint(10, 1),
        "grpc_request-add-png-bomb": add_request(field_bytes(1, bomb_png)),
        "grpc_request-add-valid-tiny-png": add_request(field_bytes(1, tiny_png), note=b"a note"),
        "grpc_request-add-brand-control-chars": add_request(field_bytes(1, tiny_png), brand=b"ac\x00me\x1b"),
        "grpc_request-add-brand-spaces": add_request(field_bytes(2, precomputed_hash(hex64)), brand=b" acme "),
        "grpc_request-add-label-unknown": add_request(field_bytes(2, precomputed_hash(hex64, 50)), label=7),
        "grpc_request-add-note-5000-bytes": add_request(field_bytes(1, tiny_png), note=b"n" * 5000),
        "grpc_request-delete-external-blank": field_bytes(2, field_bytes(1, b"  ") + field_bytes(2, b"")),
        "grpc_request-get-id-u64-max": field_varint(1, (1 << 64) - 1),
        # Not valid protobuf: a length of 4 GiB, a varint longer than 10 bytes, invalid
        # UTF-8 in a string field, 200 nested groups.
        "grpc_request-length-4gib": b"\x0a\xff\xff\xff\xff\x0f\x00",
        "grpc_request-varint-11-bytes": b"\x20" + b"\xff" * 10 + b"\x01",
        "grpc_request-string-invalid-utf8": field_bytes(3, b"\xff\xfe\xc0\x80"),
        "grpc_request-nested-groups": b"\x5b" * 200 + b"\x5c" * 200,
    }
    return seeds


def with_pillow() -> dict:
    """Small valid images of every accepted format, to start the fuzzer in each decoder."""
    try:
        from PIL import Image
    except ImportError:
        print("Pillow not installed: skipping the valid-image seeds (pip install -r tools/requirements.txt)")
        return {}

    def encode(img, fmt, **kw):
        buf = io.BytesIO()
        img.save(buf, fmt, **kw)
        return buf.getvalue()

    base = Image.open(FIXTURES / "coffee_tiny.png").convert("RGB").resize((24, 16))
    rgba = base.convert("RGBA")
    rgba.putalpha(Image.linear_gradient("L").resize((24, 16)))
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90° clockwise to display
    second = base.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    seeds = {
        "decode_hash-valid-jpeg-24x16-progressive-exif6": encode(base, "JPEG", progressive=True, exif=exif),
        "decode_hash-valid-jpeg-24x16-gray": encode(base.convert("L"), "JPEG", quality=60),
        "decode_hash-valid-png-24x16-rgba": encode(rgba, "PNG"),
        "decode_hash-valid-png-24x16-palette": encode(base.convert("P"), "PNG"),
        "decode_hash-valid-gif-24x16-2-frames": encode(
            base.convert("P"), "GIF", save_all=True, append_images=[second.convert("P")], duration=50, loop=0
        ),
        "decode_hash-valid-bmp-24x16": encode(base, "BMP"),
        "decode_hash-valid-bmp-24x16-palette": encode(base.convert("P"), "BMP"),
        "decode_hash-valid-tiff-24x16-lzw": encode(base, "TIFF", compression="tiff_lzw"),
        "decode_hash-valid-tiff-24x16-raw-rgba": encode(rgba, "TIFF"),
        "decode_hash-valid-webp-24x16-lossy": encode(base, "WEBP", quality=50),
        "decode_hash-valid-webp-24x16-lossless-alpha": encode(rgba, "WEBP", lossless=True),
    }
    small = encode(base, "JPEG", quality=50)
    seeds["decode_hash-jpeg-sof-65500x65500"] = jpeg_with_size(small, 65_500, 65_500)
    # Under the limit (1999 × 2000), but the scan holds data for 24 × 16 pixels only.
    seeds["decode_hash-jpeg-sof-1999x2000-tiny-scan"] = jpeg_with_size(small, 1999, 2000)
    # 2000 × 2000, with the end-of-image marker right after the start of the scan.
    sos = small.find(b"\xff\xda")
    header_len = struct.unpack(">H", small[sos + 2 : sos + 4])[0]
    seeds["decode_hash-jpeg-sof-2000x2000-empty-scan"] = (
        jpeg_with_size(small, 2000, 2000)[: sos + 2 + header_len] + b"\xff\xd9"
    )
    seeds["grpc_request-add-valid-webp"] = add_request(field_bytes(1, seeds["decode_hash-valid-webp-24x16-lossy"]))
    seeds["grpc_request-match-valid-gif"] = field_bytes(1, seeds["decode_hash-valid-gif-24x16-2-frames"])
    return seeds


def main() -> int:
    OUT.mkdir(parents=True, exist_ok=True)
    seeds = hand_made()
    seeds.update(with_pillow())
    for name, data in sorted(seeds.items()):
        if len(data) > MAX_SIZE:
            print(f"{name}: {len(data)} bytes, over {MAX_SIZE}", file=sys.stderr)
            return 1
        (OUT / name).write_bytes(data)
        print(f"{len(data):6d}  {name}")
    print(f"{len(seeds)} seeds in {OUT.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
