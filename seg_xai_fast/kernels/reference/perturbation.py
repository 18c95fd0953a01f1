"""Twins of csrc/perturbation.cpp's five ops: region_scores, scorecam_inputs, rise_inputs,
rise_accumulate and segment_inputs (and the materialised masks they generate on the fly).

Score-CAM, Ablation-CAM, RISE and occlusion perturb the input (or a layer) and score every
explained class on each perturbed output. N perturbed samples, K classes, (h', w') the size of
the logits the scores are read from (pre-upsample logits against pulled-back masks, or the full
output against the masks themselves).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .seeds import class_argmax

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
