"""The backend choice and the calling convention of the compiled core: which backend runs, the
output tensor (`out=` checked or allocated), TensorViews of the inputs, torch's threads and stream,
and the CUDA min-max workspace (the Python side of csrc/dispatch.h and csrc/bindings.cpp)."""
from __future__ import annotations

from typing import Optional, Tuple

import torch

from ..backend import core  # raises an ImportError saying how to build the core
from .checks import FLOATS

BACKENDS = ("auto", "fused", "torch")


def use_fused(backend: str, device: torch.device, *dtypes: torch.dtype) -> bool:
    """Decide the backend; "fused" raises when the core cannot run these inputs."""
    if backend not in BACKENDS:
        raise ValueError(f"argument 'backend' must be one of {BACKENDS}, got {backend!r}")
    if backend == "torch":
        return False
    supported = (torch.float32,) if device.type == "cpu" else FLOATS
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


def use_fused_op(op: str, backend: str, device: torch.device, *dtypes: torch.dtype,
                 float32_only: bool = True) -> bool:
    """use_fused for an op added after the first cores were built (the perturbation family,
    pooled_cam); a core built before the op existed serves "auto" through the twins and makes
    "fused" an error naming the op. float32_only: the op's CUDA kernel takes float32 alone."""
    fused = use_fused(backend, device, *dtypes)
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


def out_tensor(out: Optional[torch.Tensor], shape, dtype: torch.dtype, device: torch.device,
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


def into_out(out: Optional[torch.Tensor], result: torch.Tensor) -> torch.Tensor:
    """Reference path: return `result`, copied into `out` when one was given."""
    if out is None:
        return result
    return out_tensor(out, result.shape, result.dtype, result.device).copy_(result)


class _KeptView(core.TensorView):
    """A TensorView that owns a reference to its tensor: the core gets only a pointer, so a
    temporary (a .contiguous() copy, a workspace) must live until the kernel call returns."""


def core_view(t: torch.Tensor):
    """A core TensorView of a contiguous tensor (no copy), keeping the tensor alive with it."""
    view = _KeptView(
        t.data_ptr(), str(t.dtype).replace("torch.", ""), list(t.shape), list(t.stride()),
        t.device.type, t.device.index or 0,
    )
    view.tensor = t
    return view


def exec_args(device: torch.device) -> Tuple[int, int]:
    """(CPU threads, CUDA stream handle): torch's thread setting and current stream."""
    stream = torch.cuda.current_stream(device).cuda_stream if device.type == "cuda" else 0
    return torch.get_num_threads(), stream


def minmax_workspace(maps: int, device: torch.device) -> torch.Tensor:
    """int32 [maps, 2] workspace for the CUDA min-max reduction."""
    return torch.empty(maps, 2, dtype=torch.int32, device=device)
