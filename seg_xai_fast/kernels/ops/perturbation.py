"""csrc/perturbation.cpp's five ops: the region scores of every class on a batch of perturbed
outputs (region_scores), the perturbed inputs of Score-CAM, RISE and the segment methods, and RISE's
accumulation. float32 only, on CPU and CUDA.

Shapes: N perturbed samples, K explained classes, L logit classes, (H, W) the image size.
"""
from __future__ import annotations

from typing import Optional, Sequence, Tuple

import torch

from .. import reference
from ..backend import core
from .checks import class_list, match_dim, same_device, size_pair, tensor_arg
from .dispatch import core_view, exec_args, into_out, out_tensor, use_fused_op


def _image(name: str, image) -> torch.Tensor:
    tensor_arg(name, image, 3)
    match_dim(name, image, 0, 3, "RGB channels")
    return image


def region_scores(
    logits: torch.Tensor,  # float [N,L,h,w] perturbed outputs of one image
    masks: torch.Tensor,  # float [K,h,w] target regions at the logits' resolution
    classes: Sequence[int],  # K class ids in [0, L)
    score: str = "logit",  # "logit" | "probability" | "dice"
    reference_labels: Optional[torch.Tensor] = None,  # int64 [h,w], for "dice"
    *,
    backend: str = "auto",
    out: Optional[torch.Tensor] = None,  # float32 [N,K]
) -> torch.Tensor:
    """The K region scores of every perturbed output in one pass (reference.region_scores)
    → float32 [N,K]. Non-contiguous inputs are copied; `masks` is converted to float32."""
    tensor_arg("logits", logits, 4)
    tensor_arg("masks", masks, 3)
    device = same_device(logits=logits, masks=masks)
    N, L, h, w = logits.shape
    match_dim("masks", masks, 1, h, "h, as logits")
    match_dim("masks", masks, 2, w, "w, as logits")
    cls = class_list(classes)
    if len(cls) != masks.shape[0] or any(not 0 <= c < L for c in cls):
        raise ValueError(f"argument 'classes' must hold K={masks.shape[0]} ids in [0, {L}) (one per mask), got {cls}")
    if score not in reference.SCORE_TYPES:
        raise ValueError(f"argument 'score' must be one of {reference.SCORE_TYPES}, got {score!r}")
    if score == "dice":
        if (not isinstance(reference_labels, torch.Tensor) or reference_labels.dtype != torch.int64
                or tuple(reference_labels.shape) != (h, w)):
            got = _describe(reference_labels)
            raise ValueError(f"argument 'reference_labels' must be an int64 Tensor [h,w] = [{h}, {w}] for "
                             f"score='dice', got {got}")
        same_device(logits=logits, reference_labels=reference_labels)
    if not use_fused_op("region_scores", backend, device, logits.dtype):
        return into_out(out, reference.region_scores(logits, masks, cls, score, reference_labels))
    result = out_tensor(out, (N, len(cls)), torch.float32, device)
    labels = reference_labels.contiguous() if score == "dice" else torch.zeros(1, 1, dtype=torch.int64, device=device)
    core.region_scores(core_view(logits.contiguous()), core_view(masks.float().contiguous()),
                       core_view(torch.tensor(cls, dtype=torch.int64, device=device)), score, core_view(labels),
                       core_view(result), *exec_args(device))
    return result


def _describe(t) -> str:
    return f"{t.dtype} of shape {list(t.shape)}" if isinstance(t, torch.Tensor) else type(t).__name__


def scorecam_inputs(
    image: torch.Tensor,  # float [3,H,W]
    activations: torch.Tensor,  # float [n,h,w], a chunk of the target layer's channels
    *,
    backend: str = "auto",
    out: Optional[torch.Tensor] = None,  # float32 [n,3,H,W]
) -> torch.Tensor:
    """Score-CAM's perturbed inputs image × minmax(upsample(A_c)) (reference.scorecam_inputs)
    → float32 [n,3,H,W]. Non-contiguous inputs are copied."""
    _image("image", image)
    tensor_arg("activations", activations, 3)
    device = same_device(image=image, activations=activations)
    n = activations.shape[0]
    H, W = image.shape[-2:]
    if not use_fused_op("scorecam_inputs", backend, device, image.dtype, activations.dtype):
        return into_out(out, reference.scorecam_inputs(image, activations))
    result = out_tensor(out, (n, 3, H, W), torch.float32, device)
    core.scorecam_inputs(core_view(image.contiguous()), core_view(activations.contiguous()), reference.SCORECAM_EPS,
                         core_view(result), *exec_args(device))
    return result


def _rise_args(grids, shifts, size) -> Tuple[int, int]:
    tensor_arg("grids", grids, 3)
    if grids.shape[1] != grids.shape[2] or grids.shape[1] < 2:
        raise ValueError(f"argument 'grids' must be [N,s,s] with s ≥ 2, got shape {list(grids.shape)}")
    if (not isinstance(shifts, torch.Tensor) or shifts.dtype != torch.int64
            or tuple(shifts.shape) != (grids.shape[0], 2)):
        raise ValueError(f"argument 'shifts' must be an int64 Tensor [N,2] = [{grids.shape[0]}, 2], "
                         f"got {_describe(shifts)}")
    same_device(grids=grids, shifts=shifts)
    H, W = size_pair("size", size)
    ch, cw = reference.rise_cell((H, W), grids.shape[-1])
    if bool(((shifts < 0) | (shifts >= torch.tensor([ch, cw], device=shifts.device))).any()):
        raise ValueError(f"argument 'shifts' must lie in [0, {ch}) × [0, {cw}) (the RISE cell), got values "
                         f"in [{int(shifts.min())}, {int(shifts.max())}]")
    return H, W


def rise_inputs(
    image: torch.Tensor,  # float [3,H,W]
    grids: torch.Tensor,  # float [n,s,s] of 0/1
    shifts: torch.Tensor,  # int64 [n,2] (dy, dx) inside the cell
    *,
    backend: str = "auto",
    out: Optional[torch.Tensor] = None,  # float32 [n,3,H,W]
) -> torch.Tensor:
    """RISE's perturbed inputs, masks generated on the fly from the small grids
    (reference.rise_inputs) → float32 [n,3,H,W]."""
    _image("image", image)
    H, W = _rise_args(grids, shifts, image.shape[-2:])
    device = same_device(image=image, grids=grids)
    if not use_fused_op("rise_inputs", backend, device, image.dtype, grids.dtype):
        return into_out(out, reference.rise_inputs(image, grids, shifts))
    result = out_tensor(out, (grids.shape[0], 3, H, W), torch.float32, device)
    core.rise_inputs(core_view(image.contiguous()), core_view(grids.contiguous()), core_view(shifts.contiguous()),
                     core_view(result), *exec_args(device))
    return result


def rise_accumulate(
    scores: torch.Tensor,  # float [N,K]
    grids: torch.Tensor,  # float [N,s,s] of 0/1
    shifts: torch.Tensor,  # int64 [N,2]
    size: Tuple[int, int],  # (H, W)
    *,
    backend: str = "auto",
    out: Optional[torch.Tensor] = None,  # float32 [K,H,W]
) -> torch.Tensor:
    """Σ_i scores[i,k]·mask_i for all K classes, the masks regenerated on the fly: N×H×W is never
    in memory (reference.rise_accumulate) → float32 [K,H,W]."""
    tensor_arg("scores", scores, 2)
    H, W = _rise_args(grids, shifts, size)
    match_dim("scores", scores, 0, grids.shape[0], "N, as grids")
    device = same_device(scores=scores, grids=grids)
    if not use_fused_op("rise_accumulate", backend, device, scores.dtype, grids.dtype):
        return into_out(out, reference.rise_accumulate(scores, grids, shifts, (H, W)))
    result = out_tensor(out, (scores.shape[1], H, W), torch.float32, device)
    core.rise_accumulate(core_view(scores.contiguous()), core_view(grids.contiguous()), core_view(shifts.contiguous()),
                         core_view(result), *exec_args(device))
    return result


def segment_inputs(
    image: torch.Tensor,  # float [3,H,W]
    baseline: torch.Tensor,  # float [3,H,W], what replaces a removed segment
    segments: torch.Tensor,  # int64 [H,W], segment ids in [0, M)
    keep: torch.Tensor,  # bool or uint8 [n,M], the n coalitions (nonzero: the segment is kept)
    *,
    backend: str = "auto",
    out: Optional[torch.Tensor] = None,  # float32 [n,3,H,W]
) -> torch.Tensor:
    """The inputs of n coalitions of segments: image where keep[i, segments[p]], else the baseline
    (reference.segment_inputs) → float32 [n,3,H,W]. Only these n inputs are ever in memory."""
    _image("image", image)
    _image("baseline", baseline)
    H, W = image.shape[-2:]
    match_dim("baseline", baseline, 1, H, "H, as image")
    match_dim("baseline", baseline, 2, W, "W, as image")
    if (not isinstance(segments, torch.Tensor) or segments.dtype != torch.int64
            or tuple(segments.shape) != (H, W)):
        raise ValueError(f"argument 'segments' must be an int64 Tensor [H,W] = [{H}, {W}], got {_describe(segments)}")
    if not isinstance(keep, torch.Tensor) or keep.dtype not in (torch.bool, torch.uint8) or keep.dim() != 2:
        raise ValueError(f"argument 'keep' must be a bool or uint8 Tensor [n,M], got {_describe(keep)}")
    device = same_device(image=image, baseline=baseline, segments=segments, keep=keep)
    M = keep.shape[1]
    low, high = int(segments.min()), int(segments.max())
    if low < 0 or high >= M:
        raise ValueError(f"argument 'segments' must hold ids in [0, {M}) (M = keep.shape[1]), got values in "
                         f"[{low}, {high}]")
    if not use_fused_op("segment_inputs", backend, device, image.dtype, baseline.dtype):
        return into_out(out, reference.segment_inputs(image, baseline, segments, keep))
    result = out_tensor(out, (keep.shape[0], 3, H, W), torch.float32, device)
    if keep.shape[0]:
        core.segment_inputs(core_view(image.contiguous()), core_view(baseline.contiguous()), core_view(segments.contiguous()),
                            core_view(keep.contiguous().view(torch.uint8)), core_view(result), *exec_args(device))
    return result
