"""Checks of the arguments every explainer, runtime and metric shares (images, classes,
resolution), in one place so that each argument gets the same message everywhere."""
from __future__ import annotations

import numbers
import operator
from typing import Optional, Sequence

import torch

RESOLUTIONS = ("full", "layer")
# The largest |value| a target mask may hold: masks weight the target's pixels (0/1, or soft in
# [0, 1]); far larger weights overflow float32 in the gradient terms (Grad-CAM++'s g³ first) and
# would give wrong maps without a word.
MASK_LIMIT = 1e6


def brief(values: Sequence, n: int = 8) -> str:
    """`values` for an error message: the first n and a count of the rest, so a message about
    10,000 bad ids stays one line."""
    values = list(values)
    if len(values) <= n:
        return repr(values)
    return "[" + ", ".join(repr(v) for v in values[:n]) + f", … ({len(values) - n} more)]"


def describe(x) -> str:
    """What `x` is, for error messages: dtype and shape of a tensor, else its type."""
    if isinstance(x, torch.Tensor):
        return f"{x.dtype} tensor of shape {list(x.shape)}"
    return type(x).__name__


def check_images(images, channels: Optional[int] = None, what: str = "the model's first convolution",
                 ndims: Sequence[int] = (4,)) -> torch.Tensor:
    """images float [B,C,H,W] (with 5 in `ndims`: volumes [B,C,D,H,W] too), B ≥ 1, finite;
    channels: the input channels expected, if known (`what` says where that number comes from)."""
    layout = "[B,C,H,W]" if tuple(ndims) == (4,) else "[B,C,H,W] (images) or [B,C,D,H,W] (volumes)"
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"images must be a torch.Tensor {layout}, got {type(images).__name__}")
    if images.ndim not in ndims:
        dims = " or ".join(str(n) for n in ndims)
        raise ValueError(f"images must have {dims} dimensions {layout}, got shape {list(images.shape)}")
    if not images.is_floating_point():
        raise ValueError(f"images must be a float tensor, got dtype {images.dtype}")
    if images.shape[0] == 0:
        raise ValueError("images must hold at least one image, got an empty batch")
    if any(s == 0 for s in images.shape[2:]):
        raise ValueError(f"images must be at least 1×1 pixels, got shape {list(images.shape)} (1 pixel along every spatial axis)")
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


def check_classes(classes, num_classes: int, names: Optional[Sequence[str]] = None) -> list[int]:
    """The explained class ids: `classes` checked, or every class for None.

    Each entry is an int id in [0, num_classes) (an integral float such as 2.0 counts as 2) or,
    when `names` (one per class) is given, a class name. A single id or name may stand alone.
    """
    if classes is None:
        return list(range(num_classes))
    if names is not None and len(names) != num_classes:
        raise ValueError(f"class_names must name every class the model outputs ({num_classes}), "
                         f"got {len(names)} names: {brief(names)}")
    if isinstance(classes, (str, numbers.Number)) or (isinstance(classes, torch.Tensor) and classes.ndim == 0):
        classes = [classes]
    try:
        entries = list(classes)
    except TypeError:
        raise TypeError(f"classes must be None or a sequence of class ids, got {type(classes).__name__}") from None
    if not entries:
        raise ValueError("classes must not be empty (use None for every class)")
    ids = [_class_id(c, names) for c in entries]
    bad = [c for c in ids if not 0 <= c < num_classes]
    if bad:
        raise ValueError(f"classes must be ids in [0, {num_classes - 1}] (the model outputs {num_classes} classes), "
                         f"got {brief(bad)}")
    repeated = sorted({c for c in ids if ids.count(c) > 1}) if len(set(ids)) != len(ids) else []
    if repeated:
        raise ValueError(f"classes must not repeat ids, got {brief(repeated)} more than once")
    return ids


def _class_id(entry, names: Optional[Sequence[str]]) -> int:
    """One entry of `classes` → its id (range not checked here)."""
    if isinstance(entry, str):
        if names is not None and entry in names:
            return list(names).index(entry)
        known = f"one of the class names {brief(names)}" if names is not None else \
            "a class name, which needs class_names=... (this explainer has none)"
        raise ValueError(f"classes must hold int class ids or class names; the string {entry!r} is not {known}")
    if isinstance(entry, bool):  # an int subclass, but never meant as a class id
        raise TypeError(f"classes must hold int class ids, got the bool {entry!r}")
    try:
        return operator.index(entry)  # int, numpy and 0-d integer tensor ids
    except TypeError:
        pass
    try:
        value = float(entry)
    except (TypeError, ValueError):
        raise TypeError(f"classes must hold int class ids, got {type(entry).__name__} {entry!r}") from None
    if not value.is_integer():
        raise ValueError(f"classes must hold whole-number class ids, got {entry!r}")
    return int(value)


def check_int(value, name: str) -> int:
    """`value` as an int, or a TypeError naming `name` (bools and non-integral numbers refused)."""
    if not isinstance(value, bool):
        try:
            return operator.index(value)
        except TypeError:
            pass
    raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}")


def check_masks(masks: torch.Tensor, expected: Sequence[int]) -> torch.Tensor:
    """Target masks float [B,K,H,W] (bool allowed) of shape `expected`, finite and within
    ±MASK_LIMIT; returned as float32 (device unchanged)."""
    if tuple(masks.shape) != tuple(expected):
        raise ValueError(
            f"masks must have shape [B,K,H,W] = {list(expected)} (images, classes, output size), "
            f"got {list(masks.shape)}"
        )
    if masks.dtype == torch.bool:
        masks = masks.float()
    if not masks.is_floating_point():
        raise ValueError(f"masks must be a float or bool tensor, got dtype {masks.dtype}")
    if masks.numel():
        if not torch.isfinite(masks).all():
            raise ValueError("masks contains NaN or Inf values")
        peak = float(masks.abs().max())
        if peak > MASK_LIMIT:
            raise ValueError(f"masks must hold target weights within ±{MASK_LIMIT:g} (0/1 or soft in [0, 1] is usual), "
                             f"got a value of magnitude {peak:.3g}: larger weights overflow float32 in the gradients")
    return masks.float()


def check_class_names(class_names) -> Optional[tuple]:
    """class_names: None or a sequence of distinct str, one per output class → tuple."""
    if class_names is None:
        return None
    if isinstance(class_names, str) or not all(isinstance(n, str) for n in class_names):
        raise TypeError(f"class_names must be a sequence of str (one per output class), got {class_names!r:.200}")
    names = tuple(class_names)
    if len(set(names)) != len(names):
        raise ValueError(f"class_names must be distinct, got {brief(names)}")
    return names


def class_position(class_id, classes: Sequence[int], names: Optional[Sequence[str]] = None) -> int:
    """Where class `class_id` (an id, or a name from `names`) sits in the explained `classes`;
    a ValueError naming the explained classes when it was not explained."""
    explained = brief(classes) + (f" ({brief([names[c] for c in classes])})" if names is not None else "")
    if class_id is None:
        if len(classes) == 1:
            return 0
        raise ValueError(f"class_id is needed when several classes were explained: one of {explained}")
    cid = _class_id(class_id, names)
    if cid not in classes:
        raise ValueError(f"class_id {class_id!r} was not explained; the explained classes are {explained}")
    return list(classes).index(cid)


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
            known = f" or one of {brief(names)}" if names else ""
            raise ValueError(f"{option} must be comma-separated class ids{known}, got {token[:40]!r} in {spec[:80]!r}")
    if len(set(ids)) != len(ids):
        raise ValueError(f"{option} must not repeat a class, got {spec[:80]!r}")
    return ids
