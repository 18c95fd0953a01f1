"""Explained video: decode → explain → overlay → encode, the stages overlapped in threads.

    seg-xai video street.mp4 street_cam.mp4 --model torchvision:lraspp_mobilenet_v3_large --runtime onnxruntime

    for frame in sx.overlay_stream(webcam_frames(), explainer, batch_size=4):   # any iterator
        show(frame)                                                          # uint8 [H,W,3]

Pipeline of `seg-xai video` (explain_video), four stages joined by bounded queues
(queue.Queue(maxsize=...)), so memory stays flat and the slowest stage sets the pace:
1. a decoder thread (PyAV) puts RGB frames in the first queue;
2. the main thread takes batches of them and runs one forward pass per batch (ONNX Runtime or
   PyTorch; both release the GIL);
3. an explain thread picks each frame's class, computes its map from the forward's outputs and
   colours it over the frame with the fused overlay kernel, overlapping the next forward pass;
4. an encoder thread encodes the overlaid frames: H.264 with libx264 when PyAV's FFmpeg has it,
   else libopenh264, else MPEG-4 part 2 (pick_encoder; the summary names the one used).
The main thread runs the model so that Ctrl-C (KeyboardInterrupt) reaches the pipeline there.

Which class a frame shows: with no `classes`, the class covering the most pixels of that frame's
prediction, background (class 0) only when no other class is predicted anywhere in the frame;
with `classes`, the listed class covering the most pixels (class 0, if listed, only when no other
listed class is present; the first listed class when none is predicted). Its target region is its
predicted pixels (the Seg-Grad-CAM default), so each frame's map explains what the frame shows.

Bad input: an unreadable or non-video INPUT is a VideoError (exit status 2) and nothing is left
behind (the output is written to a temporary file beside OUTPUT and renamed at the end); a frame
the decoder rejects or flags as corrupt is skipped and counted; Ctrl-C stops decoding, flushes
the encoder and keeps the partial output, which plays.
"""
from __future__ import annotations

import argparse
import os
import queue
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Iterable, Iterator, Optional, Sequence, Union

import numpy as np
import torch

from . import kernels
from .colormaps import colormap_lut
from .explainer import Explainer, _ForwardCapture, _ModelState, _select_output, explain_eigen, explain_linear_head
from .methods import get_method

EXIT_OK, EXIT_USAGE, EXIT_INTERRUPTED = 0, 2, 130
CONTAINERS = (".mp4", ".mkv", ".mov", ".avi")
ENCODERS = ("libx264", "libopenh264", "mpeg4")  # preferred first; the first PyAV's FFmpeg has wins
_X264_OPTIONS = {"preset": "veryfast", "crf": "23"}  # ~1000 fps at 320×240 on one core: never the bottleneck
_END = object()  # end of a queue's stream
# FFmpeg's demuxers that render any text file as "video" (ANSI art, subtitles-as-video): not videos here.
_TEXT_FORMATS = ("tty",)


class VideoError(ValueError):
    """An input or output the command cannot use: exit status 2 with this message."""


# --------------------------------------------------------------------------- explaining frames


def dominant_classes(labels: torch.Tensor, num_classes: int, candidates: Optional[Sequence[int]] = None) -> torch.Tensor:
    """The class each frame shows: int64 [B] from predicted labels int64 [B,H,W].

    Among `candidates` (None: all classes), the one covering the most pixels; class 0
    (background) only when no other candidate is present; candidates[0] when none is.
    """
    ids = list(range(num_classes)) if candidates is None else list(candidates)
    flat = labels.reshape(labels.shape[0], -1).cpu().numpy()
    B = flat.shape[0]
    n = max(num_classes, max(ids) + 1, int(flat.max()) + 1)
    # One histogram for the batch (numpy's bincount: ~70× faster than torch's on CPU here).
    counts = np.bincount((flat + (np.arange(B) * n)[:, None]).ravel(), minlength=B * n).reshape(B, n)
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
    class choice, the CAM maths, on the forward's outputs).

    explainer: an sx.Explainer or sx.OnnxExplainer. When the runtime exposes the forward pass's
    outputs (OnnxExplainer; Explainer on a linear head or with eigencam), the labels are looked at
    first and only the classes shown are explained; otherwise (autograd path) explain() asks the
    explainer for every class and picks the shown ones.
    """

    def __init__(self, explainer, classes: Optional[Sequence[int]] = None) -> None:
        from .runtimes import OnnxExplainer

        if not isinstance(explainer, (Explainer, OnnxExplainer)):
            raise TypeError(f"explainer must be an sx.Explainer or sx.OnnxExplainer, got {type(explainer).__name__}")
        self.explainer = explainer
        self.onnx = isinstance(explainer, OnnxExplainer)
        self.classes = None if classes is None else [int(c) for c in classes]

    def __call__(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """images float [B,3,H,W] in [0,1] → (maps float32 [B,H,W] in [0,1], shown class int64 [B])."""
        return self.explain(self.forward(images))

    def forward(self, images: torch.Tensor) -> tuple:
        """One forward pass: ("outputs", activations [B,C,h,w], logits [B,L,H,W], labels int64
        [B,H,W], head) — or ("images", images) when there is no closed form to use."""
        ex = self.explainer
        if self.onnx:
            return ("outputs", *ex.forward(images), None)
        images = images.to(next(ex.model.parameters()).device)
        head = None
        if get_method(ex.method).needs_gradients:
            head = ex.linear_head(images)  # found on the first batch of each size, then cached
            if head is None:
                return ("images", images)
        with _ModelState(ex.model), _ForwardCapture(ex) as cap, torch.no_grad():
            logits = _select_output(ex.model(images), ex.output_key, images.shape[0])
            # Contiguous on purpose: kernels.target_seeds hands a temporary `.contiguous()` copy
            # to the core without keeping it alive (use after free for channels-last logits).
            logits = logits.contiguous()
            return ("outputs", cap.activations().contiguous(), logits, kernels.class_argmax(logits), head)

    def explain(self, state: tuple) -> tuple[torch.Tensor, torch.Tensor]:
        """forward()'s result → (maps float32 [B,H,W] in [0,1], shown class int64 [B])."""
        if state[0] == "images":  # autograd path: every requested class, then pick
            res = self.explainer(state[1], classes=self.classes)
            shown = dominant_classes(res.labels, max(res.classes) + 1, self.classes)
            wanted = res.classes
        else:
            _, activations, logits, labels, head = state
            shown = dominant_classes(labels, logits.shape[1], self.classes)
            wanted = sorted(set(shown.tolist()))
            res = self._explain(activations, logits, labels, wanted, head)
        index = torch.as_tensor([wanted.index(int(c)) for c in shown], device=res.maps.device)
        return res.maps[torch.arange(len(index), device=res.maps.device), index], shown

    def _explain(self, activations, logits, labels, classes, head):
        ex = self.explainer
        if self.onnx:
            return ex.explain_outputs(activations, logits, classes, labels=labels)
        if head is None:  # eigencam
            return explain_eigen(activations, logits, classes, layer=ex.layer_name, backend=ex.backend, labels=labels)
        return explain_linear_head(activations, logits, head.weight, head.upsample, classes, None, ex.method,
                                   layer=ex.layer_name, backend=ex.backend, max_memory_mb=ex.max_memory_mb,
                                   labels=labels)


def to_images(frames: torch.Tensor) -> torch.Tensor:
    """uint8 [B,H,W,3] frames → float32 [B,3,H,W] images in [0,1], contiguous (a permuted view
    would run the model in channels-last and give channels-last logits)."""
    return frames.permute(0, 3, 1, 2).contiguous().float().div_(255)


def overlay_maps(frames: torch.Tensor, maps: torch.Tensor, colormap: str = "jet", alpha: float = 0.5) -> torch.Tensor:
    """frames uint8 [B,H,W,3], maps float [B,H,W] → overlaid uint8 [B,H,W,3] on the CPU (fused kernel)."""
    return kernels.overlay(frames.to(maps.device), maps, colormap=colormap, alpha=alpha).cpu()


def overlay_batch(frames: torch.Tensor, engine: FrameExplainer, colormap: str = "jet", alpha: float = 0.5):
    """frames uint8 [B,H,W,3] (CPU) → (overlaid uint8 [B,H,W,3] on the CPU, shown class int64 [B])."""
    maps, shown = engine(to_images(frames))
    return overlay_maps(frames, maps, colormap, alpha), shown.cpu()


def _as_frame(frame, index: int) -> torch.Tensor:
    """A uint8 [H,W,3] numpy array or tensor → contiguous CPU uint8 tensor [H,W,3]."""
    if isinstance(frame, np.ndarray):
        frame = torch.from_numpy(np.ascontiguousarray(frame))
    if not isinstance(frame, torch.Tensor):
        raise TypeError(f"frame {index} must be a numpy array or torch.Tensor uint8 [H,W,3], got {type(frame).__name__}")
    if frame.dtype != torch.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
        raise ValueError(f"frame {index} must be uint8 [H,W,3] RGB, got {frame.dtype} of shape {list(frame.shape)}")
    return frame.cpu().contiguous()


def overlay_stream(
    frames: Iterable,
    explainer,
    batch_size: int = 4,
    classes: Optional[Sequence[int]] = None,
    colormap: str = "jet",
    alpha: float = 0.5,
) -> Iterator:
    """Overlay the explanation on every frame of any iterator of RGB frames (a webcam, a decoder).

    frames: uint8 [H,W,3] numpy arrays or tensors. explainer: sx.Explainer or sx.OnnxExplainer.
    Frames are explained `batch_size` at a time (a batch also ends where the frame size
    changes); each yields, in order, as the same kind it came as (numpy array or CPU tensor),
    uint8 [H,W,3]. The class shown per frame follows the module docstring's rule.
    This generator works in the caller's thread; explain_video adds threads for file I/O.
    """
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    engine = FrameExplainer(explainer, classes)
    pending: list[torch.Tensor] = []
    as_numpy = True

    def flush():
        out, _ = overlay_batch(torch.stack(pending), engine, colormap, alpha)
        pending.clear()
        return [o.numpy() if as_numpy else o for o in out]

    for i, frame in enumerate(frames):
        as_numpy = not isinstance(frame, torch.Tensor)
        tensor = _as_frame(frame, i)
        if pending and tensor.shape != pending[0].shape:
            yield from flush()
        pending.append(tensor)
        if len(pending) == batch_size:
            yield from flush()
    if pending:
        yield from flush()


# --------------------------------------------------------------------------- files


def pick_encoder() -> str:
    """The best video encoder PyAV's FFmpeg has: libx264, else libopenh264, else mpeg4."""
    import av

    for name in ENCODERS:
        try:
            av.codec.Codec(name, "w")
            return name
        except Exception:  # noqa: BLE001 - PyAV raises UnknownCodecError (or ValueError in old versions)
            continue
    raise VideoError(f"PyAV's FFmpeg has none of the encoders {ENCODERS}")


def _import_av():
    try:
        import av
    except ImportError:
        raise ImportError("PyAV is not installed: pip install av (or pip install 'seg-xai-fast[video]')") from None
    return av


def open_input(path: Union[str, os.PathLike]):
    """(container, video stream) of `path`, or a VideoError naming the file and the reason."""
    av = _import_av()
    path = str(path)
    if not os.path.exists(path):
        raise VideoError(f"cannot read video {path!r}: no such file")
    if os.path.isdir(path):
        raise VideoError(f"cannot read video {path!r}: it is a folder")
    try:
        container = av.open(path)
    except av.error.FFmpegError as err:
        raise VideoError(f"cannot read video {path!r}: not a video file FFmpeg can read ({_reason(err)})") from None
    if container.format.name in _TEXT_FORMATS:
        container.close()
        raise VideoError(f"cannot read video {path!r}: not a video file (FFmpeg reads it as text, format "
                         f"{container.format.name!r})")
    if not container.streams.video:
        container.close()
        raise VideoError(f"cannot read video {path!r}: it has no video stream")
    stream = container.streams.video[0]
    stream.thread_type = "AUTO"
    return container, stream


def _reason(err: BaseException) -> str:
    return getattr(err, "strerror", None) or str(err) or type(err).__name__


def _rate(stream) -> Fraction:
    for rate in (stream.average_rate, stream.guessed_rate, stream.base_rate):
        if rate:
            return Fraction(rate)
    return Fraction(25)


@dataclass
class VideoSummary:
    """What explain_video did; lines() are printed by `seg-xai video`."""

    input: str
    output: str
    frames: int = 0  # frames written
    skipped: int = 0  # corrupt frames skipped
    seconds: float = 0.0
    encoder: str = ""
    size: tuple = (0, 0)  # (width, height) written
    rate: Fraction = Fraction(25)
    interrupted: bool = False
    runtime: str = ""
    notes: list = field(default_factory=list)

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0

    def lines(self) -> list[str]:
        w, h = self.size
        state = "interrupted (Ctrl-C): wrote a playable partial output" if self.interrupted else "wrote"
        out = [f"{state} {self.output}: {self.frames} frames {w}x{h} at {float(self.rate):.3g} fps, encoder {self.encoder}"]
        if self.runtime:
            out.append(self.runtime)
        out.append(f"skipped {self.skipped} corrupt frame{'s' if self.skipped != 1 else ''}")
        out += self.notes
        return out


def _put(q: queue.Queue, item, stop: threading.Event) -> bool:
    """Put `item` unless `stop` is set first; never blocks forever on a full queue."""
    while not stop.is_set():
        try:
            q.put(item, timeout=0.1)
            return True
        except queue.Full:
            continue
    return False


class _Decoder(threading.Thread):
    """Demuxes and decodes the input into RGB uint8 [H,W,3] frames on `frames`, then _END.

    Frames the decoder rejects (FFmpeg error) or flags as corrupt are skipped; so is a frame of
    another size than the first. `skipped` counts them together with packets that produced no
    frame at all (a decoder may drop a broken frame silently).
    """

    def __init__(self, container, stream, frames: queue.Queue, stop: threading.Event) -> None:
        super().__init__(name="seg-xai-decode", daemon=True)
        self.container, self.stream, self.frames, self.stop = container, stream, frames, stop
        self.rejected = 0  # frames refused or flagged corrupt by the decoder
        self.packets = 0  # packets with data
        self.decoded = 0  # frames passed on
        self.size: Optional[tuple] = None  # (H, W) of the first frame
        self.note = ""
        self.complete = False  # the whole input was read
        self.error: Optional[BaseException] = None

    @property
    def skipped(self) -> int:
        if self.complete:  # every packet was decoded: those that gave no frame were dropped
            return max(self.rejected, self.packets - self.decoded)
        return self.rejected

    def run(self) -> None:
        import av

        try:
            for packet in self.container.demux(self.stream):
                if self.stop.is_set():
                    return
                if packet.size:
                    self.packets += 1
                try:
                    decoded = packet.decode()
                except av.error.FFmpegError:
                    self.rejected += 1
                    continue
                for frame in decoded:
                    if getattr(frame, "is_corrupt", False):
                        self.rejected += 1
                        continue
                    rgb = frame.to_ndarray(format="rgb24")
                    if self.size is None:
                        self.size = rgb.shape[:2]
                    if rgb.shape[:2] != self.size:
                        self.rejected += 1
                        continue
                    if not _put(self.frames, rgb, self.stop):
                        return
                    self.decoded += 1
            self.complete = True
        except av.error.FFmpegError as err:  # a broken container: keep what was decoded
            self.note = f"input ended early: {_reason(err)}"
        except BaseException as err:  # noqa: BLE001 - handed to the main thread
            self.error = err
        finally:
            _put(self.frames, _END, self.stop)


class _Stage(threading.Thread):
    """A pipeline stage: takes items from `inbox` until _END, passes step(item) on to `outbox`
    (when there is one), then runs close() and passes _END on.

    After an error it keeps draining its inbox (so no producer blocks) and stores the error for
    the main thread.
    """

    def __init__(self, name: str, inbox: queue.Queue, outbox: Optional[queue.Queue] = None) -> None:
        super().__init__(name=name, daemon=True)
        self.inbox, self.outbox = inbox, outbox
        self.error: Optional[BaseException] = None

    def step(self, item):
        raise NotImplementedError

    def close(self) -> None:
        pass

    def run(self) -> None:
        while True:
            item = self.inbox.get()
            if item is _END:
                break
            if self.error is not None:
                continue
            try:
                result = self.step(item)
                if self.outbox is not None:
                    self.outbox.put(result)  # the next stage drains, so this returns
            except BaseException as err:  # noqa: BLE001 - handed to the main thread
                self.error = err
        try:
            self.close()
        except Exception as err:  # noqa: BLE001
            self.error = self.error or err
        if self.outbox is not None:
            self.outbox.put(_END)

    def finish(self) -> None:
        """Send _END (the thread drains its inbox, so this returns) and wait for the thread to end."""
        while self.is_alive():
            try:
                self.inbox.put(_END, timeout=0.1)
                break
            except queue.Full:
                continue
        self.join()


class _Overlayer(_Stage):
    """(frames uint8 [B,H,W,3], forward state) → overlaid uint8 [B,H,W,3] numpy: the class choice,
    the CAM maths and the overlay kernel, overlapping the next batch's forward pass."""

    def __init__(self, engine: FrameExplainer, colormap: str, alpha: float, inbox, outbox) -> None:
        super().__init__("seg-xai-explain", inbox, outbox)
        self.engine, self.colormap, self.alpha = engine, colormap, alpha

    def step(self, item):
        frames, state = item
        maps, _ = self.engine.explain(state)
        return overlay_maps(frames, maps, self.colormap, self.alpha).numpy()


class _Encoder(_Stage):
    """Encodes overlaid batches uint8 [B,H,W,3]; at the end flushes the encoder and closes the file."""

    def __init__(self, container, stream, inbox: queue.Queue) -> None:
        super().__init__("seg-xai-encode", inbox)
        self.container, self.stream = container, stream
        self.written = 0

    def step(self, batch) -> None:
        import av

        height, width = self.stream.height, self.stream.width
        for rgb in batch:
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb[:height, :width]), format="rgb24")
            frame.pts = self.written
            self.container.mux(self.stream.encode(frame))
            self.written += 1

    def close(self) -> None:
        try:
            self.container.mux(self.stream.encode())  # flush the frames the encoder holds
        finally:
            self.container.close()


def _open_output(tmp: str, encoder: str, width: int, height: int, rate: Fraction):
    import av

    container = av.open(tmp, "w", format=_FORMATS[Path(tmp).suffix.lower()])
    options = _X264_OPTIONS if encoder == "libx264" else {}
    stream = container.add_stream(encoder, rate=rate, options=options)
    stream.width, stream.height = width, height
    stream.pix_fmt = "yuvj420p" if encoder == "mjpeg" else "yuv420p"  # MJPEG wants full-range YUV
    if encoder == "mpeg4":
        stream.bit_rate = max(1_000_000, int(width * height * float(rate) * 0.15))  # its default 200 kb/s is blocky
    return container, stream


_FORMATS = {".mp4": "mp4", ".mkv": "matroska", ".mov": "mov", ".avi": "avi"}


def _temp_beside(path: Path) -> str:
    """A new empty file in `path`'s folder (created if needed) to write to and rename over `path`;
    same suffix, so FFmpeg picks the container from it; the usual permissions (mkstemp's are 0600)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=f".partial{path.suffix}")
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    return tmp


def _check_output(input_path: str, output: Union[str, os.PathLike]) -> Path:
    output = Path(output)
    if output.suffix.lower() not in CONTAINERS:
        raise VideoError(f"OUTPUT must end in one of {CONTAINERS}, got {str(output)!r}")
    if os.path.exists(input_path) and output.exists() and os.path.samefile(input_path, output):
        raise VideoError(f"OUTPUT must differ from INPUT, got {str(output)!r} for both")
    if output.is_dir():
        raise VideoError(f"OUTPUT {str(output)!r} is a folder; name a video file")
    return output


def explain_video(
    input: Union[str, os.PathLike],
    output: Union[str, os.PathLike],
    explainer,
    *,
    batch_size: int = 4,
    classes: Optional[Sequence[int]] = None,
    colormap: str = "jet",
    alpha: float = 0.5,
    progress: bool = True,
    queue_batches: int = 2,
    opened=None,
) -> VideoSummary:
    """Write `output`: every frame of `input` with its explanation overlaid (see the module docstring).

    explainer: sx.Explainer or sx.OnnxExplainer. queue_batches: batches each queue holds.
    opened: (container, stream) from open_input(input), to reuse one already open.
    Raises VideoError for unusable files; KeyboardInterrupt returns a summary with
    interrupted=True after finishing the partial output.
    """
    from tqdm import tqdm

    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    colormap_lut(colormap)  # an unknown colormap fails here, before any work
    input = str(input)
    output = _check_output(input, output)
    engine = FrameExplainer(explainer, classes)
    container, stream = opened or open_input(input)
    width, height = stream.codec_context.width, stream.codec_context.height
    out_w, out_h = width - width % 2, height - height % 2  # 4:2:0 chroma needs even sizes
    summary = VideoSummary(input, str(output), encoder=pick_encoder(), size=(out_w, out_h), rate=_rate(stream))
    if (out_w, out_h) != (width, height):
        summary.notes.append(f"cropped {width}x{height} to {out_w}x{out_h} (the encoder needs even sizes)")
    if out_w < 2 or out_h < 2:
        container.close()
        raise VideoError(f"cannot read video {input!r}: its frame size {width}x{height} is too small")
    tmp = _temp_beside(output)
    stop = threading.Event()
    frames_q: queue.Queue = queue.Queue(maxsize=queue_batches * batch_size)  # decoded frames
    forward_q: queue.Queue = queue.Queue(maxsize=queue_batches)  # (frames, forward outputs)
    encode_q: queue.Queue = queue.Queue(maxsize=queue_batches)  # overlaid batches
    decoder = overlayer = encoder = None
    keep = False
    threads = torch.get_num_threads()
    if engine.onnx:
        # ONNX Runtime has its own thread pool for the forward pass; torch's only runs the CAM
        # stage, which overlaps it on another thread: more torch threads just fight over the cores.
        torch.set_num_threads(1)
    bar = tqdm(total=stream.frames or None, unit="frame", file=sys.stderr, disable=not progress, leave=False)
    start = time.perf_counter()
    try:
        out_container, out_stream = _open_output(tmp, summary.encoder, out_w, out_h, summary.rate)
        encoder = _Encoder(out_container, out_stream, encode_q)
        encoder.start()
        overlayer = _Overlayer(engine, colormap, alpha, forward_q, encode_q)
        overlayer.start()
        decoder = _Decoder(container, stream, frames_q, stop)
        decoder.start()
        try:
            done = False
            while not done:
                batch = []
                while len(batch) < batch_size:
                    item = frames_q.get()
                    if item is _END:
                        done = True
                        break
                    batch.append(torch.from_numpy(item))
                for stage in (decoder, overlayer, encoder):
                    if stage.error is not None:
                        raise stage.error
                if batch:
                    frames = torch.stack(batch)  # uint8 [B,H,W,3]
                    forward_q.put((frames, engine.forward(to_images(frames))))
                    bar.update(len(batch))
        except KeyboardInterrupt:
            summary.interrupted = True
        stop.set()
        overlayer.finish()  # explains what it holds, then passes _END to the encoder
        encoder.join()  # flushed and closed: the file plays, also after Ctrl-C
        finished = (overlayer, encoder)
        overlayer = encoder = None
        for stage in finished:
            if stage.error is not None:
                raise stage.error
        summary.seconds = time.perf_counter() - start
        decoder.join()
        summary.frames = finished[1].written
        summary.skipped = decoder.skipped
        if decoder.note:
            summary.notes.append(decoder.note)
        if summary.frames == 0:
            why = "interrupted before the first frame was written" if summary.interrupted else \
                "no frame could be decoded" + (f" ({decoder.note})" if decoder.note else "")
            raise VideoError(f"cannot read video {input!r}: {why}; nothing was written")
        keep = True
    finally:
        bar.close()
        stop.set()
        if overlayer is not None:  # an error in the main thread: let the stages finish the file
            overlayer.finish()
        if encoder is not None:
            encoder.finish()
        if decoder is not None:
            decoder.join(timeout=10)
        container.close()
        torch.set_num_threads(threads)
        if keep:
            os.replace(tmp, output)
        elif os.path.exists(tmp):
            os.unlink(tmp)
    return summary


def run_video(
    input: str,
    output: str,
    model: str = "demo",
    runtime: str = "auto",
    layer: Optional[str] = None,
    method: str = "gradcam",
    classes: Optional[str] = None,
    weights: Optional[str] = None,
    batch_size: int = 8,
    colormap: str = "jet",
    alpha: float = 0.5,
    progress: bool = True,
    log=None,
) -> VideoSummary:
    """`seg-xai video`: open the input (its frame size is the ONNX export size), build the
    explainer for `model` on `runtime` (runtimes.make_explainer) and run explain_video."""
    from .batch import _parse_classes
    from .runtimes import make_explainer

    _check_output(input, output)
    container, stream = open_input(input)
    try:
        size = (stream.codec_context.height, stream.codec_context.width)
        choice = make_explainer(model, layer, method, runtime, weights=weights, image_size=size, log=log)
        class_ids = _parse_classes(classes, choice.class_names)
        summary = explain_video(input, output, choice.explainer, batch_size=batch_size, classes=class_ids,
                                colormap=colormap, alpha=alpha, progress=progress, opened=(container, stream))
    except BaseException:
        container.close()
        raise
    summary.runtime = f"{method} explanations, {choice.describe()}"
    return summary


# --------------------------------------------------------------------------- demo clip


def write_demo_video(
    out_dir: Union[str, os.PathLike] = "seg-xai-demo",
    frames: int = 48,
    size: tuple = (160, 224),
    method: str = "gradcam",
    seed: int = 2024,
    colormap: str = "jet",
    progress: bool = False,
) -> dict:
    """A sample clip from the scene generator and its overlay, written to `out_dir`.

    The clip pans a camera across one wide generated scene, so its shapes move across the frame
    (2 px per frame). Explained with the bundled demo model at layer "decoder" (a randomly
    initialised DemoSegNet while its weights file is missing). Returns {"clip", "overlay",
    "summary" (VideoSummary), "model"}.
    """
    from .demo_model import DemoSegNet, demo_model

    out_dir = Path(out_dir)
    clip = write_clip(out_dir / "scenes.mp4", scene_frames(frames, size, seed), rate=Fraction(12))
    try:
        model, model_name = demo_model(), "demo"
    except FileNotFoundError:
        torch.manual_seed(seed)
        model, model_name = DemoSegNet().eval(), "demo (untrained: weights file missing)"
    overlay = out_dir / f"scenes_{method}.mp4"
    summary = explain_video(clip, overlay, Explainer(model, "decoder", method), batch_size=8, colormap=colormap,
                            progress=progress)
    return {"clip": str(clip), "overlay": str(overlay), "summary": summary, "model": model_name}


def scene_frames(frames: int = 48, size: tuple = (160, 224), seed: int = 2024, step: int = 2) -> list[np.ndarray]:
    """`frames` uint8 [H,W,3] frames of a camera panning `step` px per frame across one wide
    generated scene (scenes.synthetic_scenes), so the shapes move across the picture."""
    from .scenes import synthetic_scenes

    height, width = size
    scene, _ = synthetic_scenes(1, seed=seed, size=(height, width + step * (frames - 1)))
    picture = (scene[0].permute(1, 2, 0) * 255 + 0.5).to(torch.uint8).numpy()  # [H,W',3]
    return [np.ascontiguousarray(picture[:, i * step:i * step + width]) for i in range(frames)]


def write_clip(path: Union[str, os.PathLike], frames: Sequence[np.ndarray], rate: Fraction = Fraction(25),
               encoder: Optional[str] = None) -> Path:
    """Encode uint8 [H,W,3] frames to `path` atomically (encoder: default pick_encoder())."""
    av = _import_av()
    path = Path(path)
    height, width = frames[0].shape[:2]
    tmp = _temp_beside(path)
    try:
        container, stream = _open_output(tmp, encoder or pick_encoder(), width - width % 2, height - height % 2, rate)
        with container:
            for i, rgb in enumerate(frames):
                frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb[:stream.height, :stream.width]), format="rgb24")
                frame.pts = i
                container.mux(stream.encode(frame))
            container.mux(stream.encode())
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
    return path


# --------------------------------------------------------------------------- command line


def register(subparsers) -> argparse.ArgumentParser:
    """Add the `video` subcommand to an argparse subparsers object (func(args) -> exit status)."""
    from .colormaps import COLORMAP_NAMES
    from .methods import METHODS
    from .runtimes import RUNTIMES

    p = subparsers.add_parser(
        "video", help="overlay explanations on every frame of a video",
        description="Decode INPUT, explain every frame (the class covering the most pixels, background only "
                    "when nothing else is predicted, unless --classes), overlay the maps and encode OUTPUT "
                    "(H.264 when available). The last line printed is 'frames=N fps=F'. Exit status: 0 done, "
                    "2 unusable input or arguments, 130 interrupted (a playable partial OUTPUT is kept).")
    p.add_argument("input", metavar="INPUT", help="a video file FFmpeg can read")
    p.add_argument("output", metavar="OUTPUT", help=f"the video to write ({', '.join(CONTAINERS)})")
    p.add_argument("--model", default="demo",
                   help="demo | torchvision:NAME | model.pt | model.onnx (from export-onnx) (default: %(default)s)")
    p.add_argument("--runtime", default="auto", choices=RUNTIMES,
                   help="auto: onnxruntime when installed and it serves the method at this layer, else torch "
                        "(default: %(default)s)")
    p.add_argument("--layer", default=None, help="target layer; 'NAME:input' for a module's input (default: the model's)")
    p.add_argument("--method", default="gradcam", choices=sorted(METHODS), help="(default: %(default)s)")
    p.add_argument("--classes", default=None,
                   help="comma-separated class ids or names to choose from per frame (default: every class)")
    p.add_argument("--alpha", type=float, default=0.5, help="opacity of the map (default: %(default)s)")
    p.add_argument("--colormap", default="jet", choices=COLORMAP_NAMES, help="(default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=4, help="frames per forward pass (default: %(default)s)")
    p.add_argument("--weights", default=None, help="state-dict file for torchvision:NAME (default: random init)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_video)
    return p


def _cmd_video(args) -> int:
    def log(message: str) -> None:
        print(f"seg-xai video: {message}", file=sys.stderr)

    try:
        if args.batch_size < 1:
            raise VideoError(f"--batch-size must be a positive int, got {args.batch_size}")
        summary = run_video(args.input, args.output, model=args.model, runtime=args.runtime, layer=args.layer,
                            method=args.method, classes=args.classes, weights=args.weights,
                            batch_size=args.batch_size, colormap=args.colormap, alpha=args.alpha,
                            progress=not args.no_progress, log=log)
    except (ValueError, TypeError, FileNotFoundError, ImportError, RuntimeError) as err:
        print(f"seg-xai video: error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("seg-xai video: interrupted before the first frame; nothing was written", file=sys.stderr)
        return EXIT_INTERRUPTED
    for line in summary.lines():
        print(line)
    print(f"frames={summary.frames} fps={summary.fps:.1f}", flush=True)
    return EXIT_INTERRUPTED if summary.interrupted else EXIT_OK


def add_demo_video_flag(demo_parser: argparse.ArgumentParser) -> None:
    """Give `seg-xai demo` a --video flag: write the sample clip and its overlay instead of the pictures."""
    pictures = demo_parser.get_default("func")
    demo_parser.add_argument("--video", action="store_true",
                             help="write a generated clip and its explained overlay (scenes*.mp4) instead of pictures")

    def run(args) -> int:
        if not getattr(args, "video", False):
            return pictures(args)
        try:
            result = write_demo_video(args.out, method=args.method, seed=args.seed, colormap=args.colormap,
                                      progress=True)
        except (ValueError, ImportError) as err:
            print(f"seg-xai demo: error: {err}", file=sys.stderr)
            return EXIT_USAGE
        summary = result["summary"]
        print(f"wrote the clip {result['clip']} and its {args.method} overlay {result['overlay']} "
              f"(model {result['model']}, encoder {summary.encoder})")
        print(f"frames={summary.frames} fps={summary.fps:.1f}")
        return EXIT_OK

    demo_parser.set_defaults(func=run)
