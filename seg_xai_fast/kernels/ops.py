"""Torch-facing layer of the fused kernels: validation, output allocation and backend dispatch.

Every op takes ``backend``:
  "fused"  the compiled core (raises if it cannot run these dtypes/devices),
  "torch"  the pure-PyTorch twin in seg_xai_fast.reference,
  "auto"   fused when the core supports the inputs' dtype and device, else torch.
The core supports float32 on CPU, and float32/float16/bfloat16 on CUDA (accumulating in float32).
Non-contiguous inputs are copied (``.contiguous()``) before the fused path, never rejected.
Every op accepts ``out=``, a contiguous tensor of the result's shape, dtype and device that is
written and returned (the tests pass NaN-filled outputs through it).

Shapes: B images, K explained classes, C channels of the target layer, (h, w) its spatial size,
(H, W) the output/image size, L logit classes.
"""
from __future__ import annotations

from typing import Optional, Sequence, Tuple

import torch

from . import reference
from .backend import core  # raises an ImportError saying how to build the core
from .colormaps import colormap_lut

BACKENDS = ("auto", "fused", "torch")
_FLOATS = (torch.float32, torch.float16, torch.bfloat16)


# --------------------------------------------------------------------------- validation helpers


def _tensor(name: str, t, ndim: int, dtypes: Sequence[torch.dtype] = _FLOATS) -> torch.Tensor:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"argument '{name}' must be a torch.Tensor, got {type(t).__name__}")
    if t.dim() != ndim:
        raise ValueError(
            f"argument '{name}' must have {ndim} dimensions, got {t.dim()} (shape {list(t.shape)})"
        )
    if t.dtype not in dtypes:
        names = ", ".join(str(d).replace("torch.", "") for d in dtypes)
        raise TypeError(f"argument '{name}' must have dtype in ({names}), got {t.dtype}")
    if t.numel() == 0:
        raise ValueError(f"argument '{name}' must not be empty, got shape {list(t.shape)}")
    return t


def _same_device(**tensors: torch.Tensor) -> torch.device:
    (first_name, first), *rest = tensors.items()
    for name, t in rest:
        if t.device != first.device:
            raise ValueError(
                f"argument '{name}' is on {t.device} but argument '{first_name}' is on "
                f"{first.device}; all tensors must be on one device"
            )
    return first.device


def _match(name: str, t: torch.Tensor, dim: int, size: int, what: str) -> None:
    if t.shape[dim] != size:
        raise ValueError(
            f"argument '{name}' must have size {size} ({what}) in dimension {dim}, "
            f"got shape {list(t.shape)}"
        )


def _size2(name: str, size) -> Tuple[int, int]:
    try:
        h, w = (int(s) for s in size)
    except (TypeError, ValueError):
        raise ValueError(f"argument '{name}' must be a pair (H, W) of ints, got {size!r}") from None
    if h < 1 or w < 1:
        raise ValueError(f"argument '{name}' must be positive, got {(h, w)}")
    return h, w


def _method(method: str, allowed: Sequence[str]) -> str:
    if method not in allowed:
        raise ValueError(f"argument 'method' must be one of {tuple(allowed)}, got {method!r}")
    return method


def _use_fused(backend: str, device: torch.device, *dtypes: torch.dtype) -> bool:
    """Decide the backend; "fused" raises when the core cannot run these inputs."""
    if backend not in BACKENDS:
        raise ValueError(f"argument 'backend' must be one of {BACKENDS}, got {backend!r}")
    if backend == "torch":
        return False
    supported = (torch.float32,) if device.type == "cpu" else _FLOATS
    reason = None
    if device.type not in ("cpu", "cuda"):
        reason = f"tensors on {device}"
    elif any(d not in supported for d in dtypes) or len(set(dtypes)) > 1:
        names = ", ".join(str(d).replace("torch.", "") for d in supported)
        got = ", ".join(str(d).replace("torch.", "") for d in dtypes)
        reason = f"float inputs of one dtype in ({names}) on {device.type}, got {got}"
    if reason is None:
        return True
    if backend == "fused":
        raise TypeError(f"backend='fused' does not support {reason}")
    return False


def _out(out: Optional[torch.Tensor], shape, dtype: torch.dtype, device: torch.device,
         name: str = "out") -> torch.Tensor:
    """The output tensor: `out` (the argument `name`) after checking it, or a new one."""
    if out is None:
        return torch.empty(shape, dtype=dtype, device=device)
    if not isinstance(out, torch.Tensor):
        raise TypeError(f"argument {name!r} must be a torch.Tensor, got {type(out).__name__}")
    if tuple(out.shape) != tuple(shape) or out.dtype != dtype or out.device != device:
        raise ValueError(
            f"argument {name!r} must be {dtype} of shape {list(shape)} on {device}, "
            f"got {out.dtype} of shape {list(out.shape)} on {out.device}"
        )
    if not out.is_contiguous():
        raise ValueError(f"argument {name!r} must be contiguous")
    return out


def _into(out: Optional[torch.Tensor], result: torch.Tensor) -> torch.Tensor:
    """Reference path: return `result`, copied into `out` when one was given."""
    if out is None:
        return result
    return _out(out, result.shape, result.dtype, result.device).copy_(result)


class _KeptView(core.TensorView):
    """A TensorView that owns a reference to its tensor: the core gets only a pointer, so a
    temporary (a .contiguous() copy, a workspace) must live until the kernel call returns."""


def _view(t: torch.Tensor):
    """A core TensorView of a contiguous tensor (no copy), keeping the tensor alive with it."""
    view = _KeptView(
        t.data_ptr(), str(t.dtype).replace("torch.", ""), list(t.shape), list(t.stride()),
        t.device.type, t.device.index or 0,
    )
    view.tensor = t
    return view


def _exec(device: torch.device) -> Tuple[int, int]:
    """(CPU threads, CUDA stream handle): torch's thread setting and current stream."""
    stream = torch.cuda.current_stream(device).cuda_stream if device.type == "cuda" else 0
    return torch.get_num_threads(), stream


def _minmax_ws(maps: int, device: torch.device) -> torch.Tensor:
    """int32 [maps, 2] workspace for the CUDA min-max reduction."""
    return torch.empty(maps, 2, dtype=torch.int32, device=device)


# --------------------------------------------------------------------------- post-processing


def normalize_maps(
    maps: torch.Tensor,  # float [..., h, w]
    *,
    backend: str = "auto",
    out: Optional[torch.Tensor] = None,  # float32 [..., h, w]
) -> torch.Tensor:
    """ReLU + per-map min-max (reference.normalize_maps) → float32 [..., h, w].

    Non-contiguous `maps` are copied. Inputs need at least 2 dimensions.
    """
    if not isinstance(maps, torch.Tensor) or maps.dim() < 2:
        raise ValueError("argument 'maps' must be a tensor with at least 2 dimensions [..., h, w]")
    _tensor("maps", maps, maps.dim())
    if not _use_fused(backend, maps.device, maps.dtype):
        return _into(out, reference.normalize_maps(maps))
    result = _out(out, maps.shape, torch.float32, maps.device)
    src = maps.contiguous().view(-1, *maps.shape[-2:])
    core.normalize_maps(
        _view(src), _view(result.view(src.shape)), _view(_minmax_ws(src.shape[0], maps.device)),
        reference.MINMAX_EPS, *_exec(maps.device))
    return result


def resize_normalize(
    maps: torch.Tensor,  # float [B,K,h,w]
    size: Tuple[int, int],  # (H, W)
    *,
    out_dtype: torch.dtype = torch.float32,
    backend: str = "auto",
    out: Optional[torch.Tensor] = None,  # out_dtype [B,K,H,W]
) -> torch.Tensor:
    """Bilinear resize (align_corners=False) + ReLU + per-map min-max → out_dtype [B,K,H,W].

    Equals reference.normalize_maps(reference.resize_bilinear(maps, size)). out_dtype: float32 or
    float16. Non-contiguous `maps` are copied.
    """
    _tensor("maps", maps, 4)
    H, W = _size2("size", size)
    if out_dtype not in (torch.float32, torch.float16):
        raise TypeError(f"argument 'out_dtype' must be torch.float32 or torch.float16, got {out_dtype}")
    B, K = maps.shape[:2]
    if not _use_fused(backend, maps.device, maps.dtype):
        return _into(out, reference.normalize_maps(reference.resize_bilinear(maps, (H, W))).to(out_dtype))
    result = _out(out, (B, K, H, W), out_dtype, maps.device)
    _resize_normalize_into(maps.contiguous(), result)
    return result


def _resize_normalize_into(maps: torch.Tensor, result: torch.Tensor) -> None:
    """maps: float [B,K,h,w] contiguous → result: [B,K,H,W] (fused path only)."""
    src = maps.view(-1, *maps.shape[-2:])
    dst = result.view(-1, *result.shape[-2:])
    core.resize_normalize(_view(src), _view(dst), _view(_minmax_ws(src.shape[0], maps.device)),
                                   reference.MINMAX_EPS, *_exec(maps.device))


# --------------------------------------------------------------------------- CAM stage


def _check_cam_inputs(activations: torch.Tensor, gradients: torch.Tensor) -> None:
    _tensor("activations", activations, 4)  # [B,C,h,w]
    _tensor("gradients", gradients, 5)  # [B,K,C,h,w]
    _same_device(activations=activations, gradients=gradients)
    B, C, h, w = activations.shape
    _match("gradients", gradients, 0, B, "B, as activations")
    _match("gradients", gradients, 2, C, "C, as activations")
    _match("gradients", gradients, 3, h, "h, as activations")
    _match("gradients", gradients, 4, w, "w, as activations")


def channel_weights(
    activations: torch.Tensor,  # float [B,C,h,w]
    gradients: torch.Tensor,  # float [B,K,C,h,w]
    method: str,  # "gradcam" | "gradcam++" | "xgradcam"
    *,
    backend: str = "auto",
    out: Optional[torch.Tensor] = None,  # float32 [B,K,C]
) -> torch.Tensor:
    """Per-class channel weights (reference.channel_weights) → float32 [B,K,C].

    One pass over the gradients for all K classes. Non-contiguous inputs are copied.
    """
    _method(method, reference.WEIGHTED_METHODS)
    _check_cam_inputs(activations, gradients)
    if not _use_fused(backend, activations.device, activations.dtype, gradients.dtype):
        return _into(out, reference.channel_weights(activations, gradients, method))
    B, K, C = gradients.shape[:3]
    result = _out(out, (B, K, C), torch.float32, activations.device)
    _channel_weights_into(activations.contiguous(), gradients.contiguous(), method, result)
    return result


def _channel_weights_into(A: torch.Tensor, G: torch.Tensor, method: str, result: torch.Tensor) -> None:
    sums = torch.empty(A.shape[:2], dtype=torch.float32, device=A.device)  # [B,C] workspace
    core.channel_weights(_view(A), _view(G), method, _view(result), _view(sums), *_exec(A.device))


def analytic_gradcampp_weights(
    channel_sums_or_activations: torch.Tensor,  # float [B,C] sums S_c = Σ_u A_c(u), or float [B,C,h,w]
    weight: torch.Tensor,  # float [K,C], the head's rows of the explained classes
    seeds: torch.Tensor,  # float [B,K,h,w], R_k
    *,
    backend: str = "auto",
    out: Optional[torch.Tensor] = None,  # float32 [B,K,C]
    max_memory_mb: float = 1024.0,  # torch route: size of its class chunks
) -> torch.Tensor:
    """Grad-CAM++ weights of a linear head, g = W_kc·R_k(u), without forming G → float32 [B,K,C].

    Equals reference.channel_weights(A, reference.analytic_gradients(weight, seeds), "gradcam++").
    The fused path streams R once per channel and skips the terms where g ≤ 0; the torch path
    builds g in class chunks of about max_memory_mb. Inputs are converted to float32 (as the
    reference does) and copied when non-contiguous.
    """
    x = channel_sums_or_activations
    name = "channel_sums_or_activations"
    if not isinstance(x, torch.Tensor) or x.dim() not in (2, 4):
        got = f"{x.dim()} dimensions (shape {list(x.shape)})" if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"argument '{name}' must be float [B,C] channel sums or float [B,C,h,w] "
                         f"activations, got {got}")
    _tensor(name, x, x.dim())
    _tensor("weight", weight, 2)
    _tensor("seeds", seeds, 4)
    device = _same_device(**{name: x, "weight": weight, "seeds": seeds})
    B, K, h, w = seeds.shape
    C = weight.shape[1]
    _match("weight", weight, 0, K, "K, as seeds")
    _match(name, x, 0, B, "B, as seeds")
    _match(name, x, 1, C, "C, as weight")
    if x.dim() == 4:
        _match(name, x, 2, h, "h, as seeds")
        _match(name, x, 3, w, "w, as seeds")
    if not _use_fused(backend, device, torch.float32):  # inputs become float32 either way
        sums = x.float().sum(dim=(2, 3)) if x.dim() == 4 else x.float()
        return _into(out, reference.analytic_gradcampp_weights(sums, weight.float(), seeds.float().flatten(2), max_memory_mb))
    result = _out(out, (B, K, C), torch.float32, device)
    sums = torch.empty(B, C, dtype=torch.float32, device=device)  # [B,C] workspace
    core.analytic_gradcampp_weights(
        _view(x.float().contiguous()), _view(weight.float().contiguous()),
        _view(seeds.float().contiguous()), _view(result), _view(sums), *_exec(device))
    return result


def weighted_cam(
    activations: torch.Tensor,  # float [B,C,h,w]
    weights: torch.Tensor,  # float32 [B,K,C]
    *,
    backend: str = "auto",
    out: Optional[torch.Tensor] = None,  # float32 [B,K,h,w]
) -> torch.Tensor:
    """Σ_c w_kc·A_c + ReLU + per-map min-max → float32 [B,K,h,w].

    Equals reference.normalize_maps(reference.weighted_combine(activations, weights)).
    Non-contiguous inputs are copied; `weights` is converted to float32.
    """
    _tensor("activations", activations, 4)
    _tensor("weights", weights, 3)
    _same_device(activations=activations, weights=weights)
    B, C, h, w = activations.shape
    _match("weights", weights, 0, B, "B, as activations")
    _match("weights", weights, 2, C, "C, as activations")
    if not _use_fused(backend, activations.device, activations.dtype):
        return _into(out, reference.normalize_maps(reference.weighted_combine(activations, weights)))
    result = _out(out, (B, weights.shape[1], h, w), torch.float32, activations.device)
    _weighted_cam_into(activations.contiguous(), weights.float().contiguous(), result)
    return result


def _weighted_cam_into(A: torch.Tensor, Wt: torch.Tensor, result: torch.Tensor) -> None:
    core.weighted_cam(_view(A), _view(Wt), _view(result),
                               _view(_minmax_ws(Wt.shape[0] * Wt.shape[1], A.device)),
                               reference.MINMAX_EPS, *_exec(A.device))


def elementwise_cam(
    activations: torch.Tensor,  # float [B,C,h,w]
    gradients: torch.Tensor,  # float [B,K,C,h,w]
    method: str,  # "hirescam" | "layercam" | "gradcam_elementwise"
    *,
    backend: str = "auto",
    out: Optional[torch.Tensor] = None,  # float32 [B,K,h,w]
) -> torch.Tensor:
    """HiResCAM / LayerCAM / Grad-CAM element-wise + ReLU + per-map min-max → float32 [B,K,h,w].

    Equals reference.normalize_maps(reference.elementwise_cam(...)). One pass over G and A.
    Non-contiguous inputs are copied.
    """
    _method(method, reference.ELEMENTWISE_METHODS)
    _check_cam_inputs(activations, gradients)
    if not _use_fused(backend, activations.device, activations.dtype, gradients.dtype):
        return _into(out, reference.normalize_maps(reference.elementwise_cam(activations, gradients, method)))
    B, K, C, h, w = gradients.shape
    result = _out(out, (B, K, h, w), torch.float32, activations.device)
    _elementwise_cam_into(activations.contiguous(), gradients.contiguous(), method, result)
    return result


def _elementwise_cam_into(A: torch.Tensor, G: torch.Tensor, method: str, result: torch.Tensor) -> None:
    core.elementwise_cam(_view(A), _view(G), method, _view(result),
                                  _view(_minmax_ws(G.shape[0] * G.shape[1], A.device)),
                                  reference.MINMAX_EPS, *_exec(A.device))


def pooled_cam(
    activations: torch.Tensor,  # float [B,C,h,w]
    gradients: torch.Tensor,  # float [B,K,C,h,w]
    pool: int,  # window side ≥ 1
    reduce: str = "max",  # "max" | "mean"
    *,
    backend: str = "auto",
    out: Optional[torch.Tensor] = None,  # float32 [B,K,h,w]
) -> torch.Tensor:
    """Seg-XRes-CAM Σ_c pool(G)⊙A + ReLU + per-map min-max → float32 [B,K,h,w], the pooled
    gradients never stored. Equals reference.normalize_maps(reference.raw_cam(A, G, "segxrescam",
    {"pool": pool, "reduce": reduce})). Non-contiguous inputs are copied."""
    _check_cam_inputs(activations, gradients)
    if not isinstance(pool, int) or isinstance(pool, bool) or pool < 1:
        raise ValueError(f"argument 'pool' must be an int ≥ 1, got {pool!r}")
    if reduce not in reference.POOL_REDUCTIONS:
        raise ValueError(f"argument 'reduce' must be one of {reference.POOL_REDUCTIONS}, got {reduce!r}")
    if not _perturb_fused("pooled_cam", backend, activations.device, activations.dtype, gradients.dtype,
                          float32_only=False):
        raw = reference.raw_cam(activations, gradients, "segxrescam", {"pool": pool, "reduce": reduce})
        return _into(out, reference.normalize_maps(raw))
    B, K, C, h, w = gradients.shape
    result = _out(out, (B, K, h, w), torch.float32, activations.device)
    _pooled_cam_into(activations.contiguous(), gradients.contiguous(), pool, reduce, result)
    return result


def _pooled_cam_into(A: torch.Tensor, G: torch.Tensor, pool: int, reduce: str, result: torch.Tensor) -> None:
    core.pooled_cam(_view(A), _view(G), pool, reduce == "mean", _view(result),
                    _view(_minmax_ws(G.shape[0] * G.shape[1], A.device)), reference.MINMAX_EPS, *_exec(A.device))


def cam_from_gradients(
    activations: torch.Tensor,  # float [B,C,h,w]
    gradients: torch.Tensor,  # float [B,K,C,h,w]
    method: str,
    output_size: Optional[Tuple[int, int]] = None,  # (H, W); None → (h, w)
    backend: str = "auto",
    out_dtype: torch.dtype = torch.float32,
    *,
    out: Optional[torch.Tensor] = None,  # out_dtype [B,K,H,W]
    options: Optional[dict] = None,  # the method's CAM-stage options: eigen_smooth, pool, reduce
) -> torch.Tensor:
    """The whole CAM stage (reference.cam_from_gradients) → out_dtype [B,K,H,W] in [0, 1].

    Weighted methods: channel weights, then the weighted sum with ReLU + min-max; element-wise
    methods: one pass over G and A with ReLU + min-max; Seg-XRes-CAM: the pooled_cam pass;
    principal-component maps (eigengradcam, segeigencam, eigen_smooth): the batched eigen-solve
    of the reference, then the fused min-max; then the fused resize + ReLU + min-max (an identity
    resize when output_size is None or (h, w), as the reference normalises twice).
    out_dtype: float32 or float16. Non-contiguous inputs are copied.
    """
    _method(method, reference.GRADIENT_CAM_METHODS)
    _check_cam_inputs(activations, gradients)
    if out_dtype not in (torch.float32, torch.float16):
        raise TypeError(f"argument 'out_dtype' must be torch.float32 or torch.float16, got {out_dtype}")
    options = options or {}
    B, K, C, h, w = gradients.shape
    H, W = (h, w) if output_size is None else _size2("output_size", output_size)
    if not _use_fused(backend, activations.device, activations.dtype, gradients.dtype):
        return _into(out, reference.cam_from_gradients(activations, gradients, method, output_size, options).to(out_dtype))
    device = activations.device
    result = _out(out, (B, K, H, W), out_dtype, device)
    A, G = activations.contiguous(), gradients.contiguous()
    maps = torch.empty(B, K, h, w, dtype=torch.float32, device=device)  # normalised CAMs
    if reference.uses_projection(method, options):
        normalize_maps(reference.raw_cam(A, G, method, options), backend=backend, out=maps)
    elif method in reference.WEIGHTED_METHODS:
        weights = torch.empty(B, K, C, dtype=torch.float32, device=device)
        _channel_weights_into(A, G, method, weights)
        _weighted_cam_into(A, weights, maps)
    elif method in reference.POOLED_METHODS:
        pooled_cam(A, G, options.get("pool", 2), options.get("reduce", "max"), backend=backend, out=maps)
    else:
        _elementwise_cam_into(A, G, method, maps)
    _resize_normalize_into(maps, result)
    return result


# --------------------------------------------------------------------------- overlay

_luts: dict = {}


def _lut(name: str, device: torch.device) -> torch.Tensor:
    """uint8 [256,3] colormap table, cached per device."""
    key = (name, str(device))
    if key not in _luts:
        _luts[key] = colormap_lut(name).to(device).contiguous()
    return _luts[key]


def overlay(
    images: torch.Tensor,  # uint8 [B,H,W,3] RGB
    maps: torch.Tensor,  # float [B,h,w] in [0, 1]
    colormap: str = "jet",
    alpha: float = 0.5,
    backend: str = "auto",
    *,
    out: Optional[torch.Tensor] = None,  # uint8 [B,H,W,3]
) -> torch.Tensor:
    """Colour maps and blend them onto images (reference.overlay) → uint8 [B,H,W,3].

    Maps are resized bilinearly to (H, W) inside the kernel when (h, w) differs.
    Non-contiguous inputs are copied.
    """
    _tensor("images", images, 4, (torch.uint8,))
    _tensor("maps", maps, 3)
    _same_device(images=images, maps=maps)
    _match("images", images, 3, 3, "RGB channels")
    _match("maps", maps, 0, images.shape[0], "B, as images")
    lut = _lut(colormap, images.device)  # validates the name
    alpha = float(alpha)
    if not _use_fused(backend, images.device, maps.dtype):
        return _into(out, reference.overlay(images, maps, colormap, alpha))
    result = _out(out, images.shape, torch.uint8, images.device)
    core.overlay(_view(images.contiguous()), _view(maps.contiguous()), _view(lut), alpha,
                          _view(result), *_exec(images.device))
    return result


# --------------------------------------------------------------------------- target seeds


def _seed_args(low_size, align_corners) -> Tuple[Tuple[int, int], bool]:
    if not isinstance(align_corners, bool):
        raise TypeError(f"argument 'align_corners' must be a bool, got {type(align_corners).__name__}")
    return _size2("low_size", low_size), align_corners


def class_argmax(
    logits: torch.Tensor,  # float [B,L,H,W]
    backend: str = "auto",
    *,
    out: Optional[torch.Tensor] = None,  # int64 [B,H,W]
) -> torch.Tensor:
    """The argmax over the class axis → int64 [B,H,W], exactly as torch.argmax (ties → lowest
    class, the first NaN wins), in one pass over the logits. torch.argmax over the class axis of
    NCHW logits is slow on the CPU (a quarter of a closed-form explanation, measured); the core's
    pass is ~20× faster. Non-contiguous logits are copied.
    """
    _tensor("logits", logits, 4)
    if not _use_fused(backend, logits.device, logits.dtype):
        return _into(out, reference.class_argmax(logits))
    B, _, H, W = logits.shape
    labels = _out(out, (B, H, W), torch.int64, logits.device)
    core.class_argmax(_view(logits.contiguous()), _view(labels), *_exec(logits.device))
    return labels


def label_seeds(
    labels: torch.Tensor,  # int64 [B,H,W], the predicted class of each pixel
    classes: Sequence[int],  # K class indices
    low_size: Tuple[int, int],  # (h, w) of the logits before the model's bilinear upsample
    align_corners: bool = False,
    backend: str = "auto",
    *,
    out: Optional[torch.Tensor] = None,  # float32 [B,K,h,w]
) -> torch.Tensor:
    """Up*([labels == classes[k]]) for all K classes → float32 [B,K,h,w], for labels already at
    hand (no argmax here); the fused path never stores the K full-resolution masks. A class no
    pixel has gets zeros. Non-contiguous labels are copied.
    """
    if not isinstance(labels, torch.Tensor) or labels.ndim != 3 or labels.dtype != torch.int64:
        got = f"{labels.dtype} of shape {list(labels.shape)}" if isinstance(labels, torch.Tensor) else type(labels).__name__
        raise ValueError(f"argument 'labels' must be an int64 Tensor [B,H,W], got {got}")
    (h, w), align_corners = _seed_args(low_size, align_corners)
    cls = _class_list(classes)
    if not _use_fused(backend, labels.device):
        masks = reference.label_masks(labels, cls)
        return _into(out, reference.upsample_adjoint(masks, (h, w), align_corners))
    result = _out(out, (labels.shape[0], len(cls), h, w), torch.float32, labels.device)
    cls_t = torch.tensor(cls, dtype=torch.int64, device=labels.device)
    core.seeds_from_labels(_view(labels.contiguous()), _view(cls_t), align_corners, _view(result),
                                    *_exec(labels.device))
    return result


def _class_list(classes) -> list:
    return [int(c) for c in (classes.tolist() if isinstance(classes, torch.Tensor) else classes)]


def mask_seeds(
    masks: torch.Tensor,  # float [B,K,H,W], full resolution (binary or soft)
    low_size: Tuple[int, int],  # (h, w)
    align_corners: bool = False,
    backend: str = "auto",
    *,
    out: Optional[torch.Tensor] = None,  # float32 [B,K,h,w]
) -> torch.Tensor:
    """Up*(masks) for user-given target masks (reference.upsample_adjoint) → float32 [B,K,h,w].

    Non-contiguous masks are copied.
    """
    _tensor("masks", masks, 4)
    (h, w), align_corners = _seed_args(low_size, align_corners)
    if not _use_fused(backend, masks.device, masks.dtype):
        return _into(out, reference.upsample_adjoint(masks, (h, w), align_corners))
    result = _out(out, (masks.shape[0], masks.shape[1], h, w), torch.float32, masks.device)
    core.seeds_from_masks(_view(masks.contiguous()), align_corners, _view(result),
                                   *_exec(masks.device))
    return result


# --------------------------------------------------------------------------- perturbation methods


def _perturb_fused(op: str, backend: str, device: torch.device, *dtypes: torch.dtype,
                   float32_only: bool = True) -> bool:
    """_use_fused for an op added after the first cores were built (the perturbation family,
    pooled_cam); a core built before the op existed serves "auto" through the twins and makes
    "fused" an error naming the op. float32_only: the op's CUDA kernel takes float32 alone."""
    fused = _use_fused(backend, device, *dtypes)
    reason = None
    if fused and not hasattr(core, op):
        reason = f"the compiled core has no op {op!r}; rebuild it"
    elif fused and float32_only and any(d != torch.float32 for d in dtypes):
        reason = f"{op} runs float32 only, got {', '.join(str(d).replace('torch.', '') for d in dtypes)}"
    if reason is None:
        return fused
    if backend == "fused":
        raise TypeError(f"backend='fused': {reason}")
    return False


def _image(name: str, image) -> torch.Tensor:
    _tensor(name, image, 3)
    _match(name, image, 0, 3, "RGB channels")
    return image


def region_scores(
    logits: torch.Tensor,  # float [N,L,h,w] perturbed outputs of one image
    masks: torch.Tensor,  # float [K,h,w] target regions at the logits' resolution
    classes: Sequence[int],  # K class ids in [0, L)
    score: str = "logit",  # "logit" | "probability" | "dice"
    reference_labels: Optional[torch.Tensor] = None,  # int64 [h,w], for "dice"
    *,
    backend: str = "auto",
    out: Optional[torch.Tensor] = None,  # float32 [N,K]
) -> torch.Tensor:
    """The K region scores of every perturbed output in one pass (reference.region_scores)
    → float32 [N,K]. Non-contiguous inputs are copied; `masks` is converted to float32."""
    _tensor("logits", logits, 4)
    _tensor("masks", masks, 3)
    device = _same_device(logits=logits, masks=masks)
    N, L, h, w = logits.shape
    _match("masks", masks, 1, h, "h, as logits")
    _match("masks", masks, 2, w, "w, as logits")
    cls = _class_list(classes)
    if len(cls) != masks.shape[0] or any(not 0 <= c < L for c in cls):
        raise ValueError(f"argument 'classes' must hold K={masks.shape[0]} ids in [0, {L}) (one per mask), got {cls}")
    if score not in reference.SCORE_TYPES:
        raise ValueError(f"argument 'score' must be one of {reference.SCORE_TYPES}, got {score!r}")
    if score == "dice":
        if (not isinstance(reference_labels, torch.Tensor) or reference_labels.dtype != torch.int64
                or tuple(reference_labels.shape) != (h, w)):
            got = _describe(reference_labels)
            raise ValueError(f"argument 'reference_labels' must be an int64 Tensor [h,w] = [{h}, {w}] for "
                             f"score='dice', got {got}")
        _same_device(logits=logits, reference_labels=reference_labels)
    if not _perturb_fused("region_scores", backend, device, logits.dtype):
        return _into(out, reference.region_scores(logits, masks, cls, score, reference_labels))
    result = _out(out, (N, len(cls)), torch.float32, device)
    labels = reference_labels.contiguous() if score == "dice" else torch.zeros(1, 1, dtype=torch.int64, device=device)
    core.region_scores(_view(logits.contiguous()), _view(masks.float().contiguous()),
                       _view(torch.tensor(cls, dtype=torch.int64, device=device)), score, _view(labels),
                       _view(result), *_exec(device))
    return result


def _describe(t) -> str:
    return f"{t.dtype} of shape {list(t.shape)}" if isinstance(t, torch.Tensor) else type(t).__name__


def scorecam_inputs(
    image: torch.Tensor,  # float [3,H,W]
    activations: torch.Tensor,  # float [n,h,w], a chunk of the target layer's channels
    *,
    backend: str = "auto",
    out: Optional[torch.Tensor] = None,  # float32 [n,3,H,W]
) -> torch.Tensor:
    """Score-CAM's perturbed inputs image × minmax(upsample(A_c)) (reference.scorecam_inputs)
    → float32 [n,3,H,W]. Non-contiguous inputs are copied."""
    _image("image", image)
    _tensor("activations", activations, 3)
    device = _same_device(image=image, activations=activations)
    n = activations.shape[0]
    H, W = image.shape[-2:]
    if not _perturb_fused("scorecam_inputs", backend, device, image.dtype, activations.dtype):
        return _into(out, reference.scorecam_inputs(image, activations))
    result = _out(out, (n, 3, H, W), torch.float32, device)
    core.scorecam_inputs(_view(image.contiguous()), _view(activations.contiguous()), reference.SCORECAM_EPS,
                         _view(result), *_exec(device))
    return result


def _rise_args(grids, shifts, size) -> Tuple[int, int]:
    _tensor("grids", grids, 3)
    if grids.shape[1] != grids.shape[2] or grids.shape[1] < 2:
        raise ValueError(f"argument 'grids' must be [N,s,s] with s ≥ 2, got shape {list(grids.shape)}")
    if (not isinstance(shifts, torch.Tensor) or shifts.dtype != torch.int64
            or tuple(shifts.shape) != (grids.shape[0], 2)):
        raise ValueError(f"argument 'shifts' must be an int64 Tensor [N,2] = [{grids.shape[0]}, 2], "
                         f"got {_describe(shifts)}")
    _same_device(grids=grids, shifts=shifts)
    H, W = _size2("size", size)
    ch, cw = reference.rise_cell((H, W), grids.shape[-1])
    if bool(((shifts < 0) | (shifts >= torch.tensor([ch, cw], device=shifts.device))).any()):
        raise ValueError(f"argument 'shifts' must lie in [0, {ch}) × [0, {cw}) (the RISE cell), got values "
                         f"in [{int(shifts.min())}, {int(shifts.max())}]")
    return H, W


def rise_inputs(
    image: torch.Tensor,  # float [3,H,W]
    grids: torch.Tensor,  # float [n,s,s] of 0/1
    shifts: torch.Tensor,  # int64 [n,2] (dy, dx) inside the cell
    *,
    backend: str = "auto",
    out: Optional[torch.Tensor] = None,  # float32 [n,3,H,W]
) -> torch.Tensor:
    """RISE's perturbed inputs, masks generated on the fly from the small grids
    (reference.rise_inputs) → float32 [n,3,H,W]."""
    _image("image", image)
    H, W = _rise_args(grids, shifts, image.shape[-2:])
    device = _same_device(image=image, grids=grids)
    if not _perturb_fused("rise_inputs", backend, device, image.dtype, grids.dtype):
        return _into(out, reference.rise_inputs(image, grids, shifts))
    result = _out(out, (grids.shape[0], 3, H, W), torch.float32, device)
    core.rise_inputs(_view(image.contiguous()), _view(grids.contiguous()), _view(shifts.contiguous()),
                     _view(result), *_exec(device))
    return result


def rise_accumulate(
    scores: torch.Tensor,  # float [N,K]
    grids: torch.Tensor,  # float [N,s,s] of 0/1
    shifts: torch.Tensor,  # int64 [N,2]
    size: Tuple[int, int],  # (H, W)
    *,
    backend: str = "auto",
    out: Optional[torch.Tensor] = None,  # float32 [K,H,W]
) -> torch.Tensor:
    """Σ_i scores[i,k]·mask_i for all K classes, the masks regenerated on the fly: N×H×W is never
    in memory (reference.rise_accumulate) → float32 [K,H,W]."""
    _tensor("scores", scores, 2)
    H, W = _rise_args(grids, shifts, size)
    _match("scores", scores, 0, grids.shape[0], "N, as grids")
    device = _same_device(scores=scores, grids=grids)
    if not _perturb_fused("rise_accumulate", backend, device, scores.dtype, grids.dtype):
        return _into(out, reference.rise_accumulate(scores, grids, shifts, (H, W)))
    result = _out(out, (scores.shape[1], H, W), torch.float32, device)
    core.rise_accumulate(_view(scores.contiguous()), _view(grids.contiguous()), _view(shifts.contiguous()),
                         _view(result), *_exec(device))
    return result


def segment_inputs(
    image: torch.Tensor,  # float [3,H,W]
    baseline: torch.Tensor,  # float [3,H,W], what replaces a removed segment
    segments: torch.Tensor,  # int64 [H,W], segment ids in [0, M)
    keep: torch.Tensor,  # bool or uint8 [n,M], the n coalitions (nonzero: the segment is kept)
    *,
    backend: str = "auto",
    out: Optional[torch.Tensor] = None,  # float32 [n,3,H,W]
) -> torch.Tensor:
    """The inputs of n coalitions of segments: image where keep[i, segments[p]], else the baseline
    (reference.segment_inputs) → float32 [n,3,H,W]. Only these n inputs are ever in memory."""
    _image("image", image)
    _image("baseline", baseline)
    H, W = image.shape[-2:]
    _match("baseline", baseline, 1, H, "H, as image")
    _match("baseline", baseline, 2, W, "W, as image")
    if (not isinstance(segments, torch.Tensor) or segments.dtype != torch.int64
            or tuple(segments.shape) != (H, W)):
        raise ValueError(f"argument 'segments' must be an int64 Tensor [H,W] = [{H}, {W}], got {_describe(segments)}")
    if not isinstance(keep, torch.Tensor) or keep.dtype not in (torch.bool, torch.uint8) or keep.dim() != 2:
        raise ValueError(f"argument 'keep' must be a bool or uint8 Tensor [n,M], got {_describe(keep)}")
    device = _same_device(image=image, baseline=baseline, segments=segments, keep=keep)
    M = keep.shape[1]
    low, high = int(segments.min()), int(segments.max())
    if low < 0 or high >= M:
        raise ValueError(f"argument 'segments' must hold ids in [0, {M}) (M = keep.shape[1]), got values in "
                         f"[{low}, {high}]")
    if not _perturb_fused("segment_inputs", backend, device, image.dtype, baseline.dtype):
        return _into(out, reference.segment_inputs(image, baseline, segments, keep))
    result = _out(out, (keep.shape[0], 3, H, W), torch.float32, device)
    if keep.shape[0]:
        core.segment_inputs(_view(image.contiguous()), _view(baseline.contiguous()), _view(segments.contiguous()),
                            _view(keep.contiguous().view(torch.uint8)), _view(result), *_exec(device))
    return result
