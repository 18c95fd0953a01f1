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
