"""seg_xai_fast: fast class-activation-map explanations for semantic-segmentation models.

    import seg_xai_fast as sx
    explainer = sx.Explainer(model, target_layer="backbone.layer4", method="gradcam")
    res = explainer(images)          # every class of the batch from one forward pass
    res.maps                         # float32 [B, K, H, W] in [0, 1]; res.classes: the K class ids

Layers (docs/architecture.md): kernels (fused ops and their reference twins) → engine (model
capture, targets, gradients, the explainer) → runtimes (ONNX) → apps (batch, video, evaluate,
bench) → cli. Each layer imports only the layers before it.
"""
from ._version import __version__
from .kernels import build_info, reference  # kernels raises an ImportError explaining how to build the core
from . import metrics
from .apps.batch import load_explanation
from .apps.video import overlay_stream, write_demo_video
from .demo import CLASS_NAMES, demo_model, synthetic_scenes
from .engine.adapters import as_segmenter
from .engine import Box, Component, Explainer, Explanation, ForwardPass, InputOf, Pixel, SlidingWindow, upsample_maps
from .engine.methods import method_options, methods, register_method
from .kernels import cam_from_gradients, overlay
from .runtimes import OnnxExplainer, export_onnx

__all__ = [
    "Box",
    "CLASS_NAMES",
    "Component",
    "Explainer",
    "Explanation",
    "ForwardPass",
    "InputOf",
    "OnnxExplainer",
    "Pixel",
    "SlidingWindow",
    "__version__",
    "as_segmenter",
    "build_info",
    "cam_from_gradients",
    "demo_model",
    "export_onnx",
    "load_explanation",
    "method_options",
    "methods",
    "metrics",
    "overlay",
    "overlay_stream",
    "reference",
    "register_method",
    "synthetic_scenes",
    "upsample_maps",
    "write_demo_video",
]
