"""ReadCoco: COCO captions JSON files (`captions_train2014.json`, …) to English pairs for
translation, one pair per caption.

A file is one JSON object on one line (`info`, `licenses`, `images`, `annotations`), up to about
100 MB, so it is loaded whole with `json.loads` by one worker (a few hundred MB of memory for the
train2014 file). Each annotation is one caption and one record: `read` counts annotations, never
images, since an image has 5 to 7 captions and every one of them is a pair.

Three layouts exist and all are read:
- the 2017 re-release: `coco_url` is the image on `images.cocodataset.org`, used as it is;
- v1.0 (2015): `coco_url` is `http://mscoco.org/images/<id>`, an HTML page, not an image;
- the coco-caption toolkit's copies: no `coco_url`, a Flickr `url`, and `"type": "captions"`.
When `coco_url` is not an image, the URL is rebuilt as
`http://images.cocodataset.org/<split>/<file_name>`, the split (`train2014`, `val2014`, …) taken
from the file name (`COCO_train2014_…`) or else from the JSON file's name. With the source's
`image_root`, images are instead the local files `image_root/<file_name>` (the folder is listed
once) and `image_url` is None.

Captions keep the annotators' raw text (mixed case, near-duplicates within an image) apart from
outer whitespace and inner whitespace runs (`caption_en`; trailing spaces and `\\n` are common).
`input_line` is the annotation's index in `annotations` (from 0): the whole file is one line.
`source_key` is `<image_id>:<annotation id>`, both stable ids of the dataset.

Drop reasons: `malformed_annotation` (not an object, or no annotation id), `empty_caption`,
`unknown_image` (an `image_id` missing from `images`), `no_image_url` (no URL can be built),
`missing_image_file` (not in `image_root`).
"""

from __future__ import annotations

import json
import posixpath
import re
from collections.abc import Iterator, Set
from dataclasses import dataclass
from typing import Any

from apache_beam.io.filesystems import FileSystems

from pipeline.records import TRANSLATED, Drop, Pair, pair_id
from pipeline.sources.base import ENGLISH, KindProfile, KnownFile, Provenance, SourceKind
from pipeline.sources.files import ReadFiles, list_folder, read_all
from pipeline.steps import Reasons
from pipeline.text import normalize_english


@dataclass(frozen=True)
class CocoSource:
    """COCO captions JSON files, translated; images by URL unless `image_root` is given."""

    paths: tuple[str, ...]
    image_root: str | None = None
    kind: str = "coco"
    name: str = "coco"


REASONS = Reasons(
    "coco",
    {
        "malformed_annotation": "an annotation that is not an object with an id, or whose "
        "caption is not text",
        "empty_caption": "the annotation's caption is empty",
        "unknown_image": "the annotation's image_id is not in the file's images",
        "missing_image_file": "the image's file is not in image_root",
        "invalid_utf8": "a text field holds a lone surrogate (a JSON escape such as \\ud800)",
        "no_image_url": "the image has no http(s) URL (coco_url or flickr_url)",
    },
    catch_all="coco_row_error",
)


COCO_IMAGES = "http://images.cocodataset.org"
_SPLIT = re.compile(r"(?:train|val|test)\d{4}")
_IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")


def is_image_url(url: str) -> bool:
    """True for an http(s) URL of an image file (`…/COCO_train2014_000000057870.jpg`), False for
    v1.0's `http://mscoco.org/images/57870`, an HTML page."""
    lowered = url.strip().lower()
    if not lowered.startswith(("http://", "https://")) or "mscoco.org/images/" in lowered:
        return False
    return lowered.split("?", 1)[0].split("#", 1)[0].endswith(_IMAGE_EXTENSIONS)


def image_split(file_name: str, json_path: str) -> str | None:
    """The COCO split folder of an image: from `COCO_val2014_…jpg`, else from
    `captions_val2014.json`; None when neither names one."""
    match = _SPLIT.search(file_name) or _SPLIT.search(posixpath.basename(json_path))
    return match.group(0) if match else None


def image_url(image: dict[str, Any], json_path: str) -> str | None:
    """The image's URL: `coco_url` when it is an image, else rebuilt on images.cocodataset.org."""
    coco_url = image.get("coco_url")
    if isinstance(coco_url, str) and is_image_url(coco_url):
        return coco_url.strip()
    file_name = image.get("file_name")
    if not isinstance(file_name, str) or not file_name.strip():
        return None
    split = image_split(file_name, json_path)
    return f"{COCO_IMAGES}/{split}/{file_name.strip()}" if split else None


def load_coco(data: bytes, path: str) -> dict[str, Any]:
    """The parsed file, or ValueError naming it when it is not a COCO captions file."""
    try:
        doc = json.loads(data)
    except json.JSONDecodeError as err:
        raise ValueError(
            f"{path}:{err.lineno}: not valid JSON ({err.msg} at column {err.colno})"
        ) from err
    except UnicodeDecodeError as err:
        raise ValueError(f"{path}: not UTF-8 JSON ({err})") from err
    if not isinstance(doc, dict):
        raise ValueError(f"{path}: not a COCO captions file (the top level is not an object)")
    for key in ("images", "annotations"):
        if not isinstance(doc.get(key), list):
            raise ValueError(f"{path}: not a COCO captions file (no '{key}' list)")
    annotations = doc["annotations"]
    if annotations and not any(isinstance(a, dict) and "caption" in a for a in annotations):
        # An instances or keypoints file: its annotations are boxes, not captions.
        raise ValueError(f"{path}: not a COCO captions file (no annotation has a 'caption')")
    return doc


def _licenses(doc: dict[str, Any]) -> dict[str, str]:
    """Licence id (as text) → licence name, from the `licenses` table."""
    table = doc.get("licenses")
    if not isinstance(table, list):
        return {}
    return {
        str(entry["id"]): str(entry["name"])
        for entry in table
        if isinstance(entry, dict) and "id" in entry and entry.get("name")
    }


def _images(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Image id (as text: toolkit copies may write ids as strings) → image."""
    return {
        str(image["id"]): image
        for image in doc["images"]
        if isinstance(image, dict) and image.get("id") is not None
    }


def parse_annotation(
    annotation: Any,
    index: int,
    images: dict[str, dict[str, Any]],
    licenses: dict[str, str],
    source: CocoSource,
    path: str,
    image_names: Set[str] | None = None,
) -> Pair | Drop:
    """One annotation as a `Pair` or a `Drop`; `image_names` lists `image_root` when it is set."""
    if not isinstance(annotation, dict) or annotation.get("id") is None:
        return Drop(source.name, "malformed_annotation", path, index, repr(annotation)[:200])
    raw_caption = annotation.get("caption")
    if raw_caption is not None and not isinstance(raw_caption, str):
        return Drop(source.name, "malformed_annotation", path, index, repr(raw_caption)[:200])
    caption = normalize_english(raw_caption or "")
    if not caption:
        return Drop(source.name, "empty_caption", path, index)
    image_id = annotation.get("image_id")
    image = images.get(str(image_id))
    if image is None:
        detail = str(image_id)[:100]
        return Drop(source.name, "unknown_image", path, index, detail, caption_en=caption)
    file_name = str(image.get("file_name") or "").strip()
    url = local_path = None
    if source.image_root is not None:
        if not file_name or image_names is None or file_name not in image_names:
            detail = file_name or None
            return Drop(source.name, "missing_image_file", path, index, detail, caption_en=caption)
        local_path = FileSystems.join(source.image_root, file_name)
    else:
        url = image_url(image, path)
        if url is None:
            detail = file_name or None
            return Drop(source.name, "no_image_url", path, index, detail, caption_en=caption)
    key = f"{image_id}:{annotation['id']}"
    return Pair(
        id=pair_id(source.kind, key, caption),
        source=source.kind,
        source_name=source.name,
        source_key=key,
        caption_ar="",
        caption_origin=TRANSLATED,
        caption_en=caption,
        image_url=url,
        image_path=local_path,
        license=licenses.get(str(image.get("license"))),
        input_file=path,
        input_line=index,
    )


def parse_coco(
    stream, path: str, source: CocoSource, image_names: Set[str] | None = None
) -> Iterator[Pair | Drop]:
    """Every annotation of one file (a binary stream) as a `Pair` or a `Drop`.

    Raises ValueError (naming the file) when the file cannot be read or is not a COCO captions
    file.
    """
    doc = load_coco(read_all(stream, path), path)
    images = _images(doc)
    licenses = _licenses(doc)
    for index, annotation in enumerate(doc["annotations"]):
        try:
            yield parse_annotation(annotation, index, images, licenses, source, path, image_names)
        except Exception as err:  # noqa: BLE001 - one bad annotation is counted, never fatal
            detail = f"{type(err).__name__}: {err}"[:300]
            yield Drop(source.name, REASONS.catch_all, path, index, detail)


def _parse_with_folder(stream, path: str, source: CocoSource) -> Iterator[Pair | Drop]:
    names = list_folder(source.image_root) if source.image_root is not None else None
    return parse_coco(stream, path, source, names)


class ReadCoco(ReadFiles):
    """Reads the source's COCO captions files; returns `(pairs, dropped)`."""

    def __init__(self, source: CocoSource):
        super().__init__(source.paths, _parse_with_folder, source)


# COCO 2014 captions (FORMATS §3; the val count is unverified there), both in
# annotations_trainval2014.zip, 241 MB on cocodataset.org's download page.
_COCO_ZIP = ("annotations_trainval2014.zip", 241_000_000)
KNOWN_FILES: dict[str, KnownFile] = {
    "captions_train2014.json": KnownFile(414_113, *_COCO_ZIP),
    "captions_val2014.json": KnownFile(202_654, *_COCO_ZIP),
}


PROVENANCE = Provenance(
    hub_source="extended|other-coco-2014",
    licence=(
        "COCO's annotations are under CC BY 4.0; its images come from Flickr, each under its"
        " own licence and Flickr's terms of use (https://cocodataset.org/#termsofuse)."
    ),
    citation="""@inproceedings{lin2014coco,
  title = {Microsoft COCO: Common Objects in Context},
  author = {Lin, Tsung-Yi and Maire, Michael and Belongie, Serge and Hays, James and Perona,
            Pietro and Ramanan, Deva and Doll{\\'a}r, Piotr and Zitnick, C. Lawrence},
  booktitle = {European Conference on Computer Vision (ECCV)},
  pages = {740--755},
  year = {2014}
}""",
)


KIND = SourceKind(
    kind="coco",
    provenance=PROVENANCE,
    config=CocoSource,
    reader=ReadCoco,
    language=ENGLISH,
    reasons=REASONS,
    path_keys=("paths", "image_root"),
    folder_keys=("image_root",),
    count=parse_coco,
    known_files=KNOWN_FILES,
    profile=KindProfile(
        1.0,
        1.0,
        "coco_image_bytes",
        "100 % of train2014 captions (FORMATS §0); images.cocodataset.org is reliable",
    ),
)
