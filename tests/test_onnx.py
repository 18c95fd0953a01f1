"""The ONNX Runtime backend against the PyTorch path, its errors and its runtime choice.

Both paths run the same closed form on activations and logits from two runtimes, whose float32
results differ by ~1e-6 relative; the maps (in [0, 1]) agree to 1e-4 (measured: ≤ 1e-5).
Each model is exported once at one size and explained at another size and batch, so the tests
also cover the dynamic axes.
"""
import os

import pytest
import torch
import torchvision.models.segmentation as tvseg

pytest.importorskip("onnxruntime", reason="the ONNX Runtime backend needs onnxruntime (pip install '.[test]')")
pytest.importorskip("onnx", reason="export_onnx writes its metadata with the onnx package")

import seg_xai_fast as sx  # noqa: E402
from seg_xai_fast.cli import main as cli_main  # noqa: E402
from seg_xai_fast.demo.model import DemoSegNet  # noqa: E402
from seg_xai_fast.runtimes.choice import make_explainer  # noqa: E402
from seg_xai_fast.runtimes.export import export_logits_onnx, export_onnx  # noqa: E402
from seg_xai_fast.runtimes.onnx_explainer import OnnxExplainer, default_providers  # noqa: E402

TOL = 1e-4
METHODS = ["gradcam", "gradcam++", "xgradcam", "hirescam", "layercam", "eigencam"]


def _tv(name):
    torch.manual_seed(0)
    return getattr(tvseg, name)(weights=None, weights_backbone=None, num_classes=21).eval()


def _demo():
    torch.manual_seed(0)
    return DemoSegNet().eval()


HEADS = {  # name: (model factory, target layer, export size)
    "demo": (_demo, "decoder", 64),
    "deeplabv3_mobilenet_v3_large": (lambda: _tv("deeplabv3_mobilenet_v3_large"), "classifier.3", 96),
    "lraspp_mobilenet_v3_large": (lambda: _tv("lraspp_mobilenet_v3_large"), sx.InputOf("classifier.high_classifier"), 96),
    "fcn_resnet50": (lambda: _tv("fcn_resnet50"), "classifier.2", 48),
}


# The torchvision architectures take most of the suite's time: `pytest -m "not slow"` keeps the demo model.
@pytest.fixture(scope="module", params=[n if n == "demo" else pytest.param(n, marks=pytest.mark.slow)
                                        for n in sorted(HEADS)])
def exported(request, tmp_path_factory):
    return _export(request.param, tmp_path_factory)


def _export(name, tmp_path_factory):
    make, layer, size = HEADS[name]
    model = make()
    path = tmp_path_factory.mktemp("onnx") / f"{name}.onnx"
    export_onnx(model, layer, path, torch.rand(1, 3, size, size + 8, generator=torch.Generator().manual_seed(0)))
    # Another size and batch than the export's: the axes are dynamic.
    images = torch.rand(2, 3, size + 16, size, generator=torch.Generator().manual_seed(1))
    return name, model, layer, path, images


# The perturbation methods run many forwards: the demo model and one torchvision architecture.
@pytest.fixture(scope="module", params=["demo", pytest.param("lraspp_mobilenet_v3_large", marks=pytest.mark.slow)])
def exported_for_perturbation(request, tmp_path_factory):
    return _export(request.param, tmp_path_factory)


@pytest.mark.parametrize("method", METHODS)
def test_maps_equal_pytorch_path(exported, method):
    name, model, layer, path, images = exported
    onnx_explainer = OnnxExplainer(path, method)
    torch_explainer = sx.Explainer(model, layer, method)
    masks = (torch.rand(2, 3, *images.shape[-2:], generator=torch.Generator().manual_seed(2)) > 0.7).float()
    for classes, region in ((None, None), ([0, 1, 2], masks)):
        ours = onnx_explainer(images, classes=classes, masks=region)
        want = torch_explainer(images, classes=classes, masks=region)
        assert ours.classes == want.classes and ours.maps.shape == want.maps.shape, name
        torch.testing.assert_close(ours.maps, want.maps, rtol=0, atol=TOL)
        assert torch.equal(ours.labels, want.labels) and torch.equal(ours.active, want.active)
        assert ours.info["runtime"] == "onnxruntime" and ours.method == method
        low = onnx_explainer(images, classes=classes, masks=region, resolution="layer").maps
        torch.testing.assert_close(low, torch_explainer(images, classes=classes, masks=region, resolution="layer").maps,
                                   rtol=0, atol=TOL)
    if method != "eigencam":
        assert torch_explainer.gradient_path == "analytic"


PERTURBATION_OPTIONS = {"scorecam": {}, "rise": {"n_masks": 48, "batch_size": 16},
                        "occlusion": {"window": 16, "stride": 12}}


@pytest.mark.parametrize("method", sorted(PERTURBATION_OPTIONS))
@pytest.mark.parametrize("score", ["logit", "probability"])
def test_perturbation_methods_equal_pytorch_path(exported_for_perturbation, method, score):
    """Perturbed forwards on ONNX Runtime give the PyTorch path's maps to 5e-3 (raw maps: of their
    largest value). The two runtimes' scores differ by ~1e-6 relative; the attributions are
    differences of nearly equal scores (occlusion, RISE's weighted sums) or their softmax over
    channels (Score-CAM), which amplifies that by the ratio of the scores to their differences,
    and the min-max normalisation divides it again by the map's range. Both are large for a
    random-initialised model's tiny score drops: LRASPP's occlusion measured 2.2e-3 raw
    (probability scores) and 3.3e-3 normalised; the demo model ≤ 1e-4."""
    name, model, layer, path, images = exported_for_perturbation
    options = {**PERTURBATION_OPTIONS[method], "score": score}
    layer = layer if method == "scorecam" else None
    masks = (torch.rand(2, 3, *images.shape[-2:], generator=torch.Generator().manual_seed(2)) > 0.7).float()
    for normalize in (True, False):
        ours = OnnxExplainer(path, method, options=options, normalize=normalize)(images, [0, 1, 2], masks)
        want = sx.Explainer(model, layer, method, options=options, normalize=normalize)(images, [0, 1, 2], masks)
        assert ours.maps.shape == want.maps.shape and ours.info["perturbed_forwards"] == want.info["perturbed_forwards"]
        # raw maps relative to their largest value (absolute 1e-9 for a random-initialised model
        # whose output barely depends on the occluded windows: DeepLabV3 gave exact zeros)
        scale = 1.0 if normalize else max(want.maps.abs().max().item(), 1e-6)
        diff = (ours.maps - want.maps).abs().max().item() / scale
        assert diff <= 5e-3, f"{name} {method} normalize={normalize}: {diff:.2e}"
        assert ours.info["runtime"] == "onnxruntime" and ours.layer == want.layer


def test_forward_outputs(exported):
    name, model, layer, path, images = exported
    outputs = OnnxExplainer(path).forward(images)
    activations, logits, labels = outputs.activations, outputs.logits, outputs.labels
    assert outputs.has_outputs and outputs.images is images
    with torch.no_grad():
        out = model(images)
    want = out["out"] if isinstance(out, dict) else out
    assert logits.shape == want.shape and labels.shape == (2, *images.shape[-2:]) and activations.ndim == 4
    assert torch.equal(labels, logits.argmax(dim=1))


def test_format_2_files_with_a_labels_output_still_work(demo_file, tmp_path):
    """Files exported before the labels left the graph (format 2: an ArgMax output "labels") are
    read, and their labels used; a format the code does not know is refused with a clear error."""
    import json

    import onnx
    from onnx import helper

    from seg_xai_fast.runtimes.export import METADATA_KEY

    def rewrite(fmt, with_labels):
        proto = onnx.load(str(demo_file))
        meta = json.loads(proto.metadata_props[0].value)
        meta["format"] = fmt
        if with_labels:
            proto.graph.node.append(helper.make_node("ArgMax", ["logits"], ["labels"], axis=1, keepdims=0))
            proto.graph.output.append(helper.make_tensor_value_info("labels", onnx.TensorProto.INT64,
                                                                    ["batch", "height", "width"]))
            meta["outputs"] = ["logits", "activations", "labels"]
        del proto.metadata_props[:]
        entry = proto.metadata_props.add()
        entry.key, entry.value = METADATA_KEY, json.dumps(meta)
        path = tmp_path / f"format{fmt}.onnx"
        onnx.save(proto, str(path))
        return path

    old = OnnxExplainer(rewrite(2, True), "gradcam")
    new = OnnxExplainer(demo_file, "gradcam")
    assert old.graph_labels and not new.graph_labels
    images = torch.rand(2, 3, 72, 64, generator=torch.Generator().manual_seed(5))
    a, b = old.forward(images), new.forward(images)
    assert all(torch.equal(getattr(a, x), getattr(b, x)) for x in ("activations", "logits", "labels"))
    assert torch.equal(old(images).maps, new(images).maps)
    with pytest.raises(ValueError, match=r"metadata format 1; this version reads formats \[2, 3, 4\]"):
        OnnxExplainer(rewrite(1, False))


def test_layer_without_linear_head_is_refused_at_export(tmp_path):
    model = _demo()
    with pytest.raises(ValueError, match=r"does not feed a linear head.*sx\.Explainer"):
        export_onnx(model, "encoder.stage3", tmp_path / "m.onnx", torch.rand(1, 3, 64, 64))
    assert os.listdir(tmp_path) == []  # nothing left behind
    path = export_onnx(model, "encoder.stage3", tmp_path / "m.onnx", torch.rand(1, 3, 64, 64), require_head=False)
    assert os.listdir(tmp_path) == ["m.onnx"]
    res = OnnxExplainer(path, "eigencam")(torch.rand(1, 3, 64, 64))
    assert res.maps.shape == (1, 4, 64, 64)
    with pytest.raises(ValueError, match=r"needs gradients.*without a linear head.*eigencam"):
        OnnxExplainer(path, "gradcam")


def test_file_without_our_metadata(tmp_path):
    path = export_logits_onnx(_demo(), tmp_path / "plain.onnx", torch.rand(1, 3, 64, 64))
    with pytest.raises(ValueError, match=r"no seg_xai_fast metadata.*sx\.export_onnx"):
        OnnxExplainer(path)
    junk = tmp_path / "junk.onnx"
    junk.write_text("not a model")
    with pytest.raises(ValueError, match="cannot load .*junk.onnx.* as an ONNX model"):
        OnnxExplainer(junk)
    with pytest.raises(FileNotFoundError):
        OnnxExplainer(tmp_path / "missing.onnx")


@pytest.fixture(scope="module")
def demo_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("demo") / "demo.onnx"
    return export_onnx(_demo(), "decoder", path, torch.rand(1, 3, 64, 64))


def test_providers(demo_file):
    assert "CPUExecutionProvider" in default_providers()
    assert OnnxExplainer(demo_file).provider == default_providers()[0]
    explainer = OnnxExplainer(demo_file, providers=["CPUExecutionProvider"])
    assert explainer.provider == "CPUExecutionProvider"
    with pytest.raises(ValueError, match=r"providers must be .*got \['NoSuchExecutionProvider'\]"):
        OnnxExplainer(demo_file, providers=["NoSuchExecutionProvider"])


def test_bad_inputs_and_methods(demo_file):
    explainer = OnnxExplainer(demo_file)
    with pytest.raises(ValueError, match="method must be one of"):
        explainer.method = "scorecam++"
    with pytest.raises(ValueError, match="'ablationcam' is not served on ONNX Runtime: it replaces the target layer's output inside the model"):
        explainer.method = "ablationcam"
    with pytest.raises(ValueError, match="options \\['window'\\] are not options of method 'rise'"):
        OnnxExplainer(demo_file, "rise", options={"window": 3})
    with pytest.raises(ValueError, match="normalize=False .* not 'gradcam'"):
        OnnxExplainer(demo_file, "gradcam", normalize=False)
    with pytest.raises(ValueError, match=r"images must have 3 channels"):
        explainer(torch.rand(1, 4, 64, 64))
    with pytest.raises(TypeError, match="images must be a torch.Tensor"):
        explainer([1, 2, 3])
    with pytest.raises(ValueError, match=r"classes must be ids in \[0, 3\]"):
        explainer(torch.rand(1, 3, 64, 64), classes=[7])


def test_runtime_choice_and_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SEG_XAI_CACHE", str(tmp_path / "cache"))
    model_file = tmp_path / "demo.pt"
    torch.save(_demo(), model_file)
    choice = make_explainer(str(model_file), "decoder", "gradcam++", "onnxruntime", image_size=(64, 80))
    assert choice.runtime == "onnxruntime" and isinstance(choice.explainer, OnnxExplainer)
    cached = list((tmp_path / "cache" / "onnx").iterdir())
    assert len(cached) == 1 and cached[0].suffix == ".onnx"
    stamp = cached[0].stat().st_mtime_ns
    again = make_explainer(str(model_file), "decoder", "gradcam++", "auto", image_size=(64, 80))
    assert again.runtime == "onnxruntime" and cached[0].stat().st_mtime_ns == stamp  # reused, not re-exported
    # No linear head: auto falls back to torch and says why; onnxruntime refuses.
    fallback = make_explainer(str(model_file), "encoder.stage3", "gradcam", "auto", image_size=(64, 64))
    assert fallback.runtime == "torch" and "linear head" in fallback.note
    with pytest.raises(ValueError, match="does not feed a linear head"):
        make_explainer(str(model_file), "encoder.stage3", "gradcam", "onnxruntime", image_size=(64, 64))
    # eigencam needs no head, so onnxruntime serves it at that layer.
    assert make_explainer(str(model_file), "encoder.stage3", "eigencam", "auto", image_size=(64, 64)).runtime == "onnxruntime"


def test_export_command(tmp_path, capsys):
    model_file = tmp_path / "demo.pt"
    torch.save(_demo(), model_file)
    out = tmp_path / "out" / "demo.onnx"
    assert cli_main(["export-onnx", str(model_file), str(out), "--layer", "decoder", "--size", "64"]) == 0
    assert "linear head found" in capsys.readouterr().out and out.is_file()
    assert sorted(os.listdir(out.parent)) == ["demo.onnx"]
    assert cli_main(["export-onnx", str(model_file), str(tmp_path / "x.onnx"), "--layer", "encoder.stage3",
                     "--size", "64"]) == 2
    assert "does not feed a linear head" in capsys.readouterr().err
    assert not (tmp_path / "x.onnx").exists()


def test_export_leaves_the_model_as_found(tmp_path):
    """Regression: the exporter toggles its wrapper's mode recursively; the model must stay in eval."""
    from seg_xai_fast.demo.model import DemoSegNet

    model = DemoSegNet().eval()
    model.encoder.requires_grad_(False)
    flags = [p.requires_grad for p in model.parameters()]
    sx.export_onnx(model, "decoder", tmp_path / "m.onnx", torch.rand(1, 3, 64, 64))
    assert not any(m.training for m in model.modules())
    assert [p.requires_grad for p in model.parameters()] == flags


def _with_metadata(source, tmp_path, name, edit=None, meta_from=None):
    """A copy of the .onnx file `source` whose seg_xai_fast metadata is edit(meta) (or a raw
    string), or the metadata of `meta_from` as it is."""
    import json

    import onnx

    from seg_xai_fast.runtimes.export import METADATA_KEY

    proto = onnx.load(str(source))
    raw = onnx.load(str(meta_from)).metadata_props[0].value if meta_from else proto.metadata_props[0].value
    if edit is not None:
        edited = edit(json.loads(raw))
        raw = edited if isinstance(edited, str) else json.dumps(edited)
    del proto.metadata_props[:]
    entry = proto.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, raw
    path = tmp_path / name
    onnx.save(proto, str(path))
    return path


def test_metadata_from_another_graph_is_refused(demo_file, tmp_path):
    """A graph from model B carrying model A's metadata gave wrong maps silently.
    Same architecture, other weights: only the graph digest tells them apart."""
    torch.manual_seed(1)
    other = export_onnx(DemoSegNet().eval(), "decoder", tmp_path / "b.onnx", torch.rand(1, 3, 64, 64))
    OnnxExplainer(other)  # its own metadata is fine
    swapped = _with_metadata(other, tmp_path, "b_with_a.onnx", meta_from=demo_file)
    with pytest.raises(ValueError, match=r"b_with_a\.onnx.*broken seg_xai_fast metadata: it was not written for this graph"):
        OnnxExplainer(swapped)


@pytest.mark.parametrize("edit,message", [
    (lambda m: "{not json", "it is not JSON"),
    (lambda m: [1, 2], "expected a JSON object"),
    (lambda m: {k: v for k, v in m.items() if k != "layer"}, "field 'layer' must be a str, got None"),
    (lambda m: {**m, "num_classes": "4"}, "field 'num_classes' must be a int"),
    (lambda m: {**m, "num_classes": 7, "head": None}, "not written for this graph, or was edited since"),
    (lambda m: {**m, "head": {**m["head"], "shape": [4, 3]}}, r"head shape must be \[num_classes=4, channels="),
    (lambda m: {**m, "head": {**m["head"], "weight": "AAAA"}}, "the head weight holds 3 bytes"),
    (lambda m: {**m, "head": {**m["head"], "weight": "%%%"}}, "the head weight is not base64"),
    (lambda m: {**m, "example_input": [1, 3, 64]}, "field 'example_input' must be 4 positive ints"),
    (lambda m: {**m, "graph_digest": "0" * 16}, "not written for this graph"),
    (lambda m: {**m, "channels": m["channels"] + 1, "head": None}, "the graph's activation channels"),
])
def test_broken_metadata_is_a_value_error_naming_the_file(demo_file, tmp_path, edit, message):
    """Broken metadata gave KeyError / JSONDecodeError / "cannot reshape array"."""
    path = _with_metadata(demo_file, tmp_path, "broken.onnx", edit)
    with pytest.raises(ValueError, match=r"broken\.onnx.*" + message):
        OnnxExplainer(path, "eigencam")


def test_wrong_class_count_in_older_formats_fails_at_the_forward(demo_file, tmp_path):
    """Format 3 files carry no digest: a class count that the logits contradict is caught when they come."""
    path = _with_metadata(demo_file, tmp_path, "old.onnx",
                          lambda m: {**{k: v for k, v in m.items() if k != "graph_digest"}, "format": 3,
                                     "num_classes": 7, "head": None})
    explainer = OnnxExplainer(path, "eigencam")
    with pytest.raises(ValueError, match=r"old\.onnx.*logits have shape \[1, 4, 64, 64\].*says 7 classes"):
        explainer(torch.rand(1, 3, 64, 64))
