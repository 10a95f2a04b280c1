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
import os
import sys
from pathlib import Path

import yaml

from standins.images import (
    JPEG,
    NOT_FOUND,
    ImageHost,
    Reply,
    draw_picture,
    draw_placeholder,
    reencode,
)
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


def _picture(path: str) -> bytes:
    if path in ALIASES:
        return reencode(draw_picture(ALIASES[path]))
    return draw_picture(path)


def _other_hosts(path: str) -> Reply:
    """The CC hosts' and images.cocodataset.org's answers."""
    if "/dead/" in path:
        return NOT_FOUND
    if "/unavailable/" in path:
        return Reply(200, JPEG, draw_placeholder())
    return Reply(200, JPEG, _picture(path))


# Where upload.wikimedia.org is served on the demo's host.
WIKIMEDIA = "/" + HOSTS["https://upload.wikimedia.org/"].rstrip("/")


class DemoImageHost(ImageHost):
    """The demo's image hosts on 127.0.0.1 (a free port); `wikimedia` is its
    upload.wikimedia.org (`UploadRules`: what it was asked, the most in flight, what it
    refused)."""

    def __init__(self) -> None:
        super().__init__(fallback=_other_hosts)
        self.wikimedia = UploadRules(lambda path: _picture(WIKIMEDIA + path))
        self.mount(WIKIMEDIA, self.wikimedia)


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
    images = DemoImageHost().start()
    wiki = WikiStandIn(WIKI_SAMPLES).start()
    try:
        manifest = demo_manifest(images.port, model, wiki.api_url)
        output = Path(args.output).resolve()
        path = output.parent / f"{output.name}.manifest.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(
            yaml.safe_dump(manifest, allow_unicode=True, sort_keys=False), encoding="utf-8"
        )
        print(
            f"manifest: {path} (Wikipedia from the stand-in at {wiki.api_url}, images from the "
            f"local server on port {images.port})"
        )
        return pipeline_main(["run", str(path), "--output", str(output), *beam_args])
    finally:
        wiki.stop()
        images.stop()


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    sys.exit(main())
