"""Explanation-quality metrics on hand-built cases with known answers.

Most tests use `PixelModel`, whose class-1 probability at a pixel depends on that pixel alone
(sigmoid(10·x_red − 5)), so every score has a closed form. The randomisation check uses a
random-initialised DemoSegNet (no trained weights needed).
"""
import math

import pytest
import torch
import torch.nn as nn

from seg_xai_fast import metrics as M
from seg_xai_fast.apps.evaluate import evaluate
from seg_xai_fast.metrics import imputation
from conftest import random_demo

S = 32  # image side
OBJ = (slice(12, 20), slice(12, 20))  # an 8×8 object of class 1: A = 64 of 1024 pixels
HI, LO = torch.sigmoid(torch.tensor(5.0)).item(), torch.sigmoid(torch.tensor(-5.0)).item()


class PixelModel(nn.Module):
    """logit_0 = 0, logit_1 = 10·x_red − 5 at every pixel; `features` is a CAM-able layer."""

    def __init__(self):
        super().__init__()
        self.features = nn.Identity()
        self.head = nn.Conv2d(3, 2, 1)
        with torch.no_grad():
            self.head.weight.zero_()
            self.head.bias.copy_(torch.tensor([0.0, -5.0]))
            self.head.weight[1, 0] = 10.0
        self.eval()

    def forward(self, x):
        return self.head(self.features(x))


@pytest.fixture(scope="module", autouse=True)
def _threads():
    old = torch.get_num_threads()
    torch.set_num_threads(min(2, old))
    yield
    torch.set_num_threads(old)


def scene(batch=1):
    """images float [B,3,S,S]: black with a white object; truth int64 [B,S,S]; object mask bool [S,S]."""
    obj = torch.zeros(S, S, dtype=torch.bool)
    obj[OBJ] = True
    images = obj.float().expand(batch, 3, S, S).clone()
    return images, obj.long().expand(batch, S, S).clone(), obj


def maps_of(*planes):
    """float [1,K,S,S] from K float [S,S] maps."""
    return torch.stack([p.float() for p in planes])[None]


# --------------------------------------------------------------------------- pointing games


def test_pointing_game_perfect_inverted_constant():
    _, truth, obj = scene()
    perfect, inverted, constant = obj, ~obj, torch.full((S, S), 0.5)
    hits = M.pointing_game(maps_of(perfect, inverted, constant), truth, [1, 1, 1], tolerance=3)
    assert hits.tolist() == [[1.0, 0.0, 0.0]]  # the inverted map peaks at (0,0); a flat map points nowhere


def test_pointing_game_tolerance_is_a_disc_and_absent_classes_are_not_counted():
    _, truth, _ = scene()
    near = torch.zeros(S, S)
    near[12 - 5, 15] = 1.0  # 5 px above the object's top row
    diagonal = torch.zeros(S, S)
    diagonal[12 - 4, 12 - 4] = 1.0  # corner distance √32 ≈ 5.66
    hits = M.pointing_game(maps_of(near, diagonal, near), truth, [1, 1, 2], tolerance=5)
    assert hits[0, :2].tolist() == [1.0, 0.0]
    assert math.isnan(hits[0, 2])  # class 2 absent from the ground truth
    assert M.pointing_game(maps_of(diagonal), truth, [1], tolerance=6).item() == 1.0


def test_energy_pointing_game_perfect_inverted_constant_zero():
    _, truth, obj = scene()
    share = M.energy_pointing_game(maps_of(obj, ~obj, torch.full((S, S), 0.3), torch.zeros(S, S)), truth, [1, 1, 1, 1])
    torch.testing.assert_close(share, torch.tensor([[1.0, 0.0, 64 / 1024, 0.0]]))


def test_summarize_averages_images_per_class_then_classes():
    values = torch.tensor([[1.0, math.nan], [0.0, 1.0], [math.nan, 1.0], [0.0, 1.0]])  # [B=4,K=2]
    assert M.summarize(values).item() == pytest.approx((1 / 3 + 1) / 2)
    assert M.summarize(torch.full((2, 2), math.nan)).isnan()


# --------------------------------------------------------------------------- deletion / insertion


def test_auc_formula_on_known_curves():
    assert M.auc(torch.tensor([1.0, 0.5, 0.0])).item() == pytest.approx(0.5)
    assert M.auc(torch.tensor([0.0, 0.0, 0.0, 1.0])).item() == pytest.approx(1 / 6)
    assert M.auc(torch.full((2, 17), 0.25)).tolist() == [0.25, 0.25]


def test_deletion_curves_of_perfect_and_inverted_maps_match_the_closed_form():
    model = PixelModel()
    images, _, obj = scene()
    T = 16  # 64 pixels per step = the object's area
    curves = M.deletion_curves(model, images, maps_of(obj, ~obj), [1, 1], steps=T)
    deleted_first = torch.tensor([HI] + [LO] * T)  # the whole object goes at step 1
    deleted_last = torch.tensor([HI] * T + [LO])  # background deletions change nothing
    torch.testing.assert_close(curves[0, 0], deleted_first, atol=1e-5, rtol=0)
    torch.testing.assert_close(curves[0, 1], deleted_last, atol=1e-5, rtol=0)
    aucs = M.auc(curves)[0]
    assert aucs[0].item() == pytest.approx((HI / 2 + LO * (T - 0.5)) / T, abs=1e-5)
    assert aucs[1].item() == pytest.approx((HI * (T - 0.5) + LO / 2) / T, abs=1e-5)


def test_insertion_curves_of_perfect_and_inverted_maps_match_the_closed_form():
    model = PixelModel()
    images, _, obj = scene()
    T = 16
    curves = M.insertion_curves(model, images, maps_of(obj, ~obj), [1, 1], steps=T)
    blurred = M.gaussian_blur(images, 11, 5.0)
    y0 = torch.sigmoid(10 * blurred[0, 0][obj] - 5).mean()
    torch.testing.assert_close(curves[0, 0], torch.tensor([y0] + [HI] * T), atol=1e-5, rtol=0)
    torch.testing.assert_close(curves[0, 1], torch.tensor([y0] * T + [HI]), atol=1e-5, rtol=0)
    assert M.auc(curves[0, 0]) > M.auc(curves[0, 1])


def test_context_only_curves_leave_a_pixelwise_model_unchanged():
    model = PixelModel()
    images, _, obj = scene()
    rand = torch.rand(S, S, generator=torch.Generator().manual_seed(0))
    for fn in (M.deletion_curves, M.insertion_curves):
        curves = fn(model, images, maps_of(rand), [1], steps=8, context=True)
        torch.testing.assert_close(curves, torch.full((1, 1, 9), HI), atol=1e-5, rtol=0)


def test_empty_region_gives_nan_rows():
    images, _, obj = scene()
    curves = M.deletion_curves(PixelModel(), images, maps_of(obj, obj), [0, 1], steps=4,
                               regions=torch.stack([torch.zeros_like(obj), obj])[None])
    assert curves[0, 0].isnan().all() and not curves[0, 1].isnan().any()


def test_gaussian_blur_keeps_constants_and_spreads_a_delta_as_the_kernel():
    flat = torch.full((1, 3, 20, 24), 0.7)
    torch.testing.assert_close(M.gaussian_blur(flat), flat)
    delta = torch.zeros(1, 1, 21, 21)
    delta[0, 0, 10, 10] = 1.0
    taps = torch.exp(-torch.arange(-5, 6.0) ** 2 / 50)
    g = taps / taps.sum()
    expected = torch.zeros(21, 21)
    expected[5:16, 5:16] = g[:, None] * g[None, :]
    torch.testing.assert_close(M.gaussian_blur(delta)[0, 0], expected)


# --------------------------------------------------------------------------- ROAD


def test_road_imputation_of_a_linear_image_is_exact_in_the_interior():
    yy, xx = torch.meshgrid(torch.arange(40.0), torch.arange(48.0), indexing="ij")
    linear = torch.stack([0.1 + 0.01 * yy + 0.005 * xx, 0.9 - 0.01 * xx, 0.3 + 0.002 * yy])[None]
    removed = torch.zeros(1, 40, 48, dtype=torch.bool)
    removed[:, 5:35, 4:30] = True  # a big hole that does not touch the border
    removed[:, 20:23, 35:45] = True
    out = M.noisy_linear_impute(linear, removed, noise_std=0.0)
    torch.testing.assert_close(out, linear, atol=2e-4, rtol=0)


def test_road_imputation_solves_the_neighbour_equations_and_adds_the_stated_noise():
    gen = torch.Generator().manual_seed(1)
    images = torch.rand(2, 3, 36, 30, generator=gen)
    removed = torch.rand(2, 36, 30, generator=gen) < 0.7  # touches the border too
    out = M.noisy_linear_impute(images, removed, noise_std=0.0)
    assert torch.equal(out[~removed[:, None].expand_as(out)], images[~removed[:, None].expand_as(images)])
    # Each removed pixel = the weighted mean of its neighbours inside the image (1/6 edge, 1/12 diagonal).
    ones = torch.ones(1, 1, 36, 30)
    weighted_mean = imputation._neighbour_sum(out) / imputation._neighbour_sum(ones)
    err = (out - weighted_mean)[removed[:, None].expand_as(out)]
    assert err.abs().max() < 2e-3
    noisy = M.noisy_linear_impute(images, removed, noise_std=0.01, generator=torch.Generator().manual_seed(0))
    noise = (noisy - out)[removed[:, None].expand_as(out)]
    assert abs(noise.std().item() - 0.01) < 1e-3 and abs(noise.mean().item()) < 1e-3


def test_road_morf_and_lerf_on_perfect_and_inverted_maps():
    model = PixelModel()
    images, _, obj = scene()
    pcts = (10, 50, 90)  # 90 % = 922 pixels, fewer than the 960 background pixels
    res = M.road(model, images, maps_of(obj, ~obj), [1, 1], percentiles=pcts)
    morf, lerf = res["morf"][0], res["lerf"][0]
    # Perfect map: MoRF removes the object first, which the imputation cannot bring back
    # (its neighbours are black); LeRF only removes background, which the score ignores.
    assert (morf[0] < LO - HI + 0.02).all()
    torch.testing.assert_close(lerf[0], torch.zeros(3), atol=1e-6, rtol=0)
    # Inverted map: the other way round.
    torch.testing.assert_close(morf[1], torch.zeros(3), atol=1e-6, rtol=0)
    assert (lerf[1] < LO - HI + 0.02).all()


# --------------------------------------------------------------------------- Spearman and the sanity check


def test_spearman_identical_reversed_known_and_constant():
    a = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0])
    assert M.spearman(a, a * 3 + 1).item() == pytest.approx(1.0)
    assert M.spearman(a, -a).item() == pytest.approx(-1.0)
    # Ties share their average rank: ranks of b are [1, 2, 3.5, 5, 3.5] → ρ = 8 / √95.
    assert M.spearman(a, torch.tensor([5.0, 6.0, 7.0, 8.0, 7.0])).item() == pytest.approx(8 / math.sqrt(95), abs=1e-6)
    # No ties: ρ = 1 − 6 Σd² / (n(n²−1)); d = [1, −1, 1, −1, 0] → 1 − 24/120.
    assert M.spearman(a, torch.tensor([2.0, 1.0, 4.0, 3.0, 5.0])).item() == pytest.approx(0.8, abs=1e-6)
    assert M.spearman(a, torch.full((5,), 2.0)).item() == 0.0
    assert M.average_ranks(torch.tensor([[3.0, 1.0, 3.0, 2.0], [0.0, 0.0, 0.0, 0.0]])).tolist() == \
        [[3.5, 1.0, 3.5, 2.0], [2.5, 2.5, 2.5, 2.5]]


class NoOpReset(nn.Module):
    """A 1×1-conv stage whose 're-initialisation' changes nothing: the check must then report ρ = 1."""

    def __init__(self, conv):
        super().__init__()
        self.weight = nn.Parameter(conv.weight.detach().clone())
        self.bias = nn.Parameter(conv.bias.detach().clone())

    def reset_parameters(self):
        pass

    def forward(self, x):
        return nn.functional.conv2d(x, self.weight, self.bias)


def test_randomization_check_cascades_on_copies_and_leaves_the_model_alone():
    model = random_demo()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    assert M.default_stages(model) == ["classifier", "decoder", "encoder"]
    copies = M.randomized_models(model, ["classifier", "decoder"], seed=3)
    assert [name for name, _ in copies] == ["classifier", "decoder"]
    first, second = copies[0][1], copies[1][1]
    assert not torch.equal(first.classifier.weight, model.classifier.weight)
    assert torch.equal(first.decoder.up2.conv[0].weight, model.decoder.up2.conv[0].weight)
    assert torch.equal(second.classifier.weight, first.classifier.weight)  # cascading: kept from step 1
    assert not torch.equal(second.decoder.up2.conv[0].weight, model.decoder.up2.conv[0].weight)
    assert torch.equal(second.encoder.stem[0][0].weight, model.encoder.stem[0][0].weight)

    images = torch.rand(2, 3, 40, 40, generator=torch.Generator().manual_seed(0))
    rho = M.randomization_check(model, "decoder", "gradcam", images, [0, 1, 2, 3], seed=3)
    assert list(rho) == ["classifier", "decoder", "encoder"]
    for values in rho.values():
        assert values.shape == (2, 4)
        finite = values[~values.isnan()]
        assert finite.numel() > 0 and (finite.abs() <= 1).all()
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_randomization_check_of_an_unchanged_copy_is_one():
    model = PixelModel()
    model.head = NoOpReset(model.head)
    images, _, _ = scene(2)
    images[1, :, 2:6, 2:6] = 0.8  # a second, smaller object so the maps differ between images
    rho = M.randomization_check(model, "features", "gradcam", images, [1], stages=["head"])
    torch.testing.assert_close(rho["head"], torch.ones(2, 1))


# --------------------------------------------------------------------------- the driver


def test_evaluate_on_the_pixel_model_gives_the_known_answers():
    model = PixelModel()
    images, truth, _ = scene(2)
    res = evaluate(model, "features", ["gradcam", "hirescam"], images, truth, classes=[1], steps=4,
                     percentiles=(10, 50), stages=["head"], context=True)
    for method in ("gradcam", "hirescam"):
        r = res[method]
        assert set(M.METRIC_KEYS) <= set(r)
        # Grad-CAM on the input channels of a pixelwise model highlights exactly the object.
        assert r["pointing_game"] == 1.0 and r["energy_pointing_game"] == pytest.approx(1.0)
        assert r["deletion_auc"] == pytest.approx(M.auc(torch.tensor(r["deletion_curve"])).item(), abs=1e-6)
        # T = 4 steps of 256 pixels: the 64-pixel object goes (or comes back) in the first step.
        assert r["deletion_auc"] == pytest.approx((HI / 2 + 3.5 * LO) / 4, abs=1e-5)
        assert r["insertion_auc"] == pytest.approx(r["insertion_curve"][0] / 8 + HI * 3.5 / 4, abs=1e-5)
        assert r["road_morf"] < -0.9 and r["road_lerf"] == pytest.approx(0.0, abs=1e-6)
        assert r["context_deletion_auc"] == pytest.approx(HI, abs=1e-5)
        assert r["pairs"] == 2 and list(r["randomization_by_stage"]) == ["head"]


# --------------------------------------------------------------------------- bad inputs


@pytest.mark.parametrize(
    "call, name",
    [
        (lambda: M.pointing_game(torch.zeros(1, S, S), scene()[1], [1]), "maps"),
        (lambda: M.pointing_game(-torch.ones(1, 1, S, S), scene()[1], [1]), "maps"),
        (lambda: M.pointing_game(torch.zeros(1, 1, S, S), scene()[1][:, :4], [1]), "truth"),
        (lambda: M.pointing_game(torch.zeros(1, 1, S, S), scene()[1].float(), [1]), "truth"),
        (lambda: M.pointing_game(torch.zeros(1, 1, S, S), scene()[1], [1], tolerance=-1), "tolerance"),
        (lambda: M.energy_pointing_game(torch.zeros(1, 2, S, S), scene()[1], [1]), "classes"),
        (lambda: M.deletion_curves(PixelModel(), scene()[0], torch.zeros(1, 1, S, S), [1], steps=0), "steps"),
        (lambda: M.deletion_curves(PixelModel(), scene()[0][:, :, :8], torch.zeros(1, 1, S, S), [1]), "images"),
        (lambda: M.insertion_curves(PixelModel(), scene()[0], torch.zeros(1, 1, S, S), [1], blur_kernel=4), "blur_kernel"),
        (lambda: M.deletion_curves(PixelModel(), scene()[0], torch.zeros(1, 1, S, S), [1],
                                   regions=torch.zeros(1, 1, S, S)), "regions"),
        (lambda: M.road(PixelModel(), scene()[0], torch.zeros(1, 1, S, S), [1], percentiles=(50, 100)), "percentiles"),
        (lambda: M.noisy_linear_impute(torch.rand(1, 3, 8, 8), torch.ones(1, 8, 8, dtype=torch.bool)), "removed"),
        (lambda: M.noisy_linear_impute(torch.rand(1, 3, 8, 8), torch.ones(1, 8, 9, dtype=torch.bool)), "removed"),
        (lambda: M.auc(torch.tensor([1.0])), "curves"),
        (lambda: M.spearman(torch.rand(4), torch.rand(5)), "a and b"),
        (lambda: M.randomized_models(PixelModel(), ["nope"]), "stages"),
        (lambda: M.randomized_models(PixelModel(), []), "stages"),
        (lambda: evaluate(PixelModel(), "features", ["gradcam"], scene()[0], scene()[1][:, :5], [1]), "truth"),
        (lambda: evaluate(PixelModel(), "features", [], scene()[0], scene()[1], [1]), "methods"),
        (lambda: evaluate(PixelModel(), "features", ["nope"], scene()[0], scene()[1], [1]), "method"),
    ],
)
def test_bad_inputs_raise_value_error_naming_the_argument(call, name):
    with pytest.raises(ValueError, match=name):
        call()
