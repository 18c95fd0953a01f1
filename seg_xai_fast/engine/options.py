"""Method options: one dict per explainer (``options={...}``), checked against the method's spec.

Each method's spec (methods.py) lists its options with their defaults; this module checks a
user's dict against them. Every error names the option, what was expected and what came.
"""
from __future__ import annotations

import math
from typing import Callable, Optional

import torch

from ..kernels.reference import GRADIENT_CAM_METHODS, POOL_REDUCTIONS, SCORE_TYPES
from .method_maths import KPCA_KERNELS
from .methods import get_method

BASELINES = ("mean", "blur")
FEATURES = ("predicted", "slic")
MAX_FEATURES = 4096  # segments per image: coalitions are [n, M] and the least squares [n, M+1]


def _int(low: Optional[int]) -> Callable:
    def check(key, value):
        if not isinstance(value, int) or isinstance(value, bool) or (low is not None and value < low):
            bound = f" ≥ {low}" if low is not None else ""
            raise ValueError(f"option {key!r} must be an int{bound}, got {value!r}")
        return value
    return check


def _pair(key, value) -> tuple:
    """An int → (v, v); a pair (h, w), or a triple (d, h, w) for volumes, as given."""
    pair = (value, value) if isinstance(value, int) and not isinstance(value, bool) else value
    if (not isinstance(pair, (tuple, list)) or len(pair) not in (2, 3)
            or not all(isinstance(v, int) and not isinstance(v, bool) for v in pair)):
        raise TypeError(f"option {key!r} must be an int or a pair (h, w) of ints (a triple (d, h, w) for volumes), "
                        f"got {value!r}")
    if min(pair) < 1:
        raise ValueError(f"option {key!r} must be ≥ 1 in both dimensions, got {value!r}")
    return tuple(pair)


def _probability(key, value):
    if not (isinstance(value, (int, float)) and not isinstance(value, bool) and 0 < value < 1):
        raise ValueError(f"option {key!r} must be a probability in (0, 1), got {value!r}")
    return value


def _one_of(choices: tuple) -> Callable:
    def check(key, value):
        if value not in choices:
            raise ValueError(f"option {key!r} must be one of {list(choices)}, got {value!r}")
        return value
    return check


def _baseline(key, value):
    if isinstance(value, str) and value in BASELINES:
        return value
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
        raise TypeError(f"option {key!r} must be a finite float, {' or '.join(map(repr, BASELINES))}, got {value!r}")
    return value


def _bool(key, value):
    if not isinstance(value, bool):
        raise TypeError(f"option {key!r} must be True or False, got {value!r}")
    return value


def _features(key, value):
    """"predicted", "slic" or an int64 label map [B,H,W] ([B,D,H,W] for volumes; its shape is
    checked against the images when the explainer is called, in segments.py / volume_segments.py)."""
    if isinstance(value, str) and value in FEATURES:
        return value
    if isinstance(value, torch.Tensor):
        if value.dtype != torch.int64 or value.ndim not in (3, 4):
            raise TypeError(f"option {key!r} must be a label map: an int64 (torch.long) Tensor [B,H,W], got "
                            f"{value.dtype} of shape {list(value.shape)} (volumes: [B,D,H,W])")
        return value
    raise TypeError(f"option {key!r} must be {' or '.join(map(repr, FEATURES))} or an int64 Tensor [B,H,W] "
                    f"label map, got {value!r}")


def _positive(key, value):
    if not (isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0):
        raise ValueError(f"option {key!r} must be a positive finite float, got {value!r}")
    return float(value)


def _finite(key, value):
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
        raise TypeError(f"option {key!r} must be a finite number, got {value!r}")
    return value


def _gamma(key, value):
    if value is None:
        return value
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"option {key!r} must be None (1/channels) or a finite number > 0, got {value!r}")
    return float(value)


def _ranks(key, value) -> tuple:
    if (not isinstance(value, (tuple, list)) or not value
            or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in value)):
        raise ValueError(f"option {key!r} must be a non-empty sequence of ints ≥ 1 (ranks of the most similar "
                         f"classes; rank 0 is the target itself), got {value!r}")
    return tuple(value)


#: How each option is checked (and normalised: windows become pairs).
CHECKS: dict[str, Callable] = {
    "batch_size": _int(1),
    "n_masks": _int(1),
    "grid": _int(2),
    "seed": _int(None),
    "p": _probability,
    "score": _one_of(SCORE_TYPES),
    "window": _pair,
    "stride": _pair,
    "baseline": _baseline,
    "aug_smooth": _bool,  # test-time augmentation of the gradient methods (combine.py)
    "features": _features,
    "n_segments": _int(1),
    "n_samples": _int(1),
    "kernel_width": _positive,
    "context": _bool,
    "eigen_smooth": _bool,
    "pool": _int(1),
    "reduce": _one_of(POOL_REDUCTIONS),
    "kernel": _one_of(KPCA_KERNELS),
    "gamma": _gamma,
    "k": _finite,
    "alpha": _finite,
    "comparison_categories": _ranks,
    "base_method": _one_of(GRADIENT_CAM_METHODS),
}


def check_options(method, options: Optional[dict]) -> dict:
    """The options of `method` (a name or a spec) with its defaults filled in, each checked by the
    spec's own check or this module's shared one (options without either are taken as given)."""
    spec = get_method(method)
    valid = dict(spec.options)
    if options is None:
        options = {}
    if not isinstance(options, dict):
        raise TypeError(f"options must be a dict, got {type(options).__name__}")
    unknown = sorted(set(options) - set(valid))
    if unknown:
        known = sorted(valid) if valid else "none"
        raise ValueError(f"options {unknown} are not options of method {spec.name!r}; valid options: {known}")
    checks = {**CHECKS, **spec.checks} if spec.builtin else spec.checks  # a user's option is not ours to check
    return {key: checks.get(key, lambda k, v: v)(key, value) for key, value in {**valid, **options}.items()}


__all__ = ["BASELINES", "CHECKS", "FEATURES", "MAX_FEATURES", "check_options"]
