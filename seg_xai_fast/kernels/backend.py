"""The compiled core seg_xai_fast._core and how it was built.

Importing this module fails with an ImportError that says how to build the core when it is missing.
Importing works on machines without a GPU or CUDA driver, whatever the build.
"""
from __future__ import annotations

from typing import Any

try:
    from .. import _core
except ImportError as exc:  # not built, or built for another Python
    raise ImportError(
        "seg_xai_fast: the compiled core (seg_xai_fast._core) is not built or failed to load "
        f"({exc}). Build it from the repository root with `pip install .`, or "
        "`pip install --no-build-isolation -e .` for development. CUDA kernels are built when "
        "nvcc is found; choose with SEG_XAI_CUDA=auto|on|off."
    ) from exc

from .._version import __version__

if _core.build_info()["version"] != __version__:
    # A stale build (an old .so beside newer sources): its kernels may not match the Python side.
    raise ImportError(
        f"seg_xai_fast: the compiled core was built for version {_core.build_info()['version']} but the "
        f"package is {__version__}; rebuild it with `pip install .` (or `pip install --no-build-isolation -e .`)"
    )

core = _core


def build_info() -> dict[str, Any]:
    """How the core was built and what it finds on this machine.

    Keys: version, compiler, openmp, omp_max_threads, simd ("avx512" | "avx2" | "scalar": the
    instruction set the CPU loops dispatch to on this CPU), cuda_built, cuda_version (build time,
    None without CUDA), cuda_archs (None without CUDA), cuda_available (driver and device present
    now), cuda_device_count.
    """
    return dict(_core.build_info())
