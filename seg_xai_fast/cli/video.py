"""`seg-xai video`: overlay explanations on every frame of a video (see apps/video)."""
from __future__ import annotations

import sys

from ..apps.video.io import CONTAINERS, camera_format
from ..apps.video.pipeline import run_video
from ..errors import VideoError
from ..kernels.colormaps import COLORMAP_NAMES
from ..runtimes.choice import RUNTIMES
from .common import add_method_arguments, add_model_arguments, model_options, parse_options
from .exits import EXIT_INTERRUPTED, EXIT_OK


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "video", help="overlay explanations on every frame of a video",
        description="Decode INPUT, explain every frame (the class covering the most pixels, background only "
                    "when nothing else is predicted, unless --classes), overlay the maps and encode OUTPUT "
                    "(H.264 when available). The last line printed is 'frames=N fps=F'. Exit status: 0 done, "
                    "2 unusable input or arguments, 130 interrupted (the playable partial output is kept beside "
                    "OUTPUT as NAME.partial.EXT; a live input — a URL, --camera, --input-format — ends at Ctrl-C and "
                    "OUTPUT is written, status 0). Decoding, the model (two forward passes at once on ONNX "
                    "Runtime), the explanation and encoding run in threads joined by bounded queues.")
    p.add_argument("input", metavar="INPUT", help="a video file FFmpeg can read, a stream URL (rtsp://, http://, "
                   "udp://...), an input of --input-format, or with --camera a capture device (/dev/video0)")
    p.add_argument("output", metavar="OUTPUT", help=f"the video to write ({', '.join(CONTAINERS)})")
    add_model_arguments(p, onnx=True)
    p.add_argument("--runtime", default="auto", choices=RUNTIMES,
                   help="auto: onnxruntime when installed and it serves the method at this layer, else torch "
                        "(default: %(default)s)")
    add_method_arguments(p)
    p.add_argument("--classes", default=None,
                   help="comma-separated class ids or names to choose from per frame (default: every class)")
    p.add_argument("--alpha", type=float, default=0.5, help="opacity of the map (default: %(default)s)")
    p.add_argument("--colormap", default="jet", choices=COLORMAP_NAMES, help="(default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=4, help="frames per forward pass (default: %(default)s)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--profile", action="store_true",
                   help="print each pipeline stage's time per frame (busy, CPU, idle, blocked) before the last line")
    p.add_argument("--camera", action="store_true",
                   help="INPUT is a capture device (v4l2 on Linux, avfoundation on macOS, dshow on Windows)")
    p.add_argument("--input-format", default=None, metavar="FMT",
                   help="FFmpeg's input format for INPUT (its -f: v4l2, lavfi, ...); with it, or for a URL, "
                        "Ctrl-C ends the input and OUTPUT is written")
    p.add_argument("--max-frames", type=int, default=None, metavar="N", help="stop after N frames")
    p.add_argument("--encoding", choices=("fast", "compact"), default="fast",
                   help="H.264 settings: fast (x264 ultrafast, crf 23) takes half the encoder's CPU time of compact "
                        "(superfast, crf 27) at the same quality, for about twice the bytes")
    p.set_defaults(func=run, usage_errors=(RuntimeError,),
                   on_interrupt="interrupted before the first frame; nothing was written")


def run(args) -> int:
    def log(message: str) -> None:
        print(f"seg-xai video: {message}", file=sys.stderr)

    if args.batch_size < 1:
        raise VideoError(f"--batch-size must be a positive int, got {args.batch_size}")
    if args.max_frames is not None and args.max_frames < 1:
        raise VideoError(f"--max-frames must be a positive int, got {args.max_frames}")
    if args.camera and args.input_format:
        raise VideoError(f"--camera chooses the input format itself; got --input-format {args.input_format!r} too")
    input_format = camera_format() if args.camera else args.input_format
    summary = run_video(args.input, args.output, model=args.model, **model_options(args), runtime=args.runtime, layer=args.layer,
                        method=args.method, options=parse_options(args.option), classes=args.classes, batch_size=args.batch_size,
                        colormap=args.colormap, alpha=args.alpha, progress=not args.no_progress, log=log,
                        input_format=input_format, max_frames=args.max_frames, encoding=args.encoding)
    for line in summary.lines():
        print(line)
    if args.profile:
        for line in summary.profile():
            print(line)
    print(f"frames={summary.frames} fps={summary.fps:.1f}", flush=True)
    return EXIT_INTERRUPTED if summary.interrupted else EXIT_OK
