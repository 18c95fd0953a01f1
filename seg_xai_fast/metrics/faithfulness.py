"""Faithfulness to the model: deletion and insertion curves (and their AUC), and ROAD.

Pixel orderings rank by decreasing saliency; ties are broken by a fixed pseudo-random permutation
(``seed``), so flat map regions are not removed in raster order.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..engine.checks import check_images, describe
from .checks import check_class_ids, check_maps, check_number
from .imputation import noisy_linear_impute
from .scores import class_scores, predicted_regions, region_scores

ROAD_PERCENTILES = (10, 30, 50, 70, 90)


def deletion_curves(
    model: nn.Module,
    images: torch.Tensor,
    maps: torch.Tensor,
    classes: Sequence[int],
    *,
    regions: Optional[torch.Tensor] = None,
    steps: int = 16,
    context: bool = False,
    substrate: float = 0.0,
    seed: int = 0,
    output_key: str = "out",
    forward_batch: int = 32,
) -> torch.Tensor:
    """Deletion curves (Petsiuk et al. 2018), segmentation version.

    images: float [B,C,H,W] as the model takes them; maps: float [B,K,H,W]; classes: K ids;
    regions: bool [B,K,H,W] frozen M_c (None: from the clean prediction). Volumes: images
    [B,C,D,H,W], maps and regions [B,K,D,H,W].
    Step t = 0..T replaces the round(t·P/T) most salient of the P candidate pixels (all pixels;
    with context=True only the pixels outside M_c, which stays intact) by `substrate` in every channel (0: black,
    since the model takes [0,1] images and normalises them itself) and records s_c.
    The T+1 images of a pair go through the model as one batch (chunked by forward_batch).
    Returns float32 [B,K,T+1]; NaN rows where M_c is empty (or, with context, fills the image).
    """
    fill = check_number(substrate, "substrate")
    return _perturbation_curves(
        model, images, maps, classes, regions, steps, context, seed, output_key, forward_batch,
        start=lambda x: x, end=lambda x: torch.full_like(x, fill),
    )


def insertion_curves(
    model: nn.Module,
    images: torch.Tensor,
    maps: torch.Tensor,
    classes: Sequence[int],
    *,
    regions: Optional[torch.Tensor] = None,
    steps: int = 16,
    context: bool = False,
    blur_kernel: int = 11,
    blur_sigma: float = 5.0,
    seed: int = 0,
    output_key: str = "out",
    forward_batch: int = 32,
) -> torch.Tensor:
    """Insertion curves: start from `gaussian_blur(images)` and put the original pixels back,
    most salient first. With context=True only the pixels outside M_c start blurred (M_c stays
    original throughout). Arguments and result as `deletion_curves`; float32 [B,K,T+1]."""
    return _perturbation_curves(
        model, images, maps, classes, regions, steps, context, seed, output_key, forward_batch,
        start=lambda x: gaussian_blur(x, blur_kernel, blur_sigma), end=lambda x: x,
    )


def auc(curves: torch.Tensor) -> torch.Tensor:
    """Area under curves sampled at T+1 evenly spaced fractions of [0,1] (trapezoid rule).

    curves: float [...,T+1] with T >= 1. Returns [...]: (Σ_t y_t − (y_0+y_T)/2) / T.
    """
    if not isinstance(curves, torch.Tensor) or curves.ndim < 1 or curves.shape[-1] < 2:
        got = list(curves.shape) if isinstance(curves, torch.Tensor) else type(curves).__name__
        raise ValueError(f"curves must be a tensor [...,T+1] with T >= 1, got {got}")
    T = curves.shape[-1] - 1
    return (curves.sum(dim=-1) - (curves[..., 0] + curves[..., -1]) / 2) / T


def gaussian_blur(images: torch.Tensor, kernel_size: int = 11, sigma: float = 5.0) -> torch.Tensor:
    """Separable Gaussian blur of images float [N,C,H,W] → [N,C,H,W] (replicate padding, so the
    borders do not darken as they would with zero padding); volumes [N,C,D,H,W] along all three axes."""
    if not isinstance(kernel_size, int) or kernel_size < 1 or kernel_size % 2 == 0:
        raise ValueError(f"blur_kernel must be a positive odd int, got {kernel_size!r}")
    sigma = check_number(sigma, "blur_sigma", minimum=1e-6)
    N, C, *spatial = images.shape
    r = kernel_size // 2
    taps = torch.arange(-r, r + 1, device=images.device, dtype=torch.float32)
    g = torch.exp(-(taps**2) / (2 * sigma**2))
    g = (g / g.sum()).to(images.dtype)
    conv = F.conv2d if len(spatial) == 2 else F.conv3d
    x = F.pad(images.reshape(N * C, 1, *spatial), (r, r) * len(spatial), mode="replicate")
    for axis in reversed(range(len(spatial))):  # W, then H (then D)
        shape = [1, 1] + [1] * len(spatial)
        shape[2 + axis] = -1
        x = conv(x, g.view(shape))
    return x.reshape(N, C, *spatial)


def _perturbation_curves(model, images, maps, classes, regions, steps, context, seed, output_key, forward_batch, start, end):
    """x_t = where(changed_t, end(x), start(x)), changed_t = the first round(t·P/T) candidates in
    saliency order; with context, pixels of M_c keep their original values at every step."""
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive int, got {steps!r}")
    return _ordered_curves(model, images, maps, classes, regions, lambda P: [round(t * P / steps) for t in range(steps + 1)],
                           context, seed, output_key, forward_batch, start, end)


def _ordered_curves(model, images, maps, classes, regions, counts_of, context, seed, output_key, forward_batch, start, end,
                    rank_of=None):
    """Scores of images whose counts_of(P)[t] first-ranked candidate pixels come from end(x), the
    others from start(x). rank_of(map [*S], candidates, perm) → long [*S] (default: saliency rank; S = (H,W)
    or (D,H,W)).
    Pairs of an image with identical maps (a class-agnostic method's, or one method's maps passed
    twice) share one perturbed batch: one forward scores all of them (without context, where the
    candidates do not depend on the class), and without context the steps that change no pixel or
    every pixel (start(x), end(x)) are the same images for every pair: one forward for all pairs.
    Returns float32 [B,K,len(counts)], NaN rows where M_c is empty (or, with context, fills the image)."""
    images, maps, ids, regions = check_pairs(model, images, maps, classes, regions, output_key, forward_batch)
    B, K = maps.shape[:2]
    N = maps[0, 0].numel()  # pixels (voxels) per map
    perm = _tie_break(N, seed, maps.device)
    rank_of = rank_of or _saliency_rank
    curves = torch.full((B, K, len(counts_of(N))), math.nan)
    for b in range(B):
        first, last = start(images[b : b + 1]), end(images[b : b + 1])  # [1,C,*S]
        todo = [k for k in range(K) if regions[b, k].any()]
        steps = list(range(curves.shape[2]))
        if not context and todo:  # steps that change no pixel or every pixel: the same image for every pair
            counts = counts_of(N)
            ends = [t for t in steps if counts[t] == 0 or counts[t] >= N]
            steps = [t for t in steps if t not in ends]
            if ends:
                kinds = sorted({counts[t] >= N for t in ends})  # False: start(x), True: end(x)
                scores = region_scores(model, torch.cat([last if k else first for k in kinds]), [ids[j] for j in todo],
                                       regions[b, todo], output_key=output_key, forward_batch=forward_batch)  # [≤2,G]
                for t in ends:
                    curves[b, todo, t] = scores[kinds.index(counts[t] >= N)].cpu()
        while todo:
            k = todo[0]
            group = [k] if context else [j for j in todo if torch.equal(maps[b, j], maps[b, k])]
            todo = [j for j in todo if j not in group]
            region = regions[b, k]
            candidates = ~region if context else torch.ones_like(region)
            P = int(candidates.sum())
            if P == 0 or not steps:
                continue
            rank = rank_of(maps[b, k], candidates, perm)  # [*S]; non-candidates rank >= P
            counts = [counts_of(P if context else N)[t] for t in steps]
            changed = rank[None] < torch.tensor(counts, device=rank.device).view((-1,) + (1,) * rank.ndim)  # [T,*S]
            batch = torch.where(changed[:, None], last, first)  # [T,C,*S]
            if context:  # M_c itself is never perturbed (insertion: it is not blurred either)
                batch = torch.where(region, images[b : b + 1], batch)
            scores = region_scores(model, batch, [ids[j] for j in group], regions[b, group], output_key=output_key,
                                   forward_batch=forward_batch)  # [T,G]
            for i, j in enumerate(group):
                curves[b, j, steps] = scores[:, i].cpu()
    return curves


def pixel_flipping(
    model: nn.Module,
    images: torch.Tensor,
    maps: torch.Tensor,
    classes: Sequence[int],
    *,
    regions: Optional[torch.Tensor] = None,
    features_in_step: Optional[int] = None,
    baseline: float = 0.0,
    seed: int = 0,
    output_key: str = "out",
    forward_batch: int = 32,
) -> torch.Tensor:
    """Pixel-flipping curves (Bach et al. 2015; Quantus PixelFlipping) on the region score s_c.

    images: float [B,C,H,W]; maps: float [B,K,H,W]; classes: K ids; regions: bool [B,K,H,W]
    frozen M_c (None: from the clean prediction); volumes: images [B,C,D,H,W], maps and regions
    [B,K,D,H,W], pixels being voxels. Step t = 1..T sets the t·f most salient pixels
    (f = features_in_step, which must divide the N pixels; default N/16) to `baseline` in every channel
    and records s_c: T = N/f values, the last one the score of the all-baseline image (Quantus
    records no clean score either). Equal saliencies are ordered by the fixed permutation `seed`.
    Returns float32 [B,K,T], NaN rows where M_c is empty.
    """
    N = math.prod(images.shape[2:]) if isinstance(images, torch.Tensor) and images.ndim in (4, 5) else 0
    f = N // 16 if features_in_step is None else features_in_step
    if isinstance(f, bool) or not isinstance(f, int) or f < 1 or (N and N % f):
        raise ValueError(f"features_in_step must be a positive int dividing the image's pixel (voxel) count {N}, "
                         f"got {features_in_step!r}")
    fill = check_number(baseline, "baseline")
    return _ordered_curves(model, images, maps, classes, regions, lambda P: [t * f for t in range(1, P // f + 1)],
                           False, seed, output_key, forward_batch, start=lambda x: x, end=lambda x: torch.full_like(x, fill))


def region_perturbation(
    model: nn.Module,
    images: torch.Tensor,
    maps: torch.Tensor,
    classes: Sequence[int],
    *,
    regions: Optional[torch.Tensor] = None,
    patch_size: int = 8,
    steps: int = 16,
    order: str = "morf",
    baseline: float = 0.0,
    seed: int = 0,
    output_key: str = "out",
    forward_batch: int = 32,
) -> torch.Tensor:
    """Region-perturbation curves (Samek et al. 2017; Quantus RegionPerturbation) on s_c.

    The image is cut into a grid of patch_size² patches (volumes [B,C,D,H,W]: patch_size³ cubes; the
    last row and column, and slab, may be smaller); a patch's relevance is the sum of the map over
    it. Step t = 1..T (T = `steps`, at most the number of patches) sets the t most relevant
    patches (`order="morf"`; "lerf": least relevant first; equal sums in raster order) to
    `baseline` in every channel and records the drop s_c(x) − s_c(x_t). Quantus perturbs with uniform noise by default; a constant keeps runs
    reproducible. AOPC = the mean of the curve. Returns float32 [B,K,T], NaN rows where M_c is empty.
    """
    if isinstance(patch_size, bool) or not isinstance(patch_size, int) or patch_size < 1:
        raise ValueError(f"patch_size must be a positive int, got {patch_size!r}")
    if order not in ("morf", "lerf"):
        raise ValueError(f"order must be 'morf' or 'lerf', got {order!r}")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive int, got {steps!r}")
    fill = check_number(baseline, "baseline")
    sign = 1.0 if order == "morf" else -1.0

    def patch_rank(saliency, _candidates, _perm):  # [*S] → the rank of each pixel's patch
        pool = F.avg_pool2d if saliency.ndim == 2 else F.avg_pool3d
        sums = pool(saliency[None, None].double(), patch_size, ceil_mode=True, divisor_override=1)[0, 0]
        ranked = torch.sort(-sign * sums.flatten(), stable=True).indices  # raster order among equal sums
        rank = torch.empty_like(ranked)
        rank[ranked] = torch.arange(ranked.numel(), device=ranked.device)
        rank = rank.view(sums.shape)
        for axis in range(rank.ndim):
            rank = rank.repeat_interleave(patch_size, axis)
        return rank[tuple(slice(0, n) for n in saliency.shape)]

    patches = patch_count(maps.shape[2:], patch_size) if isinstance(maps, torch.Tensor) and maps.ndim in (4, 5) else 0
    if patches and steps > patches:
        cube = "³" if maps.ndim == 5 else "²"
        raise ValueError(f"steps must be at most the number of {patch_size}{cube} patches ({patches}), got {steps}")
    scores = _ordered_curves(model, images, maps, classes, regions, lambda _P: list(range(0, steps + 1)), False, seed,
                             output_key, forward_batch, start=lambda x: x, end=lambda x: torch.full_like(x, fill),
                             rank_of=patch_rank)
    return scores[..., :1] - scores[..., 1:]


def patch_count(spatial: Sequence[int], patch_size: int) -> int:
    """How many patches (cubes) of side patch_size cover an image (volume) of size `spatial`."""
    return math.prod(math.ceil(n / patch_size) for n in spatial)


def road(
    model: nn.Module,
    images: torch.Tensor,
    maps: torch.Tensor,
    classes: Sequence[int],
    *,
    regions: Optional[torch.Tensor] = None,
    percentiles: Sequence[float] = ROAD_PERCENTILES,
    noise_std: float = 0.01,
    seed: int = 0,
    output_key: str = "out",
    forward_batch: int = 32,
) -> dict:
    """ROAD (Rong et al., ICML 2022): remove pixels by noisy linear imputation, measure Δs_c.

    images: float [B,C,H,W]; maps: float [B,K,H,W]; classes: K ids; regions: bool [B,K,H,W]
    frozen M_c (None: from the clean prediction); volumes: images [B,C,D,H,W], maps and regions
    [B,K,D,H,W] (N voxels, imputed from their 26 neighbours). For each removal percentage p in
    `percentiles` (0 < p < 100), MoRF removes the round(p·N/100) most salient of the N pixels and LeRF
    the same number of least salient ones (the paper's convention; pytorch-grad-cam's
    RemoveMostRelevantFirst(p) instead removes the top 100−p %). Removed pixels are imputed by
    `noisy_linear_impute`; the 2·P images of a pair go through the model as one batch.
    Returns {"morf": float32 [B,K,P], "lerf": float32 [B,K,P]} of s_c(imputed) − s_c(clean),
    NaN where M_c is empty. A faithful map makes MoRF strongly negative and LeRF close to 0.
    """
    images, maps, ids, regions = check_pairs(model, images, maps, classes, regions, output_key, forward_batch)
    pcts = _check_percentiles(percentiles)
    B, K, *spatial = maps.shape
    N, P = math.prod(spatial), len(pcts)
    counts = torch.tensor([round(p * N / 100) for p in pcts], device=maps.device).view((-1,) + (1,) * len(spatial))
    perm = _tie_break(N, seed, maps.device)
    generator = torch.Generator(device=images.device).manual_seed(seed)
    out = {"morf": torch.full((B, K, P), math.nan), "lerf": torch.full((B, K, P), math.nan)}
    everything = torch.ones(spatial, dtype=torch.bool, device=maps.device)
    for b in range(B):
        generator.manual_seed(seed)  # each image draws the same noise whatever its batch: resumed runs agree
        for k in range(K):
            region = regions[b, k]
            if not region.any():
                continue
            rank = _saliency_rank(maps[b, k], everything, perm)
            morf = rank[None] < counts  # [P,*S]
            lerf = rank[None] >= N - counts
            removed = torch.cat([morf, lerf])  # [2P,*S]
            batch = noisy_linear_impute(images[b : b + 1].expand((2 * P,) + images.shape[1:]), removed, noise_std,
                                        generator=generator)
            scores = class_scores(model, torch.cat([images[b : b + 1], batch]), ids[k], region,
                                  output_key=output_key, forward_batch=forward_batch).cpu()
            delta = scores[1:] - scores[0]
            out["morf"][b, k], out["lerf"][b, k] = delta[:P], delta[P:]
    return out


def _tie_break(n: int, seed: int, device) -> torch.Tensor:
    """A fixed permutation of n pixel indices: the order among equal saliencies."""
    if not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed)).to(device)


def _saliency_rank(saliency: torch.Tensor, candidates: torch.Tensor, perm: torch.Tensor) -> torch.Tensor:
    """Rank of each pixel (0 = most salient) among the candidates; non-candidates rank after them.

    saliency: float [*S]; candidates: bool [*S]; perm: long [prod S] tie-break order. Returns long [*S].
    """
    key = torch.where(candidates, saliency.float(), torch.full_like(saliency, -math.inf, dtype=torch.float32)).flatten()
    order = perm[torch.argsort(key[perm], descending=True, stable=True)]
    rank = torch.empty_like(order)
    rank[order] = torch.arange(order.numel(), device=order.device)
    return rank.view(saliency.shape)


def _check_percentiles(percentiles) -> list[float]:
    try:
        pcts = [float(p) for p in percentiles]
    except (TypeError, ValueError):
        raise ValueError(f"percentiles must be a sequence of numbers in (0, 100), got {percentiles!r}") from None
    if not pcts or any(not 0 < p < 100 for p in pcts):
        raise ValueError(f"percentiles must be a non-empty sequence of numbers in (0, 100), got {pcts}")
    return pcts


def check_pairs(model, images, maps, classes, regions, output_key, forward_batch):
    """Validated (images, maps, class ids, regions bool [B,K,*S]) for the perturbation metrics:
    images [B,C,H,W] with maps [B,K,H,W], or volumes [B,C,D,H,W] with maps [B,K,D,H,W]."""
    if not isinstance(model, nn.Module):
        raise ValueError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(forward_batch, int) or forward_batch < 1:
        raise ValueError(f"forward_batch must be a positive int, got {forward_batch!r}")
    images = check_images(images, ndims=(4, 5))
    maps = check_maps(maps)
    B, K = maps.shape[:2]
    if images.shape[0] != B or images.ndim != maps.ndim or images.shape[2:] != maps.shape[2:]:
        raise ValueError(f"images must be [B={B},C,{','.join(map(str, maps.shape[2:]))}] like maps, got "
                         f"{list(images.shape)}")
    ids = check_class_ids(classes)
    if len(ids) != K:
        raise ValueError(f"classes must hold one id per map (K={K}), got {len(ids)}: {ids}")
    device = next((p.device for p in model.parameters()), images.device)
    images, maps = images.to(device), maps.to(device)
    if regions is None:
        regions = predicted_regions(model, images, ids, output_key=output_key, forward_batch=forward_batch)
    elif not isinstance(regions, torch.Tensor) or regions.dtype != torch.bool or regions.shape != maps.shape:
        raise ValueError(f"regions must be a bool tensor {list(maps.shape)} like maps, got {describe(regions)}")
    return images, maps, ids, regions.to(device)
