"""Volumes: explanations of 3-D segmenters, inputs [B,C,D,H,W] → maps [B,K,D,H,W].

Occlusion takes volumes with 3-D windows and strides, RISE with 3-D grids upsampled trilinearly
(engine/occlusion_nd.py), Score-CAM and Ablation-CAM their 3-D twins (engine/volume_perturbation.py),
the segment attributions 3-D supervoxels (engine/volume_segments.py). The layer methods
that take volumes are those whose CAM stage is unchanged when the depth is
folded into the rows ([B,C,d,h,w] → [B,C,d·h,w]): the gradient CAMs with one weight per channel
(a mean or sum over d, h, w: Grad-CAM, Grad-CAM++, XGrad-CAM), the element-wise ones (HiResCAM,
LayerCAM, Grad-CAM element-wise), the principal-component ones (Eigen-Grad-CAM, Seg-Eigen-CAM,
eigen_smooth), user weights functions, and the activation methods (Eigen-CAM, KPCA-CAM, FEM,
RandomCAM). Their maps are computed by the 2-D CAM stage on the folded tensors and unfolded; the
resize to the output is trilinear (align_corners=False) fused with ReLU and min-max per volume
(kernels.resize_normalize_3d). A user's weights function then sees A [B,C,d·h,w] and G
[B,K,C,d·h,w]. Other methods refuse volumes with an error naming the method.

The gradients are plain autograd from the layer up: the target layer's output becomes a leaf
(every reader of it sees the leaf, so the gradients are exact), one forward with that graph, one
VJP per class with a non-empty target region, in class chunks under max_memory_mb.
"""
from __future__ import annotations

import contextlib
from typing import Optional

import torch

from ..kernels import reference
from .analytic import analytic_cam, head_matches_autograd
from .cam_stage import cam_stage, stage_cam
from .capture import ModelState, select_output
from .checks import check_classes
from .gradients import chunked_vjps
from .methods import get_method, registered
from .occlusion_nd import explain_occlusion_nd, explain_rise_nd, is_occlusion, is_rise
from .outputs import Explanation, explain_activations
from .volume_maps import LayerLeaf, finish_maps, fold
from .volume_perturbation import explain_layer_perturbation_nd, is_layer_perturbation
from .volume_segments import explain_segments_nd
from .targets import volume_masks


def volume_problem(spec, options: dict, several_layers: bool = False) -> Optional[str]:
    """Why method `spec` (with `options`) cannot explain volumes, or None when it can."""
    if several_layers:
        return "a list of target layers is 2-D only; pass one target_layer"
    if options.get("aug_smooth"):
        return "aug_smooth (test-time augmentation) is 2-D only"
    if spec.family in ("activation", "segment") or is_occlusion(spec) or is_rise(spec) or is_layer_perturbation(spec):
        return None
    if spec.family != "gradient" or not spec.needs_layer or spec.runner is not None:
        return f"its family ({spec.family}) has no 3-D runner yet"
    if spec.second_order or spec.target_mix is not None:
        return "its target or Hessian term is 2-D only"
    stage, _ = cam_stage(spec, options)
    if stage.kernel is not None and stage.kernel in reference.DEPTH_FOLDABLE_METHODS:
        return None
    if stage.kernel is None and stage.weights is not None:
        return None
    return "its CAM stage looks at spatial neighbourhoods (or is a user CAM function), which is 2-D only"


def volume_methods() -> list:
    """The registered methods that explain volumes with their default options."""
    out = []
    for name in registered():
        spec = get_method(name)
        if volume_problem(spec, dict(spec.options)) is None:
            out.append(name)
    return out


def check_volume_method(explainer) -> None:
    problem = volume_problem(explainer.spec, explainer.options, getattr(explainer, "layer_explainers", None) is not None)
    if problem is not None:
        raise ValueError(f"method {explainer.method!r} cannot explain volumes [B,C,D,H,W] yet: {problem}. Methods "
                         f"that can: {volume_methods()}")


def layer_volume_maps(spec, options: dict, A: torch.Tensor, G: torch.Tensor, backend: str,
                      normalize: bool) -> torch.Tensor:
    """The CAM stage of a gradient method on a volume: A float [B,C,d,h,w], G float [B,n,C,d,h,w]
    → float32 [B,n,d,h,w] (ReLU + min-max per volume when normalize, else raw)."""
    maps = stage_cam(spec, options, fold(A), fold(G).contiguous(), None, backend, normalize)
    return maps.view(maps.shape[:2] + tuple(A.shape[-3:]))


class Conv3dHead:
    """Forward hooks on the model's plain 1×1×1 Conv3d modules (removed on exit), to find the
    linear head of a volume model: a conv whose input is the target layer's output itself and whose
    output is the logits, z = W·A + b. weight() then proves it on this very call — one VJP with a
    random cotangent against W's adjoint — and returns W float32 [L,C], or None (autograd runs).
    Its input being A itself (no operation between) and its output being the logits are read
    from tensor identity, so nothing between them can be missed."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.model = model
        self.calls: list = []  # (conv, input, output)
        self.handles: list = []

    def __enter__(self):
        for m in self.model.modules():
            if type(m) is torch.nn.Conv3d and m.kernel_size == (1, 1, 1) and m.stride == (1, 1, 1) \
                    and m.groups == 1 and m.padding in ((0, 0, 0), "valid") and m.dilation == (1, 1, 1):
                self.handles.append(m.register_forward_hook(
                    lambda mod, inputs, output: self.calls.append((mod, inputs[0], output))))
        return self

    def __exit__(self, *exc) -> None:
        for h in self.handles:
            h.remove()

    def weight(self, cap: LayerLeaf, A: torch.Tensor, logits: torch.Tensor) -> Optional[torch.Tensor]:
        found = [conv for conv, x, z in self.calls if z is logits and len(cap.passed) == 1 and x is cap.passed[0]]
        if len(found) != 1:
            return None
        W = found[0].weight.detach()[:, :, 0, 0, 0].float()  # [L,C]
        return W if head_matches_autograd(logits, A, W) else None


def explain_volume(explainer, images: torch.Tensor, classes, masks, resolution: str) -> Explanation:
    """A layer method or occlusion of `explainer` (an Explainer) on checked volumes float [B,C,D,H,W]."""
    check_volume_method(explainer)
    if is_occlusion(explainer.spec):
        return explain_occlusion_nd(explainer, images, classes, masks, resolution)
    if is_rise(explainer.spec):
        return explain_rise_nd(explainer, images, classes, masks, resolution)
    if is_layer_perturbation(explainer.spec):
        return explain_layer_perturbation_nd(explainer, images, classes, masks, resolution)
    if explainer.spec.family == "segment":
        return explain_segments_nd(explainer, images, classes, masks, resolution)
    spec = explainer.spec
    gradient = spec.needs_gradients
    if gradient and torch.is_inference_mode_enabled():
        raise RuntimeError(f"method {explainer.method!r} needs gradients, which torch.inference_mode() forbids")
    B = images.shape[0]
    closed = gradient and spec.closed_form is not None and explainer.normalize and \
        explainer.requested_path in ("auto", "analytic") and not explainer.options.get("eigen_smooth")
    if explainer.requested_path == "analytic" and not closed:
        raise ValueError(f"gradient_path='analytic' cannot explain volumes with method {explainer.method!r}"
                         + ("" if spec.closed_form is not None else " (it has no closed form)")
                         + (" and normalize=False" if not explainer.normalize else "")
                         + ": use gradient_path='auto'")
    with ModelState(explainer.model), LayerLeaf(explainer, leaf=gradient) as cap, \
            (Conv3dHead(explainer.model) if closed else contextlib.nullcontext()) as head:
        with torch.enable_grad() if gradient else torch.no_grad():
            logits = select_output(explainer.model(images), explainer.output_key, B, ndim=5)
        A = cap.activations()
        class_ids = check_classes(classes, logits.shape[1], explainer.class_names)
        labels = logits.detach().argmax(dim=1)  # [B,D,H,W]
        M = volume_masks(labels, class_ids, masks)  # [B,K,D,H,W]
        size = tuple(logits.shape[-3:]) if resolution == "full" else None
        if not gradient:
            res = explain_activations(fold(A), fold(logits.detach()), class_ids, spec, layer=explainer.layer_name,
                                      backend=explainer.backend, resolution="layer", options=explainer.options,
                                      normalize=explainer.normalize)
            maps = finish_maps(res.maps.view(res.maps.shape[:2] + tuple(A.shape[-3:])), size, explainer.normalize,
                               explainer.backend)
            active = torch.ones(B, len(class_ids), dtype=torch.bool, device=logits.device)
            info = {"gradient_path": "none", "backward_passes": 0}
        else:
            if not logits.requires_grad:
                raise ValueError(f"target_layer {explainer.layer_name!r} is not on the path to the model output: "
                                 "no gradient reaches it")
            active = M.flatten(2).ne(0).any(dim=2)  # [B,K]
            weight = head.weight(cap, A, logits) if head is not None else None
            if weight is None and explainer.requested_path == "analytic":
                raise ValueError(f"gradient_path='analytic' needs target_layer {explainer.layer_name!r} of this volume "
                                 "model to feed a plain 1×1×1 Conv3d whose output is the logits; none was found (or "
                                 "its check against autograd failed). Use gradient_path='auto'")
            if weight is not None:  # the closed form: no backward, G never formed
                maps = analytic_cam(fold(A.detach()), weight[class_ids], fold(M), spec, None, explainer.backend,
                                    explainer.max_memory_mb, explainer.options)
                maps = finish_maps(maps.view(maps.shape[:2] + tuple(A.shape[-3:])), size, True, explainer.backend)
                maps *= active[:, :, None, None, None]
                info = {"gradient_path": "analytic", "backward_start": "model output", "backward_passes": 0,
                        "verified": True}
                return Explanation(maps=maps, classes=class_ids, labels=labels, active=active, method=spec.name,
                                   layer=explainer.layer_name, info={**info, "volume": True},
                                   class_names=explainer.class_names)
            out_size = size or tuple(A.shape[-3:])
            maps = torch.zeros((B, len(class_ids)) + out_size, device=A.device, dtype=torch.float32)
            per_class = 4 * (3 * A.numel() + logits.numel() + B * M[0, 0].numel())
            chunk = explainer.class_chunk or max(1, int(explainer.max_memory_mb * 2**20 // per_class))
            passes = 0
            for ks, (G,) in chunked_vjps(logits, [A], M.to(logits.dtype), class_ids, active, chunk,
                                         explainer.vjp == "batched"):
                G = torch.zeros((len(ks),) + tuple(A.shape), device=A.device) if G is None else G
                if not torch.isfinite(G).all():
                    raise FloatingPointError(f"gradients at target_layer {explainer.layer_name!r} contain NaN or Inf")
                passes += len(ks)
                layer_maps = layer_volume_maps(spec, explainer.options, A.detach(), G.transpose(0, 1),
                                               explainer.backend, explainer.normalize)
                maps[:, ks] = finish_maps(layer_maps, size, explainer.normalize, explainer.backend)
            maps *= active[:, :, None, None, None]
            info = {"gradient_path": "autograd", "backward_start": "model output", "backward_passes": passes}
    return Explanation(maps=maps, classes=class_ids, labels=labels, active=active, method=spec.name,
                       layer=explainer.layer_name, info={**info, "volume": True}, class_names=explainer.class_names)
