"""`seg-xai bench`: time the explainer against its floor, its reference and its peers; volumes
(--volume) and explanations through sliding-window inference (--sliding-window ROI)."""
from __future__ import annotations

from ..apps.bench import VOLUME_MODEL, VOLUME_SIZE, run_bench
from .common import (add_method_arguments, add_model_arguments, add_sliding_arguments, method_names, parse_options,
                     volume_options)
from .exits import EXIT_OK

DEFAULT_METHODS = {"image": "gradcam,gradcam++", "volume": "gradcam,hirescam,occlusion",
                   "sliding": "gradcam,occlusion"}


def register(subparsers) -> None:
    p = subparsers.add_parser("bench", help="time the explainer against its floor, its reference and its peers "
                                            "(pytorch-grad-cam, captum, MONAI)")
    add_model_arguments(p)
    add_method_arguments(p, methods=True, default=None,
                         default_help=f"{DEFAULT_METHODS['image']}; with --volume {DEFAULT_METHODS['volume']}; "
                                      f"with --sliding-window {DEFAULT_METHODS['sliding']}")
    p.add_argument("--classes", type=int, default=None, help="explain the first N classes (default: all)")
    p.add_argument("--size", type=int, default=None,
                   help=f"image size, or the volume's edge with --volume (default: the model's; {VOLUME_SIZE} for "
                        "volumes)")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--no-peer", action="store_true", help="skip the peers (pytorch-grad-cam, captum, MONAI)")
    p.add_argument("--chart", default="seg-xai-bench.png", help="PNG bar chart path (default: %(default)s)")
    p.add_argument("--json", action="store_true",
                   help="print one JSON object {meta, rows, notes, chart} instead of the table (`seg-xai report` "
                        "reads it as bench.json)")
    v = p.add_argument_group("volumes and sliding windows", "3-D rows and explanations through sliding-window "
                                                            "inference (docs/volumes.md)")
    v.add_argument("--volume", action="store_true",
                   help=f"a 1×C×S×S×S volume (S: --size) through a 3-D model: --model monai:NAME with --model-args, "
                        f"a .pt file, or by default a small random {VOLUME_MODEL} (1 channel, 3 classes)")
    add_sliding_arguments(v, "explain through sliding-window inference with windows of this size (e.g. 64,64,64 "
                             "with --volume, or 512,512) and compare with the plain sliding-window inference: time "
                             "and peak RSS")
    v.add_argument("--no-memory", action="store_true",
                   help="skip the peak-RSS probes of the sliding-window rows (each a fresh process)")
    p.set_defaults(func=run)


def run(args) -> int:
    if args.repeats < 1:
        raise ValueError(f"--repeats must be a positive int, got {args.repeats}")
    if args.size is not None and args.size < 1:
        raise ValueError(f"--size must be a positive int, got {args.size}")
    model_args, sliding = volume_options(args)
    mode = "sliding" if sliding is not None else "volume" if args.volume else "image"
    run_bench(args.model, weights=args.weights, model_classes=args.num_classes,
              methods=method_names(args.methods or DEFAULT_METHODS[mode]), num_classes=args.classes, size=args.size,
              layer=args.layer, repeats=args.repeats, peer=not args.no_peer, chart=args.chart,
              options=parse_options(args.option), volume=args.volume, model_args=model_args, sliding=sliding,
              memory=not args.no_memory, as_json=args.json)
    return EXIT_OK
