"""Reading one image's explanation back from an output folder, verified against the manifest."""
from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

import torch

from .digests import content_digest, input_digest
from .files import expand_maps, parse_maps
from .layout import image_key, resolve_input
from .manifest import manifest_entries


@dataclass
class StoredExplanation:
    """One image's explanation read back from a store.

    maps: float32 [K,H,W] in [0,1] at the image's size; maps[i] explains classes[i].
    """

    maps: torch.Tensor
    classes: list
    image_path: str
    image_size: tuple
    method: str
    layer: str
    model: str


class DamagedOutputError(ValueError):
    """A stored explanation that does not match the manifest (damaged, swapped or stale)."""


def load_explanation(out_dir: os.PathLike | str, image_path: os.PathLike | str) -> StoredExplanation:
    """The stored explanation of `image_path` from the `seg-xai explain` output folder `out_dir`.

    Verified against the manifest: the maps file's digest (a truncated or swapped file raises
    DamagedOutputError), the input it names and its classes, and, when the image is still
    there, the image's digest (an image replaced since it was explained raises too). A rerun of
    `seg-xai explain` redoes what does not match.
    """
    out_dir = Path(out_dir)
    key = image_key(image_path)
    entry = manifest_entries(out_dir).get(key)
    if entry is None:
        if not out_dir.is_dir():
            raise FileNotFoundError(f"out_dir {str(out_dir)!r} is not a folder")
        raise FileNotFoundError(f"no explanation of {resolve_input(image_path)!r} in {str(out_dir)!r} "
                                f"(no manifest entry for key {key})")
    path = out_dir / entry["maps"]

    def damaged(why: str) -> DamagedOutputError:
        return DamagedOutputError(f"the explanation of {resolve_input(image_path)!r} in {str(out_dir)!r} ({path}) "
                                  f"{why}; rerun `seg-xai explain` into that folder to redo it")

    try:
        data = _read_regular(path)
    except OSError as err:
        raise damaged(f"cannot be read ({err.strerror or err})") from None
    if content_digest(data) != entry.get("digests", {}).get(entry["maps"]):
        raise damaged("is damaged or was replaced: its digest does not match the manifest")
    try:
        stored, classes, map_size, image_size, meta = parse_maps(data, entry.get("member"))
    except Exception as err:  # noqa: BLE001 - numpy/zipfile raise many types for a bad file
        raise damaged(f"cannot be parsed ({type(err).__name__}: {err})") from None
    if meta.get("input") != entry["input"] or classes != entry["classes"] or len(classes) != stored.shape[0]:
        raise damaged("does not match its manifest entry (input or classes)")
    current = input_digest(entry["input"])
    if current is not None and current != entry.get("input_digest"):
        raise damaged("is stale: the image changed after it was explained")
    return StoredExplanation(
        maps=expand_maps(stored, map_size, image_size), classes=classes, image_path=meta["input"],
        image_size=image_size, method=meta["method"], layer=meta["layer"], model=meta["model"],
    )


def _read_regular(path: Path) -> bytes:
    if not stat.S_ISREG(os.lstat(path).st_mode):
        raise OSError(f"{str(path)!r} is not a regular file")
    return path.read_bytes()
