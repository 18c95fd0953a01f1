"""One image's output files: the compact maps file (float16 maps at the target layer's resolution,
with its classes, sizes and provenance) and the overlays, written atomically; and the maps'
expansion back to the image's size."""
from __future__ import annotations

import io
import json
import os
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch

from ....fileio import atomic_write
from ....kernels import reference
from .digests import content_digest
from .layout import TMP_DIR, image_key, maps_relpath, overlay_relpath, real_dirs


def expand_maps(stored: torch.Tensor, map_size: Sequence[int], image_size: Sequence[int]) -> torch.Tensor:
    """stored float16 [K,h,w] → float32 [K,H,W] in [0,1] at `image_size` (H, W).

    map_size: the Explainer's output size (the model's logits size, normally the image size).
    """
    x = stored.float()[None]  # [1,K,h,w]
    map_size, image_size = tuple(map_size), tuple(image_size)
    if tuple(x.shape[-2:]) != map_size:  # compact: the explainer's own last step, N(ReLU(R(c)))
        x = reference.normalize_maps(reference.resize_bilinear(x, map_size))
    if map_size != image_size:  # a model whose logits are not at the image size
        x = reference.resize_bilinear(x, image_size).clamp_(0, 1)
    return x[0]


def parse_maps(data: bytes) -> tuple:
    """A maps file's bytes → (float16 maps [K,h,w], classes, map_size, image_size, meta)."""
    with np.load(io.BytesIO(data), allow_pickle=False) as npz:
        return (torch.from_numpy(npz["maps"]), [int(c) for c in npz["classes"]],
                tuple(int(s) for s in npz["map_size"]), tuple(int(s) for s in npz["image_size"]),
                json.loads(str(npz["meta"])))


def png_bytes(picture: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    # compress_level 1: several times faster than the default 6, files ~20 % larger.
    Image.fromarray(np.ascontiguousarray(picture)).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


class StoreFiles:
    """Writes one image's output files into DIR (safe from several processes: no shared state).

    The Ray actors use it directly; the manifest is the driver's business (`Store`).
    """

    def __init__(self, root: os.PathLike | str, header: dict) -> None:
        self.root = Path(root)
        self.tmp = self.root / TMP_DIR
        self.meta = {k: header[k] for k in ("model", "layer", "method")}
        self._made: set = set()

    def _dir(self, rel: str) -> Path:
        path = self.root / rel
        if path.parent not in self._made:
            real_dirs(self.root, path.parent.relative_to(self.root))
            self._made.add(path.parent)
        return path

    def write_image(
        self,
        input_path: str,
        maps: np.ndarray,  # float16 [K,h,w]: layer-resolution (or full) maps
        classes: Sequence[int],
        map_size: Sequence[int],
        image_size: Sequence[int],
        overlays: Sequence[np.ndarray] = (),  # uint8 [H,W,3] per class, or none
        input_digest: Optional[str] = None,  # content_digest of the input's bytes, as decoded
    ) -> dict:
        """Write the maps file (and overlays) of `input_path` atomically → its manifest entry,
        with the digest of the input and of every file written (checked on load and on resume)."""
        key = image_key(input_path)
        meta = json.dumps({"input": input_path, **self.meta})
        arrays = dict(maps=maps, classes=np.asarray(classes, np.int64), map_size=np.asarray(map_size, np.int64),
                      image_size=np.asarray(image_size, np.int64), meta=np.array(meta))
        buf = io.BytesIO()
        np.savez(buf, **arrays)
        rel = maps_relpath(key)
        digests = {rel: self._write(rel, buf.getvalue())}
        pictures = []
        for class_id, picture in zip(classes, overlays):
            prel = overlay_relpath(key, int(class_id))
            digests[prel] = self._write(prel, png_bytes(picture))
            pictures.append(prel)
        return {"type": "image", "input": input_path, "key": key, "maps": rel, "overlays": pictures,
                "size": [int(s) for s in image_size], "classes": [int(c) for c in classes],
                "input_digest": input_digest, "digests": digests}

    def _write(self, rel: str, data: bytes) -> str:
        atomic_write(self._dir(rel), lambda f: f.write(data), self.tmp)
        return content_digest(data)
