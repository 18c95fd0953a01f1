"""Explanations through a SlidingWindow model, without ever holding the whole scene's graph.

Gradient CAMs (docs/volumes.md states the definition): for class k with target region M_k on the
stitched output, S_k = Σ_p M_k(p)·stitched_k(p). The stitching is linear,

    stitched(p) = Σ_w imp(p − o_w)·logits_w(p − o_w) / den(p),    den(p) = Σ_w imp(p − o_w),

so window w's output cotangent is known once the stitched prediction over the window is: at logit
k and window position q it is imp(q)·M_k(o_w + q) / den(o_w + q). The run goes window chunk by
window chunk (sw_batch_size windows): a forward with the target layer's output as a leaf (the
parameters are frozen, so only the layer-to-output part of the graph is recorded), the stitched
logits accumulated, then the VJPs of every class whose target meets the chunk, batched
(autograd.grad(is_grads_batched=True), in class chunks under max_memory_mb), each window's raw CAM
(the method's CAM stage) resized to the window (bilinear / trilinear) and added to the blend
Σ_w imp_w·CAM_w. When the targets are known:
- given targets (masks, Box, Pixel): at once; windows no target meets run a no-grad forward only
  (for the stitched prediction) and no backward;
- the predicted regions: a window's region is final once every window overlapping it has run, so
  its graph waits for those neighbours (a few rows of windows) and no pre-pass is needed, as long
  as the waiting graphs fit max_memory_mb (measured on the first chunk); otherwise, and for a
  Component (which needs the whole prediction), a no-grad pass of the SlidingWindow comes first.
Finally the blend is divided by den, cropped to the input, then ReLU + min-max per map
(normalize=False: the blended raw maps).
Held besides the waiting graphs: the stitched logits, the maps [B,K,*padded], and for given
targets and Components their masks.
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


class _Windows:
    """The stitching of one call: padded input, windows, importance, the summed importance, and the
    order in which the windows' stitched outputs become final."""

    def __init__(self, sw: SlidingWindow, images: torch.Tensor) -> None:
        self.sw = sw
        self.spatial = tuple(images.shape[2:])
        self.padded = sw.pad(images)
        self.windows = sw.windows(self.spatial)
        self.roi = sw.window_size(self.spatial)
        self.imp = sw.importance(self.spatial, images.device, torch.float32)  # [*roi]
        self.den = sw.weight_sum(self.windows, self.imp, self.padded.shape[2:])  # [*P]
        pad = sw.padding(self.spatial)
        # 1 inside the input, 0 on the padding (the stitched output there is cropped: no target)
        self.inside = F.pad(torch.ones(self.spatial, device=images.device), pad) if any(pad) else None

    def batches(self):
        return self.sw.window_batches(self.padded, self.windows)

    def release_order(self, batch: int) -> list:
        """For every chunk of the window order (sw_batch_size windows): the index of the last chunk
        holding a window that overlaps one of its windows. After that chunk the stitched prediction
        over the chunk's windows is final."""
        starts = torch.tensor([[s.start for s in w] for w in self.windows])  # [N,d]
        overlaps = ((starts[:, None] - starts[None]).abs() < torch.tensor(self.roi)).all(dim=2)  # [N,N]
        N = len(self.windows)
        last = torch.arange(N).expand(N, N).where(overlaps, -1).amax(dim=1).tolist()  # [N]
        size = self.sw.sw_batch_size
        release: dict = {}
        for b in range(batch):
            for w in range(N):
                c = (b * N + w) // size
                release[c] = max(release.get(c, c), (b * N + last[w]) // size)
        return [release[c] for c in range(len(release))]

    def stitch(self, stitched_sum: torch.Tensor, chunk: list, logits: torch.Tensor) -> None:
        """Add a chunk's window logits [n,L,*roi], weighted, into stitched_sum [B,L,*P]."""
        for (b, w), window_logits in zip(chunk, logits):
            stitched_sum[(b, slice(None)) + self.windows[w]] += window_logits * self.imp

    def label_seeds(self, labels_of, chunk: list, class_ids: list) -> torch.Tensor:
        """The output cotangents of predicted regions: imp·[label = class k]/den on each window,
        zero on the padding → float [n,K,*roi]. labels_of(b, w): int64 labels [*roi] of a window."""
        cls = torch.tensor(class_ids, device=self.imp.device).view((-1,) + (1,) * len(self.roi))
        seeds = []
        for b, w in chunk:
            weight = self.imp / self.den[self.windows[w]]
            if self.inside is not None:
                weight = weight * self.inside[self.windows[w]]
            seeds.append((labels_of(b, w)[None] == cls) * weight)
        return torch.stack(seeds)


def _argmax(stitched: torch.Tensor, backend: str) -> torch.Tensor:
    """class_argmax of float [B,L,*S] (volumes folded to [B,L,D·H,W]) → int64 [B,*S]."""
    folded = stitched.flatten(2, -2) if stitched.ndim == 5 else stitched
    return kernels.class_argmax(folded.contiguous(), backend).view((stitched.shape[0],) + tuple(stitched.shape[2:]))


def _saved_bytes():
    """(context, sizes): inside the context, sizes maps each storage autograd saves for backward to its bytes."""
    sizes: dict = {}

    def pack(t):
        sizes[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t
    return torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), sizes


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
    B = images.shape[0]
    masks_of = volume_masks if dims == 3 else target_masks
    count = {"window_forwards": 0, "plain_window_forwards": 0, "backward_passes": 0}
    with ModelState(sw):
        win = _Windows(sw, images)
        P = tuple(win.padded.shape[2:])
        # How the targets are known:
        # "given"     masks, Box, Pixel: before any forward;
        # "component" a Component needs the whole stitched prediction: a no-grad pass first;
        # "predicted" the predicted regions are local: a window's targets are final once every window
        #             overlapping it has run, so the windows' graphs wait for their neighbours (no
        #             pre-pass) while that fits max_memory_mb, else a no-grad pass first.
        kind = "predicted" if masks is None else "component" if _needs_prediction(masks) else "given"
        R = labels = stitched_sum = class_ids = None
        if kind == "component":
            with torch.no_grad():
                stitched = sw(images)  # [B,L,*S]
            count["plain_window_forwards"] += B * len(win.windows)
            class_ids = check_classes(classes, stitched.shape[1], explainer.class_names)
            labels = _argmax(stitched, explainer.backend)
            del stitched
        elif kind == "given":
            with torch.no_grad():  # the class count, from one window
                L = sw.run_window(win.padded[(slice(0, 1), slice(None)) + win.windows[0]]).shape[1]
            count["plain_window_forwards"] += 1
            class_ids = check_classes(classes, L, explainer.class_names)
        if kind != "predicted":
            M = masks_of(labels if labels is not None else
                         torch.zeros((B,) + win.spatial, dtype=torch.long, device=images.device), class_ids, masks)
            R = F.pad(M, sw.padding(win.spatial)) / win.den if win.inside is not None else M / win.den  # [B,K,*P]
            del M
        release = win.release_order(B) if kind == "predicted" else None
        padded_labels = None  # predicted regions after a no-grad pass
        blend = None  # Σ_w imp_w·CAM_w [B,K,*P]
        pending = []  # (release chunk, chunk, logits, A, seeds or None): graphs waiting for their targets
        for t, (chunk, inputs) in enumerate(win.batches()):
            seeds = None
            if R is not None:  # targets known: only the windows some target meets need a graph
                seeds = torch.stack([R[(b, slice(None)) + win.windows[w]] for b, w in chunk]) * win.imp  # [n,K,*roi]
                hit = [j for j in range(len(chunk)) if bool(seeds[j].ne(0).any())]
                if kind == "given" and len(hit) < len(chunk):  # the others: only their prediction
                    rest = [j for j in range(len(chunk)) if j not in hit]
                    with torch.no_grad():
                        logits = sw.run_window(inputs[rest])
                    count["plain_window_forwards"] += len(rest)
                    stitched_sum = _stitched_sum(stitched_sum, B, logits, P)
                    win.stitch(stitched_sum, [chunk[j] for j in rest], logits)
                if not hit:
                    continue
                if len(hit) < len(chunk):
                    chunk, inputs, seeds = [chunk[j] for j in hit], inputs[hit], seeds[hit]
            measure, saved = _saved_bytes()
            with LayerLeaf(explainer, leaf=True, ndim=images.ndim) as cap, torch.enable_grad(), measure:
                logits = sw.run_window(inputs)  # [n,L,*roi]
                A = cap.activations()
            if not logits.requires_grad:
                raise ValueError(f"target_layer {explainer.layer_name!r} is not on the path to the model "
                                 "output: no gradient reaches it")
            count["window_forwards"] += len(chunk)
            if kind != "component" and padded_labels is None:
                stitched_sum = _stitched_sum(stitched_sum, B, logits, P)
                win.stitch(stitched_sum, chunk, logits.detach())
            if class_ids is None:
                class_ids = check_classes(classes, logits.shape[1], explainer.class_names)
            if kind == "predicted" and t == 0:
                held = sum(saved.values()) + 4 * (logits.numel() + A.numel())
                if _peak_pending(release) * held > explainer.max_memory_mb * 2**20:
                    with torch.no_grad():  # the graphs would not fit while waiting: the prediction first
                        stitched = sw(images)
                    count["plain_window_forwards"] += B * len(win.windows)
                    pad = sw.padding(win.spatial)
                    padded_labels = F.pad(_argmax(stitched, explainer.backend), pad, value=-1) if any(pad) else \
                        _argmax(stitched, explainer.backend)
                    del stitched
                    labels, stitched_sum = None, None
                    release = list(range(len(release)))
            if blend is None:
                blend = torch.zeros((B, len(class_ids)) + P, device=images.device)
            pending.append((release[t] if release is not None else t, chunk, logits, A, seeds))
            for item in [p for p in pending if p[0] <= t]:
                pending.remove(item)
                _, done, logits, A, seeds = item
                if seeds is None:  # the predicted regions of these windows are final now
                    labels_of = (lambda b, w: padded_labels[(b,) + win.windows[w]]) if padded_labels is not None \
                        else (lambda b, w: _argmax(stitched_sum[(slice(b, b + 1), slice(None)) + win.windows[w]]
                                                   / win.den[win.windows[w]], explainer.backend)[0])
                    seeds = win.label_seeds(labels_of, done, class_ids)
                count["backward_passes"] += _blend_chunk(explainer, win, blend, done, class_ids, logits, A, seeds)
            del logits, A
        maps = sw.crop(blend.div_(win.den), win.spatial)
        if labels is None:  # the stitched prediction: from the window forwards, or the no-grad pass
            labels = sw.crop(_argmax(stitched_sum.div_(win.den), explainer.backend)[:, None], win.spatial)[:, 0] \
                if padded_labels is None else sw.crop(padded_labels[:, None], win.spatial)[:, 0]
        del stitched_sum, R
    K = len(class_ids)
    active = _active(labels, class_ids, masks, masks_of)
    if explainer.normalize:
        flat = maps.flatten(-3, -2) if dims == 3 else maps
        out = flat if flat.is_contiguous() else None
        maps = kernels.normalize_maps(flat.contiguous(), backend=explainer.backend, out=out).view(maps.shape)
    maps = maps.mul_(active.view((B, K) + (1,) * dims))
    info = {"gradient_path": "autograd", "sliding_window": True, "windows": len(win.windows) * B, **count}
    return Explanation(maps=maps, classes=class_ids, labels=labels, active=active, method=spec.name,
                       layer=explainer.layer_name, info=info, class_names=explainer.class_names)


def _stitched_sum(stitched_sum, batch: int, logits: torch.Tensor, padded_spatial: tuple) -> torch.Tensor:
    """The stitched logits' accumulator float [B,L,*P], made on the first window."""
    if stitched_sum is None:
        stitched_sum = torch.zeros((batch, logits.shape[1]) + padded_spatial, device=logits.device, dtype=logits.dtype)
    return stitched_sum


def _active(labels: torch.Tensor, class_ids: list, masks, masks_of) -> torch.Tensor:
    """bool [B,K]: whether class k's target region in image b is non-empty."""
    if masks is None:
        present = torch.stack([torch.bincount(l.flatten(), minlength=max(class_ids) + 1) for l in labels])  # [B,L']
        return present[:, class_ids] > 0
    return masks_of(labels, class_ids, masks).flatten(2).ne(0).any(dim=2)


def _blend_chunk(explainer, win: _Windows, blend: torch.Tensor, chunk: list, class_ids: list,
                 logits: torch.Tensor, A: torch.Tensor, seeds: torch.Tensor) -> int:
    """Add the CAMs of a chunk's windows into blend [B,K,*P]: the VJPs of every class whose target
    meets the chunk (logits [n,L,*roi] on the graph of the leaf A [n,C,*s]; seeds [n,K,*roi]: the
    output cotangent of class class_ids[k]), batched in class chunks under max_memory_mb.
    Returns the number of backward passes."""
    K = seeds.shape[1]
    dims = seeds.ndim - 2
    todo = [k for k in range(K) if bool(seeds[:, k].ne(0).any())]
    per_class = 4 * (logits.numel() + 3 * A.numel())
    step = explainer.class_chunk or max(1, int(explainer.max_memory_mb * 2**20 // per_class))
    passes = 0
    for lo in range(0, len(todo), step):
        ks = todo[lo:lo + step]
        cot = torch.zeros((len(ks),) + tuple(logits.shape), device=logits.device, dtype=logits.dtype)
        for i, k in enumerate(ks):
            cot[i, :, class_ids[k]] = seeds[:, k]
        (G,) = torch.autograd.grad(logits, [A], cot, retain_graph=True, is_grads_batched=True)
        passes += 1
        cams = window_raw_cams(explainer, A.detach(), G.transpose(0, 1), win.roi)  # [n,k,*roi]
        for j, (b, w) in enumerate(chunk):
            hit = seeds[j, ks].flatten(1).ne(0).any(dim=1)  # the classes whose target meets this window
            blend[(b, ks) + win.windows[w]] += cams[j] * hit.view((-1,) + (1,) * dims) * win.imp
    return passes


def _peak_pending(release: list) -> int:
    """The most chunks alive at once when chunk c's graph waits until chunk release[c] has run."""
    alive = [0] * (len(release) + 1)
    for c, r in enumerate(release):  # chunk c is alive from step c to step r
        alive[c] += 1
        alive[r + 1] -= 1
    peak = running = 0
    for delta in alive:
        running += delta
        peak = max(peak, running)
    return peak
