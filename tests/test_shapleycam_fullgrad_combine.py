"""ShapleyCAM, FullGrad, test-time augmentation (aug_smooth) and several target layers: parity
with the real pytorch-grad-cam package class by class (max abs ≤ 1e-4), their errors, and the
model left as found.

Models: a random-initialised torchvision DeepLabV3-MobileNetV3 (its Hardswish layers give
ShapleyCAM a non-zero Hessian term above backbone.15), a random-initialised
segmentation-models-pytorch U-Net and the bundled demo model. The peer is called once per
(image, class), as its API requires.
"""
import numpy as np
import pytest
import torch
import torchvision.models.segmentation as tvseg

import seg_xai_fast as sx

pgc = pytest.importorskip("pytorch_grad_cam", reason="the grad-cam package is a test dependency: pip install '.[test]'")
from pytorch_grad_cam.utils.model_targets import SemanticSegmentationTarget  # noqa: E402
from peers import OutOnly as _OutOnly  # noqa: E402

TOL = 1e-4


def _mobilenet():
    torch.manual_seed(0)
    model = tvseg.deeplabv3_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=21).eval()
    return model, torch.rand(1, 3, 96, 96, generator=torch.Generator().manual_seed(1))


def _unet():
    smp = pytest.importorskip("segmentation_models_pytorch")
    torch.manual_seed(0)
    model = smp.Unet("resnet18", encoder_weights=None, classes=5).eval()
    return model, torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(2))


def _demo():
    return sx.demo_model(), sx.synthetic_scenes(2, seed=777, size=96)[0]


# name → (model and images, [layer, second layer], ShapleyCAM's layer)
CASES = {
    "demo": (_demo, ["decoder", "encoder.stage4"], "encoder.stage4"),
    "deeplabv3_mobilenet_v3_large": (_mobilenet, ["backbone.16", "backbone.12"], "backbone.15"),
    "smp_unet_resnet18": (_unet, ["decoder.blocks.2", "encoder.layer4"], "decoder.blocks.2"),
}


@pytest.fixture(scope="module", params=[n if n == "demo" else pytest.param(n, marks=pytest.mark.slow)
                                        for n in sorted(CASES)])
def case(request):
    make, layers, shapley_layer = CASES[request.param]
    model, images = make()
    return request.param, model, images, layers, shapley_layer


def _box_masks(batch, classes, size, seed, symmetric=False):
    """Non-empty random box regions [B,K,H,W]; symmetric: centred, so a horizontal flip keeps them."""
    g = torch.Generator().manual_seed(seed)
    masks = torch.zeros(batch, len(classes), size, size)
    for b in range(batch):
        for k in range(len(classes)):
            y0, x0 = torch.randint(0, size // 2, (2,), generator=g).tolist()
            h, w = torch.randint(size // 8, size // 2, (2,), generator=g).tolist()
            x1 = size - x0 if symmetric else x0 + w
            masks[b, k, y0:y0 + h, x0:x1] = 1.0
    return masks


def _peer_maps(cam_class, model, layers, images, classes, masks, **call):
    """The peer's maps [B,K,H,W], one call per (image, class)."""
    out = np.zeros((images.shape[0], len(classes)) + tuple(images.shape[-2:]), np.float32)
    with cam_class(model=_OutOnly(model), target_layers=layers) as cam:
        for b in range(images.shape[0]):
            for k, c in enumerate(classes):
                target = SemanticSegmentationTarget(c, masks[b, k].numpy())
                out[b, k] = cam(input_tensor=images[b:b + 1], targets=[target], **call)[0]
    return torch.from_numpy(out)


def _assert_close(name, ours, peer, classes):
    assert ours.shape == peer.shape
    for b in range(ours.shape[0]):
        for k, c in enumerate(classes):
            diff = (ours[b, k] - peer[b, k]).abs().max().item()
            assert diff <= TOL, f"{name} image {b} class {c}: max abs diff {diff:.2e}"


def _state(model):
    return ([p.requires_grad for p in model.parameters()], [m.training for m in model.modules()],
            sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules()))


# --------------------------------------------------------------------------- parity


def test_shapleycam_matches_peer(case):
    name, model, images, _, layer = case
    classes = [1, 3]
    masks = _box_masks(images.shape[0], classes, images.shape[-1], seed=5)
    before = _state(model)
    ours = sx.Explainer(model, layer, "shapleycam")(images, classes=classes, masks=masks).maps
    assert _state(model) == before
    peer = _peer_maps(pgc.ShapleyCAM, model, [model.get_submodule(layer)], images, classes, masks)
    _assert_close(f"{name} shapleycam", ours, peer, classes)


class _SmoothNet(torch.nn.Module):
    """A small segmenter with smooth activations (SiLU, Tanh): the Hessian above "stem" is not zero."""

    def __init__(self):
        super().__init__()
        nn = torch.nn
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1), nn.SiLU())
        self.mid = nn.Sequential(nn.Conv2d(8, 16, 3, 1, 1), nn.BatchNorm2d(16), nn.SiLU())
        self.head = nn.Sequential(nn.Conv2d(16, 16, 3, 1, 1), nn.Tanh(), nn.Conv2d(16, 5, 1))

    def forward(self, x):
        z = self.head(self.mid(self.stem(x)))
        return torch.nn.functional.interpolate(z, size=x.shape[-2:], mode="bilinear", align_corners=False)


def test_shapleycam_hessian_term_matches_peer():
    """Where the Hessian term is not negligible, ShapleyCAM differs from Grad-CAM, and matches the peer
    class by class, batched over classes or not."""
    torch.manual_seed(3)
    model = _SmoothNet().eval()
    images = torch.rand(2, 3, 48, 48, generator=torch.Generator().manual_seed(4)) * 4
    classes = [0, 1, 4]
    masks = _box_masks(2, classes, 48, seed=11)
    shapley = sx.Explainer(model, "stem", "shapleycam", vjp="batched")(images, classes=classes, masks=masks).maps
    grad = sx.Explainer(model, "stem", "gradcam")(images, classes=classes, masks=masks).maps
    assert (shapley - grad).abs().max() > 0.05
    peer = _peer_maps(pgc.ShapleyCAM, model, [model.stem], images, classes, masks)
    _assert_close("smooth net shapleycam", shapley, peer, classes)
    loop = sx.Explainer(model, "stem", "shapleycam", vjp="loop")(images, classes=classes, masks=masks).maps
    assert (loop - shapley).abs().max() <= 1e-5
    fullgrad = sx.Explainer(model, None, "fullgrad")(images, classes=classes, masks=masks).maps
    _assert_close("smooth net fullgrad", fullgrad, _peer_maps(pgc.FullGrad, model, [], images, classes, masks), classes)


def test_fullgrad_matches_peer(case):
    name, model, images, _, _ = case
    classes = [1, 3]
    masks = _box_masks(images.shape[0], classes, images.shape[-1], seed=6)
    before = _state(model)
    ours = sx.Explainer(model, None, "fullgrad", vjp="batched")(images, classes=classes, masks=masks).maps
    assert _state(model) == before
    peer = _peer_maps(pgc.FullGrad, model, [], images, classes, masks)
    _assert_close(f"{name} fullgrad", ours, peer, classes)


@pytest.mark.parametrize("method", ["gradcam", "gradcam++"])
def test_two_target_layers_match_peer(case, method):
    name, model, images, layers, _ = case
    classes = [1, 2]
    masks = _box_masks(images.shape[0], classes, images.shape[-1], seed=7)
    before = _state(model)
    explainer = sx.Explainer(model, layers, method)
    ours = explainer(images, classes=classes, masks=masks)
    assert _state(model) == before
    assert ours.layer == ", ".join(layers)
    peer_class = {"gradcam": pgc.GradCAM, "gradcam++": pgc.GradCAMPlusPlus}[method]
    peer = _peer_maps(peer_class, model, [model.get_submodule(n) for n in layers], images, classes, masks)
    _assert_close(f"{name} {method} {layers}", ours.maps, peer, classes)
    # one layer in a list is that layer's own map
    single = sx.Explainer(model, layers[0], method)(images, classes=classes, masks=masks).maps
    listed = sx.Explainer(model, layers[:1], method)(images, classes=classes, masks=masks).maps
    assert (single - listed).abs().max() <= TOL


def test_aug_smooth_matches_peer_on_flip_symmetric_regions(case):
    """The peer passes the same target to every augmented copy; on regions a horizontal flip keeps,
    that is the same as ours (which flips the region with the copy)."""
    name, model, images, layers, _ = case
    classes = [0, 2]
    masks = _box_masks(images.shape[0], classes, images.shape[-1], seed=8, symmetric=True)
    assert torch.equal(masks, masks.flip(-1))
    before = _state(model)
    ours = sx.Explainer(model, layers[0], "gradcam", options={"aug_smooth": True})(images, classes=classes, masks=masks)
    assert _state(model) == before
    assert ours.info["augmentations"] == 6
    peer = _peer_maps(pgc.GradCAM, model, [model.get_submodule(layers[0])], images, classes, masks, aug_smooth=True)
    _assert_close(f"{name} gradcam aug_smooth", ours.maps, peer, classes)


def test_aug_smooth_follows_regions_through_the_flip(case):
    """Asymmetric regions: ours equals the mean, over ttach's flips × factors, of the peer's maps of each
    augmented image for the region flipped with it, flipped back."""
    name, model, images, layers, _ = case
    classes = [1]
    masks = _box_masks(images.shape[0], classes, images.shape[-1], seed=9)
    assert not torch.equal(masks, masks.flip(-1))
    ours = sx.Explainer(model, layers[0], "hirescam", options={"aug_smooth": True})(images, classes=classes, masks=masks)
    peer = torch.zeros_like(ours.maps)
    for flip in (False, True):
        for factor in (0.9, 1.0, 1.1):
            aug = (images.flip(-1) if flip else images) * factor
            m = _peer_maps(pgc.HiResCAM, model, [model.get_submodule(layers[0])], aug, classes,
                           masks.flip(-1) if flip else masks)
            peer += (m.flip(-1) if flip else m) / 6
    _assert_close(f"{name} hirescam aug_smooth", ours.maps, peer, classes)


def test_aug_smooth_with_fullgrad_and_layers_on_the_demo():
    """aug_smooth wraps every path: FullGrad and a list of layers, each the mean of its copies."""
    model, images = _demo()
    masks = _box_masks(2, [1, 2], 96, seed=10, symmetric=True)
    for layer, method in ((None, "fullgrad"), (["decoder", "encoder.stage4"], "gradcam"),
                          ("encoder.stage4", "shapleycam")):
        ours = sx.Explainer(model, layer, method, options={"aug_smooth": True})(images, classes=[1, 2], masks=masks).maps
        peer_class = {"fullgrad": pgc.FullGrad, "gradcam": pgc.GradCAM, "shapleycam": pgc.ShapleyCAM}[method]
        layers = [] if layer is None else [model.get_submodule(n) for n in ([layer] if isinstance(layer, str) else layer)]
        peer = _peer_maps(peer_class, model, layers, images, [1, 2], masks, aug_smooth=True)
        _assert_close(f"demo {method} aug_smooth", ours, peer, [1, 2])


# --------------------------------------------------------------------------- behaviour and errors


def test_default_regions_and_forward_api_on_the_demo():
    """Predicted regions by default, and forward()/explain_outputs() give __call__'s maps."""
    model, images = _demo()
    for layer, method, options in ((None, "fullgrad", None), ("encoder.stage4", "shapleycam", None),
                                   (["decoder", "encoder.stage4"], "layercam", None),
                                   ("decoder", "gradcam", {"aug_smooth": True})):
        explainer = sx.Explainer(model, layer, method, options=options)
        res = explainer(images)
        assert res.maps.shape == (2, 4, 96, 96) and res.method == method
        assert torch.isfinite(res.maps).all() and res.maps.min() >= 0 and res.maps.max() <= 1
        again = explainer.explain_outputs(explainer.forward(images))
        assert (again.maps - res.maps).abs().max() <= 1e-6
        absent = res.active.logical_not()
        assert (res.maps[absent] == 0).all()


def test_shapleycam_of_a_linear_head_is_gradcam():
    """Above the classifier's input the target is linear in A: no Hessian term, the closed form applies."""
    model, images = _demo()
    shapley = sx.Explainer(model, "classifier:input", "shapleycam")
    first, second = shapley(images), shapley(images)
    grad = sx.Explainer(model, "classifier:input", "gradcam", gradient_path="autograd")(images)
    assert second.info["gradient_path"] == "analytic" and second.method == "shapleycam"
    assert (first.maps - grad.maps).abs().max() <= 1e-5 and (second.maps - grad.maps).abs().max() <= 1e-5


def test_raw_maps():
    model, images = _demo()
    raw = sx.Explainer(model, None, "fullgrad", normalize=False)(images, classes=[1]).maps
    assert raw.max() > 1  # the sum of per-channel normalised maps, before the final min-max
    raw = sx.Explainer(model, "encoder.stage4", "shapleycam", normalize=False)(images, classes=[1]).maps
    assert raw.min() < 0  # signed


def test_errors_name_the_argument():
    model, images = _demo()
    with pytest.raises(ValueError, match="target_layer must not be an empty list"):
        sx.Explainer(model, [], "gradcam")
    with pytest.raises(TypeError, match=r"target_layer\[1\] must be an nn.Module, a dotted name or InputOf, got int"):
        sx.Explainer(model, ["decoder", 3], "gradcam")
    with pytest.raises(ValueError, match=r"target_layer\[1\]: target_layer 'decodr' not found"):
        sx.Explainer(model, ["encoder.stage4", "decodr"], "gradcam")
    with pytest.raises(ValueError, match="method 'eigencam' takes a single target_layer"):
        sx.Explainer(model, ["decoder", "encoder.stage4"], "eigencam")
    with pytest.raises(ValueError, match="method 'fullgrad' takes target_layer=None"):
        sx.Explainer(model, ["decoder"], "fullgrad")
    with pytest.raises(ValueError, match="target_layer must be None for method 'fullgrad'"):
        sx.Explainer(model, "decoder", "fullgrad")
    with pytest.raises(ValueError, match="target_layer is required for method 'shapleycam'"):
        sx.Explainer(model, None, "shapleycam")
    with pytest.raises(TypeError, match="option 'aug_smooth' must be True or False, got 1"):
        sx.Explainer(model, "decoder", "gradcam", options={"aug_smooth": 1})
    with pytest.raises(ValueError, match=r"options \['aug_smooth'\] are not options of method 'eigencam'"):
        sx.Explainer(model, "decoder", "eigencam", options={"aug_smooth": True})
    with pytest.raises(ValueError, match="normalize=False is not available with a list of target layers"):
        sx.Explainer(model, ["decoder", "encoder.stage4"], "gradcam", normalize=False)
    for layer, method, options in ((["decoder", "encoder.stage4"], "gradcam", None), (None, "fullgrad", None),
                                   ("decoder", "gradcam", {"aug_smooth": True})):
        with pytest.raises(ValueError, match="resolution must be 'full'"):
            sx.Explainer(model, layer, method, options=options)(images, resolution="layer")
    assert sx.method_options("shapleycam") == {"aug_smooth": False}
    assert sx.method_options("fullgrad") == {"aug_smooth": False}


@pytest.mark.slow
def test_shapleycam_without_second_derivatives_says_so():
    """Hardsigmoid (MobileNetV3's squeeze-excitation above backbone.12) has no second derivative in torch."""
    model, images = _mobilenet()
    before = _state(model)
    with pytest.raises(ValueError, match="method 'shapleycam' needs second derivatives of the model above "
                                         "target_layer 'backbone.12'"):
        sx.Explainer(model, "backbone.12", "shapleycam")(images, classes=[1], masks=torch.ones(1, 1, 96, 96))
    assert _state(model) == before
