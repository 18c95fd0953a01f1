"""The `seg-xai` command line, run as a user would (a subprocess)."""
import json
import subprocess
import sys
import tempfile

import numpy as np
import pytest
from PIL import Image


def seg_xai(*args, check=True):
    # Run outside the repository, so the installed package (with its compiled core) is imported,
    # not the source tree.
    proc = subprocess.run([sys.executable, "-m", "seg_xai_fast.cli", *args], capture_output=True, text=True,
                          timeout=600, cwd=tempfile.gettempdir())
    if check and proc.returncode != 0:
        raise AssertionError(f"seg-xai {' '.join(args)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
    return proc


def test_info_json_has_build_facts():
    info = json.loads(seg_xai("info", "--json").stdout)
    for key in ("compiler", "openmp", "simd", "cuda_built", "cuda_available", "cuda_device_count"):
        assert key in info
    assert info["simd"] in ("avx512", "avx2", "scalar")


def test_demo_writes_overlays_and_contact_sheet(tmp_path):
    out = seg_xai("demo", "--out", str(tmp_path), "--n", "2", "--size", "128", "--method", "gradcam++").stdout
    assert "explained 4 classes of 2 scenes" in out
    assert f"context table {tmp_path / 'context_scene00.png'}" in out
    with Image.open(tmp_path / "context_scene00.png") as table:
        assert table.mode == "RGB" and table.width > 100
    sheet = Image.open(tmp_path / "contact_sheet.png")
    assert sheet.size[0] >= 7 * 100  # image, truth, prediction + 4 classes
    overlays = sorted(tmp_path.glob("scene*_*.png"))
    assert len(overlays) == 2 * 4
    picture = np.asarray(Image.open(tmp_path / "scene00_disc.png"))
    assert picture.shape == (128, 128, 3) and picture.std() > 5
    assert not list(tmp_path.glob(".*.tmp"))  # atomic writes leave no temp files


def test_bench_prints_ratios_table(tmp_path):
    chart = tmp_path / "bench.png"
    out = seg_xai("bench", "--size", "64", "--repeats", "1", "--methods", "gradcam", "--no-peer",
                  "--chart", str(chart)).stdout
    assert "floor = fastest forward + fastest VJP" in out and "gradcam fused" in out and "gradcam torch" in out
    assert Image.open(chart).size[0] > 100


def test_usage_errors_exit_2():
    proc = seg_xai("demo", "--method", "nope", check=False)
    assert proc.returncode == 2 and "method must be one of" in proc.stderr and "got 'nope'" in proc.stderr
    proc = seg_xai("bench", "--model", "torchvision:nope", "--no-peer", check=False)
    assert proc.returncode == 2 and "NAME in" in proc.stderr
