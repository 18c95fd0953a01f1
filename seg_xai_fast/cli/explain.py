"""`seg-xai explain`: many images into an output folder (resumable; see apps/batch)."""
from __future__ import annotations

import sys

from ..apps.batch import JobConfig, run_explain
from ..apps.batch.inputs import DEFAULT_MAX_PIXELS
from ..runtimes.choice import RUNTIMES
from .common import add_method_arguments, add_model_arguments, model_options, parse_options
from .exits import EXIT_FAILURES, EXIT_OK


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "explain", help="explain many images into an output folder (resumable)",
        description="Explain image files, folders (recursive), glob patterns or list files (.txt, one path per "
                    "line) into --out. Rerunning the same command skips finished images. Exit status: 0 all "
                    "explained, 3 finished with failures (see DIR/failures.csv), 2 usage error.",
    )
    p.add_argument("inputs", nargs="+", metavar="INPUTS", help="image files, folders, glob patterns or list files")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (created; reruns resume into it)")
    add_model_arguments(p, onnx=True)
    p.add_argument("--runtime", default="auto", choices=RUNTIMES,
                   help="auto: onnxruntime when it is installed, the device is the CPU and it serves the method "
                        "at this layer, else torch (default: %(default)s)")
    add_method_arguments(p)
    p.add_argument("--classes", default=None, help="comma-separated class ids or names (default: all classes)")
    p.add_argument("--batch-size", type=int, default=8, help="images per forward pass (default: %(default)s)")
    p.add_argument("--workers", type=int, default=None,
                   help="decoding processes; 0 decodes in-process (default: min(2, CPU count))")
    p.add_argument("--threads", type=int, default=None,
                   help="torch threads of the explaining process (default: CPU count minus --workers, at least 1)")
    p.add_argument("--save", default="maps", help="maps and optionally overlays: 'maps' or 'maps,overlays' "
                                                  "(default: %(default)s; maps are always saved)")
    p.add_argument("--map-resolution", default="layer", choices=("layer", "full"),
                   help="store maps at the target layer's resolution (compact, exact up to float16) or at "
                        "image size; the methods without a target layer (rise, occlusion, fullgrad, the segment "
                        "methods) store them at image size "
                        "(default: %(default)s)")
    p.add_argument("--colormap", default="jet", help="overlay colormap (default: %(default)s)")
    p.add_argument("--alpha", type=float, default=0.5, help="overlay opacity of the map (default: %(default)s)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (default: %(default)s)")
    p.add_argument("--force", action="store_true",
                   help="delete the previous results in DIR (needed when the settings changed) and start over")
    p.add_argument("--ray", default=None, metavar="ADDRESS",
                   help="run on Ray: 'auto' (the running cluster), 'local' (start one here) or ray://host:port")
    p.add_argument("--max-pixels", type=int, default=DEFAULT_MAX_PIXELS, metavar="N",
                   help="larger images are not decoded but recorded as failures: their memory would be the "
                        "job's (default: %(default)s = 4096×4096)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run, on_interrupt="interrupted; rerun the same command to resume",
                   on_io_error="; rerun the same command to resume")


def run(args) -> int:
    cfg = JobConfig(
        inputs=args.inputs, out=args.out, model=args.model, **model_options(args), layer=args.layer, method=args.method,
        options=parse_options(args.option),
        classes=args.classes, batch_size=args.batch_size, workers=args.workers, threads=args.threads, save=args.save,
        map_resolution=args.map_resolution, colormap=args.colormap, alpha=args.alpha, device=args.device,
        force=args.force, runtime=args.runtime, ray=args.ray, progress=not args.no_progress,
        max_pixels=args.max_pixels,
    )
    summary = run_explain(cfg)
    if summary.failed:
        print(f"seg-xai explain: {summary.failed} inputs failed, see {summary.failures_csv}", file=sys.stderr)
    print(summary.line(), flush=True)
    return EXIT_FAILURES if summary.failed else EXIT_OK
