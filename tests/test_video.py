"""`seg-xai video` and sx.overlay_stream: output frames, summary line, bad input, Ctrl-C."""
import os
import re
from fractions import Fraction

import numpy as np
import pytest
import torch

av = pytest.importorskip("av", reason="the video pipeline needs PyAV (pip install '.[test]')")

from seg_xai_fast.apps.video import io as video_io  # noqa: E402
from seg_xai_fast.cli import main as cli_main  # noqa: E402
from seg_xai_fast.demo.model import DemoSegNet  # noqa: E402
from seg_xai_fast.engine.explainer import Explainer  # noqa: E402
from seg_xai_fast.apps.video.clip import scene_frames, write_demo_video  # noqa: E402
from seg_xai_fast.apps.video.frames import FrameExplainer, dominant_classes, overlay_stream  # noqa: E402
from seg_xai_fast.apps.video.io import write_clip  # noqa: E402
from seg_xai_fast.apps.video.pipeline import explain_video  # noqa: E402

N, H, W = 10, 64, 80
LAST_LINE = re.compile(r"^frames=(\d+) fps=\d+(\.\d+)?$")


def _model():
    torch.manual_seed(0)
    return DemoSegNet().eval()


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("video")
    model_file = root / "demo.pt"
    torch.save(_model(), model_file)
    clip = write_clip(root / "clip.mp4", scene_frames(N, (H, W), seed=3), Fraction(10))
    return root, str(model_file), str(clip)


def _decode(path):
    with av.open(str(path)) as container:
        return [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]


def _run(capsys, *argv):
    rc = cli_main(["video", *map(str, argv), "--no-progress"])
    out, err = capsys.readouterr()
    return rc, out.strip().splitlines(), err


@pytest.mark.parametrize("runtime", ["torch", "onnxruntime"])
def test_video_end_to_end(files, tmp_path, capsys, monkeypatch, runtime):
    if runtime == "onnxruntime":
        pytest.importorskip("onnxruntime", reason="--runtime onnxruntime needs onnxruntime")
    monkeypatch.setenv("SEG_XAI_CACHE", str(tmp_path / "cache"))
    root, model_file, clip = files
    out = tmp_path / "out.mp4"
    rc, lines, err = _run(capsys, clip, out, "--model", model_file, "--layer", "decoder", "--runtime", runtime,
                          "--batch-size", "4", "--method", "gradcam++")
    assert rc == 0, err
    assert LAST_LINE.match(lines[-1]) and int(LAST_LINE.match(lines[-1]).group(1)) == N
    assert f"runtime {runtime}" in "\n".join(lines) and "skipped 0 corrupt frames" in lines
    frames = _decode(out)
    assert len(frames) == N and frames[0].shape == (H, W, 3)
    assert sorted(os.listdir(tmp_path)) == (["cache", "out.mp4"] if runtime == "onnxruntime" else ["out.mp4"])


def test_non_video_input(files, tmp_path, capsys):
    root, model_file, _ = files
    text = tmp_path / "notes.txt"
    text.write_text("hello, not a video\n" * 50)
    out_dir = tmp_path / "out"
    rc, lines, err = _run(capsys, text, out_dir / "x.mp4", "--model", model_file, "--layer", "decoder")
    assert rc == 2 and "notes.txt" in err and "not a video file" in err
    rc, lines, err = _run(capsys, tmp_path / "missing.mp4", out_dir / "x.mp4", "--model", model_file)
    assert rc == 2 and "missing.mp4" in err and "no such file" in err
    rc, lines, err = _run(capsys, files[2], out_dir / "x.gif", "--model", model_file)
    assert rc == 2 and "OUTPUT must end in" in err
    assert not out_dir.exists() or os.listdir(out_dir) == []


def _clip_with_corrupt_frame(path, frames, bad_index):
    """An MJPEG clip (every frame a JPEG) whose packet `bad_index` is garbage."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mjpeg", rate=10)
        stream.width, stream.height, stream.pix_fmt = W, H, "yuvj420p"
        packets = []
        for i, rgb in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            frame.pts = i
            packets += stream.encode(frame)
        packets += stream.encode()
        for i, packet in enumerate(packets):
            if i == bad_index:
                bad = av.Packet(b"\x00garbage" * 30)
                bad.pts, bad.dts, bad.time_base, bad.stream = packet.pts, packet.dts, packet.time_base, packet.stream
                packet = bad
            container.mux(packet)


def test_corrupt_frame_is_skipped_and_counted(files, tmp_path, capsys):
    root, model_file, _ = files
    clip = tmp_path / "broken.avi"
    _clip_with_corrupt_frame(clip, scene_frames(N, (H, W), seed=4), bad_index=N // 2)
    out = tmp_path / "out.mkv"
    rc, lines, err = _run(capsys, clip, out, "--model", model_file, "--layer", "decoder", "--runtime", "torch")
    assert rc == 0, err
    assert "skipped 1 corrupt frame" in lines and lines[-1].startswith(f"frames={N - 1} ")
    assert len(_decode(out)) == N - 1


def test_ctrl_c_keeps_a_playable_partial_output(files, tmp_path, monkeypatch):
    root, model_file, clip = files
    forward = FrameExplainer.forward
    calls = []

    def interrupted_on_second_batch(self, images):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return forward(self, images)

    monkeypatch.setattr(FrameExplainer, "forward", interrupted_on_second_batch)
    out = tmp_path / "out.mp4"
    summary = explain_video(clip, out, Explainer(_model(), "decoder"), batch_size=4, progress=False)
    assert summary.interrupted and summary.frames == 4
    partial = tmp_path / "out.partial.mp4"  # beside OUTPUT, never over it
    assert summary.output == str(partial) and f"partial output to {partial}" in summary.lines()[0]
    assert len(_decode(partial)) == 4 and os.listdir(tmp_path) == ["out.partial.mp4"]


@pytest.fixture
def ctrl_c_raises():
    """Python's own SIGINT handler for the test: a test runner started as a background job of a
    non-interactive shell inherits SIGINT ignored, and a real Ctrl-C never reaches such a run."""
    import signal

    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def _interrupt_twice_at_second_batch(monkeypatch, gap=0.05):
    """Real SIGINTs: one inside the second forward pass, another `gap` s later, while the output
    is being finished (the overlay stage made slow so that the finishing outlasts the gap)."""
    import signal
    import threading
    import time

    from seg_xai_fast.apps.video import frames

    forward, overlay = FrameExplainer.forward, frames.overlay_maps
    calls, timers = [], []

    def forward_then_ctrl_c(self, images):
        calls.append(1)
        if len(calls) == 2:
            timers.append(threading.Timer(gap, os.kill, (os.getpid(), signal.SIGINT)))
            timers[0].start()
            os.kill(os.getpid(), signal.SIGINT)
        return forward(self, images)

    def slow_overlay(*args, **kwargs):
        time.sleep(0.3)
        return overlay(*args, **kwargs)

    monkeypatch.setattr(FrameExplainer, "forward", forward_then_ctrl_c)
    monkeypatch.setattr(frames, "overlay_maps", slow_overlay)
    return timers


def _absorb_late_sigint(timers):
    """A second SIGINT that comes after the call returned must not stop pytest."""
    import time

    try:
        for t in timers:
            t.join()
        time.sleep(0.2)  # let a pending signal be delivered here
    except KeyboardInterrupt:
        pass


def test_second_ctrl_c_while_finishing_keeps_the_partial_output(files, tmp_path, monkeypatch, ctrl_c_raises):
    """A second Ctrl-C 50 ms after the first deleted the partial output ("nothing
    was written")."""
    root, model_file, clip = files
    timers = _interrupt_twice_at_second_batch(monkeypatch)
    out = tmp_path / "out.mp4"
    try:
        summary = explain_video(clip, out, Explainer(_model(), "decoder"), batch_size=4, progress=False)
    finally:
        _absorb_late_sigint(timers)
    assert summary.interrupted and summary.frames >= 4
    assert len(_decode(tmp_path / "out.partial.mp4")) == summary.frames
    assert not out.exists()


def test_ctrl_c_in_a_rerun_keeps_the_complete_output(files, tmp_path, monkeypatch, ctrl_c_raises):
    """Ctrl-C during a rerun replaced a complete OUTPUT with a partial one."""
    root, model_file, clip = files
    out = tmp_path / "out.mp4"
    explain_video(clip, out, Explainer(_model(), "decoder"), batch_size=4, progress=False)
    complete = out.read_bytes()
    timers = _interrupt_twice_at_second_batch(monkeypatch)
    try:
        summary = explain_video(clip, out, Explainer(_model(), "decoder"), batch_size=4, progress=False)
    finally:
        _absorb_late_sigint(timers)
    assert summary.interrupted and out.read_bytes() == complete and len(_decode(out)) == N
    assert len(_decode(tmp_path / "out.partial.mp4")) == summary.frames < N
    assert sorted(os.listdir(tmp_path)) == ["out.mp4", "out.partial.mp4"]


def test_a_full_disk_or_unwritable_output_is_a_clear_error(files, tmp_path, capsys):
    """An unwritable or full output filesystem gave a traceback. A full disk is
    simulated with RLIMIT_FSIZE (writes past the limit fail with EFBIG)."""
    import resource
    import signal

    root, model_file, clip = files
    args = ("--model", model_file, "--layer", "decoder", "--runtime", "torch")
    (tmp_path / "file").write_text("a file where OUTPUT's folder should be")
    rc, _, err = _run(capsys, clip, tmp_path / "file" / "out.mp4", *args)
    assert rc == 2 and "OUTPUT: [Errno 20] Not a directory" in err and "out.mp4" in err and "Traceback" not in err
    out = tmp_path / "full" / "out.mp4"
    out.parent.mkdir()
    previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (2000, hard))
    try:
        rc = cli_main(["video", str(clip), str(out), *args, "--no-progress"])
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, previous)
    err = capsys.readouterr().err
    assert rc == 1 and f"cannot write OUTPUT {str(out)!r}: File too large" in err and "Traceback" not in err
    assert os.listdir(out.parent) == []  # the temp file removed


def test_video_refuses_a_symlink_output(files, tmp_path, capsys):
    root, model_file, clip = files
    victim = tmp_path / "victim.mp4"
    victim.write_bytes(b"keep")
    (tmp_path / "out.mp4").symlink_to(victim)
    rc, _, err = _run(capsys, clip, tmp_path / "out.mp4", "--model", model_file, "--layer", "decoder",
                      "--runtime", "torch")
    assert rc == 2 and "refusing to replace" in err and "symlink" in err
    assert victim.read_bytes() == b"keep" and (tmp_path / "out.mp4").is_symlink()


def test_overlay_stream_yields_frames_like_its_input():
    explainer = Explainer(_model(), "decoder", "gradcam")
    frames = scene_frames(5, (H, W), seed=5) + scene_frames(2, (48, 64), seed=6)  # the size changes
    out = list(overlay_stream(iter(frames), explainer, batch_size=3))
    assert [f.shape for f in out] == [(H, W, 3)] * 5 + [(48, 64, 3)] * 2
    assert all(isinstance(f, np.ndarray) and f.dtype == np.uint8 for f in out)
    tensors = list(overlay_stream((torch.from_numpy(f) for f in frames[:2]), explainer, batch_size=8, classes=[1]))
    assert all(isinstance(f, torch.Tensor) and f.dtype == torch.uint8 and f.shape == (H, W, 3) for f in tensors)
    assert np.array_equal(tensors[0].numpy(), next(overlay_stream(frames[:1], explainer, classes=[1])))
    with pytest.raises(ValueError, match=r"frame 0 must be uint8 \[H,W,3\]"):
        next(overlay_stream([np.zeros((H, W), np.uint8)], explainer))


def test_dominant_class_rule():
    labels = torch.zeros(3, 4, 4, dtype=torch.int64)
    labels[0, :1, :1] = 2  # one pixel of class 2: it beats 15 background pixels
    labels[1, :2] = 1
    labels[1, 2:3] = 3  # class 1 covers 8 pixels, class 3 covers 4
    assert dominant_classes(labels, 4).tolist() == [2, 1, 0]  # image 2: background only
    assert dominant_classes(labels, 4, candidates=[3, 0]).tolist() == [0, 3, 0]
    assert dominant_classes(labels, 4, candidates=[3]).tolist() == [3, 3, 3]
    counts = torch.stack([torch.bincount(row.flatten(), minlength=4) for row in labels])  # as the forward counts them
    for candidates in (None, [3, 0], [3]):
        assert torch.equal(dominant_classes(labels, 4, candidates, counts), dominant_classes(labels, 4, candidates))


def test_the_forward_counts_the_labels_it_gives():
    """The video's class choice reads the label histogram the forward pass counted with the argmax."""
    torch.manual_seed(0)
    explainer = Explainer(DemoSegNet().eval(), "decoder", "gradcam")
    outputs = explainer.forward(torch.rand(3, 3, 40, 48))
    assert outputs.has_outputs and outputs.counts is not None
    assert torch.equal(outputs.counts, torch.stack([torch.bincount(row.flatten(), minlength=outputs.logits.shape[1])
                                                     for row in outputs.labels]))


def test_demo_video(tmp_path):
    result = write_demo_video(tmp_path, frames=8, size=(64, 96))
    assert len(_decode(result["clip"])) == 8
    frames = _decode(result["overlay"])
    assert len(frames) == 8 and frames[0].shape == (64, 96, 3)
    assert result["summary"].encoder == video_io.pick_encoder()
