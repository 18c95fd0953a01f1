"""`seg-xai evaluate IMAGES --labels LABELS`: pairing, label formats, recorded failures, outputs,
bad input, and a run killed with SIGKILL that resumes to exactly the numbers of a clean run."""
import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import seg_xai_fast as sx
from seg_xai_fast import cli

from conftest import cli_env

PALETTE = [0, 0, 0, 255, 0, 0, 0, 255, 0, 0, 0, 255] + [0] * (256 * 3 - 12)


def write_pairs(folder: Path, n: int, size: int, seed: int = 4242, nested: bool = True):
    """n scenes as images/<sub>/sN.png with labels/<sub>/sN.png (even: 8-bit index, odd: palette)."""
    images, truth = sx.synthetic_scenes(n, seed=seed, size=size)
    sub = "part" if nested else ""
    (folder / "images" / sub).mkdir(parents=True, exist_ok=True)
    (folder / "labels" / sub).mkdir(parents=True, exist_ok=True)
    for i in range(n):
        pixels = (images[i].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
        Image.fromarray(pixels).save(folder / "images" / sub / f"s{i}.png")
        label = Image.fromarray(truth[i].numpy().astype(np.uint8), mode="P" if i % 2 else "L")
        if i % 2:
            label.putpalette(PALETTE)
        label.save(folder / "labels" / sub / f"s{i}.png")
    return folder / "images", folder / "labels"


def evaluate(argv, capsys):
    code = cli.main(["evaluate"] + [str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_pairs_formats_failures_and_outputs(tmp_path, capsys):
    images, labels = write_pairs(tmp_path, 4, 64)
    # s2's label moves to a flat folder elsewhere in LABELS: found by its stem.
    (labels / "flat").mkdir()
    os.replace(labels / "part" / "s2.png", labels / "flat" / "s2.png")
    # Failures: no label at all, a label of another size, a value the model does not have, an RGB mask.
    Image.new("RGB", (64, 64)).save(images / "part" / "nolabel.png")
    Image.new("RGB", (64, 64)).save(images / "part" / "small.png")
    Image.new("L", (32, 32)).save(labels / "part" / "small.png")
    Image.new("RGB", (64, 64)).save(images / "part" / "value.png")
    Image.fromarray(np.full((64, 64), 7, np.uint8)).save(labels / "part" / "value.png")
    Image.new("RGB", (64, 64)).save(images / "part" / "colour.png")
    Image.new("RGB", (64, 64), (255, 0, 0)).save(labels / "part" / "colour.png")
    out = tmp_path / "out"
    code, stdout, err = evaluate([images, "--labels", labels, "--methods", "gradcam,eigencam", "--steps", "2",
                                  "--out", out, "--json", "--no-progress"], capsys)
    assert code == 0, err
    result = json.loads(stdout)  # exactly one object on stdout
    assert result["images"] == 4
    reasons = {f["image"]: f["reason"] for f in result["failures"]}
    assert set(reasons) == {"part/nolabel.png", "part/small.png", "part/value.png", "part/colour.png"}
    assert "no label map" in reasons["part/nolabel.png"]
    assert "32×32" in reasons["part/small.png"] and "64×64" in reasons["part/small.png"]
    assert "[7]" in reasons["part/value.png"] and "ignore index 255" in reasons["part/value.png"]
    assert "RGB" in reasons["part/colour.png"]
    for method in ("gradcam", "eigencam"):
        overall = result["overall"][method]
        assert all(isinstance(v, float) and np.isfinite(v) for v in overall.values()), overall
        assert set(result["per_class"][method]) <= {"disc", "square", "triangle"}
    with open(out / "rows.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    # Every scored (image, method, class): the classes each label holds, background excluded.
    _, truth = sx.synthetic_scenes(4, seed=4242, size=64)
    want = sum(len(set(t.unique().tolist()) - {0}) for t in truth) * 2
    assert len(rows) == want and {r["image"] for r in rows} == {f"part/s{i}.png" for i in range(4)}
    with open(out / "evaluate_failures.csv", newline="") as f:
        assert len(list(csv.DictReader(f))) == 4
    summary = json.loads((out / "summary.json").read_text())
    assert len(summary["curves"]["gradcam"]["deletion_curve"]) == 3
    for picture in ("curves.png", "distributions.png"):
        with Image.open(out / picture) as im:
            assert im.width > 300
    assert not list(out.glob("*.tmp")) and not list(out.glob(".*tmp*"))


def test_gradcam_pointing_game_on_the_bundled_model_stays_above_0_9(tmp_path, capsys):
    images, labels = write_pairs(tmp_path, 8, 128, seed=4243, nested=False)
    code, stdout, err = evaluate([images, "--labels", labels, "--methods", "gradcam", "--metrics", "pointing_game",
                                  "--json", "--no-progress"], capsys)
    assert code == 0, err
    assert json.loads(stdout)["overall"]["gradcam"]["pointing_game"] >= 0.9


def test_predicted_targets_and_ignore_index(tmp_path, capsys):
    images, labels = write_pairs(tmp_path, 2, 64, nested=False)
    with Image.open(labels / "s0.png") as im:
        lab = np.asarray(im).copy()
    lab[:8] = 200  # an ignored band
    Image.fromarray(lab).save(labels / "s0.png")
    code, stdout, err = evaluate([images, "--labels", labels, "--methods", "gradcam", "--targets", "predicted",
                                  "--ignore-index", "200", "--metrics", "off_target_leakage,roc_auc", "--json",
                                  "--no-progress"], capsys)
    assert code == 0, err
    result = json.loads(stdout)
    assert result["failures"] == [] and result["images"] == 2
    assert np.isfinite(result["overall"]["gradcam"]["roc_auc"])


@pytest.mark.parametrize("argv, message", [
    (["--labels", "EMPTY"], "holds no label map"),
    (["--labels", "MISSING"], "--labels must be a folder"),
    (["--labels", "LABELS", "--ignore-index", "70000"], "--ignore-index must be an int in [0, 65535]"),
    (["--labels", "LABELS", "--ignore-index", "2"], "--ignore-index 2 is a class of the model"),
    (["--labels", "LABELS", "--metrics", "speed"], "--metrics must name some of"),
])
def test_bad_input_is_a_clear_error_and_writes_nothing(tmp_path, capsys, argv, message):
    images, labels = write_pairs(tmp_path, 1, 32)
    (tmp_path / "empty").mkdir()
    swap = {"EMPTY": tmp_path / "empty", "MISSING": tmp_path / "missing", "LABELS": labels}
    out = tmp_path / "out"
    code, stdout, err = evaluate([images] + [swap.get(a, a) for a in argv] + ["--out", out, "--no-progress"], capsys)
    assert code == 2 and stdout == "" and message in err
    assert not out.exists()


def test_labels_without_images_and_changed_settings_are_refused(tmp_path, capsys):
    images, labels = write_pairs(tmp_path, 1, 32)
    code, _, err = evaluate(["--labels", labels, "--no-progress"], capsys)
    assert code == 2 and "IMAGES and --labels go together" in err
    out = tmp_path / "out"
    base = [images, "--labels", labels, "--metrics", "sparseness", "--out", out, "--no-progress"]
    assert evaluate(base, capsys)[0] == 0
    code, _, err = evaluate(base + ["--targets", "predicted"], capsys)
    assert code == 2 and "other settings (targets)" in err and "--force" in err
    assert evaluate(base + ["--targets", "predicted", "--force"], capsys)[0] == 0


def log_lines(out: Path) -> int:
    try:
        return (out / "evaluate.jsonl").read_bytes().count(b"\n")
    except FileNotFoundError:
        return 0


def test_a_run_killed_with_sigkill_resumes_to_the_numbers_of_a_clean_run(tmp_path):
    images, labels = write_pairs(tmp_path, 6, 64)
    argv = [sys.executable, "-m", "seg_xai_fast.cli", "evaluate", str(images), "--labels", str(labels),
            "--methods", "gradcam", "--metrics", "pointing_game,roc_auc,sparseness,deletion,insertion,"
            "faithfulness_correlation,road", "--steps", "4", "--samples", "4", "--no-progress", "--out"]
    env = cli_env(OMP_NUM_THREADS="1")
    clean, killed = tmp_path / "clean", tmp_path / "killed"
    subprocess.run(argv + [str(clean)], env=env, cwd=tmp_path, check=True, capture_output=True, timeout=600)

    proc = subprocess.Popen(argv + [str(killed)], env=env, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while log_lines(killed) < 3 and proc.poll() is None and time.time() < deadline:  # header + 2 images
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done_before = log_lines(killed) - 1
    assert 1 <= done_before < 6, "the run must be killed part-way"
    with open(killed / "evaluate.jsonl", "ab") as f:
        f.write(b'{"type": "image", "key": "part/s5.png", "rows": [')  # as if killed mid-append
    subprocess.run(argv + [str(killed)], env=env, cwd=tmp_path, check=True, capture_output=True, timeout=600)

    assert (killed / "rows.csv").read_text() == (clean / "rows.csv").read_text()
    a, b = (json.loads((d / "summary.json").read_text()) for d in (clean, killed))
    for key in ("overall", "per_class", "curves", "images", "failures"):
        assert a[key] == b[key]
    assert log_lines(killed) == 1 + 6  # the finished images were not scored again


def test_the_report_shows_the_evaluation_beside_the_maps(tmp_path, capsys):
    images, labels = write_pairs(tmp_path, 2, 48, nested=False)
    out = tmp_path / "out"
    assert cli.main(["explain", str(images), "--out", str(out), "--no-progress"]) == 0
    code, _, err = evaluate([images, "--labels", labels, "--methods", "gradcam", "--steps", "2", "--out", out,
                             "--no-progress"], capsys)
    assert code == 0, err
    assert cli.main(["report", str(out)]) == 0
    capsys.readouterr()
    page = (out / "report" / "evaluate.html").read_text()
    assert "relevance_mass_accuracy" in page and "per class" in page and "deletion curve" in page
    assert (out / "report" / "index.html").is_file()  # the explain grid stays the first page
    assert (out / "failures.csv").is_file() and (out / "evaluate_failures.csv").is_file()  # no clash


def test_read_label_formats(tmp_path):
    from seg_xai_fast.apps.evaluate_pairs import read_label

    ids = np.array([[0, 1], [300, 255]], dtype=np.uint16)
    Image.fromarray(ids).save(tmp_path / "sixteen.png")  # I;16
    palette = Image.fromarray(np.array([[0, 1], [2, 255]], dtype=np.uint8), mode="P")
    palette.putpalette(PALETTE)
    palette.save(tmp_path / "palette.png")
    assert read_label(str(tmp_path / "sixteen.png")).tolist() == [[0, 1], [300, 255]]
    assert read_label(str(tmp_path / "palette.png")).tolist() == [[0, 1], [2, 255]]  # indices, not colours
    Image.new("RGB", (2, 2)).save(tmp_path / "rgb.png")
    with pytest.raises(ValueError, match="RGB image; expected an index image"):
        read_label(str(tmp_path / "rgb.png"))


def test_a_second_run_into_the_same_folder_is_refused_while_the_first_writes(tmp_path):
    from seg_xai_fast.apps.evaluate_data import ResultLog

    first = ResultLog(tmp_path / "out", {"a": 1}, force=False)
    try:
        with pytest.raises(ValueError, match="another `seg-xai evaluate` run is writing to"):
            ResultLog(tmp_path / "out", {"a": 1}, force=False)
    finally:
        first.close()
    again = ResultLog(tmp_path / "out", {"a": 1}, force=False)  # released: a rerun resumes
    again.close()
    with pytest.raises(ValueError, match="other settings"):  # the refusal releases its lock
        ResultLog(tmp_path / "out", {"a": 2}, force=False)
    ResultLog(tmp_path / "out", {"a": 1}, force=False).close()


@pytest.mark.slow
def test_ray_scores_the_pairs_to_the_numbers_of_a_local_run(tmp_path, capsys):
    """`--ray local`: pairs scored by Ray actors, the driver the only writer of the log; the rows,
    summary and failures equal a local run's, and a rerun resumes from the log."""
    pytest.importorskip("ray", reason="Ray is an optional extra: pip install 'seg-xai-fast[ray]'")
    images, labels = write_pairs(tmp_path, 4, 48)
    Image.new("RGB", (48, 48)).save(images / "part" / "nolabel.png")  # a recorded failure, on Ray too
    base = [images, "--labels", labels, "--methods", "gradcam", "--metrics", "pointing_game,sparseness,deletion,"
            "faithfulness_correlation", "--samples", "4", "--steps", "4", "--no-progress"]
    local, remote = tmp_path / "local", tmp_path / "ray"
    assert evaluate(base + ["--out", local], capsys)[0] == 0
    code, _, err = evaluate(base + ["--out", remote, "--ray", "local"], capsys)
    assert code == 0 and "actors" in err
    # equal up to float32 summation order: the actors run one torch thread each, this process two
    assert _close(list(csv.reader(open(remote / "rows.csv"))), list(csv.reader(open(local / "rows.csv"))))
    a, b = (json.loads((d / "summary.json").read_text()) for d in (local, remote))
    for key in ("overall", "per_class", "curves", "images", "failures"):
        assert _close(a[key], b[key]), key
    assert log_lines(remote) == 1 + 5
    code, _, err = evaluate(base + ["--out", remote, "--ray", "local"], capsys)  # only the failure is tried again
    assert code == 0 and log_lines(remote) == 1 + 5 + 1


def _close(a, b, rtol=1e-5) -> bool:
    """Nested lists/dicts of numbers and strings equal, numbers (and numeric strings) to rtol."""
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_close(a[k], b[k], rtol) for k in a)
    if isinstance(a, list):
        return isinstance(b, list) and len(a) == len(b) and all(_close(x, y, rtol) for x, y in zip(a, b))
    try:
        x, y = float(a), float(b)
    except (TypeError, ValueError):
        return a == b
    return (np.isnan(x) and np.isnan(y)) or abs(x - y) <= rtol * max(abs(x), abs(y), 1e-12)
