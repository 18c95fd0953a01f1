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
from .methods import get_method
from .targets import REGION_TYPES, Region, target_masks

MaskSpec = Union[None, torch.Tensor, Region, Sequence[Region]]


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
    ``"classifier.3"``); its output is the activation map A [B,C,h,w].
    method: one of ``sx.methods()``.
    backend: "auto" (fused kernels when the compiled core serves the device and dtype), "fused"
    or "torch" (the pure-PyTorch reference).
    max_memory_mb: budget for the per-chunk gradients and maps; ``class_chunk`` overrides it with
    a fixed number of classes per chunk. Results do not depend on the chunking.
    vjp: "loop" (one backward per class through the graph above A, ``retain_graph``) or
    "batched" (``autograd.grad(is_grads_batched=True)``); see benchmarks for the measurements.

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
    ) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        self.model = model
        self.method = get_method(method).name
        self.layer_name, self.target_layer = _resolve_layer(model, target_layer)
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
        self.gradient_path = "autograd"

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
    ) -> Explanation:
        """Explain `images` float [B,3,H,W] for `classes` (None: every output class).

        masks: None (each class's predicted pixels), a float Tensor [B,K,H,W] of target regions,
        a Box/Pixel/Component shared by all images, or a list of B of them.
        """
        images = _check_images(images, self.model)
        spec = get_method(self.method)
        with _ModelState(self.model), _ForwardCapture(self.model, self.target_layer, self.layer_name) as cap:
            with torch.enable_grad():
                output = self.model(images)
            logits = _select_output(output, self.output_key, images.shape[0])
            activations = cap.activations()
            start, to_logits = cap.backward_start(logits)
            L = logits.shape[1]
            class_ids = _check_classes(classes, L)
            labels = logits.detach().argmax(dim=1)
            M = target_masks(labels, class_ids, masks)  # [B,K,H,W]
            seeds = to_logits(M)  # [B,K,h',w'] at the resolution of `start`
            active = seeds.flatten(2).ne(0).any(dim=2)  # [B,K]
            H, W = logits.shape[-2:]
            if spec.needs_gradients:
                if not start.requires_grad:
                    raise ValueError(
                        f"target_layer {self.layer_name!r} is not on the path to the model output: "
                        "no gradient reaches it. Choose a layer whose output feeds the logits."
                    )
                maps = self._gradient_maps(activations, start, seeds, class_ids, active, (H, W))
            else:
                eigen = kernels.resize_normalize(
                    kernels.normalize_maps(reference.eigen_cam(activations.detach()).unsqueeze(1), backend=self.backend),
                    (H, W), backend=self.backend,
                )
                maps = eigen.expand(-1, len(class_ids), -1, -1).contiguous()
                active = torch.ones_like(active)
        return Explanation(
            maps=maps, classes=class_ids, labels=labels, active=active,
            method=self.method, layer=self.layer_name,
            info={"backward_start": "logits before upsample" if start is not logits else "model output",
                  "backward_passes": int(active.any(dim=0).sum())},
        )

    def _gradient_maps(self, activations, start, seeds, class_ids, active, output_size) -> torch.Tensor:
        """Per-chunk VJPs and CAM stage → float32 [B,K,H,W].

        activations: leaf A [B,C,h,w]; start: logits [B,L,h',w'] computed from A;
        seeds: float [B,K,h',w'] cotangents of each class at `start`'s resolution.
        """
        B, K = active.shape
        H, W = output_size
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


def _check_images(images, model: nn.Module) -> torch.Tensor:
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"images must be a torch.Tensor [B,3,H,W], got {type(images).__name__}")
    if images.ndim != 4:
        raise ValueError(f"images must have 4 dimensions [B,3,H,W], got shape {list(images.shape)}")
    if not images.is_floating_point():
        raise ValueError(f"images must be a float tensor, got dtype {images.dtype}")
    first_conv = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
    if first_conv is not None and images.shape[1] != first_conv.in_channels:
        raise ValueError(
            f"images must have {first_conv.in_channels} channels (the model's first convolution), "
            f"got shape {list(images.shape)}"
        )
    if not torch.isfinite(images).all():
        raise ValueError("images contains NaN or Inf values")
    param = next(model.parameters(), None)
    if param is not None and images.device != param.device:
        images = images.to(param.device)
    return images


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
        self.training = {m: m.training for m in self.model.modules()}
        if self.model.training:
            warnings.warn("the model was in train mode; it is explained in eval mode and restored afterwards", stacklevel=3)
        self.requires_grad = [(p, p.requires_grad) for p in self.model.parameters()]
        self.model.eval()
        # Nothing below the target layer then builds a graph, and no parameter gradient is made.
        for p, _ in self.requires_grad:
            p.requires_grad_(False)
        return self

    def __exit__(self, *exc) -> None:
        for p, flag in self.requires_grad:
            p.requires_grad_(flag)
        for m, flag in self.training.items():
            m.training = flag


class _ForwardCapture:
    """Hooks for one forward pass: the target layer's output becomes a leaf, and the last
    low-resolution tensor computed from it is remembered as a candidate for the pre-upsample logits."""

    def __init__(self, model: nn.Module, layer: nn.Module, layer_name: str) -> None:
        self.model, self.layer, self.layer_name = model, layer, layer_name
        self.handles: list = []
        self.leaf: Optional[torch.Tensor] = None
        self.calls = 0
        self.latest_by_channels: dict[int, torch.Tensor] = {}

    def __enter__(self):
        self.handles.append(self.layer.register_forward_hook(self._on_target))
        for module in self.model.modules():
            if module is not self.model and module is not self.layer:
                self.handles.append(module.register_forward_hook(self._on_module))
        return self

    def __exit__(self, *exc) -> None:
        for handle in self.handles:
            handle.remove()
        self.handles.clear()

    def _on_target(self, module, inputs, output):
        if not isinstance(output, torch.Tensor) or output.ndim != 4:
            got = list(output.shape) if isinstance(output, torch.Tensor) else type(output).__name__
            raise ValueError(f"target_layer {self.layer_name!r} must output a Tensor [B,C,h,w], got {got}")
        self.calls += 1
        self.leaf = output.detach().requires_grad_(True)
        return self.leaf

    def _on_module(self, module, inputs, output):
        if isinstance(output, torch.Tensor) and output.ndim == 4 and output.requires_grad:
            self.latest_by_channels[output.shape[1]] = output

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
        """(tensor to start the VJPs from, function mapping masks [B,K,H,W] to its seeds).

        If the logits are F.interpolate(z, bilinear) of a tensor z seen during the forward, start
        from z with seeds Up*(M); otherwise from the logits themselves with seeds M.
        """
        z = self.latest_by_channels.get(logits.shape[1])
        if z is not None and z is not logits and z.shape[-2:] != logits.shape[-2:]:
            size = tuple(logits.shape[-2:])
            with torch.no_grad():
                for align in (False, True):
                    up = F.interpolate(z.detach(), size=size, mode="bilinear", align_corners=align)
                    if torch.allclose(up, logits.detach(), rtol=1e-4, atol=1e-5):
                        low = tuple(z.shape[-2:])
                        return z, lambda M, low=low, align=align: kernels.upsample_adjoint(M, low, align_corners=align)
        return logits, lambda M: M
