"""Video files with PyAV: opening an input, choosing an encoder, writing an output atomically."""
from __future__ import annotations

import os
import sys
from fractions import Fraction
from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np

from ...errors import VideoError
from ...fileio import check_target, discard, publish, temp_path

CONTAINERS = (".mp4", ".mkv", ".mov", ".avi")
ENCODERS = ("libx264", "libopenh264", "mpeg4")  # preferred first; the first PyAV's FFmpeg has wins
# libx264's settings per `encoding`. On a CPU-only machine the encoder shares the cores with the
# model, so its CPU time is the video's speed. Measured on explained overlays (2 cores, PSNR against
# the overlaid frames): "fast", ultrafast at crf 23, has the PSNR of "compact", superfast at crf 27
# (30.3 against 30.2 dB at 320×240, 33.8 against 33.4 at 1280×720) for half its CPU time (0.81
# against 1.62 ms per frame; 8.7 against 19.2 at 720p) and 1.7–2.2× its bytes.
ENCODINGS = {"fast": {"preset": "ultrafast", "crf": "23"}, "compact": {"preset": "superfast", "crf": "27"}}
# FFmpeg's demuxers that render any text file as "video" (ANSI art, subtitles-as-video): not videos here.
_TEXT_FORMATS = ("tty",)

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


def import_av():
    try:
        import av
    except ImportError:
        raise ImportError("PyAV is not installed: pip install av (or pip install 'seg-xai-fast[video]')") from None
    return av


# FFmpeg's capture-device formats, by platform: `seg-xai video --camera DEVICE`.
CAMERA_FORMATS = {"linux": "v4l2", "darwin": "avfoundation", "win32": "dshow"}


def is_live(path: str, format: Optional[str] = None) -> bool:
    """A stream or device rather than a file: a URL (rtsp://, http://, udp://...) or an FFmpeg
    input format named (--input-format, --camera)."""
    return format is not None or "://" in str(path)


def camera_format() -> str:
    """FFmpeg's capture format on this platform (v4l2, avfoundation or dshow), when PyAV's FFmpeg has it."""
    av = import_av()
    name = next((f for platform, f in CAMERA_FORMATS.items() if sys.platform.startswith(platform)), None)
    if name is None or name not in av.formats_available:
        raise VideoError(f"--camera: PyAV's FFmpeg has no camera input on this platform ({sys.platform}; looked "
                         f"for {name or 'none known'}); capture the frames yourself and pass them to "
                         "sx.overlay_stream, or record a file and explain that")
    return name


def open_input(path: Union[str, os.PathLike], format: Optional[str] = None):
    """(container, video stream) of `path` — a file, or with is_live(path, format) a stream URL
    or an FFmpeg input (format: FFmpeg's -f, e.g. v4l2 with /dev/video0, lavfi with
    "testsrc=size=320x240") — or a VideoError naming it and the reason."""
    av = import_av()
    path = str(path)
    live = is_live(path, format)
    if not live and not os.path.exists(path):
        raise VideoError(f"cannot read video {path!r}: no such file")
    if not live and os.path.isdir(path):
        raise VideoError(f"cannot read video {path!r}: it is a folder")
    if format is not None and format not in av.formats_available:
        raise VideoError(f"--input-format must be an input format PyAV's FFmpeg has, got {format!r}")
    try:
        container = av.open(path, format=format)
    except av.error.FFmpegError as err:
        what = "a stream or device FFmpeg can open" if live else "a video file FFmpeg can read"
        raise VideoError(f"cannot read video {path!r}: not {what} ({error_reason(err)})") from None
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


def error_reason(err: BaseException) -> str:
    return getattr(err, "strerror", None) or str(err) or type(err).__name__


def frame_rate(stream) -> Fraction:
    for rate in (stream.average_rate, stream.guessed_rate, stream.base_rate):
        if rate:
            return Fraction(rate)
    return Fraction(25)


def check_encoding(encoding: str) -> str:
    if encoding not in ENCODINGS:
        raise ValueError(f"encoding must be one of {list(ENCODINGS)}, got {encoding!r}")
    return encoding


def open_output(tmp: str, encoder: str, width: int, height: int, rate: Fraction, encoding: str = "fast"):
    import av

    container = av.open(tmp, "w", format=_FORMATS[Path(tmp).suffix.lower()])
    options = dict(ENCODINGS[check_encoding(encoding)]) if encoder == "libx264" else {}
    stream = container.add_stream(encoder, rate=rate, options=options)
    stream.width, stream.height = width, height
    stream.pix_fmt = "yuvj420p" if encoder == "mjpeg" else "yuv420p"  # MJPEG wants full-range YUV
    if encoder == "mpeg4":
        stream.bit_rate = max(1_000_000, int(width * height * float(rate) * 0.15))  # its default 200 kb/s is blocky
    return container, stream


_FORMATS = {".mp4": "mp4", ".mkv": "matroska", ".mov": "mov", ".avi": "avi"}


def temp_beside(path: Path) -> str:
    """A new empty file in `path`'s folder (created if needed) to write to and publish over `path`
    (fileio.publish: the umask's permissions, only over a regular file); same suffix, so FFmpeg
    picks the container from it."""
    check_target(path)  # before any work: a symlink or device at OUTPUT is refused
    return temp_path(path, suffix=f".partial{path.suffix}")


def write_clip(path: Union[str, os.PathLike], frames: Sequence[np.ndarray], rate: Fraction = Fraction(25),
               encoder: Optional[str] = None) -> Path:
    """Encode uint8 [H,W,3] frames to `path` atomically (encoder: default pick_encoder())."""
    av = import_av()
    path = Path(path)
    height, width = frames[0].shape[:2]
    tmp = temp_beside(path)
    try:
        container, stream = open_output(tmp, encoder or pick_encoder(), width - width % 2, height - height % 2, rate)
        with container:
            for i, rgb in enumerate(frames):
                frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb[:stream.height, :stream.width]), format="rgb24")
                frame.pts = i
                container.mux(stream.encode(frame))
            container.mux(stream.encode())
        publish(tmp, path)
    except BaseException:
        discard(tmp)
        raise
    return path
