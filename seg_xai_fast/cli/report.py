"""`seg-xai report`: a static HTML report of an explain, evaluate or bench output folder (see apps/report)."""
from __future__ import annotations

import sys
import time

from ..apps.report.build import PAGE_SIZE, build_report
from .exits import EXIT_IO, EXIT_OK


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "report", help="write a static HTML report of an explain, evaluate or bench output folder",
        description="Write OUT_DIR/report/index.html: for `seg-xai explain` output a paginated thumbnail grid, an "
                    "image page (class, opacity, overlay, value under the cursor) and the failures; for "
                    "`seg-xai evaluate --out` the metric tables and curves; for bench.txt / bench.json the "
                    "benchmark table. The pages open from disk: no server, no network.",
    )
    p.add_argument("out_dir", metavar="OUT_DIR", help="the output folder of seg-xai explain / evaluate --out / bench")
    p.add_argument("--dest", default=None, metavar="DIR", help="report folder (default: OUT_DIR/report)")
    p.add_argument("--page-size", type=int, default=PAGE_SIZE, help="thumbnails per grid page (default: %(default)s)")
    p.add_argument("--workers", type=int, default=None,
                   help="processes making thumbnails and data files (default: the CPUs, at most 8; 0 or 1: none)")
    p.add_argument("--open", action="store_true", help="open the report in the default web browser")
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    p.set_defaults(func=run)


def run(args) -> int:
    """Build the report; print its index.html path (last line of stdout). Exit status 0, 1 when
    the report could not be written; usage errors raise (the CLI's main makes them status 2)."""
    start = time.perf_counter()
    try:
        index = build_report(args.out_dir, dest=args.dest, page_size=args.page_size, workers=args.workers,
                             progress=not args.no_progress)
    except FileNotFoundError:
        raise  # a usage error (exit status 2), as the other commands
    except OSError as err:  # the report could not be written (permissions, disk full)
        print(f"seg-xai report: error: {err}", file=sys.stderr)
        return EXIT_IO
    print(f"seg-xai report: wrote {index.parent} in {time.perf_counter() - start:.1f} s", file=sys.stderr)
    print(index)
    if args.open:
        import webbrowser

        webbrowser.open(index.resolve().as_uri())
    return EXIT_OK
