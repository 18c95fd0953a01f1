"""Convolutions recomputed without the taps that only ever read zero padding.

A dilated 3×3 convolution with dilation d and padding d on an h×w map with h, w ≤ d reads the
input only through its centre tap: the other eight taps multiply padding zeros at every output
position. DeepLabV3's ASPP (rates 12, 24, 36) does exactly this at common input sizes (a 16×16
map at 256² input: two of its three dilated branches are 1×1 convolutions in disguise), and each
class's vector-Jacobian product pays for the dead taps again. Above the target layer the engine
recomputes such a convolution from the taps that can read the input — the same sum without its
zero terms, so equal up to float rounding — and the backward passes run through the smaller one.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F


def live_taps(size_in: int, size_out: int, kernel: int, stride: int, padding: int, dilation: int) -> tuple:
    """(first, end) of the kernel taps along one axis that read the input at some output position.

    Tap i reads input rows o·stride − padding + i·dilation for o in [0, size_out); the rows move
    right with i, so the live taps are one contiguous range (empty only for degenerate shapes,
    then the whole kernel is kept).
    """
    live = [i for i in range(kernel)
            if i * dilation - padding <= size_in - 1 and (size_out - 1) * stride - padding + i * dilation >= 0]
    return (live[0], live[-1] + 1) if live else (0, kernel)


def pruned_conv(module: nn.Conv2d, x: torch.Tensor, output: torch.Tensor) -> Optional[torch.Tensor]:
    """`module`'s output [B,O,ho,wo] for input `x` [B,I,h,w] from its live taps only, or None when
    every tap reads the input (or the module pads other than with zeros)."""
    if module.padding_mode != "zeros" or isinstance(module.padding, str) or x.ndim != 4:
        return None
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = module.kernel_size, module.stride, module.padding, module.dilation
    (h, w), (ho, wo) = x.shape[-2:], output.shape[-2:]
    i0, i1 = live_taps(h, ho, kh, sh, ph, dh)
    j0, j1 = live_taps(w, wo, kw, sw, pw, dw)
    if (i1 - i0, j1 - j0) == (kh, kw):
        return None
    # The kept taps start i0·dilation later: that much less padding before (negative = a crop),
    # and after, what the last output position's last kept tap still needs.
    top, left = ph - i0 * dh, pw - j0 * dw
    bottom = (ho - 1) * sh - top + (i1 - i0 - 1) * dh - (h - 1)
    right = (wo - 1) * sw - left + (j1 - j0 - 1) * dw - (w - 1)
    weight = module.weight[:, :, i0:i1, j0:j1]
    return F.conv2d(F.pad(x, (left, right, top, bottom)), weight, module.bias, (sh, sw), 0, (dh, dw), module.groups)


def skip_padding_taps(module: nn.Module, inputs: tuple, output) -> Optional[torch.Tensor]:
    """Forward hook (registered by ForwardCapture on the graph pass): the pruned output of a plain
    nn.Conv2d whose input is on the graph (above the target layer), else None (output kept). Only
    the exact type with zero padding is rebuilt from its weight and padding: a subclass's forward
    may do something else (TF-"SAME" padding, weight standardisation)."""
    x = inputs[0] if inputs else None
    if (type(module) is not nn.Conv2d or module.padding_mode != "zeros" or not isinstance(x, torch.Tensor)
            or not x.requires_grad):
        return None
    if module.kernel_size == (1, 1):
        return None
    return pruned_conv(module, x, output)


__all__ = ["live_taps", "pruned_conv", "skip_padding_taps"]
