"""ROAD's noisy linear imputation: removed pixels filled from their neighbours, solved jointly."""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

from ..engine.checks import describe
from .checks import check_number


# The ROAD neighbourhood: edge neighbours weigh 1/6, diagonal ones 1/12 (the 8 weights sum to 1).
def _neighbour_sum(v: torch.Tensor) -> torch.Tensor:
    """Σ_q w_q v(p+q) over the 8 neighbours inside the image (zero padding drops the others).
    v: float [N,C,H,W] → [N,C,H,W]. Shifted slices: several times faster than a 1-channel conv2d on CPU."""
    p = F.pad(v, (1, 1, 1, 1))
    edges = p[..., :-2, 1:-1] + p[..., 2:, 1:-1] + p[..., 1:-1, :-2] + p[..., 1:-1, 2:]
    corners = p[..., :-2, :-2] + p[..., :-2, 2:] + p[..., 2:, :-2] + p[..., 2:, 2:]
    return edges / 6 + corners / 12


def noisy_linear_impute(
    images: torch.Tensor,
    removed: torch.Tensor,
    noise_std: float = 0.01,
    *,
    generator: Optional[torch.Generator] = None,
    tol: float = 1e-4,
    max_iter: int = 2000,
) -> torch.Tensor:
    """ROAD's noisy linear imputation: every removed pixel equals the weighted mean of its 8
    neighbours (1/6 edge, 1/12 diagonal, renormalised over the neighbours inside the image),
    solved jointly over all removed pixels, then N(0, noise_std²) noise is added to them.

    images: float [N,C,H,W]; removed: bool [N,H,W] (each image keeps at least one pixel).
    Returns float [N,C,H,W] (kept pixels untouched; not clamped).

    Solver: the system D·v_p − Σ_{q removed} w_q v_q = Σ_{q kept} w_q x_q (D = in-image weight
    sum) is symmetric positive definite, so it is solved matrix-free by Jacobi-preconditioned
    conjugate gradients, batched over images and channels, in float32, until
    ‖r‖₂ ≤ tol·‖b‖₂ per system. The start is the solution of the same problem at half
    resolution (recursively), which removes most of the smooth error CG is slow at.
    With tol = 1e-4 the imputed values agree with a float64 solve to ~1e-3, below the noise.
    """
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or not images.is_floating_point():
        raise ValueError(f"images must be a float tensor [N,C,H,W], got {describe(images)}")
    N, C, H, W = images.shape
    if not isinstance(removed, torch.Tensor) or removed.dtype != torch.bool or tuple(removed.shape) != (N, H, W):
        raise ValueError(f"removed must be a bool tensor [N={N},H={H},W={W}], got {describe(removed)}")
    if bool(removed.flatten(1).all(dim=1).any()):
        raise ValueError("removed must keep at least one pixel of every image (got an image with every pixel removed)")
    noise_std = check_number(noise_std, "noise_std", minimum=0.0)
    x = images.float()
    u = removed[:, None].to(x.device, torch.float32)  # 1 on the unknowns, [N,1,H,W]
    v = _harmonic_fill(x, u, tol, max_iter)
    noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype) * noise_std
    return (x * (1 - u) + (v + noise) * u).to(images.dtype)


def _harmonic_fill(x: torch.Tensor, u: torch.Tensor, tol: float, max_iter: int) -> torch.Tensor:
    """Values on the unknowns u (float [N,1,H,W]) of the ROAD system for x [N,C,H,W]; zero elsewhere."""
    H, W = x.shape[-2:]
    known = 1 - u
    if min(H, W) <= 8 or bool((known.flatten(1).sum(1) == 0).any()):
        # Coarsest level (or a coarse image with no known pixel): start from the mean known colour.
        mean = (x * known).sum((2, 3), keepdim=True) / known.sum((2, 3), keepdim=True).clamp(min=1)
        guess = u * mean
    else:
        # Half resolution: a coarse pixel is known when any of its 4 children is (their mean colour).
        kc = F.avg_pool2d(known, 2, ceil_mode=True)
        xc = F.avg_pool2d(x * known, 2, ceil_mode=True) / kc.clamp(min=1e-12)
        coarse = _harmonic_fill(xc, (kc == 0).float(), tol, max_iter) + xc * (kc > 0)
        guess = u * F.interpolate(coarse, size=(H, W), mode="bilinear", align_corners=False)
    return _conjugate_gradient(x, u, guess, tol, max_iter)


def _conjugate_gradient(x, u, v, tol, max_iter):
    """Jacobi-preconditioned CG for A v = b, A v = u·(D·v − nbr(u·v)), b = u·nbr((1−u)·x).
    x: [N,C,H,W]; u: [N,1,H,W]; v: start [N,C,H,W] (zero on the known pixels). One CG per (n, c)."""
    H, W = x.shape[-2:]
    D = _neighbour_sum(torch.ones(1, 1, H, W, device=x.device, dtype=x.dtype))  # 1 inside, less on the border

    def apply(w):
        return u * (D * w - _neighbour_sum(u * w))

    def dot(a, b):
        return (a * b).sum(dim=(2, 3), keepdim=True)

    rhs = u * _neighbour_sum((1 - u) * x)
    limit = tol * rhs.flatten(2).norm(dim=2)[..., None, None]
    r = rhs - apply(v)
    z = r / D
    p = z
    rz = dot(r, z)
    for _ in range(max_iter):
        if bool((r.flatten(2).norm(dim=2)[..., None, None] <= limit).all()):
            break
        Ap = apply(p)
        alpha = rz / dot(p, Ap).clamp(min=1e-30)  # converged systems have p = 0: alpha = 0
        v = v + alpha * p
        r = r - alpha * Ap
        z = r / D
        rz_next = dot(r, z)
        p = z + rz_next / rz.clamp(min=1e-30) * p
        rz = rz_next
    return v
