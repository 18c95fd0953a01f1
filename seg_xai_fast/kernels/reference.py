"""Pure-PyTorch twin of every compiled kernel: the oracle in tests and the baseline in benchmarks.

Written the way a competent PyTorch user would write it: readable tensor code, no fusion.
Numerics follow pytorch-grad-cam (docs/algorithms.md) so that the fused kernels, the
explainer and the peer all agree:

    map = N(relu(R(N(relu(cam)))))      N = per-map min-max with eps 1e-7, R = bilinear resize

Shapes use B images, K explained classes, C channels of the target layer, (h, w) the target
layer's spatial size and (H, W) the output (image) size.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .colormaps import colormap_lut

#: Methods whose map is Σ_c w_kc·A_c with one weight per (class, channel).
WEIGHTED_METHODS = ("gradcam", "gradcam++", "xgradcam")
#: Methods whose map is an element-wise function of gradients and activations summed over channels.
ELEMENTWISE_METHODS = ("hirescam", "layercam", "gradcam_elementwise")
#: Seg-XRes-CAM: HiResCAM with the gradients pooled in windows (pool_gradients).
POOLED_METHODS = ("segxrescam",)
#: Methods whose map is the first principal component of the per-class weighted activations.
PROJECTION_METHODS = ("eigengradcam", "segeigencam")
#: Every CAM stage computed from activations and gradients (kernels.cam_from_gradients).
GRADIENT_CAM_METHODS = WEIGHTED_METHODS + ELEMENTWISE_METHODS + POOLED_METHODS + PROJECTION_METHODS
POOL_REDUCTIONS = ("max", "mean")
KPCA_KERNELS = ("linear", "poly", "rbf", "sigmoid", "cosine")  # scikit-learn's KernelPCA kernels
KPCA_DEGREE, KPCA_COEF0 = 3, 1.0  # scikit-learn's KernelPCA defaults (poly, sigmoid)
FINERCAM_EPS = 1e-9  # pytorch-grad-cam's FinerWeightedTarget denominator

MINMAX_EPS = 1e-7  # pytorch-grad-cam's scale_cam_image
GRADCAMPP_EPS = 1e-6  # pytorch-grad-cam's grad_cam_plusplus denominator
XGRADCAM_EPS = 1e-7  # pytorch-grad-cam's xgrad_cam denominator


# --------------------------------------------------------------------------- CAM maths


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


def activation_cam(activations: torch.Tensor, method: str, classes: list[int], num_classes: int,
                   options: dict | None = None) -> torch.Tensor:
    """The raw maps of a gradient-free method: float32 [B,1,h,w] for the class-agnostic ones
    (eigencam, kpcacam, fem), [B,K,h,w] for randomcam (class ids `classes` of `num_classes`).
    activations: float [B,C,h,w]; options: the method's checked options."""
    options = options or {}
    A = activations.float()
    if method == "eigencam":
        return eigen_cam(A).unsqueeze(1)
    if method == "kpcacam":
        return kpca_projection(A, options.get("kernel", "sigmoid"), options.get("gamma")).unsqueeze(1)
    weights = activation_weights(A, method, classes, num_classes, options)  # [B,K',C]
    if options.get("eigen_smooth"):
        return principal_projection(weights[..., None, None] * A.unsqueeze(1))
    return weighted_combine(A, weights)


def activation_weights(activations: torch.Tensor, method: str, classes: list[int], num_classes: int,
                       options: dict | None = None) -> torch.Tensor:
    """Channel weights of the gradient-free weighted methods → float32 [B,K',C]: FEM's [B,1,C]
    (class-agnostic), RandomCAM's [B,K,C] (rows `classes` of random_weights, same for every image)."""
    options = options or {}
    B, C = activations.shape[:2]
    if method == "fem":
        return fem_weights(activations, options.get("k", 2)).unsqueeze(1)
    if method == "randomcam":
        rows = random_weights(num_classes, C, options.get("seed", 0))[list(classes)]
        return rows.to(activations.device).unsqueeze(0).expand(B, -1, -1)
    raise ValueError(f"method must be 'fem' or 'randomcam', got {method!r}")


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


# --------------------------------------------------------------------------- post-processing


def normalize_maps(maps: torch.Tensor, eps: float = MINMAX_EPS) -> torch.Tensor:
    """ReLU, then per-map min-max: (x − min) / (max − min + eps). maps: float [..., h, w].

    A constant map becomes all zeros, never NaN.
    """
    x = torch.relu(maps.float())
    flat = x.flatten(-2)
    lo = flat.amin(dim=-1, keepdim=True)
    flat = flat - lo
    hi = flat.amax(dim=-1, keepdim=True)
    return (flat / (hi + eps)).view_as(x)


def resize_bilinear(maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize with F.interpolate(align_corners=False) semantics (= cv2.INTER_LINEAR).

    maps: float [B,K,h,w] → float32 [B,K,H,W] with (H, W) = size.
    """
    return F.interpolate(maps.float(), size=tuple(size), mode="bilinear", align_corners=False)


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


# --------------------------------------------------------------------------- target seeds


def class_argmax(logits: torch.Tensor) -> torch.Tensor:
    """torch.argmax(logits, 1) for [B,L,H,W], several times faster on the CPU: the maximum, then
    the first class equal to it. A NaN maximum matches nothing: then torch.argmax itself."""
    L = logits.shape[1]
    index = torch.arange(L, device=logits.device, dtype=torch.int16 if L < 2**15 else torch.int64).view(1, L, 1, 1)
    best = logits.amax(dim=1, keepdim=True)
    labels = torch.where(logits == best, index, L).amin(dim=1)
    if bool((labels == L).any()):
        return logits.argmax(dim=1)
    return labels.long()


def predicted_masks(logits: torch.Tensor, classes: list[int]) -> torch.Tensor:
    """Seg-Grad-CAM default regions: pixels whose argmax is the class.

    logits: float [B,L,H,W] over all L classes → float32 [B,K,H,W], 1 where argmax == classes[k].
    Ties go to the lowest class index (torch.argmax and numpy.argmax agree on this).
    """
    return label_masks(logits.argmax(dim=1), classes)


def label_masks(labels: torch.Tensor, classes: list[int]) -> torch.Tensor:
    """labels int64 [B,H,W] → float32 [B,K,H,W], 1 where the label is classes[k]."""
    wanted = torch.as_tensor(list(classes), device=labels.device).view(1, -1, 1, 1)
    return (labels.unsqueeze(1) == wanted).float()


def upsample_adjoint(
    masks: torch.Tensor, low_size: tuple[int, int], align_corners: bool = False
) -> torch.Tensor:
    """Up*(M): pull full-resolution target masks back to logit resolution (docs/algorithms.md).

    masks: float [B,K,H,W]; low_size = (h, w) of the logits before F.interpolate(..., mode="bilinear",
    align_corners=align_corners, size=(H, W)). Returns float32 [B,K,h,w] with
    ⟨masks, Up(z)⟩ = ⟨Up*(masks), z⟩ for every z.
    """
    B, K, H, W = masks.shape
    z = torch.zeros(B, K, *low_size, dtype=torch.float32, device=masks.device, requires_grad=True)
    with torch.enable_grad():
        up = F.interpolate(z, size=(H, W), mode="bilinear", align_corners=align_corners)
        (seed,) = torch.autograd.grad(up, z, grad_outputs=masks.float())
    return seed


# --------------------------------------------------------------------------- overlay


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


# --------------------------------------------------------------------------- perturbation methods
#
# Score-CAM, Ablation-CAM, RISE and occlusion perturb the input (or a layer) and score every
# explained class on each perturbed output. N perturbed samples, K classes, (h', w') the size of
# the logits the scores are read from (pre-upsample logits against pulled-back masks, or the full
# output against the masks themselves).

SCORE_TYPES = ("logit", "probability", "dice")
SCORECAM_EPS = 1e-8  # pytorch-grad-cam's ScoreCAM per-channel min-max denominator


def region_scores(
    logits: torch.Tensor,  # float [N,L,h',w'] perturbed outputs of one image
    masks: torch.Tensor,  # float [K,h',w'] target regions (pulled back for "logit" below an upsample)
    classes: list[int],  # the K class ids
    score: str = "logit",
    reference_labels: torch.Tensor | None = None,  # int64 [h',w'] unperturbed prediction ("dice")
) -> torch.Tensor:
    """Region scores of all K classes on every perturbed output → float32 [N,K].

    "logit": S_k = Σ_p M_k(p)·logit_k(p); "probability": Σ_p M_k(p)·softmax_k(p) / Σ_p M_k(p)
    (0 for an empty region); "dice": 2·Σ M·P·O / (Σ M·P + Σ M·O) with P = [argmax = k] of the
    perturbed output and O = [reference_labels = k] (1 where both are empty: nothing changed).
    """
    cls = torch.as_tensor(list(classes), device=logits.device)
    M = masks.float()
    if score == "logit":
        return torch.einsum("nkp,kp->nk", logits.float()[:, cls].flatten(2), M.flatten(1))
    if score == "probability":
        prob = torch.softmax(logits.float(), dim=1)[:, cls]
        area = M.flatten(1).sum(1)
        total = torch.einsum("nkp,kp->nk", prob.flatten(2), M.flatten(1))
        return torch.where(area > 0, total / area.clamp_min(1e-30), torch.zeros_like(total))
    if score == "dice":
        P = (class_argmax(logits.float())[:, None] == cls[None, :, None, None]).float().flatten(2)  # [N,K,p]
        O = (reference_labels[None] == cls[:, None, None]).float().flatten(1)  # [K,p]
        MO = M.flatten(1) * O
        inter = torch.einsum("nkp,kp->nk", P, MO)
        denom = torch.einsum("nkp,kp->nk", P, M.flatten(1)) + MO.sum(1)
        return torch.where(denom > 0, 2 * inter / denom.clamp_min(1e-30), torch.ones_like(inter))
    raise ValueError(f"score must be one of {SCORE_TYPES}, got {score!r}")


def scorecam_masks(activations: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Score-CAM's input masks: each channel upsampled bilinearly (align_corners=True, as
    nn.UpsamplingBilinear2d) to `size` and min-max normalised with eps 1e-8.
    activations: float [n,h,w] → float32 [n,H,W]."""
    up = F.interpolate(activations.float()[None], size=tuple(size), mode="bilinear", align_corners=True)[0]
    lo = up.flatten(1).amin(1)[:, None, None]
    hi = up.flatten(1).amax(1)[:, None, None]
    return (up - lo) / (hi - lo + SCORECAM_EPS)


def scorecam_inputs(image: torch.Tensor, activations: torch.Tensor) -> torch.Tensor:
    """image float [3,H,W] × scorecam_masks(activations [n,h,w]) → perturbed inputs float32 [n,3,H,W]."""
    return image.float()[None] * scorecam_masks(activations, tuple(image.shape[-2:]))[:, None]


def rise_cell(size: tuple[int, int], grid: int) -> tuple[int, int]:
    """RISE's cell size (ceil(H/s), ceil(W/s)): the grid is upsampled to (s+1)·cell and cropped."""
    return -(-int(size[0]) // grid), -(-int(size[1]) // grid)


def rise_masks(grids: torch.Tensor, shifts: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """RISE masks (Petsiuk et al. 2018), materialised: each binary grid [s,s] upsampled bilinearly
    (align_corners=False) to (s+1)·cell and cropped at its shift. grids: float [n,s,s] of 0/1;
    shifts: int64 [n,2] (dy, dx) with 0 ≤ dy < cell_h, 0 ≤ dx < cell_w → float32 [n,H,W]."""
    H, W = size
    s = grids.shape[-1]
    ch, cw = rise_cell(size, s)
    up = F.interpolate(grids.float()[:, None], size=((s + 1) * ch, (s + 1) * cw), mode="bilinear",
                       align_corners=False)[:, 0]
    return torch.stack([up[i, dy:dy + H, dx:dx + W] for i, (dy, dx) in enumerate(shifts.tolist())])


def rise_inputs(image: torch.Tensor, grids: torch.Tensor, shifts: torch.Tensor) -> torch.Tensor:
    """image float [3,H,W] × rise_masks(grids [n,s,s], shifts [n,2]) → float32 [n,3,H,W]."""
    return image.float()[None] * rise_masks(grids, shifts, tuple(image.shape[-2:]))[:, None]


def rise_accumulate(scores: torch.Tensor, grids: torch.Tensor, shifts: torch.Tensor, size: tuple[int, int],
                    chunk: int = 64) -> torch.Tensor:
    """Σ_i scores[i, k]·mask_i for all K classes → float32 [K,H,W]; scores: float [N,K];
    grids/shifts as rise_masks. Masks are materialised `chunk` at a time, never all N."""
    out = torch.zeros(scores.shape[1], *size, device=scores.device)
    for lo in range(0, scores.shape[0], chunk):
        m = rise_masks(grids[lo:lo + chunk], shifts[lo:lo + chunk], size)
        out += torch.einsum("nk,nhw->khw", scores[lo:lo + chunk].float(), m)
    return out


def segment_inputs(image: torch.Tensor, baseline: torch.Tensor, segments: torch.Tensor,
                   keep: torch.Tensor) -> torch.Tensor:
    """Coalition i of the segments: image where keep[i, segments[p]], else the baseline.
    image, baseline: float [3,H,W]; segments: int64 [H,W] in [0, M); keep: bool [n,M]
    → float32 [n,3,H,W]."""
    kept = keep.bool()[:, segments]  # [n,H,W]
    return torch.where(kept[:, None], image.float()[None], baseline.float()[None])


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
