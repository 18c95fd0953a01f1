"""`seg-xai bench`: the engine against its floor, its own reference and pytorch-grad-cam, in one run.

Every figure is a median over `repeats` timed calls after a warm-up, measured side by side in the
same process, so the ratios are meaningful on a noisy machine even when absolute times are not.

Rows (all for the same model, layer, image and K classes):
- forward: one plain forward pass (no_grad);
- floor: one forward pass + the fastest batched VJP of the K class seeds from the logits down to
  the target layer (the least any exact gradient method must do);
- <method> fused / torch: our explainer with the compiled CAM stage / the pure-PyTorch one, each
  class given a non-empty region through ``masks=``;
- <method> pytorch-grad-cam: the peer, one call (forward + full backward) per class, same targets;
- predicted targets: the default Seg-Grad-CAM target (each class's predicted pixels); classes
  predicted nowhere cost us nothing and the peer still one forward + backward each.
Attribution methods (saliency, inputxgradient, integratedgradients, smoothgrad) get their own
floor: the same forwards with a graph from the input (its steps and noise samples stacked as ours,
`batch_size` inputs per forward) and one backward to the input per class and forward, with no
attribution work; their peer is captum (zennit for LRP), one call per class (parameters frozen for
it, as we freeze them).
Perturbation methods (scorecam, ablationcam, rise, occlusion) get their own floor: the same number
of perturbed forwards (the image, in batches of the method's batch_size) with no explanation work;
their peer is pytorch-grad-cam (scorecam, ablationcam) or captum (occlusion), one call per class.
ablationcam runs what precedes the layer once per batch where the model allows, so it can beat
that floor. Occlusion also gets a row for MONAI's OcclusionSensitivity (MONAI_OCCLUSION_NOTE).
A peer that fails on the input (pytorch-grad-cam's ScoreCAM and AblationCAM on volumes) is a note
under the table instead of a row.

Volumes (`volume=True`, `seg-xai bench --volume`): the same rows for a 1×C×S×S×S volume through a
3-D model (by default a small random MONAI SegResNet, VOLUME_MODEL); the VJP floor starts at the
full logits (the engine's volume path is plain autograd from the layer up).

Sliding windows (`sliding=`, `seg-xai bench --sliding-window ROI`): explanations through
`sx.SlidingWindow` against the plain sliding-window inference of the same input (2-D or 3-D):
- sliding-window forward: our SlidingWindow's plain inference (no grad); its peer/ours is MONAI's
  time over ours;
- sliding-window forward monai: MONAI's `sliding_window_inference` with the same arguments (when
  MONAI is installed);
- floor: the fastest plain sliding-window inference of the two (a lower bound, like the floor above);
- sliding-window <method>: `sx.Explainer(SlidingWindow(model, ...), layer, method)` of the classes
  (all, or the first N), each class's target its predicted region on the stitched output; its
  × floor is "explanation over plain inference";
- sliding-window occlusion captum: captum's `Occlusion` on the stitched output (the definition our
  occlusion through a SlidingWindow equals), one call per class, one occluded input per forward.
  No library explains gradient CAMs through sliding-window inference, so those rows have no peer.
The plain inferences and the explanations are timed in interleaved rounds (one call of each per
round), so that their ratios compare calls made under the same machine load.
With `memory=True` each plain inference and explanation also gets its peak RSS, measured in a
fresh process (apps/bench_memory.py says what exactly), and its ratio to the plain inference's.
"""
from __future__ import annotations

import copy
import json
import statistics
import time
import warnings
from contextlib import ExitStack, contextmanager
from functools import partial
from typing import Callable, Optional, Sequence

import torch

from .. import kernels
from ..engine.capture import ModelState, model_logits, select_output
from ..engine.explainer import Explainer
from ..engine.methods import check_options_used, get_method, layer_for, options_for
from ..engine.occlusion_nd import axes_option
from ..engine.sliding import SlidingWindow
from ..models import load_model, require_layer
from ..viz import bar_chart, save_png
from .bench_memory import bench_input, monai_inference, peak_memory
from .scenes import build_explainer


def timed_calls(fn: Callable[[], object], repeats: int, warmup: int = 1) -> list[float]:
    """Seconds of `repeats` calls of `fn` after `warmup` untimed ones."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def interleaved_calls(fns: dict, repeats: int, warmup: int = 1) -> dict:
    """{name: seconds of its `repeats` calls}, the callables timed in rounds of one call each (after
    `warmup` untimed rounds), so that their ratios compare calls made under the same machine load."""
    times: dict = {name: [] for name in fns}
    for round_ in range(warmup + repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            if round_ >= warmup:
                times[name].append(time.perf_counter() - start)
    return times


def median_seconds(fn: Callable[[], object], repeats: int, warmup: int = 1) -> float:
    return statistics.median(timed_calls(fn, repeats, warmup))


def box_masks(batch: int, classes: int, *spatial: int, seed: int = 0) -> torch.Tensor:
    """A random non-empty box region per (image, class): float [B,K,*spatial] ([B,K,H,W] for
    box_masks(B, K, H, W), [B,K,D,H,W] for box_masks(B, K, D, H, W)); each side a quarter of the axis."""
    g = torch.Generator().manual_seed(seed)
    masks = torch.zeros(batch, classes, *spatial)
    for b in range(batch):
        for k in range(classes):
            starts = [int(torch.randint(0, max(1, n // 2), (1,), generator=g)) for n in spatial]
            masks[(b, k) + tuple(slice(s, s + max(1, n // 4)) for s, n in zip(starts, spatial))] = 1.0
    return masks


def input_channels(model: torch.nn.Module, default: int = 3) -> int:
    """The channel count the model's first convolution takes (`default` when it has none)."""
    conv = next((m for m in model.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Conv3d))), None)
    return default if conv is None else conv.in_channels


def vjp_floor_seconds(model, layer: str, images, classes: Sequence[int], masks, output_key: str, repeats: int) -> dict:
    """Seconds of each timed call of the K VJPs from the logits (images: from the pre-upsample
    logits) to the layer: loop and batched. images float [B,C,*S], masks float [B,K,*S]."""
    with ModelState(model), layer_leaf(model, layer, images) as leaf, ExitStack() as stack:
        if leaf is None:  # an image: the engine's own capture, its VJPs start below a final upsample
            explainer = Explainer(model, layer, "gradcam", output_key=output_key, gradient_path="autograd")
            cap = stack.enter_context(explainer.capture(leaf=True))
            with torch.enable_grad():
                logits = select_output(model(images), output_key, images.shape[0])
            leaf = cap.activations()
            start, upsample = cap.backward_start(logits)
        else:  # a volume: plain autograd from the layer's output (made a leaf) up, as the engine does
            with torch.enable_grad():
                start = select_output(model(images), output_key, images.shape[0], images.ndim)
            leaf, upsample = leaf[-1], None
        seeds = masks if upsample is None else kernels.mask_seeds(masks, *upsample)
        cot = torch.zeros((len(classes),) + tuple(start.shape))
        for i, c in enumerate(classes):
            cot[i, :, c] = seeds[:, i]

        def loop():
            for c in cot:
                torch.autograd.grad(start, leaf, c, retain_graph=True)

        def batched():
            torch.autograd.grad(start, leaf, cot, retain_graph=True, is_grads_batched=True)

        return {"loop": timed_calls(loop, repeats), "batched": timed_calls(batched, repeats)}


@contextmanager
def layer_leaf(model: torch.nn.Module, layer: str, images: torch.Tensor):
    """For a volume, a list that receives the output of `layer` (or 'NAME:input': NAME's input)
    detached as a leaf that requires grad, the model differentiated from there up; None (no hook)
    for an image."""
    if images.ndim <= 4:
        yield None
        return
    leaves: list = []

    def leaf_of(t):
        leaves.append(t.detach().requires_grad_(True))
        return leaves[-1]

    if layer.endswith(":input"):
        handle = model.get_submodule(layer[: -len(":input")]).register_forward_pre_hook(
            lambda module, args: (leaf_of(args[0]),) + tuple(args[1:]))
    else:
        handle = model.get_submodule(layer).register_forward_hook(lambda module, args, out: leaf_of(out))
    try:
        yield leaves
    finally:
        handle.remove()


class _InputTap(torch.nn.Module):
    """A module whose output is another module's input, for a peer that hooks module outputs:
    a forward pre-hook on that module routes its first input through the tap (a view, so only the
    module's own use of the input is differentiated)."""

    def forward(self, x):
        return x.view_as(x)


@contextmanager
def peer_target_layer(model: torch.nn.Module, layer: str):
    """The module pytorch-grad-cam should hook for our `layer` name: the module itself, or, for
    'NAME:input', a tap on NAME's input (the peer hooks outputs only)."""
    if not layer.endswith(":input"):
        yield model.get_submodule(layer)
        return
    tap = _InputTap()
    handle = model.get_submodule(layer[: -len(":input")]).register_forward_pre_hook(
        lambda module, args: (tap(args[0]),) + tuple(args[1:]))
    try:
        yield tap
    finally:
        handle.remove()


@contextmanager
def peer_cam(model: torch.nn.Module, layer: str, method: str, output_key: str = "out"):
    """pytorch-grad-cam's CAM object for `method` at `layer` of `model` (its logits selected by
    `output_key`); raises ImportError when the package is not installed."""
    import pytorch_grad_cam as pgc

    library, class_name = get_method(method).peer or (None, None)
    if library != "pytorch_grad_cam":
        raise ValueError(f"method {method!r} has no pytorch-grad-cam peer class")
    cam_class = getattr(pgc, class_name)

    class Logits(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, x):
            return select_output(self.model(x), output_key, x.shape[0], x.ndim)

    with peer_target_layer(model, layer) as target, cam_class(model=Logits(), target_layers=[target]) as cam:
        yield cam


def peer_seconds(model, layer: str, method: str, images, classes, masks, output_key: str, repeats: int,
                 options: Optional[dict] = None, notes: Optional[list] = None) -> Optional[float]:
    """The peer the method's spec names explaining the same targets, one call per class (its API):
    pytorch-grad-cam's class, or captum's Occlusion; None if it is not installed, or the method has
    no peer bench can drive (captum's segment attributions: benchmarks/segments_speed.py), or the
    peer fails on this input (pytorch-grad-cam's ScoreCAM and AblationCAM on volumes): then why is
    appended to `notes`. images float [B,C,*S], masks float [B,K,*S] (2-D or 3-D).

    pytorch-grad-cam gets its own copy of the model: a class that fails midway (AblationCAM on a
    volume) leaves its ablation layer swapped in."""
    library, class_name = get_method(method).peer or (None, None)
    if (library, class_name) == ("captum", "Occlusion"):
        return captum_occlusion_seconds(model, images, classes, masks, output_key, repeats, options or {})
    if library != "pytorch_grad_cam":
        return None
    try:
        from pytorch_grad_cam.utils.model_targets import SemanticSegmentationTarget
    except ImportError:
        return None
    targets = [SemanticSegmentationTarget(c, masks[0, k].numpy()) for k, c in enumerate(classes)]
    try:
        model = copy.deepcopy(model)
    except Exception:  # noqa: BLE001 - a model that cannot be copied is lent to the peer as it is
        pass
    try:
        with peer_cam(model, layer, method, output_key) as cam:
            if "batch_size" in (options or {}) and hasattr(cam, "batch_size"):
                cam.batch_size = options["batch_size"]  # the same perturbed batches as ours

            def run():
                for target in targets:
                    cam(input_tensor=images, targets=[target])
            return median_seconds(run, repeats)
    except Exception as err:  # noqa: BLE001 - the peer's own limits (e.g. 2-D only code paths): reported, not fatal
        if notes is None:
            raise
        why = str(err).splitlines()[0] if str(err) else ""
        why = why if len(why) <= 120 else why[:119] + "…"
        notes.append(f"{method}: pytorch-grad-cam's {class_name} fails on a {images.ndim - 2}-D input "
                     f"({type(err).__name__}: {why}), no peer row")
        return None


def captum_occlusion_seconds(model, images, classes, masks, output_key: str, repeats: int, options: dict):
    """captum's Occlusion, one call per class, its target the class's logits summed over the
    region (our "logit" score), windows and strides over every spatial axis (2-D or 3-D); None if
    captum is not installed."""
    try:
        from captum.attr import Occlusion
    except ImportError:
        return None
    window, stride = occlusion_axes(options, images.ndim - 2)
    C = images.shape[1]

    def run():
        for k, c in enumerate(classes):
            def score(x, c=c, k=k):
                return (select_output(model(x), output_key, x.shape[0], x.ndim)[:, c] * masks[:, k]).flatten(1).sum(1)
            Occlusion(score).attribute(images, sliding_window_shapes=(C, *window), strides=(C, *stride),
                                       baselines=float(options.get("baseline", 0.0)),
                                       perturbations_per_eval=options.get("batch_size", 32))

    with torch.no_grad():
        return median_seconds(run, repeats)


def occlusion_axes(options: dict, dims: int) -> tuple:
    """(window, stride) of occlusion `options` (ours, checked, or bench defaults) per spatial axis."""
    window, stride = options.get("window", 16), options.get("stride", 8)
    as_axes = {k: (v,) * dims if isinstance(v, int) else tuple(v) for k, v in (("window", window), ("stride", stride))}
    return axes_option(as_axes, "window", dims), axes_option(as_axes, "stride", dims)


MONAI_OCCLUSION_NOTE = ("MONAI's OcclusionSensitivity is classification-only: it is given the segmenter wrapped to "
                        "return each class's logits summed over its target region ([B,K]), so one call covers all K "
                        "classes; mask_size = our window, overlap set so its window interval is our stride (MONAI "
                        "pulls the last window back to the border), activate=False, n_batch = our batch_size")


def monai_occlusion_seconds(model, images, classes, masks, output_key: str, repeats: int, options: dict,
                            notes: Optional[list] = None) -> Optional[float]:
    """MONAI's OcclusionSensitivity over the region scores of all K classes in one call (see
    MONAI_OCCLUSION_NOTE); None if MONAI is not installed or the baseline is not a number."""
    try:
        from monai.visualize import OcclusionSensitivity
    except ImportError:
        return None
    baseline = options.get("baseline", 0.0)
    if isinstance(baseline, str):
        if notes is not None:
            notes.append(f"occlusion: no MONAI row (its occluding values are a number, a Gaussian or a mean, not "
                         f"our baseline {baseline!r})")
        return None
    window, stride = occlusion_axes(options, images.ndim - 2)
    class_ids = torch.tensor(list(classes))

    class RegionScores(torch.nn.Module):
        def forward(self, x):  # [n,C,*S] → [n,K]: Σ_p masks_k(p)·logits_k(p)
            logits = select_output(model(x), output_key, x.shape[0], x.ndim)
            return (logits[:, class_ids] * masks[:1]).flatten(2).sum(-1)

    # Interval int(w·(1 − overlap)) = stride: the half-voxel margin keeps float rounding from flooring below it.
    overlap = tuple(max(0.0, 1.0 - (s + 0.5) / w) for w, s in zip(window, stride))
    occ = OcclusionSensitivity(RegionScores(), mask_size=window, n_batch=int(options.get("batch_size", 32)),
                               verbose=False, mode=float(baseline), overlap=overlap, activate=False)
    if notes is not None:
        notes.append(MONAI_OCCLUSION_NOTE)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=UserWarning)  # its own deprecation notices, every window
        return median_seconds(lambda: occ(images[:1]), repeats)


def peer_attribution(model, method: str, options: dict, layer: Optional[str] = None, output_key: str = "out"):
    """run(images, masks, k, c) -> the peer's attributions of class c (target: its logits summed
    over masks[:, k]) for our attribution `method` with `options`: captum's class the spec names
    (SmoothGrad's NoiseTunnel wraps the class of its `base` method; Guided Grad-CAM at `layer`), or
    zennit's Gradient attributor with the LRP composite. Raises ImportError without the package."""
    spec = get_method(method)
    o = {**dict(spec.options), **options}
    library = spec.peer[0] if spec.peer else "zennit"

    class Score(torch.nn.Module):  # captum hooks the modules of an nn.Module it is given
        def __init__(self):
            super().__init__()
            self.model, self.k, self.c, self.masks = model, 0, 0, None

        def forward(self, x):
            logits = select_output(self.model(x), output_key, x.shape[0], x.ndim)
            B = self.masks.shape[0]  # captum stacks noise samples as rows b·T + t, path steps as blocks of those
            rows = (torch.arange(x.shape[0]) % (B * T)) // T
            return (logits[:, self.c] * self.masks[rows, self.k]).flatten(1).sum(1)

    T = o["nt_samples"] if "nt_type" in o else 1
    score = Score()
    if library == "zennit":
        from zennit.attribution import Gradient

        from ..engine.lrp import make_composite
        from ..engine.options import check_options

        composite = make_composite(check_options(method, options))

        def run_zennit(images, masks, k, c):
            class Logits(torch.nn.Module):
                def __init__(self):
                    super().__init__()
                    self.model = model

                def forward(self, x):
                    return select_output(self.model(x), output_key, x.shape[0], x.ndim)

            with Gradient(model=Logits(), composite=composite) as attributor:
                return attributor(images, lambda y: torch.zeros_like(y).index_fill(1, torch.tensor([c]), 1.0)
                                  * masks[:, k:k + 1] * y)[1]
        return run_zennit

    import captum.attr as ca

    base = get_method(o["base"]) if "base" in o else spec
    kwargs = {}
    if "abs" in dict(base.options):
        kwargs["abs"] = o["abs"]
    if "baseline" in dict(base.options):
        if not isinstance(o["baseline"], (float, int)):
            raise ValueError(f"bench drives captum with a float baseline only, got {o['baseline']!r}")
        kwargs["baselines"] = float(o["baseline"])
    if "n_steps" in dict(base.options):
        kwargs.update(n_steps=o["n_steps"], method=o["method"], internal_batch_size=o["batch_size"])
    cls = getattr(ca, base.peer[1])
    inner = cls(score, model.get_submodule(layer)) if spec.needs_layer else cls(score)

    def run(images, masks, k, c):
        score.k, score.c, score.masks = k, c, masks
        x = images.clone().requires_grad_(True)
        if "nt_type" not in o:
            return inner.attribute(x, **kwargs)
        torch.manual_seed(o["seed"])
        return ca.NoiseTunnel(inner).attribute(x, nt_type=o["nt_type"], nt_samples=o["nt_samples"],
                                               stdevs=o["stdevs"], **kwargs)
    return run


def attribution_rows(model, method: str, images, classes, masks, options: dict, repeats: int, peer_repeats: int,
                     peer: bool, layer: Optional[str] = None) -> list[dict]:
    """Ours (fused and torch backends), the floor (the same forwards from the input and one backward
    to the input per class and forward, no attribution work) and the peer (captum, or zennit for
    LRP), one call per class."""
    timings, info = {}, {}
    for backend in ("fused", "torch"):
        explainer = Explainer(model, layer_for(method, layer), method, backend=backend,
                              options=options_for(method, options))
        info = explainer(images, classes=classes, masks=masks).info  # also the warm-up
        timings[backend] = median_seconds(lambda: explainer(images, classes=classes, masks=masks), repeats, warmup=0)
    floor_s = median_seconds(lambda: attribution_floor(model, images, classes, masks, info["inputs"],
                                                       explainer.options["batch_size"]), repeats)
    rows = [{"row": f"{method} floor ({info['inputs']} inputs)", "ms": floor_s * 1e3}]
    peer_s, library = None, get_method(method).peer[0] if get_method(method).peer else "zennit"
    if peer:
        try:
            run = peer_attribution(model, method, options_for(method, options), layer)
        except ImportError:
            run = None
        if run is not None:
            with ModelState(model):  # frozen parameters: captum would differentiate them too
                peer_s = median_seconds(lambda: [run(images, masks, k, c) for k, c in enumerate(classes)],
                                        peer_repeats)
    return rows + timing_rows(method, timings, floor_s, peer_s, library)


def timing_rows(method: str, timings: dict, floor_s: float, peer_s, peer_name: str) -> list:
    """The table rows of one method: each backend's time (× the floor, the peer's time over ours),
    then the peer's own row when it was timed."""
    rows = []
    for backend, seconds in timings.items():
        row = {"row": f"{method} {backend}", "ms": seconds * 1e3, "x_floor": seconds / floor_s}
        if peer_s is not None:
            row["peer_over_ours"] = peer_s / seconds
        rows.append(row)
    if peer_s is not None:
        rows.append({"row": f"{method} {peer_name}", "ms": peer_s * 1e3, "x_floor": peer_s / floor_s})
    return rows


def attribution_floor(model, images, classes, masks, inputs: int, batch: int, output_key: str = "out") -> None:
    """What any attribution of `inputs` stacked inputs (B images each) must do: their forwards with a
    graph from the input, `batch` inputs at a time, and one backward to the input per class and
    forward (the class's logits summed over its region)."""
    B = images.shape[0]
    per = max(1, batch // B) * B
    with ModelState(model):
        for lo in range(0, inputs, per):
            n = min(per, inputs - lo)
            x = images.repeat(n // B, *([1] * (images.ndim - 1))).requires_grad_(True)
            with torch.enable_grad():
                logits = select_output(model(x), output_key, x.shape[0], x.ndim)
            for k, c in enumerate(classes):
                cot = torch.zeros_like(logits)
                cot[:, c] = masks[:, k].repeat(n // B, *([1] * (masks.ndim - 2)))
                torch.autograd.grad(logits, x, cot, retain_graph=True)


def perturbation_rows(model, layer: str, method: str, images, classes, masks, options: dict, repeats: int,
                      peer_repeats: int, peer: bool, notes: Optional[list] = None) -> list[dict]:
    """Ours (fused and torch backends), the floor (as many plain forwards, batched alike) and the
    peer; for occlusion also MONAI's OcclusionSensitivity when MONAI is installed (its row's
    peer/ours: its time over our fused one). images float [B,C,*S], masks float [B,K,*S]."""
    timings, forwards = {}, 0
    for backend in ("fused", "torch"):
        explainer = Explainer(model, layer_for(method, layer), method, backend=backend,
                              options=options_for(method, options))
        forwards = explainer(images, classes=classes, masks=masks).info["perturbed_forwards"]  # also the warm-up
        timings[backend] = median_seconds(lambda: explainer(images, classes=classes, masks=masks), repeats, warmup=0)
    batch = explainer.options["batch_size"]
    plain = images.expand(min(batch, forwards), *images.shape[1:]).contiguous()

    def floor():
        with torch.no_grad():
            for lo in range(0, forwards, batch):
                model(plain[:min(batch, forwards - lo)])

    floor_s = median_seconds(floor, repeats, warmup=0)
    rows = [{"row": f"{method} floor ({forwards} forwards)", "ms": floor_s * 1e3}]
    peer_s = (peer_seconds(model, layer, method, images, classes, masks, "out", peer_repeats, explainer.options, notes)
              if peer else None)
    rows += timing_rows(method, timings, floor_s, peer_s, get_method(method).peer[0].replace("_", "-")
                        if get_method(method).peer else "")
    monai_s = (monai_occlusion_seconds(model, images, classes, masks, "out", peer_repeats, explainer.options, notes)
               if peer and get_method(method).peer == ("captum", "Occlusion") else None)
    if monai_s is not None:
        rows.append({"row": f"{method} monai OcclusionSensitivity", "ms": monai_s * 1e3, "x_floor": monai_s / floor_s,
                     "peer_over_ours": monai_s / timings["fused"]})
    return rows


# `seg-xai bench --volume` without --model: a small random MONAI SegResNet (1 channel, 3 classes)
# at its last decoder block, a full-resolution layer (where grad-cam's spline resize is the identity).
VOLUME_MODEL = "monai:SegResNet"
VOLUME_MODEL_ARGS = {"spatial_dims": 3, "init_filters": 8, "in_channels": 1, "out_channels": 3,
                     "blocks_down": [1, 2, 2], "blocks_up": [1, 1], "norm": ["GROUP", {"num_groups": 4}]}
VOLUME_LAYER = "up_layers.1"
VOLUME_SIZE = 32


def run_bench(
    model_spec: str = "demo",
    methods: Sequence[str] = ("gradcam", "gradcam++"),
    num_classes: Optional[int] = None,
    size: Optional[int] = None,
    layer: Optional[str] = None,
    repeats: int = 5,
    peer: bool = True,
    peer_repeats: int = 2,
    chart: Optional[str] = None,
    log: Callable[[str], None] = print,
    weights: Optional[str] = None,
    model_classes: Optional[int] = None,
    options: Optional[dict] = None,
    volume: bool = False,
    model_args: Optional[dict] = None,
    sliding: Optional[dict] = None,
    memory: bool = True,
    as_json: bool = False,
) -> list[dict]:
    """Run the comparison; print a table through `log`; return its rows; draw `chart` (PNG) if given.

    num_classes: explain the first N classes (None: all); weights, model_classes, model_args: the
    model's state dict, class count and monai:NAME constructor arguments (models.load_model);
    options: the methods' options (each takes the entries it knows). volume: a 1×C×S×S×S volume
    (S = size, default 32; C the model's first convolution's) instead of a 1×3×S×S image, through
    VOLUME_MODEL when model_spec is "demo". sliding: SlidingWindow arguments (roi_size, overlap,
    mode, sw_batch_size): explain through sliding-window inference and compare with the plain
    sliding-window inference (memory: also measure peak RSS there, in fresh processes).
    as_json: log one JSON object {"meta", "rows", "notes", "chart"} instead of the table.
    """
    if not isinstance(repeats, int) or repeats < 1:
        raise ValueError(f"repeats must be a positive int, got {repeats!r}")
    peer_repeats = min(peer_repeats, repeats)  # the peer never gets more samples than we do
    check_options_used(methods, options)
    dims = 3 if volume else 2
    if volume and model_spec == "demo":
        model_spec, model_args = VOLUME_MODEL, model_args if model_args is not None else dict(VOLUME_MODEL_ARGS)
        layer = layer or VOLUME_LAYER
    if sliding is not None and len(sliding["roi_size"]) != dims:
        raise ValueError(f"--sliding-window {','.join(map(str, sliding['roi_size']))} has "
                         f"{len(sliding['roi_size'])} axes but the input has {dims} spatial axes"
                         + (" (--volume)" if volume else " (--volume for 3-D windows)"))
    loaded = load_model(model_spec, weights=weights, num_classes=model_classes, model_args=model_args)
    model = loaded.model
    layer = require_layer(loaded, layer) if any(get_method(m).needs_layer for m in methods) or sliding is None \
        else layer
    size = size or (VOLUME_SIZE if volume else loaded.image_size)
    channels = input_channels(model, 1) if volume else 3
    images = bench_input(channels, size, dims)
    shape = "×".join(map(str, images.shape))
    notes: list = []

    def meta(classes: list, windows: str = "") -> str:  # the table's first line
        return (f"model {loaded.name}, layer {layer}, {'volume' if volume else 'image'} {shape}, {len(classes)} "
                f"classes, {windows}torch threads {torch.get_num_threads()}, medians of {repeats} (peer: "
                f"{peer_repeats})" + ("; with fewer than 3 repeats the ratios are noisy" if repeats < 3 else ""))

    if sliding is not None:
        source = {"model": model_spec, "weights": weights, "num_classes": model_classes, "model_args": model_args,
                  "channels": channels, "size": size, "dims": dims}
        rows, classes = sliding_rows(model, layer, methods, images, num_classes, options or {}, sliding, repeats,
                                     peer, peer_repeats, notes, source if memory else None)
        return _finish(rows, meta(classes, f"windows {sliding_text(sliding)}, "), notes, loaded.name, layer, shape,
                       classes, chart, log, as_json, meta_logged=False)
    out = model_logits(model, images)
    classes = list(range(out.shape[1] if num_classes is None else min(num_classes, out.shape[1])))
    masks = box_masks(1, len(classes), *images.shape[2:])
    meta = meta(classes)
    if not as_json:
        log(meta)

    def forward():
        with torch.no_grad():
            model(images)

    forward_times = timed_calls(forward, repeats)
    vjp = vjp_floor_seconds(model, layer, images, classes, masks, "out", repeats)
    # The floor is a lower bound, so it is built from the fastest calls, not the medians: a sum of
    # medians of separate noisy samples can exceed a median of the whole (few repeats gave rows
    # "faster than the floor").
    floor_s = min(forward_times) + min(min(t) for t in vjp.values())
    rows = [{"row": "forward", "ms": statistics.median(forward_times) * 1e3},
            {"row": f"VJP loop ({len(classes)} classes)", "ms": statistics.median(vjp["loop"]) * 1e3},
            {"row": f"VJP batched ({len(classes)} classes)", "ms": statistics.median(vjp["batched"]) * 1e3},
            {"row": "floor = fastest forward + fastest VJP", "ms": floor_s * 1e3}]
    for method in methods:
        if get_method(method).family == "attribution":
            rows += attribution_rows(model, method, images, classes, masks, options or {}, repeats, peer_repeats, peer,
                                     layer)
            continue
        if get_method(method).perturbs:
            rows += perturbation_rows(model, layer, method, images, classes, masks, options or {}, repeats,
                                      peer_repeats, peer, notes)
            continue
        timings = {}
        for backend in ("fused", "torch"):
            explainer = Explainer(model, layer_for(method, layer), method, backend=backend,
                                  options=options_for(method, options))
            timings[backend] = median_seconds(lambda: explainer(images, classes=classes, masks=masks), repeats)
        peer_s = (peer_seconds(model, layer, method, images, classes, masks, "out", peer_repeats, notes=notes)
                  if peer else None)
        rows += timing_rows(method, timings, floor_s, peer_s, "pytorch-grad-cam")
    # The default target: only the classes the model actually predicts cost a VJP.
    gradient_methods = [m for m in methods if not get_method(m).perturbs and get_method(m).family != "attribution"]
    if not gradient_methods:
        return _finish(rows, meta, notes, loaded.name, layer, shape, classes, chart, log, as_json)
    first = gradient_methods[0]
    explainer = Explainer(model, layer_for(first, layer), first, options=options_for(first, options))
    ours_s = median_seconds(lambda: explainer(images, classes=classes), repeats)
    predicted = (out.argmax(1, keepdim=True) == torch.tensor(classes).view(1, -1, *[1] * dims)).float()
    row = {"row": f"{first} predicted targets", "ms": ours_s * 1e3, "x_floor": ours_s / floor_s,
           "predicted_classes": int(predicted.flatten(2).any(2).sum())}
    if peer:
        peer_s = peer_seconds(model, layer, first, images, classes, predicted, "out", peer_repeats, notes=notes)
        if peer_s is not None:
            row["peer_over_ours"] = peer_s / ours_s
            rows.append(row)
            row = {"row": f"{first} predicted targets pytorch-grad-cam", "ms": peer_s * 1e3,
                   "x_floor": peer_s / floor_s}
    rows.append(row)
    return _finish(rows, meta, notes, loaded.name, layer, shape, classes, chart, log, as_json)


def sliding_rows(model: torch.nn.Module, layer: Optional[str], methods: Sequence[str], images: torch.Tensor,
                 num_classes: Optional[int], options: dict, sliding: dict, repeats: int, peer: bool,
                 peer_repeats: int, notes: list, source: Optional[dict]) -> tuple:
    """(rows, classes) of the sliding-window benchmark (the module docstring). images float [1,C,*S];
    source: how a fresh process rebuilds the model and the input (run_bench), None: no memory
    rows."""
    sliding = {k: sliding[k] for k in ("roi_size", "overlap", "mode", "sw_batch_size") if k in sliding}
    sw = SlidingWindow(model, **sliding)
    with torch.no_grad():
        logits = sw(images)  # [1,L,*S]
    classes = list(range(logits.shape[1] if num_classes is None else min(num_classes, logits.shape[1])))
    predicted = (logits.argmax(1, keepdim=True) == torch.tensor(classes).view(1, -1, *[1] * (images.ndim - 2))).float()

    def plain():
        with torch.no_grad():
            sw(images)

    # Every plain inference and explanation is timed in the same rounds: the ratios are the point.
    calls = {"ours": plain}
    monai = monai_inference(model, sliding)
    if monai is not None:
        calls["monai"] = partial(monai, images)
    explainers = {}
    for method in methods:
        spec = get_method(method)
        explainers[method] = build_explainer(model, layer if spec.needs_layer else None, method,
                                             options_for(method, options), "cpu", sliding)
        calls[method] = partial(explainers[method], images, classes=classes)
    times = interleaved_calls(calls, repeats)
    plain_sides = [side for side in ("ours", "monai") if side in calls]
    floor_s = min(min(times[side]) for side in plain_sides)  # fastest calls: a lower bound (see run_bench)
    memory = {}
    if source is not None:
        for side in plain_sides:
            memory[side] = peak_memory(source, sliding, side)
        memory["floor"] = {k: min(m[k] for m in memory.values()) for k in ("rss_mb", "added_mb")}
    ours_s = statistics.median(times["ours"])
    rows = [{"row": "sliding-window forward", "ms": ours_s * 1e3, "x_floor": ours_s / floor_s}]
    if monai is not None:
        monai_s = statistics.median(times["monai"])
        rows[0]["peer_over_ours"] = monai_s / ours_s
        rows.append({"row": "sliding-window forward monai", "ms": monai_s * 1e3, "x_floor": monai_s / floor_s})
    else:
        notes.append("MONAI is not installed: the floor is our SlidingWindow's plain inference alone")
    for row, side in zip(rows, plain_sides):
        _add_memory(row, memory.get(side), memory)
    rows.append(_add_memory({"row": "floor = fastest plain sliding window", "ms": floor_s * 1e3},
                            memory.get("floor"), {}))
    for method, explainer in explainers.items():
        spec = get_method(method)
        seconds = statistics.median(times[method])
        forwards = explainer(images, classes=classes).info.get("window_forwards")
        label = f"sliding-window {method}" + (f" ({forwards} window forwards)" if forwards is not None else "")
        row = {"row": label, "ms": seconds * 1e3, "x_floor": seconds / floor_s}
        if source is not None:
            _add_memory(row, peak_memory(source, sliding, method, layer=layer if spec.needs_layer else None,
                                         options=options_for(method, options), classes=classes), memory)
        rows.append(row)
        if peer and spec.peer == ("captum", "Occlusion"):
            # One occluded scene per forward: captum runs every window of it (a batch of scenes is a
            # batch of whole-scene copies).
            peer_s = captum_occlusion_seconds(sw, images, classes, predicted, "out", peer_repeats,
                                              {**explainer.options, "batch_size": 1})
            if peer_s is not None:
                row["peer_over_ours"] = peer_s / seconds
                rows.append({"row": f"sliding-window {method} captum", "ms": peer_s * 1e3, "x_floor": peer_s / floor_s})
                notes.append(f"sliding-window {method} captum: captum's Occlusion on the stitched output (one "
                             "occluded input per forward, every window run for each), one call per class")
    return rows, classes


def _add_memory(row: dict, measured: Optional[dict], memory: dict) -> dict:
    """row with its peak RSS, the ratio to the plain inference's (memory["floor"]) and the growth."""
    if measured is not None:
        row.update(rss_mb=measured["rss_mb"], added_mb=measured["added_mb"])
        if "floor" in memory:
            row["rss_x_floor"] = measured["rss_mb"] / memory["floor"]["rss_mb"]
    return row


def sliding_text(sliding: dict) -> str:
    """'64,64,64 overlap 0.25 gaussian, 1 per forward' for the table's first line."""
    return (f"{','.join(map(str, sliding['roi_size']))} overlap {sliding.get('overlap', 0.25)} "
            f"{sliding.get('mode', 'constant')}, {sliding.get('sw_batch_size', 1)} per forward")


def _finish(rows, meta, notes, model_name, layer, shape, classes, chart, log, as_json,
            meta_logged: bool = True) -> list[dict]:
    """Print the table (or the JSON object); draw the chart."""
    notes = list(dict.fromkeys(notes))  # each once
    if chart:
        save_png(bar_chart([(r["row"], r["ms"]) for r in rows], chart_title(model_name, layer, shape, len(classes))),
                 chart)
    if as_json:
        log(json.dumps({"meta": meta, "rows": rows, "notes": notes, "chart": chart}))
        return rows
    if not meta_logged:
        log(meta)
    log(format_table(rows, notes))
    if chart:
        log(f"chart: {chart}")
    return rows


def chart_title(model: str, layer: str, shape, classes: int) -> str:
    """shape: the input's shape "1×3×128×128", or an image size (128 for 128x128)."""
    # "128x128", not "128²" or "×": PIL's default font has neither glyph (it drew "128□").
    shape = f"{shape}x{shape}" if isinstance(shape, int) else shape.replace("×", "x")
    return f"{model} · {layer} · {shape} · {classes} classes (ms, lower is better)"


def format_table(rows: list[dict], notes: Sequence[str] = ()) -> str:
    """The printed table: ms, × floor, peer/ours, then what a row adds in brackets (classes
    predicted; peak RSS of a sliding-window row, its ratio to the floor's, and what the call added);
    then the notes, one a line."""
    width = max([44] + [len(r["row"]) for r in rows])
    lines = [f"{'':{width}s} {'ms':>10s} {'× floor':>9s} {'peer/ours':>10s}"]
    for r in rows:
        x_floor = f"{r['x_floor']:.2f}" if "x_floor" in r else ""
        ratio = f"{r['peer_over_ours']:.1f}×" if "peer_over_ours" in r else ""
        extra = f"  ({r['predicted_classes']} classes predicted)" if "predicted_classes" in r else ""
        if "rss_mb" in r:
            vs_floor = f", {r['rss_x_floor']:.2f}× floor" if "rss_x_floor" in r else ""
            extra += f"  (peak RSS {r['rss_mb']:.0f} MB{vs_floor}; +{r['added_mb']:.0f} MB in the call)"
        lines.append(f"{r['row']:{width}s} {r['ms']:10.1f} {x_floor:>9s} {ratio:>10s}{extra}")
    lines += [f"note: {n}" for n in notes]
    return "\n".join(lines)
