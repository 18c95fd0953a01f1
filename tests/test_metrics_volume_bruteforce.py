"""The faithfulness and robustness metrics on volumes [B,C,D,H,W] against brute-force implementations
written here from their definitions: one volume, one class, one perturbed copy at a time, with a tiny
random 3-D conv segmenter (the 2-D twins are tests/test_metrics_bruteforce.py; deletion/insertion and
the pointing games in 3-D are tests/test_metrics_volume.py). ROAD's imputation is checked against a
dense float64 solve of its equations, written voxel by voxel."""
import itertools
import math

import numpy as np
import pytest
import torch
import torch.nn as nn

from seg_xai_fast import metrics as M
from seg_xai_fast.metrics import imputation
from test_metrics_bruteforce import (  # the same on any number of axes
    check_faithfulness_correlation, check_random_logit, explain_fn, pairs, score,
)

SHAPE, CLASSES = (5, 6, 7), [0, 1, 2]  # odd sizes: partial patches along every axis
V = math.prod(SHAPE)


class Mixing3d(nn.Module):
    """Three classes from two 3×3×3 convolutions: a voxel's score depends on its neighbourhood."""

    def __init__(self, channels: int = 2):
        super().__init__()
        torch.manual_seed(0)
        self.body = nn.Sequential(nn.Conv3d(channels, 4, 3, padding=1), nn.ReLU(), nn.Conv3d(4, 3, 3, padding=1))

    def forward(self, x):
        return self.body(x) * 3


@pytest.fixture(scope="module")
def case():
    g = torch.Generator().manual_seed(1)
    model = Mixing3d().eval()
    images = torch.rand(2, 2, *SHAPE, generator=g)  # two channels: the map counts for each
    maps = torch.rand(2, len(CLASSES), *SHAPE, generator=g)  # continuous: no ties in any ordering
    # Frozen regions as ground truth gives them: a slab of the volume per class; volume 1 has no class 2.
    regions = torch.zeros(2, len(CLASSES), *SHAPE, dtype=torch.bool)
    for k in range(len(CLASSES)):
        regions[:, k, :, :, k * 2 : k * 2 + 3] = True
    regions[1, 2] = False
    return model, images, maps, regions


def test_pixel_flipping_brute_force(case):
    model, images, maps, regions = case
    f = 30  # divides the 210 voxels: T = 7
    got = M.pixel_flipping(model, images, maps, CLASSES, regions=regions, features_in_step=f, baseline=0.25)
    assert got.shape == (2, 3, V // f)
    for b, k, c, region in pairs(regions):
        if not region.any():
            assert torch.isnan(got[b, k]).all()
            continue
        order = torch.argsort(maps[b, k].flatten(), descending=True)
        for t in range(V // f):
            x = images[b].clone().view(2, -1)
            x[:, order[: (t + 1) * f]] = 0.25
            assert got[b, k, t].item() == pytest.approx(score(model, x.view(2, *SHAPE), c, region), abs=1e-5)


def test_pixel_flipping_step_must_divide_the_voxels(case):
    model, images, maps, regions = case
    with pytest.raises(ValueError, match=r"features_in_step must be a positive int dividing .* 210"):
        M.pixel_flipping(model, images, maps, CLASSES, regions=regions, features_in_step=20)


@pytest.mark.parametrize("order", ["morf", "lerf"])
def test_region_perturbation_brute_force(case, order):
    model, images, maps, regions = case
    p, steps = 3, 7  # 2×2×3 = 12 cubes, the last slab, row and column of each axis partial
    got = M.region_perturbation(model, images, maps, CLASSES, regions=regions, patch_size=p, steps=steps, order=order)
    assert got.shape == (2, 3, steps)
    cells = list(itertools.product(*(range(0, n, p) for n in SHAPE)))  # raster order
    assert len(cells) == 12
    for b, k, c, region in pairs(regions):
        if not region.any():
            assert torch.isnan(got[b, k]).all()
            continue
        sums = [maps[b, k, z : z + p, y : y + p, x : x + p].double().sum().item() for z, y, x in cells]
        ranked = sorted(range(len(cells)), key=lambda i: -sums[i] if order == "morf" else sums[i])
        clean = score(model, images[b], c, region)
        x = images[b].clone()
        for t in range(steps):
            z0, y0, x0 = cells[ranked[t]]
            x[:, z0 : z0 + p, y0 : y0 + p, x0 : x0 + p] = 0.0
            assert got[b, k, t].item() == pytest.approx(clean - score(model, x, c, region), abs=1e-5)
    with pytest.raises(ValueError, match=r"at most the number of 3³ patches \(12\)"):
        M.region_perturbation(model, images, maps, CLASSES, regions=regions, patch_size=p, steps=13)


def test_faithfulness_correlation_brute_force(case):
    check_faithfulness_correlation(*case, CLASSES, samples=10)


def test_infidelity_brute_force_and_captum(case):
    from captum.metrics import infidelity

    model, images, maps, regions = case
    n, std = 8, 0.2
    got = M.infidelity(model, images, maps, CLASSES, regions=regions, samples=n, noise_std=std, seed=5)
    noise = torch.randn((n, 2, *SHAPE), generator=torch.Generator().manual_seed(5)) * std
    for b, k, c, region in pairs(regions):
        if not region.any():
            assert torch.isnan(got[b, k])
            continue
        # the definition: mean_i (Σ_{ch,voxel} I_i·map − (s_c(x) − s_c(x − I_i)))²
        terms = [((noise[i] * maps[b, k]).double().sum().item()
                  - (score(model, images[b], c, region) - score(model, images[b] - noise[i], c, region))) ** 2
                 for i in range(n)]
        assert got[b, k].item() == pytest.approx(sum(terms) / n, rel=1e-4, abs=1e-6)

        def forward(x):  # s_c of each volume of the batch
            with torch.no_grad():
                return (torch.softmax(model(x), dim=1)[:, c] * region).flatten(1).sum(1) / region.sum()

        want = infidelity(forward, lambda x: (noise, x - noise), images[b : b + 1],
                          maps[b, k].expand(1, 2, *SHAPE), n_perturb_samples=n)
        assert got[b, k].item() == pytest.approx(want.item(), rel=1e-4, abs=1e-6)


def test_sensitivity_brute_force(case):
    model, images, _, regions = case
    explain = explain_fn(model, regions)
    maps = explain(images)
    radius, n = 0.1, 3
    high = M.max_sensitivity(explain, images, maps, radius=radius, samples=n, seed=7)
    mean = M.avg_sensitivity(explain, images, maps, radius=radius, samples=n, seed=7)
    g = torch.Generator().manual_seed(7)
    noise = [(torch.rand((2, *SHAPE), generator=g) * 2 - 1) * radius for _ in range(n)]
    noisy = [explain(images + u) for u in noise]  # (explain_fn's regions are the whole batch's)
    for b, k, _c, region in pairs(regions):
        if not region.any():  # its map is all zero: no ratio
            assert torch.isnan(high[b, k]) and torch.isnan(mean[b, k])
            continue
        ratios = [((other[b, k] - maps[b, k]).norm() / maps[b, k].norm()).item() for other in noisy]
        assert high[b, k].item() == pytest.approx(max(ratios), rel=1e-4)
        assert mean[b, k].item() == pytest.approx(sum(ratios) / n, rel=1e-4)
    assert (high[regions.flatten(2).any(2)] > 0).all()
    with pytest.raises(ValueError, match=r"maps must be \[B=2,K,5,6,7\]"):
        M.max_sensitivity(explain, images, maps[..., :6], samples=1)


def test_random_logit_brute_force(case):
    check_random_logit(*case, CLASSES)


# --------------------------------------------------------------------------- ROAD in 3-D

OFFSETS = [q for q in itertools.product((-1, 0, 1), repeat=3) if any(q)]
NORM = sum(1 / sum(abs(o) for o in q) for q in OFFSETS)  # the 26 weights 1/|q|² sum to 44/3


def dense_impute(x, removed):
    """The ROAD equations solved densely in float64: every removed voxel equals the weighted mean
    (w_q = 1/|q|², renormalised over the neighbours inside the volume) of its 26 neighbours.
    x: [C,D,H,W]; removed: bool [D,H,W]. Returns [C,D,H,W] without noise."""
    D, H, W = removed.shape
    unknown = [tuple(p) for p in torch.nonzero(removed).tolist()]
    index = {p: i for i, p in enumerate(unknown)}
    A = np.zeros((len(unknown), len(unknown)))
    rhs = np.zeros((len(unknown), x.shape[0]))
    for i, (z, y, w) in enumerate(unknown):
        for q in OFFSETS:
            n = (z + q[0], y + q[1], w + q[2])
            if not (0 <= n[0] < D and 0 <= n[1] < H and 0 <= n[2] < W):
                continue
            weight = 1 / sum(abs(o) for o in q) / NORM
            A[i, i] += weight
            if n in index:
                A[i, index[n]] -= weight
            else:
                rhs[i] += weight * x[:, n[0], n[1], n[2]].double().numpy()
    values = np.linalg.solve(A, rhs)
    out = x.clone().double()
    for i, p in enumerate(unknown):
        out[:, p[0], p[1], p[2]] = torch.from_numpy(values[i])
    return out


def test_neighbour_weights_are_roads_in_2d_and_inverse_square_in_3d():
    delta2 = torch.zeros(1, 1, 3, 3)
    delta2[..., 1, 1] = 1
    torch.testing.assert_close(imputation._neighbour_sum(delta2)[0, 0],
                               torch.tensor([[1 / 12, 1 / 6, 1 / 12], [1 / 6, 0, 1 / 6], [1 / 12, 1 / 6, 1 / 12]]))
    delta3 = torch.zeros(1, 1, 3, 3, 3)
    delta3[..., 1, 1, 1] = 1
    got = imputation._neighbour_sum(delta3)[0, 0]
    for z, y, x in itertools.product(range(3), repeat=3):
        r2 = abs(z - 1) + abs(y - 1) + abs(x - 1)
        assert got[z, y, x].item() == pytest.approx(0 if r2 == 0 else 3 / 44 / r2, abs=1e-7)


def test_3d_imputation_equals_a_dense_solve_and_adds_the_stated_noise():
    g = torch.Generator().manual_seed(4)
    x = torch.rand(2, 2, 7, 9, 10, generator=g)  # 9, 10 > 8: one coarse level starts CG
    removed = torch.rand(2, 7, 9, 10, generator=g) < 0.6  # touches the border too
    out = M.noisy_linear_impute(x, removed, noise_std=0.0)
    for n in range(2):
        want = dense_impute(x[n], removed[n])
        # CG stops at ‖r‖ ≤ 1e-4·‖b‖ in float32: ~1e-4 on values in [0, 1]
        torch.testing.assert_close(out[n].double(), want, atol=1e-3, rtol=0)
        assert torch.equal(out[n][:, ~removed[n]], x[n][:, ~removed[n]])
    noisy = M.noisy_linear_impute(x, removed, noise_std=0.02, generator=torch.Generator().manual_seed(0))
    noise = (noisy - out)[removed[:, None].expand_as(out)]
    assert abs(noise.std().item() - 0.02) < 2e-3 and abs(noise.mean().item()) < 2e-3


def test_3d_imputation_of_a_linear_volume_is_exact_in_the_interior():
    z, y, x = torch.meshgrid(torch.arange(12.0), torch.arange(14.0), torch.arange(16.0), indexing="ij")
    linear = (0.1 + 0.02 * z + 0.01 * y - 0.005 * x)[None, None]
    removed = torch.zeros(1, 12, 14, 16, dtype=torch.bool)
    removed[:, 2:10, 3:11, 4:13] = True  # a hole that does not touch the border
    torch.testing.assert_close(M.noisy_linear_impute(linear, removed, noise_std=0.0), linear, atol=2e-4, rtol=0)


def test_3d_road_equals_its_definition(case):
    model, images, maps, regions = case
    pcts = (20, 60)
    got = M.road(model, images, maps, CLASSES, regions=regions, percentiles=pcts, noise_std=0.0)
    for b, k, c, region in pairs(regions):
        if not region.any():
            assert torch.isnan(got["morf"][b, k]).all() and torch.isnan(got["lerf"][b, k]).all()
            continue
        order = torch.argsort(maps[b, k].flatten(), descending=True)
        clean = score(model, images[b], c, region)
        for i, p in enumerate(pcts):
            n = round(p * V / 100)
            for key, chosen in (("morf", order[:n]), ("lerf", order[V - n :])):
                removed = torch.zeros(V, dtype=torch.bool)
                removed[chosen] = True
                imputed = dense_impute(images[b], removed.view(SHAPE)).float()
                # the imputations agree to ~1e-4 (CG's tolerance); the model is smooth in them
                assert got[key][b, k, i].item() == pytest.approx(score(model, imputed, c, region) - clean, abs=1e-3)


def test_randomization_check_takes_volumes():
    """An unchanged copy correlates perfectly; a re-initialised head does not (the 3-D Explainer path)."""
    model = Mixing3d(channels=1).eval()
    x = torch.rand(1, 1, 6, 8, 8, generator=torch.Generator().manual_seed(3))
    same = M.randomization_check(model, "body.0", "gradcam", x, [0, 1, 2], models=[("none", model)])
    valid = ~torch.isnan(same["none"])
    assert valid.any() and torch.allclose(same["none"][valid], torch.ones(int(valid.sum())))
    changed = M.randomization_check(model, "body.0", "gradcam", x, [0, 1, 2], stages=["body.2"], seed=1)
    assert changed["body.2"].shape == (1, 3)
