"""The explaining side of `seg-xai explain`: one batch of equal-size images → maps (and
overlays) → files, the writer thread overlapping the next batch's compute.

On the CPU, when a method's maps follow from one forward's outputs (a linear head's closed form,
the activation methods, ONNX Runtime), the main thread runs only the forward pass and the writer
thread computes the maps from its outputs (`Deferred`), so the next forward starts at once: the
job's critical path is then the model's own forward, as in plain inference."""
from __future__ import annotations

import queue
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Optional

import numpy as np
import torch

from ...engine.outputs import ForwardPass, upsample_maps
from ...kernels import overlay
from ...viz import to_frames
from .inputs import failure_reason

# --------------------------------------------------------------------------- explaining


class BatchEngine:
    """An Explainer (or OnnxExplainer) plus what the store needs: explains a batch of equal-size images.

    map_resolution "layer" asks the explainer for its maps at the target layer's resolution (the
    compact form the store keeps; sx.upsample_maps restores the full maps), "full" for full size.
    defer: on the CPU, let explain() return a Deferred when the maps follow from the forward's
    outputs (the caller finishes it on another thread).
    """

    def __init__(self, explainer, classes: Optional[list], device: torch.device, map_resolution: str = "layer",
                 defer: bool = False) -> None:
        self.device = device
        self.explainer = explainer
        model = getattr(explainer, "model", None)  # an sx.Explainer's; ONNX Runtime holds its own
        if isinstance(model, torch.nn.Module):
            model.to(device)
        self.classes = classes
        self.resolution = "layer" if map_resolution == "layer" else "full"
        self.defer = defer and device.type == "cpu"

    def explain(self, images: torch.Tensor) -> "Explained | Deferred":
        """Explain images float [n,3,H,W] of one size (see Explained), or only run their forward
        pass (see Deferred)."""
        images = images.to(self.device, non_blocking=True)
        if self.defer:
            outputs = self.explainer.forward(images, labels=False)  # the argmax runs on the writer thread too
            if outputs.has_outputs:
                # Up to three batches' outputs are alive while they wait (one being written, one
                # queued, the next one's forward): large ones are explained here at once instead.
                return Deferred(self, outputs) if pass_bytes(outputs) <= DEFER_MAX_BYTES else self.finish(outputs)
        return Explained.of(images, self.explainer(images, classes=self.classes, resolution=self.resolution))

    def finish(self, outputs: ForwardPass) -> "Explained":
        """The explanation of a forward pass's outputs (explainer.explain_outputs; no model run)."""
        res = self.explainer.explain_outputs(outputs, self.classes, resolution=self.resolution)
        return Explained.of(outputs.images, res)

    def close(self) -> None:
        """Nothing held between batches (the explainers remove their hooks after every call)."""


DEFER_MAX_BYTES = 64 << 20  # a forward's outputs that may wait for the writer thread


def pass_bytes(outputs: ForwardPass) -> int:
    """The bytes of a forward pass's tensors (images, activations, logits, labels)."""
    return sum(t.numel() * t.element_size() for t in (outputs.images, outputs.activations, outputs.logits,
                                                       outputs.labels) if t is not None)


class Deferred:
    """A batch whose forward pass ran and whose maps are still to be computed from its outputs."""

    def __init__(self, engine: BatchEngine, outputs: ForwardPass) -> None:
        self.engine, self.outputs = engine, outputs

    def explain(self, paths: list) -> tuple[list, list]:
        """→ ([(paths, Explained)], [(path, reason)]), image by image where the batch fails."""
        return each_or_alone(paths, lambda i: self.engine.finish(self.outputs if i is None else self.outputs.select(i)))


class Explained:
    """One explained batch; write() stores it (StoreFiles.write_batch).

    images: float [n,3,H,W]; maps: float32 [n,K,h,w], at the target layer's resolution or at
    map_size; map_size: the model output's (H', W'), where the explainer's full maps live.
    On a GPU the conversion and overlays run at once (frees the device memory); on the CPU the
    writer thread runs them, off the critical path.
    """

    def __init__(self, images: torch.Tensor, maps: torch.Tensor, classes: list, map_size: tuple) -> None:
        self.images, self.maps, self.classes, self.map_size = images, maps, classes, map_size
        self.image_size = tuple(images.shape[-2:])
        self._compact: Optional[np.ndarray] = None
        self._pictures: Optional[np.ndarray] = None

    @classmethod
    def of(cls, images: torch.Tensor, res) -> "Explained":
        """From an explainer's Explanation of `images` float [n,3,H,W]."""
        return cls(images, res.maps, res.classes, map_size=tuple(res.labels.shape[-2:]))

    def finish(self, overlays: bool, colormap: str, alpha: float) -> None:
        """Convert the maps to float16 (and colour the overlays), then drop the tensors."""
        if self._compact is None:
            self._compact = self.maps.detach().to("cpu", torch.float16).numpy()  # [n,K,h,w]
        if overlays and self._pictures is None:
            full = self.maps if tuple(self.maps.shape[-2:]) == self.map_size else upsample_maps(self.maps, self.map_size)
            self._pictures = overlays_of(self.images, full, colormap, alpha)  # uint8 [n,K,H,W,3]
        self.images = self.maps = None  # no longer needed

    def write(self, files, paths: list, digests: dict, overlays: bool, colormap: str, alpha: float,
              pool=None) -> list:
        """Write this batch's files with `files` (a StoreFiles) → its manifest entries.
        digests: {path: its input's content digest}."""
        self.finish(overlays, colormap, alpha)
        return files.write_batch(paths, self._compact, self.classes, self.map_size, self.image_size,
                                 [digests[p] for p in paths], self._pictures if overlays else None, pool)


def overlays_of(images: torch.Tensor, maps: torch.Tensor, colormap: str, alpha: float) -> np.ndarray:
    """images float [n,3,H,W], maps float [n,K,H',W'] → uint8 [n,K,H,W,3] with the fused overlay kernel."""
    frames = to_frames(images.to(maps.device))  # uint8 [n,H,W,3]
    per_class = []
    for k in range(maps.shape[1]):
        per_class.append(overlay(frames, maps[:, k], colormap=colormap, alpha=alpha))  # maps[:, k]: [n,H',W']
    return torch.stack(per_class, dim=1).cpu().numpy()


class Writer:
    """Writes finished batches on a background thread (a pool writes the overlays: parallel fsyncs).

    At most `depth` batches wait in its queue; a write error is raised on the next put()/close().
    """

    def __init__(self, store, overlays: bool, colormap: str, alpha: float, threads: int = 4, depth: int = 1) -> None:
        self.store = store
        self.look = (overlays, colormap, alpha)
        self.queue: queue.Queue = queue.Queue(maxsize=depth)
        self.pool = ThreadPoolExecutor(threads, thread_name_prefix="seg-xai-write") if overlays else None
        self.error: Optional[BaseException] = None
        self.written = 0
        self.thread = threading.Thread(target=self._run, name="seg-xai-writer", daemon=True)
        self.thread.start()

    def put(self, batches: list, digests: dict) -> None:
        """batches: [(paths, Explained or Deferred)] from explain_images; digests: {path: its input's
        content digest}."""
        self._raise()
        self.queue.put((batches, digests))

    def _run(self) -> None:
        while True:
            item = self.queue.get()
            if item is None:
                return
            if self.error is not None:
                continue  # keep draining so put() never blocks forever
            batches, digests = item
            try:
                entries = []
                for paths, ex in batches:
                    done = [(paths, ex)]
                    if isinstance(ex, Deferred):
                        done, failed = ex.explain(paths)
                        for path, reason in failed:
                            self.store.add_failure(path, reason)
                    for part, explained in done:
                        entries += explained.write(self.store.files, part, digests, *self.look, pool=self.pool)
                self.store.append(entries)
                self.written += len(entries)
            except BaseException as err:
                self.error = err

    def _raise(self) -> None:
        if self.error is not None:
            raise OSError(f"writing outputs failed: {self.error}") from self.error

    def close(self) -> None:
        self.queue.put(None)
        self.thread.join()
        if self.pool is not None:
            self.pool.shutdown()
        self._raise()


def explain_images(engine: BatchEngine, paths: list, images: torch.Tensor, overlays: bool, colormap: str,
                   alpha: float) -> tuple[list, list]:
    """Explain `images` float [n,3,H,W] (one size) → ([(paths, Explained or Deferred)] of the
    explained images, [(path, reason)] of the failed ones), image by image where the batch fails."""
    def explain(i: Optional[int]):
        explained = engine.explain(images if i is None else images[i:i + 1])
        if isinstance(explained, Explained) and explained.maps.is_cuda:  # finish on the device: frees its memory
            explained.finish(overlays, colormap, alpha)
        return explained

    return each_or_alone(paths, explain)


def each_or_alone(paths: list, explain) -> tuple[list, list]:
    """([(paths, explain(None))], []) for the whole batch; when that raises, each image i alone
    with explain(i), so one bad image costs its batchmates nothing → (done, [(path, reason)]).

    Any Exception is the image's failure, never the run's: ONNX Runtime raises its own types
    (not RuntimeError), and the settings were checked before the run (job.prepare), so what
    fails here fails for this image. KeyboardInterrupt and SystemExit still stop the run.
    """
    try:
        return [(paths, explain(None))], []
    except Exception as err:  # noqa: BLE001 - see the docstring
        if len(paths) == 1:
            return [], [(paths[0], f"explain: {failure_reason(err)}")]
    done, failed = [], []
    for i, path in enumerate(paths):
        try:
            done.append(([path], explain(i)))
        except Exception as err:  # noqa: BLE001 - see the docstring
            failed.append((path, f"explain: {failure_reason(err)}"))
    return done, failed
