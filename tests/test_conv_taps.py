"""Convolutions without their dead taps (engine/conv_taps.py): the same outputs and gradients as
the full convolution on awkward shapes, pruning where (and only where) a tap never reads the
input, and the explainer's maps unchanged by it.

Tolerance 1e-5 relative to the output's scale: the pruned sum leaves out exact zeros only, so the
difference is float32 rounding of a different summation order.
"""
import random

import pytest
import torch
import torch.nn as nn

import seg_xai_fast as sx
from seg_xai_fast.engine.conv_taps import live_taps, pruned_conv
from conftest import torchvision_model


def _close(a, b, tol=1e-5):
    scale = max(1.0, b.abs().max().item())
    assert a.shape == b.shape
    assert (a - b).abs().max().item() <= tol * scale


def _case(seed):
    """A random Conv2d and input, often with taps that read only padding."""
    rnd = random.Random(seed)
    groups = rnd.choice([1, 1, 2])
    cin, cout = groups * rnd.randint(1, 4), groups * rnd.randint(1, 3)
    kernel = (rnd.choice([2, 3, 5]), rnd.choice([1, 3, 4]))
    dilation = (rnd.randint(1, 20), rnd.randint(1, 20))
    stride = (rnd.choice([1, 2, 3]), rnd.choice([1, 2]))
    padding = (rnd.randint(0, dilation[0] * (kernel[0] - 1)), rnd.randint(0, dilation[1] * (kernel[1] - 1)))
    size = (rnd.choice([1, 2, 5, 16, 17]), rnd.choice([1, 3, 16, 31]))
    conv = nn.Conv2d(cin, cout, kernel, stride, padding, dilation, groups, bias=rnd.random() < 0.7)
    # the effective kernel must fit the padded input
    if any(size[a] + 2 * padding[a] < dilation[a] * (kernel[a] - 1) + 1 for a in (0, 1)):
        return None
    x = torch.randn(rnd.randint(1, 3), cin, *size, generator=torch.Generator().manual_seed(seed))
    return conv, x


def test_pruned_convolutions_equal_the_full_ones():
    pruned_count = 0
    for seed in range(400):
        case = _case(seed)
        if case is None:
            continue
        conv, x = case
        x = x.requires_grad_(True)
        full = conv(x)
        pruned = pruned_conv(conv, x, full)
        if pruned is None:
            continue
        pruned_count += 1
        _close(pruned, full)
        cot = torch.randn_like(full)
        (g_full,) = torch.autograd.grad(full, x, cot)
        (g_pruned,) = torch.autograd.grad(pruned, x, cot)
        _close(g_pruned, g_full)
    assert pruned_count >= 50  # the random cases do exercise the pruning


def test_live_taps():
    # DeepLabV3's ASPP at a 16×16 map: rate 12 keeps all taps, 24 and 36 only the centre
    assert live_taps(16, 16, 3, 1, 12, 12) == (0, 3)
    assert live_taps(16, 16, 3, 1, 24, 24) == (1, 2)
    assert live_taps(16, 16, 3, 1, 36, 36) == (1, 2)
    assert live_taps(1, 1, 3, 1, 1, 1) == (1, 2)  # a 3×3 conv on a 1×1 map
    assert live_taps(40, 40, 3, 1, 1, 1) == (0, 3)
    assert live_taps(4, 4, 5, 1, 8, 4) == (2, 3)  # only the centre of 5 with dilation 4


def test_pruning_leaves_full_kernels_alone():
    conv = nn.Conv2d(2, 3, 3, padding=1)
    x = torch.randn(1, 2, 8, 8)
    assert pruned_conv(conv, x, conv(x)) is None
    reflect = nn.Conv2d(2, 3, 3, padding=24, dilation=24, padding_mode="reflect")
    x = torch.randn(1, 2, 30, 30)
    assert pruned_conv(reflect, x, reflect(x)) is None  # not zero padding: every tap matters


def test_explainer_maps_do_not_change(monkeypatch):
    """DeepLabV3-MobileNetV3 at 128² (an 8×8 map, smaller than every ASPP rate: its three dilated
    branches become 1×1): the maps with and without the pruning agree, and the hooks are gone
    afterwards."""
    model = torchvision_model("deeplabv3_mobilenet_v3_large", num_classes=6)
    images = torch.rand(2, 3, 128, 128, generator=torch.Generator().manual_seed(1))
    calls = []

    def counting(module, x, output):
        out = pruned_conv(module, x, output)
        calls.append(out is not None)
        return out

    monkeypatch.setattr("seg_xai_fast.engine.conv_taps.pruned_conv", counting)
    with_pruning = {m: sx.Explainer(model, "backbone.16", m)(images, classes=[0, 2, 5]) for m in ("gradcam", "shapleycam")}
    assert sum(calls) == 3 * 2  # three ASPP convolutions, in each method's graph pass
    monkeypatch.setattr("seg_xai_fast.engine.conv_taps.pruned_conv", lambda module, x, output: None)
    for method, res in with_pruning.items():
        plain = sx.Explainer(model, "backbone.16", method)(images, classes=[0, 2, 5])
        assert torch.equal(res.labels, plain.labels)
        assert (res.maps - plain.maps).abs().max() <= 1e-5, method
    assert sum(len(m._forward_hooks) for m in model.modules()) == 0


@pytest.mark.parametrize("size", [1, 2, 7])
def test_tiny_maps(size):
    """A 3×3 convolution on maps as small as 1×1 (only the centre tap lives)."""
    conv = nn.Conv2d(3, 4, 3, padding=1)
    x = torch.randn(2, 3, size, size, requires_grad=True)
    full = conv(x)
    pruned = pruned_conv(conv, x, full)
    if size > 1:  # a 2×2 map already feeds every tap at some position
        assert pruned is None
    else:
        _close(pruned, full)
        (g_full,) = torch.autograd.grad(full.sum(), x)
        _close(torch.autograd.grad(pruned.sum(), x)[0], g_full)
