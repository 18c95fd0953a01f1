"""Benchmark: the analytic (closed-form) path vs one forward pass, pytorch-grad-cam and ONNX Runtime.

    python benchmarks/analytic_speed.py [--size 256] [--classes 21] [--method gradcam++] [--repeats 7]

deeplabv3_mobilenet_v3_large, random-initialised (nothing is downloaded), CPU, target layer
classifier.3 (the ReLU before the final 1×1 classifier), every class given a non-empty box
region through ``masks=``. Correctness first (ONNX Runtime maps vs PyTorch maps), then the rows
are timed in interleaved rounds (one call of each per round; medians), so the ratios compare
calls made under the same machine load. pytorch-grad-cam runs after them (one call per class,
seg_xai_fast.apps.bench.peer_seconds).

Goals: analytic path ≤ 1.25× one plain forward pass; ≥ 50× faster than pytorch-grad-cam.
Also printed: the ONNX Runtime explainer and the plain ORT forward pass (logits only), and where
the analytic path's time goes (stages timed separately).
"""
import argparse
import os
import sys
import tempfile
import time

import torch

from seg_xai_fast import kernels
from seg_xai_fast.apps.bench import box_masks, peer_seconds
from seg_xai_fast.engine.capture import ModelState, select_output
from seg_xai_fast.engine.explainer import Explainer
from seg_xai_fast.kernels import class_argmax
from seg_xai_fast.models import load_model
from timing import interleaved


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="torchvision:deeplabv3_mobilenet_v3_large")
    parser.add_argument("--layer", default="classifier.3")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--classes", type=int, default=21)
    parser.add_argument("--method", default="gradcam++")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--peer-repeats", type=int, default=1)
    parser.add_argument("--no-peer", action="store_true")
    parser.add_argument("--no-onnx", action="store_true")
    args = parser.parse_args()

    torch.manual_seed(0)
    loaded = load_model(args.model)
    model, layer, S = loaded.model, args.layer, args.size
    images = torch.rand(1, 3, S, S, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        L = select_output(model(images), "out", 1).shape[1]
    classes = list(range(min(args.classes, L)))
    masks = box_masks(1, len(classes), S, S)
    print(f"model {loaded.name} (random init), layer {layer}, image 1×3×{S}×{S}, {len(classes)} classes with box "
          f"masks, {args.method}; CPU, {os.cpu_count()} cores, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads; medians of {args.repeats} interleaved rounds")

    explainer = Explainer(model, layer, args.method)
    ours = explainer(images, classes=classes, masks=masks)
    if explainer.gradient_path != "analytic":
        print(f"error: layer {layer} has no linear head; the analytic path does not apply", file=sys.stderr)
        return 2

    def forward():
        with torch.no_grad():
            model(images)

    rows = {"torch forward (no_grad)": forward,
            f"analytic {args.method} (sx.Explainer)": lambda: explainer(images, classes=classes, masks=masks)}

    onnx_dir = None
    if not args.no_onnx:
        try:
            import onnxruntime as ort

            from seg_xai_fast.runtimes import OnnxExplainer, export_logits_onnx, export_onnx
        except ImportError as err:
            print(f"(ONNX Runtime rows skipped: {err})")
        else:
            onnx_dir = tempfile.TemporaryDirectory()
            path = export_onnx(model, layer, os.path.join(onnx_dir.name, "explain.onnx"), images)
            plain_path = export_logits_onnx(model, os.path.join(onnx_dir.name, "plain.onnx"), images)
            onnx_explainer = OnnxExplainer(path, args.method)
            options = ort.SessionOptions()
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")  # as OnnxExplainer
            plain = ort.InferenceSession(str(plain_path), options, providers=onnx_explainer.providers)
            feed = {"images": images.numpy()}
            theirs = onnx_explainer(images, classes=classes, masks=masks)
            diff = float((theirs.maps - ours.maps).abs().max())
            print(f"check: ONNX Runtime maps vs PyTorch maps, max abs difference {diff:.1e} "
                  f"({'ok' if diff <= 1e-4 else 'FAIL'}, tolerance 1e-4); provider {onnx_explainer.provider}")
            rows["ORT forward (logits only)"] = lambda: plain.run(None, feed)
            rows["ORT forward (+activations, labels)"] = lambda: onnx_explainer.forward(images)
            rows[f"ORT {args.method} (sx.OnnxExplainer)"] = lambda: onnx_explainer(images, classes=classes, masks=masks)

    stages = _stage_rows(explainer, images, classes, masks)
    seconds = interleaved({**rows, **stages}, args.repeats)
    forward_s = seconds["torch forward (no_grad)"]
    analytic_s = seconds[f"analytic {args.method} (sx.Explainer)"]
    peer_s = None
    if not args.no_peer:
        peer_s = peer_seconds(model, layer, args.method, images, classes, masks, "out", args.peer_repeats)
        if peer_s is None:
            print("(pytorch-grad-cam is not installed: pip install grad-cam)")

    print(f"\n{'':44s} {'ms':>9s} {'× torch fwd':>12s}")
    for name in rows:
        print(f"{name:44s} {seconds[name] * 1e3:9.1f} {seconds[name] / forward_s:12.2f}")
    if peer_s is not None:
        print(f"{args.method + ' pytorch-grad-cam (per class)':44s} {peer_s * 1e3:9.1f} {peer_s / forward_s:12.2f}")
    print("\nwhere the analytic path's time goes (each stage timed alone):")
    for name in stages:
        print(f"  {name:42s} {seconds[name] * 1e3:9.1f} {seconds[name] / forward_s:12.2f}")

    ok = analytic_s <= 1.25 * forward_s
    print(f"\nanalytic / forward = {analytic_s / forward_s:.2f}  (goal ≤ 1.25: {'PASS' if ok else 'MISS'})")
    if peer_s is not None:
        speedup = peer_s / analytic_s
        ok = ok and speedup >= 50
        print(f"pytorch-grad-cam / analytic = {speedup:.1f}×  (goal ≥ 50×: {'PASS' if speedup >= 50 else 'MISS'})")
    if "ORT forward (logits only)" in seconds:
        ort_s = seconds[f"ORT {args.method} (sx.OnnxExplainer)"]
        print(f"ONNX Runtime explainer / plain ORT forward = {ort_s / seconds['ORT forward (logits only)']:.2f}; "
              f"vs torch forward = {ort_s / forward_s:.2f}")
    if onnx_dir is not None:
        onnx_dir.cleanup()
    return 0 if ok else 1


def _stage_rows(explainer: Explainer, images, classes, masks) -> dict:
    """The analytic path's stages as separate callables, on tensors from one forward pass."""
    model = explainer.model
    head = explainer.linear_head(images)
    with ModelState(model), explainer.capture() as cap, torch.no_grad():
        logits = select_output(model(images), "out", images.shape[0])
        A = cap.activations()
    low_size, align = head.upsample
    seeds = kernels.mask_seeds(masks, low_size, align)
    W = head.weight[classes]
    weights = kernels.analytic_gradcampp_weights(A, W, seeds, max_memory_mb=explainer.max_memory_mb)
    small = kernels.weighted_cam(A, weights)

    def captured_forward():
        with ModelState(model), explainer.capture() as capture, torch.no_grad():
            model(images)
            capture.activations()

    return {
        "forward with capture hook": captured_forward,
        "labels = class_argmax(logits)": lambda: class_argmax(logits),
        "seeds Up*(M) (mask_seeds)": lambda: kernels.mask_seeds(masks, low_size, align),
        "gradcam++ weights (analytic_gradcampp_weights)": lambda: kernels.analytic_gradcampp_weights(A, W, seeds, max_memory_mb=explainer.max_memory_mb),
        "weighted_cam (Σ w·A, ReLU, min-max)": lambda: kernels.weighted_cam(A, weights),
        "resize_normalize to H×W": lambda: kernels.resize_normalize(small, tuple(logits.shape[-2:])),
    }


if __name__ == "__main__":
    sys.exit(main())
