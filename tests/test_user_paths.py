"""What a new user hits: the paths of issue 13 (models, classes, hints, pictures), each on tiny sizes."""
import pathlib
import re
import subprocess
import sys

import pytest
import torch

import seg_xai_fast as sx
from seg_xai_fast import cli
from seg_xai_fast.apps import bench
from seg_xai_fast.runtimes.choice import make_explainer

ROOT = pathlib.Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------- 13.9 small wrong hints


def test_export_onnx_without_a_head_names_the_cli_flag(tmp_path, capsys):
    assert cli.main(["export-onnx", "demo", str(tmp_path / "m.onnx"), "--layer", "encoder.stage4", "--size", "32"]) == 2
    err = capsys.readouterr().err
    assert "--eigencam-only" in err


def test_missing_onnx_package_asks_for_onnx_not_onnxscript(tmp_path, monkeypatch):
    from seg_xai_fast.runtimes.export import export_onnx

    monkeypatch.setitem(sys.modules, "onnx", None)  # import onnx raises ImportError
    monkeypatch.setitem(sys.modules, "onnxscript", None)
    with pytest.raises(RuntimeError) as info:
        export_onnx(sx.demo_model(), "decoder", tmp_path / "m.onnx", torch.rand(1, 3, 32, 32))
    assert "pip install onnx " in str(info.value) and "onnxscript" not in str(info.value)


def test_a_misspelt_layer_fails_before_any_export_is_announced(tmp_path, monkeypatch):
    monkeypatch.setenv("SEG_XAI_CACHE", str(tmp_path / "cache"))
    heard = []
    with pytest.raises(ValueError, match="decodr.*close names.*decoder"):
        make_explainer("demo", "decodr", "gradcam", "onnxruntime", image_size=(32, 32), log=heard.append)
    assert heard == [] and not (tmp_path / "cache").exists()


def test_bench_floor_is_a_lower_bound_and_the_peer_gets_no_more_repeats(monkeypatch):
    # Timings where each call's median exceeds half of it: a floor summed from medians (forward +
    # VJP) would be above every row ("0.50× floor"); the floor from the fastest calls is not.
    monkeypatch.setattr(bench, "timed_calls", lambda fn, repeats, warmup=1: [1.0, 5.0, 5.0][:repeats])
    lines = []
    rows = bench.run_bench("demo", methods=["gradcam"], size=32, repeats=1, peer=False, log=lines.append)
    assert "medians of 1 (peer: 1)" in lines[0] and "noisy" in lines[0]
    rows = bench.run_bench("demo", methods=["gradcam"], size=32, repeats=3, peer=False, log=lines.append)
    ratios = [r["x_floor"] for r in rows if "x_floor" in r]
    assert ratios and min(ratios) >= 1.0


def test_version_flag(capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(["--version"])
    assert info.value.code == 0 and re.fullmatch(r"seg-xai \d+\.\d+\.\d+\S*\n", capsys.readouterr().out)


def test_readme_component_example_explains_a_predicted_object():
    readme = (ROOT / "README.md").read_text()
    block = re.findall(r"```python\n(.*?)```", readme, flags=re.S)[0]
    head = block.split("frames = res.overlay")[0]  # up to the Component call
    assert "sx.Component(" in head
    namespace = {}
    exec(compile(head, "README.md", "exec"), namespace)
    res = namespace["res"]
    assert bool((res.maps.amax(dim=(2, 3)) > 0).all()), "the Component example gives an all-zero map"


def test_default_output_folders_are_ignored_by_git():
    for path in ("seg-xai-demo/contact_sheet.png", "seg-xai-bench.png"):
        proc = subprocess.run(["git", "check-ignore", "-q", path], cwd=ROOT)
        assert proc.returncode == 0, f"{path} is not in .gitignore"


# --------------------------------------------------------------------------- 13.3 the peer at 'NAME:input'


class _TinyHeadNet(torch.nn.Module):
    """features → 1×1 head at stride 2, upsampled: 'head:input' is the closed-form layer."""

    def __init__(self):
        super().__init__()
        self.features = torch.nn.Sequential(torch.nn.Conv2d(3, 6, 3, stride=2, padding=1), torch.nn.ReLU())
        self.head = torch.nn.Conv2d(6, 3, 1)

    def forward(self, x):
        return torch.nn.functional.interpolate(self.head(self.features(x)), size=x.shape[-2:], mode="bilinear",
                                               align_corners=False)


def test_peer_at_a_module_input_matches_ours_and_bench_runs():
    pytest.importorskip("pytorch_grad_cam")
    from pytorch_grad_cam.utils.model_targets import SemanticSegmentationTarget

    torch.manual_seed(0)
    model = _TinyHeadNet().eval()
    images = torch.rand(1, 3, 16, 16)
    masks = bench.box_masks(1, 2, 16, 16)
    ours = sx.Explainer(model, "head:input", "gradcam")(images, classes=[1, 2], masks=masks).maps
    with bench.peer_cam(model, "head:input", "gradcam") as cam:
        peer = [cam(input_tensor=images, targets=[SemanticSegmentationTarget(c, masks[0, k].numpy())])[0]
                for k, c in enumerate([1, 2])]
    assert not model.head._forward_pre_hooks  # the tap is removed afterwards
    for k in range(2):
        assert (ours[0, k] - torch.from_numpy(peer[k])).abs().max() < 1e-4
    # LRASPP's default layer 'classifier.high_classifier:input' (the bench's crash): the peer times it.
    from seg_xai_fast.models import load_model

    loaded = load_model("torchvision:lraspp_mobilenet_v3_large")
    seconds = bench.peer_seconds(loaded.model, loaded.layer, "gradcam", torch.rand(1, 3, 32, 32), [1],
                                 bench.box_masks(1, 1, 32, 32), "out", repeats=1)
    assert seconds is not None and seconds > 0
