"""seg_xai_fast: fast class-activation-map explanations for semantic-segmentation models.

    import seg_xai_fast as sx
    explainer = sx.Explainer(model, target_layer="backbone.layer4", method="gradcam")
    res = explainer(images)          # every class of the batch from one forward pass
    res.maps                         # float32 [B, K, H, W] in [0, 1]; res.classes: the K class ids
"""
from ._backend import build_info  # raises an ImportError explaining how to build the core
from . import reference
from .demo_model import demo_model
from .explainer import Explainer, Explanation, InputOf, upsample_maps
from .kernels import cam_from_gradients, overlay
from .methods import methods
from .runtimes import OnnxExplainer, export_onnx
from .store import load_explanation
from .video import overlay_stream, write_demo_video
from .scenes import CLASS_NAMES, synthetic_scenes
from .targets import Box, Component, Pixel

__version__ = "0.1.0"

__all__ = [
    "Box",
    "CLASS_NAMES",
    "Component",
    "Explainer",
    "Explanation",
    "InputOf",
    "OnnxExplainer",
    "Pixel",
    "build_info",
    "cam_from_gradients",
    "demo_model",
    "export_onnx",
    "load_explanation",
    "methods",
    "overlay",
    "overlay_stream",
    "reference",
    "synthetic_scenes",
    "upsample_maps",
    "write_demo_video",
]
