"""What a new user hits: the paths (models, classes, hints, pictures), each on tiny sizes."""
import pathlib
import re
import subprocess
import sys

import numpy as np
import pytest
import torch

import seg_xai_fast as sx
from seg_xai_fast import cli
from seg_xai_fast.apps import bench
from seg_xai_fast.engine import model_logits
from seg_xai_fast.runtimes.choice import make_explainer
from conftest import random_demo, torchvision_model

ROOT = pathlib.Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------- 13.9 small wrong hints


def test_export_onnx_without_a_head_names_the_cli_flag(tmp_path, capsys):
    assert cli.main(["export-onnx", "demo", str(tmp_path / "m.onnx"), "--layer", "encoder.stage4", "--size", "32"]) == 2
    err = capsys.readouterr().err
    assert "--gradient-free" in err


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
    head = block.split("# Compact maps")[0]  # up to the Component call
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


# --------------------------------------------------------------------------- 13.4 one model-loading path

from seg_xai_fast import models  # noqa: E402

LRASPP = "torchvision:lraspp_mobilenet_v3_large"


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """A 5-class LRASPP state dict, a DeepLabV3 one (another architecture) and a whole demo model."""
    folder = tmp_path_factory.mktemp("checkpoints")
    paths = {"lraspp5": folder / "lraspp5.pt", "deeplab": folder / "deeplab.pt", "whole": folder / "whole.pt"}
    torch.save(torchvision_model("lraspp_mobilenet_v3_large", num_classes=5).state_dict(), paths["lraspp5"])
    torch.save(torchvision_model("deeplabv3_mobilenet_v3_large", num_classes=5).state_dict(), paths["deeplab"])
    torch.save(random_demo(), paths["whole"])
    return {k: str(v) for k, v in paths.items()}


@pytest.mark.parametrize("argv", [
    ["explain", "img.png", "--out", "o"], ["video", "in.mp4", "out.mp4"], ["bench"], ["evaluate"],
    ["export-onnx", LRASPP, "out.onnx"]])
def test_every_model_command_takes_weights_and_num_classes(argv):
    args = cli.build_parser().parse_args(argv + ["--weights", "w.pt", "--num-classes", "5", "--layer", "x"])
    assert (args.weights, args.num_classes, args.layer) == ("w.pt", 5, "x")


def test_class_count_is_read_from_the_checkpoint(checkpoints):
    loaded = models.load_model(LRASPP, weights=checkpoints["lraspp5"])
    assert model_logits(loaded.model, torch.rand(1, 3, 32, 32)).shape[1] == 5
    with pytest.raises(ValueError, match="--num-classes 3 does not fit.*has 5 classes"):
        models.load_model(LRASPP, weights=checkpoints["lraspp5"], num_classes=3)
    # A random model of another class count, and the options passed through make_explainer.
    assert model_logits(models.load_model(LRASPP, num_classes=3).model, torch.rand(1, 3, 32, 32)).shape[1] == 3
    choice = make_explainer(LRASPP, weights=checkpoints["lraspp5"], runtime="torch")
    assert choice.explainer(torch.rand(1, 3, 32, 32)).maps.shape[1] == 5


def test_a_checkpoint_that_does_not_fit_is_told_briefly(checkpoints, capsys):
    assert cli.main(["export-onnx", LRASPP, "o.onnx", "--weights", checkpoints["deeplab"]]) == 2
    err = capsys.readouterr().err
    assert "do not fit torchvision:lraspp_mobilenet_v3_large" in err and "missing" in err and "unexpected" in err
    assert len(err) < 800  # not a dump of every key
    assert cli.main(["export-onnx", "demo", "o.onnx", "--weights", checkpoints["lraspp5"]]) == 2
    assert "torchvision:NAME models only" in capsys.readouterr().err


def test_a_whole_model_file_without_a_layer_gets_suggestions(checkpoints, capsys):
    assert cli.main(["export-onnx", checkpoints["whole"], "o.onnx"]) == 2
    err = capsys.readouterr().err
    assert "pass --layer" in err and "'classifier:input'" in err and "'decoder.up8.conv'" in err


def test_explain_command_loads_the_checkpoint(checkpoints, tmp_path, capsys):
    from PIL import Image

    Image.new("RGB", (32, 32), (120, 30, 200)).save(tmp_path / "a.png")
    code = cli.main(["explain", str(tmp_path / "a.png"), "--out", str(tmp_path / "out"), "--model", LRASPP,
                     "--weights", checkpoints["lraspp5"], "--runtime", "torch", "--workers", "0", "--no-progress"])
    assert code == 0, capsys.readouterr().err
    assert "explained=1" in capsys.readouterr().out


# --------------------------------------------------------------------------- 13.6 random models say so


def test_a_random_torchvision_model_says_once_that_its_maps_explain_nothing(checkpoints, monkeypatch, capsys):
    monkeypatch.setattr(models, "_warned_random", set())
    models.load_model(LRASPP)
    models.load_model(LRASPP)
    err = capsys.readouterr().err
    assert err.count("explain nothing") == 1 and "--weights" in err
    monkeypatch.setattr(models, "_warned_random", set())
    models.load_model(LRASPP, weights=checkpoints["lraspp5"])
    models.load_model("demo")
    assert capsys.readouterr().err == ""


# --------------------------------------------------------------------------- 13.10 pictures


def test_contact_sheet_has_a_label_legend_and_a_colour_bar(tmp_path):
    import numpy as np
    from PIL import Image

    from seg_xai_fast.demo.run import run_demo
    from seg_xai_fast.kernels.colormaps import colormap_lut
    from seg_xai_fast.viz import label_legend

    summary = run_demo(tmp_path, n=1, size=48, colormap="turbo")
    sheet = np.asarray(Image.open(summary["contact_sheet"]))
    footer = sheet[18 + 160:].reshape(-1, 3)  # below the title row and the one row of 160-px tiles
    colours = {tuple(c) for c in footer.tolist()}
    for name, colour in label_legend(sx.CLASS_NAMES):  # every class swatch
        assert colour in colours, name
    lut = colormap_lut("turbo").numpy()
    assert tuple(lut[0]) in colours and tuple(lut[255]) in colours  # both ends of the colour bar


def test_bench_chart_title_avoids_glyphs_the_font_lacks():
    title = bench.chart_title("demo", "decoder", 128, 4)
    assert "128x128" in title and "²" not in title


def test_evaluate_curves_have_a_y_axis_label():
    import numpy as np

    from seg_xai_fast.apps.evaluate import curves_chart

    results = {"gradcam": {"deletion_curve": [1.0, 0.5, 0.0], "insertion_curve": [0.0, 0.5, 1.0],
                           "deletion_auc": 0.5, "insertion_auc": 0.5}}
    picture = np.asarray(curves_chart(results))
    strip = picture[100:300, 4:22]  # left of the tick labels of the deletion panel, mid-height
    assert (strip.min(axis=2) < 100).sum() > 50  # dark text pixels: the rotated axis label


def test_video_frames_name_the_class_they_show():
    from seg_xai_fast.apps.video.frames import label_frames, overlay_stream
    from seg_xai_fast.viz import to_frames

    frames = torch.zeros(2, 120, 200, 3, dtype=torch.uint8)
    label_frames(frames, torch.tensor([1, 3]), sx.CLASS_NAMES)
    corner = frames[:, :30, :120]
    assert corner[0].max() > 200 and not torch.equal(corner[0], corner[1])  # white text, different classes
    assert frames[:, 40:].max() == 0  # nothing outside the corner
    images, _ = sx.synthetic_scenes(1, seed=3, size=96)
    explainer = sx.Explainer(sx.demo_model(), "decoder", "gradcam")
    plain = next(overlay_stream(to_frames(images).numpy(), explainer, label=False))
    labelled = next(overlay_stream(to_frames(images).numpy(), explainer, class_names=sx.CLASS_NAMES))
    differs = np.nonzero((plain != labelled).any(axis=2))
    assert differs[0].size and differs[0].max() < 30 and differs[1].max() < 96  # only the corner changed


# --------------------------------------------------------------------------- 13.7 evaluate's progress


class _RecordingBar:
    """Stands in for tqdm: records the count after every update and what is written."""

    instances: list = []

    def __init__(self, total, **kwargs):
        self.total, self.n, self.counts, self.lines = total, 0, [], []
        _RecordingBar.instances.append(self)

    def update(self, n):
        self.n += n
        self.counts.append(self.n)

    def set_description(self, text):
        pass

    def write(self, text, file=None):
        self.lines.append(text)

    def close(self):
        pass


def test_evaluate_progress_moves_within_a_chunk_ends_at_n_and_estimates_the_run(monkeypatch):
    import tqdm.auto

    from seg_xai_fast.apps.evaluate import evaluate

    monkeypatch.setattr(tqdm.auto, "tqdm", _RecordingBar)
    _RecordingBar.instances.clear()
    images, truth = sx.synthetic_scenes(3, seed=5, size=32)
    evaluate(sx.demo_model(), "decoder", ["gradcam", "eigencam"], images, truth, [1, 2, 3], steps=1,
             stages=["classifier"], batch_size=2, progress=True)
    bar, = _RecordingBar.instances
    counts = bar.counts
    assert bar.total == 3 and counts[-1] == 3  # exactly N at the end: no float drift past the total
    assert all(b > a for a, b in zip(counts, counts[1:]))
    assert max(b - a for a, b in zip([0] + counts, counts)) <= 0.25  # several moves per scene
    assert len(bar.lines) == 1 and re.search(r"s per scene .*about \d+ s for 3 scenes", bar.lines[0])
