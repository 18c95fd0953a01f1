"""Segment attributions (featureablation, kernelshap, lime): against captum 0.9's FeatureAblation
class by class, exact Shapley values by brute force, a planted linear model, ONNX Runtime, the
memory budget, the context table against direct ablation, and the errors."""
from __future__ import annotations

import itertools
import math
import pathlib
import re
import sys

import pytest
import torch
import torch.nn as nn
import torchvision.models.segmentation as tvseg

import seg_xai_fast as sx
from seg_xai_fast.engine.methods import get_method
from seg_xai_fast.engine.perturbation import occlusion_baseline
from seg_xai_fast.engine.segments import BLUR_WINDOW, connected_components, segment_features, shapley_coalitions
from seg_xai_fast.kernels import reference
from peers import OutOnly as _OutOnly  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[1]
METHODS = ("featureablation", "kernelshap", "lime")


class _TinyNet(nn.Module):
    """A small nonlinear segmenter (3×3 conv, ReLU, 1×1 conv): cheap enough for brute force."""

    def __init__(self, classes=3):
        super().__init__()
        torch.manual_seed(3)
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, classes, 1))
        self.eval()

    def forward(self, x):
        return self.body(x)


def _score(model, x, c, mask):
    """The region score S_c = Σ_p M(p)·logit_c(p) of inputs x [n,3,H,W] → [n]."""
    return (_OutOnly(model)(x)[:, c] * mask).sum(dim=(1, 2))


def _box_masks(batch, classes, size, seed):
    g = torch.Generator().manual_seed(seed)
    masks = torch.zeros(batch, len(classes), size, size)
    for b in range(batch):
        for k in range(len(classes)):
            y0, x0 = torch.randint(0, size // 2, (2,), generator=g).tolist()
            masks[b, k, y0:y0 + size // 2, x0:x0 + size // 2] = 1.0
    return masks


def _grid_features(batch, size, cells):
    """A label map int64 [B,H,W] of cells×cells blocks (ids 0..cells²−1)."""
    idx = torch.arange(size) * cells // size
    return (idx[:, None] * cells + idx[None, :]).expand(batch, size, size).contiguous()


@pytest.fixture(scope="module")
def demo():
    return sx.demo_model(), sx.synthetic_scenes(2, seed=5, size=64)[0]


# --------------------------------------------------------------------------- featureablation = captum


@pytest.mark.parametrize("features", ["predicted", "slic"])
def test_featureablation_matches_captum_for_every_class(demo, features):
    from captum.attr import FeatureAblation

    model, images = demo
    images = images[:1]
    classes = [1, 3]
    masks = _box_masks(1, classes, 64, seed=4)
    res = sx.Explainer(model, None, "featureablation", normalize=False,
                       options={"features": features, "baseline": 0.25, "n_segments": 8})(images, classes, masks)
    segs = segment_features(features, images, res.labels, 8)
    for b in range(1):
        seg, M = segs[b]
        assert M >= 2
        for k, c in enumerate(classes):
            with torch.no_grad():  # one call per class, as captum runs it
                peer = FeatureAblation(lambda x, c=c, m=masks[b, k]: _score(model, x, c, m)).attribute(
                    images[b:b + 1], baselines=0.25, feature_mask=seg[None, None], perturbations_per_eval=32)[0, 0]
                magnitude = (_OutOnly(model)(images[b:b + 1])[0, c].abs() * masks[b, k]).sum().item()
            scale = peer.abs().max().item()
            # 1e-4 of the largest attribution, plus the float32 rounding of S itself: an attribution
            # is S − S_ablated, both summed in float32 by each side, in different orders.
            tol = 1e-4 * scale + 1e-6 * magnitude
            diff = (res.maps[b, k] - peer).abs().max().item()
            assert diff <= tol, f"{features} image {b} class {c}: {diff:.2e} (scale {scale:.2e})"
            assert scale > 0


# --------------------------------------------------------------------------- kernelshap = Shapley values


def _brute_force_shapley(model, image, seg, M, base, c, mask):
    """φ_i = Σ_{S ⊆ N∖{i}} |S|!(M−|S|−1)!/M! (f(S ∪ {i}) − f(S)), every f by its own forward."""
    codes = torch.arange(2 ** M)
    keep = (codes[:, None] >> torch.arange(M)) & 1 == 1  # [2^M, M]
    with torch.no_grad():
        x = torch.where(keep[:, seg][:, None], image[None], base[None])
        f = torch.cat([_score(model, x[i:i + 256], c, mask) for i in range(0, len(x), 256)]).double()
    phi = torch.zeros(M, dtype=torch.float64)
    for i in range(M):
        for code in range(2 ** M):
            if code >> i & 1:
                continue
            s = bin(code).count("1")
            phi[i] += math.factorial(s) * math.factorial(M - s - 1) / math.factorial(M) * (f[code | 1 << i] - f[code])
    return phi


def test_kernelshap_enumerating_every_coalition_gives_exact_shapley_values():
    model, size, M = _TinyNet(), 20, 10
    image = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(0))
    g = torch.Generator().manual_seed(1)
    seg = torch.randint(0, M, (size // 4, size // 4), generator=g).repeat_interleave(4, 0).repeat_interleave(4, 1)
    seg[0, :M] = torch.arange(M)  # every id present
    classes = [0, 2]
    masks = _box_masks(1, classes, size, seed=2)
    res = sx.Explainer(model, None, "kernelshap", normalize=False,
                       options={"features": seg[None], "n_samples": 2 ** M, "baseline": -0.5})(image, classes, masks)
    assert res.info["exact"] == [True] and res.info["perturbed_forwards"] == 2 ** M - 1
    base = torch.full((3, size, size), -0.5)
    for k, c in enumerate(classes):
        want = _brute_force_shapley(model, image[0], seg, M, base, c, masks[0, k])
        got = torch.stack([res.maps[0, k][seg == i][0] for i in range(M)]).double()
        scale = want.abs().max().item()
        assert (got - want).abs().max().item() <= 1e-3 * scale, f"class {c}"


def test_shapley_coalitions_sampling():
    keep, weights, exact = shapley_coalitions(6, 62, seed=0)  # 2^6 − 2 proper coalitions + the empty one = 63
    assert not exact and keep.shape == (61, 6) and torch.equal(weights, torch.ones(61, dtype=torch.float64))
    assert not (keep.all(1) | ~keep.any(1)).any()  # neither empty nor full
    assert torch.equal(keep[:30], ~keep[31:61])  # complementary pairs (31 drawn, then their complements)
    again, _, _ = shapley_coalitions(6, 62, seed=0)
    assert torch.equal(keep, again)  # seeded
    keep, weights, exact = shapley_coalitions(6, 63, seed=0)
    assert exact and keep.shape == (62, 6) and len({tuple(r.tolist()) for r in keep}) == 62
    k = keep.sum(1).double()
    assert torch.allclose(weights, 5 / (torch.tensor([math.comb(6, int(i)) for i in k]) * k * (6 - k)))


# --------------------------------------------------------------------------- planted linear model


class _Linear(nn.Module):
    """A 1×1 convolution: its region scores are exactly linear in the kept segments."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(7)
        self.conv = nn.Conv2d(3, 4, 1)
        self.eval()

    def forward(self, x):
        return self.conv(x)


@pytest.mark.parametrize("method, options", [("lime", {"n_samples": 64}), ("kernelshap", {"n_samples": 64}),
                                             ("kernelshap", {"n_samples": 4096}), ("featureablation", {})])
def test_planted_linear_model_is_recovered(method, options):
    """S_k(z) = c_k + Σ_i z_i·a_ki with a_ki = Σ_{p ∈ segment i} M_k(p)·Σ_c W_kc·(x − x₀)_c(p): the
    surrogate's coefficients (LIME), the Shapley values (sampled or exact) and the ablation
    drops are all a_ki."""
    model = _Linear()
    size, M = 24, 9
    images = torch.rand(2, 3, size, size, generator=torch.Generator().manual_seed(8))
    features = _grid_features(2, size, 3)
    classes = [0, 1, 3]
    masks = _box_masks(2, classes, size, seed=9)
    res = sx.Explainer(model, None, method, normalize=False,
                       options={"features": features, "baseline": "mean", **options})(images, classes, masks)
    W = model.conv.weight.detach()[:, :, 0, 0]  # [L,3]
    for b in range(2):
        base = images[b].mean(dim=(1, 2), keepdim=True)
        contrib = torch.einsum("lc,chw->lhw", W, images[b] - base)  # [L,H,W]
        for k, c in enumerate(classes):
            a = torch.stack([(contrib[c] * masks[b, k])[features[b] == i].sum() for i in range(M)])
            got = torch.stack([res.maps[b, k][features[b] == i][0] for i in range(M)])
            assert (got - a).abs().max().item() <= 1e-4 * a.abs().max().item(), f"{method} image {b} class {c}"
            # painted: constant on each segment
            assert torch.equal(res.maps[b, k], got[features[b]])


# --------------------------------------------------------------------------- models, runtimes, budget


def test_bundled_model_all_methods(demo):
    model, images = demo
    for method in METHODS:
        opts = {} if method == "featureablation" else {"n_samples": 12, "features": "slic", "n_segments": 6}
        res = sx.Explainer(model, None, method, class_names=sx.CLASS_NAMES, options=opts)(images)
        assert res.maps.shape == (2, 4, 64, 64) and res.layer == "input" and res.method == method
        assert float(res.maps.min()) >= 0 and float(res.maps.max()) <= 1 and torch.isfinite(res.maps).all()
        assert res.maps.flatten(2).amax(2)[res.active].gt(0).any()


@pytest.mark.slow
def test_torchvision_model():
    torch.manual_seed(0)
    model = tvseg.lraspp_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=21).eval()
    images = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    classes = [0, 5, 20]
    masks = _box_masks(1, classes, 64, seed=3)
    opts = {"features": "slic", "n_segments": 8, "baseline": "blur"}
    shap = sx.Explainer(model, None, "kernelshap", normalize=False, options={**opts, "n_samples": 300})(images, classes, masks)
    M = shap.info["features"][0]
    assert shap.info["exact"] == [2 ** M - 1 <= 300]
    # efficiency: Σ_i φ_ki = S_k(image) − S_k(all segments blurred)
    seg, _ = segment_features("slic", images, shap.labels, 8)[0]
    blurred = occlusion_baseline(images[0], "blur", BLUR_WINDOW)
    for k, c in enumerate(classes):
        with torch.no_grad():
            total = (_score(model, images, c, masks[0, k]) - _score(model, blurred[None], c, masks[0, k])).item()
        phi = torch.stack([shap.maps[0, k][seg == i][0] for i in range(M)])
        assert abs(phi.sum().item() - total) <= 1e-4 * max(1.0, abs(total)) + 1e-3 * phi.abs().max().item()
    ablation = sx.Explainer(model, None, "featureablation", normalize=False, options=opts)(images, classes, masks)
    assert ablation.info["perturbed_forwards"] == M


@pytest.mark.parametrize("method", METHODS)
def test_results_do_not_depend_on_the_memory_budget(method):
    model = _TinyNet()  # the chunking does not depend on the model: a cheap one
    images = torch.rand(2, 3, 40, 40, generator=torch.Generator().manual_seed(4))
    opts = {"features": _grid_features(2, 40, 3), "batch_size": 32}
    if method != "featureablation":
        opts["n_samples"] = 60
    big = sx.Explainer(model, None, method, normalize=False, options=opts)(images, [1, 2])
    small = sx.Explainer(model, None, method, normalize=False, options=opts, max_memory_mb=0.1)(images, [1, 2])
    assert big.info["perturbed_forwards"] == small.info["perturbed_forwards"]
    # Attributions are differences of float32 region sums, whose rounding depends on the batch the
    # convolutions ran in (measured: 1.4e-5 of the largest attribution); a chunking mistake is O(1).
    scale = big.maps.abs().max().item()
    assert (big.maps - small.maps).abs().max().item() <= 1e-4 * scale


def test_onnx_runtime_equals_pytorch(tmp_path):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    from seg_xai_fast.runtimes.export import export_onnx
    from seg_xai_fast.runtimes.onnx_explainer import OnnxExplainer

    model = sx.demo_model()
    path = export_onnx(model, "decoder", tmp_path / "demo.onnx", torch.rand(1, 3, 64, 64))
    images = sx.synthetic_scenes(1, seed=5, size=32)[0]
    masks = _box_masks(1, [0, 1, 2], 32, seed=2)
    features = _grid_features(1, 32, 3)
    for method in METHODS:
        options = {"features": features} if method == "featureablation" else {"features": features, "n_samples": 12}
        for normalize in (True, False):
            ours = OnnxExplainer(path, method, options=options, normalize=normalize)(images, [0, 1, 2], masks)
            want = sx.Explainer(model, None, method, options=options, normalize=normalize)(images, [0, 1, 2], masks)
            assert ours.info["perturbed_forwards"] == want.info["perturbed_forwards"]
            assert ours.info["runtime"] == "onnxruntime"
            scale = 1.0 if normalize else want.maps.abs().max().item()
            diff = (ours.maps - want.maps).abs().max().item() / scale
            assert diff <= 1e-3, f"{method} normalize={normalize}: {diff:.2e}"


# --------------------------------------------------------------------------- context table


def _direct_effects(model, image, seg, base, classes, labels):
    """S_c − S_c(segment m replaced by base) for every class c (its predicted pixels as region),
    each segment's removal by its own forward → [K,M]."""
    M = int(seg.max()) + 1
    with torch.no_grad():
        x = torch.cat([image[None], torch.stack([torch.where(seg == m, base, image) for m in range(M)])])
        logits = _OutOnly(model)(x)
    S = torch.stack([(logits[:, c] * (labels == c)).sum(dim=(1, 2)) for c in classes])  # [K,1+M]
    return S[:, :1] - S[:, 1:]


@pytest.mark.parametrize("method, options", [("featureablation", {}),
                                             ("lime", {"context": True, "n_samples": 12, "features": "slic",
                                                       "n_segments": 6})])
def test_context_table_matches_direct_ablation(demo, method, options):
    model, images = demo
    classes = [0, 1, 2, 3]
    res = sx.Explainer(model, None, method, options={"baseline": 0.5, **options})(images, classes)
    assert res.context is not None and len(res.context) == 2
    for b, ctx in enumerate(res.context):
        assert torch.equal(ctx.segments, connected_components(res.labels[b]))
        M = int(ctx.segments.max()) + 1
        assert ctx.effects.shape == (4, M) and ctx.classes == classes
        for m in range(M):  # each segment's class is the prediction on it
            assert ctx.segment_classes[m] == int(res.labels[b][ctx.segments == m][0])
        want = _direct_effects(model, images[b], ctx.segments, torch.full_like(images[b], 0.5), classes, res.labels[b])
        for k, c in enumerate(classes):
            tol = 1e-4 * max(1.0, want[k].abs().max().item())
            assert (ctx.effects[k] - want[k]).abs().max().item() <= tol, f"image {b} class {c}"


def test_no_context_unless_asked_or_free(demo):
    model, images = demo
    res = sx.Explainer(model, None, "lime", options={"n_samples": 12, "features": _grid_features(2, 64, 2)})(images)
    assert res.context is None


def test_connected_components_are_8_connected_and_in_raster_order():
    labels = torch.tensor([[0, 0, 1, 1],
                           [2, 0, 1, 0],
                           [2, 2, 0, 1],
                           [1, 1, 0, 0]])
    want = torch.tensor([[0, 0, 1, 1],  # (1, 3) joins the 0s and (2, 3) the 1s through a corner
                         [2, 0, 1, 0],
                         [2, 2, 0, 1],
                         [3, 3, 0, 0]])
    assert torch.equal(connected_components(labels), want)
    snake = torch.zeros(9, 9, dtype=torch.long)  # a long thin component: many propagation steps
    snake[1:8:2, 1:8] = 1
    snake[2, 7] = snake[4, 1] = snake[6, 7] = 1
    assert torch.equal(connected_components(snake), snake)  # the background (first pixel (0, 0)) and the snake


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize("method, options, call, error, match", [
    ("featureablation", {"features": torch.zeros(2, 64, 60, dtype=torch.long)}, {}, ValueError,
     r"option 'features' must be a label map \[B,H,W\] = \[2, 64, 64\].*got shape \[2, 64, 60\]"),
    ("kernelshap", {"features": torch.arange(128 * 128).view(1, 128, 128).expand(2, -1, -1)}, {"size": 128},
     ValueError, r"option 'features' \(a label map\) gives 16384 segments in image 0; at most 4096"),
    ("kernelshap", {"features": "slic", "n_segments": 30, "n_samples": 10}, {}, ValueError,
     r"option 'n_samples' must be at least the number of features for method 'kernelshap' \(image 0 has \d+ segments\), got 10"),
    ("lime", {}, {"resolution": "layer"}, ValueError, "resolution='layer' needs a target layer"),
])
def test_bad_input(demo, method, options, call, error, match):
    model, images = demo
    if "size" in call:
        images = torch.rand(2, 3, call["size"], call["size"])
    with pytest.raises(error, match=match):
        sx.Explainer(model, None, method, options=options)(images, resolution=call.get("resolution", "full"))


@pytest.mark.parametrize("options, error, match", [
    ({"features": torch.zeros(2, 64, 64)}, TypeError,
     r"option 'features' must be a label map: an int64 \(torch.long\) Tensor \[B,H,W\], got torch.float32"),
    ({"features": torch.zeros(64, 64, dtype=torch.long)}, TypeError, r"got torch.int64 of shape \[64, 64\]"),
    ({"features": "quickshift"}, TypeError, r"option 'features' must be 'predicted' or 'slic'"),
    ({"n_samples": 0}, ValueError, r"option 'n_samples' must be an int ≥ 1, got 0"),
    ({"kernel_width": -1.0}, ValueError, r"option 'kernel_width' must be a positive finite float"),
    ({"baseline": "zeros"}, TypeError, r"option 'baseline' must be a finite float"),
    ({"window": 3}, ValueError, r"options \['window'\] are not options of method 'lime'"),
])
def test_bad_options(demo, options, error, match):
    with pytest.raises(error, match=match):
        sx.Explainer(demo[0], None, "lime", options=options)


def test_target_layer_refused(demo):
    with pytest.raises(ValueError, match="target_layer must be None for method 'kernelshap'"):
        sx.Explainer(demo[0], "decoder", "kernelshap")


def test_slic_without_scikit_image_names_the_pip_command(demo, monkeypatch):
    monkeypatch.setitem(sys.modules, "skimage.segmentation", None)  # `import` then raises ImportError
    with pytest.raises(ImportError, match="pip install scikit-image"):
        sx.Explainer(demo[0], None, "featureablation", options={"features": "slic"})(demo[1])


def test_fused_and_torch_backends_agree(demo):
    model, images = demo
    opts = {"features": _grid_features(2, 64, 3), "n_samples": 12}
    a = sx.Explainer(model, None, "kernelshap", normalize=False, options=opts)(images, [1])
    b = sx.Explainer(model, None, "kernelshap", normalize=False, options=opts, backend="torch")(images, [1])
    assert (a.maps - b.maps).abs().max().item() <= 1e-4 * a.maps.abs().max().item()


def test_registry():
    for name in METHODS:
        spec = get_method(name)
        assert spec.family == "segment" and not spec.needs_layer and not spec.needs_gradients and spec.perturbs
        assert sx.method_options(name)["features"] == "predicted"


def test_docs_examples_run():
    """docs/segments.md's Python examples run as written."""
    text = (ROOT / "docs" / "segments.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert blocks
    for block in blocks:
        exec(compile(block, "docs/segments.md", "exec"), {})


def test_reference_segment_inputs_shape():
    image, base = torch.rand(3, 5, 6), torch.zeros(3, 5, 6)
    seg = torch.arange(30).view(5, 6) % 4
    out = reference.segment_inputs(image, base, seg, torch.tensor([[True, False, True, False]]))
    assert out.shape == (1, 3, 5, 6) and torch.equal(out[0], torch.where((seg % 2 == 0)[None], image, base))


def test_every_coalition_listed_once_matches_itertools():
    keep, _, exact = shapley_coalitions(4, 100, seed=0)
    assert exact
    want = {c for n in range(1, 4) for c in itertools.combinations(range(4), n)}
    assert {tuple(int(i) for i in torch.nonzero(r).flatten()) for r in keep} == want
