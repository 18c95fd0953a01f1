"""The CAM methods the engine computes: one small spec each."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

_BATCH = (("batch_size", 32),)
_SCORE = (("score", "logit"),)
# Test-time augmentation (engine/combine.py): every gradient method takes it.
_AUG = (("aug_smooth", False),)
# Segment attributions (engine/segments.py): the input's segments (features) kept or replaced by
# a baseline in coalitions; every class scored on the same coalitions.
_SEGMENTS = (("features", "predicted"), ("n_segments", 64), ("baseline", 0.0))
_SAMPLES = (("seed", 0),) + _BATCH + _SCORE + (("context", False),)


@dataclass(frozen=True)
class MethodSpec:
    name: str
    needs_gradients: bool  # False: no gradient (Eigen-CAM's activations alone, or perturbed forwards)
    description: str
    family: str = "gradient"  # "gradient", "activation" (no gradient: Eigen-CAM, KPCA-CAM, FEM, RandomCAM), "perturbation" or "segment"
    needs_layer: bool = True  # False: input-space methods, which take target_layer=None
    options: tuple = ()  # ((name, default), ...): the keys of Explainer(options={...}), checked in options.py

    @property
    def perturbs(self) -> bool:
        """True for the families explained from perturbed forwards alone (no gradient, no layer
        replacement needed by the runtime): the perturbation family and segment attributions."""
        return self.family in ("perturbation", "segment")


_EIGEN = (("eigen_smooth", False),)  # the CAM replaced by the first principal component of its terms


_SPECS = (
    MethodSpec("gradcam", True, "Grad-CAM: channels weighted by their mean gradient (Selvaraju et al. 2017)",
               options=_AUG + _EIGEN),
    MethodSpec("gradcam++", True, "Grad-CAM++: positive gradients weighted by 1/(2 + S·g) (Chattopadhyay et al. 2018)",
               options=_AUG + _EIGEN),
    MethodSpec("xgradcam", True, "XGrad-CAM: channels weighted by Σ A·g / Σ A (Fu et al. 2020)", options=_AUG + _EIGEN),
    MethodSpec("hirescam", True, "HiResCAM: element-wise Σ_c g⊙A, faithful to the target (Draelos & Carin 2020)",
               options=_AUG + _EIGEN),
    MethodSpec("layercam", True, "LayerCAM: element-wise Σ_c relu(g)⊙A (Jiang et al. 2021)", options=_AUG + _EIGEN),
    MethodSpec("gradcam_elementwise", True, "Grad-CAM element-wise: Σ_c relu(g⊙A), pytorch-grad-cam's "
               "GradCAMElementWise (Gildenblat et al. 2021)", options=_AUG + _EIGEN),
    MethodSpec("segxrescam", True, "Seg-XRes-CAM: HiResCAM with the gradients max- or mean-pooled in s×s windows "
               "(Hasany et al. 2023)", options=(("pool", 2), ("reduce", "max")) + _AUG + _EIGEN),
    MethodSpec("eigengradcam", True, "Eigen-Grad-CAM: first principal component of g⊙A (Gildenblat et al. 2021, "
               "after Muhammad & Yeasin 2020)", options=_AUG),
    MethodSpec("segeigencam", True, "Seg-Eigen-CAM: first principal component of |g|⊙A, sign-corrected "
               "(Chung & Ying 2025)", options=_AUG),
    MethodSpec("finercam", True, "Finer-CAM: the target's region score minus α times those of its most similar "
               "classes, explained by a base method (Zhang et al. 2025)",
               options=(("alpha", 1.0), ("comparison_categories", (1, 2, 3)), ("base_method", "gradcam")) + _EIGEN),
    MethodSpec("shapleycam", True, "ShapleyCAM: channels weighted by the mean of g − ½·H·A, the gradient and the "
               "Hessian-vector product along A (Cai 2025)", options=_AUG),
    MethodSpec("fullgrad", True, "FullGrad: |x·∂S/∂x| plus |b·∂S/∂z| of every Conv2d/BatchNorm2d bias, each "
               "channel min-max normalised, summed (Srinivas & Fleuret 2019)", needs_layer=False, options=_AUG),
    MethodSpec("eigencam", False, "Eigen-CAM: first principal component of the activations, class-agnostic (Muhammad & Yeasin 2020)",
               "activation"),
    MethodSpec("kpcacam", False, "KPCA-CAM: first kernel principal component of the activations, class-agnostic "
               "(Karmani et al. 2024)", "activation", options=(("kernel", "sigmoid"), ("gamma", None))),
    MethodSpec("fem", False, "FEM: channels weighted by the share of positions above mean + k·std, class-agnostic "
               "(Fuad et al. 2020)", "activation", options=(("k", 2),)),
    MethodSpec("randomcam", False, "RandomCAM: random channel weights uniform in (-1, 1), a sanity-check baseline "
               "(pytorch-grad-cam's RandomCAM)", "activation", options=(("seed", 0),) + _EIGEN),
    MethodSpec("scorecam", False, "Score-CAM: channels weighted by the softmax of the scores of the input masked by each "
               "channel (Wang et al. 2020)", "perturbation", options=_BATCH + _SCORE),
    MethodSpec("ablationcam", False, "Ablation-CAM: channels weighted by the score drop when each is ablated "
               "(Desai & Ramaswamy 2020)", "perturbation", options=_BATCH + _SCORE),
    MethodSpec("rise", False, "RISE: the mean of random smooth input masks weighted by their scores "
               "(Petsiuk et al. 2018)", "perturbation", needs_layer=False,
               options=(("n_masks", 4000), ("grid", 7), ("p", 0.5), ("seed", 0)) + _BATCH + _SCORE),
    MethodSpec("occlusion", False, "Occlusion: the score drop when a sliding window of the input is replaced by a "
               "baseline (Zeiler & Fergus 2014)", "perturbation", needs_layer=False,
               options=(("window", 16), ("stride", 8), ("baseline", 0.0)) + _BATCH + _SCORE),
    MethodSpec("featureablation", False, "Feature ablation: the score drop when each segment alone is replaced by a "
               "baseline (captum's FeatureAblation; Zeiler & Fergus 2014)", "segment", needs_layer=False,
               options=_SEGMENTS + _BATCH + _SCORE + (("context", False),)),
    MethodSpec("kernelshap", False, "Kernel SHAP: Shapley values of the segments by weighted least squares on "
               "sampled coalitions, exact when all are enumerated (Lundberg & Lee 2017)", "segment",
               needs_layer=False, options=_SEGMENTS + (("n_samples", 2048),) + _SAMPLES),
    MethodSpec("lime", False, "LIME: a weighted linear surrogate of the scores on random coalitions of segments "
               "(Ribeiro et al. 2016)", "segment", needs_layer=False,
               options=_SEGMENTS + (("n_samples", 1024), ("kernel_width", 0.25)) + _SAMPLES),
)
METHODS = {spec.name: spec for spec in _SPECS}
#: The CAM stage a method shares once its gradients are formed: ShapleyCAM is Grad-CAM on g − ½·H·A
#: (on g itself when nothing above the layer curves, engine/curvature.py).
CAM_STAGE_OF = {"shapleycam": "gradcam"}


def methods() -> dict[str, str]:
    """Every supported method name with a one-line description."""
    return {spec.name: spec.description for spec in _SPECS}


def method_options(name: str) -> dict:
    """The options method `name` takes (``Explainer(options={...})``) with their defaults."""
    return dict(get_method(name).options)


def get_method(name: str) -> MethodSpec:
    """The spec of method `name`, or a ValueError listing the valid names."""
    if not isinstance(name, str) or name.lower() not in METHODS:
        raise ValueError(f"method must be one of {sorted(METHODS)}, got {name!r}")
    return METHODS[name.lower()]


def check_layer(method: str, target_layer) -> None:
    """target_layer must be given to the layer methods and None for the input-space ones."""
    spec = get_method(method)
    if spec.needs_layer and target_layer is None:
        raise ValueError(f"target_layer is required for method {spec.name!r} (a module or its dotted name), got None")
    if not spec.needs_layer and target_layer is not None:
        raise ValueError(f"target_layer must be None for method {spec.name!r}, which works on the input, "
                         f"got {target_layer!r}")


def layer_for(method: str, layer):
    """The target_layer argument `method` takes: `layer` for the layer methods, None for the
    input-space ones (so that one --layer serves a command explaining with several methods)."""
    return layer if get_method(method).needs_layer else None


def options_for(method: str, options: Optional[dict]) -> dict:
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
