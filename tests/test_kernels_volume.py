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


# --------------------------------------------------------------------------- 3-D CAM weighting and pooling
# Volumes run the 2-D fused CAM stage on tensors whose depth is folded into the rows
# ([B,C,d,h,w] → [B,C,d·h,w], engine/volume.py): each check below compares that against the 3-D
# definitions written directly on 5-D tensors (means and sums over d, h, w; a per-voxel product),
# fresh random inputs, NaN-poisoned outputs, every element compared.
ATOL_SUM = 2e-5  # float32 sums over d·h·w or C in another order, on maps normalised to [0, 1]


def cam_3d(A, G, method):
    """The raw 3-D CAM from its definition: A [B,C,d,h,w], G [B,K,C,d,h,w] → [B,K,d,h,w]."""
    A5 = A.unsqueeze(1)
    axes = (-3, -2, -1)
    if method == "gradcam":
        return (G.mean(dim=axes, keepdim=True) * A5).sum(2)
    if method == "gradcam++":
        g2, g3 = G * G, G * G * G
        alpha = g2 / (2 * g2 + A5.sum(dim=axes, keepdim=True) * g3 + reference.GRADCAMPP_EPS)
        alpha = torch.where(G != 0, alpha, torch.zeros_like(alpha))
        return ((torch.relu(G) * alpha).sum(dim=axes, keepdim=True) * A5).sum(2)
    if method == "xgradcam":
        w = (G * A5).sum(dim=axes, keepdim=True) / (A5.sum(dim=axes, keepdim=True) + reference.XGRADCAM_EPS)
        return (w * A5).sum(2)
    if method == "hirescam":
        return (G * A5).sum(2)
    if method == "layercam":
        return (torch.relu(G) * A5).sum(2)
    if method == "gradcam_elementwise":
        return torch.relu(G * A5).sum(2)
    raise AssertionError(method)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("shape", [(1, 1, 1, 1, 1, 1), (1, 2, 3, 5, 1, 7), (2, 3, 8, 4, 6, 5)])  # B,K,C,d,h,w
@pytest.mark.parametrize("method", ["gradcam", "gradcam++", "xgradcam", "hirescam", "layercam", "gradcam_elementwise"])
def test_folded_fused_cam_stage_equals_the_3d_definition(device, shape, method):
    B, K, C, d, h, w = shape
    g = torch.Generator().manual_seed(sum(shape))
    A = torch.randn(B, C, d, h, w, generator=g).relu().to(device)
    G = torch.randn(B, K, C, d, h, w, generator=g).to(device)
    out = torch.full((B, K, d * h, w), float("nan"), device=device)
    fused = kernels.cam_from_gradients(A.flatten(2, 3), G.flatten(3, 4), method, backend="fused", out=out)
    expected = reference.normalize_volumes(reference.normalize_volumes(cam_3d(A.cpu(), G.cpu(), method)))
    close(fused.view(B, K, d, h, w), expected, ATOL_SUM)


@pytest.mark.parametrize("device", DEVICES)
def test_folded_region_scores_equal_the_3d_sums(device):
    g = torch.Generator().manual_seed(7)
    logits = torch.randn(5, 4, 3, 6, 7, generator=g).to(device)
    masks = (torch.rand(2, 3, 6, 7, generator=g) > 0.5).float().to(device)
    out = torch.full((5, 2), float("nan"), device=device)
    fused = kernels.region_scores(logits.flatten(2, 3), masks.flatten(1, 2), [1, 3], backend="fused", out=out)
    expected = torch.stack([(logits[:, c].cpu() * masks[k].cpu()).flatten(1).sum(1) for k, c in enumerate([1, 3])], 1)
    close(fused, expected, 1e-4)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("shape", [(1, 1, 1, 1), (2, 3, 5, 7), (1, 9, 1, 4)])  # B,D,H,W
def test_folded_label_seeds_equal_the_3d_label_masks(device, shape):
    """The predicted regions of a volume come from the fused seeds kernel on the folded labels."""
    B, D, H, W = shape
    labels = torch.randint(0, 4, shape, generator=torch.Generator().manual_seed(B * D + W)).to(device)
    out = torch.full((B, 3, D * H, W), float("nan"), device=device)
    fused = kernels.label_seeds(labels.reshape(B, D * H, W), [0, 2, 3], (D * H, W), backend="fused", out=out)
    expected = (labels.cpu()[:, None] == torch.tensor([0, 2, 3]).view(1, 3, 1, 1, 1)).float()
    close(fused.view(B, 3, D, H, W), expected, 0.0)
