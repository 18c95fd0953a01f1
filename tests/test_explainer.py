"""The Explainer's contract: shapes, targets, chunking, model left as found, clear errors."""
import re
import warnings

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import seg_xai_fast as sx
from seg_xai_fast import reference
from seg_xai_fast.demo.model import DemoSegNet
from seg_xai_fast.engine.targets import target_masks

GRADIENT_METHODS = ["gradcam", "gradcam++", "xgradcam", "hirescam", "layercam"]


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return DemoSegNet().eval()


@pytest.fixture(scope="module")
def images():
    return torch.rand(2, 3, 48, 40, generator=torch.Generator().manual_seed(3))


def _hook_counts(model):
    return [(len(m._forward_hooks), len(m._forward_pre_hooks), len(m._backward_hooks)) for m in model.modules()]


def _full_backward_maps(model, layer, method, images, classes, masks):
    """Oracle: one full forward + backward per (image, class), the peer's way, then reference maths."""
    acts, out = {}, []
    h = model.get_submodule(layer).register_forward_hook(lambda m, i, o: acts.__setitem__("A", o))
    try:
        for b in range(images.shape[0]):
            row = []
            for k, c in enumerate(classes):
                logits = model(images[b:b + 1])
                A = acts["A"]
                (G,) = torch.autograd.grad((logits[0, c] * masks[b, k]).sum(), A)
                row.append(reference.cam_from_gradients(A.detach(), G[:, None], method, images.shape[-2:]))
            out.append(torch.cat(row, dim=1))
    finally:
        h.remove()
    return torch.cat(out)


@pytest.mark.parametrize("layer, path", [("decoder", "autograd"), ("decoder", "analytic"), ("encoder.stage3", "autograd")])
@pytest.mark.parametrize("method", GRADIENT_METHODS)
def test_one_forward_equals_a_backward_per_class(model, images, method, layer, path):
    classes = [0, 2, 3]
    masks = (torch.rand(2, 3, 48, 40, generator=torch.Generator().manual_seed(4)) > 0.6).float()
    explainer = sx.Explainer(model, layer, method, gradient_path=path)
    for _ in range(2):  # the first call finds the path, the second uses it
        res = explainer(images, classes=classes, masks=masks)
        assert explainer.gradient_path == path == res.info["gradient_path"]
    expected = _full_backward_maps(model, layer, method, images, classes, masks)
    assert res.maps.shape == (2, 3, 48, 40) and res.maps.dtype == torch.float32
    assert res.classes == classes
    torch.testing.assert_close(res.maps, expected, rtol=0, atol=1e-4)  # float32 VJP order vs full backward
    if path == "autograd":
        assert res.info["backward_start"] == "logits before upsample"


def test_default_targets_are_the_predicted_regions(model, images):
    res = sx.Explainer(model, "decoder", "gradcam")(images)
    assert res.classes == list(range(4))
    labels = model(images).argmax(1)
    torch.testing.assert_close(res.labels, labels)
    masks = torch.stack([(labels == c).float() for c in range(4)], 1)
    expected = _full_backward_maps(model, "decoder", "gradcam", images, list(range(4)), masks)
    torch.testing.assert_close(res.maps, expected, rtol=0, atol=1e-4)


def test_empty_region_gives_zero_map_and_no_backward(model, images):
    masks = torch.zeros(2, 2, 48, 40)
    masks[0, 1, 5:9, 5:9] = 1  # class 3 has a region in image 0 only; class 1 in none
    res = sx.Explainer(model, "decoder", "gradcam++", gradient_path="autograd")(images, classes=[1, 3], masks=masks)
    assert torch.equal(res.maps[:, 0], torch.zeros(2, 48, 40))
    assert torch.equal(res.maps[1, 1], torch.zeros(48, 40))
    assert res.maps[0, 1].max() > 0.99
    assert res.active.tolist() == [[False, True], [False, False]]
    assert res.info["backward_passes"] == 1
    assert not torch.isnan(res.maps).any()


@pytest.mark.parametrize("chunk", [1, 2, 3])
def test_chunking_does_not_change_results(model, images, chunk):
    masks = torch.rand(2, 4, 48, 40, generator=torch.Generator().manual_seed(9))
    full = sx.Explainer(model, "encoder.stage3", "layercam")(images, masks=masks)
    chunked = sx.Explainer(model, "encoder.stage3", "layercam", class_chunk=chunk)(images, masks=masks)
    tiny_budget = sx.Explainer(model, "encoder.stage3", "layercam", max_memory_mb=0.01)(images, masks=masks)
    assert torch.equal(full.maps, chunked.maps) and torch.equal(full.maps, tiny_budget.maps)


def test_batched_vjp_matches_loop(model, images):
    masks = torch.rand(2, 4, 48, 40, generator=torch.Generator().manual_seed(2))
    loop = sx.Explainer(model, "encoder.stage3", "gradcam", vjp="loop")(images, masks=masks)
    batched = sx.Explainer(model, "encoder.stage3", "gradcam", vjp="batched")(images, masks=masks)
    torch.testing.assert_close(loop.maps, batched.maps, rtol=0, atol=1e-5)


def test_regions_box_pixel_component(model, images):
    explainer = sx.Explainer(model, "decoder", "hirescam")
    box = explainer(images, classes=[1], masks=sx.Box(4, 6, 20, 30))
    manual = torch.zeros(2, 1, 48, 40)
    manual[:, :, 4:20, 6:30] = 1
    torch.testing.assert_close(box.maps, explainer(images, classes=[1], masks=manual).maps)
    pixel = explainer(images, classes=[2], masks=[sx.Pixel(3, 4), sx.Pixel(40, 30)])
    manual = torch.zeros(2, 1, 48, 40)
    manual[0, 0, 3, 4] = manual[1, 0, 40, 30] = 1
    torch.testing.assert_close(pixel.maps, explainer(images, classes=[2], masks=manual).maps)


def test_connected_component_region():
    labels = torch.zeros(1, 10, 10, dtype=torch.long)
    labels[0, 1:4, 1:4] = 2  # component A
    labels[0, 6:9, 6:9] = 2  # component B, not connected to A
    masks = target_masks(labels, [0, 2], sx.Component(2, 2))
    assert masks[0, 1].sum() == 9 and masks[0, 1, 1:4, 1:4].all()
    assert masks[0, 0].sum() == 0  # the pixel is class 2, so class 0 has an empty target


def test_eigencam_is_class_agnostic(model, images):
    res = sx.Explainer(model, "decoder", "eigencam")(images, classes=[0, 3])
    assert torch.equal(res.maps[:, 0], res.maps[:, 1])
    acts = []
    handle = model.decoder.register_forward_hook(lambda m, i, o: acts.append(o.detach()))
    with torch.no_grad():
        model(images)
    handle.remove()
    expected = reference.postprocess(reference.eigen_cam(acts[0]).unsqueeze(1), images.shape[-2:])
    torch.testing.assert_close(res.maps[:, :1], expected, rtol=0, atol=1e-5)


def test_dict_and_tuple_outputs(model, images):
    class DictModel(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = model

        def forward(self, x):
            return {"seg": self.net(x), "aux": None}

    class TupleModel(DictModel):
        def forward(self, x):
            return (self.net(x), 1)

    base = sx.Explainer(model, "decoder")(images).maps
    dict_model, tuple_model = DictModel().eval(), TupleModel().eval()
    torch.testing.assert_close(sx.Explainer(dict_model, "net.decoder", output_key="seg")(images).maps, base)
    torch.testing.assert_close(sx.Explainer(tuple_model, "net.decoder")(images).maps, base)
    with pytest.raises(ValueError, match="output_key 'out'.*keys: \\['aux', 'seg'\\]"):
        sx.Explainer(dict_model, "net.decoder")(images)


def test_model_left_as_found(model, images):
    model.train()
    model.encoder.requires_grad_(False)
    flags = [p.requires_grad for p in model.parameters()]
    hooks = _hook_counts(model)
    try:
        with pytest.warns(UserWarning, match="train mode"):
            with sx.Explainer(model, "decoder", "gradcam") as explainer:
                explainer(images)
        assert model.training and all(m.training for m in model.modules())
        assert [p.requires_grad for p in model.parameters()] == flags
        assert _hook_counts(model) == hooks
        assert all(p.grad is None for p in model.parameters())  # no parameter gradients made
        # also when the call fails half-way
        with pytest.raises(ValueError), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            sx.Explainer(model, "decoder")(images, classes=[7])
        assert _hook_counts(model) == hooks and model.training
        assert [p.requires_grad for p in model.parameters()] == flags
    finally:
        model.eval()
        model.requires_grad_(True)


@pytest.mark.parametrize(
    "call, error, pattern",
    [
        (lambda e, x: e(x[0]), ValueError, r"images must have 4 or 5 dimensions \[B,C,H,W\] \(images\) or \[B,C,D,H,W\] \(volumes\), got shape \[3, 48, 40\]"),
        (lambda e, x: e(x[:, :2]), ValueError, r"images must have 3 channels.*got shape \[2, 2, 48, 40\]"),
        (lambda e, x: e((x * 255).to(torch.uint8)), ValueError, r"images must be a float tensor, got dtype torch.uint8"),
        (lambda e, x: e(x.numpy()), TypeError, r"images must be a torch.Tensor"),
        (lambda e, x: e(x, classes=[4]), ValueError, r"classes must be ids in \[0, 3\].*got \[4\]"),
        (lambda e, x: e(x, classes=[1, 1]), ValueError, r"classes must not repeat"),
        (lambda e, x: e(x, classes=[1], masks=torch.ones(2, 2, 48, 40)), ValueError,
         r"masks must have shape \[B,K,H,W\] = \[2, 1, 48, 40\].*got \[2, 2, 48, 40\]"),
        (lambda e, x: e(x, classes=[1], masks=torch.full((2, 1, 48, 40), float("nan"))), ValueError, r"masks contains NaN"),
        (lambda e, x: e(x.masked_fill(x > 0.99, float("inf"))), ValueError, r"images contains NaN or Inf"),
        (lambda e, x: e(x, masks=sx.Pixel(100, 2)), ValueError, r"Pixel\(100, 2\) lies outside the 48×40 output"),
    ],
)
def test_bad_input_errors(model, images, call, error, pattern):
    with pytest.raises(error, match=pattern):
        call(sx.Explainer(model, "decoder"), images)


def test_bad_constructor_arguments(model):
    with pytest.raises(ValueError, match=r"target_layer 'decodr' not found.*close names: \['decoder'"):
        sx.Explainer(model, "decodr")
    with pytest.raises(ValueError, match=r"method must be one of .*got 'gradcam\+'"):
        sx.Explainer(model, "decoder", "gradcam+")
    with pytest.raises(ValueError, match="backend must be"):
        sx.Explainer(model, "decoder", backend="cuda")
    with pytest.raises(ValueError, match="not a submodule"):
        sx.Explainer(model, nn.Conv2d(1, 1, 1))
    with pytest.raises(TypeError, match="model must be a torch.nn.Module"):
        sx.Explainer(lambda x: x, "decoder")


def test_layer_not_on_output_path():
    class SideBranch(nn.Module):
        def __init__(self):
            super().__init__()
            self.side = nn.Conv2d(3, 4, 1)
            self.head = nn.Conv2d(3, 5, 1)

        def forward(self, x):
            self.side(x)  # computed, but the output does not depend on it
            return self.head(x)

    with pytest.raises(ValueError, match="'side' is not on the path to the model output"):
        sx.Explainer(SideBranch().eval(), "side")(torch.rand(1, 3, 8, 8))
    with pytest.raises(ValueError, match="not a segmentation map: expected logits \\[B=1,L,H,W\\], got \\[1, 5\\]"):
        sx.Explainer(nn.Sequential(nn.Conv2d(3, 5, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten()).eval(), "0")(torch.rand(1, 3, 8, 8))


def test_nonfinite_gradients_are_reported():
    class Explodes(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = nn.Conv2d(3, 4, 1)

        def forward(self, x):
            y = self.body(x)
            return torch.sqrt(y - y)  # d sqrt(u)/du = inf at u = 0

    with pytest.raises(FloatingPointError, match="gradients at target_layer 'body' contain NaN or Inf"):
        sx.Explainer(Explodes().eval(), "body")(torch.rand(1, 3, 8, 8), masks=torch.ones(1, 4, 8, 8))


def test_methods_listing():
    listed = sx.methods()
    assert set(listed) == {"gradcam", "gradcam++", "xgradcam", "hirescam", "layercam", "eigencam",
                           "gradcam_elementwise", "segxrescam", "eigengradcam", "segeigencam", "finercam",
                           "kpcacam", "fem", "randomcam", "scorecam", "ablationcam", "rise", "occlusion",
                           "shapleycam", "fullgrad", "featureablation", "kernelshap", "lime", "saliency",
                           "inputxgradient", "integratedgradients", "smoothgrad", "guidedbackprop", "deconvolution",
                           "guidedgradcam", "deeplift", "lrp"}
    assert all(isinstance(d, str) and d for d in listed.values())


@pytest.mark.parametrize("method, layer, path", [
    ("gradcam", "decoder", "analytic"), ("gradcam++", "decoder", "autograd"), ("layercam", "encoder.stage3", "autograd"),
    ("hirescam", "decoder", "analytic"), ("eigencam", "decoder", "auto"),
])
@pytest.mark.parametrize("with_masks", [False, True])
def test_layer_resolution_upsamples_to_the_full_maps(model, images, method, layer, path, with_masks):
    """resolution="layer" gives the maps before the final upsample; sx.upsample_maps restores the
    full maps. Tolerance 1e-5: the only difference is the min-max eps applied once more."""
    explainer = sx.Explainer(model, layer, method, gradient_path=path)
    masks = (torch.rand(2, 4, 48, 40, generator=torch.Generator().manual_seed(5)) > 0.5).float() if with_masks else None
    full = explainer(images, masks=masks).maps
    low = explainer(images, masks=masks, resolution="layer").maps
    seen = {}
    handle = model.get_submodule(layer).register_forward_hook(lambda m, i, o: seen.__setitem__("hw", o.shape[-2:]))
    with torch.no_grad():
        model(images)
    handle.remove()
    assert low.shape == (2, 4, *seen["hw"]) and low.dtype == torch.float32
    assert 0 <= low.min() and low.max() <= 1
    torch.testing.assert_close(sx.upsample_maps(low, full.shape[-2:]), full, rtol=0, atol=1e-5)


def test_bad_resolution_is_named(model, images):
    with pytest.raises(ValueError, match=r"resolution must be one of \['full', 'layer'\], got 'low'"):
        sx.Explainer(model, "decoder", "gradcam")(images, resolution="low")
    with pytest.raises(ValueError, match=r"maps must be a Tensor \[B,K,h,w\]"):
        sx.upsample_maps(torch.rand(3, 4), (8, 8))


def test_finite_check_is_exact():
    """The sum fast path must neither miss a NaN/Inf nor reject finite images whose sum overflows."""
    from seg_xai_fast.engine.checks import check_finite_images

    check_finite_images(torch.full((1, 3, 4, 4), 3e38))  # the sum overflows; every value is finite
    for bad in (float("nan"), float("inf"), -float("inf")):
        x = torch.rand(2, 3, 5, 7)
        x[1, 2, 4, 6] = bad
        with pytest.raises(ValueError, match="images contains NaN or Inf"):
            check_finite_images(x)
    x = torch.rand(1, 3, 4, 4)
    x[0, 0, 0, :2] = torch.tensor([float("inf"), -float("inf")])  # inf - inf: the sum is NaN, caught too
    with pytest.raises(ValueError):
        check_finite_images(x)


@pytest.mark.slow
def test_deeplabv3_resnet50_at_520_stays_under_4gb():
    """The engine's memory bound, measured: 21 dense targets through the autograd path at layer4,
    in a fresh process (benchmarks/engine_memory.py; peak RSS includes torch and the model)."""
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "engine_memory.py"
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-2000:]
    peak = float(re.search(r"explanation:\s+peak RSS\s+(\d+) MB", out.stdout).group(1))
    assert "21 backward passes" in out.stdout and peak < 4096, out.stdout
