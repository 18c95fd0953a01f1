"""The explainer: CAMs for every requested class of a batch from one forward pass.

One call does:
1. one forward pass with a forward hook that swaps the target layer's output A for a detached
   leaf, so the graph starts at A (nothing below it is differentiated, no parameter gradients);
2. the target masks M_k (predicted regions by default) and their seeds: when the model ends with a
   bilinear upsample of low-resolution logits z, the seeds are pulled back through it,
   R_k = Up*(M_k) (ALGORITHMS.md §3.1), so each backward starts at z instead of the full output;
3. one vector-Jacobian product per class that has a non-empty region in any image of the batch,
   from z down to A only (each VJP covers the whole batch, because images do not interact);
4. the CAM stage (fused kernels by default) in class chunks under a memory budget.

When A feeds a 1×1 convolution that makes z (a linear head), the first call finds it, checks the
closed-form gradient g_kc = W_kc·R_k against one autograd VJP, and from then on every call is a
plain no-grad forward plus matrix products (the "analytic" gradient path, see analytic.py).
"""
from __future__ import annotations

import difflib
import warnings
from dataclasses import dataclass, field
from typing import Optional, Sequence, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

from . import kernels, reference
from .analytic import _FOLDABLE, LinearHead, analytic_cam, fold_chain, is_linear_conv
from .methods import get_method
from .targets import REGION_TYPES, Region, target_masks

MaskSpec = Union[None, torch.Tensor, Region, Sequence[Region]]


@dataclass(frozen=True)
class InputOf:
    """Target the *input* of a module instead of its output, e.g.
    ``InputOf("classifier.high_classifier")`` for LRASPP, whose classifier input is computed
    inside a forward function and is no module's output."""

    layer: Union[nn.Module, str]


@dataclass
class Explanation:
    """What an Explainer call returns.

    maps: float32 [B,K,H,W] in [0,1] on the model's device; maps[:, i] explains classes[i].
    classes: the K class ids. labels: int64 [B,H,W] predicted class per pixel.
    active: bool [B,K], False where the target region was empty (the map is all zeros).
    """

    maps: torch.Tensor
    classes: list[int]
    labels: torch.Tensor
    active: torch.Tensor
    method: str
    layer: str
    info: dict = field(default_factory=dict)

    def overlay(self, images: torch.Tensor, class_index: int = 0, colormap: str = "jet", alpha: float = 0.5):
        """Colour the maps of classes[class_index] over `images` (float [B,3,H,W] in [0,1]) → uint8 [B,H,W,3]."""
        frames = (images.detach().clamp(0, 1) * 255 + 0.5).to(torch.uint8).permute(0, 2, 3, 1).contiguous()
        return kernels.overlay(frames.to(self.maps.device), self.maps[:, class_index], colormap=colormap, alpha=alpha)


class Explainer:
    """CAM explanations of a segmentation model for all requested classes of a batch.

    model: an nn.Module mapping float [B,3,H,W] images to logits [B,L,H,W] (a Tensor, a dict —
    torchvision's ``"out"`` by default, see ``output_key`` — or a tuple/list whose first element
    is the logits).
    target_layer: an nn.Module inside ``model`` or its dotted name (``"backbone.layer4"``,
    ``"classifier.3"``); its output is the activation map A [B,C,h,w]. ``InputOf(layer)`` (or a
    name ending in ``":input"``) takes the module's first input instead.
    method: one of ``sx.methods()``.
    backend: "auto" (fused kernels when the compiled core serves the device and dtype), "fused"
    or "torch" (the pure-PyTorch reference).
    max_memory_mb: budget for the per-chunk gradients and maps; ``class_chunk`` overrides it with
    a fixed number of classes per chunk. Results do not depend on the chunking.
    vjp: "loop" (one backward per class through the graph above A, ``retain_graph``) or
    "batched" (``autograd.grad(is_grads_batched=True)``); see benchmarks for the measurements.
    gradient_path: "auto" (closed form when the target layer feeds a linear head, verified on the
    first call; autograd otherwise), "analytic" (require the closed form) or "autograd".
    After a call, ``explainer.gradient_path`` reports the path used: "analytic" or "autograd".

    The model is left as found: hooks are removed after every call (also on errors), and
    ``requires_grad`` flags and train/eval mode are restored.
    """

    def __init__(
        self,
        model: nn.Module,
        target_layer: Union[nn.Module, str],
        method: str = "gradcam",
        *,
        backend: str = "auto",
        output_key: str = "out",
        max_memory_mb: float = 1024.0,
        class_chunk: Optional[int] = None,
        vjp: str = "loop",
        gradient_path: str = "auto",
    ) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        self.model = model
        self.method = get_method(method).name
        if isinstance(target_layer, str) and target_layer.endswith(":input"):
            target_layer = InputOf(target_layer[: -len(":input")])
        self.use_input = isinstance(target_layer, InputOf)
        self.layer_name, self.target_layer = _resolve_layer(model, target_layer.layer if self.use_input else target_layer)
        if self.use_input:
            self.layer_name = f"{self.layer_name}:input"
        if backend not in ("auto", "fused", "torch"):
            raise ValueError(f"backend must be 'auto', 'fused' or 'torch', got {backend!r}")
        if vjp not in ("loop", "batched"):
            raise ValueError(f"vjp must be 'loop' or 'batched', got {vjp!r}")
        if class_chunk is not None and (not isinstance(class_chunk, int) or class_chunk < 1):
            raise ValueError(f"class_chunk must be a positive int or None, got {class_chunk!r}")
        if not max_memory_mb > 0:
            raise ValueError(f"max_memory_mb must be positive, got {max_memory_mb!r}")
        self.backend = backend
        self.output_key = output_key
        self.max_memory_mb = float(max_memory_mb)
        self.class_chunk = class_chunk
        self.vjp = vjp
        if gradient_path not in ("auto", "analytic", "autograd"):
            raise ValueError(f"gradient_path must be 'auto', 'analytic' or 'autograd', got {gradient_path!r}")
        first_conv = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
        self._in_channels = first_conv.in_channels if first_conv is not None else None
        self.requested_path = gradient_path
        self.gradient_path = gradient_path  # resolved to "analytic" or "autograd" by the first call
        self._heads: dict = {}  # input shape → verified LinearHead, or None when there is none

    # The explainer holds no hooks between calls; the context manager is for symmetry with
    # pytorch-grad-cam's API and to make the lifetime explicit in user code.
    def __enter__(self) -> "Explainer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Nothing to release: hooks live only inside a call."""

    def __call__(
        self,
        images: torch.Tensor,
        classes: Optional[Sequence[int]] = None,
        masks: MaskSpec = None,
        *,
        resolution: str = "full",
    ) -> Explanation:
        """Explain `images` float [B,3,H,W] for `classes` (None: every output class).

        masks: None (each class's predicted pixels), a float Tensor [B,K,H,W] of target regions,
        a Box/Pixel/Component shared by all images, or a list of B of them.
        resolution: "full" (maps at the model output's size) or "layer" (maps [B,K,h,w] at the
        target layer's resolution, before the final upsample: sx.upsample_maps(maps, (H, W))
        gives the "full" maps back to float rounding; a compact form to store or to send).
        """
        images = _check_images(images, self.model, self._in_channels)
        _check_resolution(resolution)
        spec = get_method(self.method)
        key = tuple(images.shape[1:])
        head = self._heads.get(key)
        with _ModelState(self.model):
            if head is not None or not spec.needs_gradients:
                # No graph needed: the closed form, or Eigen-CAM (activations only).
                with _ForwardCapture(self) as cap, torch.no_grad():
                    logits = _select_output(self.model(images), self.output_key, images.shape[0])
                    activations = cap.activations()
                    if not spec.needs_gradients:
                        return self._eigen(activations, logits, classes, resolution)
                    return self._analytic(activations, logits, classes, masks, head, resolution)
            with _ForwardCapture(self, leaf=True) as cap:
                with torch.enable_grad():
                    logits = _select_output(self.model(images), self.output_key, images.shape[0])
                activations = cap.activations()
                start, upsample = cap.backward_start(logits)
                if not start.requires_grad:
                    raise ValueError(
                        f"target_layer {self.layer_name!r} is not on the path to the model output: "
                        "no gradient reaches it. Choose a layer whose output feeds the logits."
                    )
                if self.requested_path != "autograd" and key not in self._heads:
                    self._heads[key] = head = cap.linear_head(start, upsample)
                    if head is None and self.requested_path == "analytic":
                        raise ValueError(
                            f"gradient_path='analytic' needs target_layer {self.layer_name!r} to feed a 1×1 "
                            "convolution (eval-mode BatchNorm/Dropout allowed in between) whose output is the "
                            "logits or is bilinearly upsampled to them; none was found. Use "
                            "gradient_path='auto' or 'autograd', or target the input of the final classifier."
                        )
                if head is not None:
                    return self._analytic(activations.detach(), logits.detach(), classes, masks, head, resolution)
                self.gradient_path = "autograd"
                class_ids = _check_classes(classes, logits.shape[1])
                labels, seeds = _labels_and_seeds(logits.detach(), None, class_ids, masks, upsample, self.backend)
                active = seeds.flatten(2).ne(0).any(dim=2)  # [B,K]
                output_size = tuple(logits.shape[-2:]) if resolution == "full" else None
                maps = self._gradient_maps(activations, start, seeds, class_ids, active, output_size)
        return self._result(maps, class_ids, labels, active, {
            "backward_start": "logits before upsample" if upsample else "model output",
            "backward_passes": int(active.any(dim=0).sum())})

    def linear_head(self, images: torch.Tensor) -> Optional[LinearHead]:
        """The verified linear head after the target layer for inputs shaped like `images`
        float [B,3,H,W] (runs one explanation if not yet known), or None when there is none."""
        key = tuple(images.shape[1:])
        if key not in self._heads:
            if self.requested_path == "autograd":
                return None
            self(images[:1], classes=[0], masks=torch.ones(1, 1, *images.shape[-2:], device=images.device))
        return self._heads.get(key)

    def _result(self, maps, class_ids, labels, active, info) -> Explanation:
        info = {"gradient_path": self.gradient_path, **info}
        return Explanation(maps=maps, classes=class_ids, labels=labels, active=active,
                           method=self.method, layer=self.layer_name, info=info)

    def _analytic(self, activations, logits, classes, masks, head: LinearHead, resolution: str) -> Explanation:
        """Closed-form CAMs from activations [B,C,h,w] and logits [B,L,H,W]."""
        self.gradient_path = "analytic"
        return explain_linear_head(activations, logits, head.weight, head.upsample, classes, masks, self.method,
                                   layer=self.layer_name, backend=self.backend, max_memory_mb=self.max_memory_mb,
                                   resolution=resolution)

    def _eigen(self, activations, logits, classes, resolution: str) -> Explanation:
        return explain_eigen(activations, logits, classes, layer=self.layer_name, backend=self.backend,
                             resolution=resolution)

    def _gradient_maps(self, activations, start, seeds, class_ids, active, output_size) -> torch.Tensor:
        """Per-chunk VJPs and CAM stage → float32 [B,K,H,W] ((H, W) = output_size, None: A's (h, w)).

        activations: leaf A [B,C,h,w]; start: logits [B,L,h',w'] computed from A;
        seeds: float [B,K,h',w'] cotangents of each class at `start`'s resolution.
        """
        B, K = active.shape
        H, W = output_size or tuple(activations.shape[-2:])
        A = activations.detach()
        maps = torch.zeros(B, K, H, W, device=A.device, dtype=torch.float32)
        todo = [k for k in range(K) if bool(active[:, k].any())]  # empty classes cost nothing
        chunk = self._chunk_size(A, H * W)
        for lo in range(0, len(todo), chunk):
            ks = todo[lo:lo + chunk]
            cot = torch.zeros((len(ks),) + tuple(start.shape), device=start.device, dtype=start.dtype)
            for i, k in enumerate(ks):
                cot[i, :, class_ids[k]] = seeds[:, k]
            G = self._vjp(start, activations, cot)  # [n,B,C,h,w]
            if not torch.isfinite(G).all():
                raise FloatingPointError(
                    f"gradients at target_layer {self.layer_name!r} contain NaN or Inf "
                    f"(classes {[class_ids[k] for k in ks]})"
                )
            G = G.transpose(0, 1).contiguous()  # [B,n,C,h,w]
            maps[:, ks] = kernels.cam_from_gradients(A, G, self.method, output_size, backend=self.backend)
        # Images whose region of a class is empty get exact zeros (their gradient was zero anyway).
        return maps * active[:, :, None, None]

    def _vjp(self, start: torch.Tensor, leaf: torch.Tensor, cotangents: torch.Tensor) -> torch.Tensor:
        """cotangents [n,*start.shape] → gradients [n,*leaf.shape], keeping the graph for the next chunk."""
        if self.vjp == "batched" and cotangents.shape[0] > 1:
            (g,) = torch.autograd.grad(start, leaf, cotangents, retain_graph=True, is_grads_batched=True)
            return g
        return torch.stack([torch.autograd.grad(start, leaf, c, retain_graph=True)[0] for c in cotangents])

    def _chunk_size(self, A: torch.Tensor, output_pixels: int) -> int:
        """Classes per chunk: the fixed class_chunk, else as many as fit max_memory_mb.

        Per class the chunk holds its cotangent-produced gradient B·C·h·w, roughly twice that again
        in backward temporaries (a stated estimate, not a measurement), and its maps B·H·W.
        """
        if self.class_chunk is not None:
            return self.class_chunk
        per_class = 4 * (3 * A.numel() + A.shape[0] * output_pixels)
        return max(1, int(self.max_memory_mb * 2**20 // per_class))


# --------------------------------------------------------------------------- shared with other runtimes


def explain_linear_head(
    activations: torch.Tensor,
    logits: torch.Tensor,
    head_weight: torch.Tensor,
    upsample: Optional[tuple],
    classes: Optional[Sequence[int]],
    masks: MaskSpec,
    method: str,
    *,
    layer: str = "",
    backend: str = "auto",
    max_memory_mb: float = 1024.0,
    labels: Optional[torch.Tensor] = None,
    resolution: str = "full",
) -> Explanation:
    """Closed-form explanation from one forward pass's tensors, whatever runtime produced them.

    activations: float [B,C,h,w] (the input of the head's 1×1 conv); logits: float [B,L,H,W];
    head_weight: float [L,C] (BatchNorm folded); upsample: ((h, w), align_corners) of the bilinear
    upsample from the head output to the logits, or None when the logits are the head output.
    labels: int64 [B,H,W] argmax of the logits when the runtime already has it.
    resolution: "full" (maps [B,K,H,W]) or "layer" (maps [B,K,h,w], see Explainer.__call__).
    """
    _check_resolution(resolution)
    class_ids = _check_classes(classes, logits.shape[1])
    labels, seeds = _labels_and_seeds(logits, labels, class_ids, masks, upsample, backend)  # [B,H,W], [B,K,h,w]
    active = seeds.flatten(2).ne(0).any(dim=2)
    weight = head_weight.to(activations.device)[class_ids]
    output_size = tuple(logits.shape[-2:]) if resolution == "full" else None
    maps = analytic_cam(activations, weight, seeds, method, output_size, backend=backend, max_memory_mb=max_memory_mb)
    if not bool(active.all()):  # classes with an empty region: exact zeros
        maps.mul_(active[:, :, None, None])
    return Explanation(maps=maps, classes=class_ids, labels=labels, active=active,
                       method=method, layer=layer, info={"gradient_path": "analytic", "backward_passes": 0})


def explain_eigen(
    activations: torch.Tensor,
    logits: torch.Tensor,
    classes: Optional[Sequence[int]],
    *,
    layer: str = "",
    backend: str = "auto",
    labels: Optional[torch.Tensor] = None,
    resolution: str = "full",
) -> Explanation:
    """Eigen-CAM from one forward pass's tensors, whatever runtime produced them: one
    class-agnostic map shared by every requested class. activations: float [B,C,h,w];
    logits: float [B,L,H,W]; labels: optional int64 [B,H,W] argmax of the logits;
    resolution: "full" or "layer" (see Explainer.__call__)."""
    _check_resolution(resolution)
    class_ids = _check_classes(classes, logits.shape[1])
    raw = reference.eigen_cam(activations).unsqueeze(1)  # [B,1,h,w]
    maps = kernels.normalize_maps(raw, backend=backend)
    if resolution == "full":
        maps = kernels.resize_normalize(maps, tuple(logits.shape[-2:]), backend=backend)
    B, K = logits.shape[0], len(class_ids)
    active = torch.ones(B, K, dtype=torch.bool, device=logits.device)
    return Explanation(maps=maps.expand(-1, K, -1, -1).contiguous(), classes=class_ids,
                       labels=kernels.class_argmax(logits, backend) if labels is None else labels, active=active,
                       method="eigencam", layer=layer, info={"gradient_path": "none", "backward_passes": 0})


def _labels_and_seeds(logits, labels, class_ids, masks, upsample, backend) -> tuple:
    """(labels int64 [B,H,W], seeds float32 [B,K,h',w']): the argmax of the logits (`labels` when
    the runtime already has it) and the cotangent of each class where the gradients start: M, or
    Up*(M) below the upsample. logits: [B,L,H,W]; upsample: None or ((h, w), align_corners).
    """
    labels = kernels.class_argmax(logits, backend) if labels is None else labels
    if upsample is None:
        return labels, target_masks(labels, class_ids, masks)
    low_size, align = upsample
    if masks is None:  # the fused kernel never forms the K full-resolution masks
        return labels, kernels.label_seeds(labels, class_ids, low_size, align, backend=backend)
    return labels, kernels.mask_seeds(target_masks(labels, class_ids, masks), low_size, align, backend=backend)


# --------------------------------------------------------------------------- helpers


def _resolve_layer(model: nn.Module, layer: Union[nn.Module, str]) -> tuple[str, nn.Module]:
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


def _check_images(images, model: nn.Module, channels: Optional[int]) -> torch.Tensor:
    """images float [B,C,H,W] on the model's device; channels: the model's input channels, if known."""
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"images must be a torch.Tensor [B,3,H,W], got {type(images).__name__}")
    if images.ndim != 4:
        raise ValueError(f"images must have 4 dimensions [B,3,H,W], got shape {list(images.shape)}")
    if not images.is_floating_point():
        raise ValueError(f"images must be a float tensor, got dtype {images.dtype}")
    if channels is not None and images.shape[1] != channels:
        raise ValueError(
            f"images must have {channels} channels (the model's first convolution), "
            f"got shape {list(images.shape)}"
        )
    check_finite_images(images)
    param = next(model.parameters(), None)
    if param is not None and images.device != param.device:
        images = images.to(param.device)
    return images


RESOLUTIONS = ("full", "layer")


def _check_resolution(resolution) -> None:
    if resolution not in RESOLUTIONS:
        raise ValueError(f"resolution must be one of {list(RESOLUTIONS)}, got {resolution!r}")


def upsample_maps(
    maps: torch.Tensor,  # float [B,K,h,w] from explain(..., resolution="layer")
    size: Sequence[int],  # (H, W): the model output's size, where resolution="full" puts the maps
    backend: str = "auto",
) -> torch.Tensor:
    """Layer-resolution maps → the "full" maps float32 [B,K,H,W]: the Explainer's own last step
    (bilinear resize, align_corners=False, then ReLU and per-map min-max)."""
    if not isinstance(maps, torch.Tensor) or maps.ndim != 4:
        got = list(maps.shape) if isinstance(maps, torch.Tensor) else type(maps).__name__
        raise ValueError(f"maps must be a Tensor [B,K,h,w], got {got}")
    return kernels.resize_normalize(maps.float(), tuple(int(s) for s in size), backend=backend)


def check_finite_images(images: torch.Tensor) -> None:
    """ValueError if `images` holds NaN or ±Inf.

    Any NaN or ±Inf makes the sum non-finite, so a finite sum (the common case) needs no
    per-element pass; an overflowing sum of finite values falls through to the exact check.
    """
    if not torch.isfinite(images.sum()) and not torch.isfinite(images).all():
        raise ValueError("images contains NaN or Inf values")


def _check_classes(classes, num_classes: int) -> list[int]:
    if classes is None:
        return list(range(num_classes))
    if isinstance(classes, int):
        classes = [classes]
    try:
        ids = [int(c) for c in classes]
    except (TypeError, ValueError):
        raise TypeError(f"classes must be None or a sequence of int class ids, got {classes!r}") from None
    if not ids:
        raise ValueError("classes must not be empty (use None for every class)")
    bad = [c for c in ids if not 0 <= c < num_classes]
    if bad:
        raise ValueError(f"classes must be ids in [0, {num_classes - 1}] (the model outputs {num_classes} classes), got {bad}")
    if len(set(ids)) != len(ids):
        raise ValueError(f"classes must not repeat ids, got {ids}")
    return ids


def _select_output(output, key: str, batch: int) -> torch.Tensor:
    """The logits [B,L,H,W] inside the model's output (a Tensor, a dict or a tuple/list)."""
    if isinstance(output, dict):
        if key not in output:
            raise ValueError(f"the model returned a dict without output_key {key!r}; keys: {sorted(output)}")
        output = output[key]
    elif isinstance(output, (tuple, list)):
        if not output:
            raise ValueError("the model returned an empty tuple/list")
        output = output[0]
    if not isinstance(output, torch.Tensor) or output.ndim != 4 or output.shape[0] != batch:
        got = list(output.shape) if isinstance(output, torch.Tensor) else type(output).__name__
        raise ValueError(
            f"the model output is not a segmentation map: expected logits [B={batch},L,H,W], got {got}"
        )
    return output


class _ModelState:
    """Eval mode and frozen parameters for the call; the model's own state restored afterwards."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model

    def __enter__(self):
        # Every module's mode is recorded and restored, so code run inside (an exporter toggling
        # a wrapper's train/eval recursively, say) cannot leave the model changed.
        self.training = [(m, m.training) for m in self.model.modules()]
        if self.model.training:
            warnings.warn("the model was in train mode; it is explained in eval mode and restored afterwards", stacklevel=3)
            self.model.eval()
        # Nothing below the target layer then builds a graph, and no parameter gradient is made.
        self.frozen = [p for p in self.model.parameters() if p.requires_grad]
        for p in self.frozen:
            p.requires_grad_(False)
        return self

    def __exit__(self, *exc) -> None:
        for p in self.frozen:
            p.requires_grad_(True)
        for m, flag in self.training:
            m.training = flag


class _ForwardCapture:
    """Hooks for one forward pass; all removed on exit.

    Always captures the target activations A (the target module's output, or its first input for
    InputOf). With leaf=True, A is swapped for a detached leaf that requires grad, so the graph
    starts there, and every other module is watched for two things: the last low-resolution
    tensor with a given channel count computed from A (the candidate pre-upsample logits z), and
    the 1×1 convolutions fed by A through foldable modules (the candidate linear head).
    """

    def __init__(self, explainer: "Explainer", leaf: bool = False) -> None:
        self.model, self.layer, self.layer_name = explainer.model, explainer.target_layer, explainer.layer_name
        self.use_input, self.make_leaf = explainer.use_input, leaf
        self.handles: list = []
        self.leaf: Optional[torch.Tensor] = None
        self.calls = 0
        self.latest_by_channels: dict[int, torch.Tensor] = {}
        self.fed_by_leaf: list = []  # (tensor computed from A by foldable modules only, their chain)
        self.convs: list = []  # (1×1 conv fed by such a tensor, the chain before it)

    def __enter__(self):
        if self.use_input:
            self.handles.append(self.layer.register_forward_pre_hook(self._on_target_input))
        else:
            self.handles.append(self.layer.register_forward_hook(self._on_target))
        if self.make_leaf:
            for module in self.model.modules():
                if module is not self.model and (self.use_input or module is not self.layer):
                    self.handles.append(module.register_forward_hook(self._on_module))
        return self

    def __exit__(self, *exc) -> None:
        for handle in self.handles:
            handle.remove()
        self.handles.clear()

    def _capture(self, tensor, what: str) -> torch.Tensor:
        if not isinstance(tensor, torch.Tensor) or tensor.ndim != 4:
            got = list(tensor.shape) if isinstance(tensor, torch.Tensor) else type(tensor).__name__
            raise ValueError(f"target_layer {self.layer_name!r} must {what} a Tensor [B,C,h,w], got {got}")
        self.calls += 1
        self.leaf = tensor.detach().requires_grad_(True) if self.make_leaf else tensor.detach()
        self.fed_by_leaf = [(self.leaf, [])]
        return self.leaf

    def _on_target(self, module, inputs, output):
        leaf = self._capture(output, "output")
        return leaf if self.make_leaf else None

    def _on_target_input(self, module, inputs):
        leaf = self._capture(inputs[0] if inputs else None, "take as input")
        return (leaf,) + tuple(inputs[1:]) if self.make_leaf else None

    def _on_module(self, module, inputs, output):
        if not isinstance(output, torch.Tensor) or output.ndim != 4 or not output.requires_grad:
            return
        self.latest_by_channels[output.shape[1]] = output
        source = inputs[0] if inputs else None
        chain = next((c for t, c in self.fed_by_leaf if t is source), None)
        if chain is None:
            return
        if isinstance(module, _FOLDABLE):
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
        z = self.latest_by_channels.get(logits.shape[1])
        if z is not None and z is not logits and z.shape[-2:] != logits.shape[-2:]:
            size = tuple(logits.shape[-2:])
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
        return LinearHead(weight=weight, conv=conv, upsample=upsample)
