"""Every method on the command line: `seg-xai methods`, --option, and the perturbation family in
explain (both runtimes), evaluate and bench."""
import json

import numpy as np
import pytest
import torch
from PIL import Image

import seg_xai_fast as sx
from seg_xai_fast import cli
from seg_xai_fast.apps.batch.store import load_explanation, read_manifest
from seg_xai_fast.apps.batch.inputs import decode_image
from seg_xai_fast.apps.bench import run_bench
from seg_xai_fast.cli.common import parse_options
from seg_xai_fast.demo.model import DemoSegNet
from seg_xai_fast.engine.methods import registered
from seg_xai_fast.metrics import METRIC_KEYS

# small settings so that every perturbation method runs in about a second on the demo model
FAST_OPTIONS = {"n_masks": 24, "window": (16, 16), "stride": 16, "batch_size": 12}
FAST = ["--option", "n_masks=24", "--option", "window=16,16", "--option", "stride=16", "--option", "batch_size=12"]


def fast(method):
    """--option arguments of FAST_OPTIONS that `method` takes (a one-method command refuses others)."""
    return [arg for key, value in FAST_OPTIONS.items() if key in sx.method_options(method)
            for arg in ("--option", f"{key}={','.join(map(str, value)) if isinstance(value, tuple) else value}")]


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("model") / "model.pt"
    torch.save(DemoSegNet().eval(), path)
    return str(path)


@pytest.fixture(scope="module")
def image_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("images")
    images, _ = sx.synthetic_scenes(2, seed=3, size=48)
    for i, image in enumerate(images):
        Image.fromarray((image.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)).save(root / f"scene{i}.png")
    return root


def test_methods_command_lists_every_method_with_its_options(capsys):
    assert cli.main(["methods", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert sorted(listed) == sorted(registered())
    assert listed["rise"]["options"] == sx.method_options("rise") and listed["rise"]["target_layer"].startswith("none")
    assert listed["gradcam"]["family"] == "gradient"
    assert cli.main(["methods"]) == 0
    assert ("occlusion  [perturbation; target layer none (input space); runtimes torch, onnxruntime]"
            in capsys.readouterr().out)


def test_parse_options():
    assert parse_options(["n_masks=500", "p=0.25", "window=16,8", "baseline=mean", "flag=true", "x = 3"]) == {
        "n_masks": 500, "p": 0.25, "window": (16, 8), "baseline": "mean", "flag": True, "x": 3}
    for bad in ("n_masks", "=3"):
        with pytest.raises(ValueError, match="--option must be KEY=VALUE"):
            parse_options([bad])


@pytest.mark.parametrize("runtime", ["torch", "onnxruntime"])
@pytest.mark.parametrize("method", ["rise", "scorecam", "featureablation"])
def test_explain_runs_perturbation_methods_on_both_runtimes(model_file, image_dir, tmp_path, capsys, method, runtime,
                                                            monkeypatch):
    monkeypatch.setenv("SEG_XAI_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "out"
    layer = ["--layer", "decoder"] if method == "scorecam" else []
    argv = ["explain", str(image_dir), "--out", str(out), "--model", model_file, *layer, "--method", method,
            "--runtime", runtime, "--workers", "0", "--no-progress", *fast(method)]
    assert cli.main(argv) == 0, capsys.readouterr().err
    header, entries = read_manifest(out)
    assert header["method"] == method and header["runtime"] == runtime and len(list(entries)) == 2
    assert header["options"]["n_masks" if method == "rise" else "batch_size"] in (24, 12)
    assert header["map_resolution"] == ("layer" if method == "scorecam" else "full")
    assert header["layer"] == ("decoder" if method == "scorecam" else "input")
    model = torch.load(model_file, weights_only=False)
    options = {k: v for k, v in FAST_OPTIONS.items() if k in sx.method_options(method)}
    explainer = sx.Explainer(model, "decoder" if method == "scorecam" else None, method, options=options)
    for path in sorted(image_dir.glob("*.png")):
        direct = explainer(decode_image(str(path))[None]).maps[0]
        stored = load_explanation(out, path).maps
        # float16 storage of maps in [0, 1] (and, for scorecam, the layer-resolution resize on read);
        # ONNX Runtime's scores differ from torch's by ~1e-6 relative
        assert (stored - direct).abs().max().item() <= 2e-3
    # other options: other results, so the folder is refused without --force
    changed = [a.replace("n_masks=24", "n_masks=25").replace("batch_size=12", "batch_size=13") for a in argv]
    assert cli.main(changed) == 2
    assert "options" in capsys.readouterr().err


def test_explain_refuses_a_layer_for_an_input_space_method_and_unknown_options(model_file, image_dir, tmp_path, capsys):
    base = ["explain", str(image_dir), "--out", str(tmp_path / "o"), "--model", model_file, "--runtime", "torch",
            "--workers", "0", "--no-progress"]
    assert cli.main(base + ["--method", "occlusion", "--layer", "decoder"]) == 2
    assert "--layer" in capsys.readouterr().err
    assert cli.main(base + ["--method", "rise", "--option", "window=3"]) == 2
    err = capsys.readouterr().err
    assert "--option" in err and "'window'" in err and "n_masks" in err


def test_evaluate_reports_the_perturbation_family(model_file, capsys):
    code = cli.main(["evaluate", "--model", model_file, "--layer", "decoder",
                     "--methods", "scorecam,ablationcam,rise,occlusion", "--n", "1", "--size", "48", "--steps", "2",
                     "--json", "--no-progress", *FAST])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    result = json.loads(captured.out)
    assert list(result) == ["scorecam", "ablationcam", "rise", "occlusion"]
    for row in result.values():
        assert list(row) == list(METRIC_KEYS)
        assert row["pointing_game"] is not None
    assert cli.main(["evaluate", "--model", model_file, "--layer", "decoder", "--methods", "gradcam", "--n", "1",
                     "--option", "n_masks=3"]) == 2
    assert "'n_masks'" in capsys.readouterr().err


def test_bench_rows_for_the_perturbation_family():
    lines = []
    rows = run_bench("demo", methods=["ablationcam", "occlusion"], num_classes=2, size=48, repeats=1, peer_repeats=1,
                     options={"window": 16, "stride": 16}, log=lines.append)
    names = [r["row"] for r in rows]
    for method, peer in (("ablationcam", "pytorch-grad-cam"), ("occlusion", "captum")):
        assert any(n.startswith(f"{method} floor (") for n in names)
        assert {f"{method} fused", f"{method} torch", f"{method} {peer}"} <= set(names)
        ours = next(r for r in rows if r["row"] == f"{method} fused")
        assert ours["x_floor"] > 0 and ours["peer_over_ours"] > 0
    assert "occlusion floor (9 forwards)" in names  # 48² in 16² windows with stride 16
    assert "predicted targets" not in "\n".join(names)  # a gradient-method row: none asked
    assert "ablationcam pytorch-grad-cam" in lines[-1]
