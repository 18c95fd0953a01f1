"""The maths of single methods that no fused kernel runs: KPCA-CAM, FEM, RandomCAM, Finer-CAM's
target, Ablation-CAM's ablation values and FullGrad's map. Their specs (engine/catalog.py) call
them; the kernels' twins stay in kernels/reference.

Shapes: B images, K explained classes, L model classes, C channels of the target layer, (h, w) its
spatial size, (H, W) the input size.
"""
from __future__ import annotations

import torch

from ..kernels.reference import fix_sign, normalize_maps, resize_bilinear

KPCA_KERNELS = ("linear", "poly", "rbf", "sigmoid", "cosine")  # scikit-learn's KernelPCA kernels
KPCA_DEGREE, KPCA_COEF0 = 3, 1.0  # scikit-learn's KernelPCA defaults (poly, sigmoid)
FINERCAM_EPS = 1e-9  # pytorch-grad-cam's FinerWeightedTarget denominator


def kpca_projection(activations: torch.Tensor, kernel: str = "sigmoid", gamma: float | None = None) -> torch.Tensor:
    """KPCA-CAM: projection of the centred activations on the first kernel principal component.

    activations: float [B,C,h,w] → raw maps float32 [B,h,w] (class-agnostic). As pytorch-grad-cam
    with scikit-learn's KernelPCA(n_components=1, kernel, gamma): X = the (h·w)×C matrix with
    centred columns (NaN → 0); the kernel matrix K over positions (gamma None: 1/C; poly degree 3,
    coef0 1; sigmoid coef0 1), double-centred; map = √λ₁·u₁ of its top eigenpair (all zeros when λ₁
    is at rounding level). The sign follows
    fix_sign (the same as scikit-learn's svd_flip: the largest-magnitude value positive).
    Cost: an (h·w)×(h·w) eigen-solve per image, in float64.
    """
    if kernel not in KPCA_KERNELS:
        raise ValueError(f"kernel must be one of {KPCA_KERNELS}, got {kernel!r}")
    B, C, h, w = activations.shape
    X = torch.nan_to_num(activations.double().reshape(B, C, h * w).transpose(1, 2))  # [B,N,C]
    X = X - X.mean(dim=1, keepdim=True)
    g = 1.0 / C if gamma is None else float(gamma)
    dot = X @ X.transpose(1, 2)  # [B,N,N]
    if kernel == "linear":
        K = dot
    elif kernel == "poly":
        K = (g * dot + KPCA_COEF0) ** KPCA_DEGREE
    elif kernel == "sigmoid":
        K = torch.tanh(g * dot + KPCA_COEF0)
    elif kernel == "rbf":
        sq = dot.diagonal(dim1=1, dim2=2)
        dist = (sq[:, :, None] + sq[:, None, :] - 2 * dot).clamp_min(0)
        dist.diagonal(dim1=1, dim2=2).zero_()
        K = torch.exp(-g * dist)
    else:  # cosine: rows of zero norm stay zero, as sklearn's normalize
        norm = X.norm(dim=2, keepdim=True)
        Xn = X / torch.where(norm > 0, norm, torch.ones_like(norm))
        K = Xn @ Xn.transpose(1, 2)
    scale = K.abs().amax(dim=(1, 2))  # [B]
    K = K - K.mean(dim=1, keepdim=True) - K.mean(dim=2, keepdim=True) + K.mean(dim=(1, 2), keepdim=True)
    evals, evecs = torch.linalg.eigh(K)
    # A top eigenvalue at rounding level (a constant kernel: the centring cancels it) is zero, as
    # scikit-learn's eigenvalue check makes it: the map is then all zeros, not rounding noise.
    top = evals[:, -1:]
    top = torch.where(top > K.shape[-1] * torch.finfo(K.dtype).eps * scale[:, None], top, torch.zeros_like(top))
    proj = evecs[..., -1] * top.sqrt()
    return fix_sign(proj).reshape(B, h, w).float()


def fem_weights(activations: torch.Tensor, k: float = 2.0) -> torch.Tensor:
    """FEM's channel weights: the fraction of positions where A_c exceeds mean_c + k·std_c
    (population std). activations: float [B,C,h,w] → float32 [B,C]."""
    A = activations.float().flatten(2)
    threshold = A.mean(dim=2, keepdim=True) + k * A.std(dim=2, unbiased=False, keepdim=True)
    return (A > threshold).float().mean(dim=2)


def random_weights(num_classes: int, channels: int, seed: int) -> torch.Tensor:
    """RandomCAM's weights float32 [L,C], uniform in [-1, 1): one row per model class, drawn from
    torch.Generator().manual_seed(seed) on the CPU, so a class's map does not depend on which other
    classes or images are explained with it."""
    g = torch.Generator().manual_seed(seed)
    return torch.rand(num_classes, channels, generator=g) * 2 - 1


def finer_coefficients(scores: torch.Tensor, areas: torch.Tensor, classes: list[int], alpha: float = 1.0,
                       comparison: tuple = (1, 2, 3)) -> torch.Tensor:
    """Finer-CAM's target in segmentation form, as coefficients of the region scores.

    scores: float [B,K,L] region scores S_kl = Σ_p M_k(p)·logit_l(p) of every model class l on
    class k's target region; areas: float [B,K] = Σ_p M_k(p); classes: the K explained ids.
    With m = S/area (the region's mean logits, standing for a classifier's output), classes ranked
    by |m_l − m_k| (stable, so position 0 is k) and J = the ranks in `comparison`, the target is
        T_k = Σ_{j∈J} p_j·(S_k − α·S_j) / (Σ_{j∈J} p_j + 1e-9),   p = softmax(m),
    pytorch-grad-cam's FinerWeightedTarget on m times the area (a positive constant the min-max
    normalisation removes). Returns ∂T_k/∂S_kl float32 [B,K,L] (p differentiated too, as the peer
    does): the cotangent of class k at logit l is then coefficient·M_k, one backward per class.
    Classes with an empty region get zeros.
    """
    B, K, L = scores.shape
    ranks = [r for r in comparison if r < L]
    target = torch.as_tensor(list(classes), device=scores.device).view(1, K, 1).expand(B, K, 1)
    valid = areas > 0
    with torch.enable_grad():
        S = scores.detach().double().requires_grad_(True)
        m = S / torch.where(valid, areas.double(), torch.ones_like(areas.double()))[..., None]
        m_k = m.gather(2, target)
        order = torch.sort((m - m_k).abs().detach(), dim=2, stable=True).indices
        J = order[..., ranks]  # [B,K,|J|]
        p = torch.softmax(m, dim=2).gather(2, J)
        T = (p * (S.gather(2, target) - alpha * S.gather(2, J))).sum(2) / (p.sum(2) + FINERCAM_EPS)
        (coef,) = torch.autograd.grad(T.sum(), S)
    return torch.where(valid[..., None], coef, torch.zeros_like(coef)).float()


def ablation_values(minimum: float, n: int) -> torch.Tensor:
    """pytorch-grad-cam's AblationLayer value for the n channels of one ablated batch → float32 [n].

    It ablates row i of the batch in place, one after another, with 0 when the batch's minimum is
    0, else min(batch) − 1e7; the minimum includes the rows already ablated, so row i gets
    m − (i+1)·1e7 (computed in float32, one subtraction at a time).
    """
    m = torch.tensor(minimum, dtype=torch.float32)
    if float(m) == 0.0:
        return torch.zeros(n)
    values = []
    for _ in range(n):
        m = m - torch.tensor(1e7, dtype=torch.float32)
        values.append(m.clone())
    return torch.stack(values) if values else torch.zeros(0)


# --------------------------------------------------------------------------- FullGrad
#
# FullGrad (Srinivas & Fleuret 2019) sums, over the input and every bias b of the network, the
# magnitude of b times the gradient at the biased layer's output, each channel min-max normalised
# on its own grid and resized to the input (pytorch-grad-cam's scale_accross_batch_and_channels).
# n classes, B images, C_l channels of layer l on its (h_l, w_l) grid, (H, W) the input size.


def normalized_channel_sum(saliency: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Σ_c R(N(saliency_c)): each channel min-max normalised (eps 1e-7), summed, resized bilinearly.

    saliency: float [..., C, h, w], non-negative → float32 [..., H, W] with (H, W) = size. The sum
    is taken before the resize (one resize per map instead of per channel): the same by linearity.
    """
    summed = normalize_maps(saliency).sum(dim=-3)
    lead = summed.shape[:-2]
    flat = summed.reshape(-1, 1, *summed.shape[-2:])
    if tuple(flat.shape[-2:]) != tuple(size):
        flat = resize_bilinear(flat, size)
    return flat.reshape(*lead, *size)


def fullgrad_map(
    inputs: torch.Tensor,  # float [B,3,H,W]
    input_gradients: torch.Tensor,  # float [n,B,3,H,W] ∂S/∂x of n classes
    bias_terms: list,  # [(bias float [C_l], gradients float [n,B,C_l,h_l,w_l] at the biased output)]
) -> torch.Tensor:
    """FullGrad's raw map float32 [n,B,H,W] (non-negative, before the final min-max):
    Σ_c R(N(|x·∂S/∂x|_c)) + Σ_l Σ_c R(N(|b_l·∂S/∂z_l|_c))."""
    size = tuple(inputs.shape[-2:])
    total = normalized_channel_sum((inputs.float() * input_gradients.float()).abs(), size)
    for bias, grads in bias_terms:
        total += normalized_channel_sum((bias.float()[:, None, None] * grads.float()).abs(), size)
    return total
