"""The command line's one table from outcomes to exit statuses, and the runner that applies it."""
from __future__ import annotations

import sys

from ..errors import UsageError

EXIT_OK = 0  # done
EXIT_IO = 1  # the outputs could not be written (disk full, permissions): rerun to resume
EXIT_USAGE = 2  # bad arguments or unusable inputs: the message says which
EXIT_FAILURES = 3  # finished, but some inputs failed (explain: DIR/failures.csv)
EXIT_INTERRUPTED = 130  # Ctrl-C

# Exceptions that mean "the user asked for something we cannot do", whatever the command.
USAGE_ERRORS = (UsageError, ValueError, TypeError, FileNotFoundError, ImportError)


def run_command(args) -> int:
    """Run `args.func(args)` and map what it raises to an exit status with a one-line message.

    A command may set in its parser's defaults: `usage_errors` (more exception types that are the
    user's to fix, e.g. RuntimeError from an exporter), `on_interrupt` and `on_io_error` (what to
    tell the user after Ctrl-C or a write error, e.g. how to resume).
    """
    name = f"seg-xai {args.command}"
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print(f"{name}: {getattr(args, 'on_interrupt', 'interrupted')}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except USAGE_ERRORS + tuple(getattr(args, "usage_errors", ())) as err:
        print(f"{name}: error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as err:
        print(f"{name}: error: {err}{getattr(args, 'on_io_error', '')}", file=sys.stderr)
        return EXIT_IO
