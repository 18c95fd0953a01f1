"""`seg-xai bench`: time the explainer against its floor, its reference and pytorch-grad-cam."""
from __future__ import annotations

from ..apps.bench import run_bench
from .common import add_method_arguments, add_model_arguments, method_names, parse_options
from .exits import EXIT_OK


def register(subparsers) -> None:
    p = subparsers.add_parser("bench", help="time the explainer against its floor, its reference and pytorch-grad-cam")
    add_model_arguments(p)
    add_method_arguments(p, methods=True, default="gradcam,gradcam++")
    p.add_argument("--classes", type=int, default=None, help="explain the first N classes (default: all)")
    p.add_argument("--size", type=int, default=None, help="image size (default: the model's)")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--no-peer", action="store_true", help="skip pytorch-grad-cam")
    p.add_argument("--chart", default="seg-xai-bench.png", help="PNG bar chart path (default: %(default)s)")
    p.set_defaults(func=run)


def run(args) -> int:
    run_bench(args.model, weights=args.weights, model_classes=args.num_classes, methods=method_names(args.methods),
              num_classes=args.classes, size=args.size, layer=args.layer, repeats=args.repeats,
              peer=not args.no_peer, chart=args.chart, options=parse_options(args.option))
    return EXIT_OK
