"""The engine: explanations of a PyTorch segmentation model for every requested class of a batch.

capture.py   the model: target layer, output selection, hooks, state restored after each call
checks.py    the arguments every explainer shares (images, classes, masks, resolution)
targets.py   target regions: predicted pixels, masks, Box, Pixel, Component
methods.py   the method registry (name, family, needs gradients, description)
analytic.py  the closed form for linear heads (no backward pass)
outputs.py   ForwardPass and explanations from one forward pass's outputs (any runtime)
explainer.py Explainer: forward, gradients (closed form or batched VJPs), CAM stage
"""
from .capture import InputOf, model_logits
from .explainer import Explainer
from .outputs import Explanation, ForwardPass, upsample_maps
from .targets import Box, Component, Pixel

__all__ = ["Box", "Component", "Explainer", "Explanation", "ForwardPass", "InputOf", "Pixel", "model_logits",
           "upsample_maps"]
