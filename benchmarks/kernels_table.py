"""Fused kernels vs the PyTorch reference, with the memory-streaming floor of each op.

Checks each fused op against the reference first, warms up, then prints one row per op and size:
reference ms, fused ms, speedup, floor ms (one streaming read of the op's main input, e.g.
G.sum()), fused/floor. Medians over --repeat runs; compare ratios within one run (shared machines
are noisy).

    python benchmarks/kernels_table.py                 # CPU, torch's thread setting
    python benchmarks/kernels_table.py --device cuda --repeat 50
    python benchmarks/kernels_table.py --only overlay analytic   # a subset of the rows
"""
from __future__ import annotations

import argparse
import platform
import statistics
import time
from pathlib import Path

import torch

from seg_xai_fast import kernels, reference
from seg_xai_fast.kernels import backend as _backend

# (name, B, K, C, h, w, output size): G of 21 VOC classes at the target layer.
SIZES = [
    ("deeplabv3-r50 layer4 @256²", 1, 21, 2048, 32, 32, (256, 256)),
    ("mobilenetv3-l last @512²", 1, 21, 960, 32, 32, (512, 512)),
]


def machine(device: str) -> str:
    if device == "cuda":
        return torch.cuda.get_device_name()
    cpu = platform.processor() or platform.machine()
    info = Path("/proc/cpuinfo")
    if info.exists():
        for line in info.read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return f"{cpu}, {torch.get_num_threads()} torch threads"


def median_ms(fn, device: str, repeat: int, warmup: int = 2) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        if device == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        if device == "cuda":
            torch.cuda.synchronize()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def cases(device: str):
    """(op, size label, reference fn, fused fn, floor fn, atol) for every op and size."""
    g = torch.Generator().manual_seed(0)
    for label, B, K, C, h, w, out_size in SIZES:
        A = torch.rand(B, C, h, w, generator=g).to(device)
        G = torch.randn(B, K, C, h, w, generator=g).to(device)
        Wt = reference.channel_weights(A, G, "gradcam++")
        raw = torch.randn(B, K, h, w, generator=g).to(device)
        H, W = out_size
        out_floor = torch.rand(B, K, H, W, generator=g).to(device)
        G_read, A_read = (lambda: G.sum()), (lambda: A.sum())
        for method in ("gradcam", "gradcam++", "xgradcam", "hirescam", "layercam"):  # each method's whole stage
            ops = "1+2+4" if method in reference.WEIGHTED_METHODS else "3+4"
            yield (f"{method} stage ({ops})", label,
                   lambda method=method: reference.cam_from_gradients(A, G, method, out_size),
                   lambda method=method: kernels.cam_from_gradients(A, G, method, out_size, backend="fused"),
                   G_read, 2e-5)
        yield ("1 weights gradcam++", label,
               lambda: reference.channel_weights(A, G, "gradcam++"),
               lambda: kernels.channel_weights(A, G, "gradcam++", backend="fused"), G_read, 2e-5 * float(Wt.abs().max()))
        yield ("1 weights gradcam", label,
               lambda: reference.channel_weights(A, G, "gradcam"),
               lambda: kernels.channel_weights(A, G, "gradcam", backend="fused"), G_read, 1e-6)
        yield ("2 combine+normalize", label,
               lambda: reference.normalize_maps(reference.weighted_combine(A, Wt)),
               lambda: kernels.weighted_cam(A, Wt, backend="fused"), A_read, 2e-5)
        yield ("3 layercam+normalize", label,
               lambda: reference.normalize_maps(reference.elementwise_cam(A, G, "layercam")),
               lambda: kernels.elementwise_cam(A, G, "layercam", backend="fused"), G_read, 2e-5)
        Wh = torch.randn(K, C, generator=g).to(device)  # linear head rows; seeds of both signs
        R = torch.randn(B, K, h, w, generator=g).to(device)
        S = A.sum(dim=(2, 3))
        Wpp = kernels.analytic_gradcampp_weights(S, Wh, R, backend="torch")
        yield ("1a analytic gradcam++ w", label,
               lambda: kernels.analytic_gradcampp_weights(S, Wh, R, backend="torch"),  # chunked torch
               lambda: kernels.analytic_gradcampp_weights(S, Wh, R, backend="fused"),
               lambda: (R.sum(), S.sum()), 2e-5 * float(Wpp.abs().max()))  # floor: one read of R and S
        yield ("4 resize+normalize", label,
               lambda: reference.normalize_maps(reference.resize_bilinear(raw, out_size)),
               lambda: kernels.resize_normalize(raw, out_size, backend="fused"),
               lambda: out_floor.sum(), 1e-5)  # floor: one read of an output-sized tensor
    # Overlay and target seeds at 512² (one image, 21 classes).
    images = torch.randint(0, 256, (1, 512, 512, 3), dtype=torch.uint8, generator=g).to(device)
    maps = torch.rand(1, 32, 32, generator=g).to(device)
    yield ("5 overlay 32²→512²", "1×512²",
           lambda: reference.overlay(images, maps), lambda: kernels.overlay(images, maps, backend="fused"),
           lambda: images.sum(dtype=torch.int32), 3)  # a colour index may flip at 255·m ≈ integer
    for (H, W), (mh, mw) in [((240, 320), (30, 40)), ((240, 320), (240, 320)),
                             ((720, 1280), (90, 160)), ((720, 1280), (720, 1280))]:
        frames = torch.randint(0, 256, (8, H, W, 3), dtype=torch.uint8, generator=g).to(device)
        fmaps = torch.rand(8, mh, mw, generator=g).to(device)
        yield (f"5 overlay {mw}×{mh}→{W}×{H}", "8 frames",
               lambda frames=frames, fmaps=fmaps: reference.overlay(frames, fmaps),
               lambda frames=frames, fmaps=fmaps: kernels.overlay(frames, fmaps, backend="fused"),
               lambda frames=frames: frames.sum(dtype=torch.int32), 3)
    logits = torch.randn(1, 21, 512, 512, generator=g).to(device)
    classes = list(range(21))
    yield ("6 seeds from logits", "21×512²→64²",
           lambda: reference.upsample_adjoint(reference.predicted_masks(logits, classes), (64, 64)),
           lambda: kernels.label_seeds(kernels.class_argmax(logits, "fused"), classes, (64, 64), backend="fused"),
           lambda: logits.sum(), 1e-4)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    parser.add_argument("--only", nargs="*", default=None, help="run the ops whose name contains any of these")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    info = _backend.build_info()
    print(f"# {machine(args.device)}; simd={info['simd']}, openmp={info['openmp']}, "
          f"cuda_built={info['cuda_built']}; torch {torch.__version__}; median of {args.repeat}")
    header = f"| {'op':<28} | {'size':<27} | {'ref ms':>8} | {'fused ms':>8} | {'speedup':>7} | {'floor ms':>8} | {'fused/floor':>11} |"
    print(header)
    print("|" + "|".join("-" * (len(c)) for c in header.split("|")[1:-1]) + "|")
    for op, size, ref_fn, fused_fn, floor_fn, atol in cases(args.device):
        if args.only and not any(word in op for word in args.only):
            continue
        try:
            expected, actual = ref_fn(), fused_fn()  # correctness first
        except AttributeError as exc:  # an op this build of the core lacks (comparing builds)
            print(f"| {op:<28} | {size:<27} | n/a: {exc}")
            continue
        torch.testing.assert_close(actual.float(), expected.float(), rtol=1e-5, atol=atol)
        t_ref = median_ms(ref_fn, args.device, args.repeat)
        t_fused = median_ms(fused_fn, args.device, args.repeat)
        t_floor = median_ms(floor_fn, args.device, args.repeat)
        print(f"| {op:<28} | {size:<27} | {t_ref:8.2f} | {t_fused:8.2f} | {t_ref / t_fused:6.1f}× | "
              f"{t_floor:8.2f} | {t_fused / t_floor:10.2f}× |", flush=True)


if __name__ == "__main__":
    main()
