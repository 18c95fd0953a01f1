"""Explanation-quality metrics for segmentation CAMs, and the driver behind `seg-xai evaluate`.

Definitions, conventions and measured numbers: docs/metrics.md. In short:

- Every map argument is ``maps: float [B,K,H,W]`` with ``maps[:, k]`` explaining class
  ``classes[k]`` (an Explanation's ``.maps`` and ``.classes``), at the images' resolution.
- Per-pair metrics return float32 ``[B,K]`` (or ``[B,K,...]``), with NaN where the
  (image, class) pair is not counted: the class is absent from the ground truth (pointing
  games) or from the clean prediction (perturbation metrics, randomisation check).
- ``summarize`` averages a per-pair result over images for each class, then over classes.
- The score of class c on an image x is s_c(x) = mean over p ∈ M_c of softmax(f(x))_c(p), with
  the region M_c = {p : argmax f(x_clean)(p) = c} frozen from the clean prediction.
- Pixel orderings rank by decreasing saliency; ties are broken by a fixed pseudo-random
  permutation (``seed``), so flat map regions are not removed in raster order.
"""
from __future__ import annotations

import copy
import math
import sys
import time
from typing import Optional, Sequence, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

from .engine.capture import model_logits
from .engine.checks import check_images, describe
from .engine.explainer import Explainer
from .engine.methods import check_options_used, layer_for, options_for

METRIC_KEYS = (
    "pointing_game",
    "energy_pointing_game",
    "deletion_auc",
    "insertion_auc",
    "road_morf",
    "road_lerf",
    "randomization_spearman",
)
ROAD_PERCENTILES = (10, 30, 50, 70, 90)


# --------------------------------------------------------------------------- pointing games


def pointing_game(maps: torch.Tensor, truth: torch.Tensor, classes: Sequence[int], tolerance: float = 15.0) -> torch.Tensor:
    """Pointing-game hits (Zhang et al. 2016), adapted to segmentation.

    maps: float [B,K,H,W]; truth: int [B,H,W] ground-truth class ids; classes: the K class ids.
    A hit: the map's peak pixel (the first maximum in raster order) lies within `tolerance`
    pixels (Euclidean distance between pixel centres) of a ground-truth pixel of the class, i.e.
    inside the class mask dilated by a disc of radius `tolerance`. A constant map (no peak,
    e.g. the all-zero map of a class the model did not predict) is a miss.
    Returns float32 [B,K]: 1 hit, 0 miss, NaN where the class is absent from truth[b].
    Accuracy per class = hits/(hits+misses) = the nanmean over images; see `summarize`.
    """
    maps = _check_maps(maps)
    gt = _class_masks(truth, classes, maps, "truth")  # bool [B,K,H,W]
    tolerance = _check_number(tolerance, "tolerance", minimum=0.0)
    B, K, H, W = maps.shape
    flat = maps.flatten(2)
    peak = flat.argmax(dim=2)  # [B,K]
    constant = flat.amax(dim=2) == flat.amin(dim=2)
    py = (peak // W).view(B, K, 1, 1)
    px = (peak % W).view(B, K, 1, 1)
    yy = torch.arange(H, device=maps.device).view(1, 1, H, 1)
    xx = torch.arange(W, device=maps.device).view(1, 1, 1, W)
    near = (yy - py) ** 2 + (xx - px) ** 2 <= tolerance**2  # the disc around the peak
    hit = (near & gt).flatten(2).any(dim=2) & ~constant
    return _counted(hit.float(), gt.flatten(2).any(dim=2))


def energy_pointing_game(maps: torch.Tensor, truth: torch.Tensor, classes: Sequence[int]) -> torch.Tensor:
    """Energy-based pointing game (Wang et al., Score-CAM): the share of the map's mass inside
    the ground-truth mask of the class, Σ_{p∈GT_c} L(p) / Σ_p L(p).

    maps: float [B,K,H,W], non-negative (the ratio ignores their scale); truth: int [B,H,W];
    classes: the K class ids. A map with zero mass puts no energy on the object and scores 0.
    Returns float32 [B,K] in [0,1], NaN where the class is absent from truth[b].
    """
    maps = _check_maps(maps)
    gt = _class_masks(truth, classes, maps, "truth")
    mass = maps.flatten(2).sum(dim=2)
    inside = (maps * gt).flatten(2).sum(dim=2)
    share = torch.where(mass > 0, inside / mass.clamp(min=1e-30), torch.zeros_like(mass))
    return _counted(share.float(), gt.flatten(2).any(dim=2))


# --------------------------------------------------------------------------- model scores


def predicted_regions(
    model: nn.Module, images: torch.Tensor, classes: Sequence[int], *, output_key: str = "out", forward_batch: int = 32
) -> torch.Tensor:
    """The frozen class regions M_c of the clean prediction.

    images: float [B,3,H,W]; classes: K class ids. Returns bool [B,K,H,W]: argmax f(images) == c.
    """
    images = check_images(images)
    labels = torch.cat([model_logits(model, chunk, output_key).argmax(dim=1) for chunk in images.split(forward_batch)])
    if labels.shape[-2:] != images.shape[-2:]:
        raise ValueError(
            f"the model output must have the images' size {list(images.shape[-2:])}, got {list(labels.shape[-2:])}"
        )
    ids = torch.as_tensor(_check_class_ids(classes), device=labels.device)
    return labels[:, None] == ids.view(1, -1, 1, 1)


def class_scores(
    model: nn.Module, images: torch.Tensor, cls: int, region: torch.Tensor, *, output_key: str = "out", forward_batch: int = 32
) -> torch.Tensor:
    """s_c for a batch of (perturbed) images that share one class and one frozen region.

    images: float [N,3,H,W]; cls: class id c; region: bool [H,W] non-empty (M_c).
    At most `forward_batch` images go through the model at once (the memory bound).
    Returns float32 [N]: mean softmax probability of class c over the region's pixels.
    """
    weight = region.to(images.device, torch.float32)
    weight = weight / weight.sum()
    scores = []
    for chunk in images.split(forward_batch):
        probs = torch.softmax(model_logits(model, chunk, output_key).float(), dim=1)[:, cls]  # [n,H,W]
        scores.append((probs * weight).flatten(1).sum(dim=1))
    return torch.cat(scores)


# --------------------------------------------------------------------------- deletion / insertion


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

    images: float [B,3,H,W] as the model takes them; maps: float [B,K,H,W]; classes: K ids;
    regions: bool [B,K,H,W] frozen M_c (None: from the clean prediction).
    Step t = 0..T replaces the round(t·P/T) most salient of the P candidate pixels (all pixels;
    with context=True only the pixels outside M_c, which stays intact) by `substrate` in every channel (0: black,
    since the model takes [0,1] images and normalises them itself) and records s_c.
    The T+1 images of a pair go through the model as one batch (chunked by forward_batch).
    Returns float32 [B,K,T+1]; NaN rows where M_c is empty (or, with context, fills the image).
    """
    fill = _check_number(substrate, "substrate")
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
    borders do not darken as they would with zero padding)."""
    if not isinstance(kernel_size, int) or kernel_size < 1 or kernel_size % 2 == 0:
        raise ValueError(f"blur_kernel must be a positive odd int, got {kernel_size!r}")
    sigma = _check_number(sigma, "blur_sigma", minimum=1e-6)
    N, C, H, W = images.shape
    r = kernel_size // 2
    taps = torch.arange(-r, r + 1, device=images.device, dtype=torch.float32)
    g = torch.exp(-(taps**2) / (2 * sigma**2))
    g = (g / g.sum()).to(images.dtype)
    x = F.pad(images.reshape(N * C, 1, H, W), (r, r, r, r), mode="replicate")
    x = F.conv2d(x, g.view(1, 1, 1, -1))
    x = F.conv2d(x, g.view(1, 1, -1, 1))
    return x.reshape(N, C, H, W)


def _perturbation_curves(model, images, maps, classes, regions, steps, context, seed, output_key, forward_batch, start, end):
    """x_t = where(changed_t, end(x), start(x)), changed_t = the first n_t candidates in saliency order;
    with context, pixels of M_c keep their original values at every step."""
    images, maps, ids, regions = _check_pairs(model, images, maps, classes, regions, output_key, forward_batch)
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive int, got {steps!r}")
    B, K, H, W = maps.shape
    curves = torch.full((B, K, steps + 1), math.nan)
    perm = _tie_break(H * W, seed, maps.device)
    for b in range(B):
        first, last = start(images[b : b + 1]), end(images[b : b + 1])  # [1,3,H,W]
        for k in range(K):
            region = regions[b, k]
            candidates = ~region if context else torch.ones_like(region)
            P = int(candidates.sum())
            if not region.any() or P == 0:
                continue
            rank = _saliency_rank(maps[b, k], candidates, perm)  # [H,W]; non-candidates rank >= P
            counts = torch.tensor([round(t * P / steps) for t in range(steps + 1)], device=rank.device)
            changed = rank[None] < counts.view(-1, 1, 1)  # [T+1,H,W]
            batch = torch.where(changed[:, None], last, first)  # [T+1,3,H,W]
            if context:  # M_c itself is never perturbed (insertion: it is not blurred either)
                batch = torch.where(region, images[b : b + 1], batch)
            curves[b, k] = class_scores(model, batch, ids[k], region, output_key=output_key, forward_batch=forward_batch).cpu()
    return curves


# --------------------------------------------------------------------------- ROAD


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

    images: float [B,3,H,W]; maps: float [B,K,H,W]; classes: K ids; regions: bool [B,K,H,W]
    frozen M_c (None: from the clean prediction). For each removal percentage p in
    `percentiles` (0 < p < 100), MoRF removes the round(p·HW/100) most salient pixels and LeRF
    the same number of least salient ones (the paper's convention; pytorch-grad-cam's
    RemoveMostRelevantFirst(p) instead removes the top 100−p %). Removed pixels are imputed by
    `noisy_linear_impute`; the 2·P images of a pair go through the model as one batch.
    Returns {"morf": float32 [B,K,P], "lerf": float32 [B,K,P]} of s_c(imputed) − s_c(clean),
    NaN where M_c is empty. A faithful map makes MoRF strongly negative and LeRF close to 0.
    """
    images, maps, ids, regions = _check_pairs(model, images, maps, classes, regions, output_key, forward_batch)
    pcts = _check_percentiles(percentiles)
    B, K, H, W = maps.shape
    P = len(pcts)
    counts = torch.tensor([round(p * H * W / 100) for p in pcts], device=maps.device)
    perm = _tie_break(H * W, seed, maps.device)
    generator = torch.Generator(device=images.device).manual_seed(seed)
    out = {"morf": torch.full((B, K, P), math.nan), "lerf": torch.full((B, K, P), math.nan)}
    everything = torch.ones(H, W, dtype=torch.bool, device=maps.device)
    for b in range(B):
        for k in range(K):
            region = regions[b, k]
            if not region.any():
                continue
            rank = _saliency_rank(maps[b, k], everything, perm)
            morf = rank[None] < counts.view(-1, 1, 1)  # [P,H,W]
            lerf = rank[None] >= H * W - counts.view(-1, 1, 1)
            removed = torch.cat([morf, lerf])  # [2P,H,W]
            batch = noisy_linear_impute(images[b : b + 1].expand(2 * P, -1, -1, -1), removed, noise_std, generator=generator)
            scores = class_scores(model, torch.cat([images[b : b + 1], batch]), ids[k], region,
                                  output_key=output_key, forward_batch=forward_batch).cpu()
            delta = scores[1:] - scores[0]
            out["morf"][b, k], out["lerf"][b, k] = delta[:P], delta[P:]
    return out


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
    noise_std = _check_number(noise_std, "noise_std", minimum=0.0)
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


# --------------------------------------------------------------------------- sanity check


def default_stages(model: nn.Module) -> list[str]:
    """Cascade order for the randomisation check: the model's top-level children that hold
    parameters, last registered first (assumes registration follows the data flow, as in
    DemoSegNet — classifier, decoder, encoder — and torchvision's segmentation models)."""
    names = [name for name, child in model.named_children() if any(True for _ in child.parameters())]
    if not names:
        raise ValueError("model has no child module with parameters; pass stages= explicitly")
    return names[::-1]


def randomized_models(model: nn.Module, stages: Sequence[str], seed: int = 0) -> list[tuple[str, nn.Module]]:
    """Cascading model-parameter randomisation (Adebayo et al. 2018) on deep copies.

    stages: dotted module names, head first. Entry i is a copy with stages[0..i] re-initialised
    by each submodule's own ``reset_parameters()`` (PyTorch's default init; BatchNorm also
    resets its running statistics) under torch seed seed + i. The user's model is not touched.
    """
    if isinstance(stages, str) or not stages:
        raise ValueError(f"stages must be a non-empty sequence of module names, got {stages!r}")
    current = copy.deepcopy(model)
    cuda = sorted({p.device.index or 0 for p in current.parameters() if p.is_cuda})
    out = []
    for i, name in enumerate(stages):
        try:
            stage = current.get_submodule(name)
        except AttributeError:
            raise ValueError(f"stages: module {name!r} not found in the model") from None
        resettable = [m for m in stage.modules() if callable(getattr(m, "reset_parameters", None))]
        if not resettable:
            raise ValueError(f"stages: module {name!r} has no submodule with reset_parameters() to re-initialise")
        with torch.random.fork_rng(devices=cuda):  # leave the caller's random state alone
            torch.manual_seed(seed + i)
            for m in resettable:
                m.reset_parameters()
        out.append((name, copy.deepcopy(current)))
    return out


def _explainer(model, layer, method: str, output_key: str, options: Optional[dict]) -> Explainer:
    """`method`'s explainer: at `layer`, or in input space; the entries of `options` it takes."""
    return Explainer(model, layer_for(method, layer), method, output_key=output_key,
                     options=options_for(method, options))


def randomization_check(
    model: nn.Module,
    layer: Union[str, nn.Module],
    method: str,
    images: torch.Tensor,
    classes: Sequence[int],
    *,
    stages: Optional[Sequence[str]] = None,
    seed: int = 0,
    output_key: str = "out",
    maps: Optional[torch.Tensor] = None,
    models: Optional[list] = None,
    options: Optional[dict] = None,
) -> dict:
    """Spearman rank correlation between the maps of the model and of its cascading randomised copies.

    images: float [B,3,H,W]; classes: K ids; layer: a dotted name (a module of `model` only
    works with stages re-resolved by name, so pass names). Both models explain the same targets:
    the regions M_c predicted by the original model, so only the parameters differ.
    maps: the original model's maps float [B,K,H,W] if already computed; models: the output of
    `randomized_models` to reuse copies across calls. options: the method's (Explainer(options=)).
    Returns {stage: float32 [B,K]} (cascade order; each entry has that stage and all above it
    randomised), NaN where M_c is empty. The check passes when the correlation collapses.
    """
    images = check_images(images)
    ids = _check_class_ids(classes)
    if models is None:
        models = randomized_models(model, stages or default_stages(model), seed)
    regions = predicted_regions(model, images, ids, output_key=output_key)
    targets = regions.float()
    if maps is None:
        maps = _explainer(model, layer, method, output_key, options)(images, classes=ids, masks=targets).maps
    maps = _check_maps(maps)
    valid = regions.flatten(2).any(dim=2)
    out = {}
    for name, randomized in models:
        other = _explainer(randomized, layer, method, output_key, options)(images, classes=ids, masks=targets).maps
        rho = spearman(maps.flatten(2).float(), other.flatten(2).float())
        out[name] = _counted(rho.cpu(), valid.cpu())
    return out


def average_ranks(x: torch.Tensor) -> torch.Tensor:
    """Ranks 1..N along the last dimension, tied values sharing their average rank.
    x: float [...,N] → float32 [...,N]."""
    shape = x.shape
    rows = x.reshape(-1, shape[-1])
    R, N = rows.shape
    values, order = rows.sort(dim=1, stable=True)
    new_run = torch.ones_like(values, dtype=torch.bool)
    new_run[:, 1:] = values[:, 1:] != values[:, :-1]
    run = new_run.long().cumsum(dim=1) - 1 + torch.arange(R, device=x.device)[:, None] * N  # global run ids
    position = torch.arange(N, device=x.device, dtype=torch.float32).expand(R, N).reshape(-1)
    run = run.reshape(-1)
    first = torch.full((R * N,), math.inf, device=x.device).scatter_reduce(0, run, position, "amin")
    last = torch.full((R * N,), -math.inf, device=x.device).scatter_reduce(0, run, position, "amax")
    mean_rank = ((first + last) / 2 + 1)[run].view(R, N)  # 1-based average rank of each sorted value
    ranks = torch.empty_like(mean_rank).scatter_(1, order, mean_rank)
    return ranks.view(shape)


def spearman(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Spearman rank correlation along the last dimension (average ranks for ties).

    a, b: float [...,N] with N >= 2. Returns float32 [...] in [-1,1]; 0 where either side is
    constant (no rank information to share).
    """
    if not isinstance(a, torch.Tensor) or not isinstance(b, torch.Tensor) or a.shape != b.shape:
        raise ValueError(f"a and b must be tensors of the same shape [...,N], got {describe(a)} and {describe(b)}")
    if a.ndim < 1 or a.shape[-1] < 2:
        raise ValueError(f"a and b need at least 2 values along the last dimension, got shape {list(a.shape)}")
    ra = average_ranks(a).double()
    rb = average_ranks(b).double()
    ra = ra - ra.mean(dim=-1, keepdim=True)
    rb = rb - rb.mean(dim=-1, keepdim=True)
    cov = (ra * rb).sum(dim=-1)
    norm = (ra.square().sum(dim=-1) * rb.square().sum(dim=-1)).sqrt()
    rho = torch.where(norm > 0, cov / norm.clamp(min=1e-300), torch.zeros_like(cov))
    return rho.clamp(-1, 1).float()


# --------------------------------------------------------------------------- averaging


def summarize(values: torch.Tensor) -> torch.Tensor:
    """Mean over classes of the per-class mean over images, skipping NaN (uncounted) pairs.

    values: float [B,K,...] → [...]; NaN where no pair was counted at all. Classes without
    any counted image are left out of the mean over classes.
    """
    if not isinstance(values, torch.Tensor) or values.ndim < 2:
        raise ValueError(f"values must be a tensor [B,K,...], got {describe(values)}")
    per_class = torch.nanmean(values.float(), dim=0)  # [K,...]
    return torch.nanmean(per_class, dim=0)


def summarize_per_class(values: torch.Tensor) -> torch.Tensor:
    """The per-class means over images of values float [B,K,...] → [K,...] (NaN: never counted)."""
    return torch.nanmean(values.float(), dim=0)


# --------------------------------------------------------------------------- driver


def evaluate(
    model: nn.Module,
    layer: Union[str, nn.Module],
    methods: Union[str, Sequence[str]],
    images: torch.Tensor,
    truth: torch.Tensor,
    classes: Optional[Sequence[int]] = None,
    *,
    tolerance: float = 15.0,
    steps: int = 16,
    percentiles: Sequence[float] = ROAD_PERCENTILES,
    stages: Optional[Sequence[str]] = None,
    context: bool = False,
    batch_size: int = 8,
    forward_batch: int = 32,
    seed: int = 0,
    output_key: str = "out",
    progress: bool = False,
    options: Optional[dict] = None,
) -> dict:
    """Every metric of this module for each method, on images with ground truth.

    images: float [N,3,H,W] as the model takes them; truth: int [N,H,W] class ids; classes: the
    class ids to explain and score (None: every output class; background classes make the
    pointing games trivial, so pass the object classes). Maps target each class's predicted
    pixels (the Explainer's default). `stages` as `randomized_models` (None: `default_stages`,
    () skips the check). Images go through in chunks of `batch_size`; when `progress`, a tqdm
    bar on stderr counts scenes (it moves after each metric of a chunk, with tqdm's estimate of
    the time left) and one line after the first chunk estimates the whole run. `layer` serves
    the layer methods (the input-space ones take none); `options`: method options, each method
    taking the entries it knows (every entry must be some method's).

    Returns {method: {key: float for key in METRIC_KEYS, plus "context_deletion_auc" and
    "context_insertion_auc" when `context`, "randomization_by_stage" {stage: float},
    "road_morf_by_percentile"/"road_lerf_by_percentile" {p: float}, "deletion_curve" and
    "insertion_curve" (lists of T+1 floats, the class-averaged mean curves, whose AUCs are the
    reported AUCs), "per_class" {metric: {class id: float}}, "pairs" (counted image-class pairs)}}.
    NaN marks a metric with nothing counted.
    """
    methods = [methods] if isinstance(methods, str) else list(methods)
    if not methods:
        raise ValueError("methods must name at least one method")
    images = check_images(images)
    if not isinstance(truth, torch.Tensor) or truth.dtype.is_floating_point or truth.dtype == torch.bool \
            or tuple(truth.shape) != (images.shape[0],) + tuple(images.shape[-2:]):
        raise ValueError(f"truth must be an int tensor [N={images.shape[0]},H,W] matching images, got {describe(truth)}")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    device = next((p.device for p in model.parameters()), images.device)
    images, truth = images.to(device), truth.to(device)
    if classes is None:
        classes = list(range(model_logits(model, images[:1], output_key).shape[1]))
    ids = _check_class_ids(classes)
    stages = default_stages(model) if stages is None else list(stages)
    models = randomized_models(model, stages, seed) if stages else []
    check_options_used(methods, options)
    for method in methods:  # fail early on a bad name, layer or option, before any work
        _explainer(model, layer, method, output_key, options)

    parts = {m: {key: [] for key in ("pg", "epg", "del", "ins", "cdel", "cins", "morf", "lerf", "rand")} for m in methods}
    from tqdm.auto import tqdm  # a dependency of the package; imported here to keep `import` light

    N = images.shape[0]
    # Counts scenes: each (chunk, method) moves the bar by the chunk's share, in one step per metric.
    bar = tqdm(total=N, desc="evaluate", unit="scene", disable=not progress, leave=False, file=sys.stderr,
               bar_format="{l_bar}{bar}| {n:.1f}/{total} scenes [{elapsed}<{remaining}]")
    metric_steps = 4 + (2 if context else 0) + (1 if models else 0)  # maps+pointing, del, ins, [ctx], ROAD, [rand]
    common = dict(seed=seed, output_key=output_key, forward_batch=forward_batch)
    start = time.perf_counter()
    try:
        for lo in range(0, N, batch_size):
            x, gt = images[lo : lo + batch_size], truth[lo : lo + batch_size]
            steps_done, chunk_steps = 0, len(methods) * metric_steps

            def advance():  # exact fractions of the chunk, so the bar ends at N (no float drift)
                nonlocal steps_done
                steps_done += 1
                bar.update(lo + x.shape[0] * steps_done / chunk_steps - bar.n)

            regions = predicted_regions(model, x, ids, output_key=output_key, forward_batch=forward_batch)
            for method in methods:
                bar.set_description(f"evaluate {method}")
                maps = _explainer(model, layer, method, output_key, options)(x, classes=ids).maps
                acc = parts[method]
                acc["pg"].append(pointing_game(maps, gt, ids, tolerance))
                acc["epg"].append(energy_pointing_game(maps, gt, ids))
                advance()
                acc["del"].append(deletion_curves(model, x, maps, ids, regions=regions, steps=steps, **common))
                advance()
                acc["ins"].append(insertion_curves(model, x, maps, ids, regions=regions, steps=steps, **common))
                advance()
                if context:
                    acc["cdel"].append(deletion_curves(model, x, maps, ids, regions=regions, steps=steps, context=True, **common))
                    advance()
                    acc["cins"].append(insertion_curves(model, x, maps, ids, regions=regions, steps=steps, context=True, **common))
                    advance()
                removal = road(model, x, maps, ids, regions=regions, percentiles=percentiles, **common)
                acc["morf"].append(removal["morf"])
                acc["lerf"].append(removal["lerf"])
                advance()
                if models:
                    # The default targets are the predicted regions, so these maps equal the
                    # ones the check would compute with masks = M_c.
                    acc["rand"].append(randomization_check(model, layer, method, x, ids, models=models, maps=maps,
                                                           output_key=output_key, options=options))
                    advance()
            if progress and lo == 0 and x.shape[0] < N:
                per_scene = (time.perf_counter() - start) / x.shape[0]
                bar.write(f"evaluate: {per_scene:.2f} s per scene ({len(methods)} methods): about "
                          f"{per_scene * N:.0f} s for {N} scenes", file=sys.stderr)
    finally:
        bar.close()
    return {method: _summary(parts[method], ids, steps, list(percentiles), stages, context) for method in methods}


def _summary(acc: dict, ids: list, steps: int, pcts: list, stages: list, context: bool) -> dict:
    """Per-method result dict from the per-chunk per-pair tensors of `evaluate`."""
    cat = {k: torch.cat([v.cpu() for v in vs]) for k, vs in acc.items() if vs and isinstance(vs[0], torch.Tensor)}
    nan = math.nan
    rand = {s: torch.cat([chunk[s] for chunk in acc["rand"]]) for s in stages} if acc["rand"] else {}
    per_pair = {
        "pointing_game": cat["pg"],
        "energy_pointing_game": cat["epg"],
        "deletion_auc": auc(cat["del"]),
        "insertion_auc": auc(cat["ins"]),
        "road_morf": cat["morf"].mean(dim=2),
        "road_lerf": cat["lerf"].mean(dim=2),
    }
    if context:
        per_pair["context_deletion_auc"] = auc(cat["cdel"])
        per_pair["context_insertion_auc"] = auc(cat["cins"])
    if rand:
        per_pair["randomization_spearman"] = rand[stages[-1]]
    out = {key: float(summarize(v)) for key, v in per_pair.items()}
    out.setdefault("randomization_spearman", nan)
    out["randomization_by_stage"] = {s: float(summarize(v)) for s, v in rand.items()}
    out["road_morf_by_percentile"] = {p: float(v) for p, v in zip(pcts, summarize(cat["morf"]))}
    out["road_lerf_by_percentile"] = {p: float(v) for p, v in zip(pcts, summarize(cat["lerf"]))}
    out["deletion_curve"] = [float(v) for v in summarize(cat["del"])]
    out["insertion_curve"] = [float(v) for v in summarize(cat["ins"])]
    out["per_class"] = {key: {c: float(v) for c, v in zip(ids, summarize_per_class(vals))} for key, vals in per_pair.items()}
    out["pairs"] = int((~cat["del"][..., 0].isnan()).sum())
    return out


# --------------------------------------------------------------------------- helpers



def _counted(values: torch.Tensor, counted: torch.Tensor) -> torch.Tensor:
    """values [B,K] where counted [B,K], NaN elsewhere (float32, on the CPU)."""
    return torch.where(counted, values, torch.full_like(values, math.nan)).float().cpu()


def _tie_break(n: int, seed: int, device) -> torch.Tensor:
    """A fixed permutation of n pixel indices: the order among equal saliencies."""
    if not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed)).to(device)


def _saliency_rank(saliency: torch.Tensor, candidates: torch.Tensor, perm: torch.Tensor) -> torch.Tensor:
    """Rank of each pixel (0 = most salient) among the candidates; non-candidates rank after them.

    saliency: float [H,W]; candidates: bool [H,W]; perm: long [H·W] tie-break order. Returns long [H,W].
    """
    key = torch.where(candidates, saliency.float(), torch.full_like(saliency, -math.inf, dtype=torch.float32)).flatten()
    order = perm[torch.argsort(key[perm], descending=True, stable=True)]
    rank = torch.empty_like(order)
    rank[order] = torch.arange(order.numel(), device=order.device)
    return rank.view(saliency.shape)


def _check_number(value, name: str, minimum: Optional[float] = None) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value!r}")
    return float(value)


def _check_maps(maps) -> torch.Tensor:
    if not isinstance(maps, torch.Tensor) or maps.ndim != 4 or not maps.is_floating_point():
        raise ValueError(f"maps must be a float tensor [B,K,H,W], got {describe(maps)}")
    if not torch.isfinite(maps).all():
        raise ValueError("maps contains NaN or Inf values")
    if maps.numel() and float(maps.min()) < 0:
        raise ValueError(f"maps must be non-negative (normalised CAMs in [0,1]), got a minimum of {float(maps.min()):.3g}")
    return maps


def _check_class_ids(classes) -> list[int]:
    if isinstance(classes, int) and not isinstance(classes, bool):
        classes = [classes]
    try:
        ids = [int(c) for c in classes]
    except (TypeError, ValueError):
        raise ValueError(f"classes must be a sequence of int class ids, got {classes!r}") from None
    if not ids or any(c < 0 for c in ids):  # repeats are fine: e.g. maps of several methods for one class
        raise ValueError(f"classes must be a non-empty sequence of non-negative ids, got {ids}")
    return ids


def _class_masks(truth, classes, maps: torch.Tensor, name: str) -> torch.Tensor:
    """bool [B,K,H,W]: truth[b] == classes[k], after checking truth against maps [B,K,H,W]."""
    B, K, H, W = maps.shape
    if not isinstance(truth, torch.Tensor) or truth.dtype.is_floating_point or truth.dtype == torch.bool \
            or tuple(truth.shape) != (B, H, W):
        raise ValueError(f"{name} must be an int tensor [B={B},H={H},W={W}] of class ids, got {describe(truth)}")
    ids = _check_class_ids(classes)
    if len(ids) != K:
        raise ValueError(f"classes must hold one id per map (K={K}), got {len(ids)}: {ids}")
    ids_t = torch.as_tensor(ids, device=maps.device).view(1, K, 1, 1)
    return truth.to(maps.device)[:, None] == ids_t


def _check_percentiles(percentiles) -> list[float]:
    try:
        pcts = [float(p) for p in percentiles]
    except (TypeError, ValueError):
        raise ValueError(f"percentiles must be a sequence of numbers in (0, 100), got {percentiles!r}") from None
    if not pcts or any(not 0 < p < 100 for p in pcts):
        raise ValueError(f"percentiles must be a non-empty sequence of numbers in (0, 100), got {pcts}")
    return pcts


def _check_pairs(model, images, maps, classes, regions, output_key, forward_batch):
    """Validated (images, maps, class ids, regions bool [B,K,H,W]) for the perturbation metrics."""
    if not isinstance(model, nn.Module):
        raise ValueError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(forward_batch, int) or forward_batch < 1:
        raise ValueError(f"forward_batch must be a positive int, got {forward_batch!r}")
    images = check_images(images)
    maps = _check_maps(maps)
    B, K, H, W = maps.shape
    if images.shape[0] != B or images.shape[-2:] != maps.shape[-2:]:
        raise ValueError(f"images must be [B={B},3,H={H},W={W}] like maps, got {list(images.shape)}")
    ids = _check_class_ids(classes)
    if len(ids) != K:
        raise ValueError(f"classes must hold one id per map (K={K}), got {len(ids)}: {ids}")
    device = next((p.device for p in model.parameters()), images.device)
    images, maps = images.to(device), maps.to(device)
    if regions is None:
        regions = predicted_regions(model, images, ids, output_key=output_key, forward_batch=forward_batch)
    elif not isinstance(regions, torch.Tensor) or regions.dtype != torch.bool or regions.shape != maps.shape:
        raise ValueError(f"regions must be a bool tensor [B={B},K={K},H={H},W={W}], got {describe(regions)}")
    return images, maps, ids, regions.to(device)
