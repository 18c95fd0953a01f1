"""A batch's output files: one compact maps file (float16 maps of its images at the target
layer's resolution, with their classes, sizes and provenance) and each image's overlays, written
atomically; and the maps' expansion back to the image's size."""
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
from .layout import TMP_DIR, maps_relpath, overlay_relpath, pack_key, real_dirs, resolved_key


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


def parse_maps(data: bytes, member: Optional[int] = None) -> tuple:
    """A maps file's bytes → (float16 maps [K,h,w], classes, map_size, image_size, meta) of one image.

    member: the image's place in its batch's file (the manifest entry's "member"); None reads a
    one-image file of format 2. meta["input"] is the input that image was explained from.
    """
    with np.load(io.BytesIO(data), allow_pickle=False) as npz:
        maps, meta = torch.from_numpy(npz["maps"]), json.loads(str(npz["meta"]))
        classes = [int(c) for c in npz["classes"]]
        map_size = tuple(int(s) for s in npz["map_size"])
        image_size = tuple(int(s) for s in npz["image_size"])
    if member is not None:
        if not (0 <= member < maps.shape[0] == len(meta.get("inputs", ()))):
            raise ValueError(f"member {member} is not in a file of {maps.shape[0]} images")
        maps, meta["input"] = maps[member], meta["inputs"][member]
    return maps, classes, map_size, image_size, meta


def png_bytes(picture: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    # compress_level 1: several times faster than the default 6, files ~20 % larger.
    Image.fromarray(np.ascontiguousarray(picture)).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


class StoreFiles:
    """Writes a batch's output files into DIR (safe from several processes: no shared state).

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

    def write_batch(
        self,
        input_paths: Sequence[str],  # resolved (as the job's input list gives them)
        maps: np.ndarray,  # float16 [n,K,h,w]: layer-resolution (or full) maps of the n images
        classes: Sequence[int],
        map_size: Sequence[int],
        image_size: Sequence[int],
        input_digests: Sequence[Optional[str]],  # content_digest of each input's bytes, as decoded
        overlays: Optional[np.ndarray] = None,  # uint8 [n,K,H,W,3], or none
        pool=None,  # an Executor whose map() writes the overlays in parallel (their fsyncs)
    ) -> list:
        """Write the maps file of a batch of equal-size images (one file, one fsync) and their
        overlays, atomically → one manifest entry per image, with the digest of its input and of
        every file it needs (checked on load and on resume)."""
        keys = [resolved_key(p) for p in input_paths]
        meta = json.dumps({"inputs": list(input_paths), **self.meta})
        buf = io.BytesIO()
        np.savez(buf, maps=maps, classes=np.asarray(classes, np.int64), map_size=np.asarray(map_size, np.int64),
                 image_size=np.asarray(image_size, np.int64), meta=np.array(meta))
        rel = maps_relpath(pack_key(keys))
        maps_digest = self._write(rel, buf.getvalue())
        pictures = [(overlay_relpath(key, int(c)), overlays[i, k]) for i, key in enumerate(keys)
                    for k, c in enumerate(classes)] if overlays is not None else []
        write_png = lambda item: self._write(item[0], png_bytes(item[1]))  # noqa: E731
        written = dict(zip([prel for prel, _ in pictures], (pool.map if pool is not None else map)(write_png, pictures)))
        entries = []
        for i, (path, key) in enumerate(zip(input_paths, keys)):
            own = [overlay_relpath(key, int(c)) for c in classes] if overlays is not None else []
            entries.append({"type": "image", "input": path, "key": key, "maps": rel, "member": i, "overlays": own,
                            "size": [int(s) for s in image_size], "classes": [int(c) for c in classes],
                            "input_digest": input_digests[i],
                            "digests": {rel: maps_digest, **{prel: written[prel] for prel in own}}})
        return entries

    def _write(self, rel: str, data: bytes) -> str:
        atomic_write(self._dir(rel), lambda f: f.write(data), self.tmp)
        return content_digest(data)
