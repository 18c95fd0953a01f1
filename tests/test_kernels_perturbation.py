"""The perturbation family's fused kernels against their twins in kernels.reference: region
scores, Score-CAM inputs, RISE inputs and RISE accumulation, segment coalitions, on random
awkward shapes, every fused call writing into a NaN-poisoned output (an element the kernel
forgets fails)."""
from __future__ import annotations

import pytest
import torch

from seg_xai_fast import kernels
from seg_xai_fast.engine import method_maths
from seg_xai_fast.engine.perturbation import rise_grids
from seg_xai_fast.kernels import reference

CUDA_OK = torch.cuda.is_available()
DEVICES = [
    pytest.param("cpu", id="cpu"),
    pytest.param("cuda", id="cuda", marks=[pytest.mark.cuda, pytest.mark.skipif(not CUDA_OK, reason="needs a CUDA GPU")]),
]
# The fused scores sum in float64, the twin in float32 (einsum): ~h·w·eps of the sum's magnitude.
ATOL_SCORES = 1e-4
# Bilinear weights and products in a different order than ATen: a few ulp of values in [0, 1].
ATOL_BILINEAR = 1e-5

SCORE_SHAPES = [  # (N, L, K, h, w)
    (1, 1, 1, 1, 1), (3, 5, 2, 7, 13), (2, 21, 21, 20, 20), (5, 4, 3, 1, 9), (1, 2, 1, 33, 3),
]


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def _nan(shape, device):
    return torch.full(shape, float("nan"), device=device)


def _close(actual, expected, atol):
    assert not torch.isnan(actual).any(), "an output element was not written"
    torch.testing.assert_close(actual.cpu(), expected.cpu(), rtol=1e-5, atol=atol)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("score", reference.SCORE_TYPES)
@pytest.mark.parametrize("shape", SCORE_SHAPES)
def test_region_scores(device, score, shape):
    N, L, K, h, w = shape
    g = _gen(sum(shape))
    logits = (torch.randn(N, L, h, w, generator=g) * 3).to(device)
    masks = (torch.rand(K, h, w, generator=g) > 0.4).float().to(device)
    masks[0] *= torch.rand(h, w, generator=g).to(device)  # a soft mask
    if K > 1:
        masks[-1] = 0  # an empty region
    classes = torch.randperm(L, generator=g)[:K].tolist() if K <= L else None
    ref_labels = torch.randint(0, L, (h, w), generator=g).to(device)
    out = _nan((N, K), device)
    got = kernels.region_scores(logits, masks, classes, score, ref_labels if score == "dice" else None,
                                backend="fused", out=out)
    assert got is out
    want = reference.region_scores(logits, masks, classes, score, ref_labels)
    _close(got, want, ATOL_SCORES * max(1.0, float(want.abs().max())) if score == "logit" else 1e-6)


def test_region_scores_dice_follows_torch_argmax_on_ties_and_nan():
    logits = torch.zeros(2, 3, 2, 2)
    logits[0, :, 0, 0] = 1.0  # a tie: class 0
    logits[1, 2, 1, 1] = float("nan")  # NaN wins: class 2
    masks = torch.ones(3, 2, 2)
    ref_labels = torch.tensor([[0, 0], [0, 2]])
    got = kernels.region_scores(logits, masks, [0, 1, 2], "dice", ref_labels, backend="fused")
    want = reference.region_scores(logits, masks, [0, 1, 2], "dice", ref_labels)
    torch.testing.assert_close(got, want)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("n, h, w, H, W", [(1, 1, 1, 1, 1), (3, 5, 7, 17, 31), (4, 8, 8, 64, 64),
                                            (2, 1, 6, 9, 2), (33, 10, 3, 40, 12)])
def test_scorecam_inputs(device, n, h, w, H, W):
    g = _gen(n + h + W)
    image = torch.rand(3, H, W, generator=g).to(device)
    acts = torch.randn(n, h, w, generator=g).to(device)
    # No constant channel here: its upsample is constant up to bilinear rounding, which the 1e-8
    # eps of the peer's min-max blows up to arbitrary values in [0, 1], in ATen as anywhere else.
    out = _nan((n, 3, H, W), device)
    got = kernels.scorecam_inputs(image, acts, backend="fused", out=out)
    assert got is out
    _close(got, reference.scorecam_inputs(image, acts), ATOL_BILINEAR)


RISE_CASES = [  # (N, s, H, W, K)
    (1, 2, 1, 1, 1), (5, 7, 33, 20, 3), (12, 3, 64, 48, 21), (7, 5, 10, 91, 2), (3, 4, 4, 4, 1),
]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("N, s, H, W, K", RISE_CASES)
def test_rise_inputs(device, N, s, H, W, K):
    grids, shifts = rise_grids(N, s, 0.5, N + s, (H, W))
    image = torch.rand(3, H, W, generator=_gen(H)).to(device)
    out = _nan((N, 3, H, W), device)
    got = kernels.rise_inputs(image, grids.to(device), shifts.to(device), backend="fused", out=out)
    assert got is out
    _close(got, reference.rise_inputs(image, grids.to(device), shifts.to(device)), ATOL_BILINEAR)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("N, s, H, W, K", RISE_CASES)
def test_rise_accumulate(device, N, s, H, W, K):
    grids, shifts = rise_grids(N, s, 0.3, N * s, (H, W))
    scores = torch.randn(N, K, generator=_gen(K)).to(device)
    out = _nan((K, H, W), device)
    got = kernels.rise_accumulate(scores, grids.to(device), shifts.to(device), (H, W), backend="fused", out=out)
    assert got is out
    # the brute force: every mask materialised at once
    masks = reference.rise_masks(grids, shifts, (H, W)).to(device)
    want = torch.einsum("nk,nhw->khw", scores, masks)
    _close(got, want, ATOL_BILINEAR * N * max(1.0, float(scores.abs().max())))
    _close(reference.rise_accumulate(scores, grids.to(device), shifts.to(device), (H, W), chunk=2), want,
           ATOL_BILINEAR * N * max(1.0, float(scores.abs().max())))


def test_rise_masks_are_smooth_crops_in_range():
    grids, shifts = rise_grids(50, 7, 0.5, 0, (60, 45))
    masks = reference.rise_masks(grids, shifts, (60, 45))
    assert masks.shape == (50, 60, 45) and masks.min() >= 0 and masks.max() <= 1
    ch, cw = reference.rise_cell((60, 45), 7)
    assert (ch, cw) == (9, 7) and int(shifts[:, 0].max()) < ch and int(shifts[:, 1].max()) < cw


def test_ablation_values_follow_the_peer_rule():
    assert method_maths.ablation_values(0.0, 3).tolist() == [0.0, 0.0, 0.0]
    import numpy as np

    m, expected = np.float32(-0.5), []
    for _ in range(3):  # the peer: output[i] = torch.min(output) - 1e7, row after row, in float32
        m = np.float32(m - np.float32(1e7))
        expected.append(float(m))
    v = method_maths.ablation_values(-0.5, 3)
    assert v.dtype == torch.float32 and v.tolist() == expected


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("n, M, H, W", [(1, 1, 1, 1), (3, 5, 7, 13), (17, 64, 33, 1), (2, 4096, 64, 64),
                                        (65, 9, 160, 96)])
def test_segment_inputs(device, n, M, H, W):
    g = _gen(n * 7 + M + H)
    image = torch.rand(3, H, W, generator=g).to(device)
    baseline = torch.randn(3, H, W, generator=g).to(device)
    segments = torch.randint(0, M, (H, W), generator=g).to(device)
    keep = (torch.rand(n, M, generator=g) < 0.5).to(device)
    want = reference.segment_inputs(image, baseline, segments, keep)
    for k in (keep, keep.to(torch.uint8)):
        out = _nan((n, 3, H, W), device)
        got = kernels.segment_inputs(image, baseline, segments, k, backend="fused", out=out)
        assert got is out
        assert not torch.isnan(got).any(), "an output element was not written"
        assert torch.equal(got.cpu(), want.cpu())  # a selection: bit-exact
    # the twin itself: each element is the image's where its segment is kept, else the baseline's
    kept = keep[:, segments]
    assert torch.equal(want, torch.where(kept[:, None], image[None], baseline[None]))


@pytest.mark.parametrize("call, match", [
    (lambda: kernels.segment_inputs(torch.zeros(3, 4, 4), torch.zeros(3, 4, 5), torch.zeros(4, 4, dtype=torch.long),
                                    torch.ones(2, 1, dtype=torch.bool)), "argument 'baseline' must have size 4"),
    (lambda: kernels.segment_inputs(torch.zeros(3, 4, 4), torch.zeros(3, 4, 4), torch.zeros(4, 4),
                                    torch.ones(2, 1, dtype=torch.bool)), "argument 'segments' must be an int64"),
    (lambda: kernels.segment_inputs(torch.zeros(3, 4, 4), torch.zeros(3, 4, 4), torch.full((4, 4), 2),
                                    torch.ones(2, 2, dtype=torch.bool)), r"must hold ids in \[0, 2\)"),
    (lambda: kernels.segment_inputs(torch.zeros(3, 4, 4), torch.zeros(3, 4, 4), torch.zeros(4, 4, dtype=torch.long),
                                    torch.ones(2, 1)), "argument 'keep' must be a bool or uint8"),

    (lambda: kernels.region_scores(torch.zeros(2, 3, 4, 4), torch.zeros(2, 4, 5), [0, 1]), "argument 'masks' must have size 4"),
    (lambda: kernels.region_scores(torch.zeros(2, 3, 4, 4), torch.zeros(2, 4, 4), [0, 3]), "argument 'classes' must hold K=2 ids in"),
    (lambda: kernels.region_scores(torch.zeros(2, 3, 4, 4), torch.zeros(1, 4, 4), [0], "iou"), "argument 'score' must be one of"),
    (lambda: kernels.region_scores(torch.zeros(2, 3, 4, 4), torch.zeros(1, 4, 4), [0], "dice"), "argument 'reference_labels' must be an int64"),
    (lambda: kernels.scorecam_inputs(torch.zeros(4, 5, 5), torch.zeros(2, 3, 3)), "argument 'image' must have size 3"),
    (lambda: kernels.rise_inputs(torch.zeros(3, 8, 8), torch.zeros(2, 3, 4), torch.zeros(2, 2, dtype=torch.long)), "argument 'grids' must be"),
    (lambda: kernels.rise_inputs(torch.zeros(3, 8, 8), torch.zeros(2, 3, 3), torch.zeros(2, 2)), "argument 'shifts' must be an int64"),
    (lambda: kernels.rise_inputs(torch.zeros(3, 8, 8), torch.zeros(2, 3, 3), torch.full((2, 2), 5)), r"argument 'shifts' must lie in \[0, 3\)"),
    (lambda: kernels.rise_accumulate(torch.zeros(3, 2), torch.zeros(2, 3, 3), torch.zeros(2, 2, dtype=torch.long), (8, 8)), "argument 'scores' must have size 2"),
    (lambda: kernels.region_scores(torch.zeros(2, 3, 4, 4), torch.zeros(1, 4, 4), [0], out=torch.zeros(2, 2)), "argument 'out' must be"),
])
def test_bad_arguments(call, match):
    with pytest.raises((ValueError, TypeError), match=match):
        call()


def test_fused_backend_refuses_half_precision():
    with pytest.raises(TypeError, match="backend='fused'"):
        kernels.rise_accumulate(torch.zeros(2, 1, dtype=torch.float16), torch.zeros(2, 3, 3, dtype=torch.float16),
                                torch.zeros(2, 2, dtype=torch.long), (8, 8), backend="fused")
