"""The gradient family's shared steps: the chunked class VJPs (the explainer's and FullGrad's)
and the family's runner."""
from __future__ import annotations

from typing import Callable, Iterator, Optional

import torch

from .outputs import class_cotangents


def class_chunks(active: torch.Tensor, chunk: int) -> Iterator[list]:
    """The explained classes with a non-empty region in some image (active bool [B,K]), `chunk`
    positions at a time: the classes whose region is empty everywhere cost nothing."""
    todo = [k for k in range(active.shape[1]) if bool(active[:, k].any())]
    for lo in range(0, len(todo), chunk):
        yield todo[lo:lo + chunk]


def chunked_vjps(start: torch.Tensor, leaves: list, seeds: torch.Tensor, class_ids: list, active: torch.Tensor,
                 chunk: int, batched: bool, mix: Optional[torch.Tensor] = None,
                 grad: Optional[Callable] = None) -> Iterator[tuple]:
    """(ks, gradients) per chunk of active classes: the VJPs from `start` (logits [B,L,h',w']) to each
    of `leaves` (tensors on the graph below it) of the cotangents of classes ks (positions in
    class_ids; seeds float [B,K,h',w'], mix as class_cotangents) → one tensor [n,*leaf.shape] per
    leaf, or None for a leaf the classes do not reach. The graph is kept for the next chunk.
    batched: one autograd.grad(is_grads_batched=True) per chunk instead of one backward per class.
    grad(start, leaves, cotangents [n,...]) -> gradients: another product than the plain VJP
    (ShapleyCAM's g − ½·H·A).
    """
    for ks in class_chunks(active, chunk):
        cot = class_cotangents(start, seeds, class_ids, ks, mix)
        if grad is not None:
            grads = grad(start, leaves, cot)
        elif batched and len(ks) > 1:
            grads = torch.autograd.grad(start, leaves, cot, retain_graph=True, allow_unused=True,
                                        is_grads_batched=True)
        else:
            per_class = [torch.autograd.grad(start, leaves, c, retain_graph=True, allow_unused=True) for c in cot]
            grads = [None if g[0] is None else torch.stack(g) for g in zip(*per_class)]
        yield ks, list(grads)


def explain_gradients(explainer, forwards, images: torch.Tensor, classes, masks, resolution: str):
    """The gradient family's runner for the layer methods: the closed form of a verified linear
    head when the runtime has one (no backward pass), else the autograd path (PyTorch)."""
    outputs = forwards.closed_form_outputs(images)
    if outputs is not None:
        return explainer.explain_outputs(outputs, classes, masks, resolution=resolution)
    return forwards.autograd(images, classes, masks, resolution)
