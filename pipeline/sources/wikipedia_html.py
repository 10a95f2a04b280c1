"""One Arabic Wikipedia article's HTML to its figures: every media element, kept or not, and why.

A pure function (no network, no Beam): `extract_figures(html, page_url)` returns one `Figure` per
media element of the article, in document order. A figure the dataset should not take still
comes back, with `reason` set, so the crawl counts it as a drop instead of losing it.

It reads every markup era an arwiki page can come in (FORMATS.md §5):

- current Parsoid (REST, Enterprise dumps): `figure`/`span` with `typeof="mw:File/Thumb|Frame|
  Frameless"`, `a.mw-file-description`, `img.mw-file-element`, hrefs `./ملف:X.jpg` relative to
  `<base href>`; a frameless image's caption lives only in its `data-mw` JSON;
- older Parsoid (until 2020-21): `figure-inline`, `mw:Image[/Thumb]`, `mw:Video`, no classes;
- classic `action=parse`, legacy DOM: `div.thumbinner > a.image > img` with `div.thumbcaption`
  (minus `div.magnify`), frameless captions only in `title`/`alt`, hrefs percent-encoded
  `/wiki/%D9%85%D9%84%D9%81:X.jpg`, broken files as red `a.new` links to the upload form;
- classic `action=parse`, new DOM (MW >= 1.40): Parsoid's element shapes without `resource`,
  `data-file-*` or `data-mw`.

Templates that make their own markup are read too: galleries (`li.gallerybox` with its
`div.gallerytext`; `li.gallerycaption` is the gallery's title and never an image caption),
infoboxes (`.infobox-image` with `.infobox-caption` in the same cell or the next row) and the
Multiple image template (each `div.tsingle` has its own `div.thumbcaption`; the footer caption
describes the set, not an image).

The caption is the first non-empty of: the displayed caption (figcaption of a thumb or frame,
thumbcaption, gallerytext, infobox caption), the `data-mw` caption, `alt`, `title`, and last the
figcaption a floated non-thumb figure carries without showing it (the same text as its tooltip).
Caption text has references, magnify links, edit links and TemplateStyles removed, `<br>` and
block boundaries as spaces, whitespace runs collapsed; bidi marks and control characters are
left in for `pipeline.text.normalize_caption`, which removes them from every caption (the caption
filter applies it), but a caption made only of them is no caption.

The document is walked once, in order, stopping at headings (the current section), `<base>`
and media elements; the work per figure is one walk up its ancestors and small reads around
it. Plain loops over `.children`/`.descendants` stand in for bs4's `find`/`select`, which build
a matcher per call: on a 380 KB page with 280 figures, one `select` for the media elements
took 12 times as long as the pass over `.descendants` that finds them here. With lxml, the
figures add about a quarter to the time BeautifulSoup takes to build the tree.
"""

from __future__ import annotations

import json
import re
from typing import NamedTuple
from urllib.parse import parse_qs, unquote, urljoin, urlsplit

from bs4 import BeautifulSoup, NavigableString, Tag
from bs4.element import PreformattedString


class Figure(NamedTuple):
    """One media element of an article: a (page, image) candidate, or why it is not one.

    `file` is the file's name without namespace, percent-decoded, spaces for underscores
    (`Old town of Fez.jpg`). `src` is the absolute URL of the rendered `<img>` (None without
    one). `caption_field` says where the caption came from: `figcaption`, `thumbcaption`,
    `gallerytext`, `infobox_caption`, `data_mw`, `alt` or `title` (None with no caption).
    `section` is the heading of the section holding it (None in the lead). `is_main` marks the
    page's first kept figure. `reason` is None for a candidate to keep, else the drop reason:
    `icon`, `broken_media`, `not_an_image`, `svg_original`, `no_caption`, `repeated_on_page`.
    """

    file: str
    src: str | None
    caption: str
    caption_field: str | None
    width: int | None
    height: int | None
    section: str | None
    is_main: bool
    reason: str | None


# Drop reasons, in the order they are tested: the first that applies is the figure's reason.
NOT_AN_IMAGE = "not_an_image"
BROKEN_MEDIA = "broken_media"
ICON = "icon"
SVG_ORIGINAL = "svg_original"
NO_CAPTION = "no_caption"
REPEATED_ON_PAGE = "repeated_on_page"
FIGURE_REASONS = {
    NOT_AN_IMAGE: "the media element is audio, video or another file that is not an image",
    BROKEN_MEDIA: "the media element is a red link or a rendering error (mw:Error)",
    ICON: "rendered narrower than the source's min_width (flags, logos, icons)",
    SVG_ORIGINAL: "an SVG with no raster thumbnail to fetch",
    NO_CAPTION: "the figure has no caption text",
    REPEATED_ON_PAGE: "the file appears again on the same page (its first figure is the pair)",
}

# The file namespace on arwiki and its aliases (compared casefolded).
FILE_NAMESPACES = frozenset({"ملف", "file", "image", "صورة"})

# Parsoid's media wrappers, every era: mw:File, mw:Image, mw:Video, mw:Audio, each optionally
# /Thumb, /Frame, /Frameless; `typeof` may hold other words too (mw:Error, mw:Transclusion).
_MEDIA_TYPEOF = re.compile(r"(?:^|\s)mw:(File|Image|Video|Audio)(/\w+)?(?=\s|$)")
_ERROR_TYPEOF = re.compile(r"(?:^|\s)mw:Error(?=\s|$)")
# A thumb or frame shows its figcaption; a floated plain mw:File figure does not.
_SHOWN_CAPTION_FORMATS = frozenset({"/Thumb", "/Frame"})

# Containers whose images are decoration, not content: flags, maintenance boxes, navboxes,
# portal bars, stub notices and sister-project boxes (all rendered at 12-40 px anyway).
ICON_CONTAINER_CLASSES = frozenset(
    {
        "flagicon",
        "mbox-image",
        "mbox-imageright",
        "navbox",
        "navbox-image",
        "portal-bar",
        "portalbox",
        "stub",
        "asbox",
        "sistersitebox",
        "sister-box",
        "side-box-image",
    }
)
# Where a caption sits: an image's context search stops at the first of these it is inside,
# so an icon inside a caption never takes that caption.
_CAPTION_CLASSES = frozenset({"thumbcaption", "gallerytext", "infobox-caption", "gallerycaption"})

_HEADINGS = frozenset({"h1", "h2", "h3", "h4", "h5", "h6"})
_MEDIA_TAGS = ("img", "video", "audio")
_AV_TAGS = frozenset({"video", "audio"})
# Skipped with their content when taking caption text: references and their brackets, the
# legacy magnify link, edit-section links, TemplateStyles and scripts.
_SKIP_CLASSES = frozenset({"reference", "mw-ref", "magnify", "mw-editsection", "cite-bracket"})
_SKIP_TAGS = frozenset({"style", "script", "noscript", "template", "link", "meta"})
# Elements whose boundaries separate words.
_BLOCK_TAGS = frozenset(
    {
        "p", "div", "li", "ul", "ol", "dl", "dd", "dt", "table", "tr", "td", "th", "caption",
        "figure", "figcaption", "blockquote", "center", "section", "hr", "h1", "h2", "h3", "h4",
        "h5", "h6",
    }
)  # fmt: skip
# A caption made only of whitespace, control characters, bidi marks and invisible joiners is
# no caption.
_VISIBLE = re.compile(
    r"[^\s\x00-\x1f\x7f-\x9f\u00ad\u061c\u200b-\u200f\u202a-\u202e\u2060-\u2069\ufeff]"
)
_LEADING_INT = re.compile(r"\s*(\d+)")
# A video's poster frame (`…/220px--Name.webm.jpg`), shown as an <img> by the legacy
# TimedMediaHandler pop-up player: the file is still a video.
_POSTER = re.compile(
    r"/\d+px--[^/]*\.(?:webm|ogv|ogg|oga|opus|mp4|m4v|mpe?g|mov|mp3|wav|flac)\.jpg$", re.I
)


def extract_figures(
    html: str, page_url: str | None = None, *, parser: str = "lxml", min_width: int = 50
) -> list[Figure]:
    """Every media element of one article, in document order, each kept or given a reason.

    `html` is a full Parsoid document (its `<base href>` resolves relative URLs) or an
    `action=parse` fragment; `page_url` is the article's URL, used to resolve what `<base>`
    does not (a protocol-relative `<base>` or `src` becomes https). `parser` is any
    BeautifulSoup tree builder ("lxml", "html.parser"); both give the same figures.
    `min_width` is the rendered width below which an image is an `icon`. Empty or garbage
    input gives [] and never raises.
    """
    if isinstance(html, bytes):
        html = html.decode("utf-8", "replace")
    if not isinstance(html, str) or "<" not in html:
        return []
    soup = BeautifulSoup(html, parser)
    base = _absolute_base(None, page_url)
    section: str | None = None
    seen: set[tuple[str, str]] = set()
    has_main = False
    figures: list[Figure] = []
    for element in soup.descendants:
        if type(element) is not Tag or not _is_landmark(element):
            continue
        name = element.name
        if name in _HEADINGS:
            if not _is_toc_heading(element):
                section = _text(element) or None
            continue
        if name == "base":
            base = _absolute_base(element.get("href"), page_url)
            continue
        parts = _media_parts(element)
        if parts is None:
            continue
        figure = _figure(parts, base, section, min_width, parser)
        if figure.reason is None:
            key = (figure.file, figure.caption)
            if key in seen:
                figure = figure._replace(reason=REPEATED_ON_PAGE)
            else:
                seen.add(key)
                if not has_main:
                    figure = figure._replace(is_main=True)
                    has_main = True
        figures.append(figure)
    return figures


class _Parts(NamedTuple):
    """What one media element is made of, before any decision."""

    wrapper: Tag  # the Parsoid typeof element, or the media element itself (classic DOM)
    media: Tag | None  # the <img>/<video>/<audio>, None when the file is broken
    media_kind: str | None  # File, Image, Video, Audio (Parsoid typeof), None for classic
    shows_caption: bool  # a thumb or frame figure: its figcaption is displayed
    broken: bool


def _is_landmark(tag: Tag) -> bool:
    """The elements the single pass stops at: headings, <base>, media and media wrappers."""
    name = tag.name
    if name in _MEDIA_TAGS or name in _HEADINGS or name == "base":
        return True
    if name == "a":
        return "wpDestFile=" in (tag.get("href") or "")
    typeof = tag.get("typeof")
    return bool(typeof) and _MEDIA_TYPEOF.search(typeof) is not None


def _media_parts(element: Tag) -> _Parts | None:
    """The parts of a media element, or None when it belongs to a wrapper met earlier."""
    typeof = element.get("typeof")
    match = _MEDIA_TYPEOF.search(typeof) if typeof else None
    if match:
        media = _own_media(element)
        broken = (
            media is None
            or _ERROR_TYPEOF.search(typeof) is not None
            or (media.name == "img" and not media.get("src"))
        )
        shows = element.name == "figure" and match.group(2) in _SHOWN_CAPTION_FORMATS
        return _Parts(element, media, match.group(1), shows, broken)
    if _inside_media_wrapper(element):
        return None
    if element.name == "img" and _is_math(element):
        return None
    if element.name == "a":  # a legacy red link to the upload form: the file does not exist
        return _Parts(element, None, None, False, True)
    broken = element.name == "img" and not element.get("src")
    return _Parts(element, element, None, False, broken)


def _own_media(wrapper: Tag) -> Tag | None:
    """A wrapper's own <img>/<video>/<audio>: the first one outside its figcaption."""
    for child in wrapper.children:
        if not isinstance(child, Tag) or child.name == "figcaption":
            continue
        if child.name in _MEDIA_TAGS:
            return child
        for node in child.descendants:
            if isinstance(node, Tag) and node.name in _MEDIA_TAGS:
                return node
    return None


def _inside_media_wrapper(element: Tag) -> bool:
    for parent in element.parents:
        typeof = parent.get("typeof") if isinstance(parent, Tag) else None
        if typeof and _MEDIA_TYPEOF.search(typeof):
            return True
    return False


def _is_math(img: Tag) -> bool:
    """Math formulas' fallback images are not media files."""
    return any(c.startswith("mwe-math") for c in img.get("class") or ())


def _figure(
    parts: _Parts, base: str | None, section: str | None, min_width: int, parser: str
) -> Figure:
    media = parts.media
    context = _context(parts.wrapper)
    link = _link(parts)
    src = _resolve(media.get("src"), base) if media is not None and media.name == "img" else None
    caption, field = _caption(parts, context, link, parser)
    file = _file_name(parts, link, src, base)
    width = _int_attr(media, "width")
    height = _int_attr(media, "height")

    is_av = (
        (media is not None and media.name in _AV_TAGS)
        or parts.media_kind in ("Video", "Audio")
        or (src is not None and _POSTER.search(urlsplit(src).path) is not None)
    )
    if is_av:
        reason = NOT_AN_IMAGE
    elif parts.broken:
        reason = BROKEN_MEDIA
    elif context.in_icon_container or (width is not None and width < min_width):
        reason = ICON
    elif src is not None and urlsplit(src).path.lower().endswith(".svg"):
        reason = SVG_ORIGINAL
    elif not caption:
        reason = NO_CAPTION
    else:
        reason = None
    return Figure(
        file=file,
        src=src,
        caption=caption,
        caption_field=field,
        width=width,
        height=height,
        section=section,
        is_main=False,
        reason=reason,
    )


class _Context(NamedTuple):
    """What a media element's ancestors say about it."""

    caption_node: Tag | None  # the displayed caption element of its container, if any
    caption_field: str | None
    in_icon_container: bool


def _context(wrapper: Tag) -> _Context:
    """One walk up the ancestors: the container's caption, and whether it sits in an icon box.

    The nearest container decides the caption: a Multiple image `div.tsingle` or a legacy
    `div.thumbinner` (its own `div.thumbcaption` child), a `li.gallerybox` (its
    `div.gallerytext`), an `.infobox-image` cell (an `.infobox-caption` inside it, else in the
    next table row). Reaching a caption element first means the image is inside a caption.
    """
    caption_node = None
    field = None
    searching = True
    icon = False
    infobox_cell = None
    for parent in wrapper.parents:
        if not isinstance(parent, Tag) or parent.name == "[document]":
            break
        classes = parent.get("class") or ()
        if classes and not icon and not ICON_CONTAINER_CLASSES.isdisjoint(classes):
            icon = True
        if not searching:
            continue
        if infobox_cell is not None:
            if parent.name == "tr":
                caption_node = _next_row_infobox_caption(parent)
                field = "infobox_caption" if caption_node is not None else None
                searching = False
            continue
        if parent.name == "figcaption" or (classes and not _CAPTION_CLASSES.isdisjoint(classes)):
            searching = False
        elif "tsingle" in classes or "thumbinner" in classes:
            caption_node = _first_with_class(parent.children, "thumbcaption")
            field = "thumbcaption" if caption_node is not None else None
            searching = False
        elif parent.name == "li" and "gallerybox" in classes:
            caption_node = _first_with_class(parent.descendants, "gallerytext")
            field = "gallerytext" if caption_node is not None else None
            searching = False
        elif "infobox-image" in classes:
            caption_node = _first_with_class(parent.descendants, "infobox-caption")
            if caption_node is not None:
                field = "infobox_caption"
                searching = False
            else:
                infobox_cell = parent
    return _Context(caption_node, field, icon)


def _next_row_infobox_caption(row: Tag) -> Tag | None:
    following = row.find_next_sibling("tr")
    if following is None:
        return None
    return _first_with_class(following.descendants, "infobox-caption")


def _first_with_class(nodes, name: str) -> Tag | None:
    """The first element among `nodes` with class `name` (bs4's find builds a filter per call,
    which dominated the time of pages with hundreds of figures)."""
    for node in nodes:
        if isinstance(node, Tag) and name in (node.get("class") or ()):
            return node
    return None


def _link(parts: _Parts) -> Tag | None:
    """The <a> around the media: the file description link, or `link=` to some other page."""
    if parts.wrapper.name == "a":
        return parts.wrapper
    if parts.media is not None:
        parent = parts.media.parent
        return parent if isinstance(parent, Tag) and parent.name == "a" else None
    return parts.wrapper.find("a", href=True)  # a broken Parsoid/new-DOM file: a > span


def _caption(
    parts: _Parts, context: _Context, link: Tag | None, parser: str
) -> tuple[str, str | None]:
    """The first non-empty caption, in the order of the module docstring, and its field."""
    wrapper = parts.wrapper
    figcaption = None
    if wrapper.name == "figure":
        figcaption = next(
            (c for c in wrapper.children if isinstance(c, Tag) and c.name == "figcaption"), None
        )
    if parts.shows_caption and figcaption is not None:
        text = _text(figcaption)
        if text:
            return text, "figcaption"
    if context.caption_node is not None:
        text = _text(context.caption_node)
        if text:
            return text, context.caption_field
    data_mw = wrapper.get("data-mw")
    if data_mw and "caption" in data_mw:
        text = _data_mw_caption(data_mw, parser)
        if text:
            return text, "data_mw"
    media = parts.media
    if media is not None:
        text = _clean(media.get("alt"))
        if text:
            return text, "alt"
        for holder in (link, media.parent, media):
            if _title_is_caption(holder, link):
                text = _clean(holder.get("title"))
                if text:
                    return text, "title"
    if not parts.shows_caption and figcaption is not None:
        text = _text(figcaption)
        if text:
            return text, "figcaption"
    return "", None


def _title_is_caption(holder: Tag | None, link: Tag | None) -> bool:
    """A title is the caption on the file link, a `link=` span (Parsoid) or the <img> itself;
    on a link to another page it is that page's name, not a caption."""
    if not isinstance(holder, Tag):
        return False
    if holder is not link:
        return holder.name in ("span", "img")
    classes = holder.get("class") or ()
    return (
        "image" in classes
        or "mw-file-description" in classes
        or bool(_name_from_title_href(holder.get("href")))
    )


def _data_mw_caption(data_mw: str, parser: str) -> str:
    """The caption in Parsoid's `data-mw` JSON (HTML in a string); "" when it is malformed."""
    try:
        value = json.loads(data_mw)
    except (ValueError, RecursionError):
        return ""
    caption = value.get("caption") if isinstance(value, dict) else None
    if not isinstance(caption, str) or not caption.strip():
        return ""
    if "<" not in caption and "&" not in caption:
        return _clean(caption)
    return _text(BeautifulSoup(caption, parser))


def _text(node: Tag) -> str:
    """Visible caption text: references, magnify and edit links, styles skipped; words kept apart
    at <br> and block boundaries; whitespace collapsed. "" when nothing visible is left."""
    parts: list[str] = []
    stack: list = [iter(node.children)]
    while stack:
        for child in stack[-1]:
            if isinstance(child, Tag):
                name = child.name
                if name == "br":
                    parts.append(" ")
                    continue
                if name in _SKIP_TAGS:
                    continue
                classes = child.get("class")
                if classes and not _SKIP_CLASSES.isdisjoint(classes):
                    continue
                if name in _BLOCK_TAGS:
                    parts.append(" ")
                    stack.append(_then_space(child.children, parts))
                else:
                    stack.append(iter(child.children))
                break
            if isinstance(child, NavigableString) and not isinstance(child, PreformattedString):
                parts.append(child)
        else:
            stack.pop()
    return _clean("".join(parts))


def _then_space(children, parts: list[str]):
    """Yield a block's children, then mark its end with a space."""
    yield from children
    parts.append(" ")


def _clean(text: str | None) -> str:
    if not text:
        return ""
    text = " ".join(text.split())
    return text if _VISIBLE.search(text) else ""


def _file_name(parts: _Parts, link: Tag | None, src: str | None, base: str | None) -> str:
    """The file's name: its description link, else `resource`, else the media's URLs, else the
    upload form's `wpDestFile` (a legacy red link); "" when nothing names it."""
    name = _name_from_title_href(link.get("href")) if link is not None else ""
    if name:
        return name
    media = parts.media
    broken = (
        _first_with_class(parts.wrapper.descendants, "mw-broken-media") if parts.broken else None
    )
    holders = (media, broken)
    for holder in holders:
        if holder is not None:
            name = _name_from_title_href(holder.get("resource"))
            if name:
                return name
    if media is not None and media.name in _AV_TAGS:
        if media.get("data-mwtitle"):  # legacy TimedMediaHandler
            return _title_text(media["data-mwtitle"])
        source = media.find("source", src=True)
        url = media.get("poster") or (source.get("src") if source is not None else None)
        name = _name_from_upload_url(_resolve(url, base))
        if name:
            return name
    if src:
        return _name_from_upload_url(src)
    if link is not None:
        dest = parse_qs(urlsplit(link.get("href") or "").query).get("wpDestFile")
        if dest:
            return _title_text(dest[0])
    return ""


def _name_from_title_href(href: str | None) -> str:
    """`./ملف:X_y.jpg`, `/wiki/%D9%85%D9%84%D9%81:X.jpg`, `/w/index.php?title=File:X.jpg`:
    the name after a file namespace, else ""."""
    if not href:
        return ""
    parts = urlsplit(href)
    path = parts.path
    if "title=" in parts.query:
        titles = parse_qs(parts.query).get("title")
        if titles:
            path = titles[0]
    last = unquote(path.rsplit("/", 1)[-1])
    namespace, colon, name = last.partition(":")
    if not colon or namespace.strip().replace("_", " ").casefold() not in FILE_NAMESPACES:
        return ""
    return _title_text(name)


def _name_from_upload_url(url: str | None) -> str:
    """`…/thumb/a/ab/Name.jpg/250px-Name.jpg`, `…/a/ab/Name.jpg` and a video's
    `…/transcoded/a/ab/Name.webm/Name.webm.480p.vp9.webm` give the name (decoded)."""
    if not url:
        return ""
    segments = [s for s in urlsplit(url).path.split("/") if s]
    if not segments:
        return ""
    for folder in ("thumb", "transcoded"):  # …/thumb/h/hh/Name/250px-Name: Name
        if folder in segments[:-1] and len(segments) - segments.index(folder) >= 5:
            return _title_text(unquote(segments[-2]))
    return _title_text(unquote(segments[-1]))


def _title_text(name: str) -> str:
    return " ".join(name.replace("_", " ").split())


def _absolute_base(href: str | None, page_url: str | None) -> str | None:
    """The URL relative links resolve against: `<base href>` joined to the page's URL."""
    page = _resolve(page_url, None) if page_url else None
    if not href:
        return page
    return _resolve(href, page)


def _resolve(url: str | None, base: str | None) -> str | None:
    """Absolute https URL for a protocol-relative or relative one (kept as is with no base)."""
    if not url:
        return None
    url = url.strip()
    if url.startswith("//"):
        return "https:" + url
    if base and not urlsplit(url).scheme:
        return urljoin(base, url)
    return url


def _int_attr(tag: Tag | None, name: str) -> int | None:
    if tag is None:
        return None
    match = _LEADING_INT.match(tag.get(name) or "")
    return int(match.group(1)) if match else None


def _is_toc_heading(heading: Tag) -> bool:
    """The legacy table of contents' own title ("المحتويات") is not a section."""
    if heading.get("id") == "mw-toc-heading":
        return True
    parent = heading.parent
    return isinstance(parent, Tag) and "toctitle" in (parent.get("class") or ())
