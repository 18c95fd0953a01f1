"""The perturbation family: Score-CAM, Ablation-CAM, RISE and occlusion.

These methods perturb the input (or the target layer) and watch the prediction change. Each
perturbed forward yields the logits of every class at every pixel, so the region scores of all K
explained classes come from the same forwards: one set of perturbed forwards per image, not one
per (image, class) as the peers run them.

- scorecam: the input masked by each channel of A, upsampled (align_corners=True) and min-max
  normalised (eps 1e-8); weights = softmax over channels of the scores; map = Σ_c w_kc·A_c
  (pytorch-grad-cam 1.5.7's ScoreCAM).
- ablationcam: channel c of A replaced by the peer's ablation value; weights (S − S_c)/S
  (pytorch-grad-cam 1.5.7's AblationCAM with every channel ablated).
- rise: N random binary s×s grids (probability p), upsampled bilinearly to (s+1)·cell and
  cropped at random shifts; saliency_k = Σ_i S_ik·mask_i / (N·p) (Petsiuk et al. 2018).
- occlusion: windows spanning all channels replaced by a baseline; a pixel's attribution is the
  mean, over the windows that cover it, of S − S_occluded (captum 0.9's Occlusion).

Scores ("score" option): "logit" S_k = Σ_p M_k(p)·logit_k(p) (the CAM methods' target), read from
the logits before the model's final bilinear upsample against the pulled-back masks Up*(M_k) when
there is one; "probability" (mean softmax probability over the region); "dice" (Dice of the
perturbed and the original class-k prediction inside the region).
"""
from __future__ import annotations

import math
from contextlib import ExitStack
from typing import Optional

import torch
import torch.nn.functional as F

from .. import kernels
from ..kernels import reference
from .capture import ModelState, mixes_samples, select_output, upsampled_module_output
from .checks import check_classes
from .method_maths import ablation_values
from .outputs import Explanation, ForwardPass
from .targets import target_masks

class _LogitsProbe:
    """Finds, during the unperturbed forward, the module whose output z is bilinearly upsampled
    to the logits (the pre-upsample logits), then captures z in the perturbed forwards, so the
    logit scores are read at z's resolution against Up*(M) (as the gradient seeds are). The
    unperturbed forward runs with a graph, and z and the upsample's align_corners are read from it
    (capture.upsampled_module_output), never guessed from values."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.model = model
        self.module = None
        self.upsample = None  # ((h, w), align_corners)
        self.outputs: list = []  # (module, output, its graph node when made) of the unperturbed forward
        self.largest = 0  # elements of the largest module output per image (memory estimate)
        self.z = None

    def find(self, stack: ExitStack) -> None:
        for m in self.model.modules():
            if m is not self.model:
                stack.callback(m.register_forward_hook(self._seen).remove)

    def _seen(self, module, inputs, output) -> None:
        if isinstance(output, torch.Tensor) and output.ndim == 4:
            self.outputs.append((module, output, output.grad_fn))
            self.largest = max(self.largest, output[0].numel())

    def resolve(self, logits: torch.Tensor) -> None:
        outputs, self.outputs = self.outputs, []
        found = upsampled_module_output(logits, outputs)
        if found is not None:
            self.module, z, self.upsample = found
            self.z = z.detach()

    def capture(self, stack: ExitStack) -> None:
        if self.module is not None:
            stack.callback(self.module.register_forward_hook(self._keep).remove)

    def _keep(self, module, inputs, output) -> None:
        self.z = output


class TorchForwards:
    """The forwards of a PyTorch explainer's model: the unperturbed one (target-layer activations,
    logits, and the pre-upsample logits z the probe finds) and the perturbed ones."""

    runtime = "torch"

    def __init__(self, ex) -> None:
        self.ex = ex
        self.probe = _LogitsProbe(ex.model)
        # a model whose samples share batch statistics runs one sample per forward: each perturbed
        # copy, and each original image, is then explained as itself
        self.one_by_one = mixes_samples(ex.model)
        self.shares_prefix: Optional[bool] = None  # may layer replacements run the prefix once? (checked once)

    def state(self):
        return ModelState(self.ex.model)

    @property
    def upsample(self):
        """((h', w'), align_corners) of the model's final bilinear upsample, or None."""
        return self.probe.upsample

    def outputs(self, images: torch.Tensor, head=None, labels: bool = True) -> ForwardPass:
        """One no-grad forward of checked images → ForwardPass (activations, logits, labels, head)."""
        return self.ex.plain_forward(images, head, labels)

    def closed_form_outputs(self, images: torch.Tensor, find: bool = False, labels: bool = True) -> Optional[ForwardPass]:
        """One no-grad forward with the verified linear head for this input shape, or None when there
        is none, it is not known yet (find=True: found first, by one explanation of one image) or
        raw maps are asked for (they come from the autograd path)."""
        ex = self.ex
        if not ex.normalize:
            return None
        head = ex.linear_head(images) if find else ex.cached_head(tuple(images.shape[1:]))
        return None if head is None else ex.plain_forward(images, head, labels)

    def autograd(self, images: torch.Tensor, classes, masks, resolution: str) -> Explanation:
        """The gradient path: one forward with the graph above the target layer and the class VJPs."""
        return self.ex.autograd_explain(images, classes, masks, resolution)

    def sample_elements(self, images: torch.Tensor, logits: torch.Tensor) -> int:
        """Elements per perturbed sample of a forward's largest live tensors (memory estimate)."""
        return 3 * self.probe.largest

    def original(self, images: torch.Tensor, need_layer: bool) -> tuple:
        """The unperturbed forward of images float [B,3,H,W] → (A [B,C,h,w] or None, logits
        [B,L,H,W], z [B,L,h',w'] or None)."""
        ex = self.ex
        if self.one_by_one and images.shape[0] > 1:
            parts = [self.original(image[None], need_layer) for image in images]
            return _joined(parts)
        with ExitStack() as stack, torch.enable_grad():  # a graph, from which the probe reads the upsample
            cap = stack.enter_context(ex.capture()) if need_layer else None
            self.probe.find(stack)
            logits = select_output(ex.model(images.detach().requires_grad_(True)), ex.output_key, images.shape[0])
            A = cap.activations() if cap is not None else None
            self.probe.resolve(logits)
        z, self.probe.z = self.probe.z, None
        return A, logits.detach(), z

    def perturbed(self, inputs: torch.Tensor, layer_output=None, batch: Optional[int] = None) -> tuple:
        """A forward of inputs float [n,3,H,W] → (logits [m,L,H,W], z or None); layer_output: a
        function (the target layer's output → its replacement of `batch` = m samples, default n)
        hooked on the layer."""
        ex = self.ex
        n = batch or inputs.shape[0]
        if self.one_by_one and n > 1:
            parts = [self.perturbed(inputs[i:i + 1] if inputs.shape[0] == n else inputs,
                                    None if layer_output is None else (lambda out, i=i: layer_output(out)[i:i + 1]), 1)
                     for i in range(n)]
            return _joined(parts)
        with ExitStack() as stack, torch.no_grad():
            self.probe.capture(stack)
            if layer_output is not None:
                stack.callback(_replace_layer(ex, layer_output).remove)
            logits = select_output(ex.model(inputs), ex.output_key, batch or inputs.shape[0])
            z, self.probe.z = self.probe.z, None
        return logits, z

    def layer_batch(self, image: torch.Tensor, replacement, n: int, reference_logits: torch.Tensor) -> tuple:
        """n forwards of image float [1,3,H,W] whose target-layer output is replaced(output) [n,C,h,w].

        What precedes the layer does not depend on the replacement, so it runs once for the batch,
        with batch 1: modules after the layer then see n samples, and the batch-1 tensors they meet
        from before it (skip connections) broadcast. Whether the model allows that (no concatenation
        across the two, no reshape by the input's batch size) is checked once per call: two copies
        of the unchanged activations must give the original logits `reference_logits` [1,L,H,W];
        otherwise the image is repeated n times, as the peers do. (A TorchForwards serves one call.)
        """
        if self.shares_prefix is None:
            self.shares_prefix = self._prefix_works(image, reference_logits)
        if self.shares_prefix:
            return self.perturbed(image, replacement, n)
        return self.perturbed(image.expand(n, -1, -1, -1), replacement)

    def _prefix_works(self, image, reference_logits) -> bool:
        try:
            logits, _ = self.perturbed(image, lambda output: torch.cat([output, output]), 2)
        except (RuntimeError, ValueError):  # e.g. concatenating batch-1 and batch-2 tensors, or logits of batch 1
            return False
        return (logits.shape == (2,) + reference_logits.shape[1:]
                and bool(torch.allclose(logits, reference_logits.expand_as(logits), rtol=1e-4, atol=1e-5)))


def _joined(parts: list) -> tuple:
    """One-sample forwards' result tuples → one tuple, each element concatenated along the batch
    (None where the forwards return None)."""
    return tuple(None if p[0] is None else torch.cat(p) for p in zip(*parts))


def _replace_layer(ex, fn):
    """A hook giving the target layer's output (or its input, for InputOf) as fn(original)."""
    if ex.use_input:
        return ex.target_layer.register_forward_pre_hook(lambda m, inputs: (fn(inputs[0]),) + tuple(inputs[1:]))
    return ex.target_layer.register_forward_hook(lambda m, inputs, output: fn(output))


class PerturbationRun:
    """One call's state: the forwards, the targets, the scoring of perturbed outputs and the
    count of perturbed samples. `settings` is the explainer (method, options, backend, normalize,
    max_memory_mb, class_names)."""

    def __init__(self, settings, forwards, images: torch.Tensor) -> None:
        self.settings, self.forwards, self.images = settings, forwards, images
        self.opts, self.backend = settings.options, settings.backend
        self.count = 0

    def original(self, classes, masks):
        """The unperturbed forward: activations (layer methods), logits, the masks M [B,K,H,W],
        and what the scores of image b are read against."""
        images = self.images
        A, logits, z = self.forwards.original(images, self.settings.spec.needs_layer)
        class_ids = check_classes(classes, logits.shape[1], getattr(self.settings, "class_names", None))
        labels = kernels.class_argmax(logits, self.backend)
        M = target_masks(labels, class_ids, masks)  # [B,K,H,W]
        self.class_ids, self.labels, self.logits = class_ids, labels, logits
        self.per_sample = 3 * images[0].numel() + 2 * logits[0].numel() + self.forwards.sample_elements(images, logits)
        self.from_z = self.opts["score"] == "logit" and self.forwards.upsample is not None and z is not None
        if self.from_z:
            low, align = self.forwards.upsample
            self.read_masks = kernels.mask_seeds(M, low, align, backend=self.backend)  # [B,K,h',w']
        else:
            self.read_masks = M
        self.original_scores = torch.cat([self.scores_of(b, logits[b:b + 1], None if z is None else z[b:b + 1])
                                          for b in range(images.shape[0])])  # [B,K]
        active = M.flatten(2).ne(0).any(dim=2)  # [B,K]
        return A, logits, active

    def scores_of(self, b: int, logits: torch.Tensor, z: Optional[torch.Tensor]) -> torch.Tensor:
        """Scores float32 [n,K] of image b's perturbed outputs (logits [n,L,H,W], z [n,L,h',w'])."""
        source = z if self.from_z else logits
        return kernels.region_scores(source, self.read_masks[b], self.class_ids, self.opts["score"],
                                     self.labels[b] if self.opts["score"] == "dice" else None,
                                     backend=self.backend)

    def score(self, b: int, inputs: torch.Tensor) -> torch.Tensor:
        """The forward of perturbed `inputs` float [n,3,H,W] of image b → scores float32 [n,K]."""
        logits, z = self.forwards.perturbed(inputs)
        self.count += inputs.shape[0]
        return self.scores_of(b, logits, z)

    def score_layer(self, b: int, replacement, n: int) -> torch.Tensor:
        """n forwards of image b with the target layer's output replaced → scores float32 [n,K]."""
        logits, z = self.forwards.layer_batch(self.images[b:b + 1], replacement, n, self.logits[b:b + 1])
        self.count += n
        return self.scores_of(b, logits, z)

    def chunk(self) -> int:
        """Perturbed samples per forward: batch_size, fewer when max_memory_mb asks. Per sample: the
        input, the logits and a softmax temporary, and the runtime's estimate of a forward's live
        tensors (a stated estimate, not a measurement)."""
        budget = self.settings.max_memory_mb * 2**20
        return max(1, min(self.opts["batch_size"], int(budget // (4 * self.per_sample))))


def explain_perturbation(settings, forwards, images: torch.Tensor, classes, masks, resolution: str) -> Explanation:
    """The perturbation methods on checked images float [B,3,H,W]: `settings` is the explainer
    (spec, options, backend, normalize, max_memory_mb, layer_name, class_names), `forwards` its
    runtime's forwards (TorchForwards, or ONNX Runtime's). The spec's `perturb` step gives channel
    weights [B,K,C] from (run, A) for a layer method, raw maps [B,K,H,W] from (run, None) for an
    input method."""
    spec = settings.spec
    if resolution == "layer" and not spec.needs_layer:
        raise ValueError(f"resolution='layer' needs a target layer; method {spec.name!r} works in input space: "
                         "use resolution='full'")
    run = PerturbationRun(settings, forwards, images)
    with forwards.state():
        A, logits, active = run.original(classes, masks)
        if spec.needs_layer:
            weights = spec.perturb(run, A)  # [B,K,C]
            size = tuple(logits.shape[-2:]) if resolution == "full" else None
            maps = _weighted_maps(A, weights, size, settings.normalize, settings.backend)
        else:
            raw = spec.perturb(run, None)  # [B,K,H,W], signed
            maps = kernels.normalize_maps(raw, backend=settings.backend) if settings.normalize else raw
    maps = maps * active[:, :, None, None]  # an empty region explains nothing: exact zeros
    info = {"gradient_path": "none", "backward_passes": 0, "perturbed_forwards": run.count, "batch": run.chunk(),
            "score": settings.options["score"],
            "score_from": "logits before upsample" if run.from_z else "model output"}
    return Explanation(maps=maps, classes=run.class_ids, labels=run.labels, active=active, method=spec.name,
                       layer=settings.layer_name if spec.needs_layer else "input", info=info,
                       class_names=getattr(settings, "class_names", None))


def _weighted_maps(A, weights, size, normalize: bool, backend: str) -> torch.Tensor:
    """Σ_c w_kc·A_c for A [B,C,h,w], weights [B,K,C] → [B,K,H,W] ((H, W) = size, None: (h, w)):
    the gradient path's post-processing when normalize, else the signed sum bilinearly resized."""
    if not normalize:
        raw = reference.weighted_combine(A, weights)
        return raw if size is None else reference.resize_bilinear(raw, size)
    maps = kernels.weighted_cam(A, weights, backend=backend)
    return maps if size is None else kernels.resize_normalize(maps, size, backend=backend)


def scorecam_weights(run: PerturbationRun, A: torch.Tensor) -> torch.Tensor:
    """Score-CAM's weights float32 [B,K,C]: the softmax over channels of the scores of the image
    masked by each channel's normalised, upsampled activation (A [B,C,h,w])."""
    B, C = A.shape[:2]
    chunk = run.chunk()
    scores = torch.empty(B, C, len(run.class_ids), device=A.device)
    for b in range(B):
        for lo in range(0, C, chunk):
            inputs = kernels.scorecam_inputs(run.images[b], A[b, lo:lo + chunk], backend=run.backend)
            scores[b, lo:lo + chunk] = run.score(b, inputs)
    return torch.softmax(scores, dim=1).transpose(1, 2).contiguous()  # softmax over channels → [B,K,C]


def ablationcam_weights(run: PerturbationRun, A: torch.Tensor) -> torch.Tensor:
    """Ablation-CAM's weights float32 [B,K,C]: the relative drop (S − S_c)/S of each class's score
    when channel c of A [B,C,h,w] is ablated."""
    B, C = A.shape[:2]
    batch = run.opts["batch_size"]  # the ablation value depends on a channel's place in the peer's batch
    chunk = run.chunk()
    scores = torch.empty(B, C, len(run.class_ids), device=A.device)
    for b in range(B):
        values = ablation_values(float(A[b].min()), batch).to(A.device)
        for lo in range(0, C, chunk):
            ids = torch.arange(lo, min(lo + chunk, C), device=A.device)

            def ablate(output, ids=ids, b=b):
                out = A[b].expand(len(ids), *A.shape[1:]).clone()
                out[torch.arange(len(ids)), ids] = values[ids % batch][:, None, None].to(out.dtype)
                return out

            scores[b, lo:lo + chunk] = run.score_layer(b, ablate, len(ids))
    S = run.original_scores[:, None, :]  # [B,1,K]
    weights = torch.where(S != 0, (S - scores) / torch.where(S != 0, S, 1), torch.zeros_like(scores))
    return weights.transpose(1, 2).contiguous()


def rise_grids(n: int, grid: int, p: float, seed: int, size: tuple) -> tuple:
    """RISE's N binary grids float32 [N,s,s] (1 with probability p) and shifts int64 [N,2] in the
    cell, from a CPU generator seeded with `seed` (the same masks on every device)."""
    g = torch.Generator().manual_seed(seed)
    grids = (torch.rand(n, grid, grid, generator=g) < p).float()
    ch, cw = reference.rise_cell(size, grid)
    shifts = torch.stack([torch.randint(0, ch, (n,), generator=g), torch.randint(0, cw, (n,), generator=g)], dim=1)
    return grids, shifts


def rise_maps(run: PerturbationRun, A=None) -> torch.Tensor:
    """RISE's raw maps float32 [B,K,H,W]: random smooth masks weighted by their scores (A unused)."""
    o = run.opts
    images = run.images
    B, _, H, W = images.shape
    grids, shifts = rise_grids(o["n_masks"], o["grid"], o["p"], o["seed"], (H, W))
    grids, shifts = grids.to(images.device), shifts.to(images.device)
    chunk = run.chunk()
    out = torch.empty(B, len(run.class_ids), H, W, device=images.device)
    for b in range(B):
        scores = torch.empty(o["n_masks"], len(run.class_ids), device=images.device)
        for lo in range(0, o["n_masks"], chunk):
            inputs = kernels.rise_inputs(images[b], grids[lo:lo + chunk], shifts[lo:lo + chunk], backend=run.backend)
            scores[lo:lo + chunk] = run.score(b, inputs)
        kernels.rise_accumulate(scores, grids, shifts, (H, W), backend=run.backend, out=out[b])
    return out.div_(o["n_masks"] * o["p"])


def occlusion_windows(size: tuple, window: tuple, stride: tuple) -> list:
    """captum's window positions: along each axis ceil((n − w)/s) + 1 starts i·s, each window
    clipped to the image. → [(y0, y1, x0, x1)] in captum's order (x fastest)."""
    for key, value in (("window", window), ("stride", stride)):
        if len(value) != 2:
            raise ValueError(f"option {key!r} {tuple(value)} has {len(value)} axes; images [B,C,H,W] take an int or a "
                             "pair (h, w)")
    axes = []
    for n, w, s in zip(size, window, stride):
        if w > n:
            raise ValueError(f"option 'window' {tuple(window)} is larger than the {size[0]}×{size[1]} image")
        axes.append([(i * s, min(i * s + w, n)) for i in range(-(-(n - w) // s) + 1)])
    return [(y0, y1, x0, x1) for (y0, y1) in axes[0] for (x0, x1) in axes[1]]


def occlusion_baseline(image: torch.Tensor, baseline, window: tuple) -> torch.Tensor:
    """The occluding values float [3,H,W] for image float [3,H,W]: a constant, the per-channel
    mean ("mean"), or a Gaussian blur with σ = window/4 per axis ("blur", reflect padding)."""
    if baseline == "mean":
        return image.mean(dim=(1, 2), keepdim=True).expand_as(image)
    if baseline == "blur":
        out = image[None]
        for axis, w in ((2, window[0]), (3, window[1])):
            sigma = max(w / 4.0, 0.5)
            r = max(1, min(int(math.ceil(3 * sigma)), image.shape[axis - 1] - 1))
            t = torch.arange(-r, r + 1, dtype=image.dtype, device=image.device)
            k = torch.exp(-0.5 * (t / sigma) ** 2)
            k = (k / k.sum()).view(1, 1, -1, 1) if axis == 2 else (k / k.sum()).view(1, 1, 1, -1)
            pad = (0, 0, r, r) if axis == 2 else (r, r, 0, 0)
            out = F.conv2d(F.pad(out, pad, mode="reflect"), k.expand(3, 1, *k.shape[2:]), groups=3)
        return out[0]
    return torch.full_like(image, float(baseline))


def occlusion_maps(run: PerturbationRun, A=None) -> torch.Tensor:
    """Occlusion's raw maps float32 [B,K,H,W]: the mean score drop of the windows covering each
    pixel (A unused)."""
    o = run.opts
    images = run.images
    B, _, H, W = images.shape
    windows = occlusion_windows((H, W), o["window"], o["stride"])
    chunk = run.chunk()
    K = len(run.class_ids)
    out = torch.zeros(B, K, H, W, device=images.device)
    count = torch.zeros(H, W, device=images.device)
    for (y0, y1, x0, x1) in windows:
        count[y0:y1, x0:x1] += 1
    for b in range(B):
        base = occlusion_baseline(images[b], o["baseline"], o["window"])
        for lo in range(0, len(windows), chunk):
            part = windows[lo:lo + chunk]
            inputs = images[b:b + 1].repeat(len(part), 1, 1, 1)
            for i, (y0, y1, x0, x1) in enumerate(part):
                inputs[i, :, y0:y1, x0:x1] = base[:, y0:y1, x0:x1]
            drop = run.original_scores[b] - run.score(b, inputs)  # [n,K]
            for i, (y0, y1, x0, x1) in enumerate(part):
                out[b, :, y0:y1, x0:x1] += drop[i, :, None, None]
    return out.div_(count)


__all__ = ["PerturbationRun", "TorchForwards", "ablationcam_weights", "explain_perturbation", "occlusion_baseline",
           "occlusion_maps", "occlusion_windows", "rise_grids", "rise_maps", "scorecam_weights"]
