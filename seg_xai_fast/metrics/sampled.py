"""Faithfulness measured on randomly perturbed copies of an image: faithfulness correlation
(Bhatt et al. 2020) and infidelity (Yeh et al. 2019, as captum.metrics.infidelity).

The perturbations do not depend on the maps, so every pair of an image — all K classes, and the
maps of several methods passed side by side along K (classes may repeat) — scores from the same
perturbed batch: `samples` forwards per image whatever K. Each image draws its perturbations from
a generator seeded with `seed`, so a result does not depend on how images were batched.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

import torch
import torch.nn as nn

from .checks import check_int, check_number, where_counted
from .faithfulness import check_pairs
from .scores import region_scores


def faithfulness_correlation(
    model: nn.Module,
    images: torch.Tensor,
    maps: torch.Tensor,
    classes: Sequence[int],
    *,
    regions: Optional[torch.Tensor] = None,
    subset_size: int = 224,
    samples: int = 32,
    baseline: float = 0.0,
    seed: int = 0,
    output_key: str = "out",
    forward_batch: int = 32,
) -> torch.Tensor:
    """Faithfulness correlation (Bhatt et al. 2020; Quantus FaithfulnessCorrelation) on s_c.

    images: float [B,C,H,W]; maps: float [B,K,H,W]; classes: K ids; regions: bool [B,K,H,W]
    frozen M_c (None: from the clean prediction); volumes: images [B,C,D,H,W], maps and regions
    [B,K,D,H,W], pixels being voxels. Sample i = 1..n draws `subset_size` pixels S_i
    uniformly without replacement and sets them to `baseline` in every channel (x_i). The result is
    the Pearson correlation over the samples between Σ_{p∈S_i} map(p) and s_c(x) − s_c(x_i).
    Returns float32 [B,K]; NaN where M_c is empty or either side is constant over the samples.
    """
    images, maps, ids, regions = check_pairs(model, images, maps, classes, regions, output_key, forward_batch)
    B, K, *spatial = maps.shape
    N = math.prod(spatial)
    n = check_int(samples, "samples", minimum=2)
    size = check_int(subset_size, "subset_size")
    if size > N:
        raise ValueError(f"subset_size must be at most the image's {N} pixels (voxels), got {size}")
    fill = check_number(baseline, "baseline")
    out = torch.full((B, K), math.nan)
    for b in range(B):
        generator = torch.Generator().manual_seed(seed)
        subsets = torch.stack([torch.randperm(N, generator=generator)[:size] for _ in range(n)])  # [n,size]
        chosen = torch.zeros(n, N, dtype=torch.bool).scatter_(1, subsets, True).to(images.device)  # [n,N]
        x = images[b : b + 1]
        perturbed = torch.where(chosen.view(n, 1, *spatial), torch.full_like(x, fill), x)
        drop, valid = _score_drops(model, x, perturbed, ids, regions[b], output_key, forward_batch)  # [n,K]
        attributed = (chosen.double() @ maps[b].flatten(1).double().T).cpu()  # [n,K]
        out[b] = where_counted(_pearson(attributed, drop).cpu(), valid)
    return out


def infidelity(
    model: nn.Module,
    images: torch.Tensor,
    maps: torch.Tensor,
    classes: Sequence[int],
    *,
    regions: Optional[torch.Tensor] = None,
    noise_std: float = 0.1,
    samples: int = 32,
    seed: int = 0,
    output_key: str = "out",
    forward_batch: int = 32,
) -> torch.Tensor:
    """Infidelity (Yeh et al. 2019; captum.metrics.infidelity with normalize=False) on s_c.

    Sample i = 1..n draws a perturbation I_i ~ N(0, noise_std²) of the image's shape [C,*spatial];
    the map, one value per pixel, counts for every channel. The result is
    mean_i (Σ_{ch,p} I_i(ch,p)·map(p) − (s_c(x) − s_c(x − I_i)))². Lower is better.
    Arguments as `faithfulness_correlation`. Returns float32 [B,K]; NaN where M_c is empty.
    """
    images, maps, ids, regions = check_pairs(model, images, maps, classes, regions, output_key, forward_batch)
    B, K = maps.shape[:2]
    n = check_int(samples, "samples")
    std = check_number(noise_std, "noise_std", minimum=0.0)
    out = torch.full((B, K), math.nan)
    for b in range(B):
        generator = torch.Generator().manual_seed(seed)
        noise = (torch.randn((n,) + tuple(images.shape[1:]), generator=generator) * std).to(images.device, images.dtype)
        x = images[b : b + 1]
        drop, valid = _score_drops(model, x, x - noise, ids, regions[b], output_key, forward_batch)  # [n,K]
        explained = (noise.sum(1).flatten(1).double() @ maps[b].flatten(1).double().T).cpu()  # [n,K]: Σ I·map
        out[b] = where_counted((explained - drop).square().mean(0).cpu(), valid)
    return out


def _score_drops(model, x, perturbed, ids, regions, output_key, forward_batch):
    """(s_c(x) − s_c(x_i) float64 [n,K], the pairs with a non-empty region bool [K])."""
    valid = regions.flatten(1).any(1)
    scores = region_scores(model, torch.cat([x, perturbed]), ids, regions, output_key=output_key,
                           forward_batch=forward_batch).double().cpu()
    return scores[:1] - scores[1:], valid.cpu()


def _pearson(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pearson correlation of the columns of a, b float64 [n,K] → [K]; NaN where either is constant."""
    a = a - a.mean(0)
    b = b - b.mean(0)
    norm = (a.square().sum(0) * b.square().sum(0)).sqrt()
    return torch.where(norm > 0, (a * b).sum(0) / norm.clamp(min=1e-300), torch.full_like(norm, math.nan))
