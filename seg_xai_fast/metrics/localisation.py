"""Localisation against ground truth: the pointing games, Quantus 0.6's localisation metrics per
(image, class) (relevance mass and rank accuracy, attribution localisation, top-k intersection,
ROC AUC), and the off-target leakage onto other labelled objects."""
from __future__ import annotations

import math
from typing import Sequence

import torch

from ..engine.checks import describe
from .checks import check_any_maps, check_class_ids, check_maps, check_number, check_regions, max_normalised, where_counted


def pointing_game(maps: torch.Tensor, truth: torch.Tensor, classes: Sequence[int], tolerance: float = 15.0) -> torch.Tensor:
    """Pointing-game hits (Zhang et al. 2016), adapted to segmentation.

    maps: float [B,K,H,W] (volumes: [B,K,D,H,W]); truth: int [B,H,W] ([B,D,H,W]) ground-truth
    class ids; classes: the K class ids. A hit: the map's peak pixel (the first maximum in raster order) lies within `tolerance`
    pixels (Euclidean distance between pixel centres) of a ground-truth pixel of the class, i.e.
    inside the class mask dilated by a disc of radius `tolerance`. A constant map (no peak,
    e.g. the all-zero map of a class the model did not predict) is a miss.
    Returns float32 [B,K]: 1 hit, 0 miss, NaN where the class is absent from truth[b].
    Accuracy per class = hits/(hits+misses) = the nanmean over images; see `summarize`.
    """
    maps = check_maps(maps)
    gt = _class_masks(truth, classes, maps, "truth")  # bool [B,K,*spatial]
    tolerance = check_number(tolerance, "tolerance", minimum=0.0)
    B, K, *spatial = maps.shape
    flat = maps.flatten(2)
    peak = flat.argmax(dim=2)  # [B,K]
    constant = flat.amax(dim=2) == flat.amin(dim=2)
    # squared distance of every pixel (voxel) centre to the peak, one axis at a time
    dist = torch.zeros((B, K) + (1,) * len(spatial), device=maps.device)
    stride = 1
    for axis in reversed(range(len(spatial))):
        n = spatial[axis]
        at = ((peak // stride) % n).view((B, K) + (1,) * len(spatial))
        shape = [1, 1] + [1] * len(spatial)
        shape[2 + axis] = n
        dist = dist + (torch.arange(n, device=maps.device).view(shape) - at) ** 2
        stride *= n
    near = dist <= tolerance**2  # the disc (ball) around the peak
    hit = (near & gt).flatten(2).any(dim=2) & ~constant
    return where_counted(hit.float(), gt.flatten(2).any(dim=2))


def energy_pointing_game(maps: torch.Tensor, truth: torch.Tensor, classes: Sequence[int]) -> torch.Tensor:
    """Energy-based pointing game (Wang et al., Score-CAM): the share of the map's mass inside
    the ground-truth mask of the class, Σ_{p∈GT_c} L(p) / Σ_p L(p).

    maps: float [B,K,H,W] or [B,K,D,H,W], non-negative (the ratio ignores their scale); truth: int
    [B,H,W] or [B,D,H,W];
    classes: the K class ids. A map with zero mass puts no energy on the object and scores 0.
    Returns float32 [B,K] in [0,1], NaN where the class is absent from truth[b].
    """
    maps = check_maps(maps)
    gt = _class_masks(truth, classes, maps, "truth")
    mass = maps.flatten(2).sum(dim=2)
    inside = (maps * gt).flatten(2).sum(dim=2)
    share = torch.where(mass > 0, inside / mass.clamp(min=1e-30), torch.zeros_like(mass))
    return where_counted(share.float(), gt.flatten(2).any(dim=2))


def _class_masks(truth, classes, maps: torch.Tensor, name: str) -> torch.Tensor:
    """bool [B,K,*spatial]: truth[b] == classes[k], after checking truth against maps [B,K,*spatial]."""
    B, K, *spatial = maps.shape
    if not isinstance(truth, torch.Tensor) or truth.dtype.is_floating_point or truth.dtype == torch.bool \
            or tuple(truth.shape) != (B, *spatial):
        layout = ",".join(f"{a}={n}" for a, n in zip(("D", "H", "W")[-len(spatial):], spatial))
        raise ValueError(f"{name} must be an int tensor [B={B},{layout}] of class ids, got {describe(truth)}")
    ids = check_class_ids(classes)
    if len(ids) != K:
        raise ValueError(f"classes must hold one id per map (K={K}), got {len(ids)}: {ids}")
    ids_t = torch.as_tensor(ids, device=maps.device).view((1, K) + (1,) * len(spatial))
    return truth.to(maps.device)[:, None] == ids_t


# --------------------------------------------------------------------------- Quantus 0.6's localisation
# Each takes maps float [B,K,*spatial] (any sign; 2-D or 3-D) and regions bool [B,K,*spatial] (the
# ground-truth region of each (image, class) pair; `class_regions` builds them from label maps),
# preprocesses every map as Quantus does by default (divide by its max |value|, then |·| where the
# Quantus metric takes abs by default) and returns float32 [B,K], NaN where the region is empty.


def class_regions(labels: torch.Tensor, classes: Sequence[int]) -> torch.Tensor:
    """Ground-truth regions: labels int [B,*spatial], classes K ids → bool [B,K,*spatial]."""
    if not isinstance(labels, torch.Tensor) or labels.dtype.is_floating_point or labels.dtype == torch.bool \
            or labels.ndim < 2:
        raise ValueError(f"labels must be an int tensor [B,*spatial] of class ids, got {describe(labels)}")
    ids = torch.as_tensor(check_class_ids(classes), device=labels.device)
    return labels[:, None] == ids.view(1, -1, *([1] * (labels.ndim - 1)))


def relevance_mass_accuracy(maps: torch.Tensor, regions: torch.Tensor) -> torch.Tensor:
    """Relevance mass accuracy (Arras et al. 2022; Quantus RelevanceMassAccuracy, abs=False):
    Σ_{p∈S} a(p) / Σ_p a(p) of the max-normalised map. A map of zero mass gives NaN (0/0), as in
    Quantus. Returns float32 [B,K], NaN where the region S is empty."""
    a, s = _prepared(maps, regions, absolute=False)
    return _counted((a * s).sum(2) / a.sum(2), s)


def relevance_rank_accuracy(maps: torch.Tensor, regions: torch.Tensor) -> torch.Tensor:
    """Relevance rank accuracy (Arras et al. 2022; Quantus RelevanceRankAccuracy, abs=False): the
    share of the |S| highest-attributed pixels that lie in S. Equal values are ranked in index
    order (Quantus's np.argsort leaves their order unspecified). float32 [B,K], NaN for empty S."""
    a, s = _prepared(maps, regions, absolute=False)
    order = torch.sort(-a, dim=2, stable=True).indices  # most relevant first
    size = s.sum(2, keepdim=True)
    top = torch.arange(a.shape[2], device=a.device).view(1, 1, -1) < size  # [B,K,N]: the first |S| ranks
    hits = (s.gather(2, order) & top).sum(2)
    return _counted(hits / size.squeeze(2).clamp(min=1), s)


def attribution_localisation(maps: torch.Tensor, regions: torch.Tensor) -> torch.Tensor:
    """Attribution localisation (Kohlbrenner et al. 2020; Quantus AttributionLocalisation with its
    defaults: abs=True, weighted=False): Σ_{p∈S} |a(p)| / (Σ_p |a(p)| + 1e-9) of the max-normalised
    map. float32 [B,K], NaN where S is empty."""
    a, s = _prepared(maps, regions, absolute=True)
    ratio = (a * s).sum(2) / (a.sum(2) + 1e-9)
    return _counted(ratio, s)


def top_k_intersection(maps: torch.Tensor, regions: torch.Tensor, k: int = 1000) -> torch.Tensor:
    """Top-k intersection (Theiner et al. 2021; Quantus TopKIntersection, abs=False): the share of
    the k highest-attributed pixels that lie in S (equal values in index order). float32 [B,K],
    NaN where S is empty."""
    a, s = _prepared(maps, regions, absolute=False)
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= a.shape[2]:
        raise ValueError(f"k must be an int in [1, {a.shape[2]}] (the pixels of a map), got {k!r}")
    order = torch.sort(-a, dim=2, stable=True).indices[..., :k]
    return _counted(s.gather(2, order).double().mean(2), s)


def roc_auc(maps: torch.Tensor, regions: torch.Tensor) -> torch.Tensor:
    """Area under the ROC curve of the map as a detector of S (Fawcett 2006; Quantus AUC, which uses
    sklearn's roc_curve and auc): the Mann-Whitney statistic, ties counting one half, computed from
    average ranks, (Σ_{p∈S} rank(p) − |S|(|S|+1)/2) / (|S|·|¬S|). float32 [B,K], NaN where S is
    empty or covers the whole map (no negatives: sklearn's curve is undefined)."""
    a, s = _prepared(maps, regions, absolute=False)
    ranks = _average_ranks64(a)
    pos = s.sum(2).double()
    neg = s.shape[2] - pos
    u = (ranks * s).sum(2) - pos * (pos + 1) / 2
    value = u / (pos * neg).clamp(min=1)
    return where_counted(value.float(), (pos > 0) & (neg > 0))


def off_target_leakage(maps: torch.Tensor, labels: torch.Tensor, classes: Sequence[int],
                       ignore_index: int = 255) -> torch.Tensor:
    """The share of a class's positive attribution on other labelled objects.

    maps float [B,K,*spatial]; labels int [B,*spatial]; classes: the K class ids (0 is the
    background). For pair (b, k): Σ_{p: labels ∉ {c_k, 0, ignore}} a⁺(p) / Σ_{p: labels ≠ ignore} a⁺(p),
    a⁺ = max(a, 0). float32 [B,K] in [0,1]; NaN where the map has no positive mass on the
    non-ignored pixels, or no other foreground object is labelled in the image (nothing to leak to).
    """
    maps = check_any_maps(maps)
    B, K = maps.shape[:2]
    if not isinstance(labels, torch.Tensor) or labels.dtype.is_floating_point or labels.dtype == torch.bool \
            or tuple(labels.shape) != (B,) + tuple(maps.shape[2:]):
        raise ValueError(f"labels must be an int tensor [B={B},*spatial={list(maps.shape[2:])}] of class ids, "
                         f"got {describe(labels)}")
    if isinstance(ignore_index, bool) or not isinstance(ignore_index, int):
        raise ValueError(f"ignore_index must be an int, got {ignore_index!r}")
    ids = torch.as_tensor(check_class_ids(classes), device=maps.device)
    if len(ids) != K:
        raise ValueError(f"classes must hold one id per map (K={K}), got {len(ids)}")
    lab = labels.to(maps.device).flatten(1)[:, None]  # [B,1,N]
    valid = lab != ignore_index
    other = valid & (lab != 0) & (lab != ids.view(1, -1, 1))  # [B,K,N]
    positive = maps.flatten(2).double().clamp(min=0) * valid
    total = positive.sum(2)
    leak = (positive * other).sum(2)
    return where_counted((leak / total.clamp(min=1e-300)).float(), (total > 0) & other.any(2))


def _prepared(maps: torch.Tensor, regions: torch.Tensor, absolute: bool) -> tuple:
    """Quantus's preprocessing: (float64 [B,K,N] max-normalised maps, bool [B,K,N] regions)."""
    maps = check_any_maps(maps)
    regions = check_regions(regions, maps)
    return max_normalised(maps, absolute), regions.flatten(2)


def _counted(values: torch.Tensor, regions: torch.Tensor) -> torch.Tensor:
    """values [B,K] as float32, NaN where regions [B,K,N] is empty."""
    return where_counted(values.float(), regions.any(2))


def _average_ranks64(x: torch.Tensor) -> torch.Tensor:
    """Ranks 1..N along the last dimension, ties sharing their average rank, in float64 (exact for
    the pixel counts of 3-D volumes too). x: [...,N] → float64 [...,N]."""
    values, order = x.sort(dim=-1, stable=True)
    N = x.shape[-1]
    position = torch.arange(1, N + 1, device=x.device, dtype=torch.float64).expand_as(values)
    new_run = torch.ones_like(values, dtype=torch.bool)
    new_run[..., 1:] = values[..., 1:] != values[..., :-1]
    run = new_run.long().cumsum(-1) - 1  # run id within each row
    first = torch.full_like(position, math.inf).scatter_reduce(-1, run, position, "amin")
    last = torch.full_like(position, -math.inf).scatter_reduce(-1, run, position, "amax")
    mean_rank = ((first + last) / 2).gather(-1, run)
    return torch.empty_like(mean_rank).scatter_(-1, order, mean_rank)
