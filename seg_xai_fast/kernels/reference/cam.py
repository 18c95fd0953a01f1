"""Twins of the CAM-stage ops: csrc/channel_weights.cpp (channel_weights, analytic_gradcampp_weights),
weighted_cam.cpp, elementwise_cam.cpp, pooled_cam.cpp, and the whole stage cam_from_gradients they
compose (kernels/ops/cam.py). Numerics follow pytorch-grad-cam (docs/algorithms.md):

    map = N(relu(R(N(relu(cam)))))      N = per-map min-max with eps 1e-7, R = bilinear resize

Shapes: B images, K explained classes, C channels of the target layer, (h, w) its spatial size,
(H, W) the output (image) size.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .method_names import ELEMENTWISE_METHODS, GRADIENT_CAM_METHODS, PROJECTION_METHODS, WEIGHTED_METHODS
from .normalize import normalize_maps, resize_bilinear

POOL_REDUCTIONS = ("max", "mean")
GRADCAMPP_EPS = 1e-6  # pytorch-grad-cam's grad_cam_plusplus denominator
XGRADCAM_EPS = 1e-7  # pytorch-grad-cam's xgrad_cam denominator


def channel_weights(activations: torch.Tensor, gradients: torch.Tensor, method: str) -> torch.Tensor:
    """Per-class channel weights of the weighted CAM methods.

    activations: float [B,C,h,w]; gradients: float [B,K,C,h,w] (∂S_k/∂A).
    Returns float32 [B,K,C].
    """
    A = activations.float().unsqueeze(1)  # [B,1,C,h,w]
    G = gradients.float()
    if method == "gradcam":
        return G.mean(dim=(-2, -1))
    if method == "gradcam++":
        g2 = G * G
        g3 = g2 * G
        channel_sum = A.sum(dim=(-2, -1), keepdim=True)  # S_c = Σ_u A_c(u)
        alpha = g2 / (2 * g2 + channel_sum * g3 + GRADCAMPP_EPS)
        alpha = torch.where(G != 0, alpha, torch.zeros_like(alpha))
        return (torch.relu(G) * alpha).sum(dim=(-2, -1))
    if method == "xgradcam":
        channel_sum = A.sum(dim=(-2, -1))
        return (G * A).sum(dim=(-2, -1)) / (channel_sum + XGRADCAM_EPS)
    raise ValueError(f"method must be one of {WEIGHTED_METHODS}, got {method!r}")


def weighted_combine(activations: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Σ_c w_kc·A_c. activations: float [B,C,h,w]; weights: float [B,K,C] → raw maps float32 [B,K,h,w]."""
    return torch.einsum("bkc,bchw->bkhw", weights.float(), activations.float())


def elementwise_cam(activations: torch.Tensor, gradients: torch.Tensor, method: str) -> torch.Tensor:
    """HiResCAM Σ_c G⊙A, LayerCAM Σ_c relu(G)⊙A, or Grad-CAM element-wise Σ_c relu(G⊙A).

    activations: float [B,C,h,w]; gradients: float [B,K,C,h,w] → raw maps float32 [B,K,h,w].
    """
    if method not in ELEMENTWISE_METHODS:
        raise ValueError(f"method must be one of {ELEMENTWISE_METHODS}, got {method!r}")
    return weighted_activations(activations, gradients, method).sum(dim=2)


def pool_gradients(gradients: torch.Tensor, pool: int, reduce: str = "max") -> torch.Tensor:
    """Seg-XRes-CAM's gradients: each map max- or mean-pooled in pool×pool windows, nearest-upsampled back.

    gradients: float [..., h, w] → float32 [..., h, w]. Windows tile the map from the top-left; the
    last row/column of windows is partial when pool does not divide h or w, and a mean then counts
    only the positions inside (the padding never enters a window's value). pool=1: unchanged.
    """
    if reduce not in POOL_REDUCTIONS:
        raise ValueError(f"reduce must be one of {POOL_REDUCTIONS}, got {reduce!r}")
    *lead, h, w = gradients.shape
    x = gradients.float().reshape(-1, 1, h, w)
    pad = (0, -(-w // pool) * pool - w, 0, -(-h // pool) * pool - h)  # up to whole windows
    if reduce == "max":
        pooled = F.max_pool2d(F.pad(x, pad, value=float("-inf")), pool)
    else:
        count = F.avg_pool2d(F.pad(torch.ones_like(x[:1]), pad), pool, divisor_override=1)
        pooled = F.avg_pool2d(F.pad(x, pad), pool, divisor_override=1) / count
    up = pooled.repeat_interleave(pool, dim=-2).repeat_interleave(pool, dim=-1)[..., :h, :w]
    return up.reshape(*lead, h, w)


def weighted_activations(activations: torch.Tensor, gradients: torch.Tensor, method: str,
                         options: dict | None = None) -> torch.Tensor:
    """The per-class terms whose sum over channels is the CAM (and whose first principal component
    is the eigen_smooth / Eigen-Grad-CAM / Seg-Eigen-CAM map).

    activations: float [B,C,h,w]; gradients: float [B,K,C,h,w] → float32 [B,K,C,h,w]:
    w_kc·A_c (weighted methods), G⊙A (hirescam, eigengradcam), relu(G)⊙A (layercam),
    relu(G⊙A) (gradcam_elementwise), |G|⊙A (segeigencam), pool(G)⊙A (segxrescam; options
    "pool" and "reduce").
    """
    A = activations.float().unsqueeze(1)  # [B,1,C,h,w]
    G = gradients.float()
    if method in WEIGHTED_METHODS:
        return channel_weights(activations, gradients, method)[..., None, None] * A
    if method in ("hirescam", "eigengradcam"):
        return G * A
    if method == "layercam":
        return torch.relu(G) * A
    if method == "gradcam_elementwise":
        return torch.relu(G * A)
    if method == "segeigencam":
        return G.abs() * A
    if method == "segxrescam":
        options = options or {}
        return pool_gradients(G, options.get("pool", 2), options.get("reduce", "max")) * A
    raise ValueError(f"method must be one of {GRADIENT_CAM_METHODS}, got {method!r}")


def principal_projection(x: torch.Tensor) -> torch.Tensor:
    """Projection of each map stack on its first principal component (Eigen-CAM's map).

    x: float [..., C, h, w] → float32 [..., h, w]. As pytorch-grad-cam: X viewed as an (h·w)×C
    matrix with centred columns (NaN → 0), map = X·v₁ with v₁ the top right-singular vector.
    The SVD leaves the sign free (pytorch-grad-cam's depends on its LAPACK build); ours is fixed
    for every principal-component method: the map is flipped when |min| > |max| (Seg-Eigen-CAM's
    sign correction, i.e. the largest-magnitude value is positive).
    A batched torch.linalg.eigh in float64 through the smaller of the two Gram matrices (no
    h·w×h·w U is formed). No fused kernel: the eigen-solve dominates and LAPACK/cuSOLVER already
    batch it; the Gram products are BLAS calls.
    """
    *lead, C, h, w = x.shape
    M = torch.nan_to_num(x.double().reshape(-1, C, h * w).transpose(1, 2))  # [M,N,C]
    M = M - M.mean(dim=1, keepdim=True)
    if h * w <= C:
        evals, evecs = torch.linalg.eigh(M @ M.transpose(1, 2))  # ascending; [M,N], [M,N,N]
        proj = evecs[..., -1] * evals[:, -1:].clamp_min(0).sqrt()  # σ₁·u₁ = X·v₁
    else:
        _, evecs = torch.linalg.eigh(M.transpose(1, 2) @ M)  # [M,C,C]
        proj = (M @ evecs[..., -1:]).squeeze(-1)
    return fix_sign(proj).reshape(*lead, h, w).float()


def fix_sign(proj: torch.Tensor) -> torch.Tensor:
    """The one sign convention of the principal-component maps: each row of proj [M,N] is negated
    where |min| > |max|."""
    flip = proj.amin(dim=1).abs() > proj.amax(dim=1).abs()
    return torch.where(flip[:, None], -proj, proj)


def eigen_cam(activations: torch.Tensor) -> torch.Tensor:
    """Eigen-CAM: activations float [B,C,h,w] → raw maps float32 [B,h,w] (class-agnostic),
    principal_projection of the activations."""
    return principal_projection(activations)


def postprocess(raw: torch.Tensor, output_size: tuple[int, int] | None) -> torch.Tensor:
    """raw CAMs float [B,K,h,w] → display maps float32 [B,K,H,W] in [0,1]: N(relu(R(N(relu(raw)))))."""
    maps = normalize_maps(raw)
    if output_size is not None and tuple(output_size) != tuple(maps.shape[-2:]):
        maps = normalize_maps(resize_bilinear(maps, output_size))
    else:
        maps = normalize_maps(maps)
    return maps


def cam_from_gradients(
    activations: torch.Tensor,
    gradients: torch.Tensor,
    method: str,
    output_size: tuple[int, int] | None = None,
    options: dict | None = None,
) -> torch.Tensor:
    """The whole CAM stage. activations: float [B,C,h,w]; gradients: float [B,K,C,h,w].
    options: the method's options that shape the CAM stage ("eigen_smooth", "pool", "reduce").

    Returns float32 [B,K,H,W] in [0,1] ((H, W) = output_size, or (h, w) when None).
    """
    return postprocess(raw_cam(activations, gradients, method, options), output_size)


def uses_projection(method: str, options: dict | None) -> bool:
    """True when the CAM of `method` is a principal-component projection (Eigen-Grad-CAM,
    Seg-Eigen-CAM, or eigen_smooth)."""
    return method in PROJECTION_METHODS or bool((options or {}).get("eigen_smooth"))


def raw_cam(activations: torch.Tensor, gradients: torch.Tensor, method: str,
            options: dict | None = None) -> torch.Tensor:
    """The CAM before ReLU and min-max. activations: float [B,C,h,w]; gradients: float [B,K,C,h,w]
    → float32 [B,K,h,w] (signed): Σ_c of weighted_activations, or its first principal component
    (uses_projection)."""
    if method not in GRADIENT_CAM_METHODS:
        raise ValueError(f"method must be one of {GRADIENT_CAM_METHODS}, got {method!r}")
    if uses_projection(method, options):
        return principal_projection(weighted_activations(activations, gradients, method, options))
    if method in WEIGHTED_METHODS:
        return weighted_combine(activations, channel_weights(activations, gradients, method))
    return weighted_activations(activations, gradients, method, options).sum(dim=2)


# --------------------------------------------------------------------------- linear heads (closed form)
#
# When the target layer A feeds a 1×1 convolution z = W·A + b whose output is (upsampled to) the
# logits, class k's gradient is g_kc(u) = W_kc·R_k(u) with R_k the seed of class k at z's
# resolution (docs/algorithms.md). These are the CAM formulas with that G substituted; they are
# written here on the explicit G, chunk by chunk, as the oracle for the fused kernels.


def analytic_gradients(weight: torch.Tensor, seeds: torch.Tensor) -> torch.Tensor:
    """G = W_kc·R_k(u). weight: float [K,C], or [B,K,C] when it differs per image (Finer-CAM);
    seeds: float [B,K,h,w] → float32 [B,K,C,h,w]."""
    W = weight.float() if weight.dim() == 3 else weight.float()[None]
    return W[..., None, None] * seeds.float()[:, :, None]


def analytic_cam(
    activations: torch.Tensor,
    weight: torch.Tensor,
    seeds: torch.Tensor,
    method: str,
    output_size: tuple[int, int] | None = None,
    options: dict | None = None,
) -> torch.Tensor:
    """The CAM stage of a linear head: cam_from_gradients with G = W_kc·R_k.

    activations: float [B,C,h,w]; weight: float [K,C] (the head's rows of the explained classes,
    eval-mode BatchNorm folded in) or [B,K,C]; seeds: float [B,K,h,w]. Returns float32 [B,K,H,W].
    """
    return cam_from_gradients(activations, analytic_gradients(weight, seeds), method, output_size, options)


def analytic_gradcampp_weights(S: torch.Tensor, W: torch.Tensor, R: torch.Tensor, max_memory_mb: float) -> torch.Tensor:
    """Grad-CAM++ weights of a linear head, float32 [B,K,C], with g = W_kc·R_k(u) built in class chunks.

    S: [B,C]; W: [K,C]; R: [B,K,N]. The element-wise operations of reference.channel_weights.
    """
    B, K, N = R.shape
    C = W.shape[1]
    channel_sum = S[:, None, :, None]  # [B,1,C,1]
    out = torch.empty(B, K, C, device=R.device)
    chunk = max(1, int(max_memory_mb * 2**20 // (4 * 4 * B * C * N)))  # ~4 temporaries of [B,k,C,N]
    for lo in range(0, K, chunk):
        g = W[None, lo:lo + chunk, :, None] * R[:, lo:lo + chunk, None, :]  # [B,k,C,N]
        g2 = g * g
        alpha = g2 / (2 * g2 + channel_sum * (g2 * g) + GRADCAMPP_EPS)
        out[:, lo:lo + chunk] = (torch.relu(g) * torch.where(g != 0, alpha, 0)).sum(dim=3)
    return out
