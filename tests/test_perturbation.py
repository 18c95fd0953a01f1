"""The perturbation family (Score-CAM, Ablation-CAM, RISE, occlusion), class by class against the
peers: grad-cam 1.5.7's ScoreCAM and AblationCAM (maps ≤ 1e-4), captum 0.9's Occlusion (≤ 1e-4
relative to the largest attribution), and a brute-force RISE that materialises every mask.

Our explainer scores all K classes on one set of perturbed forwards; the peers run one target at
a time. Models: the bundled demo model (its decoder's ReLU output has minimum 0: the peer's
zero ablation) and random-initialised torchvision models at small sizes (negative minima: the
peer's −1e7 ablation rule).
"""
import numpy as np
import pytest
import torch
import torchvision.models.segmentation as tvseg

import seg_xai_fast as sx
from conftest import box_masks
from seg_xai_fast.engine.perturbation import TorchForwards, rise_grids
from seg_xai_fast.kernels import reference

pgc = pytest.importorskip("pytorch_grad_cam", reason="the grad-cam package is a test dependency: pip install '.[test]'")
from pytorch_grad_cam.utils.model_targets import SemanticSegmentationTarget  # noqa: E402
from peers import OutOnly as _OutOnly  # noqa: E402

TOL = 1e-4


def _torchvision(name, size, batch=1):
    torch.manual_seed(0)
    model = getattr(tvseg, name)(weights=None, weights_backbone=None, num_classes=21).eval()
    return model, torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(1))


def _smp_unet(size):
    smp = pytest.importorskip("segmentation_models_pytorch")
    torch.manual_seed(0)
    model = smp.Unet("resnet18", encoder_weights=None, classes=5).eval()
    return model, torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(1))


CASES = {
    # the Unet's skip connections concatenate encoder features: ablation repeats the image
    "smp_unet_resnet18": lambda: (*_smp_unet(64), "encoder.layer3"),
    "demo": lambda: (sx.demo_model(), sx.synthetic_scenes(2, seed=777, size=64)[0], "decoder"),
    "lraspp_mobilenet_v3_large": lambda: (*_torchvision("lraspp_mobilenet_v3_large", 64), "backbone.6"),
    "deeplabv3_mobilenet_v3_large": lambda: (*_torchvision("deeplabv3_mobilenet_v3_large", 64), "backbone.4"),
}


@pytest.fixture(scope="module", params=sorted(CASES))
def case(request):
    return request.param, *CASES[request.param]()


def _box_masks(batch, classes, size, seed):
    """Non-empty random box regions [B,K,H,W], one per (image, class id in `classes`)."""
    return box_masks(batch, len(classes), size, seed)


def _peer_cam(model, layer, method, images, classes, masks):
    """grad-cam's maps [B,K,H,W], one call per (image, class) as its API requires."""
    peer_class = {"scorecam": pgc.ScoreCAM, "ablationcam": pgc.AblationCAM}[method]
    out = np.zeros((images.shape[0], len(classes)) + tuple(images.shape[-2:]), np.float32)
    cam = peer_class(model=_OutOnly(model), target_layers=[layer])
    for b in range(images.shape[0]):
        for k, c in enumerate(classes):
            target = SemanticSegmentationTarget(c, masks[b, k].numpy())
            out[b, k] = cam(input_tensor=images[b:b + 1], targets=[target])[0]
    return torch.from_numpy(out)


@pytest.mark.parametrize("method", ["scorecam", "ablationcam"])
def test_layer_methods_match_grad_cam(case, method):
    name, model, images, layer = case
    classes = [1, 3]
    masks = _box_masks(images.shape[0], classes, images.shape[-1], seed=5)
    ours = sx.Explainer(model, layer, method)(images, classes=classes, masks=masks)
    peer = _peer_cam(model, model.get_submodule(layer), method, images, classes, masks)
    assert ours.maps.shape == peer.shape
    for b in range(images.shape[0]):
        for k, c in enumerate(classes):
            diff = (ours.maps[b, k] - peer[b, k]).abs().max().item()
            assert diff <= TOL, f"{name} {method} image {b} class {c}: max abs diff {diff:.2e}"
    # every class from the same perturbed forwards: one per channel and image, not per class
    acts = []
    handle = model.get_submodule(layer).register_forward_hook(lambda m, i, o: acts.append(o.shape[1]))
    with torch.no_grad():
        _OutOnly(model)(images[:1])
    handle.remove()
    assert ours.info["perturbed_forwards"] == images.shape[0] * acts[0]


@pytest.mark.parametrize("model_name, layer, shares", [
    ("lraspp", "backbone.6", True),  # the low-level branch from before the layer is added: it broadcasts
    ("unet", "encoder.layer3", False),  # concatenated with encoder features from before the layer
    ("unet", "decoder.blocks.3", True),  # after the last concatenation
])
def test_ablation_runs_what_precedes_the_layer_once_where_the_model_allows(model_name, layer, shares, monkeypatch):
    model, images = (_torchvision("lraspp_mobilenet_v3_large", 64) if model_name == "lraspp" else _smp_unet(64))
    first_conv = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d))
    batches = []
    handle = first_conv.register_forward_hook(lambda m, i, o: batches.append(o.shape[0]))
    try:
        ours = sx.Explainer(model, layer, "ablationcam")(images, classes=[1, 2])
    finally:
        handle.remove()
    channels = ours.info["perturbed_forwards"]
    assert (max(batches) == 1) == shares, batches
    if not shares:
        assert sum(batches) >= channels  # every ablated sample ran the whole model
    # the same maps as repeating the image for every ablated channel (the parity tests compare
    # that with grad-cam, whose AblationCAM cannot replace smp's decoder blocks: they take keywords)
    monkeypatch.setattr(TorchForwards, "_prefix_works", lambda self, image, logits: False)
    repeated = sx.Explainer(model, layer, "ablationcam")(images, classes=[1, 2])
    assert (ours.maps - repeated.maps).abs().max().item() <= 1e-5  # float32 sums in another order


def _captum_occlusion(model, images, classes, masks, window, stride, baseline):
    from captum.attr import Occlusion

    out = torch.zeros(images.shape[0], len(classes), *images.shape[-2:])
    for b in range(images.shape[0]):
        for k, c in enumerate(classes):
            def score(x, c=c, m=masks[b, k]):
                return (_OutOnly(model)(x)[:, c] * m).sum(dim=(1, 2))

            attr = Occlusion(score).attribute(images[b:b + 1], sliding_window_shapes=(3, *window),
                                              strides=(3, *stride), baselines=baseline, perturbations_per_eval=64)
            out[b, k] = attr[0, 0]
    return out


def _occlusion_tolerance(model, images, c, mask, scale):
    """1e-4 of the largest attribution, plus the float32 rounding of the score S itself (an
    attribution is S − S_occluded: both peers sum S in float32, in different orders, so their
    difference carries ~1e-7·Σ|M·logit| that no implementation can remove)."""
    with torch.no_grad():
        magnitude = (_OutOnly(model)(images)[0, c].abs() * mask).sum().item()
    return TOL * scale + 1e-6 * magnitude


@pytest.mark.parametrize("window, stride", [((16, 16), (8, 8)), ((12, 20), (5, 7))])
def test_occlusion_matches_captum(case, window, stride):
    name, model, images, _ = case
    images = images[:1]
    classes = [0, 2]
    masks = _box_masks(1, classes, images.shape[-1], seed=9)
    ours = sx.Explainer(model, None, "occlusion", normalize=False,
                        options={"window": window, "stride": stride, "baseline": 0.25})(images, classes=classes, masks=masks)
    with torch.no_grad():
        peer = _captum_occlusion(model, images, classes, masks, window, stride, 0.25)
    for k, c in enumerate(classes):
        scale = peer[0, k].abs().max().item()
        diff = (ours.maps[0, k] - peer[0, k]).abs().max().item()
        tol = _occlusion_tolerance(model, images, c, masks[0, k], scale)
        assert diff <= tol, f"{name} class {c}: {diff:.2e} vs scale {scale:.2e} (tolerance {tol:.2e})"


def test_occlusion_mean_baseline_matches_captum():
    model, images, _ = CASES["demo"]()
    images = images[:1]
    masks = _box_masks(1, [1], images.shape[-1], seed=2)
    ours = sx.Explainer(model, None, "occlusion", normalize=False,
                        options={"window": 10, "stride": 6, "baseline": "mean"})(images, classes=[1], masks=masks)
    with torch.no_grad():
        peer = _captum_occlusion(model, images, [1], masks, (10, 10), (6, 6), images.mean(dim=(2, 3), keepdim=True))
    assert (ours.maps - peer).abs().max() <= _occlusion_tolerance(model, images, 1, masks[0, 0], peer.abs().max().item())


def _brute_force_rise(model, images, classes, masks, n, grid, p, seed, score):
    """Every mask materialised; each perturbed image forwarded alone; scores from the full logits."""
    H, W = images.shape[-2:]
    grids, shifts = rise_grids(n, grid, p, seed, (H, W))
    all_masks = reference.rise_masks(grids, shifts, (H, W))  # [N,H,W]
    out = torch.zeros(images.shape[0], len(classes), H, W)
    with torch.no_grad():
        labels = _OutOnly(model)(images).argmax(1)
        for b in range(images.shape[0]):
            for i in range(n):
                logits = _OutOnly(model)(images[b:b + 1] * all_masks[i])
                s = reference.region_scores(logits, masks[b], classes, score, labels[b])[0]  # [K]
                out[b] += s[:, None, None] * all_masks[i]
    return out / (n * p)


@pytest.mark.parametrize("score", ["logit", "probability", "dice"])
def test_rise_matches_brute_force(score):
    model, images, _ = CASES["demo"]()
    classes = [1, 2, 3]
    masks = _box_masks(images.shape[0], classes, images.shape[-1], seed=3)
    opts = {"n_masks": 24, "grid": 5, "p": 0.4, "seed": 7, "batch_size": 5, "score": score}
    ours = sx.Explainer(model, None, "rise", normalize=False, options=opts)(images, classes=classes, masks=masks)
    ref = _brute_force_rise(model, images, classes, masks, 24, 5, 0.4, 7, score)
    if score == "logit":  # the demo model ends with a bilinear upsample: scores read below it
        assert ours.info["score_from"] == "logits before upsample"
    assert ours.info["perturbed_forwards"] == 24 * images.shape[0]
    assert (ours.maps - ref).abs().max() <= TOL * ref.abs().max()


def test_rise_on_torchvision_matches_brute_force():
    model, images = _torchvision("lraspp_mobilenet_v3_large", 48)
    masks = _box_masks(1, [4, 7], 48, seed=4)
    ours = sx.Explainer(model, None, "rise", normalize=False, options={"n_masks": 12, "grid": 3, "seed": 1})(
        images, classes=[4, 7], masks=masks)
    ref = _brute_force_rise(model, images, [4, 7], masks, 12, 3, 0.5, 1, "logit")
    assert (ours.maps - ref).abs().max() <= TOL * ref.abs().max()


@pytest.mark.parametrize("method, layer, opts", [
    ("scorecam", "decoder", {}), ("ablationcam", "decoder", {"batch_size": 7}),
    ("rise", None, {"n_masks": 12}), ("occlusion", None, {"window": 16, "stride": 12}),
])
def test_results_do_not_depend_on_the_memory_budget(method, layer, opts):
    model, images, _ = CASES["demo"]()
    full = sx.Explainer(model, layer, method, options=opts)(images)
    tiny = sx.Explainer(model, layer, method, options=opts, max_memory_mb=0.05)(images)
    assert tiny.info["perturbed_forwards"] == full.info["perturbed_forwards"]
    assert (full.maps - tiny.maps).abs().max() <= 1e-5
    assert full.maps.min() >= 0 and full.maps.max() <= 1


def test_fused_and_torch_backends_agree():
    model, images, _ = CASES["demo"]()
    for method, layer, opts in [("scorecam", "decoder", {}), ("rise", None, {"n_masks": 20})]:
        a = sx.Explainer(model, layer, method, options=opts, backend="torch")(images)
        b = sx.Explainer(model, layer, method, options=opts, backend="fused")(images)
        assert (a.maps - b.maps).abs().max() <= 1e-5, method


def test_empty_regions_give_zero_maps():
    model, images, _ = CASES["demo"]()
    masks = torch.zeros(2, 2, 64, 64)
    masks[0, 0, 10:20, 10:20] = 1
    res = sx.Explainer(model, "decoder", "scorecam")(images, classes=[1, 2], masks=masks)
    assert res.active.tolist() == [[True, False], [False, False]]
    assert res.maps[0, 1].abs().max() == 0 and res.maps[1].abs().max() == 0
    assert res.maps[0, 0].max() > 0


@pytest.mark.parametrize("method", ["gradcam", "hirescam", "eigencam"])
def test_normalize_false_gives_raw_maps_for_gradient_methods(method):
    model, images, _ = CASES["demo"]()
    raw = sx.Explainer(model, "decoder", method, normalize=False)(images, classes=[1, 2])
    norm = sx.Explainer(model, "decoder", method)(images, classes=[1, 2])
    assert raw.maps.shape == norm.maps.shape == (2, 2, 64, 64)
    assert raw.maps.min() < 0  # signed
    # normalising the raw map at layer resolution gives the display map: check at full size
    # via the layer-resolution raw map
    low = sx.Explainer(model, "decoder", method, normalize=False)(images, classes=[1, 2], resolution="layer").maps
    assert torch.allclose(sx.upsample_maps(reference.normalize_maps(low), (64, 64)), norm.maps, atol=1e-5)
    assert torch.allclose(reference.resize_bilinear(low, (64, 64)), raw.maps, atol=1e-5)


def test_layer_resolution_of_layer_methods():
    model, images, _ = CASES["demo"]()
    ex = sx.Explainer(model, "decoder", "scorecam")
    low = ex(images, resolution="layer").maps
    assert low.shape == (2, 4, 32, 32)
    assert torch.allclose(sx.upsample_maps(low, (64, 64)), ex(images).maps, atol=1e-5)
    with pytest.raises(ValueError, match="resolution='layer' needs a target layer"):
        sx.Explainer(model, None, "rise", options={"n_masks": 2})(images, resolution="layer")


def test_forward_then_explain_outputs():
    model, images, _ = CASES["demo"]()
    ex = sx.Explainer(model, None, "occlusion", options={"window": 16, "stride": 16})
    assert torch.equal(ex.explain_outputs(ex.forward(images), classes=[1]).maps, ex(images, classes=[1]).maps)


@pytest.mark.parametrize("method, layer, options, error, match", [
    ("rise", None, {"n_masks": 0}, ValueError, "option 'n_masks' must be an int ≥ 1, got 0"),
    ("rise", None, {"grid": 1}, ValueError, "option 'grid' must be an int ≥ 2, got 1"),
    ("rise", None, {"p": 1.0}, ValueError, r"option 'p' must be a probability in \(0, 1\), got 1.0"),
    ("rise", None, {"p": 0}, ValueError, "option 'p'"),
    ("occlusion", None, {"stride": 0}, ValueError, "option 'stride' must be ≥ 1"),
    ("occlusion", None, {"stride": (4, 0)}, ValueError, "option 'stride' must be ≥ 1"),
    ("occlusion", None, {"window": "big"}, TypeError, "option 'window' must be an int or a pair"),
    ("occlusion", None, {"baseline": "zeros"}, TypeError, "option 'baseline' must be a finite float, 'mean' or 'blur', got 'zeros'"),
    ("occlusion", None, {"baseline": [0.0]}, TypeError, "option 'baseline'"),
    ("scorecam", "decoder", {"score": "iou"}, ValueError, "option 'score' must be one of"),
    ("scorecam", "decoder", {"n_masks": 3}, ValueError, r"options \['n_masks'\] are not options of method 'scorecam'; valid options: \['batch_size', 'score'\]"),
    ("eigencam", "decoder", {"batch_size": 3}, ValueError, "valid options: none"),
    ("gradcam", "decoder", {"batch_size": 3}, ValueError, r"valid options: \[.aug_smooth., .eigen_smooth.\]"),
    ("scorecam", None, {}, ValueError, "target_layer is required for method 'scorecam'"),
    ("ablationcam", None, {}, ValueError, "target_layer is required for method 'ablationcam'"),
    ("rise", "decoder", {}, ValueError, "target_layer must be None for method 'rise'"),
    ("occlusion", "decoder", {}, ValueError, "target_layer must be None for method 'occlusion'"),
    ("rise", None, [("n_masks", 3)], TypeError, "options must be a dict"),
])
def test_bad_options(method, layer, options, error, match):
    with pytest.raises(error, match=match):
        sx.Explainer(sx.demo_model(), layer, method, options=options)


def test_window_larger_than_the_image():
    model, images, _ = CASES["demo"]()
    with pytest.raises(ValueError, match=r"option 'window' \(65, 8\) is larger than the 64×64 image"):
        sx.Explainer(model, None, "occlusion", options={"window": (65, 8)})(images)


def test_normalize_must_be_a_bool():
    with pytest.raises(TypeError, match="normalize must be True or False"):
        sx.Explainer(sx.demo_model(), "decoder", "gradcam", normalize="yes")


def test_blur_baseline_runs_and_differs_from_the_mean():
    model, images, _ = CASES["demo"]()
    opts = {"window": 16, "stride": 8}
    blur = sx.Explainer(model, None, "occlusion", options={**opts, "baseline": "blur"})(images, classes=[1])
    mean = sx.Explainer(model, None, "occlusion", options={**opts, "baseline": "mean"})(images, classes=[1])
    assert torch.isfinite(blur.maps).all() and (blur.maps - mean.maps).abs().max() > 1e-3
