"""`seg-xai evaluate IMAGES --labels LABELS`: explanation metrics on a user's own image/label pairs,
as a resumable batch job.

Images are 2-D images with label maps, or NIfTI volumes with label volumes (apps/evaluate_pairs.py);
every metric takes both. Per image: every method explains the classes its label map holds
(ground-truth regions as targets, or the predicted ones), and each (method, class) pair gets one
row of metrics. The run appends one
line per finished image to DIR/evaluate.jsonl (fsynced; a torn last line from a kill is cut), so a
rerun skips finished images and — every image being scored on its own, with its random draws seeded
per image — a killed and resumed run ends with exactly the numbers of an uninterrupted one. The
table, rows.csv, summary.json/csv and the plots are rebuilt from that log, atomically, at the end.
"""
from __future__ import annotations

import csv
import io
import json
import math
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch

from ..engine import SlidingWindow
from ..engine.capture import model_logits
from ..engine.methods import get_method
from ..engine.volume import check_volume_method
from ..errors import UsageError
from ..fileio import atomic_write_text
from ..metrics import (
    attribution_localisation,
    auc,
    class_regions,
    complexity,
    deletion_curves,
    effective_complexity,
    energy_pointing_game,
    faithfulness_correlation,
    infidelity,
    insertion_curves,
    off_target_leakage,
    pointing_game,
    predicted_regions,
    random_logit,
    region_perturbation,
    relevance_mass_accuracy,
    relevance_rank_accuracy,
    roc_auc,
    road,
    sensitivity_ratios,
    sparseness,
    top_k_intersection,
)
from ..metrics.faithfulness import patch_count
from ..metrics.randomisation import method_explainer
from ..models import load_model, require_layer
from ..viz import save_png
from .batch.inputs import failure_reason, read_image
from .batch.store import file_digest, model_digest
from .batch.store.manifest import cut_torn_tail
from .batch.store.run_store import hold_lock
from .evaluate import curves_chart, parse_class_ids
from .evaluate_pairs import VOLUME, check_ignore_index, check_label, find_pairs, read_label
from .scenes import kind_of, read_scene

LOG = "evaluate.jsonl"
LOCK = ".evaluate.lock"
# Metric groups `--metrics` names, and the columns each adds to a row. The default set is cheap:
# no metric that re-explains or needs more than the deletion/insertion forwards.
METRIC_GROUPS = {
    "pointing_game": ("pointing_game",),
    "energy_pointing_game": ("energy_pointing_game",),
    "relevance_mass_accuracy": ("relevance_mass_accuracy",),
    "relevance_rank_accuracy": ("relevance_rank_accuracy",),
    "attribution_localisation": ("attribution_localisation",),
    "top_k_intersection": ("top_k_intersection",),
    "roc_auc": ("roc_auc",),
    "off_target_leakage": ("off_target_leakage",),
    "sparseness": ("sparseness",),
    "complexity": ("complexity",),
    "effective_complexity": ("effective_complexity",),
    "deletion": ("deletion_auc",),
    "insertion": ("insertion_auc",),
    "road": ("road_morf", "road_lerf"),
    "region_perturbation": ("region_perturbation_aopc",),
    "faithfulness_correlation": ("faithfulness_correlation",),
    "infidelity": ("infidelity",),
    "sensitivity": ("max_sensitivity", "avg_sensitivity"),
    "random_logit": ("random_logit",),
}
DEFAULT_METRICS = tuple(list(METRIC_GROUPS)[:13])  # through insertion


@dataclass
class Settings:
    """What a run computes; a rerun into the same DIR must have the same (else --force)."""

    model: str
    layer: str
    methods: list
    metrics: list
    targets: str = "truth"
    ignore_index: int = 255
    classes: Optional[list] = None  # None: every class a label map holds but 0 (the background)
    steps: int = 16
    tolerance: float = 15.0
    top_k: int = 1000
    patch_size: int = 8
    samples: int = 16
    subset_size: int = 224
    noise_std: float = 0.1
    radius: float = 0.05
    seed: int = 0
    options: dict = field(default_factory=dict)
    model_digest: str = ""
    sliding_window: Optional[dict] = None  # SlidingWindow's arguments (roi_size, overlap, mode, sw_batch_size)


def check_settings(s: Settings) -> None:
    if s.targets not in ("truth", "predicted"):
        raise UsageError(f"--targets must be 'truth' or 'predicted', got {s.targets!r}")
    unknown = [m for m in s.metrics if m not in METRIC_GROUPS]
    if unknown or not s.metrics:
        raise UsageError(f"--metrics must name some of {', '.join(METRIC_GROUPS)} (or 'default', 'all'), got {unknown or s.metrics}")
    check_ignore_index(s.ignore_index)


def columns(metrics: Sequence[str]) -> list[str]:
    return [c for m in METRIC_GROUPS if m in metrics for c in METRIC_GROUPS[m]]


def score_image(model, explainers: dict, image: torch.Tensor, label: torch.Tensor, num_classes: int, s: Settings) -> dict:
    """One image's rows: {"rows": [{"method", "class", column: value}], "curves": {method: {class: {...}}}}.

    image: float [C,H,W]; label: int [H,W] (a volume: image [C,D,H,W], label [D,H,W]). Classes:
    those the label map holds (but 0 and the ignore index), restricted to s.classes when given.
    Maps target the ground-truth regions (s.targets == "truth") or the predicted ones; the
    perturbation metrics score on the targets.
    """
    present = [int(c) for c in torch.unique(label) if int(c) != s.ignore_index and int(c) < num_classes]
    ids = [c for c in present if (c in s.classes if s.classes is not None else c != 0)]
    if not ids:
        return {"rows": [], "curves": {}}
    x, labels = image[None], label[None]
    truth = class_regions(labels, ids)  # [1,K,H,W]
    targets = truth if s.targets == "truth" else predicted_regions(model, x, ids)
    masks = targets.float()
    pixels = label.numel()  # pixels, or voxels
    methods = list(explainers)
    maps = {m: explainers[m](x, classes=ids, masks=masks).maps.float() for m in methods}
    values: dict = {m: {} for m in methods}  # method → column → float [K]
    curves: dict = {m: {} for m in methods}
    common = dict(regions=targets, seed=s.seed)
    want = set(s.metrics)
    for m in methods:
        a, v = maps[m], values[m]
        if "pointing_game" in want:
            v["pointing_game"] = pointing_game(a, labels, ids, s.tolerance)[0]
        if "energy_pointing_game" in want:
            v["energy_pointing_game"] = energy_pointing_game(a, labels, ids)[0]
        for name, fn in (("relevance_mass_accuracy", relevance_mass_accuracy), ("relevance_rank_accuracy", relevance_rank_accuracy),
                         ("attribution_localisation", attribution_localisation), ("roc_auc", roc_auc)):
            if name in want:
                v[name] = fn(a, truth)[0]
        if "top_k_intersection" in want:
            v["top_k_intersection"] = top_k_intersection(a, truth, k=min(s.top_k, pixels))[0]
        if "off_target_leakage" in want:
            v["off_target_leakage"] = off_target_leakage(a, labels, ids, s.ignore_index)[0]
        for name, fn in (("sparseness", sparseness), ("complexity", complexity)):
            if name in want:
                v[name] = fn(a)[0]
        if "effective_complexity" in want:
            v["effective_complexity"] = effective_complexity(a)[0].float()
        if "deletion" in want:
            c = deletion_curves(model, x, a, ids, steps=s.steps, **common)[0]
            v["deletion_auc"], curves[m]["deletion"] = auc(c), c
        if "insertion" in want:
            c = insertion_curves(model, x, a, ids, steps=s.steps, **common)[0]
            v["insertion_auc"], curves[m]["insertion"] = auc(c), c
        if "road" in want:
            r = road(model, x, a, ids, **common)
            v["road_morf"], v["road_lerf"] = r["morf"][0].mean(1), r["lerf"][0].mean(1)
        if "region_perturbation" in want:
            v["region_perturbation_aopc"] = region_perturbation(
                model, x, a, ids, patch_size=s.patch_size, steps=min(s.steps, patch_count(label.shape, s.patch_size)),
                **common)[0].mean(1)
        if "sensitivity" in want:
            ratios = sensitivity_ratios(lambda im, m=m: explainers[m](im, classes=ids, masks=masks).maps.float(), x, a,
                                        s.radius, s.samples, s.seed)[0]
            v["max_sensitivity"], v["avg_sensitivity"] = ratios.amax(1), ratios.mean(1)
        if "random_logit" in want:
            v["random_logit"] = random_logit(lambda im, c, mk, m=m: explainers[m](im, classes=c, masks=mk).maps.float(),
                                             x, a, ids, targets, num_classes, seed=s.seed)[0]
    # The random perturbations do not depend on the maps: every method's pairs share one batch.
    shared = torch.cat([maps[m] for m in methods], dim=1)  # [1,M·K,*S]
    together = dict(regions=targets.repeat((1, len(methods)) + (1,) * label.ndim), samples=s.samples, seed=s.seed)
    K = len(ids)
    for name, compute in (
        ("faithfulness_correlation", lambda: faithfulness_correlation(
            model, x, shared, ids * len(methods), subset_size=min(s.subset_size, pixels), **together)),
        ("infidelity", lambda: infidelity(model, x, shared, ids * len(methods), noise_std=s.noise_std, **together)),
    ):
        if name in want:
            result = compute()[0]  # [M·K]
            for i, m in enumerate(methods):
                values[m][name] = result[i * K : (i + 1) * K]
    rows = []
    for m in methods:
        for k, c in enumerate(ids):
            row = {"method": m, "class": c}
            row.update({col: _number(values[m][col][k]) for col in columns(s.metrics)})
            rows.append(row)
    return {"rows": rows, "curves": {m: {key: {str(c): [float(y) for y in curve[k]] for k, c in enumerate(ids)}
                                         for key, curve in curves[m].items()} for m in methods}}


def _number(value) -> Optional[float]:
    """A row's value: a Python float, None for NaN (not counted)."""
    v = float(value)
    return v if math.isfinite(v) else None


# --------------------------------------------------------------------------- the run's log


class ResultLog:
    """DIR/evaluate.jsonl: a header line with the settings, then one line per finished image (its
    rows) or failure. Appends are flushed and fsynced; a line torn by a kill is cut on reopening."""

    def __init__(self, out_dir: Path, settings: dict, force: bool) -> None:
        out_dir.mkdir(parents=True, exist_ok=True)
        self.lock = hold_lock(out_dir / LOCK, "seg-xai evaluate")  # one writer per DIR (explain has its own)
        try:
            self._open(out_dir, json.loads(json.dumps(settings)), force)  # settings as the log holds them
        except BaseException:
            self.lock.close()
            raise

    def _open(self, out_dir: Path, settings: dict, force: bool) -> None:
        self.path = out_dir / LOG
        if force and self.path.exists():
            self.path.unlink()
        self.done: dict = {}
        if self.path.exists():
            with open(self.path, "r+b") as f:
                cut_torn_tail(f)
            with open(self.path, "rb") as f:
                lines = [json.loads(raw) for raw in f if raw.strip()]
            if lines and lines[0].get("type") == "run" and lines[0].get("settings") != settings:
                old = lines[0]["settings"]
                changed = sorted(k for k in set(settings) | set(old) if old.get(k) != settings.get(k))
                raise UsageError(f"{out_dir} holds an evaluation with other settings ({', '.join(changed)}); "
                                 f"pass --force to start over, or another --out")
            for record in lines[1:]:
                if record.get("type") == "image":
                    self.done[record["key"]] = record
        self.file = open(self.path, "ab")
        if self.file.tell() == 0:
            self.append({"type": "run", "settings": settings})

    def append(self, record: dict) -> None:
        self.file.write(json.dumps(record, allow_nan=False).encode() + b"\n")
        self.file.flush()
        os.fsync(self.file.fileno())

    def close(self) -> None:
        self.file.close()
        self.lock.close()


def run_dataset_evaluate(
    images: Sequence[str],
    labels: str,
    *,
    model: str = "demo",
    layer: Optional[str] = None,
    methods: Sequence[str] = ("gradcam",),
    metrics: Sequence[str] = DEFAULT_METRICS,
    targets: str = "truth",
    ignore_index: int = 255,
    classes: Optional[Sequence] = None,
    out: Optional[str] = None,
    force: bool = False,
    progress: bool = True,
    weights: Optional[str] = None,
    num_classes: Optional[int] = None,
    options: Optional[dict] = None,
    ray: Optional[str] = None,
    model_args: Optional[dict] = None,
    sliding_window: Optional[dict] = None,
    **settings,
) -> dict:
    """Evaluate `methods` on the image/label pairs; returns {"summary", "rows", "failures", "meta"}.

    `settings`: the other fields of Settings (steps, tolerance, top_k, samples, seed, ...).
    With `out`, the run is resumable (DIR/evaluate.jsonl) and writes its files there. With `ray`
    ('local', 'auto' or ray://host:port), the pairs are scored by Ray actors (apps/evaluate_ray.py).
    `model_args`: a monai:NAME model's keyword arguments; `sliding_window`: SlidingWindow's
    arguments (roi_size, overlap, mode, sw_batch_size): every forward of the model, the metrics'
    included, goes through sliding-window inference.
    """
    loaded = load_model(model, weights=weights, num_classes=num_classes, model_args=model_args)
    # only the layer methods need one (a TorchScript model runs the input-space methods only)
    needs_layer = any(get_method(m).needs_layer for m in methods)
    layer = require_layer(loaded, layer) if needs_layer else (layer or loaded.layer or "")
    names = list(loaded.class_names) if loaded.class_names else None
    s = Settings(model=loaded.name, layer=str(layer), methods=list(methods), metrics=list(metrics), targets=targets,
                 ignore_index=ignore_index, classes=None if classes is None else parse_class_ids(classes, names),
                 options=dict(options or {}), model_digest=model_digest(loaded.model),
                 sliding_window=None if sliding_window is None else dict(sliding_window), **settings)
    check_settings(s)
    pairs = find_pairs(images, labels)
    probe = probe_shape(pairs)
    net, explainers, n_classes = scoring_of(loaded.model, layer, s.methods, options, probe, s.sliding_window)
    check_ignore_index(s.ignore_index, n_classes)
    log = ResultLog(Path(out), asdict(s), force) if out is not None else None
    done = log.done if log else {}
    by_key = {p.key: done[p.key] for p in pairs if p.key in done and _unchanged(done[p.key], p)}
    todo = [p for p in pairs if p.key not in by_key]
    from tqdm.auto import tqdm

    start = time.perf_counter()
    bar = tqdm(total=len(pairs), initial=len(by_key), desc="evaluate", unit="image", disable=not progress,
               file=sys.stderr, leave=False)

    def finished(record: dict) -> None:
        if log:
            log.append(record)
        by_key[record["key"]] = record
        bar.update(1)

    try:
        if ray is not None:
            from .evaluate_ray import score_on_ray

            # files are opened by the actors, whose working directory is Ray's: absolute paths
            spec = os.path.abspath(model) if os.path.exists(model) else model
            scorer_args = (spec, weights and os.path.abspath(weights), num_classes, str(layer), options, asdict(s),
                           model_args, probe)
            score_on_ray(ray, todo, PairScorer, scorer_args, finished)
        else:
            for pair in todo:
                finished(evaluate_pair(net, explainers, pair, n_classes, s, probe))
    finally:
        bar.close()
        if log:
            log.close()
    seconds = time.perf_counter() - start
    result = summarise([by_key[p.key] for p in pairs], s, names)
    result["meta"] = {"settings": asdict(s), "pairs": len(pairs), "seconds": seconds, "files": []}
    if out is not None:
        result["meta"]["files"] = write_dataset_outputs(result, Path(out))
    return result


def probe_shape(pairs) -> tuple:
    """The input shape that finds the model's class count, and which kind of input the run scores:
    [1,3,64,64] for images; for volumes (the first input is a NIfTI file) [1,C,X,Y,Z] of the first
    volume whose header reads. Volumes and images do not mix in one run: the others are failures."""
    if not pairs or kind_of(pairs[0].image) != VOLUME:
        return (1, 3, 64, 64)
    import nibabel

    for pair in pairs:
        if kind_of(pair.image) == VOLUME:
            try:
                shape = tuple(nibabel.load(pair.image).shape)  # the header only
            except Exception:  # noqa: BLE001 - unreadable: that pair's failure, the next one probes
                continue
            if len(shape) == 3:
                return (1, 1) + shape
            if len(shape) == 4:
                return (1, shape[3]) + shape[:3]
    raise UsageError(f"IMAGES name no readable NIfTI volume (the first input, {pairs[0].image}, is one)")


def scoring_of(net, layer, methods: Sequence[str], options: Optional[dict], probe: tuple = (1, 3, 64, 64),
               sliding: Optional[dict] = None) -> tuple:
    """(model, {method: explainer}, number of classes): what scoring a pair needs. probe: the input
    shape of `probe_shape`; sliding: SlidingWindow's arguments, or None."""
    if sliding is not None:
        if len(sliding["roi_size"]) != len(probe) - 2:
            raise UsageError(f"--sliding-window {','.join(map(str, sliding['roi_size']))} has "
                             f"{len(sliding['roi_size'])} axes but the inputs have {len(probe) - 2} spatial axes")
        net = SlidingWindow(net.eval(), **{**sliding, "roi_size": tuple(sliding["roi_size"])})
        layer = f"model.{layer}" if layer else layer  # the SlidingWindow's name of the model's layer
    try:
        n_classes = model_logits(net, torch.zeros(probe)).shape[1]
    except RuntimeError as err:
        raise UsageError(f"the model cannot take the inputs (probed with zeros of shape {list(probe)}): "
                         f"{str(err)[:300]}") from None
    explainers = {m: method_explainer(net, layer, m, "out", options) for m in methods}
    if len(probe) == 5:
        for explainer in explainers.values():  # before any work: a method that refuses volumes says so
            check_volume_method(explainer)
    return net, explainers, n_classes


class PairScorer:
    """pair → its log record, with the model and explainers loaded here once (a Ray actor's)."""

    def __init__(self, model: str, weights: Optional[str], num_classes: Optional[int], layer: str,
                 options: Optional[dict], settings: dict, model_args: Optional[dict] = None,
                 probe: tuple = (1, 3, 64, 64)) -> None:
        loaded = load_model(model, weights=weights, num_classes=num_classes, model_args=model_args)
        self.settings = Settings(**settings)
        if model_digest(loaded.model) != self.settings.model_digest:  # e.g. another file at that path on this node
            raise RuntimeError(f"model {model!r} here has digest {model_digest(loaded.model)}, the driver's "
                               f"{self.settings.model_digest}")
        self.probe = tuple(probe)
        self.net, self.explainers, self.n_classes = scoring_of(loaded.model, layer,
                                                               self.settings.methods, options, self.probe,
                                                               self.settings.sliding_window)

    def __call__(self, pair) -> dict:
        return evaluate_pair(self.net, self.explainers, pair, self.n_classes, self.settings, self.probe)


def evaluate_pair(net, explainers, pair, n_classes: int, s: Settings, probe: tuple = (1, 3, 64, 64)) -> dict:
    """The log record of one pair: its rows, or its failure with the reason. probe: the run's
    `probe_shape` (a volume in a run of images, or the other way round, is a failure)."""
    base = {"key": pair.key, "image": pair.image, "label": pair.label}
    if pair.label is None:
        return {"type": "failure", **base, "reason": pair.why}
    try:
        image, image_digest = read_input(pair.image, probe)
        label = read_label(pair.label)
        check_label(label, image.shape[1:], n_classes, s.ignore_index)
        scored = score_image(net, explainers, image, label, n_classes, s)
    except (OSError, ValueError) as err:
        return {"type": "failure", **base, "reason": failure_reason(err)}
    return {"type": "image", **base, "image_digest": image_digest, "label_digest": file_digest(pair.label), **scored}


def read_input(path: str, probe: tuple) -> tuple:
    """(image float [C,*S], digest of the file) for a run whose inputs have `probe`'s kind."""
    volume = kind_of(path) == VOLUME
    if volume != (len(probe) == 5):
        run = "NIfTI volumes" if len(probe) == 5 else "2-D images"
        raise ValueError(f"a {'volume' if volume else '2-D image'} in a run of {run} (the run scores the first "
                         f"input's kind): evaluate volumes and images in separate runs")
    if not volume:
        return read_image(path)
    image = read_scene(path).images[0]  # [C,X,Y,Z]
    if image.shape[0] != probe[1]:
        raise ValueError(f"the volume has {image.shape[0]} channels, the run's first volume {probe[1]}")
    return image, file_digest(path)


def _unchanged(record: dict, pair) -> bool:
    """A logged image still counts when both files are the ones it was scored on."""
    try:
        return record["label"] == pair.label and file_digest(pair.image) == record["image_digest"] \
            and file_digest(pair.label) == record["label_digest"]
    except OSError:
        return False


# --------------------------------------------------------------------------- results


def summarise(records: Sequence[dict], s: Settings, names: Optional[list]) -> dict:
    """Per class: the mean over the images where the pair was counted; overall: the mean over the
    classes (as metrics.summarize). Computed in the pairs' order, so reruns give identical numbers."""
    cols = columns(s.metrics)
    rows = [dict(r, image=rec["key"], path=rec["image"]) for rec in records if rec["type"] == "image" for r in rec["rows"]]
    failures = [{"image": rec["key"], "path": rec["image"], "reason": rec["reason"]} for rec in records if rec["type"] == "failure"]
    summary: dict = {}
    for m in s.methods:
        mine = [r for r in rows if r["method"] == m]
        per_class = {}
        for c in sorted({r["class"] for r in mine}):
            of_c = [r for r in mine if r["class"] == c]
            per_class[_class_name(c, names)] = {col: _mean([r[col] for r in of_c]) for col in cols} | {"pairs": len(of_c)}
        overall = {col: _mean([v[col] for v in per_class.values()]) for col in cols}
        curves = {}
        for key in ("deletion", "insertion"):  # class-averaged mean curves, as metrics.summarize
            by_class = {}
            for rec in records:
                for c, curve in rec.get("curves", {}).get(m, {}).get(key, {}).items():
                    by_class.setdefault(c, []).append(curve)
            if by_class:
                means = [np.nanmean(np.array(v, dtype=float), axis=0) for v in by_class.values()]
                curves[f"{key}_curve"] = [float(v) for v in np.nanmean(np.array(means), axis=0)]
        summary[m] = {"overall": overall, "per_class": per_class, **curves}
    return {"summary": summary, "rows": rows, "failures": failures,
            "images": sum(rec["type"] == "image" for rec in records)}


def _mean(values) -> Optional[float]:
    kept = [v for v in values if v is not None and math.isfinite(v)]
    return float(np.mean(kept)) if kept else None


def _class_name(c: int, names: Optional[list]) -> str:
    return names[c] if names and c < len(names) else str(c)


def format_dataset_table(result: dict, metrics: Sequence[str]) -> str:
    """The overall table (one row per method), then each method's per-class table."""
    cols = columns(metrics)
    width = max([len(m) for m in result["summary"]] + [10]) + 2
    head = "".join(f"{c[:14]:>15}" for c in cols)
    lines = [f"{'method':<{width}}{head}"]
    for m, r in result["summary"].items():
        lines.append(f"{m:<{width}}" + "".join(f"{_fmt(r['overall'][c]):>15}" for c in cols))
    for m, r in result["summary"].items():
        lines.append(f"\n{m}, per class:")
        lines.append(f"{'class':<{width}}{head}{'pairs':>7}")
        for name, v in r["per_class"].items():
            lines.append(f"{name:<{width}}" + "".join(f"{_fmt(v[c]):>15}" for c in cols) + f"{v['pairs']:>7}")
    lines.append(f"\n{result['images']} images scored, {len(result['failures'])} failed")
    for f in result["failures"][:10]:
        lines.append(f"  {f['image']}: {f['reason']}")
    return "\n".join(lines)


def json_summary(result: dict) -> dict:
    """What --json prints: {"overall": {method: {metric}}, "per_class": {method: {class: {metric}}},
    "images": n, "failures": [{"image", "reason"}]}."""
    return {"overall": {m: r["overall"] for m, r in result["summary"].items()},
            "per_class": {m: r["per_class"] for m, r in result["summary"].items()},
            "images": result["images"],
            "failures": [{"image": f["image"], "reason": f["reason"]} for f in result["failures"]]}


def write_dataset_outputs(result: dict, out_dir: Path) -> list[str]:
    """rows.csv (one row per image, method and class: the image's key and file path first; `seg-xai
    report` shows an image's rows on its page), summary.csv (per class and overall),
    summary.json, evaluate_failures.csv (not failures.csv: `explain` may share DIR), metrics.json (what
    `seg-xai report` shows), curves.png and distributions.png, each written atomically."""
    s = result["meta"]["settings"]
    cols = columns(s["metrics"])
    files = [_csv(out_dir / "rows.csv", ["image", "path", "method", "class"] + cols,
                  ([r["image"], r["path"], r["method"], r["class"]] + [r[c] for c in cols] for r in result["rows"]))]
    summary_rows = []
    for m, r in result["summary"].items():
        summary_rows += [[m, name] + [v[c] for c in cols] + [v["pairs"]] for name, v in r["per_class"].items()]
        summary_rows.append([m, "all"] + [r["overall"][c] for c in cols] + [sum(v["pairs"] for v in r["per_class"].values())])
    files.append(_csv(out_dir / "summary.csv", ["method", "class"] + cols + ["pairs"], summary_rows))
    files.append(_csv(out_dir / "evaluate_failures.csv", ["image", "path", "reason"],
                      ([f["image"], f["path"], f["reason"]] for f in result["failures"])))
    meta = {k: v for k, v in result["meta"].items() if k != "files"}
    files.append(str(atomic_write_text(out_dir / "summary.json", json.dumps(
        {**json_summary(result), "curves": {m: {k: v for k, v in r.items() if k.endswith("_curve")}
                                            for m, r in result["summary"].items()}, "meta": meta}, indent=1) + "\n")))
    # The report's evaluation page (seg-xai report DIR) reads metrics.json: per method the overall
    # values, the mean curves and the per-class table; beside the maps when `explain` wrote to DIR too.
    report = {m: {**r["overall"], **{k: v for k, v in r.items() if k.endswith("_curve")}, "per_class": r["per_class"]}
              for m, r in result["summary"].items()}
    report["_meta"] = {"model": s["model"], "layer": s["layer"], "images": result["images"],
                       "failures": len(result["failures"]), "targets": s["targets"], "metrics": ",".join(s["metrics"])}
    files.append(str(atomic_write_text(out_dir / "metrics.json", json.dumps(report, indent=1) + "\n")))
    with_curves = {m: {"deletion_curve": r.get("deletion_curve", []), "insertion_curve": r.get("insertion_curve", []),
                       "deletion_auc": _nan(r["overall"].get("deletion_auc")), "insertion_auc": _nan(r["overall"].get("insertion_auc"))}
                   for m, r in result["summary"].items()}
    if any(v["deletion_curve"] or v["insertion_curve"] for v in with_curves.values()):
        title = f"{s['model']} · layer {s['layer']} · {result['images']} images · targets {s['targets']}"
        files.append(str(save_png(curves_chart(with_curves, title=title), out_dir / "curves.png")))
    files.append(str(save_png(distributions_chart(result, cols), out_dir / "distributions.png")))
    return files


def distributions_chart(result: dict, cols: Sequence[str]):
    """A PIL picture: per metric, one line per method with the per-pair values' range (thin), the
    quartiles (box) and the median (tick)."""
    from PIL import Image, ImageDraw

    methods = list(result["summary"])
    colours = [(31, 119, 180), (214, 39, 40), (44, 160, 44), (148, 103, 189), (255, 127, 14), (23, 190, 207)]
    panel_w, row_h, per_row = 300, 16, 3
    panel_h = 34 + row_h * len(methods)
    n_rows = max(1, math.ceil(len(cols) / per_row))
    picture = Image.new("RGB", (panel_w * per_row, panel_h * n_rows + 10), (255, 255, 255))
    draw = ImageDraw.Draw(picture)
    for i, col in enumerate(cols):
        x0, y0 = (i % per_row) * panel_w + 10, (i // per_row) * panel_h + 6
        values = {m: np.array([r[col] for r in result["rows"] if r["method"] == m and r[col] is not None], dtype=float)
                  for m in methods}
        everything = np.concatenate([v for v in values.values()] + [np.zeros(0)])
        lo, hi = (float(everything.min()), float(everything.max())) if everything.size else (0.0, 1.0)
        hi = hi if hi > lo else lo + 1.0
        draw.text((x0, y0), f"{col}  [{lo:.3g}, {hi:.3g}]", fill=(0, 0, 0))
        w = panel_w - 30

        def px(v):
            return x0 + (v - lo) / (hi - lo) * w

        for j, m in enumerate(methods):
            y = y0 + 20 + j * row_h + row_h // 2
            v = values[m]
            if not v.size:
                continue
            q1, med, q3 = np.percentile(v, [25, 50, 75])
            colour = colours[j % len(colours)]
            draw.line([px(v.min()), y, px(v.max()), y], fill=colour, width=1)
            draw.rectangle([px(q1), y - 4, max(px(q3), px(q1) + 1), y + 4], outline=colour)
            draw.line([px(med), y - 6, px(med), y + 6], fill=(0, 0, 0), width=2)
    for j, m in enumerate(methods):  # legend along the bottom right
        draw.text((10 + 120 * j, picture.height - 12), m, fill=colours[j % len(colours)])
    return picture


def _csv(path: Path, header: list, rows) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    for row in rows:
        writer.writerow(["" if v is None else (repr(v) if isinstance(v, float) else v) for v in row])
    return str(atomic_write_text(path, buf.getvalue()))


def _fmt(v) -> str:
    return "n/a" if v is None or not math.isfinite(v) else f"{v:.3f}"


def _nan(v) -> float:
    return math.nan if v is None else v
