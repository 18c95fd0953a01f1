"""Explained video: decode → explain → overlay → encode, the stages overlapped in threads.

    seg-xai video street.mp4 street_cam.mp4 --model torchvision:lraspp_mobilenet_v3_large --runtime onnxruntime

Pipeline of `seg-xai video` (explain_video): the threads of frames.start_explaining, joined by
bounded queues (stages.py), so memory stays flat, frames stay in order and the slowest stage
sets the pace, then an encoder thread:
1. the source thread decodes the input (PyAV) into RGB frames, batches them and converts each
   batch to the model's input;
2. the model stage runs one forward pass per batch — on ONNX Runtime two at once, each with
   onnx_threads(cores) threads, dealt batches in turn (stages.Lanes keep the order);
3. the explain stage picks each frame's class, computes its map from the forward's outputs and
   colours it over the frame with the fused overlay kernel;
4. the encoder thread encodes the overlaid frames: H.264 with libx264 when PyAV's FFmpeg has
   it, else libopenh264, else MPEG-4 part 2 (pick_encoder; the summary names the one used).
The main thread updates the progress bar (with the fps so far) and takes Ctrl-C: the stage
threads block SIGINT, so the kernel hands it to the main thread at once.

Which class a frame shows: with no `classes`, the class covering the most pixels of that frame's
prediction, background (class 0) only when no other class is predicted anywhere in the frame;
with `classes`, the listed class covering the most pixels (class 0, if listed, only when no other
listed class is present; the first listed class when none is predicted). Its target region is its
predicted pixels (the Seg-Grad-CAM default), so each frame's map explains what the frame shows.

Bad input: an unreadable or non-video INPUT is a VideoError (exit status 2) and nothing is left
behind (the output is written to a temporary file beside OUTPUT and renamed over it only on
success); a frame the decoder rejects or flags as corrupt is skipped and counted. Ctrl-C stops
decoding, flushes the encoder and saves the playable partial output as OUTPUT's stem +
".partial" + suffix (partial_path), never over OUTPUT: a complete OUTPUT of an earlier run stays.
A second Ctrl-C while that file is being finished is ignored. A write error (disk full,
unwritable folder) is an OSError naming OUTPUT, and the temporary file is removed.
"""
from __future__ import annotations

import contextlib
import os
import queue
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Iterator, Optional, Sequence, Union

import numpy as np
from tqdm import tqdm

from ...engine.checks import parse_class_spec
from ...errors import VideoError
from ...fileio import check_target, discard, publish
from ...kernels.colormaps import colormap_lut
from ...runtimes.choice import make_explainer
from .frames import FrameBatch, FrameExplainer, available_cores, model_threads, start_explaining
from .stages import Outlet, Pipeline, Stage, profile_table
from .io import (CONTAINERS, check_encoding, error_reason, frame_rate, is_live, open_input, open_output, pick_encoder,
                 temp_beside)

DECODE, ENCODE = "decode", "encode"  # the names of the first and last stages

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
    stages: list = field(default_factory=list)  # StageTimes of each stage, in pipeline order

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0

    def lines(self) -> list[str]:
        w, h = self.size
        state = "interrupted (Ctrl-C): wrote a playable partial output to" if self.interrupted else "wrote"
        out = [f"{state} {self.output}: {self.frames} frames {w}x{h} at {float(self.rate):.3g} fps, encoder {self.encoder}"]
        if self.runtime:
            out.append(self.runtime)
        out.append(f"skipped {self.skipped} corrupt frame{'s' if self.skipped != 1 else ''}")
        out += self.notes
        return out

    def profile(self) -> list[str]:
        """`--profile`: each pipeline stage's time per frame (stages.profile_table)."""
        return profile_table(self.stages, self.frames, self.seconds)


class _Decoder:
    """Demuxes and decodes the input into RGB uint8 [H,W,3] frames: frames() runs in the
    pipeline's source thread.

    Frames the decoder rejects (FFmpeg error) or flags as corrupt are skipped; so is a frame of
    another size than the first. `skipped` counts them together with packets that produced no
    frame at all (a decoder may drop a broken frame silently).
    """

    def __init__(self, container, stream, max_frames: Optional[int] = None) -> None:
        self.container, self.stream, self.max_frames = container, stream, max_frames
        self.rejected = 0  # frames refused or flagged corrupt by the decoder
        self.packets = 0  # packets with data
        self.decoded = 0  # frames passed on
        self.size: Optional[tuple] = None  # (H, W) of the first frame
        self.note = ""
        self.complete = False  # the whole input was read

    @property
    def skipped(self) -> int:
        if self.complete:  # every packet was decoded: those that gave no frame were dropped
            return max(self.rejected, self.packets - self.decoded)
        return self.rejected

    def frames(self) -> Iterator[np.ndarray]:
        import av

        try:
            for packet in self.container.demux(self.stream):
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
                    self.decoded += 1
                    yield rgb
                    if self.decoded == self.max_frames:
                        self.note = f"stopped after {self.max_frames} frames (max_frames)"
                        return
            self.complete = True
        except av.error.FFmpegError as err:  # a broken container: keep what was decoded
            self.note = f"input ended early: {error_reason(err)}"


class _Encoder:
    """Encodes overlaid batches (the pipeline's last stage); close() flushes the encoder and
    closes the file."""

    def __init__(self, container, stream) -> None:
        self.container, self.stream = container, stream
        self.written = 0

    def encode(self, batch: FrameBatch) -> int:
        """Encode batch.out uint8 [B,H,W,3]; returns the number of frames written."""
        import av

        height, width = self.stream.height, self.stream.width
        for rgb in batch.out.numpy():
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb[:height, :width]), format="rgb24")
            frame.pts = self.written
            self.container.mux(self.stream.encode(frame))
            self.written += 1
        return len(batch.out)

    def close(self) -> None:
        try:
            self.container.mux(self.stream.encode())  # flush the frames the encoder holds
        finally:
            self.container.close()


def _check_output(input_path: str, output: Union[str, os.PathLike]) -> Path:
    output = Path(output)
    if output.suffix.lower() not in CONTAINERS:
        raise VideoError(f"OUTPUT must end in one of {CONTAINERS}, got {str(output)!r}")
    if os.path.exists(input_path) and output.exists() and os.path.samefile(input_path, output):
        raise VideoError(f"OUTPUT must differ from INPUT, got {str(output)!r} for both")
    if output.is_dir():
        raise VideoError(f"OUTPUT {str(output)!r} is a folder; name a video file")
    try:
        check_target(output)
        check_target(partial_path(output))
    except OSError as err:
        raise VideoError(f"OUTPUT: {err}") from None
    return output


def partial_path(output: Path) -> Path:
    """Where an interrupted run saves its playable partial output: beside OUTPUT, never over it."""
    return output.with_name(f"{output.stem}.partial{output.suffix}")


@contextlib.contextmanager
def _deferred_interrupts():
    """Ctrl-C is ignored (counted in the yielded list) while the output is being finished: a
    second Ctrl-C right after the first used to abort the finishing and delete the partial file.
    The finishing is bounded: the stages hold at most queue_batches batches."""
    hits: list = []
    if threading.current_thread() is not threading.main_thread():
        yield hits
        return
    previous = signal.signal(signal.SIGINT, lambda *_: hits.append(1))
    try:
        yield hits
    finally:
        signal.signal(signal.SIGINT, previous)


def _write_error(output: Path, err: BaseException) -> OSError:
    return OSError(f"cannot write OUTPUT {str(output)!r}: {error_reason(err)}; nothing was written")


def _stage_error(pipeline: Pipeline, output: Path) -> BaseException:
    """The first stage error as the main thread raises it: the encoder's OSErrors are the output's."""
    stage, err = pipeline.error
    if stage.name == f"seg-xai-{ENCODE}" and isinstance(err, OSError):
        return _write_error(output, err)
    return err


def explain_video(
    input: Union[str, os.PathLike],
    output: Union[str, os.PathLike],
    explainer,
    *,
    batch_size: int = 4,
    classes: Optional[Sequence[int]] = None,
    class_names: Optional[Sequence[str]] = None,
    colormap: str = "jet",
    alpha: float = 0.5,
    progress: bool = True,
    queue_batches: int = 2,
    workers: Optional[int] = None,
    opened=None,
    input_format: Optional[str] = None,
    max_frames: Optional[int] = None,
    encoding: str = "fast",
) -> VideoSummary:
    """Write `output`: every frame of `input` with its explanation overlaid (see the module docstring).

    explainer: sx.Explainer or sx.OnnxExplainer. queue_batches: batches each queue holds.
    workers: forward passes at once (default frames.model_workers: two for an OnnxExplainer
    made with threads=onnx_threads(cores), as `seg-xai video` makes it).
    class_names: names of the model's classes, for the label on each frame ("class N" without).
    opened: (container, stream) from open_input(input), to reuse one already open.
    input_format: FFmpeg's input format for a device or virtual input (io.open_input); a URL or
    such an input is live: Ctrl-C ends its input and OUTPUT is written as for a finished file.
    max_frames: stop after this many frames (None: at the end of the input).
    encoding: H.264's settings, "fast" (half the encoder's CPU time of "compact" at the same
    quality, about twice the bytes) or "compact" (io.ENCODINGS).
    Raises VideoError for unusable files; KeyboardInterrupt returns a summary with
    interrupted=True after finishing the partial output. summary.stages: each stage's times.
    """
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    if not isinstance(queue_batches, int) or queue_batches < 1:
        raise ValueError(f"queue_batches must be a positive int, got {queue_batches!r}")
    if max_frames is not None and (not isinstance(max_frames, int) or max_frames < 1):
        raise ValueError(f"max_frames must be a positive int or None, got {max_frames!r}")
    colormap_lut(colormap)  # an unknown colormap fails here, before any work
    check_encoding(encoding)
    input = str(input)
    output = _check_output(input, output)
    engine = FrameExplainer(explainer, classes, class_names)
    container, stream = opened or open_input(input, input_format)
    live = is_live(input, input_format)
    width, height = stream.codec_context.width, stream.codec_context.height
    out_w, out_h = width - width % 2, height - height % 2  # 4:2:0 chroma needs even sizes
    summary = VideoSummary(input, str(output), encoder=pick_encoder(), size=(out_w, out_h), rate=frame_rate(stream))
    if (out_w, out_h) != (width, height):
        summary.notes.append(f"cropped {width}x{height} to {out_w}x{out_h} (the encoder needs even sizes)")
    if out_w < 2 or out_h < 2:
        container.close()
        raise VideoError(f"cannot read video {input!r}: its frame size {width}x{height} is too small")
    try:
        tmp = temp_beside(output)
    except OSError as err:  # e.g. an unwritable folder, or a file where the folder should be
        container.close()
        raise _write_error(output, err) from None
    pipeline = Pipeline()
    decoder = _Decoder(container, stream, max_frames)
    written: Optional[Outlet] = None  # the encoder's output (frames written per batch)
    keep = False
    bar = tqdm(total=min(filter(None, (stream.frames, max_frames)), default=None), unit="frame", file=sys.stderr,
               disable=not progress, leave=False, bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}<{remaining}{postfix}]")
    start = time.perf_counter()
    try:
        with model_threads(engine):
            try:
                out_container, out_stream = open_output(tmp, summary.encoder, out_w, out_h, summary.rate, encoding)
            except OSError as err:
                raise _write_error(output, err) from None
            encoder = _Encoder(out_container, out_stream)
            try:
                explained = start_explaining(pipeline, decoder.frames, engine, batch_size, colormap, alpha,
                                             queue_batches=queue_batches, source_name=DECODE, workers=workers)
            except BaseException:
                out_container.close()
                raise
            counts: queue.Queue = queue.Queue()  # one int per batch, read here as it comes
            Stage(pipeline, ENCODE, encoder.encode, explained, counts, close=encoder.close).start()
            written = Outlet(pipeline, counts)
            try:
                for count in written:
                    bar.update(count)
                    bar.set_postfix_str(f"{bar.n / (time.perf_counter() - start):.1f} fps", refresh=False)
            except KeyboardInterrupt:
                summary.interrupted = True
            with _deferred_interrupts():  # a Ctrl-C now would cost the frames explained so far
                # Stop reading the input; the stages explain and encode what they hold; the
                # encoder flushes and closes the file (it plays, also after Ctrl-C).
                written.close()
        summary.seconds = time.perf_counter() - start
        summary.stages = pipeline.times
        ctrl_c = summary.interrupted or pipeline.interrupted
        summary.interrupted = ctrl_c and not live  # Ctrl-C is how a camera or stream ends
        if ctrl_c and live:
            summary.notes.append("input ended at Ctrl-C")
        if pipeline.error is not None:
            raise _stage_error(pipeline, output)
        summary.frames = encoder.written
        summary.skipped = decoder.skipped
        if decoder.note:
            summary.notes.append(decoder.note)
        if summary.frames == 0:
            why = "interrupted before the first frame was written" if ctrl_c else \
                "no frame could be decoded" + (f" ({decoder.note})" if decoder.note else "")
            raise VideoError(f"cannot read video {input!r}: {why}; nothing was written")
        keep = True
    finally:
        with _deferred_interrupts():
            bar.close()
            if written is not None:  # an error in this thread: let the stages finish and close the file
                written.close()
            container.close()
            if keep:
                # Interrupted: the partial file goes beside OUTPUT, so a complete OUTPUT stays.
                target = partial_path(output) if summary.interrupted else output
                try:
                    publish(tmp, target)
                except OSError as err:
                    discard(tmp)
                    raise _write_error(target, err) from None
                summary.output = str(target)
            else:
                discard(tmp)
    return summary


def onnx_threads(cores: int) -> int:
    """ONNX Runtime's intra-op threads per forward pass for `seg-xai video` on `cores` cores.

    The pipeline runs two forward passes at once (frames.model_workers), so each gets half the
    cores; from 8 cores on, one core per pass is left to decoding, the explain stage and encoding
    (measured on 2 cores only: there the other stages cost ~1/7 of the model's CPU time and fit
    beside it; two one-thread passes beat one two-thread pass).
    """
    return max(1, cores // 2 - (1 if cores >= 8 else 0))


def run_video(
    input: str,
    output: str,
    model: str = "demo",
    runtime: str = "auto",
    layer: Optional[str] = None,
    method: str = "gradcam",
    classes: Optional[str] = None,
    weights: Optional[str] = None,
    options: Optional[dict] = None,
    num_classes: Optional[int] = None,
    batch_size: int = 8,
    colormap: str = "jet",
    alpha: float = 0.5,
    progress: bool = True,
    log=None,
    input_format: Optional[str] = None,
    max_frames: Optional[int] = None,
    encoding: str = "fast",
) -> VideoSummary:
    """`seg-xai video`: open the input (its frame size is the ONNX export size), build the
    explainer for `model` on `runtime` (runtimes.make_explainer; ONNX Runtime with
    onnx_threads(cores) threads per forward pass) and run explain_video."""
    _check_output(input, output)
    container, stream = open_input(input, input_format)
    try:
        size = (stream.codec_context.height, stream.codec_context.width)
        choice = make_explainer(model, layer, method, runtime, weights=weights, num_classes=num_classes,
                                image_size=size, log=log, options=options, threads=onnx_threads(available_cores()))
        class_ids = parse_class_spec(classes, choice.class_names)
        summary = explain_video(input, output, choice.explainer, batch_size=batch_size, classes=class_ids,
                                class_names=choice.class_names,
                                colormap=colormap, alpha=alpha, progress=progress, opened=(container, stream),
                                input_format=input_format, max_frames=max_frames, encoding=encoding)
    except BaseException:
        container.close()
        raise
    summary.runtime = f"{method} explanations, {choice.describe()}"
    return summary
