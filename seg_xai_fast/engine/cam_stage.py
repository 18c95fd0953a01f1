"""The CAM stage of the gradient methods: how a method's gradients become its maps.

A gradient method turns the gradients G [B,K,C,h,w] at the target layer's activations A
[B,C,h,w] into maps in one of three ways its spec names (engine/methods.py): a fused CAM stage of
the core (`kernel`, the built-ins), channel weights (`weights`: map = Σ_c w_kc·A_c) or a raw map
(`cam`); methods such as ShapleyCAM and Finer-CAM borrow another method's stage (`stage`).
"""
from __future__ import annotations

from typing import Optional

import torch

from .. import kernels
from ..kernels import reference
from .methods import Method


def cam_stage(spec: Method, options: dict) -> tuple:
    """(the method whose CAM stage applies, the options passed to it) for `spec` with `options`."""
    stage = spec.stage_method(options)
    if stage.kernel is not None:
        return stage, options
    return stage, {key: options[key] for key, _ in stage.options if key in options}


def stage_cam(spec: Method, options: dict, activations: torch.Tensor, gradients: torch.Tensor,
                 output_size: Optional[tuple], backend: str, normalize: bool = True) -> torch.Tensor:
    """The CAM stage of `spec`: activations float [B,C,h,w], gradients float [B,K,C,h,w] → float32
    [B,K,H,W] ((H, W) = output_size, None: (h, w)): in [0, 1] when normalize (ReLU, min-max, resize,
    ReLU, min-max), else the signed map bilinearly resized."""
    stage, stage_options = cam_stage(spec, options)
    if stage.kernel is not None:  # a fused CAM stage of the core
        if normalize:
            return kernels.cam_from_gradients(activations, gradients, stage.kernel, output_size, backend=backend,
                                              options=stage_options)
        raw = reference.raw_cam(activations, gradients, stage.kernel, stage_options)
    elif stage.weights is not None:
        weights = stage.weights(activations, gradients, **stage_options).float()  # [B,K,C]
        if normalize:
            maps = kernels.weighted_cam(activations.float(), weights.contiguous(), backend=backend)
            return maps if output_size is None else kernels.resize_normalize(maps, output_size, backend=backend)
        raw = reference.weighted_combine(activations, weights)
    elif stage.cam is not None:
        raw = stage.cam(activations, gradients, **stage_options).float()  # [B,K,h,w]
    else:
        raise ValueError(f"method {stage.name!r} has no CAM stage (no kernel, weights or cam function)")
    if normalize:
        maps = kernels.normalize_maps(raw.contiguous(), backend=backend)
        return maps if output_size is None else kernels.resize_normalize(maps, output_size, backend=backend)
    return raw if output_size is None else reference.resize_bilinear(raw, output_size)
