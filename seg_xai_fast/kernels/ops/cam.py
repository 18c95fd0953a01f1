"""The CAM-stage ops: csrc/channel_weights.cpp (channel_weights, analytic_gradcampp_weights),
weighted_cam.cpp, elementwise_cam.cpp, pooled_cam.cpp, and cam_from_gradients, the whole stage
composed of them and the fused resize + min-max.

Shapes: B images, K explained classes, C channels of the target layer, (h, w) its spatial size,
(H, W) the output size.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch

from .. import reference
from ..backend import core
from .checks import match_dim, method_arg, same_device, size_pair, tensor_arg
from .dispatch import core_view, exec_args, into_out, minmax_workspace, out_tensor, use_fused, use_fused_op
from .normalize import normalize_maps, resize_normalize_into


def _check_cam_inputs(activations: torch.Tensor, gradients: torch.Tensor) -> None:
    tensor_arg("activations", activations, 4)  # [B,C,h,w]
    tensor_arg("gradients", gradients, 5)  # [B,K,C,h,w]
    same_device(activations=activations, gradients=gradients)
    B, C, h, w = activations.shape
    match_dim("gradients", gradients, 0, B, "B, as activations")
    match_dim("gradients", gradients, 2, C, "C, as activations")
    match_dim("gradients", gradients, 3, h, "h, as activations")
    match_dim("gradients", gradients, 4, w, "w, as activations")


def channel_weights(
    activations: torch.Tensor,  # float [B,C,h,w]
    gradients: torch.Tensor,  # float [B,K,C,h,w]
    method: str,  # "gradcam" | "gradcam++" | "xgradcam"
    *,
    backend: str = "auto",
    out: Optional[torch.Tensor] = None,  # float32 [B,K,C]
) -> torch.Tensor:
    """Per-class channel weights (reference.channel_weights) → float32 [B,K,C].

    One pass over the gradients for all K classes. Non-contiguous inputs are copied.
    """
    method_arg(method, reference.WEIGHTED_METHODS)
    _check_cam_inputs(activations, gradients)
    if not use_fused(backend, activations.device, activations.dtype, gradients.dtype):
        return into_out(out, reference.channel_weights(activations, gradients, method))
    B, K, C = gradients.shape[:3]
    result = out_tensor(out, (B, K, C), torch.float32, activations.device)
    _channel_weights_into(activations.contiguous(), gradients.contiguous(), method, result)
    return result


def _channel_weights_into(A: torch.Tensor, G: torch.Tensor, method: str, result: torch.Tensor) -> None:
    sums = torch.empty(A.shape[:2], dtype=torch.float32, device=A.device)  # [B,C] workspace
    core.channel_weights(core_view(A), core_view(G), method, core_view(result), core_view(sums), *exec_args(A.device))


def analytic_gradcampp_weights(
    channel_sums_or_activations: torch.Tensor,  # float [B,C] sums S_c = Σ_u A_c(u), or float [B,C,h,w]
    weight: torch.Tensor,  # float [K,C], the head's rows of the explained classes
    seeds: torch.Tensor,  # float [B,K,h,w], R_k
    *,
    backend: str = "auto",
    out: Optional[torch.Tensor] = None,  # float32 [B,K,C]
    max_memory_mb: float = 1024.0,  # torch route: size of its class chunks
) -> torch.Tensor:
    """Grad-CAM++ weights of a linear head, g = W_kc·R_k(u), without forming G → float32 [B,K,C].

    Equals reference.channel_weights(A, reference.analytic_gradients(weight, seeds), "gradcam++").
    The fused path streams R once per channel and skips the terms where g ≤ 0; the torch path
    builds g in class chunks of about max_memory_mb. Inputs are converted to float32 (as the
    reference does) and copied when non-contiguous.
    """
    x = channel_sums_or_activations
    name = "channel_sums_or_activations"
    if not isinstance(x, torch.Tensor) or x.dim() not in (2, 4):
        got = f"{x.dim()} dimensions (shape {list(x.shape)})" if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"argument '{name}' must be float [B,C] channel sums or float [B,C,h,w] "
                         f"activations, got {got}")
    tensor_arg(name, x, x.dim())
    tensor_arg("weight", weight, 2)
    tensor_arg("seeds", seeds, 4)
    device = same_device(**{name: x, "weight": weight, "seeds": seeds})
    B, K, h, w = seeds.shape
    C = weight.shape[1]
    match_dim("weight", weight, 0, K, "K, as seeds")
    match_dim(name, x, 0, B, "B, as seeds")
    match_dim(name, x, 1, C, "C, as weight")
    if x.dim() == 4:
        match_dim(name, x, 2, h, "h, as seeds")
        match_dim(name, x, 3, w, "w, as seeds")
    if not use_fused(backend, device, torch.float32):  # inputs become float32 either way
        sums = x.float().sum(dim=(2, 3)) if x.dim() == 4 else x.float()
        return into_out(out, reference.analytic_gradcampp_weights(sums, weight.float(), seeds.float().flatten(2), max_memory_mb))
    result = out_tensor(out, (B, K, C), torch.float32, device)
    sums = torch.empty(B, C, dtype=torch.float32, device=device)  # [B,C] workspace
    core.analytic_gradcampp_weights(
        core_view(x.float().contiguous()), core_view(weight.float().contiguous()),
        core_view(seeds.float().contiguous()), core_view(result), core_view(sums), *exec_args(device))
    return result


def weighted_cam(
    activations: torch.Tensor,  # float [B,C,h,w]
    weights: torch.Tensor,  # float32 [B,K,C]
    *,
    backend: str = "auto",
    out: Optional[torch.Tensor] = None,  # float32 [B,K,h,w]
) -> torch.Tensor:
    """Σ_c w_kc·A_c + ReLU + per-map min-max → float32 [B,K,h,w].

    Equals reference.normalize_maps(reference.weighted_combine(activations, weights)).
    Non-contiguous inputs are copied; `weights` is converted to float32.
    """
    tensor_arg("activations", activations, 4)
    tensor_arg("weights", weights, 3)
    same_device(activations=activations, weights=weights)
    B, C, h, w = activations.shape
    match_dim("weights", weights, 0, B, "B, as activations")
    match_dim("weights", weights, 2, C, "C, as activations")
    if not use_fused(backend, activations.device, activations.dtype):
        return into_out(out, reference.normalize_maps(reference.weighted_combine(activations, weights)))
    result = out_tensor(out, (B, weights.shape[1], h, w), torch.float32, activations.device)
    _weighted_cam_into(activations.contiguous(), weights.float().contiguous(), result)
    return result


def _weighted_cam_into(A: torch.Tensor, Wt: torch.Tensor, result: torch.Tensor) -> None:
    core.weighted_cam(core_view(A), core_view(Wt), core_view(result),
                      core_view(minmax_workspace(Wt.shape[0] * Wt.shape[1], A.device)),
                      reference.MINMAX_EPS, *exec_args(A.device))


def elementwise_cam(
    activations: torch.Tensor,  # float [B,C,h,w]
    gradients: torch.Tensor,  # float [B,K,C,h,w]
    method: str,  # "hirescam" | "layercam" | "gradcam_elementwise"
    *,
    backend: str = "auto",
    out: Optional[torch.Tensor] = None,  # float32 [B,K,h,w]
) -> torch.Tensor:
    """HiResCAM / LayerCAM / Grad-CAM element-wise + ReLU + per-map min-max → float32 [B,K,h,w].

    Equals reference.normalize_maps(reference.elementwise_cam(...)). One pass over G and A.
    Non-contiguous inputs are copied.
    """
    method_arg(method, reference.ELEMENTWISE_METHODS)
    _check_cam_inputs(activations, gradients)
    if not use_fused(backend, activations.device, activations.dtype, gradients.dtype):
        return into_out(out, reference.normalize_maps(reference.elementwise_cam(activations, gradients, method)))
    B, K, C, h, w = gradients.shape
    result = out_tensor(out, (B, K, h, w), torch.float32, activations.device)
    _elementwise_cam_into(activations.contiguous(), gradients.contiguous(), method, result)
    return result


def _elementwise_cam_into(A: torch.Tensor, G: torch.Tensor, method: str, result: torch.Tensor) -> None:
    core.elementwise_cam(core_view(A), core_view(G), method, core_view(result),
                         core_view(minmax_workspace(G.shape[0] * G.shape[1], A.device)),
                         reference.MINMAX_EPS, *exec_args(A.device))


def pooled_cam(
    activations: torch.Tensor,  # float [B,C,h,w]
    gradients: torch.Tensor,  # float [B,K,C,h,w]
    pool: int,  # window side ≥ 1
    reduce: str = "max",  # "max" | "mean"
    *,
    backend: str = "auto",
    out: Optional[torch.Tensor] = None,  # float32 [B,K,h,w]
) -> torch.Tensor:
    """Seg-XRes-CAM Σ_c pool(G)⊙A + ReLU + per-map min-max → float32 [B,K,h,w], the pooled
    gradients never stored. Equals reference.normalize_maps(reference.raw_cam(A, G, "segxrescam",
    {"pool": pool, "reduce": reduce})). Non-contiguous inputs are copied."""
    _check_cam_inputs(activations, gradients)
    if not isinstance(pool, int) or isinstance(pool, bool) or pool < 1:
        raise ValueError(f"argument 'pool' must be an int ≥ 1, got {pool!r}")
    if reduce not in reference.POOL_REDUCTIONS:
        raise ValueError(f"argument 'reduce' must be one of {reference.POOL_REDUCTIONS}, got {reduce!r}")
    if not use_fused_op("pooled_cam", backend, activations.device, activations.dtype, gradients.dtype,
                        float32_only=False):
        raw = reference.raw_cam(activations, gradients, "segxrescam", {"pool": pool, "reduce": reduce})
        return into_out(out, reference.normalize_maps(raw))
    B, K, C, h, w = gradients.shape
    result = out_tensor(out, (B, K, h, w), torch.float32, activations.device)
    _pooled_cam_into(activations.contiguous(), gradients.contiguous(), pool, reduce, result)
    return result


def _pooled_cam_into(A: torch.Tensor, G: torch.Tensor, pool: int, reduce: str, result: torch.Tensor) -> None:
    core.pooled_cam(core_view(A), core_view(G), pool, reduce == "mean", core_view(result),
                    core_view(minmax_workspace(G.shape[0] * G.shape[1], A.device)), reference.MINMAX_EPS, *exec_args(A.device))


def cam_from_gradients(
    activations: torch.Tensor,  # float [B,C,h,w]
    gradients: torch.Tensor,  # float [B,K,C,h,w]
    method: str,
    output_size: Optional[Tuple[int, int]] = None,  # (H, W); None → (h, w)
    backend: str = "auto",
    out_dtype: torch.dtype = torch.float32,
    *,
    out: Optional[torch.Tensor] = None,  # out_dtype [B,K,H,W]
    options: Optional[dict] = None,  # the method's CAM-stage options: eigen_smooth, pool, reduce
) -> torch.Tensor:
    """The whole CAM stage (reference.cam_from_gradients) → out_dtype [B,K,H,W] in [0, 1].

    Weighted methods: channel weights, then the weighted sum with ReLU + min-max; element-wise
    methods: one pass over G and A with ReLU + min-max; Seg-XRes-CAM: the pooled_cam pass;
    principal-component maps (eigengradcam, segeigencam, eigen_smooth): the batched eigen-solve
    of the reference, then the fused min-max; then the fused resize + ReLU + min-max (an identity
    resize when output_size is None or (h, w), as the reference normalises twice).
    out_dtype: float32 or float16. Non-contiguous inputs are copied.
    """
    method_arg(method, reference.GRADIENT_CAM_METHODS)
    _check_cam_inputs(activations, gradients)
    if out_dtype not in (torch.float32, torch.float16):
        raise TypeError(f"argument 'out_dtype' must be torch.float32 or torch.float16, got {out_dtype}")
    options = options or {}
    B, K, C, h, w = gradients.shape
    H, W = (h, w) if output_size is None else size_pair("output_size", output_size)
    if not use_fused(backend, activations.device, activations.dtype, gradients.dtype):
        return into_out(out, reference.cam_from_gradients(activations, gradients, method, output_size, options).to(out_dtype))
    device = activations.device
    result = out_tensor(out, (B, K, H, W), out_dtype, device)
    A, G = activations.contiguous(), gradients.contiguous()
    maps = torch.empty(B, K, h, w, dtype=torch.float32, device=device)  # normalised CAMs
    if reference.uses_projection(method, options):
        normalize_maps(reference.raw_cam(A, G, method, options), backend=backend, out=maps)
    elif method in reference.WEIGHTED_METHODS:
        weights = torch.empty(B, K, C, dtype=torch.float32, device=device)
        _channel_weights_into(A, G, method, weights)
        _weighted_cam_into(A, weights, maps)
    elif method in reference.POOLED_METHODS:
        pooled_cam(A, G, options.get("pool", 2), options.get("reduce", "max"), backend=backend, out=maps)
    else:
        _elementwise_cam_into(A, G, method, maps)
    resize_normalize_into(maps, result)
    return result
