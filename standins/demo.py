"""`make demo`: the demo dataset built from the samples in `manifests/`, every stage for real.

Arabic Wikipedia is stood in for by `standins.wiki` on 127.0.0.1, serving the pages and
file facts of `manifests/samples/wikipedia/` (team-written articles in the markup of each era);
the manifest's wikipedia source is pointed at it, with `site_url` keeping the rows' page URLs
those of ar.wikipedia.org. The image hosts of the samples (upload.wikimedia.org, the CC hosts,
images.cocodataset.org) are stood in for by a local HTTP server on 127.0.0.1 that draws a
deterministic picture for every path, with what real hosts do planted in: a path under `/dead/`
answers 404, as many CC links do; one under `/unavailable/` answers the same "photo unavailable"
placeholder; and `ALIASES` serve one Commons picture again, re-encoded and resized, under a CC
URL whose caption translates to the WIT caption of that picture (a cross-source duplicate).
upload.wikimedia.org keeps the live host's rules (`standins.upload`): thumbnails only at
standard widths, scaled from the original's picture, and at most 2 requests in flight. The
manifest's `images.url_map` sends the fetches there; the rows keep their real URLs. The
translator is a tiny CTranslate2 model built offline on first use; the shipped translation
memory covers all but three captions, which go through the tiny model and are dropped by the
translation quality filters.

    python -m standins.demo --output out/demo
"""

from __future__ import annotations

import argparse
import hashlib
import io
import os
import random
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import yaml
from PIL import Image, ImageDraw, ImageFilter

from standins.upload import UploadRules
from standins.wiki import WikiStandIn

REPO = Path(__file__).resolve().parent.parent
DEMO_MANIFEST = REPO / "manifests" / "demo.yaml"
# The pages and file facts the MediaWiki stand-in serves to the demo's crawl.
WIKI_SAMPLES = REPO / "manifests" / "samples" / "wikipedia"
# The hosts of the demo samples, each served under its own prefix by the local server.
HOSTS = {
    "https://upload.wikimedia.org/": "wikimedia/",
    "http://images.example/": "",  # its paths already start with /cc/
    "http://images.cocodataset.org/": "coco/",
}
# Server paths that serve another path's picture, re-encoded (a repost of the same photo).
ALIASES = {
    "/cc/4.jpg": "/wikimedia/wikipedia/commons/a/ae/Old_town_of_Fez_at_night.jpg",
}


def reencode(data: bytes, scale: float = 0.8, quality: int = 70) -> bytes:
    """The same picture as a repost would have it: smaller and recompressed."""
    image = Image.open(io.BytesIO(data))
    image = image.resize((round(image.width * scale), round(image.height * scale)))
    out = io.BytesIO()
    image.save(out, "JPEG", quality=quality)
    return out.getvalue()


def draw_placeholder() -> bytes:
    """A host's "this photo is no longer available" picture: the same bytes for every URL."""
    image = Image.new("RGB", (400, 300), (236, 236, 236))
    draw = ImageDraw.Draw(image)
    draw.rectangle([150, 90, 250, 170], outline=(160, 160, 160), width=6)
    draw.ellipse([185, 110, 215, 140], fill=(160, 160, 160))
    for y in (200, 222):
        draw.rectangle([110, y, 290, y + 10], fill=(190, 190, 190))
    out = io.BytesIO()
    image.save(out, "JPEG", quality=90)
    return out.getvalue()


def draw_picture(key: str) -> bytes:
    """A photo-like JPEG (a sky-to-ground gradient, blurred shapes), the same for the same key."""
    rng = random.Random(hashlib.sha256(key.encode()).digest())
    width, height = rng.choice([(640, 480), (480, 640), (800, 533), (512, 512), (1024, 683)])
    top = tuple(rng.randrange(40, 220) for _ in range(3))
    bottom = tuple(rng.randrange(20, 200) for _ in range(3))
    image = Image.new("RGB", (width, height))
    draw = ImageDraw.Draw(image)
    for y in range(height):
        t = y / (height - 1)
        draw.line(
            [(0, y), (width, y)],
            fill=tuple(round(a + (b - a) * t) for a, b in zip(top, bottom, strict=True)),
        )
    for _ in range(rng.randrange(4, 12)):
        x0, y0 = rng.randrange(width), rng.randrange(height)
        w, h = rng.randrange(20, width // 2), rng.randrange(20, height // 2)
        color = tuple(rng.randrange(256) for _ in range(3))
        shape = draw.ellipse if rng.random() < 0.5 else draw.rectangle
        shape([x0, y0, x0 + w, y0 + h], fill=color)
    image = image.filter(ImageFilter.GaussianBlur(1.5))
    out = io.BytesIO()
    image.save(out, "JPEG", quality=88)
    return out.getvalue()


def _picture(path: str) -> bytes:
    if path in ALIASES:
        return reencode(draw_picture(ALIASES[path]))
    return draw_picture(path)


# upload.wikimedia.org's rules (standard thumbnail widths, at most 2 in flight), under its prefix.
WIKIMEDIA = "/" + HOSTS["https://upload.wikimedia.org/"].rstrip("/")


def wikimedia_rules() -> UploadRules:
    return UploadRules(lambda path: _picture(WIKIMEDIA + path))


# For a server made around `_Handler` without its own (`start_image_server` gives each its own).
WIKIMEDIA_RULES = wikimedia_rules()


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 - the http.server API
        if "/dead/" in self.path:
            self.send_error(404)
            return
        if self.path.startswith(WIKIMEDIA + "/"):
            path = self.path[len(WIKIMEDIA) :]
            rules = getattr(self.server, "wikimedia", WIKIMEDIA_RULES)
            with rules.request(path) as refused:
                answer = refused or rules.answer(path)
            status, content_type, body = answer.status, answer.headers, answer.body
        elif "/unavailable/" in self.path:
            status, content_type, body = 200, {"Content-Type": "image/jpeg"}, draw_placeholder()
        else:
            status, content_type, body = 200, {"Content-Type": "image/jpeg"}, _picture(self.path)
        self.send_response(status)
        for name, value in content_type.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):  # keep the demo's output to the accounting
        pass


def start_image_server() -> ThreadingHTTPServer:
    """The stand-in image host on 127.0.0.1 (a free port), serving from a daemon thread;
    `server.wikimedia` is its upload.wikimedia.org (`UploadRules`: what it was asked, the most
    in flight, what it refused)."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.wikimedia = wikimedia_rules()
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def demo_manifest(port: int, model: Path, wiki_api: str, base: Path = DEMO_MANIFEST.parent) -> dict:
    """manifests/demo.yaml with absolute paths, the tiny model, the Wikipedia crawl sent to the
    stand-in at `wiki_api`, and image fetches sent to `port`."""
    raw = yaml.safe_load(DEMO_MANIFEST.read_text(encoding="utf-8"))
    for source in raw["sources"]:
        if source.get("kind") == "wikipedia" and source.get("api"):
            source["api"] = wiki_api
        for key in ("paths", "captions", "images", "image_root"):
            value = source.get(key)
            if isinstance(value, list):
                source[key] = [str(base / v) for v in value]
            elif isinstance(value, str):
                source[key] = str(base / value)
    translation = raw.setdefault("translation", {})
    translation["model"] = str(model)
    if translation.get("memory"):
        translation["memory"] = str(base / translation["memory"])
    images = raw.setdefault("images", {})
    images["url_map"] = {
        host: f"http://127.0.0.1:{port}/{prefix}" for host, prefix in HOSTS.items()
    }
    return raw


def main(argv: list[str] | None = None) -> int:
    from pipeline.__main__ import main as pipeline_main
    from standins.tiny_model import build_tiny_model

    parser = argparse.ArgumentParser(prog="python -m standins.demo", description=__doc__)
    parser.add_argument("--output", default="out/demo")
    parser.add_argument("--models", default="out/models", help="where the tiny model is built")
    args, beam_args = parser.parse_known_args(argv)

    model = Path(args.models).resolve() / "tiny-opus-en-ar"
    if not (model / "model.bin").is_file():
        print(f"building the tiny offline translation model in {model}")
        build_tiny_model(str(model), layout="opus")
    server = start_image_server()
    wiki = WikiStandIn(WIKI_SAMPLES).start()
    try:
        manifest = demo_manifest(server.server_address[1], model, wiki.api_url)
        output = Path(args.output).resolve()
        path = output.parent / f"{output.name}.manifest.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(
            yaml.safe_dump(manifest, allow_unicode=True, sort_keys=False), encoding="utf-8"
        )
        print(
            f"manifest: {path} (Wikipedia from the stand-in at {wiki.api_url}, images from the "
            f"local server on port {server.server_address[1]})"
        )
        return pipeline_main(["run", str(path), "--output", str(output), *beam_args])
    finally:
        wiki.stop()
        server.shutdown()


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    sys.exit(main())
