"""Complexity of the maps themselves, with Quantus 0.6's semantics per (image, class): sparseness
(Gini index), complexity (entropy) and effective complexity (pixels above a threshold).

Each takes maps float [B,K,*spatial] (any sign; 2-D or 3-D), applies Quantus's default
preprocessing to every map (divide by its max |value|, then |·|) and returns [B,K].
"""
from __future__ import annotations

import torch

from .checks import check_any_maps, check_number, max_normalised


def sparseness(maps: torch.Tensor) -> torch.Tensor:
    """Gini index of the attributions (Chalasani et al. 2020; Quantus Sparseness):
    with a sorted ascending, a_i ← a_i + 1e-7, G = Σ_i (2i − N − 1)·a_(i) / (N·Σ_i a_(i)).
    1 for a map concentrated on one pixel, 0 for a flat one. float32 [B,K]."""
    a = max_normalised(check_any_maps(maps), absolute=True) + 1e-7
    a = a.sort(dim=2).values
    N = a.shape[2]
    i = torch.arange(1, N + 1, device=a.device, dtype=a.dtype)
    return (((2 * i - N - 1) * a).sum(2) / (N * a.sum(2))).float()


def complexity(maps: torch.Tensor) -> torch.Tensor:
    """Entropy of the attributions' shares (Bhatt et al. 2020; Quantus Complexity):
    p = |a| / Σ|a|, H = −Σ p·log(p + 1e-12). An all-zero map gives NaN (0/0), as in Quantus.
    float32 [B,K]."""
    a = max_normalised(check_any_maps(maps), absolute=True)
    p = a / a.sum(2, keepdim=True)
    return (-(p * torch.log(p + 1e-12)).sum(2)).float()


def effective_complexity(maps: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """The number of pixels whose max-normalised |attribution| exceeds eps (Nguyen & Martínez 2020;
    Quantus EffectiveComplexity). int64 [B,K]."""
    eps = check_number(eps, "eps")
    a = max_normalised(check_any_maps(maps), absolute=True)
    return (a > eps).sum(2)
