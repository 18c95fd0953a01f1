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
    """maps float [B,K,H,W] or [B,K,D,H,W], finite, non-negative."""
    if not isinstance(maps, torch.Tensor) or maps.ndim not in (4, 5) or not maps.is_floating_point():
        raise ValueError(f"maps must be a float tensor [B,K,H,W] or [B,K,D,H,W], got {describe(maps)}")
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


def check_any_maps(maps, name: str = "maps") -> torch.Tensor:
    """maps float [B,K,*spatial] (one or more spatial dims), finite, of any sign."""
    if not isinstance(maps, torch.Tensor) or maps.ndim < 3 or not maps.is_floating_point():
        raise ValueError(f"{name} must be a float tensor [B,K,*spatial], got {describe(maps)}")
    if not torch.isfinite(maps).all():
        raise ValueError(f"{name} contains NaN or Inf values")
    return maps


def check_regions(regions, maps: torch.Tensor) -> torch.Tensor:
    """regions bool [B,K,*spatial] of maps' shape (the ground-truth region of each pair)."""
    if not isinstance(regions, torch.Tensor) or regions.dtype != torch.bool or regions.shape != maps.shape:
        raise ValueError(f"regions must be a bool tensor of the maps' shape {list(maps.shape)}, got {describe(regions)}")
    return regions.to(maps.device)


def max_normalised(maps: torch.Tensor, absolute: bool) -> torch.Tensor:
    """Quantus 0.6's default preprocessing of one explanation, per (image, class): divide by its
    largest absolute value (an all-zero map stays as it is), then |·| when `absolute`.
    maps float [B,K,*spatial] → float64 [B,K,N] (flattened)."""
    flat = maps.flatten(2).double()
    peak = flat.abs().amax(dim=2, keepdim=True)
    flat = torch.where(peak > 0, flat / peak.clamp(min=1e-300), flat)
    return flat.abs() if absolute else flat


def check_int(value, name: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    return value
