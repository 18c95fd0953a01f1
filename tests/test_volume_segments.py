"""Segment attributions of volumes on 3-D supervoxels: feature ablation against captum's
FeatureAblation with a 3-D feature mask, Kernel SHAP (every coalition enumerated) against
Shapley values computed by brute force, and 26-connected components of a predicted volume."""
import itertools
import math

import pytest
import torch
import torch.nn as nn

import seg_xai_fast as sx
from seg_xai_fast.engine.volume_segments import connected_components_3d

captum_attr = pytest.importorskip("captum.attr")


def net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv3d(2, 4, 3, padding=1), nn.ReLU(), nn.Conv3d(4, 3, 3, padding=1)).eval()


def supervoxels(shape=(6, 8, 8)):
    """A label volume of 4 blocks [1,D,H,W] (ids 3, 5, 7, 9: renumbered by the explainer)."""
    seg = torch.zeros(1, *shape, dtype=torch.long)
    D, H, W = shape
    for i, (z, y) in enumerate(itertools.product((0, 1), (0, 1))):
        seg[0, z * D // 2:(z + 1) * D // 2, y * H // 2:(y + 1) * H // 2] = 3 + 2 * i
    return seg


def region_score(model, x, c, mask):
    return (model(x)[:, c] * mask).flatten(1).sum(1)


def test_feature_ablation_equals_captum():
    model, seg = net(), supervoxels()
    x = torch.randn(1, 2, 6, 8, 8, generator=torch.Generator().manual_seed(1))
    res = sx.Explainer(model, None, "featureablation", normalize=False,
                       options={"features": seg, "baseline": 0.3})(x)
    with torch.no_grad():
        labels = model(x).argmax(1)[0]
        for k in range(3):
            mask = (labels == k).float()
            if not mask.any():
                continue
            attr = captum_attr.FeatureAblation(lambda z: region_score(model, z, k, mask)).attribute(
                x, baselines=0.3, feature_mask=seg[:, None].expand_as(x))
            torch.testing.assert_close(res.maps[0, k], attr[0, 0], rtol=1e-4, atol=1e-4 * float(attr.abs().max()))


def test_kernel_shap_enumerating_every_coalition_is_the_shapley_value():
    model, seg = net(), supervoxels()
    x = torch.randn(1, 2, 6, 8, 8, generator=torch.Generator().manual_seed(2))
    res = sx.Explainer(model, None, "kernelshap", normalize=False,
                       options={"features": seg, "baseline": "mean", "n_samples": 64})(x, classes=[1])
    assert res.info["exact"] == [True]
    ids = torch.unique(seg[0], return_inverse=True)[1]
    base = x[0].mean(dim=(1, 2, 3), keepdim=True).expand_as(x[0])
    with torch.no_grad():
        mask = (model(x).argmax(1)[0] == 1).float()

        def value(keep):
            kept = torch.tensor(keep)[ids]
            return float(region_score(model, torch.where(kept, x[0], base)[None], 1, mask))

        M = 4
        for i in range(M):
            phi = 0.0
            for others in itertools.product((False, True), repeat=M - 1):
                with_i = list(others[:i]) + [True] + list(others[i:])
                without = list(others[:i]) + [False] + list(others[i:])
                s = sum(others)
                phi += math.factorial(s) * math.factorial(M - s - 1) / math.factorial(M) * (value(with_i) - value(without))
            got = float(res.maps[0, 0][ids == i][0])
            assert abs(got - phi) <= 1e-4 * max(1.0, abs(phi)), (i, got, phi)


def test_26_connected_components():
    labels = torch.zeros(4, 4, 4, dtype=torch.long)
    labels[0, 0, 0] = labels[1, 1, 1] = 1  # diagonal neighbours: one component
    labels[3, 3, 3] = 1  # apart
    ids = connected_components_3d(labels)
    assert ids[0, 0, 0] == ids[1, 1, 1] != ids[3, 3, 3]
    assert int(ids.max()) + 1 == 3  # the background, the pair, the corner


def test_predicted_supervoxels_and_2d_only_options():
    model = net()
    x = torch.randn(1, 2, 6, 8, 8)
    res = sx.Explainer(model, None, "lime", options={"n_samples": 32})(x)
    assert res.maps.shape == (1, 3, 6, 8, 8) and res.info["features"][0] >= 1
    with pytest.raises(ValueError, match="'slic' is 2-D only"):
        sx.Explainer(model, None, "lime", options={"features": "slic"})(x)
