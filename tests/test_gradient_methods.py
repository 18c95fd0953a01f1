"""The newer gradient and gradient-free methods: Seg-XRes-CAM against the paper's formula written
out here, RandomCAM's statistics, the closed form against autograd, fused against the reference,
ONNX Runtime against PyTorch, and the option errors. Parity with the peer: test_parity_methods.py.
"""
import math
import pathlib
import re

import pytest
import torch

import seg_xai_fast as sx
from seg_xai_fast.engine import method_maths
from seg_xai_fast import reference
from seg_xai_fast.engine.methods import get_method, remove_method

NEW_GRADIENT = ["gradcam_elementwise", "segxrescam", "eigengradcam", "segeigencam", "finercam"]
NEW_ACTIVATION = ["kpcacam", "fem", "randomcam"]
OPTION_CASES = [  # (method, options) covering every new option
    ("segxrescam", {"pool": 3, "reduce": "mean"}),
    ("segxrescam", {"pool": 2, "reduce": "max"}),
    ("finercam", {"alpha": 0.5, "comparison_categories": (1, 2), "base_method": "hirescam"}),
    ("finercam", {"base_method": "gradcam++"}),
    ("gradcam++", {"eigen_smooth": True}),
    ("segxrescam", {"eigen_smooth": True}),
    ("finercam", {"eigen_smooth": True}),
]


@pytest.fixture(scope="module")
def model():
    return sx.demo_model()


@pytest.fixture(scope="module")
def images():
    return sx.synthetic_scenes(2, seed=3, size=64)[0]


def _layer_and_gradient(model, images, cls, mask):
    """A [B,C,h,w] at the decoder and ∂S/∂A of S = Σ_p mask(p)·logit_cls(p), by plain autograd."""
    store = {}

    def hook(module, inputs, output):
        store["A"] = output
        output.retain_grad()

    handle = model.get_submodule("decoder").register_forward_hook(hook)
    try:
        logits = model(images)
        (logits[:, cls] * mask).sum().backward()
    finally:
        handle.remove()
    return store["A"].detach(), store["A"].grad.detach()


def _paper_segxrescam(A, G, s, reduce):
    """Seg-XRes-CAM written out: each gradient map pooled in s×s windows from the top-left (partial
    windows at the edges), every position taking its window's value; then Σ_c g̃⊙A."""
    B, C, h, w = G.shape
    pooled = torch.empty_like(G)
    for y0 in range(0, h, s):
        for x0 in range(0, w, s):
            window = G[:, :, y0:y0 + s, x0:x0 + s]
            value = window.amax(dim=(2, 3)) if reduce == "max" else window.mean(dim=(2, 3))
            pooled[:, :, y0:y0 + s, x0:x0 + s] = value[:, :, None, None]
    return (pooled * A).sum(dim=1)


@pytest.mark.parametrize("pool,reduce", [(2, "max"), (3, "mean"), (5, "max")])
@pytest.mark.parametrize("gradient_path", ["analytic", "autograd"])
def test_segxrescam_is_the_paper_formula(model, images, pool, reduce, gradient_path):
    mask = torch.zeros(images.shape[0], *images.shape[-2:])
    mask[:, 10:40, 5:50] = 1
    A, G = _layer_and_gradient(model, images, 2, mask)
    expected = reference.postprocess(_paper_segxrescam(A, G, pool, reduce).unsqueeze(1), images.shape[-2:])
    ours = sx.Explainer(model, "decoder", "segxrescam", options={"pool": pool, "reduce": reduce},
                        gradient_path=gradient_path)(images, classes=[2], masks=mask[:, None]).maps
    assert (ours - expected).abs().max() <= 1e-5


@pytest.mark.parametrize("reduce", ["max", "mean"])
@pytest.mark.parametrize("gradient_path", ["analytic", "autograd"])
def test_segxrescam_pool_1_is_hirescam(model, images, reduce, gradient_path):
    seg = sx.Explainer(model, "decoder", "segxrescam", options={"pool": 1, "reduce": reduce}, gradient_path=gradient_path)
    hires = sx.Explainer(model, "decoder", "hirescam", gradient_path=gradient_path)
    assert (seg(images).maps - hires(images).maps).abs().max() <= 1e-6


def test_randomcam_weights_statistics():
    w = method_maths.random_weights(50, 400, seed=0)  # 20 000 draws
    assert w.shape == (50, 400) and bool((w > -1).all()) and bool((w < 1).all())
    assert abs(float(w.mean())) < 0.02  # uniform(-1, 1): mean 0, standard error 0.004
    assert abs(float(w.std()) - 1 / math.sqrt(3)) < 0.01
    assert torch.equal(w, method_maths.random_weights(50, 400, seed=0))
    assert not torch.equal(w, method_maths.random_weights(50, 400, seed=1))


def test_randomcam_maps(model, images):
    res = sx.Explainer(model, "decoder", "randomcam", options={"seed": 4})(images)
    again = sx.Explainer(model, "decoder", "randomcam", options={"seed": 4})(images)
    other = sx.Explainer(model, "decoder", "randomcam", options={"seed": 5})(images)
    assert torch.equal(res.maps, again.maps)
    assert (res.maps - other.maps).abs().max() > 0.1
    # a class's map depends on neither the batch nor the other classes explained with it
    alone = sx.Explainer(model, "decoder", "randomcam", options={"seed": 4})(images[1:], classes=[2])
    assert (alone.maps[0, 0] - res.maps[1, 2]).abs().max() <= 1e-6
    # and is the weighted sum of the activations with the seeded weights
    A, _ = _layer_and_gradient(model, images, 0, torch.ones(images.shape[-2:]))
    w = method_maths.random_weights(res.maps.shape[1], A.shape[1], 4)  # every class of the model, seed 4
    expected = reference.postprocess(reference.weighted_combine(A, w[None].expand(A.shape[0], -1, -1)), images.shape[-2:])
    assert (res.maps - expected).abs().max() <= 1e-5


@pytest.mark.parametrize("method,options", [(m, {}) for m in NEW_GRADIENT] + OPTION_CASES)
def test_closed_form_equals_autograd(model, images, method, options):
    analytic = sx.Explainer(model, "decoder", method, options=options, gradient_path="analytic")(images)
    autograd = sx.Explainer(model, "decoder", method, options=options, gradient_path="autograd")(images)
    assert analytic.info["gradient_path"] == "analytic" and autograd.info["gradient_path"] == "autograd"
    assert (analytic.maps - autograd.maps).abs().max() <= 1e-4


@pytest.mark.parametrize("method,options", [(m, {}) for m in NEW_GRADIENT + NEW_ACTIVATION] + OPTION_CASES)
def test_fused_equals_reference(model, images, method, options):
    images = images[..., :32, :32] if method == "kpcacam" else images  # its (h·w)² eigen-solve: keep h·w small
    for path in ("analytic", "autograd") if get_method(method).needs_gradients else ("auto",):
        fused = sx.Explainer(model, "decoder", method, options=options, gradient_path=path)(images).maps
        torch_ = sx.Explainer(model, "decoder", method, options=options, gradient_path=path, backend="torch")(images).maps
        assert (fused - torch_).abs().max() <= 1e-5, path


def test_finercam_with_alpha_0_is_its_base_method(model, images):
    """α = 0 leaves T_k = S_k·Σp/(Σp + 1e-9): the base method's map up to that 1e-9."""
    masks = torch.zeros(2, 2, 64, 64)
    masks[:, :, 8:40, 16:60] = 1
    for base in ("gradcam", "layercam"):
        finer = sx.Explainer(model, "decoder", "finercam", options={"alpha": 0.0, "base_method": base},
                             gradient_path="autograd")(images, classes=[1, 3], masks=masks).maps
        plain = sx.Explainer(model, "decoder", base, gradient_path="autograd")(images, classes=[1, 3], masks=masks).maps
        assert (finer - plain).abs().max() <= 1e-5


def test_finercam_subtracts_the_most_similar_classes(model, images):
    """With α = 1 the map differs from Grad-CAM's (the similar classes' gradients are subtracted)."""
    finer = sx.Explainer(model, "decoder", "finercam")(images, classes=[1]).maps
    plain = sx.Explainer(model, "decoder", "gradcam")(images, classes=[1]).maps
    assert (finer - plain).abs().max() > 0.05


@pytest.mark.parametrize("method", ["kpcacam", "fem", "eigencam", "randomcam"])
def test_gradient_free_raw_maps(model, images, method):
    images = images[..., :32, :32]
    res = sx.Explainer(model, "decoder", method, normalize=False)(images, classes=[0, 2])
    assert res.maps.shape == (2, 2, 32, 32) and bool(torch.isfinite(res.maps).all())
    assert float(res.maps.min()) < 0 or method == "fem"  # signed (FEM's weights and A are ≥ 0 here)


def test_onnx_runtime_serves_the_new_methods(model, images, tmp_path):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    from seg_xai_fast.runtimes.export import export_onnx
    from seg_xai_fast.runtimes.onnx_explainer import OnnxExplainer

    images = images[..., :32, :32]  # KPCA-CAM's eigen-solve grows as (h·w)³
    path = export_onnx(model, "decoder", tmp_path / "demo.onnx", images[:1])
    for method in NEW_GRADIENT + NEW_ACTIVATION:
        ours = sx.Explainer(model, "decoder", method)(images).maps
        onnx = OnnxExplainer(path, method)(images).maps
        assert (ours - onnx).abs().max() <= 1e-4, method
    options = {"pool": 3, "reduce": "mean"}
    ours = sx.Explainer(model, "decoder", "segxrescam", options=options)(images).maps
    onnx_explainer = OnnxExplainer(path, "segxrescam", options=options)
    assert (ours - onnx_explainer(images).maps).abs().max() <= 1e-4
    onnx_explainer.method = "fem"  # a new method starts from its own defaults
    assert onnx_explainer.options == {"k": 2}


@pytest.mark.parametrize("method,options,error,match", [
    ("gradcam", {"eigen_smooth": "yes"}, TypeError, r"option 'eigen_smooth' must be True or False, got 'yes'"),
    ("segxrescam", {"pool": 0}, ValueError, r"option 'pool' must be an int ≥ 1, got 0"),
    ("segxrescam", {"reduce": "median"}, ValueError, r"option 'reduce' must be one of \['max', 'mean'\], got 'median'"),
    ("kpcacam", {"kernel": "laplace"}, ValueError, r"option 'kernel' must be one of .*'sigmoid'.*got 'laplace'"),
    ("kpcacam", {"gamma": -1.0}, ValueError, r"option 'gamma' must be None \(1/channels\) or a finite number > 0, got -1.0"),
    ("fem", {"k": "2"}, TypeError, r"option 'k' must be a finite number, got '2'"),
    ("finercam", {"alpha": float("nan")}, TypeError, r"option 'alpha' must be a finite number, got nan"),
    ("finercam", {"comparison_categories": [0, 1]}, ValueError, r"option 'comparison_categories' must be .* got \[0, 1\]"),
    ("finercam", {"base_method": "scorecam"}, ValueError, r"option 'base_method' must be one of .*got 'scorecam'"),
    ("randomcam", {"seed": 1.5}, ValueError, r"option 'seed' must be an int, got 1.5"),
    ("eigengradcam", {"eigen_smooth": True}, ValueError, r"options \['eigen_smooth'\] are not options of method 'eigengradcam'"),
])
def test_bad_options_are_named(model, method, options, error, match):
    with pytest.raises(error, match=match):
        sx.Explainer(model, "decoder", method, options=options)


def test_every_new_method_has_a_spec_and_options():
    for name in NEW_GRADIENT + NEW_ACTIVATION:
        assert name in sx.methods()
    assert sx.method_options("kpcacam") == {"kernel": "sigmoid", "gamma": None}
    assert sx.method_options("fem") == {"k": 2}
    assert sx.method_options("segxrescam") == {"pool": 2, "reduce": "max", "aug_smooth": False, "eigen_smooth": False}
    assert sx.method_options("randomcam") == {"seed": 0, "eigen_smooth": False}
    assert sx.method_options("finercam") == {"alpha": 1.0, "comparison_categories": (1, 2, 3),
                                             "base_method": "gradcam", "eigen_smooth": False}


def test_methods_doc_examples_run():
    """Every Python block of docs/methods.md runs, and its shape comments are what it prints."""
    text = (pathlib.Path(__file__).resolve().parents[1] / "docs" / "methods.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    assert len(blocks) == 8
    try:
        for block in blocks:
            scope = {}
            exec(compile(block, "docs/methods.md", "exec"), scope)
            shape = re.search(r"res\.maps\.shape\s+# (torch\.Size\(\[.*\]\))", block).group(1)
            assert str(scope["res"].maps.shape) == shape
    finally:  # the user-method example registers one
        if "positive_gradcam" in sx.methods():
            remove_method("positive_gradcam")


@pytest.mark.parametrize("method", [m for m in NEW_GRADIENT if "aug_smooth" in sx.method_options(m)])
def test_aug_smooth_runs_for_the_new_gradient_methods(model, method):
    """Test-time augmentation wraps every gradient method alike (its parity with the peer is tested
    with gradcam and hirescam in test_shapleycam_fullgrad_combine.py): maps in [0, 1], differing from the
    plain ones."""
    images, _ = sx.synthetic_scenes(1, seed=5, size=64)
    smooth = sx.Explainer(model, "decoder", method, options={"aug_smooth": True})
    res = smooth(images)
    assert res.maps.shape[1] == 4 and torch.isfinite(res.maps).all()
    assert res.maps.min() >= 0 and res.maps.max() <= 1
    plain = sx.Explainer(model, "decoder", method)(images).maps
    assert (res.maps - plain).abs().max() > 1e-4
    assert res.info.get("augmentations") == 6
