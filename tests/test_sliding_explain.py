"""Gradient CAMs through a SlidingWindow against a brute-force implementation of their definition
(docs/volumes.md): autograd through the whole stitched forward, per-window activations and
gradients of S_k = Σ_{p∈M_k} stitched_k(p), each window's CAM (written here from the formulas)
resized to the window, blended with the importance map, divided by the summed importance,
cropped, ReLU + min-max. 2-D and 3-D, both blend modes, inputs smaller than the window.
Tolerance 1e-4 on maps in [0, 1] (float32 sums in different orders, scaled by min-max)."""
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import seg_xai_fast as sx


def net(dims: int, classes: int = 3) -> nn.Module:
    conv = nn.Conv2d if dims == 2 else nn.Conv3d
    pool = nn.AvgPool2d if dims == 2 else nn.AvgPool3d
    up = "bilinear" if dims == 2 else "trilinear"
    torch.manual_seed(0)
    return nn.Sequential(conv(2, 6, 3, padding=1), nn.ReLU(), pool(2), conv(6, 6, 3, padding=1), nn.ReLU(),
                         nn.Upsample(scale_factor=2, mode=up, align_corners=False),
                         conv(6, classes, 3, padding=1)).eval()


def window_cam(method: str, A: torch.Tensor, G: torch.Tensor) -> torch.Tensor:
    """A [C,*s], G [C,*s] → the raw CAM [*s] from the method's formula."""
    spatial = tuple(range(1, A.ndim))
    if method == "gradcam":
        return (G.mean(dim=spatial, keepdim=True) * A).sum(0)
    if method == "hirescam":
        return (G * A).sum(0)
    if method == "layercam":
        return (torch.relu(G) * A).sum(0)
    raise AssertionError(method)


def brute_force(sw: sx.SlidingWindow, layer: nn.Module, method: str, x: torch.Tensor, normalize=True, masks=None):
    """Maps [B,K,*S] of every class from the definition, with the whole scene's graph (masks
    float [B,L,*S]: the target regions, default the predicted ones)."""
    leaves = []

    def hook(module, inputs, output):
        leaf = output.detach().requires_grad_(True)
        leaves.append(leaf)
        return leaf

    handle = layer.register_forward_hook(hook)
    with torch.enable_grad():
        stitched = sw(x)
    handle.remove()
    labels = stitched.argmax(1)
    spatial = tuple(x.shape[2:])
    dims = len(spatial)
    windows = sw.windows(spatial)
    padded = tuple(s + a + b for s, a, b in zip(spatial, sw.padding(spatial)[::2][::-1], sw.padding(spatial)[1::2][::-1]))
    imp = sw.importance(spatial)
    order = [(b, w) for b in range(x.shape[0]) for w in range(len(windows))]  # MONAI's window order
    L = stitched.shape[1]
    maps = torch.zeros(x.shape[0], L, *spatial)
    regions = masks if masks is not None else torch.stack([(labels == k).float() for k in range(L)], 1)
    for k in range(L):
        S = (stitched[:, k] * regions[:, k]).sum()
        grads = torch.autograd.grad(S, leaves, retain_graph=True, allow_unused=True)
        blend = torch.zeros(x.shape[0], *padded)
        den = torch.zeros(*padded)
        for w in windows:
            den[w] += imp
        for call, (leaf, g) in enumerate(zip(leaves, grads)):
            g = torch.zeros_like(leaf) if g is None else g
            for j in range(leaf.shape[0]):
                b, w = order[call * sw.sw_batch_size + j]
                cam = window_cam(method, leaf[j].detach(), g[j])
                mode = "bilinear" if dims == 2 else "trilinear"
                cam = F.interpolate(cam[None, None], size=sw.window_size(spatial), mode=mode, align_corners=False)[0, 0]
                blend[(b,) + windows[w]] += imp * cam
        out = sw.crop((blend / den)[:, None], spatial)[:, 0]
        if normalize:
            out = torch.relu(out).flatten(1)
            out = out - out.min(1, keepdim=True).values
            out = (out / (out.max(1, keepdim=True).values + 1e-7)).view(out.shape[0], *spatial)
        maps[:, k] = out * regions[:, k].flatten(1).ne(0).any(1).view(-1, *([1] * dims))
    return maps


CASES = [  # dims, spatial, roi, overlap, mode, sw_batch_size, method
    (2, (20, 27), (12, 12), 0.25, "constant", 1, "gradcam"),
    (2, (20, 27), (8, 12), 0.5, "gaussian", 3, "hirescam"),
    (2, (6, 30), (8, 8), 0.25, "gaussian", 2, "layercam"),  # smaller than the window along H
    (3, (10, 12, 9), (6, 6, 6), 0.25, "gaussian", 2, "gradcam"),
    (3, (10, 12, 9), (8, 6, 4), 0.5, "constant", 1, "hirescam"),
]


@pytest.mark.parametrize("dims,spatial,roi,overlap,mode,swb,method", CASES)
def test_equals_the_definition(dims, spatial, roi, overlap, mode, swb, method):
    sw = sx.SlidingWindow(net(dims), roi, overlap=overlap, mode=mode, sw_batch_size=swb)
    x = torch.randn(2, 2, *spatial, generator=torch.Generator().manual_seed(7))
    res = sx.Explainer(sw, "model.3", method)(x)
    expected = brute_force(sw, sw.model[3], method, x)
    assert res.maps.shape == expected.shape
    torch.testing.assert_close(res.maps, expected, rtol=0, atol=1e-4)
    assert res.info["window_forwards"] <= res.info["windows"]


@pytest.mark.parametrize("dims", [2, 3])
def test_given_targets_take_one_pass_and_equal_the_definition(dims):
    spatial, roi = ((20, 27), (8, 12)) if dims == 2 else ((10, 12, 9), (6, 6, 6))
    sw = sx.SlidingWindow(net(dims), roi, overlap=0.25, mode="gaussian", sw_batch_size=2)
    x = torch.randn(2, 2, *spatial, generator=torch.Generator().manual_seed(11))
    masks = torch.zeros(2, 3, *spatial)
    masks[(0, 0) + tuple(slice(0, s // 2) for s in spatial)] = 1
    masks[(1, 2) + tuple(slice(s // 3, s) for s in spatial)] = 1
    masks[0, 1] = (torch.rand(spatial, generator=torch.Generator().manual_seed(12)) > 0.7).float()
    res = sx.Explainer(sw, "model.3", "gradcam")(x, masks=masks)
    torch.testing.assert_close(res.maps, brute_force(sw, sw.model[3], "gradcam", x, masks=masks), rtol=0, atol=1e-4)
    with torch.no_grad():
        assert torch.equal(res.labels, sw(x).argmax(1))
    # one forward per window (plus the one that reads the class count), no stitched pre-pass
    assert res.info["window_forwards"] + res.info["plain_window_forwards"] == res.info["windows"] + 1


@pytest.mark.parametrize("dims,swb", [(2, 1), (2, 3), (3, 2)])
def test_predicted_targets_wait_for_their_neighbours_instead_of_a_pre_pass(dims, swb):
    """The default budget holds the waiting windows' graphs: one forward per window, no no-grad
    pass; a budget too small for them takes the no-grad pass first. Both equal the definition."""
    spatial, roi = ((20, 27), (8, 12)) if dims == 2 else ((10, 12, 9), (6, 6, 6))
    sw = sx.SlidingWindow(net(dims), roi, overlap=0.5, mode="gaussian", sw_batch_size=swb)
    x = torch.randn(2, 2, *spatial, generator=torch.Generator().manual_seed(5))
    expected = brute_force(sw, sw.model[3], "gradcam", x)
    streamed = sx.Explainer(sw, "model.3", "gradcam")(x)
    tight = sx.Explainer(sw, "model.3", "gradcam", max_memory_mb=1e-3)(x)
    windows = streamed.info["windows"]
    assert (streamed.info["window_forwards"], streamed.info["plain_window_forwards"]) == (windows, 0)
    assert (tight.info["window_forwards"], tight.info["plain_window_forwards"]) == (windows, windows)
    for res in (streamed, tight):
        torch.testing.assert_close(res.maps, expected, rtol=0, atol=1e-4)
        with torch.no_grad():
            assert torch.equal(res.labels, sw(x).argmax(1))


def test_a_component_target_takes_the_no_grad_pass_and_equals_its_region_given_as_masks():
    sw = sx.SlidingWindow(net(2), (8, 12), overlap=0.25, mode="gaussian", sw_batch_size=2)
    x = torch.randn(1, 2, 20, 27, generator=torch.Generator().manual_seed(9))
    with torch.no_grad():
        labels = sw(x).argmax(1)
    y, xx = 10, 13
    k = int(labels[0, y, xx])
    region = sx.engine.targets.target_masks(labels, [k], sx.Component(y, xx))  # [1,1,H,W]
    res = sx.Explainer(sw, "model.3", "gradcam")(x, classes=[k], masks=sx.Component(y, xx))
    assert res.info["plain_window_forwards"] == res.info["windows"]
    masks = torch.zeros(1, 3, 20, 27)
    masks[:, k] = region[:, 0]
    expected = brute_force(sw, sw.model[3], "gradcam", x, masks=masks)[:, k:k + 1]
    torch.testing.assert_close(res.maps, expected, rtol=0, atol=1e-4)


def test_raw_maps_equal_the_definition():
    sw = sx.SlidingWindow(net(2), (12, 12), overlap=0.25, mode="gaussian")
    x = torch.randn(1, 2, 20, 27, generator=torch.Generator().manual_seed(8))
    res = sx.Explainer(sw, "model.3", "gradcam", normalize=False)(x)
    expected = brute_force(sw, sw.model[3], "gradcam", x, normalize=False)
    torch.testing.assert_close(res.maps, expected, rtol=0, atol=1e-5 * float(expected.abs().max()))


def test_windows_away_from_the_target_are_skipped():
    sw = sx.SlidingWindow(net(2), (8, 8), overlap=0.0)
    x = torch.randn(1, 2, 32, 32)
    res = sx.Explainer(sw, "model.3", "gradcam")(x, classes=[1], masks=sx.Box(0, 0, 4, 4))
    assert res.info["windows"] == 16 and res.info["window_forwards"] == 1
    assert res.maps[0, 0, 8:, 8:].abs().max() == 0


def test_refusals_say_why():
    sw = sx.SlidingWindow(net(2), (8, 8))
    x = torch.randn(1, 2, 16, 16)
    with pytest.raises(ValueError, match="scorecam.*cannot explain through a SlidingWindow.*occlusion"):
        sx.Explainer(sw, "model.3", "scorecam")(x)
    with pytest.raises(ValueError, match="resolution='layer'"):
        sx.Explainer(sw, "model.3", "gradcam")(x, resolution="layer")


def test_the_closed_form_asked_through_a_sliding_window_is_refused():
    sw = sx.SlidingWindow(net(2), (8, 8))
    with pytest.raises(ValueError, match="gradient_path='analytic' .* does not explain through a SlidingWindow"):
        sx.Explainer(sw, "model.3", "gradcam", gradient_path="analytic")(torch.randn(1, 2, 16, 16))
