"""The picture comparing the method families on the bundled model (docs/methods_gallery.png).

    python tools/method_gallery.py [--out docs/methods_gallery.png] [--methods gradcam,scorecam,...]

Two generated scenes, each explained for the object class covering the most pixels, with every
method (default: all of sx.methods()) at the demo model's layer "decoder" (the input-space
methods take none): one block per family, stacked. Each column title carries the method's time
for the two scenes.
"""
from __future__ import annotations

import argparse
import time

import torch

import seg_xai_fast as sx
from seg_xai_fast.engine.methods import METHODS, layer_for
from seg_xai_fast.kernels import overlay
import numpy as np
from PIL import Image, ImageDraw

from seg_xai_fast.viz import color_labels, contact_sheet, label_legend, save_png, to_frames

# Fewer samples than the defaults keep the picture quick to remake; the maps barely change. RISE
# with logit scores gives mostly negative sums on this model (ReLU leaves little): probabilities.
OPTIONS = {"rise": {"n_masks": 2000, "score": "probability"}, "occlusion": {"window": 24, "stride": 8}}
FAMILY_ORDER = ("gradient", "activation", "perturbation", "segment")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="docs/methods_gallery.png")
    ap.add_argument("--methods", default=None, help="comma-separated (default: every method)")
    ap.add_argument("--size", type=int, default=128)
    args = ap.parse_args()
    order = {f: i for i, f in enumerate(FAMILY_ORDER)}
    names = args.methods.split(",") if args.methods else sorted(
        METHODS, key=lambda m: (order.get(METHODS[m].family, len(order)), m))
    model = sx.demo_model()
    images, truth = sx.synthetic_scenes(2, seed=11, size=args.size)
    counts = torch.stack([(truth == c).flatten(1).sum(1) for c in range(len(sx.CLASS_NAMES))], dim=1)
    counts[:, 0] = -1  # an object class, not the background
    classes = counts.argmax(dim=1).tolist()  # [B]
    masks = torch.stack([(truth[b] == classes[b]).float() for b in range(2)])[:, None]  # [B,1,H,W]
    frames = to_frames(images)
    sheets = []
    for family in sorted({METHODS[n].family for n in names}, key=lambda f: order.get(f, len(order))):
        rows = [[frames[b].numpy(), color_labels(truth[b])] for b in range(2)]
        titles = ["image", "ground truth"]
        for name in [n for n in names if METHODS[n].family == family]:
            explainer = sx.Explainer(model, layer_for(name, "decoder"), name, options=OPTIONS.get(name))
            start = time.perf_counter()
            maps = torch.cat([explainer(images[b:b + 1], classes=[classes[b]], masks=masks[b:b + 1]).maps
                              for b in range(2)])  # [B,1,H,W]
            seconds = time.perf_counter() - start
            for b in range(2):
                rows[b].append(overlay(frames[b:b + 1], maps[b:b + 1, 0])[0].numpy())
            titles.append(f"{name} {seconds:.1f} s")
            print(f"{name:22s} {seconds:7.2f} s", flush=True)
        last = family == sorted({METHODS[n].family for n in names}, key=lambda f: order.get(f, len(order)))[-1]
        sheet = contact_sheet(rows, titles, legend=label_legend(sx.CLASS_NAMES) if last else (),
                              colormap="jet" if last else None)
        sheets.append(_titled(sheet, f"{family} methods"))
    save_png(_stack(sheets), args.out)
    print(f"wrote {args.out}: scenes explained for {[sx.CLASS_NAMES[c] for c in classes]}")


def _titled(sheet: Image.Image, title: str) -> Image.Image:
    """The sheet under a band naming its family."""
    out = Image.new("RGB", (sheet.width, sheet.height + 20), "white")
    ImageDraw.Draw(out).text((6, 4), title, fill="black")
    out.paste(sheet, (0, 20))
    return out


def _stack(sheets: list) -> np.ndarray:
    """The sheets one above the other, left-aligned on white."""
    out = Image.new("RGB", (max(s.width for s in sheets), sum(s.height for s in sheets)), "white")
    y = 0
    for sheet in sheets:
        out.paste(sheet, (0, y))
        y += sheet.height
    return np.asarray(out)


if __name__ == "__main__":
    main()
