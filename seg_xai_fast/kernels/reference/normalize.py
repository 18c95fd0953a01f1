"""Twins of csrc/normalize_maps.cpp, csrc/resize_normalize.cpp and csrc/resize_normalize_3d.cpp:
ReLU + per-map min-max, and the bilinear (2-D) or trilinear (3-D) resize it is fused with.

Shapes: (h, w) a map's size, (H, W) the size it is resized to.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

MINMAX_EPS = 1e-7  # pytorch-grad-cam's scale_cam_image


def normalize_maps(maps: torch.Tensor, eps: float = MINMAX_EPS) -> torch.Tensor:
    """ReLU, then per-map min-max: (x − min) / (max − min + eps). maps: float [..., h, w].

    A constant map becomes all zeros, never NaN.
    """
    x = torch.relu(maps.float())
    flat = x.flatten(-2)
    lo = flat.amin(dim=-1, keepdim=True)
    flat = flat - lo
    hi = flat.amax(dim=-1, keepdim=True)
    return (flat / (hi + eps)).view_as(x)


def resize_bilinear(maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize with F.interpolate(align_corners=False) semantics (= cv2.INTER_LINEAR).

    maps: float [B,K,h,w] → float32 [B,K,H,W] with (H, W) = size.
    """
    return F.interpolate(maps.float(), size=tuple(size), mode="bilinear", align_corners=False)


def resize_trilinear(maps: torch.Tensor, size: tuple[int, int, int]) -> torch.Tensor:
    """Trilinear resize with F.interpolate(align_corners=False) semantics, the 3-D twin of resize_bilinear.

    maps: float [B,K,d,h,w] → float32 [B,K,D,H,W] with (D, H, W) = size.
    """
    return F.interpolate(maps.float(), size=tuple(size), mode="trilinear", align_corners=False)


def normalize_volumes(maps: torch.Tensor, eps: float = MINMAX_EPS) -> torch.Tensor:
    """normalize_maps with one min-max per volume: maps float [..., d, h, w] → float32, same shape."""
    return normalize_maps(maps.flatten(-3, -2), eps).view(maps.shape)


def resize_normalize_3d(maps: torch.Tensor, size: tuple[int, int, int]) -> torch.Tensor:
    """Trilinear resize + ReLU + per-volume min-max: maps float [B,K,d,h,w] → float32 [B,K,D,H,W]."""
    return normalize_volumes(resize_trilinear(maps, size))
