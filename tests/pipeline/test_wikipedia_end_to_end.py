"""`python -m pipeline run` with a `wikipedia` source: a crawl of the local MediaWiki stand-in
serving the team's sample pages, and an Enterprise dump of the same pages, give the same
genuine pairs with licences and attribution, every candidate accounted for."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from pipeline import wikimedia
from pipeline.__main__ import main
from pipeline.sources import wikipedia
from pipeline.text import normalize_caption
from standins.demo import DemoImageHost
from standins.wiki import WikiStandIn, status_fault

REPO = Path(__file__).resolve().parents[2]
SAMPLES = REPO / "manifests" / "samples" / "wikipedia"
AGENT = "arabic-pairs-tests/0.1 (https://example.org/arabic-pairs; tests@example.org)"


def expected() -> tuple[dict[str, str], dict[str, int], dict]:
    """From the samples: the captions the extractor keeps (caption -> file), the extractor's
    drop counts, and the file facts."""
    facts = json.loads((SAMPLES / "files.json").read_text(encoding="utf-8"))
    kept, reasons = {}, {}
    for figures in json.loads((SAMPLES / "expected.json").read_text(encoding="utf-8")).values():
        for f in figures:
            if f["reason"] is None:
                kept[f["caption"]] = f["file"]
            else:
                reasons[f["reason"]] = reasons.get(f["reason"], 0) + 1
    return kept, reasons, facts


def manifest(folder: Path, source: str, image_port: int) -> Path:
    path = folder / "manifest.yaml"
    path.write_text(
        f"name: wiki-e2e\nsources:\n{source}"
        "images:\n  allow_private_hosts: true\n  url_map:\n"
        f"    'https://upload.wikimedia.org/': 'http://127.0.0.1:{image_port}/wikimedia/'\n"
        "filters:\n  langid_min_score: 0.5\n",
        encoding="utf-8",
    )
    return path


@pytest.fixture(scope="module")
def servers():
    with DemoImageHost() as images, WikiStandIn(SAMPLES) as wiki:
        yield wiki, images.port, images.wikimedia


def run(tmp_path: Path, source: str, port: int) -> tuple[dict, list[dict]]:
    wikipedia._CLIENTS.clear()
    out = tmp_path / "out"
    assert main(["run", str(manifest(tmp_path, source, port)), "--output", str(out)]) == 0
    stats = json.loads((out / "stats.json").read_text(encoding="utf-8"))
    rows = pq.read_table(out / "data").to_pylist()
    return stats, rows


def check(stats: dict, rows: list[dict], name: str = "wikipedia") -> None:
    kept, reasons, facts = expected()
    s = stats["sources"][name]
    assert s["read"] == s["kept"] + sum(s["dropped"].values())
    assert s["kept"] == len(rows) > 0
    for reason, count in reasons.items():
        assert s["dropped"][reason] == count, reason
    lost = {c: f for c, f in kept.items() if facts[f].get("missing") or facts[f].get("non_free")}
    assert s["dropped"].get("missing_image_file", 0) == sum(
        1 for f in lost.values() if facts[f].get("missing")
    )
    assert s["dropped"].get("non_free", 0) == sum(
        1 for f in lost.values() if facts[f].get("non_free")
    )
    files_by_caption = {normalize_caption(c): f for c, f in kept.items()}
    for row in rows:
        assert row["source"] == "wikipedia" and row["caption_origin"] == "genuine"
        file = files_by_caption[row["caption_ar"]]
        assert not facts[file].get("non_free") and not facts[file].get("missing")
        assert row["license"] == facts[file]["license"]
        assert row["attribution"] and row["page_title"] and row["page_url"]
        assert row["image"]["bytes"] and row["phash"] and row["width"] > 0


def test_a_crawl_of_the_stand_in_builds_licensed_genuine_pairs(servers, tmp_path):
    wiki, port, _ = servers
    source = (
        f"  - kind: wikipedia\n    api: {wiki.api_url}\n    site_url: https://ar.wikipedia.org\n"
        f'    user_agent: "{AGENT}"\n    requests_per_second: 0\n'
    )
    upload = servers[2]
    asked = len(upload.log)
    stats, rows = run(tmp_path, source, port)
    check(stats, rows)
    assert all(r["page_url"].startswith("https://ar.wikipedia.org/wiki/") for r in rows)
    # The images came from upload.wikimedia.org's stand-in as the live host allows: standard
    # widths only, never more than 2 requests in flight, nothing refused.
    widths = [wikimedia.parse_upload_url("https://upload.wikimedia.org" + p) for p in upload.log]
    assert len(upload.log) - asked >= len(rows)
    assert all(w.width is None or wikimedia.is_step(w.width) for w in widths)
    assert upload.max_seen <= 2 and not upload.refused and "hosts" not in stats


def test_a_dump_of_the_same_pages_gives_the_same_rows(servers, tmp_path):
    wiki, port, _ = servers
    (tmp_path / "crawl").mkdir()
    crawl_stats, crawl_rows = run(
        tmp_path / "crawl",
        f"  - kind: wikipedia\n    api: {wiki.api_url}\n    site_url: https://ar.wikipedia.org\n"
        f'    user_agent: "{AGENT}"\n    requests_per_second: 0\n',
        port,
    )
    lines = []
    for n, page in enumerate(sorted((SAMPLES / "pages").glob("*.html"))):
        title = page.stem.replace("_", " ")
        lines.append(
            json.dumps(
                {
                    "name": title,
                    "identifier": n + 1,
                    "url": "https://ar.wikipedia.org/wiki/" + page.stem,
                    "namespace": {"identifier": 0},
                    "article_body": {"html": page.read_text(encoding="utf-8")},
                },
                ensure_ascii=False,
            )
        )
    data = ("\n".join(lines) + "\n").encode("utf-8")
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w:gz") as tar:
        info = tarfile.TarInfo("arwiki_namespace_0_0.ndjson")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    (tmp_path / "dump").mkdir()
    dump = tmp_path / "dump" / "arwiki-NS0-20240601-ENTERPRISE-HTML.json.tar.gz"
    dump.write_bytes(raw.getvalue())
    source = (
        f"  - kind: wikipedia\n    dump: [{dump}]\n    api: {wiki.api_url}\n"
        f'    user_agent: "{AGENT}"\n    requests_per_second: 0\n'
    )
    stats, rows = run(tmp_path / "dump", source, port)
    check(stats, rows)
    assert stats["sources"]["wikipedia"] == crawl_stats["sources"]["wikipedia"]
    columns = ("id", "caption_ar", "image_url", "phash", "license", "attribution", "page_title")
    assert sorted(tuple(r[c] for c in columns) for r in rows) == sorted(
        tuple(r[c] for c in columns) for r in crawl_rows
    )


def test_a_page_that_keeps_failing_is_counted_and_the_run_completes(tmp_path):
    with DemoImageHost() as images, WikiStandIn(SAMPLES) as wiki:
        wiki.fail("مدينة فاس", *[status_fault(503)] * 3)
        source = (
            f"  - kind: wikipedia\n    api: {wiki.api_url}\n"
            f'    user_agent: "{AGENT}"\n    requests_per_second: 0\n'
            "    retries: 2\n    backoff: 0.05\n"
        )
        stats, _ = run(tmp_path, source, images.port)
    s = stats["sources"]["wikipedia"]
    assert s["dropped"]["page_http_503"] == 1
    assert s["read"] == s["kept"] + sum(s["dropped"].values())
