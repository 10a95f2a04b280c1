"""ImageStore: the stored images of a run, outside the Beam graph.

The images stage writes each stored image once, here, and the pair carries a reference of about
50 bytes (`image_ref`) instead of the bytes; dedupe, sharding and every other grouping move only
references, and the writer reads the bytes back when it writes a shard. So a run's memory does
not grow with its images (issue #12: 61 KB more per pair when the bytes rode in the pairs).

Layout: append-only pack files, one per writer (a bundle of the images stage), in one folder,
local or on any Beam filesystem (`gs://`, `s3://`):

    ROOT/packs/<uuid>.pack      record, record, …
    record = HEADER (magic, facts length, data length) + facts (JSON) + data

A reference is `<pack name>:<offset of the data>:<length>`, relative to ROOT. Packs rather than a
file per image because object stores charge per object and are slow on millions of small ones
(`gs://` writes about 10-20 objects/s per thread), while a pack is one streaming upload per
bundle and the writer reads ranges of it. The facts (`StoredImage` without the data, and the
key: the URL) make a pack self-describing: `StoreIndex` rebuilds the key → record map by
reading the headers, which is how the store doubles as the image cache of later runs (one copy
of each image on disk, not two), including the packs of a run killed half-way (a record cut
short is ignored; a whole one is checked against its sha256 before it is reused).

A record is flushed as soon as it is written, so a kill -9 loses at most the record being
written. Packs are only appended to, never rewritten; a bundle that is retried writes a new pack,
and the abandoned one is garbage that no reference points to.
"""

from __future__ import annotations

import hashlib
import json
import os
import posixpath
import struct
import threading
import uuid
from collections.abc import Iterable, Iterator
from typing import IO, NamedTuple

import numpy as np
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from pipeline.files import is_remote, join

PACKS = "packs"
PACK_SUFFIX = ".pack"
MAGIC = b"APK1"
HEADER = struct.Struct(">4sII")  # magic, facts length, data length
# Facts longer than this are not ours (a header read from the middle of some data).
MAX_FACTS = 1 << 16
# Packs a reader keeps open at once (the least recently opened is closed first).
MAX_OPEN_PACKS = 16


class StoredImage(NamedTuple):
    """What is kept of one image: the encoded bytes and what describes them."""

    data: bytes
    width: int
    height: int
    phash: str
    sha256: str
    mime_type: str
    extension: str


class Record(NamedTuple):
    """One whole record of a pack: where it starts, its facts, and the reference of its data."""

    offset: int
    facts: dict
    ref: str


def make_ref(pack: str, offset: int, length: int) -> str:
    return f"{pack}:{offset}:{length}"


def parse_ref(ref: str) -> tuple[str, int, int]:
    """(pack name, offset, length) of a reference; raises ValueError for anything else."""
    pack, offset, length = ref.rsplit(":", 2)
    if not pack.endswith(PACK_SUFFIX) or "/" in pack or os.sep in pack:
        raise ValueError(f"not an image reference: {ref!r}")
    return pack, int(offset), int(length)


def short_key(key: str) -> int:
    """The 64 bits of a record's key that `StoreIndex` sorts by."""
    return int.from_bytes(hashlib.sha256(key.encode("utf-8")).digest()[:8], "big")


def _open_read(path: str) -> IO[bytes]:
    if is_remote(path):
        return FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED)
    return open(path, "rb")  # noqa: SIM115 - closed by the caller


class ImageStore:
    """The pack files under `root`. Picklable (only the path travels with a transform).

    `reuse`: the store is also the image cache: the images stage looks URLs up in it before it
    downloads (`StoreIndex`), and the store outlives the run. Otherwise it lives in the run's
    staging folder and goes with it when the output is committed.
    """

    def __init__(self, root: str, reuse: bool = False):
        self.root = root
        self.reuse = reuse

    def __repr__(self) -> str:
        return f"ImageStore({self.root!r}, reuse={self.reuse})"

    @property
    def packs(self) -> str:
        return join(self.root, PACKS)

    def writer(self) -> PackWriter:
        """A writer of a new pack (nothing is created before the first `append`)."""
        return PackWriter(self)

    def reader(self) -> PackReader:
        return PackReader(self)

    def read(self, ref: str) -> bytes:
        """The data of one reference (opens and closes its pack: for many, use `reader`)."""
        with self.reader() as reader:
            return reader.read(ref)

    def pack_paths(self) -> list[str]:
        """The packs of the store, sorted; none when the folder does not exist."""
        pattern = join(self.packs, "*" + PACK_SUFFIX)
        try:
            matched = FileSystems.match([pattern])[0].metadata_list
        except Exception:  # noqa: BLE001 - a folder that is not there yet matches nothing
            return []
        return sorted(m.path for m in matched)

    def records(self) -> Iterator[Record]:
        """Every whole record of every pack, in pack and file order (see `scan_pack`)."""
        for path in self.pack_paths():
            yield from scan_pack(path)


def scan_pack(path: str) -> Iterator[Record]:
    """The whole records of the pack at `path`. Stops at the first record that is cut short or
    not a record (the tail a killed writer left): what follows it cannot be trusted to align."""
    name = _basename(path)
    with _open_read(path) as f:
        offset = 0
        while True:
            try:
                facts, data_at, data_len = _read_header(f)
            except ValueError:
                return
            # A seek past the end succeeds: the data is whole only if its last byte exists.
            if data_len and not _has_byte(f, data_at + data_len - 1):
                return
            yield Record(offset, facts, make_ref(name, data_at, data_len))
            offset = data_at + data_len
            f.seek(offset)


def _read_header(f: IO[bytes]) -> tuple[dict, int, int]:
    """The facts of the record at `f`'s position, where its data starts and its length; raises
    ValueError where there is no whole header."""
    at = f.tell()
    head = f.read(HEADER.size)
    if len(head) < HEADER.size:
        raise ValueError("end of pack")
    magic, facts_len, data_len = HEADER.unpack(head)
    if magic != MAGIC or facts_len > MAX_FACTS:
        raise ValueError(f"no record at {at}")
    raw = f.read(facts_len)
    if len(raw) < facts_len:
        raise ValueError(f"record at {at} cut short")
    return json.loads(raw), at + HEADER.size + facts_len, data_len


def _basename(path: str) -> str:
    return posixpath.basename(path) if is_remote(path) else os.path.basename(path)


def _has_byte(f: IO[bytes], position: int) -> bool:
    f.seek(position)
    return len(f.read(1)) == 1


class PackWriter:
    """Appends records to one new pack of a store; safe to share among threads. The pack is
    created by the first `append` (a bundle that kept nothing leaves no file)."""

    def __init__(self, store: ImageStore):
        self._store = store
        self.name = uuid.uuid4().hex + PACK_SUFFIX
        self._file: IO[bytes] | None = None
        self._offset = 0
        self._lock = threading.Lock()

    def append(self, stored: StoredImage, key: str | None = None) -> str:
        """Writes one image and its facts; returns its reference. `key`: what `StoreIndex`
        finds it by (an image URL; None: never looked up)."""
        facts = {
            "key": key,
            "width": stored.width,
            "height": stored.height,
            "phash": stored.phash,
            "sha256": stored.sha256,
            "mime_type": stored.mime_type,
            "extension": stored.extension,
        }
        raw = json.dumps(facts, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        record = HEADER.pack(MAGIC, len(raw), len(stored.data)) + raw + stored.data
        with self._lock:
            if self._file is None:
                self._file = self._open()
            self._file.write(record)
            self._file.flush()
            data_at = self._offset + HEADER.size + len(raw)
            self._offset += len(record)
        return make_ref(self.name, data_at, len(stored.data))

    def _open(self) -> IO[bytes]:
        path = join(self._store.packs, self.name)
        if is_remote(path):
            return FileSystems.create(path, compression_type=CompressionTypes.UNCOMPRESSED)
        os.makedirs(self._store.packs, exist_ok=True)
        return open(path, "xb")  # noqa: SIM115 - closed by `close`

    def close(self) -> None:
        """Finishes the pack (on an object store, the upload); the references are readable
        once it returns."""
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None


class PackReader:
    """Reads references of one store, keeping each pack it opened open until `close` (a shard's
    images come from a few packs, read in offset order by `read_many`)."""

    def __init__(self, store: ImageStore):
        self._store = store
        self._files: dict[str, IO[bytes]] = {}

    def __enter__(self) -> PackReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def read(self, ref: str) -> bytes:
        pack, offset, length = parse_ref(ref)
        f = self._file(pack)
        f.seek(offset)
        data = f.read(length)
        if len(data) != length:
            raise OSError(f"{join(self._store.packs, pack)}: {length} bytes at {offset} cut short")
        return data

    def record(self, pack: str, offset: int) -> tuple[str, dict, bytes]:
        """The record at `offset` of `pack`: the reference of its data, its facts, its data."""
        f = self._file(pack)
        f.seek(offset)
        facts, data_at, data_len = _read_header(f)
        ref = make_ref(pack, data_at, data_len)
        return ref, facts, self.read(ref)

    def _file(self, pack: str) -> IO[bytes]:
        f = self._files.pop(pack, None)
        if f is None:
            if len(self._files) >= MAX_OPEN_PACKS:
                self._files.pop(next(iter(self._files))).close()
            f = _open_read(join(self._store.packs, pack))
        self._files[pack] = f  # the most recently used last
        return f

    def read_many(self, refs: Iterable[str]) -> dict[str, bytes]:
        """The data of each reference, read pack by pack in offset order."""
        ordered = sorted(set(refs), key=parse_ref)
        return {ref: self.read(ref) for ref in ordered}

    def close(self) -> None:
        for f in self._files.values():
            f.close()
        self._files.clear()


class StoreIndex:
    """The records of a store by URL, read from the packs' headers once (at a worker's start).

    Compact for millions of records: a sorted array of the first 8 bytes of each URL's key and
    the record's position (pack number, offset); `get` checks the full URL and the data's sha256
    before it answers, so a collision of the short key or a damaged record is a miss, never a
    wrong image.
    """

    def __init__(self, store: ImageStore):
        self._store = store
        self._packs: list[str] = []
        keys, packs, offsets = [], [], []
        for number, path in enumerate(store.pack_paths()):
            self._packs.append(_basename(path))
            for record in scan_pack(path):
                key = record.facts.get("key")
                if key:
                    keys.append(short_key(key))
                    packs.append(number)
                    offsets.append(record.offset)
        order = np.argsort(np.asarray(keys, dtype=np.uint64), kind="stable")
        self._keys = np.asarray(keys, dtype=np.uint64)[order]
        self._pack = np.asarray(packs, dtype=np.int32)[order]
        self._offset = np.asarray(offsets, dtype=np.int64)[order]
        self._local = threading.local()

    def __len__(self) -> int:
        return len(self._keys)

    def get(self, key: str) -> tuple[str, StoredImage] | None:
        """(reference, the stored image) of the record appended with `key`, or None."""
        short = np.uint64(short_key(key))
        reader = getattr(self._local, "reader", None)
        if reader is None:  # one reader a thread: a file position is not shareable
            reader = self._local.reader = self._store.reader()
        first = int(np.searchsorted(self._keys, short))
        for i in range(first, len(self._keys)):
            if self._keys[i] != short:
                break
            try:
                ref, facts, data = reader.record(self._packs[self._pack[i]], int(self._offset[i]))
            except (OSError, ValueError):
                continue
            if facts.get("key") == key and hashlib.sha256(data).hexdigest() == facts.get("sha256"):
                return ref, stored_image(facts, data)
        return None


def stored_image(facts: dict, data: bytes) -> StoredImage:
    return StoredImage(
        data=data,
        width=facts["width"],
        height=facts["height"],
        phash=facts["phash"],
        sha256=facts["sha256"],
        mime_type=facts["mime_type"],
        extension=facts["extension"],
    )
