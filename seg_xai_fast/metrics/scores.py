"""What the perturbation metrics measure: the clean prediction's frozen class regions M_c and the
class score s_c of (perturbed) images on them."""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn

from ..engine.capture import model_logits
from ..engine.checks import check_images
from .checks import check_class_ids


def predicted_regions(
    model: nn.Module, images: torch.Tensor, classes: Sequence[int], *, output_key: str = "out", forward_batch: int = 32
) -> torch.Tensor:
    """The frozen class regions M_c of the clean prediction.

    images: float [B,C,H,W] (volumes: [B,C,D,H,W]); classes: K class ids. Returns bool [B,K,H,W]
    ([B,K,D,H,W]): argmax f(images) == c.
    """
    images = check_images(images, ndims=(4, 5))
    labels = torch.cat([model_logits(model, chunk, output_key).argmax(dim=1) for chunk in images.split(forward_batch)])
    if labels.shape[1:] != images.shape[2:]:
        raise ValueError(
            f"the model output must have the images' size {list(images.shape[2:])}, got {list(labels.shape[1:])}"
        )
    ids = torch.as_tensor(check_class_ids(classes), device=labels.device)
    return labels[:, None] == ids.view((1, -1) + (1,) * (labels.ndim - 1))


def class_scores(
    model: nn.Module, images: torch.Tensor, cls: int, region: torch.Tensor, *, output_key: str = "out", forward_batch: int = 32
) -> torch.Tensor:
    """s_c for a batch of (perturbed) images that share one class and one frozen region.

    images: float [N,C,*S]; cls: class id c; region: bool [*S] non-empty (M_c); S = (H,W) or (D,H,W).
    At most `forward_batch` images go through the model at once (the memory bound).
    Returns float32 [N]: mean softmax probability of class c over the region's pixels.
    """
    weight = region.to(images.device, torch.float32)
    weight = weight / weight.sum()
    scores = []
    for chunk in images.split(forward_batch):
        probs = torch.softmax(model_logits(model, chunk, output_key).float(), dim=1)[:, cls]  # [n,*S]
        scores.append((probs * weight).flatten(1).sum(dim=1))
    return torch.cat(scores)


def region_scores(
    model: nn.Module, images: torch.Tensor, classes: Sequence[int], regions: torch.Tensor, *,
    output_key: str = "out", forward_batch: int = 32,
) -> torch.Tensor:
    """s_c of every (image, pair) from one forward per image: all K pairs share the forwards.

    images: float [N,C,*S] (perturbed copies of one image; S = (H,W) or (D,H,W)); classes: K ids
    (repeats allowed: the pairs of several methods); regions: bool [K,*S] non-empty frozen M_c of each pair.
    Returns float32 [N,K]: the mean softmax probability of classes[k] over regions[k].
    """
    ids = torch.as_tensor(check_class_ids(classes), device=images.device)
    weight = regions.to(images.device, torch.float32).flatten(1)
    weight = weight / weight.sum(1, keepdim=True).clamp(min=1)  # [K,N]
    scores = []
    for chunk in images.split(forward_batch):
        probs = torch.softmax(model_logits(model, chunk, output_key).float(), dim=1)[:, ids]  # [n,K,*S]
        scores.append((probs.flatten(2) * weight).sum(2))
    return torch.cat(scores)
