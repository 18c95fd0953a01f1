"""The output folder's layout: file names, the key of an input, the paths of its files, and the
real folders they are written into."""
from __future__ import annotations

import hashlib
import os
import re
import stat
from pathlib import Path

FORMAT_VERSION = 3  # 2: content digests of each input and output; 3: one maps file per batch
MANIFEST = "manifest.jsonl"
FAILURES = "failures.csv"
TMP_DIR = ".tmp"
LOCK = ".lock"


def resolve_input(path: os.PathLike | str) -> str:
    """The absolute, symlink-resolved path that identifies an input in the store (a symlink loop
    stays as it is, to fail when read, instead of raising here)."""
    return os.path.realpath(os.path.expanduser(os.fspath(path)))


def image_key(path: os.PathLike | str) -> str:
    """24 hex digits of sha1(resolved absolute path): the input's identity in the store."""
    return resolved_key(resolve_input(path))


def resolved_key(resolved: str) -> str:
    """image_key of a path that resolve_input already gave (the job's inputs are resolved once)."""
    return hashlib.sha1(resolved.encode("utf-8", "surrogateescape")).hexdigest()[:24]


def pack_key(keys: list) -> str:
    """The name of the maps file of a batch of images (their keys, in order): 24 hex digits."""
    return hashlib.sha1("\n".join(keys).encode()).hexdigest()[:24]


def maps_relpath(key: str) -> str:
    return f"maps/{key[:2]}/{key}.npz"


def overlay_relpath(key: str, class_id: int) -> str:
    return f"overlays/{key[:2]}/{key}_c{class_id}.png"


# The paths and names the store writes: a manifest line naming another path was tampered with, and
# --force deletes only files of these names.
MAPS_PATH = re.compile(r"maps/([0-9a-f]{2})/\1[0-9a-f]{22}\.npz")
OVERLAY_PATH = re.compile(r"overlays/([0-9a-f]{2})/\1[0-9a-f]{22}_c\d+\.png")
SHARD_NAME = re.compile(r"[0-9a-f]{2}")
MAPS_NAME = re.compile(r"([0-9a-f]{24})\.npz")
OVERLAY_NAME = re.compile(r"([0-9a-f]{24})_c\d+\.png")


def is_real_dir(path: Path) -> bool:
    try:
        return stat.S_ISDIR(os.lstat(path).st_mode)
    except FileNotFoundError:
        return False


def real_dirs(root: Path, rel: os.PathLike | str) -> Path:
    """Make the folders `rel` inside `root`; OSError if one of them is a symlink (or not a folder):
    the store never writes where a link inside DIR points."""
    path = root
    for part in Path(rel).parts:
        path = path / part
        try:
            path.mkdir()
        except FileExistsError:
            pass
        if not stat.S_ISDIR(os.lstat(path).st_mode):
            raise OSError(f"refusing to write into {str(path)!r}: it is a symlink or not a folder "
                          "(the output folder's own sub-folders must be real folders)")
    return path
