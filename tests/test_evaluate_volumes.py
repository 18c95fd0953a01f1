"""`seg-xai evaluate` on NIfTI volumes with NIfTI label volumes: pairing by relative path and stem
(the double suffix .nii.gz), integer labels, the recorded failures (no label, another size,
non-integer values, a value that is no class, a 2-D image in a run of volumes), finite metrics for a
gradient CAM and a perturbation method on a small MONAI UNet, a resumed run that skips finished
volumes and ends with the same numbers, --sliding-window, and the errors (missing nibabel, a method
that cannot explain volumes, a window with the wrong number of axes)."""
import csv
import json
import math
import os
import re
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from seg_xai_fast import cli
from seg_xai_fast.apps.evaluate_pairs import find_pairs, read_label, split_name
from seg_xai_fast.models import load_model

nib = pytest.importorskip("nibabel")
pytest.importorskip("monai")

UNET_ARGS = {"spatial_dims": 3, "in_channels": 1, "out_channels": 3, "channels": [4, 8], "strides": [2],
             "num_res_units": 1}
SIDE = 16


@pytest.fixture(autouse=True)
def one_thread():
    """The volumes are tiny: one torch thread is fastest, and keeps the shared CPU usable."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def save(path, data):
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(data, np.eye(4)), str(path))


def volume_and_label(rng):
    label = np.zeros((SIDE,) * 3, np.uint8)
    label[2:8, 3:9, 4:10] = 1
    label[9:14, 8:15, 2:7] = 2
    image = rng.random((SIDE,) * 3).astype(np.float32) + (label == 1)
    return image, label


@pytest.fixture
def dataset(tmp_path):
    """images/sub/v0..v2.nii.gz with labels: v0 at the same relative path, v1 elsewhere under LABELS
    (found by its stem, .nii.gz stripped whole), v2 as .nii (another suffix at the same path); and
    the failures, named after their reason."""
    rng = np.random.default_rng(0)
    images, labels = tmp_path / "images", tmp_path / "labels"
    for i, where in enumerate(["sub/v0.nii.gz", "flat/v1.nii.gz", "sub/v2.nii"]):
        image, label = volume_and_label(rng)
        save(images / "sub" / f"v{i}.nii.gz", image)
        save(labels / where, label)
    image, label = volume_and_label(rng)
    save(images / "sub" / "x_nolabel.nii.gz", image)
    save(images / "sub" / "x_small.nii.gz", image)
    save(labels / "sub" / "x_small.nii.gz", label[:8, :8, :8])
    save(images / "sub" / "x_fraction.nii.gz", image)
    save(labels / "sub" / "x_fraction.nii.gz", label.astype(np.float32) / 2)
    save(images / "sub" / "x_value.nii.gz", image)
    save(labels / "sub" / "x_value.nii.gz", np.where(label == 2, 7, label).astype(np.uint8))
    Image.new("RGB", (16, 16)).save(images / "sub" / "y_flat.png")  # a 2-D pair in a run of volumes
    Image.new("L", (16, 16)).save(labels / "sub" / "y_flat.png")
    torch.manual_seed(0)
    weights = tmp_path / "unet.pt"
    torch.save(load_model("monai:UNet", model_args=UNET_ARGS).model.state_dict(), weights)
    return images, labels, weights


def evaluate(argv, capsys):
    code = cli.main(["evaluate"] + [str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def model_argv(weights):
    return ["--model", "monai:UNet", "--model-args", json.dumps(UNET_ARGS), "--weights", weights, "--layer", "model.2.0"]


def test_split_name_and_pairing_by_path_and_stem(dataset):
    images, labels, _ = dataset
    assert split_name(images / "sub" / "v0.nii.gz") == ("v0", ".nii.gz")
    assert split_name(images / "a.b.png") == ("a.b", ".png")
    pairs = {p.key: p for p in find_pairs([str(images)], str(labels))}
    assert pairs["sub/v0.nii.gz"].label == str(labels / "sub" / "v0.nii.gz")
    assert pairs["sub/v1.nii.gz"].label == str(labels / "flat" / "v1.nii.gz")
    assert pairs["sub/v2.nii.gz"].label == str(labels / "sub" / "v2.nii")
    assert pairs["sub/x_nolabel.nii.gz"].label is None
    assert "looked for sub/x_nolabel.nii/.nii.gz" in pairs["sub/x_nolabel.nii.gz"].why
    assert pairs["sub/y_flat.png"].label == str(labels / "sub" / "y_flat.png")  # images pair with label maps
    label = read_label(str(labels / "sub" / "v0.nii.gz"))
    assert label.dtype == torch.int64 and label.shape == (SIDE,) * 3 and set(label.unique().tolist()) == {0, 1, 2}
    with pytest.raises(ValueError, match=r"non-integer values \(e.g. 0.5\)"):
        read_label(str(labels / "sub" / "x_fraction.nii.gz"))


def test_volumes_give_finite_metrics_record_failures_and_resume_to_the_same_numbers(tmp_path, dataset, capsys):
    images, labels, weights = dataset
    out = tmp_path / "out"
    argv = [images, "--labels", labels, *model_argv(weights), "--methods", "gradcam,occlusion", "--option", "window=8",
            "--option", "stride=8", "--metrics", "all", "--steps", "4", "--samples", "3", "--no-progress", "--json",
            "--out", out]
    code, stdout, _ = evaluate(argv, capsys)
    assert code == 0
    result = json.loads(stdout)
    assert result["images"] == 3
    for method in ("gradcam", "occlusion"):
        for metric, value in result["overall"][method].items():
            assert value is not None and math.isfinite(value), (method, metric)
        assert set(result["per_class"][method]) == {"1", "2"}
    reasons = {f["image"]: f["reason"] for f in result["failures"]}
    assert reasons.keys() == {"sub/x_nolabel.nii.gz", "sub/x_small.nii.gz", "sub/x_fraction.nii.gz",
                              "sub/x_value.nii.gz", "sub/y_flat.png"}
    assert "no label volume for it" in reasons["sub/x_nolabel.nii.gz"]
    assert "the label volume is 8×8×8 voxels, the image 16×16×16" in reasons["sub/x_small.nii.gz"]
    assert "non-integer values" in reasons["sub/x_fraction.nii.gz"]
    assert re.search(r"label values \[7\] are neither classes of the model \(0..2\)", reasons["sub/x_value.nii.gz"])
    assert "a 2-D image in a run of NIfTI volumes" in reasons["sub/y_flat.png"]

    # Resume: keep the header and the first finished volume, rerun: the others are scored again,
    # that one is not, and the numbers are those of the complete run.
    log = out / "evaluate.jsonl"
    lines = log.read_bytes().splitlines(keepends=True)
    first = next(i for i, line in enumerate(lines) if json.loads(line).get("type") == "image")
    kept = json.loads(lines[first])["key"]
    log.write_bytes(b"".join(lines[: first + 1]))
    rows_before = (out / "rows.csv").read_text()
    code, again, _ = evaluate(argv, capsys)
    assert code == 0 and json.loads(again) == result
    assert (out / "rows.csv").read_text() == rows_before
    records = [json.loads(line) for line in log.read_bytes().splitlines()[1:]]
    assert [r["key"] for r in records].count(kept) == 1 and len(records) == len(lines) - 1
    with open(out / "rows.csv") as f:
        assert {r["image"] for r in csv.DictReader(f)} == {"sub/v0.nii.gz", "sub/v1.nii.gz", "sub/v2.nii.gz"}


def test_sliding_window_evaluation(tmp_path, dataset, capsys):
    images, labels, weights = dataset
    base = [images / "sub" / "v0.nii.gz", "--labels", labels, *model_argv(weights), "--methods", "gradcam",
            "--metrics", "pointing_game,roc_auc,deletion", "--steps", "2", "--no-progress", "--json"]
    code, stdout, _ = evaluate(base + ["--sliding-window", "8,8,8", "--overlap", "0.5"], capsys)
    assert code == 0
    result = json.loads(stdout)
    assert result["images"] == 1 and not result["failures"]
    assert all(math.isfinite(v) for v in result["overall"]["gradcam"].values())
    code, plain, _ = evaluate(base, capsys)  # without the window: the same model, other numbers
    assert code == 0 and json.loads(plain)["overall"] != result["overall"]
    code, _, err = evaluate(base + ["--sliding-window", "8,8"], capsys)
    assert code == 2 and "--sliding-window 8,8 has 2 axes but the inputs have 3 spatial axes" in err


def test_errors_name_the_extra_and_the_method(tmp_path, dataset, capsys, monkeypatch):
    images, labels, weights = dataset
    out = tmp_path / "out"
    code, _, err = evaluate([images, "--labels", labels, *model_argv(weights), "--methods", "segxrescam",
                             "--no-progress", "--out", out], capsys)
    assert code == 2 and "method 'segxrescam' cannot explain volumes" in err
    assert not (out / "evaluate.jsonl").exists()
    monkeypatch.setitem(sys.modules, "nibabel", None)
    code, _, err = evaluate([images, "--labels", labels, *model_argv(weights), "--no-progress", "--out", out], capsys)
    assert code == 2 and "pip install 'seg_xai_fast[medical]'" in err
    assert not os.path.exists(out / "evaluate.jsonl")


def test_the_volume_examples_of_docs_metrics_run_and_show_their_results():
    """docs/metrics.md's section on volumes: both Python examples run as written (tests/test_readme.py's
    run_block checks each result comment)."""
    from test_readme import python_blocks, run_block

    doc = (Path(__file__).resolve().parents[1] / "docs" / "metrics.md").read_text()
    section = doc[doc.index("## Volumes: 3-D metrics and NIfTI label volumes"):]
    blocks = python_blocks(section)
    assert len(blocks) == 2, "docs/metrics.md lost a volume example"
    assert sum(run_block(block, "docs/metrics.md") for block in blocks) >= 12


@pytest.mark.filterwarnings("ignore::FutureWarning")  # torch.jit's deprecation notices
def test_a_torchscript_volume_model_runs_the_input_space_methods_without_a_layer(tmp_path, dataset, capsys):
    images, labels, _ = dataset
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv3d(1, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv3d(4, 3, 3, padding=1))
    path = tmp_path / "net.ts"
    torch.jit.save(torch.jit.trace(net.eval(), torch.zeros(1, 1, 8, 8, 8)), str(path))
    code, stdout, _ = evaluate([images / "sub" / "v0.nii.gz", "--labels", labels, "--model", path, "--methods", "occlusion",
                                "--option", "window=8", "--option", "stride=8", "--steps", "2", "--no-progress", "--json"],
                               capsys)
    assert code == 0
    result = json.loads(stdout)
    assert result["images"] == 1 and all(math.isfinite(v) for v in result["overall"]["occlusion"].values())
