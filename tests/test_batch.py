"""`seg-xai explain`: inputs, bad files, resume, crash safety, the store's precision, errors."""
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import seg_xai_fast as sx
from seg_xai_fast.apps.batch.inputs import decode_image
from seg_xai_fast.cli import main
from seg_xai_fast.demo.model import DemoSegNet
from seg_xai_fast.apps.batch.store import expand_maps, load_explanation, read_manifest
from seg_xai_fast.viz import to_frames

LAST_LINE = re.compile(r"^explained=(\d+) failed=(\d+) images_per_s=(\d+\.\d+)$")
# load_explanation vs a direct Explainer call: float16 storage of the layer-resolution pre-image
# (measured max ≈ 4.5e-4 over methods, layers and sizes, see docs/batch.md).
STORE_TOL = 1e-3


def _rgb(seed, h, w):
    images, _ = sx.synthetic_scenes(1, seed=seed, size=(max(h, 32), max(w, 32)))
    return (images[0, :, :h, :w].permute(1, 2, 0).numpy() * 255 + 0.5).astype(np.uint8)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """A folder (with a sub-folder), a glob-able folder of JPEGs and a list file, good and bad files."""
    root = tmp_path_factory.mktemp("inputs")
    (root / "imgs" / "sub").mkdir(parents=True)
    (root / "jpgs").mkdir()
    good = {}
    for i in range(3):
        good[f"imgs/rgb{i}.png"] = _rgb(i, 64, 64)
        Image.fromarray(good[f"imgs/rgb{i}.png"]).save(root / f"imgs/rgb{i}.png")
    Image.fromarray(_rgb(5, 48, 72)).save(root / "imgs/sub/wide.png")  # another size: its own batch
    Image.fromarray(_rgb(6, 64, 64)[..., 0]).save(root / "imgs/gray.png")  # L
    Image.fromarray(np.dstack([_rgb(7, 64, 64), np.full((64, 64), 128, np.uint8)])).save(root / "imgs/rgba.png")
    Image.fromarray(_rgb(8, 64, 64)).convert("P").save(root / "imgs/palette.png", transparency=0)
    Image.fromarray((np.linspace(0, 65535, 64 * 64).reshape(64, 64)).astype(np.uint16)).save(root / "imgs/gray16.png")
    Image.fromarray(_rgb(9, 64, 64)).save(root / "imgs/full.png")
    data = (root / "imgs/full.png").read_bytes()
    (root / "imgs/truncated.png").write_bytes(data[: len(data) // 2])
    (root / "imgs/sub/notes.png").write_text("this is text, not a PNG\n")
    (root / "imgs/readme.md").write_text("ignored: not an image suffix\n")
    for i in range(2):
        Image.fromarray(_rgb(20 + i, 64, 64)).save(root / f"jpgs/photo{i}.jpg", quality=95)
    (root / "list.txt").write_text("# one path per line, relative to this file\nextra/listed.png\nextra/missing.png\n"
                                   "imgs/rgb0.png\n")  # rgb0 also comes from the folder: counted once
    (root / "extra").mkdir()
    Image.fromarray(_rgb(30, 64, 64)).save(root / "extra/listed.png")
    return root


GOOD = 11  # 3 rgb + wide + gray + rgba + palette + gray16 + full + 1 listed... see test_mixed_inputs
BAD = {"truncated.png", "notes.png", "missing.png"}


def _run(capsys, *argv):
    rc = main(["explain", *map(str, argv)])
    out, err = capsys.readouterr()
    return rc, out, err


def _args(inputs, out, model_file, *extra):
    return (inputs / "imgs", str(inputs / "jpgs" / "*.jpg"), inputs / "list.txt", "--out", out,
            "--model", model_file, "--layer", "decoder", "--batch-size", "4", "--no-progress", *extra)


def _check_store(out):
    """Every manifest entry points at complete files; returns {input: entry}."""
    header, entries = read_manifest(out)
    assert header is not None and header["type"] == "run"
    current = {}
    for e in entries:
        assert (out / e["maps"]).is_file()
        with np.load(out / e["maps"]) as data:  # the maps file of the image's batch
            assert data["maps"].dtype == np.float16 and list(data["classes"]) == e["classes"]
            assert data["maps"].shape[1] == len(e["classes"])
            assert json.loads(str(data["meta"]))["inputs"][e["member"]] == e["input"]
        for rel in e["overlays"]:
            assert Image.open(out / rel).size == (e["size"][1], e["size"][0])
        current[e["input"]] = e
    assert not list((out / ".tmp").glob("*")), "temp files left behind"
    return current


@pytest.fixture(scope="module")
def first_run(inputs, model_file, tmp_path_factory):
    out = tmp_path_factory.mktemp("out") / "run"
    rc = main(["explain", *map(str, _args(inputs, out, model_file, "--workers", "2", "--save", "maps,overlays"))])
    return out, rc


def test_mixed_inputs_counts_failures_and_exit_code(first_run, inputs, capsys):
    out, rc = first_run
    assert rc == 3
    entries = _check_store(out)
    names = sorted(os.path.basename(p) for p in entries)
    assert names == sorted(["rgb0.png", "rgb1.png", "rgb2.png", "wide.png", "gray.png", "rgba.png", "palette.png",
                            "gray16.png", "full.png", "photo0.jpg", "photo1.jpg", "listed.png"])
    lines = (out / "failures.csv").read_text().splitlines()
    assert lines[0] == "path,reason"
    failed = {os.path.basename(line.split(",")[0]): line for line in lines[1:]}
    assert set(failed) == BAD
    assert "file not found" in failed["missing.png"]
    assert "truncated" in failed["truncated.png"]
    for e in entries.values():
        assert len(e["overlays"]) == 4 and e["classes"] == [0, 1, 2, 3]
    wide = next(e for p, e in entries.items() if p.endswith("wide.png"))
    assert wide["size"] == [48, 72]


def test_last_line_format_and_resume_skips_finished(first_run, inputs, model_file, capsys):
    out, _ = first_run
    before = {p.name: p.stat().st_mtime_ns for p in (out / "maps").rglob("*.npz")}
    rc, stdout, _ = _run(capsys, *_args(inputs, out, model_file, "--workers", "0", "--save", "maps,overlays"))
    assert rc == 3  # the bad files are retried, and fail again
    m = LAST_LINE.match(stdout.strip().splitlines()[-1])
    assert m and m.group(1) == "0" and m.group(2) == "3"
    after = {p.name: p.stat().st_mtime_ns for p in (out / "maps").rglob("*.npz")}
    assert after == before  # nothing rewritten
    # A lost maps file is redone on the next run: its batch's images, and only them.
    victim = sorted((out / "maps").rglob("*.npz"))[0]
    lost = [e for e in _check_store(out).values() if out / e["maps"] == victim]
    assert lost
    victim.unlink()
    rc, stdout, _ = _run(capsys, *_args(inputs, out, model_file, "--workers", "0", "--save", "maps,overlays"))
    assert LAST_LINE.match(stdout.strip().splitlines()[-1]).group(1) == str(len(lost))
    assert len(_check_store(out)) == 12


def test_other_settings_refused_unless_force(first_run, inputs, model_file, tmp_path, capsys):
    out, _ = first_run
    rc, _, err = _run(capsys, *_args(inputs, out, model_file, "--method", "gradcam++", "--save", "maps,overlays"))
    assert rc == 2 and "method" in err and "gradcam++" in err and "--force" in err
    copy = tmp_path / "copy"
    rc, _, _ = _run(capsys, inputs / "jpgs", "--out", copy, "--model", model_file, "--layer", "decoder", "--workers", "0")
    assert rc == 0
    rc, stdout, _ = _run(capsys, inputs / "jpgs", "--out", copy, "--model", model_file, "--layer", "decoder",
                         "--workers", "0", "--method", "layercam", "--force")
    assert rc == 0 and LAST_LINE.match(stdout.strip().splitlines()[-1]).group(1) == "2"
    header, entries = read_manifest(copy)
    assert header["method"] == "layercam" and len(list(entries)) == 2


def test_decode_converts_modes(inputs):
    for name in ("gray.png", "rgba.png", "palette.png", "gray16.png", "rgb0.png"):
        image = decode_image(str(inputs / "imgs" / name))
        assert image.shape == (3, 64, 64) and image.dtype == torch.float32
        assert 0 <= image.min() and image.max() <= 1
    gray16 = decode_image(str(inputs / "imgs" / "gray16.png"))
    assert torch.equal(gray16[0], gray16[2])
    assert gray16.max().item() == 1.0 and gray16.min().item() == 0.0
    assert len(torch.unique(gray16)) > 256  # 16-bit precision kept


@pytest.mark.parametrize("method,layer", [("gradcam", "decoder"), ("layercam", "encoder.stage3"), ("eigencam", "decoder")])
def test_load_explanation_matches_explainer(inputs, model_file, tmp_path, capsys, method, layer):
    out = tmp_path / "out"
    rc, _, _ = _run(capsys, inputs / "imgs" / "rgb1.png", inputs / "imgs" / "sub" / "wide.png", "--out", out,
                    "--model", model_file, "--layer", layer, "--method", method, "--workers", "0", "--no-progress")
    assert rc == 0
    model = torch.load(model_file, weights_only=False)
    explainer = sx.Explainer(model, layer, method)
    for name in ("rgb1.png", "sub/wide.png"):
        path = inputs / "imgs" / name
        direct = explainer(decode_image(str(path))[None]).maps[0]
        stored = load_explanation(out, path)
        assert stored.maps.shape == direct.shape and stored.maps.dtype == torch.float32
        assert stored.classes == [0, 1, 2, 3] and stored.method == method and stored.layer == layer
        assert (stored.maps - direct).abs().max().item() <= STORE_TOL
    with pytest.raises(FileNotFoundError, match="no explanation"):
        load_explanation(out, inputs / "imgs" / "rgb2.png")


def test_layer_resolution_maps_roundtrip_sizes():
    """The store keeps the explainer's layer-resolution maps as float16; reading them back gives
    its full maps (tolerance STORE_TOL: float16 rounding of values in [0, 1], amplified at most
    by the bilinear resize and min-max on read)."""
    torch.manual_seed(1)
    explainer = sx.Explainer(DemoSegNet().eval(), "decoder", "gradcam++")
    for size in [(61, 47), (96, 128)]:
        images = torch.rand(2, 3, *size)
        full = explainer(images).maps
        compact = explainer(images, resolution="layer").maps
        assert compact.shape[-2:] == (-(-size[0] // 2), -(-size[1] // 2))
        back = torch.stack([expand_maps(c.half(), size, size) for c in compact])
        assert (back - full).abs().max().item() <= STORE_TOL
        assert torch.equal(expand_maps(torch.zeros(1, *compact.shape[-2:], dtype=torch.float16), size, size),
                           torch.zeros(1, *size))  # an empty class stays all zeros


def test_usage_errors_exit_2(inputs, model_file, tmp_path, capsys):
    out = tmp_path / "out"
    base = ("--out", out, "--model", model_file, "--layer", "decoder", "--workers", "0", "--no-progress")
    rc, _, err = _run(capsys, tmp_path / "nothing_here", *base)
    assert rc == 2 and "nothing_here" in err and "matched no image" in err
    rc, _, err = _run(capsys, str(tmp_path / "*.png"), *base)
    assert rc == 2 and "matched no image" in err
    rc, _, err = _run(capsys, inputs / "jpgs", *base, "--save", "maps,heatmaps")
    assert rc == 2 and "--save" in err and "heatmaps" in err
    rc, _, err = _run(capsys, inputs / "jpgs", *base, "--batch-size", "0")
    assert rc == 2 and "--batch-size" in err
    rc, _, err = _run(capsys, inputs / "jpgs", *base, "--classes", "7")
    assert rc == 2 and "classes" in err and "7" in err
    rc, _, err = _run(capsys, inputs / "jpgs", "--out", tmp_path / "o2", "--model", model_file, "--workers", "0")
    assert rc == 2 and "no default target layer: pass --layer" in err
    rc, _, err = _run(capsys, inputs / "jpgs", *base[:-5], "--layer", "decoderr")
    assert rc == 2 and "--layer" in err and "decoder" in err
    if not torch.cuda.is_available():
        rc, _, err = _run(capsys, inputs / "jpgs", *base, "--device", "cuda")
        assert rc == 2 and "--device" in err and "CUDA" in err
    with pytest.raises(SystemExit) as exc:  # argparse: a missing --out
        main(["explain", str(inputs / "jpgs")])
    assert exc.value.code == 2


@pytest.mark.slow
def test_sigkill_midway_then_rerun_completes(tmp_path, model_file):
    src = tmp_path / "in"
    src.mkdir()
    images, _ = sx.synthetic_scenes(48, seed=3, size=64)
    for i, image in enumerate((images.permute(0, 2, 3, 1).numpy() * 255).astype(np.uint8)):
        Image.fromarray(image).save(src / f"s{i:03d}.png")
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "seg_xai_fast.cli", "explain", str(src), "--out", str(out), "--model", model_file,
           "--layer", "decoder", "--batch-size", "2", "--workers", "1", "--save", "maps,overlays"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=tmp_path)
    manifest = out / "manifest.jsonl"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        if manifest.is_file() and manifest.read_bytes().count(b"\n") >= 5:  # header + 4 images
            break
        time.sleep(0.01)
    assert proc.poll() is None, "the run ended before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    done = _check_store_after_kill(out)
    assert 4 <= len(done) < 48
    rerun = subprocess.run(cmd + ["--no-progress"], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert rerun.returncode == 0, rerun.stderr
    m = LAST_LINE.match(rerun.stdout.strip().splitlines()[-1])
    assert m and int(m.group(1)) == 48 - len(done) and m.group(2) == "0"
    entries = _check_store(out)
    assert len(entries) == 48
    # Batches of 2: 24 maps files, plus any written by the killed run whose lines it never appended.
    files = {p.relative_to(out).as_posix() for p in (out / "maps").rglob("*.npz")}
    assert {e["maps"] for e in entries.values()} <= files and len(files) >= 24


def _check_store_after_kill(out):
    """After a kill: complete manifest lines only point at complete files; a torn tail is ignored."""
    header, entries = read_manifest(out)
    assert header is not None
    done = {}
    for e in entries:
        with np.load(out / e["maps"]) as data:
            assert data["maps"].shape[1] == 4
        done[e["input"]] = e
    for npz in (out / "maps").rglob("*.npz"):  # renamed into place only when complete
        with np.load(npz) as data:
            data["maps"]
    return done


def test_torn_manifest_line_is_ignored_and_cut(inputs, model_file, tmp_path, capsys):
    out = tmp_path / "out"
    args = (inputs / "jpgs", "--out", out, "--model", model_file, "--layer", "decoder", "--workers", "0", "--no-progress")
    assert _run(capsys, *args)[0] == 0
    manifest = out / "manifest.jsonl"
    lines = manifest.read_bytes().splitlines(keepends=True)
    manifest.write_bytes(b"".join(lines[:-1]) + lines[-1][:20])  # a kill in the middle of the last append
    header, entries = read_manifest(out)
    assert len(list(entries)) == 1
    rc, stdout, _ = _run(capsys, *args)
    assert rc == 0 and LAST_LINE.match(stdout.strip().splitlines()[-1]).group(1) == "1"
    assert all(json.loads(line) for line in manifest.read_bytes().splitlines())
    assert len(_check_store(out)) == 2


@pytest.mark.slow
def test_ray_local_writes_the_same_layout(inputs, model_file, tmp_path, capsys):
    pytest.importorskip("ray", reason="Ray is an optional extra: pip install 'seg-xai-fast[ray]'")
    local, remote = tmp_path / "local", tmp_path / "ray"
    common = ("--model", model_file, "--layer", "decoder", "--no-progress", "--save", "maps,overlays")
    assert _run(capsys, inputs / "imgs", "--out", local, "--workers", "0", *common)[0] == 3
    rc, stdout, _ = _run(capsys, inputs / "imgs", "--out", remote, "--ray", "local", *common)
    assert rc == 3 and LAST_LINE.match(stdout.strip().splitlines()[-1]).group(2) == "2"
    a, b = _check_store(local), _check_store(remote)
    assert a.keys() == b.keys()
    for path in a:  # the maps files are named by the batches each run formed
        assert a[path]["overlays"] == b[path]["overlays"]
        diff = (load_explanation(local, path).maps - load_explanation(remote, path).maps).abs().max()
        assert diff.item() <= 1e-5


def test_outputs_inside_an_input_folder_are_not_inputs(inputs, model_file, tmp_path, capsys):
    src = tmp_path / "data"
    src.mkdir()
    for name in ("a.png", "b.png"):
        (src / name).write_bytes((inputs / "imgs" / "rgb0.png").read_bytes())
    args = (src, "--out", src / "explained", "--model", model_file, "--layer", "decoder", "--workers", "0",
            "--no-progress", "--save", "maps,overlays")
    assert _run(capsys, *args)[0] == 0
    rc, stdout, err = _run(capsys, *args)  # the 8 overlay PNGs under data/explained are not picked up
    assert rc == 0 and "2 inputs, 2 already explained" in err
    assert LAST_LINE.match(stdout.strip().splitlines()[-1]).group(1) == "0"


def test_overlays_match_the_kernel_on_direct_maps(first_run, inputs, model_file):
    out, _ = first_run
    model = torch.load(model_file, weights_only=False)
    image = decode_image(str(inputs / "imgs" / "rgb2.png"))[None]  # [1,3,64,64]
    res = sx.Explainer(model, "decoder", "gradcam")(image)
    entry = _check_store(out)[str((inputs / "imgs" / "rgb2.png").resolve())]
    frames = to_frames(image)
    assert len(entry["overlays"]) == len(entry["classes"]) == res.maps.shape[1]
    for k, rel in enumerate(entry["overlays"]):
        expected = sx.overlay(frames, res.maps[:, k].contiguous())[0].numpy()
        got = np.asarray(Image.open(out / rel))
        assert np.abs(got.astype(int) - expected.astype(int)).max() <= 1


def test_a_second_concurrent_run_is_refused(inputs, model_file, tmp_path, capsys):
    import fcntl

    out = tmp_path / "out"
    out.mkdir()
    with open(out / ".lock", "a") as lock:  # what a running job holds
        fcntl.flock(lock, fcntl.LOCK_EX)
        rc, _, err = _run(capsys, inputs / "jpgs", "--out", out, "--model", model_file, "--layer", "decoder",
                          "--workers", "0", "--no-progress")
    assert rc == 2 and "another" in err


@pytest.mark.parametrize("method", ["gradcam++", "eigencam"])
def test_runtimes_and_onnx_files_give_the_same_store(inputs, model_file, tmp_path, capsys, method):
    """--runtime onnxruntime (exported on the fly), a .onnx file and --runtime torch: the same
    outputs. Maps within STORE_TOL: the runtimes agree to 1e-4 (test_onnx.py), then each store
    rounds to float16 on its own (half an ulp is 2.4e-4 near 1), which a value may cross."""
    pytest.importorskip("onnxruntime")
    common = ("--layer", "decoder", "--method", method, "--workers", "0", "--no-progress", "--save", "maps,overlays")
    stores = {}
    onnx_file = tmp_path / "demo.onnx"
    sx.export_onnx(torch.load(model_file, weights_only=False), "decoder", onnx_file)
    for runtime, model in (("torch", model_file), ("onnxruntime", model_file), ("auto", onnx_file)):
        out = tmp_path / f"{runtime}-{Path(model).suffix[1:]}"
        rc, stdout, err = _run(capsys, inputs / "imgs", "--out", out, "--model", model, "--runtime", runtime, *common)
        assert rc == 3 and LAST_LINE.match(stdout.strip().splitlines()[-1]).group(2) == "2", err
        header, _ = read_manifest(out)
        assert header["runtime"] == ("torch" if runtime == "torch" else "onnxruntime")
        stores[out] = _check_store(out)
    (a, sa), *others = stores.items()
    for b, sb in others:
        assert sa.keys() == sb.keys()
        for path in sa:
            diff = (load_explanation(a, path).maps - load_explanation(b, path).maps).abs().max()
            assert diff.item() <= STORE_TOL, (b, path)


def test_runtime_errors_exit_2(inputs, model_file, tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    base = ("--workers", "0", "--no-progress")
    rc, _, err = _run(capsys, inputs / "imgs", "--out", tmp_path / "a", "--model", model_file,
                      "--layer", "encoder.stage3", "--method", "gradcam", "--runtime", "onnxruntime", *base)
    assert rc == 2 and "--runtime: runtime onnxruntime cannot serve gradcam at layer 'encoder.stage3'" in err
    assert "linear head" in err  # why
    onnx_file = tmp_path / "demo.onnx"
    sx.export_onnx(torch.load(model_file, weights_only=False), "decoder", onnx_file)
    rc, _, err = _run(capsys, inputs / "imgs", "--out", tmp_path / "b", "--model", onnx_file, "--runtime", "torch", *base)
    assert rc == 2 and "--runtime onnxruntime" in err


def test_maps_computed_beside_the_next_forward_fail_image_by_image(tmp_path, monkeypatch, capsys):
    """The demo model's linear head: the main thread runs only the forwards, the writer thread
    computes the maps from their outputs (Deferred). A failure there is retried image by image:
    the bad image is a recorded failure, its batchmates are explained and equal a direct call."""
    from seg_xai_fast.apps.batch import engine as batch_engine
    from seg_xai_fast.engine.base import ExplainerBase

    src = tmp_path / "in"
    src.mkdir()
    for i in range(3):
        Image.fromarray(_rgb(40 + i, 64, 64)).save(src / f"good{i}.png")
    Image.fromarray(np.full((64, 64, 3), 255, np.uint8)).save(src / "white.png")  # fails in the maps step
    finished = []
    plain_explain_outputs = ExplainerBase.explain_outputs

    def explain_outputs(self, outputs, *args, **kwargs):
        finished.append(outputs.images.shape[0])
        if bool((outputs.images.flatten(1).amin(dim=1) == 1).any()):  # an all-white image in the batch
            raise ValueError("no map for a white image")
        return plain_explain_outputs(self, outputs, *args, **kwargs)

    monkeypatch.setattr(ExplainerBase, "explain_outputs", explain_outputs)
    deferred = []
    monkeypatch.setattr(batch_engine.Deferred, "__init__",
                        lambda self, engine, outputs: (deferred.append(1), setattr(self, "engine", engine),
                                                       setattr(self, "outputs", outputs))[0])
    out = tmp_path / "out"
    rc, stdout, _ = _run(capsys, src, "--out", out, "--model", "demo", "--batch-size", "4", "--workers", "0",
                         "--no-progress")
    assert rc == 3 and LAST_LINE.match(stdout.strip().splitlines()[-1]).groups()[:2] == ("3", "1")
    # (the first: the linear head's proof on one image) the batch, then each image alone
    assert deferred == [1] and finished[1:] == [4, 1, 1, 1, 1]
    failures = (out / "failures.csv").read_text()
    assert "white.png" in failures and "no map for a white image" in failures
    monkeypatch.undo()
    explainer = sx.Explainer(sx.demo_model(), "decoder", "gradcam")
    for i in range(3):
        path = src / f"good{i}.png"
        direct = explainer(decode_image(path)[None]).maps[0]
        stored = load_explanation(out, path)
        assert stored.classes == list(range(direct.shape[0]))
        assert (stored.maps - direct).abs().max().item() <= STORE_TOL


def test_large_forward_outputs_are_explained_at_once(monkeypatch):
    """Only small forward passes wait for the writer thread (several batches' outputs are alive
    while they wait); a larger one is explained on the spot, with the same maps."""
    from seg_xai_fast.apps.batch import engine as batch_engine

    images, _ = sx.synthetic_scenes(2, seed=5, size=64)
    explainer = sx.Explainer(sx.demo_model(), "decoder", "gradcam")
    engine = batch_engine.BatchEngine(explainer, None, torch.device("cpu"), defer=True)
    small = engine.explain(images)
    assert isinstance(small, batch_engine.Deferred)
    size = batch_engine.pass_bytes(small.outputs)
    monkeypatch.setattr(batch_engine, "DEFER_MAX_BYTES", size - 1)
    large = engine.explain(images)
    assert isinstance(large, batch_engine.Explained)
    [(_, waited)], failed = small.explain(["a", "b"])
    assert not failed and torch.equal(waited.maps, large.maps) and waited.classes == large.classes


def test_the_callers_torch_thread_count_comes_back_also_when_writing_fails(tmp_path, monkeypatch, capsys):
    from seg_xai_fast.apps.batch import engine as batch_engine

    src = tmp_path / "in"
    src.mkdir()
    for i in range(2):
        Image.fromarray(_rgb(50 + i, 32, 32)).save(src / f"a{i}.png")
    before = torch.get_num_threads()
    torch.set_num_threads(3)  # the caller's setting; the job runs with --threads 1
    try:
        args = ("--model", "demo", "--workers", "0", "--no-progress", "--threads", "1")
        assert _run(capsys, src, "--out", tmp_path / "out", *args)[0] == 0
        assert torch.get_num_threads() == 3

        def failing_write(self, *args, **kwargs):
            raise OSError("disk full")

        monkeypatch.setattr(batch_engine.Explained, "write", failing_write)
        rc, _, err = _run(capsys, src, "--out", tmp_path / "out2", *args)
        assert rc != 0 and "disk full" in err and torch.get_num_threads() == 3
    finally:
        torch.set_num_threads(before)
