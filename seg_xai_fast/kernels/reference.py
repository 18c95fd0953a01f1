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
#: Methods whose map is an element-wise product of gradients and activations summed over channels.
ELEMENTWISE_METHODS = ("hirescam", "layercam")

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
    """HiResCAM Σ_c G⊙A, or LayerCAM Σ_c relu(G)⊙A.

    activations: float [B,C,h,w]; gradients: float [B,K,C,h,w] → raw maps float32 [B,K,h,w].
    """
    A = activations.float().unsqueeze(1)
    G = gradients.float()
    if method == "hirescam":
        return (G * A).sum(dim=2)
    if method == "layercam":
        return (torch.relu(G) * A).sum(dim=2)
    raise ValueError(f"method must be one of {ELEMENTWISE_METHODS}, got {method!r}")


def eigen_cam(activations: torch.Tensor) -> torch.Tensor:
    """Eigen-CAM: projection of the centred activations on their first principal component.

    activations: float [B,C,h,w] → raw maps float32 [B,h,w] (class-agnostic).
    As pytorch-grad-cam: Â = A viewed as an (h·w)×C matrix with centred columns, map = Â·v₁ with
    v₁ the top right-singular vector. The SVD leaves the sign of v₁ free (pytorch-grad-cam's
    depends on the LAPACK build); ours is fixed: the map's largest-magnitude value is positive.
    Computed in float64 through the smaller of the two Gram matrices (no h·w×h·w U is formed).
    """
    B, C, h, w = activations.shape
    M = activations.double().reshape(B, C, h * w).transpose(1, 2)  # [B,N,C]
    M = torch.nan_to_num(M)
    M = M - M.mean(dim=1, keepdim=True)
    if h * w <= C:
        evals, evecs = torch.linalg.eigh(M @ M.transpose(1, 2))  # ascending; [B,N], [B,N,N]
        proj = evecs[..., -1] * evals[:, -1:].clamp_min(0).sqrt()  # σ₁·u₁ = Â·v₁
    else:
        _, evecs = torch.linalg.eigh(M.transpose(1, 2) @ M)  # [B,C,C]
        proj = (M @ evecs[..., -1:]).squeeze(-1)
    flip = proj.amax(dim=1) < -proj.amin(dim=1)
    proj = torch.where(flip[:, None], -proj, proj)
    return proj.reshape(B, h, w).float()


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
) -> torch.Tensor:
    """The whole CAM stage. activations: float [B,C,h,w]; gradients: float [B,K,C,h,w].

    Returns float32 [B,K,H,W] in [0,1] ((H, W) = output_size, or (h, w) when None).
    """
    return postprocess(raw_cam(activations, gradients, method), output_size)


def raw_cam(activations: torch.Tensor, gradients: torch.Tensor, method: str) -> torch.Tensor:
    """The CAM before ReLU and min-max. activations: float [B,C,h,w]; gradients: float [B,K,C,h,w]
    → float32 [B,K,h,w] (signed)."""
    if method in WEIGHTED_METHODS:
        return weighted_combine(activations, channel_weights(activations, gradients, method))
    if method in ELEMENTWISE_METHODS:
        return elementwise_cam(activations, gradients, method)
    raise ValueError(f"method must be one of {WEIGHTED_METHODS + ELEMENTWISE_METHODS}, got {method!r}")


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
    """G = W_kc·R_k(u). weight: float [K,C]; seeds: float [B,K,h,w] → float32 [B,K,C,h,w]."""
    return weight.float()[None, :, :, None, None] * seeds.float()[:, :, None]


def analytic_cam(
    activations: torch.Tensor,
    weight: torch.Tensor,
    seeds: torch.Tensor,
    method: str,
    output_size: tuple[int, int] | None = None,
) -> torch.Tensor:
    """The CAM stage of a linear head: cam_from_gradients with G = W_kc·R_k.

    activations: float [B,C,h,w]; weight: float [K,C] (the head's rows of the explained classes,
    eval-mode BatchNorm folded in); seeds: float [B,K,h,w]. Returns float32 [B,K,H,W].
    """
    return cam_from_gradients(activations, analytic_gradients(weight, seeds), method, output_size)


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
