"""The localisation and complexity metrics equal Quantus 0.6 per (image, class), and the off-target
leakage equals its definition, on random maps (signed and non-negative, 2-D and 3-D) and regions."""
import warnings

import numpy as np
import pytest
import quantus  # a test dependency (the `test` extra)
import torch

from seg_xai_fast import metrics as M

B, K, H, W = 3, 4, 14, 11


def random_pairs(seed=0, shape=(B, K, H, W)):
    """Random maps (one pair non-negative with exact zeros, one all-positive) and regions (one empty,
    one full, the others of random density)."""
    g = torch.Generator().manual_seed(seed)
    maps = torch.randn(shape, generator=g, dtype=torch.float64).float()
    maps[0, 1] = maps[0, 1].clamp(min=0)
    maps[2, 3] = maps[2, 3].abs() + 0.1
    density = torch.rand(shape[:2] + (1,) * (len(shape) - 2), generator=g)
    regions = torch.rand(shape, generator=g) < density
    regions[1, 0] = False  # empty: NaN everywhere
    regions[0, 2] = True   # the whole map
    return maps, regions


def quantus_per_pair(metric, maps, regions=None):
    """metric(...)[0] called once per (image, class), the map as a one-sample batch [1,1,*spatial]."""
    out = np.full(maps.shape[:2], np.nan)
    x = np.zeros((1, 3) + tuple(maps.shape[2:]), dtype=np.float32)
    for b in range(maps.shape[0]):
        for k in range(maps.shape[1]):
            kwargs = {} if regions is None else {"s_batch": regions[b, k][None, None].numpy().astype(np.float32)}
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                out[b, k] = metric(model=None, x_batch=x, y_batch=np.array([0]),
                                   a_batch=maps[b, k][None, None].numpy().copy(), **kwargs)[0]
    return out


LOCALISATION = [
    (M.relevance_mass_accuracy, lambda: quantus.RelevanceMassAccuracy()),
    (M.relevance_rank_accuracy, lambda: quantus.RelevanceRankAccuracy()),
    (M.attribution_localisation, lambda: quantus.AttributionLocalisation()),
    (lambda m, r: M.top_k_intersection(m, r, k=17), lambda: quantus.TopKIntersection(k=17)),
    (M.roc_auc, lambda: quantus.AUC()),
]


@pytest.mark.parametrize("ours, theirs", LOCALISATION, ids=["rma", "rra", "attribution_loc", "top_k", "auc"])
def test_localisation_equals_quantus_per_pair(ours, theirs):
    maps, regions = random_pairs(seed=1)
    got = ours(maps, regions)
    assert got.shape == (B, K) and got.dtype == torch.float32
    want = quantus_per_pair(theirs(), maps, regions)
    np.testing.assert_allclose(got.numpy(), want, rtol=0, atol=1e-5, equal_nan=True)
    assert torch.isnan(got[1, 0]) and np.isfinite(want).sum() >= B * K - 2  # the empty region, and real values


@pytest.mark.parametrize("ours, theirs", [
    (M.sparseness, lambda: quantus.Sparseness()),
    (M.complexity, lambda: quantus.Complexity()),
    (M.effective_complexity, lambda: quantus.EffectiveComplexity(eps=0.3)),
], ids=["sparseness", "complexity", "effective_complexity"])
def test_complexity_equals_quantus_per_pair(ours, theirs):
    maps, _ = random_pairs(seed=2)
    got = ours(maps, eps=0.3) if ours is M.effective_complexity else ours(maps)
    want = quantus_per_pair(theirs(), maps)
    np.testing.assert_allclose(got.double().numpy(), want, rtol=0, atol=1e-5)


def test_three_dimensional_maps_equal_quantus_on_flattened_volumes():
    """A volume [D,H,W] is scored like the flat map of its voxels (Quantus sees it as one long image)."""
    maps, regions = random_pairs(seed=3, shape=(B, K, 5, 6, 7))
    flat_maps, flat_regions = maps.flatten(2, 3), regions.flatten(2, 3)  # [B,K,D·H,W]: the same voxel order
    for metric, theirs in LOCALISATION:
        np.testing.assert_allclose(metric(maps, regions).numpy(),
                                   quantus_per_pair(theirs(), flat_maps, flat_regions), atol=1e-5, equal_nan=True)
    np.testing.assert_allclose(M.sparseness(maps).double().numpy(), quantus_per_pair(quantus.Sparseness(), flat_maps),
                               atol=1e-5)


def test_class_regions_from_labels():
    labels = torch.tensor([[[0, 1], [2, 255]]])
    regions = M.class_regions(labels, [1, 2, 7])
    assert regions.shape == (1, 3, 2, 2)
    assert regions[0, 0].tolist() == [[False, True], [False, False]] and not regions[0, 2].any()


def test_off_target_leakage_equals_its_definition():
    g = torch.Generator().manual_seed(4)
    maps = torch.randn(B, K, H, W, generator=g)
    labels = torch.randint(0, 4, (B, H, W), generator=g)
    labels[:, :2] = 255  # ignored rows
    labels[2] = torch.where(labels[2] == 255, labels[2], torch.zeros_like(labels[2]))  # only background: NaN
    classes = [1, 2, 3, 0]
    got = M.off_target_leakage(maps, labels, classes, ignore_index=255)
    for b in range(B):
        for k, c in enumerate(classes):
            num = den = 0.0
            others = False
            for y in range(H):
                for x in range(W):
                    lab, a = int(labels[b, y, x]), max(float(maps[b, k, y, x]), 0.0)
                    if lab == 255:
                        continue
                    den += a
                    if lab not in (0, c):
                        num += a
                        others = True
            want = num / den if den > 0 and others else float("nan")
            assert got[b, k].item() == pytest.approx(want, abs=1e-6, nan_ok=True)
    assert torch.isnan(got[2]).all() and torch.isfinite(got[:2]).all()


def test_bad_arguments_name_the_argument():
    maps, regions = random_pairs()
    with pytest.raises(ValueError, match="regions must be a bool tensor"):
        M.relevance_mass_accuracy(maps, regions.float())
    with pytest.raises(ValueError, match="maps must be a float tensor"):
        M.sparseness(torch.ones(3, 3))
    with pytest.raises(ValueError, match="k must be an int"):
        M.top_k_intersection(maps, regions, k=H * W + 1)
    with pytest.raises(ValueError, match="labels must be an int tensor"):
        M.off_target_leakage(maps, torch.zeros(B, H, W), [1, 2, 3, 0])
    with pytest.raises(ValueError, match="maps contains NaN"):
        M.complexity(torch.full((1, 1, 2, 2), float("nan")))
