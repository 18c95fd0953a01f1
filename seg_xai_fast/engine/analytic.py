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
from .cam_stage import stage_cam
from .methods import get_method

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


def head_matches_autograd(start: torch.Tensor, leaf: torch.Tensor, weight: torch.Tensor) -> bool:
    """The proof a linear head gets on the model at hand: one VJP of start (z [B,L,*s]) to the leaf
    A [B,C,*s] with a fixed random cotangent equals the closed form's W^T·cotangent (weight [L,C]).
    ⟨probe, start⟩ summed, not grad_outputs=probe: the same VJP, without torch importing sympy to
    check the cotangent's shape (0.4 s of CPU at every process start that takes this path)."""
    probe = torch.randn(start.shape, generator=torch.Generator().manual_seed(0)).to(start)
    (exact,) = torch.autograd.grad((start * probe).sum(), leaf, retain_graph=True)
    closed = torch.einsum("bl...,lc->bc...", probe, weight.to(probe))
    scale = exact.abs().max().clamp_min(1e-30)
    return torch.allclose(exact, closed, rtol=1e-4, atol=1e-5 * float(scale))


def is_linear_conv(module: nn.Module) -> bool:
    """A plain 1×1, stride-1, ungrouped nn.Conv2d (not a subclass, whose forward may differ:
    weight standardisation, "SAME" padding): z(u) depends on A(u) alone, through `weight`."""
    return (
        type(module) is nn.Conv2d
        and module.kernel_size == (1, 1)
        and module.stride == (1, 1)
        and module.groups == 1
        and module.padding in ((0, 0), "valid")
    )


def analytic_cam(
    activations: torch.Tensor,
    weight: torch.Tensor,
    seeds: torch.Tensor,
    method,
    output_size: Optional[tuple],
    backend: str = "auto",
    max_memory_mb: float = 1024.0,
    options: Optional[dict] = None,
) -> torch.Tensor:
    """All K classes' maps from a linear head, G never formed where a matrix form exists.

    activations: float [B,C,h,w]; weight: float [K,C] rows of the explained classes, or [B,K,C]
    when the row differs per image (Finer-CAM's combination of rows); seeds: float [B,K,h,w]
    (R_k, at A's resolution); method: the name or spec of the method whose CAM stage applies
    (cam_stage.cam_stage); options: its options. Returns float32 [B,K,H,W] in [0, 1]. The spec's closed_form gives the
    channel weights or the raw maps from W, A and R; without one (or with eigen_smooth, a
    projection), G = W_kc·R_k is formed in class chunks and the spec's CAM stage runs on it.
    """
    options = options or {}
    spec = get_method(method)
    h, w = activations.shape[-2:]
    size = (h, w) if output_size is None else tuple(output_size)
    closed = None
    if backend != "torch" and spec.closed_form is not None and not options.get("eigen_smooth"):
        A = activations.float().flatten(2)  # [B,C,N]
        R = seeds.float().flatten(2)  # [B,K,N]
        closed = spec.closed_form(A, weight.float(), R, seeds, options, backend, max_memory_mb)
    if closed is None:  # no matrix form (or the reference route): G in class chunks
        return _chunked_cam(activations, weight, seeds, spec, size, backend, max_memory_mb, options)
    weights, raw = closed
    if weights is not None:
        if not torch.isfinite(weights).all():  # [B,K,C]: cheap, and overflow would give zero maps silently
            raise FloatingPointError("the closed-form channel weights contain NaN or Inf (overflow: are the "
                                     "masks, activations or head weights very large?)")
        maps = kernels.weighted_cam(activations.float(), weights.contiguous(), backend=backend)
    else:
        maps = kernels.normalize_maps(raw.view(raw.shape[0], raw.shape[1], h, w), backend=backend)
    return kernels.resize_normalize(maps, size, backend=backend)


# The closed forms of the built-in methods (their specs' closed_form, engine/catalog.py), with
# A [B,C,N], W [K,C] or [B,K,C], R [B,K,N] = Up*(M) flattened, seeds [B,K,h,w]; each returns
# (channel weights [B,K,C], None) or (None, raw maps [B,K,N]), or None where it has no matrix form.

def _rows(W: torch.Tensor) -> torch.Tensor:
    return W if W.dim() == 3 else W[None]  # [B or 1,K,C]


def gradcam_closed_form(A, W, R, seeds, options, backend, max_memory_mb):
    """Grad-CAM: w_kc = mean_u W_kc·R_k(u)."""
    return _rows(W) * R.mean(dim=2)[:, :, None], None


def xgradcam_closed_form(A, W, R, seeds, options, backend, max_memory_mb):
    """XGrad-CAM: w_kc = Σ_u W_kc·R_k(u)·A_c(u) / (Σ_u A_c(u) + eps)."""
    channel_sum = A.sum(dim=2)  # [B,C]
    return _rows(W) * (R @ A.transpose(1, 2)) / (channel_sum[:, None, :] + reference.XGRADCAM_EPS), None


def gradcampp_closed_form(A, W, R, seeds, options, backend, max_memory_mb):
    """Grad-CAM++ through the fused kernel that never forms g = W_kc·R_k(u); per-image rows
    (Finer-CAM's) have no such kernel."""
    if W.dim() == 3:
        return None
    return kernels.analytic_gradcampp_weights(A.unsqueeze(-1), W, R.unsqueeze(-1), backend=backend,
                                              max_memory_mb=max_memory_mb), None


def hirescam_closed_form(A, W, R, seeds, options, backend, max_memory_mb):
    """HiResCAM: Σ_c W_kc·R_k·A_c = R_k ⊙ (W·A)_k."""
    return None, R * (W @ A)


def layercam_closed_form(A, W, R, seeds, options, backend, max_memory_mb):
    """LayerCAM: Σ_c relu(W_kc·R_k)·A_c, split by the signs of W and R."""
    return None, torch.relu(R) * (torch.relu(W) @ A) + torch.relu(-R) * (torch.relu(-W) @ A)


def segxrescam_closed_form(A, W, R, seeds, options, backend, max_memory_mb):
    """Seg-XRes-CAM: pool(W_kc·R_k) = W_kc·pool(R_k); a max-pool splits by the sign of W_kc
    (max(W·R) = W·max(R) where W ≥ 0, W·min(R) = −W·max(−R) where W < 0)."""
    pool, reduce = options.get("pool", 2), options.get("reduce", "max")
    R2 = seeds.float()
    if reduce == "mean":
        return None, reference.pool_gradients(R2, pool, "mean").flatten(2) * (W @ A)
    return None, (reference.pool_gradients(R2, pool, "max").flatten(2) * (torch.relu(W) @ A)
                  + reference.pool_gradients(-R2, pool, "max").flatten(2) * (torch.relu(-W) @ A))


def _chunked_cam(activations, weight, seeds, spec, size, backend, max_memory_mb, options) -> torch.Tensor:
    """The CAM stage on G = W_kc·R_k formed a few classes at a time (about max_memory_mb each, with
    the method's temporaries of G's size). weight: [K,C] or [B,K,C] → float32 [B,K,H,W]."""
    B, C, h, w = activations.shape
    K = seeds.shape[1]
    maps = torch.empty(B, K, *size, device=activations.device)
    chunk = max(1, int(max_memory_mb * 2**20 // (3 * 4 * B * C * h * w)))
    for lo in range(0, K, chunk):
        W = weight[..., lo:lo + chunk, :]
        G = reference.analytic_gradients(W, seeds[:, lo:lo + chunk])  # [B,k,C,h,w]
        maps[:, lo:lo + chunk] = stage_cam(spec, options, activations.float(), G, size, backend)
    return maps
