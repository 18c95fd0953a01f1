"""Every fused kernel against its pure-PyTorch twin in seg_xai_fast.kernels.reference.

Each fused call writes into an output pre-filled with NaN (uint8: a sentinel), so an element the
kernel forgets to write fails the comparison. Inputs are fresh random tensors on awkward shapes.
Tolerances are rtol=1e-5 plus a stated atol; the reasons sit next to each constant.
"""
from __future__ import annotations

import pytest
import torch

from seg_xai_fast import kernels, reference

CUDA_OK = torch.cuda.is_available()
DEVICES = [
    pytest.param("cpu", id="cpu"),
    pytest.param(
        "cuda",
        id="cuda",
        marks=[pytest.mark.cuda, pytest.mark.skipif(not CUDA_OK, reason="needs a CUDA GPU")],
    ),
]
RTOL = 1e-5
# Same float32 operations in the same order as the reference (relu, min, subtract, divide).
ATOL_NORMALIZE = 1e-6
# Bilinear weights/products rounded in a different order (or fused) vs ATen: a few ulp of the
# map's range, which min-max then scales to [0, 1].
ATOL_RESIZE = 1e-5
# float32 sums over h·w (weights) or C (maps) in a different order than torch's reductions/bmm;
# the error is ~n·eps relative to the largest value, quoted against maps normalised to [0, 1].
ATOL_SUM = 2e-5
# uint8 blend: rounding at .5 may land on the other side of the reference's float rounding.
ATOL_UINT8 = 1

CAM_SHAPES = [  # (B, K, C, h, w)
    (1, 1, 1, 1, 1),
    (1, 1, 3, 7, 13),
    (2, 3, 5, 7, 13),
    (1, 2, 4, 1, 9),
    (2, 4, 17, 16, 16),
    (1, 21, 64, 32, 32),  # large: 21 classes as a VOC DeepLab
]
SIZES = [None, "same", (50, 37), (3, 5), (1, 1)]  # output_size: none, identity, up, down, 1×1


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def nan_like(shape, dtype=torch.float32, device="cpu") -> torch.Tensor:
    return torch.full(shape, float("nan"), dtype=dtype, device=device)


def close(actual: torch.Tensor, expected: torch.Tensor, atol: float) -> None:
    assert actual.shape == expected.shape and actual.dtype == expected.dtype
    assert not torch.isnan(actual).any(), "an output element was not written"
    torch.testing.assert_close(actual.cpu(), expected.cpu(), rtol=RTOL, atol=atol)


def cam_inputs(shape, device, dtype=torch.float32, seed=0):
    """activations [B,C,h,w] ≥ 0 (post-ReLU, as real target layers), gradients [B,K,C,h,w]."""
    B, K, C, h, w = shape
    g = _gen(seed)
    A = torch.rand(B, C, h, w, generator=g).to(device, dtype)
    G = torch.randn(B, K, C, h, w, generator=g).to(device, dtype)
    return A, G


# --------------------------------------------------------------------------- normalize / resize


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("shape", [(1, 1), (7, 13), (3, 7, 13), (2, 3, 1, 9), (2, 21, 64, 64)])
def test_normalize_maps(device, shape):
    maps = torch.randn(*shape, generator=_gen(1)).to(device)
    out = kernels.normalize_maps(maps, backend="fused", out=nan_like(shape, device=device))
    close(out, reference.normalize_maps(maps), ATOL_NORMALIZE)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("shape", [(1, 1, 1, 1), (1, 1, 7, 13), (2, 3, 7, 13), (1, 21, 32, 32)])
@pytest.mark.parametrize("size", [(1, 1), (7, 13), (50, 37), (3, 5), (256, 256)])
@pytest.mark.parametrize("out_dtype", [torch.float32, torch.float16])
def test_resize_normalize(device, shape, size, out_dtype):
    if shape[-2:] == (1, 1) and size != (1, 1):
        pytest.skip("ill-conditioned: see test_resize_normalize_single_pixel")
    maps = torch.randn(*shape, generator=_gen(2)).to(device)
    out = nan_like((*shape[:2], *size), out_dtype, device)
    out = kernels.resize_normalize(maps, size, out_dtype=out_dtype, backend="fused", out=out)
    expected = reference.normalize_maps(reference.resize_bilinear(maps, size))
    if out_dtype == torch.float16:  # one float16 rounding of the same float32 value
        close(out.float(), expected.half().float(), 1e-3)
    else:
        close(out, expected, ATOL_RESIZE)


@pytest.mark.parametrize("device", DEVICES)
def test_resize_normalize_single_pixel(device):
    # Upsampling a 1×1 map is constant in exact arithmetic, but v·λ0 + v·λ1 rounds to v ± 1 ulp,
    # and min-max stretches those ulps to [0, 1]; the reference and the kernels round in different
    # orders, so only the contract (finite, in [0, 1]) is comparable.
    out = kernels.resize_normalize(torch.full((2, 3, 1, 1), 0.7, device=device), (9, 11), backend="fused")
    assert torch.isfinite(out).all() and out.min() >= 0 and out.max() <= 1


@pytest.mark.parametrize("device", DEVICES)
def test_constant_maps_are_zero_not_nan(device):
    maps = torch.full((2, 3, 5, 4), 0.25, device=device)
    assert kernels.normalize_maps(maps, backend="fused").eq(0).all()
    assert kernels.resize_normalize(maps, (9, 11), backend="fused").eq(0).all()
    A = torch.ones(1, 3, 5, 4, device=device)
    G = torch.ones(1, 2, 3, 5, 4, device=device)
    for method in reference.WEIGHTED_METHODS + reference.ELEMENTWISE_METHODS:
        out = kernels.cam_from_gradients(A, G, method, (8, 8), backend="fused")
        assert out.eq(0).all(), method


@pytest.mark.parametrize("device", DEVICES)
def test_non_contiguous_inputs_are_copied(device):
    maps = torch.randn(2, 3, 13, 7, generator=_gen(3)).to(device).transpose(-1, -2)
    assert not maps.is_contiguous()
    close(kernels.normalize_maps(maps, backend="fused"), reference.normalize_maps(maps), ATOL_NORMALIZE)
    close(kernels.resize_normalize(maps, (20, 9), backend="fused"),
          reference.normalize_maps(reference.resize_bilinear(maps, (20, 9))), ATOL_RESIZE)
    A, G = cam_inputs((1, 2, 4, 6, 5), device)
    close(kernels.cam_from_gradients(A.transpose(-1, -2), G.transpose(-1, -2), "gradcam++", backend="fused"),
          reference.cam_from_gradients(A.transpose(-1, -2), G.transpose(-1, -2), "gradcam++"), ATOL_SUM)


# --------------------------------------------------------------------------- CAM stage


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("shape", CAM_SHAPES)
@pytest.mark.parametrize("method", reference.WEIGHTED_METHODS)
def test_channel_weights(device, shape, method):
    A, G = cam_inputs(shape, device, seed=4)
    out = kernels.channel_weights(A, G, method, backend="fused", out=nan_like(shape[:3], device=device))
    expected = reference.channel_weights(A, G, method)
    close(out, expected, ATOL_SUM * float(expected.abs().max()))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("shape", CAM_SHAPES)
def test_weighted_cam(device, shape):
    B, K, C, h, w = shape
    A, _ = cam_inputs(shape, device, seed=5)
    weights = torch.randn(B, K, C, generator=_gen(6)).to(device)
    out = kernels.weighted_cam(A, weights, backend="fused", out=nan_like((B, K, h, w), device=device))
    close(out, reference.normalize_maps(reference.weighted_combine(A, weights)), ATOL_SUM)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("shape", CAM_SHAPES)
@pytest.mark.parametrize("method", reference.ELEMENTWISE_METHODS)
def test_elementwise_cam(device, shape, method):
    B, K, C, h, w = shape
    A, G = cam_inputs(shape, device, seed=7)
    out = kernels.elementwise_cam(A, G, method, backend="fused", out=nan_like((B, K, h, w), device=device))
    close(out, reference.normalize_maps(reference.elementwise_cam(A, G, method)), ATOL_SUM)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("shape", CAM_SHAPES)
@pytest.mark.parametrize("method", reference.WEIGHTED_METHODS + reference.ELEMENTWISE_METHODS)
@pytest.mark.parametrize("size", SIZES)
def test_cam_from_gradients(device, shape, method, size):
    B, K, C, h, w = shape
    size = (h, w) if size == "same" else size
    A, G = cam_inputs(shape, device, seed=8)
    H, W = (h, w) if size is None else size
    out = kernels.cam_from_gradients(A, G, method, size, backend="fused",
                                     out=nan_like((B, K, H, W), device=device))
    close(out, reference.cam_from_gradients(A, G, method, size), ATOL_SUM)


@pytest.mark.parametrize("device", DEVICES)
def test_cam_from_gradients_float16_output(device):
    A, G = cam_inputs((2, 3, 8, 7, 13), device, seed=9)
    out = kernels.cam_from_gradients(A, G, "gradcam", (30, 20), backend="fused", out_dtype=torch.float16)
    assert out.dtype == torch.float16
    close(out.float(), reference.cam_from_gradients(A, G, "gradcam", (30, 20)).half().float(), 1e-3)


@pytest.mark.cuda
@pytest.mark.skipif(not CUDA_OK, reason="needs a CUDA GPU")
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("method", reference.WEIGHTED_METHODS + reference.ELEMENTWISE_METHODS)
def test_cam_from_gradients_low_precision_inputs_cuda(dtype, method):
    # The reference upcasts the same low-precision inputs to float32, as the kernels do on load;
    # only the float32 accumulation order differs.
    A, G = cam_inputs((2, 5, 64, 16, 16), "cuda", dtype, seed=10)
    out = kernels.cam_from_gradients(A, G, method, (64, 64), backend="fused")
    close(out, reference.cam_from_gradients(A, G, method, (64, 64)), ATOL_SUM)


def test_auto_uses_reference_for_float16_on_cpu():
    A, G = cam_inputs((1, 2, 3, 4, 5), "cpu", torch.float16)
    out = kernels.cam_from_gradients(A, G, "gradcam", backend="auto")
    close(out, reference.cam_from_gradients(A, G, "gradcam"), 0)


def test_respects_torch_thread_setting():
    A, G = cam_inputs((2, 4, 16, 9, 9), "cpu", seed=11)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = kernels.cam_from_gradients(A, G, "xgradcam", (20, 20), backend="fused")
    finally:
        torch.set_num_threads(threads)
    close(one, kernels.cam_from_gradients(A, G, "xgradcam", (20, 20), backend="fused"), 0)


# --------------------------------------------------------------------------- overlay


def _overlay_close(actual: torch.Tensor, expected: torch.Tensor, maps: torch.Tensor) -> None:
    """uint8 within 1, except where the reference's colour index 255·m sits within float32
    rounding of an integer (then a different LUT entry is legitimately picked)."""
    diff = (actual.int() - expected.int()).abs().amax(dim=-1)  # [B,H,W]
    v = maps.float().clamp(0, 1) * 255
    on_edge = (v - v.round()).abs() < 1e-4
    assert bool(((diff <= ATOL_UINT8) | on_edge).all()), f"max diff {int(diff.max())}"


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("hw", [(1, 1), (7, 13), (32, 32), (64, 48)])
@pytest.mark.parametrize("HW", [(7, 13), (64, 48), (97, 131)])
@pytest.mark.parametrize("colormap", ["jet", "viridis"])
def test_overlay(device, hw, HW, colormap):
    g = _gen(12)
    images = torch.randint(0, 256, (2, *HW, 3), dtype=torch.uint8, generator=g).to(device)
    maps = torch.rand(2, *hw, generator=g).to(device) * 1.2 - 0.1  # some outside [0, 1]
    out = torch.full((2, *HW, 3), 77, dtype=torch.uint8, device=device)
    out = kernels.overlay(images, maps, colormap, alpha=0.4, backend="fused", out=out)
    expected = reference.overlay(images, maps, colormap, alpha=0.4)
    resized = maps if hw == HW else reference.resize_bilinear(maps.unsqueeze(1), HW).squeeze(1)
    _overlay_close(out.cpu(), expected.cpu(), resized.cpu())


# --------------------------------------------------------------------------- target seeds

SEED_CASES = [  # (B, L, H, W, h, w)
    (1, 1, 1, 1, 1, 1),
    (1, 3, 8, 8, 1, 1),
    (2, 5, 7, 13, 7, 13),
    (2, 21, 64, 64, 8, 8),
    (1, 4, 50, 37, 7, 5),
    (1, 6, 9, 11, 13, 17),  # "upsample" smaller than the low resolution
]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("case", SEED_CASES)
@pytest.mark.parametrize("align_corners", [False, True])
def test_seeds_of_the_predicted_classes(device, case, align_corners):
    """class_argmax then label_seeds: the Seg-Grad-CAM default targets, the K masks never formed."""
    B, L, H, W, h, w = case
    logits = torch.randn(B, L, H, W, generator=_gen(13)).to(device)
    logits[:, :, :2, :2] = 0.5  # ties: the lowest class must win
    classes = sorted({0, L - 1, L // 2}) + [L - 1]  # with a duplicate
    if H * W > 4:
        logits[0, L // 2, -1, -1] = float("nan")  # a NaN logit wins its pixel, as in torch.argmax
    labels = torch.full((B, H, W), -7, dtype=torch.int64, device=device)  # poisoned: every element is written
    kernels.class_argmax(logits, backend="fused", out=labels)
    out = kernels.label_seeds(labels, classes, (h, w), align_corners, backend="fused",
                              out=nan_like((B, len(classes), h, w), device=device))
    masks = reference.predicted_masks(logits, classes)
    expected = reference.upsample_adjoint(masks, (h, w), align_corners)
    close(out, expected, ATOL_SUM * max(1.0, float(expected.abs().max())))
    assert torch.equal(labels, logits.argmax(dim=1))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("case", SEED_CASES)
def test_class_argmax(device, case):
    B, L, H, W, _, _ = case
    logits = torch.randn(B, L, H, W, generator=_gen(15)).to(device)
    logits[:, :, :2, :2] = 0.5  # ties: the lowest class must win
    if L > 2 and H * W > 4:
        logits[0, 1, -1, -1] = logits[0, L - 1, -1, -1] = float("nan")  # the first NaN wins
    labels = torch.full((B, H, W), -7, dtype=torch.int64, device=device)  # poisoned
    got = kernels.class_argmax(logits, backend="fused", out=labels)
    assert got is labels and torch.equal(labels, logits.argmax(dim=1))
    strided = logits.transpose(2, 3)  # non-contiguous: copied
    assert torch.equal(kernels.class_argmax(strided, backend="fused"), strided.argmax(dim=1))
    assert torch.equal(kernels.class_argmax(logits, backend="torch"), logits.argmax(dim=1))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("case", SEED_CASES + [(3, 2, 97, 131, 1, 1)])  # + more rows than any thread count
def test_class_argmax_counts_each_images_labels_in_the_same_pass(device, case):
    B, L, H, W, _, _ = case
    logits = torch.randn(B, L, H, W, generator=_gen(17)).to(device)
    logits[:, :, :2, :2] = 0.5  # ties: the lowest class
    if L > 2 and H * W > 4:
        logits[-1, 1, -1, -1] = float("nan")  # a NaN wins its pixel and is counted there
    labels = torch.full((B, H, W), -7, dtype=torch.int64, device=device)  # poisoned
    counts = torch.full((B, L), -7, dtype=torch.int64, device=device)  # poisoned: overwritten, not added to
    got, counted = kernels.class_argmax_counts(logits, backend="fused", out=labels, counts=counts)
    assert got is labels and counted is counts and torch.equal(labels, logits.argmax(dim=1))
    expected = reference.label_counts(logits.argmax(dim=1), L)
    assert torch.equal(counts, expected) and int(counts.sum()) == B * H * W
    again = kernels.class_argmax_counts(logits, backend="fused", out=labels, counts=counts)[1]
    assert torch.equal(again, expected)  # a second call into the same tensor: not accumulated
    plain = kernels.class_argmax_counts(logits, backend="torch")
    assert torch.equal(plain[0], logits.argmax(dim=1)) and torch.equal(plain[1], expected)


@pytest.mark.parametrize("device", DEVICES)
def test_label_seeds_for_given_labels(device):
    labels = torch.randint(0, 4, (2, 13, 11), generator=_gen(16)).to(device)
    classes = [3, 0, 7]  # 7: no pixel has it
    out = kernels.label_seeds(labels, classes, (5, 4), backend="fused", out=nan_like((2, 3, 5, 4), device=device))
    expected = reference.upsample_adjoint(reference.label_masks(labels, classes), (5, 4), False)
    close(out, expected, ATOL_SUM * max(1.0, float(expected.abs().max())))
    assert not out[:, 2].any()
    with pytest.raises(ValueError, match=r"argument 'labels' must be an int64 Tensor \[B,H,W\], got torch.float32"):
        kernels.label_seeds(labels.float(), classes, (5, 4))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("case", SEED_CASES)
@pytest.mark.parametrize("align_corners", [False, True])
def test_mask_seeds(device, case, align_corners):
    B, L, H, W, h, w = case
    masks = torch.rand(B, 3, H, W, generator=_gen(14)).to(device)
    masks[masks < 0.5] = 0  # sparse soft masks
    masks[:, :, ::3] = 0  # and all-zero rows (skipped by the kernel), as boxes have
    out = kernels.mask_seeds(masks, (h, w), align_corners, backend="fused",
                             out=nan_like((B, 3, h, w), device=device))
    expected = reference.upsample_adjoint(masks, (h, w), align_corners)
    close(out, expected, ATOL_SUM * max(1.0, float(expected.abs().max())))


# --------------------------------------------------------------------------- errors


def test_error_messages_name_argument_expectation_and_value():
    A, G = cam_inputs((1, 2, 8, 4, 4), "cpu")
    with pytest.raises(ValueError, match=r"argument 'gradients' must have size 8 \(C, as activations\)"):
        kernels.cam_from_gradients(A, G[:, :, :5], "gradcam")
    with pytest.raises(ValueError, match=r"argument 'activations' must have 4 dimensions, got 3"):
        kernels.cam_from_gradients(A[0], G, "gradcam")
    with pytest.raises(ValueError, match=r"argument 'method' must be one of .*got 'scorecam'"):
        kernels.cam_from_gradients(A, G, "scorecam")
    with pytest.raises(ValueError, match=r"argument 'backend' must be one of .*got 'cuda'"):
        kernels.normalize_maps(A, backend="cuda")
    with pytest.raises(TypeError, match=r"argument 'gradients' must have dtype in .*got torch.int64"):
        kernels.cam_from_gradients(A, G.long(), "gradcam")
    with pytest.raises(TypeError, match=r"backend='fused' does not support .*float16"):
        kernels.cam_from_gradients(A.half(), G.half(), "gradcam", backend="fused")
    with pytest.raises(ValueError, match=r"argument 'out' must be torch.float32 of shape \[1, 2, 4, 4\]"):
        kernels.cam_from_gradients(A, G, "gradcam", out=torch.empty(1, 2, 4, 5))
    with pytest.raises(ValueError, match=r"argument 'output_size' must be a pair"):
        kernels.cam_from_gradients(A, G, "gradcam", output_size=7)
    with pytest.raises(ValueError, match=r"colormap must be one of"):
        kernels.overlay(torch.zeros(1, 4, 4, 3, dtype=torch.uint8), torch.rand(1, 4, 4), "rainbow")
    with pytest.raises(ValueError, match=r"argument 'maps' must not be empty"):
        kernels.normalize_maps(torch.empty(0, 4, 4))


def test_core_error_messages():
    core = pytest.importorskip("seg_xai_fast.kernels.backend").core

    def view(t):
        return core.TensorView(t.data_ptr(), str(t.dtype)[6:], list(t.shape), list(t.stride()), "cpu", 0)

    maps, ws = torch.zeros(2, 4, 4, dtype=torch.float16), torch.zeros(2, 2, dtype=torch.int32)
    out = torch.zeros(2, 4, 4)
    with pytest.raises(ValueError, match=r"^normalize_maps: argument 'maps' must be float32, got float16$"):
        core.normalize_maps(view(maps), view(out), view(ws), 1e-7, 1, 0)
    with pytest.raises(ValueError, match=r"normalize_maps: argument 'out' must have size 2 \(as maps\)"):
        core.normalize_maps(view(out), view(torch.zeros(3, 4, 4)), view(ws), 1e-7, 1, 0)
    with pytest.raises(ValueError, match=r"normalize_maps: argument 'maps' must be contiguous"):
        core.normalize_maps(view(out.transpose(1, 2)), view(out), view(ws), 1e-7, 1, 0)
    cuda_view = core.TensorView(out.data_ptr(), "float32", [2, 4, 4], [16, 4, 1], "cuda", 0)
    with pytest.raises(ValueError, match=r"argument 'out' is on cpu but argument 'maps' is on cuda:0"):
        core.normalize_maps(cuda_view, view(out), view(ws), 1e-7, 1, 0)
    with pytest.raises(ValueError, match=r"argument 'method' must be one of .*got 'eigencam'"):
        core.channel_weights(view(out), view(out), "eigencam", view(out), view(out), 1, 0)


# --------------------------------------------------------------------------- kernel-specific sizes


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("shape", [  # (B, K, C, h, w): every class-tile remainder, position tails
    (1, 21, 2048, 32, 32),  # DeepLabV3-ResNet50 layer4 at 256²
    (1, 21, 960, 32, 32),  # MobileNetV3-large last stage at 512²
    (1, 21, 256, 16, 16),
    (3, 5, 130, 7, 11),  # C not a multiple of the 64-channel chunk, n = 77
    (2, 6, 65, 1, 1),
    (1, 9, 3, 13, 17),
    (2, 13, 64, 12, 20),  # n = 240: full tiles, single vectors and a tail
])
def test_weighted_cam_kernel_sizes(device, shape):
    B, K, C, h, w = shape
    A, _ = cam_inputs((B, 1, C, h, w), device, seed=15)
    weights = torch.randn(B, K, C, generator=_gen(16)).to(device)
    out = kernels.weighted_cam(A, weights, backend="fused", out=nan_like((B, K, h, w), device=device))
    close(out, reference.normalize_maps(reference.weighted_combine(A, weights)), ATOL_SUM)


def _analytic_inputs(shape, device, seed):
    """activations ≥ 0, head weights and seeds of both signs with exact zeros in each."""
    B, K, C, h, w = shape
    g = _gen(seed)
    A = torch.rand(B, C, h, w, generator=g)
    W = torch.randn(K, C, generator=g)
    W[torch.rand(K, C, generator=g) < 0.1] = 0
    R = torch.randn(B, K, h, w, generator=g)
    R[torch.rand(B, K, h, w, generator=g) < 0.3] = 0  # sparse, as seeds of class masks
    return A.to(device), W.to(device), R.to(device)


ANALYTIC_SHAPES = CAM_SHAPES + [
    (2, 1, 1, 1, 1),
    (1, 1, 1, 9, 1),
    (3, 2, 31, 5, 3),
    (1, 21, 512, 32, 32),  # large: the reference forms an 11M-element G
]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("shape", ANALYTIC_SHAPES)
@pytest.mark.parametrize("given", ["activations", "channel_sums"])
@pytest.mark.parametrize("backend", ["fused", "torch"])
def test_analytic_gradcampp_weights(device, shape, given, backend):
    B, K, C, h, w = shape
    A, W, R = _analytic_inputs(shape, device, seed=17)
    x = A if given == "activations" else A.sum(dim=(2, 3))
    out = kernels.analytic_gradcampp_weights(x, W, R, backend=backend,
                                             out=nan_like((B, K, C), device=device))
    expected = reference.channel_weights(A, reference.analytic_gradients(W, R), "gradcam++")
    # Sums over h·w (and S over h·w) in another order than torch's; the terms are the reference's
    # float32 operations, so the error is that of the sums: ATOL_SUM of the largest weight.
    close(out, expected, ATOL_SUM * max(1e-30, float(expected.abs().max())))


@pytest.mark.parametrize("device", DEVICES)
def test_analytic_gradcampp_weights_nan_and_non_negative_seeds(device):
    A, W, R = _analytic_inputs((2, 3, 8, 5, 6), device, seed=18)
    R = R.abs()  # real seeds: rows with W_kc < 0 have no term g > 0
    expected = reference.channel_weights(A, reference.analytic_gradients(W, R), "gradcam++")
    out = kernels.analytic_gradcampp_weights(A, W, R, backend="fused")
    close(out, expected, ATOL_SUM * float(expected.abs().max()))
    assert out[:, W < 0].eq(0).all()
    R[1, 2, 3, 4] = float("nan")
    W[0, 5] = float("nan")
    out = kernels.analytic_gradcampp_weights(A, W, R, backend="fused")
    expected = reference.channel_weights(A, reference.analytic_gradients(W, R), "gradcam++")
    assert torch.equal(out.isnan(), expected.isnan())
    torch.testing.assert_close(out[~out.isnan()].cpu(), expected[~expected.isnan()].cpu(), rtol=RTOL,
                               atol=ATOL_SUM * float(expected.nan_to_num().abs().max()))


def test_analytic_gradcampp_weights_errors():
    A, W, R = _analytic_inputs((1, 2, 4, 3, 3), "cpu", seed=19)
    with pytest.raises(ValueError, match=r"argument 'channel_sums_or_activations' must be float \[B,C\]"):
        kernels.analytic_gradcampp_weights(A[0], W, R)
    with pytest.raises(ValueError, match=r"argument 'weight' must have size 2 \(K, as seeds\)"):
        kernels.analytic_gradcampp_weights(A, W[:1], R)
    with pytest.raises(ValueError, match=r"argument 'channel_sums_or_activations' must have size 4 \(C, as weight\)"):
        kernels.analytic_gradcampp_weights(A.sum(dim=(2, 3))[:, :3], W, R)
    with pytest.raises(ValueError, match=r"must have size 3 \(w, as seeds\)"):
        kernels.analytic_gradcampp_weights(A[..., :2], W, R)
    core = pytest.importorskip("seg_xai_fast.kernels.backend").core

    def view(t):
        return core.TensorView(t.data_ptr(), str(t.dtype)[6:], list(t.shape), list(t.stride()), "cpu", 0)

    out, sums = torch.empty(1, 2, 4), torch.empty(1, 4)
    with pytest.raises(ValueError, match=r"^analytic_gradcampp_weights: argument 'seeds' must be float32, got float16$"):
        core.analytic_gradcampp_weights(view(A), view(W), view(R.half()), view(out), view(sums), 1, 0)
    with pytest.raises(ValueError, match=r"argument 'activations_or_sums' must have 4 dimensions .* or 2"):
        core.analytic_gradcampp_weights(view(A[0]), view(W), view(R), view(out), view(sums), 1, 0)


@pytest.mark.parametrize("frames", [(8, (240, 320), (30, 40)), (8, (240, 320), (240, 320)), (3, (45, 77), (9, 13))])
def test_overlay_cpu_is_exact(frames):
    # The CPU blend performs the reference's float32 operations in its order: equal bytes, except
    # where the colour index 255·m is within rounding of an integer (resize rounding differs).
    B, HW, hw = frames
    g = _gen(20)
    images = torch.randint(0, 256, (B, *HW, 3), dtype=torch.uint8, generator=g)
    maps = torch.rand(B, *hw, generator=g)
    out = kernels.overlay(images, maps, "jet", alpha=0.35, backend="fused",
                          out=torch.full((B, *HW, 3), 77, dtype=torch.uint8))
    expected = reference.overlay(images, maps, "jet", alpha=0.35)
    resized = maps if hw == HW else reference.resize_bilinear(maps.unsqueeze(1), HW).squeeze(1)
    v = resized.clamp(0, 1) * 255
    differ = (out != expected).any(dim=-1)
    assert not (differ & ((v - v.round()).abs() >= 1e-4)).any()


def test_non_contiguous_inputs_stay_alive_during_the_kernel():
    """Regression: the core gets raw pointers, so a .contiguous() copy made for it must outlive
    the call (it used to be freed first: wrong seeds, wrong overlays, or a segfault)."""
    from seg_xai_fast import kernels as K

    g = torch.Generator().manual_seed(0)
    logits = torch.randn(4, 96, 128, 21, generator=g).permute(0, 3, 1, 2)  # channels-last
    maps = torch.rand(4, 3, 12, 16, generator=g)
    frames = torch.randint(0, 256, (4, 96, 128, 3), dtype=torch.uint8, generator=g)
    for _ in range(10):
        seeds = K.label_seeds(K.class_argmax(logits), [3, 5], (12, 16), False)
        torch.testing.assert_close(
            seeds, reference.upsample_adjoint(reference.predicted_masks(logits, [3, 5]), (12, 16)), rtol=1e-5, atol=1e-5)
        masked = K.mask_seeds(reference.predicted_masks(logits, [1]).transpose(2, 3).contiguous().transpose(2, 3), (12, 16))
        torch.testing.assert_close(masked, reference.upsample_adjoint(reference.predicted_masks(logits, [1]), (12, 16)),
                                   rtol=1e-5, atol=1e-5)
        over = K.overlay(frames, maps[:, 1])  # a strided slice
        assert (over.int() - reference.overlay(frames, maps[:, 1]).int()).abs().max() <= 1
