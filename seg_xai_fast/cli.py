"""The `seg-xai` command line."""
from __future__ import annotations

import argparse
import json
import sys


def _cmd_info(args) -> int:
    from . import build_info

    info = build_info()
    if args.json:
        print(json.dumps(info, indent=2, default=str))
    else:
        width = max(len(k) for k in info)
        for key, value in info.items():
            print(f"{key:<{width}}  {value}")
    return 0


def _cmd_demo(args) -> int:
    from .demo import run_demo

    summary = run_demo(args.out, n=args.n, size=args.size, method=args.method, seed=args.seed,
                       colormap=args.colormap)
    print(f"explained {len(summary['classes'])} classes of {args.n} scenes with {summary['method']} "
          f"in {summary['seconds'] * 1e3:.0f} ms (model pixel accuracy {summary['pixel_accuracy']:.3f})")
    print(f"wrote {len(summary['files'])} overlays and the contact sheet {summary['contact_sheet']}")
    return 0


def _cmd_bench(args) -> int:
    from .bench import run_bench

    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    run_bench(args.model, methods=methods, num_classes=args.classes, size=args.size, layer=args.layer,
              repeats=args.repeats, peer=not args.no_peer, chart=args.chart)
    return 0


def build_parser() -> argparse.ArgumentParser:
    from .colormaps import COLORMAP_NAMES
    from .methods import METHODS

    parser = argparse.ArgumentParser(prog="seg-xai", description="Fast CAM explanations for segmentation models.")
    sub = parser.add_subparsers(dest="command", required=True)

    info = sub.add_parser("info", help="print how the compiled core was built and what it found at run time")
    info.add_argument("--json", action="store_true", help="print JSON")
    info.set_defaults(func=_cmd_info)

    demo = sub.add_parser("demo", help="explain the bundled model on generated scenes and write pictures")
    demo.add_argument("--out", default="seg-xai-demo", help="output folder (default: %(default)s)")
    demo.add_argument("--n", type=int, default=4, help="number of scenes (default: %(default)s)")
    demo.add_argument("--size", type=int, default=160, help="scene size in pixels (default: %(default)s)")
    demo.add_argument("--method", default="gradcam", choices=sorted(METHODS))
    demo.add_argument("--seed", type=int, default=2024)
    demo.add_argument("--colormap", default="jet", choices=COLORMAP_NAMES)
    demo.set_defaults(func=_cmd_demo)

    bench = sub.add_parser("bench", help="time the explainer against its floor, its reference and pytorch-grad-cam")
    bench.add_argument("--model", default="demo", help="demo | torchvision:NAME | model.pt (default: %(default)s)")
    bench.add_argument("--layer", default=None, help="target layer (default: the model's default)")
    bench.add_argument("--methods", default="gradcam,gradcam++", help="comma-separated (default: %(default)s)")
    bench.add_argument("--classes", type=int, default=None, help="explain the first N classes (default: all)")
    bench.add_argument("--size", type=int, default=None, help="image size (default: the model's)")
    bench.add_argument("--repeats", type=int, default=5)
    bench.add_argument("--no-peer", action="store_true", help="skip pytorch-grad-cam")
    bench.add_argument("--chart", default="seg-xai-bench.png", help="PNG bar chart path (default: %(default)s)")
    bench.set_defaults(func=_cmd_bench)

    from .batch import register as register_explain  # issue 6: `seg-xai explain`
    register_explain(sub)

    from .runtimes import register as register_export_onnx  # issue 5: `seg-xai export-onnx`
    from .video import add_demo_video_flag, register as register_video  # issue 5: `seg-xai video`, `demo --video`
    register_export_onnx(sub)
    register_video(sub)
    add_demo_video_flag(demo)

    from .evaluate import register as register_evaluate  # issue 7: `seg-xai evaluate`
    register_evaluate(sub)

    from .apps.report.cli import register as register_report  # issue 18: `seg-xai report`
    register_report(sub)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, TypeError, FileNotFoundError) as err:
        print(f"seg-xai {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
