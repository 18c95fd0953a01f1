"""`seg-xai explain`: explain many images into an output folder — resumable, bounded memory,
robust to bad files; `--ray` distributes the same job (seg_xai_fast/batch_ray.py).

    seg-xai explain photos/ 'more/**/*.jpg' list.txt --out results/ [--model demo] [--save maps,overlays]

Pipeline: input discovery → DataLoader worker processes decode images (PIL) and group them into
batches of equal size → the main process explains each batch (one forward pass, Explainer or
OnnxExplainer, maps kept at the target layer's resolution) → a writer thread converts the maps to
float16, colours the overlays and writes the files
and the manifest lines, overlapping the next batch's compute. Every stage holds a bounded number of
batches, so memory does not grow with the number of inputs. Images are explained at their own size;
a batch only groups images of equal size (no resizing).

Exit status: 0 every input explained, 3 finished with failures (DIR/failures.csv), 2 usage error,
1 the outputs could not be written (e.g. disk full), 130 interrupted.
"""
from __future__ import annotations

import argparse
import glob
import os
import queue
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Optional, Sequence

import numpy as np
import torch

EXIT_OK, EXIT_IO, EXIT_USAGE, EXIT_FAILURES, EXIT_INTERRUPTED = 0, 1, 2, 3, 130
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm", ".pnm")
LIST_SUFFIXES = (".txt", ".lst", ".list")  # a file with one image path per line
SAVE_CHOICES = ("maps", "overlays")


class UsageError(ValueError):
    """Bad arguments or inputs: the command exits with status 2 and this message."""


# --------------------------------------------------------------------------- inputs


def discover_inputs(inputs: Sequence[str]) -> list[str]:
    """The resolved absolute paths of the images named by `inputs`, in order, without duplicates.

    Each input is an existing file (taken as an image whatever its name, except a list file:
    *.txt/.lst/.list, one path per line, relative paths from the list's folder, '#' comments),
    a folder (searched recursively for IMAGE_SUFFIXES), or a glob pattern ('**' recurses; matched
    folders are searched). An input that matches nothing is a UsageError; a listed path that does
    not exist is not (it becomes a failure of the run, like an unreadable file).
    """
    if not inputs:
        raise UsageError("no INPUTS given: name image files, folders, glob patterns or list files")
    from .store import resolve_input

    found: dict[str, None] = {}  # resolved paths, in order (a dict keeps insertion order)
    for spec in inputs:
        paths = _expand(spec)
        if not paths:
            raise UsageError(f"input {spec!r} matched no image (expected an existing file, a folder "
                             f"with {'/'.join(IMAGE_SUFFIXES[:4])}... images, a glob pattern or a list file)")
        for p in paths:
            found.setdefault(resolve_input(p), None)
    return list(found)


def _expand(spec: str) -> list[str]:
    path = Path(spec).expanduser()
    if path.is_dir():
        return _walk(path)
    if path.is_file():
        return _read_list(path) if path.suffix.lower() in LIST_SUFFIXES else [str(path)]
    if glob.has_magic(spec):
        out: list[str] = []
        for match in sorted(glob.glob(os.path.expanduser(spec), recursive=True)):
            out.extend(_walk(Path(match)) if os.path.isdir(match) else [match])
        return out
    return []


def _walk(folder: Path) -> list[str]:
    out = []
    for root, dirs, files in os.walk(folder):
        dirs.sort()  # a deterministic order, which makes progress and failures.csv reproducible
        out.extend(os.path.join(root, f) for f in sorted(files) if f.lower().endswith(IMAGE_SUFFIXES))
    return out


def _read_list(list_file: Path) -> list[str]:
    base = list_file.parent
    with open(list_file, encoding="utf-8", errors="surrogateescape") as f:
        lines = (line.strip() for line in f)
        return [str(base / os.path.expanduser(line)) for line in lines if line and not line.startswith("#")]


def decode_image(path: str) -> torch.Tensor:
    """The image at `path` as float32 [3,H,W] in [0,1] (raises on unreadable or truncated files).

    Grayscale, palette (with transparency too), RGBA/LA (alpha dropped), CMYK and 16-bit images
    become RGB; EXIF orientation is applied; a multi-frame file gives its first frame.
    """
    from PIL import Image, ImageOps

    with Image.open(path) as im:
        im.load()  # decodes everything now: a truncated file raises OSError here
        ImageOps.exif_transpose(im, in_place=True)
        if im.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):  # 16/32-bit integer grayscale
            gray = np.asarray(im, dtype=np.float32) / 65535.0
            arr = np.repeat(np.clip(gray, 0, 1)[..., None], 3, axis=2)
        elif im.mode == "F":
            arr = np.repeat(np.clip(np.asarray(im, dtype=np.float32), 0, 1)[..., None], 3, axis=2)
        else:
            if im.mode == "P" and "transparency" in im.info:
                im = im.convert("RGBA")  # what PIL asks for before dropping palette transparency
            arr = np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0
    return torch.from_numpy(np.ascontiguousarray(arr)).permute(2, 0, 1).contiguous()


def _reason(err: BaseException) -> str:
    if isinstance(err, FileNotFoundError):
        return "file not found"
    return f"{type(err).__name__}: {err}"


class ImageBatches(torch.utils.data.IterableDataset):
    """Decoded images grouped into batches of equal size, split across DataLoader workers.

    Yields dicts: {"paths": [n], "images": float32 [n,3,H,W]} or {"failed": [(path, reason)]}.
    A worker holds at most 2·batch_size decoded images; past that it sends its largest group early.
    """

    def __init__(self, paths: Sequence[str], batch_size: int) -> None:
        # One byte buffer + offsets instead of a list of str: worker processes read it without
        # touching Python refcounts, so fork's copy-on-write pages stay shared.
        encoded = [os.fsencode(p) for p in paths]
        self._offsets = np.cumsum([0] + [len(e) for e in encoded], dtype=np.int64)
        self._blob = np.frombuffer(b"".join(encoded), dtype=np.uint8) if encoded else np.zeros(0, np.uint8)
        self.batch_size = batch_size

    def __len__(self) -> int:
        return len(self._offsets) - 1

    def path(self, i: int) -> str:
        return os.fsdecode(self._blob[self._offsets[i]:self._offsets[i + 1]].tobytes())

    def __iter__(self) -> Iterator[dict]:
        info = torch.utils.data.get_worker_info()
        first, step = (info.id, info.num_workers) if info is not None else (0, 1)
        groups: dict[tuple, list] = {}
        held = 0
        for i in range(first, len(self), step):
            path = self.path(i)
            try:
                image = decode_image(path)
            except Exception as err:  # any decoder error is the file's fault, not the run's
                yield {"failed": [(path, _reason(err))]}
                continue
            group = groups.setdefault(tuple(image.shape[-2:]), [])
            group.append((path, image))
            held += 1
            if len(group) == self.batch_size or held > 2 * self.batch_size:
                size = max(groups, key=lambda s: len(groups[s]))
                ready = groups.pop(size)
                held -= len(ready)
                yield _stack(ready)
        for group in groups.values():
            yield _stack(group)


def stack_images(images: Sequence[torch.Tensor]) -> torch.Tensor:
    """Equal-size float [3,H,W] images → contiguous float [n,3,H,W].

    Not channels-last, although it made the explainer call ~20 % faster on CPU (its per-pixel
    argmax over classes is faster on channels-last logits): the fused kernels copy non-contiguous
    inputs into temporaries that can be freed before the kernel reads them (reported, kernels.py).
    """
    return torch.stack(list(images)).contiguous()


def _stack(group: list) -> dict:
    return {"paths": [p for p, _ in group], "images": stack_images([im for _, im in group])}


def _worker_init(_worker_id: int) -> None:
    torch.set_num_threads(1)  # decoding is PIL's work; leave the cores to the main process
    _fixed_mmap_threshold()


def _fixed_mmap_threshold(nbytes: int = 256 * 1024) -> None:
    """glibc: serve allocations ≥ nbytes with mmap, returned to the OS on free.

    glibc otherwise raises its mmap threshold after the first large free, and the decoded images
    (hundreds of KB each, many sizes) then fragment the heap: a worker's RSS crept up by ~150 MB
    over the first few thousand images. Decoding workers only; no-op off glibc.
    """
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, nbytes)  # M_MMAP_THRESHOLD
    except (OSError, AttributeError):
        pass


# --------------------------------------------------------------------------- explaining


class BatchEngine:
    """An Explainer (or OnnxExplainer) plus what the store needs: explains a batch of equal-size images.

    map_resolution "layer" asks the explainer for its maps at the target layer's resolution (the
    compact form the store keeps; sx.upsample_maps restores the full maps), "full" for full size.
    """

    def __init__(self, explainer, classes: Optional[list], device: torch.device, map_resolution: str = "layer") -> None:
        self.device = device
        self.explainer = explainer
        model = getattr(explainer, "model", None)  # an sx.Explainer's; ONNX Runtime holds its own
        if isinstance(model, torch.nn.Module):
            model.to(device)
        self.classes = classes
        self.resolution = "layer" if map_resolution == "layer" else "full"

    def explain(self, images: torch.Tensor) -> "Explained":
        """Explain images float [n,3,H,W] of one size (see Explained)."""
        images = images.to(self.device, non_blocking=True)
        res = self.explainer(images, classes=self.classes, resolution=self.resolution)
        return Explained(images, res.maps, res.classes, map_size=tuple(res.labels.shape[-2:]))

    def close(self) -> None:
        """Nothing held between batches (the explainers remove their hooks after every call)."""


class Explained:
    """One explained batch, turned into StoreFiles.write_image arguments by write_args().

    images: float [n,3,H,W]; maps: float32 [n,K,h,w], at the target layer's resolution or at
    map_size; map_size: the model output's (H', W'), where the explainer's full maps live.
    On a GPU the conversion and overlays run at once (frees the device memory); on the CPU the
    writer thread runs them, off the critical path.
    """

    def __init__(self, images: torch.Tensor, maps: torch.Tensor, classes: list, map_size: tuple) -> None:
        self.images, self.maps, self.classes, self.map_size = images, maps, classes, map_size
        self.image_size = tuple(images.shape[-2:])
        self._compact: Optional[np.ndarray] = None
        self._pictures: Optional[np.ndarray] = None

    def finish(self, overlays: bool, colormap: str, alpha: float) -> None:
        """Convert the maps to float16 (and colour the overlays), then drop the tensors."""
        if self._compact is None:
            self._compact = self.maps.detach().to("cpu", torch.float16).numpy()  # [n,K,h,w]
        if overlays and self._pictures is None:
            from .explainer import upsample_maps

            full = self.maps if tuple(self.maps.shape[-2:]) == self.map_size else upsample_maps(self.maps, self.map_size)
            self._pictures = overlays_of(self.images, full, colormap, alpha)  # uint8 [n,K,H,W,3]
        self.images = self.maps = None  # no longer needed

    def write_args(self, paths: list, overlays: bool, colormap: str, alpha: float) -> list:
        self.finish(overlays, colormap, alpha)
        return [(path, self._compact[i], self.classes, self.map_size, self.image_size,
                 self._pictures[i] if overlays else ()) for i, path in enumerate(paths)]


def overlays_of(images: torch.Tensor, maps: torch.Tensor, colormap: str, alpha: float) -> np.ndarray:
    """images float [n,3,H,W], maps float [n,K,H',W'] → uint8 [n,K,H,W,3] with the fused overlay kernel."""
    from .kernels import overlay
    from .viz import to_frames

    frames = to_frames(images.to(maps.device))  # uint8 [n,H,W,3]
    per_class = []
    for k in range(maps.shape[1]):
        # A contiguous copy held here: the kernel wrapper's own copy of a strided slice may be
        # freed before the kernel reads it (reported in kernels.py).
        class_maps = maps[:, k].contiguous()  # [n,H',W']
        per_class.append(overlay(frames, class_maps, colormap=colormap, alpha=alpha))
    return torch.stack(per_class, dim=1).cpu().numpy()


class _Writer:
    """Writes finished batches on a background thread, a few images at a time (parallel fsyncs).

    At most `depth` batches wait in its queue; a write error is raised on the next put()/close().
    """

    def __init__(self, store, overlays: bool, colormap: str, alpha: float, threads: int = 4, depth: int = 1) -> None:
        self.store = store
        self.look = (overlays, colormap, alpha)
        self.queue: queue.Queue = queue.Queue(maxsize=depth)
        self.pool = ThreadPoolExecutor(threads, thread_name_prefix="seg-xai-write")
        self.error: Optional[BaseException] = None
        self.written = 0
        self.thread = threading.Thread(target=self._run, name="seg-xai-writer", daemon=True)
        self.thread.start()

    def put(self, batches: list) -> None:
        """batches: [(paths, Explained)] from explain_images."""
        self._raise()
        self.queue.put(batches)

    def _run(self) -> None:
        while True:
            batches = self.queue.get()
            if batches is None:
                return
            if self.error is not None:
                continue  # keep draining so put() never blocks forever
            try:
                images = [args for paths, ex in batches for args in ex.write_args(paths, *self.look)]
                entries = list(self.pool.map(lambda args: self.store.files.write_image(*args), images))
                self.store.append(entries)
                self.written += len(entries)
            except BaseException as err:
                self.error = err

    def _raise(self) -> None:
        if self.error is not None:
            raise OSError(f"writing outputs failed: {self.error}") from self.error

    def close(self) -> None:
        self.queue.put(None)
        self.thread.join()
        self.pool.shutdown()
        self._raise()


# --------------------------------------------------------------------------- the job


@dataclass
class JobConfig:
    inputs: list
    out: str
    model: str = "demo"
    layer: Optional[str] = None
    method: str = "gradcam"
    classes: Optional[str] = None  # "1,3" or class names; None: every class
    batch_size: int = 8
    workers: Optional[int] = None  # None: min(2, cpu count)
    threads: Optional[int] = None  # torch threads of the main process; None: CPUs minus decode workers
    save: str = "maps"
    map_resolution: str = "layer"
    colormap: str = "jet"
    alpha: float = 0.5
    device: str = "auto"
    force: bool = False
    runtime: str = "auto"  # auto | onnxruntime | torch (runtimes.make_explainer)
    ray: Optional[str] = None
    progress: bool = True


@dataclass
class Summary:
    explained: int = 0
    failed: int = 0
    skipped: int = 0
    seconds: float = 0.0
    failures_csv: str = ""
    extra: dict = field(default_factory=dict)

    @property
    def images_per_s(self) -> float:
        return self.explained / self.seconds if self.seconds > 0 else 0.0

    def line(self) -> str:
        return f"explained={self.explained} failed={self.failed} images_per_s={self.images_per_s:.2f}"


@dataclass
class _Prepared:
    """What both the local and the Ray run need: the validated settings, the store, the to-do list."""

    choice: object  # runtimes.RuntimeChoice: the explainer, its runtime, the model
    method: str
    classes: Optional[list]
    save: tuple
    header: dict
    store: object  # store.Store
    todo: list
    skipped: int
    device: torch.device
    workers: int  # decode worker processes
    threads: int  # threads of the explaining process


def _prepare(cfg: JobConfig) -> _Prepared:
    from . import __version__
    from .methods import get_method
    from .store import Store, image_key

    if cfg.batch_size < 1:
        raise UsageError(f"--batch-size must be a positive integer, got {cfg.batch_size}")
    if cfg.threads is not None and cfg.threads < 1:
        raise UsageError(f"--threads must be a positive integer, got {cfg.threads}")
    if cfg.workers is not None and cfg.workers < 0:
        raise UsageError(f"--workers must be 0 (decode in-process) or more, got {cfg.workers}")
    if cfg.map_resolution not in ("layer", "full"):
        raise UsageError(f"--map-resolution must be 'layer' or 'full', got {cfg.map_resolution!r}")
    save = tuple(s.strip() for s in cfg.save.split(",") if s.strip())
    bad = [s for s in save if s not in SAVE_CHOICES]
    if bad or not save:
        raise UsageError(f"--save must be a comma-separated subset of {list(SAVE_CHOICES)}, got {cfg.save!r}")
    save = tuple(s for s in SAVE_CHOICES if s == "maps" or s in save)  # maps always: they mark completion
    if not 0.0 <= cfg.alpha <= 1.0:
        raise UsageError(f"--alpha must be in [0, 1], got {cfg.alpha}")
    from .colormaps import COLORMAP_NAMES

    if cfg.colormap not in COLORMAP_NAMES:
        raise UsageError(f"--colormap must be one of {list(COLORMAP_NAMES)}, got {cfg.colormap!r}")
    try:
        method = get_method(cfg.method).name
    except ValueError as err:
        raise UsageError(f"--method: {err}") from None
    inputs = discover_inputs(cfg.inputs)
    # Never explain our own outputs (overlays) when DIR lies inside an input folder.
    out_prefix = os.path.join(os.path.realpath(cfg.out), "")
    inputs = [p for p in inputs if not p.startswith(out_prefix)]
    if not inputs:
        raise UsageError(f"every input lies inside --out {cfg.out!r}; nothing to explain")
    device = _device(cfg.device)
    runtime = cfg.runtime
    if runtime == "auto" and device.type == "cuda":
        runtime = "torch"  # the model on the GPU; ONNX Runtime here would run on the CPU
    if runtime == "onnxruntime" and device.type == "cuda":
        raise UsageError("--runtime onnxruntime runs on the CPU: use --device cpu, or --runtime torch on the GPU")
    workers = _workers(cfg)
    threads = cfg.threads or max(1, (os.cpu_count() or 1) - workers)
    choice = _make_choice(cfg.model, cfg.layer, method, runtime, threads)
    if choice.runtime == "onnxruntime":
        device = torch.device("cpu")
    classes = _parse_classes(cfg.classes, choice.class_names)
    model_spec = cfg.model if cfg.model == "demo" or cfg.model.startswith("torchvision:") else os.path.realpath(cfg.model)
    header = {
        "format": 1, "model": model_spec, "model_digest": choice_digest(choice, cfg.model), "layer": choice.layer,
        "method": method, "classes": classes, "map_resolution": cfg.map_resolution, "save": list(save),
        "colormap": cfg.colormap, "alpha": float(cfg.alpha), "version": __version__,
        "runtime": choice.runtime,  # informative: both runtimes give the same maps (to 1e-5)
        "class_names": list(choice.class_names) if choice.class_names else None,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    store = Store(cfg.out, header, force=cfg.force)
    todo = [p for p in inputs if image_key(p) not in store.done]
    return _Prepared(choice, method, classes, save, header, store, todo, len(inputs) - len(todo), device,
                     workers, threads)


def _workers(cfg: JobConfig) -> int:
    return min(2, os.cpu_count() or 1) if cfg.workers is None else cfg.workers


def _make_choice(model: str, layer: Optional[str], method: str, runtime: str, threads: Optional[int] = None):
    """runtimes.make_explainer with its errors turned into UsageErrors naming the option."""
    from .runtimes import make_explainer

    try:
        return make_explainer(model, layer, method, runtime, threads=threads)
    except FileNotFoundError as err:
        raise UsageError(f"--model: {err}") from None
    except ImportError as err:
        raise UsageError(f"--runtime {runtime}: {err}") from None
    except (ValueError, TypeError) as err:
        # The messages name what is wrong; say which option it came from.
        option = "--runtime" if "runtime" in str(err) else "--layer" if "target_layer" in str(err) else "--model"
        raise UsageError(f"{option}: {err}") from None
    except Exception as err:  # e.g. a corrupt or foreign .pt file
        raise UsageError(f"--model {model!r} could not be loaded: {type(err).__name__}: {err}") from None


def choice_digest(choice, model_spec: str) -> str:
    """The model's digest: of its parameters when PyTorch holds it, else of the .onnx file's bytes."""
    from .store import file_digest, model_digest

    return model_digest(choice.model) if choice.model is not None else file_digest(model_spec)


def _parse_classes(spec: Optional[str], names: Optional[Sequence[str]]) -> Optional[list]:
    """'1,3' or 'disc,square' (names of the model's classes) → [1, 3]; None → None (every class)."""
    if spec is None or spec.strip().lower() in ("", "all"):
        return None
    ids = []
    for token in (t.strip() for t in spec.split(",")):
        if token.isdigit():
            ids.append(int(token))
        elif names and token in names:
            ids.append(list(names).index(token))
        else:
            known = f" or one of {list(names)}" if names else ""
            raise UsageError(f"--classes must be comma-separated class ids{known}, got {token!r} in {spec!r}")
    if len(set(ids)) != len(ids):
        raise UsageError(f"--classes must not repeat a class, got {spec!r}")
    return ids


def _device(spec: str) -> torch.device:
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(spec)
    except RuntimeError:
        raise UsageError(f"--device must be auto, cpu, cuda or cuda:N, got {spec!r}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"--device {spec!r}: no CUDA device is available")
    return device


def _progress(total: int, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, unit="img", desc="explain", file=sys.stderr, disable=not enabled,
                dynamic_ncols=True, mininterval=0.5, smoothing=0.05)


def run_explain(cfg: JobConfig) -> Summary:
    """Run the job described by `cfg` (see the module docstring); raises UsageError on bad settings."""
    prep = _prepare(cfg)
    store = prep.store
    try:
        print(f"seg-xai explain: {len(prep.todo) + prep.skipped} inputs, {prep.skipped} already explained, "
              f"{len(prep.todo)} to do → {cfg.out}", file=sys.stderr)
        if cfg.ray is not None:
            from .batch_ray import run_on_ray

            summary = run_on_ray(cfg, prep)
        else:
            summary = _run_local(cfg, prep)
    except BaseException:
        store.close()  # the manifest keeps what was completed; failures.csv keeps the last full run's
        raise
    summary.skipped = prep.skipped
    summary.failed = store.failed
    store.finish()
    summary.failures_csv = str(Path(cfg.out) / "failures.csv")
    return summary


def _run_local(cfg: JobConfig, prep: _Prepared) -> Summary:
    device = prep.device
    if not prep.todo:
        return Summary()
    workers = prep.workers
    # Decode workers need cores too: OpenMP threads that oversubscribe the cores stall each other
    # (measured up to 10x slower forwards on the shared 2-core machine), so leave them room.
    threads_before = torch.get_num_threads()
    torch.set_num_threads(cfg.threads or min(threads_before, prep.threads))
    engine = BatchEngine(prep.choice.explainer, prep.classes, device, cfg.map_resolution)
    dataset = ImageBatches(prep.todo, cfg.batch_size)
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=None, num_workers=workers, worker_init_fn=_worker_init if workers else None,
        pin_memory=device.type == "cuda", prefetch_factor=2 if workers else None, in_order=False,
    )
    overlays = "overlays" in prep.save
    state = {"explained": 0}
    writer = _Writer(prep.store, overlays, cfg.colormap, cfg.alpha)
    start = time.perf_counter()
    try:
        with _progress(len(dataset), cfg.progress) as bar:
            for item in loader:
                for path, reason in item.get("failed", ()):
                    prep.store.add_failure(path, reason)
                    bar.update(1)
                if "images" in item:
                    _explain_batch(engine, writer, prep.store, item["paths"], item["images"], overlays, cfg, state)
                    bar.update(len(item["paths"]))
    finally:
        engine.close()
        writer.close()  # waits for the queued batches: they are explained, so they get written
        torch.set_num_threads(threads_before)  # in-process callers keep their setting
    return Summary(explained=writer.written, seconds=time.perf_counter() - start)


def _explain_batch(engine: BatchEngine, writer: _Writer, store, paths: list, images: torch.Tensor,
                   overlays: bool, cfg: JobConfig, state: dict) -> None:
    """Explain one batch and queue its outputs for the writer; failures go to the store."""
    done, failed = explain_images(engine, paths, images, overlays, cfg.colormap, cfg.alpha,
                                  strict=state["explained"] == 0)
    for path, reason in failed:
        store.add_failure(path, reason)
    if done:
        writer.put(done)
        state["explained"] += sum(len(p) for p, _ in done)


def explain_images(engine: BatchEngine, paths: list, images: torch.Tensor, overlays: bool, colormap: str,
                   alpha: float, strict: bool) -> tuple[list, list]:
    """Explain `images` float [n,3,H,W] (one size) → ([(paths, Explained)] of the explained
    images, [(path, reason)] of the failed ones). A failing batch is retried image by image.

    strict: a ValueError/TypeError is raised as a UsageError instead of failing the images (before
    any image has succeeded, it is the settings' fault: e.g. --classes beyond the model's classes).
    """
    try:
        explained = engine.explain(images)
        if explained.maps.is_cuda:  # finish on the device now and free its memory
            explained.finish(overlays, colormap, alpha)
    except (RuntimeError, ValueError, TypeError, FloatingPointError) as err:
        if strict and isinstance(err, (ValueError, TypeError)):
            raise UsageError(f"explaining the first images failed: {err}") from err
        if len(paths) == 1:
            return [], [(paths[0], f"explain: {_reason(err)}")]
        done, failed = [], []
        for i, path in enumerate(paths):
            d, f = explain_images(engine, [path], images[i:i + 1], overlays, colormap, alpha, strict and not done)
            done += d
            failed += f
        return done, failed
    return [(paths, explained)], []


# --------------------------------------------------------------------------- command line


def register(subparsers) -> argparse.ArgumentParser:
    """Add the `explain` subcommand to an argparse subparsers object (func(args) -> exit status)."""
    from .methods import METHODS
    from .runtimes import RUNTIMES

    p = subparsers.add_parser(
        "explain", help="explain many images into an output folder (resumable)",
        description="Explain image files, folders (recursive), glob patterns or list files (.txt, one path per "
                    "line) into --out. Rerunning the same command skips finished images. Exit status: 0 all "
                    "explained, 3 finished with failures (see DIR/failures.csv), 2 usage error.",
    )
    p.add_argument("inputs", nargs="+", metavar="INPUTS", help="image files, folders, glob patterns or list files")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (created; reruns resume into it)")
    p.add_argument("--model", default="demo",
                   help="demo | torchvision:NAME | model.pt | model.onnx (from seg-xai export) (default: %(default)s)")
    p.add_argument("--layer", default=None, help="target layer, a dotted module name (default: the model's)")
    p.add_argument("--runtime", default="auto", choices=RUNTIMES,
                   help="auto: onnxruntime on the CPU when installed and it serves the method at this layer, "
                        "else torch (default: %(default)s)")
    p.add_argument("--method", default="gradcam", choices=sorted(METHODS), help="CAM method (default: %(default)s)")
    p.add_argument("--classes", default=None, help="comma-separated class ids or names (default: all classes)")
    p.add_argument("--batch-size", type=int, default=8, help="images per forward pass (default: %(default)s)")
    p.add_argument("--workers", type=int, default=None,
                   help="decoding processes; 0 decodes in-process (default: min(2, CPU count))")
    p.add_argument("--threads", type=int, default=None,
                   help="torch threads of the explaining process (default: CPU count minus --workers, at least 1)")
    p.add_argument("--save", default="maps", help="maps and optionally overlays: 'maps' or 'maps,overlays' "
                                                  "(default: %(default)s; maps are always saved)")
    p.add_argument("--map-resolution", default="layer", choices=("layer", "full"),
                   help="store maps at the target layer's resolution (compact, exact up to float16) or at "
                        "image size (default: %(default)s)")
    p.add_argument("--colormap", default="jet", help="overlay colormap (default: %(default)s)")
    p.add_argument("--alpha", type=float, default=0.5, help="overlay opacity of the map (default: %(default)s)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (default: %(default)s)")
    p.add_argument("--force", action="store_true",
                   help="delete the previous results in DIR (needed when the settings changed) and start over")
    p.add_argument("--ray", default=None, metavar="ADDRESS",
                   help="run on Ray: 'auto' (the running cluster), 'local' (start one here) or ray://host:port")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_explain)
    return p


def _cmd_explain(args) -> int:
    cfg = JobConfig(
        inputs=args.inputs, out=args.out, model=args.model, layer=args.layer, method=args.method,
        classes=args.classes, batch_size=args.batch_size, workers=args.workers, threads=args.threads, save=args.save,
        map_resolution=args.map_resolution, colormap=args.colormap, alpha=args.alpha, device=args.device,
        force=args.force, runtime=args.runtime, ray=args.ray, progress=not args.no_progress,
    )
    try:
        summary = run_explain(cfg)
    except UsageError as err:
        print(f"seg-xai explain: error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except ValueError as err:  # e.g. the output folder holds other settings' results, or is locked
        print(f"seg-xai explain: error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("seg-xai explain: interrupted; rerun the same command to resume", file=sys.stderr)
        return EXIT_INTERRUPTED
    except OSError as err:  # the output folder: disk full, permissions...
        print(f"seg-xai explain: error: {err}; rerun the same command to resume", file=sys.stderr)
        return EXIT_IO
    if summary.failed:
        print(f"seg-xai explain: {summary.failed} inputs failed, see {summary.failures_csv}", file=sys.stderr)
    print(summary.line(), flush=True)
    return EXIT_FAILURES if summary.failed else EXIT_OK


def main(argv: Optional[Sequence[str]] = None) -> int:
    """`python -m seg_xai_fast.batch explain ...`: the subcommand without the rest of the CLI."""
    parser = argparse.ArgumentParser(prog="seg-xai")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
