"""csrc/normalize_maps.cpp, csrc/resize_normalize.cpp and csrc/resize_normalize_3d.cpp: ReLU +
per-map min-max, alone or fused with the bilinear (2-D) or trilinear (3-D) resize to the output size."""
from __future__ import annotations

from typing import Optional, Tuple

import torch

from .. import reference
from ..backend import core
from .checks import size_pair, size_triple, tensor_arg
from .dispatch import core_view, exec_args, into_out, minmax_workspace, out_tensor, use_fused


def normalize_maps(
    maps: torch.Tensor,  # float [..., h, w]
    *,
    backend: str = "auto",
    out: Optional[torch.Tensor] = None,  # float32 [..., h, w]
) -> torch.Tensor:
    """ReLU + per-map min-max (reference.normalize_maps) → float32 [..., h, w].

    Non-contiguous `maps` are copied. Inputs need at least 2 dimensions.
    """
    if not isinstance(maps, torch.Tensor) or maps.dim() < 2:
        raise ValueError("argument 'maps' must be a tensor with at least 2 dimensions [..., h, w]")
    tensor_arg("maps", maps, maps.dim())
    if not use_fused(backend, maps.device, maps.dtype):
        return into_out(out, reference.normalize_maps(maps))
    result = out_tensor(out, maps.shape, torch.float32, maps.device)
    src = maps.contiguous().view(-1, *maps.shape[-2:])
    core.normalize_maps(
        core_view(src), core_view(result.view(src.shape)), core_view(minmax_workspace(src.shape[0], maps.device)),
        reference.MINMAX_EPS, *exec_args(maps.device))
    return result


def resize_normalize(
    maps: torch.Tensor,  # float [B,K,h,w]
    size: Tuple[int, int],  # (H, W)
    *,
    out_dtype: torch.dtype = torch.float32,
    backend: str = "auto",
    out: Optional[torch.Tensor] = None,  # out_dtype [B,K,H,W]
) -> torch.Tensor:
    """Bilinear resize (align_corners=False) + ReLU + per-map min-max → out_dtype [B,K,H,W].

    Equals reference.normalize_maps(reference.resize_bilinear(maps, size)). out_dtype: float32 or
    float16. Non-contiguous `maps` are copied.
    """
    tensor_arg("maps", maps, 4)
    H, W = size_pair("size", size)
    if out_dtype not in (torch.float32, torch.float16):
        raise TypeError(f"argument 'out_dtype' must be torch.float32 or torch.float16, got {out_dtype}")
    B, K = maps.shape[:2]
    if not use_fused(backend, maps.device, maps.dtype):
        return into_out(out, reference.normalize_maps(reference.resize_bilinear(maps, (H, W))).to(out_dtype))
    result = out_tensor(out, (B, K, H, W), out_dtype, maps.device)
    resize_normalize_into(maps.contiguous(), result)
    return result


def resize_normalize_into(maps: torch.Tensor, result: torch.Tensor) -> None:
    """maps: float [B,K,h,w] contiguous → result: [B,K,H,W] (fused path only)."""
    src = maps.view(-1, *maps.shape[-2:])
    dst = result.view(-1, *result.shape[-2:])
    core.resize_normalize(core_view(src), core_view(dst), core_view(minmax_workspace(src.shape[0], maps.device)),
                          reference.MINMAX_EPS, *exec_args(maps.device))


def resize_normalize_3d(
    maps: torch.Tensor,  # float [B,K,d,h,w]
    size: Tuple[int, int, int],  # (D, H, W)
    *,
    backend: str = "auto",
    out: Optional[torch.Tensor] = None,  # float32 [B,K,D,H,W]
) -> torch.Tensor:
    """Trilinear resize (align_corners=False) + ReLU + per-volume min-max → float32 [B,K,D,H,W].

    Equals reference.resize_normalize_3d(maps, size), the 3-D twin of resize_normalize.
    Non-contiguous `maps` are copied.
    """
    tensor_arg("maps", maps, 5)
    D, H, W = size_triple("size", size)
    B, K = maps.shape[:2]
    if not use_fused(backend, maps.device, maps.dtype):
        return into_out(out, reference.resize_normalize_3d(maps, (D, H, W)))
    result = out_tensor(out, (B, K, D, H, W), torch.float32, maps.device)
    src = maps.contiguous().view(-1, *maps.shape[-3:])
    core.resize_normalize_3d(core_view(src), core_view(result.view(-1, D, H, W)),
                             core_view(minmax_workspace(src.shape[0], maps.device)), reference.MINMAX_EPS,
                             *exec_args(maps.device))
    return result
