"""The curvature check (engine/curvature.py) that lets ShapleyCAM skip its Hessian-vector products.

Each graph below has a known answer: piecewise-linear stacks have a zero Hessian, anything with a
smooth nonlinearity, a product of two A-dependent tensors, a division by one, batch statistics or
an operation the check does not know is "curved". The explainer's cheap path must give the same
maps as the forward-over-reverse pass it skips.
"""
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import seg_xai_fast as sx
from seg_xai_fast.engine import explainer as explainer_module
from seg_xai_fast.engine.curvature import curved_operation


def _leaf(*shape):
    return torch.rand(*shape, generator=torch.Generator().manual_seed(0)).requires_grad_(True)


def _frozen(module):
    for p in module.parameters():
        p.requires_grad_(False)
    return module.eval()


class _Square(torch.autograd.Function):
    """A custom operation: the check cannot know its curvature."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x * x

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return 2 * x * grad


PIECEWISE_LINEAR = {
    "conv bn relu": lambda A: _frozen(nn.Sequential(nn.Conv2d(4, 6, 3, padding=2, dilation=2), nn.BatchNorm2d(6),
                                                    nn.ReLU(), nn.Conv2d(6, 3, 1)))(A),
    "pools, cat, upsample": lambda A: F.interpolate(
        torch.cat([F.max_pool2d(A, 2), F.adaptive_avg_pool2d(A, 1).expand(-1, -1, 4, 4)], 1),
        scale_factor=2, mode="bilinear", align_corners=False),
    "relu6, leaky, abs, clamp": lambda A: F.relu6(A) + F.leaky_relu(-A) + (A - 0.5).abs() + A.clamp(0.2, 0.7),
    "scaled, divided by constants": lambda A: (A * 3 - 1) / torch.full_like(A, 2.0) + A / 4,
    "mask times A": lambda A: A * (torch.arange(8.0).view(1, 1, 1, 8) > 3),
    "views and padding": lambda A: F.pad(A.permute(0, 2, 3, 1).reshape(2, -1, 4).transpose(1, 2)[..., 1:], (1, 2)),
    "linear on tokens": lambda A: _frozen(nn.Linear(4, 5))(A.flatten(2).transpose(1, 2)),
}
CURVED = {
    "A·A": (lambda A: A * A, "MulBackward0"),
    "sigmoid": (lambda A: torch.sigmoid(A), "SigmoidBackward0"),
    "gelu": (lambda A: F.gelu(A), "GeluBackward0"),
    "layer norm": (lambda A: F.layer_norm(A, A.shape[1:]), "NativeLayerNormBackward0"),
    "batch statistics": (lambda A: F.batch_norm(A, None, None, training=True), "NativeBatchNormBackward0"),
    "divided by A": (lambda A: A / (A.sum() + 1), "DivBackward0"),
    "softmax": (lambda A: torch.softmax(A.flatten(2), -1), "SoftmaxBackward0"),
    "Q·Kᵀ": (lambda A: A.flatten(2) @ A.flatten(2).transpose(1, 2), "BmmBackward0"),
    "custom function": (lambda A: _Square.apply(A), "_SquareBackward"),
}


@pytest.mark.parametrize("name", sorted(PIECEWISE_LINEAR))
def test_piecewise_linear_graphs_have_no_curvature(name):
    A = _leaf(2, 4, 8, 8)
    assert curved_operation(PIECEWISE_LINEAR[name](A), A) is None


@pytest.mark.parametrize("name", sorted(CURVED))
def test_curved_graphs_are_found(name):
    A = _leaf(2, 4, 8, 8)
    fn, operation = CURVED[name]
    assert curved_operation(fn(A), A) == operation


def test_only_operations_that_depend_on_A_count():
    """A curved operation on another input (a sigmoid gate computed from B) does not make A curved."""
    A, B = _leaf(1, 2, 4, 4), _leaf(1, 2, 4, 4)
    assert curved_operation(A * torch.sigmoid(B), A) is None
    assert curved_operation(A * torch.sigmoid(B), B) == "SigmoidBackward0"
    assert curved_operation(A.detach() * 2, A) is None  # no graph at all


class _ReluNet(nn.Module):
    """Piecewise linear above "stem": ShapleyCAM's Hessian term is exactly zero there."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1), nn.SiLU())
        self.head = nn.Sequential(nn.Conv2d(8, 16, 3, 1, 1), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
                                  nn.Conv2d(16, 5, 3, 1, 1))

    def forward(self, x):
        return F.interpolate(self.head(self.stem(x)), size=x.shape[-2:], mode="bilinear", align_corners=False)


def test_shapleycam_skips_the_hessian_only_where_it_is_zero(monkeypatch):
    torch.manual_seed(0)
    model = _ReluNet().eval()
    images = torch.rand(2, 3, 40, 40, generator=torch.Generator().manual_seed(1)) * 3
    classes = [0, 2, 4]
    cheap = sx.Explainer(model, "stem", "shapleycam")(images, classes=classes)
    assert cheap.info["hessian"].startswith("zero")
    # Force the forward-over-reverse pass: the H·A it computes must be zero, the maps the same.
    monkeypatch.setattr(explainer_module, "curved_operation", lambda output, leaf: "forced")
    full = sx.Explainer(model, "stem", "shapleycam")(images, classes=classes)
    assert full.info["hessian"].startswith("H·A")
    assert torch.equal(cheap.labels, full.labels)
    assert (cheap.maps - full.maps).abs().max() <= 1e-6  # same gradients, summed in another order
    monkeypatch.undo()
    # Above a curved layer (SiLU after the input's conv) the second-order pass runs and differs.
    smooth = sx.Explainer(model, "stem.0", "shapleycam")(images, classes=classes)
    assert smooth.info["hessian"].startswith("H·A")
    grad = sx.Explainer(model, "stem.0", "gradcam")(images, classes=classes)
    assert (smooth.maps - grad.maps).abs().max() > 1e-3
