"""`seg-xai evaluate` end to end on a tiny run: stdout holds exactly one JSON object, files land in --out."""
import csv
import json

from PIL import Image

from seg_xai_fast import cli
from seg_xai_fast.metrics import METRIC_KEYS


def run(argv):
    """`seg-xai ARGV` in this process; returns the exit code (2 with a message on stderr for bad arguments)."""
    return cli.main(argv)


def test_json_output_is_one_object_with_the_metric_keys_and_files_are_written(model_file, tmp_path, capsys):
    out = tmp_path / "eval"
    code = run(["evaluate", "--model", model_file, "--layer", "decoder", "--methods", "gradcam,eigencam",
                "--n", "2", "--size", "48", "--steps", "2", "--classes", "background,disc,square,triangle",
                "--json", "--out", str(out)])
    captured = capsys.readouterr()
    assert code == 0
    result = json.loads(captured.out)  # fails if anything else was printed on stdout
    assert list(result) == ["gradcam", "eigencam"]
    for row in result.values():
        assert list(row) == list(METRIC_KEYS)
        assert all(v is None or isinstance(v, float) for v in row.values())
    assert "wrote" in captured.err

    with open(out / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["method"] for r in rows] == ["gradcam", "eigencam"]
    assert set(METRIC_KEYS) <= set(rows[0])
    assert json.loads((out / "metrics.json").read_text())["_meta"]["n"] == 2
    with Image.open(out / "curves.png") as picture:
        assert picture.mode == "RGB" and picture.width > 400
    assert not list(out.glob("*.tmp"))  # atomic writes leave no temp files


def test_table_output_and_bad_arguments(model_file, capsys):
    code = run(["evaluate", "--model", model_file, "--layer", "decoder", "--n", "1", "--size", "40", "--steps", "1",
                "--methods", "gradcam", "--no-progress"])
    captured = capsys.readouterr()
    assert code == 0
    assert "pointing" in captured.out and "randomisation" in captured.out and captured.err == ""
    for argv, name in ((["--layer", "decoder", "--n", "1", "--classes", "cat"], "classes"),
                       (["--n", "1"], "layer"),
                       (["--layer", "decoder", "--n", "0"], "n must")):
        assert run(["evaluate", "--model", model_file] + argv) == 2
        captured = capsys.readouterr()
        assert captured.out == "" and "seg-xai evaluate: error:" in captured.err and name in captured.err
