"""`seg-xai bench --sliding-window ROI`: explanations through `sx.SlidingWindow` against the plain
sliding-window inference of the same input, time and peak memory, measured side by side in one run.

Rows (the same model, input and windows):
- sliding-window forward: our SlidingWindow's plain inference (no grad); its peer/ours is MONAI's
  time over ours;
- sliding-window forward monai: MONAI's `sliding_window_inference` with the same arguments (when
  MONAI is installed);
- floor: the fastest plain sliding-window inference of the two (a lower bound, like the 2-D floor);
- sliding-window <method>: `sx.Explainer(SlidingWindow(model, ...), layer, method)` of the classes
  (all, or the first --classes), each class's target its predicted region on the stitched output;
  × floor is the issue's ratio "explanation over plain inference";
- sliding-window occlusion captum: captum's `Occlusion` on the stitched output (the definition our
  occlusion through a SlidingWindow equals), one call per class, one occluded input per forward.
  No library explains gradient CAMs through sliding-window inference, so those rows have no peer.

Peak memory (`memory=True`): each plain inference and each explanation runs once more in a fresh
Python process that loads the same model, makes the same input and imports what that side uses
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
import statistics
import subprocess
import sys
from functools import partial
from pathlib import Path
from typing import Optional, Sequence

import torch

from ..engine.methods import get_method, options_for
from ..engine.sliding import SlidingWindow
from ..models import load_model
from .bench import bench_input, captum_occlusion_seconds, median_seconds, timed_calls
from .scenes import build_explainer

SLIDING_ARGS = ("roi_size", "overlap", "mode", "sw_batch_size")


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


def sliding_rows(model: torch.nn.Module, layer: Optional[str], methods: Sequence[str], images: torch.Tensor,
                 num_classes: Optional[int], options: dict, sliding: dict, repeats: int, peer: bool,
                 peer_repeats: int, notes: list, source: Optional[dict]) -> tuple:
    """(rows, classes) of the sliding-window benchmark (module docstring). images float [1,C,*S];
    source: how a fresh process rebuilds the model and the input (bench.run_bench), None: no
    memory rows."""
    sliding = {k: sliding[k] for k in SLIDING_ARGS if k in sliding}
    sw = SlidingWindow(model, **sliding)
    with torch.no_grad():
        logits = sw(images)  # [1,L,*S]
    classes = list(range(logits.shape[1] if num_classes is None else min(num_classes, logits.shape[1])))
    predicted = (logits.argmax(1, keepdim=True) == torch.tensor(classes).view(1, -1, *[1] * (images.ndim - 2))).float()

    def plain():
        with torch.no_grad():
            sw(images)

    plain_times = {"ours": timed_calls(plain, repeats)}
    monai = monai_inference(model, sliding)
    if monai is not None:
        plain_times["monai"] = timed_calls(lambda: monai(images), repeats)
    floor_s = min(min(t) for t in plain_times.values())  # fastest calls: a lower bound (see bench.run_bench)
    memory = {}
    if source is not None:
        for side in plain_times:
            memory[side] = peak_memory(source, sliding, side)
        memory["floor"] = {k: min(m[k] for m in memory.values()) for k in ("rss_mb", "added_mb")}
    ours_s = statistics.median(plain_times["ours"])
    rows = [{"row": "sliding-window forward", "ms": ours_s * 1e3, "x_floor": ours_s / floor_s}]
    if monai is not None:
        monai_s = statistics.median(plain_times["monai"])
        rows[0]["peer_over_ours"] = monai_s / ours_s
        rows.append({"row": "sliding-window forward monai", "ms": monai_s * 1e3, "x_floor": monai_s / floor_s})
    else:
        notes.append("MONAI is not installed: the floor is our SlidingWindow's plain inference alone")
    for row, side in zip(rows, plain_times):
        _add_memory(row, memory.get(side), memory)
    rows.append(_add_memory({"row": "floor = fastest plain sliding window", "ms": floor_s * 1e3},
                            memory.get("floor"), {}))
    for method in methods:
        spec = get_method(method)
        method_layer = layer if spec.needs_layer else None
        explainer = build_explainer(model, method_layer, method, options_for(method, options), "cpu", sliding)
        info = explainer(images, classes=classes).info  # also the warm-up
        seconds = median_seconds(lambda: explainer(images, classes=classes), repeats, warmup=0)
        forwards = info.get("window_forwards")
        label = f"sliding-window {method}" + (f" ({forwards} window forwards)" if forwards is not None else "")
        row = {"row": label, "ms": seconds * 1e3, "x_floor": seconds / floor_s}
        if source is not None:
            _add_memory(row, peak_memory(source, sliding, method, layer=method_layer,
                                         options=options_for(method, options), classes=classes), memory)
        rows.append(row)
        if peer and spec.peer == ("captum", "Occlusion"):
            # One occluded scene per forward: captum runs every window of it (a batch of scenes is a
            # batch of whole-scene copies).
            peer_s = captum_occlusion_seconds(sw, images, classes, predicted, "out", peer_repeats,
                                              {**explainer.options, "batch_size": 1})
            if peer_s is not None:
                row["peer_over_ours"] = peer_s / seconds
                rows.append({"row": f"sliding-window {method} captum", "ms": peer_s * 1e3, "x_floor": peer_s / floor_s})
                notes.append(f"sliding-window {method} captum: captum's Occlusion on the stitched output (one "
                             "occluded input per forward, every window run for each), one call per class")
    return rows, classes


def _add_memory(row: dict, measured: Optional[dict], memory: dict) -> dict:
    """row with its peak RSS, the ratio to the plain inference's (memory["floor"]) and the growth."""
    if measured is not None:
        row.update(rss_mb=measured["rss_mb"], added_mb=measured["added_mb"])
        if "floor" in memory:
            row["rss_x_floor"] = measured["rss_mb"] / memory["floor"]["rss_mb"]
    return row


def peak_memory(source: dict, sliding: dict, side: str, layer: Optional[str] = None, options: Optional[dict] = None,
                classes: Optional[list] = None) -> dict:
    """{"rss_mb", "added_mb"} of one call in a fresh process (module docstring): side "ours" or
    "monai" (the plain inferences) or a method name (its explanation through the SlidingWindow)."""
    cfg = {**source, "sliding": sliding, "side": side, "layer": layer, "options": options or {}, "classes": classes,
           "threads": torch.get_num_threads()}
    root = str(Path(__file__).resolve().parents[2])  # the seg_xai_fast this process runs
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")])))
    proc = subprocess.run([sys.executable, "-m", "seg_xai_fast.apps.bench_sliding", json.dumps(cfg)],
                          capture_output=True, text=True, env=env)
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
