"""Volumes and whole scenes from files through `seg-xai explain` (apps/scenes.py): NIfTI maps with
the input's affine and header, GeoTIFF maps with its CRS and transform, monai:NAME models with
--model-args, TorchScript files, --sliding-window; the errors (not a volume, wrong ROI axes,
overlap out of range, a missing extra), each naming the argument, with nothing written."""
import json

import numpy as np
import pytest
import torch
import torch.nn as nn

import seg_xai_fast as sx
from seg_xai_fast.cli import main
from seg_xai_fast.models import load_model

nib = pytest.importorskip("nibabel")
pytest.importorskip("monai")

UNET_ARGS = {"spatial_dims": 3, "in_channels": 1, "out_channels": 3, "channels": [4, 8], "strides": [2],
             "num_res_units": 1}


@pytest.fixture
def volume_file(tmp_path):
    affine = np.diag([1.5, 1.5, 2.0, 1.0])
    affine[:3, 3] = [10, 20, 30]
    data = np.random.default_rng(0).random((16, 16, 12)).astype(np.float32)
    img = nib.Nifti1Image(data, affine)
    img.header["descrip"] = b"seg-xai test volume"
    path = tmp_path / "ct.nii.gz"
    nib.save(img, path)
    return path


def test_nifti_maps_keep_affine_and_header_and_equal_the_explainer(tmp_path, volume_file):
    out = tmp_path / "out"
    torch.manual_seed(0)
    code = main(["explain", str(volume_file), "--out", str(out), "--model", "monai:UNet", "--model-args",
                 json.dumps(UNET_ARGS), "--layer", "model.2.0", "--method", "gradcam", "--sliding-window", "8,8,8",
                 "--blend", "gaussian", "--sw-batch-size", "2", "--device", "cpu"])
    assert code == 0
    torch.manual_seed(0)
    model = load_model("monai:UNet", model_args=UNET_ARGS).model
    sw = sx.SlidingWindow(model, (8, 8, 8), mode="gaussian", sw_batch_size=2)
    x = torch.from_numpy(np.asarray(nib.load(volume_file).dataobj, dtype=np.float32))[None, None]
    expected = sx.Explainer(sw, "model.model.2.0", "gradcam")(x).maps[0]
    source = nib.load(volume_file)
    for k in range(3):
        written = nib.load(out / "ct" / f"map_{k}.nii.gz")
        assert np.array_equal(written.affine, source.affine)
        assert written.header["descrip"].tobytes().rstrip(b"\0") == b"seg-xai test volume"
        np.testing.assert_allclose(np.asarray(written.dataobj), expected[k].numpy(), atol=1e-6)
        assert (out / "ct" / f"slices_{k}.png").stat().st_size > 0


def test_geotiff_maps_keep_crs_and_transform(tmp_path):
    rasterio = pytest.importorskip("rasterio")
    from rasterio.transform import from_origin

    path = tmp_path / "scene.tif"
    transform = from_origin(500000, 4000000, 10, 10)
    with rasterio.open(path, "w", driver="GTiff", width=40, height=30, count=2, dtype="float32", crs="EPSG:32633",
                       transform=transform) as dst:
        dst.write(np.random.default_rng(1).random((2, 30, 40)).astype(np.float32))
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 3, 3, padding=1)).eval()
    model_file = tmp_path / "net.pt"
    torch.save(net, model_file)
    out = tmp_path / "out"
    assert main(["explain", str(path), "--out", str(out), "--model", str(model_file), "--layer", "1",
                 "--method", "hirescam", "--sliding-window", "16,16", "--overlap", "0.5", "--device", "cpu"]) == 0
    with rasterio.open(out / "scene" / "maps.tif") as src:
        assert src.count == 3 and src.crs.to_epsg() == 32633 and src.transform == transform
        maps = src.read()
    with rasterio.open(path) as src:
        x = torch.from_numpy(src.read().astype(np.float32))[None]
    expected = sx.Explainer(sx.SlidingWindow(net, (16, 16), overlap=0.5), "model.1", "hirescam")(x).maps[0]
    np.testing.assert_allclose(maps, expected.numpy(), atol=1e-6)
    assert all((out / "scene" / f"overlay_{k}.png").is_file() for k in range(3))


@pytest.mark.filterwarnings("ignore::FutureWarning")  # torch.jit's deprecation notices
def test_torchscript_volume_model_runs_occlusion(tmp_path, volume_file):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv3d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv3d(4, 2, 3, padding=1)).eval()
    path = tmp_path / "net.ts"
    torch.jit.save(torch.jit.trace(net, torch.zeros(1, 1, 8, 8, 8)), str(path))
    out = tmp_path / "out"
    assert main(["explain", str(volume_file), "--out", str(out), "--model", str(path), "--method", "occlusion",
                 "--option", "window=4", "--option", "stride=4", "--device", "cpu"]) == 0
    assert (out / "ct" / "map_1.nii.gz").is_file()


@pytest.mark.parametrize("extra,message", [
    (["--sliding-window", "8,8"], r"--sliding-window 8,8 has 2 axes but ct.nii.gz has 3 spatial axes"),
    (["--sliding-window", "8,8,8", "--overlap", "1.0"], r"--overlap must be in \[0, 1\)"),
    (["--sliding-window", "8,x"], r"--sliding-window must be comma-separated ints"),
])
def test_argument_errors_name_the_argument_and_write_nothing(tmp_path, volume_file, capsys, extra, message):
    out = tmp_path / "out"
    code = main(["explain", str(volume_file), "--out", str(out), "--model", "monai:UNet", "--model-args",
                 json.dumps(UNET_ARGS), "--layer", "model.2.0", "--device", "cpu"] + extra)
    assert code == 2
    import re
    assert re.search(message, capsys.readouterr().err)
    assert not out.exists() or not any(out.rglob("*.*"))


def test_not_a_volume_and_bad_model_args(tmp_path, capsys):
    flat = tmp_path / "flat.nii"
    nib.save(nib.Nifti1Image(np.zeros((8, 8), np.float32), np.eye(4)), flat)
    base = ["explain", str(flat), "--out", str(tmp_path / "out"), "--model", "monai:UNet", "--layer", "model.2.0"]
    assert main(base + ["--model-args", json.dumps(UNET_ARGS)]) == 2
    assert "is not a volume" in capsys.readouterr().err
    assert main(base + ["--model-args", "{spatial_dims: 3"]) == 2
    assert "--model-args must be JSON" in capsys.readouterr().err


def test_missing_extra_names_it(tmp_path, volume_file, monkeypatch):
    import sys
    from seg_xai_fast.apps.scenes import read_scene

    monkeypatch.setitem(sys.modules, "nibabel", None)
    with pytest.raises(ImportError, match=r"pip install 'seg_xai_fast\[medical\]'"):
        read_scene(str(volume_file))
    monkeypatch.setitem(sys.modules, "rasterio", None)
    (tmp_path / "x.tif").write_bytes(b"II*\0")
    with pytest.raises(ImportError, match=r"seg_xai_fast\[geo\]"):
        read_scene(str(tmp_path / "x.tif"))


def test_a_volume_for_a_2d_model_is_an_error_and_writes_nothing(tmp_path, volume_file, capsys):
    torch.manual_seed(0)
    flat = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 3, 1)).eval()
    model_file = tmp_path / "flat.pt"
    torch.save(flat, model_file)
    out = tmp_path / "out"
    assert main(["explain", str(volume_file), "--out", str(out), "--model", str(model_file), "--layer", "1",
                 "--device", "cpu"]) == 2
    assert "takes images [B,C,H,W]" in capsys.readouterr().err
    assert not out.exists() or not any(out.rglob("*.*"))


def test_report_shows_volumes_as_slice_views(tmp_path, volume_file):
    from seg_xai_fast.apps.report.build import build_report

    out = tmp_path / "out"
    assert main(["explain", str(volume_file), "--out", str(out), "--model", "monai:UNet", "--model-args",
                 json.dumps(UNET_ARGS), "--layer", "model.2.0", "--classes", "0,1", "--device", "cpu"]) == 0
    index = build_report(out)
    page = index.read_text()
    assert index.name == "index.html" and "Volumes and scenes" in page
    for k in (0, 1):
        assert f'src="../ct/slices_{k}.png"' in page and "map_" in page
