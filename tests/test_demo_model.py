"""Tests for the bundled demo model and the synthetic scene generator.

Imports the submodules directly, so they run without the compiled extension.
"""
import importlib
import time

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from seg_xai_fast.demo.model import DemoSegNet, demo_model, per_class_iou
from seg_xai_fast.demo.scenes import CLASS_NAMES, NUM_CLASSES, synthetic_scenes

# The package re-exports the function ``demo_model``, which shadows the submodule
# attribute of the same name; fetch the module itself for WEIGHTS_PATH.
dm = importlib.import_module("seg_xai_fast.demo.model")

EVAL_SEED = 20240  # never used for training (tools/train_demo_model.py trains on seeds >= 1_000_000)


@pytest.fixture(scope="module")
def model():
    return demo_model()


@pytest.fixture(scope="module")
def heldout():
    return synthetic_scenes(64, seed=EVAL_SEED, size=128)


# ----------------------------------------------------------------------------- accuracy


def test_heldout_miou(model, heldout):
    """mIoU >= 0.90 on 64 held-out 128x128 scenes.

    mIoU = mean over the NUM_CLASSES classes (background included) of
    IoU_c = sum_pixels [pred==c & gt==c] / sum_pixels [pred==c | gt==c],
    each sum accumulated over all 64 scenes (not a per-image average).
    """
    images, masks = heldout
    with torch.no_grad():
        pred = torch.cat([model(images[i:i + 16]).argmax(1) for i in range(0, 64, 16)])
    iou = per_class_iou(pred, masks)
    assert iou.mean().item() >= 0.90, dict(zip(CLASS_NAMES, iou.tolist()))
    assert iou.min().item() >= 0.80, dict(zip(CLASS_NAMES, iou.tolist()))


def test_per_class_iou_definition():
    gt = torch.tensor([[[0, 0, 1, 1], [2, 2, 3, 3]]])
    pred = torch.tensor([[[0, 1, 1, 1], [2, 2, 3, 0]]])
    # class 0: inter 1, union 3; class 1: 2/3; class 2: 2/2; class 3: 1/2.
    expected = torch.tensor([1 / 3, 2 / 3, 1.0, 0.5], dtype=torch.float64)
    torch.testing.assert_close(per_class_iou(pred, gt), expected)
    # A class absent from both prediction and ground truth counts as perfect.
    assert per_class_iou(torch.zeros(1, 2, 2, dtype=torch.long), torch.zeros(1, 2, 2, dtype=torch.long)).tolist() == [1.0] * NUM_CLASSES


# ----------------------------------------------------------------------------- generator


def test_shapes_dtypes_ranges():
    for size, hw in [(128, (128, 128)), ((96, 160), (96, 160)), (32, (32, 32)), ((33, 57), (33, 57))]:
        images, masks = synthetic_scenes(3, seed=1, size=size)
        assert images.shape == (3, 3, *hw) and images.dtype == torch.float32
        assert masks.shape == (3, *hw) and masks.dtype == torch.int64
        assert images.min() >= 0 and images.max() <= 1 and torch.isfinite(images).all()
        assert masks.min() >= 0 and masks.max() < NUM_CLASSES
    assert NUM_CLASSES == len(CLASS_NAMES) >= 4 and CLASS_NAMES[0] == "background"


def test_deterministic_and_independent_of_global_rng():
    torch.manual_seed(1); np.random.seed(1)
    a = synthetic_scenes(5, seed=123)
    torch.manual_seed(2); np.random.seed(2); torch.rand(10); np.random.rand(10)
    b = synthetic_scenes(5, seed=123)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    c = synthetic_scenes(5, seed=124)
    assert not torch.equal(a[0], c[0])


def test_scene_i_does_not_depend_on_n():
    big = synthetic_scenes(4, seed=9, size=(64, 80))
    small = synthetic_scenes(2, seed=9, size=(64, 80))
    assert torch.equal(big[0][:2], small[0]) and torch.equal(big[1][:2], small[1])


def test_every_class_appears_and_scenes_vary(heldout):
    images, masks = heldout
    counts = torch.bincount(masks.flatten(), minlength=NUM_CLASSES)
    assert (counts > 0).all(), counts
    # Every object class covers a fair share of the object pixels.
    assert (counts[1:] > 0.15 * counts[1:].sum()).all(), counts
    # Each scene has at least one object, and backgrounds are not all alike.
    assert ((masks > 0).flatten(1).any(1)).all()
    assert images.mean((2, 3)).std(0).min() > 0.1


def test_colour_does_not_give_away_the_class(heldout):
    """The mean colour of each class's pixels is close to that of the others: only
    shape tells classes apart."""
    images, masks = heldout
    means = torch.stack([images.permute(0, 2, 3, 1)[masks == c].mean(0) for c in range(1, NUM_CLASSES)])
    assert (means.max(0).values - means.min(0).values).max() < 0.1, means


def test_generation_is_fast():
    synthetic_scenes(2, seed=0)  # warm-up
    t = time.perf_counter()
    synthetic_scenes(64, seed=0, size=128)
    # Typically ~0.15 s; the loose bound only catches per-pixel Python loops.
    assert time.perf_counter() - t < 5.0


@pytest.mark.parametrize("kwargs, name", [
    (dict(n=-3), "n"), (dict(n=0), "n"), (dict(n=2.5), "n"), (dict(n=True), "n"),
    (dict(n=2, seed=-1), "seed"), (dict(n=2, seed="x"), "seed"),
    (dict(n=2, size=16), "size"), (dict(n=2, size=(64, 31)), "size"),
    (dict(n=2, size=(64,)), "size"), (dict(n=2, size="big"), "size"), (dict(n=2, size=64.0), "size"),
])
def test_bad_arguments(kwargs, name):
    with pytest.raises(ValueError, match=rf"\b{name} must\b") as info:
        synthetic_scenes(**kwargs)
    assert "got" in str(info.value)


# ----------------------------------------------------------------------------- model


def test_demo_model_eval_mode_and_output(model):
    assert isinstance(model, DemoSegNet) and not model.training
    assert all(not m.training for m in model.modules())
    assert all(p.requires_grad for p in model.parameters())
    for hw in [(128, 128), (96, 160), (100, 75)]:
        x = torch.rand(2, 3, *hw)
        with torch.no_grad():
            y = model(x)
        assert y.shape == (2, NUM_CLASSES, *hw) and y.dtype == torch.float32


def test_structure_decoder_relu_then_1x1_then_bilinear(model):
    """The analytic-gradient path relies on: decoder output (post-ReLU) -> 1x1 conv
    ``classifier`` -> bilinear upsample (align_corners=False) to the input size."""
    assert isinstance(model.classifier, nn.Conv2d) and model.classifier.kernel_size == (1, 1)
    assert model.classifier.out_channels == NUM_CLASSES
    seen = {}
    handle = model.decoder.register_forward_hook(lambda m, i, o: seen.__setitem__("a", o))
    x = torch.rand(1, 3, 128, 96)
    with torch.no_grad():
        y = model(x)
    handle.remove()
    a = seen["a"]
    assert a.shape == (1, model.classifier.in_channels, 64, 48)  # half resolution
    assert a.min() >= 0  # ends at a ReLU
    tail = F.interpolate(model.classifier(a), size=x.shape[-2:], mode="bilinear", align_corners=False)
    assert torch.equal(tail, y)


def test_gradients_reach_the_input(model):
    x = torch.rand(1, 3, 64, 64, requires_grad=True)
    model(x)[:, 1].sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    model.zero_grad(set_to_none=True)


def test_weights_file_small():
    assert dm.WEIGHTS_PATH.is_file()
    assert dm.WEIGHTS_PATH.stat().st_size <= 2 * 1024 * 1024


def test_missing_weights_clear_error(monkeypatch, tmp_path):
    monkeypatch.setattr(dm, "WEIGHTS_PATH", tmp_path / "nope.pt")
    with pytest.raises(FileNotFoundError, match="weights"):
        demo_model()


def test_bad_model_input(model):
    with pytest.raises(ValueError, match=r"\[B,3,H,W\]"):
        model(torch.rand(3, 32, 32))
