"""Sliding-window inference as a module: `SlidingWindow(model, roi_size, ...)`.

The forward is MONAI's `sliding_window_inference` written from its definition (no MONAI import):

- an input smaller than the window along an axis is padded to the window (half the difference
  before, the rest after; `padding_mode`, `cval` as torch.nn.functional.pad), and the output is
  cropped back;
- along each axis the scan interval is int(roi·(1 − overlap)) (at least 1; the whole axis when the
  window covers it); window i starts at i·interval, pulled back so that the last window ends at
  the border, and the number of windows is the first n whose window reaches the end;
- every window's logits are weighted by the importance map (ones for "constant"; for "gaussian"
  the separable exp(−x²/(2σ²)) with x the offset from the window's centre, σ = sigma_scale·roi;
  both clamped below at max(min, 1e-3)), summed into the stitched output and divided by the
  summed weights: stitched(p) = Σ_w imp_w(p)·logits_w(p) / Σ_w imp_w(p).

Windows run `sw_batch_size` at a time, in MONAI's order (image-major, windows in C order of
their start coordinates). The explainers use `windows()`, `importance()` and `stitch()` to explain
through the stitching without holding the whole scene's graph (engine/sliding_explain.py).
"""
from __future__ import annotations

import itertools
import numbers
from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from .capture import select_output

BLEND_MODES = ("constant", "gaussian")
PADDING_MODES = ("constant", "reflect", "replicate", "circular")
IMPORTANCE_FLOOR = 1e-3  # MONAI's compute_importance_map: weights clamped to at least max(min, 1e-3)


def _per_axis(value, n: int, name: str) -> tuple:
    if isinstance(value, (numbers.Number,)) and not isinstance(value, bool):
        return (value,) * n
    values = tuple(value)
    if len(values) != n:
        raise ValueError(f"{name} must have one value per spatial axis ({n}), got {list(values)}")
    return values


class SlidingWindow(nn.Module):
    """`model` run on overlapping windows of size `roi_size`, the outputs blended (MONAI's
    sliding_window_inference; see the module docstring for the exact definition).

    model: maps float [n,C,*roi] to logits [n,L,*roi] (a Tensor, a dict with "out", or a tuple
    whose first element is the logits). roi_size: one int per spatial axis (2 for [B,C,H,W]
    inputs, 3 for [B,C,D,H,W]); a non-positive entry takes the input's size along that axis.
    overlap: in [0, 1), one value or one per axis. mode: "constant" or "gaussian" (sigma_scale
    times the window size is the σ per axis). sw_batch_size: windows per model call.
    padding_mode, cval: how inputs smaller than the window are padded.
    """

    def __init__(self, model: nn.Module, roi_size: Sequence[int], overlap=0.25, mode: str = "constant",
                 sigma_scale=0.125, sw_batch_size: int = 1, padding_mode: str = "constant", cval: float = 0.0) -> None:
        super().__init__()
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        if isinstance(roi_size, numbers.Number) or not all(
                isinstance(r, numbers.Integral) and not isinstance(r, bool) for r in roi_size):
            raise TypeError(f"roi_size must be a sequence of ints, one per spatial axis (e.g. (96, 96, 96) or "
                            f"(512, 512)), got {roi_size!r}")
        roi = tuple(int(r) for r in roi_size)
        if len(roi) not in (2, 3):
            raise ValueError(f"roi_size must have 2 (images [B,C,H,W]) or 3 (volumes [B,C,D,H,W]) axes, got {list(roi)}")
        self.model = model
        self.training = model.training  # the wrapper follows the model's mode (eval models stay eval)
        self.roi_size = roi
        self.overlap = tuple(float(o) for o in _per_axis(overlap, len(roi), "overlap"))
        for o in self.overlap:
            if not 0 <= o < 1:
                raise ValueError(f"overlap must be in [0, 1), got {overlap!r}")
        if mode not in BLEND_MODES:
            raise ValueError(f"mode must be one of {list(BLEND_MODES)}, got {mode!r}")
        self.mode = mode
        self.sigma_scale = tuple(float(s) for s in _per_axis(sigma_scale, len(roi), "sigma_scale"))
        if mode == "gaussian" and not all(s > 0 for s in self.sigma_scale):
            raise ValueError(f"sigma_scale must be positive, got {sigma_scale!r}")
        if isinstance(sw_batch_size, bool) or not isinstance(sw_batch_size, numbers.Integral) or sw_batch_size < 1:
            raise ValueError(f"sw_batch_size must be a positive int, got {sw_batch_size!r}")
        self.sw_batch_size = int(sw_batch_size)
        if padding_mode not in PADDING_MODES:
            raise ValueError(f"padding_mode must be one of {list(PADDING_MODES)}, got {padding_mode!r}")
        self.padding_mode = padding_mode
        self.cval = float(cval)

    # --- the geometry

    def check_input(self, images: torch.Tensor) -> None:
        if not isinstance(images, torch.Tensor):
            raise TypeError(f"images must be a torch.Tensor, got {type(images).__name__}")
        n = len(self.roi_size)
        if images.ndim != n + 2:
            layout = "[B,C,H,W]" if n == 2 else "[B,C,D,H,W]"
            raise ValueError(f"roi_size {list(self.roi_size)} has {n} axes, so images must be {layout} "
                             f"({n + 2} dimensions), got shape {list(images.shape)}")

    def window_size(self, spatial: Sequence[int]) -> tuple:
        """The window per axis for an input of this spatial size (non-positive roi entries → the input's size)."""
        return tuple(s if r <= 0 else r for r, s in zip(self.roi_size, spatial))

    def padding(self, spatial: Sequence[int]) -> list:
        """F.pad's list (last axis first) that grows an input smaller than the window to the window."""
        roi = self.window_size(spatial)
        pad = []
        for r, s in reversed(list(zip(roi, spatial))):
            diff = max(r - s, 0)
            pad += [diff // 2, diff - diff // 2]
        return pad

    def windows(self, spatial: Sequence[int]) -> list:
        """The windows of a (padded) input of this spatial size: tuples of slices, in MONAI's order."""
        roi = self.window_size(spatial)
        size = tuple(max(s, r) for s, r in zip(spatial, roi))
        starts = []
        for s, r, o in zip(size, roi, self.overlap):
            interval = r if r == s else max(int(r * (1 - o)), 1)
            count = next(i for i in range(-(-s // interval)) if i * interval + r >= s) + 1
            starts.append([i * interval - max(i * interval + r - s, 0) for i in range(count)])
        return [tuple(slice(a, a + r) for a, r in zip(start, roi)) for start in itertools.product(*starts)]

    def importance(self, spatial: Sequence[int], device=None, dtype=torch.float32) -> torch.Tensor:
        """The importance map float [*roi] of the windows of an input of this spatial size."""
        roi = self.window_size(spatial)
        if self.mode == "constant":
            imp = torch.ones(roi, device=device, dtype=torch.float32)
        else:
            imp = None
            for axis, (r, scale) in enumerate(zip(roi, self.sigma_scale)):
                x = torch.arange(-(r - 1) / 2.0, (r - 1) / 2.0 + 1, dtype=torch.float32, device=device)
                g = torch.exp(x ** 2 / (-2 * (r * scale) ** 2))
                imp = g if imp is None else imp.unsqueeze(-1) * g[(None,) * axis]
        floor = max(float(imp.min()), IMPORTANCE_FLOOR)
        return imp.clamp(min=floor).to(dtype)

    # --- the forward

    def pad(self, images: torch.Tensor) -> torch.Tensor:
        pad = self.padding(images.shape[2:])
        if not any(pad):
            return images
        kwargs = {"value": self.cval} if self.padding_mode == "constant" else {}
        return F.pad(images, pad, mode=self.padding_mode, **kwargs)

    def crop(self, stitched: torch.Tensor, spatial: Sequence[int]) -> torch.Tensor:
        """The padded stitched output [B,L,*padded] cropped back to the input's `spatial` size."""
        pad = self.padding(spatial)
        if not any(pad):
            return stitched
        n = len(spatial)
        before = [pad[2 * (n - 1 - a)] for a in range(n)]
        return stitched[(slice(None), slice(None)) + tuple(slice(b, b + s) for b, s in zip(before, spatial))]

    def window_batches(self, padded: torch.Tensor, windows: list):
        """(list of (image, window index), window inputs [n,C,*roi]) per model call, sw_batch_size
        windows at a time across the batch (MONAI's order)."""
        todo = [(b, w) for b in range(padded.shape[0]) for w in range(len(windows))]
        for lo in range(0, len(todo), self.sw_batch_size):
            chunk = todo[lo:lo + self.sw_batch_size]
            yield chunk, torch.cat([padded[(slice(b, b + 1), slice(None)) + windows[w]] for b, w in chunk])

    def run_window(self, inputs: torch.Tensor) -> torch.Tensor:
        """The model's logits [n,L,*roi] of window inputs [n,C,*roi]."""
        out = select_output(self.model(inputs), "out", inputs.shape[0], inputs.ndim)
        if tuple(out.shape[2:]) != tuple(inputs.shape[2:]):
            raise ValueError(f"SlidingWindow needs a model whose output has the window's size {list(inputs.shape[2:])}, "
                             f"got logits of shape {list(out.shape)}")
        return out

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """images float [B,C,*spatial] → stitched logits [B,L,*spatial]."""
        self.check_input(images)
        spatial = tuple(images.shape[2:])
        padded = self.pad(images)
        windows = self.windows(spatial)
        imp = self.importance(spatial, images.device, images.dtype)
        out = None
        for chunk, inputs in self.window_batches(padded, windows):
            logits = self.run_window(inputs)
            if out is None:
                out = torch.zeros((padded.shape[0], logits.shape[1]) + tuple(padded.shape[2:]),
                                  dtype=images.dtype, device=images.device)
            for (b, w), window_logits in zip(chunk, logits):
                out[(b, slice(None)) + windows[w]] += window_logits * imp
        return self.crop(out / self.weight_sum(windows, imp, padded.shape[2:]), spatial)

    def weight_sum(self, windows: list, imp: torch.Tensor, padded_spatial) -> torch.Tensor:
        """Σ_w imp_w over the padded input: float [*padded] (the stitching's denominator)."""
        total = torch.zeros(tuple(padded_spatial), dtype=imp.dtype, device=imp.device)
        for window in windows:
            total[window] += imp
        return total

    def extra_repr(self) -> str:
        return (f"roi_size={self.roi_size}, overlap={self.overlap}, mode={self.mode!r}, "
                f"sw_batch_size={self.sw_batch_size}")
