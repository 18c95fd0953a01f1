"""Methods users define: sx.register_method, `--method package.module:NAME`, entry points, and the
registry's refusals (unknown names, options, variants; specs that cannot run).

The parity test writes a weights function in a user's own module, registers it, and compares it
class by class with a pytorch-grad-cam BaseCAM subclass whose get_cam_weights computes the same
formula in NumPy (≤ 1e-4, the tolerance of every peer comparison: float32 NumPy/OpenCV against
float32 torch, amplified at most by the two min-max normalisations).
"""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

import seg_xai_fast as sx
from seg_xai_fast import cli
from seg_xai_fast.apps.batch.store import read_manifest
from seg_xai_fast.apps.bench import run_bench
from seg_xai_fast.apps.report.build import _class_specific
from seg_xai_fast.engine import methods as registry
from seg_xai_fast.engine.methods import Method, add_method, get_method, remove_method

pgc = pytest.importorskip("pytorch_grad_cam", reason="the grad-cam package is a test dependency: pip install '.[test]'")
from pytorch_grad_cam.base_cam import BaseCAM  # noqa: E402
from pytorch_grad_cam.utils.model_targets import SemanticSegmentationTarget  # noqa: E402
from peers import OutOnly  # noqa: E402
from conftest import box_masks, torchvision_model  # noqa: E402

TOL = 1e-4

USER_MODULE = '''
"""A user's own CAM method, in a module of their own."""
import torch

import seg_xai_fast as sx


def positive_mean(activations, gradients, power=1):
    """Channel weights: the mean positive gradient times the channel's mean activation (to `power`).
    activations [B,C,h,w], gradients [B,K,C,h,w] -> [B,K,C]."""
    return torch.relu(gradients).mean(dim=(-2, -1)) * activations.mean(dim=(-2, -1)).unsqueeze(1) ** power


sx.register_method("positive_mean", weights=positive_mean, options={"power": 1},
                   description="mean positive gradient times mean activation")
'''


class PeerPositiveMean(BaseCAM):
    """The same method as pytorch-grad-cam users write it: a BaseCAM subclass."""

    def __init__(self, model, target_layers, power=1):
        super().__init__(model, target_layers)
        self.power = power

    def get_cam_weights(self, input_tensor, target_layer, target_category, activations, grads):
        return np.maximum(grads, 0).mean(axis=(2, 3)) * activations.mean(axis=(2, 3)) ** self.power


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    """my_cams.py in a folder of its own on sys.path; the method is unregistered afterwards."""
    (tmp_path / "my_cams.py").write_text(USER_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    sys.modules.pop("my_cams", None)
    if "positive_mean" in registry.registered():
        remove_method("positive_mean")


def _torchvision(name, size):
    return torchvision_model(name), torch.rand(2, 3, size, size, generator=torch.Generator().manual_seed(1))


# (model, images, layer, the gradient path our call takes, power). The random-initialised models'
# raw maps are ~1e-9 and their mean activations ~1e-2: with power 1 the product falls below the
# min-max eps (1e-7) and every map is near zero, which would make the comparison vacuous; power 0
# keeps them in range there (the trained demo model takes power 1).
CASES = {
    "demo": lambda: (sx.demo_model(), sx.synthetic_scenes(2, seed=777, size=96)[0], "decoder", "analytic", 1),
    "deeplabv3_mobilenet_v3_large": lambda: (*_torchvision("deeplabv3_mobilenet_v3_large", 96), "backbone.16",
                                             "autograd", 0),
    "fcn_resnet50": lambda: (*_torchvision("fcn_resnet50", 64), "backbone.layer4", "autograd", 0),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_registered_weights_equal_a_basecam_subclass_class_by_class(case, user_module):
    model, images, layer, path, power = CASES[case]()
    spec = get_method("my_cams:positive_mean")  # imports the user's module, which registers it
    assert spec.name == "positive_mean" and not spec.builtin and spec.family == "gradient"
    classes = [0, 1, 3]
    masks = box_masks(images.shape[0], len(classes), images.shape[-1], seed=5)
    explainer = sx.Explainer(model, layer, "positive_mean", options={"power": power})
    ours = explainer(images, classes=classes, masks=masks)  # every class from one call
    assert ours.info["gradient_path"] == path and ours.method == "positive_mean"
    peer = np.zeros(tuple(ours.maps.shape), np.float32)
    with PeerPositiveMean(OutOnly(model), [model.get_submodule(layer)], power) as cam:
        for b in range(images.shape[0]):
            for k, c in enumerate(classes):
                peer[b, k] = cam(input_tensor=images[b:b + 1],
                                 targets=[SemanticSegmentationTarget(c, masks[b, k].numpy())])[0]
    assert peer.reshape(-1, peer.shape[-1] ** 2).max(axis=1).min() > 0.5  # every compared map spans its range
    for b in range(images.shape[0]):
        for k, c in enumerate(classes):
            diff = (ours.maps[b, k] - torch.from_numpy(peer[b, k])).abs().max().item()
            assert diff <= TOL, f"{case} image {b} class {c}: max abs diff {diff:.2e}"


def test_options_reach_the_function_and_both_paths_agree(user_module):
    get_method("my_cams:positive_mean")
    model, images = sx.demo_model(), sx.synthetic_scenes(2, seed=3, size=64)[0]
    squared = sx.Explainer(model, "decoder", "positive_mean", options={"power": 2})(images)
    plain = sx.Explainer(model, "decoder", "positive_mean")(images)
    autograd = sx.Explainer(model, "decoder", "positive_mean", options={"power": 2}, gradient_path="autograd")(images)
    assert squared.info["gradient_path"] == "analytic" and autograd.info["gradient_path"] == "autograd"
    assert (squared.maps - autograd.maps).abs().max() <= 1e-5  # closed form (G formed in chunks) = autograd
    assert (squared.maps - plain.maps).abs().max() > 1e-2  # the option changed the maps
    with pytest.raises(ValueError, match=r"options \['pow'\] are not options of method 'positive_mean'.*'power'"):
        sx.Explainer(model, "decoder", "positive_mean", options={"pow": 2})


def test_a_cam_function_runs_like_the_builtin_it_restates():
    """cam= gives the raw map: Σ_c relu(G)⊙A is LayerCAM, on both gradient paths and raw."""
    sx.register_method("my_layercam", cam=lambda A, G: (torch.relu(G) * A.unsqueeze(1)).sum(dim=2))
    try:
        model, images = sx.demo_model(), sx.synthetic_scenes(2, seed=4, size=64)[0]
        for kwargs in ({}, {"gradient_path": "autograd"}, {"normalize": False}):
            ours = sx.Explainer(model, "decoder", "my_layercam", **kwargs)(images)
            builtin = sx.Explainer(model, "decoder", "layercam", **kwargs)(images)
            assert (ours.maps - builtin.maps).abs().max() <= 1e-5 * max(1.0, float(builtin.maps.abs().max())), kwargs
        assert get_method("my_layercam").class_specific
        assert _class_specific("my_layercam")
    finally:
        remove_method("my_layercam")


def test_onnx_runtime_serves_a_registered_method_through_the_closed_form(user_module, tmp_path):
    get_method("my_cams:positive_mean")
    model, images = sx.demo_model(), sx.synthetic_scenes(2, seed=8, size=64)[0]
    path = tmp_path / "demo.onnx"
    sx.export_onnx(model, "decoder", path, torch.rand(1, 3, 64, 64))
    onnx = sx.OnnxExplainer(path, "positive_mean", options={"power": 2})(images)
    torch_maps = sx.Explainer(model, "decoder", "positive_mean", options={"power": 2})(images).maps
    assert (onnx.maps - torch_maps).abs().max() <= 1e-3  # the runtimes' float rounding (tests/test_onnx.py)


def _write_images(folder, n=2, size=48):
    folder.mkdir()
    for i, image in enumerate(sx.synthetic_scenes(n, seed=3, size=size)[0]):
        Image.fromarray((image.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)).save(folder / f"s{i}.png")
    return folder


def test_command_line_imports_the_users_module(user_module):
    """`seg-xai explain --method my_cams:positive_mean` from the folder holding my_cams.py (a console
    script's sys.path does not start there) and `seg-xai methods --method ...` listing it."""
    images = _write_images(user_module / "images")
    out = user_module / "out"
    run = subprocess.run([sys.executable, "-m", "seg_xai_fast.cli", "explain", str(images), "--out", str(out),
                          "--runtime", "torch", "--workers", "0", "--no-progress", "--method", "my_cams:positive_mean"],
                         cwd=user_module, capture_output=True, text=True, timeout=300,
                         env={**os.environ, "PYTHONSAFEPATH": "1"})  # -m would otherwise put the cwd first
    assert run.returncode == 0, run.stderr
    header, entries = read_manifest(out)
    assert header["method"] == "positive_mean" and len(list(entries)) == 2
    listed = subprocess.run([sys.executable, "-m", "seg_xai_fast.cli", "methods", "--json", "--method",
                             "my_cams:positive_mean"], cwd=user_module, capture_output=True, text=True, timeout=120,
                            env={**os.environ, "PYTHONSAFEPATH": "1"})
    assert listed.returncode == 0, listed.stderr
    row = json.loads(listed.stdout)["positive_mean"]
    assert row["builtin"] is False and row["options"] == {"power": 1} and row["family"] == "gradient"


def test_entry_points_register_installed_methods(tmp_path, monkeypatch):
    """A package declaring `[seg_xai_fast.methods] squared = fake_plugin:squared` is found by
    importlib.metadata and its weights function registered under the entry's name."""
    (tmp_path / "fake_plugin.py").write_text(
        "import torch\n\ndef squared(activations, gradients):\n    return (gradients ** 2).mean(dim=(-2, -1))\n")
    info = tmp_path / "fake_plugin-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: fake-plugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[seg_xai_fast.methods]\nsquared = fake_plugin:squared\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(registry, "_entry_points_loaded", False)
    try:
        assert "squared" in sx.methods()
        res = sx.Explainer(sx.demo_model(), "decoder", "squared")(sx.synthetic_scenes(1, seed=2, size=64)[0])
        assert res.maps.shape == (1, 4, 64, 64) and float(res.maps.amax()) > 0.5
    finally:
        sys.modules.pop("fake_plugin", None)
        if "squared" in registry._REGISTRY:
            remove_method("squared")


def _weights(A, G):
    return G.mean(dim=(-2, -1))


def test_registration_errors_name_the_method():
    sx.register_method("once", weights=_weights)
    try:
        with pytest.raises(ValueError, match="method 'once' is already registered"):
            sx.register_method("once", weights=_weights)
    finally:
        remove_method("once")
    with pytest.raises(ValueError, match="method 'gradcam' is already registered \\(built-in\\)"):
        sx.register_method("gradcam", weights=_weights)
    with pytest.raises(TypeError, match=r"register_method\('both'\): give exactly one of weights= or cam=, got both"):
        sx.register_method("both", weights=_weights, cam=_weights)
    with pytest.raises(TypeError, match="got neither"):
        sx.register_method("neither")
    with pytest.raises(TypeError, match=r"register_method\('one_arg'\): weights must take \(activations, gradients\)"):
        sx.register_method("one_arg", weights=lambda activations: activations)
    with pytest.raises(TypeError, match=r"weights must take \(activations, gradients, k=…\)"):
        sx.register_method("no_k", weights=_weights, options={"k": 1})
    with pytest.raises(TypeError, match="must be callable, got int"):
        sx.register_method("number", weights=3)
    with pytest.raises(ValueError, match="name must be a non-empty string"):
        sx.register_method("a:b", weights=_weights)
    with pytest.raises(ValueError, match="method 'gradcam' is built in and cannot be removed"):
        remove_method("gradcam")
    assert "both" not in sx.methods() and "one_arg" not in sx.methods()


@pytest.mark.parametrize("function,error,message", [
    (lambda A, G: G.mean(dim=(-2, -1))[:, :1], ValueError, r"method 'bad_shape': its weights function must return "
                                                           r"\[B,K,C\] = \[1, 2, 24\] for activations \[1, 24, 32, 32\].*got \[1, 1, 24\]"),
    (lambda A, G: G.mean(dim=(-2, -1)).numpy(), TypeError, "must return a torch.Tensor"),
    (lambda A, G: G.mean(dim=(-2, -1)).long(), TypeError, "must return a float tensor, got torch.int64"),
])
def test_a_function_returning_the_wrong_thing_is_an_error_naming_the_method(function, error, message):
    sx.register_method("bad_shape", weights=function)
    try:
        with pytest.raises(error, match=message):
            sx.Explainer(sx.demo_model(), "decoder", "bad_shape")(sx.synthetic_scenes(1, seed=1, size=64)[0],
                                                                  classes=[1, 2])
    finally:
        remove_method("bad_shape")


def test_a_spec_without_its_familys_behaviour_is_refused():
    """An unknown perturbation variant used to run occlusion, an unknown segment method LIME: a spec
    must say what its family's runner computes."""
    for family, needs in (("perturbation", "perturb"), ("segment", "perturb"),
                          ("activation", "activation_weights"), ("gradient", "kernel")):
        with pytest.raises(ValueError, match=f"method 'variant' \\({family} family\\) must give one of .*'{needs}'"):
            add_method(Method("variant", "no behaviour", family))
    with pytest.raises(ValueError, match="family must be one of"):
        add_method(Method("variant", "d", "mystery", perturb=lambda *a: None))
    assert "variant" not in sx.methods()


def test_unknown_names_are_refused_at_every_entry_point(tmp_path, capsys):
    valid = "method must be one of \\['ablationcam'"
    model, images = sx.demo_model(), sx.synthetic_scenes(1, seed=1, size=48)[0]
    with pytest.raises(ValueError, match=valid):
        sx.Explainer(model, "decoder", "gradcamm")
    with pytest.raises(ValueError, match="cannot import module 'no_such_module'"):
        sx.Explainer(model, "decoder", "no_such_module:cam")
    with pytest.raises(ValueError, match="module 'json' neither registers a method 'nothing'"):
        get_method("json:nothing")
    with pytest.raises(ValueError, match=r"option 'base_method' must be one of \['gradcam'"):
        sx.Explainer(model, "decoder", "finercam", options={"base_method": "gradcamm"})
    with pytest.raises(TypeError, match="option 'features' must be 'predicted' or 'slic'"):
        sx.Explainer(model, None, "lime", options={"features": "superpixels"})
    path = tmp_path / "demo.onnx"
    sx.export_onnx(model, "decoder", path, torch.rand(1, 3, 48, 48))
    with pytest.raises(ValueError, match=valid):
        sx.OnnxExplainer(path, "gradcamm")
    with pytest.raises(ValueError, match=r"options \['n_mask'\] are not options of method 'rise'"):
        sx.OnnxExplainer(path, "rise", options={"n_mask": 3})
    with pytest.raises(ValueError, match=valid):
        run_bench(methods=["gradcamm"], repeats=1, peer=False, log=lambda s: None)
    images_dir = _write_images(tmp_path / "images", n=1)
    for argv in (["explain", str(images_dir), "--out", str(tmp_path / "o"), "--method", "gradcamm"],
                 ["video", str(tmp_path / "in.mp4"), str(tmp_path / "out.mp4"), "--method", "gradcamm"],
                 ["bench", "--methods", "gradcam,gradcamm"],
                 ["evaluate", "--methods", "gradcamm"],
                 ["explain", str(images_dir), "--out", str(tmp_path / "o"), "--method", "rise", "--option",
                  "n_mask=4"]):
        assert _exit_status(argv) == 2, argv
        err = capsys.readouterr().err
        assert "method must be one of ['ablationcam'" in err or "are not options of method 'rise'" in err, (argv, err)
        assert not (tmp_path / "o").exists()  # nothing written


def _exit_status(argv) -> int:
    """cli.main's return code, or the status argparse exits with."""
    try:
        return cli.main(argv)
    except SystemExit as exit:
        return exit.code


def test_report_of_a_perturbation_run_names_the_predicted_classes(tmp_path):
    """The report's class-agnostic flag comes from the spec: only the eigen-style maps are shared
    by every class (it used to be every method without gradients)."""
    assert [_class_specific(m) for m in ("scorecam", "rise", "occlusion", "lime", "randomcam", "gradcam")] == [True] * 6
    assert [_class_specific(m) for m in ("eigencam", "kpcacam", "fem")] == [False] * 3
    from seg_xai_fast.apps.report import build_report

    images = _write_images(tmp_path / "images", n=2, size=48)
    out = tmp_path / "out"
    rc = cli.main(["explain", str(images), "--out", str(out), "--runtime", "torch", "--workers", "0", "--no-progress",
                   "--method", "scorecam", "--option", "batch_size=16"])
    assert rc == 0
    dest = build_report(out, workers=0).parent
    run = _data(dest, "run")
    rows = _data(dest, "pages/1", "pages/1")
    assert run["class_agnostic"] is False
    assert all(row["predicted"] for row in rows), rows  # the predicted classes are named, per image


def _data(dest, file, name=None):
    text = (dest / "data" / f"{file}.js").read_text(encoding="utf-8")
    return json.loads(text[text.index("]=") + 2:-2])  # (window.SXD=...)["name"]=VALUE;


def test_forward_with_raw_maps_runs_no_throwaway_explanation():
    """Explainer.forward() with normalize=False used to explain one image on every call, looking for
    a closed-form head it never cached; raw maps come from the autograd path, so forward keeps the
    images and runs nothing."""
    model = sx.demo_model()
    calls = []
    handle = model.register_forward_hook(lambda m, i, o: calls.append(1))
    try:
        explainer = sx.Explainer(model, "decoder", "gradcam", normalize=False)
        images = sx.synthetic_scenes(2, seed=1, size=64)[0]
        outputs = [explainer.forward(images) for _ in range(3)]
        assert calls == [] and not outputs[0].has_outputs
        res = explainer.explain_outputs(outputs[0])
        assert len(calls) == 2 and res.info["gradient_path"] == "autograd"  # the pass and its one-time exactness check
        assert torch.equal(explainer.explain_outputs(outputs[1]).maps, res.maps) and len(calls) == 3
    finally:
        handle.remove()
