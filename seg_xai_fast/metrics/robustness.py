"""Robustness of the explanations: max- and avg-sensitivity to input noise (Yeh et al. 2019) and
the random-logit test (Sixt et al. 2020). The parameter-randomisation check is randomisation.py.

Both re-explain: `explain(images float [N,C,*S]) → maps float [N,K,*S]` (S = (H,W), or (D,H,W) for
volumes) gives every class's maps
of a batch from one call (an Explainer's maps targeting the clean regions), so all K classes share
each noisy forward; every image gets the same noise draws (seeded by `seed`), so a result does not
depend on how images were batched, and methods compared in one run see identical noisy images.
"""
from __future__ import annotations

import math
from typing import Callable, Sequence

import torch

from ..engine.checks import check_images, describe
from .checks import check_class_ids, check_int, check_maps, check_number, check_regions, where_counted
from .randomisation import spearman


def max_sensitivity(explain: Callable, images: torch.Tensor, maps: torch.Tensor, *, radius: float = 0.05,
                    samples: int = 8, seed: int = 0) -> torch.Tensor:
    """Max-sensitivity (Yeh et al. 2019; Quantus MaxSensitivity): max over samples i of
    ‖e(x + u_i) − e(x)‖₂ / ‖e(x)‖₂, u_i ~ U(−radius, radius) per channel and pixel (not clamped).

    explain: images [N,C,*S] → maps [N,K,*S]; images: float [B,C,H,W] or volumes [B,C,D,H,W]; maps:
    e(x), float [B,K,*S]. Returns float32 [B,K]; NaN where e(x) is all zero. Lower is better.
    """
    return sensitivity_ratios(explain, images, maps, radius, samples, seed).amax(dim=2)


def avg_sensitivity(explain: Callable, images: torch.Tensor, maps: torch.Tensor, *, radius: float = 0.05,
                    samples: int = 8, seed: int = 0) -> torch.Tensor:
    """Avg-sensitivity (Yeh et al. 2019; Quantus AvgSensitivity): the mean over samples of the
    ratio of `max_sensitivity`. Returns float32 [B,K]; NaN where e(x) is all zero."""
    return sensitivity_ratios(explain, images, maps, radius, samples, seed).mean(dim=2)


def sensitivity_ratios(explain, images, maps, radius, samples, seed) -> torch.Tensor:
    """float32 [B,K,samples]: ‖e(x + u_i) − e(x)‖₂ / ‖e(x)‖₂ (NaN where ‖e(x)‖ = 0)."""
    images, maps = _check_images_and_maps(images, maps)
    radius = check_number(radius, "radius", minimum=0.0)
    n = check_int(samples, "samples")
    generator = torch.Generator().manual_seed(seed)
    noise = (torch.rand((n,) + tuple(images.shape[1:]), generator=generator) * 2 - 1) * radius  # [n,C,*S]
    reference = maps.flatten(2).double()
    norm = reference.norm(dim=2)  # [B,K]
    out = []
    for u in noise.to(images.device, images.dtype):
        other = explain(images + u)
        if not isinstance(other, torch.Tensor) or other.shape != maps.shape:
            raise ValueError(f"explain must return maps of the shape {list(maps.shape)}, got {describe(other)}")
        distance = (other.flatten(2).double() - reference).norm(dim=2)
        out.append(where_counted((distance / norm.clamp(min=1e-300)).float().cpu(), (norm > 0).cpu()))
    return torch.stack(out, dim=2)


def _check_images_and_maps(images, maps) -> tuple:
    """images float [B,C,*S] and maps float [B,K,*S] with S = (H,W) or (D,H,W), checked together."""
    images = check_images(images, ndims=(4, 5))
    maps = check_maps(maps)
    if maps.shape[0] != images.shape[0] or maps.shape[2:] != images.shape[2:]:
        layout = ",".join(str(n) for n in images.shape[2:])
        raise ValueError(f"maps must be [B={images.shape[0]},K,{layout}] for images {list(images.shape)}, "
                         f"got {describe(maps)}")
    return images, maps


def random_logit_classes(classes: Sequence[int], num_classes: int, seed: int = 0) -> list[int]:
    """For each class c_k, a class drawn uniformly from the other num_classes − 1 (seeded)."""
    ids = check_class_ids(classes)
    n = check_int(num_classes, "num_classes", minimum=2)
    if max(ids) >= n:
        raise ValueError(f"classes must be below num_classes={n}, got {ids}")
    generator = torch.Generator().manual_seed(seed)
    draws = torch.randint(0, n - 1, (len(ids),), generator=generator).tolist()
    return [d + (d >= c) for d, c in zip(draws, ids)]  # skip c itself


def random_logit(explain: Callable, images: torch.Tensor, maps: torch.Tensor, classes: Sequence[int],
                 regions: torch.Tensor, num_classes: int, *, seed: int = 0) -> torch.Tensor:
    """Random-logit test (Sixt et al. 2020; Quantus RandomLogit), for segmentation.

    For each pair (b, k), the map of a random other class c'_k (`random_logit_classes`, one draw
    per k) explaining the same target region M_{b,k} is compared with maps[b, k]: the Spearman rank
    correlation over the pixels (voxels) (Quantus compares with SSIM). A class-sensitive method scores low.
    explain(images [B,C,*S], classes K ids, masks float [B,K,*S]) → maps [B,K,*S]; regions:
    bool [B,K,*S] the targets maps[b, k] explained (S = (H,W), or (D,H,W) for volumes).
    Returns float32 [B,K]; NaN where M is empty.
    """
    images, maps = _check_images_and_maps(images, maps)
    regions = check_regions(regions, maps)
    others = random_logit_classes(classes, num_classes, seed)
    other = torch.empty_like(maps)
    remaining = list(range(len(others)))
    while remaining:  # an Explainer call takes each class once: pairs drawing the same class take turns
        this_call = [k for i, k in enumerate(remaining) if others[k] not in [others[j] for j in remaining[:i]]]
        got = explain(images, [others[k] for k in this_call], regions[:, this_call].to(images.dtype))
        if not isinstance(got, torch.Tensor) or got.shape != maps[:, this_call].shape:
            raise ValueError(f"explain must return maps of the shape {list(maps[:, this_call].shape)}, got {describe(got)}")
        other[:, this_call] = got.to(maps.dtype)
        remaining = [k for k in remaining if k not in this_call]
    rho = spearman(maps.flatten(2).float(), other.flatten(2).float())
    return where_counted(rho.cpu(), regions.flatten(2).any(2).cpu())
