"""The image/label pairs of `seg-xai evaluate IMAGES --labels LABELS`: discovery, pairing by
relative path and stem, and reading label maps (index PNGs, palette PNGs read as indices, NIfTI
label volumes).

A label map is an image of class ids, one per pixel: an 8- or 16-bit grayscale PNG/TIFF, or a
palette ('P') PNG as VOC ships them, whose pixel values are the palette indices. RGB colour masks
are refused (their colours would need a table to become ids). A volume (.nii/.nii.gz, extra
[medical]) pairs with a label volume (.nii/.nii.gz) of integer class ids, one per voxel, and an
image with a 2-D label map: the two kinds never pair with each other.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch

from ..errors import UsageError
from .batch.inputs import IMAGE_SUFFIXES, discover_inputs
from .scenes import NIFTI_SUFFIXES, extra_module, kind_of

LABEL_SUFFIXES = (".png", ".tif", ".tiff", ".bmp", ".pgm", ".gif")
VOLUME = "nifti"  # the kind_of a volume; every other file is a 2-D image
LABEL_RANGE = 65536  # the ids a 16-bit label PNG can hold; --ignore-index must lie in [0, 65535]


@dataclass(frozen=True)
class Pair:
    """One image and its label map (label None: none was found; `why` says what was looked for)."""

    key: str  # the image's path relative to its input folder (its name for a file input): the run's key
    image: str
    label: Optional[str]
    why: str = ""


def split_name(path: Path) -> tuple[str, str]:
    """(name without its suffix, suffix): the double suffix of 'ct.nii.gz' counts as one."""
    name = path.name
    if name.lower().endswith(".nii.gz"):
        return name[: -len(".nii.gz")], name[-len(".nii.gz"):]
    return path.stem, path.suffix


def _pairing(path: Path) -> str:
    """Which files pair with each other: volumes with label volumes, images with label maps."""
    return "volume" if kind_of(str(path)) == VOLUME else "image"


def find_pairs(images: Sequence[str], labels: str) -> list[Pair]:
    """Every image named by `images` (files, folders, globs, list files, as `seg-xai explain`
    takes them; folders give their images and NIfTI volumes) with its label file under the folder
    `labels`: the file at the image's relative path with a label suffix of its kind (.nii/.nii.gz for
    a volume), else the one label file of its kind with the same stem anywhere under `labels`.
    Raises UsageError when `labels` is not a folder or holds no label file, ImportError naming the
    [medical] extra when a volume is named and nibabel is missing."""
    root = Path(labels).expanduser()
    if not root.is_dir():
        raise UsageError(f"--labels must be a folder of label maps, got {labels!r} (not a folder)")
    root = root.resolve()
    by_relative: dict[tuple, str] = {}  # (kind, relative path without suffix) → label file
    by_stem: dict[tuple, list[str]] = {}  # (kind, stem) → label files
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            path = Path(dirpath) / name
            if name.lower().endswith(LABEL_SUFFIXES + NIFTI_SUFFIXES):
                stem, _ = split_name(path)
                kind = _pairing(path)
                by_relative.setdefault((kind, str(path.relative_to(root).with_name(stem))), str(path))
                by_stem.setdefault((kind, stem), []).append(str(path))
    if not by_relative:
        raise UsageError(f"--labels {labels!r} holds no label map ({'/'.join(LABEL_SUFFIXES + NIFTI_SUFFIXES)} files)")
    folders = [Path(s).expanduser().resolve() for s in images if Path(s).expanduser().is_dir()]
    pairs = []
    for image in discover_inputs(images, IMAGE_SUFFIXES + NIFTI_SUFFIXES):
        path = Path(image)
        if root in path.parents:
            continue  # the label maps themselves, when LABELS lies inside an input folder
        base = next((f for f in folders if f in path.parents), None)
        key = str(path.relative_to(base)) if base else path.name
        stem, _ = split_name(path)
        kind = _pairing(path)
        label = by_relative.get((kind, str(Path(key).with_name(stem))))
        why = ""
        if label is None:
            same_stem = by_stem.get((kind, stem), [])
            if len(same_stem) == 1:
                label = same_stem[0]
            else:
                wanted = f"{stem}.nii/.nii.gz" if kind == "volume" else f"{stem}.*"
                why = (f"no label {'volume' if kind == 'volume' else 'map'} for it: looked for "
                       f"{Path(key).parent / wanted} under {root} and found "
                       + (f"{len(same_stem)} files named {wanted}" if same_stem else f"no file named {wanted}"))
        pairs.append(Pair(key, image, label, why))
    if any(kind_of(p.image) == VOLUME or (p.label and kind_of(p.label) == VOLUME) for p in pairs):
        extra_module("nibabel", "medical", "reading NIfTI volumes and label volumes")
    return pairs


def read_label(path: str) -> torch.Tensor:
    """The label map at `path` as int64 [H,W] class ids (palette PNGs: the palette indices); a NIfTI
    label volume as int64 [X,Y,Z] (the axes `read_scene` gives its image)."""
    if kind_of(path) == VOLUME:
        return _read_label_volume(path)
    from PIL import Image

    with Image.open(path) as im:
        if im.mode not in ("P", "L", "I", "I;16", "I;16B", "I;16L", "1"):
            raise ValueError(f"the label map is a {im.mode} image; expected an index image (8/16-bit grayscale "
                             f"or a palette PNG whose indices are the class ids)")
        return torch.from_numpy(np.asarray(im, dtype=np.int64).copy())


def _read_label_volume(path: str) -> torch.Tensor:
    nib = extra_module("nibabel", "medical", "reading NIfTI label volumes")
    try:
        data = np.asanyarray(nib.load(path).dataobj)  # any stored dtype, scaled by the header's slope
    except Exception as err:  # noqa: BLE001 - not NIfTI at all: say so (a recorded failure)
        raise ValueError(f"the label volume is not a readable NIfTI file: {type(err).__name__}: {str(err)[:200]}") \
            from None
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise ValueError(f"the label volume has shape {list(data.shape)}; expected 3 axes (X,Y,Z) of class ids")
    if data.dtype.kind == "f":  # stored as floats (or scaled): must hold whole numbers
        bad = data[~np.isfinite(data) | (data != np.round(data))]
        if bad.size:
            raise ValueError(f"the label volume holds non-integer values (e.g. {bad.flat[0]:g}); expected integer "
                             f"class ids")
    elif data.dtype.kind not in "iub":
        raise ValueError(f"the label volume holds {data.dtype} values; expected integer class ids")
    return torch.from_numpy(data.astype(np.int64))


def check_label(label: torch.Tensor, image_size: Sequence[int], num_classes: int, ignore_index: int) -> None:
    """Raise ValueError (the pair's recorded failure) when the label map cannot be scored.
    image_size: (H, W), or (X, Y, Z) for a volume."""
    if tuple(label.shape) != tuple(image_size):
        if label.ndim == 2 and len(image_size) == 2:
            raise ValueError(f"the label map is {label.shape[1]}×{label.shape[0]} pixels, the image "
                             f"{image_size[1]}×{image_size[0]}")
        raise ValueError(f"the label volume is {'×'.join(map(str, label.shape))} voxels, the image "
                         f"{'×'.join(map(str, image_size))}")
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
