"""`seg-xai demo`: explain every class of the bundled model on generated scenes, as pictures."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Optional


from .model import demo_model
from ..engine.explainer import Explainer
from ..engine.methods import layer_for
from ..kernels import overlay
from .scenes import CLASS_NAMES, synthetic_scenes
from ..viz import color_labels, contact_sheet, heatmap_table, label_legend, save_png, to_frames

DEMO_LAYER = "decoder"  # the late decoder features that feed the 1×1 classifier


def run_demo(
    out_dir: str | Path = "seg-xai-demo",
    n: int = 4,
    size: int = 160,
    method: str = "gradcam",
    seed: int = 2024,
    colormap: str = "jet",
    options: Optional[dict] = None,
) -> dict:
    """Explain all classes of `n` scenes; write one overlay PNG per (scene, class) and a contact sheet.

    Returns a summary dict: files written, seconds spent explaining, pixel accuracy of the model.
    """
    out_dir = Path(out_dir)
    model = demo_model()
    images, truth = synthetic_scenes(n, seed=seed, size=size)
    explainer = Explainer(model, layer_for(method, DEMO_LAYER), method, options=options)
    start = time.perf_counter()
    res = explainer(images)  # every class, one forward pass
    seconds = time.perf_counter() - start

    frames = to_frames(images)
    files, rows = [], []
    for b in range(n):
        row = [frames[b].numpy(), color_labels(truth[b]), color_labels(res.labels[b])]
        for k, c in enumerate(res.classes):
            picture = overlay(frames[b : b + 1], res.maps[b : b + 1, k], colormap=colormap)[0].numpy()
            files.append(save_png(picture, out_dir / f"scene{b:02d}_{CLASS_NAMES[c]}.png"))
            row.append(picture)
        rows.append(row)
    titles = ["image", "ground truth", "prediction"] + [f"{method}: {CLASS_NAMES[c]}" for c in res.classes]
    legend = label_legend(CLASS_NAMES)  # the colours of the truth and prediction columns
    sheet = save_png(contact_sheet(rows, titles, legend=legend, colormap=colormap), out_dir / "contact_sheet.png")
    accuracy = (res.labels == truth).float().mean().item()
    context = _context_table(model, images[:1], out_dir / "context_scene00.png")
    return {"files": [str(f) for f in files], "contact_sheet": str(sheet), "seconds": seconds,
            "pixel_accuracy": accuracy, "classes": res.classes, "method": method, "context_table": str(context)}


def _context_table(model, image, path: Path) -> Path:
    """The context table of scene 0 (docs/segments.md) as a picture: for every class (rows), the
    effect on its score of removing each predicted segment (columns), from one feature-ablation pass."""
    ctx = Explainer(model, None, "featureablation", class_names=CLASS_NAMES)(image).context[0]
    columns = [f"#{m} {CLASS_NAMES[c]}" for m, c in enumerate(ctx.segment_classes)]
    rows = [CLASS_NAMES[c] for c in ctx.classes]
    title = "scene 0: score drop S - S(segment removed) of each class (rows) for each predicted segment (columns)"
    return save_png(heatmap_table(ctx.effects.cpu().numpy(), rows, columns, title), path)
