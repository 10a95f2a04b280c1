"""The arwiki figure extractor: the team-written sample pages and one snippet per markup rule.

Every test runs with both tree builders (lxml and html.parser): they must give the same figures.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

from pipeline.sources.wikipedia_html import FIGURE_REASONS, Figure, extract_figures

SAMPLES = Path(__file__).resolve().parents[3] / "manifests" / "samples" / "wikipedia"
PAGES = sorted((SAMPLES / "pages").glob("*.html"))
EXPECTED = json.loads((SAMPLES / "expected.json").read_text(encoding="utf-8"))
FILES = json.loads((SAMPLES / "files.json").read_text(encoding="utf-8"))
PAGE_URL = "https://ar.wikipedia.org/wiki/%D8%AA%D8%AC%D8%B1%D8%A8%D8%A9"
UPLOAD = "//upload.wikimedia.org/wikipedia/commons"


@pytest.fixture(params=["lxml", "html.parser"])
def parser(request) -> str:
    return request.param


def figures(html: str, parser: str, page_url: str | None = PAGE_URL, **kw) -> list[Figure]:
    return extract_figures(html, page_url, parser=parser, **kw)


def only(html: str, parser: str, **kw) -> Figure:
    result = figures(html, parser, **kw)
    assert len(result) == 1, result
    return result[0]


def thumb_src(name: str, width: int = 250) -> str:
    digest = hashlib.md5(name.encode()).hexdigest()
    return f"{UPLOAD}/thumb/{digest[0]}/{digest[:2]}/{name}/{width}px-{name}"


def parsoid_thumb(name: str, caption: str, width: int = 250, extra: str = "") -> str:
    return (
        f'<figure class="mw-default-size" typeof="mw:File/Thumb"{extra}>'
        f'<a href="./ملف:{name}" class="mw-file-description"><img resource="./ملف:{name}" '
        f'src="{thumb_src(name, width)}" width="{width}" height="180" class="mw-file-element"/>'
        f"</a><figcaption>{caption}</figcaption></figure>"
    )


def legacy_thumb(name: str, caption: str, width: int = 220) -> str:
    href = "/wiki/%D9%85%D9%84%D9%81:" + name
    return (
        f'<div class="thumb tright"><div class="thumbinner" style="width:{width + 2}px;">'
        f'<a href="{href}" class="image"><img alt="" src="{thumb_src(name, width)}" '
        f'width="{width}" height="150" class="thumbimage"/></a>  <div class="thumbcaption">'
        f'<div class="magnify"><a href="{href}" class="internal" title="تكبير"></a></div>'
        f"{caption}</div></div></div>"
    )


def as_dicts(result: list[Figure]) -> list[dict]:
    fields = ("file", "caption", "caption_field", "reason")
    return [{k: getattr(f, k) for k in fields} for f in result]


# --- the sample pages ---------------------------------------------------------------------


def test_every_sample_page_has_expectations():
    assert [p.name for p in PAGES] == sorted(EXPECTED)
    assert len(PAGES) >= 4


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.stem)
def test_sample_page_gives_expected_figures(page, parser):
    html = page.read_text(encoding="utf-8")
    result = figures(html, parser, page_url="https://ar.wikipedia.org/wiki/" + page.stem)
    assert as_dicts(result) == EXPECTED[page.name]
    assert sum(f.is_main for f in result) == 1


def test_current_parsoid_page_details(parser):
    """Sections, sizes, absolute URLs and the main image of the current Parsoid page."""
    html = (SAMPLES / "pages" / "مدينة_فاس.html").read_text(encoding="utf-8")
    result = figures(html, parser, page_url=None)  # <base href> alone resolves every URL
    assert [f.section for f in result] == [None] * 3 + ["التاريخ"] * 2 + ["المعالم"] * 4 + [
        "الثقافة"
    ] * 4 + ["وصلات خارجية"]
    assert [f.is_main for f in result] == [True] + [False] * 13
    first = result[0]
    assert (first.width, first.height) == (280, 158)
    assert first.src == (
        "https://upload.wikimedia.org/wikipedia/commons/thumb/8/89/"
        "Fes_el_Bali_panorama.jpg/280px-Fes_el_Bali_panorama.jpg"
    )
    assert result[2].file == "صحن جامع القرويين.jpg"
    assert result[2].src.startswith("https://upload.wikimedia.org/wikipedia/commons/thumb/c/c2/")
    assert "\u200f" in result[2].caption and "\u00a0" not in result[2].caption
    broken, video = result[4], result[9]
    assert (broken.src, broken.width, broken.reason) == (None, None, "broken_media")
    assert (video.src, video.reason) == (None, "not_an_image")


def test_classic_pages_resolve_against_page_url(parser):
    html = (SAMPLES / "pages" / "الخط_العربي.html").read_text(encoding="utf-8")
    result = figures(html, parser, page_url="https://ar.wikipedia.org/wiki/X")
    local = [f for f in result if f.file == "شعار إرسيكا.png"][0]
    assert local.src == (
        "https://upload.wikimedia.org/wikipedia/ar/thumb/f/f0/"
        "%D8%B4%D8%B9%D8%A7%D8%B1_%D8%A5%D8%B1%D8%B3%D9%8A%D9%83%D8%A7.png/"
        "150px-%D8%B4%D8%B9%D8%A7%D8%B1_%D8%A5%D8%B1%D8%B3%D9%8A%D9%83%D8%A7.png"
    )
    assert [f.section for f in result[:3]] == [None, None, "التاريخ"]  # the TOC title is not one


def test_sample_expectations_use_known_reasons_and_fields():
    fields = {None, "figcaption", "thumbcaption", "gallerytext", "infobox_caption", "data_mw"}
    fields |= {"alt", "title"}
    for rows in EXPECTED.values():
        for row in rows:
            assert row["reason"] in (None, *FIGURE_REASONS)
            assert row["caption_field"] in fields
            assert (row["caption"] == "") == (row["caption_field"] is None)


def test_files_json_covers_every_file_with_the_imageinfo_shape():
    used = {row["file"] for rows in EXPECTED.values() for row in rows}
    assert used == set(FILES)
    keys = {"repository", "width", "height", "size", "mime", "license", "license_url", "artist"}
    keys.add("non_free")
    missing = [name for name, facts in FILES.items() if facts.get("missing")]
    assert missing == ["Fes medersa 1920.jpg"]
    assert FILES["Fes medersa 1920.jpg"] == {"missing": True}
    for name, facts in FILES.items():
        if name not in missing:
            assert set(facts) == keys, name
    local = {name for name, facts in FILES.items() if facts.get("repository") == "local"}
    assert local == {"شعار إرسيكا.png"}
    assert FILES["شعار إرسيكا.png"]["license"] == "استعمال عادل"
    assert FILES["شعار إرسيكا.png"]["non_free"] is True
    assert not any(f.get("non_free") for n, f in FILES.items() if n not in local)


def test_sample_upload_urls_follow_the_md5_layout():
    """Every upload URL in the pages: h/hh is md5(name with underscores), sizes from files.json."""
    pattern = re.compile(
        r"//upload\.wikimedia\.org/wikipedia/(commons|ar)/(?:(?:thumb|transcoded)/)?"
        r"([0-9a-f])/([0-9a-f]{2})/([^/\"' ]+)"
    )
    seen = 0
    for page in PAGES:
        for repo, h, hh, encoded in pattern.findall(page.read_text(encoding="utf-8")):
            name = unquote(encoded)
            digest = hashlib.md5(name.encode()).hexdigest()
            assert (h, hh) == (digest[0], digest[:2]), name
            facts = FILES[name.replace("_", " ")]
            assert repo == ("ar" if facts["repository"] == "local" else "commons"), name
            seen += 1
    assert seen > 60


# --- captions -------------------------------------------------------------------------------


def test_references_and_their_brackets_are_removed(parser):
    parsoid_ref = (
        '<sup class="mw-ref reference" typeof="mw:Extension/ref"><a href="./X#cite_note-1">'
        '<span class="mw-reflink-text"><span class="cite-bracket">[</span>1'
        '<span class="cite-bracket">]</span></span></a></sup>'
    )
    grouped = parsoid_ref.replace(">1<", ">ملحوظة 1<")
    legacy_ref = (
        '<sup id="cite_ref-2" class="reference"><a href="#cite_note-2">&#91;2&#93;</a></sup>'
    )
    caption = f"مئذنة جامع القيروان{parsoid_ref} الكبير{grouped} في تونس{legacy_ref}"
    figure = only(parsoid_thumb("Kairouan.jpg", caption), parser)
    assert figure.caption == "مئذنة جامع القيروان الكبير في تونس"
    assert figure.caption_field == "figcaption"


def test_magnify_is_removed_from_legacy_thumbcaption(parser):
    figure = only(legacy_thumb("Tlemcen.jpg", "الجامع الكبير في تلمسان"), parser)
    assert (figure.caption, figure.caption_field) == ("الجامع الكبير في تلمسان", "thumbcaption")
    assert figure.file == "Tlemcen.jpg"


def test_markup_whitespace_and_breaks_in_captions(parser):
    caption = (
        '<a rel="mw:WikiLink" href="./صنعاء">صنعاء</a>\u00a0القديمة<br/>من <b>جبل</b> '
        '<i>نقم</i>\n\n<span typeof="mw:Entity">\u200f</span><style>.x{color:red}</style>'
    )
    figure = only(parsoid_thumb("Sanaa.jpg", caption), parser)
    assert figure.caption == "صنعاء القديمة من جبل نقم \u200f"


def test_gallery_text_in_paragraphs_and_gallerycaption_never_a_caption(parser):
    html = (
        '<ul class="gallery mw-gallery-traditional"><li class="gallerycaption">صور من دمشق</li>'
        '<li class="gallerybox" style="width: 155px"><div style="width: 155px">'
        '<div class="thumb" style="width: 150px;"><div style="margin:30px auto;">'
        '<a href="/wiki/%D9%85%D9%84%D9%81:Umayyad_Mosque.jpg" class="image"><img alt="" '
        f'src="{thumb_src("Umayyad_Mosque.jpg", 120)}" width="120" height="90"/></a></div></div>'
        '<div class="gallerytext">\n<p>الجامع الأموي\n</p><p>في دمشق</p>\n</div></div></li>'
        '<li class="gallerybox" style="width: 155px"><div style="width: 155px">'
        '<div class="thumb" style="width: 150px;"><div style="margin:30px auto;">'
        '<a href="/wiki/%D9%85%D9%84%D9%81:Barada.jpg" class="image"><img alt="" '
        f'src="{thumb_src("Barada.jpg", 120)}" width="120" height="90"/></a></div></div>'
        '<div class="gallerytext">\n</div></div></li></ul>'
    )
    first, second = figures(html, parser)
    assert (first.file, first.caption, first.caption_field) == (
        "Umayyad Mosque.jpg",
        "الجامع الأموي في دمشق",
        "gallerytext",
    )
    assert (second.file, second.caption, second.caption_field, second.reason) == (
        "Barada.jpg",
        "",
        None,
        "no_caption",
    )


def test_frameless_caption_from_data_mw_html(parser):
    data_mw = (
        '{"caption":"<a rel=\\"mw:WikiLink\\" href=\\"./حلب\\">قلعة حلب</a> من الجو'
        '<sup class=\\"mw-ref reference\\"><a><span class=\\"cite-bracket\\">[</span>3'
        '<span class=\\"cite-bracket\\">]</span></a></sup>"}'
    )
    html = (
        f'<span class="mw-default-size" typeof="mw:File/Frameless" data-mw=\'{data_mw}\'>'
        '<a href="./ملف:Aleppo_Citadel.jpg" class="mw-file-description"><img '
        f'resource="./ملف:Aleppo_Citadel.jpg" src="{thumb_src("Aleppo_Citadel.jpg", 220)}" '
        'width="220" height="147" class="mw-file-element"/></a></span>'
    )
    figure = only(html, parser)
    assert (figure.caption, figure.caption_field, figure.reason) == (
        "قلعة حلب من الجو",
        "data_mw",
        None,
    )


@pytest.mark.parametrize(
    "data_mw",
    ["{not json", '["caption"]', '{"caption": 5}', '{"caption": "  "}', "", '{"caption"'],
)
def test_malformed_data_mw_falls_back_to_alt_then_title(parser, data_mw):
    html = (
        f'<span typeof="mw:File/Frameless" data-mw=\'{data_mw}\'><a href="./ملف:Petra.jpg" '
        'class="mw-file-description" title="الخزنة في البتراء">'
        f'<img alt="{{alt}}" src="{thumb_src("Petra.jpg")}" width="250" height="180"/></a></span>'
    )
    with_alt = only(html.replace("{alt}", "واجهة الخزنة"), parser)
    assert (with_alt.caption, with_alt.caption_field) == ("واجهة الخزنة", "alt")
    without_alt = only(html.replace("{alt}", ""), parser)
    assert (without_alt.caption, without_alt.caption_field) == ("الخزنة في البتراء", "title")


def test_caption_priority_displayed_then_data_mw_then_alt_then_title(parser):
    def thumb(caption: str, data_mw: str) -> str:
        return (
            f'<figure typeof="mw:File/Thumb" data-mw=\'{data_mw}\'><a href="./ملف:Jerash.jpg" '
            'title="عنوان"><img alt="نص بديل" '
            f'src="{thumb_src("Jerash.jpg")}" width="250" height="180"/></a>'
            f"<figcaption>{caption}</figcaption></figure>"
        )

    shown = only(thumb("شارع الأعمدة في جرش", '{"caption":"x"}'), parser)
    assert (shown.caption, shown.caption_field) == ("شارع الأعمدة في جرش", "figcaption")
    stored = only(thumb("", '{"caption":"من data-mw"}'), parser)
    assert (stored.caption, stored.caption_field) == ("من data-mw", "data_mw")
    alt = only(thumb("\u200f ", "{}"), parser)  # only a bidi mark: no caption
    assert (alt.caption, alt.caption_field) == ("نص بديل", "alt")


def test_floated_figure_hidden_figcaption_comes_after_alt_and_title(parser):
    html = (
        '<figure class="mw-default-size mw-halign-left" typeof="mw:File"><a '
        'href="/wiki/%D9%85%D9%84%D9%81:Baalbek.jpg" class="mw-file-description" '
        'title="معبد باخوس في بعلبك"><img alt="أعمدة معبد باخوس" '
        f'src="{thumb_src("Baalbek.jpg")}" width="250" height="180" class="mw-file-element"/>'
        "</a><figcaption>معبد باخوس في بعلبك</figcaption></figure>"
    )
    figure = only(html, parser)
    assert (figure.caption, figure.caption_field) == ("أعمدة معبد باخوس", "alt")
    no_alt_no_title = html.replace(' title="معبد باخوس في بعلبك"', "").replace(
        'alt="أعمدة معبد باخوس"', ""
    )
    figure = only(no_alt_no_title, parser)
    assert (figure.caption, figure.caption_field) == ("معبد باخوس في بعلبك", "figcaption")


def test_title_of_a_link_to_another_page_is_not_a_caption(parser):
    html = (
        '<p><a href="/wiki/%D8%AA%D9%88%D9%86%D8%B3" title="تونس"><img alt="" '
        f'src="{thumb_src("Carthage_ruins.jpg", 200)}" width="200" height="133"/></a></p>'
    )
    figure = only(html, parser)
    assert (figure.file, figure.caption, figure.reason) == ("Carthage ruins.jpg", "", "no_caption")


def test_infobox_caption_in_the_same_cell_or_the_next_row(parser):
    image = (
        '<span typeof="mw:File/Frameless"><a href="./ملف:Muscat.jpg" class="mw-file-description">'
        f'<img src="{thumb_src("Muscat.jpg", 280)}" width="280" height="180"/></a></span>'
    )
    same_cell = (
        f'<table class="infobox"><tbody><tr><td class="infobox-image">{image}'
        '<div class="infobox-caption">كورنيش مطرح في مسقط</div></td></tr></tbody></table>'
    )
    next_row = (
        f'<table class="infobox"><tbody><tr><td class="infobox-image">{image}</td></tr>'
        '<tr><td class="infobox-caption">كورنيش مطرح في مسقط</td></tr></tbody></table>'
    )
    no_caption = (
        f'<table class="infobox"><tbody><tr><td class="infobox-image">{image}</td></tr>'
        '<tr><th class="infobox-label">البلد</th><td>عمان</td></tr></tbody></table>'
    )
    for html in (same_cell, next_row):
        figure = only(html, parser)
        assert (figure.caption, figure.caption_field) == ("كورنيش مطرح في مسقط", "infobox_caption")
    assert only(no_caption, parser).reason == "no_caption"


def test_multiple_image_footer_is_not_an_image_caption(parser):
    def single(name: str, caption: str) -> str:
        text = f'<div class="thumbcaption">{caption}</div>' if caption else ""
        return (
            '<div class="tsingle"><div class="thumbimage"><span typeof="mw:File">'
            f'<a href="./ملف:{name}"><img src="{thumb_src(name, 200)}" width="200" '
            f'height="133"/></a></span></div>{text}</div>'
        )

    html = (
        '<div class="thumb tmulti tright"><div class="thumbinner multiimageinner">'
        '<div class="trow">'
        f"{single('Luxor_temple.jpg', 'معبد الأقصر')}{single('Karnak.jpg', '')}</div>"
        '<div class="trow"><div class="thumbcaption">آثار طيبة القديمة</div></div></div></div>'
    )
    luxor, karnak = figures(html, parser)
    assert (luxor.caption, luxor.caption_field) == ("معبد الأقصر", "thumbcaption")
    assert (karnak.caption, karnak.reason) == ("", "no_caption")


def test_an_image_inside_a_caption_does_not_take_that_caption(parser):
    flag = (
        '<span class="mw-image-border" typeof="mw:File"><span><img '
        f'src="{thumb_src("Flag_of_Jordan.svg", 23)}.png" width="23" height="12"/></span></span>'
    )
    html = legacy_thumb("Amman.jpg", f"{flag} مدرج عمّان الروماني")
    thumb, icon = figures(html, parser)
    assert (thumb.caption, thumb.reason) == ("مدرج عمّان الروماني", None)
    assert (icon.file, icon.caption, icon.reason) == ("Flag of Jordan.svg", "", "icon")


# --- file names and URLs ------------------------------------------------------------------


@pytest.mark.parametrize(
    "href",
    [
        "./ملف:Old_town_of_Fez.jpg",
        "./File:Old_town_of_Fez.jpg",
        "./Image:Old_town_of_Fez.jpg",
        "./صورة:Old_town_of_Fez.jpg",
        "/wiki/%D9%85%D9%84%D9%81:Old_town_of_Fez.jpg",
        "/wiki/%D8%B5%D9%88%D8%B1%D8%A9:Old_town_of_Fez.jpg",
        "//ar.wikipedia.org/wiki/File:Old%20town%20of%20Fez.jpg",
        "/w/index.php?title=%D9%85%D9%84%D9%81:Old_town_of_Fez.jpg",
    ],
)
def test_file_name_from_description_link(parser, href):
    html = (
        f'<a href="{href}" class="image"><img alt="فاس" src="//example.org/x.jpg" width="200"/></a>'
    )
    assert only(html, parser).file == "Old town of Fez.jpg"


def test_file_name_from_percent_encoded_arabic_href_and_src(parser):
    name = "%D8%B3%D9%88%D9%82_%D8%A7%D9%84%D8%AD%D9%85%D9%8A%D8%AF%D9%8A%D8%A9.jpg"
    html = (
        f'<a href="/wiki/%D9%85%D9%84%D9%81:{name}" class="image"><img alt="سوق الحميدية" '
        f'src="{UPLOAD}/thumb/a/ab/{name}/220px-{name}" width="220" height="147"/></a>'
    )
    figure = only(html, parser)
    assert figure.file == "سوق الحميدية.jpg"
    assert figure.src == f"https:{UPLOAD}/thumb/a/ab/{name}/220px-{name}"
    without_link = only(html.replace("/wiki/%D9%85%D9%84%D9%81:", "/wiki/"), parser)
    assert without_link.file == "سوق الحميدية.jpg"  # from the thumb URL


def test_file_name_from_resource_then_src(parser):
    resource = (
        '<span typeof="mw:File"><span><img alt="نخيل" resource="./ملف:Date_palms.jpg" '
        f'src="{UPLOAD}/thumb/1/12/Other.jpg/200px-Other.jpg" width="200"/></span></span>'
    )
    assert only(resource, parser).file == "Date palms.jpg"
    original = f'<p><img alt="نخيل" src="{UPLOAD}/1/12/Date_palms_in_Siwa.jpg" width="800"/></p>'
    assert only(original, parser).file == "Date palms in Siwa.jpg"


def test_src_protocol_relative_and_relative(parser):
    html = '<p><img alt="مسجد" src="{src}" width="200"/></p>'
    protocol_relative = only(html.format(src="//upload.wikimedia.org/a/b/c.jpg"), parser)
    assert protocol_relative.src == "https://upload.wikimedia.org/a/b/c.jpg"
    relative = only(html.format(src="/w/images/c/cf/Mosque.jpg"), parser)
    assert relative.src == "https://ar.wikipedia.org/w/images/c/cf/Mosque.jpg"
    with_base = (
        '<html><head><base href="//wiki.example.org/wiki/"></head><body>'
        + html.format(src="../images/Mosque.jpg")
        + "</body></html>"
    )
    assert (
        only(with_base, parser, page_url=None).src == "https://wiki.example.org/images/Mosque.jpg"
    )
    assert only(with_base, parser).src == "https://wiki.example.org/images/Mosque.jpg"


# --- drop reasons ---------------------------------------------------------------------------


def test_icon_by_rendered_width(parser):
    html = '<p><img alt="شعار" src="{src}" width="{w}" height="40"/></p>'
    small = only(html.format(src=thumb_src("Logo.png", 40), w=40), parser)
    assert (small.reason, small.width, small.caption) == ("icon", 40, "شعار")
    wide = only(html.format(src=thumb_src("Logo.png", 50), w=50), parser)
    assert wide.reason is None
    assert only(html.format(src=thumb_src("Logo.png", 50), w=50), parser, min_width=60).reason == (
        "icon"
    )
    no_width = only('<p><img alt="شعار" src="//u.org/a/ab/Logo.png"/></p>', parser)
    assert (no_width.width, no_width.reason) == (None, None)


@pytest.mark.parametrize(
    "container",
    [
        '<span class="flagicon">{}</span>',
        '<table class="ambox"><tbody><tr><td class="mbox-image">{}</td></tr></tbody></table>',
        '<div class="navbox"><table><tbody><tr><td class="navbox-image">{}</td></tr></tbody>'
        "</table></div>",
        '<div class="portal-bar"><ul><li>{}</li></ul></div>',
        '<table class="metadata plainlinks stub"><tbody><tr><td>{}</td></tr></tbody></table>',
        '<div class="asbox">{}</div>',
        '<div class="sistersitebox"><div class="side-box-image">{}</div></div>',
    ],
)
def test_icon_by_container(parser, container):
    image = (
        '<a href="./ملف:Emblem.png" class="image"><img alt="رمز" '
        f'src="{thumb_src("Emblem.png", 100)}" width="100"/></a>'
    )
    figure = only(container.format(image), parser)
    assert (figure.file, figure.reason) == ("Emblem.png", "icon")


def test_svg_original_versus_rasterised_thumb(parser):
    original = f"{UPLOAD}/5/5c/Map_of_Oman.svg"
    framed = (
        '<figure typeof="mw:File/Frame"><a href="./ملف:Map_of_Oman.svg"><img '
        f'src="{original}" width="400" height="500"/></a>'
        "<figcaption>خريطة عمان</figcaption></figure>"
    )
    assert only(framed, parser).reason == "svg_original"
    thumb = framed.replace(
        original, f"{UPLOAD}/thumb/5/5c/Map_of_Oman.svg/250px-Map_of_Oman.svg.png"
    )
    figure = only(thumb, parser)
    assert (figure.file, figure.reason) == ("Map of Oman.svg", None)


@pytest.mark.parametrize(
    ("html", "file"),
    [
        (
            '<figure typeof="mw:File/Thumb"><span><video poster="//u.org/thumb/a/ab/Oud.webm/'
            '220px--Oud.webm.jpg" resource="./ملف:Oud.webm" width="220" height="124"></video>'
            "</span><figcaption>عازف عود</figcaption></figure>",
            "Oud.webm",
        ),
        (
            '<span typeof="mw:File"><span><audio controls="" resource="./ملف:Adhan.ogg">'
            '<source src="//u.org/a/ab/Adhan.ogg"/></audio></span></span>',
            "Adhan.ogg",
        ),
        (
            '<figure-inline typeof="mw:Audio"><audio controls=""><source '
            'src="//upload.wikimedia.org/wikipedia/commons/a/ab/Adhan.ogg"/></audio></figure-inline>',
            "Adhan.ogg",
        ),
        (
            '<div class="thumbinner"><div class="mediaContainer"><video '
            'data-mwtitle="Oud_solo.webm" width="220"><source '
            'src="//u.org/transcoded/a/ab/Oud_solo.webm/Oud_solo.webm.480p.webm"/>'
            '</video></div><div class="thumbcaption">عزف على العود</div></div>',
            "Oud solo.webm",
        ),
    ],
)
def test_video_and_audio_are_not_images(parser, html, file):
    figure = only(html, parser)
    assert (figure.file, figure.src, figure.reason) == (file, None, "not_an_image")


def test_legacy_popup_player_poster_is_not_an_image(parser):
    poster = "//upload.wikimedia.org/wikipedia/commons/thumb/a/ab/Oud.webm/220px--Oud.webm.jpg"
    html = (
        '<div class="thumbinner"><div class="PopUpMediaTransform" style="width:220px;">'
        f'<img alt="File:Oud.webm" src="{poster}" width="220" height="124"/><a '
        'href="/wiki/%D9%85%D9%84%D9%81:Oud.webm" title="تشغيل الوسائط"></a></div>'
        '<div class="thumbcaption">عازف عود</div></div>'
    )
    figure = only(html, parser)
    assert (figure.file, figure.caption, figure.reason) == ("Oud.webm", "عازف عود", "not_an_image")


def test_broken_media(parser):
    parsoid = (
        '<figure typeof="mw:Error mw:File/Thumb" data-mw=\'{"errors":[]}\'>'
        '<a href="./ملف:Lost.jpg"><span class="mw-file-element mw-broken-media" '
        'resource="./ملف:Lost.jpg">ملف:Lost.jpg</span></a>'
        "<figcaption>صورة مفقودة</figcaption></figure>"
    )
    figure = only(parsoid, parser)
    assert (figure.file, figure.caption, figure.src, figure.reason) == (
        "Lost.jpg",
        "صورة مفقودة",
        None,
        "broken_media",
    )
    new_dom = (
        '<span typeof="mw:Error mw:File"><a href="/w/index.php?title=%D8%AE%D8%A7%D8%B5:%D8%B1%D9'
        '%81%D8%B9&amp;wpDestFile=Lost_too.jpg" class="new" title="ملف:Lost too.jpg"><span '
        'class="mw-file-element mw-broken-media">ملف:Lost too.jpg</span></a></span>'
    )
    assert (only(new_dom, parser).file, only(new_dom, parser).reason) == (
        "Lost too.jpg",
        "broken_media",
    )
    legacy = (
        '<div class="thumb tright"><div class="thumbinner" style="width:222px;">'
        '<a href="/w/index.php?title=%D8%AE%D8%A7%D8%B5:%D8%B1%D9%81%D8%B9&amp;'
        'wpDestFile=Old_map.jpg" class="new" '
        'title="ملف:Old map.jpg">ملف:Old map.jpg</a>  <div class="thumbcaption">خريطة قديمة</div>'
        "</div></div>"
    )
    figure = only(legacy, parser)
    assert (figure.file, figure.caption, figure.reason) == (
        "Old map.jpg",
        "خريطة قديمة",
        "broken_media",
    )
    no_src = only(
        '<span typeof="mw:File"><a href="./ملف:Empty.jpg"><img alt="فارغ"/></a></span>', parser
    )
    assert no_src.reason == "broken_media"


def test_redlinks_and_math_are_not_media(parser):
    html = (
        '<p><a href="/w/index.php?title=%D9%86%D8%B5&amp;action=edit&amp;redlink=1" '
        'class="new">نص</a>'
        '<span typeof="mw:Extension/math"><img class="mwe-math-fallback-image-inline" alt="x^2" '
        'src="https://wikimedia.org/api/rest_v1/media/math/render/svg/abc"/></span></p>'
    )
    assert figures(html, parser) == []


def test_repeated_on_page_and_is_main_only_once(parser):
    html = "".join(
        [
            legacy_thumb("Icon.png", "صغيرة", width=30),  # an icon: never main, never "seen"
            parsoid_thumb("Minaret.jpg", "مئذنة الكتبية"),
            parsoid_thumb("Minaret.jpg", "مئذنة الكتبية"),
            parsoid_thumb("Minaret.jpg", "مئذنة الكتبية ليلًا"),
            parsoid_thumb("Icon.png", "صغيرة"),
        ]
    )
    result = figures(html, parser)
    assert [(f.reason, f.is_main) for f in result] == [
        ("icon", False),
        (None, True),
        ("repeated_on_page", False),
        (None, False),
        (None, False),
    ]


def test_section_titles_in_every_heading_style(parser):
    image = '<p><img alt="{0}" src="//u.org/a/ab/{0}.jpg" width="100"/></p>'
    html = (
        image.format("lead")
        + '<section data-mw-section-id="1"><h2 id="a">التاريخ</h2>'
        + image.format("one")
        + '<section data-mw-section-id="2"><h3 id="b">العصر <i>الأموي</i></h3>'
        + image.format("two")
        + "</section></section>"
        + '<h2><span class="mw-headline" id="c">الجغرافيا</span><span class="mw-editsection">'
        '<span class="mw-editsection-bracket">[</span><a href="/w/index.php?action=edit">عدل</a>'
        '<span class="mw-editsection-bracket">]</span></span></h2>'
        + image.format("three")
        + '<div class="mw-heading mw-heading2"><h2 id="d">المناخ</h2></div>'
        + image.format("four")
    )
    result = figures(html, parser)
    assert [f.section for f in result] == [None, "التاريخ", "العصر الأموي", "الجغرافيا", "المناخ"]


@pytest.mark.parametrize(
    "html",
    ["", "   ", "not html at all", "<<<>>>", "<div><p>نص بلا صور</p></div>", "\x00\x01<img", None],
)
def test_empty_or_garbage_html_gives_no_figures(parser, html):
    assert figures(html, parser) == []


def test_deeply_nested_garbage_does_not_raise(parser):
    html = "<b>" * 3000 + '<img alt="عميق" src="//u.org/a/ab/Deep.jpg" width="100">' + "</b>" * 10
    result = figures(html, parser)
    assert [(f.file, f.caption) for f in result] == [("Deep.jpg", "عميق")]


def test_bytes_input_is_decoded(parser):
    html = legacy_thumb("Tlemcen.jpg", "الجامع الكبير في تلمسان").encode()
    assert only(html, parser).caption == "الجامع الكبير في تلمسان"


def test_src_path_decoded_name_keeps_percent_free_text(parser):
    """A name with an encoded `%` or `?` survives as the literal character."""
    html = (
        '<a href="/wiki/%D9%85%D9%84%D9%81:100%25_Halal%3F.jpg" class="image">'
        '<img alt="حلال" src="//u.org/a/ab/100%25_Halal%3F.jpg" width="200"/></a>'
    )
    assert only(html, parser).file == "100% Halal?.jpg"
    assert urlsplit(only(html, parser).src).path.endswith("100%25_Halal%3F.jpg")
