"""csrc/overlay.cpp: maps coloured through a colormap and blended onto images."""
from __future__ import annotations

from typing import Optional

import torch

from .. import reference
from ..backend import core
from ..colormaps import colormap_lut
from .checks import match_dim, same_device, tensor_arg
from .dispatch import core_view, exec_args, into_out, out_tensor, use_fused

_luts: dict = {}


def _lut(name: str, device: torch.device) -> torch.Tensor:
    """uint8 [256,3] colormap table, cached per device."""
    key = (name, str(device))
    if key not in _luts:
        _luts[key] = colormap_lut(name).to(device).contiguous()
    return _luts[key]


def overlay(
    images: torch.Tensor,  # uint8 [B,H,W,3] RGB
    maps: torch.Tensor,  # float [B,h,w] in [0, 1]
    colormap: str = "jet",
    alpha: float = 0.5,
    backend: str = "auto",
    *,
    out: Optional[torch.Tensor] = None,  # uint8 [B,H,W,3]
) -> torch.Tensor:
    """Colour maps and blend them onto images (reference.overlay) → uint8 [B,H,W,3].

    Maps are resized bilinearly to (H, W) inside the kernel when (h, w) differs.
    Non-contiguous inputs are copied.
    """
    tensor_arg("images", images, 4, (torch.uint8,))
    tensor_arg("maps", maps, 3)
    same_device(images=images, maps=maps)
    match_dim("images", images, 3, 3, "RGB channels")
    match_dim("maps", maps, 0, images.shape[0], "B, as images")
    lut = _lut(colormap, images.device)  # validates the name
    alpha = float(alpha)
    if not use_fused(backend, images.device, maps.dtype):
        return into_out(out, reference.overlay(images, maps, colormap, alpha))
    result = out_tensor(out, images.shape, torch.uint8, images.device)
    core.overlay(core_view(images.contiguous()), core_view(maps.contiguous()), core_view(lut), alpha,
                 core_view(result), *exec_args(images.device))
    return result
