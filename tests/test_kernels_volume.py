"""The 3-D kernel (kernels.resize_normalize_3d: trilinear resize + ReLU + per-volume min-max)
against its pure-PyTorch twin, as tests/test_kernels.py does for the 2-D ops: fresh random inputs,
awkward shapes (1, odd, large), outputs poisoned with NaN, every element compared."""
from __future__ import annotations

import pytest
import torch

from seg_xai_fast import kernels, reference

CUDA_OK = torch.cuda.is_available()
DEVICES = [
    pytest.param("cpu", id="cpu"),
    pytest.param("cuda", id="cuda", marks=[pytest.mark.cuda, pytest.mark.skipif(not CUDA_OK, reason="needs a CUDA GPU")]),
]
RTOL = 1e-5
# Trilinear weights and products rounded in a different order (or fused) than ATen's: a few ulp of
# the volume's range, which min-max then scales to [0, 1].
ATOL_RESIZE = 1e-5


def close(actual: torch.Tensor, expected: torch.Tensor, atol: float) -> None:
    assert actual.shape == expected.shape and actual.dtype == expected.dtype
    assert not torch.isnan(actual).any(), "an output element was not written"
    torch.testing.assert_close(actual.cpu(), expected.cpu(), rtol=RTOL, atol=atol)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("shape", [(1, 1, 1, 1, 1), (1, 1, 3, 7, 13), (2, 3, 5, 1, 9), (1, 4, 16, 16, 16)])
@pytest.mark.parametrize("size", [(1, 1, 1), (5, 7, 13), (9, 14, 27), (2, 3, 5), (40, 33, 48)])
def test_resize_normalize_3d(device, shape, size):
    if shape[-3:] == (1, 1, 1) and size != (1, 1, 1):
        pytest.skip("ill-conditioned: a constant upsampled to ±1 ulp, stretched by min-max (as the 2-D test)")
    maps = torch.randn(*shape, generator=torch.Generator().manual_seed(sum(shape) + sum(size))).to(device)
    out = torch.full((*shape[:2], *size), float("nan"), device=device)
    out = kernels.resize_normalize_3d(maps, size, backend="fused", out=out)
    close(out, reference.normalize_volumes(reference.resize_trilinear(maps, size)), ATOL_RESIZE)


@pytest.mark.parametrize("device", DEVICES)
def test_resize_normalize_3d_non_contiguous_and_constant(device):
    maps = torch.randn(2, 3, 6, 5, 7, generator=torch.Generator().manual_seed(4)).to(device).transpose(-1, -3)
    assert not maps.is_contiguous()
    close(kernels.resize_normalize_3d(maps, (11, 9, 4), backend="fused"),
          reference.resize_normalize_3d(maps, (11, 9, 4)), ATOL_RESIZE)
    assert kernels.resize_normalize_3d(torch.full((1, 2, 3, 4, 5), 0.3, device=device), (3, 4, 5),
                                       backend="fused").eq(0).all()


def test_resize_normalize_3d_arguments_are_named():
    with pytest.raises(ValueError, match="argument 'maps' must have 5 dimensions"):
        kernels.resize_normalize_3d(torch.zeros(1, 2, 3, 4), (2, 2, 2))
    with pytest.raises(ValueError, match="argument 'size' must be a triple"):
        kernels.resize_normalize_3d(torch.zeros(1, 1, 2, 3, 4), (2, 2))
