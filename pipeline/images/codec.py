"""Verify, decode, resize, encode and hash one image: the CPU work of the images stage.

- verify: Pillow must identify the bytes as an image of an allowed format whatever the
  Content-Type said (`not_an_image`); the header's width x height is checked against
  `max_pixels` before anything is decoded (`too_large`, the decompression-bomb guard) and both
  sides against `min_size` (`too_small`); a file that ends early is `decode_error`.
- normalise: EXIF orientation applied, first frame of an animation, every mode made RGB
  (alpha composited on white, 16-bit grey scaled to 8 bits, CMYK and palette converted).
- store: resized (`no`, `keep_ratio`: longest side `size`, never upscaled, `center_crop`: a
  `size` x `size` square), re-encoded as `format`; a JPEG is decoded with `draft()` straight at
  the smallest DCT scale that still covers the stored size.
- hash: imagehash pHash of the stored pixels and sha256 of the stored bytes.

`store_image` does all of it; a bad image raises `Rejected`, whose reason is the pair's drop
reason.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import struct
import warnings

import imagehash
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from pipeline.config import IMAGE_FORMATS, ImagesConfig
from pipeline.records import EXTENSIONS
from pipeline.store import StoredImage

# Formats Pillow may open (JPEG's opener also returns multi-picture MPO files). Leaves out the
# plugins that run external programs (EPS through Ghostscript) and the formats no image host
# serves for photographs (PSD, ICNS, FITS, ...). AVIF only where Pillow was built with it.
Image.init()
ALLOWED_FORMATS = tuple(
    f for f in ("JPEG", "PNG", "GIF", "WEBP", "BMP", "TIFF", "AVIF") if f in Image.OPEN
)
# config.format -> (Pillow format, MIME type, file extension), from the formats the manifest
# accepts (pipeline.config.IMAGE_FORMATS); the extension is the one a row's image is named
# with (pipeline.records.EXTENSIONS).
ENCODINGS = {
    fmt: (fmt.upper(), mime_type, EXTENSIONS[mime_type]) for fmt, mime_type in IMAGE_FORMATS.items()
}
# Pillow's `reducing_gap`: shrink by an integer factor with a box filter first, then Lanczos;
# 3.0 is indistinguishable from a plain Lanczos resize and several times faster on big images.
REDUCING_GAP = 3.0


class Rejected(Exception):
    """A pair's image cannot be kept; `reason` becomes its drop reason."""

    def __init__(self, reason: str, detail: str | None = None):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


def set_pillow_bomb_guard(max_pixels: int) -> None:
    """Makes Pillow's own decompression-bomb guard never reject what `max_pixels` allows."""
    # Pillow's own, process-wide guard raises DecompressionBombError above twice
    # MAX_IMAGE_PIXELS and only warns between once and twice. It is raised to `max_pixels` when
    # lower (never lowered: another stage in the process may allow more) so that it never
    # rejects what the config allows; `open_image` rejects above `max_pixels` itself, so the
    # warning band says nothing new.
    if Image.MAX_IMAGE_PIXELS is not None and max_pixels > Image.MAX_IMAGE_PIXELS:
        Image.MAX_IMAGE_PIXELS = max_pixels
    warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)


def _target_size(size: tuple[int, int], resize: str, side: int) -> tuple[int, int]:
    """The stored size of an image of `size` (before the crop, for center_crop)."""
    w, h = size
    if resize == "keep_ratio":
        scale = min(1.0, side / max(w, h))
    elif resize == "center_crop":
        scale = side / min(w, h)
    else:
        return w, h
    return max(1, round(w * scale)), max(1, round(h * scale))


def open_image(data: bytes, max_pixels: int, min_size: int) -> Image.Image:
    """The image in `data`, opened (header only) and checked; raises `Rejected`."""
    try:
        img = Image.open(io.BytesIO(data), formats=ALLOWED_FORMATS)
    except Image.DecompressionBombError as err:
        raise Rejected("too_large", str(err)) from None
    except UnidentifiedImageError:
        raise Rejected("not_an_image", f"{len(data)} bytes starting {data[:16]!r}") from None
    except (OSError, SyntaxError, ValueError, EOFError) as err:  # a plugin that gave up late
        raise Rejected("decode_error", f"{type(err).__name__}: {err}"[:200]) from None
    w, h = img.size
    if w * h > max_pixels:
        raise Rejected("too_large", f"{w}x{h} exceeds {max_pixels} pixels")
    if min(w, h) < min_size:
        raise Rejected("too_small", f"{w}x{h}, a side below {min_size}")
    return img


def to_rgb(img: Image.Image) -> Image.Image:
    """`img` as RGB: alpha composited on white, 16-bit grey scaled (not clipped) to 8 bits."""
    if img.mode == "RGB":
        return img
    if img.mode.startswith("I"):
        values = np.asarray(img)
        if img.mode != "I" or values.max(initial=0) > 255:
            values = np.clip(values, 0, 65535) >> 8  # a 16-bit range
        return Image.fromarray(np.clip(values, 0, 255).astype(np.uint8), "L").convert("RGB")
    if img.mode == "F":
        return img.convert("L").convert("RGB")
    palette_alpha = img.mode == "P" and img.palette is not None and "A" in img.palette.mode
    if (
        palette_alpha
        or "A" in img.getbands()
        or "a" in img.getbands()
        or "transparency" in img.info
    ):
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return img.convert("RGB")


def decode_image(img: Image.Image, resize: str, size: int, use_draft: bool = True) -> Image.Image:
    """The first frame of an opened image, decoded, upright, RGB. A JPEG is decoded at the
    smallest DCT scale (1/2, 1/4, 1/8) that is still at least the stored size on both sides."""
    try:
        if use_draft and resize != "no" and img.format in ("JPEG", "MPO"):
            img.draft("RGB", _target_size(img.size, resize, size))
        img.load()
    except (OSError, SyntaxError, ValueError, EOFError, IndexError, struct.error) as err:
        # Truncated data is an error here (LOAD_TRUNCATED_IMAGES stays off): half an image
        # would be kept, hashed and deduplicated as if whole.
        raise Rejected("decode_error", f"{type(err).__name__}: {err}"[:200]) from None
    # An unreadable EXIF block leaves the pixels as they are stored.
    with contextlib.suppress(OSError, SyntaxError, ValueError, KeyError, TypeError, struct.error):
        ImageOps.exif_transpose(img, in_place=True)
    try:
        return to_rgb(img)
    except (OSError, ValueError) as err:  # a mode Pillow cannot convert (LAB without a profile)
        raise Rejected("decode_error", f"{type(err).__name__}: {err}"[:200]) from None


def resize_image(img: Image.Image, resize: str, size: int) -> Image.Image:
    """`img` resized for storage: `no`; `keep_ratio` (longest side `size`, never upscaled);
    `center_crop` (the centred square, scaled to `size` x `size`, up if need be)."""
    w, h = img.size
    if resize == "keep_ratio":
        target = _target_size((w, h), resize, size)
        if target == (w, h):
            return img
        return img.resize(target, Image.Resampling.LANCZOS, reducing_gap=REDUCING_GAP)
    if resize == "center_crop":
        side = min(w, h)
        left, top = (w - side) // 2, (h - side) // 2
        box = (left, top, left + side, top + side)
        if side == size:
            return img.crop(box)
        return img.resize(
            (size, size), Image.Resampling.LANCZOS, box=box, reducing_gap=REDUCING_GAP
        )
    return img


def encode_image(img: Image.Image, fmt: str, quality: int) -> bytes:
    pillow_format, _, _ = ENCODINGS[fmt]
    buf = io.BytesIO()
    if fmt == "png":
        img.save(buf, pillow_format)
    else:
        img.save(buf, pillow_format, quality=quality)
    return buf.getvalue()


def store_image(data: bytes, config: ImagesConfig, use_draft: bool = True) -> StoredImage:
    """Verify, decode, resize, encode and hash the image in `data`; raises `Rejected`."""
    img = open_image(data, config.max_pixels, config.min_size)
    with img:
        rgb = decode_image(img, config.resize, config.size, use_draft)
    stored = resize_image(rgb, config.resize, config.size)
    encoded = encode_image(stored, config.format, config.quality)
    _, mime_type, extension = ENCODINGS[config.format]
    return StoredImage(
        data=encoded,
        width=stored.width,
        height=stored.height,
        phash=str(imagehash.phash(stored)),
        sha256=hashlib.sha256(encoded).hexdigest(),
        mime_type=mime_type,
        extension=extension,
    )
