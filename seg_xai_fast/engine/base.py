"""The explain path both runtimes share.

`ExplainerBase` is what `Explainer` (PyTorch) and `OnnxExplainer` (ONNX Runtime) have in common:
the settings every method's runner reads (spec, options, normalize, backend, max_memory_mb,
layer_name, class_names) and the one dispatch — a call checks the images and hands them to the
method's runner (``spec.run``) with the runtime's forwards object. A forwards object is the small
protocol through which runners reach a model, whatever runs it:

    state()                      context manager around a call's forwards (the model's state)
    outputs(images, head=None, labels=True)   one forward → ForwardPass (activations, logits, labels)
    closed_form_outputs(images, find=False, labels=True)   one forward with the verified linear head, or None
    autograd(images, classes, masks, resolution)   the gradient path (PyTorch only)
    original(images, need_layer) / perturbed(...) / layer_batch(...)   the perturbation forwards
    upsample, sample_elements(images, logits)       what the perturbation runs need to know

(engine/perturbation.py's TorchForwards and runtimes/onnx_explainer.py's OnnxForwards.)
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch

from .checks import check_classes, check_resolution
from .outputs import Explanation, ForwardPass, MaskSpec, explain_forward_pass


class ExplainerBase:
    """The shared half of an explainer; subclasses set the settings and implement forwards(),
    check_images(images) and head_of(outputs)."""

    spec = None  # the Method (engine/methods.py)
    options: dict = {}
    normalize: bool = True
    backend: str = "auto"
    max_memory_mb: float = 1024.0
    layer_name: str = ""
    class_names: Optional[tuple] = None

    @property
    def method(self) -> str:
        """The method's name."""
        return self.spec.name

    def __call__(self, images: torch.Tensor, classes: Optional[Sequence[int]] = None, masks: MaskSpec = None,
                 *, resolution: str = "full") -> Explanation:
        """Explain `images` float [B,C,H,W] for `classes` (None: every output class).

        masks: None (each class's predicted pixels), a float Tensor [B,K,H,W] of target regions,
        a Box/Pixel/Component shared by all images, or a list of B of them.
        resolution: "full" (maps at the model output's size) or "layer" (maps [B,K,h,w] at the
        target layer's resolution, before the final upsample: sx.upsample_maps(maps, (H, W))
        gives the "full" maps back to float rounding; a compact form to store or to send).
        """
        images = self.check_images(images)
        check_resolution(resolution)
        return self.explain_checked(images, classes, masks, resolution)

    def explain_checked(self, images: torch.Tensor, classes, masks: MaskSpec, resolution: str) -> Explanation:
        """A call on checked images: the method's runner with this runtime's forwards."""
        return self.spec.run(self, self.forwards(), images, classes, masks, resolution)

    def wraps_calls(self) -> bool:
        """True when a call is more than one runner call (test-time augmentation, several layers):
        forward() then keeps only the images."""
        return False

    def forward(self, images: torch.Tensor, *, labels: bool = True) -> ForwardPass:
        """The first half of a call: one forward pass of `images` float [B,C,H,W].

        When the method's maps follow from one forward's outputs (an activation method, or a
        gradient method through a verified linear head) the pass keeps them (activations, logits,
        labels), so a caller can look at the labels before choosing classes (the video pipeline
        does); otherwise it keeps only the images. explain_outputs finishes. labels=False leaves
        the argmax to explain_outputs (a caller that runs it on another thread).
        """
        images = self.check_images(images)
        if not self.spec.one_forward or self.wraps_calls() or images.ndim == 5:
            return ForwardPass(images)
        forwards = self.forwards()
        if self.spec.needs_gradients:
            outputs = forwards.closed_form_outputs(images, find=True, labels=labels)
            return outputs if outputs is not None else ForwardPass(images)
        return forwards.outputs(images, labels=labels)

    def explain_outputs(self, outputs: ForwardPass, classes: Optional[Sequence[int]] = None, masks: MaskSpec = None,
                        *, resolution: str = "full") -> Explanation:
        """The second half of a call: the explanation of forward()'s result, as __call__'s."""
        check_resolution(resolution)
        if not outputs.has_outputs:  # the whole call runs here
            return self.explain_checked(outputs.images, classes, masks, resolution)
        weight, upsample = self.head_of(outputs)
        class_ids = check_classes(classes, outputs.logits.shape[1], self.class_names)
        res = explain_forward_pass(outputs, self.spec, weight, upsample, class_ids, masks, layer=self.layer_name,
                                   backend=self.backend, max_memory_mb=self.max_memory_mb, resolution=resolution,
                                   options=self.options, normalize=self.normalize)
        res.class_names = self.class_names
        return res

    # --- what each runtime provides

    def forwards(self):
        """This runtime's forwards object (see the module docstring)."""
        raise NotImplementedError

    def check_images(self, images) -> torch.Tensor:
        """`images` checked and moved where the model runs."""
        raise NotImplementedError

    def head_of(self, outputs: ForwardPass) -> tuple:
        """(weight float [L,C], upsample) of the linear head that produced `outputs`, or (None, None)."""
        raise NotImplementedError
