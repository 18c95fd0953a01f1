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
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Optional, Union

import torch
import torch.autograd.forward_ad as fwAD
import torch.nn as nn
import torch.nn.functional as F

from .adapters import layer_activations, module_layout, output_hint, patch_strides, prefix_tokens
from .analytic import FOLDABLE, LinearHead, fold_chain, head_matches_autograd, is_linear_conv
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


def select_output(output, key: str, batch: int, ndim: int = 4) -> torch.Tensor:
    """The logits [B,L,H,W] (ndim 5: [B,L,D,H,W]) inside the model's output (a Tensor, a dict or a tuple/list)."""
    if isinstance(output, dict):
        if key not in output:
            raise ValueError(f"the model returned a dict without output_key {key!r}; keys: {sorted(output)}"
                             + output_hint(output))
        output = output[key]
    elif isinstance(output, (tuple, list)):
        if not output:
            raise ValueError("the model returned an empty tuple/list")
        output = output[0]
    if not isinstance(output, torch.Tensor) or output.ndim != ndim or output.shape[0] != batch:
        got = list(output.shape) if isinstance(output, torch.Tensor) else type(output).__name__
        layout = "L,H,W" if ndim == 4 else "L,D,H,W"
        raise ValueError(
            f"the model output is not a segmentation map: expected logits [B={batch},{layout}], got {got}{output_hint(output)}"
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


def mixes_samples(model: nn.Module) -> bool:
    """Does one sample's output depend on the others in its batch? (BatchNorm without running
    statistics normalises with the batch's, also in eval mode.) Then copies of an image — augmented,
    perturbed, ablated — cannot share a batch without changing what each one explains."""
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) and not m.track_running_stats for m in model.modules())


class ForwardCapture:
    """Hooks for one forward pass; all removed on exit.

    Always captures the target activations A (the target module's output, or its first input for
    InputOf; `call` picks one call of a module that runs several times, see activations()).
    With leaf=True the graph starts at A: the tensor the module produced becomes a leaf that
    requires grad (in place, so every reader of that object — a skip connection, a module that
    records its output — is on the graph; its flag is restored on exit), the model goes on with a
    copy (so an in-place operation after the layer is allowed), and every other module is
    watched for the module outputs that may be the logits before the final upsample and for the
    1×1 convolutions fed by A through foldable modules (the candidate linear head). Above A, a
    plain nn.Conv2d with taps that only read zero padding runs without them (conv_taps.py).
    With tangent=True (inside torch.autograd.forward_ad.dual_level(), for ShapleyCAM) the model
    gets A as a dual tensor whose tangent is A itself, so the gradients computed from the pass
    carry the Hessian-vector products H·A as their tangents (forward-over-reverse).
    With exact=True nothing is replaced or pruned: the caller runs the model with a graph from
    below the layer (engine/exact.py), and A is the tensor the model itself computed.
    """

    def __init__(self, model: nn.Module, layer: nn.Module, layer_name: str, use_input: bool = False,
                 leaf: bool = False, reshape=None, tangent: bool = False, call: Optional[int] = None,
                 exact: bool = False) -> None:
        self.model, self.layer, self.layer_name = model, layer, layer_name
        self.tangent, self.call, self.exact = tangent, call, exact
        self.reshape = reshape  # token / channels-last layers: see adapters.layer_activations
        self.layout = None if use_input else module_layout(layer)  # settles [B,h,w,C] vs [B,C,h,w] ties
        self.strides = patch_strides(model)  # with the prefix tokens, settles which token grid the image implies
        self.prefix = prefix_tokens(model)
        self.image_size: Optional[tuple] = None
        self.use_input, self.make_leaf = use_input, leaf
        self.handles: list = []
        self.active = True  # False while paused(): the hooks stay registered but do nothing
        self.leaves: list = []  # A of every call of the target module, in call order
        self.raw: list = []  # (exact=True) the module's own output (or input) of every call
        self.flagged: list = []  # tensors given requires_grad in place, reset on exit
        self.module_outputs: list = []  # (module, output) of every module after A, in call order
        self.fed_by_leaf: list = []  # (tensor computed from A by foldable modules only, their chain)
        self.convs: list = []  # (1×1 conv fed by such a tensor, the chain before it, its output's node)

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
                    self.handles.append(module.register_forward_hook(self._on_conv, prepend=True))
                if module is not self.model and (self.use_input or module is not self.layer):
                    self.handles.append(module.register_forward_hook(self._on_module))
        return self

    def __exit__(self, *exc) -> None:
        for handle in self.handles:
            handle.remove()
        self.handles.clear()
        for tensor in self.flagged:
            tensor.requires_grad_(False)
        self.flagged.clear()

    @contextmanager
    def paused(self):
        """The hooks do nothing inside (another pass of the same model, e.g. the exact check, runs
        there); the graph and the tensors captured so far stay as they are."""
        self.active = False
        try:
            yield self
        finally:
            self.active = True

    def _on_conv(self, module, inputs, output):
        return skip_padding_taps(module, inputs, output) if self.active else None

    @property
    def calls(self) -> int:
        return len(self.leaves)

    @property
    def leaf(self) -> Optional[torch.Tensor]:
        """A of the chosen call (see activations()), or None before the target module ran."""
        return self._chosen(self.leaves)

    def _on_input(self, module, inputs):
        if self.active and inputs and isinstance(inputs[0], torch.Tensor) and inputs[0].ndim == 4:
            self.image_size = tuple(inputs[0].shape[-2:])  # the grid of token layers follows from it

    def _capture(self, tensor, what: str) -> torch.Tensor:
        if not isinstance(tensor, torch.Tensor):
            raise ValueError(f"target_layer {self.layer_name!r} must {what} a Tensor [B,C,h,w], got "
                             f"{type(tensor).__name__}")
        if self.exact:  # A is what the model computed, reshaped as the fast path does
            activations, _ = layer_activations(tensor, self.reshape, self.image_size, self.layer_name, False,
                                               self.layout, self.strides, self.prefix)
            self.raw.append(tensor)
            self.leaves.append(activations)
            # the model goes on with a copy: an in-place operation after the layer then leaves the
            # layer's own output — the tensor differentiated — as the layer made it
            return tensor.clone()
        # tokens / channels-last → A [B,C,h,w] (adapters.py)
        activations, feed = layer_activations(tensor, self.reshape, self.image_size, self.layer_name, self.make_leaf,
                                              self.layout, self.strides, self.prefix)
        if feed is not None or activations is not tensor:
            if self.tangent:
                raise ValueError(f"target_layer {self.layer_name!r} outputs {list(tensor.shape)}, not [B,C,h,w]: "
                                 "the Hessian-vector products (ShapleyCAM) need a layer with a [B,C,h,w] output")
            self.leaves.append(activations)
            self.fed_by_leaf = []
            return feed if feed is not None else tensor
        if tensor.ndim != 4:
            raise ValueError(f"target_layer {self.layer_name!r} must {what} a Tensor [B,C,h,w], got {list(tensor.shape)}")
        if not self.make_leaf:
            self.leaves.append(tensor.detach())
            return tensor
        if self.tangent:
            # The model goes on with (a copy of) the dual tensor, whose tangent is A; a reader of the
            # layer's own tensor gets neither, which the second-order check finds (explainer.py).
            leaf = tensor.detach().requires_grad_(True)
            fed = fwAD.make_dual(leaf, leaf.detach()).clone()
        elif tensor.is_leaf and not tensor.requires_grad and not tensor.is_inference():
            # The object itself becomes the leaf, so that every reader of it is on the graph; the
            # model goes on with a copy, on which in-place operations after the layer are allowed.
            leaf = tensor.requires_grad_(True)
            self.flagged.append(leaf)
            fed = leaf.clone()
        else:  # already on a graph (inputs that require grad): a new leaf; verification checks the rest
            leaf = tensor.detach().requires_grad_(True)
            fed = leaf.clone()
        self.leaves.append(leaf)
        self.fed_by_leaf = [(fed, [])]
        return fed

    def _on_target(self, module, inputs, output):
        if not self.active:
            return None
        replaces = self.make_leaf or self.exact
        if isinstance(output, tuple) and output and isinstance(output[0], torch.Tensor):  # Hugging Face layers
            leaf = self._capture(output[0], "output")
            return (leaf,) + output[1:] if replaces else None
        leaf = self._capture(output, "output")
        return leaf if replaces else None

    def _on_target_input(self, module, inputs):
        if not self.active:
            return None
        leaf = self._capture(inputs[0] if inputs else None, "take as input")
        return (leaf,) + tuple(inputs[1:]) if self.make_leaf or self.exact else None

    def _on_module(self, module, inputs, output):
        if not self.active or not isinstance(output, torch.Tensor) or output.ndim != 4 or not output.requires_grad:
            return
        self.module_outputs.append((module, output, output.grad_fn))
        source = inputs[0] if inputs else None
        chain = next((c for t, c in self.fed_by_leaf if t is source), None)
        if chain is None:
            return
        if type(module) in FOLDABLE and foldable(module):
            self.fed_by_leaf.append((output, chain + [module]))
        elif is_linear_conv(module):
            self.convs.append((module, chain, output.grad_fn))  # the node as the conv made it

    def _chosen(self, per_call: list):
        if not per_call:
            return None
        if self.call is None:
            return per_call[0] if len(per_call) == 1 else None
        if not -len(per_call) <= self.call < len(per_call):
            return None
        return per_call[self.call]

    def raw_tensor(self) -> Optional[torch.Tensor]:
        """(exact=True) the tensor the target module produced (or took) in the chosen call."""
        return self._chosen(self.raw)

    def activations(self) -> torch.Tensor:
        """A [B,C,h,w] of the chosen call: the only call when `call` is None, else call number
        `call` (−1: the last, as pytorch-grad-cam, whose hooks keep the last call's tensors)."""
        if not self.leaves:
            raise ValueError(f"target_layer {self.layer_name!r} was not called during the forward pass")
        if self.call is None and self.calls > 1:
            raise ValueError(
                f"target_layer {self.layer_name!r} was called {self.calls} times in one forward pass: say which "
                "call to explain with call= (call=-1: the last, as pytorch-grad-cam), or choose a module that runs once"
            )
        chosen = self._chosen(self.leaves)
        if chosen is None:
            raise ValueError(f"call={self.call} but target_layer {self.layer_name!r} was called {self.calls} "
                             f"time{'s' if self.calls > 1 else ''} in the forward pass")
        return chosen

    def backward_start(self, logits: torch.Tensor):
        """(tensor to start the VJPs from, its upsample ((h, w), align_corners) or None).

        Read from the autograd graph, not from values: when the logits are the output of a
        bilinear upsample (F.interpolate, nn.Upsample, nn.UpsamplingBilinear2d; no antialias)
        whose input is a module's output z, still unmodified, the VJPs start at z with the seeds
        pulled back through that very upsample (its align_corners from the graph). Otherwise they
        start at the logits themselves (seeds M): exact, only slower.
        """
        found = upsampled_module_output(logits, self.module_outputs)
        return (logits, None) if found is None else found[1:]

    def linear_head(self, start: torch.Tensor, upsample) -> Optional[LinearHead]:
        """The linear head from A to `start` (z), or None.

        Taken only from structure that fixes z = W·fold(A) + b for every input: z is the very output
        of a plain 1×1 nn.Conv2d (not modified since; or that output plus a term that does not
        depend on A, see head_node), whose input is A through exact-type
        eval-mode BatchNorm (with running statistics) / Dropout / Identity modules, and the
        target module ran once. The closed-form gradient is also checked against one autograd VJP
        with a random cotangent.
        """
        if self.calls != 1 or self.call not in (None, 0, -1) or start.shape[-2:] != self.leaf.shape[-2:]:
            return None
        node = head_node(start)
        candidates = [(conv, chain) for conv, chain, made in self.convs
                      if made is node and conv.out_channels == start.shape[1]]
        if node is None or len(candidates) != 1:
            return None
        conv, chain = candidates[0]
        weight = fold_chain(chain, conv)  # [L,C]
        if not head_matches_autograd(start, self.leaf, weight):
            return None
        names = {m: n for n, m in self.model.named_modules()}
        return LinearHead(weight=weight, conv=conv, upsample=upsample, chain=tuple(chain),
                          paths=tuple(names[m] for m in chain + [conv]))


def head_node(start: torch.Tensor):
    """The graph node of the head convolution's output that `start` is, or is plus a term that does
    not depend on A (LRASPP adds its low-resolution branch): start itself, or the one input on the
    graph of an addition with alpha 1. None for anything else."""
    node = start.grad_fn
    if node is not None and type(node).__name__ == "AddBackward0" and getattr(node, "_saved_alpha", 1) == 1:
        live = [edge for edge, _ in node.next_functions if edge is not None]
        return live[0] if len(live) == 1 else None
    return node


def upsampled_module_output(logits: torch.Tensor, outputs: list) -> Optional[tuple]:
    """(module, z, ((h, w), align_corners)) when `logits` are the bilinear upsample (bilinear_upsample)
    of z, one of `outputs` — (module, output, its graph node when the module made it), in call
    order — still as the module made it; else None."""
    upsample = bilinear_upsample(logits)
    if upsample is None:
        return None
    source, align = upsample
    for module, z, node in reversed(outputs):
        if z.grad_fn is source and node is source and z is not logits:
            return module, z, (tuple(z.shape[-2:]), align)
    return None


def bilinear_upsample(logits: torch.Tensor) -> Optional[tuple]:
    """(the graph node of the upsample's input, align_corners) when `logits` is the output of a
    bilinear F.interpolate whose sampling the seeds' adjoint reproduces, else None."""
    node = logits.grad_fn
    if node is None or type(node).__name__ != "UpsampleBilinear2DBackward0":
        return None
    align = bool(node._saved_align_corners)
    in_h, in_w = node._saved_self_sym_sizes[-2:]
    out_h, out_w = node._saved_output_size
    scales = (node._saved_scales_h, node._saved_scales_w)
    # A scale_factor (not recomputed) maps coordinates by 1/scale instead of in/out: the same only
    # when out = in·scale exactly (align_corners=True ignores the scales).
    if not align and any(s is not None and float(s) * n != m for s, n, m in zip(scales, (in_h, in_w), (out_h, out_w))):
        return None
    source = node.next_functions[0][0]
    return (source, align) if source is not None else None


def foldable(module: nn.Module) -> bool:
    """An exact-type eval-mode module that is affine: BatchNorm2d with running statistics (in
    eval mode it uses them), Dropout (identity in eval mode), Identity."""
    if isinstance(module, nn.BatchNorm2d):
        return not module.training and module.running_mean is not None and module.running_var is not None
    return not module.training or isinstance(module, nn.Identity)


def model_logits(model: nn.Module, images: torch.Tensor, output_key: str = "out") -> torch.Tensor:
    """A plain forward pass → logits [B,L,H,W] ([B,L,D,H,W] for volumes), without a graph, in eval
    mode with the model's state restored afterwards (for metrics and benchmarks that only need the
    prediction)."""
    with ModelState(model), torch.no_grad():
        return select_output(model(images), output_key, images.shape[0], max(images.ndim, 4))
