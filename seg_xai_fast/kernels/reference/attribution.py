"""Twins of csrc/attribution.cpp: the accumulation of input gradients over the path steps and
noise samples of the attribution methods, and the channel reduction of attributions into maps.

Shapes: n classes in a chunk, G inputs (path steps × noise samples) per forward, R = B·C·(spatial)
elements of one input batch, K explained classes, B images, C channels, N spatial elements.
"""
from __future__ import annotations

from typing import Optional

import torch

from .normalize import normalize_maps


def attribution_accumulate(grads: torch.Tensor, weights: torch.Tensor, mult: Optional[torch.Tensor],
                           rows: torch.Tensor, total: torch.Tensor, total_sq: Optional[torch.Tensor] = None,
                           abs: bool = False) -> torch.Tensor:
    """In place: total[rows[i]] += Σ_g f(w_g·m_g·grads[i,g]) and total_sq[rows[i]] += Σ_g f(·)²,
    f = |·| when abs else the identity, m_g = mult[g] (1 when mult is None).

    grads float32 [n,G,R]; weights float32 [G]; mult float32 [G,R] or None; rows int64 [n]
    (distinct); total, total_sq float32 [K,R]. Returns total.
    """
    a = grads * weights.view(1, -1, 1)
    if mult is not None:
        a = a * mult.unsqueeze(0)
    if abs:
        a = a.abs()
    total[rows] += a.sum(dim=1)
    if total_sq is not None:
        total_sq[rows] += (a * a).sum(dim=1)
    return total


def attribution_maps(attributions: torch.Tensor, normalize: bool = True) -> torch.Tensor:
    """attributions float [B,K,C,N] → maps float32 [B,K,N]: the sum over channels, then (normalize)
    ReLU and per-map min-max (normalize_maps)."""
    maps = attributions.float().sum(dim=2)
    return normalize_maps(maps.unsqueeze(-1)).squeeze(-1) if normalize else maps
