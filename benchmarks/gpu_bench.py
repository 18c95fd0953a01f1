"""GPU benchmarks against the engine's speed goals, for benchmarks/gpu_check.sh.

    python benchmarks/gpu_bench.py --out DIR                # on a CUDA GPU
    python benchmarks/gpu_bench.py --out DIR --dry-run      # tiny sizes on the CPU: tests the logic only

Sections (each guarded: a failure is recorded and the next section runs):
  kernels  each CAM-stage kernel's achieved memory bandwidth (bytes it must read and write once /
           median time, CUDA events after warm-up) as a share of the card's peak; goal >= 70 %.
           Each kernel is first checked against its torch twin (backend="torch") at the same size.
  deeplab  DeepLabV3-ResNet50 (torchvision, random init) at 520x520, all 21 classes per image,
           Grad-CAM at "classifier.3" (closed form) and at "backbone.layer4" (autograd); images/s,
           goal >= 30. Each path is first checked against the torch backend on one image.
  video    LRASPP-MobileNetV3-large at 1280x720, frames generated in memory: the frame pipeline
           sx.overlay_stream (explain the class each frame shows + overlay, frames in and out of
           host memory), the same with frames resident on the GPU, and, when PyAV is installed,
           `seg-xai video` end to end (decode + explain + overlay + encode) on a generated clip;
           frames/s, goal >= 60.
Only the public API is used: seg_xai_fast (sx.Explainer, sx.overlay_stream) and its kernels module.
Writes DIR/bench.json after every row (atomically, so a killed run keeps what it measured) and
DIR/bench.md at the end; prints the table. --budget-s: sections that would start after the budget
is spent are skipped (and say so).
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Callable, Optional

import torch

ROOT = Path(__file__).resolve().parents[1]
GOAL_BANDWIDTH_PCT = 70.0
GOAL_IMAGES_PER_S = 30.0
GOAL_VIDEO_FPS = 60.0


class Report:
    """Rows and notes of one run, rewritten to DIR/bench.json after every change."""

    def __init__(self, out: Path, meta: dict) -> None:
        self.out = out
        self.data = {"meta": meta, "rows": [], "errors": [], "notes": []}
        self.save()

    def row(self, section: str, name: str, *, unit: str, measured: Optional[float], goal: Optional[float] = None,
            shape: str = "", note: str = "", **details) -> dict:
        met = None if goal is None or measured is None else bool(measured >= goal)
        if details.get("check", "ok") != "ok":  # a wrong result makes its speed meaningless
            met = False if goal is not None else None
        row = {"section": section, "name": name, "shape": shape, "unit": unit, "goal": goal,
               "measured": measured, "met": met, "note": note, **details}
        self.data["rows"].append(row)
        print(f"  {name:<44} {_fmt(measured):>9} {unit:<9} goal {_fmt(goal):>5}  met={met}  {note}", flush=True)
        self.save()
        return row

    def error(self, section: str, what: str, err: BaseException) -> None:
        text = "".join(traceback.format_exception_only(type(err), err)).strip()
        self.data["errors"].append({"section": section, "what": what, "error": text,
                                    "traceback": traceback.format_exc()})
        print(f"  ERROR in {section} ({what}): {text}", flush=True)
        self.save()

    def note(self, text: str) -> None:
        self.data["notes"].append(text)
        print(f"  note: {text}", flush=True)
        self.save()

    def save(self) -> None:
        _write_atomic(self.out / "bench.json", json.dumps(self.data, indent=2, default=str) + "\n")

    def markdown(self) -> str:
        meta = self.data["meta"]
        lines = [f"# GPU benchmarks ({'DRY RUN: tiny sizes on the CPU, numbers meaningless' if meta['dry_run'] else meta['device_name']})",
                 "", f"- device: {meta['device_name']}; torch {meta['torch']}; core {meta.get('core', {})}"]
        peak = meta.get("peak_bandwidth")
        if peak:
            lines.append(f"- peak bandwidth used for shares: {peak['used_GBps']:.0f} GB/s ({peak['used']}); "
                         f"spec {_fmt(peak.get('spec_GBps'))} GB/s, measured device copy {_fmt(peak.get('copy_GBps'))} GB/s")
        lines += ["", "| section | benchmark | shape | goal | measured | met | notes |", "|---|---|---|---|---|---|---|"]
        for r in self.data["rows"]:
            met = {True: "yes", False: "**NO**", None: "-"}[r["met"]]
            goal = "-" if r["goal"] is None else f"≥ {_fmt(r['goal'])} {r['unit']}"
            note = "; ".join(x for x in (r["note"], "" if r.get("check", "ok") == "ok" else f"CHECK: {r['check']}") if x)
            lines.append(f"| {r['section']} | {r['name']} | {r['shape']} | {goal} | {_fmt(r['measured'])} {r['unit']} | "
                         f"{met} | {note} |")
        for n in self.data["notes"]:
            lines.append(f"\n- {n}")
        for e in self.data["errors"]:
            lines.append(f"\n- ERROR in {e['section']} ({e['what']}): `{e['error']}`")
        return "\n".join(lines) + "\n"


def _fmt(x) -> str:
    if x is None:
        return "-"
    return f"{x:.3g}" if abs(x) < 100 else f"{x:.0f}"


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


# --------------------------------------------------------------------------- timing


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def kernel_times_ms(fn: Callable[[], object], device: torch.device, reps: int, warmup: int = 3) -> list[float]:
    """Device time of each of `reps` calls of fn, in ms.

    CUDA: events around each call, with the GPU kept busy (torch.cuda._sleep) while the host
    queues start event, call and end event, so that Python's per-call overhead falls outside the
    interval and only the kernels' own time is measured. CPU: wall time per call.
    """
    for _ in range(warmup):
        fn()
    _sync(device)
    if device.type != "cuda":
        times = []
        for _ in range(reps):
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1e3)
        return times
    t0 = time.perf_counter()
    fn()
    host_s = time.perf_counter() - t0  # host time to queue one call (upper bound: includes any sync)
    _sync(device)
    clock_khz = getattr(torch.cuda.get_device_properties(device), "clock_rate", 0) or 2_000_000
    cycles = int(max(1e-3, 3 * host_s) * clock_khz * 1e3)
    sleep = getattr(torch.cuda, "_sleep", None)  # without it, host overhead may add to small kernels' times
    pairs = []
    for _ in range(reps):
        if sleep is not None:
            sleep(cycles)
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        pairs.append((start, end))
    _sync(device)
    return [s.elapsed_time(e) for s, e in pairs]


def wall_times_s(fn: Callable[[], object], device: torch.device, reps: int, warmup: int = 2) -> list[float]:
    """Wall time of each of `reps` synchronised calls (end-to-end throughput, host work included)."""
    for _ in range(warmup):
        fn()
    _sync(device)
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return times


# --------------------------------------------------------------------------- a. kernels


def peak_bandwidth(device: torch.device, dry: bool) -> dict:
    """Spec peak from the device properties (DDR: 2 transfers per memory clock) when available,
    and the measured device-to-device copy (read + write) as the practical peak."""
    out: dict = {"spec_GBps": None, "copy_GBps": None}
    if device.type == "cuda":
        p = torch.cuda.get_device_properties(device)
        clock_khz, bus_bits = getattr(p, "memory_clock_rate", 0), getattr(p, "memory_bus_width", 0)
        if clock_khz and bus_bits:
            out["spec_GBps"] = 2 * clock_khz * 1e3 * bus_bits / 8 / 1e9
            out["spec_from"] = f"memory_clock_rate {clock_khz} kHz x bus {bus_bits} bit x 2"
    n = (1 << 20) if dry else (1 << 29)  # float32 elements: 4 MiB / 2 GiB
    src = torch.empty(n, device=device).uniform_()
    dst = torch.empty_like(src)
    ms = statistics.median(kernel_times_ms(lambda: dst.copy_(src), device, reps=5 if dry else 20))
    out["copy_GBps"] = 2 * src.nbytes / (ms * 1e-3) / 1e9
    out["used"], out["used_GBps"] = (("spec", out["spec_GBps"]) if out["spec_GBps"]
                                     else ("measured device copy", out["copy_GBps"]))
    return out


def kernel_cases(device: torch.device, dry: bool) -> dict:
    """{name: make()} per CAM-stage kernel; make() creates the case's inputs on the device and returns
    (shape label, fused fn, torch fn, the tensors the kernel must read, check kind, note). The
    inputs live until the case's row is done, so at most one case's tensors (~20 GB) exist at once.

    Sizes: DeepLabV3-ResNet50 at 520x520 (layer4: C=2048 at 65x65, K=21 classes), batches large
    enough that every call moves hundreds of MB (an H200's L2 holds 50 MB; launch latency is noise).
    """
    from seg_xai_fast import kernels

    g = torch.Generator(device=device).manual_seed(0)  # generated on the device: GBs in milliseconds

    def rand(*shape, kind="rand"):
        return (torch.rand if kind == "rand" else torch.randn)(*shape, generator=g, device=device)

    if dry:
        B, K, C, h, w, H, W, Bbig, Bframes, FH, FW, Blab = 1, 3, 8, 5, 6, 20, 24, 2, 2, 18, 32, 2
    else:
        B, K, C, h, w, H, W, Bbig, Bframes, FH, FW, Blab = 4, 21, 2048, 65, 65, 520, 520, 32, 64, 720, 1280, 256

    def cam(op: str, method: str, reads_activations: bool = True):  # on A [B,C,h,w], G [B,K,C,h,w]
        def make():
            A, G = rand(B, C, h, w), rand(B, K, C, h, w, kind="randn")
            fn = getattr(kernels, op)
            read = [A, G] if reads_activations else [G]
            return (f"A [{B},{C},{h},{w}], G [{B},{K},{C},{h},{w}]",
                    lambda: fn(A, G, method, backend="fused"), lambda: fn(A, G, method, backend="torch"),
                    read, "close", "")
        return make

    def analytic():
        S, Wh, R = rand(B, C).mul_(h * w), rand(K, C, kind="randn"), rand(B, K, h, w, kind="randn")
        return (f"S [{B},{C}], W [{K},{C}], R [{B},{K},{h},{w}]",
                lambda: kernels.analytic_gradcampp_weights(S, Wh, R, backend="fused"),
                lambda: kernels.analytic_gradcampp_weights(S, Wh, R, backend="torch"), [S, Wh, R], "close",
                "compute-bound by design: each seed value enters C terms")

    def weighted():
        A, Wt = rand(Bbig, C, h, w), rand(Bbig, K, C).div_(C)
        return (f"A [{Bbig},{C},{h},{w}], w [{Bbig},{K},{C}]",
                lambda: kernels.weighted_cam(A, Wt, backend="fused"),
                lambda: kernels.weighted_cam(A, Wt, backend="torch"), [A, Wt], "close",
                f"{2 * K} flops per activation value read")

    def resize():
        maps = rand(Bbig, K, h, w, kind="randn")
        return (f"[{Bbig},{K},{h},{w}] -> {H}x{W}",
                lambda: kernels.resize_normalize(maps, (H, W), backend="fused"),
                lambda: kernels.resize_normalize(maps, (H, W), backend="torch"), [maps], "close", "")

    def normalize():
        maps = rand(Bbig * K, H, W, kind="randn")
        return (f"[{Bbig * K},{H},{W}]", lambda: kernels.normalize_maps(maps, backend="fused"),
                lambda: kernels.normalize_maps(maps, backend="torch"), [maps], "close", "")

    def overlay():
        frames = torch.randint(0, 256, (Bframes, FH, FW, 3), dtype=torch.uint8, generator=g, device=device)
        maps = rand(Bframes, FH, FW)
        return (f"{Bframes} frames {FW}x{FH}, full-size maps",
                lambda: kernels.overlay(frames, maps, backend="fused"),
                lambda: kernels.overlay(frames, maps, backend="torch"), [frames, maps], "overlay", "")

    def argmax():
        logits = rand(Bbig // 2, K, H, W, kind="randn")
        return (f"logits [{Bbig // 2},{K},{H},{W}]", lambda: kernels.class_argmax(logits, backend="fused"),
                lambda: kernels.class_argmax(logits, backend="torch"), [logits], "equal", "")

    def label_seeds():
        labels, classes = torch.randint(0, K, (Blab, H, W), generator=g, device=device), list(range(K))
        return (f"labels [{Blab},{H},{W}], {K} classes -> {h}x{w}",
                lambda: kernels.label_seeds(labels, classes, (h, w), backend="fused"),
                lambda: kernels.label_seeds(labels, classes, (h, w), backend="torch"), [labels], "close", "")

    def mask_seeds():
        masks = (rand(Bbig, K, H, W) > 0.5).float()
        return (f"masks [{Bbig},{K},{H},{W}] -> {h}x{w}",
                lambda: kernels.mask_seeds(masks, (h, w), backend="fused"),
                lambda: kernels.mask_seeds(masks, (h, w), backend="torch"), [masks], "close", "")

    # Grad-CAM's weights are means of G alone: its kernel does not read A.
    cases = {f"channel_weights {m}": cam("channel_weights", m, reads) for m, reads in
             (("gradcam", False), ("gradcam++", True), ("xgradcam", True))}
    cases.update({f"elementwise_cam {m}": cam("elementwise_cam", m) for m in ("hirescam", "layercam")})
    if hasattr(kernels, "analytic_gradcampp_weights"):
        cases["analytic_gradcampp_weights"] = analytic
    cases.update({"weighted_cam": weighted, "resize_normalize": resize, "normalize_maps": normalize,
                  "overlay": overlay, "class_argmax": argmax, "label_seeds": label_seeds, "mask_seeds": mask_seeds})
    return cases


def _check(kind: str, got, want) -> str:
    """'ok' or what differs, for a fused result against its torch twin."""
    got, want = (got.float(), want.float()) if kind != "equal" else (got, want)
    if kind == "equal":
        return "ok" if torch.equal(got, want) else f"{int((got != want).sum())} elements differ"
    atol = 3.0 if kind == "overlay" else 1e-4 * max(1.0, float(want.abs().max()))
    err = float((got - want).abs().max())
    if not (err <= atol):  # also catches NaN
        return f"max |fused - torch| = {err:.3g} > {atol:.3g}"
    return "ok"


def section_kernels(rep: Report, device: torch.device, dry: bool, deadline: float) -> None:
    peak = peak_bandwidth(device, dry)
    rep.data["meta"]["peak_bandwidth"] = peak
    rep.save()
    print(f"  peak bandwidth: spec {_fmt(peak['spec_GBps'])} GB/s, measured device copy "
          f"{_fmt(peak['copy_GBps'])} GB/s; shares are of the {peak['used']} ({peak['used_GBps']:.0f} GB/s)", flush=True)
    for name, make in kernel_cases(device, dry).items():
        if time.monotonic() > deadline:
            rep.note(f"kernels: budget spent, skipped {name} and later kernels")
            break
        try:
            shape, fused, ref, inputs, kind, note = make()
            out = fused()
            check = _check(kind, out, ref())
            nbytes = sum(t.nbytes for t in inputs) + out.nbytes  # each input read once, the output written once
            del out
            ms = statistics.median(kernel_times_ms(fused, device, reps=5 if dry else 20))
            gbps = nbytes / (ms * 1e-3) / 1e9
            share = 100 * gbps / peak["used_GBps"]
            share_copy = 100 * gbps / peak["copy_GBps"]
            rep.row("kernels", name, unit="%", measured=share, goal=GOAL_BANDWIDTH_PCT, shape=shape,
                    note=f"{ms:.3f} ms, {gbps:.0f} GB/s, {share_copy:.0f} % of copy" + (f"; {note}" if note else ""),
                    check=check, ms=ms, bytes=nbytes, GBps=gbps, share_of_copy_pct=share_copy)
        except Exception as err:  # noqa: BLE001  (record and go on)
            rep.error("kernels", name, err)
        finally:
            fused = ref = inputs = None  # this case's tensors go before the next case's come
            if device.type == "cuda":
                torch.cuda.empty_cache()


# --------------------------------------------------------------------------- b. DeepLabV3-ResNet50


def _torchvision_model(name: str, device: torch.device):
    import torchvision.models.segmentation as tvseg

    torch.manual_seed(0)
    model = getattr(tvseg, name)(weights=None, weights_backbone=None, num_classes=21, aux_loss=False)
    return model.eval().to(device)


def _maps_diff(sx, model, layer: str, image: torch.Tensor) -> tuple[str, float]:
    """The fused engine against the torch backend on one image: ('ok' or what differs, max diff)."""
    fused = sx.Explainer(model, layer, "gradcam")(image).maps
    ref = sx.Explainer(model, layer, "gradcam", backend="torch")(image).maps
    err = float((fused - ref).abs().max())
    return ("ok" if err <= 1e-3 else f"max |fused - torch| = {err:.3g} > 1e-3"), err


def section_deeplab(rep: Report, device: torch.device, dry: bool, deadline: float) -> None:
    import seg_xai_fast as sx

    size, batch, reps = (64, 1, 2) if dry else (520, 8, 5)
    model = _torchvision_model("deeplabv3_resnet50", device)
    images = torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(1)).to(device)
    for layer, expect in (("classifier.3", "analytic"), ("backbone.layer4", "autograd")):
        if time.monotonic() > deadline:
            rep.note(f"deeplab: budget spent, skipped layer {layer}")
            continue
        try:
            check, err = _maps_diff(sx, model, layer, images[:1])
            explainer = sx.Explainer(model, layer, "gradcam")
            res = explainer(images)  # the first call also finds and verifies a linear head
            path = explainer.gradient_path
            if path != expect:
                check = f"gradient path {path}, expected {expect}" if check == "ok" else check
            if len(res.classes) != 21:
                check = f"{len(res.classes)} classes explained, expected 21"
            med = statistics.median(wall_times_s(lambda: explainer(images), device, reps, warmup=1))
            rep.row("deeplab", f"DeepLabV3-R50 gradcam @ {layer} ({path})", unit="images/s",
                    measured=batch / med, goal=GOAL_IMAGES_PER_S, shape=f"{batch}x3x{size}x{size}, 21 classes",
                    note=f"{1e3 * med / batch:.1f} ms/image in batches of {batch}", check=check,
                    max_abs_diff_vs_torch=err, gradient_path=path, seconds_per_batch=med)
        except Exception as err:  # noqa: BLE001
            rep.error("deeplab", layer, err)


# --------------------------------------------------------------------------- c. video


LRASPP_LAYER = "classifier.high_classifier:input"


def panning_frames(n: int, height: int, width: int, step: int = 4) -> list[torch.Tensor]:
    """n uint8 [H,W,3] CPU frames of a camera panning `step` px per frame over one generated scene."""
    import seg_xai_fast as sx

    scene, _ = sx.synthetic_scenes(1, seed=7, size=(height, width + step * (n - 1)))
    picture = (scene[0].permute(1, 2, 0) * 255 + 0.5).to(torch.uint8)  # [H,W',3]
    return [picture[:, i * step:i * step + width].contiguous() for i in range(n)]


def section_video(rep: Report, device: torch.device, dry: bool, deadline: float, out: Path, runtime: str) -> None:
    (H, W), n, batch, rounds = ((72, 128), 8, 4, 2) if dry else ((720, 1280), 96, 8, 3)
    frames = panning_frames(n, H, W)
    _video_pipelines(rep, device, frames, batch, rounds, deadline)
    if device.type == "cuda":
        torch.cuda.empty_cache()  # the model is gone; `seg-xai video` runs in its own process
    if time.monotonic() > deadline:
        rep.note("video: budget spent, `seg-xai video` not run")
    elif importlib.util.find_spec("av") is None:
        rep.note("video: PyAV is not installed; `seg-xai video` end to end not measured")
    else:
        try:
            cli_video(rep, device, [f.numpy() for f in frames], deadline, out, runtime)
        except Exception as err:  # noqa: BLE001
            rep.error("video", "seg-xai video", err)


def _video_pipelines(rep: Report, device: torch.device, frames: list, batch: int, rounds: int,
                     deadline: float) -> None:
    """The in-process frame pipelines: sx.overlay_stream, and explain + overlay on device frames."""
    import seg_xai_fast as sx
    from seg_xai_fast import kernels

    n, (H, W) = len(frames), frames[0].shape[:2]
    shape = f"{n} frames {W}x{H}, batches of {batch}"
    model = _torchvision_model("lraspp_mobilenet_v3_large", device)
    explainer = sx.Explainer(model, LRASPP_LAYER, "gradcam")
    if not hasattr(sx, "overlay_stream"):
        rep.note("video: sx.overlay_stream is not in the public API any more; host-memory pipeline not measured")
    elif time.monotonic() < deadline:
        try:
            def stream():
                return sum(1 for _ in sx.overlay_stream(frames, explainer, batch_size=batch))

            got = stream()  # warm-up: the linear head is found on the first batch of each size
            med = statistics.median(wall_times_s(stream, device, rounds, warmup=0))
            rep.row("video", "sx.overlay_stream (host frames in/out)", unit="fps", measured=n / med,
                    goal=GOAL_VIDEO_FPS, shape=shape, note=f"gradient path {explainer.gradient_path}",
                    check="ok" if got == n else f"{got} frames out of {n}", seconds=med)
        except Exception as err:  # noqa: BLE001
            rep.error("video", "overlay_stream", err)
    if time.monotonic() > deadline:
        rep.note("video: budget spent, device-resident pipeline not run")
        return
    try:
        on_device = torch.stack(frames).to(device)  # uint8 [n,H,W,3]
        first = explainer(on_device[:batch].permute(0, 3, 1, 2).float().div(255))
        shown = int(torch.bincount(first.labels.flatten(), minlength=21).argmax())  # the most-predicted class

        def resident():
            for lo in range(0, n, batch):
                chunk = on_device[lo:lo + batch]
                res = explainer(chunk.permute(0, 3, 1, 2).float().div(255), classes=[shown])
                kernels.overlay(chunk, res.maps[:, 0])

        med = statistics.median(wall_times_s(resident, device, rounds, warmup=1))
        rep.row("video", "explain + overlay, frames on the device", unit="fps", measured=n / med,
                goal=GOAL_VIDEO_FPS, shape=shape, note=f"one class per frame ({shown}), no host copies",
                check="ok", seconds=med)
    except Exception as err:  # noqa: BLE001
        rep.error("video", "device-resident pipeline", err)


def _write_clip(path: Path, frames, rate: int = 25) -> str:
    """Encode uint8 [H,W,3] numpy frames to `path` (temp file + rename); returns the codec used."""
    import av

    codec = next((c for c in ("libx264", "libopenh264", "mpeg4") if _has_encoder(av, c)), None)
    if codec is None:
        raise RuntimeError("PyAV's FFmpeg has none of the encoders libx264, libopenh264, mpeg4")
    tmp = path.with_name(path.stem + ".tmp" + path.suffix)
    height, width = frames[0].shape[:2]
    with av.open(str(tmp), "w") as container:
        stream = container.add_stream(codec, rate=rate)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for i, rgb in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            frame.pts = i
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    os.replace(tmp, path)
    return codec


def _has_encoder(av, name: str) -> bool:
    try:
        av.codec.Codec(name, "w")
        return True
    except Exception:  # noqa: BLE001  (unknown codec: PyAV raises different types across versions)
        return False


def _cli_command() -> list[str]:
    """The `seg-xai` console script as a command: the entry point named in pyproject.toml, run by
    this interpreter (so the checkout being tested is what runs, whatever is on PATH)."""
    text = (ROOT / "pyproject.toml").read_text()
    match = re.search(r'^seg-xai\s*=\s*"([\w.]+):(\w+)"', text, re.M)
    if not match:
        raise RuntimeError("pyproject.toml names no `seg-xai` console script")
    module, func = match.groups()
    return [sys.executable, "-c", f"import sys; from {module} import {func}; sys.exit({func}())"]


def cli_video(rep: Report, device: torch.device, frames, deadline: float, out: Path, runtime: str) -> None:
    cmd = _cli_command()
    helptext = subprocess.run(cmd + ["video", "--help"], capture_output=True, text=True, timeout=60).stdout
    args = ["--model", "torchvision:lraspp_mobilenet_v3_large", "--batch-size", "8", "--no-progress"]
    note = []
    if "--runtime" in helptext:
        args += ["--runtime", runtime]
    if "--device" in helptext:
        args += ["--device", device.type]
    else:
        note.append("the CLI has no --device: it ran where it puts the model")
    H, W = frames[0].shape[:2]
    with tempfile.TemporaryDirectory(prefix="gpu_bench_") as work:
        clip, result = Path(work) / "clip.mp4", Path(work) / "explained.mp4"
        codec = _write_clip(clip, frames)
        limit = max(10.0, deadline - time.monotonic())
        t0 = time.perf_counter()
        proc = subprocess.run(cmd + ["video", str(clip), str(result), *args], capture_output=True, text=True,
                              timeout=limit)
        wall = time.perf_counter() - t0
    log = f"$ seg-xai video clip.mp4 explained.mp4 {' '.join(args)}\n--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}"
    _write_atomic(out / "seg_xai_video.log", log)
    match = re.search(r"frames=(\d+) fps=([\d.]+)", proc.stdout)
    if proc.returncode != 0 or not match:
        raise RuntimeError(f"seg-xai video exited {proc.returncode}: {proc.stderr.strip()[-500:]}")
    frames_out, fps = int(match.group(1)), float(match.group(2))
    described = next((line for line in proc.stdout.splitlines() if "explanations" in line), "")  # the runtime used
    rep.row("video", "seg-xai video (decode+explain+overlay+encode)", unit="fps", measured=fps,
            goal=GOAL_VIDEO_FPS, shape=f"{len(frames)}-frame {W}x{H} {codec} clip",
            note="; ".join(note + [described.strip(), f"process wall {wall:.1f} s incl. start-up"]),
            check="ok" if frames_out == len(frames) else f"{frames_out} frames out of {len(frames)}",
            cli_args=args)


# --------------------------------------------------------------------------- main


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, type=Path, help="folder for bench.json and bench.md")
    parser.add_argument("--dry-run", action="store_true", help="tiny sizes on the CPU (tests this script)")
    parser.add_argument("--budget-s", type=float, default=240.0,
                        help="sections starting after this many seconds are skipped (default: %(default)s)")
    parser.add_argument("--sections", default="kernels,deeplab,video", help="(default: %(default)s)")
    parser.add_argument("--cli-runtime", default="torch",
                        help="`seg-xai video --runtime` for the end-to-end row (default: %(default)s)")
    args = parser.parse_args(argv)
    start = time.monotonic()
    deadline = start + args.budget_s
    args.out.mkdir(parents=True, exist_ok=True)
    if args.dry_run:
        device = torch.device("cpu")
    elif torch.cuda.is_available():
        device = torch.device("cuda", torch.cuda.current_device())
    else:
        print("gpu_bench: no CUDA device visible to torch; use --dry-run to test on the CPU", file=sys.stderr)
        return 2
    import seg_xai_fast as sx

    meta = {"dry_run": args.dry_run, "device": str(device), "torch": torch.__version__,
            "torch_cuda": torch.version.cuda, "python": platform.python_version(),
            "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
            "core": sx.build_info(), "started": time.strftime("%Y-%m-%d %H:%M:%S")}
    if device.type == "cuda":
        p = torch.cuda.get_device_properties(device)
        meta["device_properties"] = {k: getattr(p, k) for k in ("major", "minor", "total_memory",
                                     "multi_processor_count", "L2_cache_size", "clock_rate",
                                     "memory_clock_rate", "memory_bus_width") if hasattr(p, k)}
        if not sx.build_info().get("cuda_built"):
            print("gpu_bench: the core was built without CUDA kernels: rebuild with SEG_XAI_CUDA=on", file=sys.stderr)
    rep = Report(args.out, meta)
    sections = {"kernels": lambda: section_kernels(rep, device, args.dry_run, deadline),
                "deeplab": lambda: section_deeplab(rep, device, args.dry_run, deadline),
                "video": lambda: section_video(rep, device, args.dry_run, deadline, args.out, args.cli_runtime)}
    if importlib.util.find_spec("torchvision") is None:
        rep.note("torchvision is missing: deeplab and video sections skipped")
        sections.pop("deeplab"), sections.pop("video")
    for name in args.sections.split(","):
        if name not in sections:
            continue
        if time.monotonic() > deadline:
            rep.note(f"{name}: budget of {args.budget_s:.0f} s spent, section skipped")
            continue
        print(f"== {name} ({time.monotonic() - start:.0f} s elapsed)", flush=True)
        t0 = time.monotonic()
        try:
            sections[name]()
        except Exception as err:  # noqa: BLE001
            rep.error(name, "section", err)
        if device.type == "cuda":
            torch.cuda.empty_cache()  # the section's tensors are gone with its frames
        rep.data["meta"].setdefault("section_seconds", {})[name] = round(time.monotonic() - t0, 1)
        rep.save()
    rep.data["meta"]["seconds"] = round(time.monotonic() - start, 1)
    rep.save()
    md = rep.markdown()
    _write_atomic(args.out / "bench.md", md)
    print(md)
    return 1 if rep.data["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
