"""The compiled core seg_xai_fast._core and how it was built.

Importing this module fails with an ImportError that says how to build the core when it is
missing, or how to rebuild it when it is stale: in a source checkout (an editable install, or
PYTHONPATH at the repository), a core built from other sources than the csrc/ beside the package;
in an installed package (no csrc/), a core built for another version.
Importing works on machines without a GPU or CUDA driver, whatever the build.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

try:
    from .. import _core
except ImportError as exc:  # not built, or built for another Python
    raise ImportError(
        "seg_xai_fast: the compiled core (seg_xai_fast._core) is not built or failed to load "
        f"({exc}). Build it from the repository root with `pip install .`, or "
        "`pip install --no-build-isolation -e .` for development. CUDA kernels are built when "
        "nvcc is found; choose with SEG_XAI_CUDA=auto|on|off."
    ) from exc

from .._source_digest import source_digest
from .._version import __version__

#: csrc/ of a source checkout: the repository root is two levels above this package's folder.
CSRC = Path(__file__).resolve().parents[2] / "csrc"
REBUILD = ("rebuild it from the repository root with `pip install --no-build-isolation -e .` (or "
           "`python setup.py build_ext --inplace`; SEG_XAI_CUDA=auto|on|off chooses the CUDA kernels)")


def stale_core_reason(info: dict, csrc: Path = CSRC, version: str = __version__) -> Optional[str]:
    """Why a core with build_info() `info` does not match this package, or None when it does.

    With the core's sources at `csrc` (a checkout: csrc/include/seg_xai/ops.h is there), the digest
    the core was built with must be the digest of those sources; else the version must match.
    """
    if (csrc / "include" / "seg_xai" / "ops.h").is_file():
        built, current = info.get("source_digest") or "none", source_digest(csrc)
        if built != current:
            return (f"the compiled core was built from other sources than {csrc} (source digest {built}, "
                    f"the sources now {current}): csrc/ changed since the last build")
    if info.get("version") != version:
        return f"the compiled core was built for version {info.get('version')} but the package is {version}"
    return None


_stale = stale_core_reason(_core.build_info())
if _stale is not None:  # its kernels may not match the Python side
    raise ImportError(f"seg_xai_fast: {_stale}; {REBUILD}")

core = _core


def build_info() -> dict[str, Any]:
    """How the core was built and what it finds on this machine.

    Keys: version, source_digest (of csrc/ at build time, "" when built without setup.py),
    compiler, openmp, omp_max_threads, simd ("avx512" | "avx2" | "scalar": the instruction set the
    CPU loops dispatch to on this CPU), cuda_built, cuda_version (build time, None without CUDA),
    cuda_archs (None without CUDA), cuda_available (driver and device present now),
    cuda_device_count.
    """
    return dict(_core.build_info())
