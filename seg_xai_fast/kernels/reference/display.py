"""Twin of csrc/overlay.cpp: maps coloured through a colormap and blended onto images."""
from __future__ import annotations

import torch

from ..colormaps import colormap_lut
from .normalize import resize_bilinear


def overlay(
    images: torch.Tensor, maps: torch.Tensor, colormap: str = "jet", alpha: float = 0.5
) -> torch.Tensor:
    """Colour maps and blend them onto frames.

    images: uint8 [B,H,W,3] RGB; maps: float [B,h,w] in [0,1], resized bilinearly
    (align_corners=False) to (H, W) when (h, w) differs. Returns uint8 [B,H,W,3]:
    round((1 − alpha)·image + alpha·LUT[trunc(255·clamp(map, 0, 1))]).
    The colour index truncates like pytorch-grad-cam's np.uint8(255*mask); unlike its
    show_cam_on_image there is no global brightening (cam /= cam.max()) of the result.
    """
    B, H, W, _ = images.shape
    if tuple(maps.shape[-2:]) != (H, W):
        maps = resize_bilinear(maps.unsqueeze(1), (H, W)).squeeze(1)
    index = (maps.float().clamp(0, 1) * 255).to(torch.int64)  # truncation, as np.uint8(255*m)
    heat = colormap_lut(colormap).to(images.device)[index].float()  # [B,H,W,3]
    blended = (1 - alpha) * images.float() + alpha * heat
    return torch.floor(blended + 0.5).clamp(0, 255).to(torch.uint8)
