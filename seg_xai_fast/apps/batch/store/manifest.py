"""Reading DIR/manifest.jsonl: the run header, the image entries, an index of each key's last line;
and cutting a line torn by a kill before the next append."""
from __future__ import annotations

import io
import json
import os
from pathlib import Path
from typing import Iterator, Optional

from .layout import MANIFEST


def read_manifest(out_dir: os.PathLike | str) -> tuple[Optional[dict], Iterator[dict]]:
    """(run header or None, iterator over the image entries) of DIR/manifest.jsonl.

    A torn or unparsable line (a run killed mid-append) is skipped. An input explained twice
    (its maps file had gone missing) has two entries; the last one is current.
    """
    path = Path(out_dir) / MANIFEST
    if not path.is_file():
        return None, iter(())
    lines = _complete_lines(path)
    header = None
    first = next(lines, None)
    if first is not None and first.get("type") == "run":
        header = first

    def entries():
        if first is not None and first.get("type") == "image":
            yield first
        for record in lines:
            if record.get("type") == "image":
                yield record

    return header, entries()


def _complete_lines(path: Path) -> Iterator[dict]:
    return (record for _, record in _records(path))


def _records(path: Path) -> Iterator[tuple[int, dict]]:
    """(byte offset, record) of each complete line of the manifest at `path` that holds a JSON
    object; a torn last line (a run killed mid-append) ends the file, an unparsable line is skipped."""
    with open(path, "rb") as f:
        offset = 0
        for raw in f:
            if not raw.endswith(b"\n"):
                return  # torn last line
            try:
                record = json.loads(raw)
            except ValueError:
                record = None
            if isinstance(record, dict):
                yield offset, record
            offset += len(raw)


_INDEX_CACHE: dict = {}  # manifest path → ((mtime_ns, size), {key: offset of its last line})


def manifest_index(path: Path) -> dict:
    """{key: byte offset of its last complete line} of the manifest at `path`: ~100 bytes per
    image, where the entries themselves (with their digests) would take several times that."""
    return {record["key"]: offset for offset, record in _records(path)
            if record.get("type") == "image" and isinstance(record.get("key"), str)}


def manifest_entry(path: Path, offset: int) -> dict:
    """The manifest line at `offset` (from manifest_index)."""
    with open(path, "rb") as f:
        f.seek(offset)
        return json.loads(f.readline())


def manifest_entries(out_dir: os.PathLike | str) -> "ManifestEntries":
    """The current (last) manifest entry of each key of DIR, read on demand: `.get(key)`; the
    index is cached while the manifest is unchanged."""
    path = Path(out_dir) / MANIFEST
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return ManifestEntries(path, {})
    stamp = (st.st_mtime_ns, st.st_size)
    cached = _INDEX_CACHE.get(str(path))
    if cached is None or cached[0] != stamp:
        cached = (stamp, manifest_index(path))
        _INDEX_CACHE.clear()  # one folder at a time
        _INDEX_CACHE[str(path)] = cached
    return ManifestEntries(path, cached[1])


class ManifestEntries:
    def __init__(self, path: Path, index: dict) -> None:
        self.path, self.index = path, index

    def get(self, key: str) -> Optional[dict]:
        offset = self.index.get(key)
        return None if offset is None else manifest_entry(self.path, offset)

    def __getitem__(self, key: str) -> dict:
        entry = self.get(key)
        if entry is None:
            raise KeyError(key)
        return entry


def cut_torn_tail(f: io.BufferedRandom) -> None:
    """Truncate a torn last line (a run killed mid-append) and leave `f` positioned at the end."""
    size = f.seek(0, os.SEEK_END)
    if size == 0:
        return
    f.seek(size - 1)
    if f.read(1) == b"\n":
        return
    pos = size
    while pos > 0:  # scan back to the last newline, in blocks
        start = max(0, pos - 65536)
        f.seek(start)
        block = f.read(pos - start)
        cut = block.rfind(b"\n")
        if cut >= 0:
            f.truncate(start + cut + 1)
            break
        pos = start
    else:
        f.truncate(0)
    f.seek(0, os.SEEK_END)
    os.fsync(f.fileno())
