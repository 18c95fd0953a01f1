"""Input attributions: all classes from one call, against captum's one call per class and against
the floor (the same forwards from the input, and one backward to the input per class and forward,
with no attribution work).

DeepLabV3-MobileNetV3 (random init), one 256×256 image, 21 classes each with its own box region:
saliency, Integrated Gradients (8 steps, Gauss-Legendre) and SmoothGrad (8 noise samples over
saliency) for all 21 classes, vs captum 0.9's Saliency / IntegratedGradients / NoiseTunnel called
once per class (21 calls; the parameters frozen for captum as for us, or its backward would
differentiate them too). Ours, the floor and captum alternate in each round; medians are printed.

The backward to the input cannot be shared between classes (each class has its own cotangent), so
the floor holds K backwards through the whole network per forward; what one call saves over
captum's K calls is the K − 1 repeated forwards (for IG and SmoothGrad: of the whole stack of
steps / samples) and the per-call overhead. The extra forward of ours for IG and SmoothGrad is
the clean image's, which gives the predicted labels.

    python benchmarks/attribution_speed.py [--repeats 3] [--size 256] [--classes 21] [--peer-repeats 1]
"""
from __future__ import annotations

import argparse
import statistics

import torch
import torchvision.models.segmentation as tvseg

import seg_xai_fast as sx
from seg_xai_fast.apps.bench import attribution_floor, box_masks, peer_attribution
from seg_xai_fast.engine.capture import ModelState
from timing import interleaved, timed

CASES = [  # (method, options, label)
    ("saliency", {}, "saliency"),
    ("integratedgradients", {"n_steps": 8}, "IG 8 steps"),
    ("smoothgrad", {"nt_samples": 8, "stdevs": 0.15}, "SmoothGrad 8 samples"),
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--classes", type=int, default=21)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--peer-repeats", type=int, default=1)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()

    torch.manual_seed(0)
    model = tvseg.deeplabv3_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=21).eval()
    model = model.to(args.device)
    image = torch.rand(1, 3, args.size, args.size, generator=torch.Generator().manual_seed(1)).to(args.device)
    K = args.classes
    classes = list(range(K))
    masks = box_masks(1, K, args.size, args.size).to(args.device)
    print(f"DeepLabV3-MobileNetV3 (random init), {args.size}x{args.size}, {K} classes with box regions, "
          f"device {args.device}, torch threads {torch.get_num_threads()}, medians of {args.repeats} rounds")
    sync = torch.cuda.synchronize if args.device.startswith("cuda") else (lambda: None)

    for method, options, label in CASES:
        explainer = sx.Explainer(model, None, method, options=options)
        info = explainer(image, classes=classes, masks=masks).info
        peer = peer_attribution(model, method, options)

        def ours():
            explainer(image, classes=classes, masks=masks)
            sync()

        def floor():
            attribution_floor(model, image, classes, masks, info["inputs"], explainer.options["batch_size"])
            sync()

        def captum():
            with ModelState(model):
                for k, c in enumerate(classes):
                    peer(image, masks, k, c)
            sync()

        seconds = interleaved({"ours": ours, "floor": floor}, args.repeats)
        p = statistics.median([timed(captum) for _ in range(args.peer_repeats + 1)][1:])  # after a warm-up
        o, f = seconds["ours"], seconds["floor"]
        print(f"{label:22s} ours {o * 1e3:9.1f} ms | floor ({info['inputs']} inputs, {K} backwards per forward) "
              f"{f * 1e3:9.1f} ms | captum ({K} calls) {p * 1e3:9.1f} ms | ours/floor {o / f:5.2f}x | "
              f"captum/ours {p / o:5.2f}x")


if __name__ == "__main__":
    main()
