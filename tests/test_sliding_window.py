"""sx.SlidingWindow against MONAI's sliding_window_inference (the definition it implements), 2-D
and 3-D, both blend modes, inputs smaller than the window, odd sizes, several windows per call;
and its argument errors. Tolerance 1e-5: the same float32 sums in the same order, so the
differences are rounding only."""
import pytest
import torch
import torch.nn as nn

import seg_xai_fast as sx

monai_inferers = pytest.importorskip("monai.inferers")


def small_net(dims: int, channels: int = 2, classes: int = 3) -> nn.Module:
    """A position-sensitive random segmenter (padding makes window borders matter)."""
    conv = nn.Conv2d if dims == 2 else nn.Conv3d
    torch.manual_seed(0)
    return nn.Sequential(conv(channels, 4, 3, padding=1), nn.ReLU(), conv(4, classes, 3, padding=1)).eval()


CASES = [  # dims, spatial, roi, overlap, mode, sw_batch_size, padding_mode
    (2, (37, 50), (16, 24), 0.25, "constant", 1, "constant"),
    (2, (37, 50), (16, 24), 0.5, "gaussian", 3, "constant"),
    (2, (9, 50), (16, 16), 0.25, "gaussian", 2, "reflect"),  # smaller than the window along H
    (2, (16, 16), (16, 16), 0.0, "constant", 1, "constant"),  # one window
    (3, (11, 19, 13), (8, 8, 8), 0.25, "gaussian", 1, "constant"),
    (3, (11, 19, 13), (8, 6, 8), 0.6, "constant", 4, "replicate"),
    (3, (5, 7, 9), (8, 8, 8), 0.25, "gaussian", 1, "constant"),  # smaller along every axis
    (3, (1, 12, 12), (4, -1, 8), (0.5, 0.25, 0.0), "gaussian", 2, "constant"),  # D = 1, a whole-axis roi
]


@pytest.mark.parametrize("dims,spatial,roi,overlap,mode,swb,padding", CASES)
def test_equals_monai(dims, spatial, roi, overlap, mode, swb, padding):
    net = small_net(dims)
    x = torch.randn((2, 2) + spatial, generator=torch.Generator().manual_seed(1))
    cval = 0.5 if padding == "constant" else 0.0  # torch refuses a fill value for the other modes
    sw = sx.SlidingWindow(net, roi, overlap=overlap, mode=mode, sw_batch_size=swb, padding_mode=padding, cval=cval)
    with torch.no_grad():
        ours = sw(x)
        theirs = monai_inferers.sliding_window_inference(x, roi, swb, net, overlap=overlap, mode=mode,
                                                          padding_mode=padding, cval=cval)
    assert ours.shape == theirs.shape == (2, 3) + spatial
    assert torch.allclose(ours, theirs.as_tensor() if hasattr(theirs, "as_tensor") else theirs, atol=1e-5, rtol=0)


def test_sigma_scale_per_axis_equals_monai():
    net = small_net(2)
    x = torch.randn(1, 2, 30, 41)
    sw = sx.SlidingWindow(net, (12, 20), overlap=0.4, mode="gaussian", sigma_scale=(0.3, 0.1))
    with torch.no_grad():
        theirs = monai_inferers.sliding_window_inference(x, (12, 20), 1, net, overlap=0.4, mode="gaussian",
                                                          sigma_scale=(0.3, 0.1))
        assert torch.allclose(sw(x), torch.as_tensor(theirs), atol=1e-5, rtol=0)


def test_windows_cover_the_input_and_end_at_the_border():
    sw = sx.SlidingWindow(nn.Identity(), (8, 8), overlap=0.25)
    windows = sw.windows((21, 8))
    assert [w[0].start for w in windows] == [0, 6, 12, 13]  # interval int(8·0.75) = 6, the last pulled back
    assert all(w[1] == slice(0, 8) for w in windows)


@pytest.mark.parametrize("kwargs,message", [
    (dict(roi_size=(8, 8, 8)), "roi_size"),
    (dict(roi_size=(8, 8), overlap=1.0), "overlap"),
    (dict(roi_size=(8, 8), overlap=-0.1), "overlap"),
    (dict(roi_size=(8,)), "roi_size"),
    (dict(roi_size=8), "roi_size"),
    (dict(roi_size=(8, 8), mode="linear"), "mode"),
    (dict(roi_size=(8, 8), sw_batch_size=0), "sw_batch_size"),
    (dict(roi_size=(8, 8), overlap=(0.1, 0.2, 0.3)), "overlap"),
])
def test_argument_errors_name_the_argument(kwargs, message):
    x = torch.zeros(1, 2, 16, 16)
    with pytest.raises((ValueError, TypeError), match=message):
        sx.SlidingWindow(small_net(2), **kwargs)(x)
