"""run_explain: the whole `seg-xai explain` job, here or on Ray."""
from __future__ import annotations

import contextlib
import signal
import sys
import threading
from pathlib import Path

from .job import JobConfig, Summary, prepare, run_local
from .ray import run_on_ray
from .store import FAILURES


def run_explain(cfg: JobConfig) -> Summary:
    """Run the job described by `cfg` (see job.py); raises UsageError on bad settings."""
    with _sigterm_as_interrupt():
        return _run(cfg)


def _run(cfg: JobConfig) -> Summary:
    prep = prepare(cfg)
    store = prep.store
    try:
        redo = f" (redoing {store.redo} damaged or stale)" if store.redo else ""
        print(f"seg-xai explain: {len(prep.todo) + prep.skipped} inputs, {prep.skipped} already explained, "
              f"{len(prep.todo)} to do{redo} → {cfg.out}", file=sys.stderr)
        summary = run_on_ray(cfg, prep) if cfg.ray is not None else run_local(cfg, prep)
    except BaseException:
        store.close()  # the manifest keeps what was completed; failures.csv keeps the last full run's
        raise
    summary.skipped = prep.skipped
    summary.failed = store.failed
    store.finish()
    summary.failures_csv = str(Path(cfg.out) / FAILURES)
    return summary


@contextlib.contextmanager
def _sigterm_as_interrupt():
    """SIGTERM stops the run as Ctrl-C does (the files in flight are written, the workers
    stopped, exit status 130), instead of killing it mid-way with worker tracebacks."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
