"""Argument checks shared by the metrics, and the NaN marking of uncounted pairs."""
from __future__ import annotations

import math
from typing import Optional

import torch

from ..engine.checks import describe


def where_counted(values: torch.Tensor, counted: torch.Tensor) -> torch.Tensor:
    """values [B,K] where counted [B,K], NaN elsewhere (float32, on the CPU)."""
    return torch.where(counted, values, torch.full_like(values, math.nan)).float().cpu()


def check_number(value, name: str, minimum: Optional[float] = None) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value!r}")
    return float(value)


def check_maps(maps) -> torch.Tensor:
    if not isinstance(maps, torch.Tensor) or maps.ndim != 4 or not maps.is_floating_point():
        raise ValueError(f"maps must be a float tensor [B,K,H,W], got {describe(maps)}")
    if not torch.isfinite(maps).all():
        raise ValueError("maps contains NaN or Inf values")
    if maps.numel() and float(maps.min()) < 0:
        raise ValueError(f"maps must be non-negative (normalised CAMs in [0,1]), got a minimum of {float(maps.min()):.3g}")
    return maps


def check_class_ids(classes) -> list[int]:
    if isinstance(classes, int) and not isinstance(classes, bool):
        classes = [classes]
    try:
        ids = [int(c) for c in classes]
    except (TypeError, ValueError):
        raise ValueError(f"classes must be a sequence of int class ids, got {classes!r}") from None
    if not ids or any(c < 0 for c in ids):  # repeats are fine: e.g. maps of several methods for one class
        raise ValueError(f"classes must be a non-empty sequence of non-negative ids, got {ids}")
    return ids
