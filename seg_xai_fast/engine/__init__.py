"""The engine: explanations of a PyTorch segmentation model for every requested class of a batch.

methods.py     the method registry: one Method object per method, carrying its behaviour;
               register_method for users' methods
catalog.py     the built-in methods' specs and the families' runners
options.py     checks of the methods' options
base.py        ExplainerBase: the explain path both runtimes share (settings, dispatch to the runner)
explainer.py   Explainer: the PyTorch runtime (forward, autograd path, closed-form head cache)
capture.py     the model: target layer, output selection, hooks, state restored after each call
adapters.py    model outputs and layer layouts (Hugging Face, tokens, channels-last) → logits, A
checks.py      the arguments every explainer shares (images, classes, masks, resolution)
targets.py     target regions: predicted pixels, masks, Box, Pixel, Component
outputs.py     ForwardPass, Explanation and explanations from one forward pass's outputs (any runtime)
analytic.py    the closed form for linear heads (no backward pass)
cam_stage.py   how a gradient method's gradients become maps (fused kernel, weights or cam function)
gradients.py   the chunked class VJPs (shared with FullGrad) and the gradient family's runner
curvature.py   the exact check that nothing above a layer curves (ShapleyCAM's Hessian term)
conv_taps.py   convolutions above the layer without the taps that read only padding
fullgrad.py    FullGrad (input and bias gradients)
combine.py     several target layers, test-time augmentation
perturbation.py  the perturbation family's forwards and runner (Score-CAM, Ablation-CAM, RISE, occlusion)
segments.py    segment attributions (feature ablation, Kernel SHAP, LIME)
sliding.py     SlidingWindow: sliding-window inference as a module (MONAI's definition)
sliding_explain.py  gradient CAMs (and occlusion) through a SlidingWindow, window by window
volume.py      volumes [B,C,D,H,W]: the 3-D gradient and activation CAMs
occlusion_nd.py  occlusion of volumes and through a SlidingWindow, RISE of volumes
volume_perturbation.py  Score-CAM and Ablation-CAM of volumes
volume_segments.py  segment attributions of volumes (3-D supervoxels)
volume_maps.py the 3-D runners' shared steps (layer capture, folding, trilinear finish)
"""
from . import catalog  # registers the built-in methods
from .capture import InputOf, model_logits
from .explainer import Explainer
from .outputs import Explanation, ForwardPass, upsample_maps
from .sliding import SlidingWindow
from .targets import Box, Component, Pixel

__all__ = ["Box", "Component", "Explainer", "Explanation", "ForwardPass", "InputOf", "Pixel", "SlidingWindow", "model_logits",
           "upsample_maps"]
