"""ShapleyCAM's Hessian term: an exact check that it is zero, and the pass that computes it.

ShapleyCAM weights channels by the mean of g − ½·H·A (H the Hessian of the class score in A).
When every operation between A and the logits is piecewise linear in A — convolutions and matrix
products with fixed weights, ReLU, eval-mode BatchNorm, pooling, resizing, concatenation, sums — H
is exactly zero wherever it exists (autograd's double backward returns zeros there, as the peer's
does), so ShapleyCAM is Grad-CAM and the forward-over-reverse pass that computes H·A (about three
times Grad-CAM's cost) can be skipped. The check walks the graph once, reads each operation's
type, and answers "curved" for anything it does not know: an unknown operation costs time, never
a wrong map. Where it curves, shapley_gradients forms g − ½·H·A by forward-over-reverse (where that
cannot serve: shapley_gradients_reverse, reverse-over-reverse, one class at a time).
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.autograd.forward_ad as fwAD

# Piecewise linear in all their inputs together.
PIECEWISE_LINEAR = frozenset({
    "AddBackward0", "AddBackward1", "SubBackward0", "SubBackward1", "RsubBackward0", "RsubBackward1",
    "NegBackward0", "MulBackward1", "DivBackward1", "SumBackward0", "SumBackward1", "MeanBackward0",
    "MeanBackward1", "ReluBackward0", "ThresholdBackward0", "HardtanhBackward0", "LeakyReluBackward0",
    "LeakyReluBackward1", "AbsBackward0", "ClampBackward0", "ClampBackward1", "ClampMinBackward0",
    "ClampMinBackward1", "ClampMaxBackward0", "ClampMaxBackward1", "MaximumBackward0", "MinimumBackward0",
    "MaxBackward0", "MaxBackward1", "MinBackward0", "MinBackward1", "AmaxBackward0", "AminBackward0",
    "WhereBackward0", "MaxPool2DWithIndicesBackward0", "MaxPool3DWithIndicesBackward0",
    "AvgPool2DBackward0", "AvgPool3DBackward0", "AdaptiveAvgPool2DBackward0", "AdaptiveAvgPool3DBackward0",
    "AdaptiveMaxPool2DBackward0", "UpsampleBilinear2DBackward0", "UpsampleBicubic2DBackward0",
    "UpsampleNearest2DBackward0", "UpsampleNearestExact2DBackward0", "CatBackward0", "StackBackward0",
    "SplitBackward0", "SplitWithSizesBackward0", "UnbindBackward0", "SliceBackward0", "SelectBackward0",
    "IndexBackward0", "IndexSelectBackward0", "GatherBackward0", "ViewBackward0", "UnsafeViewBackward0",
    "ReshapeAliasBackward0", "PermuteBackward0", "TransposeBackward0", "TransposeBackward1", "TBackward0",
    "ExpandBackward0", "SqueezeBackward0", "SqueezeBackward1", "SqueezeBackward2", "UnsqueezeBackward0",
    "CloneBackward0", "ToCopyBackward0", "AliasBackward0", "AsStridedBackward0", "ConstantPadNdBackward0",
    "ReflectionPad2DBackward0", "ReplicationPad2DBackward0", "RepeatBackward0", "FlipBackward0",
    "RollBackward0", "PixelShuffleBackward0", "PixelUnshuffleBackward0", "Im2ColBackward0", "Col2ImBackward0",
})
# Linear in each input: curved only when two of their inputs depend on A (A·A, attention's Q·Kᵀ).
MULTILINEAR = frozenset({
    "MulBackward0", "ConvolutionBackward0", "MmBackward0", "AddmmBackward0", "BmmBackward0",
    "BaddbmmBackward0", "MvBackward0", "AddmvBackward0", "DotBackward0",
})
# a / b: linear in the numerator, curved in the denominator.
QUOTIENT = "DivBackward0"


def curved_operation(output: torch.Tensor, leaf: torch.Tensor) -> Optional[str]:
    """The name of an operation between `leaf` A and `output` that may curve in A, or None when
    every operation on a path from A to `output` is piecewise linear in A (then ∂²output/∂A² = 0
    wherever it exists)."""
    stop = leaf.grad_fn  # None for a leaf tensor: its node is the accumulator holding it
    root = output.grad_fn
    if root is None:
        return None

    def is_leaf_node(node) -> bool:
        return node is stop if stop is not None else getattr(node, "variable", None) is leaf

    # Which nodes depend on A: an iterative post-order walk (graphs of big models are deep).
    depends: dict = {}
    stack = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        if node in depends:
            continue
        if is_leaf_node(node):
            depends[node] = True
            continue
        children = [child for child, _ in node.next_functions if child is not None]
        if children_done:
            depends[node] = any(depends[child] for child in children)
            continue
        stack.append((node, True))
        stack.extend((child, False) for child in children if child not in depends)

    for node, on_path in depends.items():
        if not on_path or is_leaf_node(node):
            continue
        name = type(node).__name__
        inputs = [child is not None and depends[child] for child, _ in node.next_functions]
        if name in PIECEWISE_LINEAR:
            continue
        if "BatchNorm" in name and getattr(node, "_saved_training", True) is False:
            continue  # eval mode: an affine map of fixed running statistics
        if name in MULTILINEAR and sum(inputs) <= 1:
            continue
        if name == QUOTIENT and not (len(inputs) > 1 and inputs[1]):
            continue
        return name
    return None


def shapley_gradients(start: torch.Tensor, leaf: torch.Tensor, cotangents: torch.Tensor,
                      batched: bool) -> torch.Tensor:
    """g − ½·H·A for every cotangent: [n,*start.shape] → float [n,*leaf.shape].

    start was computed from the dual of `leaf` A [B,C,h,w] whose tangent is A (ForwardCapture's
    tangent, inside a forward_ad.dual_level), so each gradient's tangent is the Hessian-vector
    product H·A (forward-over-reverse). Unlike a second backward from g, which would sum the
    products of a batch of cotangents, the tangents stay one per cotangent, so a chunk of classes
    goes through one batched backward (`batched`, vjp="batched") or one backward each. A target
    linear in A leaves no tangent: H·A = 0, as the peer's unused Hessian.
    """
    def vjp(cot, is_batched):  # (an operation without a forward-mode derivative raises: the caller's fallback)
        (g,) = torch.autograd.grad(start, leaf, cot, retain_graph=True, create_graph=True, is_grads_batched=is_batched)
        primal, hvp = fwAD.unpack_dual(g)
        return primal.detach() if hvp is None else primal.detach() - 0.5 * hvp.detach()

    if batched and cotangents.shape[0] > 1:
        return vjp(cotangents, True)
    return torch.stack([vjp(c, False) for c in cotangents])


def shapley_gradients_reverse(start: torch.Tensor, leaf: torch.Tensor, cotangents: torch.Tensor,
                              layer_name: str) -> torch.Tensor:
    """g − ½·H·A by reverse-over-reverse, one cotangent at a time: [n,*start.shape] → [n,*leaf.shape].

    H·A is the gradient of g·A with A held fixed. Where the forward-over-reverse pass cannot serve
    (an operation whose backward has no forward-mode derivative, a reader of A the dual tensor does
    not reach), on the first-order pass's graph or the exact path's (leaf: the layer's own output).
    """
    out = []
    for cot in cotangents:
        (g,) = torch.autograd.grad(start, leaf, cot, retain_graph=True, create_graph=True)
        try:
            (hvp,) = torch.autograd.grad(g, leaf, leaf.detach(), retain_graph=True, allow_unused=True)
        except RuntimeError as e:
            if "not implemented" not in str(e):
                raise
            raise ValueError(f"method 'shapleycam' needs second derivatives of the model above target_layer "
                             f"{layer_name!r}, and an operation there has none in torch ({e}); choose a later "
                             "layer") from e
        out.append(g.detach() if hvp is None else g.detach() - 0.5 * hvp)
    return torch.stack(out)


__all__ = ["curved_operation", "shapley_gradients", "shapley_gradients_reverse", "PIECEWISE_LINEAR", "MULTILINEAR"]
