"""Occlusion of volumes and through a SlidingWindow (captum's Occlusion in N dimensions), and RISE
of volumes (3-D grids, trilinear).

A pixel's (voxel's) attribution is the mean, over the occlusion windows that cover it, of
S_k − S_k(occluded), with S_k = Σ_p M_k(p)·logit_k(p) on the model's (stitched) output; windows
start at i·stride along each axis (ceil((n − w)/s) + 1 of them) and are clipped to the input.

Through a SlidingWindow the stitching is linear (engine/sliding_explain.py): S_k = Σ_w
⟨R_wk, logits_wk⟩ with R_wk = imp·M_k/den on window w, so an occlusion changes only the terms of
the sliding windows its box touches. The run computes the stitched prediction once, each
window's unperturbed term once, and then for every occlusion only the touched windows whose
target terms are not zero: S_k − S_k(occluded) = Σ_{w touched} ⟨R_wk, logits_wk − logits'_wk⟩.
"""
from __future__ import annotations

import itertools

import torch
import torch.nn.functional as F

from .. import kernels
from .capture import ModelState, select_output
from .checks import check_classes
from .outputs import Explanation
from .perturbation import occlusion_maps, rise_maps
from .sliding import SlidingWindow
from .targets import target_masks, volume_masks


def is_occlusion(spec) -> bool:
    """True for the occlusion method (its perturbation step is occlusion_maps)."""
    return spec.perturb is occlusion_maps


def is_rise(spec) -> bool:
    """True for RISE (its perturbation step is rise_maps)."""
    return spec.perturb is rise_maps


def axes_option(options: dict, key: str, dims: int) -> tuple:
    """Option `key` (checked as an int or a tuple by engine/options.py) with one value per axis:
    in 3-D an int (stored as an equal pair) becomes a cube; unequal pairs need a triple."""
    value = tuple(options[key])
    if len(value) == dims:
        return value
    if dims == 3 and len(value) == 2 and value[0] == value[1]:
        return (value[0],) * 3
    raise ValueError(f"option {key!r} must be an int or {dims} ints (one per spatial axis) for inputs with {dims} "
                     f"spatial axes, got {value!r}")


def occlusion_boxes(size: tuple, window: tuple, stride: tuple) -> list:
    """captum's window positions in N-D: per axis the starts i·s, i < ceil((n − w)/s) + 1, each
    window clipped to the input → [tuple of slices] (last axis fastest)."""
    axes = []
    for n, w, s in zip(size, window, stride):
        if w > n:
            raise ValueError(f"option 'window' {tuple(window)} is larger than the input {tuple(size)}")
        axes.append([slice(i * s, min(i * s + w, n)) for i in range(-(-(n - w) // s) + 1)])
    return list(itertools.product(*axes))


def baseline_of(image: torch.Tensor, baseline) -> torch.Tensor:
    """The occluding values float [C,*S] of image float [C,*S]: a constant or the channel means."""
    if baseline == "mean":
        return image.mean(dim=tuple(range(1, image.ndim)), keepdim=True).expand_as(image)
    if isinstance(baseline, str):
        raise ValueError(f"option 'baseline' {baseline!r} is 2-D only; volumes and sliding windows take a number "
                         "or 'mean'")
    return torch.full_like(image, float(baseline))


def region_score(logits: torch.Tensor, weights: torch.Tensor, class_ids: list, backend: str = "auto") -> torch.Tensor:
    """Σ_p weights_k(p)·logits_k(p): logits [n,L,*s], weights [K,*s] (shared) or [n,K,*s] → float32 [n,K].

    Shared weights run the fused region-score kernel on the folded tensors (a sum over positions
    does not care about their layout: [n,L,d,h,w] → [n,L,d·h,w])."""
    if weights.ndim == logits.ndim - 1:
        if logits.ndim == 5:
            logits, weights = logits.flatten(2, 3), weights.flatten(1, 2)
        return kernels.region_scores(logits.contiguous(), weights.contiguous(), list(class_ids), "logit",
                                     backend=backend)
    return (logits[:, class_ids].float() * weights.float()).flatten(2).sum(-1)


def explain_occlusion_nd(explainer, images: torch.Tensor, classes, masks, resolution: str) -> Explanation:
    """Occlusion of checked `images` [B,C,*S] by `explainer` (a volume model, or a SlidingWindow)."""
    opts = explainer.options
    dims = images.ndim - 2
    if resolution != "full":
        raise ValueError("resolution='layer' needs a target layer; occlusion works in input space")
    if opts["score"] != "logit":
        raise ValueError(f"option 'score' {opts['score']!r}: volumes and sliding windows take score='logit'")
    window, stride = axes_option(opts, "window", dims), axes_option(opts, "stride", dims)
    model = explainer.model
    sw = model if isinstance(model, SlidingWindow) else None
    spatial = tuple(images.shape[2:])
    boxes = occlusion_boxes(spatial, window, stride)
    B = images.shape[0]
    with ModelState(model), torch.no_grad():
        logits = sw(images) if sw is not None else select_output(model(images), explainer.output_key, B, images.ndim)
        class_ids = check_classes(classes, logits.shape[1], explainer.class_names)
        labels = logits.argmax(dim=1)
        M = (volume_masks if dims == 3 else target_masks)(labels, class_ids, masks)  # [B,K,*S]
        active = M.flatten(2).ne(0).any(dim=2)
        K = len(class_ids)
        out = torch.zeros((B, K) + spatial, device=images.device)
        count = torch.zeros(spatial, device=images.device)
        for box in boxes:
            count[box] += 1
        if sw is None:
            forwards = _plain_drops(explainer, images, logits, M, class_ids, boxes, out)
        else:
            forwards = _sliding_drops(explainer, sw, images, M, class_ids, boxes, out)
    maps = out / count
    if explainer.normalize:
        flat = maps.flatten(-3, -2) if dims == 3 else maps
        maps = kernels.normalize_maps(flat.contiguous(), backend=explainer.backend).view(maps.shape)
    maps = maps * active.view((B, K) + (1,) * dims)
    info = {"gradient_path": "none", "backward_passes": 0, "occlusions": len(boxes) * B, "score": "logit",
            "window_forwards" if sw is not None else "perturbed_forwards": forwards}
    return Explanation(maps=maps, classes=class_ids, labels=labels, active=active, method=explainer.method,
                       layer="input", info=info, class_names=explainer.class_names)


def _chunk(explainer, per_sample: int) -> int:
    budget = explainer.max_memory_mb * 2**20
    return max(1, min(explainer.options["batch_size"], int(budget // (4 * 4 * per_sample))))


def _plain_drops(explainer, images, logits, M, class_ids, boxes, out) -> int:
    """out[b, :, box] += S − S(occluded) for every box, by forwards of the occluded inputs."""
    base_scores = torch.cat([region_score(logits[b:b + 1], M[b], class_ids) for b in range(images.shape[0])])
    chunk = _chunk(explainer, images[0].numel() + logits[0].numel())
    forwards = 0
    for b in range(images.shape[0]):
        base = baseline_of(images[b], explainer.options["baseline"])
        for lo in range(0, len(boxes), chunk):
            part = boxes[lo:lo + chunk]
            inputs = images[b:b + 1].repeat((len(part),) + (1,) * (images.ndim - 1))
            for i, box in enumerate(part):
                inputs[(i, slice(None)) + box] = base[(slice(None),) + box]
            perturbed = select_output(explainer.model(inputs), explainer.output_key, len(part), images.ndim)
            forwards += len(part)
            drop = base_scores[b] - region_score(perturbed, M[b], class_ids)  # [n,K]
            for i, box in enumerate(part):
                out[(b, slice(None)) + box] += drop[i].view((-1,) + (1,) * len(box))
    return forwards


def _sliding_drops(explainer, sw: SlidingWindow, images, M, class_ids, boxes, out) -> int:
    """out[b, :, box] += S − S(occluded) through `sw`, recomputing only the touched windows."""
    spatial = tuple(images.shape[2:])
    pad = sw.padding(spatial)
    before = [pad[2 * (len(spatial) - 1 - a)] for a in range(len(spatial))]
    padded = sw.pad(images)
    windows = sw.windows(spatial)
    imp = sw.importance(spatial, images.device, torch.float32)
    den = sw.weight_sum(windows, imp, padded.shape[2:])
    R = (F.pad(M, pad) if any(pad) else M) / den  # [B,K,*P]
    # with reflect/replicate/circular padding an occlusion also changes padded values: compare inputs
    compare = any(pad) and sw.padding_mode != "constant"
    roi = sw.window_size(spatial)
    chunk = max(1, min(explainer.options["batch_size"], sw.sw_batch_size * 8,
                       _chunk(explainer, int(images.shape[1] * torch.Size(roi).numel() * 8))))
    forwards = 0
    for b in range(images.shape[0]):
        def seed(i, b=b):  # window i's target weights [K,*roi], sliced when needed (never all held)
            return R[(b, slice(None)) + windows[i]] * imp

        relevant = [i for i, w in enumerate(windows) if bool(R[(b, slice(None)) + w].ne(0).any())]
        base_terms = {}
        for lo in range(0, len(relevant), chunk):  # each relevant window's unperturbed terms
            ids = relevant[lo:lo + chunk]
            logits = sw.run_window(torch.cat([padded[(slice(b, b + 1), slice(None)) + windows[i]] for i in ids]))
            forwards += len(ids)
            terms = region_score(logits, torch.stack([seed(i) for i in ids]), class_ids)
            base_terms.update(zip(ids, terms))
        base = baseline_of(images[b], explainer.options["baseline"])

        def touched():  # (box index, window index, the window's occluded input [C,*roi]), lazily
            for o, box in enumerate(boxes):
                if compare:
                    occluded = images[b].clone()
                    occluded[(slice(None),) + box] = base[(slice(None),) + box]
                    occluded = sw.pad(occluded[None])[0]
                shifted = [slice(s.start + p, s.stop + p) for s, p in zip(box, before)]
                for i in relevant:
                    w = windows[i]
                    if compare:
                        window_input = occluded[(slice(None),) + w]
                        if not torch.equal(window_input, padded[(b, slice(None)) + w]):
                            yield o, i, window_input
                        continue
                    overlap = [slice(max(s.start, v.start), min(s.stop, v.stop)) for s, v in zip(shifted, w)]
                    if any(part.start >= part.stop for part in overlap):
                        continue  # this window's input is unchanged: its term is too
                    window_input = padded[(b, slice(None)) + w].clone()
                    local = tuple(slice(part.start - v.start, part.stop - v.start) for part, v in zip(overlap, w))
                    source = tuple(slice(part.start - p, part.stop - p) for part, p in zip(overlap, before))
                    window_input[(slice(None),) + local] = base[(slice(None),) + source]
                    yield o, i, window_input

        pairs = touched()
        while True:
            part = list(itertools.islice(pairs, chunk))
            if not part:
                break
            logits = sw.run_window(torch.stack([p[2] for p in part]))
            forwards += len(part)
            terms = region_score(logits, torch.stack([seed(i) for _, i, _ in part]), class_ids)  # [n,K]
            for (o, i, _), term in zip(part, terms):
                out[(b, slice(None)) + boxes[o]] += (base_terms[i] - term).view((-1,) + (1,) * len(spatial))
    return forwards


def rise_masks_nd(grids: torch.Tensor, shifts: torch.Tensor, size: tuple) -> torch.Tensor:
    """RISE's masks in N-D: each binary grid [s,...,s] upsampled (bilinear / trilinear,
    align_corners=False) to (s+1)·cell per axis, cell = ceil(n/s), and cropped at its shift.
    grids float [n,s,...]; shifts int64 [n,dims] → float32 [n,*size]."""
    s = grids.shape[-1]
    cells = [-(-int(n) // s) for n in size]
    mode = "bilinear" if len(size) == 2 else "trilinear"
    up = F.interpolate(grids.float()[:, None], size=[(s + 1) * c for c in cells], mode=mode, align_corners=False)[:, 0]
    return torch.stack([up[(i,) + tuple(slice(d, d + n) for d, n in zip(shift, size))]
                        for i, shift in enumerate(shifts.tolist())])


def rise_grids_nd(n: int, grid: int, p: float, seed: int, size: tuple) -> tuple:
    """RISE's N binary grids float32 [N,s,...,s] (1 with probability p) and shifts int64 [N,dims]
    in the cell, from a CPU generator seeded with `seed` (the grids drawn first, then the shifts
    axis by axis)."""
    g = torch.Generator().manual_seed(seed)
    grids = (torch.rand((n,) + (grid,) * len(size), generator=g) < p).float()
    cells = [-(-int(s) // grid) for s in size]
    shifts = torch.stack([torch.randint(0, c, (n,), generator=g) for c in cells], dim=1)
    return grids, shifts


def explain_rise_nd(explainer, images: torch.Tensor, classes, masks, resolution: str) -> Explanation:
    """RISE of checked volumes [B,C,D,H,W]: saliency_k = Σ_i S_ik·mask_i / (N·p), S_ik the region
    score (Σ_p M_k(p)·logit_k(p)) of the input times mask i."""
    o = explainer.options
    if resolution != "full":
        raise ValueError("resolution='layer' needs a target layer; RISE works in input space")
    if o["score"] != "logit":
        raise ValueError(f"option 'score' {o['score']!r}: volumes take score='logit'")
    spatial = tuple(images.shape[2:])
    dims, B = len(spatial), images.shape[0]
    model = explainer.model
    grids, shifts = rise_grids_nd(o["n_masks"], o["grid"], o["p"], o["seed"], spatial)
    grids = grids.to(images.device)
    with ModelState(model), torch.no_grad():
        logits = select_output(model(images), explainer.output_key, B, images.ndim)
        class_ids = check_classes(classes, logits.shape[1], explainer.class_names)
        labels = logits.argmax(dim=1)
        M = volume_masks(labels, class_ids, masks)
        active = M.flatten(2).ne(0).any(dim=2)
        out = torch.zeros((B, len(class_ids)) + spatial, device=images.device)
        chunk = _chunk(explainer, 2 * images[0].numel() + logits[0].numel())
        for lo in range(0, o["n_masks"], chunk):
            m = rise_masks_nd(grids[lo:lo + chunk], shifts[lo:lo + chunk], spatial)  # [n,*S]
            for b in range(B):
                perturbed = select_output(model(images[b:b + 1] * m[:, None]), explainer.output_key, m.shape[0],
                                          images.ndim)
                scores = region_score(perturbed, M[b], class_ids)  # [n,K]
                out[b] += torch.einsum("nk,np->kp", scores, m.flatten(1)).view(out.shape[1:])
    maps = out / (o["n_masks"] * o["p"])
    if explainer.normalize:
        maps = kernels.normalize_maps(maps.flatten(-3, -2).contiguous(), backend=explainer.backend).view(maps.shape)
    maps = maps * active.view((B, len(class_ids)) + (1,) * dims)
    info = {"gradient_path": "none", "backward_passes": 0, "perturbed_forwards": o["n_masks"] * B, "score": "logit"}
    return Explanation(maps=maps, classes=class_ids, labels=labels, active=active, method=explainer.method,
                       layer="input", info=info, class_names=explainer.class_names)
