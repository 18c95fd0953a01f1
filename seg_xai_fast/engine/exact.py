"""The exact path, and the check that proves the fast one.

The definition of a gradient method's G: the gradient of the target score with respect to the
target layer's output A, by plain autograd through the whole model — every reader of A, every
operation as the model runs it. The fast path (engine/explainer.py) cuts the graph at A, starts
its backward passes at the logits before the final upsample, prunes convolution taps that read
only padding and, for a linear head, uses the closed form. Each of these is exact only if the
model's graph is what the engine assumes, so before the fast path is trusted for a (model, layer,
input shape), `verify` compares its gradients with the exact ones for one random cotangent of the
logits (a random direction: no batch whose logits happen to be flat can hide a difference). Where
they differ the exact path explains instead: one forward with the graph from the input up and one
VJP per class from the full-resolution logits to A.
"""
from __future__ import annotations

from contextlib import ExitStack
from dataclasses import dataclass
from typing import Optional

import torch

from .. import kernels
from .adapters import layer_activations
from .capture import ForwardCapture, select_output

#: Fast and exact gradients agree to this fraction of the largest exact one: float32 rounding of
#: different summation orders (the pruned convolutions, the pulled-back seeds), measured ≤ 2e-6.
VERIFY_RTOL = 1e-4
#: verify's answer when both gradients are zero (every path saturated, e.g. by a clamp or ReLUs on
#: this batch): the fast path is right for this batch, but nothing was proven for the next.
INCONCLUSIVE = "inconclusive: the exact gradients are zero on this batch"


@dataclass
class ExactPass:
    """One forward with the graph from the input up: the logits [B,L,H,W], the tensor the target
    module produced (or took, for InputOf) in the chosen call, and how it becomes A [B,C,h,w]."""

    logits: torch.Tensor
    raw: torch.Tensor
    capture: ForwardCapture

    def activations(self) -> torch.Tensor:
        return self.capture.activations().detach()

    def gradients(self, grads_of_raw: torch.Tensor) -> torch.Tensor:
        """Gradients at `raw` [n,*raw.shape] → at A [n,B,C,h,w] (the same reshape as A's)."""
        n, flat = grads_of_raw.shape[0], grads_of_raw.reshape(-1, *grads_of_raw.shape[2:])
        cap = self.capture
        G, _ = layer_activations(flat, cap.reshape, cap.image_size, cap.layer_name, False, cap.layout, cap.strides,
                                 cap.prefix)
        return G.reshape(n, -1, *G.shape[1:])


def exact_pass(explainer, images: torch.Tensor, stack) -> ExactPass:
    """The exact forward of checked `images` inside `stack` (an ExitStack the caller closes once
    it has its gradients): the images are a leaf, so the graph runs through everything the model
    computes, the target module included."""
    cap = stack.enter_context(explainer.capture(exact=True))
    with torch.enable_grad():
        x = images.detach().clone().requires_grad_(True)
        logits = select_output(explainer.model(x), explainer.output_key, images.shape[0])
    cap.activations()  # the call exists (a clear error otherwise)
    raw = cap.raw_tensor()
    if not raw.requires_grad or not logits.requires_grad:
        raise ValueError(f"target_layer {explainer.layer_name!r}: the model's output does not depend differentiably "
                         "on the layer (or the layer on the input), so its gradients have no exact reference")
    return ExactPass(logits, raw, cap)


def verify(explainer, images: torch.Tensor, start: torch.Tensor, leaf: torch.Tensor,
           upsample: Optional[tuple], dual: bool = False) -> Optional[str]:
    """None when the fast pass's gradients (from `start`, the logits or the logits before the
    upsample `upsample`, to `leaf`, A) equal the exact ones for a random cotangent of the logits;
    INCONCLUSIVE when both are zero; else what differs, naming the shortcut that fails. dual: `start` was computed from a dual
    tensor (ShapleyCAM's second-order pass)."""
    with ExitStack() as stack:
        ex = exact_pass(explainer, images, stack)
        generator = torch.Generator().manual_seed(0)
        r = torch.randn(ex.logits.shape, generator=generator).to(ex.logits)
        (exact_raw,) = torch.autograd.grad((ex.logits * r).sum(), ex.raw)  # summed: see capture.linear_head
        exact = ex.gradients(exact_raw[None])[0]
    # pulled back by the kernel the fast path's seeds come from, so the check covers it too
    seeds = r if upsample is None else kernels.mask_seeds(r, upsample[0], upsample[1]).to(r)
    # (on a dual graph the backward is recorded, as the second-order pass runs it: a backward op run
    # outside autograd would need a forward-mode derivative that torch lacks for some, e.g. SiLU's)
    (fast,) = torch.autograd.grad((start * seeds).sum(), leaf, retain_graph=True, allow_unused=True, create_graph=dual)
    fast = torch.zeros_like(leaf) if fast is None else fast.detach()
    if not (torch.isfinite(fast).all() and torch.isfinite(exact).all()):
        return None  # nothing to compare: the CAM stage reports the non-finite gradients themselves
    if fast.shape != exact.shape:
        return (f"the gradients have shape {list(fast.shape)} on the fast path and {list(exact.shape)} by plain "
                "autograd")
    scale = float(exact.abs().max())
    error = float((fast - exact).abs().max())
    if scale == 0 and error == 0:
        return INCONCLUSIVE
    if error <= VERIFY_RTOL * scale + 1e-30:
        return None
    what = "the substituted layer output does not reach every consumer of it, or a rebuilt module differs"
    if upsample is not None:
        return (f"gradients differ from plain autograd by {error:.3g} (largest {scale:.3g}); the backward passes "
                f"start before the final upsample ({list(upsample[0])}, align_corners={upsample[1]}) — if that is "
                f"right, {what}")
    return f"gradients differ from plain autograd by {error:.3g} (largest {scale:.3g}): {what}"


__all__ = ["ExactPass", "INCONCLUSIVE", "VERIFY_RTOL", "exact_pass", "verify"]
