"""The closed-form (analytic) gradient path against autograd on real linear heads.

Both paths compute the same maps in float32 by different routes (matrix products on W·R vs a
backward pass), so they agree to rounding: 1e-5 max abs on maps in [0, 1].
"""
import pytest
import torch
import torch.nn as nn

import seg_xai_fast as sx
from seg_xai_fast import reference
from seg_xai_fast.engine.analytic import analytic_cam
from conftest import torchvision_model

METHODS = ["gradcam", "gradcam++", "xgradcam", "hirescam", "layercam"]
TOL = 1e-5


HEADS = {
    "deeplabv3_mobilenet_v3_large": lambda: (torchvision_model("deeplabv3_mobilenet_v3_large"), "classifier.3", 96),
    "fcn_resnet50": lambda: (torchvision_model("fcn_resnet50"), "classifier.2", 64),  # ReLU → Dropout (folded) → conv
    "lraspp_mobilenet_v3_large": lambda: (torchvision_model("lraspp_mobilenet_v3_large"), sx.InputOf("classifier.high_classifier"), 96),
    "demo": lambda: (sx.demo_model(), "decoder", 64),
}


@pytest.fixture(scope="module", params=sorted(HEADS))
def head_case(request):
    model, layer, size = HEADS[request.param]()
    images = torch.rand(2, 3, size, size + 8, generator=torch.Generator().manual_seed(1))
    return request.param, model, layer, images


@pytest.mark.parametrize("targets", ["predicted", "masks"])
@pytest.mark.parametrize("method", METHODS)
def test_analytic_equals_autograd(head_case, method, targets):
    name, model, layer, images = head_case
    classes = [0, 1, 2, 3]
    masks = None
    if targets == "masks":
        masks = (torch.rand(2, 4, *images.shape[-2:], generator=torch.Generator().manual_seed(2)) > 0.7).float()
    fast = sx.Explainer(model, layer, method)
    fast(images, classes=classes, masks=masks)  # first call: finds and verifies the head
    res = fast(images, classes=classes, masks=masks)
    assert fast.gradient_path == "analytic", name
    slow = sx.Explainer(model, layer, method, gradient_path="autograd")(images, classes=classes, masks=masks)
    assert slow.info["gradient_path"] == "autograd"
    torch.testing.assert_close(res.maps, slow.maps, rtol=0, atol=TOL)
    assert torch.equal(res.active, slow.active)


def test_no_linear_head_falls_back_or_says_why():
    model = sx.demo_model()
    images = torch.rand(1, 3, 64, 64)
    auto = sx.Explainer(model, "encoder.stage3", "gradcam")
    auto(images)
    assert auto.gradient_path == "autograd"
    with pytest.raises(ValueError, match=r"gradient_path='analytic' needs target_layer 'encoder.stage3' to feed a 1×1"):
        sx.Explainer(model, "encoder.stage3", "gradcam", gradient_path="analytic")(images)


def test_head_that_only_looks_linear_is_rejected():
    """A also reaches the logits around the 1×1 conv: the structural guess is wrong and the
    autograd probe must catch it."""

    class Sneaky(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = nn.Conv2d(3, 4, 3, padding=1)
            self.cls = nn.Conv2d(4, 4, 1)

        def forward(self, x):
            a = self.body(x)
            return nn.functional.interpolate(self.cls(a) + a * a, size=(16, 16), mode="bilinear")

    model = Sneaky().eval()
    images = torch.rand(1, 3, 8, 8)
    explainer = sx.Explainer(model, "body", "gradcam")
    res = explainer(images, masks=torch.ones(1, 4, 16, 16))
    assert explainer.gradient_path == "autograd"
    ref = sx.Explainer(model, "body", "gradcam", gradient_path="autograd")(images, masks=torch.ones(1, 4, 16, 16))
    torch.testing.assert_close(res.maps, ref.maps)


def test_batchnorm_between_layer_and_conv_is_folded():
    class BNHead(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU())
            self.bn = nn.BatchNorm2d(6)
            self.drop = nn.Dropout2d(0.3)
            self.cls = nn.Conv2d(6, 5, 1)

        def forward(self, x):
            z = self.cls(self.drop(self.bn(self.body(x))))
            return nn.functional.interpolate(z, scale_factor=2, mode="bilinear", align_corners=True)

    torch.manual_seed(0)
    model = BNHead()
    model.bn.running_mean.uniform_(-1, 1)
    model.bn.running_var.uniform_(0.5, 2)
    model.bn.weight.data.uniform_(0.5, 1.5)
    model.eval()
    images = torch.rand(2, 3, 9, 11)
    for method in METHODS:
        fast = sx.Explainer(model, "body", method)
        masks = torch.rand(2, 5, 18, 22, generator=torch.Generator().manual_seed(0))
        res = fast(images, masks=masks)
        assert fast.gradient_path == "analytic"
        ref = sx.Explainer(model, "body", method, gradient_path="autograd")(images, masks=masks)
        torch.testing.assert_close(res.maps, ref.maps, rtol=0, atol=TOL)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("shape", [(1, 1, 1, 1, 1), (2, 3, 5, 7, 9), (1, 21, 64, 16, 16)])
def test_closed_form_maths_matches_reference(method, shape):
    """analytic_cam (no G) vs reference.analytic_cam (explicit G), soft and signed seeds included.

    Tolerance 1e-4: the two sum C·N float32 terms in different orders (mean of R then times W, vs
    the mean of W·R), and min-max normalisation divides by each map's range, which random signed
    weights can make small (observed up to 2.2e-5)."""
    B, K, C, h, w = shape
    g = torch.Generator().manual_seed(sum(shape))
    A = torch.rand(B, C, h, w, generator=g)
    W = torch.randn(K, C, generator=g)
    R = torch.randn(B, K, h, w, generator=g)
    out = analytic_cam(A, W, R, method, (h * 2 + 1, w * 3))
    ref = reference.analytic_cam(A, W, R, method, (h * 2 + 1, w * 3))
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-4)
