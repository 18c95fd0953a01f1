"""csrc/class_argmax.cpp and csrc/seeds.cpp: the predicted class of each pixel, and the target
seeds Up*(masks) at the logits' resolution for all K classes at once.

Shapes: B images, K explained classes, L logit classes, (H, W) the output size, (h, w) the logits'
size before the model's bilinear upsample.
"""
from __future__ import annotations

from typing import Optional, Sequence, Tuple

import torch

from .. import reference
from ..backend import core
from .checks import class_list, size_pair, tensor_arg
from .dispatch import core_view, exec_args, into_out, out_tensor, use_fused


def _seed_args(low_size, align_corners) -> Tuple[Tuple[int, int], bool]:
    if not isinstance(align_corners, bool):
        raise TypeError(f"argument 'align_corners' must be a bool, got {type(align_corners).__name__}")
    return size_pair("low_size", low_size), align_corners


def class_argmax(
    logits: torch.Tensor,  # float [B,L,H,W]
    backend: str = "auto",
    *,
    out: Optional[torch.Tensor] = None,  # int64 [B,H,W]
) -> torch.Tensor:
    """The argmax over the class axis → int64 [B,H,W], exactly as torch.argmax (ties → lowest
    class, the first NaN wins), in one pass over the logits. torch.argmax over the class axis of
    NCHW logits is slow on the CPU (a quarter of a closed-form explanation, measured); the core's
    pass is ~20× faster. Non-contiguous logits are copied.
    """
    tensor_arg("logits", logits, 4)
    return _argmax(logits, backend, out, None)


def class_argmax_counts(
    logits: torch.Tensor,  # float [B,L,H,W]
    backend: str = "auto",
    *,
    out: Optional[torch.Tensor] = None,  # int64 [B,H,W]
    counts: Optional[torch.Tensor] = None,  # int64 [B,L]
) -> Tuple[torch.Tensor, torch.Tensor]:
    """class_argmax and each image's label histogram: (labels int64 [B,H,W], counts int64 [B,L],
    the pixels predicted as each class), counted in the same pass over the logits (a separate
    histogram of the labels cost the video's explain stage about a third of its time)."""
    tensor_arg("logits", logits, 4)
    B, L = logits.shape[:2]
    counted = out_tensor(counts, (B, L), torch.int64, logits.device)
    return _argmax(logits, backend, out, counted), counted


def _argmax(logits, backend, out, counts):
    """The labels (and, into counts, their histogram) of checked logits."""
    if not use_fused(backend, logits.device, logits.dtype):
        labels = into_out(out, reference.class_argmax(logits))
        if counts is not None:
            counts.copy_(reference.label_counts(labels, logits.shape[1]))
        return labels
    B, _, H, W = logits.shape
    labels = out_tensor(out, (B, H, W), torch.int64, logits.device)
    core.class_argmax(core_view(logits.contiguous()), core_view(labels),
                      None if counts is None else core_view(counts), *exec_args(logits.device))
    return labels


def label_seeds(
    labels: torch.Tensor,  # int64 [B,H,W], the predicted class of each pixel
    classes: Sequence[int],  # K class indices
    low_size: Tuple[int, int],  # (h, w) of the logits before the model's bilinear upsample
    align_corners: bool = False,
    backend: str = "auto",
    *,
    out: Optional[torch.Tensor] = None,  # float32 [B,K,h,w]
) -> torch.Tensor:
    """Up*([labels == classes[k]]) for all K classes → float32 [B,K,h,w], for labels already at
    hand (no argmax here); the fused path never stores the K full-resolution masks. A class no
    pixel has gets zeros. Non-contiguous labels are copied.
    """
    if not isinstance(labels, torch.Tensor) or labels.ndim != 3 or labels.dtype != torch.int64:
        got = f"{labels.dtype} of shape {list(labels.shape)}" if isinstance(labels, torch.Tensor) else type(labels).__name__
        raise ValueError(f"argument 'labels' must be an int64 Tensor [B,H,W], got {got}")
    (h, w), align_corners = _seed_args(low_size, align_corners)
    cls = class_list(classes)
    if not use_fused(backend, labels.device):
        masks = reference.label_masks(labels, cls)
        return into_out(out, reference.upsample_adjoint(masks, (h, w), align_corners))
    result = out_tensor(out, (labels.shape[0], len(cls), h, w), torch.float32, labels.device)
    cls_t = torch.tensor(cls, dtype=torch.int64, device=labels.device)
    core.seeds_from_labels(core_view(labels.contiguous()), core_view(cls_t), align_corners, core_view(result),
                                    *exec_args(labels.device))
    return result


def mask_seeds(
    masks: torch.Tensor,  # float [B,K,H,W], full resolution (binary or soft)
    low_size: Tuple[int, int],  # (h, w)
    align_corners: bool = False,
    backend: str = "auto",
    *,
    out: Optional[torch.Tensor] = None,  # float32 [B,K,h,w]
) -> torch.Tensor:
    """Up*(masks) for user-given target masks (reference.upsample_adjoint) → float32 [B,K,h,w].

    Non-contiguous masks are copied.
    """
    tensor_arg("masks", masks, 4)
    (h, w), align_corners = _seed_args(low_size, align_corners)
    if not use_fused(backend, masks.device, masks.dtype):
        return into_out(out, reference.upsample_adjoint(masks, (h, w), align_corners))
    result = out_tensor(out, (masks.shape[0], masks.shape[1], h, w), torch.float32, masks.device)
    core.seeds_from_masks(core_view(masks.contiguous()), align_corners, core_view(result),
                                   *exec_args(masks.device))
    return result
