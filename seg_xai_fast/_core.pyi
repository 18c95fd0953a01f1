"""seg_xai_fast compiled core (torch-free; tensors arrive as TensorView).

Typing stub of the pybind11 module built from csrc/bindings.cpp. Every op takes its tensors as
TensorViews of contiguous caller-owned memory (outputs and workspaces included: the core never
allocates), then the op's scalars, then `threads` (CPU threads) and `stream` (a cudaStream_t as an
int, 0 for the default stream). Shapes and dtypes of each argument: csrc/include/seg_xai/ops.h.
Bad arguments raise ValueError naming the op and the argument; CUDA tensors in a build without
CUDA kernels, and CUDA errors, raise RuntimeError. Ops release the GIL while they run.
"""
from typing import Any, Literal, Optional, Sequence

_DType = Literal["float32", "float16", "bfloat16", "uint8", "int32", "int64"]
_Device = Literal["cpu", "cuda"]

class TensorView:
    """A view of caller-owned memory; shape and strides in elements."""

    def __init__(
        self,
        ptr: int,  # data_ptr()
        dtype: _DType,
        shape: Sequence[int],  # at most 8 dimensions
        strides: Sequence[int],  # in elements, as torch.Tensor.stride()
        device: _Device,
        device_index: int,
    ) -> None: ...
    @property
    def shape(self) -> list[int]: ...
    @property
    def dtype(self) -> str: ...

def normalize_maps(
    maps: TensorView,  # float [M,h,w]
    out: TensorView,  # float32|float16 [M,h,w] (may be maps)
    minmax: TensorView,  # int32 [M,2] workspace (CUDA only)
    eps: float,
    threads: int,
    stream: int,
) -> None:
    """ReLU + per-map min-max."""

def resize_normalize(
    maps: TensorView,  # float [M,h,w]
    out: TensorView,  # float32|float16 [M,H,W]
    minmax: TensorView,  # int32 [M,2] workspace (CUDA only)
    eps: float,
    threads: int,
    stream: int,
) -> None:
    """Bilinear resize (align_corners=False) + ReLU + per-map min-max."""

def resize_normalize_3d(
    maps: TensorView,  # float [M,d,h,w]
    out: TensorView,  # float32 [M,D,H,W]
    minmax: TensorView,  # int32 [M,2] workspace (CUDA only)
    eps: float,
    threads: int,
    stream: int,
) -> None:
    """Trilinear resize (align_corners=False) + ReLU + per-volume min-max."""

def channel_weights(
    activations: TensorView,  # float [B,C,h,w]
    gradients: TensorView,  # float [B,K,C,h,w]
    method: Literal["gradcam", "gradcam++", "xgradcam"],
    out: TensorView,  # float32 [B,K,C]
    channel_sums: TensorView,  # float32 [B,C] workspace
    threads: int,
    stream: int,
) -> None:
    """Per-class channel weights of gradcam, gradcam++ or xgradcam."""

def analytic_gradcampp_weights(
    activations_or_sums: TensorView,  # float32 [B,C,h,w] activations or [B,C] channel sums
    weight: TensorView,  # float32 [K,C], the head's rows of the explained classes
    seeds: TensorView,  # float32 [B,K,h,w]
    out: TensorView,  # float32 [B,K,C]
    channel_sums: TensorView,  # float32 [B,C] workspace
    threads: int,
    stream: int,
) -> None:
    """Grad-CAM++ channel weights of a linear head (the gradients never formed)."""

def weighted_cam(
    activations: TensorView,  # float [B,C,h,w]
    weights: TensorView,  # float32 [B,K,C]
    out: TensorView,  # float32 [B,K,h,w]
    minmax: TensorView,  # int32 [B*K,2] workspace (CUDA only)
    eps: float,
    threads: int,
    stream: int,
) -> None:
    """Sum over channels of weights * activations, then ReLU + per-map min-max."""

def elementwise_cam(
    activations: TensorView,  # float [B,C,h,w]
    gradients: TensorView,  # float [B,K,C,h,w]
    method: Literal["hirescam", "layercam", "gradcam_elementwise"],
    out: TensorView,  # float32 [B,K,h,w]
    minmax: TensorView,  # int32 [B*K,2] workspace (CUDA only)
    eps: float,
    threads: int,
    stream: int,
) -> None:
    """HiResCAM, LayerCAM or Grad-CAM element-wise, then ReLU + per-map min-max."""

def pooled_cam(
    activations: TensorView,  # float [B,C,h,w]
    gradients: TensorView,  # float [B,K,C,h,w]
    pool: int,  # window side >= 1
    mean: bool,  # False: max-pooling, True: mean-pooling
    out: TensorView,  # float32 [B,K,h,w]
    minmax: TensorView,  # int32 [B*K,2] workspace (CUDA only)
    eps: float,
    threads: int,
    stream: int,
) -> None:
    """Seg-XRes-CAM: gradients pooled in windows, times activations, then ReLU + min-max."""

def overlay(
    images: TensorView,  # uint8 [B,H,W,3]
    maps: TensorView,  # float [B,h,w]
    lut: TensorView,  # uint8 [256,3]
    alpha: float,
    out: TensorView,  # uint8 [B,H,W,3]
    threads: int,
    stream: int,
) -> None:
    """Colour maps through a LUT and blend them onto images."""

def class_argmax(
    logits: TensorView,  # float [B,L,H,W]
    labels: TensorView,  # int64 [B,H,W]
    counts: Optional[TensorView],  # int64 [B,L]
    threads: int,
    stream: int,
) -> None:
    """Argmax over the class axis (as torch.argmax), and optionally each image's label histogram."""

def seeds_from_labels(
    labels: TensorView,  # int64 [B,H,W]
    classes: TensorView,  # int64 [K]
    align_corners: bool,
    out: TensorView,  # float32 [B,K,h,w]
    threads: int,
    stream: int,
) -> None:
    """Target seeds Up*([labels == classes[k]]) for every class k."""

def seeds_from_masks(
    masks: TensorView,  # float [B,K,H,W]
    align_corners: bool,
    out: TensorView,  # float32 [B,K,h,w]
    threads: int,
    stream: int,
) -> None:
    """Target seeds Up*(masks)."""

def region_scores(
    logits: TensorView,  # float32 [N,L,h,w]
    masks: TensorView,  # float32 [K,h,w]
    classes: TensorView,  # int64 [K]
    score: str,  # "logit" | "probability" | "dice"
    reference_labels: TensorView,  # int64 [h,w] (read for "dice" only)
    out: TensorView,  # float32 [N,K]
    threads: int,
    stream: int,
) -> None:
    """Region scores of all K classes on N perturbed outputs."""

def scorecam_inputs(
    image: TensorView,  # float32 [3,H,W]
    activations: TensorView,  # float32 [n,h,w]
    eps: float,
    out: TensorView,  # float32 [n,3,H,W]
    threads: int,
    stream: int,
) -> None:
    """Score-CAM inputs: image x minmax(upsample(A_c)) for a chunk of channels."""

def rise_inputs(
    image: TensorView,  # float32 [3,H,W]
    grids: TensorView,  # float32 [N,s,s]
    shifts: TensorView,  # int64 [N,2]
    out: TensorView,  # float32 [N,3,H,W]
    threads: int,
    stream: int,
) -> None:
    """RISE inputs: image x mask_i, the masks generated from the grids on the fly."""

def rise_accumulate(
    scores: TensorView,  # float32 [N,K]
    grids: TensorView,  # float32 [N,s,s]
    shifts: TensorView,  # int64 [N,2]
    out: TensorView,  # float32 [K,H,W]
    threads: int,
    stream: int,
) -> None:
    """Sum over masks of scores[i,k] * mask_i for every class, masks regenerated on the fly."""

def segment_inputs(
    image: TensorView,  # float32 [3,H,W]
    baseline: TensorView,  # float32 [3,H,W]
    segments: TensorView,  # int64 [H,W] in [0, M)
    keep: TensorView,  # uint8 [n,M]
    out: TensorView,  # float32 [n,3,H,W]
    threads: int,
    stream: int,
) -> None:
    """Segment coalitions: image where keep[i, segments[p]], else the baseline."""

def attribution_accumulate(
    grads: TensorView,  # float32 [n,G,R]
    weights: TensorView,  # float32 [G]
    mult: TensorView | None,  # float32 [G,R] or None (1)
    rows: TensorView,  # int64 [n], distinct, in [0, K)
    total: TensorView,  # float32 [K,R], accumulated in place
    total_sq: TensorView | None,  # float32 [K,R] or None, accumulated in place
    abs: bool,
    threads: int,
    stream: int,
) -> None:
    """Weighted sums of input gradients over path steps and noise samples, accumulated in place."""

def attribution_maps(
    attributions: TensorView,  # float [B,K,C,N]
    out: TensorView,  # float32 [B,K,N]
    normalize: bool,
    minmax: TensorView,  # int32 [B*K,2] workspace (CUDA only)
    eps: float,
    threads: int,
    stream: int,
) -> None:
    """Attribution maps: the channel sum, then ReLU + per-map min-max (normalize)."""

def build_info() -> dict[str, Any]:
    """How the core was built and what it finds now (see kernels.backend.build_info).

    Keys: version, source_digest, compiler, openmp, omp_max_threads, simd, cuda_built, cuda_version (None
    without CUDA), cuda_archs (None without CUDA), cuda_device_count, cuda_available.
    """
