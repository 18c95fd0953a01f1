"""The attribution family: gradients of every class's target with respect to the input image.

Saliency, Input×Gradient, Integrated Gradients and SmoothGrad (captum 0.9's Saliency,
InputXGradient, IntegratedGradients and NoiseTunnel) and the methods that change how the
gradient flows back (guided backpropagation, deconvolution; engine/backward_rules.py) are one
computation, described by each method's `Plan` (the spec's `attribute(options)`):

    a_t = f(m_t ⊙ Σ_s w_s·∂S_k/∂x (x̃_ts)),   x̃_ts = b + α_s·(x_t − b),   x_t = x + ε_t

with the path points α_s and quadrature weights w_s (IG: captum's; one point α = 1, w = 1
otherwise), the multiplier m_t = x_t − b (IG, Input×Gradient with b = 0) or 1, f = |·|
(saliency's abs) or the identity, and T noise samples ε_t (SmoothGrad) aggregated as captum's
NoiseTunnel: the mean of a_t, of a_t², or their variance. S_k is class k's Seg-Grad-CAM target
(its logits summed over its target region, engine/targets.py), always the region of the clean
image's prediction.

Every class comes from the same forwards: the T·S inputs x̃_ts of the B images are stacked
(T·S·B rows, `batch_size` rows per forward) and each forward's graph is pulled back once per class
(the class VJPs of engine/gradients.py, in class chunks under max_memory_mb), starting below the
model's final bilinear upsample when there is one (the seeds pulled back, as for the CAMs). The
weighted sums over steps and samples are the fused kernel kernels.attribution_accumulate; the
channel reduction of the maps is kernels.attribution_maps.

Results: attributions float32 [B,K,C,*spatial] (raw, signed, captum's values) and maps [B,K,*spatial]
= Σ_c attributions (captum's visualize_image_attr sums the channels too), then ReLU + per-map min-max
unless normalize=False. 2-D images [B,C,H,W] and 3-D volumes [B,C,D,H,W].
"""
from __future__ import annotations

import math
from contextlib import ExitStack, nullcontext
from dataclasses import dataclass
from typing import Callable, Optional

import torch

from .. import kernels
from .capture import ModelState, select_output, upsampled_module_output
from .checks import check_classes, check_masks, describe
from .gradients import chunked_vjps
from .outputs import Explanation, labels_and_seeds

#: captum's integration methods (captum.attr._utils.approximation_methods).
INTEGRATION_METHODS = ("gausslegendre", "riemann_left", "riemann_right", "riemann_middle", "riemann_trapezoid")
#: captum's NoiseTunnel types and what each aggregates over the samples: the mean of the
#: attributions, the mean of their squares, or their variance (mean of squares − square of mean).
NT_AGGREGATES = {"smoothgrad": "mean", "smoothgrad_sq": "square", "vargrad": "variance"}
NT_TYPES = tuple(NT_AGGREGATES)
#: "blur" baseline: σ = 4 px, as the segment attributions' (occlusion_baseline of a 16-px window).
BLUR_SIGMA = 4.0


@dataclass(frozen=True)
class Noise:
    """SmoothGrad's noise (captum's NoiseTunnel): `samples` draws of N(0, stdevs²) per image;
    aggregate: "mean", "square" or "variance" (NT_AGGREGATES)."""

    aggregate: str
    samples: int
    stdevs: float
    seed: int


@dataclass(frozen=True)
class Plan:
    """What an attribution method computes (see the module docstring).

    alphas, weights: the path points α_s and quadrature weights w_s; multiply: m_t = x_t − b;
    baseline: b (a float, "mean", "blur" or a tensor) when multiply; abs: f = |·|; noise: None or
    Noise; rules(model) -> context manager: backward rules changed inside (None: plain gradients);
    times_output: class k's cotangent is M_k ⊙ logit_k (LRP's initial relevance: the target's
    output) instead of M_k; one clean input only (no path, no noise); paired: all the path's inputs
    in one forward, whatever batch_size (DeepLIFT's inputs and baselines, which its rules pair).
    """

    alphas: tuple = (1.0,)
    weights: tuple = (1.0,)
    multiply: bool = False
    baseline: object = 0.0
    abs: bool = False
    noise: Optional[Noise] = None
    rules: Optional[Callable] = None
    times_output: bool = False
    paired: bool = False


def integration_points(scheme: str, n_steps: int) -> tuple:
    """(alphas, weights) of captum's integration scheme (option 'method') with n_steps points."""
    if scheme == "gausslegendre":
        import numpy as np

        x, w = np.polynomial.legendre.leggauss(n_steps)
        return tuple((0.5 * (1 + x)).tolist()), tuple((0.5 * w).tolist())
    if n_steps < 2:
        raise ValueError(f"option 'n_steps' must be ≥ 2 for method {scheme!r} (a Riemann sum needs two points), "
                         f"got {n_steps}")
    n = n_steps
    weights = [1 / n] * n
    kind = scheme.split("_")[-1]
    if kind == "trapezoid":
        weights[0] /= 2
        weights[-1] /= 2
        alphas = torch.linspace(0, 1, n)
    elif kind == "left":
        alphas = torch.linspace(0, 1 - 1 / n, n)
    elif kind == "middle":
        alphas = torch.linspace(1 / (2 * n), 1 - 1 / (2 * n), n)
    else:
        alphas = torch.linspace(1 / n, 1, n)
    return tuple(alphas.tolist()), tuple(weights)


# --- the options' checks (spec.checks): each error names the option, what was expected and what came


def check_attr_baseline(key, value):
    """A finite float, "mean", "blur" or a finite float tensor [C,*spatial] or [B,C,*spatial]
    (its shape is checked against the images when called)."""
    if isinstance(value, torch.Tensor):
        if not value.is_floating_point():
            raise TypeError(f"option {key!r} must be a float tensor [C,*spatial] or [B,C,*spatial], got {describe(value)}")
        if not bool(torch.isfinite(value).all()):
            raise ValueError(f"option {key!r} must be finite, got a {describe(value)} holding NaN or Inf")
        return value
    if isinstance(value, str) and value in ("mean", "blur"):
        return value
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
        raise TypeError(f"option {key!r} must be a finite float, 'mean', 'blur' or a float tensor [C,*spatial], "
                        f"got {value!r}")
    return float(value)


def check_stdevs(key, value):
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value) or value < 0:
        raise ValueError(f"option {key!r} must be a finite float ≥ 0 (the noise's standard deviation), got {value!r}")
    return float(value)


def check_count(what: str) -> Callable:
    def check(key, value):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"option {key!r} must be an int ≥ 1 ({what}), got {value!r}")
        return value
    return check


def check_choice(choices: tuple, what: str) -> Callable:
    def check(key, value):
        if value not in choices:
            raise ValueError(f"option {key!r} must be one of {list(choices)} ({what}), got {value!r}")
        return value
    return check


def check_positive(key, value):
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"option {key!r} must be a finite float > 0, got {value!r}")
    return float(value)


def check_float(key, value):
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
        raise TypeError(f"option {key!r} must be a finite float, got {value!r}")
    return float(value)


def check_flag(key, value):
    if not isinstance(value, bool):
        raise TypeError(f"option {key!r} must be True or False, got {value!r}")
    return value


# --- the runner


def explain_attributions(explainer, forwards, images: torch.Tensor, classes, masks, resolution: str) -> Explanation:
    """The attribution family's runner on checked `images` float [B,C,*spatial] (PyTorch runtime)."""
    spec = explainer.spec
    if resolution != "full":
        raise ValueError(f"resolution must be 'full' for method {spec.name!r}, which works on the input, "
                         f"got {resolution!r}")
    if torch.is_inference_mode_enabled():
        raise RuntimeError(f"method {spec.name!r} needs gradients, which torch.inference_mode() forbids: call the "
                           "explainer outside torch.inference_mode()")
    run = attribute(explainer, spec.attribute(explainer.options), images, classes, masks)
    return explanation(explainer, run, run.attributions)


def attribute(explainer, plan: Plan, images: torch.Tensor, classes, masks) -> "_Run":
    """The run of `plan` on checked images (its attributions float32 [B,K,C,*spatial] in .attributions),
    the model in eval mode with frozen parameters and the plan's backward rules meanwhile."""
    model = explainer.model
    with ModelState(model), (plan.rules(model) if plan.rules is not None else nullcontext()):
        run = _Run(explainer, plan, images)
        run.targets(classes, masks)
        run.attributions = run.attribute()
    return run


def explanation(explainer, run: "_Run", attributions: torch.Tensor) -> Explanation:
    """The Explanation of a run's `attributions` float32 [B,K,C,*spatial]: maps as the module docstring says."""
    spec = explainer.spec
    B, K = run.active.shape
    maps = kernels.attribution_maps(attributions, normalize=explainer.normalize, backend=explainer.backend)
    maps = maps * run.active.view(B, K, *([1] * (maps.ndim - 2)))
    res = Explanation(maps=maps, classes=run.class_ids, labels=run.labels, active=run.active, method=spec.name,
                      layer="input", info={"gradient_path": "autograd", "backward_start": run.start_name,
                                           "backward_passes": run.passes, "forwards": run.forwards,
                                           "inputs": run.T * run.S * run.B},
                      class_names=explainer.class_names, attributions=attributions)
    return res


class _Run:
    """One call: the images, the plan, the targets and the forwards over the stacked inputs."""

    def __init__(self, explainer, plan: Plan, images: torch.Tensor) -> None:
        self.ex, self.plan, self.x = explainer, plan, images.detach()
        self.B, self.C = images.shape[:2]
        self.spatial = tuple(images.shape[2:])
        self.volumes = images.ndim == 5
        self.base = baseline_of(self.x, plan.baseline) if plan.multiply else None
        noise = plan.noise
        self.T = noise.samples if noise is not None else 1
        self.S = len(plan.alphas)
        self.upsample = None
        # the targets' forward of the clean images is the first input of a plain gradient (one
        # point α = 1, no noise): its graph serves the first VJPs instead of a second forward
        self.clean = None
        self.reuse = noise is None and plan.alphas == (1.0,) and (not plan.multiply or (isinstance(plan.baseline, float) and plan.baseline == 0.0))
        self.start_name = "model output"
        self.passes = 0
        self.forwards = 0

    # targets: the clean images' prediction and regions

    def _logits(self, inputs: torch.Tensor, outputs: Optional[list] = None) -> torch.Tensor:
        """A forward of `inputs`; outputs: a list that collects the modules' 4-D outputs on the graph
        (the candidates for the logits before the final upsample)."""
        with ExitStack() as stack:
            if outputs is not None and not self.volumes:
                def seen(module, args, output):
                    if isinstance(output, torch.Tensor) and output.ndim == 4 and output.requires_grad:
                        outputs.append((module, output, output.grad_fn))
                for m in self.ex.model.modules():
                    if m is not self.ex.model:
                        stack.callback(m.register_forward_hook(seen).remove)
            self.forwards += 1
            return select_output(self.ex.model(inputs), self.ex.output_key, inputs.shape[0], inputs.ndim)

    def targets(self, classes, masks) -> None:
        """Labels [B,*spatial], class ids, the targets' seeds at the backward start and active [B,K]."""
        with torch.enable_grad():  # a graph, from which the final upsample is read
            outputs: list = []
            leaf = self.x.clone().requires_grad_(True)
            logits = self._logits(leaf, outputs)
            found = upsampled_module_output(logits, outputs) if not (self.volumes or self.plan.times_output) else None
        if self.reuse:
            self.clean = (leaf, logits if found is None else found[1])
        if tuple(logits.shape[2:]) != self.spatial:
            raise ValueError(f"the model's output {list(logits.shape)} must have the input's spatial size "
                             f"{list(self.spatial)} (a segmentation model), for the targets to be pixels of the input")
        self.num_classes = logits.shape[1]
        self.class_ids = check_classes(classes, self.num_classes, self.ex.class_names)
        logits = logits.detach()
        if found is not None:
            self.upsample = found[2]
            self.start_name = "logits before upsample"
        if self.volumes:
            self.labels = logits.argmax(dim=1)
            K = len(self.class_ids)
            if masks is None:
                ids = torch.as_tensor(self.class_ids, device=logits.device).view(1, K, *([1] * len(self.spatial)))
                self.seeds = (self.labels.unsqueeze(1) == ids).float()
            elif isinstance(masks, torch.Tensor):
                self.seeds = check_masks(masks, (self.B, K) + self.spatial).to(logits.device)
            else:
                raise ValueError("masks for 3-D volumes must be None (the predicted regions) or a float Tensor "
                                 f"[B,K,D,H,W] = {[self.B, K, *self.spatial]}; Box/Pixel/Component are 2-D regions, "
                                 f"got {type(masks).__name__}")
        else:
            self.labels, self.seeds = labels_and_seeds(logits, None, self.class_ids, masks, self.upsample,
                                                       self.ex.backend)
        self.active = self.seeds.flatten(2).ne(0).any(dim=2)  # [B,K]
        if self.plan.times_output:  # R_k = M_k ⊙ logit_k, at the output itself (no upsample found)
            if not self.reuse:
                raise ValueError("times_output needs one clean input (no path steps, no noise)")
            self.seeds = self.seeds * logits[:, self.class_ids]

    # the stacked inputs

    def noisy(self) -> Optional[torch.Tensor]:
        """ε float [B,T,C,*spatial]: N(0, stdevs²) from a CPU generator seeded with `seed`, drawn
        as captum's NoiseTunnel draws it (one torch.normal of shape [B·T,C,*spatial], rows b·T + t):
        captum after torch.manual_seed(seed) adds the same noise."""
        noise = self.plan.noise
        if noise is None:
            return None
        g = torch.Generator().manual_seed(noise.seed)
        std = torch.tensor(noise.stdevs).repeat((self.B * self.T, self.C) + self.spatial)
        eps = torch.normal(0, std, generator=g)
        return eps.view(self.B, self.T, self.C, *self.spatial).to(self.x)

    def group_input(self, g: int, eps) -> tuple:
        """(x̃ float [B,C,*spatial], m float [B,C,*spatial] or None) of group g = t·S + s."""
        t, s = divmod(g, self.S)
        xt = self.x if eps is None else self.x + eps[:, t]
        if self.base is None:
            return xt, None
        alpha = self.plan.alphas[s]
        return self.base + alpha * (xt - self.base), xt - self.base

    def chunks(self) -> list:
        """The groups (g0, g1) of each forward: `batch_size` rows at most (one group at least);
        when a sample's attribution is not linear in its steps' gradients (|·| or a square of a
        multi-step sum) a chunk never spans two samples."""
        if self.plan.paired:
            return [(0, self.T * self.S)]
        per = max(1, self.ex.options.get("batch_size", 32) // self.B)
        split = self.S > 1 and self.needs_sample_sum
        out = []
        for lo_t in range(0, self.T * self.S, self.S if split else self.T * self.S):
            hi_t = lo_t + (self.S if split else self.T * self.S)
            out += [(g, min(g + per, hi_t)) for g in range(lo_t, hi_t, per)]
        return out

    @property
    def needs_sample_sum(self) -> bool:
        noise = self.plan.noise
        return self.plan.abs or (noise is not None and noise.aggregate != "mean")

    def attribute(self) -> torch.Tensor:
        """The attributions float32 [B,K,C,*spatial]."""
        K = len(self.class_ids)
        R = self.B * self.C * math.prod(self.spatial)
        square = self.plan.noise is not None and self.plan.noise.aggregate != "mean"
        total = torch.zeros(K, R, device=self.x.device)
        total_sq = torch.zeros(K, R, device=self.x.device) if square else None
        per_sample = self.S > 1 and self.needs_sample_sum  # Σ_s first, f and the square per sample after
        partial = torch.zeros(K, R, device=self.x.device) if per_sample else None
        eps = self.noisy()
        weights = torch.tensor(self.plan.weights, dtype=torch.float32, device=self.x.device)
        backend = self.ex.backend
        for g0, g1 in self.chunks():
            inputs, mults = zip(*(self.group_input(g, eps) for g in range(g0, g1)))
            n = g1 - g0
            leaf = torch.cat(inputs).detach().requires_grad_(True)  # [n·B,C,*spatial], group-major
            mult = None if mults[0] is None else torch.stack(mults).reshape(n, R).float()
            if self.clean is not None and (g0, g1) == (0, 1):
                (leaf, start), self.clean = self.clean, None
            else:
                leaf, start = self._start(leaf)
            seeds = self.seeds.repeat(n, *([1] * (self.seeds.ndim - 1)))
            active = self.active.repeat(n, 1)
            w = weights[[g % self.S for g in range(g0, g1)]]
            for ks, (G,) in chunked_vjps(start, [leaf], seeds, self.class_ids, active, self._class_chunk(n),
                                         self.ex.vjp == "batched"):
                if G is None:
                    continue  # no class reaches the input: zero attributions
                if not bool(torch.isfinite(G).all()):
                    raise FloatingPointError(f"input gradients contain NaN or Inf (classes "
                                             f"{[self.class_ids[k] for k in ks]})")
                rows = torch.as_tensor(ks, dtype=torch.int64, device=G.device)
                G = G.reshape(len(ks), n, R).float()
                self.passes += len(ks)
                if per_sample:  # Σ_s w_s·g of this sample so far
                    kernels.attribution_accumulate(G, w, None, rows, partial, backend=backend)
                else:
                    kernels.attribution_accumulate(G, w, mult, rows, total, total_sq, abs=self.plan.abs,
                                                   backend=backend)
            if per_sample and g1 % self.S == 0:  # the sample is complete: f(m ⊙ Σ_s) and its square
                _, m = self.group_input(g1 - 1, eps)
                m = None if m is None else m.reshape(1, R).float()
                rows = torch.arange(K, device=self.x.device)
                one = torch.ones(1, device=self.x.device)
                kernels.attribution_accumulate(partial.view(K, 1, R), one, m, rows, total, total_sq,
                                               abs=self.plan.abs, backend=backend)
                partial.zero_()
        mean = total / self.T
        if square:
            mean_sq = total_sq / self.T
            mean = mean_sq if self.plan.noise.aggregate == "square" else mean_sq - mean * mean
        return mean.view(K, self.B, self.C, *self.spatial).transpose(0, 1).contiguous()

    def _start(self, leaf: torch.Tensor) -> tuple:
        """(leaf, where its VJPs start): a forward of the stacked inputs `leaf` with a graph."""
        with torch.enable_grad():
            outputs: list = []
            logits = self._logits(leaf, outputs)
            if self.upsample is None:
                return leaf, logits
            found = upsampled_module_output(logits, outputs)
            if found is None or found[2] != self.upsample:
                raise RuntimeError("the model's final upsample changed between forwards of one call")
            return leaf, found[1]

    def _class_chunk(self, groups: int) -> int:
        """Classes per VJP chunk: the fixed class_chunk, else as many as fit max_memory_mb (per
        class its input gradient over the chunk's rows and about twice that in temporaries)."""
        if self.ex.class_chunk is not None:
            return self.ex.class_chunk
        per_class = 4 * 3 * groups * self.x.numel()
        return max(1, int(self.ex.max_memory_mb * 2**20 // per_class))


def baseline_of(x: torch.Tensor, baseline) -> torch.Tensor:
    """The baseline float [B,C,*spatial] of images x: a constant, the per-image per-channel mean
    ("mean"), a Gaussian blur with σ = 4 px ("blur", 2-D only; reflect padding) or a tensor
    [C,*spatial] / [B,C,*spatial]."""
    if isinstance(baseline, torch.Tensor):
        shape = tuple(x.shape)
        if tuple(baseline.shape) not in (shape, shape[1:], (1,) + shape[1:]):
            raise ValueError(f"option 'baseline' must be a tensor of the images' shape {list(shape)} or "
                             f"{list(shape[1:])}, got shape {list(baseline.shape)}")
        return baseline.to(x).expand(shape)
    if baseline == "mean":
        return x.mean(dim=tuple(range(2, x.ndim)), keepdim=True).expand_as(x)
    if baseline == "blur":
        return gaussian_blur(x, BLUR_SIGMA)
    return torch.full_like(x, float(baseline))


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """x float [B,C,*spatial] blurred along every spatial axis by a Gaussian of std `sigma` px,
    radius ⌈3σ⌉ (at most the axis length − 1), reflect padding: for 2-D images the segment
    attributions' "blur" baseline (perturbation.occlusion_baseline), extended to volumes."""
    out = x
    for axis in range(2, x.ndim):
        n = x.shape[axis]
        r = min(int(math.ceil(3 * sigma)), n - 1)
        if r < 1:
            continue
        t = torch.arange(-r, r + 1, dtype=x.dtype, device=x.device)
        k = torch.exp(-0.5 * (t / sigma) ** 2)
        k = k / k.sum()
        moved = out.movedim(axis, -1)
        flat = moved.reshape(-1, 1, n)
        flat = torch.nn.functional.conv1d(torch.nn.functional.pad(flat, (r, r), mode="reflect"), k.view(1, 1, -1))
        out = flat.view(moved.shape).movedim(-1, axis)
    return out


def _layer_gradcam(explainer):
    """The raw Grad-CAM explainer at `explainer`'s layer, made once per explainer (it keeps what its
    first call verified)."""
    cam = getattr(explainer, "layer_gradcam", None)
    if cam is None:
        layer = explainer.target_layer
        if explainer.use_input:
            from .capture import InputOf
            layer = InputOf(layer)
        cam = type(explainer)(explainer.model, layer, "gradcam", normalize=False, backend=explainer.backend,
                              output_key=explainer.output_key, max_memory_mb=explainer.max_memory_mb,
                              class_chunk=explainer.class_chunk, vjp=explainer.vjp,
                              class_names=explainer.class_names, reshape=explainer.reshape, call=explainer.call)
        explainer.layer_gradcam = cam
    return cam


def explain_guided_gradcam(explainer, forwards, images: torch.Tensor, classes, masks, resolution: str) -> Explanation:
    """Guided Grad-CAM (captum's GuidedGradCam): guided backpropagation times the target layer's
    Grad-CAM, relu(Σ_c mean(∂S/∂A_c)·A_c) with plain gradients, upsampled to the input by nearest
    neighbour; on checked images float [B,C,H,W] (2-D only: the layer methods are)."""
    from .backward_rules import relu_rule

    spec = explainer.spec
    if images.ndim != 4:
        raise ValueError(f"method {spec.name!r} explains 2-D images [B,C,H,W] (its Grad-CAM is a layer method), "
                         f"got {list(images.shape)}")
    if resolution != "full":
        raise ValueError(f"resolution must be 'full' for method {spec.name!r} (pixel-level maps), got {resolution!r}")
    cam = _layer_gradcam(explainer)(images, classes, masks, resolution="layer")
    run = attribute(explainer, Plan(rules=relu_rule("guided")), images, classes, masks)
    up = torch.nn.functional.interpolate(cam.maps.clamp_min(0), size=tuple(images.shape[2:]), mode="nearest")
    res = explanation(explainer, run, run.attributions * up.unsqueeze(2))
    res.layer = explainer.layer_name
    return res


__all__ = ["INTEGRATION_METHODS", "NT_AGGREGATES", "NT_TYPES", "Noise", "Plan", "baseline_of", "explain_attributions", "explain_guided_gradcam",
           "integration_points"]
