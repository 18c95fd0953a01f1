"""Pure-PyTorch twin of every compiled kernel: the oracle in tests and the baseline in benchmarks.

Written the way a competent PyTorch user would write it: readable tensor code, no fusion.
Numerics follow pytorch-grad-cam (docs/algorithms.md) so that the fused kernels, the
explainer and the peer all agree:

    map = N(relu(R(N(relu(cam)))))      N = per-map min-max with eps 1e-7, R = bilinear resize

One module per op family, as kernels/ops/ and csrc/: normalize (normalize_maps, resize_normalize),
cam (channel_weights, weighted_cam, elementwise_cam, pooled_cam and the whole CAM stage), seeds
(class_argmax, the target seeds), display (overlay), perturbation (its five ops). method_names holds
the ids of the built-in CAM stages the kernels dispatch on. The maths of single methods that no
kernel runs (KPCA-CAM, FEM, RandomCAM, Finer-CAM, Ablation-CAM, FullGrad) lives with the methods,
in engine/method_maths.py. Every name is re-exported here: `reference.normalize_maps`,
`reference.WEIGHTED_METHODS`, ...
"""
from .attribution import attribution_accumulate, attribution_maps
from .cam import (
    GRADCAMPP_EPS,
    POOL_REDUCTIONS,
    XGRADCAM_EPS,
    analytic_cam,
    analytic_gradcampp_weights,
    analytic_gradients,
    cam_from_gradients,
    channel_weights,
    eigen_cam,
    elementwise_cam,
    fix_sign,
    pool_gradients,
    postprocess,
    principal_projection,
    raw_cam,
    uses_projection,
    weighted_activations,
    weighted_combine,
)
from .display import overlay
from .method_names import (
    DEPTH_FOLDABLE_METHODS,
    ELEMENTWISE_METHODS,
    GRADIENT_CAM_METHODS,
    POOLED_METHODS,
    PROJECTION_METHODS,
    WEIGHTED_METHODS,
)
from .normalize import (
    MINMAX_EPS,
    normalize_maps,
    normalize_volumes,
    resize_bilinear,
    resize_normalize_3d,
    resize_trilinear,
)
from .perturbation import (
    SCORE_TYPES,
    SCORECAM_EPS,
    region_scores,
    rise_accumulate,
    rise_cell,
    rise_inputs,
    rise_masks,
    scorecam_inputs,
    scorecam_masks,
    segment_inputs,
)
from .seeds import class_argmax, label_counts, label_masks, predicted_masks, upsample_adjoint
