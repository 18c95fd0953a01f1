"""csrc/attribution.cpp: the attribution methods' accumulation of input gradients over path steps
and noise samples, and the channel reduction of attributions into maps.

Shapes: n classes in a chunk, G inputs (path steps × noise samples) per forward, R = B·C·(spatial)
elements of one input batch, K explained classes, B images, C channels, N spatial elements.
"""
from __future__ import annotations

from typing import Optional

import torch

from .. import reference
from ..backend import core
from .checks import match_dim, same_device, tensor_arg
from .dispatch import core_view, exec_args, into_out, minmax_workspace, out_tensor, use_fused_op

_F32 = (torch.float32,)


def attribution_accumulate(
    grads: torch.Tensor,  # float32 [n,G,R]: the input gradients of n classes at G inputs
    weights: torch.Tensor,  # float32 [G]: each input's quadrature weight
    mult: Optional[torch.Tensor],  # float32 [G,R] (x − baseline per input) or None
    rows: torch.Tensor,  # int64 [n]: the distinct rows of total the n classes add to
    total: torch.Tensor,  # float32 [K,R], accumulated in place
    total_sq: Optional[torch.Tensor] = None,  # float32 [K,R] or None, accumulated in place
    *,
    abs: bool = False,
    backend: str = "auto",
) -> torch.Tensor:
    """In place: total[rows[i]] += Σ_g f(w_g·m_g·grads[i,g]), total_sq[rows[i]] += Σ_g f(·)²
    (reference.attribution_accumulate) → total. f = |·| with abs. float32 only (the sums of
    squares of SmoothGrad's variance would lose half their digits in float16)."""
    tensor_arg("grads", grads, 3, _F32)
    n, G, R = grads.shape
    tensor_arg("weights", weights, 1, _F32)
    match_dim("weights", weights, 0, G, "inputs per forward, as grads")
    tensor_arg("rows", rows, 1, (torch.int64,))
    match_dim("rows", rows, 0, n, "classes, as grads")
    tensor_arg("total", total, 2, _F32)
    match_dim("total", total, 1, R, "elements per input, as grads")
    tensors = {"grads": grads, "weights": weights, "rows": rows, "total": total}
    if mult is not None:
        tensor_arg("mult", mult, 2, _F32)
        match_dim("mult", mult, 0, G, "inputs per forward, as grads")
        match_dim("mult", mult, 1, R, "elements per input, as grads")
        tensors["mult"] = mult
    if total_sq is not None:
        tensor_arg("total_sq", total_sq, 2, _F32)
        match_dim("total_sq", total_sq, 0, total.shape[0], "rows, as total")
        match_dim("total_sq", total_sq, 1, R, "elements per input, as grads")
        tensors["total_sq"] = total_sq
    same_device(**tensors)
    if not isinstance(abs, bool):
        raise TypeError(f"argument 'abs' must be a bool, got {type(abs).__name__}")
    for name in ("total", "total_sq"):
        if tensors.get(name) is not None and not tensors[name].is_contiguous():
            raise ValueError(f"argument {name!r} must be contiguous (it is accumulated in place)")
    K = total.shape[0]
    if bool(((rows < 0) | (rows >= K)).any()) or rows.unique().numel() != n:
        raise ValueError(f"argument 'rows' must hold {n} distinct row indices in [0, {K}), got {rows.tolist()}")
    if not use_fused_op("attribution_accumulate", backend, grads.device, grads.dtype):
        return reference.attribution_accumulate(grads, weights, mult, rows, total, total_sq, abs)
    core.attribution_accumulate(
        core_view(grads.contiguous()), core_view(weights.contiguous()),
        None if mult is None else core_view(mult.contiguous()), core_view(rows.contiguous()), core_view(total),
        None if total_sq is None else core_view(total_sq), abs, *exec_args(grads.device))
    return total


def attribution_maps(
    attributions: torch.Tensor,  # float [B,K,C,*spatial]
    *,
    normalize: bool = True,
    backend: str = "auto",
    out: Optional[torch.Tensor] = None,  # float32 [B,K,*spatial]
) -> torch.Tensor:
    """The sum over channels, then (normalize) ReLU and per-map min-max over all spatial elements
    (reference.attribution_maps) → float32 [B,K,*spatial]. Non-contiguous inputs are copied."""
    if not isinstance(attributions, torch.Tensor) or attributions.dim() < 4:
        got = list(attributions.shape) if isinstance(attributions, torch.Tensor) else type(attributions).__name__
        raise ValueError(f"argument 'attributions' must be a tensor [B,K,C,*spatial] (4 or more dimensions), got {got}")
    tensor_arg("attributions", attributions, attributions.dim())
    if not isinstance(normalize, bool):
        raise TypeError(f"argument 'normalize' must be a bool, got {type(normalize).__name__}")
    B, K, C = attributions.shape[:3]
    spatial = tuple(attributions.shape[3:])
    flat = attributions.reshape(B, K, C, -1) if attributions.is_contiguous() else attributions.contiguous().view(B, K, C, -1)
    if not use_fused_op("attribution_maps", backend, attributions.device, attributions.dtype, float32_only=False):
        return into_out(out, reference.attribution_maps(flat, normalize).view(B, K, *spatial))
    result = out_tensor(out, (B, K) + spatial, torch.float32, attributions.device)
    core.attribution_maps(core_view(flat), core_view(result.view(B, K, -1)), normalize,
                          core_view(minmax_workspace(B * K, attributions.device)), reference.MINMAX_EPS,
                          *exec_args(attributions.device))
    return result
