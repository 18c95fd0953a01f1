"""The fused kernels of the newer CAM stages against their pure-PyTorch twins: Seg-XRes-CAM's
pooled_cam and cam_from_gradients for every gradient CAM stage and its options.

As tests/test_kernels.py: fresh random inputs on awkward shapes, outputs pre-filled with NaN, every
element compared (rtol 1e-5 plus the stated atol).
"""
from __future__ import annotations

import pytest
import torch

from seg_xai_fast import kernels, reference
from test_kernels import ATOL_SUM, CAM_SHAPES, DEVICES, cam_inputs, close, nan_like

# Pools: identity, the default, odd (partial windows), and one window larger than every small map.
POOLS = [1, 2, 3, 40]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("shape", CAM_SHAPES)
@pytest.mark.parametrize("pool", POOLS)
@pytest.mark.parametrize("reduce", reference.POOL_REDUCTIONS)
def test_pooled_cam(device, shape, pool, reduce):
    B, K, C, h, w = shape
    A, G = cam_inputs(shape, device, seed=11)
    out = kernels.pooled_cam(A, G, pool, reduce, backend="fused", out=nan_like((B, K, h, w), device=device))
    expected = reference.normalize_maps(reference.raw_cam(A, G, "segxrescam", {"pool": pool, "reduce": reduce}))
    # ATOL_SUM: the channel sum in another order; the window mean divides the same float32 sum.
    close(out, expected, ATOL_SUM)


@pytest.mark.parametrize("device", DEVICES)
def test_pooled_cam_pool_1_is_hirescam(device):
    A, G = cam_inputs((2, 3, 7, 5, 9), device, seed=12)
    for reduce in reference.POOL_REDUCTIONS:
        close(kernels.pooled_cam(A, G, 1, reduce, backend="fused"),
              kernels.elementwise_cam(A, G, "hirescam", backend="fused"), 0)


def test_pool_gradients_windows():
    """The twin's windows on a hand-checked 3×5 map, pool 2: partial windows at the right and bottom."""
    g = torch.tensor([[1., -2, 3, 4, -5], [6, 7, -8, 9, 10], [-11, 12, 13, -14, 15]])
    mx = reference.pool_gradients(g, 2, "max")
    mean = reference.pool_gradients(g, 2, "mean")
    assert mx.tolist() == [[7, 7, 9, 9, 10], [7, 7, 9, 9, 10], [12, 12, 13, 13, 15]]
    expected_mean = [[3, 3, 2, 2, 2.5], [3, 3, 2, 2, 2.5], [0.5, 0.5, -0.5, -0.5, 15]]
    torch.testing.assert_close(mean, torch.tensor([expected_mean[0], expected_mean[1], expected_mean[2]]))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("shape", [(1, 1, 1, 1, 1), (2, 3, 5, 7, 13), (1, 21, 16, 8, 8)])
@pytest.mark.parametrize("method,options", [
    ("gradcam_elementwise", {}),
    ("segxrescam", {"pool": 3, "reduce": "mean"}),
    ("eigengradcam", {}),
    ("segeigencam", {}),
    ("gradcam", {"eigen_smooth": True}),
    ("layercam", {"eigen_smooth": True}),
])
def test_cam_from_gradients_new_stages(device, shape, method, options):
    B, K, C, h, w = shape
    A, G = cam_inputs(shape, device, seed=13)
    out = kernels.cam_from_gradients(A, G, method, (17, 11), backend="fused",
                                     out=nan_like((B, K, 17, 11), device=device), options=options)
    # The projections run the reference's float64 eigen-solve on both paths: only the fused
    # min-max and resize differ (ATOL_SUM covers the channel sums of the other stages).
    close(out, reference.cam_from_gradients(A, G, method, (17, 11), options), ATOL_SUM)


def test_pooled_cam_bad_arguments_are_named():
    A, G = cam_inputs((1, 2, 3, 4, 5), "cpu")
    with pytest.raises(ValueError, match="'pool' must be an int ≥ 1, got 0"):
        kernels.pooled_cam(A, G, 0)
    with pytest.raises(ValueError, match="'reduce' must be one of"):
        kernels.pooled_cam(A, G, 2, "median")
