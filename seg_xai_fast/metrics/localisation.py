"""Localisation against ground truth: the pointing game and the energy pointing game."""
from __future__ import annotations

from typing import Sequence

import torch

from ..engine.checks import describe
from .checks import check_class_ids, check_maps, check_number, where_counted


def pointing_game(maps: torch.Tensor, truth: torch.Tensor, classes: Sequence[int], tolerance: float = 15.0) -> torch.Tensor:
    """Pointing-game hits (Zhang et al. 2016), adapted to segmentation.

    maps: float [B,K,H,W]; truth: int [B,H,W] ground-truth class ids; classes: the K class ids.
    A hit: the map's peak pixel (the first maximum in raster order) lies within `tolerance`
    pixels (Euclidean distance between pixel centres) of a ground-truth pixel of the class, i.e.
    inside the class mask dilated by a disc of radius `tolerance`. A constant map (no peak,
    e.g. the all-zero map of a class the model did not predict) is a miss.
    Returns float32 [B,K]: 1 hit, 0 miss, NaN where the class is absent from truth[b].
    Accuracy per class = hits/(hits+misses) = the nanmean over images; see `summarize`.
    """
    maps = check_maps(maps)
    gt = _class_masks(truth, classes, maps, "truth")  # bool [B,K,H,W]
    tolerance = check_number(tolerance, "tolerance", minimum=0.0)
    B, K, H, W = maps.shape
    flat = maps.flatten(2)
    peak = flat.argmax(dim=2)  # [B,K]
    constant = flat.amax(dim=2) == flat.amin(dim=2)
    py = (peak // W).view(B, K, 1, 1)
    px = (peak % W).view(B, K, 1, 1)
    yy = torch.arange(H, device=maps.device).view(1, 1, H, 1)
    xx = torch.arange(W, device=maps.device).view(1, 1, 1, W)
    near = (yy - py) ** 2 + (xx - px) ** 2 <= tolerance**2  # the disc around the peak
    hit = (near & gt).flatten(2).any(dim=2) & ~constant
    return where_counted(hit.float(), gt.flatten(2).any(dim=2))


def energy_pointing_game(maps: torch.Tensor, truth: torch.Tensor, classes: Sequence[int]) -> torch.Tensor:
    """Energy-based pointing game (Wang et al., Score-CAM): the share of the map's mass inside
    the ground-truth mask of the class, Σ_{p∈GT_c} L(p) / Σ_p L(p).

    maps: float [B,K,H,W], non-negative (the ratio ignores their scale); truth: int [B,H,W];
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
    """bool [B,K,H,W]: truth[b] == classes[k], after checking truth against maps [B,K,H,W]."""
    B, K, H, W = maps.shape
    if not isinstance(truth, torch.Tensor) or truth.dtype.is_floating_point or truth.dtype == torch.bool \
            or tuple(truth.shape) != (B, H, W):
        raise ValueError(f"{name} must be an int tensor [B={B},H={H},W={W}] of class ids, got {describe(truth)}")
    ids = check_class_ids(classes)
    if len(ids) != K:
        raise ValueError(f"classes must hold one id per map (K={K}), got {len(ids)}: {ids}")
    ids_t = torch.as_tensor(ids, device=maps.device).view(1, K, 1, 1)
    return truth.to(maps.device)[:, None] == ids_t
