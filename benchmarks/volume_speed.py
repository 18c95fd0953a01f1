"""Volumes and whole scenes, measured side by side in one run (ratios; the machine is noisy).

    python benchmarks/volume_speed.py [--volume 160] [--roi 64] [--scene 4096] [--scene-roi 512]
                                      [--gradcam-size 64] [--repeats 3]

A thin script over `seg-xai bench` (seg_xai_fast/apps/bench.py, bench_memory.py), which holds the
measurements; it prints the issue's three ratios:
1. 3-D Grad-CAM of every class (one sx.Explainer call, each class's predicted region) against
   pytorch-grad-cam's 3-D GradCAM called once per class, on bench's volume model (a random MONAI
   SegResNet, 1 channel, 3 classes, full-resolution layer up_layers.1) at a --gradcam-size³ volume:
   `seg-xai bench --volume --methods gradcam`'s "gradcam predicted targets" rows. Goal: ≥ 5× faster.
2. Grad-CAM of every class through sx.SlidingWindow against MONAI's plain sliding_window_inference
   of the same input: time (in-process medians) and peak RSS (each side once in a fresh process,
   see apps/bench_memory.py), a --volume³ single-channel volume through the SegResNet with --roi³
   windows, overlap 0.25, gaussian (`seg-xai bench --volume --sliding-window R,R,R --blend
   gaussian`); and a --scene² RGB scene through a 6-class segmentation-models-pytorch U-Net
   (ResNet-18) with --scene-roi² windows (`seg-xai bench --model smp:Unet:resnet18 --num-classes 6
   --sliding-window R,R`). Goal: both ratios ≤ 2×.
The issue's sizes are the defaults; a smoke run: --volume 48 --roi 32 --scene 256 --scene-roi 128
--gradcam-size 24 --repeats 1. CPU.
"""
import argparse
from pathlib import Path
import sys

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from seg_xai_fast.apps.bench import run_bench  # noqa: E402


def row(rows: list, name: str) -> dict:
    return next(r for r in rows if r["row"].startswith(name))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--volume", type=int, default=160)
    p.add_argument("--roi", type=int, default=64)
    p.add_argument("--scene", type=int, default=4096)
    p.add_argument("--scene-roi", type=int, default=512)
    p.add_argument("--gradcam-size", type=int, default=64)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    quiet = dict(log=lambda line: None, repeats=args.repeats, peer_repeats=args.repeats)

    rows = run_bench(volume=True, size=args.gradcam_size, methods=["gradcam"], **quiet)
    ours, peer = row(rows, "gradcam predicted targets"), row(rows, "gradcam predicted targets pytorch-grad-cam")
    print(f"3-D Grad-CAM, {args.gradcam_size}³, {ours['predicted_classes']} predicted classes: ours "
          f"{ours['ms'] / 1e3:.3f} s, grad-cam per class {peer['ms'] / 1e3:.3f} s, speed-up "
          f"{peer['ms'] / ours['ms']:.2f}× (goal ≥ 5×)")

    for domain, size, roi in (("volume", args.volume, args.roi), ("scene", args.scene, args.scene_roi)):
        if domain == "volume":
            setup = dict(volume=True, sliding={"roi_size": (roi,) * 3, "overlap": 0.25, "mode": "gaussian"})
        else:
            setup = dict(model_spec="smp:Unet:resnet18", model_classes=6,
                         sliding={"roi_size": (roi,) * 2, "overlap": 0.25, "mode": "constant"})
        rows = run_bench(size=size, methods=["gradcam"], peer=False, **setup, **quiet)
        plain, cam = row(rows, "sliding-window forward monai"), row(rows, "sliding-window gradcam")
        shape = f"{size}³" if domain == "volume" else f"{size}²"
        print(f"{domain} {shape}, windows {roi}: MONAI's plain sliding-window inference {plain['ms'] / 1e3:.2f} s / "
              f"{plain['rss_mb']:.0f} MB; Grad-CAM of every class through SlidingWindow {cam['ms'] / 1e3:.2f} s / "
              f"{cam['rss_mb']:.0f} MB ({cam['row'].split('(')[-1].rstrip(')')}); ratios time "
              f"{cam['ms'] / plain['ms']:.2f}×, peak RSS {cam['rss_mb'] / plain['rss_mb']:.2f}× (goals ≤ 2×)")


if __name__ == "__main__":
    main()
