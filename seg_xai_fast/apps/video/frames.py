"""Explaining frames: the class each frame shows, its map, the overlay — for any frame source.

    for frame in sx.overlay_stream(webcam_frames(), explainer, batch_size=4):   # any iterator
        show(frame)                                                          # uint8 [H,W,3]

Which class a frame shows: with no `classes`, the class covering the most pixels of that frame's
prediction, background (class 0) only when no other class is predicted anywhere in the frame;
with `classes`, the listed class covering the most pixels (class 0, if listed, only when no other
listed class is present; the first listed class when none is predicted). Its target region is its
predicted pixels (the Seg-Grad-CAM default), so each frame's map explains what the frame shows.
"""
from __future__ import annotations

import contextlib
import os
import threading
from dataclasses import dataclass
from functools import lru_cache
from typing import Callable, Iterable, Iterator, Optional, Sequence

import numpy as np
import torch

from ... import kernels
from ...engine.explainer import Explainer
from ...engine.outputs import ForwardPass
from ...runtimes.onnx_explainer import OnnxExplainer
from .stages import Lanes, Outlet, Pipeline, Source, Stage

# --------------------------------------------------------------------------- explaining frames


def dominant_classes(labels: torch.Tensor, num_classes: int, candidates: Optional[Sequence[int]] = None,
                     counts: Optional[torch.Tensor] = None) -> torch.Tensor:
    """The class each frame shows: int64 [B] from predicted labels int64 [B,H,W].

    Among `candidates` (None: all classes), the one covering the most pixels; class 0
    (background) only when no other candidate is present; candidates[0] when none is.
    counts: int64 [B,L], the labels' histogram when the forward pass counted it (ForwardPass.counts).
    """
    ids = list(range(num_classes)) if candidates is None else list(candidates)
    if counts is None:
        flat = labels.reshape(labels.shape[0], -1).cpu().numpy()
        # One numpy histogram per frame (numpy's bincount: ~70× faster than torch's on CPU here; per
        # frame, it needs no offset array and no pass to find the largest label first).
        rows = [np.bincount(frame) for frame in flat]
    else:
        rows = list(counts.cpu().numpy())
    counts = np.zeros((len(rows), max(num_classes, max(ids) + 1, *(len(r) for r in rows))), dtype=np.int64)
    for b, row in enumerate(rows):
        counts[b, :len(row)] = row
    counts = torch.from_numpy(counts[:, ids])  # [B,K]
    if 0 in ids and len(ids) > 1:
        background = ids.index(0)
        others_present = (counts.sum(dim=1) - counts[:, background]) > 0
        counts[others_present, background] = -1  # background loses whenever another class is there
    choice = counts.argmax(dim=1)
    choice[counts.amax(dim=1) <= 0] = 0  # nothing predicted: the first candidate
    return torch.as_tensor(ids)[choice].to(labels.device)


class FrameExplainer:
    """Maps of the class each frame shows, with one forward pass per batch, in two steps that
    the video pipeline runs on different threads: forward() (the model) and explain() (the
    class choice and the CAM maths, on the forward's outputs).

    explainer: an sx.Explainer or sx.OnnxExplainer. When the forward pass keeps its outputs
    (ONNX Runtime; the closed form; eigencam), the labels are looked at first and only the
    classes shown are explained; otherwise (autograd path) explain() asks the explainer for
    every class and picks the shown ones.
    """

    def __init__(self, explainer, classes: Optional[Sequence[int]] = None,
                 class_names: Optional[Sequence[str]] = None) -> None:
        if not isinstance(explainer, (Explainer, OnnxExplainer)):
            raise TypeError(f"explainer must be an sx.Explainer or sx.OnnxExplainer, got {type(explainer).__name__}")
        self.explainer = explainer
        self.onnx = isinstance(explainer, OnnxExplainer)
        self.classes = None if classes is None else [int(c) for c in classes]
        self.class_names = None if class_names is None else tuple(class_names)  # for the frames' labels

    def __call__(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """images float [B,3,H,W] in [0,1] → (maps float32 [B,H,W] in [0,1], shown class int64 [B])."""
        return self.explain(self.forward(images))

    def forward(self, images: torch.Tensor) -> ForwardPass:
        """One forward pass of images float [B,3,H,W] (the explainer's own forward)."""
        return self.explainer.forward(images)

    def explain(self, outputs: ForwardPass) -> tuple[torch.Tensor, torch.Tensor]:
        """forward()'s result → (maps float32 [B,H,W] in [0,1], shown class int64 [B])."""
        if outputs.has_outputs:
            shown = dominant_classes(outputs.labels, outputs.logits.shape[1], self.classes, outputs.counts)
            wanted = sorted(set(shown.tolist()))
            res = self.explainer.explain_outputs(outputs, classes=wanted)
        else:  # autograd path: every requested class, then pick
            res = self.explainer.explain_outputs(outputs, classes=self.classes)
            shown = dominant_classes(res.labels, max(res.classes) + 1, self.classes)
            wanted = res.classes
        index = torch.as_tensor([wanted.index(int(c)) for c in shown], device=res.maps.device)
        return res.maps[torch.arange(len(index), device=res.maps.device), index], shown


@contextlib.contextmanager
def model_threads(engine: FrameExplainer):
    """torch gets one thread while a pipeline explains with ONNX Runtime: ORT has its own pool
    for the forward pass and torch only runs the explain stage, which overlaps it on another
    thread; more torch threads only fight over the cores (measured on 2 cores)."""
    threads = torch.get_num_threads()
    if engine.onnx:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def to_images(frames: torch.Tensor, buffers: Optional["ImageBuffers"] = None) -> torch.Tensor:
    """uint8 [B,H,W,3] frames → float32 [B,3,H,W] images in [0,1], contiguous (a permuted view
    would run the model in channels-last and give channels-last logits). Two passes: one copy
    that converts and transposes at once, one in-place division. buffers: where the result's
    memory comes from (a batch given back earlier), else it is allocated."""
    B, H, W, _ = frames.shape
    shape = (B, 3, H, W)
    if buffers is not None and frames.device.type == "cpu":
        images = buffers.take(shape)
    else:
        images = torch.empty(shape, dtype=torch.float32, device=frames.device)
    return images.copy_(frames.permute(0, 3, 1, 2)).div_(255)


class ImageBuffers:
    """The model-input batches of a pipeline, reused once the explain stage is done with them.

    A new float batch above glibc's 32 MiB mapping threshold (a 720p batch of 4 is 44 MB) is
    mapped afresh and page-faulted in at its first write: 4.6 of to_images' 7.3 ms per 720p frame
    (measured, one thread). A batch given back costs none of that. Only the pipeline gives back,
    at the point where no stage can read the batch again (after its overlay).
    """

    def __init__(self, keep: int = 8) -> None:
        self.keep = keep  # at most this many idle batches (about the batches in flight)
        self._free: list[torch.Tensor] = []
        self._lock = threading.Lock()

    def take(self, shape: tuple) -> torch.Tensor:
        """A float32 CPU tensor of `shape` (contents undefined)."""
        with self._lock:
            for i, tensor in enumerate(self._free):
                if tuple(tensor.shape) == tuple(shape):
                    return self._free.pop(i)
        return torch.empty(shape, dtype=torch.float32)

    def give(self, tensor: Optional[torch.Tensor]) -> None:
        """Return a batch from take() that nothing reads any more."""
        if tensor is None or tensor.device.type != "cpu" or tensor.dtype != torch.float32 or not tensor.is_contiguous():
            return
        with self._lock:
            if len(self._free) < self.keep and all(t.data_ptr() != tensor.data_ptr() for t in self._free):
                self._free.append(tensor)


def overlay_maps(frames: torch.Tensor, maps: torch.Tensor, colormap: str = "jet", alpha: float = 0.5,
                 shown: Optional[torch.Tensor] = None, class_names: Optional[Sequence[str]] = None) -> torch.Tensor:
    """frames uint8 [B,H,W,3], maps float [B,H,W] → overlaid uint8 [B,H,W,3] on the CPU (fused kernel).

    shown: int64 [B], the class each map explains: written in the top-left corner of its frame
    (its name from `class_names`, else "class N"), so a viewer knows what the colours mean.
    """
    out = kernels.overlay(frames.to(maps.device), maps, colormap=colormap, alpha=alpha).cpu()
    if shown is not None:
        label_frames(out, shown, class_names)
    return out


def label_frames(frames: torch.Tensor, shown: torch.Tensor, class_names: Optional[Sequence[str]] = None) -> None:
    """Stamp each frame's class (int64 [B]) into the top-left corner of frames uint8 [B,H,W,3], in place."""
    H, W = frames.shape[1:3]
    size = max(10, min(32, H // 24))  # text height: readable from 240p to 4K
    for b, c in enumerate(shown.tolist()):
        name = class_names[c] if class_names is not None and 0 <= c < len(class_names) else None
        label = _label_image(f"{name} ({c})" if name else f"class {c}", size)
        h, w = min(label.shape[0], H), min(label.shape[1], W)
        frames[b, :h, :w] = label[:h, :w]


@lru_cache(maxsize=256)
def _label_image(text: str, size: int) -> torch.Tensor:
    """White `text` on black, uint8 [h,w,3]: rendered once per (text, size), then only copied."""
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.load_default(size=size)
    left, top, right, bottom = ImageDraw.Draw(Image.new("RGB", (1, 1))).textbbox((0, 0), text, font=font)
    pad = max(2, size // 4)
    picture = Image.new("RGB", (right - left + 2 * pad, bottom - top + 2 * pad), (0, 0, 0))
    ImageDraw.Draw(picture).text((pad - left, pad - top), text, font=font, fill=(255, 255, 255))
    return torch.from_numpy(np.asarray(picture).copy())


def overlay_batch(frames: torch.Tensor, engine: FrameExplainer, colormap: str = "jet", alpha: float = 0.5,
                  label: bool = True):
    """frames uint8 [B,H,W,3] (CPU) → (overlaid uint8 [B,H,W,3] on the CPU, shown class int64 [B]);
    `label`: each frame names its class in a corner (label_frames)."""
    maps, shown = engine(to_images(frames))
    return overlay_maps(frames, maps, colormap, alpha, shown if label else None, engine.class_names), shown.cpu()


def _as_frame(frame, index: int) -> torch.Tensor:
    """A uint8 [H,W,3] numpy array or tensor → contiguous CPU uint8 tensor [H,W,3]."""
    if isinstance(frame, np.ndarray):
        frame = torch.from_numpy(np.ascontiguousarray(frame))
    if not isinstance(frame, torch.Tensor):
        raise TypeError(f"frame {index} must be a numpy array or torch.Tensor uint8 [H,W,3], got {type(frame).__name__}")
    if frame.dtype != torch.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
        raise ValueError(f"frame {index} must be uint8 [H,W,3] RGB, got {frame.dtype} of shape {list(frame.shape)}")
    return frame.cpu().contiguous()


# --------------------------------------------------------------------------- the pipeline


@dataclass
class FrameBatch:
    """Frames on their way through the pipeline, in stream order.

    frames: uint8 [B,H,W,3] on the CPU; numpy: per frame, whether it came as a numpy array (it
    leaves as the same kind); images: float32 [B,3,H,W] in [0,1] (the model's input); state: the
    forward pass; out: the overlaid frames uint8 [B,H,W,3]."""

    frames: torch.Tensor
    numpy: list
    images: Optional[torch.Tensor] = None
    state: Optional[ForwardPass] = None
    out: Optional[torch.Tensor] = None


def frame_batches(frames: Iterable, batch_size: int, buffers: Optional[ImageBuffers] = None) -> Iterator[FrameBatch]:
    """Group uint8 [H,W,3] frames (numpy arrays or tensors) into batches of `batch_size`; a batch
    also ends where the frame size changes. Each batch carries its model input (to_images, in
    memory from `buffers` when given)."""
    pending: list[torch.Tensor] = []
    kinds: list[bool] = []

    def batch() -> FrameBatch:
        stacked = torch.stack(pending)
        out = FrameBatch(stacked, list(kinds), to_images(stacked, buffers))
        pending.clear()
        kinds.clear()
        return out

    for i, frame in enumerate(frames):
        tensor = _as_frame(frame, i)
        if pending and tensor.shape != pending[0].shape:
            yield batch()
        pending.append(tensor)
        kinds.append(not isinstance(frame, torch.Tensor))
        if len(pending) == batch_size:
            yield batch()
    if pending:
        yield batch()


def available_cores() -> int:
    """The cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def model_workers(engine: FrameExplainer) -> int:
    """How many forward passes the pipeline runs at once.

    An ONNX Runtime session serves concurrent runs, and on few cores two runs with one intra-op
    thread each beat one run with two threads (no wait at each operator's end for the slower
    thread; LRASPP alone on 2 cores: 15.8 against 18.4 CPU ms per frame at 320×240, 199 against
    227 at 1280×720, and more frames per second at both). So an OnnxExplainer
    whose session has an explicit thread count (OnnxExplainer(threads=...)) gets one forward
    pass per that many cores, two at most (more would only multiply the batches in flight). ORT's
    default (every core), and a PyTorch model (its forward hooks hold per-call state), get one.
    """
    if not engine.onnx:
        return 1
    threads = engine.explainer.session.get_session_options().intra_op_num_threads
    return 1 if threads <= 0 else max(1, min(2, available_cores() // threads))


def start_explaining(pipeline: Pipeline, frames: Callable[[], Iterable], engine: FrameExplainer, batch_size: int,
                     colormap: str = "jet", alpha: float = 0.5, label: bool = True, queue_batches: int = 2,
                     source_name: str = "read", workers: Optional[int] = None) -> Lanes:
    """Start the threads that read `frames()` (an iterator of uint8 [H,W,3] frames, made and read
    in the source thread), run the model and overlay the maps; returns the queue that receives
    the FrameBatches, in order, with `out` set, then stages.END.

    The threads: the source (reads frames, batches them, converts them to the model's input),
    `workers` model stages (default model_workers(engine)), each running one forward pass per
    batch (ONNX Runtime and PyTorch release the GIL), dealt batches in turn through Lanes so
    that the order holds, and the explain stage (class choice, CAM maths, overlay kernel,
    labels). The queues hold `queue_batches` batches (the model's outputs: one per lane), so
    the model always has its next batch waiting while the other stages work on the batches
    before and after it.
    """
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    if not isinstance(queue_batches, int) or isinstance(queue_batches, bool) or queue_batches < 1:
        raise ValueError(f"queue_batches must be a positive int, got {queue_batches!r}")
    class_names = engine.class_names if label else None
    buffers = ImageBuffers()

    def forward(batch: FrameBatch) -> FrameBatch:
        batch.state, batch.images = engine.forward(batch.images), None
        return batch

    def explain(batch: FrameBatch) -> FrameBatch:
        maps, shown = engine.explain(batch.state)
        batch.out = overlay_maps(batch.frames, maps, colormap, alpha, shown if label else None, class_names)
        images, batch.state = batch.state.images, None  # the forward's tensors go now, not when the consumer drops the batch
        buffers.give(images)  # the model input: read by nothing any more
        return batch

    workers = model_workers(engine) if workers is None else workers
    if not isinstance(workers, int) or isinstance(workers, bool) or workers < 1:
        raise ValueError(f"workers must be a positive int, got {workers!r}")
    if workers > 1 and not engine.onnx:
        raise ValueError(f"workers={workers}: a PyTorch model runs one forward pass at a time (its hooks hold "
                         "per-call state); use an sx.OnnxExplainer for parallel forward passes")
    # The forward's outputs are the largest items (the logits: L floats per pixel), so their
    # lanes hold one batch each: enough for the explain stage, which is far faster than the model.
    inputs, forwarded, explained = Lanes(workers, queue_batches), Lanes(workers, 1), Lanes(1, queue_batches)
    stages = [Source(pipeline, source_name, lambda: frame_batches(frames(), batch_size, buffers), inputs)]
    stages += [Stage(pipeline, "model" if workers == 1 else f"model {j + 1}", forward, inputs.lanes[j],
                     forwarded.lanes[j], drop_on_stop=True) for j in range(workers)]
    stages.append(Stage(pipeline, "explain", explain, forwarded, explained))
    for stage in stages:
        stage.start()
    return explained


def overlay_stream(
    frames: Iterable,
    explainer,
    batch_size: int = 4,
    classes: Optional[Sequence[int]] = None,
    colormap: str = "jet",
    alpha: float = 0.5,
    label: bool = True,
    class_names: Optional[Sequence[str]] = None,
    queue_batches: int = 2,
    workers: Optional[int] = None,
) -> Iterator:
    """Overlay the explanation on every frame of any iterator of RGB frames (a webcam, a decoder).

    frames: uint8 [H,W,3] numpy arrays or tensors. explainer: sx.Explainer or sx.OnnxExplainer.
    Frames are explained `batch_size` at a time (a batch also ends where the frame size
    changes); each yields, in order, as the same kind it came as (numpy array or CPU tensor),
    uint8 [H,W,3]. The class shown per frame follows the module docstring's rule.
    `label`: each frame names the class it shows in its top-left corner (`class_names[c]` when
    given, else "class c").

    The same pipeline as `seg-xai video` (start_explaining): `frames` is read in a thread of its
    own, the model and the overlay run in two more, overlapping each other and the caller's work
    on the frames already yielded; at most about 3 × `queue_batches` batches per forward pass at
    once (`workers`, default model_workers) are in flight. An error in `frames` is raised here
    after the frames before it; an error in a stage ends the stream and is raised here;
    stopping early (break, close()) stops the threads and waits for them (after the frame
    `frames` is producing, if any). With an OnnxExplainer, torch runs on one thread until the
    stream ends (model_threads).
    """
    engine = FrameExplainer(explainer, classes, class_names)
    pipeline = Pipeline()
    with model_threads(engine):
        explained = Outlet(pipeline, start_explaining(pipeline, lambda: frames, engine, batch_size, colormap,
                                                      alpha, label, queue_batches, workers=workers))
        try:
            for batch in explained:
                for frame, as_numpy in zip(batch.out, batch.numpy):
                    yield frame.numpy() if as_numpy else frame
            pipeline.raise_error()
            if pipeline.interrupted:  # KeyboardInterrupt inside a stage (e.g. raised by `frames`)
                raise KeyboardInterrupt
        finally:
            explained.close()
