"""The faithfulness and robustness metrics against brute-force implementations written here from
their definitions: one image, one class, one perturbed copy at a time (infidelity: against captum)."""
import numpy as np
import pytest
import torch
import torch.nn as nn
from scipy.stats import spearmanr

from seg_xai_fast import metrics as M

S, CLASSES = 16, [0, 1, 2]


class MixingModel(nn.Module):
    """Three classes from two 3×3 convolutions: a pixel's score depends on its neighbourhood."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.body = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.Conv2d(6, 3, 3, padding=1))

    def forward(self, x):
        return self.body(x) * 3


@pytest.fixture(scope="module")
def case():
    g = torch.Generator().manual_seed(1)
    model = MixingModel().eval()
    images = torch.rand(2, 3, S, S, generator=g)
    maps = torch.rand(2, len(CLASSES), S, S, generator=g)  # continuous: no ties in any ordering
    # Frozen regions as ground truth gives them: a band of the image per class (the model's own
    # prediction would be one class everywhere); image 1 has no class 2 (NaN).
    regions = torch.zeros(2, len(CLASSES), S, S, dtype=torch.bool)
    for k in range(len(CLASSES)):
        regions[:, k, :, k * 5 : k * 5 + 6] = True
    regions[1, 2] = False
    return model, images, maps, regions


def score(model, x, c, region):
    """s_c(x): the mean softmax probability of class c over the region; x [3,H,W]."""
    with torch.no_grad():
        return torch.softmax(model(x[None]), dim=1)[0, c][region].mean().item()


def pairs(regions):
    for b in range(regions.shape[0]):
        for k, c in enumerate(CLASSES):
            yield b, k, c, regions[b, k]


def test_pixel_flipping_brute_force(case):
    model, images, maps, regions = case
    f = 32
    got = M.pixel_flipping(model, images, maps, CLASSES, regions=regions, features_in_step=f, baseline=0.25)
    assert got.shape == (2, 3, S * S // f)
    for b, k, c, region in pairs(regions):
        if not region.any():
            assert torch.isnan(got[b, k]).all()
            continue
        order = torch.argsort(maps[b, k].flatten(), descending=True)
        for t in range(S * S // f):
            x = images[b].clone().view(3, -1)
            x[:, order[: (t + 1) * f]] = 0.25
            assert got[b, k, t].item() == pytest.approx(score(model, x.view(3, S, S), c, region), abs=1e-5)


@pytest.mark.parametrize("order", ["morf", "lerf"])
def test_region_perturbation_brute_force(case, order):
    model, images, maps, regions = case
    p, steps = 5, 6  # 16 = 5+5+5+1: the last row and column of patches are one pixel wide
    got = M.region_perturbation(model, images, maps, CLASSES, regions=regions, patch_size=p, steps=steps, order=order)
    assert got.shape == (2, 3, steps)
    cells = [(y, x) for y in range(0, S, p) for x in range(0, S, p)]
    for b, k, c, region in pairs(regions):
        if not region.any():
            assert torch.isnan(got[b, k]).all()
            continue
        sums = [maps[b, k, y : y + p, x : x + p].sum().item() for y, x in cells]
        ranked = sorted(range(len(cells)), key=lambda i: -sums[i] if order == "morf" else sums[i])
        clean = score(model, images[b], c, region)
        x = images[b].clone()
        for t in range(steps):
            y0, x0 = cells[ranked[t]]
            x[:, y0 : y0 + p, x0 : x0 + p] = 0.0
            assert got[b, k, t].item() == pytest.approx(clean - score(model, x, c, region), abs=1e-5)


def test_faithfulness_correlation_brute_force(case):
    check_faithfulness_correlation(*case, CLASSES, samples=12)


def check_faithfulness_correlation(model, images, maps, regions, classes, samples: int, size: int = 40):
    """M.faithfulness_correlation against its definition, on any number of spatial axes: the
    Pearson correlation, over `samples` random subsets of `size` elements set to 0, of the maps'
    sum on the subset with the drop of the class's region score."""
    got = M.faithfulness_correlation(model, images, maps, classes, regions=regions, samples=samples,
                                     subset_size=size, seed=3)
    channels, spatial = images.shape[1], images.shape[2:]
    for b, k, c, region in pairs(regions):
        if not region.any():
            assert torch.isnan(got[b, k])
            continue
        g = torch.Generator().manual_seed(3)  # every input draws the same subsets
        attributed, drops = [], []
        for _ in range(samples):
            subset = torch.randperm(spatial.numel(), generator=g)[:size]
            x = images[b].clone().view(channels, -1)
            x[:, subset] = 0.0
            attributed.append(maps[b, k].flatten()[subset].double().sum().item())
            drops.append(score(model, images[b], c, region) - score(model, x.view(channels, *spatial), c, region))
        # float32 forwards of a batch vs one input differ by ~1e-7; the small drops amplify that a little
        assert got[b, k].item() == pytest.approx(np.corrcoef(attributed, drops)[0, 1], abs=1e-4)


def test_infidelity_equals_captum(case):
    from captum.metrics import infidelity

    model, images, maps, regions = case
    n, std = 10, 0.2
    got = M.infidelity(model, images, maps, CLASSES, regions=regions, samples=n, noise_std=std, seed=5)
    noise = torch.randn((n, 3, S, S), generator=torch.Generator().manual_seed(5)) * std
    for b, k, c, region in pairs(regions):
        if not region.any():
            assert torch.isnan(got[b, k])
            continue

        def forward(x):  # s_c of each image of the batch
            with torch.no_grad():
                return (torch.softmax(model(x), dim=1)[:, c] * region).flatten(1).sum(1) / region.sum()

        def perturb(x):
            return noise, x - noise

        want = infidelity(forward, perturb, images[b : b + 1], maps[b, k].expand(1, 3, S, S), n_perturb_samples=n)
        assert got[b, k].item() == pytest.approx(want.item(), rel=1e-4, abs=1e-6)


def test_the_same_perturbed_batch_serves_every_pair():
    """Maps of two methods side by side (classes repeat) cost the forwards of one."""
    model = MixingModel().eval()
    images = torch.rand(1, 3, S, S, generator=torch.Generator().manual_seed(2))
    maps = torch.rand(1, 6, S, S, generator=torch.Generator().manual_seed(3))
    calls = []
    model.register_forward_hook(lambda m, i, o: calls.append(i[0].shape[0]))
    both = M.faithfulness_correlation(model, images, maps, CLASSES * 2, samples=8, subset_size=20, forward_batch=64)
    assert sum(calls) == 1 + 1 + 8  # the clean regions, then the clean image and the 8 samples, once
    calls.clear()
    first = M.faithfulness_correlation(model, images, maps[:, :3], CLASSES, samples=8, subset_size=20, forward_batch=64)
    torch.testing.assert_close(both[:, :3], first, equal_nan=True)


def explain_fn(model, regions):
    """A map function of the input with a real dependence on it: input-gradient × input of s_c."""

    def explain(x):
        out = []
        for k, c in enumerate(CLASSES):
            xi = x.clone().requires_grad_(True)
            probs = torch.softmax(model(xi), dim=1)[:, c]
            s = (probs * regions[:, k]).flatten(1).sum(1) / regions[:, k].flatten(1).sum(1).clamp(min=1)
            (grad,) = torch.autograd.grad(s.sum(), xi)
            out.append((grad * xi).abs().sum(1).detach())
        return torch.stack(out, 1)

    return explain


def test_sensitivity_brute_force(case):
    model, images, _, regions = case
    explain = explain_fn(model, regions)
    maps = explain(images)
    radius, n = 0.1, 4
    high = M.max_sensitivity(explain, images, maps, radius=radius, samples=n, seed=7)
    mean = M.avg_sensitivity(explain, images, maps, radius=radius, samples=n, seed=7)
    g = torch.Generator().manual_seed(7)
    noise = [(torch.rand((3, S, S), generator=g) * 2 - 1) * radius for _ in range(n)]
    for b, k, _c, region in pairs(regions):
        if not region.any():  # its map is all zero: no ratio
            assert torch.isnan(high[b, k]) and torch.isnan(mean[b, k])
            continue
        ratios = []
        for u in noise:
            other = explain(images + u)[b, k]  # (explain_fn's regions are the whole batch's)
            ratios.append(((other - maps[b, k]).norm() / maps[b, k].norm()).item())
        assert high[b, k].item() == pytest.approx(max(ratios), rel=1e-4)
        assert mean[b, k].item() == pytest.approx(sum(ratios) / n, rel=1e-4)
    assert (high[regions.flatten(2).any(2)] > 0).all()


def test_random_logit_brute_force(case):
    others = M.random_logit_classes(CLASSES, 5, seed=2)
    assert all(o != c and 0 <= o < 5 for o, c in zip(others, CLASSES))
    check_random_logit(*case, CLASSES)


def check_random_logit(model, images, maps, regions, classes):
    """M.random_logit against its definition, on any number of spatial axes: the Spearman
    correlation of each map with the map of its random other class (of 5) on the same target."""
    others = M.random_logit_classes(classes, 5, seed=2)

    def explain(x, classes, masks):  # the map of class c on the target masks[:, k]: |∇ s × x|
        out = []
        for k, c in enumerate(classes):
            xi = x.clone().requires_grad_(True)
            logits = model(xi)
            s = (logits[:, c % 3] * masks[:, k]).sum()
            (grad,) = torch.autograd.grad(s, xi)
            out.append((grad * xi).abs().sum(1).detach())
        return torch.stack(out, 1)

    got = M.random_logit(explain, images, maps, classes, regions, 5, seed=2)
    for b, k, c, region in pairs(regions):
        if not region.any():
            assert torch.isnan(got[b, k])
            continue
        other = explain(images[b : b + 1], [others[k]], region[None, None].float())[0, 0]
        want = spearmanr(maps[b, k].flatten().numpy(), other.flatten().numpy()).statistic
        assert got[b, k].item() == pytest.approx(want, abs=1e-5)


def test_identical_maps_share_their_perturbed_batch(case):
    """A class-agnostic method's maps (one map for every class): deletion costs the forwards of one
    class, and each class's curve is what it is alone."""
    model, images, maps, regions = case
    same = maps[:, :1].expand(-1, 3, -1, -1).contiguous()
    calls = []
    handle = model.register_forward_hook(lambda m, i, o: calls.append(i[0].shape[0]))
    try:
        shared = M.deletion_curves(model, images[:1], same[:1], CLASSES, regions=regions[:1], steps=4)
        assert sum(calls) == 4 + 1  # one batch of T+1 images for all three classes
        for k, c in enumerate(CLASSES):
            alone = M.deletion_curves(model, images[:1], same[:1, k : k + 1], [c], regions=regions[:1, k : k + 1], steps=4)
            torch.testing.assert_close(shared[:, k : k + 1], alone, atol=1e-6, rtol=0, equal_nan=True)
        assert torch.isfinite(shared).all()  # three real curves
    finally:
        handle.remove()


def test_the_clean_and_the_fully_perturbed_image_are_scored_once_for_every_pair(case):
    """Deletion's first step (nothing removed) and last (everything removed) are the same images for
    every pair of an image: K classes with their own maps cost 2 + K·(T − 1) images, not K·(T + 1),
    and each curve is what it is alone."""
    model, images, maps, regions = case
    calls = []
    handle = model.register_forward_hook(lambda m, i, o: calls.append(i[0].shape[0]))
    try:
        together = M.deletion_curves(model, images[:1], maps[:1], CLASSES, regions=regions[:1], steps=4)
        assert sum(calls) == 2 + 3 * (4 - 1)
        for k, c in enumerate(CLASSES):
            alone = M.deletion_curves(model, images[:1], maps[:1, k : k + 1], [c], regions=regions[:1, k : k + 1], steps=4)
            torch.testing.assert_close(together[:, k : k + 1], alone, atol=1e-6, rtol=0, equal_nan=True)
        assert torch.isfinite(together).all()
    finally:
        handle.remove()
