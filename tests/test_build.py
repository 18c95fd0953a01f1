"""The build: build_info, the CUDA-less error path and the helpful ImportError."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from seg_xai_fast.kernels import backend as _backend

ROOT = Path(__file__).resolve().parents[1]


def test_build_info_keys_and_types():
    info = _backend.build_info()
    types = {
        "version": str, "compiler": str, "openmp": bool, "omp_max_threads": int, "simd": str,
        "cuda_built": bool, "cuda_available": bool, "cuda_device_count": int,
    }
    for key, kind in types.items():
        assert isinstance(info[key], kind), (key, info[key])
    assert info["version"] == "0.1.0"
    assert info["simd"] in ("avx512", "avx2", "scalar")
    assert info["omp_max_threads"] >= 1
    if info["cuda_built"]:
        assert isinstance(info["cuda_version"], str) and isinstance(info["cuda_archs"], str)
    else:
        assert info["cuda_version"] is None and info["cuda_archs"] is None
        assert not info["cuda_available"]
    assert info["cuda_available"] == (info["cuda_device_count"] > 0)


def test_simd_level_matches_this_cpu():
    flags = set()
    cpuinfo = Path("/proc/cpuinfo")
    if not cpuinfo.exists() or sys.platform != "linux":
        pytest.skip("needs /proc/cpuinfo")
    for line in cpuinfo.read_text().splitlines():
        if line.startswith("flags"):
            flags = set(line.split(":", 1)[1].split())
            break
    expected = "avx512" if "avx512f" in flags else "avx2" if "avx2" in flags else "scalar"
    assert _backend.build_info()["simd"] == expected


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CUDA-less error path")
def test_cuda_op_without_cuda_raises_runtime_error():
    core = _backend.core
    # Views that claim CUDA memory: the op must refuse before touching the (fake) pointers.
    maps = core.TensorView(16, "float32", [1, 4, 4], [16, 4, 1], "cuda", 0)
    ws = core.TensorView(16, "int32", [1, 2], [2, 1], "cuda", 0)
    if _backend.build_info()["cuda_built"]:
        match = r"^normalize_maps: CUDA error"  # no driver or no device on this machine
    else:
        match = r"^normalize_maps: .*built without CUDA kernels.*SEG_XAI_CUDA=on"
    with pytest.raises(RuntimeError, match=match):
        core.normalize_maps(maps, maps, ws, 1e-7, 1, 0)


_BLOCK_CORE = """
import importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "seg_xai_fast._core":
            raise ImportError("blocked by the test")
sys.meta_path.insert(0, Block())
"""


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", _BLOCK_CORE + code], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("module", ["seg_xai_fast.kernels.backend", "seg_xai_fast.kernels"])
def test_missing_core_raises_helpful_import_error(module):
    result = _run(f"import {module}")
    assert result.returncode != 0
    err = result.stderr
    assert "ImportError" in err and "compiled core (seg_xai_fast._core) is not built" in err
    assert "pip install ." in err and "pip install --no-build-isolation -e ." in err
    assert "SEG_XAI_CUDA" in err
