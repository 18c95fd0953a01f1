"""The built-in methods: one spec each, with the behaviour the engine runs (engine/methods.py).

Each family's runner is set once here; a method brings its own runner only where its family's
does not serve it (FullGrad differentiates to the input). Options are ((name, default), ...);
engine/options.py checks them by name.
"""
from __future__ import annotations

from dataclasses import replace

from ..kernels import reference
from . import analytic, method_maths
from . import attributions as attr
from .backward_rules import deeplift_rules, relu_rule
from .lrp import LRP_CANONIZERS, LRP_COMPOSITES, lrp_rules
from .fullgrad import explain_fullgrad
from .gradients import explain_gradients
from .methods import Method, add_method, set_family_runner
from .outputs import explain_one_forward, finer_coefficients
from .perturbation import ablationcam_weights, explain_perturbation, occlusion_maps, rise_maps, scorecam_weights
from .segments import explain_segments, featureablation_attributions, kernelshap_attributions, lime_attributions

set_family_runner("gradient", explain_gradients)
set_family_runner("activation", explain_one_forward)
set_family_runner("perturbation", explain_perturbation)
set_family_runner("segment", explain_segments)
set_family_runner("attribution", attr.explain_attributions)

_BATCH = (("batch_size", 32),)
_SCORE = (("score", "logit"),)
_AUG = (("aug_smooth", False),)  # test-time augmentation (engine/combine.py): every gradient method takes it
_EIGEN = (("eigen_smooth", False),)  # the CAM replaced by the first principal component of its terms
# Segment attributions: the input's segments (features) kept or replaced by a baseline in
# coalitions; every class scored on the same coalitions.
_SEGMENTS = (("features", "predicted"), ("n_segments", 64), ("baseline", 0.0))
_SAMPLES = (("seed", 0),) + _BATCH + _SCORE + (("context", False),)
_NO_LAYER_IN_GRAPH = ("onnxruntime", "it replaces the target layer's output inside the model, which an ONNX Runtime "
                      "graph does not allow: explain the PyTorch model with sx.Explainer, or use 'scorecam', 'rise' "
                      "or 'occlusion'")
_NO_INPUT_GRADIENT = ("onnxruntime", "it differentiates down to the input, and ONNX Runtime computes no gradients: "
                      "explain the PyTorch model with sx.Explainer (--runtime torch)")


def _gradcam(name, description, kernel, closed_form=None, options=_AUG + _EIGEN, peer=None):
    return Method(name, description, "gradient", kernel=kernel, closed_form=closed_form, options=options,
                  peer=("pytorch_grad_cam", peer) if peer else None)


def _activation(name, description, peer, class_specific=False, **behaviour):
    return Method(name, description, "activation", class_specific=class_specific,
                  peer=("pytorch_grad_cam", peer), **behaviour)


def _finer_stage(options: dict) -> str:
    return options["base_method"]


# --- the attribution family (engine/attributions.py): each method's Plan from its options
_ABS = (("abs", True),)
_IG = (("n_steps", 50), ("baseline", 0.0), ("method", "gausslegendre"))
_NT = (("base", "saliency"), ("nt_type", "smoothgrad"), ("nt_samples", 5), ("stdevs", 1.0), ("seed", 0))


def _saliency_plan(o: dict) -> attr.Plan:
    return attr.Plan(abs=o["abs"])


def _inputxgradient_plan(o: dict) -> attr.Plan:
    return attr.Plan(multiply=True, baseline=0.0)


def _ig_plan(o: dict) -> attr.Plan:
    alphas, weights = attr.integration_points(o["method"], o["n_steps"])
    return attr.Plan(alphas=alphas, weights=weights, multiply=True, baseline=o["baseline"])


#: The methods SmoothGrad's noise tunnel runs over (its "base" option).
_NT_BASES = {"saliency": _saliency_plan, "inputxgradient": _inputxgradient_plan, "integratedgradients": _ig_plan}


def _smoothgrad_plan(o: dict) -> attr.Plan:
    noise = attr.Noise(attr.NT_AGGREGATES[o["nt_type"]], o["nt_samples"], o["stdevs"], o["seed"])
    return replace(_NT_BASES[o["base"]](o), noise=noise)


_ATTR_CHECKS = {
    "abs": attr.check_flag, "baseline": attr.check_attr_baseline, "n_steps": attr.check_count("path steps"),
    "method": attr.check_choice(attr.INTEGRATION_METHODS, "captum's integration methods"),
    "nt_type": attr.check_choice(attr.NT_TYPES, "captum's NoiseTunnel types"),
    "nt_samples": attr.check_count("noise samples per image"), "stdevs": attr.check_stdevs,
    "base": attr.check_choice(tuple(_NT_BASES), "the method under the noise"),
    "batch_size": attr.check_count("inputs per forward pass: path steps × noise samples × images"),
    "composite": attr.check_choice(LRP_COMPOSITES, "zennit's LRP composites"),
    "canonizer": attr.check_choice(LRP_CANONIZERS, "batch norm merged into the convolution before it, or not"),
    "epsilon": attr.check_positive, "gamma": attr.check_positive, "low": attr.check_float, "high": attr.check_float,
}


def _attribution(name, description, plan, options=(), peer=None, **behaviour):
    return Method(name, description, "attribution", attribute=plan, needs_layer=behaviour.pop("needs_layer", False),
                  options=options + _BATCH, checks=_ATTR_CHECKS, unavailable=(_NO_INPUT_GRADIENT,),
                  peer=("captum", peer) if peer else None, **behaviour)


def _guided_plan(o: dict) -> attr.Plan:
    return attr.Plan(rules=relu_rule("guided"))


def _deconvolution_plan(o: dict) -> attr.Plan:
    return attr.Plan(rules=relu_rule("deconv"))


def _deeplift_plan(o: dict) -> attr.Plan:
    # the inputs (α = 1) and the baselines (α = 0) in one forward; only the inputs' gradients count
    return attr.Plan(alphas=(1.0, 0.0), weights=(1.0, 0.0), multiply=True, baseline=o["baseline"],
                     rules=deeplift_rules(), paired=True)


def _lrp_plan(o: dict) -> attr.Plan:
    return attr.Plan(rules=lrp_rules(o), times_output=True)


_LRP = (("composite", "epsilon_plus_flat"), ("canonizer", "merge_batchnorm"), ("epsilon", 1e-6), ("gamma", 0.25),
        ("low", 0.0), ("high", 1.0))


for _spec in (
    _gradcam("gradcam", "Grad-CAM: channels weighted by their mean gradient (Selvaraju et al. 2017)", "gradcam",
             analytic.gradcam_closed_form, peer="GradCAM"),
    _gradcam("gradcam++", "Grad-CAM++: positive gradients weighted by 1/(2 + S·g) (Chattopadhyay et al. 2018)",
             "gradcam++", analytic.gradcampp_closed_form, peer="GradCAMPlusPlus"),
    _gradcam("xgradcam", "XGrad-CAM: channels weighted by Σ A·g / Σ A (Fu et al. 2020)", "xgradcam",
             analytic.xgradcam_closed_form, peer="XGradCAM"),
    _gradcam("hirescam", "HiResCAM: element-wise Σ_c g⊙A, faithful to the target (Draelos & Carin 2020)", "hirescam",
             analytic.hirescam_closed_form, peer="HiResCAM"),
    _gradcam("layercam", "LayerCAM: element-wise Σ_c relu(g)⊙A (Jiang et al. 2021)", "layercam",
             analytic.layercam_closed_form, peer="LayerCAM"),
    _gradcam("gradcam_elementwise", "Grad-CAM element-wise: Σ_c relu(g⊙A), pytorch-grad-cam's GradCAMElementWise "
             "(Gildenblat et al. 2021)", "gradcam_elementwise", peer="GradCAMElementWise"),
    # No peer class: pytorch-grad-cam has no Seg-XRes-CAM (bench compares it with its HiResCAM row).
    _gradcam("segxrescam", "Seg-XRes-CAM: HiResCAM with the gradients max- or mean-pooled in s×s windows "
             "(Hasany et al. 2023)", "segxrescam", analytic.segxrescam_closed_form,
             options=(("pool", 2), ("reduce", "max")) + _AUG + _EIGEN),
    _gradcam("eigengradcam", "Eigen-Grad-CAM: first principal component of g⊙A (Gildenblat et al. 2021, after "
             "Muhammad & Yeasin 2020)", "eigengradcam", options=_AUG, peer="EigenGradCAM"),
    _gradcam("segeigencam", "Seg-Eigen-CAM: first principal component of |g|⊙A, sign-corrected (Chung & Ying 2025)",
             "segeigencam", options=_AUG, peer="SegEigenCAM"),
    # No peer row: the peer's Finer-CAM needs a classifier's output.
    Method("finercam", "Finer-CAM: the target's region score minus α times those of its most similar classes, "
           "explained by a base method (Zhang et al. 2025)", "gradient", stage=_finer_stage,
           target_mix=finer_coefficients,
           options=(("alpha", 1.0), ("comparison_categories", (1, 2, 3)), ("base_method", "gradcam")) + _EIGEN),
    Method("shapleycam", "ShapleyCAM: channels weighted by the mean of g − ½·H·A, the gradient and the "
           "Hessian-vector product along A (Cai 2025)", "gradient", stage=lambda options: "gradcam",
           second_order=True, options=_AUG, peer=("pytorch_grad_cam", "ShapleyCAM")),
    Method("fullgrad", "FullGrad: |x·∂S/∂x| plus |b·∂S/∂z| of every Conv2d/BatchNorm2d bias, each channel min-max "
           "normalised, summed (Srinivas & Fleuret 2019)", "gradient", runner=explain_fullgrad, needs_layer=False,
           options=_AUG, unavailable=(_NO_INPUT_GRADIENT,), peer=("pytorch_grad_cam", "FullGrad")),
    _activation("eigencam", "Eigen-CAM: first principal component of the activations, class-agnostic (Muhammad & "
                "Yeasin 2020)", "EigenCAM", activation_cam=lambda A, options: reference.eigen_cam(A).unsqueeze(1)),
    _activation("kpcacam", "KPCA-CAM: first kernel principal component of the activations, class-agnostic (Karmani "
                "et al. 2024)", "KPCA_CAM", options=(("kernel", "sigmoid"), ("gamma", None)),
                activation_cam=lambda A, options: method_maths.kpca_projection(
                    A, options["kernel"], options["gamma"]).unsqueeze(1)),
    _activation("fem", "FEM: channels weighted by the share of positions above mean + k·std, class-agnostic (Fuad "
                "et al. 2020)", "FEM", options=(("k", 2),),
                activation_weights=lambda A, classes, num_classes, options: method_maths.fem_weights(
                    A, options["k"]).unsqueeze(1)),
    _activation("randomcam", "RandomCAM: random channel weights uniform in (-1, 1), a sanity-check baseline "
                "(pytorch-grad-cam's RandomCAM)", "RandomCAM", class_specific=True, options=(("seed", 0),) + _EIGEN,
                activation_weights=lambda A, classes, num_classes, options: method_maths.random_weights(
                    num_classes, A.shape[1], options["seed"])[list(classes)].to(A.device)
                .unsqueeze(0).expand(A.shape[0], -1, -1)),
    Method("scorecam", "Score-CAM: channels weighted by the softmax of the scores of the input masked by each channel "
           "(Wang et al. 2020)", "perturbation", perturb=scorecam_weights, options=_BATCH + _SCORE,
           peer=("pytorch_grad_cam", "ScoreCAM")),
    Method("ablationcam", "Ablation-CAM: channels weighted by the score drop when each is ablated (Desai & "
           "Ramaswamy 2020)", "perturbation", perturb=ablationcam_weights, options=_BATCH + _SCORE,
           unavailable=(_NO_LAYER_IN_GRAPH,), peer=("pytorch_grad_cam", "AblationCAM")),
    Method("rise", "RISE: the mean of random smooth input masks weighted by their scores (Petsiuk et al. 2018)",
           "perturbation", perturb=rise_maps, needs_layer=False,
           options=(("n_masks", 4000), ("grid", 7), ("p", 0.5), ("seed", 0)) + _BATCH + _SCORE),
    Method("occlusion", "Occlusion: the score drop when a sliding window of the input is replaced by a baseline "
           "(Zeiler & Fergus 2014)", "perturbation", perturb=occlusion_maps, needs_layer=False,
           options=(("window", 16), ("stride", 8), ("baseline", 0.0)) + _BATCH + _SCORE,
           peer=("captum", "Occlusion")),
    Method("featureablation", "Feature ablation: the score drop when each segment alone is replaced by a baseline "
           "(captum's FeatureAblation; Zeiler & Fergus 2014)", "segment", perturb=featureablation_attributions,
           needs_layer=False, options=_SEGMENTS + _BATCH + _SCORE + (("context", False),),
           peer=("captum", "FeatureAblation")),
    Method("kernelshap", "Kernel SHAP: Shapley values of the segments by weighted least squares on sampled "
           "coalitions, exact when all are enumerated (Lundberg & Lee 2017)", "segment",
           perturb=kernelshap_attributions, needs_layer=False,
           options=_SEGMENTS + (("n_samples", 2048),) + _SAMPLES, peer=("captum", "KernelShap")),
    Method("lime", "LIME: a weighted linear surrogate of the scores on random coalitions of segments (Ribeiro et "
           "al. 2016)", "segment", perturb=lime_attributions, needs_layer=False,
           options=_SEGMENTS + (("n_samples", 1024), ("kernel_width", 0.25)) + _SAMPLES, peer=("captum", "Lime")),
    _attribution("saliency", "Saliency: the gradient of the class's target with respect to the input, |·| by default "
                 "(Simonyan et al. 2014; captum's Saliency)", _saliency_plan, _ABS, peer="Saliency"),
    _attribution("inputxgradient", "Input × Gradient: the input times its gradient (Shrikumar et al. 2016; captum's "
                 "InputXGradient)", _inputxgradient_plan, peer="InputXGradient"),
    _attribution("integratedgradients", "Integrated Gradients: (x − baseline) times the path integral of the gradient, "
                 "captum's quadratures (Sundararajan et al. 2017)", _ig_plan, _IG, peer="IntegratedGradients"),
    _attribution("smoothgrad", "SmoothGrad: saliency, Input×Gradient or IG averaged over noisy copies of the input "
                 "(Smilkov et al. 2017; captum's NoiseTunnel)", _smoothgrad_plan, _NT + _ABS + _IG,
                 peer="NoiseTunnel"),
    _attribution("guidedbackprop", "Guided backpropagation: the input gradient with every ReLU passing back only "
                 "positive gradients where its input was positive (Springenberg et al. 2015; captum's GuidedBackprop)",
                 _guided_plan, peer="GuidedBackprop"),
    _attribution("deconvolution", "Deconvolution: the input gradient with every ReLU passing back the positive part "
                 "of its output's gradient (Zeiler & Fergus 2014; captum's Deconvolution)", _deconvolution_plan,
                 peer="Deconvolution"),
    _attribution("guidedgradcam", "Guided Grad-CAM: guided backpropagation times the target layer's Grad-CAM "
                 "upsampled to the input (Selvaraju et al. 2017; captum's GuidedGradCam)", _guided_plan,
                 peer="GuidedGradCam", needs_layer=True, runner=attr.explain_guided_gradcam),
    _attribution("deeplift", "DeepLIFT: (x − baseline) times the gradient with every non-linear module's derivative "
                 "replaced by Δout/Δin between input and baseline, the rescale rule (Shrikumar et al. 2017; captum's "
                 "DeepLift)", _deeplift_plan, (("baseline", 0.0),), peer="DeepLift"),
    _attribution("lrp", "LRP: layer-wise relevance propagation of the target's output with zennit's composite "
                 "rules and batch-norm canonizer (Bach et al. 2015; Montavon et al. 2019; zennit)", _lrp_plan, _LRP,
                 peer=None),
):
    add_method(_spec)
