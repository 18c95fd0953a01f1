"""`seg-xai demo`: explain the bundled model on generated scenes (pictures, or --video a clip)."""
from __future__ import annotations

from ..apps.video.clip import write_demo_video
from ..demo.run import run_demo
from ..kernels.colormaps import COLORMAP_NAMES
from .common import add_method_arguments, parse_options
from .exits import EXIT_OK


def register(subparsers) -> None:
    p = subparsers.add_parser("demo", help="explain the bundled model on generated scenes and write pictures")
    p.add_argument("--out", default="seg-xai-demo", help="output folder (default: %(default)s)")
    p.add_argument("--n", type=int, default=4, help="number of scenes (default: %(default)s)")
    p.add_argument("--size", type=int, default=160, help="scene size in pixels (default: %(default)s)")
    add_method_arguments(p)
    p.add_argument("--seed", type=int, default=2024)
    p.add_argument("--colormap", default="jet", choices=COLORMAP_NAMES)
    p.add_argument("--video", action="store_true",
                   help="write a generated clip and its explained overlay (scenes*.mp4) instead of pictures")
    p.set_defaults(func=run)


def run(args) -> int:
    if args.video:
        result = write_demo_video(args.out, method=args.method, seed=args.seed, colormap=args.colormap, progress=True,
                                  options=parse_options(args.option))
        summary = result["summary"]
        print(f"wrote the clip {result['clip']} and its {args.method} overlay {result['overlay']} "
              f"(model {result['model']}, encoder {summary.encoder})")
        print(f"frames={summary.frames} fps={summary.fps:.1f}")
        return EXIT_OK
    summary = run_demo(args.out, n=args.n, size=args.size, method=args.method, seed=args.seed,
                       colormap=args.colormap, options=parse_options(args.option))
    print(f"explained {len(summary['classes'])} classes of {args.n} scenes with {summary['method']} "
          f"in {summary['seconds'] * 1e3:.0f} ms (model pixel accuracy {summary['pixel_accuracy']:.3f})")
    print(f"wrote {len(summary['files'])} overlays, the contact sheet {summary['contact_sheet']} and the context "
          f"table {summary['context_table']} (what removing each predicted segment does to every class)")
    return EXIT_OK
