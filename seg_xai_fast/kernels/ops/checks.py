"""Argument checks shared by the ops: each raises a TypeError or ValueError naming the argument,
what was expected and what came (the Python side of csrc/check.cpp)."""
from __future__ import annotations

from typing import Sequence, Tuple

import torch

FLOATS = (torch.float32, torch.float16, torch.bfloat16)  # what the compiled core runs (dispatch.py)
#: What the ops accept: float64 too (float64 models), served by the pure-PyTorch twins.
ACCEPTED_FLOATS = FLOATS + (torch.float64,)


def tensor_arg(name: str, t, ndim: int, dtypes: Sequence[torch.dtype] = ACCEPTED_FLOATS) -> torch.Tensor:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"argument '{name}' must be a torch.Tensor, got {type(t).__name__}")
    if t.dim() != ndim:
        raise ValueError(
            f"argument '{name}' must have {ndim} dimensions, got {t.dim()} (shape {list(t.shape)})"
        )
    if t.dtype not in dtypes:
        names = ", ".join(str(d).replace("torch.", "") for d in dtypes)
        raise TypeError(f"argument '{name}' must have dtype in ({names}), got {t.dtype}")
    if t.numel() == 0:
        raise ValueError(f"argument '{name}' must not be empty, got shape {list(t.shape)}")
    return t


def same_device(**tensors: torch.Tensor) -> torch.device:
    (first_name, first), *rest = tensors.items()
    for name, t in rest:
        if t.device != first.device:
            raise ValueError(
                f"argument '{name}' is on {t.device} but argument '{first_name}' is on "
                f"{first.device}; all tensors must be on one device"
            )
    return first.device


def match_dim(name: str, t: torch.Tensor, dim: int, size: int, what: str) -> None:
    if t.shape[dim] != size:
        raise ValueError(
            f"argument '{name}' must have size {size} ({what}) in dimension {dim}, "
            f"got shape {list(t.shape)}"
        )


def size_pair(name: str, size) -> Tuple[int, int]:
    try:
        h, w = (int(s) for s in size)
    except (TypeError, ValueError):
        raise ValueError(f"argument '{name}' must be a pair (H, W) of ints, got {size!r}") from None
    if h < 1 or w < 1:
        raise ValueError(f"argument '{name}' must be positive, got {(h, w)}")
    return h, w


def size_triple(name: str, size) -> Tuple[int, int, int]:
    try:
        d, h, w = (int(s) for s in size)
    except (TypeError, ValueError):
        raise ValueError(f"argument '{name}' must be a triple (D, H, W) of ints, got {size!r}") from None
    if d < 1 or h < 1 or w < 1:
        raise ValueError(f"argument '{name}' must be positive, got {(d, h, w)}")
    return d, h, w


def method_arg(method: str, allowed: Sequence[str]) -> str:
    if method not in allowed:
        raise ValueError(f"argument 'method' must be one of {tuple(allowed)}, got {method!r}")
    return method


def class_list(classes) -> list:
    return [int(c) for c in (classes.tolist() if isinstance(classes, torch.Tensor) else classes)]
