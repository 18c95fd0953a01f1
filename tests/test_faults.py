"""Nothing lost, nothing silently wrong: output files (targets, permissions), `seg-xai explain`
under bad inputs, kills and tampered outputs (each test names the defect it reproduces)."""
import contextlib
import os
import signal
import stat
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import seg_xai_fast as sx
from seg_xai_fast.apps.batch.store import read_manifest
from seg_xai_fast.cli import main
from seg_xai_fast.fileio import atomic_write, atomic_write_text, check_target
from seg_xai_fast.viz import save_png
from conftest import cli_env


@contextlib.contextmanager
def _umask(mask):
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


def _mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


def _rgb(seed, h=64, w=64):
    images, _ = sx.synthetic_scenes(1, seed=seed, size=(max(h, 32), max(w, 32)))
    return (images[0, :, :h, :w].permute(1, 2, 0).numpy() * 255 + 0.5).astype(np.uint8)


def _explain(capsys, *argv):
    rc = main(["explain", *map(str, argv)])
    out, err = capsys.readouterr()
    return rc, out, err


# --------------------------------------------------------------------------- 13.1, 13.2: output files


def test_writes_refuse_symlinks_and_fifos(tmp_path):
    """An atomic write renamed over whatever was at the path (a device became a file,
    a symlink was replaced). Now anything but a regular file is refused and left as it was."""
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    link = tmp_path / "chart.png"
    link.symlink_to(victim)
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    picture = np.zeros((4, 4, 3), np.uint8)
    for target in (link, fifo):
        with pytest.raises(OSError, match="refusing to replace .*not a regular file"):
            save_png(picture, target)
        with pytest.raises(OSError, match="refusing to replace"):
            atomic_write_text(target, "x")
    assert link.is_symlink() and victim.read_text() == "keep me"
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["chart.png", "pipe.png", "victim.txt"]  # no temp left
    with pytest.raises(OSError, match="a folder"):
        check_target(tmp_path)
    regular = tmp_path / "plain.png"
    regular.write_text("old")
    save_png(picture, regular)  # a regular file is replaced
    assert Image.open(regular).size == (4, 4)


def test_explain_never_writes_through_links_in_its_folder(tmp_path, model_file, capsys):
    """The store's own files and folders: a symlink planted at DIR/maps or DIR/.lock is not followed."""
    src = tmp_path / "in"
    src.mkdir()
    Image.fromarray(_rgb(1)).save(src / "a.png")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    base = ("--model", model_file, "--layer", "decoder", "--runtime", "torch", "--workers", "0", "--no-progress")
    out = tmp_path / "out"
    assert _explain(capsys, src, "--out", out, *base)[0] == 0
    os.rename(out / "maps", elsewhere / "maps")
    (out / "maps").symlink_to(elsewhere / "maps")
    Image.fromarray(_rgb(2)).save(src / "b.png")
    before = sorted(elsewhere.rglob("*"))
    rc, _, err = _explain(capsys, src, "--out", out, *base)
    assert rc == 1 and "symlink" in err
    assert sorted(elsewhere.rglob("*")) == before
    out2 = tmp_path / "out2"
    out2.mkdir()
    (out2 / ".lock").symlink_to(elsewhere / "lockfile")
    rc, _, err = _explain(capsys, src, "--out", out2, *base)
    assert rc == 1 and ".lock" in err
    assert not (elsewhere / "lockfile").exists()


def test_files_respect_the_umask(tmp_path, model_file, capsys):
    """PNGs, npz maps and manifest.jsonl were 0600 (mkstemp's mode) whatever the umask."""
    src = tmp_path / "in"
    src.mkdir()
    Image.fromarray(_rgb(1)).save(src / "a.png")
    (src / "bad.png").write_text("not a png")
    for mask, want in ((0o022, 0o644), (0o027, 0o640)):
        out = tmp_path / f"out{mask:o}"
        with _umask(mask):
            save_png(np.zeros((4, 4, 3), np.uint8), tmp_path / f"p{mask:o}.png")
            atomic_write(tmp_path / f"b{mask:o}.bin", lambda f: f.write(b"x"))
            rc, _, _ = _explain(capsys, src, "--out", out, "--model", model_file, "--layer", "decoder",
                                "--runtime", "torch", "--workers", "0", "--no-progress", "--save", "maps,overlays")
        assert rc == 3
        written = [tmp_path / f"p{mask:o}.png", tmp_path / f"b{mask:o}.bin", out / "manifest.jsonl",
                   out / "failures.csv", *out.glob("maps/*/*.npz"), *out.glob("overlays/*/*.png")]
        assert len(written) > 5 and written[-1].suffix == ".png" and written[-2].suffix in (".npz", ".png")
        assert {str(p): oct(_mode(p)) for p in written} == {str(p): oct(want) for p in written}


def test_video_output_respects_the_umask(tmp_path):
    pytest.importorskip("av")
    from seg_xai_fast.apps.video.clip import scene_frames
    from seg_xai_fast.apps.video.io import write_clip

    with _umask(0o027):
        path = write_clip(tmp_path / "c.mp4", scene_frames(2, (32, 32), seed=0), Fraction(5))
    assert _mode(path) == 0o640


# --------------------------------------------------------------------------- 12.2, 12.3, 13.5: bad images, bad settings


class EvenNet(torch.nn.Module):
    """A model that needs even image sizes (a 2×2 pooling by reshape): ONNX Runtime raises its own
    exception type on a 65×65 image. Linear head 'head' (1×1), bilinearly upsampled to the input."""

    def __init__(self) -> None:
        super().__init__()
        self.body = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.head = torch.nn.Conv2d(8, 4, 1)

    def forward(self, x):
        b, _, h, w = x.shape
        f = torch.relu(self.body(x)).reshape(b, 8, h // 2, 2, w // 2, 2).mean(dim=(3, 5))
        return torch.nn.functional.interpolate(self.head(f), size=(h, w), mode="bilinear", align_corners=False)


@pytest.fixture(scope="module")
def even_onnx(tmp_path_factory):
    pytest.importorskip("onnxruntime")
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("even") / "even.onnx"
    sx.export_onnx(EvenNet().eval(), "head:input", path, torch.rand(1, 3, 64, 64))
    return str(path)


def _last(stdout):
    explained, failed = (int(x.split("=")[1]) for x in stdout.strip().splitlines()[-1].split()[:2])
    return explained, failed


def _failures(out):
    import csv

    with open(out / "failures.csv", newline="", encoding="utf-8", errors="surrogateescape") as f:
        return {row["path"]: row["reason"] for row in csv.DictReader(f)}


def test_an_onnx_runtime_error_fails_one_image_not_the_run(tmp_path, even_onnx, capsys):
    """ORT raises its own exception types, which killed the run (exit 1, traceback) on
    every rerun. 16 images 64×64 + one 65×65, --batch-size 4."""
    src = tmp_path / "in"
    src.mkdir()
    for i in range(16):
        Image.fromarray(_rgb(i)).save(src / f"g{i:02d}.png")
    Image.fromarray(_rgb(99, 65, 65)).save(src / "odd.png")
    args = (src, "--out", tmp_path / "out", "--model", even_onnx, "--batch-size", "4", "--workers", "0", "--no-progress")
    rc, stdout, err = _explain(capsys, *args)
    assert rc == 3 and _last(stdout) == (16, 1), err
    reason = _failures(tmp_path / "out")[str(src / "odd.png")]
    assert reason.startswith("explain: ") and "65" in reason
    rc, stdout, _ = _explain(capsys, *args)  # the rerun: nothing new, the same failure
    assert rc == 3 and _last(stdout) == (0, 1)


def test_batchmates_of_a_failing_image_are_explained(tmp_path, model_file, capsys, monkeypatch):
    """A batch that fails with any exception type is retried image by image."""
    from seg_xai_fast.apps.batch import engine as batch_engine

    class ForeignError(Exception):  # like onnxruntime's, not a RuntimeError
        pass

    real = batch_engine.BatchEngine.explain

    def explain(self, images):
        if (images[:, 0, 0, 0] == 0).any():  # the black image, alone or with its batchmates
            raise ForeignError("Non-zero status code returned while running Reshape node")
        return real(self, images)

    monkeypatch.setattr(batch_engine.BatchEngine, "explain", explain)
    src = tmp_path / "in"
    src.mkdir()
    for i in range(3):
        Image.fromarray(np.maximum(_rgb(i), 1)).save(src / f"g{i}.png")
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(src / "black.png")
    rc, stdout, _ = _explain(capsys, src, "--out", tmp_path / "out", "--model", model_file, "--layer", "decoder",
                             "--runtime", "torch", "--batch-size", "4", "--workers", "0", "--no-progress")
    assert rc == 3 and _last(stdout) == (3, 1)
    assert "ForeignError: Non-zero status" in _failures(tmp_path / "out")[str(src / "black.png")]


def test_a_nan_float_tiff_is_a_failure_not_a_usage_error(tmp_path, model_file, capsys):
    """A float TIFF with a NaN pixel aborted the run as a usage error (exit 2) with its
    same-size batchmates, on every rerun. It comes first here, in a batch of four."""
    src = tmp_path / "in"
    src.mkdir()
    nan = np.random.default_rng(0).random((64, 64), dtype=np.float32)
    nan[3, 5] = np.nan
    Image.fromarray(nan, mode="F").save(src / "a_nan.tif")
    for i in range(3):
        Image.fromarray(_rgb(i)).save(src / f"g{i}.png")
    args = (src, "--out", tmp_path / "out", "--model", model_file, "--layer", "decoder", "--runtime", "torch",
            "--batch-size", "4", "--workers", "0", "--no-progress")
    rc, stdout, err = _explain(capsys, *args)
    assert rc == 3 and _last(stdout) == (3, 1), err
    assert "NaN" in _failures(tmp_path / "out")[str(src / "a_nan.tif")]
    rc, stdout, _ = _explain(capsys, *args)
    assert rc == 3 and _last(stdout) == (0, 1)


@pytest.mark.parametrize("model", ["demo", "file", "onnx"])
def test_out_of_range_classes_fail_before_writing(tmp_path, model_file, even_onnx, capsys, model):
    """--classes 7 was caught only after DIR was written, so the corrected command
    was then refused ("holds results of other settings")."""
    src = tmp_path / "in"
    src.mkdir()
    Image.fromarray(_rgb(0)).save(src / "a.png")
    spec = {"demo": ("--model", "demo", "--runtime", "torch"),
            "file": ("--model", model_file, "--layer", "decoder", "--runtime", "torch"),
            "onnx": ("--model", even_onnx)}[model]
    out = tmp_path / "m2"
    base = (src, "--out", out, *spec, "--workers", "0", "--no-progress")
    rc, _, err = _explain(capsys, *base, "--classes", "7")
    assert rc == 2 and "--classes" in err and "[7]" in err and "4 classes" in err
    assert not out.exists()
    assert _explain(capsys, *base, "--classes", "1")[0] == 0


# --------------------------------------------------------------------------- 12.4, 12.7, 12.12: names, discovery, sizes


@contextlib.contextmanager
def _deadline(seconds):
    """A hang fails the test (TimeoutError from SIGALRM) instead of stalling the suite."""
    def expired(*_):
        raise TimeoutError(f"still running after {seconds} s")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def test_non_utf8_file_names(tmp_path, model_file, capsys):
    """A file name that is not UTF-8 (caf\\xe9_bad.png) crashed writing failures.csv
    (UnicodeEncodeError, exit 2) on every rerun."""
    src = tmp_path / "in"
    src.mkdir()
    good, bad = src / os.fsdecode(b"caf\xe9.png"), src / os.fsdecode(b"caf\xe9_bad.png")
    Image.fromarray(_rgb(0)).save(good, format="PNG")
    bad.write_bytes(b"not an image")
    out = tmp_path / "out"
    args = (src, "--out", out, "--model", model_file, "--layer", "decoder", "--runtime", "torch", "--workers", "0")
    rc, stdout, err = _explain(capsys, *args, "--no-progress")
    assert rc == 3 and _last(stdout) == (1, 1), err
    assert b"caf\xe9_bad.png" in (out / "failures.csv").read_bytes()  # the name's own bytes
    assert list(_failures(out)) == [str(bad)]
    assert sx.load_explanation(out, good).maps.shape[-2:] == (64, 64)
    rc, stdout, _ = _explain(capsys, *args, "--no-progress")
    assert rc == 3 and _last(stdout) == (0, 1)


def test_symlink_loops_fifos_and_recursive_globs(tmp_path, model_file, capsys, monkeypatch):
    """A symlink loop gave a traceback, a '**' glob over a folder symlink loop never
    ended, a FIFO named pipe.png hung a decode worker forever (with its batchmates)."""
    src = tmp_path / "in"
    (src / "sub").mkdir(parents=True)
    for i in range(3):
        Image.fromarray(_rgb(i)).save(src / "sub" / f"g{i}.png")
    (src / "loop.png").symlink_to("loop.png")
    (src / "sub" / "up").symlink_to("..")  # a folder loop
    os.mkfifo(src / "pipe.png")
    base = ("--model", model_file, "--layer", "decoder", "--runtime", "torch", "--batch-size", "4", "--no-progress")
    with _deadline(120):
        rc, stdout, err = _explain(capsys, src, "--out", tmp_path / "a", *base, "--workers", "1")
    assert rc == 3 and _last(stdout) == (3, 2), err
    reasons = _failures(tmp_path / "a")
    assert "not a regular file: it is a FIFO" in reasons[str(src / "pipe.png")]
    assert "symbolic links" in reasons[str(src / "loop.png")]
    with _deadline(60):
        rc, stdout, err = _explain(capsys, f"{src}/**/*.png", "--out", tmp_path / "b", *base, "--workers", "0")
    assert rc == 3 and _last(stdout) == (3, 2), err
    monkeypatch.chdir(tmp_path)  # a relative pattern matching folders too (monkeypatch restores the cwd)
    with _deadline(60):
        rc, stdout, err = _explain(capsys, "in/**", "--out", tmp_path / "c", *base, "--workers", "0")
    assert rc == 3 and _last(stdout) == (3, 2), err


def test_oversized_images_fail_with_the_limit(tmp_path, model_file, capsys):
    """A 6000×6000 PNG took the job to 9.4 GB. Now the header is checked against
    --max-pixels (default 4096²) before decoding, and the image is recorded as a failure."""
    src = tmp_path / "in"
    src.mkdir()
    Image.new("L", (6000, 6000)).save(src / "huge.png")
    Image.fromarray(_rgb(0, 100, 100)).save(src / "small.png")
    args = (src, "--model", model_file, "--layer", "decoder", "--runtime", "torch", "--workers", "0", "--no-progress")
    rc, stdout, _ = _explain(capsys, *args, "--out", tmp_path / "a")
    assert rc == 3 and _last(stdout) == (1, 1)
    assert "6000×6000 = 36,000,000 pixels, over the limit of 16,777,216 (--max-pixels)" in \
        _failures(tmp_path / "a")[str(src / "huge.png")]
    rc, stdout, _ = _explain(capsys, *args, "--out", tmp_path / "b", "--max-pixels", "9999")
    assert rc == 3 and _last(stdout) == (0, 2)
    assert "over the limit of 9,999" in _failures(tmp_path / "b")[str(src / "small.png")]
    rc, _, err = _explain(capsys, *args, "--out", tmp_path / "c", "--max-pixels", "0")
    assert rc == 2 and "--max-pixels" in err and not (tmp_path / "c").exists()


# --------------------------------------------------------------------------- 12.1: kills


@pytest.mark.slow  # three runs in subprocesses (each imports torch)
def test_sigterm_stops_cleanly_and_sigkill_leaves_no_stale_lock(tmp_path, model_file):
    """After SIGKILL, the decode workers inherited the lock and outlived the parent, so
    an immediate rerun was refused ("another run is writing"); SIGTERM gave rc -15, worker
    tracebacks and a refused rerun. Now: SIGTERM → exit 130 without a traceback; SIGKILL → the
    rerun (started at once, without waiting for any worker) resumes and completes."""
    import subprocess
    import sys
    import time

    src = tmp_path / "in"
    src.mkdir()
    images, _ = sx.synthetic_scenes(48, seed=3, size=48)
    for i, image in enumerate((images.permute(0, 2, 3, 1).numpy() * 255).astype(np.uint8)):
        Image.fromarray(image).save(src / f"s{i:03d}.png")
    out = tmp_path / "out"
    env = cli_env()
    cmd = [sys.executable, "-m", "seg_xai_fast.cli", "explain", str(src), "--out", str(out), "--model", model_file,
           "--layer", "decoder", "--runtime", "torch", "--batch-size", "2", "--workers", "2", "--no-progress"]

    def start_and_wait_for(lines):
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=tmp_path, env=env,
                                start_new_session=True)  # its own process group, as a shell job
        manifest, deadline = out / "manifest.jsonl", time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            if manifest.is_file() and manifest.read_bytes().count(b"\n") >= lines:
                break
            time.sleep(0.01)
        assert proc.poll() is None, "the run ended before it could be stopped"
        return proc

    proc = start_and_wait_for(5)  # header + 4 images
    os.killpg(proc.pid, signal.SIGTERM)  # what `kill -TERM -PGID`, systemd or a scheduler sends
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "Traceback" not in err.decode(), err.decode()
    proc = start_and_wait_for(15)
    proc.kill()  # the parent only: its workers must not keep the lock
    proc.wait()
    rerun = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    header, entries = read_manifest(out)
    assert len({e["input"] for e in entries}) == 48


# --------------------------------------------------------------------------- 12.6: --force


def test_force_deletes_only_what_explain_wrote(tmp_path, model_file, capsys):
    """--force deleted the whole maps/ and overlays/ folders, a user's
    maps/city.geojson with them."""
    src = tmp_path / "in"
    src.mkdir()
    for i in range(2):
        Image.fromarray(_rgb(i)).save(src / f"g{i}.png")
    out = tmp_path / "out"
    base = (src, "--out", out, "--model", model_file, "--layer", "decoder", "--runtime", "torch", "--workers", "0",
            "--no-progress", "--save", "maps,overlays")
    assert _explain(capsys, *base)[0] == 0
    shard = next((out / "maps").iterdir())
    mine = [out / "maps" / "city.geojson", shard / "notes.txt", out / "overlays" / "mine.png", out / "readme.txt",
            shard / ("0" * 24 + ".npz.bak")]
    for path in mine:
        path.write_text("the user's")
    rc, _, err = _explain(capsys, *base, "--method", "gradcam++")
    assert rc == 2 and "--force" in err
    rc, _, err = _explain(capsys, *base, "--method", "gradcam++", "--classes", "1", "--force")  # fewer overlays
    assert rc == 0, err
    assert all(p.read_text() == "the user's" for p in mine)
    header, entries = read_manifest(out)
    entries = list(entries)
    assert header["method"] == "gradcam++" and len(entries) == 2
    written = {e["maps"] for e in entries} | {o for e in entries for o in e["overlays"]}
    ours = {str(p.relative_to(out)) for p in out.rglob("*") if p.is_file() and p not in mine} - {
        "manifest.jsonl", "failures.csv", ".lock"}
    assert ours == written  # no old file left, none of the user's taken


# --------------------------------------------------------------------------- 12.8: damaged and stale outputs


def _rgb_folder(tmp_path, n: int) -> tuple:
    """tmp_path/in with n RGB PNGs g0..g{n-1} → (the folder, their paths)."""
    src = tmp_path / "in"
    src.mkdir()
    paths = [src / f"g{i}.png" for i in range(n)]
    for i, path in enumerate(paths):
        Image.fromarray(_rgb(i)).save(path)
    return src, paths


def test_damaged_swapped_and_stale_outputs_are_caught_and_redone(tmp_path, model_file, capsys):
    """A rerun counted an image done when its .npz merely existed (a truncated file
    stayed broken, load_explanation raised a bare BadZipFile), swapped .npz files returned another
    image's maps, and an image replaced in place was "already explained" with the old maps."""
    from seg_xai_fast.apps.batch.store import DamagedOutputError, image_key, manifest_entries

    src, paths = _rgb_folder(tmp_path, 4)
    out = tmp_path / "out"
    args = (src, "--out", out, "--model", model_file, "--layer", "decoder", "--runtime", "torch", "--workers", "0",
            "--batch-size", "1", "--no-progress")  # a maps file per image, to damage each alone
    assert _explain(capsys, *args)[0] == 0
    maps = {p: out / manifest_entries(out)[image_key(p)]["maps"] for p in paths}
    assert len(set(maps.values())) == 4
    data = maps[paths[0]].read_bytes()
    maps[paths[0]].write_bytes(data[: len(data) // 2])  # truncated
    b, c = maps[paths[1]].read_bytes(), maps[paths[2]].read_bytes()
    maps[paths[1]].write_bytes(c)  # swapped
    maps[paths[2]].write_bytes(b)
    Image.fromarray(_rgb(42)).save(paths[3])  # the image replaced in place
    for path, why in zip(paths, ("damaged or was replaced", "damaged or was replaced", "damaged or was replaced",
                                 "stale: the image changed")):
        with pytest.raises(DamagedOutputError, match=why):
            sx.load_explanation(out, path)
    rc, stdout, err = _explain(capsys, *args)
    assert rc == 0 and _last(stdout) == (4, 0) and "redoing 4 damaged or stale" in err
    model = torch.load(model_file, weights_only=False)
    for path in paths:
        image = torch.from_numpy(np.asarray(Image.open(path), np.float32) / 255).permute(2, 0, 1)[None]
        direct = sx.Explainer(model, "decoder", "gradcam")(image).maps[0]
        assert (sx.load_explanation(out, path).maps - direct).abs().max() <= 1e-3
    rc, stdout, err = _explain(capsys, *args)  # and now nothing to redo
    assert rc == 0 and _last(stdout) == (0, 0) and "redoing" not in err


def test_load_checks_the_classes_and_input_against_the_manifest(tmp_path, model_file, capsys):
    """A maps file whose classes or input do not match its manifest entry is refused, even when
    the manifest's digest was made to match."""
    import io
    import json

    from seg_xai_fast.apps.batch.store import DamagedOutputError, content_digest, image_key, manifest_entries

    src = tmp_path / "in"
    src.mkdir()
    Image.fromarray(_rgb(0)).save(src / "a.png")
    out = tmp_path / "out"
    assert _explain(capsys, src, "--out", out, "--model", model_file, "--layer", "decoder", "--runtime", "torch",
                    "--workers", "0", "--no-progress")[0] == 0
    entry = manifest_entries(out)[image_key(src / "a.png")]
    with np.load(out / entry["maps"]) as npz:
        arrays = dict(npz)
    arrays["classes"] = arrays["classes"][:-1]  # one class fewer than the maps
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    (out / entry["maps"]).write_bytes(buf.getvalue())
    lines = (out / "manifest.jsonl").read_text().splitlines()
    last = json.loads(lines[-1])
    last["digests"][entry["maps"]] = content_digest(buf.getvalue())
    (out / "manifest.jsonl").write_text("\n".join(lines[:-1] + [json.dumps(last)]) + "\n")
    with pytest.raises(DamagedOutputError, match="does not match its manifest entry"):
        sx.load_explanation(out, src / "a.png")


# --------------------------------------------------------------------------- every bad input at once


def test_every_bad_input_at_once_then_a_rerun(tmp_path, even_onnx, capsys):
    """A folder mixing every bad input (bad files, a NaN float TIFF, a
    non-UTF-8 name, a FIFO named pipe.png, a symlink loop, an oversized image, an image that makes
    ONNX Runtime raise) with good images → exit 3, every good image loadable, every bad one in
    failures.csv; a rerun finishes at once with the same result."""
    import time

    src = tmp_path / "in"
    (src / "sub").mkdir(parents=True)
    good = [src / f"g{i}.png" for i in range(5)] + [src / "sub" / "g5.jpg", src / os.fsdecode(b"caf\xe9.png")]
    for i, path in enumerate(good):
        Image.fromarray(_rgb(i)).save(path, format="JPEG" if path.suffix == ".jpg" else "PNG")
    bad = {
        src / "text.png": "cannot identify image file",
        src / "truncated.png": "OSError",
        src / "nan.tif": "NaN",
        src / os.fsdecode(b"caf\xe9_bad.png"): "cannot identify image file",
        src / "pipe.png": "not a regular file: it is a FIFO",
        src / "loop.png": "symbolic links",
        src / "huge.png": "over the limit of 16,777,216 (--max-pixels)",
        src / "sub" / "odd.png": "explain: ",  # 65×65: the model's reshape fails in ONNX Runtime
    }
    (src / "text.png").write_text("not an image")
    data = good[0].read_bytes()
    (src / "truncated.png").write_bytes(data[: len(data) // 2])
    nan = np.full((64, 64), 0.5, np.float32)
    nan[10, 10] = np.nan
    Image.fromarray(nan, mode="F").save(src / "nan.tif")
    (src / os.fsdecode(b"caf\xe9_bad.png")).write_bytes(b"\x89PNG broken")
    os.mkfifo(src / "pipe.png")
    (src / "loop.png").symlink_to("loop.png")
    Image.new("L", (6000, 6000)).save(src / "huge.png")
    Image.fromarray(_rgb(9, 65, 65)).save(src / "sub" / "odd.png")
    out = tmp_path / "out"
    args = (src, "--out", out, "--model", even_onnx, "--batch-size", "4", "--workers", "1", "--no-progress")

    with _deadline(180):
        rc, stdout, err = _explain(capsys, *args)
    assert rc == 3 and _last(stdout) == (len(good), len(bad)), err
    failures = _failures(out)
    assert set(failures) == {str(p) for p in bad}
    for path, why in bad.items():
        assert why in failures[str(path)], (path, failures[str(path)])
    for path in good:
        assert sx.load_explanation(out, path).maps.shape[-2:] == (64, 64)
    start = time.perf_counter()
    with _deadline(120):
        rc, stdout, err = _explain(capsys, *args)
    assert rc == 3 and _last(stdout) == (0, len(bad)), err
    assert f"{len(good) + len(bad)} inputs, {len(good)} already explained, {len(bad)} to do" in err
    assert _failures(out) == failures
    assert time.perf_counter() - start < 30  # nothing explained: the model load and 8 failed decodes


def test_a_folder_of_an_older_format_asks_for_force(tmp_path, model_file, capsys):
    """Format 1 folders have no digests to verify, format 2 ones a maps file per image: a rerun names
    the difference and asks for --force."""
    import json

    src = tmp_path / "in"
    src.mkdir()
    Image.fromarray(_rgb(0)).save(src / "a.png")
    out = tmp_path / "out"
    args = (src, "--out", out, "--model", model_file, "--layer", "decoder", "--runtime", "torch", "--workers", "0",
            "--no-progress")
    assert _explain(capsys, *args)[0] == 0
    lines = (out / "manifest.jsonl").read_text().splitlines()
    header = json.loads(lines[0])
    assert header["format"] == 3
    for old in (1, 2):
        (out / "manifest.jsonl").write_text("\n".join([json.dumps({**header, "format": old})] + lines[1:]) + "\n")
        rc, _, err = _explain(capsys, *args)
        assert rc == 2 and f"format: was {old}, now 3" in err and "--force" in err
    assert _explain(capsys, *args, "--force")[0] == 0


def test_a_format_2_folder_still_loads(tmp_path, model_file, capsys):
    """Format 2 kept one maps file per image (maps [K,h,w], meta naming its input) and no member in
    the manifest lines: load_explanation and seg-xai report read such folders as before."""
    import io
    import json

    from seg_xai_fast.apps.batch.store import content_digest
    from seg_xai_fast.apps.report.build import build_report

    src, paths = _rgb_folder(tmp_path, 3)
    out = tmp_path / "out"
    assert _explain(capsys, src, "--out", out, "--model", model_file, "--layer", "decoder", "--runtime", "torch",
                    "--workers", "0", "--no-progress")[0] == 0
    now = {str(p): sx.load_explanation(out, p) for p in paths}
    header, *entries = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    assert len({e["maps"] for e in entries}) == 1  # one batch, one file
    batch_file = out / entries[0]["maps"]
    with np.load(batch_file) as data:
        arrays = {k: data[k] for k in data.files}
    meta = json.loads(str(arrays["meta"]))
    old_lines = [json.dumps({**header, "format": 2})]
    for e in entries:  # rewrite as format 2: a file per image, named by the image's key
        buf = io.BytesIO()
        np.savez(buf, maps=arrays["maps"][e["member"]], classes=arrays["classes"], map_size=arrays["map_size"],
                 image_size=arrays["image_size"], meta=np.array(json.dumps({
                     "input": e["input"], **{k: v for k, v in meta.items() if k != "inputs"}})))
        rel = f"maps/{e['key'][:2]}/{e['key']}.npz"
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        (out / rel).write_bytes(buf.getvalue())
        old_lines.append(json.dumps({**{k: v for k, v in e.items() if k != "member"}, "maps": rel,
                                     "digests": {rel: content_digest(buf.getvalue())}}))
    batch_file.unlink()
    (out / "manifest.jsonl").write_text("\n".join(old_lines) + "\n")
    for path in paths:
        old = sx.load_explanation(out, path)
        assert old.classes == now[str(path)].classes and torch.equal(old.maps, now[str(path)].maps)
    report = build_report(out, workers=0, progress=False)
    assert report.is_file() and "could not be read" not in capsys.readouterr().err


def test_pils_own_bomb_limit_also_names_max_pixels(tmp_path, monkeypatch):
    """Past twice PIL's MAX_IMAGE_PIXELS, PIL refuses in Image.open, before our check: the
    reason still names --max-pixels (PIL's limit made small here instead of a 180 MP file)."""
    from seg_xai_fast.apps.batch.inputs import read_image

    Image.fromarray(_rgb(0, 100, 100)).save(tmp_path / "a.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    with pytest.raises(ValueError, match=r"over the limit of 5,000 pixels \(--max-pixels\); PIL: Image size"):
        read_image(str(tmp_path / "a.png"), 5000)
