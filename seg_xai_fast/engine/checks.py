"""Checks of the arguments every explainer, runtime and metric shares (images, classes,
resolution), in one place so that each argument gets the same message everywhere."""
from __future__ import annotations

from typing import Optional, Sequence

import torch

RESOLUTIONS = ("full", "layer")


def describe(x) -> str:
    """What `x` is, for error messages: dtype and shape of a tensor, else its type."""
    if isinstance(x, torch.Tensor):
        return f"{x.dtype} tensor of shape {list(x.shape)}"
    return type(x).__name__


def check_images(images, channels: Optional[int] = None, what: str = "the model's first convolution") -> torch.Tensor:
    """images float [B,C,H,W], B ≥ 1, finite; channels: the input channels expected, if known
    (`what` says where that number comes from)."""
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"images must be a torch.Tensor [B,3,H,W], got {type(images).__name__}")
    if images.ndim != 4:
        raise ValueError(f"images must have 4 dimensions [B,3,H,W], got shape {list(images.shape)}")
    if not images.is_floating_point():
        raise ValueError(f"images must be a float tensor, got dtype {images.dtype}")
    if images.shape[0] == 0:
        raise ValueError("images must hold at least one image, got an empty batch")
    if channels is not None and images.shape[1] != channels:
        raise ValueError(f"images must have {channels} channels ({what}), got shape {list(images.shape)}")
    check_finite_images(images)
    return images


def check_finite_images(images: torch.Tensor) -> None:
    """ValueError if `images` holds NaN or ±Inf.

    Any NaN or ±Inf makes the sum non-finite, so a finite sum (the common case) needs no
    per-element pass; an overflowing sum of finite values falls through to the exact check.
    """
    if not torch.isfinite(images.sum()) and not torch.isfinite(images).all():
        raise ValueError("images contains NaN or Inf values")


def check_resolution(resolution) -> None:
    if resolution not in RESOLUTIONS:
        raise ValueError(f"resolution must be one of {list(RESOLUTIONS)}, got {resolution!r}")


def check_classes(classes, num_classes: int) -> list[int]:
    """The explained class ids: `classes` (ids in [0, num_classes)) checked, or every class for None."""
    if classes is None:
        return list(range(num_classes))
    if isinstance(classes, int):
        classes = [classes]
    try:
        ids = [int(c) for c in classes]
    except (TypeError, ValueError):
        raise TypeError(f"classes must be None or a sequence of int class ids, got {classes!r}") from None
    if not ids:
        raise ValueError("classes must not be empty (use None for every class)")
    bad = [c for c in ids if not 0 <= c < num_classes]
    if bad:
        raise ValueError(f"classes must be ids in [0, {num_classes - 1}] (the model outputs {num_classes} classes), got {bad}")
    if len(set(ids)) != len(ids):
        raise ValueError(f"classes must not repeat ids, got {ids}")
    return ids


def parse_class_spec(spec: Optional[str], names: Optional[Sequence[str]], option: str = "--classes") -> Optional[list]:
    """A command line's class list: '1,3' or 'disc,square' (names of the model's classes) → [1, 3];
    None, '' or 'all' → None (every class)."""
    if spec is None or spec.strip().lower() in ("", "all"):
        return None
    ids = []
    for token in (t.strip() for t in spec.split(",")):
        if token.isdigit():
            ids.append(int(token))
        elif names and token in names:
            ids.append(list(names).index(token))
        else:
            known = f" or one of {list(names)}" if names else ""
            raise ValueError(f"{option} must be comma-separated class ids{known}, got {token!r} in {spec!r}")
    if len(set(ids)) != len(ids):
        raise ValueError(f"{option} must not repeat a class, got {spec!r}")
    return ids
