"""CAMs combined from several explanations, as pytorch-grad-cam combines them.

- Several target layers (``target_layer=[...]``, gradient methods): each layer's map at its own
  resolution, N(relu(raw_l)), is resized bilinearly to the output size, the layers are averaged and
  the mean is normalised again: map = N(mean_l R(N(relu(raw_l)))) (the peer's
  aggregate_multi_layers; for one layer this is the single-layer map). N's eps (1e-7) is not
  negligible against small raw maps (random weights), so each layer's raw map is normalised
  exactly once. Each layer has its own explainer (and forward pass, on the autograd path, which
  gives raw maps), so the single-layer machinery applies as it is (ShapleyCAM, token layers).
- Test-time augmentation (option ``aug_smooth``): the batch of the 6 augmented copies of the images
  (horizontal flip or not × brightness factor 0.9, 1, 1.1: ttach's HorizontalFlip and Multiply, as
  the peer uses them) is explained in one call; each map is flipped back and the 6 are averaged.
  The target regions are those of the original images, flipped with the flipped copies so that
  they cover the same content (the peer passes the same unflipped target to every copy).
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn as nn

from .. import kernels
from ..kernels import reference
from .capture import InputOf, mixes_samples, model_logits
from .checks import check_classes
from .methods import get_method
from .outputs import Explanation
from .targets import target_masks

#: (horizontal flip, brightness factor) of each augmented copy, in ttach's Compose order.
AUGMENTATIONS = tuple((flip, factor) for flip in (False, True) for factor in (0.9, 1.0, 1.1))


def layer_list(method, target_layer) -> Optional[list]:
    """The layers of a list/tuple `target_layer` (checked), or None for a single layer or None."""
    if not isinstance(target_layer, (list, tuple)):
        return None
    spec = get_method(method)
    if not spec.takes_layer_list:
        takes = "target_layer=None" if not spec.needs_layer else "a single target_layer"
        raise ValueError(f"a list of target layers is taken by the gradient methods with a target layer; method "
                         f"{spec.name!r} takes {takes}, got a list of {len(target_layer)}")
    if not target_layer:
        raise ValueError("target_layer must not be an empty list: give one or more modules or dotted names")
    for i, layer in enumerate(target_layer):
        if not isinstance(layer, (nn.Module, str, InputOf)):
            raise TypeError(f"target_layer[{i}] must be an nn.Module, a dotted name or InputOf, "
                            f"got {type(layer).__name__}")
    return list(target_layer)


def explain_layers(explainer, images: torch.Tensor, classes, masks, resolution: str) -> Explanation:
    """The combined maps float32 [B,K,H,W] of explainer.layer_explainers for checked `images` [B,3,H,W]."""
    if resolution != "full":
        raise ValueError(f"resolution must be 'full' with several target layers ({explainer.layer_name}), whose "
                         f"resolutions differ, got {resolution!r}")
    results = [e.explain_plain(images, classes, masks, "layer") for e in explainer.layer_explainers]
    first = results[0]
    size = tuple(first.labels.shape[-2:])
    total = torch.zeros(first.maps.shape[:2] + size, device=first.maps.device)
    for res in results:  # each N(relu(raw_l)) at its layer's resolution, resized without renormalising
        total += reference.resize_bilinear(kernels.normalize_maps(res.maps, backend=explainer.backend), size)
    maps = kernels.normalize_maps(total / len(results), backend=explainer.backend)
    paths = [res.info.get("gradient_path") for res in results]
    explainer.gradient_path = paths[0] if len(set(paths)) == 1 else ", ".join(paths)
    return Explanation(maps=maps, classes=first.classes, labels=first.labels, active=first.active,
                       method=explainer.method, layer=explainer.layer_name,
                       info={"gradient_path": explainer.gradient_path, "layers": [res.info for res in results]},
                       class_names=explainer.class_names)


def augment(images: torch.Tensor) -> torch.Tensor:
    """The augmented copies of `images` float [B,...,W] → [6B,...,W], copy a at rows a·B..(a+1)·B."""
    return torch.cat([(images.flip(-1) if flip else images) * factor for flip, factor in AUGMENTATIONS])


def deaugment_mean(maps: torch.Tensor) -> torch.Tensor:
    """Maps float [6B,K,H,W] of augment()'s copies → the mean of the copies flipped back, float [B,K,H,W]."""
    copies = maps.reshape(len(AUGMENTATIONS), -1, *maps.shape[1:])
    back = [m.flip(-1) if flip else m for m, (flip, _) in zip(copies, AUGMENTATIONS)]
    return torch.stack(back).mean(dim=0)


def explain_augmented(explainer, images: torch.Tensor, classes, masks, resolution: str) -> Explanation:
    """The test-time-augmented maps float32 [B,K,H,W] of checked `images` float [B,3,H,W]."""
    if resolution != "full":
        raise ValueError(f"resolution must be 'full' with option 'aug_smooth' (the maps are averaged after each is "
                         f"normalised at the output resolution), got {resolution!r}")
    # The regions of the original images (predicted pixels, components, boxes or given masks): one
    # no-grad forward, since the copies' own predictions differ.
    logits = model_logits(explainer.model, images, explainer.output_key)
    class_ids = check_classes(classes, logits.shape[1], explainer.class_names)
    labels = kernels.class_argmax(logits, explainer.backend)
    regions = target_masks(labels, class_ids, masks)  # [B,K,H,W]
    copies, copy_masks = augment(images), augment_masks(regions)
    if mixes_samples(explainer.model):  # each copy a batch of its own, as it is explained without augmentation
        parts = [explainer.explain_plain(x, class_ids, m, "full")
                 for x, m in zip(copies.chunk(len(AUGMENTATIONS)), copy_masks.chunk(len(AUGMENTATIONS)))]
        res = parts[0]
        res.maps, res.active = torch.cat([p.maps for p in parts]), torch.cat([p.active for p in parts])
    else:
        res = explainer.explain_plain(copies, class_ids, copy_masks, "full")
    identity = AUGMENTATIONS.index((False, 1.0))
    active = res.active.reshape(len(AUGMENTATIONS), -1, len(class_ids))[identity]
    return Explanation(maps=deaugment_mean(res.maps), classes=class_ids, labels=labels, active=active,
                       method=explainer.method, layer=explainer.layer_name,
                       info={**res.info, "augmentations": len(AUGMENTATIONS)}, class_names=explainer.class_names)


def augment_masks(regions: torch.Tensor) -> torch.Tensor:
    """Regions float [B,K,H,W] of the originals → [6B,K,H,W]: flipped with the flipped copies, never scaled."""
    return torch.cat([regions.flip(-1) if flip else regions for flip, _ in AUGMENTATIONS])
