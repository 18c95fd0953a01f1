"""The attribution family's fused kernels against their twins in kernels.reference:
attribution_accumulate (the weighted sums of input gradients over path steps and noise samples)
and attribution_maps (channel sum + ReLU + per-map min-max), on random awkward shapes. The
accumulation works in place: its targets start from random values with NaN in the rows no class
writes (an element written where it must not be, or a row forgotten, fails); the maps are written
into NaN-poisoned outputs (an element the kernel forgets fails)."""
from __future__ import annotations

import pytest
import torch

from seg_xai_fast import kernels
from seg_xai_fast.kernels import reference

CUDA_OK = torch.cuda.is_available()
DEVICES = [
    pytest.param("cpu", id="cpu"),
    pytest.param("cuda", id="cuda", marks=[pytest.mark.cuda, pytest.mark.skipif(not CUDA_OK, reason="needs a CUDA GPU")]),
]
# Sums of G products (and their squares) in another order than the twin's: a few ulp of the sums'
# magnitude (values ~1, G ≤ 40).
ATOL = 1e-5
ACC_SHAPES = [  # (n, G, R, K)
    (1, 1, 1, 1), (3, 5, 1031, 4), (2, 40, 4097, 21), (5, 1, 7, 5), (1, 3, 2048, 3),
]
MAP_SHAPES = [  # (B, K, C, N)
    (1, 1, 1, 1), (2, 3, 3, 4097), (1, 21, 1, 33), (3, 2, 5, 1000),
]


def _gen(seed):
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("flags", [(m, a, s) for m in (False, True) for a in (False, True) for s in (False, True)],
                         ids=lambda f: "mult%d-abs%d-sq%d" % f)
@pytest.mark.parametrize("shape", ACC_SHAPES)
def test_attribution_accumulate(device, flags, shape):
    use_mult, use_abs, use_sq = flags
    n, G, R, K = shape
    g = _gen(sum(shape) + 7 * sum(flags))
    grads = torch.randn(n, G, R, generator=g).to(device)
    weights = torch.rand(G, generator=g).to(device)
    mult = torch.randn(G, R, generator=g).to(device) if use_mult else None
    rows = torch.randperm(K, generator=g)[:n].to(device)
    total = torch.randn(K, R, generator=g)
    untouched = torch.ones(K, dtype=torch.bool)
    untouched[rows.cpu()] = False
    total[untouched] = float("nan")  # rows no class adds to must stay as they were
    total_sq = torch.randn(K, R, generator=g) if use_sq else None
    want = reference.attribution_accumulate(grads.cpu(), weights.cpu(), None if mult is None else mult.cpu(),
                                            rows.cpu(), total.clone(), None if total_sq is None else total_sq.clone(),
                                            use_abs)
    want_sq = None
    if use_sq:
        want_sq = total_sq.clone()
        reference.attribution_accumulate(grads.cpu(), weights.cpu(), None if mult is None else mult.cpu(),
                                         rows.cpu(), total.clone(), want_sq, use_abs)
    got_total = total.to(device)
    got_sq = None if total_sq is None else total_sq.to(device)
    out = kernels.attribution_accumulate(grads, weights, mult, rows, got_total, got_sq, abs=use_abs, backend="fused")
    assert out is got_total
    torch.testing.assert_close(got_total.cpu(), want, rtol=1e-5, atol=ATOL, equal_nan=True)
    assert torch.isnan(got_total.cpu()[untouched]).all()
    if use_sq:
        torch.testing.assert_close(got_sq.cpu(), want_sq, rtol=1e-5, atol=ATOL)


def test_attribution_accumulate_matches_the_formula():
    """The twin itself against the definition, written out with loops."""
    g = _gen(3)
    grads, weights, mult = torch.randn(2, 3, 5, generator=g), torch.rand(3, generator=g), torch.randn(3, 5, generator=g)
    rows = torch.tensor([2, 0])
    total, total_sq = torch.zeros(3, 5), torch.zeros(3, 5)
    reference.attribution_accumulate(grads, weights, mult, rows, total, total_sq, abs=True)
    for i, row in enumerate(rows.tolist()):
        terms = [abs(weights[j] * mult[j] * grads[i, j]) for j in range(3)]
        torch.testing.assert_close(total[row], sum(terms))
        torch.testing.assert_close(total_sq[row], sum(t * t for t in terms))
    assert (total[1] == 0).all()


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("normalize", [True, False])
@pytest.mark.parametrize("shape", MAP_SHAPES)
def test_attribution_maps(device, normalize, shape):
    B, K, C, N = shape
    g = _gen(sum(shape))
    attr = torch.randn(B, K, C, N, generator=g).to(device)
    if K > 1:
        attr[0, -1] = 0.25  # a constant map: zeros after the min-max, never NaN
    out = torch.full((B, K, N), float("nan"), device=device)
    got = kernels.attribution_maps(attr, normalize=normalize, backend="fused", out=out)
    assert got is out
    assert not torch.isnan(got).any(), "an output element was not written"
    want = reference.attribution_maps(attr.cpu(), normalize)
    torch.testing.assert_close(got.cpu(), want, rtol=1e-5, atol=ATOL)


def test_attribution_maps_spatial_shapes():
    """[B,K,C,*spatial] of any rank: 2-D maps and 3-D volumes, normalised over the whole map."""
    attr = torch.randn(2, 3, 2, 4, 5, 6, generator=_gen(1))
    got = kernels.attribution_maps(attr, backend="fused")
    assert got.shape == (2, 3, 4, 5, 6)
    flat = reference.attribution_maps(attr.reshape(2, 3, 2, -1)).view(2, 3, 4, 5, 6)
    torch.testing.assert_close(got, flat, rtol=1e-5, atol=ATOL)
    assert float(got[0, 0].max()) == pytest.approx(1.0, abs=1e-6)  # one min-max over the volume


def test_bad_arguments():
    grads, weights, rows, total = torch.zeros(2, 3, 4), torch.ones(3), torch.tensor([0, 1]), torch.zeros(2, 4)
    with pytest.raises(ValueError, match="'weights'"):
        kernels.attribution_accumulate(grads, torch.ones(2), None, rows, total)
    with pytest.raises(ValueError, match="'rows' must hold 2 distinct"):
        kernels.attribution_accumulate(grads, weights, None, torch.tensor([1, 1]), total)
    with pytest.raises(ValueError, match="'rows' must hold"):
        kernels.attribution_accumulate(grads, weights, None, torch.tensor([0, 2]), total)
    with pytest.raises(TypeError, match="'grads'"):
        kernels.attribution_accumulate(grads.double(), weights, None, rows, total)
    with pytest.raises(ValueError, match="'mult'"):
        kernels.attribution_accumulate(grads, weights, torch.ones(3, 5), rows, total)
    with pytest.raises(ValueError, match="'attributions'"):
        kernels.attribution_maps(torch.zeros(2, 3, 4))
