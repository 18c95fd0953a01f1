"""Digests of the model, the inputs and the outputs, and the check that a manifest entry's files
and input are still the ones it recorded."""
from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path
from typing import Optional

import torch

from .layout import MAPS_PATH, OVERLAY_PATH


def model_digest(model: torch.nn.Module) -> str:
    """sha1 of the model's parameters and buffers: a rerun with other weights must not mix results."""
    h = hashlib.sha1()
    for name, t in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(str(t.dtype).encode() + str(tuple(t.shape)).encode())
        h.update(t.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


def content_digest(data: bytes) -> str:
    """sha1 of `data`, 16 hex digits: an input's or output's identity in the manifest."""
    return hashlib.sha1(data).hexdigest()[:16]


def file_digest(path: os.PathLike | str) -> str:
    """content_digest of a file's bytes, read in blocks; OSError for anything but a regular file
    (opened non-blocking: a FIFO put in an input's place cannot hang a rerun)."""
    h = hashlib.sha1()
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(f"{str(path)!r} is not a regular file")
        with os.fdopen(os.dup(fd), "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    finally:
        os.close(fd)
    return h.hexdigest()[:16]


def input_digest(path: str) -> Optional[str]:
    """The input's current digest; None when it is gone or unreadable (its results stay usable)."""
    try:
        return file_digest(path)
    except OSError:
        return None


def entry_is_current(root: Path, entry: dict, input_path: str, known: Optional[dict] = None) -> bool:
    """Whether `entry`'s outputs are all intact (digests as recorded) and its input unchanged.

    known: {relative path: digest} of files already read in this pass (the images of one batch
    share their maps file: it is read once), filled in here."""
    digests = entry.get("digests")
    if not isinstance(digests, dict) or entry.get("maps") not in digests:
        return False
    known = {} if known is None else known
    for rel, digest in digests.items():
        if not (MAPS_PATH.fullmatch(rel) or OVERLAY_PATH.fullmatch(rel)):
            return False  # a path the store never writes: a tampered line
        if rel not in known:
            try:
                known[rel] = file_digest(root / rel)
            except OSError:
                known[rel] = None
        if known[rel] != digest:
            return False
    return entry.get("input") == input_path and input_digest(input_path) == entry.get("input_digest")
