"""Benchmark: memory over a long stream — `seg-xai video`'s pipeline (explain_video) on a 10,000-frame clip.

    python benchmarks/video_memory.py [--frames 10000] [--size 160x120] [--batch-size 4]

A generated clip (scene_frames, the camera panning back and forth), LRASPP-MobileNetV3 (random
init) on ONNX Runtime with the threads and forward passes `seg-xai video` uses; decode, explain,
overlay and encode as `seg-xai video` runs them. A thread samples the process's resident memory
(VmRSS) every 0.25 s; the stream runs at a steady rate, so time stands for frames. Printed: RSS at
each tenth of the run, and the growth from the 20% mark to the end (after the warm-up: ORT's
arena, x264's lookahead, the queues filling). Goal: flat — that growth ≤ 16 MiB (the size of
~70 320×240 RGB frames; a leak of one frame per batch over 8,000 frames would be ~460 MiB at
160×120). The default frame size is 160×120 so that 10,000 frames take minutes on 2 cores; the
pipeline's memory per frame scales with the size, not with the length of the stream.
"""
import argparse
import os
import sys
import tempfile
import threading
import time
from fractions import Fraction

import torch


def rss_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=10000)
    parser.add_argument("--size", default="160x120", help="WxH")
    parser.add_argument("--batch-size", type=int, default=4)
    args = parser.parse_args()

    from seg_xai_fast.apps.video.clip import scene_frames
    from seg_xai_fast.apps.video.frames import available_cores
    from seg_xai_fast.apps.video.io import write_clip
    from seg_xai_fast.apps.video.pipeline import explain_video, onnx_threads
    from seg_xai_fast.models import load_model
    from seg_xai_fast.runtimes import OnnxExplainer, export_onnx

    W, H = (int(v) for v in args.size.split("x"))
    work = tempfile.TemporaryDirectory()
    pan = scene_frames(100, (H, W), seed=1)
    clip = write_clip(os.path.join(work.name, "long.mp4"),
                      [pan[i % 200 if i % 200 < 100 else 199 - i % 200] for i in range(args.frames)], Fraction(25))
    torch.manual_seed(0)
    loaded = load_model("torchvision:lraspp_mobilenet_v3_large")
    path = export_onnx(loaded.model, loaded.layer, os.path.join(work.name, "m.onnx"), torch.rand(1, 3, H, W))
    threads = onnx_threads(available_cores())
    explainer = OnnxExplainer(path, "gradcam", threads=threads)
    samples = []
    done = threading.Event()

    def sample():
        start = time.perf_counter()
        while not done.is_set():
            samples.append((time.perf_counter() - start, rss_mib()))
            done.wait(0.25)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    summary = explain_video(clip, os.path.join(work.name, "out.mp4"), explainer, batch_size=args.batch_size,
                            progress=False)
    done.set()
    sampler.join()
    assert summary.frames == args.frames, summary.lines()
    total = samples[-1][0]

    def at(fraction: float) -> float:
        return next(rss for t, rss in samples if t >= fraction * total)

    print(f"{args.frames} frames {W}×{H}, LRASPP-MobileNetV3 (random init), ONNX Runtime {threads} thread(s) per "
          f"forward pass, batch {args.batch_size}; {summary.fps:.1f} fps; load {os.getloadavg()[0]:.2f}")
    print("RSS (MiB) at each tenth of the run: " + ", ".join(f"{at(i / 10):.0f}" for i in range(11)))
    growth = samples[-1][1] - at(0.2)
    peak = max(rss for _, rss in samples)
    print(f"growth from 20% to the end: {growth:+.1f} MiB (peak {peak:.0f} MiB)  "
          f"(goal ≤ 16 MiB: {'PASS' if growth <= 16 else 'MISS'})")
    work.cleanup()
    return 0 if growth <= 16 else 1


if __name__ == "__main__":
    sys.exit(main())
