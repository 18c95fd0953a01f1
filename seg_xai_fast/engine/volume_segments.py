"""Segment attributions of volumes [B,C,D,H,W]: feature ablation, Kernel SHAP and LIME on 3-D
supervoxels, with the segment family's own coalition steps (engine/segments.py) and a run of
volumes in place of its PerturbationRun.

Features: "predicted" (the 26-connected components of the predicted label volume) or a label
volume [B,D,H,W] (any ids); "slic" is 2-D only. Baseline: a number or "mean" (the channel means).
Scores: the region scores S_k = Σ_p M_k(p)·logit_k(p) (score="logit").
"""
from __future__ import annotations

import itertools

import torch
import torch.nn.functional as F

from .. import kernels
from ..kernels import reference
from .capture import select_output
from .checks import check_classes
from .occlusion_nd import baseline_of, region_score
from .options import MAX_FEATURES
from .outputs import Explanation
from .targets import volume_masks


def connected_components_3d(labels: torch.Tensor) -> torch.Tensor:
    """The 26-connected components of equal labels in int64 [D,H,W] → ids int64 [D,H,W] in [0, M),
    numbered in raster order of their first voxel (segments.connected_components in 3-D: every
    voxel starts as its own root, takes the smallest root among its same-label neighbours, then
    its root's root, until nothing changes)."""
    D, H, W = labels.shape
    big = D * H * W
    root = torch.arange(big, device=labels.device).view(D, H, W)
    padded_labels = F.pad(labels[None, None].float(), (1, 1, 1, 1, 1, 1), value=float(labels.min()) - 1)[0, 0]
    shifts = [s for s in itertools.product((0, 1, 2), repeat=3) if s != (1, 1, 1)]
    same = [padded_labels[a:a + D, b:b + H, c:c + W] == labels.float() for a, b, c in shifts]
    while True:
        padded = F.pad(root[None, None].float(), (1, 1, 1, 1, 1, 1), value=float(big))[0, 0].long()
        best = root
        for (a, b, c), s in zip(shifts, same):
            best = torch.minimum(best, torch.where(s, padded[a:a + D, b:b + H, c:c + W], big))
        best = best.flatten()[best.flatten()].view(D, H, W)
        if torch.equal(best, root):
            return torch.unique(root, return_inverse=True)[1]
        root = best


class VolumeRun:
    """What the segment family's steps read from a run (segments.py): the images, the targets'
    original scores, scoring of coalition inputs, the chunk size and the count of forwards."""

    def __init__(self, explainer, images: torch.Tensor) -> None:
        self.settings, self.images = explainer, images
        self.opts, self.backend = explainer.options, explainer.backend
        self.count = 0

    def original(self, classes, masks) -> torch.Tensor:
        ex = self.settings
        logits = select_output(ex.model(self.images), ex.output_key, self.images.shape[0], self.images.ndim)
        self.class_ids = check_classes(classes, logits.shape[1], ex.class_names)
        self.labels = logits.argmax(dim=1)
        self.M = volume_masks(self.labels, self.class_ids, masks)
        self.per_sample = 3 * self.images[0].numel() + 2 * logits[0].numel()
        self.original_scores = torch.cat([region_score(logits[b:b + 1], self.M[b], self.class_ids, self.backend)
                                          for b in range(self.images.shape[0])])  # [B,K]
        return self.M.flatten(2).ne(0).any(dim=2)

    def coalition_inputs(self, b: int, base: torch.Tensor, seg: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        """Volume b where keep[i, seg] else base → [n,C,D,H,W]."""
        return reference.segment_inputs(self.images[b], base, seg, keep)

    def score(self, b: int, inputs: torch.Tensor) -> torch.Tensor:
        ex = self.settings
        logits = select_output(ex.model(inputs), ex.output_key, inputs.shape[0], inputs.ndim)
        self.count += inputs.shape[0]
        return region_score(logits, self.M[b], self.class_ids, self.backend)

    def chunk(self) -> int:
        budget = self.settings.max_memory_mb * 2**20
        return max(1, min(self.opts["batch_size"], int(budget // (4 * self.per_sample))))


def explain_segments_nd(explainer, images: torch.Tensor, classes, masks, resolution: str) -> Explanation:
    """featureablation, kernelshap or lime of checked volumes [B,C,D,H,W]."""
    from .capture import ModelState

    spec, o = explainer.spec, explainer.options
    if resolution != "full":
        raise ValueError(f"resolution='layer' needs a target layer; method {spec.name!r} works in input space")
    if o["score"] != "logit":
        raise ValueError(f"option 'score' {o['score']!r}: volumes take score='logit'")
    if o["context"]:
        raise ValueError("option 'context' (the segment context table) is 2-D only")
    features = o["features"]
    B = images.shape[0]
    spatial = tuple(images.shape[2:])
    run = VolumeRun(explainer, images)
    with ModelState(explainer.model), torch.no_grad():
        active = run.original(classes, masks)
        if isinstance(features, torch.Tensor):
            if tuple(features.shape) != (B,) + spatial:
                raise ValueError(f"option 'features' must be a label volume [B,D,H,W] = {[B, *spatial]}, got shape "
                                 f"{list(features.shape)}")
            segs = [torch.unique(features[b].to(images.device), return_inverse=True)[1] for b in range(B)]
        elif features == "predicted":
            segs = [connected_components_3d(run.labels[b]) for b in range(B)]
        else:
            raise ValueError(f"option 'features' {features!r} is 2-D only; volumes take 'predicted' (26-connected "
                             "components of the prediction) or a label volume [B,D,H,W]")
        raw = torch.empty((B, len(run.class_ids)) + spatial, device=images.device)
        counts, exact = [], []
        for b, seg in enumerate(segs):
            M = int(seg.max()) + 1
            if M > MAX_FEATURES:
                raise ValueError(f"option 'features' gives {M} segments in volume {b}; at most {MAX_FEATURES} are "
                                 "supported")
            counts.append(M)
            attr, is_exact = spec.perturb(run, b, seg, M, baseline_of(images[b], o["baseline"]))  # [K,M]
            if is_exact is not None:
                exact.append(is_exact)
            raw[b] = attr[:, seg]
    maps = raw
    if explainer.normalize:
        maps = kernels.normalize_maps(raw.flatten(-3, -2).contiguous(), backend=explainer.backend).view(raw.shape)
    maps = maps * active.view(active.shape + (1,) * 3)
    info = {"gradient_path": "none", "backward_passes": 0, "perturbed_forwards": run.count, "score": "logit",
            "features": counts}
    if exact:
        info["exact"] = exact
    return Explanation(maps=maps, classes=run.class_ids, labels=run.labels, active=active, method=spec.name,
                       layer="input", info=info, class_names=explainer.class_names)
