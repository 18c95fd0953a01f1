"""The build: build_info, the CUDA-less error path and the helpful ImportError."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from seg_xai_fast._source_digest import source_digest
from seg_xai_fast.kernels import backend as _backend

ROOT = Path(__file__).resolve().parents[1]


def test_build_info_keys_and_types():
    info = _backend.build_info()
    types = {
        "version": str, "source_digest": str, "compiler": str, "openmp": bool, "omp_max_threads": int, "simd": str,
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


# --------------------------------------------------------------------------- a stale core


def test_the_core_was_built_from_these_sources():
    assert _backend.build_info()["source_digest"] == source_digest(ROOT / "csrc")


def test_every_change_to_the_sources_changes_the_digest(tmp_path):
    csrc = shutil.copytree(ROOT / "csrc", tmp_path / "csrc")
    original = source_digest(csrc)
    edited = csrc / "weighted_cam.cpp"
    edited.write_bytes(edited.read_bytes() + b"// edited\n")
    assert source_digest(csrc) != original
    (csrc / "weighted_cam.cpp").rename(csrc / "weighted_cam_renamed.cpp")  # same bytes, other name
    renamed = source_digest(csrc)
    assert renamed not in (original, source_digest(ROOT / "csrc"))
    (csrc / "cpu" / "new_op_cpu.cpp").write_text("// a new file\n")
    assert source_digest(csrc) != renamed
    (csrc / "notes.txt").write_text("not a source file")
    assert source_digest(csrc) == source_digest(csrc)  # deterministic; other files do not count


def test_stale_core_reason_in_a_checkout_and_in_an_installed_package(tmp_path):
    info = _backend.build_info()
    csrc = shutil.copytree(ROOT / "csrc", tmp_path / "csrc")
    assert _backend.stale_core_reason(info, csrc) is None
    (csrc / "seeds.cpp").write_text((csrc / "seeds.cpp").read_text() + "// edited\n")
    assert "csrc/ changed since the last build" in _backend.stale_core_reason(info, csrc)
    no_digest = {**info, "source_digest": ""}  # built by hand with CMake, or before digests existed
    assert "source digest none" in _backend.stale_core_reason(no_digest, ROOT / "csrc")
    installed = tmp_path / "site-packages-has-no-csrc"
    assert _backend.stale_core_reason(no_digest, installed) is None  # a wheel: the version decides
    assert "built for version 0.0.1 but the package is" in _backend.stale_core_reason(
        {**info, "version": "0.0.1"}, installed)


def test_importing_with_edited_sources_asks_for_a_rebuild(tmp_path):
    """A copy of a checkout (the imported package with its built core, and csrc/ beside it): it
    imports; after one edit of csrc/ the import fails and says to rebuild."""
    package = Path(_backend.__file__).resolve().parents[1]  # this checkout's, or the one pip installed from it
    shutil.copytree(package, tmp_path / "seg_xai_fast", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(ROOT / "csrc", tmp_path / "csrc")
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}

    def import_package():
        return subprocess.run([sys.executable, "-c", "import seg_xai_fast"], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=120)

    assert import_package().returncode == 0
    header = tmp_path / "csrc" / "include" / "seg_xai" / "ops.h"
    header.write_text(header.read_text() + "// edited, not rebuilt\n")
    result = import_package()
    assert result.returncode != 0
    assert "ImportError" in result.stderr and "csrc/ changed since the last build" in result.stderr
    assert "rebuild it" in result.stderr and "pip install --no-build-isolation -e ." in result.stderr
