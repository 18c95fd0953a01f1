"""The method registry: one `Method` object per explanation method, carrying its behaviour.

A method's spec says everything the engine, the runtimes, the command line, bench, evaluate and
the report need to know about it: its family and the family's runner (the function that explains
a batch), how its gradients become maps (a fused kernel id, a weights or CAM function, a closed
form for linear heads), whether its maps are class-specific, whether it needs a target layer, its
options with their defaults, which runtimes serve it (and why not where one does not) and the
peer it is benchmarked against. The built-in methods are registered by engine/catalog.py; users
add theirs with `register_method` (or an entry point in the group ``seg_xai_fast.methods``).
Nothing outside this module, the catalog and the kernel dispatch compares method names.
"""
from __future__ import annotations

import importlib
import inspect
import os
import sys
import threading
from dataclasses import dataclass, field
from typing import Callable, Optional

import torch

#: The method families: gradient CAMs (and FullGrad), CAMs from activations alone, perturbation
#: methods (perturbed forwards, no gradient), segment attributions and input-gradient attributions.
FAMILIES = ("gradient", "activation", "perturbation", "segment", "attribution")
#: The runtimes an explainer can run on.
RUNTIMES = ("torch", "onnxruntime")
#: The entry-point group through which installed packages register methods.
ENTRY_POINT_GROUP = "seg_xai_fast.methods"


@dataclass(frozen=True)
class Method:
    """One explanation method.

    name, description, family (one of FAMILIES).
    runner(explainer, forwards, images, classes, masks, resolution) -> Explanation: explains a
      checked batch; `explainer` has the settings (spec, options, backend, normalize,
      max_memory_mb, layer_name, class_names), `forwards` is its runtime's forwards object.
      None: the family's runner (set_family_runner; engine/catalog.py sets them).
    options: ((name, default), ...), the keys of ``Explainer(options={...})``; checks: {name:
      check(key, value) -> value} for options not in engine/options.py's shared table.
    needs_layer: False for input-space methods (target_layer=None).
    class_specific: False when every class gets the same map (Eigen-CAM, KPCA-CAM, FEM).

    Gradient methods (one of these says how the gradients G [B,K,C,h,w] at the layer's
    activations A [B,C,h,w] become the raw map [B,K,h,w]):
    kernel: the id of the fused CAM stage (kernels.cam_from_gradients) — built-ins only;
    weights(A, G, **options) -> [B,K,C]: channel weights, map Σ_c w_kc·A_c (pytorch-grad-cam's
      get_cam_weights);
    cam(A, G, **options) -> [B,K,h,w]: the raw map itself;
    stage(options) -> str: the name of another method whose CAM stage this one uses
      (ShapleyCAM → gradcam on corrected gradients, Finer-CAM → its base method).
    closed_form(A [B,C,N], W [B|1,K,C], R [B,K,N], seeds [B,K,h,w], options, backend,
      max_memory_mb) -> (weights [B,K,C] or None, raw [B,K,N] or None): the CAM of a linear head
      without forming G; None: G = W_kc·R_k is formed in class chunks.
    second_order: ShapleyCAM's g − ½·H·A (engine/curvature.py).
    target_mix(logits, labels, class_ids, masks, options) -> [B,K,L]: a target that combines
      several classes' region scores (Finer-CAM); None: class k's own region score.

    Activation methods: activation_weights(A, class_ids, num_classes, options) -> [B,K',C]
      (K' = 1 for a class-agnostic map) or activation_cam(A, options) -> [B,1,h,w].
    Perturbation and segment methods: perturb, the family's per-method step (see
      engine/perturbation.py and engine/segments.py).
    Attribution methods (gradients to the input, engine/attributions.py): attribute(options) ->
      Plan, what the family's runner computes (path steps, multiplier, noise, backward rules).

    unavailable: ((runtime, reason), ...) for the runtimes that cannot serve the method.
    peer: ("pytorch_grad_cam", class name) or ("captum", class name): the peer bench times.
    builtin: False for methods registered by users.
    """

    name: str
    description: str
    family: str
    runner: Optional[Callable] = None
    options: tuple = ()
    checks: dict = field(default_factory=dict)
    needs_layer: bool = True
    class_specific: bool = True
    kernel: Optional[str] = None
    weights: Optional[Callable] = None
    cam: Optional[Callable] = None
    stage: Optional[Callable] = None
    closed_form: Optional[Callable] = None
    second_order: bool = False
    target_mix: Optional[Callable] = None
    activation_weights: Optional[Callable] = None
    activation_cam: Optional[Callable] = None
    perturb: Optional[Callable] = None
    attribute: Optional[Callable] = None
    unavailable: tuple = ()
    peer: Optional[tuple] = None
    builtin: bool = True

    @property
    def needs_gradients(self) -> bool:
        """True for the gradient family (gradient CAMs and FullGrad) and the input attributions."""
        return self.family in ("gradient", "attribution")

    @property
    def takes_volumes(self) -> bool:
        """True when the method explains 3-D volumes [B,C,D,H,W] as well as images (the attribution
        family)."""
        return self.family == "attribution"

    @property
    def perturbs(self) -> bool:
        """True for the families explained from perturbed forwards alone (no gradient, no layer
        replacement needed by the runtime): the perturbation family and segment attributions."""
        return self.family in ("perturbation", "segment")

    @property
    def one_forward(self) -> bool:
        """True when the maps follow from one forward pass's outputs (activations and logits):
        the activation methods, and the layer gradient methods through a linear head's closed form."""
        return self.family in ("gradient", "activation") and self.needs_layer

    @property
    def takes_layer_list(self) -> bool:
        """Several target layers combine the maps of the gradient methods with a layer."""
        return self.family == "gradient" and self.needs_layer

    def run(self, explainer, forwards, images, classes, masks, resolution: str):
        """Explain checked `images` [B,C,H,W] with this method's runner (see the class docstring)."""
        return (self.runner or _FAMILY_RUNNERS[self.family])(explainer, forwards, images, classes, masks, resolution)

    def stage_method(self, options: dict) -> "Method":
        """The method whose CAM stage turns this method's gradients into maps (itself, or the one
        its `stage` names for these options)."""
        return get_method(self.stage(options)) if self.stage is not None else self

    def unavailable_on(self, runtime: str) -> Optional[str]:
        """Why `runtime` cannot serve this method, or None when it can."""
        return dict(self.unavailable).get(runtime)


_REGISTRY: dict[str, Method] = {}
_FAMILY_RUNNERS: dict[str, Callable] = {}
_LOCK = threading.Lock()
_entry_points_loaded = False


def set_family_runner(family: str, runner: Callable) -> None:
    """The runner of the methods of `family` that do not bring their own (engine/catalog.py)."""
    if family not in FAMILIES:
        raise ValueError(f"family must be one of {FAMILIES}, got {family!r}")
    _FAMILY_RUNNERS[family] = runner


#: What each family's runner needs from a spec that brings no runner of its own.
_BEHAVIOUR = {
    "gradient": ("kernel", "weights", "cam", "stage"),
    "activation": ("activation_weights", "activation_cam"),
    "perturbation": ("perturb",),
    "segment": ("perturb",),
    "attribution": ("attribute",),
}


def add_method(spec: Method) -> Method:
    """Register `spec` (built-in or user); a name registered twice, or a spec that does not say how
    its family's runner should explain with it, is an error."""
    if not isinstance(spec, Method):
        raise TypeError(f"add_method takes a Method, got {type(spec).__name__}")
    if spec.family not in FAMILIES:
        raise ValueError(f"method {spec.name!r}: family must be one of {FAMILIES}, got {spec.family!r}")
    needs = _BEHAVIOUR[spec.family]
    if spec.runner is None and not any(getattr(spec, key) is not None for key in needs):
        raise ValueError(f"method {spec.name!r} ({spec.family} family) must give one of {list(needs)} (or its own "
                         "runner): without it the family's runner does not know what the method computes")
    with _LOCK:
        if spec.name in _REGISTRY:
            raise ValueError(f"method {spec.name!r} is already registered ({'built-in' if _REGISTRY[spec.name].builtin else 'by a user'}); "
                             "choose another name")
        _REGISTRY[spec.name] = spec
    return spec


def remove_method(name: str) -> None:
    """Unregister a user method (tests, notebooks re-running a cell); built-ins cannot be removed."""
    spec = get_method(name)
    if spec.builtin:
        raise ValueError(f"method {name!r} is built in and cannot be removed")
    with _LOCK:
        del _REGISTRY[spec.name]


def register_method(name: str, *, weights: Optional[Callable] = None, cam: Optional[Callable] = None,
                    description: str = "", options: Optional[dict] = None, class_specific: bool = True) -> Method:
    """Register a gradient CAM method of your own, explained like the built-ins: every class from one
    forward pass and the batched VJPs (or a linear head's gradients), with targets, class chunks,
    normalisation, ONNX Runtime where the closed form applies, video, batch jobs and reports.

    Give exactly one of
      weights(activations [B,C,h,w], gradients [B,K,C,h,w]) -> [B,K,C]: channel weights, the map
        being Σ_c w_kc·A_c (as pytorch-grad-cam's ``get_cam_weights``, batched over classes);
      cam(activations [B,C,h,w], gradients [B,K,C,h,w]) -> [B,K,h,w]: the raw (signed) map.
    options: {name: default} passed to the function as keyword arguments (``Explainer(options=...)``
    and ``--option KEY=VALUE`` set them). Returns the registered Method.
    """
    if not isinstance(name, str) or not name or name != name.strip() or ":" in name:
        raise ValueError(f"register_method: name must be a non-empty string without spaces at its ends or ':', "
                         f"got {name!r}")
    if (weights is None) == (cam is None):
        raise TypeError(f"register_method({name!r}): give exactly one of weights= or cam=, got "
                        f"{'both' if weights is not None else 'neither'}")
    function, what = (weights, "weights") if weights is not None else (cam, "cam")
    options = {} if options is None else options
    if not isinstance(options, dict) or not all(isinstance(k, str) for k in options):
        raise TypeError(f"register_method({name!r}): options must be a dict {{name: default}}, got {options!r}")
    _check_signature(name, what, function, options)
    if not isinstance(class_specific, bool):
        raise TypeError(f"register_method({name!r}): class_specific must be True or False, got {class_specific!r}")
    spec = Method(name.lower(), description or f"user method {name!r} ({what} function)", "gradient",
                  options=tuple(options.items()), class_specific=class_specific,
                  weights=_checked_output(name, weights, "weights") if weights is not None else None,
                  cam=_checked_output(name, cam, "cam") if cam is not None else None, builtin=False)
    return add_method(spec)


def _checked_output(name: str, function: Callable, what: str) -> Callable:
    """`function` wrapped so that a wrong result is an error naming the method: weights must be
    [B,K,C], a cam [B,K,h,w], float and finite."""

    def checked(activations, gradients, **options):
        B, K, C = gradients.shape[:3]
        want = (B, K, C) if what == "weights" else (B, K) + tuple(gradients.shape[3:])
        out = function(activations, gradients, **options)
        if not isinstance(out, torch.Tensor):
            raise TypeError(f"method {name!r}: its {what} function must return a torch.Tensor {list(want)}, "
                            f"got {type(out).__name__}")
        if tuple(out.shape) != want:
            dims = "[B,K,C]" if what == "weights" else "[B,K,h,w]"
            raise ValueError(f"method {name!r}: its {what} function must return {dims} = {list(want)} for activations "
                             f"{list(activations.shape)} and gradients {list(gradients.shape)}, got {list(out.shape)}")
        if not out.is_floating_point():
            raise TypeError(f"method {name!r}: its {what} function must return a float tensor, got {out.dtype}")
        return out

    checked.__wrapped__ = function
    return checked


def _check_signature(name: str, what: str, function, options: dict) -> None:
    """`function` must be callable as function(activations, gradients, **options)."""
    if not callable(function):
        raise TypeError(f"register_method({name!r}): {what} must be callable, got {type(function).__name__}")
    try:
        inspect.signature(function).bind(None, None, **options)
    except TypeError as err:
        raise TypeError(f"register_method({name!r}): {what} must take (activations, gradients"
                        f"{''.join(', ' + k + '=…' for k in options)}), but {function!r} does not ({err})") from None
    except ValueError:  # no signature to inspect (a builtin): checked by the first call
        pass


def load_method(reference: str) -> Method:
    """A method named 'package.module:NAME': the module is imported (it registers NAME, or defines
    NAME as a weights function to register) and the method returned."""
    module_name, _, attr = reference.partition(":")
    if not module_name or not attr:
        raise ValueError(f"method must be a name or 'package.module:NAME', got {reference!r}")
    try:
        module = _import(module_name)
    except ImportError as err:
        raise ValueError(f"method {reference!r}: cannot import module {module_name!r} ({err})") from None
    if attr.lower() in _REGISTRY:
        return _REGISTRY[attr.lower()]
    obj = getattr(module, attr, None)
    if isinstance(obj, Method):
        return obj if obj.name in _REGISTRY else add_method(obj)
    if callable(obj):  # a bare weights function: registered under its attribute name
        return register_method(attr, weights=obj, description=f"{reference} (weights function)")
    raise ValueError(f"method {reference!r}: module {module_name!r} neither registers a method {attr!r} nor defines "
                     f"a weights function of that name")


def _import(module_name: str):
    """importlib.import_module, also from the working directory (as `python -m` would find it; a
    console script's sys.path starts at its own folder instead)."""
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        cwd = os.getcwd()
        if err.name != module_name.split(".")[0] or cwd in sys.path:
            raise
        sys.path.append(cwd)
        return importlib.import_module(module_name)


def _load_entry_points() -> None:
    """Register the methods installed packages declare in the ``seg_xai_fast.methods`` group (once):
    each entry point loads to a Method, or to a weights function registered under the entry's name."""
    global _entry_points_loaded
    if _entry_points_loaded:
        return
    _entry_points_loaded = True
    from importlib.metadata import entry_points

    for entry in entry_points(group=ENTRY_POINT_GROUP):
        if entry.name.lower() in _REGISTRY:
            continue
        try:
            obj = entry.load()
        except Exception as err:  # a broken plug-in must not break the built-ins: say which and go on
            import warnings

            warnings.warn(f"seg_xai_fast: the method entry point {entry.name!r} ({entry.value}) failed to load: {err}",
                          stacklevel=2)
            continue
        if isinstance(obj, Method):
            add_method(obj)
        elif callable(obj):
            register_method(entry.name, weights=obj, description=f"{entry.value} (entry point)")


def registered() -> dict[str, Method]:
    """Every registered method by name (built-ins, entry points, user registrations)."""
    _load_entry_points()
    return dict(sorted(_REGISTRY.items()))


def methods() -> dict[str, str]:
    """Every supported method name with a one-line description."""
    return {name: spec.description for name, spec in registered().items()}


def method_options(name: str) -> dict:
    """The options method `name` takes (``Explainer(options={...})``) with their defaults."""
    return dict(get_method(name).options)


def get_method(name) -> Method:
    """The spec of method `name` (a name, 'package.module:NAME', or a Method), or a ValueError
    listing the valid names."""
    if isinstance(name, Method):
        return name
    if isinstance(name, str):
        key = name.lower()
        if key in _REGISTRY:
            return _REGISTRY[key]
        if ":" in name:
            return load_method(name)
        _load_entry_points()
        if key in _REGISTRY:
            return _REGISTRY[key]
    raise ValueError(f"method must be one of {sorted(registered())} (or 'package.module:NAME' of a registered "
                     f"method), got {name!r}")


def check_layer(method, target_layer) -> None:
    """target_layer must be given to the layer methods and None for the input-space ones."""
    spec = get_method(method)
    if spec.needs_layer and target_layer is None:
        raise ValueError(f"target_layer is required for method {spec.name!r} (a module or its dotted name), got None")
    if not spec.needs_layer and target_layer is not None:
        raise ValueError(f"target_layer must be None for method {spec.name!r}, which works on the input, "
                         f"got {target_layer!r}")


def layer_for(method, layer):
    """The target_layer argument `method` takes: `layer` for the layer methods, None for the
    input-space ones (so that one --layer serves a command explaining with several methods)."""
    return layer if get_method(method).needs_layer else None


def options_for(method, options: Optional[dict]) -> dict:
    """The entries of `options` that `method` takes (one --option list serves several methods)."""
    valid = dict(get_method(method).options)
    return {key: value for key, value in (options or {}).items() if key in valid}


def check_options_used(methods, options: Optional[dict]) -> None:
    """Every option must be an option of at least one of `methods`."""
    known = {key for name in methods for key, _ in get_method(name).options}
    unused = sorted(set(options or {}) - known)
    if unused:
        raise ValueError(f"options {unused} are not options of {', '.join(map(repr, methods))}; valid options: "
                         f"{sorted(known) if known else 'none'}")


def names(family: Optional[str] = None, **flags) -> tuple:
    """The registered method names of `family` (None: all) whose spec attributes equal `flags`
    (e.g. names("gradient", needs_layer=True))."""
    return tuple(name for name, spec in registered().items()
                 if (family is None or spec.family == family)
                 and all(getattr(spec, key) == value for key, value in flags.items()))
