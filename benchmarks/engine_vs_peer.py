"""Benchmark: the explainer vs its floor and pytorch-grad-cam on deeplabv3_mobilenet_v3_large.

    python benchmarks/engine_vs_peer.py [--size 256] [--classes 21] [--repeats 5]

CPU, random-initialised weights (nothing is downloaded), target layer = the backbone's last stage.
Prints one table; all ratios come from this one run (see seg_xai_fast/bench.py for the rows).
Goals: dense gradcam/gradcam++ within 1.2× of the floor and ≥ 7× faster than the peer;
predicted targets ≥ 20× faster than the peer.
"""
import argparse

import torch

from seg_xai_fast.apps.bench import run_bench

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="torchvision:deeplabv3_mobilenet_v3_large")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--layer", default="backbone.16", help="target layer (default: the backbone's last stage)")
    parser.add_argument("--classes", type=int, default=21)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--chart", default=None, help="write a PNG bar chart here")
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    run_bench(args.model, methods=("gradcam", "gradcam++"), num_classes=args.classes, size=args.size, layer=args.layer,
              repeats=args.repeats, chart=args.chart)
