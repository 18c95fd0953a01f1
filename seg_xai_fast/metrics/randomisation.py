"""Sensitivity to the model's parameters: the cascading model-parameter randomisation check
(Adebayo et al. 2018) and the Spearman rank correlation it reports."""
from __future__ import annotations

import copy
import math
from typing import Optional, Sequence, Union

import torch
import torch.nn as nn

from ..engine.checks import check_images, describe
from ..engine.explainer import Explainer
from ..engine.methods import layer_for, options_for
from .checks import check_class_ids, check_maps, where_counted
from .scores import predicted_regions


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


def method_explainer(model, layer, method: str, output_key: str, options: Optional[dict]) -> Explainer:
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

    images: float [B,C,H,W] (volumes: [B,C,D,H,W]); classes: K ids; layer: a dotted name (a module of `model` only
    works with stages re-resolved by name, so pass names). Both models explain the same targets:
    the regions M_c predicted by the original model, so only the parameters differ.
    maps: the original model's maps float [B,K,*S] if already computed; models: the output of
    `randomized_models` to reuse copies across calls. options: the method's (Explainer(options=)).
    Returns {stage: float32 [B,K]} (cascade order; each entry has that stage and all above it
    randomised), NaN where M_c is empty. The check passes when the correlation collapses.
    """
    images = check_images(images, ndims=(4, 5))
    ids = check_class_ids(classes)
    if models is None:
        models = randomized_models(model, stages or default_stages(model), seed)
    regions = predicted_regions(model, images, ids, output_key=output_key)
    targets = regions.float()
    if maps is None:
        maps = method_explainer(model, layer, method, output_key, options)(images, classes=ids, masks=targets).maps
    maps = check_maps(maps)
    valid = regions.flatten(2).any(dim=2)
    out = {}
    for name, randomized in models:
        other = method_explainer(randomized, layer, method, output_key, options)(images, classes=ids, masks=targets).maps
        rho = spearman(maps.flatten(2).float(), other.flatten(2).float())
        out[name] = where_counted(rho.cpu(), valid.cpu())
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
