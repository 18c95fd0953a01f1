"""`seg-xai evaluate`: explanation-quality metrics on generated scenes with ground truth.

    seg-xai evaluate [--model demo] [--layer decoder] [--methods gradcam,gradcam++] [--n 12]
                     [--size 128] [--json] [--out DIR]

`evaluate` runs every metric of seg_xai_fast.metrics (pointing games, deletion/insertion AUC, ROAD,
parameter randomisation) for each method on images with ground truth; `run_evaluate` runs it on
generated scenes and prints a table; `--json` prints exactly one JSON object on stdout instead;
`--out DIR` also writes metrics.csv, metrics.json and curves.png. Progress goes to stderr.
"""
from __future__ import annotations

import csv
import io
import json
import math
import sys
import time
from pathlib import Path
from typing import Optional, Sequence, Union

import torch
import torch.nn as nn

from ..demo.scenes import CLASS_NAMES, synthetic_scenes
from ..engine.capture import model_logits
from ..engine.checks import check_images, describe
from ..engine.methods import check_options_used
from ..fileio import atomic_write_text
from ..metrics import (
    METRIC_KEYS,
    ROAD_PERCENTILES,
    auc,
    default_stages,
    deletion_curves,
    energy_pointing_game,
    insertion_curves,
    pointing_game,
    predicted_regions,
    randomization_check,
    randomized_models,
    road,
    summarize,
    summarize_per_class,
)
from ..metrics.checks import check_class_ids
from ..metrics.randomisation import method_explainer
from ..models import load_model, require_layer
from ..viz import save_png

EVAL_SEED = 4242  # scenes never seen in training (train seeds >= 1_000_000, validation 7, test 20240)
DEFAULT_CLASSES = "disc,square,triangle"  # object classes; background makes the pointing games trivial
CONTEXT_KEYS = ("context_deletion_auc", "context_insertion_auc")
# About 6 CPU-seconds a scene with the defaults (2 methods, 128², 16 steps): 12 scenes take about a
# minute on 2 cores; chunks of 4 give the run's estimate early (evaluate's progress).
DEFAULT_N, DEFAULT_BATCH = 12, 4

# Column titles of the printed table; arrows say which direction is better.
_TITLES = {
    "pointing_game": "pointing↑",
    "energy_pointing_game": "energy↑",
    "deletion_auc": "del AUC↓",
    "insertion_auc": "ins AUC↑",
    "road_morf": "ROAD MoRF↓",
    "road_lerf": "ROAD LeRF",
    "randomization_spearman": "rand ρ↓",
    "context_deletion_auc": "ctx del↓",
    "context_insertion_auc": "ctx ins↑",
}


def evaluate(
    model: nn.Module,
    layer: Union[str, nn.Module],
    methods: Union[str, Sequence[str]],
    images: torch.Tensor,
    truth: torch.Tensor,
    classes: Optional[Sequence[int]] = None,
    *,
    tolerance: float = 15.0,
    steps: int = 16,
    percentiles: Sequence[float] = ROAD_PERCENTILES,
    stages: Optional[Sequence[str]] = None,
    context: bool = False,
    batch_size: int = 8,
    forward_batch: int = 32,
    seed: int = 0,
    output_key: str = "out",
    progress: bool = False,
    options: Optional[dict] = None,
) -> dict:
    """Every metric of seg_xai_fast.metrics for each method, on images with ground truth.

    images: float [N,3,H,W] as the model takes them; truth: int [N,H,W] class ids; classes: the
    class ids to explain and score (None: every output class; background classes make the
    pointing games trivial, so pass the object classes). Maps target each class's predicted
    pixels (the Explainer's default). `stages` as `randomized_models` (None: `default_stages`,
    () skips the check). Images go through in chunks of `batch_size`; when `progress`, a tqdm
    bar on stderr counts scenes (it moves after each metric of a chunk, with tqdm's estimate of
    the time left) and one line after the first chunk estimates the whole run. `layer` serves
    the layer methods (the input-space ones take none); `options`: method options, each method
    taking the entries it knows (every entry must be some method's).

    Returns {method: {key: float for key in METRIC_KEYS, plus "context_deletion_auc" and
    "context_insertion_auc" when `context`, "randomization_by_stage" {stage: float},
    "road_morf_by_percentile"/"road_lerf_by_percentile" {p: float}, "deletion_curve" and
    "insertion_curve" (lists of T+1 floats, the class-averaged mean curves, whose AUCs are the
    reported AUCs), "per_class" {metric: {class id: float}}, "pairs" (counted image-class pairs)}}.
    NaN marks a metric with nothing counted.
    """
    methods = [methods] if isinstance(methods, str) else list(methods)
    if not methods:
        raise ValueError("methods must name at least one method")
    images = check_images(images)
    if not isinstance(truth, torch.Tensor) or truth.dtype.is_floating_point or truth.dtype == torch.bool \
            or tuple(truth.shape) != (images.shape[0],) + tuple(images.shape[-2:]):
        raise ValueError(f"truth must be an int tensor [N={images.shape[0]},H,W] matching images, got {describe(truth)}")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    device = next((p.device for p in model.parameters()), images.device)
    images, truth = images.to(device), truth.to(device)
    if classes is None:
        classes = list(range(model_logits(model, images[:1], output_key).shape[1]))
    ids = check_class_ids(classes)
    stages = default_stages(model) if stages is None else list(stages)
    models = randomized_models(model, stages, seed) if stages else []
    check_options_used(methods, options)
    for method in methods:  # fail early on a bad name, layer or option, before any work
        method_explainer(model, layer, method, output_key, options)

    parts = {m: {key: [] for key in ("pg", "epg", "del", "ins", "cdel", "cins", "morf", "lerf", "rand")} for m in methods}
    from tqdm.auto import tqdm  # a dependency of the package; imported here to keep `import` light

    N = images.shape[0]
    # Counts scenes: each (chunk, method) moves the bar by the chunk's share, in one step per metric.
    bar = tqdm(total=N, desc="evaluate", unit="scene", disable=not progress, leave=False, file=sys.stderr,
               bar_format="{l_bar}{bar}| {n:.1f}/{total} scenes [{elapsed}<{remaining}]")
    metric_steps = 4 + (2 if context else 0) + (1 if models else 0)  # maps+pointing, del, ins, [ctx], ROAD, [rand]
    common = dict(seed=seed, output_key=output_key, forward_batch=forward_batch)
    start = time.perf_counter()
    try:
        for lo in range(0, N, batch_size):
            x, gt = images[lo : lo + batch_size], truth[lo : lo + batch_size]
            steps_done, chunk_steps = 0, len(methods) * metric_steps

            def advance():  # exact fractions of the chunk, so the bar ends at N (no float drift)
                nonlocal steps_done
                steps_done += 1
                bar.update(lo + x.shape[0] * steps_done / chunk_steps - bar.n)

            regions = predicted_regions(model, x, ids, output_key=output_key, forward_batch=forward_batch)
            for method in methods:
                bar.set_description(f"evaluate {method}")
                maps = method_explainer(model, layer, method, output_key, options)(x, classes=ids).maps
                acc = parts[method]
                acc["pg"].append(pointing_game(maps, gt, ids, tolerance))
                acc["epg"].append(energy_pointing_game(maps, gt, ids))
                advance()
                acc["del"].append(deletion_curves(model, x, maps, ids, regions=regions, steps=steps, **common))
                advance()
                acc["ins"].append(insertion_curves(model, x, maps, ids, regions=regions, steps=steps, **common))
                advance()
                if context:
                    acc["cdel"].append(deletion_curves(model, x, maps, ids, regions=regions, steps=steps, context=True, **common))
                    advance()
                    acc["cins"].append(insertion_curves(model, x, maps, ids, regions=regions, steps=steps, context=True, **common))
                    advance()
                removal = road(model, x, maps, ids, regions=regions, percentiles=percentiles, **common)
                acc["morf"].append(removal["morf"])
                acc["lerf"].append(removal["lerf"])
                advance()
                if models:
                    # The default targets are the predicted regions, so these maps equal the
                    # ones the check would compute with masks = M_c.
                    acc["rand"].append(randomization_check(model, layer, method, x, ids, models=models, maps=maps,
                                                           output_key=output_key, options=options))
                    advance()
            if progress and lo == 0 and x.shape[0] < N:
                per_scene = (time.perf_counter() - start) / x.shape[0]
                bar.write(f"evaluate: {per_scene:.2f} s per scene ({len(methods)} methods): about "
                          f"{per_scene * N:.0f} s for {N} scenes", file=sys.stderr)
    finally:
        bar.close()
    return {method: _summary(parts[method], ids, steps, list(percentiles), stages, context) for method in methods}


def _summary(acc: dict, ids: list, steps: int, pcts: list, stages: list, context: bool) -> dict:
    """Per-method result dict from the per-chunk per-pair tensors of `evaluate`."""
    cat = {k: torch.cat([v.cpu() for v in vs]) for k, vs in acc.items() if vs and isinstance(vs[0], torch.Tensor)}
    nan = math.nan
    rand = {s: torch.cat([chunk[s] for chunk in acc["rand"]]) for s in stages} if acc["rand"] else {}
    per_pair = {
        "pointing_game": cat["pg"],
        "energy_pointing_game": cat["epg"],
        "deletion_auc": auc(cat["del"]),
        "insertion_auc": auc(cat["ins"]),
        "road_morf": cat["morf"].mean(dim=2),
        "road_lerf": cat["lerf"].mean(dim=2),
    }
    if context:
        per_pair["context_deletion_auc"] = auc(cat["cdel"])
        per_pair["context_insertion_auc"] = auc(cat["cins"])
    if rand:
        per_pair["randomization_spearman"] = rand[stages[-1]]
    out = {key: float(summarize(v)) for key, v in per_pair.items()}
    out.setdefault("randomization_spearman", nan)
    out["randomization_by_stage"] = {s: float(summarize(v)) for s, v in rand.items()}
    out["road_morf_by_percentile"] = {p: float(v) for p, v in zip(pcts, summarize(cat["morf"]))}
    out["road_lerf_by_percentile"] = {p: float(v) for p, v in zip(pcts, summarize(cat["lerf"]))}
    out["deletion_curve"] = [float(v) for v in summarize(cat["del"])]
    out["insertion_curve"] = [float(v) for v in summarize(cat["ins"])]
    out["per_class"] = {key: {c: float(v) for c, v in zip(ids, summarize_per_class(vals))} for key, vals in per_pair.items()}
    out["pairs"] = int((~cat["del"][..., 0].isnan()).sum())
    return out

def run_evaluate(
    model: str = "demo",
    layer: Optional[str] = None,
    methods: Sequence[str] = ("gradcam", "gradcam++"),
    n: int = DEFAULT_N,
    size: int = 128,
    seed: int = EVAL_SEED,
    classes: Optional[Sequence] = None,
    steps: int = 16,
    tolerance: float = 15.0,
    percentiles: Sequence[float] = ROAD_PERCENTILES,
    context: bool = False,
    batch_size: int = DEFAULT_BATCH,
    out: Optional[str] = None,
    progress: bool = True,
    weights: Optional[str] = None,
    num_classes: Optional[int] = None,
    options: Optional[dict] = None,
) -> dict:
    """Evaluate `methods` on `n` scenes of `size`² from `seed`; returns `evaluate`'s dict
    plus "_meta" (settings, seconds, files written). `model`, `weights`, `num_classes`: as models.load_model's;
    the model's classes are the scenes' CLASS_NAMES. `classes`: names or ids
    (None: the object classes). `options`: the methods' options (each takes the entries it knows)."""
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive int, got {n!r}")
    loaded = load_model(model, weights=weights, num_classes=num_classes)
    layer = require_layer(loaded, layer)
    ids = parse_class_ids(DEFAULT_CLASSES.split(",") if classes is None else classes, CLASS_NAMES)
    images, truth = synthetic_scenes(n, seed=seed, size=size)
    out_classes = model_logits(loaded.model, images[:1]).shape[1]
    if out_classes != len(CLASS_NAMES):
        raise ValueError(f"model must predict the scenes' {len(CLASS_NAMES)} classes {CLASS_NAMES}, "
                         f"got {out_classes} output channels")
    start = time.perf_counter()
    results = evaluate(loaded.model, layer, list(methods), images, truth, ids, tolerance=tolerance, steps=steps,
                       percentiles=percentiles, context=context, batch_size=batch_size, progress=progress,
                       options=options)
    seconds = time.perf_counter() - start
    meta = {"model": loaded.name, "layer": layer, "n": n, "size": size, "seed": seed, "steps": steps,
            "tolerance": tolerance, "classes": [CLASS_NAMES[c] for c in ids], "seconds": seconds,
            "torch_threads": torch.get_num_threads(), "files": []}
    if out is not None:
        meta["files"] = write_outputs(results, out, context, meta)
    results["_meta"] = meta
    return results


def summary_table(results: dict, context: bool = False) -> dict:
    """{method: {metric: float or None}} with exactly METRIC_KEYS (plus CONTEXT_KEYS when
    `context`): what `--json` prints. NaN (nothing counted) becomes None, JSON null."""
    keys = METRIC_KEYS + (CONTEXT_KEYS if context else ())
    return {method: {k: _finite(r[k]) for k in keys} for method, r in results.items() if not method.startswith("_")}


def format_table(results: dict, context: bool = False) -> str:
    """The per-method table as text, plus the randomisation check stage by stage."""
    table = summary_table(results, context)
    keys = METRIC_KEYS + (CONTEXT_KEYS if context else ())
    width = max(len(m) for m in table) + 2
    lines = [f"{'method':<{width}}" + "".join(f"{_TITLES[k]:>12}" for k in keys)]
    for method, row in table.items():
        lines.append(f"{method:<{width}}" + "".join(f"{_fmt(row[k]):>12}" for k in keys))
    lines.append("randomisation (cascading, Spearman ρ after re-initialising each stage and all above it):")
    for method, r in results.items():
        if not method.startswith("_"):
            stages = ", ".join(f"{s} {_fmt(v)}" for s, v in r["randomization_by_stage"].items())
            lines.append(f"  {method:<{width}}{stages or 'skipped'}")
    return "\n".join(lines)


def write_outputs(results: dict, out_dir, context: bool, meta: dict) -> list[str]:
    """metrics.csv (the table, one row per method), metrics.json (everything) and curves.png
    (mean deletion and insertion curves per method), each written atomically."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    methods = [m for m in results if not m.startswith("_")]
    stages = list(results[methods[0]]["randomization_by_stage"])
    keys = list(METRIC_KEYS + (CONTEXT_KEYS if context else ()))
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["method"] + keys + [f"randomization_spearman_{s}" for s in stages])
    for m in methods:
        r = results[m]
        writer.writerow([m] + [_csv(r[k]) for k in keys] + [_csv(r["randomization_by_stage"][s]) for s in stages])
    files = [_write_text(out_dir / "metrics.csv", buf.getvalue())]
    everything = {m: results[m] for m in methods}
    everything["_meta"] = {k: v for k, v in meta.items() if k != "files"}
    files.append(_write_text(out_dir / "metrics.json", json.dumps(_jsonable(everything), indent=1) + "\n"))
    title = (f"{meta.get('model')} · layer {meta.get('layer')} · {meta.get('n')} scenes "
             f"{meta.get('size')}x{meta.get('size')} · seed {meta.get('seed')}")
    files.append(str(save_png(curves_chart(results, title), out_dir / "curves.png")))
    return files


def curves_chart(results: dict, title: str = ""):
    """A PIL picture: mean deletion (left) and insertion (right) curves, one colour per method."""
    from PIL import Image, ImageDraw

    colours = [(31, 119, 180), (214, 39, 40), (44, 160, 44), (148, 103, 189), (255, 127, 14), (23, 190, 207),
               (140, 86, 75), (227, 119, 194)]
    methods = [m for m in results if not m.startswith("_")]
    panel_w, panel_h, left, top, bottom = 440, 340, 64, 40, 40
    legend_h = 18 * len(methods) + 10
    picture = Image.new("RGB", (2 * panel_w, panel_h + legend_h + 24), (255, 255, 255))
    draw = ImageDraw.Draw(picture)
    draw.text((8, 4), title, fill=(0, 0, 0))
    for col, (key, title) in enumerate((("deletion_curve", "deletion (lower AUC is better)"),
                                        ("insertion_curve", "insertion (higher AUC is better)"))):
        x0, y0 = col * panel_w + left, 24 + top
        w, h = panel_w - left - 20, panel_h - top - bottom
        draw.text((x0, y0 - 18), title, fill=(0, 0, 0))
        draw.rectangle([x0, y0, x0 + w, y0 + h], outline=(0, 0, 0))
        for i in range(5):  # grid and tick labels at 0, .25, ..., 1 on both axes
            f = i / 4
            gx, gy = x0 + f * w, y0 + h - f * h
            draw.line([gx, y0, gx, y0 + h], fill=(225, 225, 225))
            draw.line([x0, gy, x0 + w, gy], fill=(225, 225, 225))
            draw.text((gx - 8, y0 + h + 4), f"{f:.2f}", fill=(0, 0, 0))
            draw.text((x0 - 34, gy - 6), f"{f:.2f}", fill=(0, 0, 0))
        draw.text((x0 + w // 2 - 60, y0 + h + 20), "fraction of pixels changed", fill=(0, 0, 0))
        _vertical_text(picture, (x0 - 50, y0 + h // 2), "class score (mean softmax)")
        for i, m in enumerate(methods):
            curve = results[m][key]
            T = len(curve) - 1
            points = [(x0 + t / T * w, y0 + h - min(max(v, 0.0), 1.0) * h) for t, v in enumerate(curve) if math.isfinite(v)]
            if len(points) > 1:
                draw.line(points, fill=colours[i % len(colours)], width=2)
    for i, m in enumerate(methods):
        y = panel_h + 24 + 6 + 18 * i
        r = results[m]
        draw.line([left, y + 6, left + 30, y + 6], fill=colours[i % len(colours)], width=3)
        draw.text((left + 38, y), f"{m}: deletion AUC {_fmt(r['deletion_auc'])}, insertion AUC {_fmt(r['insertion_auc'])}",
                  fill=(0, 0, 0))
    return picture


# --------------------------------------------------------------------------- helpers


def _vertical_text(picture, centre: tuple, text: str) -> None:
    """Draw `text` rotated 90° (reading upwards), centred at `centre` (x, y) of `picture`."""
    from PIL import Image, ImageDraw

    width = int(ImageDraw.Draw(picture).textlength(text)) + 4
    label = Image.new("RGB", (width, 12), (255, 255, 255))
    ImageDraw.Draw(label).text((2, 0), text, fill=(0, 0, 0))
    label = label.rotate(90, expand=True)
    picture.paste(label, (centre[0] - label.width // 2, centre[1] - label.height // 2))


def parse_class_ids(classes, names: Optional[Sequence[str]]) -> list[int]:
    """Class names or ids (text or int) → ids; with `names`, ids must be below len(names)."""
    ids = []
    for c in classes:
        text = str(c).strip()
        if text.isdigit() and (names is None or int(text) < len(names)):
            ids.append(int(text))
        elif names is not None and text in names:
            ids.append(list(names).index(text))
        else:
            raise ValueError(f"classes must be {'names in ' + str(list(names)) + ' or ids below ' + str(len(names)) if names else 'class ids'}, got {c!r}")
    return ids


def _finite(v):
    return v if isinstance(v, (int, float)) and math.isfinite(v) else None


def _fmt(v) -> str:
    return "n/a" if v is None or not math.isfinite(v) else f"{v:.3f}"


def _csv(v) -> str:
    return "" if v is None or not math.isfinite(v) else f"{v:.6g}"


def _jsonable(obj):
    """NaN → None recursively, so the file is strict JSON."""
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def _write_text(path: Path, text: str) -> str:
    """Write `text` to `path` atomically (fileio.atomic_write_text)."""
    return str(atomic_write_text(path, text))
