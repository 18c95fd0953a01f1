"""The method names the CAM-stage ops accept, in one place: the twins in reference/cam.py dispatch
on them, the wrappers in ops/cam.py check arguments against them (csrc's Method enum and
cam_from_gradients' routes).
"""

#: Methods whose map is Σ_c w_kc·A_c with one weight per (class, channel).
WEIGHTED_METHODS = ("gradcam", "gradcam++", "xgradcam")
#: Methods whose map is an element-wise function of gradients and activations summed over channels.
ELEMENTWISE_METHODS = ("hirescam", "layercam", "gradcam_elementwise")
#: Seg-XRes-CAM: HiResCAM with the gradients pooled in windows (pool_gradients).
POOLED_METHODS = ("segxrescam",)
#: Methods whose map is the first principal component of the per-class weighted activations.
PROJECTION_METHODS = ("eigengradcam", "segeigencam")
#: Every CAM stage computed from activations and gradients (kernels.cam_from_gradients).
GRADIENT_CAM_METHODS = WEIGHTED_METHODS + ELEMENTWISE_METHODS + POOLED_METHODS + PROJECTION_METHODS
#: The CAM stages that are unchanged when a volume's depth is folded into its rows ([B,C,d,h,w] →
#: [B,C,d·h,w]): each is a per-position function of channel sums, means over all positions or a
#: principal component over positions; Seg-XRes-CAM's pooling windows are not.
DEPTH_FOLDABLE_METHODS = WEIGHTED_METHODS + ELEMENTWISE_METHODS + PROJECTION_METHODS
