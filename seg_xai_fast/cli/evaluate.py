"""`seg-xai evaluate`: explanation-quality metrics on generated scenes with ground truth."""
from __future__ import annotations

import json
import sys

from ..apps.evaluate import DEFAULT_BATCH, DEFAULT_CLASSES, DEFAULT_N, EVAL_SEED, format_table, run_evaluate, summary_table
from .common import add_method_arguments, add_model_arguments, method_names, model_options, parse_options
from .exits import EXIT_OK


def register(subparsers) -> None:
    p = subparsers.add_parser("evaluate", help="explanation-quality metrics on generated scenes with ground truth")
    add_model_arguments(p)  # the model must predict the scenes' classes (background, disc, square, triangle)
    add_method_arguments(p, methods=True, default="gradcam,gradcam++")
    p.add_argument("--n", type=int, default=DEFAULT_N,
                   help="number of scenes; each costs about 6 CPU-seconds with the default settings, the "
                        "progress bar shows the time left (default: %(default)s)")
    p.add_argument("--size", type=int, default=128, help="scene size in pixels (default: %(default)s)")
    p.add_argument("--seed", type=int, default=EVAL_SEED, help="scene seed, not used in training (default: %(default)s)")
    p.add_argument("--classes", default=None, help=f"comma-separated names or ids (default: {DEFAULT_CLASSES})")
    p.add_argument("--steps", type=int, default=16, help="deletion/insertion steps T (default: %(default)s)")
    p.add_argument("--tolerance", type=float, default=15.0, help="pointing-game tolerance in pixels (default: %(default)s)")
    p.add_argument("--context", action="store_true", help="also the context-only deletion/insertion AUCs")
    p.add_argument("--batch-size", type=int, default=DEFAULT_BATCH,
                   help="scenes per chunk; the run's estimate is printed after the first (default: %(default)s)")
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout instead of the table")
    p.add_argument("--out", default=None, help="folder for metrics.csv, metrics.json and curves.png")
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    p.set_defaults(func=run)


def run(args) -> int:
    names = method_names(args.methods)
    classes = None if args.classes is None else [c.strip() for c in args.classes.split(",") if c.strip()]
    results = run_evaluate(args.model, args.layer, names, **model_options(args), options=parse_options(args.option), n=args.n, size=args.size, seed=args.seed, classes=classes,
                           steps=args.steps, tolerance=args.tolerance, context=args.context,
                           batch_size=args.batch_size, out=args.out, progress=not args.no_progress)
    meta = results["_meta"]
    if args.json:
        print(json.dumps(summary_table(results, args.context)))
    else:
        print(f"model {meta['model']}, layer {meta['layer']}, {meta['n']} scenes {meta['size']}² (seed {meta['seed']}), "
              f"classes {','.join(meta['classes'])}, {meta['steps']} steps, {meta['seconds']:.0f} s "
              f"on {meta['torch_threads']} torch threads")
        print(format_table(results, args.context))
    for f in meta["files"]:
        print(f"wrote {f}", file=sys.stderr)
    return EXIT_OK
