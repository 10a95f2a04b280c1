"""Wikimedia's upload host: standard thumbnail widths, and the thumbnail URL of an original file.

upload.wikimedia.org serves thumbnails only at the widths of `$wgThumbnailSteps` (`STEPS`; in
force since January 2026, FORMATS.md §5c). A URL that builds any other width into its path is
refused with HTTP 429, a body pointing at the list (`https://w.wiki/GHai`) and no Retry-After: a
permanent refusal no retry cures (`is_steps_refusal`), counted as its own drop reason
(`thumbnail_width_refused`) and never retried.

An original file (`/wikipedia/commons/a/ab/Name.jpg`, what WIT's `image_url` holds) is fetched as
its thumbnail (`/wikipedia/commons/thumb/a/ab/Name.jpg/330px-Name.jpg`) when the original is wider
than the step we store from: a 330 px JPEG of a few tens of KB instead of a multi-MB camera
photo or a 5,000 px TIFF (`fetch_url`). The thumbnail's name follows MediaWiki's
`File::generateThumbName`:

- `<W>px-<Name>` for bitmaps served in their own format (JPEG, PNG, GIF, WebP);
- `<W>px-<Name>.png` for formats thumbnailed to PNG (SVG, BMP, XCF);
- `lossy-page1-<W>px-<Name>.jpg` for TIFF, `page1-<W>px-<Name>.jpg` for PDF and DjVu;
- `<W>px--<Name>.jpg` for a video's still (WebM, Ogg video);
- a name longer than 160 bytes is abbreviated to `thumbnail.<ext>` (Wikimedia's file repos set
  `abbrvThreshold` to 160).

A thumbnail URL already at a step is fetched as it is; one at any other width (old pages'
`220px-`, srcset's `375px-`) is fetched at the step instead. The row keeps the URL its source
gave; only the request changes.
"""

from __future__ import annotations

import bisect
import re
from typing import NamedTuple
from urllib.parse import unquote, urlsplit, urlunsplit

# mediawiki.org, "Manual:$wgThumbnailSteps" (Wikimedia's values).
STEPS = (20, 40, 60, 120, 250, 330, 500, 960, 1280, 1920, 3840)
STEPS_URL = "https://w.wiki/GHai"  # the page the refusal points at
UPLOAD_HOSTS = frozenset({"upload.wikimedia.org"})
# A refusal's body names the steps page, or the steps themselves.
_REFUSAL = re.compile(
    rb"w\.wiki/GHai|thumbnail[ _-]?steps|wgThumbnailSteps|standard thumbnail (?:size|width)", re.I
)
ABBREVIATE_OVER = 160  # bytes of a file name (UTF-8) above which the thumb is `thumbnail.<ext>`

# Extension (lower case) -> (prefix before `<W>px`, text after `px-`, suffix after the name).
_PLAIN = ("", "-", "")
_THUMB_STYLE = {
    "jpg": _PLAIN,
    "jpeg": _PLAIN,
    "jpe": _PLAIN,
    "png": _PLAIN,
    "gif": _PLAIN,
    "webp": _PLAIN,
    "svg": ("", "-", ".png"),
    "bmp": ("", "-", ".png"),
    "xcf": ("", "-", ".png"),
    "tif": ("lossy-page1-", "-", ".jpg"),
    "tiff": ("lossy-page1-", "-", ".jpg"),
    "pdf": ("page1-", "-", ".jpg"),
    "djvu": ("page1-", "-", ".jpg"),
    "webm": ("", "--", ".jpg"),
    "ogv": ("", "--", ".jpg"),
}
# Formats the host must convert (never fetched as the original when a thumbnail can be had).
_CONVERTED = frozenset(ext for ext, style in _THUMB_STYLE.items() if style[2])
# /<project>/<wiki>/[thumb/]<h>/<hh>/<Name>[/<thumb name>]
_ORIGINAL = re.compile(r"^(?P<root>/[^/]+/[^/]+)/(?P<h>[0-9a-f])/(?P=h)[0-9a-f]/(?P<name>[^/]+)$")
_THUMB = re.compile(
    r"^(?P<root>/[^/]+/[^/]+)/thumb/(?P<h>[0-9a-f])/(?P<hh>(?P=h)[0-9a-f])/(?P<name>[^/]+)"
    r"/(?P<prefix>(?:lossy-)?(?:page\d+-)?)(?P<width>\d+)px-(?P<rest>[^/]*)$"
)


def is_step(width: int) -> bool:
    return width in STEPS


def step_at_least(width: int) -> int:
    """The smallest standard width at or above `width` (the largest step when none is)."""
    i = bisect.bisect_left(STEPS, width)
    return STEPS[min(i, len(STEPS) - 1)]


def nearest_step(width: int) -> int:
    """The standard width closest to `width` (the larger one on a tie)."""
    return min(STEPS, key=lambda s: (abs(s - width), -s))


class UploadFile(NamedTuple):
    """A file URL on the upload host: its parts, and the thumbnail width it asks for (None: the
    original)."""

    scheme: str
    host: str
    root: str  # /wikipedia/commons
    hash_path: str  # a/ab
    name: str  # as in the URL (percent-encoded)
    width: int | None


def parse_upload_url(url: str) -> UploadFile | None:
    """The parts of an upload.wikimedia.org original or thumbnail URL; None for anything else."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return None
    if (parts.hostname or "").lower() not in UPLOAD_HOSTS or parts.query:
        return None
    m = _THUMB.match(parts.path)
    if m:
        hash_path = f"{m['h']}/{m['hh']}"
        width = int(m["width"])
        return UploadFile(parts.scheme, parts.netloc, m["root"], hash_path, m["name"], width)
    m = _ORIGINAL.match(parts.path)
    if m:
        hash_path = parts.path[len(m["root"]) + 1 :].rsplit("/", 1)[0]
        return UploadFile(parts.scheme, parts.netloc, m["root"], hash_path, m["name"], None)
    return None


def thumbnail_name(name: str, width: int) -> str | None:
    """MediaWiki's thumbnail file name of `name` (percent-encoded as in the URL) at `width`;
    None for a file type the host does not thumbnail."""
    ext = name.rsplit(".", 1)[-1].lower() if "." in name else ""
    style = _THUMB_STYLE.get(ext)
    if style is None:
        return None
    prefix, joint, suffix = style
    if len(unquote(name).encode("utf-8")) > ABBREVIATE_OVER:
        name = f"thumbnail.{name.rsplit('.', 1)[-1]}"
    return f"{prefix}{width}px{joint}{name}{suffix}"


def thumbnail_url(file: UploadFile, width: int) -> str | None:
    """The URL of `file`'s thumbnail at `width`; None when the file type has none."""
    thumb = thumbnail_name(file.name, width)
    if thumb is None:
        return None
    path = f"{file.root}/thumb/{file.hash_path}/{file.name}/{thumb}"
    return urlunsplit((file.scheme, file.host, path, "", ""))


def original_path(file: UploadFile) -> str:
    """The path of `file`'s original on the host (`/wikipedia/commons/a/ab/Name.jpg`)."""
    return f"{file.root}/{file.hash_path}/{file.name}"


def original_url(file: UploadFile) -> str:
    return urlunsplit((file.scheme, file.host, original_path(file), "", ""))


def fetch_url(url: str, step: int | None, original_width: int | None = None) -> str:
    """The URL to request for an image whose source gave `url`: on the upload host, the
    thumbnail at `step` instead of an original wider than `step` (or of unknown width, or of a
    type the host converts: SVG, TIFF, PDF ...), and a thumbnail at a width that is not a
    step moved to `step`. Any other URL, and everything when `step` is None, is unchanged."""
    if step is None:
        return url
    file = parse_upload_url(url)
    if file is None:
        return url
    if file.width is not None:  # a thumbnail already
        if is_step(file.width):
            return url
        return thumbnail_url(file, step) or url
    ext = file.name.rsplit(".", 1)[-1].lower() if "." in file.name else ""
    if ext not in _CONVERTED and original_width is not None and original_width <= step:
        return url  # the original is no wider than the thumbnail would be
    return thumbnail_url(file, step) or url


def is_steps_refusal(status: int, body: bytes, url: str = "") -> bool:
    """Whether an answer is the upload host's permanent refusal of a non-standard width: a 429
    whose body points at the steps, or any 429 to an upload-host thumbnail URL whose width is
    not a step."""
    if status != 429:
        return False
    if _REFUSAL.search(body or b""):
        return True
    file = parse_upload_url(url) if url else None
    return file is not None and file.width is not None and not is_step(file.width)
