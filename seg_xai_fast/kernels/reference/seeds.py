"""Twins of csrc/class_argmax.cpp and csrc/seeds.cpp: the predicted class of each pixel and the
target seeds Up*(masks) pulled back to the logits' resolution (docs/algorithms.md).

Shapes: B images, K explained classes, L logit classes, (H, W) the output size, (h, w) the logits'
size before the model's bilinear upsample.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def class_argmax(logits: torch.Tensor) -> torch.Tensor:
    """torch.argmax(logits, 1) for [B,L,H,W], several times faster on the CPU: the maximum, then
    the first class equal to it. A NaN maximum matches nothing: then torch.argmax itself."""
    L = logits.shape[1]
    index = torch.arange(L, device=logits.device, dtype=torch.int16 if L < 2**15 else torch.int64).view(1, L, 1, 1)
    best = logits.amax(dim=1, keepdim=True)
    labels = torch.where(logits == best, index, L).amin(dim=1)
    if bool((labels == L).any()):
        return logits.argmax(dim=1)
    return labels.long()


def predicted_masks(logits: torch.Tensor, classes: list[int]) -> torch.Tensor:
    """Seg-Grad-CAM default regions: pixels whose argmax is the class.

    logits: float [B,L,H,W] over all L classes → float32 [B,K,H,W], 1 where argmax == classes[k].
    Ties go to the lowest class index (torch.argmax and numpy.argmax agree on this).
    """
    return label_masks(logits.argmax(dim=1), classes)


def label_counts(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """labels int64 [B,H,W] with values in [0, num_classes) → int64 [B,L]: the pixels of each class per image."""
    return torch.stack([torch.bincount(row.flatten(), minlength=num_classes) for row in labels])


def label_masks(labels: torch.Tensor, classes: list[int]) -> torch.Tensor:
    """labels int64 [B,H,W] → float32 [B,K,H,W], 1 where the label is classes[k]."""
    wanted = torch.as_tensor(list(classes), device=labels.device).view(1, -1, 1, 1)
    return (labels.unsqueeze(1) == wanted).float()


def upsample_adjoint(
    masks: torch.Tensor, low_size: tuple[int, int], align_corners: bool = False
) -> torch.Tensor:
    """Up*(M): pull full-resolution target masks back to logit resolution (docs/algorithms.md).

    masks: float [B,K,H,W]; low_size = (h, w) of the logits before F.interpolate(..., mode="bilinear",
    align_corners=align_corners, size=(H, W)). Returns float32 [B,K,h,w] with
    ⟨masks, Up(z)⟩ = ⟨Up*(masks), z⟩ for every z.
    """
    B, K, H, W = masks.shape
    z = torch.zeros(B, K, *low_size, dtype=torch.float32, device=masks.device, requires_grad=True)
    with torch.enable_grad():
        up = F.interpolate(z, size=(H, W), mode="bilinear", align_corners=align_corners)
        (seed,) = torch.autograd.grad(up, z, grad_outputs=masks.float())
    return seed
