"""Score-CAM and Ablation-CAM of volumes [B,C,D,H,W]: channel weights from perturbed forwards.

- Score-CAM: channel c of A [B,C,d,h,w] upsampled trilinearly (align_corners=True, the 3-D twin
  of the 2-D method's bilinear one) to the input, min-max normalised (eps 1e-8); the input times
  that mask is scored; the weights are the softmax over channels of the scores.
- Ablation-CAM: channel c of A replaced by the ablation value of pytorch-grad-cam's rule
  (method_maths.ablation_values, by the channel's place in its batch of `batch_size`); the
  weights are the relative drop (S − S_c)/S (0 where S = 0).
Scores are region scores S_k = Σ_p M_k(p)·logit_k(p) (score="logit"). The maps are Σ_c w_kc·A_c
on the folded volume, resized trilinearly (engine/volume.py).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .. import kernels
from ..kernels import reference
from .capture import ModelState, select_output
from .checks import check_classes
from .method_maths import ablation_values
from .occlusion_nd import region_score
from .outputs import Explanation
from .perturbation import ablationcam_weights, scorecam_weights
from .targets import volume_masks
from .volume_maps import LayerLeaf, finish_maps, fold

SCORECAM_EPS = reference.SCORECAM_EPS


def is_layer_perturbation(spec) -> bool:
    """True for Score-CAM and Ablation-CAM (their perturbation steps)."""
    return spec.perturb is scorecam_weights or spec.perturb is ablationcam_weights


def _forward(explainer, inputs: torch.Tensor, n: int, replace=None) -> torch.Tensor:
    """Logits [n,L,*S] of `inputs`; replace(output) → the target layer's output, hooked for the call."""
    handle = None
    if replace is not None:
        layer = explainer.target_layer
        handle = (layer.register_forward_pre_hook(lambda m, i: (replace(i[0]),) + tuple(i[1:])) if explainer.use_input
                  else layer.register_forward_hook(lambda m, i, o: replace(o)))
    try:
        return select_output(explainer.model(inputs), explainer.output_key, n, inputs.ndim)
    finally:
        if handle is not None:
            handle.remove()


def explain_layer_perturbation_nd(explainer, images: torch.Tensor, classes, masks, resolution: str) -> Explanation:
    """Score-CAM or Ablation-CAM of checked volumes [B,C,D,H,W]."""
    spec, o = explainer.spec, explainer.options
    if o["score"] != "logit":
        raise ValueError(f"option 'score' {o['score']!r}: volumes take score='logit'")
    B = images.shape[0]
    spatial = tuple(images.shape[2:])
    with ModelState(explainer.model), torch.no_grad():
        with LayerLeaf(explainer, leaf=False) as cap:
            logits = select_output(explainer.model(images), explainer.output_key, B, images.ndim)
        A = cap.activations()  # [B,C,d,h,w]
        class_ids = check_classes(classes, logits.shape[1], explainer.class_names)
        labels = logits.argmax(dim=1)
        M = volume_masks(labels, class_ids, masks)
        active = M.flatten(2).ne(0).any(dim=2)
        C = A.shape[1]
        chunk = max(1, min(o["batch_size"], int(explainer.max_memory_mb * 2**20 // (16 * (images[0].numel()
                                                                                         + logits[0].numel())))))
        scores = torch.empty(B, C, len(class_ids), device=images.device)
        forwards = 0
        for b in range(B):
            if spec.perturb is scorecam_weights:
                for lo in range(0, C, chunk):
                    up = F.interpolate(A[b, lo:lo + chunk][None].float(), size=spatial, mode="trilinear",
                                       align_corners=True)[0]  # [n,*S]
                    lo_, hi_ = up.flatten(1).amin(1), up.flatten(1).amax(1)
                    mask = (up - lo_.view(-1, 1, 1, 1)) / (hi_ - lo_ + SCORECAM_EPS).view(-1, 1, 1, 1)
                    inputs = images[b:b + 1] * mask[:, None]
                    scores[b, lo:lo + chunk] = region_score(_forward(explainer, inputs, len(mask)), M[b], class_ids)
                    forwards += len(mask)
            else:
                values = ablation_values(float(A[b].min()), o["batch_size"]).to(A.device)
                for lo in range(0, C, chunk):
                    ids = torch.arange(lo, min(lo + chunk, C), device=A.device)

                    def ablate(output, ids=ids, b=b):
                        out = A[b:b + 1].expand(len(ids), *A.shape[1:]).clone()
                        out[torch.arange(len(ids)), ids] = values[ids % o["batch_size"]].view(-1, 1, 1, 1).to(out.dtype)
                        return out

                    inputs = images[b:b + 1].expand(len(ids), *images.shape[1:])
                    scores[b, lo:lo + chunk] = region_score(_forward(explainer, inputs, len(ids), ablate), M[b],
                                                            class_ids)
                    forwards += len(ids)
        if spec.perturb is scorecam_weights:
            weights = torch.softmax(scores, dim=1).transpose(1, 2).contiguous()  # [B,K,C]
        else:
            S = torch.cat([region_score(logits[b:b + 1], M[b], class_ids) for b in range(B)])[:, None, :]  # [B,1,K]
            drop = torch.where(S != 0, (S - scores) / torch.where(S != 0, S, torch.ones_like(S)),
                               torch.zeros_like(scores))
            weights = drop.transpose(1, 2).contiguous()
    size = tuple(logits.shape[2:]) if resolution == "full" else None
    if explainer.normalize:
        layer_maps = kernels.weighted_cam(fold(A).float().contiguous(), weights, backend=explainer.backend)
    else:
        layer_maps = reference.weighted_combine(fold(A), weights)
    layer_maps = layer_maps.view(layer_maps.shape[:2] + tuple(A.shape[-3:]))
    maps = finish_maps(layer_maps, size, explainer.normalize, explainer.backend)
    maps = maps * active.view(active.shape + (1,) * 3)
    info = {"gradient_path": "none", "backward_passes": 0, "perturbed_forwards": forwards, "score": "logit",
            "volume": True}
    return Explanation(maps=maps, classes=class_ids, labels=labels, active=active, method=spec.name,
                       layer=explainer.layer_name, info=info, class_names=explainer.class_names)
