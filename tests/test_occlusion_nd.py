"""Occlusion of volumes (3-D windows and strides) and through a SlidingWindow, against captum's
Occlusion class by class (≤ 1e-4 of the largest attribution plus the float32 rounding of the
score itself, as tests/test_perturbation.py states), and the window forwards a SlidingWindow
saves: only the windows a patch touches are recomputed, counted with a hook on the inner model."""
import pytest
import torch
import torch.nn as nn

import seg_xai_fast as sx

captum_attr = pytest.importorskip("captum.attr")


def net(dims: int) -> nn.Module:
    conv = nn.Conv2d if dims == 2 else nn.Conv3d
    torch.manual_seed(0)
    return nn.Sequential(conv(2, 4, 3, padding=1), nn.ReLU(), conv(4, 3, 3, padding=1)).eval()


def captum_maps(model, x, classes, masks, window, stride, baseline):
    out = []
    for k, c in enumerate(classes):
        def score(z, c=c, m=masks[0, k]):
            return (model(z)[:, c] * m).flatten(1).sum(1)

        attr = captum_attr.Occlusion(score).attribute(x, sliding_window_shapes=(x.shape[1], *window),
                                                      strides=(x.shape[1], *stride), baselines=baseline)
        out.append(attr[0, 0])
    return torch.stack(out)[None]


def assert_close_to_captum(ours, theirs, model, x, classes, masks):
    with torch.no_grad():
        out = model(x)
    for k, c in enumerate(classes):
        magnitude = float((out[0, c].abs() * masks[0, k]).sum())
        tol = 1e-4 * float(theirs[0, k].abs().max()) + 1e-6 * magnitude
        assert float((ours[0, k] - theirs[0, k]).abs().max()) <= tol, (k, c)


def masks_for(spatial, seed):
    g = torch.Generator().manual_seed(seed)
    masks = torch.zeros(1, 2, *spatial)
    masks[0, 0] = (torch.rand(spatial, generator=g) > 0.6).float()
    masks[(0, 1) + tuple(slice(0, s // 2) for s in spatial)] = 1
    return masks


def test_3d_occlusion_equals_captum():
    model, classes = net(3), [0, 2]
    x = torch.randn(1, 2, 8, 10, 12, generator=torch.Generator().manual_seed(1))
    masks = masks_for(x.shape[2:], 2)
    opts = {"window": (3, 4, 5), "stride": (2, 3, 4), "baseline": 0.25}
    ours = sx.Explainer(model, None, "occlusion", normalize=False, options=opts)(x, classes=classes, masks=masks)
    with torch.no_grad():
        theirs = captum_maps(model, x, classes, masks, (3, 4, 5), (2, 3, 4), 0.25)
    assert ours.maps.shape == (1, 2, 8, 10, 12)
    assert_close_to_captum(ours.maps, theirs, model, x, classes, masks)


def counting(model):
    calls = []
    model.register_forward_hook(lambda m, inputs, output: calls.append(inputs[0].shape[0]))
    return calls


@pytest.mark.parametrize("dims,spatial,roi,window,stride,mode,padding", [
    (2, (48, 48), (12, 12), (6, 6), (6, 6), "gaussian", "constant"),
    (2, (9, 40), (12, 12), (5, 7), (4, 5), "constant", "reflect"),  # smaller than the window along H
    (3, (8, 10, 12), (4, 6, 6), (3, 4, 5), (2, 3, 4), "gaussian", "constant"),
])
def test_sliding_window_occlusion_equals_captum_with_fewer_forwards(dims, spatial, roi, window, stride, mode, padding):
    inner = net(dims)
    sw = sx.SlidingWindow(inner, roi, overlap=0.25, mode=mode, padding_mode=padding)
    x = torch.randn(1, 2, *spatial, generator=torch.Generator().manual_seed(3))
    masks, classes = masks_for(spatial, 4), [0, 2]
    calls = counting(inner)
    opts = {"window": window, "stride": stride, "baseline": 0.5}
    ours = sx.Explainer(sw, None, "occlusion", normalize=False, options=opts)(x, classes=classes, masks=masks)
    ours_forwards = sum(calls)
    calls.clear()
    with torch.no_grad():
        theirs = captum_maps(sw, x, classes, masks, window, stride, 0.5)
    captum_forwards = sum(calls) // len(classes)  # captum's window forwards for one class
    assert_close_to_captum(ours.maps, theirs, sw, x, classes, masks)
    if dims == 2 and padding == "constant":  # a scene of many windows: the issue's ≥ 5× (all K classes vs one)
        assert captum_forwards >= 5 * ours_forwards, (captum_forwards, ours_forwards)
    assert ours_forwards < captum_forwards


def test_refusals_name_the_method_and_the_way_out():
    sw = sx.SlidingWindow(net(2), (8, 8))
    x = torch.randn(1, 2, 16, 16)
    with pytest.raises(ValueError, match="'rise' cannot explain through a SlidingWindow.*occlusion"):
        sx.Explainer(sw, None, "rise")(x)
    with pytest.raises(ValueError, match="'ablationcam' cannot explain through a SlidingWindow"):
        sx.Explainer(sw, "model.0", "ablationcam")(x)
    vol = torch.randn(1, 2, 6, 6, 6)
    with pytest.raises(ValueError, match="option 'baseline' 'blur' is 2-D only"):
        sx.Explainer(net(3), None, "occlusion", options={"baseline": "blur", "window": 2, "stride": 2})(vol)
    with pytest.raises(ValueError, match="option 'window' must be an int or 3 ints"):
        sx.Explainer(net(3), None, "occlusion", options={"window": (2, 3), "stride": 2})(vol)
    with pytest.raises(ValueError, match="option 'window' .* has 3 axes"):
        sx.Explainer(net(2), None, "occlusion", options={"window": (2, 3, 3), "stride": 2})(torch.randn(1, 2, 8, 8))


def test_3d_rise_equals_brute_force():
    """RISE in 3-D against its definition with every mask materialised: N binary s³ grids,
    trilinear to (s+1)·cell, cropped at random shifts; saliency = Σ_i S_i·mask_i / (N·p)."""
    import torch.nn.functional as F

    model = net(3)
    x = torch.randn(1, 2, 7, 9, 10, generator=torch.Generator().manual_seed(5))
    opts = {"n_masks": 40, "grid": 3, "p": 0.5, "seed": 3, "batch_size": 16}
    res = sx.Explainer(model, None, "rise", normalize=False, options=opts)(x, classes=[0, 1])
    g = torch.Generator().manual_seed(3)
    grids = (torch.rand(40, 3, 3, 3, generator=g) < 0.5).float()
    cells = [3, 3, 4]  # ceil(n / 3)
    shifts = [torch.randint(0, c, (40,), generator=g) for c in cells]
    with torch.no_grad():
        labels = model(x).argmax(1)[0]
        expected = torch.zeros(2, 7, 9, 10)
        for i in range(40):
            up = F.interpolate(grids[i][None, None], size=(12, 12, 16), mode="trilinear", align_corners=False)[0, 0]
            dz, dy, dx = (int(s[i]) for s in shifts)
            mask = up[dz:dz + 7, dy:dy + 9, dx:dx + 10]
            out = model(x * mask)[0]
            for k in range(2):
                expected[k] += (out[k] * (labels == k)).sum() * mask
    expected /= 40 * 0.5
    expected *= torch.stack([(labels == k).any() for k in range(2)]).view(2, 1, 1, 1)
    torch.testing.assert_close(res.maps[0], expected, rtol=1e-4, atol=1e-4 * float(expected.abs().max()))
