"""The CAM stage's kernels: every op with its fused C++/CUDA implementation (the compiled core)
and its pure-PyTorch twin (``kernels.reference``, the oracle the tests compare against).

ops/ validates arguments and dispatches on ``backend`` ("auto" | "fused" | "torch"), one module
per op family as in csrc/; reference/ holds the twins in modules of the same names; backend.py
loads the compiled core; colormaps.py holds the overlay look-up tables.
"""
from . import reference
from .backend import build_info
from .colormaps import COLORMAP_NAMES, colormap_lut
from .ops import (
    BACKENDS,
    analytic_gradcampp_weights,
    attribution_accumulate,
    attribution_maps,
    cam_from_gradients,
    channel_weights,
    class_argmax,
    class_argmax_counts,
    elementwise_cam,
    label_seeds,
    mask_seeds,
    normalize_maps,
    overlay,
    pooled_cam,
    region_scores,
    resize_normalize,
    resize_normalize_3d,
    rise_accumulate,
    rise_inputs,
    scorecam_inputs,
    segment_inputs,
    weighted_cam,
)

__all__ = [
    "BACKENDS",
    "COLORMAP_NAMES",
    "analytic_gradcampp_weights",
    "attribution_accumulate",
    "attribution_maps",
    "build_info",
    "cam_from_gradients",
    "channel_weights",
    "class_argmax",
    "class_argmax_counts",
    "colormap_lut",
    "elementwise_cam",
    "label_seeds",
    "mask_seeds",
    "normalize_maps",
    "overlay",
    "pooled_cam",
    "reference",
    "region_scores",
    "resize_normalize",
    "resize_normalize_3d",
    "rise_accumulate",
    "rise_inputs",
    "scorecam_inputs",
    "segment_inputs",
    "weighted_cam",
]
