"""The picture comparing pixel-level and CAM explanations on the bundled model
(docs/attributions_gallery.png).

    python tools/attribution_gallery.py [--out docs/attributions_gallery.png] [--size 128]

Two generated scenes, each explained for the object class covering the most pixels (its
ground-truth region as the target): Grad-CAM and HiResCAM at the demo model's layer "decoder", then
every attribution method (Guided Grad-CAM at "decoder" too). Each column title carries the method's
time for the two scenes.
"""
from __future__ import annotations

import argparse
import time

import torch

import seg_xai_fast as sx
from seg_xai_fast.kernels import overlay
from seg_xai_fast.viz import color_labels, contact_sheet, label_legend, save_png, to_frames

# (method, target layer, options): the CAMs first, then the pixel-level methods
COLUMNS = [
    ("gradcam", "decoder", None),
    ("hirescam", "decoder", None),
    ("saliency", None, None),
    ("inputxgradient", None, None),
    ("integratedgradients", None, {"n_steps": 32}),
    ("smoothgrad", None, {"nt_samples": 16, "stdevs": 0.15}),
    ("guidedbackprop", None, None),
    ("guidedgradcam", "decoder", None),
    ("deeplift", None, None),
    ("lrp", None, {"composite": "epsilon_plus_flat"}),
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="docs/attributions_gallery.png")
    ap.add_argument("--size", type=int, default=128)
    args = ap.parse_args()
    model = sx.demo_model()
    images, truth = sx.synthetic_scenes(2, seed=11, size=args.size)
    counts = torch.stack([(truth == c).flatten(1).sum(1) for c in range(len(sx.CLASS_NAMES))], dim=1)
    counts[:, 0] = -1  # an object class, not the background
    classes = counts.argmax(dim=1).tolist()  # [B]
    masks = torch.stack([(truth[b] == classes[b]).float() for b in range(2)])[:, None]  # [B,1,H,W]
    frames = to_frames(images)
    rows = [[frames[b].numpy(), color_labels(truth[b])] for b in range(2)]
    titles = ["image", "ground truth"]
    for name, layer, options in COLUMNS:
        explainer = sx.Explainer(model, layer, name, options=options)
        start = time.perf_counter()
        maps = torch.cat([explainer(images[b:b + 1], classes=[classes[b]], masks=masks[b:b + 1]).maps
                          for b in range(2)])  # [B,1,H,W]
        seconds = time.perf_counter() - start
        for b in range(2):
            rows[b].append(overlay(frames[b:b + 1], maps[b:b + 1, 0])[0].numpy())
        titles.append(f"{name} {seconds:.1f} s")
        print(f"{name:22s} {seconds:7.2f} s", flush=True)
    save_png(contact_sheet(rows, titles, legend=label_legend(sx.CLASS_NAMES), colormap="jet"), args.out)
    print(f"wrote {args.out}: scenes explained for {[sx.CLASS_NAMES[c] for c in classes]}")


if __name__ == "__main__":
    main()
