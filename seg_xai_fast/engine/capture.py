"""Model capture: what every runtime-independent part of the engine needs from a PyTorch model.

- resolve_layer: a target layer given as a module or a dotted name;
- select_output: the logits [B,L,H,W] inside whatever the model returns;
- ModelState: eval mode and frozen parameters for one call, the model restored afterwards, under
  the model's lock (model_lock), so that threads sharing a model take turns;
- ForwardCapture: the hooks of one forward pass (the target activations, and for the gradient
  path the leaf that starts the graph, the pre-upsample logits and the candidate linear head);
- model_logits: a plain no-grad forward to the logits, with the model's state restored.
"""
from __future__ import annotations

import difflib
import sys
import threading
import warnings
import weakref
from dataclasses import dataclass
from typing import Optional, Union

import torch
import torch.autograd.forward_ad as fwAD
import torch.nn as nn
import torch.nn.functional as F

from .adapters import layer_activations, output_hint
from .analytic import FOLDABLE, LinearHead, fold_chain, is_linear_conv
from .conv_taps import skip_padding_taps


@dataclass(frozen=True)
class InputOf:
    """Target the *input* of a module instead of its output, e.g.
    ``InputOf("classifier.high_classifier")`` for LRASPP, whose classifier input is computed
    inside a forward function and is no module's output."""

    layer: Union[nn.Module, str]


def resolve_layer(model: nn.Module, layer: Union[nn.Module, str]) -> tuple[str, nn.Module]:
    """(dotted name, module) of `layer`, which is a submodule of `model` or its name."""
    names = {m: n for n, m in model.named_modules()}
    if isinstance(layer, nn.Module):
        if layer not in names:
            raise ValueError(f"target_layer {type(layer).__name__} is not a submodule of the model")
        return names[layer] or "<model>", layer
    if not isinstance(layer, str):
        raise TypeError(f"target_layer must be an nn.Module or a dotted name, got {type(layer).__name__}")
    dotted = layer.replace("[", ".").replace("]", "").strip(".")
    try:
        return dotted, model.get_submodule(dotted)
    except AttributeError:
        close = difflib.get_close_matches(dotted, [n for n in names.values() if n], n=5, cutoff=0.5)
        hint = f"; close names: {close}" if close else ""
        raise ValueError(f"target_layer {layer!r} not found in the model{hint}") from None


def select_output(output, key: str, batch: int) -> torch.Tensor:
    """The logits [B,L,H,W] inside the model's output (a Tensor, a dict or a tuple/list)."""
    if isinstance(output, dict):
        if key not in output:
            raise ValueError(f"the model returned a dict without output_key {key!r}; keys: {sorted(output)}"
                             + output_hint(output))
        output = output[key]
    elif isinstance(output, (tuple, list)):
        if not output:
            raise ValueError("the model returned an empty tuple/list")
        output = output[0]
    if not isinstance(output, torch.Tensor) or output.ndim != 4 or output.shape[0] != batch:
        got = list(output.shape) if isinstance(output, torch.Tensor) else type(output).__name__
        raise ValueError(
            f"the model output is not a segmentation map: expected logits [B={batch},L,H,W], got {got}{output_hint(output)}"
        )
    return output


_LOCKS: "weakref.WeakKeyDictionary[nn.Module, threading.RLock]" = weakref.WeakKeyDictionary()
_LOCKS_GUARD = threading.Lock()


def model_lock(model: nn.Module) -> threading.RLock:
    """The one lock of `model`, shared by every explainer of it (re-entrant: a call may nest)."""
    with _LOCKS_GUARD:
        lock = _LOCKS.get(model)
        if lock is None:
            lock = _LOCKS[model] = threading.RLock()
        return lock


def unwrap_compiled(model: nn.Module) -> nn.Module:
    """The original module of a torch.compile'd model (explained eagerly: hooks and the
    per-call requires_grad changes would otherwise meet the compiled graph), else `model`."""
    eval_frame = sys.modules.get("torch._dynamo.eval_frame")  # loaded whenever a model was compiled
    compiled = getattr(eval_frame, "OptimizedModule", None)
    if compiled is not None and isinstance(model, compiled) and isinstance(getattr(model, "_orig_mod", None), nn.Module):
        return model._orig_mod
    return model


class ModelState:
    """Eval mode and frozen parameters for the call; the model's own state restored afterwards.

    Hooks, requires_grad flags and train/eval mode belong to the model, not to one call, so the
    call holds the model's lock from entry to exit: threads sharing a model are serialised here
    (each call sees the model as its owner left it), while work outside (the CAM stage) overlaps.
    """

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.lock = model_lock(model)

    def __enter__(self):
        self.lock.acquire()
        try:
            # Every module's mode is recorded and restored, so code run inside (an exporter
            # toggling a wrapper's train/eval recursively, say) cannot leave the model changed.
            self.training = [(m, m.training) for m in self.model.modules()]
            self.frozen = []
            if self.model.training:
                warnings.warn("the model was in train mode; it is explained in eval mode and restored afterwards",
                              stacklevel=3)
                self.model.eval()
            # Nothing below the target layer then builds a graph, and no parameter gradient is made.
            self.frozen = [p for p in self.model.parameters() if p.requires_grad]
            for p in self.frozen:
                p.requires_grad_(False)
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc) -> None:
        try:
            for p in self.frozen:
                p.requires_grad_(True)
            for m, flag in self.training:
                m.training = flag
        finally:
            self.lock.release()


class ForwardCapture:
    """Hooks for one forward pass; all removed on exit.

    Always captures the target activations A (the target module's output, or its first input for
    InputOf). With leaf=True, A is swapped for a detached leaf that requires grad, so the graph
    starts there, and every other module is watched for two things: the last low-resolution
    tensor with a given channel count computed from A (the candidate pre-upsample logits z), and
    the 1×1 convolutions fed by A through foldable modules (the candidate linear head). Above A,
    a convolution with taps that only read zero padding runs without them (conv_taps.py).
    With tangent=True (inside torch.autograd.forward_ad.dual_level(), for ShapleyCAM) the model
    gets A as a dual tensor whose tangent is A itself, so the gradients computed from the pass
    carry the Hessian-vector products H·A as their tangents (forward-over-reverse).
    """

    def __init__(self, model: nn.Module, layer: nn.Module, layer_name: str, use_input: bool = False,
                 leaf: bool = False, reshape=None, tangent: bool = False) -> None:
        self.model, self.layer, self.layer_name = model, layer, layer_name
        self.tangent = tangent
        self.reshape = reshape  # token / channels-last layers: see adapters.layer_activations
        self.image_size: Optional[tuple] = None
        self.use_input, self.make_leaf = use_input, leaf
        self.handles: list = []
        self.leaf: Optional[torch.Tensor] = None
        self.calls = 0
        self.latest_by_channels: dict[int, list] = {}  # channel count → tensors, oldest first
        self.fed_by_leaf: list = []  # (tensor computed from A by foldable modules only, their chain)
        self.convs: list = []  # (1×1 conv fed by such a tensor, the chain before it)
        self.upsampled: list = []  # outputs of nn.Upsample modules, skipped as z candidates

    def __enter__(self):
        self.handles.append(self.model.register_forward_pre_hook(self._on_input))
        # prepend: hooks installed by the model itself (Hugging Face's output recorders, added on its
        # first forward) must see the leaf, or the paths through what they record miss the gradient
        if self.use_input:
            self.handles.append(self.layer.register_forward_pre_hook(self._on_target_input, prepend=True))
        else:
            self.handles.append(self.layer.register_forward_hook(self._on_target, prepend=True))
        if self.make_leaf:
            for module in self.model.modules():
                if isinstance(module, nn.Conv2d):  # first, so the watchers below see its output
                    self.handles.append(module.register_forward_hook(skip_padding_taps, prepend=True))
                if module is not self.model and (self.use_input or module is not self.layer):
                    self.handles.append(module.register_forward_hook(self._on_module))
        return self

    def __exit__(self, *exc) -> None:
        for handle in self.handles:
            handle.remove()
        self.handles.clear()

    def _on_input(self, module, inputs):
        if inputs and isinstance(inputs[0], torch.Tensor) and inputs[0].ndim == 4:
            self.image_size = tuple(inputs[0].shape[-2:])  # the grid of token layers follows from it

    def _capture(self, tensor, what: str) -> torch.Tensor:
        if isinstance(tensor, torch.Tensor):  # tokens / channels-last → A [B,C,h,w] (adapters.py)
            activations, feed = layer_activations(tensor, self.reshape, self.image_size, self.layer_name, self.make_leaf)
            if feed is not None or activations is not tensor:
                if self.tangent:
                    raise ValueError(f"target_layer {self.layer_name!r} outputs {list(tensor.shape)}, not [B,C,h,w]: "
                                     "the Hessian-vector products (ShapleyCAM) need a layer with a [B,C,h,w] output")
                self.calls += 1
                self.leaf, self.fed_by_leaf = activations, []
                return feed if feed is not None else tensor
        if not isinstance(tensor, torch.Tensor) or tensor.ndim != 4:
            got = list(tensor.shape) if isinstance(tensor, torch.Tensor) else type(tensor).__name__
            raise ValueError(f"target_layer {self.layer_name!r} must {what} a Tensor [B,C,h,w], got {got}")
        self.calls += 1
        self.leaf = tensor.detach().requires_grad_(True) if self.make_leaf else tensor.detach()
        fed = fwAD.make_dual(self.leaf, self.leaf.detach()) if self.tangent and self.make_leaf else self.leaf
        self.fed_by_leaf = [(fed, [])]
        return fed

    def _on_target(self, module, inputs, output):
        if isinstance(output, tuple) and output and isinstance(output[0], torch.Tensor):  # Hugging Face layers
            leaf = self._capture(output[0], "output")
            return (leaf,) + output[1:] if self.make_leaf else None
        leaf = self._capture(output, "output")
        return leaf if self.make_leaf else None

    def _on_target_input(self, module, inputs):
        leaf = self._capture(inputs[0] if inputs else None, "take as input")
        return (leaf,) + tuple(inputs[1:]) if self.make_leaf else None

    def _on_module(self, module, inputs, output):
        if not isinstance(output, torch.Tensor) or output.ndim != 4 or not output.requires_grad:
            return
        if isinstance(module, nn.Upsample) or any(output is t for t in self.upsampled):
            # an upsample module (DPT's, smp's heads) or a container returning its output: z is before it
            self.upsampled.append(output)
            return
        self.latest_by_channels.setdefault(output.shape[1], []).append(output)
        source = inputs[0] if inputs else None
        chain = next((c for t, c in self.fed_by_leaf if t is source), None)
        if chain is None:
            return
        if isinstance(module, FOLDABLE):
            self.fed_by_leaf.append((output, chain + [module]))
        elif is_linear_conv(module):
            self.convs.append((module, chain))

    def activations(self) -> torch.Tensor:
        if self.leaf is None:
            raise ValueError(f"target_layer {self.layer_name!r} was not called during the forward pass")
        if self.calls > 1:
            raise ValueError(
                f"target_layer {self.layer_name!r} was called {self.calls} times in one forward pass; "
                "choose a module that runs once"
            )
        return self.leaf

    def backward_start(self, logits: torch.Tensor):
        """(tensor to start the VJPs from, its upsample ((h, w), align_corners) or None).

        If the logits are F.interpolate(z, bilinear) of a tensor z seen during the forward, start
        from z (seeds Up*(M)); otherwise from the logits themselves (seeds M).
        """
        size = tuple(logits.shape[-2:])
        # latest first: an auxiliary head computed after the main one (DPT's) is passed over
        for z in reversed(self.latest_by_channels.get(logits.shape[1], [])[-4:]):
            if z is logits or z.shape[-2:] == size:
                continue
            with torch.no_grad():
                for align in (False, True):
                    up = F.interpolate(z.detach(), size=size, mode="bilinear", align_corners=align)
                    if torch.allclose(up, logits.detach(), rtol=1e-4, atol=1e-5):
                        return z, (tuple(z.shape[-2:]), align)
        return logits, None

    def linear_head(self, start: torch.Tensor, upsample) -> Optional[LinearHead]:
        """The verified linear head from A to `start` (z), or None.

        Structure alone could mislead (A might also reach z another way), so the closed-form
        gradient is checked against one autograd VJP with a random cotangent.
        """
        L = start.shape[1]
        candidates = [(conv, chain) for conv, chain in self.convs if conv.out_channels == L]
        if len(candidates) != 1 or start.shape[-2:] != self.leaf.shape[-2:]:
            return None
        conv, chain = candidates[0]
        weight = fold_chain(chain, conv)  # [L,C]
        probe = torch.randn(start.shape, generator=torch.Generator().manual_seed(0)).to(start)
        (exact,) = torch.autograd.grad(start, self.leaf, probe, retain_graph=True)
        closed = torch.einsum("blhw,lc->bchw", probe, weight.to(probe))
        scale = exact.abs().max().clamp_min(1e-30)
        if not torch.allclose(exact, closed, rtol=1e-4, atol=1e-5 * float(scale)):
            return None
        names = {m: n for n, m in self.model.named_modules()}
        return LinearHead(weight=weight, conv=conv, upsample=upsample, chain=tuple(chain),
                          paths=tuple(names[m] for m in chain + [conv]))



def model_logits(model: nn.Module, images: torch.Tensor, output_key: str = "out") -> torch.Tensor:
    """A plain forward pass → logits [B,L,H,W], without a graph, in eval mode with the model's
    state restored afterwards (for metrics and benchmarks that only need the prediction)."""
    with ModelState(model), torch.no_grad():
        return select_output(model(images), output_key, images.shape[0])
