"""The frame pipeline (apps/video/stages.py, start_explaining, overlay_stream, explain_video):
order kept through parallel stages, bounded queues and back-pressure, faults and early stops
ending every thread, the API path, stream inputs and --profile."""
import os
import random
import threading
import time
from fractions import Fraction

import numpy as np
import pytest
import torch

av = pytest.importorskip("av", reason="the video pipeline needs PyAV (pip install '.[test]')")

from seg_xai_fast.apps.video import frames as frames_module  # noqa: E402
from seg_xai_fast.apps.video.clip import scene_frames  # noqa: E402
from seg_xai_fast.apps.video.frames import FrameExplainer, overlay_batch, overlay_stream  # noqa: E402
from seg_xai_fast.apps.video.io import write_clip  # noqa: E402
from seg_xai_fast.apps.video.pipeline import explain_video  # noqa: E402
from seg_xai_fast.apps.video.stages import Lanes, Outlet, Pipeline, Source, Stage  # noqa: E402
from seg_xai_fast.cli import main as cli_main  # noqa: E402
from seg_xai_fast.demo.model import DemoSegNet  # noqa: E402
from seg_xai_fast.engine.explainer import Explainer  # noqa: E402

H, W = 64, 80


def _stage_threads():
    return [t for t in threading.enumerate() if t.name.startswith("seg-xai-")]


@pytest.fixture(autouse=True)
def no_thread_left_behind():
    """Every test here must end with no pipeline thread alive."""
    yield
    deadline = time.time() + 5
    while _stage_threads() and time.time() < deadline:
        time.sleep(0.01)
    assert _stage_threads() == []


def _chain(items, steps, queue_size=2, workers=1):
    """Source(items) → steps[0] on `workers` parallel threads → one thread per further step → Outlet."""
    pipeline = Pipeline()
    inbox = Lanes(workers, queue_size)
    Source(pipeline, "read", lambda: items, inbox).start()
    outbox = Lanes(workers, queue_size)
    for j in range(workers):
        Stage(pipeline, f"s0.{j}", steps[0], inbox.lanes[j], outbox.lanes[j]).start()
    for i, step in enumerate(steps[1:], 1):
        inbox, outbox = outbox, Lanes(1, queue_size)
        Stage(pipeline, f"s{i}", step, inbox, outbox).start()
    return pipeline, Outlet(pipeline, outbox)


def _jitter(x):
    time.sleep(random.random() * 0.003)  # parallel workers finish out of turn
    return x


def test_parallel_stage_keeps_the_order():
    random.seed(0)
    pipeline, out = _chain(range(300), [_jitter, lambda x: x * 10], workers=3)
    assert list(out) == [x * 10 for x in range(300)]
    out.close()
    assert pipeline.error is None


def test_a_slow_consumer_blocks_the_source_instead_of_growing_the_queues():
    pulled = []

    def endless():
        for i in range(10 ** 9):
            pulled.append(i)
            yield np.zeros(1000)

    pipeline, out = _chain(endless(), [lambda x: x, lambda x: x], queue_size=2, workers=2)
    first = next(iter(out))
    time.sleep(0.3)
    held = len(pulled)
    time.sleep(0.3)
    # Capacity: queued, 2 lanes × 2 twice and 1 lane × 2; one item in each of the 3 stage
    # threads, one in the source's hand and the one taken out: a constant, however long the
    # consumer sleeps (an unbounded queue would hold everything pulled in 0.6 s).
    assert len(pulled) == held == 2 * 2 * 2 + 2 + 3 + 1 + 1
    assert first.shape == (1000,)
    out.close()
    assert len(pulled) == held  # stopping read nothing more


def test_a_fault_in_a_stage_stops_everything_and_is_kept():
    pulled = []

    def endless():
        for i in range(10 ** 9):
            pulled.append(i)
            yield i

    def fails_at_7(x):
        if x == 7:
            raise ValueError("stage broke at item 7")
        return x

    pipeline, out = _chain(endless(), [fails_at_7, lambda x: x], workers=2)
    got = list(out)
    out.close()
    # A fault aborts: the stages drop what they hold, so some items before it may not come out,
    # but those that do are in order and none comes from after it.
    assert got == list(range(len(got))) and len(got) <= 7
    stage, err = pipeline.error
    assert isinstance(err, ValueError) and "item 7" in str(err) and stage.name.startswith("seg-xai-s0")
    with pytest.raises(ValueError, match="item 7"):
        pipeline.raise_error()
    assert len(pulled) < 50  # the source stopped reading


def test_a_fault_in_the_source_ends_the_stream():
    def broken():
        yield 1
        yield 2
        raise OSError("camera unplugged")

    pipeline, out = _chain(broken(), [lambda x: x])
    assert list(out) == [1, 2]
    out.close()
    assert isinstance(pipeline.error[1], OSError)


# --------------------------------------------------------------------------- the API path


@pytest.fixture(scope="module")
def onnx_file(tmp_path_factory):
    pytest.importorskip("onnxruntime", reason="parallel forward passes need onnxruntime")
    pytest.importorskip("onnx", reason="export_onnx writes its metadata with the onnx package")
    from seg_xai_fast.runtimes.export import export_onnx

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("onnx") / "demo.onnx"
    return export_onnx(DemoSegNet().eval(), "decoder", path, torch.rand(1, 3, H, W))


def _onnx(onnx_file, threads=1):
    from seg_xai_fast.runtimes.onnx_explainer import OnnxExplainer

    return OnnxExplainer(onnx_file, "gradcam", threads=threads)


def _clip_frames(n=22, seed=7):
    return scene_frames(n, (H, W), seed=seed, step=6)


def test_overlay_stream_in_parallel_equals_one_batch_at_a_time(onnx_file, monkeypatch):
    explainer = _onnx(onnx_file)
    frames = _clip_frames(40)  # 14 batches: more than the pipeline holds at once, so their memory is reused
    expected = []
    for i in range(0, len(frames), 3):  # one batch after another, in this thread
        out, _ = overlay_batch(torch.from_numpy(np.stack(frames[i:i + 3])), FrameExplainer(explainer))
        expected += list(out.numpy())
    forward = FrameExplainer.forward

    def jittered(self, images):  # the two forward passes finish out of turn
        time.sleep(random.random() * 0.02)
        return forward(self, images)

    random.seed(2)
    monkeypatch.setattr(FrameExplainer, "forward", jittered)
    reused = []  # per batch: whether its model input came from a batch given back
    take = frames_module.ImageBuffers.take

    def recording_take(self, shape):
        given_back = {t.data_ptr() for t in self._free}
        images = take(self, shape)
        reused.append(images.data_ptr() in given_back)
        return images

    monkeypatch.setattr(frames_module.ImageBuffers, "take", recording_take)
    assert frames_module.model_workers(FrameExplainer(explainer)) == min(2, frames_module.available_cores())
    got = list(overlay_stream(iter(frames), explainer, batch_size=3, workers=2))
    assert len(got) == len(frames) and len(reused) == 14 and any(reused)
    for i, (g, e) in enumerate(zip(got, expected)):
        assert np.array_equal(g, e), f"frame {i} differs from the sequential result"


def test_image_buffers_hand_out_only_what_was_given_back():
    buffers = frames_module.ImageBuffers(keep=1)
    a = buffers.take((2, 3, 4, 5))
    b = buffers.take((2, 3, 4, 5))
    assert a.dtype == torch.float32 and a.data_ptr() != b.data_ptr()
    buffers.give(a)
    buffers.give(b)  # over `keep`: dropped
    assert buffers.take((1, 3, 4, 5)).data_ptr() != a.data_ptr()  # another shape: new memory
    assert buffers.take((2, 3, 4, 5)).data_ptr() == a.data_ptr()
    assert buffers.take((2, 3, 4, 5)).data_ptr() not in (a.data_ptr(), b.data_ptr())


def test_overlay_stream_raises_a_fault_of_the_frame_source_after_the_frames_before_it(onnx_file):
    frames = _clip_frames(8)

    def camera():
        yield from frames[:5]
        raise OSError("camera unplugged")

    got = []
    with pytest.raises(OSError, match="camera unplugged"):
        for frame in overlay_stream(camera(), _onnx(onnx_file), batch_size=2, workers=2):
            got.append(frame)
    assert len(got) == 4  # the full batches before the fault (the fifth frame's batch never formed)


def test_overlay_stream_stopped_early_stops_reading(onnx_file):
    pulled = []

    def camera():
        for i in range(10 ** 6):
            pulled.append(i)
            yield _clip_frames(1, seed=i % 5)[0]

    stream = overlay_stream(camera(), _onnx(onnx_file), batch_size=2, workers=2)
    for i, _ in enumerate(stream):
        if i == 5:
            break
    stream.close()  # what a for loop's break leaves to garbage collection
    assert len(pulled) < 40
    n = len(pulled)
    time.sleep(0.2)
    assert len(pulled) == n


def test_a_model_fault_reaches_the_caller(onnx_file, monkeypatch):
    calls = []
    forward = FrameExplainer.forward

    def third_fails(self, images):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("model exploded")
        return forward(self, images)

    monkeypatch.setattr(FrameExplainer, "forward", third_fails)
    with pytest.raises(RuntimeError, match="model exploded"):
        list(overlay_stream(_clip_frames(20), _onnx(onnx_file), batch_size=2, workers=2))


def test_parallel_forward_passes_need_onnx():
    explainer = Explainer(DemoSegNet().eval(), "decoder")
    with pytest.raises(ValueError, match="workers=2: a PyTorch model runs one forward pass at a time"):
        next(overlay_stream(_clip_frames(2), explainer, workers=2))
    assert frames_module.model_workers(FrameExplainer(explainer)) == 1


# --------------------------------------------------------------------------- files and streams


def _decode(path):
    with av.open(str(path)) as container:
        return [f.to_ndarray(format="rgb24").astype(np.float32) for f in container.decode(video=0)]


def test_explain_video_writes_every_frame_in_order(onnx_file, tmp_path, monkeypatch):
    frames = scene_frames(30, (H, W), seed=9, step=8)  # far apart: each frame has one nearest overlay
    clip = write_clip(tmp_path / "in.mp4", frames, Fraction(10))
    explainer = _onnx(onnx_file)
    decoded = [f.astype(np.uint8) for f in _decode(clip)]  # what the pipeline reads
    expected = np.stack(list(overlay_stream(decoded, explainer, batch_size=4, workers=1))).astype(np.float32)
    forward = FrameExplainer.forward

    def jittered(self, images):
        time.sleep(random.random() * 0.02)
        return forward(self, images)

    random.seed(3)
    monkeypatch.setattr(FrameExplainer, "forward", jittered)
    summary = explain_video(clip, tmp_path / "out.mp4", explainer, batch_size=4, progress=False, workers=2)
    got = np.stack(_decode(tmp_path / "out.mp4"))
    assert summary.frames == len(got) == len(frames)
    distance = ((got[:, None] - expected[None]) ** 2).mean(axis=(2, 3, 4))  # [output, expected]
    assert distance.argmin(axis=1).tolist() == list(range(len(frames)))
    assert [t.name for t in summary.stages] == ["decode", "model 1", "model 2", "explain", "encode"]


def test_a_stream_input_and_the_profile(tmp_path, capsys):
    """An FFmpeg input that never ends (lavfi's test pattern) with --max-frames, and --profile."""
    torch.manual_seed(0)
    model_file = tmp_path / "demo.pt"
    torch.save(DemoSegNet().eval(), model_file)
    out = tmp_path / "live.mkv"
    rc = cli_main(["video", f"testsrc=size={W}x{H}:rate=25", str(out), "--input-format", "lavfi", "--max-frames",
                   "10", "--model", str(model_file), "--layer", "decoder", "--runtime", "torch", "--profile",
                   "--no-progress"])
    lines = capsys.readouterr().out.strip().splitlines()
    assert rc == 0 and lines[-1].startswith("frames=10 ")
    assert len(_decode(out)) == 10 and "stopped after 10 frames (max_frames)" in lines
    table = lines[lines.index(next(line for line in lines if line.startswith("stage"))):-1]
    assert [row.split()[0] for row in table[1:]] == ["decode", "model", "explain", "encode"]
    assert all(float(row.split()[1]) >= 0 for row in table[1:])
    rc = cli_main(["video", "testsrc", str(tmp_path / "x.mp4"), "--input-format", "no-such-format",
                   "--model", str(model_file), "--layer", "decoder", "--no-progress"])
    assert rc == 2 and "--input-format must be an input format PyAV's FFmpeg has, got 'no-such-format'" in \
        capsys.readouterr().err
    assert sorted(os.listdir(tmp_path)) == ["demo.pt", "live.mkv"]


def test_ctrl_c_ends_a_live_input_and_writes_output(tmp_path, monkeypatch):
    forward = FrameExplainer.forward
    calls = []

    def interrupted_on_third_batch(self, images):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return forward(self, images)

    monkeypatch.setattr(FrameExplainer, "forward", interrupted_on_third_batch)
    torch.manual_seed(0)
    out = tmp_path / "live.mp4"
    summary = explain_video(f"testsrc=size={W}x{H}:rate=25", out, Explainer(DemoSegNet().eval(), "decoder"),
                            batch_size=4, progress=False, input_format="lavfi")
    assert not summary.interrupted and "input ended at Ctrl-C" in summary.notes and summary.output == str(out)
    assert summary.frames == 8 and len(_decode(out)) == 8 and os.listdir(tmp_path) == ["live.mp4"]


@pytest.mark.parametrize("encoding,settings", [("fast", b"crf=23.0"), ("compact", b"crf=27.0")])
def test_the_encoding_sets_x264s_preset_and_crf(tmp_path, encoding, settings):
    """x264 writes its settings into the stream (an SEI message): the output says which were used."""
    if "libx264" not in av.codecs_available:
        pytest.skip("this PyAV's FFmpeg has no libx264")
    clip = write_clip(tmp_path / "in.mp4", scene_frames(6, (H, W)), encoder="libx264")
    torch.manual_seed(0)
    out = tmp_path / f"{encoding}.mp4"
    explainer = Explainer(DemoSegNet().eval(), "decoder", "gradcam")
    summary = explain_video(clip, out, explainer, batch_size=2, progress=False, encoding=encoding)
    data = out.read_bytes()
    preset = b"cabac=0" if encoding == "fast" else b"cabac=1"  # ultrafast turns CABAC off, superfast keeps it
    assert summary.frames == 6 and settings in data and preset in data
    with pytest.raises(ValueError, match="encoding must be one of \\['fast', 'compact'\\], got 'tiny'"):
        explain_video(clip, tmp_path / "no.mp4", explainer, progress=False, encoding="tiny")
    assert not (tmp_path / "no.mp4").exists()
