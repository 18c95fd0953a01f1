"""Segment attributions: feature ablation, Kernel SHAP and LIME, every class at once.

The input is cut into M segments (features): the connected components of the predicted label
map, SLIC superpixels, or a label map the user gives. A coalition z ∈ {0,1}^M keeps the segments
with z_i = 1 and replaces the others by a baseline; its forward gives the region scores S_k(z)
of all K explained classes in one pass (PerturbationRun.score). Every method scores one set of
coalitions per image, whatever K, and reads all K attributions from them:

- featureablation: the M coalitions "all but segment i"; φ_ki = S_k(1) − S_k(1 − e_i)
  (captum 0.9's FeatureAblation with a feature mask).
- kernelshap: Shapley values φ_ki by weighted least squares on coalitions weighted by the
  Shapley kernel π(z) = (M−1) / (C(M,|z|)·|z|·(M−|z|)), with the efficiency constraint
  Σ_i φ_ki = S_k(1) − S_k(0) and φ_0 = S_k(0) imposed exactly by eliminating one unknown
  (Lundberg & Lee 2017). With n_samples ≥ 2^M − 1 every coalition is enumerated once and the
  values are exact; otherwise sizes are drawn with probability ∝ (M−1)/(|z|(M−|z|)), subsets
  uniformly, in complementary pairs, each of weight 1 (the kernel is in the sampling).
- lime: Bernoulli(1/2) coalitions plus the full one, weighted by exp(−d²/(2w²)) with d the
  cosine distance of z to the all-ones coalition, 1 − sqrt(|z|/M), and w = kernel_width; an
  unregularised linear surrogate S_k(z) ≈ b_k + Σ_i φ_ki z_i (Ribeiro et al. 2016).

The K right-hand sides share one design matrix: ONE least-squares solve per image, in float64
on the CPU with torch.linalg.lstsq's "gelsd" driver (SVD based: stable, and the minimum-norm
solution when sampled coalitions leave the system rank-deficient), on the sqrt-weighted system.

Raw maps paint φ_ki on the pixels of segment i (signed); normalised maps are ReLU + min-max, as
for every method. The context table (SegmentContext) holds, for the predicted segments of an
image, S_k(1) − S_k(segment removed) for every explained class k.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .. import kernels
from .options import MAX_FEATURES
from .outputs import Explanation, SegmentContext
from .perturbation import PerturbationRun, occlusion_baseline

# "blur" baseline: a Gaussian blur with σ = 4 px (occlusion_baseline's σ = window/4 for occlusion's
# default 16-pixel window); segments have no window of their own.
BLUR_WINDOW = (16, 16)
SLIC_COMPACTNESS = 10.0  # scikit-image's default


def explain_segments(settings, forwards, images: torch.Tensor, classes, masks, resolution: str) -> Explanation:
    """featureablation, kernelshap or lime on checked images float [B,3,H,W]; `settings` is the
    explainer (method, options, backend, normalize, max_memory_mb, class_names), `forwards` its
    runtime's forwards (engine.perturbation.TorchForwards or ONNX Runtime's). The spec's `perturb`
    step gives each image's segment attributions: (run, b, seg, M, base) → ([K,M], exact or None)."""
    spec = settings.spec
    if resolution == "layer":
        raise ValueError(f"resolution='layer' needs a target layer; method {spec.name!r} works in input space: "
                         "use resolution='full'")
    o = settings.options
    run = PerturbationRun(settings, forwards, images)
    B, _, H, W = images.shape
    with forwards.state():
        _, logits, active = run.original(classes, masks)
        K = len(run.class_ids)
        if tuple(logits.shape[-2:]) != (H, W):
            raise ValueError(f"method {spec.name!r} paints attributions on the input's segments and needs logits at "
                             f"the input's size {[H, W]}, got {list(logits.shape[-2:])}")
        features = segment_features(o["features"], images, run.labels, o["n_segments"])
        raw = torch.empty(B, K, H, W, device=images.device)
        contexts, counts, exact = [], [], []
        for b in range(B):
            seg, M = features[b]
            counts.append(M)
            base = occlusion_baseline(images[b], o["baseline"], BLUR_WINDOW)
            attr, is_exact = spec.perturb(run, b, seg, M, base)  # [K,M]
            if is_exact is not None:
                exact.append(is_exact)
            raw[b] = attr[:, seg]  # φ_k of each pixel's segment: [K,H,W]
            if o["features"] == "predicted" and spec.perturb is featureablation_attributions:
                contexts.append(_context(run, b, seg, attr))  # the same pass: free
            elif o["context"]:
                pseg = connected_components(run.labels[b])
                contexts.append(_context(run, b, pseg, ablation_effects(run, b, pseg, int(pseg.max()) + 1, base)))
    maps = kernels.normalize_maps(raw, backend=settings.backend) if settings.normalize else raw
    maps = maps * active[:, :, None, None]  # an empty region explains nothing: exact zeros
    info = {"gradient_path": "none", "backward_passes": 0, "perturbed_forwards": run.count,
            "score": o["score"], "score_from": "logits before upsample" if run.from_z else "model output",
            "features": counts}
    if exact:
        info["exact"] = exact
    return Explanation(maps=maps, classes=run.class_ids, labels=run.labels, active=active, method=spec.name,
                       layer="input", info=info, class_names=getattr(settings, "class_names", None),
                       context=contexts or None)


# --------------------------------------------------------------------------- features


def segment_features(features, images: torch.Tensor, labels: torch.Tensor, n_segments: int) -> list:
    """Each image's segments as (ids int64 [H,W] in [0, M), M): "predicted" (8-connected components
    of labels int64 [B,H,W]), "slic" (scikit-image superpixels of images float [B,3,H,W]) or a
    label map int64 [B,H,W] (any ids, renumbered 0..M−1 in increasing order)."""
    B, _, H, W = images.shape
    if isinstance(features, torch.Tensor):
        if tuple(features.shape) != (B, H, W):
            raise ValueError(f"option 'features' must be a label map [B,H,W] = {[B, H, W]} (one id per input "
                             f"pixel), got shape {list(features.shape)}")
        maps = [torch.unique(features[b].to(images.device), return_inverse=True)[1] for b in range(B)]
    elif features == "predicted":
        maps = [connected_components(labels[b]) for b in range(B)]
    else:
        maps = [slic_segments(images[b], n_segments) for b in range(B)]
    out = []
    for b, seg in enumerate(maps):
        M = int(seg.max()) + 1
        if M > MAX_FEATURES:
            raise ValueError(f"option 'features' ({_describe(features)}) gives {M} segments in image {b}; at most "
                             f"{MAX_FEATURES} are supported: use fewer (e.g. 'slic' with a smaller 'n_segments')")
        out.append((seg.contiguous(), M))
    return out


def _describe(features) -> str:
    return "a label map" if isinstance(features, torch.Tensor) else repr(features)


def connected_components(labels: torch.Tensor) -> torch.Tensor:
    """The 8-connected components of equal labels in int64 [H,W] → ids int64 [H,W] in [0, M),
    numbered in raster order of their first pixel.

    Every pixel starts as its own root (its flat index); each step takes the smallest root among
    its same-label neighbours and then its root's root (pointer jumping), so the smallest index of
    each component spreads through it in O(log) steps on compact regions."""
    H, W = labels.shape
    big = H * W
    root = torch.arange(big, device=labels.device).view(H, W)
    padded_labels = F.pad(labels[None], (1, 1, 1, 1), value=int(labels.min()) - 1)[0]  # a label no pixel has
    shifts = [(dy, dx) for dy in (0, 1, 2) for dx in (0, 1, 2) if (dy, dx) != (1, 1)]
    same = [padded_labels[dy:dy + H, dx:dx + W] == labels for dy, dx in shifts]
    while True:
        padded = F.pad(root[None], (1, 1, 1, 1), value=big)[0]
        best = root
        for (dy, dx), s in zip(shifts, same):
            best = torch.minimum(best, torch.where(s, padded[dy:dy + H, dx:dx + W], big))
        best = best.flatten()[best.flatten()].view(H, W)
        if torch.equal(best, root):
            return torch.unique(root, return_inverse=True)[1]
        root = best


def slic_segments(image: torch.Tensor, n_segments: int) -> torch.Tensor:
    """scikit-image's SLIC superpixels of image float [3,H,W] (about n_segments of them,
    compactness 10, Lab colour space) → ids int64 [H,W] in [0, M)."""
    try:
        from skimage.segmentation import slic
    except ImportError:
        raise ImportError("option features='slic' needs scikit-image: pip install scikit-image "
                          "(or pip install 'seg-xai-fast[segments]')") from None
    picture = image.detach().float().permute(1, 2, 0).cpu().numpy()
    seg = slic(picture, n_segments=n_segments, compactness=SLIC_COMPACTNESS, start_label=0, channel_axis=-1)
    return torch.unique(torch.from_numpy(seg).long(), return_inverse=True)[1].to(image.device)


# --------------------------------------------------------------------------- coalitions


def coalition_scores(run: PerturbationRun, b: int, seg: torch.Tensor, base: torch.Tensor,
                     keep: torch.Tensor) -> torch.Tensor:
    """Scores float32 [n,K] of image b's coalitions keep bool [n,M] (segments seg int64 [H,W],
    removed ones replaced by base float [3,H,W]): one forward per chunk of samples, each chunk's
    inputs built by the segment_inputs kernel, so no more than a chunk is ever materialised."""
    chunk = run.chunk()
    make = getattr(run, "coalition_inputs", None)  # a run of volumes builds its own (volume_segments.py)
    scores = torch.empty(keep.shape[0], len(run.class_ids), device=run.images.device)
    for lo in range(0, keep.shape[0], chunk):
        inputs = make(b, base, seg, keep[lo:lo + chunk]) if make is not None else \
            kernels.segment_inputs(run.images[b], base, seg, keep[lo:lo + chunk], backend=run.backend)
        scores[lo:lo + chunk] = run.score(b, inputs)
    return scores


def ablation_effects(run: PerturbationRun, b: int, seg: torch.Tensor, M: int, base: torch.Tensor) -> torch.Tensor:
    """S_k(all segments) − S_k(all but segment i) → float32 [K,M] (feature ablation)."""
    keep = ~torch.eye(M, dtype=torch.bool, device=seg.device)
    return (run.original_scores[b][None] - coalition_scores(run, b, seg, base, keep)).T.contiguous()


def featureablation_attributions(run: PerturbationRun, b: int, seg: torch.Tensor, M: int,
                                 base: torch.Tensor) -> tuple:
    """Feature ablation's attributions: (ablation_effects [K,M], None: no exactness to report)."""
    return ablation_effects(run, b, seg, M, base), None


def _context(run: PerturbationRun, b: int, seg: torch.Tensor, effects: torch.Tensor) -> SegmentContext:
    """The context table of image b: its predicted segments seg int64 [H,W] and effects float [K,M]."""
    M = effects.shape[1]
    first = torch.full((M,), seg.numel(), dtype=torch.long, device=seg.device)
    first.scatter_reduce_(0, seg.flatten(), torch.arange(seg.numel(), device=seg.device), "amin")
    return SegmentContext(segments=seg, segment_classes=run.labels[b].flatten()[first].tolist(),
                          classes=list(run.class_ids), effects=effects.float())


def shapley_coalitions(M: int, n_samples: int, seed: int) -> tuple:
    """Kernel SHAP's coalitions bool [n,M] (neither empty nor full), their weights float64 [n] and
    whether they are every coalition (exact Shapley values).

    n_samples counts the forwards, the empty coalition's included: with n_samples ≥ 2^M − 1 all
    2^M − 2 proper coalitions are enumerated with the Shapley kernel's weights; otherwise
    n_samples − 1 are drawn (sizes with probability ∝ (M−1)/(k(M−k)), then a uniform subset of
    that size, in complementary pairs) with weight 1 each, from a CPU generator seeded with
    `seed` (the same coalitions on every device and for every image with M segments)."""
    if M < 63 and n_samples >= 2 ** M - 1:
        codes = torch.arange(1, 2 ** M - 1)
        keep = (codes[:, None] >> torch.arange(M)) & 1 == 1
        k = keep.sum(1).double()
        comb = torch.tensor([math.comb(M, int(i)) for i in range(M + 1)], dtype=torch.float64)
        return keep, (M - 1) / (comb[k.long()] * k * (M - k)), True
    g = torch.Generator().manual_seed(seed)
    sizes = torch.arange(1, M, dtype=torch.float64)
    n = n_samples - 1
    k = torch.multinomial((M - 1) / (sizes * (M - sizes)), (n + 1) // 2, replacement=True, generator=g) + 1
    ranks = torch.rand(len(k), M, generator=g).argsort(dim=1).argsort(dim=1)  # a uniform permutation per row
    keep = ranks < k[:, None]
    keep = torch.cat([keep, ~keep])[:n]  # complementary pairs: the kernel is symmetric in k ↔ M − k
    return keep, torch.ones(n, dtype=torch.float64), False


def _solve(design: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """argmin_x Σ_n w_n ‖design_n x − targets_n‖² for all K columns at once: lstsq (gelsd) on the
    sqrt-weighted float64 system. design [n,P], targets [n,K], weights [n] → float64 [P,K]."""
    r = weights.double().sqrt()[:, None]
    return torch.linalg.lstsq(r * design.double(), r * targets.double().cpu(), driver="gelsd").solution


def _check_samples(run: PerturbationRun, M: int, b: int) -> None:
    n = run.opts["n_samples"]
    if n < M:
        raise ValueError(f"option 'n_samples' must be at least the number of features for method "
                         f"{run.settings.method!r} (image {b} has {M} segments), got {n}")


def kernelshap_attributions(run: PerturbationRun, b: int, seg: torch.Tensor, M: int, base: torch.Tensor) -> tuple:
    """Image b's Shapley values float32 [K,M] and whether they are exact."""
    _check_samples(run, M, b)
    full = run.original_scores[b].double().cpu()  # S(1) [K]
    if M == 1:
        empty = coalition_scores(run, b, seg, base, torch.zeros(1, 1, dtype=torch.bool, device=seg.device))
        return (full - empty[0].double().cpu())[None].T.float().to(seg.device), True
    keep, weights, exact = shapley_coalitions(M, run.opts["n_samples"], run.opts["seed"])
    rows = torch.cat([torch.zeros(1, M, dtype=torch.bool), keep]).to(seg.device)  # the empty coalition first
    scores = coalition_scores(run, b, seg, base, rows).double().cpu()
    empty, y = scores[0], scores[1:] - scores[0]  # S(0) [K], S(z) − S(0) [n,K]
    total = full - empty  # Σ_i φ_i, the efficiency constraint [K]
    z = keep.double()
    # φ_M = total − Σ_{i<M} φ_i: y − z_M·total = Σ_{i<M} φ_i (z_i − z_M)
    phi = _solve(z[:, :-1] - z[:, -1:], y - z[:, -1:] * total, weights)  # [M−1,K]
    phi = torch.cat([phi, (total - phi.sum(0))[None]])  # [M,K]
    return phi.T.float().contiguous().to(seg.device), exact


def lime_attributions(run: PerturbationRun, b: int, seg: torch.Tensor, M: int, base: torch.Tensor) -> tuple:
    """Image b's LIME coefficients float32 [K,M] (and None: no exactness to report)."""
    o = run.opts
    _check_samples(run, M, b)
    g = torch.Generator().manual_seed(o["seed"])
    keep = torch.rand(o["n_samples"], M, generator=g) < 0.5
    scores = coalition_scores(run, b, seg, base, keep.to(seg.device)).double().cpu()
    z = torch.cat([torch.ones(1, M, dtype=torch.float64), keep.double()])  # the original (full) coalition first
    y = torch.cat([run.original_scores[b].double().cpu()[None], scores])
    distance = 1 - (z.sum(1) / M).sqrt()  # cosine distance to the all-ones coalition (1 for the empty one)
    weights = torch.exp(-distance ** 2 / (2 * o["kernel_width"] ** 2))
    coef = _solve(torch.cat([z, torch.ones(len(z), 1, dtype=torch.float64)], dim=1), y, weights)  # [M+1,K]
    return coef[:M].T.float().contiguous().to(seg.device), None


__all__ = ["explain_segments", "featureablation_attributions", "kernelshap_attributions", "lime_attributions",
           "segment_features", "connected_components", "slic_segments", "coalition_scores",
           "ablation_effects", "shapley_coalitions", "BLUR_WINDOW"]
