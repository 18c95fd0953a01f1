"""Seg-Grad-CAM targets: which output pixels each class's logits are summed over.

The target of class k is S_k = Σ_p M_k(p)·Y_k(p) with M_k a (soft) pixel mask at the output
resolution (Vinogradova et al. 2020; pytorch-grad-cam's SemanticSegmentationTarget). By default
M_k is the set of pixels predicted as k. A region object replaces it:

- ``Box(y0, x0, y1, x1)``: every pixel of the half-open box [y0, y1) × [x0, x1);
- ``Pixel(y, x)``: one pixel;
- ``Component(y, x)``: the 8-connected component of the pixels predicted as k that contains (y, x)
  (empty, hence an all-zero map, when (y, x) is not predicted as k).

Volumes (outputs [B,L,D,H,W]) take the same objects with a depth coordinate: ``Box(y0, x0, y1, x1,
z0=…, z1=…)`` (a Box without z0/z1 spans every slice), ``Pixel(y, x, z=…)`` and ``Component(y, x,
z=…)`` (26-connected in 3-D); see volume_masks.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence, Union

import torch
import torch.nn.functional as F

from .. import kernels
from ..kernels import reference
from .checks import check_int, check_masks


def _int_fields(region) -> None:
    """Every coordinate of a region as an int (numpy ints too), or a TypeError naming it."""
    for name in region.__dataclass_fields__:
        if name.startswith("z") and getattr(region, name) is None:  # no depth: a 2-D region
            continue
        object.__setattr__(region, name, check_int(getattr(region, name), f"{type(region).__name__}.{name}"))


@dataclass(frozen=True)
class Box:
    """Half-open pixel box [y0, y1) × [x0, x1) in output (image) coordinates; in a volume also
    [z0, z1) along depth (None: every slice)."""

    y0: int
    x0: int
    y1: int
    x1: int
    z0: Optional[int] = None
    z1: Optional[int] = None

    def __post_init__(self):
        _int_fields(self)


@dataclass(frozen=True)
class Pixel:
    """A single output pixel (row y, column x); in a volume also its slice z."""

    y: int
    x: int
    z: Optional[int] = None

    def __post_init__(self):
        _int_fields(self)


@dataclass(frozen=True)
class Component:
    """The connected region of the class's predicted pixels that contains pixel (y, x) (in a
    volume: voxel (z, y, x), 26-connected)."""

    y: int
    x: int
    z: Optional[int] = None

    def __post_init__(self):
        _int_fields(self)


Region = Union[Box, Pixel, Component]
REGION_TYPES = (Box, Pixel, Component)


def target_masks(
    labels: torch.Tensor,
    classes: Sequence[int],
    masks: Union[None, torch.Tensor, Region, Sequence[Region]],
) -> torch.Tensor:
    """The target masks M of every (image, class) pair.

    labels: int64 [B,H,W] predicted class per pixel; classes: the K class ids;
    masks: None (predicted regions), a float Tensor [B,K,H,W] (used as given), or a region
    (shared by all images) or a list of B regions (one per image).
    Returns float32 [B,K,H,W].
    """
    B, H, W = labels.shape
    K = len(classes)
    if masks is None:
        return reference.label_masks(labels, classes)
    if isinstance(masks, torch.Tensor):
        return check_masks(masks, (B, K, H, W)).to(labels.device)
    regions = [masks] * B if isinstance(masks, REGION_TYPES) else list(masks)
    if len(regions) != B or not all(isinstance(r, REGION_TYPES) for r in regions):
        raise ValueError(
            "masks must be None, a float Tensor [B,K,H,W], a Box/Pixel/Component, or a list of "
            f"{B} of them (one per image); got {type(masks).__name__}"
            + (f" of length {len(regions)}" if isinstance(masks, (list, tuple)) else "")
        )
    out = torch.zeros(B, K, H, W, device=labels.device)
    for b, region in enumerate(regions):
        out[b] = _region_mask(region, labels[b], classes)
    return out


def region_logit_sums(
    logits: torch.Tensor,  # float [B,L,H,W]
    labels: torch.Tensor,  # int64 [B,H,W] predicted class per pixel
    classes: Sequence[int],  # the K class ids
    masks: Union[None, torch.Tensor, Region, Sequence[Region]],  # as target_masks
) -> tuple:
    """(scores float32 [B,K,L], areas float32 [B,K]): the region score Σ_p M_k(p)·logit_l(p) of every
    model class l on class k's target region, and Σ_p M_k(p). With the predicted regions the logits
    are summed per label in one pass (no K full-resolution masks are formed)."""
    B, L = logits.shape[:2]
    flat = logits.detach().float().flatten(2)  # [B,L,P]
    if masks is None:
        index = labels.flatten(1)  # [B,P]
        sums = torch.zeros(B, L, L, device=logits.device)
        for b in range(B):  # sums[b, j] = Σ over the pixels labelled j of the logits
            sums[b].index_add_(0, index[b], flat[b].t())
        cls = torch.as_tensor(list(classes), device=logits.device)
        areas = torch.stack([torch.bincount(index[b], minlength=L) for b in range(B)]).float()
        return sums[:, cls], areas[:, cls]
    M = target_masks(labels, classes, masks).flatten(2)  # [B,K,P]
    return torch.einsum("bkp,blp->bkl", M, flat), M.sum(dim=2)


def _region_mask(region: Region, labels: torch.Tensor, classes: Sequence[int]) -> torch.Tensor:
    """One image's masks float32 [K,H,W] for `region`; labels: int64 [H,W]."""
    depth = [name for name in region.__dataclass_fields__ if name.startswith("z") and getattr(region, name) is not None]
    if depth:
        raise ValueError(f"{region} has a depth coordinate ({', '.join(depth)}), but the model's output is 2-D "
                         "[B,L,H,W]: depth coordinates are for volumes")
    H, W = labels.shape
    K = len(classes)
    mask = torch.zeros(K, H, W, device=labels.device)
    if isinstance(region, Box):
        y0, x0, y1, x1 = max(region.y0, 0), max(region.x0, 0), min(region.y1, H), min(region.x1, W)
        if y0 >= y1 or x0 >= x1:
            raise ValueError(f"Box {region} does not overlap the {H}×{W} output")
        mask[:, y0:y1, x0:x1] = 1.0
        return mask
    if not (0 <= region.y < H and 0 <= region.x < W):
        raise ValueError(f"{type(region).__name__}({region.y}, {region.x}) lies outside the {H}×{W} output")
    if isinstance(region, Pixel):
        mask[:, region.y, region.x] = 1.0
        return mask
    label = int(labels[region.y, region.x])
    for k, c in enumerate(classes):
        if c == label:
            mask[k] = connected_component(labels == label, region.y, region.x).float()
    return mask


def connected_component(mask: torch.Tensor, y: int, x: int) -> torch.Tensor:
    """The 8-connected component of bool [H,W] `mask` containing (y, x), as bool [H,W].

    A flood fill by repeated 3×3 dilation restricted to the mask: each step grows the region by
    one pixel ring, so the number of steps is the component's geodesic radius.
    """
    region = torch.zeros_like(mask, dtype=torch.float32)
    if not mask[y, x]:
        return region.bool()
    allowed = mask.float()[None, None]
    region[y, x] = 1.0
    region = region[None, None]
    while True:
        grown = F.max_pool2d(region, 3, stride=1, padding=1) * allowed
        if torch.equal(grown, region):
            return region[0, 0].bool()
        region = grown


def volume_masks(
    labels: torch.Tensor,
    classes: Sequence[int],
    masks: Union[None, torch.Tensor, Region, Sequence[Region]],
    backend: str = "auto",
) -> torch.Tensor:
    """target_masks for volumes: labels int64 [B,D,H,W]; masks None (predicted regions), a float
    Tensor [B,K,D,H,W], or a region / a list of B regions with depth coordinates (a Box without
    z0/z1 spans every slice). Returns float32 [B,K,D,H,W]."""
    B, D, H, W = labels.shape
    K = len(classes)
    if masks is None:  # the fused seeds kernel on the folded volume (at full resolution Up* is the identity)
        folded = kernels.label_seeds(labels.reshape(B, D * H, W), list(classes), (D * H, W), backend=backend)
        return folded.view(B, K, D, H, W)
    if isinstance(masks, torch.Tensor):
        if masks.ndim != 5:
            raise ValueError(f"masks of a volume must be [B,K,D,H,W] = {[B, K, D, H, W]} (images, classes, output "
                             f"size), got shape {list(masks.shape)}")
        return check_masks(masks, (B, K, D, H, W)).to(labels.device)
    regions = [masks] * B if isinstance(masks, REGION_TYPES) else list(masks)
    if len(regions) != B or not all(isinstance(r, REGION_TYPES) for r in regions):
        raise ValueError(
            "masks must be None, a float Tensor [B,K,D,H,W], a Box/Pixel/Component, or a list of "
            f"{B} of them (one per volume); got {type(masks).__name__}")
    out = torch.zeros(B, K, D, H, W, device=labels.device)
    for b, region in enumerate(regions):
        out[b] = _volume_region_mask(region, labels[b], classes)
    return out


def _volume_region_mask(region: Region, labels: torch.Tensor, classes: Sequence[int]) -> torch.Tensor:
    """One volume's masks float32 [K,D,H,W] for `region`; labels: int64 [D,H,W]."""
    D, H, W = labels.shape
    mask = torch.zeros(len(classes), D, H, W, device=labels.device)
    if isinstance(region, Box):
        z0 = 0 if region.z0 is None else max(region.z0, 0)
        z1 = D if region.z1 is None else min(region.z1, D)
        y0, x0, y1, x1 = max(region.y0, 0), max(region.x0, 0), min(region.y1, H), min(region.x1, W)
        if z0 >= z1 or y0 >= y1 or x0 >= x1:
            raise ValueError(f"Box {region} does not overlap the {D}×{H}×{W} output")
        mask[:, z0:z1, y0:y1, x0:x1] = 1.0
        return mask
    if region.z is None:
        raise ValueError(f"{type(region).__name__} of a volume needs its slice: {type(region).__name__}(y, x, z=...), "
                         f"got {region}")
    if not (0 <= region.z < D and 0 <= region.y < H and 0 <= region.x < W):
        raise ValueError(f"{region} lies outside the {D}×{H}×{W} output")
    if isinstance(region, Pixel):
        mask[:, region.z, region.y, region.x] = 1.0
        return mask
    label = int(labels[region.z, region.y, region.x])
    for k, c in enumerate(classes):
        if c == label:
            mask[k] = connected_component_3d(labels == label, region.z, region.y, region.x).float()
    return mask


def connected_component_3d(mask: torch.Tensor, z: int, y: int, x: int) -> torch.Tensor:
    """The 26-connected component of bool [D,H,W] `mask` containing (z, y, x), as bool [D,H,W]
    (the flood fill of connected_component with 3×3×3 dilations)."""
    if not mask[z, y, x]:
        return torch.zeros_like(mask, dtype=torch.bool)
    allowed = mask.float()[None, None]
    region = torch.zeros_like(allowed)
    region[0, 0, z, y, x] = 1.0
    while True:
        grown = F.max_pool3d(region, 3, stride=1, padding=1) * allowed
        if torch.equal(grown, region):
            return region[0, 0].bool()
        region = grown


__all__ = ["Box", "Pixel", "Component", "Region", "target_masks", "volume_masks", "connected_component",
           "connected_component_3d"]
