"""`seg-xai evaluate`: explanation-quality metrics on image/label pairs (IMAGES --labels LABELS), or on
generated scenes with ground truth when no IMAGES are given."""
from __future__ import annotations

import json
import sys

from ..apps.evaluate_data import DEFAULT_METRICS, METRIC_GROUPS, format_dataset_table, json_summary, run_dataset_evaluate
from ..apps.evaluate import DEFAULT_BATCH, DEFAULT_CLASSES, DEFAULT_N, EVAL_SEED, format_table, run_evaluate, summary_table
from .common import (add_method_arguments, add_model_arguments, add_sliding_arguments, method_names, model_options,
                     parse_options, volume_options)
from ..errors import UsageError
from .exits import EXIT_OK


def register(subparsers) -> None:
    p = subparsers.add_parser("evaluate", help="explanation-quality metrics on your image/label pairs, or on generated scenes")
    p.add_argument("images", nargs="*", metavar="IMAGES",
                   help="image files, folders, globs or list files, each paired with its label map under --labels "
                        "(none: generated scenes)")
    p.add_argument("--labels", default=None, metavar="DIR",
                   help="folder of label maps (index or palette PNGs; NIfTI label volumes for NIfTI volumes) at the "
                        "images' relative paths or with their stems")
    p.add_argument("--targets", choices=("truth", "predicted"), default="truth",
                   help="explain each class's ground-truth region or its predicted one (default: %(default)s)")
    p.add_argument("--ignore-index", type=int, default=255, help="label value that is not scored (default: %(default)s)")
    p.add_argument("--metrics", default="default",
                   help=f"with IMAGES: comma-separated of {', '.join(METRIC_GROUPS)}; 'default' "
                        f"({len(DEFAULT_METRICS)}: the localisation, complexity, deletion and insertion ones) or 'all'")
    p.add_argument("--samples", type=int, default=16,
                   help="with IMAGES: random samples of faithfulness correlation, infidelity and sensitivity (default: %(default)s)")
    p.add_argument("--force", action="store_true", help="with IMAGES and --out: start over instead of resuming")
    p.add_argument("--ray", default=None, metavar="ADDRESS",
                   help="with IMAGES: score the pairs on Ray: 'auto' (the running cluster), 'local' (start one here) "
                        "or ray://host:port; the files must be at the same paths on every node")
    add_model_arguments(p)  # the model must predict the scenes' classes (background, disc, square, triangle)
    add_method_arguments(p, methods=True, default="gradcam,gradcam++")
    p.add_argument("--n", type=int, default=DEFAULT_N,
                   help="number of scenes; each costs about 6 CPU-seconds with the default settings, the "
                        "progress bar shows the time left (default: %(default)s)")
    p.add_argument("--size", type=int, default=128, help="scene size in pixels (default: %(default)s)")
    p.add_argument("--seed", type=int, default=EVAL_SEED, help="scene seed, not used in training (default: %(default)s)")
    p.add_argument("--classes", default=None,
                   help=f"comma-separated names or ids (scenes default: {DEFAULT_CLASSES}; with IMAGES: every class "
                        f"a label map holds but 0, the background)")
    p.add_argument("--steps", type=int, default=16, help="deletion/insertion steps T (default: %(default)s)")
    p.add_argument("--tolerance", type=float, default=15.0, help="pointing-game tolerance in pixels (default: %(default)s)")
    p.add_argument("--context", action="store_true", help="also the context-only deletion/insertion AUCs")
    p.add_argument("--batch-size", type=int, default=DEFAULT_BATCH,
                   help="scenes per chunk; the run's estimate is printed after the first (default: %(default)s)")
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout instead of the table")
    p.add_argument("--out", default=None, help="folder for metrics.csv, metrics.json and curves.png")
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    v = p.add_argument_group("volumes and whole scenes", "with IMAGES: NIfTI volumes (.nii, .nii.gz; extra [medical]) "
                             "pair with NIfTI label volumes; the model may be monai:NAME with --model-args, and run "
                             "through a sliding window (docs/metrics.md)")
    add_sliding_arguments(v, "run the model, and every forward of the metrics, through sliding-window inference with "
                             "windows of this size, e.g. 96,96,96 or 512,512")
    p.set_defaults(func=run)


def run(args) -> int:
    names = method_names(args.methods)
    if args.images or args.labels is not None:
        return run_dataset(args, names)
    if args.ray is not None:
        raise UsageError("--ray scores image/label pairs: give IMAGES and --labels (generated scenes run here)")
    if args.model_args is not None or args.sliding_window is not None:
        raise UsageError("--model-args and --sliding-window apply with IMAGES and --labels (the generated scenes "
                         "are for the bundled model's kind)")
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


def run_dataset(args, names) -> int:
    if args.labels is None or not args.images:
        raise UsageError("IMAGES and --labels go together: name the images and the folder of their label maps")
    metrics = {"default": list(DEFAULT_METRICS), "all": list(METRIC_GROUPS)}.get(
        args.metrics, [m.strip() for m in args.metrics.split(",") if m.strip()])
    classes = None if args.classes is None else [c.strip() for c in args.classes.split(",") if c.strip()]
    model_args, sliding = volume_options(args)
    result = run_dataset_evaluate(
        args.images, args.labels, model=args.model, layer=args.layer, methods=names, metrics=metrics,
        targets=args.targets, ignore_index=args.ignore_index, classes=classes, out=args.out, force=args.force,
        progress=not args.no_progress, options=parse_options(args.option), ray=args.ray, **model_options(args),
        model_args=model_args, sliding_window=sliding,
        steps=args.steps, tolerance=args.tolerance, samples=args.samples)
    if args.json:
        print(json.dumps(json_summary(result)))
    else:
        print(format_dataset_table(result, metrics))
    for f in result["meta"]["files"]:
        print(f"wrote {f}", file=sys.stderr)
    return EXIT_OK
