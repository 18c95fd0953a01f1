"""Explanations from one forward pass's outputs, whatever runtime produced them.

A runtime (PyTorch, ONNX Runtime) runs the model once and hands over a ForwardPass: the target
layer's activations A [B,C,h,w], the logits [B,L,H,W] and their argmax. When gradients are not
needed (Eigen-CAM, KPCA-CAM, FEM, RandomCAM) or come in closed form (a linear head, see
analytic.py), the CAMs of every requested class follow from these tensors alone:
explain_linear_head and explain_activations.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Sequence, Union

import torch

from .. import kernels
from ..kernels import reference
from .analytic import LinearHead, analytic_cam
from .cam_stage import cam_stage
from . import method_maths
from .checks import check_classes, check_resolution, class_position
from .methods import get_method
from .options import check_options
from .targets import Region, region_logit_sums, target_masks

MaskSpec = Union[None, torch.Tensor, Region, Sequence[Region]]


@dataclass
class ForwardPass:
    """One forward pass, as Explainer.forward / OnnxExplainer.forward return it.

    images: float [B,3,H,W] on the model's device. When the explainer can finish from outputs
    alone (closed form, Eigen-CAM, ONNX Runtime): activations float [B,C,h,w], logits float
    [B,L,H,W], labels int64 [B,H,W] (argmax of the logits), counts int64 [B,L] (the pixels
    labelled with each class, counted in the argmax's pass) and, for the closed form, the head.
    Otherwise (the autograd path) only images: explain_outputs then runs the whole explanation.
    """

    images: torch.Tensor
    activations: Optional[torch.Tensor] = None
    logits: Optional[torch.Tensor] = None
    labels: Optional[torch.Tensor] = None
    head: Optional[LinearHead] = None
    counts: Optional[torch.Tensor] = None

    @property
    def has_outputs(self) -> bool:
        """True when the CAMs follow from these tensors alone (no graph needed)."""
        return self.activations is not None

    @classmethod
    def labelled(cls, images: torch.Tensor, activations: torch.Tensor, logits: torch.Tensor, backend: str,
                 head: Optional[LinearHead] = None) -> "ForwardPass":
        """A pass with its labels and their histogram, from the core's one argmax pass over the logits."""
        labels, counts = kernels.class_argmax_counts(logits, backend)
        return cls(images, activations, logits, labels, head, counts)

    def select(self, i: int) -> "ForwardPass":
        """The pass of image i alone (a batch whose explanation failed is retried image by image)."""
        def one(t: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
            return None if t is None else t[i:i + 1]

        return ForwardPass(one(self.images), one(self.activations), one(self.logits), one(self.labels), self.head,
                           one(self.counts))


@dataclass
class SegmentContext:
    """The context table of one image (segment attributions, see docs/segments.md): the effect of
    removing each predicted segment on every explained class's region score.

    segments: int64 [H,W], the image's predicted segments (8-connected components of the
    predicted label map) numbered 0..M−1 in raster order of their first pixel.
    segment_classes: the predicted class of each of the M segments.
    classes: the K explained class ids.
    effects: float32 [K,M]; effects[k, m] = S_k − S_k(segment m replaced by the baseline), positive
    when segment m supports class k's score.
    """

    segments: torch.Tensor
    segment_classes: list[int]
    classes: list[int]
    effects: torch.Tensor


@dataclass
class Explanation:
    """What an Explainer call returns.

    maps: float32 [B,K,H,W] in [0,1] on the model's device; maps[:, i] explains classes[i].
    classes: the K class ids. labels: int64 [B,H,W] predicted class per pixel.
    active: bool [B,K], False where the target region was empty (the map is all zeros).
    class_names: one name per model class when the explainer knows them, else None.
    context: segment attributions only: one SegmentContext per image, when computed (see
    docs/segments.md), else None.
    attributions: the attribution methods only (docs/attributions.md): float32 [B,K,C,*spatial],
    each class's raw signed per-pixel, per-channel attributions (maps reduce their channels); else None.
    """

    maps: torch.Tensor
    classes: list[int]
    labels: torch.Tensor
    active: torch.Tensor
    method: str
    layer: str
    info: dict = field(default_factory=dict)
    class_names: Optional[tuple] = None
    context: Optional[list] = None
    attributions: Optional[torch.Tensor] = None

    def map_of(self, class_id=None) -> torch.Tensor:
        """The maps float32 [B,H,W] of class `class_id` (an id, or a name when class_names are
        known; None: the only explained class). ValueError naming the explained classes otherwise."""
        return self.maps[:, class_position(class_id, self.classes, self.class_names)]

    def overlay(self, images: torch.Tensor, class_id=None, colormap: str = "jet", alpha: float = 0.5):
        """Colour the maps of class `class_id` (see map_of) over `images` (float [B,3,H,W] in
        [0,1]) → uint8 [B,H,W,3]."""
        maps = self.map_of(class_id)
        frames = (images.detach().clamp(0, 1) * 255 + 0.5).to(torch.uint8).permute(0, 2, 3, 1).contiguous()
        return kernels.overlay(frames.to(self.maps.device), maps, colormap=colormap, alpha=alpha)



def explain_linear_head(
    activations: torch.Tensor,
    logits: torch.Tensor,
    head_weight: torch.Tensor,
    upsample: Optional[tuple],
    classes: Optional[Sequence[int]],
    masks: MaskSpec,
    method="gradcam",
    *,
    layer: str = "",
    backend: str = "auto",
    max_memory_mb: float = 1024.0,
    labels: Optional[torch.Tensor] = None,
    resolution: str = "full",
    options: Optional[dict] = None,
) -> Explanation:
    """Closed-form explanation from one forward pass's tensors, whatever runtime produced them.

    activations: float [B,C,h,w] (the input of the head's 1×1 conv); logits: float [B,L,H,W];
    head_weight: float [L,C] (BatchNorm folded); upsample: ((h, w), align_corners) of the bilinear
    upsample from the head output to the logits, or None when the logits are the head output.
    method: a gradient method's name or spec. labels: int64 [B,H,W] argmax of the logits when the
    runtime already has it. resolution: "full" (maps [B,K,H,W]) or "layer" (maps [B,K,h,w], see
    Explainer.__call__). options: the method's options (check_options; None: its defaults).
    """
    check_resolution(resolution)
    spec = get_method(method)
    options = check_options(spec, options)
    class_ids = check_classes(classes, logits.shape[1])
    labels, seeds = labels_and_seeds(logits, labels, class_ids, masks, upsample, backend)  # [B,H,W], [B,K,h,w]
    active = seeds.flatten(2).ne(0).any(dim=2)
    head_weight = head_weight.to(activations.device).float()
    if spec.target_mix is not None:  # the target mixes the head's rows: T_k = Σ_l coef_kl·S_kl
        weight = torch.einsum("bkl,lc->bkc", spec.target_mix(logits, labels, class_ids, masks, options), head_weight)
    else:
        weight = head_weight[class_ids]
    output_size = tuple(logits.shape[-2:]) if resolution == "full" else None
    stage, stage_options = cam_stage(spec, options)
    maps = analytic_cam(activations, weight, seeds, stage, output_size, backend=backend, max_memory_mb=max_memory_mb,
                        options=stage_options)
    if not bool(active.all()):  # classes with an empty region: exact zeros
        maps.mul_(active[:, :, None, None])
    return Explanation(maps=maps, classes=class_ids, labels=labels, active=active,
                       method=spec.name, layer=layer, info={"gradient_path": "analytic", "backward_passes": 0})


def finer_coefficients(logits: torch.Tensor, labels: torch.Tensor, class_ids: list, masks: MaskSpec,
                       options: dict) -> torch.Tensor:
    """Finer-CAM's coefficients float32 [B,K,L] (method_maths.finer_coefficients) from the logits
    float [B,L,H,W] and each class's target region (labels int64 [B,H,W], masks as Explainer)."""
    scores, areas = region_logit_sums(logits, labels, class_ids, masks)
    return method_maths.finer_coefficients(scores, areas, class_ids, options["alpha"], options["comparison_categories"])


def explain_activations(
    activations: torch.Tensor,
    logits: torch.Tensor,
    classes: Optional[Sequence[int]],
    method="eigencam",
    *,
    layer: str = "",
    backend: str = "auto",
    labels: Optional[torch.Tensor] = None,
    resolution: str = "full",
    masks: MaskSpec = None,
    options: Optional[dict] = None,
    normalize: bool = True,
) -> Explanation:
    """An activation method (Eigen-CAM, KPCA-CAM, FEM, RandomCAM) from one forward pass's tensors,
    whatever runtime produced them: one class-agnostic map shared by every requested class, or a
    map per class (RandomCAM). activations: float [B,C,h,w]; logits: float [B,L,H,W]; labels:
    optional int64 [B,H,W] argmax of the logits; resolution: "full" or "layer" (see
    Explainer.__call__); normalize: False gives the raw signed maps (bilinearly resized). masks:
    checked as for every other method (a wrong shape or region is an error), though they do not
    change these maps."""
    check_resolution(resolution)
    spec = get_method(method)
    options = check_options(spec, options)
    class_ids = check_classes(classes, logits.shape[1])
    if labels is None:
        labels = kernels.class_argmax(logits, backend)
    if masks is not None:
        target_masks(labels, class_ids, masks)
    size = tuple(logits.shape[-2:])
    A = activations.float()
    weights = None
    if spec.activation_weights is not None:
        weights = spec.activation_weights(A, class_ids, logits.shape[1], options)  # [B,K',C]
        if options.get("eigen_smooth"):  # the first principal component of the weighted terms
            raw, weights = reference.principal_projection(weights[..., None, None] * A.unsqueeze(1)), None
        elif not normalize:
            raw = reference.weighted_combine(A, weights)
    else:
        raw = spec.activation_cam(A, options)  # [B,1,h,w]
    if not normalize:
        maps = reference.resize_bilinear(raw, size) if resolution == "full" else raw
    else:
        if weights is not None:
            maps = kernels.weighted_cam(A, weights.contiguous(), backend=backend)
        else:
            maps = kernels.normalize_maps(raw, backend=backend)
        if resolution == "full":
            maps = kernels.resize_normalize(maps, size, backend=backend)
    B, K = logits.shape[0], len(class_ids)
    active = torch.ones(B, K, dtype=torch.bool, device=logits.device)
    return Explanation(maps=maps.expand(-1, K, -1, -1).contiguous(), classes=class_ids,
                       labels=labels, active=active,
                       method=spec.name, layer=layer, info={"gradient_path": "none", "backward_passes": 0})


def labels_and_seeds(logits, labels, class_ids, masks, upsample, backend) -> tuple:
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



def class_cotangents(start: torch.Tensor, seeds: torch.Tensor, class_ids: list, ks: list,
                     mix: Optional[torch.Tensor] = None) -> torch.Tensor:
    """The cotangents at `start` (logits [B,L,h',w']) of explained classes `ks` (positions in
    class_ids) → [n,B,L,h',w']: row i holds the seeds float [B,K,h',w'] of class ks[i] in its
    channel, or, with mix float [B,K,L] (a target combining several classes' scores, Finer-CAM),
    seed_k·mix[b,k,l] in every channel l."""
    cot = torch.zeros((len(ks),) + tuple(start.shape), device=start.device, dtype=start.dtype)
    for i, k in enumerate(ks):
        if mix is None:
            cot[i, :, class_ids[k]] = seeds[:, k]
        else:
            cot[i] = mix[:, k, :, None, None].to(cot) * seeds[:, k, None].to(cot)
    return cot


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


def explain_forward_pass(
    outputs: ForwardPass,
    method,
    head_weight: Optional[torch.Tensor],  # float [L,C] of the linear head (gradient methods), or None
    head_upsample: Optional[tuple],  # ((h, w), align_corners) after the head, or None
    classes: Optional[Sequence[int]],
    masks: MaskSpec,
    *,
    layer: str = "",
    backend: str = "auto",
    max_memory_mb: float = 1024.0,
    resolution: str = "full",
    options: Optional[dict] = None,
    normalize: bool = True,
) -> Explanation:
    """The CAM stage on one forward pass's outputs, for any runtime: the closed form of the
    linear head for the gradient methods, the activation methods otherwise. method: a name or a
    spec; options: the method's options (None: its defaults); normalize=False (activation methods
    only): the raw maps."""
    spec = get_method(method)
    if not spec.one_forward:
        raise ValueError(f"method {spec.name!r} does not follow from one forward pass's outputs ({spec.family} "
                         f"method{'' if spec.needs_layer else ' without a target layer'}): explain the PyTorch "
                         "model with sx.Explainer")
    if spec.needs_gradients:
        return explain_linear_head(outputs.activations, outputs.logits, head_weight, head_upsample, classes, masks,
                                   spec, layer=layer, backend=backend, max_memory_mb=max_memory_mb,
                                   labels=outputs.labels, resolution=resolution, options=options)
    return explain_activations(outputs.activations, outputs.logits, classes, spec, layer=layer, backend=backend,
                               labels=outputs.labels, resolution=resolution, masks=masks, options=options,
                               normalize=normalize)


def explain_one_forward(explainer, forwards, images: torch.Tensor, classes, masks, resolution: str) -> Explanation:
    """The activation family's runner: one forward pass of checked `images`, then the maps from
    its outputs (explainer.explain_outputs)."""
    return explainer.explain_outputs(forwards.outputs(images), classes, masks, resolution=resolution)
