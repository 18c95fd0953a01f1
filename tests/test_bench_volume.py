"""`seg-xai bench --volume` and `--sliding-window ROI` (apps/bench.py, apps/bench_memory.py): the
rows exist with finite times and ratios next to their peers (pytorch-grad-cam's 3-D classes,
captum's and MONAI's occlusion, MONAI's sliding_window_inference), the peak-RSS probes report
sane numbers, the table round-trips through the report's parser, a peer that fails on a volume is
a note (and leaves the model as it was), and bad flags are usage errors naming the argument.

Tiny sizes: these check the plumbing, not the speed (the timings of a shared 2-core machine mean
nothing; benchmarks/volume_speed.py and `seg-xai bench` on a quiet machine do)."""
import json
import math

import pytest
import torch

from seg_xai_fast.apps import bench
from seg_xai_fast.apps.report.html import parse_bench_text
from seg_xai_fast.cli import main

pytest.importorskip("monai")
pytest.importorskip("pytorch_grad_cam")
pytest.importorskip("captum")

UNET_ARGS = {"spatial_dims": 3, "in_channels": 1, "out_channels": 3, "channels": [4, 8], "strides": [2],
             "num_res_units": 1}
UNET = ["--model", "monai:UNet", "--model-args", json.dumps(UNET_ARGS), "--layer", "model.2.0"]


def run_json(capsys, *argv) -> dict:
    assert main(["bench", *argv, "--json"]) == 0
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def by_name(rows: list) -> dict:
    return {r["row"]: r for r in rows}


def assert_finite(rows: list) -> None:
    for r in rows:
        for key, value in r.items():
            if key != "row":
                assert isinstance(value, (int, float)) and math.isfinite(value) and value >= 0, (r["row"], key, value)


def test_volume_rows_against_gradcam_captum_and_monai(capsys, tmp_path):
    chart = tmp_path / "chart.png"
    out = run_json(capsys, "--volume", *UNET, "--size", "8", "--repeats", "1", "--classes", "2",
                   "--methods", "gradcam,hirescam,occlusion", "--option", "window=4", "--option", "stride=4",
                   "--chart", str(chart))
    rows = by_name(out["rows"])
    assert_finite(out["rows"])
    assert "volume 1×1×8×8×8" in out["meta"] and "2 classes" in out["meta"] and chart.is_file()
    for method in ("gradcam", "hirescam"):  # pytorch-grad-cam runs both in 3-D
        assert rows[f"{method} pytorch-grad-cam"]["ms"] > 0
        for backend in ("fused", "torch"):
            row = rows[f"{method} {backend}"]
            assert row["x_floor"] > 0 and row["peer_over_ours"] > 0
    assert rows["occlusion floor (8 forwards)"]["ms"] > 0  # 2 windows of 4 per axis
    assert rows["occlusion fused"]["peer_over_ours"] > 0 and rows["occlusion captum"]["x_floor"] > 0
    assert rows["occlusion monai OcclusionSensitivity"]["peer_over_ours"] > 0
    assert any("OcclusionSensitivity is classification-only" in n for n in out["notes"])
    assert rows["gradcam predicted targets"]["predicted_classes"] >= 1


def test_a_peer_that_fails_on_a_volume_is_a_note_and_leaves_the_model_as_it_was():
    from monai.networks.nets import UNet

    torch.manual_seed(0)
    net = UNet(**UNET_ARGS).eval()
    modules = [(n, type(m)) for n, m in net.named_modules()]
    notes = []
    x, masks = torch.rand(1, 1, 8, 8, 8), bench.box_masks(1, 1, 8, 8, 8)
    # pytorch-grad-cam's AblationCAM swaps in its ablation layer and fails on 5-D activations.
    assert bench.peer_seconds(net, "model.2.0", "ablationcam", x, [1], masks, "out", 1, notes=notes) is None
    assert len(notes) == 1 and "AblationCAM fails on a 3-D input" in notes[0]
    assert [(n, type(m)) for n, m in net.named_modules()] == modules
    with pytest.raises(Exception):  # without a notes list the failure is raised, not hidden
        bench.peer_seconds(net, "model.2.0", "ablationcam", x, [1], masks, "out", 1)


def test_sliding_window_rows_with_peak_memory(capsys, tmp_path):
    out = run_json(capsys, "--size", "48", "--sliding-window", "32,32", "--repeats", "1", "--classes", "2",
                   "--methods", "gradcam,occlusion", "--option", "window=24", "--option", "stride=24",
                   "--chart", str(tmp_path / "c.png"))
    rows = by_name(out["rows"])
    assert_finite(out["rows"])
    assert "windows 32,32 overlap 0.25 constant" in out["meta"]
    ours, monai = rows["sliding-window forward"], rows["sliding-window forward monai"]
    floor = rows["floor = fastest plain sliding window"]
    assert ours["peer_over_ours"] > 0 and min(ours["x_floor"], monai["x_floor"]) >= 1.0 - 1e-9
    assert floor["rss_mb"] == min(ours["rss_mb"], monai["rss_mb"])
    cam = next(r for name, r in rows.items() if name.startswith("sliding-window gradcam ("))
    occ = next(r for name, r in rows.items() if name.startswith("sliding-window occlusion ("))
    for row in (ours, monai, cam, occ):
        # a process holding torch and a model: more than 50 MB; the ratio is over the floor's peak
        assert row["rss_mb"] > 50 and row["added_mb"] <= row["rss_mb"]
        assert row["rss_x_floor"] == pytest.approx(row["rss_mb"] / floor["rss_mb"])
        assert row["x_floor"] > 0
    assert occ["peer_over_ours"] > 0 and rows["sliding-window occlusion captum"]["ms"] > 0


def test_sliding_window_rows_of_a_volume_and_the_table(capsys):
    assert main(["bench", "--volume", *UNET, "--size", "12", "--sliding-window", "8,8,8", "--blend", "gaussian",
                 "--sw-batch-size", "2", "--repeats", "1", "--methods", "gradcam", "--no-memory", "--chart", ""]) == 0
    text = capsys.readouterr().out
    parsed = parse_bench_text(text)
    rows = by_name(parsed["rows"])
    assert "windows 8,8,8 overlap 0.25 gaussian, 2 per forward" in parsed["meta"]
    cam = next(r for name, r in rows.items() if name.startswith("sliding-window gradcam ("))
    assert cam["x_floor"] > 0 and "rss_mb" not in cam  # --no-memory: no probes
    assert rows["sliding-window forward"]["peer_over_ours"] > 0


def test_memory_columns_and_notes_round_trip_through_the_report_parser():
    rows = [{"row": "sliding-window forward", "ms": 12.5, "x_floor": 1.04, "peer_over_ours": 1.2, "rss_mb": 530.0,
             "added_mb": 9.0, "rss_x_floor": 1.0},
            {"row": "floor = fastest plain sliding window", "ms": 12.0, "rss_mb": 530.0, "added_mb": 9.0},
            {"row": "sliding-window gradcam (9 window forwards)", "ms": 30.0, "x_floor": 2.5, "rss_mb": 560.0,
             "added_mb": 40.0, "rss_x_floor": 1.06}]
    parsed = parse_bench_text("model m, layer l\n" + bench.format_table(rows, ["one note", "another"]) + "\nchart: c.png\n")
    assert parsed["notes"] == ["one note", "another"] and parsed["chart"] == "c.png"
    assert [r["row"] for r in parsed["rows"]] == [r["row"] for r in rows]
    for got, want in zip(parsed["rows"], rows):
        for key, value in want.items():
            assert got[key] == (value if key == "row" else pytest.approx(value, abs=0.51 if key.endswith("mb")
                                                                             else 0.051)), (want["row"], key)


def test_box_masks_in_n_dimensions():
    masks = bench.box_masks(2, 3, 8, 12, 16, seed=1)  # [B,K,D,H,W]
    assert masks.shape == (2, 3, 8, 12, 16)
    assert (masks.flatten(2).sum(2) == 2 * 3 * 4).all()  # a box of a quarter of each axis
    assert torch.equal(bench.box_masks(1, 2, 16, 16, seed=4), bench.box_masks(1, 2, 16, 16, seed=4))


@pytest.mark.parametrize("argv,message", [
    (["--sliding-window", "32,32,32"], "--sliding-window 32,32,32 has 3 axes but the input has 2 spatial axes"),
    (["--volume", "--sliding-window", "8,8"], "--sliding-window 8,8 has 2 axes but the input has 3 spatial axes"),
    (["--sliding-window", "32,32", "--overlap", "1.0"], "--overlap must be in [0, 1), got 1.0"),
    (["--sliding-window", "32,32", "--overlap", "-0.1"], "--overlap must be in [0, 1), got -0.1"),
    (["--sliding-window", "32,x"], "--sliding-window must be comma-separated ints"),
    (["--sliding-window", "32,32", "--sw-batch-size", "0"], "--sw-batch-size must be a positive int"),
    (["--volume", "--model-args", "{nope"], "--model-args must be JSON"),
    (["--repeats", "0"], "--repeats must be a positive int"),
])
def test_bad_flags_are_usage_errors_naming_the_argument(capsys, argv, message):
    assert main(["bench", *argv, "--no-peer"]) == 2
    err = capsys.readouterr().err
    assert message in err and err.startswith("seg-xai bench: error:")


def test_a_blend_mode_outside_the_choices_is_an_argparse_error(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["bench", "--sliding-window", "32,32", "--blend", "cubic"])
    assert exc.value.code == 2 and "--blend" in capsys.readouterr().err


def test_the_report_page_shows_memory_columns_and_notes(tmp_path):
    from seg_xai_fast.apps.report.html import bench_page

    rows = [{"row": "sliding-window gradcam (9 window forwards)", "ms": 30.0, "x_floor": 2.5, "rss_mb": 560.0,
             "added_mb": 40.0, "rss_x_floor": 1.06}]
    source = tmp_path / "bench.json"
    source.write_text(json.dumps({"meta": "model m", "rows": rows, "notes": ["a <note>"], "chart": None}))
    page = bench_page(source, tmp_path, [("bench.html", "Benchmark", None)], "bench.html")
    assert "peak RSS MB" in page and "peak RSS × floor" in page and "a &lt;note&gt;" in page


def test_the_bench_commands_in_docs_volumes_md_parse():
    """The documented `seg-xai bench` lines name flags that exist (parsed, not run)."""
    import pathlib
    import shlex

    from seg_xai_fast.cli import build_parser

    text = (pathlib.Path(__file__).resolve().parents[1] / "docs" / "volumes.md").read_text(encoding="utf-8")
    commands = [c for c in text.replace("\\\n", " ").splitlines() if c.startswith("seg-xai bench ")]
    assert len(commands) >= 5
    for command in commands:
        argv = shlex.split(command.split(" #")[0].split(" >")[0])[1:]
        args = build_parser().parse_args(argv)
        assert args.command == "bench", command
