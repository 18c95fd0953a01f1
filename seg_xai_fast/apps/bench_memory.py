"""The peak memory of one sliding-window call (`seg-xai bench --sliding-window`), each in a fresh
process, and what both sides of that benchmark share (its input, MONAI's inference).

Each plain inference and each explanation of the benchmark runs once more in a fresh Python
process that loads the same model, makes the same input and imports what that side uses
(MONAI for its inference), then makes that one call: "peak RSS" is the process's peak resident
set size during the call (Linux: VmHWM, reset to the current RSS just before the call; elsewhere
getrusage's ru_maxrss, which also counts loading), torch, the model and the input included, as a
user's process would hold them; "+MB in the call" is that peak over the RSS just before the call.
The call is not warmed up first, so one-off allocations of a first call count, on both sides
alike. Peak RSS × floor is over the smaller of the two plain inferences' peaks.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from functools import partial
from pathlib import Path
from typing import Optional

import torch

from ..engine.sliding import SlidingWindow
from ..models import load_model
from .scenes import build_explainer


def bench_input(channels: int, size: int, dims: int) -> torch.Tensor:
    """The benchmark's input float [1,channels,size,...] (`dims` spatial axes), the same in every
    process (the memory probes rebuild it)."""
    torch.manual_seed(0)
    return torch.rand(1, channels, *(size,) * dims)


def monai_inference(model: torch.nn.Module, sliding: dict):
    """x → MONAI's sliding_window_inference of `model` with the SlidingWindow arguments `sliding`
    (no grad); None if MONAI is not installed."""
    try:
        from monai.inferers import sliding_window_inference
    except ImportError:
        return None

    def run(x):
        with torch.no_grad():
            return sliding_window_inference(x, tuple(sliding["roi_size"]), sliding.get("sw_batch_size", 1), model,
                                            overlap=sliding.get("overlap", 0.25),
                                            mode=sliding.get("mode", "constant"))
    return run


def peak_memory(source: dict, sliding: dict, side: str, layer: Optional[str] = None, options: Optional[dict] = None,
                classes: Optional[list] = None) -> dict:
    """{"rss_mb", "added_mb"} of one call in a fresh process (module docstring): side "ours" or
    "monai" (the plain inferences) or a method name (its explanation through the SlidingWindow)."""
    cfg = {**source, "sliding": sliding, "side": side, "layer": layer, "options": options or {}, "classes": classes,
           "threads": torch.get_num_threads()}
    root = str(Path(__file__).resolve().parents[2])  # the seg_xai_fast this process runs
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")])))
    # run from `root`: `python -m` puts the working directory first on sys.path, and a source checkout
    # there (without its compiled core) would shadow the package this process runs
    proc = subprocess.run([sys.executable, "-m", "seg_xai_fast.apps.bench_memory", json.dumps(cfg)],
                          capture_output=True, text=True, env=env, cwd=root)
    if proc.returncode:
        raise RuntimeError(f"the memory probe of {side!r} failed: {proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _memory_mb() -> tuple:
    """(resident now, peak resident since the last reset) in MiB: Linux's VmRSS and VmHWM, else
    (getrusage's peak, the same)."""
    try:
        with open("/proc/self/status") as f:
            fields = dict(line.split(":", 1) for line in f if line.startswith(("VmRSS", "VmHWM")))
        return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024
    except (OSError, KeyError, ValueError):
        import resource

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        peak = peak / 2**20 if sys.platform == "darwin" else peak / 1024  # bytes on macOS, KiB on Linux
        return peak, peak


def _reset_peak() -> None:
    """Reset the process's peak RSS to its current RSS (Linux: clear_refs 5); elsewhere the peak
    keeps what loading reached, and the call's own growth reads low."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def _probe(cfg: dict) -> None:
    """The fresh process of peak_memory: load, make the input, one call, print the peaks as JSON."""
    torch.set_num_threads(cfg["threads"])
    model = load_model(cfg["model"], weights=cfg["weights"], num_classes=cfg["num_classes"],
                       model_args=cfg["model_args"]).model
    images = bench_input(cfg["channels"], cfg["size"], cfg["dims"])
    side, sliding = cfg["side"], cfg["sliding"]
    if side == "ours":
        sw = SlidingWindow(model, **sliding)

        def call():
            with torch.no_grad():
                sw(images)
    elif side == "monai":
        call = monai_inference(model, sliding)  # imports MONAI now, before the call
        call = partial(call, images)
    else:
        explainer = build_explainer(model, cfg["layer"], side, cfg["options"], "cpu", sliding)
        call = lambda: explainer(images, classes=cfg["classes"])  # noqa: E731
    _reset_peak()  # loading and importing may have peaked higher than the call will
    before, _ = _memory_mb()
    call()
    _, peak = _memory_mb()
    print(json.dumps({"rss_mb": peak, "added_mb": peak - before}))


if __name__ == "__main__":
    _probe(json.loads(sys.argv[1]))
