"""The pointing games on volumes [B,K,D,H,W], against brute-force loops over every voxel (the 2-D
metrics are tested in tests/test_metrics.py); Quantus-style localisation metrics already take any
number of spatial axes."""
import itertools

import pytest
import torch

import seg_xai_fast as sx


def brute_pointing(maps, truth, classes, tolerance):
    B, K, D, H, W = maps.shape
    out = torch.full((B, K), float("nan"))
    for b, k in itertools.product(range(B), range(K)):
        gt = truth[b] == classes[k]
        if not gt.any():
            continue
        m = maps[b, k]
        if m.max() == m.min():
            out[b, k] = 0.0
            continue
        z, y, x = (int(v) for v in torch.nonzero(m == m.max())[0])  # the first maximum in raster order
        hit = any((z - zz) ** 2 + (y - yy) ** 2 + (x - xx) ** 2 <= tolerance ** 2
                  for zz, yy, xx in torch.nonzero(gt).tolist())
        out[b, k] = float(hit)
    return out


@pytest.mark.parametrize("tolerance", [0.0, 1.5, 3.0])
def test_3d_pointing_game_equals_brute_force(tolerance):
    g = torch.Generator().manual_seed(0)
    maps = torch.rand(2, 3, 5, 6, 7, generator=g)
    maps[1, 2] = 0.5  # a constant map: a miss
    truth = torch.randint(0, 4, (2, 5, 6, 7), generator=g)
    truth[0][truth[0] == 3] = 0  # class 3 absent from image 0: NaN
    classes = [1, 3, 2]
    ours = sx.metrics.pointing_game(maps, truth, classes, tolerance=tolerance)
    torch.testing.assert_close(ours, brute_force := brute_pointing(maps, truth, classes, tolerance), equal_nan=True)
    assert torch.isnan(brute_force[0, 1])


def test_3d_energy_pointing_game():
    g = torch.Generator().manual_seed(1)
    maps = torch.rand(1, 2, 4, 5, 6, generator=g)
    truth = torch.randint(0, 3, (1, 4, 5, 6), generator=g)
    ours = sx.metrics.energy_pointing_game(maps, truth, [1, 2])
    for k, c in enumerate([1, 2]):
        expected = (maps[0, k] * (truth[0] == c)).sum() / maps[0, k].sum()
        assert abs(float(ours[0, k]) - float(expected)) < 1e-6


def test_truth_must_match_the_volume():
    with pytest.raises(ValueError, match=r"truth must be an int tensor \[B=1,D=4,H=5,W=6\]"):
        sx.metrics.pointing_game(torch.rand(1, 1, 4, 5, 6), torch.zeros(1, 5, 6, dtype=torch.long), [0])


def test_3d_deletion_and_insertion_equal_their_definition():
    """Step t replaces the round(t·P/T) most salient voxels (ties in the seeded permutation's
    order) by the substrate (deletion) or puts them back into the blurred volume (insertion); the
    score is the mean softmax probability of the class over its frozen predicted region."""
    import math
    import torch.nn as nn
    from seg_xai_fast.metrics.faithfulness import gaussian_blur

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv3d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv3d(4, 3, 3, padding=1)).eval()
    x = torch.randn(1, 1, 4, 5, 6, generator=torch.Generator().manual_seed(1))
    maps = torch.rand(1, 2, 4, 5, 6, generator=torch.Generator().manual_seed(2))
    classes, steps = [0, 2], 4
    with torch.no_grad():
        labels = model(x).argmax(1)[0]
    perm = torch.randperm(120, generator=torch.Generator().manual_seed(0))
    blurred = gaussian_blur(x, 3, 1.0)
    for name, fn, first, last in (("deletion", sx.metrics.deletion_curves, x, torch.zeros_like(x)),
                                  ("insertion", sx.metrics.insertion_curves, blurred, x)):
        kwargs = {"blur_kernel": 3, "blur_sigma": 1.0} if name == "insertion" else {}
        ours = fn(model, x, maps, classes, steps=steps, **kwargs)
        for k, c in enumerate(classes):
            region = labels == c
            if not region.any():
                assert torch.isnan(ours[0, k]).all()
                continue
            key = maps[0, k].flatten()[perm]
            order = perm[torch.argsort(key, descending=True, stable=True)]
            for t in range(steps + 1):
                n = round(t * 120 / steps)
                changed = torch.zeros(120, dtype=torch.bool)
                changed[order[:n]] = True
                xt = torch.where(changed.view(1, 1, 4, 5, 6), last, first)
                with torch.no_grad():
                    prob = torch.softmax(model(xt), 1)[0, c]
                expected = float(prob[region].mean())
                assert math.isclose(float(ours[0, k, t]), expected, abs_tol=1e-5), (name, k, t)
