"""The image/label pairs of `seg-xai evaluate IMAGES --labels LABELS`: discovery, pairing by
relative path and stem, and reading label maps (index PNGs, palette PNGs read as indices).

A label map is an image of class ids, one per pixel: an 8- or 16-bit grayscale PNG/TIFF, or a
palette ('P') PNG as VOC ships them, whose pixel values are the palette indices. RGB colour masks
are refused (their colours would need a table to become ids).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch

from ..errors import UsageError
from .batch.inputs import discover_inputs

LABEL_SUFFIXES = (".png", ".tif", ".tiff", ".bmp", ".pgm", ".gif")
LABEL_RANGE = 65536  # the ids a 16-bit label PNG can hold; --ignore-index must lie in [0, 65535]


@dataclass(frozen=True)
class Pair:
    """One image and its label map (label None: none was found; `why` says what was looked for)."""

    key: str  # the image's path relative to its input folder (its name for a file input): the run's key
    image: str
    label: Optional[str]
    why: str = ""


def find_pairs(images: Sequence[str], labels: str) -> list[Pair]:
    """Every image named by `images` (files, folders, globs, list files, as `seg-xai explain`
    takes them) with its label file under the folder `labels`: the file at the image's relative
    path with a label suffix, else the one label file of the same stem anywhere under `labels`.
    Raises UsageError when `labels` is not a folder or holds no label file."""
    root = Path(labels).expanduser()
    if not root.is_dir():
        raise UsageError(f"--labels must be a folder of label maps, got {labels!r} (not a folder)")
    root = root.resolve()
    by_relative: dict[str, str] = {}
    by_stem: dict[str, list[str]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            path = Path(dirpath) / name
            if path.suffix.lower() in LABEL_SUFFIXES:
                rel = path.relative_to(root)
                by_relative.setdefault(str(rel.with_suffix("")), str(path))
                by_stem.setdefault(path.stem, []).append(str(path))
    if not by_relative:
        raise UsageError(f"--labels {labels!r} holds no label map ({'/'.join(LABEL_SUFFIXES)} files)")
    folders = [Path(s).expanduser().resolve() for s in images if Path(s).expanduser().is_dir()]
    pairs = []
    for image in discover_inputs(images):
        path = Path(image)
        if root in path.parents:
            continue  # the label maps themselves, when LABELS lies inside an input folder
        base = next((f for f in folders if f in path.parents), None)
        key = str(path.relative_to(base)) if base else path.name
        label = by_relative.get(str(Path(key).with_suffix("")))
        why = ""
        if label is None:
            same_stem = by_stem.get(path.stem, [])
            if len(same_stem) == 1:
                label = same_stem[0]
            else:
                why = (f"no label map for it: looked for {Path(key).with_suffix('.*')} under {root} and found "
                       + (f"{len(same_stem)} files named {path.stem}.*" if same_stem else f"no file named {path.stem}.*"))
        pairs.append(Pair(key, image, label, why))
    return pairs


def read_label(path: str) -> torch.Tensor:
    """The label map at `path` as int64 [H,W] class ids (palette PNGs: the palette indices)."""
    from PIL import Image

    with Image.open(path) as im:
        if im.mode not in ("P", "L", "I", "I;16", "I;16B", "I;16L", "1"):
            raise ValueError(f"the label map is a {im.mode} image; expected an index image (8/16-bit grayscale "
                             f"or a palette PNG whose indices are the class ids)")
        return torch.from_numpy(np.asarray(im, dtype=np.int64).copy())


def check_label(label: torch.Tensor, image_size: Sequence[int], num_classes: int, ignore_index: int) -> None:
    """Raise ValueError (the pair's recorded failure) when the label map cannot be scored."""
    if tuple(label.shape) != tuple(image_size):
        raise ValueError(f"the label map is {label.shape[1]}×{label.shape[0]} pixels, the image "
                         f"{image_size[1]}×{image_size[0]}")
    values = torch.unique(label)
    bad = values[(values >= num_classes) & (values != ignore_index) | (values < 0)]
    if bad.numel():
        raise ValueError(f"label values {bad.tolist()[:8]} are neither classes of the model (0..{num_classes - 1}) "
                         f"nor the ignore index {ignore_index}")


def check_ignore_index(ignore_index, num_classes: Optional[int] = None) -> int:
    if isinstance(ignore_index, bool) or not isinstance(ignore_index, int) or not 0 <= ignore_index < LABEL_RANGE:
        raise UsageError(f"--ignore-index must be an int in [0, {LABEL_RANGE - 1}] (a label map's value range), "
                         f"got {ignore_index!r}")
    if num_classes is not None and ignore_index < num_classes:
        raise UsageError(f"--ignore-index {ignore_index} is a class of the model (0..{num_classes - 1}); "
                         f"pick a value the model does not predict (default 255)")
    return ignore_index
