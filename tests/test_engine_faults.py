"""The engine under faults and odd inputs: changed weights, threads, odd
dtypes and sizes, odd class lists and regions, huge masks, inference mode, compiled models,
class ids and names in overlays. Each case would otherwise fail obscurely or, worse, silently."""
import copy
import threading
import warnings

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import seg_xai_fast as sx
from seg_xai_fast import kernels
from conftest import random_demo


@pytest.fixture(scope="module")
def model():
    return random_demo()


@pytest.fixture(scope="module")
def images():
    return torch.rand(2, 3, 32, 40, generator=torch.Generator().manual_seed(1))


def _fresh_maps(model, images, layer="decoder", method="gradcam", **kw):
    """Maps of a new explainer: what a reused one must give."""
    return sx.Explainer(model, layer, method)(images, **kw).maps


# --------------------------------------------------------------- 12.5: the cached head follows the weights

def _perturbed(model, seed):
    other = copy.deepcopy(model)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in other.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.5)
    return other


@pytest.mark.parametrize("change", ["in_place", "load_state_dict", "parameter_replaced", "module_replaced"])
def test_reused_explainer_follows_changed_weights(model, images, change):
    model = copy.deepcopy(model)
    explainer = sx.Explainer(model, "decoder", "gradcam++")
    before = explainer(images).maps
    assert explainer.gradient_path == "analytic"
    with torch.no_grad():
        if change == "in_place":
            model.classifier.weight.mul_(-1.5).add_(0.3)
        elif change == "load_state_dict":
            model.load_state_dict(_perturbed(model, 7).state_dict())
        elif change == "parameter_replaced":
            model.classifier.weight = nn.Parameter(torch.randn_like(model.classifier.weight))
        else:
            model.classifier = copy.deepcopy(model.classifier)
            model.classifier.weight.normal_()
    after = explainer(images)
    expected = _fresh_maps(model, images, method="gradcam++")
    assert not torch.allclose(expected, before, atol=1e-2)  # the change matters: stale maps would fail below
    assert after.info["gradient_path"] == "analytic"
    torch.testing.assert_close(after.maps, expected, rtol=0, atol=1e-5)
    forward = explainer.forward(images)  # the split path (video) uses the same head
    torch.testing.assert_close(explainer.explain_outputs(forward).maps, expected, rtol=0, atol=1e-5)


def test_reused_explainer_follows_folded_batchnorm():
    """The head's BatchNorm is folded into its weight: a change of its running statistics counts."""
    class BNHead(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = nn.Conv2d(3, 6, 3, padding=1)
            self.bn = nn.BatchNorm2d(6)
            self.cls = nn.Conv2d(6, 3, 1)

        def forward(self, x):
            return F.interpolate(self.cls(self.bn(self.body(x))), scale_factor=2, mode="bilinear")

    torch.manual_seed(2)
    model = BNHead().eval()
    x = torch.rand(2, 3, 8, 8)
    explainer = sx.Explainer(model, "body", "gradcam")
    before = explainer(x).maps
    assert explainer.gradient_path == "analytic"
    with torch.no_grad():
        model.bn.running_var.copy_(torch.tensor([9.0, 0.01, 4.0, 0.2, 1.0, 25.0]))
        model.bn.weight.copy_(torch.tensor([1.0, -2.0, 0.5, 3.0, -1.0, 0.1]))
    expected = sx.Explainer(model, "body", "gradcam")(x).maps
    assert not torch.allclose(expected, before, atol=1e-2)
    torch.testing.assert_close(explainer(x).maps, expected, rtol=0, atol=1e-5)


# --------------------------------------------------------------- 12.9: threads sharing a model


def _hook_counts(model):
    return [(len(m._forward_hooks), len(m._forward_pre_hooks), len(m._backward_hooks)) for m in model.modules()]


@pytest.mark.parametrize("mode", ["eval", "train"])
def test_threads_sharing_a_model_get_the_sequential_maps(model, images, mode):
    model = copy.deepcopy(model)
    model.encoder.requires_grad_(False)

    def explainers():  # closed form after its first call; hooks and VJPs on every call
        return [sx.Explainer(model, "decoder", "gradcam++"),
                sx.Explainer(model, "encoder.stage3", "gradcam", gradient_path="autograd")]

    calls = [(i % 2, [i % 4, (i + 1) % 4], images[i % 2:i % 2 + 1 + (i % 3 == 0)]) for i in range(60)]
    sequential, shared = explainers(), explainers()  # the threads also race for the first calls
    getattr(model, mode)()
    flags = [p.requires_grad for p in model.parameters()]
    hooks = _hook_counts(model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # train mode warns once per call
        expected = [sequential[e](x, classes=c).maps for e, c, x in calls]
        results, errors = [None] * 60, []

        def worker(t):
            try:
                for i in range(t, 60, 4):  # 4 threads × 15 calls, interleaved
                    e, c, x = calls[i]
                    results[i] = shared[e](x, classes=c).maps
            except Exception as exc:  # reported below: a failing thread must fail the test
                errors.append(exc)

        threads = [threading.Thread(target=worker, args=(t,)) for t in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert not errors, errors[:3]
    for i, (got, want) in enumerate(zip(results, expected)):
        torch.testing.assert_close(got, want, rtol=0, atol=1e-6, msg=f"call {i}")
    assert model.training == (mode == "train") and all(m.training == (mode == "train") for m in model.modules())
    assert [p.requires_grad for p in model.parameters()] == flags
    assert _hook_counts(model) == hooks


def test_model_lock_is_released_when_the_state_change_fails(model, images):
    """A warning turned into an error inside ModelState must not leave the model locked."""
    from seg_xai_fast.engine.capture import model_lock

    model = copy.deepcopy(model).train()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(UserWarning, match="train mode"):
            sx.Explainer(model, "decoder")(images)
    assert model.training and all(p.requires_grad for p in model.parameters())
    lock, acquired = model_lock(model), []

    def other_thread():
        acquired.append(lock.acquire(timeout=5))
        if acquired[-1]:
            lock.release()

    t = threading.Thread(target=other_thread)
    t.start()
    t.join()
    assert acquired == [True]  # another thread can take it: nothing was left held


# --------------------------------------------------------------- 12.12: odd inputs


def test_float64_images_are_converted_to_the_model_dtype(model, images):
    explainer = sx.Explainer(model, "decoder", "gradcam")
    torch.testing.assert_close(explainer(images.double()).maps, explainer(images).maps, rtol=0, atol=1e-6)


@pytest.mark.parametrize("bad, pattern", [
    (torch.rand(0, 3, 32, 32), r"images must hold at least one image, got an empty batch"),
    (torch.rand(1, 3, 0, 5), r"images must be at least 1×1 pixels, got shape \[1, 3, 0, 5\]"),
    (torch.rand(1, 3, 5, 0), r"images must be at least 1×1 pixels"),
])
def test_empty_batch_and_empty_images_are_named(model, bad, pattern):
    with pytest.raises(ValueError, match=pattern):
        sx.Explainer(model, "decoder")(bad)


@pytest.mark.parametrize("classes, error, pattern", [
    ([1.7], ValueError, r"classes must hold whole-number class ids, got 1\.7"),
    ("12", ValueError, r"the string '12' is not a class name.*needs class_names"),
    (["12"], ValueError, r"the string '12' is not a class name"),
    ([True], TypeError, r"classes must hold int class ids, got the bool True"),
    ([None], TypeError, r"classes must hold int class ids, got NoneType None"),
    (list(range(100, 10100)), ValueError, r"got \[100, 101, .*\(9992 more\)\]$"),
    ([1, 2, 1] * 5000, ValueError, r"classes must not repeat ids, got \[1, 2\] more than once"),
])
def test_class_lists_are_checked(model, images, classes, error, pattern):
    with pytest.raises(error, match=pattern) as info:
        sx.Explainer(model, "decoder")(images, classes=classes)
    assert len(str(info.value)) < 300  # 10,000 bad ids once gave a 672 KB message


def test_integral_floats_and_numpy_ids_are_class_ids(model, images):
    explainer = sx.Explainer(model, "decoder")
    assert explainer(images, classes=[2.0, np.int64(3)]).classes == [2, 3]
    assert explainer(images, classes=torch.tensor([1, 0])).classes == [1, 0]
    assert explainer(images, classes=np.int64(2)).classes == [2]


@pytest.mark.parametrize("path", ["analytic", "autograd"])
def test_huge_masks_are_refused_not_turned_into_zero_maps(model, images, path):
    explainer = sx.Explainer(model, "decoder", "gradcam++", gradient_path=path)
    with pytest.raises(ValueError, match=r"masks must hold target weights within ±1e\+06.*magnitude 1e\+38"):
        explainer(images, classes=[1], masks=torch.full((2, 1, 32, 40), 1e38))
    # At the limit the result is right: Grad-CAM is scale-invariant in the masks.
    explainer = sx.Explainer(model, "decoder", "gradcam", gradient_path=path)
    soft = torch.rand(2, 1, 32, 40, generator=torch.Generator().manual_seed(3))
    res = explainer(images, classes=[1], masks=soft * 1e6)
    torch.testing.assert_close(res.maps, explainer(images, classes=[1], masks=soft).maps, rtol=0, atol=2e-3)
    assert res.active.all() and (res.maps.flatten(2).amax(2) > 0.99).all()


@pytest.mark.parametrize("make, pattern", [
    (lambda: sx.Box(1.5, 0, 10, 10), r"Box\.y0 must be an int, got float 1\.5"),
    (lambda: sx.Box(0, 0, 10, "9"), r"Box\.x1 must be an int, got str '9'"),
    (lambda: sx.Pixel(2, None), r"Pixel\.x must be an int, got NoneType None"),
    (lambda: sx.Component(True, 1), r"Component\.y must be an int, got bool True"),
])
def test_region_arguments_must_be_ints(make, pattern):
    with pytest.raises(TypeError, match=pattern):
        make()


def test_region_accepts_numpy_ints(model, images):
    box = sx.Box(np.int64(2), 3, np.int32(20), 30)
    assert box == sx.Box(2, 3, 20, 30) and type(box.y0) is int
    torch.testing.assert_close(sx.Explainer(model, "decoder")(images, classes=[1], masks=box).maps,
                               sx.Explainer(model, "decoder")(images, classes=[1], masks=sx.Box(2, 3, 20, 30)).maps)


@pytest.mark.parametrize("masks, pattern", [
    (torch.zeros(5), r"masks must have shape \[B,K,H,W\] = \[2, 1, 32, 40\]"),
    (torch.full((2, 1, 32, 40), float("nan")), r"masks contains NaN"),
    (sx.Pixel(100, 2), r"Pixel\(100, 2\) lies outside the 32×40 output"),
    ("everywhere", r"masks must be None, a float Tensor"),
])
@pytest.mark.parametrize("method", ["eigencam", "gradcam"])
def test_masks_are_checked_the_same_way_for_every_method(model, images, method, masks, pattern):
    with pytest.raises(ValueError, match=pattern):
        sx.Explainer(model, "decoder", method)(images, classes=[1], masks=masks)


def test_inference_mode_is_named(model, images):
    with torch.inference_mode():
        with pytest.raises(RuntimeError, match=r"call the explainer outside torch\.inference_mode\(\)"):
            sx.Explainer(model, "decoder", "gradcam")(images)


def test_compiled_model_is_explained_through_its_original_module(model, images):
    """torch.compile'd models are explained eagerly through `_orig_mod` (hooks and requires_grad
    changes would meet the compiled graph; torch raised its donated-buffers error). The cheap
    "eager" compile backend gives the same wrapper type as the default one and is never run
    here: the full inductor compile takes minutes on a 2-core test machine."""
    compiled = torch.compile(model, backend="eager")
    assert compiled is not model
    for layer in ("decoder", "_orig_mod.decoder"):
        explainer = sx.Explainer(compiled, layer, "gradcam", gradient_path="autograd")
        assert explainer.model is model and explainer.layer_name == "decoder"
        torch.testing.assert_close(explainer(images).maps, _fresh_maps(model, images), rtol=0, atol=1e-5)


# --------------------------------------------------------------- 13.8: class ids and names


def test_overlay_takes_a_class_id(model, images):
    res = sx.Explainer(model, "decoder")(images, classes=[1, 3])
    frames = (images * 255 + 0.5).to(torch.uint8).permute(0, 2, 3, 1).contiguous()
    assert torch.equal(res.overlay(images, class_id=3), kernels.overlay(frames, res.maps[:, 1]))
    assert torch.equal(res.overlay(images, class_id=1), kernels.overlay(frames, res.maps[:, 0]))
    with pytest.raises(ValueError, match=r"class_id 2 was not explained; the explained classes are \[1, 3\]"):
        res.overlay(images, class_id=2)
    with pytest.raises(ValueError, match=r"class_id is needed when several classes were explained"):
        res.overlay(images)
    with pytest.raises(ValueError, match=r"the string 'disc' is not a class name"):
        res.overlay(images, class_id="disc")
    single = sx.Explainer(model, "decoder")(images, classes=[2])
    assert torch.equal(single.overlay(images), kernels.overlay(frames, single.maps[:, 0]))


@pytest.mark.parametrize("path", ["analytic", "autograd"])
def test_class_names_are_accepted_where_ids_are(model, images, path):
    explainer = sx.Explainer(model, "decoder", gradient_path=path, class_names=sx.CLASS_NAMES)
    res = explainer(images, classes=["disc", 3])
    assert res.classes == [1, 3] and res.class_names == sx.CLASS_NAMES
    torch.testing.assert_close(res.maps, sx.Explainer(model, "decoder")(images, classes=[1, 3]).maps)
    assert torch.equal(res.overlay(images, class_id="triangle"), res.overlay(images, class_id=3))
    assert torch.equal(res.map_of("disc"), res.maps[:, 0])
    with pytest.raises(ValueError, match=r"class_id 'square' was not explained.*\[1, 3\] \(\['disc', 'triangle'\]\)"):
        res.overlay(images, class_id="square")
    with pytest.raises(ValueError, match=r"the string 'disk' is not one of the class names \['background', 'disc'"):
        explainer(images, classes=["disk"])
    assert sx.Explainer(model, "decoder", "eigencam", class_names=sx.CLASS_NAMES)(images, classes="square").classes == [2]


def test_class_names_are_checked(model, images):
    with pytest.raises(TypeError, match="class_names must be a sequence of str"):
        sx.Explainer(model, "decoder", class_names="disc")
    with pytest.raises(ValueError, match="class_names must be distinct"):
        sx.Explainer(model, "decoder", class_names=["a", "a", "b", "c"])
    with pytest.raises(ValueError, match=r"class_names must name every class the model outputs \(4\), got 2"):
        sx.Explainer(model, "decoder", class_names=["a", "b"])(images, classes=["a"])
