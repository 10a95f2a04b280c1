"""Benchmark of the Wikipedia source: the figure extractor, and the crawl's requests per page.

It generates article pages in current Parsoid markup (seeded: every run the same bytes), each
like a mid-sized arwiki article: a lead with an infobox image and its caption, 4-10 sections of
Arabic paragraphs full of wikilinks and references, thumbs with captions holding references,
a gallery of 3-6 items, a frameless image, flag icons in a list, and an image in a navbox at
the end; about 60-150 KB of HTML and 10-25 media elements a page. Files repeat across pages
(a site's popular images do), as on a real wiki. Then:

1. extractor: `extract_figures` over every page with BeautifulSoup's `lxml` tree builder
   against its pure-Python `html.parser` (pages/s; the ratio is lxml / html.parser; both must
   give the same figures). Best of 3 rounds.
2. requests per page: the crawl (`pipeline.sources.wikipedia.crawl`: every article of the wiki,
   one `action=parse` per page, file facts for 50 files a request gathered across pages, a file
   asked once) against the local MediaWiki stand-in (`standins.wiki`, real HTTP on
   127.0.0.1, no rate limit), counted by the stand-in, against the naive crawl that asks
   `prop=imageinfo` once per figure of each page. The naive count is computed from the same
   crawl's figures (pages + allpages requests + one per candidate figure), not run.

The last line on stdout is one JSON object holding every figure.

    python benchmarks/wikipedia.py            # 400 pages
    python benchmarks/wikipedia.py --quick    # 120 pages, well under a minute
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pipeline.records import Drop, Pair  # noqa: E402
from pipeline.sources import wikipedia  # noqa: E402
from pipeline.sources.wikipedia import WikipediaSource  # noqa: E402
from pipeline.sources.wikipedia_html import extract_figures  # noqa: E402
from standins.wiki import WikiStandIn  # noqa: E402

SEED = 20240601
FULL_PAGES, QUICK_PAGES = 400, 120
ROUNDS = 3
AGENT = "arabic-pairs-bench/0.1 (https://example.org/arabic-pairs; bench@example.org)"

WORDS = (  # noqa: SIM905 - a sentence of words reads better than a list
    "مدينة نهر جبل تاريخ قديم عربي مسجد سوق بحر صحراء واحة قصر حديقة جامعة مكتبة ميناء قلعة "
    "شارع ساحة متحف فن خط زخرفة نخيل قمح زيتون شمال جنوب شرق غرب القرن الحضارة الدولة السكان "
    "المنطقة العاصمة الشعب اللغة الثقافة الاقتصاد الزراعة التجارة الصناعة الطقس الشتاء الصيف"
).split()
SUBJECTS = ("فاس", "مراكش", "القاهرة", "دمشق", "بغداد", "تونس", "النيل", "الأطلس", "صنعاء")


def _words(rng: random.Random, low: int, high: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(low, high)))


def _file_name(rng: random.Random, popular: list[str]) -> str:
    if rng.random() < 0.3:
        return rng.choice(popular)
    return f"{rng.choice(SUBJECTS)} {rng.randrange(10**6)}.jpg"


def _src(name: str, width: int) -> str:
    under = name.replace(" ", "_")
    digest = hashlib.md5(under.encode()).hexdigest()
    folder = f"{digest[0]}/{digest[:2]}/{under}"
    return f"//upload.wikimedia.org/wikipedia/commons/thumb/{folder}/{width}px-{under}"


def _img(name: str, width: int, kind: str = "mw:File/Thumb") -> str:
    under = name.replace(" ", "_")
    return (
        f'<a href="./ملف:{under}" class="mw-file-description"><img resource="./ملف:{under}" '
        f'src="{_src(name, width)}" decoding="async" data-file-width="4000" '
        f'data-file-height="3000" data-file-type="bitmap" height="{width * 3 // 4}" '
        f'width="{width}" class="mw-file-element"/></a>'
    )


def _ref(rng: random.Random) -> str:
    n = rng.randint(1, 60)
    return (
        f'<sup about="#mwt{n}" class="mw-ref reference" typeof="mw:Extension/ref" '
        f'data-mw=\'{{"name":"ref","attrs":{{}},"body":{{"id":"mw-reference-text-cite_note-{n}"}}}}\'>'
        f'<a href="./X#cite_note-{n}"><span class="mw-reflink-text"><span class="cite-bracket">'
        f'[</span>{n}<span class="cite-bracket">]</span></span></a></sup>'
    )


def _paragraph(rng: random.Random) -> str:
    parts = []
    for _ in range(rng.randint(3, 8)):
        link = rng.choice(WORDS)
        parts.append(
            f'{_words(rng, 6, 18)} <a rel="mw:WikiLink" href="./{link}" title="{link}">{link}</a> '
            f"{_words(rng, 4, 12)}{_ref(rng) if rng.random() < 0.4 else ''}."
        )
    return "<p>" + " ".join(parts) + "</p>"


def _thumb(rng: random.Random, popular: list[str]) -> str:
    name = _file_name(rng, popular)
    return (
        f'<figure class="mw-default-size" typeof="mw:File/Thumb">{_img(name, 250)}'
        f"<figcaption>{_words(rng, 3, 14)}{_ref(rng) if rng.random() < 0.3 else ''}"
        "</figcaption></figure>"
    )


def _gallery(rng: random.Random, popular: list[str]) -> str:
    items = "".join(
        f'<li class="gallerybox" style="width: 155px;"><div class="thumb" style="width: 150px;">'
        f'<span typeof="mw:File">{_img(_file_name(rng, popular), 120, "mw:File")}</span></div>'
        f'<div class="gallerytext">{_words(rng, 2, 8)}</div></li>'
        for _ in range(rng.randint(3, 6))
    )
    return (
        '<ul class="gallery mw-gallery-traditional" typeof="mw:Extension/gallery" '
        f'data-mw=\'{{"name":"gallery","attrs":{{}}}}\'><li class="gallerycaption">'
        f"{_words(rng, 2, 4)}</li>{items}</ul>"
    )


def _infobox(rng: random.Random, popular: list[str], title: str) -> str:
    rows = "".join(
        f"<tr><th>{_words(rng, 1, 2)}</th><td>{_words(rng, 1, 5)}</td></tr>"
        for _ in range(rng.randint(6, 14))
    )
    name = _file_name(rng, popular)
    return (
        f'<table class="infobox"><tbody><tr><th colspan="2" class="infobox-above">{title}</th></tr>'
        f'<tr><td colspan="2" class="infobox-image"><span typeof="mw:File/Frameless">'
        f"{_img(name, 270)}</span>"
        f'<div class="infobox-caption">{_words(rng, 3, 9)}</div></td></tr>{rows}</tbody></table>'
    )


def _flags(rng: random.Random) -> str:
    items = "".join(
        f'<li><span class="flagicon"><span typeof="mw:File">{_img(f"Flag of {c}.svg", 23)}'
        f"</span></span> {_words(rng, 1, 3)}</li>"
        for c in rng.sample(("Morocco", "Egypt", "Syria", "Iraq", "Tunisia", "Yemen"), 3)
    )
    return f"<ul>{items}</ul>"


def generate_page(rng: random.Random, popular: list[str], title: str) -> str:
    sections = [
        f'<section data-mw-section-id="0">{_infobox(rng, popular, title)}'
        + "".join(_paragraph(rng) for _ in range(rng.randint(2, 4)))
        + "</section>"
    ]
    for n in range(1, rng.randint(5, 11)):
        body = f'<h2 id="s{n}">{_words(rng, 1, 3)}</h2>'
        for _ in range(rng.randint(1, 4)):
            if rng.random() < 0.5:
                body += _thumb(rng, popular)
            body += _paragraph(rng)
        if rng.random() < 0.3:
            body += _gallery(rng, popular)
        if rng.random() < 0.2:
            body += _flags(rng)
        sections.append(f'<section data-mw-section-id="{n}">{body}</section>')
    navbox = (
        '<div class="navbox"><table><tr><td class="navbox-image">'
        f'<span typeof="mw:File">{_img("Coat of arms.png", 40, "mw:File")}</span></td>'
        f"<td>{_words(rng, 20, 40)}</td></tr></table></div>"
    )
    return (
        '<!DOCTYPE html>\n<html prefix="dc: http://purl.org/dc/terms/ mw: http://mediawiki.org/rdf/">'
        '<head><meta charset="utf-8"/><meta property="mw:htmlVersion" content="2.8.0"/>'
        f'<base href="//ar.wikipedia.org/wiki/"/><title>{title}</title></head>'
        '<body lang="ar" dir="rtl" class="mw-content-rtl mw-parser-output">'
        + "".join(sections)
        + navbox
        + "</body></html>"
    )


def generate_wiki(pages: int, seed: int = SEED) -> tuple[dict[str, str], dict[str, dict]]:
    rng = random.Random(seed)
    popular = [f"{s} {i}.jpg" for s in SUBJECTS for i in range(8)]
    titles = [f"{rng.choice(SUBJECTS)} {n}" for n in range(pages)]
    html = {title: generate_page(rng, popular, title) for title in titles}
    files: dict[str, dict] = {}
    for page in html.values():
        for figure in extract_figures(page):
            files.setdefault(
                figure.file,
                {
                    "repository": "shared", "width": 4000, "height": 3000, "size": 2_000_000,
                    "mime": "image/svg+xml" if figure.file.endswith(".svg") else "image/jpeg",
                    "license": "CC BY-SA 4.0",
                    "license_url": "https://creativecommons.org/licenses/by-sa/4.0",
                    "artist": "<a href=\"//commons.wikimedia.org/wiki/User:X\">X</a>",
                    "non_free": False,
                },
            )  # fmt: skip
    return html, files


def extractor_rate(pages: list[str], parser: str) -> tuple[float, list]:
    best, figures = None, None
    for _ in range(ROUNDS):
        started = time.perf_counter()
        figures = [extract_figures(page, parser=parser) for page in pages]
        seconds = time.perf_counter() - started
        best = seconds if best is None else min(best, seconds)
    return len(pages) / best, figures


def crawl_requests(html: dict[str, str], files: dict[str, dict]) -> dict:
    with WikiStandIn(pages=html, files=files) as wiki:
        source = WikipediaSource(api=wiki.api_url, user_agent=AGENT, requests_per_second=0)
        wikipedia._CLIENTS.clear()
        started = time.perf_counter()
        records = list(wikipedia.crawl(source, wikipedia.client_for(source)))
        seconds = time.perf_counter() - started
        log = list(wiki.log)
    pairs = sum(isinstance(r, Pair) for r in records)
    drops = [r for r in records if isinstance(r, Drop)]
    by_kind: dict[str, int] = {}
    for request in log:
        params = request.params
        kind = (
            "parse" if params.get("action") == "parse" else params.get("list") or params.get("prop")
        )
        by_kind[kind] = by_kind.get(kind, 0) + 1
    # The naive crawl: the same page and allpages requests, one imageinfo per candidate figure
    # (every figure the extractor keeps is looked up, on every page it appears on).
    candidates = pairs + sum(1 for d in drops if d.reason in ("non_free", "missing_image_file"))
    naive = by_kind.get("allpages", 0) + by_kind.get("parse", 0) + candidates
    return {
        "pages": len(html),
        "requests": len(log),
        "requests_by_kind": by_kind,
        "candidates_asked": candidates,
        "pairs": pairs,
        "crawl_seconds": seconds,
        "requests_per_page": len(log) / len(html),
        "naive_requests_per_page": naive / len(html),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_PAGES} pages")
    parser.add_argument("--pages", type=int, help="pages generated (overrides the size)")
    args = parser.parse_args(argv)
    n = args.pages or (QUICK_PAGES if args.quick else FULL_PAGES)

    html, files = generate_wiki(n)
    pages = list(html.values())
    size = sum(len(p.encode()) for p in pages) / len(pages)
    lxml_rate, lxml_figures = extractor_rate(pages, "lxml")
    parser_rate, parser_figures = extractor_rate(pages, "html.parser")
    media = sum(len(f) for f in lxml_figures) / len(pages)
    kept = sum(1 for fs in lxml_figures for f in fs if f.reason is None) / len(pages)
    crawl = crawl_requests(html, files)

    print(f"\nWikipedia benchmark: {n} generated article pages, {size / 1024:.0f} KB of HTML and "
          f"{media:.1f} media elements ({kept:.1f} kept) a page on average")  # fmt: skip
    print("\n1. Extractor (extract_figures, pages/s, best of 3)")
    print(f"   lxml        {lxml_rate:8.1f}")
    print(f"   html.parser {parser_rate:8.1f}")
    print(f"   lxml / html.parser: {lxml_rate / parser_rate:.2f}x; "
          f"same figures: {'yes' if lxml_figures == parser_figures else 'NO'}")  # fmt: skip
    print("\n2. Crawl requests per page (local MediaWiki stand-in, every article)")
    print(
        f"   ours  {crawl['requests_per_page']:.3f}  ({crawl['requests']} requests: "
        + ", ".join(f"{k} {v}" for k, v in sorted(crawl["requests_by_kind"].items()))
        + ")"
    )
    print(f"   naive {crawl['naive_requests_per_page']:.3f}  (one imageinfo per figure: "
          f"{crawl['candidates_asked']} figures looked up)")  # fmt: skip
    print(f"   saved {1 - crawl['requests_per_page'] / crawl['naive_requests_per_page']:.0%} of "
          f"the requests; the crawl took {crawl['crawl_seconds']:.1f}s for {n} pages "
          f"({crawl['pairs']} pairs)")  # fmt: skip

    figures = {
        "benchmark": "wikipedia",
        "quick": args.quick,
        "pages": n,
        "html_kb_per_page": round(size / 1024, 1),
        "media_per_page": round(media, 2),
        "kept_per_page": round(kept, 2),
        "pages_per_s": round(lxml_rate, 1),
        "pages_per_s_html_parser": round(parser_rate, 1),
        "lxml_vs_html_parser": round(lxml_rate / parser_rate, 2),
        "same_figures": lxml_figures == parser_figures,
        "requests_per_page": round(crawl["requests_per_page"], 3),
        "naive_requests_per_page": round(crawl["naive_requests_per_page"], 3),
        "requests_by_kind": crawl["requests_by_kind"],
        "crawl_pages_per_s": round(n / crawl["crawl_seconds"], 1),
    }
    print(json.dumps(figures, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
