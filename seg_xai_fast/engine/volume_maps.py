"""What the 3-D runners share: the target layer's output captured (as a leaf of the graph for the
gradient methods), the depth folded into the rows, and the layer maps finished at the output's
size (trilinear resize + ReLU + min-max per volume)."""
from __future__ import annotations

from typing import Optional

import torch

from .. import kernels
from ..kernels import reference


class LayerLeaf:
    """Forward hooks that capture the target layer's output A [B,C,d,h,w] (or its first input),
    as a leaf of the graph when `leaf` (the model goes on with a copy, so in-place operations
    after the layer are allowed). Removed on exit."""

    def __init__(self, explainer, leaf: bool, ndim: int = 5) -> None:
        self.explainer, self.leaf, self.ndim = explainer, leaf, ndim
        self.captured: list = []
        self.passed: list = []  # what the model went on with (a copy of each leaf)
        self.handle = None

    def __enter__(self):
        layer = self.explainer.target_layer
        if self.explainer.use_input:
            self.handle = layer.register_forward_pre_hook(lambda m, inputs: self._swap_input(inputs), prepend=True)
        else:
            self.handle = layer.register_forward_hook(lambda m, inputs, output: self._swap(output), prepend=True)
        return self

    def __exit__(self, *exc) -> None:
        self.handle.remove()

    def _swap_input(self, inputs):
        return (self._swap(inputs[0] if inputs else None),) + tuple(inputs[1:])

    def _swap(self, tensor):
        name = self.explainer.layer_name
        if not isinstance(tensor, torch.Tensor) or tensor.ndim != self.ndim:
            got = list(tensor.shape) if isinstance(tensor, torch.Tensor) else type(tensor).__name__
            layout = "[B,C,d,h,w]" if self.ndim == 5 else "[B,C,h,w]"
            raise ValueError(f"target_layer {name!r} must give a Tensor {layout}, got {got}")
        if not self.leaf:
            self.captured.append(tensor.detach())
            return tensor
        leaf = tensor.detach().requires_grad_(True)
        self.captured.append(leaf)
        passed = leaf.clone()
        self.passed.append(passed)
        return passed

    def activations(self) -> torch.Tensor:
        name, call = self.explainer.layer_name, self.explainer.call
        if not self.captured:
            scripted = any(isinstance(m, torch.jit.ScriptModule) for m in self.explainer.model.modules())
            hint = (": a TorchScript model runs compiled code that calls no Python hooks; explain the Python model, or "
                    "use an input-space method (occlusion)") if scripted else ""
            raise ValueError(f"target_layer {name!r} was not called during the forward pass{hint}")
        if call is None:
            if len(self.captured) > 1:
                raise ValueError(f"target_layer {name!r} was called {len(self.captured)} times in one forward pass: "
                                 "say which call to explain with call= (-1: the last)")
            return self.captured[0]
        if not -len(self.captured) <= call < len(self.captured):
            raise ValueError(f"call={call} but target_layer {name!r} was called {len(self.captured)} times")
        return self.captured[call]


def fold(x: torch.Tensor) -> torch.Tensor:
    """[..., d, h, w] → [..., d·h, w] (a view when contiguous)."""
    return x.flatten(-3, -2)


def finish_maps(maps: torch.Tensor, size: Optional[tuple], normalize: bool, backend: str) -> torch.Tensor:
    """Layer-resolution maps float [B,K,d,h,w] → the output's size `size` (None: kept): trilinear
    resize + ReLU + per-volume min-max, or (normalize=False) the raw maps trilinearly resized."""
    if size is None:
        return maps
    if normalize:
        return kernels.resize_normalize_3d(maps.contiguous(), size, backend=backend)
    return reference.resize_trilinear(maps, size) if tuple(maps.shape[-3:]) != tuple(size) else maps.float()
