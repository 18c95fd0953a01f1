"""Averages of per-pair results: over images for each class, then over classes."""
from __future__ import annotations

import torch

from ..engine.checks import describe


def summarize(values: torch.Tensor) -> torch.Tensor:
    """Mean over classes of the per-class mean over images, skipping NaN (uncounted) pairs.

    values: float [B,K,...] → [...]; NaN where no pair was counted at all. Classes without
    any counted image are left out of the mean over classes.
    """
    if not isinstance(values, torch.Tensor) or values.ndim < 2:
        raise ValueError(f"values must be a tensor [B,K,...], got {describe(values)}")
    per_class = torch.nanmean(values.float(), dim=0)  # [K,...]
    return torch.nanmean(per_class, dim=0)


def summarize_per_class(values: torch.Tensor) -> torch.Tensor:
    """The per-class means over images of values float [B,K,...] → [K,...] (NaN: never counted)."""
    return torch.nanmean(values.float(), dim=0)
