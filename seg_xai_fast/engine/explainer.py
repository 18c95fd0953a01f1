"""The explainer: CAMs for every requested class of a batch from one forward pass.

One call does:
1. one forward pass with a forward hook that swaps the target layer's output A for a detached
   leaf, so the graph starts at A (nothing below it is differentiated, no parameter gradients);
2. the target masks M_k (predicted regions by default) and their seeds: when the model ends with a
   bilinear upsample of low-resolution logits z, the seeds are pulled back through it,
   R_k = Up*(M_k) (docs/algorithms.md), so each backward starts at z instead of the full output;
3. one vector-Jacobian product per class that has a non-empty region in any image of the batch,
   from z down to A only (each VJP covers the whole batch, because images do not interact);
4. the CAM stage (fused kernels by default) in class chunks under a memory budget.

When A feeds a 1×1 convolution that makes z (a linear head), the first call finds it, checks the
closed-form gradient g_kc = W_kc·R_k against one autograd VJP, and from then on every call is a
plain no-grad forward plus matrix products (the "analytic" gradient path, see analytic.py).
"""
from __future__ import annotations

import warnings
from contextlib import ExitStack
from typing import Optional, Sequence, Union

import torch
import torch.autograd.forward_ad as fwAD
import torch.nn as nn

from .adapters import as_segmenter, needs_adapter
from .analytic import LinearHead
from .base import ExplainerBase
from .cam_stage import stage_cam
from .capture import ForwardCapture, InputOf, ModelState, model_lock, resolve_layer, select_output, unwrap_compiled
from .checks import check_class_names, check_classes, check_images
from .combine import explain_augmented, explain_layers, layer_list
from .curvature import curved_operation, shapley_gradients, shapley_gradients_reverse
from .exact import INCONCLUSIVE, exact_pass, verify
from .gradients import chunked_vjps
from .methods import check_layer, get_method
from .options import check_options
from .perturbation import TorchForwards
from .sliding import SlidingWindow
from .sliding_explain import explain_through_windows
from .volume import explain_volume
from .outputs import Explanation, ForwardPass, MaskSpec, labels_and_seeds


#: The gradient paths a user may ask for (Explainer's gradient_path).
GRADIENT_PATHS = ("auto", "analytic", "autograd", "exact")
#: _autograd_call's answer when the fast path failed its check: the exact path explains instead.
NEEDS_EXACT = object()


class Explainer(ExplainerBase):
    """CAM explanations of a segmentation model for all requested classes of a batch.

    model: an nn.Module mapping float [B,3,H,W] images to logits [B,L,H,W] (a Tensor, a dict —
    torchvision's ``"out"`` by default, see ``output_key`` — or a tuple/list whose first element
    is the logits).
    target_layer: an nn.Module inside ``model`` or its dotted name (``"backbone.layer4"``,
    ``"classifier.3"``); its output is the activation map A [B,C,h,w]. ``InputOf(layer)`` (or a
    name ending in ``":input"``) takes the module's first input instead. A list of them (gradient
    methods): each layer's map, resized, averaged over the layers and normalised (combine.py).
    method: one of ``sx.methods()``.
    backend: "auto" (fused kernels when the compiled core serves the device and dtype), "fused"
    or "torch" (the pure-PyTorch reference).
    max_memory_mb: budget for the per-chunk gradients and maps; ``class_chunk`` overrides it with
    a fixed number of classes per chunk. Results do not depend on the chunking.
    vjp: "loop" (one backward per class through the graph above A, ``retain_graph``) or
    "batched" (``autograd.grad(is_grads_batched=True)``); see benchmarks for the measurements.
    gradient_path: "auto" (closed form when the target layer feeds a linear head, verified on the
    first call; autograd otherwise), "analytic" (require the closed form), "autograd" (require the
    fast autograd path: the graph cut at the layer) or "exact" (plain autograd through the whole
    model, the definition). Every shortcut is checked against the exact path on the first call for
    each input shape (engine/exact.py); where it differs, "auto" warns once and explains exactly,
    "analytic" and "autograd" raise. After a call, ``explainer.gradient_path`` reports the path
    used: "analytic", "autograd" or "exact".
    call: which call of a target module that runs several times in one forward pass to explain
    (an index; -1 the last, as pytorch-grad-cam); None (default) requires a module that runs once.
    class_names: one name per output class (e.g. ``sx.CLASS_NAMES``), so that ``classes`` and
    ``Explanation.overlay`` accept names as well as ids.
    Perturbation methods (scorecam, ablationcam with a target layer; rise, occlusion with
    target_layer=None) run every class from one set of perturbed forwards (engine/perturbation.py);
    so do the segment attributions (featureablation, kernelshap, lime; engine/segments.py). The
    input attributions (saliency, inputxgradient, integratedgradients, smoothgrad, guidedbackprop,
    deconvolution, deeplift, lrp with target_layer=None; guidedgradcam with a layer) differentiate
    to the input, every class from shared forwards (engine/attributions.py, docs/attributions.md);
    they also take 3-D volumes [B,C,D,H,W], and their results carry ``attributions`` [B,K,C,*spatial].
    options: the method's options as one dict (each method's options and defaults: ``sx.method_options(name)``); unknown keys are errors.
    normalize: True (maps in [0, 1]: ReLU, then per-map min-max) or False (the raw, signed maps at
    the output resolution, for every method; the gradient methods then take the autograd path).
    reshape: None (token layers [B,N,C] and channels-last [B,h,w,C] are reshaped to [B,C,h,w]
    automatically, see adapters.infer_reshape) or a callable with pytorch-grad-cam's
    reshape_transform signature (the layer's output → [B,C,h,w], a linear rearrangement).
    A Hugging Face model is wrapped with ``sx.as_segmenter`` (logits at the input's resolution);
    ``explainer.model`` is then the wrapper, the model itself is unchanged.

    The model is left as found: hooks are removed after every call (also on errors), and
    ``requires_grad`` flags and train/eval mode are restored. Calls may come from several threads:
    the part that changes the model's state holds a per-model lock, so calls sharing a model take
    turns there. A ``torch.compile``'d model is explained through its original (eager) module.
    The closed-form head follows the model's current weights (checked on every call).
    """

    def __init__(
        self,
        model: nn.Module,
        target_layer: Union[nn.Module, str, None] = None,
        method: str = "gradcam",
        *,
        options: Optional[dict] = None,
        normalize: bool = True,
        backend: str = "auto",
        output_key: str = "out",
        max_memory_mb: float = 1024.0,
        class_chunk: Optional[int] = None,
        vjp: str = "loop",
        gradient_path: str = "auto",
        class_names: Optional[Sequence[str]] = None,
        reshape=None,
        call: Optional[int] = None,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        compiled = model
        model = unwrap_compiled(model)
        if model is not compiled and isinstance(target_layer, str) and target_layer.startswith("_orig_mod."):
            target_layer = target_layer[len("_orig_mod."):]  # the compiled wrapper's name for the same module
        self.model = model
        self.class_names = check_class_names(class_names)
        if reshape is not None and not callable(reshape):
            raise TypeError(f"reshape must be None or a callable (layer output → [B,C,h,w]), got {type(reshape).__name__}")
        self.reshape = reshape
        self.spec = get_method(method)
        layers = layer_list(self.spec, target_layer)  # several target layers, or None
        if layers is not None:
            target_layer = layers[0]  # checked and resolved below; its own explainer is built at the end
        check_layer(self.spec, target_layer)
        self.options = check_options(self.spec, options)  # {} for the methods without options
        if not isinstance(normalize, bool):
            raise TypeError(f"normalize must be True or False, got {normalize!r}")
        if layers is not None and not normalize:
            raise ValueError("normalize=False is not available with a list of target layers: their maps are "
                             "combined after each is normalised (pass one target_layer for raw maps)")
        self.normalize = normalize
        if isinstance(target_layer, str) and target_layer.endswith(":input"):
            target_layer = InputOf(target_layer[: -len(":input")])
        self.use_input = isinstance(target_layer, InputOf)
        self.layer_name, self.target_layer = ("input", None) if target_layer is None else \
            resolve_layer(model, target_layer.layer if self.use_input else target_layer)
        if self.use_input:
            self.layer_name = f"{self.layer_name}:input"
        self.model = as_segmenter(model, output_key) if needs_adapter(model) else model
        if backend not in ("auto", "fused", "torch"):
            raise ValueError(f"backend must be 'auto', 'fused' or 'torch', got {backend!r}")
        if vjp not in ("loop", "batched"):
            raise ValueError(f"vjp must be 'loop' or 'batched', got {vjp!r}")
        if class_chunk is not None and (not isinstance(class_chunk, int) or class_chunk < 1):
            raise ValueError(f"class_chunk must be a positive int or None, got {class_chunk!r}")
        if not max_memory_mb > 0:
            raise ValueError(f"max_memory_mb must be positive, got {max_memory_mb!r}")
        self.backend = backend
        self.output_key = output_key
        self.max_memory_mb = float(max_memory_mb)
        self.class_chunk = class_chunk
        self.vjp = vjp
        if gradient_path not in GRADIENT_PATHS:
            raise ValueError(f"gradient_path must be one of {GRADIENT_PATHS}, got {gradient_path!r}")
        if call is not None and (not isinstance(call, int) or isinstance(call, bool)):
            raise TypeError(f"call must be None or an int (the index of the target module's call; -1: the last), "
                            f"got {call!r}")
        self.call = call
        first_conv = next((m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Conv3d))), None)
        self._in_channels = first_conv.in_channels if first_conv is not None else None
        # the input's dimensionality the model's first convolution implies (None: not known)
        self._input_ndim = None if first_conv is None else (5 if isinstance(first_conv, nn.Conv3d) else 4)
        self.requested_path = gradient_path
        self.gradient_path = gradient_path  # resolved to "analytic" or "autograd" by the first call
        self._heads: dict = {}  # input shape → verified LinearHead, or None when there is none
        # (input shape, second order) → None (the fast path verified) or why it failed
        self._problems: dict = {}
        # --- several target layers: one explainer per layer, their maps combined (combine.py) ---
        self.layer_explainers: Optional[list] = None
        if layers is not None:
            single = {k: v for k, v in self.options.items() if k != "aug_smooth"}  # smoothing wraps the combination
            self.layer_explainers = []
            for i, layer in enumerate(layers):
                try:  # raw maps: combine.py normalises each layer's once, as the peer (its eps matters)
                    self.layer_explainers.append(Explainer(
                        model, layer, self.spec, options=single, normalize=False, backend=backend, output_key=output_key,
                        max_memory_mb=max_memory_mb, class_chunk=class_chunk, vjp=vjp, gradient_path=gradient_path,
                        class_names=class_names, reshape=reshape, call=call))
                except (TypeError, ValueError) as e:
                    raise type(e)(f"target_layer[{i}]: {e}") from None
            self.layer_name = ", ".join(e.layer_name for e in self.layer_explainers)
            self.target_layer = tuple(e.target_layer for e in self.layer_explainers)

    # The explainer holds no hooks between calls; the context manager is for symmetry with
    # pytorch-grad-cam's API and to make the lifetime explicit in user code.
    def __enter__(self) -> "Explainer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Nothing to release: hooks live only inside a call."""

    def explain_checked(self, images: torch.Tensor, classes, masks: MaskSpec, resolution: str) -> Explanation:
        """A call on checked images: test-time augmentation around explain_plain (combine.py);
        volumes [B,C,D,H,W] take the 3-D path (engine/volume.py)."""
        sliding = isinstance(self.model, SlidingWindow)
        volume = images.ndim == 5 and not self.spec.takes_volumes  # (the attribution family's runner takes them)
        if sliding and self.requested_path == "analytic" and self.spec.family == "gradient":
            raise ValueError("gradient_path='analytic' (the closed form of a linear head) does not explain through a "
                             "SlidingWindow, which takes plain autograd window by window (the same maps): use "
                             "gradient_path='auto'")
        if sliding:  # window by window (sliding_explain.py)
            return explain_through_windows(self, images, classes, masks, resolution)
        if volume:
            return explain_volume(self, images, classes, masks, resolution)
        if self.options.get("aug_smooth"):
            return explain_augmented(self, images, classes, masks, resolution)
        return self.explain_plain(images, classes, masks, resolution)

    def explain_plain(self, images: torch.Tensor, classes, masks: MaskSpec, resolution: str) -> Explanation:
        """A call without test-time augmentation on checked `images` float [B,C,H,W]: the layers'
        combination (combine.py) or the method's runner."""
        if self.layer_explainers is not None:
            return explain_layers(self, images, classes, masks, resolution)
        return super().explain_checked(images, classes, masks, resolution)

    def wraps_calls(self) -> bool:
        return (self.layer_explainers is not None or bool(self.options.get("aug_smooth"))
                or isinstance(self.model, SlidingWindow))

    def forwards(self) -> TorchForwards:
        """The forwards of this explainer's model (a new object per call: it holds one call's state)."""
        return TorchForwards(self)

    def head_of(self, outputs: ForwardPass) -> tuple:
        head = outputs.head
        if head is None:
            return None, None
        self.gradient_path = "analytic"
        return head.weight, head.upsample

    def explain_outputs(self, outputs: ForwardPass, classes=None, masks: MaskSpec = None, *,
                        resolution: str = "full") -> Explanation:
        res = super().explain_outputs(outputs, classes, masks, resolution=resolution)
        if outputs.head is not None:  # found on a pass whose gradients were checked against the exact ones
            res.info["verified"] = True
        return res

    def autograd_explain(self, images: torch.Tensor, classes, masks: MaskSpec, resolution: str) -> Explanation:
        """The autograd path of a layer gradient method on checked `images` float [B,C,H,W]."""
        if torch.is_inference_mode_enabled():
            raise RuntimeError(
                f"method {self.method!r} needs gradients, which torch.inference_mode() forbids: call the "
                "explainer outside torch.inference_mode() (it makes no parameter gradients and leaves the "
                "model unchanged)"
            )
        key = tuple(images.shape[1:])
        with ModelState(self.model):
            if self.requested_path != "exact" and self._problems.get((key, False)) is None:
                res = self._autograd_call(images, classes, masks, resolution, second_order=False)
                if res is None:  # ShapleyCAM above a curved head: again, the gradients carrying H·A as tangents
                    res = self._forward_over_reverse(key, images, classes, masks, resolution)
                if res is NEEDS_EXACT:  # the tangents cannot serve it: H·A by reverse-over-reverse, same graph
                    res = self._autograd_call(images, classes, masks, resolution, second_order=False)
                if res is not NEEDS_EXACT:
                    return res
            return self._exact_call(images, classes, masks, resolution)

    def _forward_over_reverse(self, key, images, classes, masks, resolution):
        """ShapleyCAM's second-order pass, or NEEDS_EXACT (recorded for `key`) where it cannot serve
        the model: an operation above the layer whose backward has no forward-mode derivative in
        torch (SiLU, GELU, …), or a reader of A the dual tensor does not reach (the check)."""
        try:
            with fwAD.dual_level():
                return self._autograd_call(images, classes, masks, resolution, second_order=True)
        except (NotImplementedError, RuntimeError) as err:
            if "forward AD" not in str(err) and "not implemented" not in str(err):
                raise
            self._problems[key, True] = f"no forward-mode derivative in torch: {err}"
            return NEEDS_EXACT

    def _check_fast_path(self, key: tuple, second_order: bool, images, start, activations, upsample) -> bool:
        """True when the fast path may explain inputs of shape `key`: verified once against the
        exact path (engine/exact.py), and once more for the second-order pass (whose dual tensor
        must reach every reader of A as the first-order leaf does). A failure warns once ("auto")
        or raises (a fast path asked for)."""
        if (key, second_order) not in self._problems:
            problem = verify(self, images, start, activations, upsample, second_order)
            if problem == INCONCLUSIVE:  # right for this batch; checked again on the next
                return True
            self._problems[key, second_order] = problem
            if problem is not None and self.requested_path in ("analytic", "autograd"):
                raise ValueError(f"gradient_path={self.requested_path!r} cannot explain target_layer "
                                 f"{self.layer_name!r} of this model exactly: {problem}. Use gradient_path='auto' or "
                                 "'exact' (plain autograd through the whole model)")
            if problem is not None and second_order:
                warnings.warn(f"target_layer {self.layer_name!r}: the forward-over-reverse pass for H·A is not exact "
                              f"for this model ({problem}); {list(key)} inputs take H·A by reverse-over-reverse, one "
                              "class at a time", stacklevel=4)
            elif problem is not None:
                warnings.warn(f"target_layer {self.layer_name!r}: the fast gradient path is not exact for this model "
                              f"({problem}); explaining {list(key)} inputs by plain autograd through the whole model "
                              "(gradient_path='exact')", stacklevel=4)
        return self._problems[key, second_order] is None

    def _exact_call(self, images, classes, masks, resolution: str) -> Explanation:
        """The exact path on checked `images`, inside ModelState: one forward with the graph from the
        input up, one VJP per class from the full-resolution logits to the layer's own output."""
        with ExitStack() as stack:
            ex = exact_pass(self, images, stack)
            logits = ex.logits
            class_ids = check_classes(classes, logits.shape[1], self.class_names)
            labels, seeds = labels_and_seeds(logits.detach(), None, class_ids, masks, None, self.backend)
            active = seeds.flatten(2).ne(0).any(dim=2)  # [B,K]
            output_size = tuple(logits.shape[-2:]) if resolution == "full" else None
            mix = None
            if self.spec.target_mix is not None:
                mix = self.spec.target_mix(logits.detach(), labels, class_ids, masks, self.options)
            maps = self._gradient_maps(ex.activations(), logits, ex.raw, seeds, class_ids, active, output_size, mix,
                                       to_activations=ex.gradients, reverse_hessian=self.spec.second_order)
        self.gradient_path = "exact"
        info = {"hessian": "H·A by reverse-over-reverse"} if self.spec.second_order else {}
        return self._result(maps, class_ids, labels, active, {
            "backward_start": "model output", "backward_passes": int(active.any(dim=0).sum()), "verified": True,
            **info})

    def _autograd_call(self, images, classes, masks, resolution, second_order: bool) -> Optional[Explanation]:
        """autograd_explain's graph pass on checked `images` float [B,C,H,W], inside ModelState: one
        forward with the graph from the target layer up, then the closed form if a linear head is
        found, else the class VJPs. second_order (the spec's second_order, ShapleyCAM, inside a
        forward_ad.dual_level): A enters as a dual tensor and the VJPs give g − ½·H·A. Returns None,
        after the forward only, when a second-order method without second_order finds an operation
        that may curve above the layer (it needs the second-order pass); without curvature H·A = 0
        and its first-order pass is exact.
        """
        key = tuple(images.shape[1:])
        with self.capture(leaf=True, tangent=second_order) as cap:
            with torch.enable_grad():
                logits = select_output(self.model(images), self.output_key, images.shape[0])
            activations = cap.activations()
            start, upsample = cap.backward_start(logits)
            if not start.requires_grad:
                raise ValueError(
                    f"target_layer {self.layer_name!r} is not on the path to the model output: "
                    "no gradient reaches it. Choose a layer whose output feeds the logits."
                )
            with cap.paused():  # the check runs the model again, without this pass's hooks
                if not self._check_fast_path(key, second_order, images, start, activations, upsample):
                    return NEEDS_EXACT
            head = None
            proven = (key, False) in self._problems  # (not after an inconclusive check: the head would skip the next)
            if self.requested_path != "autograd" and key not in self._heads and self.normalize and proven:
                self._heads[key] = head = cap.linear_head(start, upsample)
                if head is None and self.requested_path == "analytic":
                    raise ValueError(
                        f"gradient_path='analytic' needs target_layer {self.layer_name!r} to feed a 1×1 "
                        "convolution (eval-mode BatchNorm/Dropout allowed in between) whose output is the "
                        "logits or is bilinearly upsampled to them; none was found. Use "
                        "gradient_path='auto' or 'autograd', or target the input of the final classifier."
                    )
            if head is not None:
                outputs = ForwardPass.labelled(images, activations.detach(), logits.detach(), self.backend, head)
                return self.explain_outputs(outputs, classes, masks, resolution=resolution)
            info = {}
            reverse_hessian = False
            if self.spec.second_order:
                curved = not second_order and curved_operation(start, activations) is not None
                if curved and (key, True) not in self._problems:
                    return None  # try the forward-over-reverse pass first: batched over classes
                reverse_hessian = curved  # it failed: H·A by reverse-over-reverse on this (verified) graph
                info["hessian"] = ("H·A by forward-over-reverse" if second_order
                                   else "H·A by reverse-over-reverse" if curved
                                   else "zero: every operation above the layer is piecewise linear")
            self.gradient_path = "autograd"
            class_ids = check_classes(classes, logits.shape[1], self.class_names)
            labels, seeds = labels_and_seeds(logits.detach(), None, class_ids, masks, upsample, self.backend)
            active = seeds.flatten(2).ne(0).any(dim=2)  # [B,K]
            output_size = tuple(logits.shape[-2:]) if resolution == "full" else None
            mix = None  # a target combining several classes' scores: class k's cotangent at logit l is mix[b,k,l]·seed_k
            if self.spec.target_mix is not None:
                mix = self.spec.target_mix(logits.detach(), labels, class_ids, masks, self.options)
            maps = self._gradient_maps(activations.detach(), start, activations, seeds, class_ids, active, output_size,
                                       mix, second_order, reverse_hessian=reverse_hessian)
        return self._result(maps, class_ids, labels, active, {
            "backward_start": "logits before upsample" if upsample else "model output",
            "backward_passes": int(active.any(dim=0).sum()), "verified": True, **info})

    def plain_forward(self, images: torch.Tensor, head: Optional[LinearHead], labels: bool = True) -> ForwardPass:
        """A no-grad forward of checked `images`, keeping the activations, logits and (unless
        labels=False: the explanation then takes the argmax itself) the labels."""
        with ModelState(self.model), self.capture() as cap, torch.no_grad():
            logits = select_output(self.model(images), self.output_key, images.shape[0])
            activations = cap.activations()
        if not labels:
            return ForwardPass(images, activations, logits, head=head)
        return ForwardPass.labelled(images, activations, logits, self.backend, head)

    def capture(self, leaf: bool = False, tangent: bool = False, exact: bool = False) -> ForwardCapture:
        """The hooks of one forward pass at this explainer's target layer (see ForwardCapture)."""
        return ForwardCapture(self.model, self.target_layer, self.layer_name, self.use_input, leaf=leaf,
                              reshape=self.reshape, tangent=tangent, call=self.call, exact=exact)

    def check_images(self, images) -> torch.Tensor:
        """Checked images, moved to the model's device and converted to its float dtype (float64
        images for a float32 model, say: the conversion the model's first layer would demand)."""
        images = check_images(images, self._in_channels, ndims=(4, 5))
        if self._input_ndim is not None and images.ndim != self._input_ndim:
            kind = "volumes [B,C,D,H,W] (its first convolution is a Conv3d)" if self._input_ndim == 5 else \
                "images [B,C,H,W] (its first convolution is a Conv2d)"
            raise ValueError(f"images must match the model, which takes {kind}; got shape {list(images.shape)}")
        param = next(self.model.parameters(), None)
        if param is None:
            return images
        dtype = param.dtype if param.is_floating_point() else images.dtype
        return images.to(device=param.device, dtype=dtype)

    def cached_head(self, key: tuple) -> Optional[LinearHead]:
        """The cached linear head for input shape `key`, following the model's current weights
        (refolded when they changed, forgotten when its modules were replaced), or None."""
        with model_lock(self.model):
            head = self._heads.get(key)
            if head is not None:
                head = head.current(self.model)
                if head is None:
                    del self._heads[key]  # the next call finds and verifies the head again
                else:
                    self._heads[key] = head
            return head

    def linear_head(self, images: torch.Tensor) -> Optional[LinearHead]:
        """The verified linear head after the target layer for inputs shaped like `images`
        float [B,3,H,W] (runs one explanation if not yet known), or None when there is none."""
        key = tuple(images.shape[1:])
        if key not in self._heads:
            if self.requested_path == "autograd":
                return None
            self(images[:1], classes=[0], masks=torch.ones(1, 1, *images.shape[-2:], device=images.device))
        return self.cached_head(key)

    def _result(self, maps, class_ids, labels, active, info) -> Explanation:
        info = {"gradient_path": self.gradient_path, **info}
        return Explanation(maps=maps, classes=class_ids, labels=labels, active=active,
                           method=self.method, layer=self.layer_name, info=info, class_names=self.class_names)

    def _gradient_maps(self, A, start, leaf, seeds, class_ids, active, output_size, mix=None,
                       second_order: bool = False, to_activations=None,
                       reverse_hessian: bool = False) -> torch.Tensor:
        """Per-chunk VJPs and CAM stage → float32 [B,K,H,W] ((H, W) = output_size, None: A's (h, w)).

        A: the activations float [B,C,h,w]; start: logits [B,L,h',w'] computed from `leaf` (A itself
        on the fast path, the layer's own output on the exact one); seeds: float [B,K,h',w']
        cotangents of each class at `start`'s resolution; mix: None (class k's cotangent is seed_k
        at logit class_ids[k]) or float [B,K,L] (seed_k·mix[b,k,l] at every logit l: a target that
        combines several classes' scores); second_order: g − ½·H·A instead of g (A a dual tensor,
        see _autograd_call); to_activations: gradients at `leaf` [n,...] → at A [n,B,C,h,w];
        reverse_hessian: g − ½·H·A by reverse-over-reverse, one class at a time (no dual tensor).
        """
        B, K = active.shape
        H, W = output_size or tuple(A.shape[-2:])
        maps = torch.zeros(B, K, H, W, device=A.device, dtype=torch.float32)
        grad = None
        if second_order:
            def grad(start, leaves, cot):
                return [shapley_gradients(start, leaves[0], cot, self.vjp == "batched")]
        elif reverse_hessian:
            def grad(start, leaves, cot):
                return [shapley_gradients_reverse(start, leaves[0], cot, self.layer_name)]
        chunks = chunked_vjps(start, [leaf], seeds, class_ids, active, self._chunk_size(A, H * W),
                              self.vjp == "batched", mix, grad)
        for ks, (G,) in chunks:  # G [n,B,C,h,w]
            G = torch.zeros((len(ks),) + tuple(leaf.shape), device=A.device) if G is None else G
            if to_activations is not None:
                G = to_activations(G)
            if not torch.isfinite(G).all():
                raise FloatingPointError(
                    f"gradients at target_layer {self.layer_name!r} contain NaN or Inf "
                    f"(classes {[class_ids[k] for k in ks]})"
                )
            G = G.transpose(0, 1).contiguous()  # [B,n,C,h,w]
            maps[:, ks] = stage_cam(self.spec, self.options, A, G, output_size, self.backend, self.normalize)
        # Images whose region of a class is empty get exact zeros (their gradient was zero anyway).
        return maps * active[:, :, None, None]

    def _chunk_size(self, A: torch.Tensor, output_pixels: int) -> int:
        """Classes per chunk: the fixed class_chunk, else as many as fit max_memory_mb.

        Per class the chunk holds its cotangent-produced gradient B·C·h·w, roughly twice that again
        in backward temporaries (a stated estimate, not a measurement), and its maps B·H·W.
        """
        if self.class_chunk is not None:
            return self.class_chunk
        per_class = 4 * (3 * A.numel() + A.shape[0] * output_pixels)
        return max(1, int(self.max_memory_mb * 2**20 // per_class))
