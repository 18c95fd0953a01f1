"""Torch-facing layer of the fused kernels: validation, output allocation and backend dispatch.

Every op takes ``backend``:
  "fused"  the compiled core (raises if it cannot run these dtypes/devices),
  "torch"  the pure-PyTorch twin in seg_xai_fast.kernels.reference,
  "auto"   fused when the core supports the inputs' dtype and device, else torch.
The core takes float32 inputs on the CPU. On CUDA the post-processing, CAM-stage, seeds and overlay
ops also take float16 and bfloat16 (accumulating in float32); analytic_gradcampp_weights (whose
wrapper converts its inputs to float32) and the perturbation family take float32 alone, so "auto"
runs their twins for other dtypes. Outputs are float32 (resize_normalize and cam_from_gradients:
float16 on request through out_dtype).
Non-contiguous inputs are copied (``.contiguous()``) before the fused path, never rejected.
Every op accepts ``out=``, a contiguous tensor of the result's shape, dtype and device that is
written and returned (the tests pass NaN-filled outputs through it).

One module per op family, as csrc/ and kernels/reference/: normalize (csrc/normalize_maps.cpp,
resize_normalize.cpp, resize_normalize_3d.cpp), cam (channel_weights.cpp, weighted_cam.cpp, elementwise_cam.cpp,
pooled_cam.cpp and the whole CAM stage cam_from_gradients), seeds (class_argmax.cpp, seeds.cpp),
display (overlay.cpp), perturbation (perturbation.cpp). checks.py holds the argument checks,
dispatch.py the backend choice and the calling convention of the core.

Shapes: B images, K explained classes, C channels of the target layer, (h, w) its spatial size,
(H, W) the output/image size, L logit classes.
"""
from .attribution import attribution_accumulate, attribution_maps
from .cam import (
    analytic_gradcampp_weights,
    cam_from_gradients,
    channel_weights,
    elementwise_cam,
    pooled_cam,
    weighted_cam,
)
from .dispatch import BACKENDS
from .display import overlay
from .normalize import normalize_maps, resize_normalize, resize_normalize_3d
from .perturbation import region_scores, rise_accumulate, rise_inputs, scorecam_inputs, segment_inputs
from .seeds import class_argmax, class_argmax_counts, label_seeds, mask_seeds
