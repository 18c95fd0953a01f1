"""The attribution family's API around the maths (tests/test_attributions.py checks the values):
every class from one call, chunking that does not change the results, the maps' channel
reduction, the model left as found, bad input, ONNX Runtime's refusal and the command line."""
import json

import pytest
import torch

import seg_xai_fast as sx
from seg_xai_fast import cli, kernels
from seg_xai_fast.apps.bench import run_bench
from seg_xai_fast.engine.attributions import baseline_of, gaussian_blur, integration_points
from seg_xai_fast.engine.perturbation import occlusion_baseline
from conftest import box_masks, random_demo

METHODS = ("saliency", "inputxgradient", "integratedgradients", "smoothgrad")
SMALL = {"integratedgradients": {"n_steps": 3}, "smoothgrad": {"nt_samples": 2, "stdevs": 0.1}}


@pytest.fixture(scope="module")
def scene():
    images, _ = sx.synthetic_scenes(2, seed=4, size=40)
    return random_demo(), images, box_masks(2, 4, 40, seed=1)


@pytest.mark.parametrize("method", METHODS)
def test_every_class_from_one_call_equals_one_class_at_a_time(scene, method):
    model, images, masks = scene
    ex = sx.Explainer(model, None, method, options=SMALL.get(method), normalize=False)
    res = ex(images, masks=masks)
    assert res.maps.shape == (2, 4, 40, 40) and res.attributions.shape == (2, 4, 3, 40, 40)
    assert res.layer == "input" and res.info["backward_passes"] >= 4
    for k in range(4):
        one = ex(images, classes=[k], masks=masks[:, k:k + 1])
        scale = float(one.attributions.abs().max())
        assert float((one.attributions[:, 0] - res.attributions[:, k]).abs().max()) <= 1e-5 * scale
    # the forwards are shared by the classes: as many as for one class
    assert ex(images, classes=[0], masks=masks[:, :1]).info["forwards"] == res.info["forwards"]


@pytest.mark.parametrize("settings", [{"class_chunk": 1}, {"max_memory_mb": 0.01}, {"vjp": "batched"},
                                      {"options": {"batch_size": 1}}, {"backend": "torch"}])
def test_chunks_vjp_and_backend_do_not_change_the_results(scene, settings):
    model, images, masks = scene
    options = {"n_steps": 3, "nt_samples": 2, "stdevs": 0.1, "base": "integratedgradients", "nt_type": "vargrad"}
    want = sx.Explainer(model, None, "smoothgrad", options=options)(images, masks=masks)
    settings = dict(settings)
    settings["options"] = {**options, **settings.get("options", {})}
    got = sx.Explainer(model, None, "smoothgrad", **settings)(images, masks=masks)
    scale = float(want.attributions.abs().max())
    assert float((got.attributions - want.attributions).abs().max()) <= 1e-5 * scale
    torch.testing.assert_close(got.maps, want.maps, rtol=0, atol=1e-4)


def test_maps_are_the_normalised_channel_sum_and_predicted_targets_by_default(scene):
    model, images, _ = scene
    res = sx.Explainer(model, None, "integratedgradients", options={"n_steps": 2})(images)
    want = kernels.reference.normalize_maps(res.attributions.sum(dim=2)) * res.active[:, :, None, None]
    torch.testing.assert_close(res.maps, want, rtol=0, atol=1e-6)
    assert float(res.maps.max()) <= 1 and float(res.maps.min()) >= 0
    for b in range(2):  # the default target: each class's predicted pixels; absent classes give zeros
        present = set(res.labels[b].unique().tolist())
        assert res.active[b].tolist() == [k in present for k in res.classes]
        assert all(float(res.maps[b, k].abs().max()) == 0 for k in range(4) if not res.active[b, k])


def test_the_model_is_left_as_found(scene):
    model, images, masks = scene
    model.train()
    model.decoder.requires_grad_(False)
    before = [(n, p.requires_grad) for n, p in model.named_parameters()]
    hooks = sum(len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks) for m in model.modules())
    with pytest.warns(UserWarning, match="train mode"):
        sx.Explainer(model, None, "smoothgrad", options={"nt_samples": 2})(images, masks=masks)
    assert model.training and all(m.training for m in model.modules())
    assert [(n, p.requires_grad) for n, p in model.named_parameters()] == before
    assert hooks == sum(len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks)
                        for m in model.modules())
    model.eval().requires_grad_(True)
    assert not images.requires_grad


def test_baselines_and_integration_points():
    x = torch.rand(2, 3, 20, 24)
    torch.testing.assert_close(gaussian_blur(x, 4.0), torch.stack([occlusion_baseline(i, "blur", (16, 16)) for i in x]))
    assert baseline_of(torch.rand(1, 1, 5, 6, 7), "blur").shape == (1, 1, 5, 6, 7)  # volumes: every axis
    torch.testing.assert_close(baseline_of(x, "mean"), x.mean(dim=(2, 3), keepdim=True).expand_as(x))
    assert baseline_of(x, torch.ones(3, 20, 24)).shape == x.shape
    from captum.attr._utils.approximation_methods import approximation_parameters

    for method in ("gausslegendre", "riemann_left", "riemann_right", "riemann_middle", "riemann_trapezoid"):
        step_sizes, alphas = approximation_parameters(method)
        a, w = integration_points(method, 7)
        assert a == pytest.approx(alphas(7), abs=1e-7) and w == pytest.approx(step_sizes(7), abs=1e-12)


@pytest.mark.parametrize("method,options,match", [
    ("integratedgradients", {"n_steps": 0}, "option 'n_steps' must be an int ≥ 1.*got 0"),
    ("integratedgradients", {"method": "simpson"}, "option 'method' must be one of .*gausslegendre.*got 'simpson'"),
    ("integratedgradients", {"baseline": "zeros"}, "option 'baseline' must be a finite float, 'mean', 'blur'"),
    ("smoothgrad", {"nt_samples": 0}, "option 'nt_samples' must be an int ≥ 1.*got 0"),
    ("smoothgrad", {"stdevs": -0.1}, "option 'stdevs' must be a finite float ≥ 0.*got -0.1"),
    ("smoothgrad", {"nt_type": "var"}, "option 'nt_type' must be one of .*vargrad.*got 'var'"),
    ("smoothgrad", {"base": "gradcam"}, "option 'base' must be one of .*saliency.*got 'gradcam'"),
    ("saliency", {"abs": 1}, "option 'abs' must be True or False, got 1"),
    ("saliency", {"n_steps": 3}, r"options \['n_steps'\] are not options of method 'saliency'"),
    ("lrp", {"composite": "epsilon_zeta"}, "option 'composite' must be one of .*epsilon_plus_flat.*got 'epsilon_zeta'"),
    ("lrp", {"canonizer": "resnet"}, "option 'canonizer' must be one of .*merge_batchnorm.*got 'resnet'"),
    ("lrp", {"epsilon": 0}, "option 'epsilon' must be a finite float > 0, got 0"),
])
def test_bad_options_are_named(method, options, match):
    with pytest.raises((ValueError, TypeError), match=match):
        sx.Explainer(random_demo(), None, method, options=options)


def test_bad_calls_are_named(scene):
    model, images, _ = scene
    with pytest.raises(ValueError, match="target_layer must be None for method 'saliency'.*got 'decoder'"):
        sx.Explainer(model, "decoder", "saliency")
    ex = sx.Explainer(model, None, "integratedgradients", options={"baseline": torch.zeros(3, 8, 8)})
    with pytest.raises(ValueError, match=r"option 'baseline' must be a tensor of the images' shape \[2, 3, 40, 40\]"
                                         r".*got shape \[3, 8, 8\]"):
        ex(images)
    with pytest.raises(ValueError, match="option 'n_steps' must be ≥ 2 for method 'riemann_left'"):
        sx.Explainer(model, None, "integratedgradients", options={"n_steps": 1, "method": "riemann_left"})(images)
    with pytest.raises(ValueError, match="resolution must be 'full' for method 'saliency'"):
        sx.Explainer(model, None, "saliency")(images, resolution="layer")
    with pytest.raises(ValueError, match=r"images must match the model, which takes images \[B,C,H,W\]"):
        sx.Explainer(model, "decoder", "gradcam")(torch.rand(1, 3, 4, 8, 8))
    with pytest.raises(ValueError, match="3-D volumes must be None .* or a float Tensor"):
        vol = torch.nn.Conv3d(1, 2, 1).eval()
        sx.Explainer(vol, None, "saliency")(torch.rand(1, 1, 4, 4, 4), masks=sx.Box(0, 0, 2, 2))


def test_onnx_runtime_refuses_with_the_torch_runtime_named(tmp_path):
    from seg_xai_fast.runtimes.export import export_onnx

    path = export_onnx(random_demo(), "decoder", tmp_path / "demo.onnx", torch.rand(1, 3, 32, 32))
    for method in METHODS:
        with pytest.raises(ValueError, match=f"method '{method}' is not served on ONNX Runtime: it differentiates down "
                                             r"to the input.*sx.Explainer \(--runtime torch\)"):
            sx.OnnxExplainer(path, method)


@pytest.fixture(scope="module")
def image_dir(tmp_path_factory):
    import numpy as np
    from PIL import Image

    root = tmp_path_factory.mktemp("images")
    images, _ = sx.synthetic_scenes(2, seed=3, size=40)
    for i, image in enumerate(images):
        Image.fromarray((image.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)).save(root / f"s{i}.png")
    return root


def test_docs_examples_run_and_show_their_results():
    """docs/attributions.md's examples run as written, in order in one namespace (tests/test_readme.py's
    checker of the result comments); the IG example checks completeness against the model itself."""
    from pathlib import Path

    from test_readme import python_blocks, run_block

    doc = Path(__file__).resolve().parents[1] / "docs" / "attributions.md"
    blocks = python_blocks(doc.read_text())
    assert len(blocks) == 3
    assert run_block("\n".join(blocks), "docs/attributions.md") >= 6


def test_cli_explain_methods_evaluate_bench(model_file, image_dir, tmp_path, capsys):
    base = ["explain", str(image_dir), "--model", model_file, "--workers", "0", "--no-progress"]
    assert cli.main(base + ["--out", str(tmp_path / "o"), "--method", "integratedgradients", "--option", "n_steps=3",
                            "--runtime", "onnxruntime"]) == 2
    err = capsys.readouterr().err
    assert "runtime onnxruntime cannot serve method 'integratedgradients'" in err and "--runtime torch" in err
    assert cli.main(base + ["--out", str(tmp_path / "o"), "--method", "smoothgrad", "--option", "nt_samples=2",
                            "--runtime", "auto"]) == 0, capsys.readouterr().err
    assert cli.main(base + ["--out", str(tmp_path / "o2"), "--method", "saliency", "--layer", "decoder"]) == 2
    assert "--layer" in capsys.readouterr().err
    assert cli.main(["methods", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert listed["integratedgradients"]["family"] == "attribution"
    assert listed["saliency"]["runtimes"] == ["torch"] and listed["saliency"]["needs_gradients"]
    code = cli.main(["evaluate", "--model", model_file, "--layer", "decoder", "--methods", "saliency,integratedgradients,lrp",
                     "--n", "1", "--size", "40", "--steps", "2", "--json", "--no-progress", "--option", "n_steps=2"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    result = json.loads(captured.out)
    assert list(result) == ["saliency", "integratedgradients", "lrp"]
    assert all(row["pointing_game"] is not None for row in result.values())
    lines = []
    rows = run_bench("demo", methods=["saliency", "smoothgrad", "deeplift", "lrp"], num_classes=2, size=40, repeats=1,
                     peer_repeats=1, options={"nt_samples": 2}, log=lines.append)
    names = [r["row"] for r in rows]
    assert {"saliency floor (1 inputs)", "saliency fused", "saliency captum", "smoothgrad floor (2 inputs)",
            "smoothgrad captum", "deeplift floor (2 inputs)", "deeplift captum", "lrp zennit"} <= set(names)
    assert all(r["x_floor"] > 0 and r["peer_over_ours"] > 0 for r in rows if r["row"].endswith(" fused"))


def test_cli_video_explains_with_an_attribution_method(model_file, tmp_path, capsys):
    pytest.importorskip("av")
    rc = cli.main(["video", "testsrc=size=48x40:rate=25", str(tmp_path / "v.mkv"), "--input-format", "lavfi",
                   "--max-frames", "3", "--model", model_file, "--method", "smoothgrad", "--option", "nt_samples=2",
                   "--runtime", "auto", "--no-progress"])
    out = capsys.readouterr().out.strip().splitlines()
    assert rc == 0 and out[-1].startswith("frames=3 ")


def test_bad_baseline_tensors_are_named():
    with pytest.raises(TypeError, match=r"option 'baseline' must be a float tensor .*got torch.int64 tensor"):
        sx.Explainer(random_demo(), None, "integratedgradients", options={"baseline": torch.zeros(3, 4, 4).long()})
    with pytest.raises(ValueError, match="option 'baseline' must be finite, got a torch.float32 tensor .* NaN or Inf"):
        sx.Explainer(random_demo(), None, "deeplift", options={"baseline": torch.full((3, 4, 4), float("nan"))})
