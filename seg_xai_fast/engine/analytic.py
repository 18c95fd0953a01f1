"""Closed-form gradients for linear heads: every class without a backward pass.

If the target layer's output A feeds a 1×1 convolution z = W·A + b (eval-mode BatchNorm and
Dropout in between folded in) and the logits are z, or z bilinearly upsampled, then the target
S_k = ⟨M_k, Up(z_k)⟩ has the gradient g_kc(u) = W_kc·R_k(u) with R_k = Up*(M_k)
(docs/algorithms.md). Each CAM method then reduces to matrix products over W, A and R, so all K
classes cost about as much as the head's own 1×1 convolution and G is never materialised.
Grad-CAM++ needs an element-wise pass (a fused kernel); the methods without a matrix form
(Grad-CAM element-wise, the principal-component maps) form G = W_kc·R_k in class chunks, still
without any backward pass.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import torch
import torch.nn as nn

from .. import kernels
from ..kernels import reference

# Modules that are affine or the identity in eval mode, hence foldable into the 1×1 conv.
FOLDABLE = (nn.BatchNorm2d, nn.Dropout, nn.Dropout2d, nn.Identity)


@dataclass
class LinearHead:
    """The head found after the target layer: z = weight·A + const, logits = Up(z) or z.

    weight: float32 [L,C] (BatchNorm folded); conv: the 1×1 conv module;
    upsample: ((h, w), align_corners) of the final bilinear upsample, or None;
    chain: the eval-mode modules between A and conv (folded into weight); paths: the dotted names
    of chain + conv in the model.
    """

    weight: torch.Tensor
    conv: nn.Conv2d
    upsample: Optional[tuple]
    chain: tuple = ()
    paths: tuple = ()
    stamps: tuple = field(default=None, repr=False, compare=False)  # _stamps() when weight was folded

    def __post_init__(self):
        if self.stamps is None:
            self.stamps = self._stamps()

    def _stamps(self) -> tuple:
        """(tensor, data pointer, version counter) of every tensor the folded weight depends on:
        in-place changes (optimiser steps, load_state_dict) bump the version, replacing a
        parameter or its .data changes the tensor or the pointer."""
        tensors = [self.conv.weight]
        for m in self.chain:
            if isinstance(m, nn.BatchNorm2d):
                tensors += [t for t in (m.weight, m.running_var) if t is not None]
        stamps = []
        for t in tensors:
            try:
                version = t._version
            except RuntimeError:  # inference tensors keep no version counter: always refold
                version = object()
            stamps.append((t, t.data_ptr(), version))
        return tuple(stamps)

    def current(self, model: nn.Module) -> Optional["LinearHead"]:
        """This head for the model's current parameters: itself when they are unchanged, a
        refolded copy when they changed, None when its modules are no longer the model's (replaced:
        the head must be found and verified again)."""
        for path, module in zip(self.paths, self.chain + (self.conv,)):
            try:
                if model.get_submodule(path) is not module:
                    return None
            except AttributeError:
                return None
        stamps = self._stamps()
        if len(stamps) == len(self.stamps) and all(
                a[0] is b[0] and a[1:] == b[1:] for a, b in zip(stamps, self.stamps)):
            return self
        weight = fold_chain(list(self.chain), self.conv)
        return LinearHead(weight, self.conv, self.upsample, self.chain, self.paths, stamps)


def fold_chain(chain: list[nn.Module], conv: nn.Conv2d) -> torch.Tensor:
    """Effective weight float32 [L,C] of `conv` applied after the eval-mode `chain` (BN, Dropout)."""
    weight = conv.weight.detach()[:, :, 0, 0].float()
    scale = torch.ones(weight.shape[1], device=weight.device)
    for module in chain:
        if isinstance(module, nn.BatchNorm2d):
            s = torch.rsqrt(module.running_var.detach().float() + module.eps)
            if module.weight is not None:
                s = s * module.weight.detach().float()
            scale = scale * s
    return weight * scale[None, :]


def is_linear_conv(module: nn.Module) -> bool:
    """A 1×1, stride-1, ungrouped convolution: z(u) depends on A(u) alone."""
    return (
        isinstance(module, nn.Conv2d)
        and module.kernel_size == (1, 1)
        and module.stride == (1, 1)
        and module.groups == 1
        and module.padding in ((0, 0), "valid")
    )


def analytic_cam(
    activations: torch.Tensor,
    weight: torch.Tensor,
    seeds: torch.Tensor,
    method: str,
    output_size: Optional[tuple],
    backend: str = "auto",
    max_memory_mb: float = 1024.0,
    options: Optional[dict] = None,
) -> torch.Tensor:
    """All K classes' maps from a linear head, G never formed where a matrix form exists.

    activations: float [B,C,h,w]; weight: float [K,C] rows of the explained classes, or [B,K,C]
    when the row differs per image (Finer-CAM's combination of rows); seeds: float [B,K,h,w]
    (R_k, at A's resolution); options: the method's CAM-stage options. Returns float32
    [B,K,H,W] in [0, 1]. Equals reference.analytic_cam.
    """
    options = options or {}
    if backend == "torch":
        return reference.analytic_cam(activations, weight, seeds, method, output_size, options)
    A = activations.float().flatten(2)  # [B,C,N]
    R = seeds.float().flatten(2)  # [B,K,N]
    W = weight.float()
    Wb = W if W.dim() == 3 else W[None]  # [B or 1,K,C]
    B, C, N = A.shape
    K = R.shape[1]
    h, w = activations.shape[-2:]
    size = (h, w) if output_size is None else tuple(output_size)
    if reference.uses_projection(method, options) or method == "gradcam_elementwise" or (
            method == "gradcam++" and W.dim() == 3):
        # No matrix form (a projection, or a function of each W_kc·R_k·A_c): G in class chunks.
        return _chunked_cam(activations, W, seeds, method, size, backend, max_memory_mb, options)
    if method == "gradcam":  # mean_u W_kc R_k(u)
        weights = Wb * R.mean(dim=2)[:, :, None]
    elif method == "xgradcam":  # Σ_u W_kc R_k(u) A_c(u) / (Σ_u A_c(u) + eps)
        channel_sum = A.sum(dim=2)  # [B,C]
        weights = Wb * (R @ A.transpose(1, 2)) / (channel_sum[:, None, :] + reference.XGRADCAM_EPS)
    elif method == "gradcam++":
        weights = _gradcampp_weights(A, W, R, max_memory_mb, backend)
    elif method == "hirescam":  # Σ_c W_kc R_k A_c = R_k ⊙ (W·A)_k
        raw = R * (W @ A)
    elif method == "layercam":  # Σ_c relu(W_kc R_k) A_c, split by the signs of W and R
        raw = torch.relu(R) * (torch.relu(W) @ A) + torch.relu(-R) * (torch.relu(-W) @ A)
    elif method == "segxrescam":  # pool(W_kc R_k) = W_kc·pool(R_k), max-pool split by the sign of W_kc
        pool, reduce = options.get("pool", 2), options.get("reduce", "max")
        R2 = seeds.float()
        if reduce == "mean":
            raw = reference.pool_gradients(R2, pool, "mean").flatten(2) * (W @ A)
        else:  # max(W·R) = W·max(R) where W ≥ 0, W·min(R) = −W·max(−R) where W < 0
            raw = (reference.pool_gradients(R2, pool, "max").flatten(2) * (torch.relu(W) @ A)
                   + reference.pool_gradients(-R2, pool, "max").flatten(2) * (torch.relu(-W) @ A))
    else:
        raise ValueError(f"method {method!r} has no closed form here")
    if method in reference.WEIGHTED_METHODS:
        if not torch.isfinite(weights).all():  # [B,K,C]: cheap, and overflow would give zero maps silently
            raise FloatingPointError("the closed-form channel weights contain NaN or Inf (overflow: are the "
                                     "masks, activations or head weights very large?)")
        maps = kernels.weighted_cam(activations.float(), weights.contiguous(), backend=backend)
    else:
        maps = kernels.normalize_maps(raw.view(B, K, h, w), backend=backend)
    return kernels.resize_normalize(maps, size, backend=backend)


def _chunked_cam(activations, weight, seeds, method, size, backend, max_memory_mb, options) -> torch.Tensor:
    """The CAM stage on G = W_kc·R_k formed a few classes at a time (about max_memory_mb each, with
    the method's temporaries of G's size). weight: [K,C] or [B,K,C] → float32 [B,K,H,W]."""
    B, C, h, w = activations.shape
    K = seeds.shape[1]
    maps = torch.empty(B, K, *size, device=activations.device)
    chunk = max(1, int(max_memory_mb * 2**20 // (3 * 4 * B * C * h * w)))
    for lo in range(0, K, chunk):
        W = weight[..., lo:lo + chunk, :]
        G = reference.analytic_gradients(W, seeds[:, lo:lo + chunk])  # [B,k,C,h,w]
        maps[:, lo:lo + chunk] = kernels.cam_from_gradients(activations.float(), G, method, size, backend=backend,
                                                            options=options)
    return maps


def _gradcampp_weights(A: torch.Tensor, W: torch.Tensor, R: torch.Tensor, max_memory_mb: float,
                       backend: str = "auto") -> torch.Tensor:
    """Grad-CAM++ weights float32 [B,K,C] with g = W_kc·R_k(u).

    A: [B,C,N]; W: [K,C]; R: [B,K,N]. α = g²/(2g² + S_c g³ + eps) where g ≠ 0; w = Σ_u relu(g)·α.
    The fused kernel never forms g; the torch route (backend="torch", or where the core cannot run)
    builds it in class chunks of about max_memory_mb.
    """
    return kernels.analytic_gradcampp_weights(A.unsqueeze(-1), W, R.unsqueeze(-1), backend=backend,
                                              max_memory_mb=max_memory_mb)
