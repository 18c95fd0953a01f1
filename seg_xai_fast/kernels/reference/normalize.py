"""Twins of csrc/normalize_maps.cpp and csrc/resize_normalize.cpp: ReLU + per-map min-max, and the
bilinear resize it is fused with.

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
