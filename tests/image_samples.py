"""Generated images for the image tests and benchmark: photo-like JPEGs and the awkward cases
(CMYK, palette with transparency, 16-bit grey, EXIF-rotated, animated, a decompression bomb)."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
from PIL import Image, ImageDraw


def photo(
    width: int,
    height: int,
    seed: int = 0,
    *,
    rng: np.random.Generator | None = None,
    cell: int = 96,
    shapes: int | tuple[int, int] = 6,
) -> Image.Image:
    """A photo-like RGB image: smooth colour regions, a few shapes, some fine grain.

    `rng`: draw from this generator (a sequence of images from one) instead of one seeded by
    `seed`; `cell`: the pixels of one random colour before smoothing; `shapes`: how many, or
    (low, high) to draw the number from `rng`."""
    rng = rng if rng is not None else np.random.default_rng(seed)
    coarse = rng.integers(
        0, 256, (max(2, height // cell), max(2, width // cell), 3), dtype=np.uint8
    )
    img = Image.fromarray(coarse, "RGB").resize((width, height), Image.Resampling.BICUBIC)
    draw = ImageDraw.Draw(img)
    count = shapes if isinstance(shapes, int) else int(rng.integers(*shapes))
    for _ in range(count):
        x0, y0 = int(rng.integers(0, width)), int(rng.integers(0, height))
        x1 = x0 + int(rng.integers(width // 10, width // 3 + 2))
        y1 = y0 + int(rng.integers(height // 10, height // 3 + 2))
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)((x0, y0, x1, y1), fill=colour)
    grain = rng.normal(0, 5, (height, width, 1))
    pixels = np.clip(np.asarray(img, dtype=np.float32) + grain, 0, 255).astype(np.uint8)
    return Image.fromarray(pixels, "RGB")


def encode(img: Image.Image, fmt: str = "JPEG", **params) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **params)
    return buf.getvalue()


def jpeg(width: int = 320, height: int = 240, seed: int = 0, quality: int = 90) -> bytes:
    return encode(photo(width, height, seed), "JPEG", quality=quality)


def png(width: int = 320, height: int = 240, seed: int = 0) -> bytes:
    return encode(photo(width, height, seed), "PNG")


def cmyk_jpeg(width: int = 200, height: int = 150) -> bytes:
    return encode(photo(width, height, 3).convert("CMYK"), "JPEG", quality=90)


def palette_png_with_transparency(width: int = 120, height: int = 80) -> bytes:
    """A palette PNG whose index 0 is transparent: a red square on a transparent field."""
    img = Image.new("P", (width, height), 0)
    img.putpalette([0, 0, 0, 255, 0, 0] + [0] * (254 * 3))
    ImageDraw.Draw(img).rectangle((width // 4, height // 4, width // 2, height // 2), fill=1)
    return encode(img, "PNG", transparency=0)


def png16(width: int = 128, height: int = 96) -> bytes:
    """A 16-bit grey PNG with a horizontal ramp over the whole 0..65535 range."""
    ramp = np.linspace(0, 65535, width, dtype=np.float64)
    values = np.tile(ramp, (height, 1)).astype(np.uint16)
    return encode(Image.fromarray(values), "PNG")


def exif_rotated_jpeg(width: int = 300, height: int = 200, orientation: int = 6) -> bytes:
    """A `width` x `height` JPEG whose EXIF says to rotate it (6: 90 degrees clockwise)."""
    exif = Image.Exif()
    exif[0x0112] = orientation
    return encode(photo(width, height, 5), "JPEG", quality=90, exif=exif.tobytes())


def animated_gif(width: int = 100, height: int = 80, frames: int = 3) -> bytes:
    colours = [(255, 0, 0), (0, 255, 0), (0, 0, 255)]
    images = [Image.new("RGB", (width, height), colours[i % 3]) for i in range(frames)]
    return encode(images[0], "GIF", save_all=True, append_images=images[1:], duration=100)


def bomb_png(width: int = 100_000, height: int = 100_000) -> bytes:
    """A tiny PNG whose header claims `width` x `height` pixels (a decompression bomb)."""
    data = encode(Image.new("L", (8, 8)), "PNG")
    ihdr_at = 8  # after the PNG signature: length (4), b"IHDR" (4), 13 bytes, CRC (4)
    body = bytearray(data[ihdr_at + 8 : ihdr_at + 8 + 13])
    body[0:8] = struct.pack(">II", width, height)
    chunk = b"IHDR" + bytes(body)
    patched = struct.pack(">I", 13) + chunk + struct.pack(">I", zlib.crc32(chunk))
    return data[:ihdr_at] + patched + data[ihdr_at + 8 + 13 + 4 :]
