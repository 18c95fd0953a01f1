"""Benchmark: 19-class SegFormer explanations vs a plain forward pass and pytorch-grad-cam.

    python benchmarks/transformers_speed.py [--size 256] [--classes 19] [--method gradcam++] [--repeats 5]

hf:segformer (transformers' default config, MiT-b0, random-initialised: nothing is downloaded),
wrapped by sx.as_segmenter (logits upsampled from 1/4 to the input), CPU, target layer
decode_head.activation (the fused features before the 1×1 classifier: the closed-form path),
every class given a non-empty box region. The explainer and the plain forward are timed in
interleaved rounds (medians), then the peer explains the same targets, one call per class.

Goal: the explanation of all classes ≤ 1.3× one plain forward pass.
"""
import argparse
import sys

import torch

from seg_xai_fast.apps.bench import box_masks, peer_seconds
from seg_xai_fast.engine.capture import model_logits
from seg_xai_fast.engine.explainer import Explainer
from seg_xai_fast.models import load_model
from timing import interleaved


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--classes", type=int, default=19)
    parser.add_argument("--method", default="gradcam++")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--no-peer", action="store_true")
    args = parser.parse_args()

    torch.manual_seed(0)
    loaded = load_model("hf:segformer", num_classes=args.classes)
    model, layer, K, S = loaded.model, loaded.layer, args.classes, args.size
    images = torch.rand(1, 3, S, S, generator=torch.Generator().manual_seed(1))
    masks = box_masks(1, K, S, S)
    classes = list(range(K))
    explainer = Explainer(model, layer, args.method)
    explainer(images, classes=classes, masks=masks)  # finds and verifies the closed form
    fns = {"plain forward": lambda: model_logits(model, images),
           f"seg_xai_fast {args.method}, {K} classes": lambda: explainer(images, classes=classes, masks=masks)}
    median = interleaved(fns, args.repeats)
    forward = median["plain forward"]
    print(f"SegFormer (MiT-b0), {S}×{S}, {K} classes, layer {layer}, gradient path {explainer.gradient_path}, "
          f"torch threads {torch.get_num_threads()}")
    for name, sec in median.items():
        print(f"  {name:<40} {sec * 1e3:9.1f} ms  {sec / forward:6.2f}× forward")
    if not args.no_peer:
        peer = peer_seconds(model, layer, args.method, images, classes, masks, "out", 1)
        if peer is None:
            print("  pytorch-grad-cam not installed")
        else:
            ours = median[f"seg_xai_fast {args.method}, {K} classes"]
            print(f"  {'pytorch-grad-cam, ' + str(K) + ' calls':<40} {peer * 1e3:9.1f} ms  {peer / forward:6.2f}× forward"
                  f"  ({peer / ours:.1f}× ours)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
