"""Explanations through a SlidingWindow model, without ever holding the whole scene's graph.

Gradient CAMs (docs/volumes.md states the definition): for class k with target region M_k on the
stitched output, S_k = Σ_p M_k(p)·stitched_k(p). The stitching is linear,

    stitched(p) = Σ_w imp(p − o_w)·logits_w(p − o_w) / den(p),    den(p) = Σ_w imp(p − o_w),

so window w's output cotangent is known once the stitched prediction is: at logit k and window
position q it is imp(q)·M_k(o_w + q) / den(o_w + q). The run is then
1. one no-grad pass of the SlidingWindow: the stitched logits, the labels and the targets;
   (targets that do not depend on the prediction — masks, Box, Pixel — skip this pass: the
   stitched prediction is then accumulated from the window forwards of step 2, plus a no-grad
   forward of the windows no target meets);
2. window chunk by window chunk (sw_batch_size windows; only this chunk's graph is alive): a
   forward with the target layer's output as a leaf, the VJPs of every class whose target meets
   the chunk's windows, batched (autograd.grad(is_grads_batched=True), in class chunks under
   max_memory_mb), each window's raw CAM (the method's CAM stage) resized to the window
   (bilinear / trilinear) and added to the blend Σ_w imp_w·CAM_w; windows whose outputs meet no
   target region run no forward and no backward;
3. the blend divided by den, cropped to the input, then ReLU + min-max per map (normalize=False:
   the blended raw maps).
Held besides one chunk's graph: the stitched logits, the targets and the maps [B,K,*padded].
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .. import kernels
from ..kernels import reference
from .cam_stage import stage_cam
from .capture import ModelState
from .checks import check_classes
from .occlusion_nd import explain_occlusion_nd, is_occlusion
from .outputs import Explanation
from .sliding import SlidingWindow
from .targets import Component, target_masks, volume_masks
from .volume import layer_volume_maps, volume_problem
from .volume_maps import LayerLeaf


def sliding_problem(spec, options: dict, dims: int, several_layers: bool) -> str | None:
    """Why the gradient method `spec` cannot explain through a SlidingWindow, or None."""
    if several_layers or options.get("aug_smooth"):
        return "several target layers and aug_smooth are not available through a SlidingWindow"
    if spec.family != "gradient" or not spec.needs_layer or spec.runner is not None:
        return None if spec.family == "gradient" else f"its family ({spec.family}) has no sliding-window runner"
    if spec.second_order or spec.target_mix is not None:
        return "its target or Hessian term is not defined window by window"
    return volume_problem(spec, options) if dims == 3 else None


def _needs_prediction(masks) -> bool:
    """True when the targets depend on the stitched prediction (a Component region)."""
    regions = masks if isinstance(masks, (list, tuple)) else [masks]
    return any(isinstance(r, Component) for r in regions)


def window_raw_cams(explainer, A: torch.Tensor, G: torch.Tensor, roi: tuple) -> torch.Tensor:
    """The method's raw CAMs of a chunk of windows resized to the window: A float [n,C,*s],
    G float [n,k,C,*s] → float32 [n,k,*roi]."""
    if len(roi) == 2:
        return stage_cam(explainer.spec, explainer.options, A, G.contiguous(), roi, explainer.backend, False)
    raw = layer_volume_maps(explainer.spec, explainer.options, A, G, explainer.backend, False)
    return reference.resize_trilinear(raw, roi) if tuple(raw.shape[-3:]) != tuple(roi) else raw


def explain_through_windows(explainer, images: torch.Tensor, classes, masks, resolution: str) -> Explanation:
    """A gradient CAM of `explainer` (whose model is a SlidingWindow) on checked `images` [B,C,*S]."""
    sw: SlidingWindow = explainer.model
    spec = explainer.spec
    dims = images.ndim - 2
    if is_occlusion(spec):  # only the windows a patch touches are recomputed (occlusion_nd.py)
        sw.check_input(images)
        return explain_occlusion_nd(explainer, images, classes, masks, resolution)
    if spec.family != "gradient":
        raise ValueError(
            f"method {explainer.method!r} cannot explain through a SlidingWindow: "
            + ("its perturbations or segments change every window they touch and have no window-by-window "
               "definition here; use 'occlusion' (recomputes only the windows a patch touches) or a gradient CAM"
               if spec.family in ("perturbation", "segment") else
               "a class-agnostic activation map has no stitched target; explain sw.model on one window instead"))
    problem = sliding_problem(spec, explainer.options, dims, explainer.layer_explainers is not None)
    if problem is not None:
        raise ValueError(f"method {explainer.method!r} cannot explain through a SlidingWindow: {problem}")
    if resolution != "full":
        raise ValueError("resolution='layer' has no meaning through a SlidingWindow (each window has its own layer "
                         "map): use resolution='full'")
    if torch.is_inference_mode_enabled():
        raise RuntimeError(f"method {explainer.method!r} needs gradients, which torch.inference_mode() forbids")
    sw.check_input(images)
    spatial = tuple(images.shape[2:])
    B = images.shape[0]
    masks_of = volume_masks if dims == 3 else target_masks
    # Targets that do not depend on the prediction (masks, Box, Pixel): one pass, the stitched
    # prediction accumulated from the same window forwards; predicted regions and Components need
    # the stitched prediction first (a no-grad pass).
    fixed = masks is not None and not _needs_prediction(masks)
    with ModelState(sw):
        padded = sw.pad(images)
        windows = sw.windows(spatial)
        imp = sw.importance(spatial, images.device, torch.float32)
        den = sw.weight_sum(windows, imp, padded.shape[2:])
        plain = 0  # no-grad window forwards
        if fixed:
            with torch.no_grad():  # the class count, from one window
                L = sw.run_window(padded[(slice(0, 1), slice(None)) + windows[0]]).shape[1]
            plain += 1
            class_ids = check_classes(classes, L, explainer.class_names)
            M = masks_of(torch.zeros((B,) + spatial, dtype=torch.long, device=images.device), class_ids, masks)
            stitched_sum = torch.zeros((B, L) + tuple(padded.shape[2:]), device=images.device, dtype=images.dtype)
        else:
            with torch.no_grad():
                stitched = sw(images)  # [B,L,*S]
            plain += B * len(windows)
            class_ids = check_classes(classes, stitched.shape[1], explainer.class_names)
            labels = stitched.argmax(dim=1)
            M = masks_of(labels, class_ids, masks)  # [B,K,*S]
        active = M.flatten(2).ne(0).any(dim=2)  # [B,K]
        # the cotangent per unit of importance, in padded coordinates (the padding is cropped: zero)
        pad = sw.padding(spatial)
        R = F.pad(M, pad) / den if any(pad) else M / den  # [B,K,*P]
        K = len(class_ids)
        blend = torch.zeros((B, K) + tuple(padded.shape[2:]), device=images.device)
        forwards = backwards = 0
        for chunk, inputs in sw.window_batches(padded, windows):
            seeds = torch.stack([R[(b, slice(None)) + windows[w]] for b, w in chunk]) * imp  # [n,K,*roi]
            keep = [j for j in range(len(chunk)) if bool(seeds[j].ne(0).any())]
            if fixed and len(keep) < len(chunk):  # windows no target meets: only their prediction
                rest = [j for j in range(len(chunk)) if j not in keep]
                with torch.no_grad():
                    logits = sw.run_window(inputs[rest])
                plain += len(rest)
                for j, window_logits in zip(rest, logits):
                    b, w = chunk[j]
                    stitched_sum[(b, slice(None)) + windows[w]] += window_logits * imp
            if not keep:
                continue  # no target meets these windows: nothing to differentiate
            if len(keep) < len(chunk):  # only the windows some target meets
                chunk, inputs, seeds = [chunk[j] for j in keep], inputs[keep], seeds[keep]
            todo = [k for k in range(K) if bool(seeds[:, k].ne(0).any())]
            forwards += len(chunk)
            with LayerLeaf(explainer, leaf=True, ndim=images.ndim) as cap, torch.enable_grad():
                logits = sw.run_window(inputs)  # [n,L,*roi]
                A = cap.activations()
                if not logits.requires_grad:
                    raise ValueError(f"target_layer {explainer.layer_name!r} is not on the path to the model "
                                     "output: no gradient reaches it")
            if fixed:
                for (b, w), window_logits in zip(chunk, logits.detach()):
                    stitched_sum[(b, slice(None)) + windows[w]] += window_logits * imp
            per_class = 4 * (logits.numel() + 3 * A.numel())
            step = explainer.class_chunk or max(1, int(explainer.max_memory_mb * 2**20 // per_class))
            for lo in range(0, len(todo), step):
                ks = todo[lo:lo + step]
                cot = torch.zeros((len(ks),) + tuple(logits.shape), device=logits.device, dtype=logits.dtype)
                for i, k in enumerate(ks):
                    cot[i, :, class_ids[k]] = seeds[:, k]
                (G,) = torch.autograd.grad(logits, [A], cot, retain_graph=True, is_grads_batched=True)
                backwards += 1
                cams = window_raw_cams(explainer, A.detach(), G.transpose(0, 1), sw.window_size(spatial))  # [n,k,*roi]
                for j, (b, w) in enumerate(chunk):
                    hit = seeds[j, ks].flatten(1).ne(0).any(dim=1)  # the classes whose target meets this window
                    blend[(b, ks) + windows[w]] += cams[j] * hit.view((-1,) + (1,) * dims) * imp
            del logits, A
        maps = sw.crop(blend / den, spatial)
        if fixed:
            labels = sw.crop(stitched_sum / den.to(stitched_sum.dtype), spatial).argmax(dim=1)
    if explainer.normalize:
        flat = maps.flatten(-3, -2) if dims == 3 else maps
        maps = kernels.normalize_maps(flat.contiguous(), backend=explainer.backend).view(maps.shape)
    maps = maps * active.view((B, K) + (1,) * dims)
    info = {"gradient_path": "autograd", "sliding_window": True, "windows": len(windows) * B,
            "window_forwards": forwards, "plain_window_forwards": plain, "backward_passes": backwards}
    return Explanation(maps=maps, classes=class_ids, labels=labels, active=active, method=spec.name,
                       layer=explainer.layer_name, info=info, class_names=explainer.class_names)
