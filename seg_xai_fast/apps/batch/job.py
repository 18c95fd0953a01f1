"""`seg-xai explain`: explain many images into an output folder — resumable, bounded memory,
robust to bad files; `--ray` distributes the same job (ray.py).

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

import functools
import gc
import json
import os
import sys
import time
from dataclasses import dataclass, field
from typing import Optional

import torch
from tqdm import tqdm

from ..._version import __version__
from ...engine.capture import model_logits
from ...engine.checks import parse_class_spec
from ...engine.methods import get_method
from ...engine.options import check_options
from ...errors import UsageError
from ...kernels.colormaps import COLORMAP_NAMES
from ...runtimes.choice import make_explainer
from .engine import BatchEngine, Writer, explain_images
from .inputs import DEFAULT_MAX_PIXELS, ImageBatches, discover_inputs, worker_init
from .store import FORMAT_VERSION, Store, file_digest, model_digest

SAVE_CHOICES = ("maps", "overlays")

# --------------------------------------------------------------------------- the job


@dataclass
class JobConfig:
    inputs: list
    out: str
    model: str = "demo"
    weights: Optional[str] = None  # state dict for torchvision:NAME (models.load_model)
    num_classes: Optional[int] = None  # class count of torchvision:NAME; None: from the weights, else 21
    layer: Optional[str] = None
    method: str = "gradcam"
    options: Optional[dict] = None  # the method's options (--option KEY=VALUE)
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
    max_pixels: int = DEFAULT_MAX_PIXELS  # larger images are failures (their memory would be the job's)


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
class Prepared:
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


def prepare(cfg: JobConfig) -> Prepared:
    if cfg.batch_size < 1:
        raise UsageError(f"--batch-size must be a positive integer, got {cfg.batch_size}")
    if cfg.threads is not None and cfg.threads < 1:
        raise UsageError(f"--threads must be a positive integer, got {cfg.threads}")
    if cfg.workers is not None and cfg.workers < 0:
        raise UsageError(f"--workers must be 0 (decode in-process) or more, got {cfg.workers}")
    if not isinstance(cfg.max_pixels, int) or cfg.max_pixels < 1:
        raise UsageError(f"--max-pixels must be a positive integer, got {cfg.max_pixels!r}")
    if cfg.map_resolution not in ("layer", "full"):
        raise UsageError(f"--map-resolution must be 'layer' or 'full', got {cfg.map_resolution!r}")
    save = tuple(s.strip() for s in cfg.save.split(",") if s.strip())
    bad = [s for s in save if s not in SAVE_CHOICES]
    if bad or not save:
        raise UsageError(f"--save must be a comma-separated subset of {list(SAVE_CHOICES)}, got {cfg.save!r}")
    save = tuple(s for s in SAVE_CHOICES if s == "maps" or s in save)  # maps always: they mark completion
    if not 0.0 <= cfg.alpha <= 1.0:
        raise UsageError(f"--alpha must be in [0, 1], got {cfg.alpha}")
    if cfg.colormap not in COLORMAP_NAMES:
        raise UsageError(f"--colormap must be one of {list(COLORMAP_NAMES)}, got {cfg.colormap!r}")
    try:
        method = get_method(cfg.method).name
    except ValueError as err:
        raise UsageError(f"--method: {err}") from None
    try:
        options = check_options(method, cfg.options)
    except (ValueError, TypeError) as err:
        raise UsageError(f"--option: {err}") from None
    # The input-space methods have no layer resolution: their maps are stored at image size.
    map_resolution = cfg.map_resolution if get_method(method).needs_layer else "full"
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
    choice = make_choice(cfg.model, cfg.layer, method, runtime, threads, cfg.weights, cfg.num_classes, options)
    if choice.runtime == "onnxruntime":
        device = torch.device("cpu")
    classes = parse_class_spec(cfg.classes, choice.class_names)
    check_class_range(choice, classes)  # before anything is written to DIR
    model_spec = cfg.model if cfg.model == "demo" or cfg.model.startswith("torchvision:") else os.path.realpath(cfg.model)
    header = {
        "format": FORMAT_VERSION, "model": model_spec, "model_digest": choice_digest(choice, cfg.model), "layer": choice.layer,
        "method": method, "classes": classes, "map_resolution": map_resolution, "save": list(save),
        "colormap": cfg.colormap, "alpha": float(cfg.alpha), "version": __version__,
        "runtime": choice.runtime,  # informative: both runtimes give the same maps (to 1e-5)
        "class_names": list(choice.class_names) if choice.class_names else None,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    if options:  # as JSON reads them back (pairs become lists), so that a rerun compares equal
        header["options"] = json.loads(json.dumps(options))
    store = Store(cfg.out, header, force=cfg.force)
    try:
        todo = [p for p in inputs if not store.is_done(p)]  # digests of the inputs and outputs checked
    except BaseException:
        store.close()
        raise
    return Prepared(choice, method, classes, save, header, store, todo, len(inputs) - len(todo), device,
                     workers, threads)


def _workers(cfg: JobConfig) -> int:
    return min(2, os.cpu_count() or 1) if cfg.workers is None else cfg.workers


def make_choice(model: str, layer: Optional[str], method: str, runtime: str, threads: Optional[int] = None,
                weights: Optional[str] = None, num_classes: Optional[int] = None, options: Optional[dict] = None):
    """runtimes.make_explainer with its errors turned into UsageErrors naming the option."""
    try:
        return make_explainer(model, layer, method, runtime, threads=threads, weights=weights, num_classes=num_classes,
                              options=options)
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


def class_count(choice) -> Optional[int]:
    """How many classes the model outputs: from its class names, the ONNX file, or one forward
    pass of a small random image (None when the model refuses that image)."""
    if choice.class_names:
        return len(choice.class_names)
    count = getattr(choice.explainer, "num_classes", None)  # OnnxExplainer
    if count is not None or choice.model is None:
        return count
    param = next(choice.model.parameters(), None)
    probe = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    try:
        logits = model_logits(choice.model, probe.to(param.device) if param is not None else probe,
                              getattr(choice.explainer, "output_key", "out"))
    except Exception:  # noqa: BLE001 - e.g. a model for other sizes: the images' own runs will tell
        return None
    return int(logits.shape[1])


def check_class_range(choice, classes: Optional[list]) -> None:
    """UsageError for --classes beyond the model's classes (checked before DIR is written)."""
    if not classes:
        return
    count = class_count(choice)
    bad = [c for c in classes if count is not None and not 0 <= c < count]
    if bad:
        raise UsageError(f"--classes must be class ids in [0, {count - 1}] (the model outputs {count} classes), "
                         f"got {bad}")


def choice_digest(choice, model_spec: str) -> str:
    """The model's digest: of its parameters when PyTorch holds it, else of the .onnx file's bytes."""
    return model_digest(choice.model) if choice.model is not None else file_digest(model_spec)


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


def progress_bar(total: int, enabled: bool):
    return tqdm(total=total, unit="img", desc="explain", file=sys.stderr, disable=not enabled,
                dynamic_ncols=True, mininterval=0.5, smoothing=0.05)


def run_local(cfg: JobConfig, prep: Prepared) -> Summary:
    device = prep.device
    if not prep.todo:
        return Summary()
    workers = prep.workers
    # Decode workers need cores too: OpenMP threads that oversubscribe the cores stall each other
    # (measured up to 10x slower forwards on the shared 2-core machine), so leave them room.
    threads_before = torch.get_num_threads()
    torch.set_num_threads(cfg.threads or min(threads_before, prep.threads))
    engine = BatchEngine(prep.choice.explainer, prep.classes, device, prep.header["map_resolution"], defer=True)
    dataset = ImageBatches(prep.todo, cfg.batch_size, cfg.max_pixels)
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=None, num_workers=workers,
        worker_init_fn=functools.partial(worker_init, close_fds=prep.store.inherited_fds()) if workers else None,
        pin_memory=device.type == "cuda", prefetch_factor=2 if workers else None, in_order=False,
    )
    overlays = "overlays" in prep.save
    writer = Writer(prep.store, overlays, cfg.colormap, cfg.alpha)
    start = time.perf_counter()
    batches = forked_iter(loader, workers)
    try:
        with progress_bar(len(dataset), cfg.progress) as bar:
            for item in batches:
                for path, reason in item.get("failed", ()):
                    prep.store.add_failure(path, reason)
                    bar.update(1)
                if "images" in item:
                    _explain_batch(engine, writer, prep.store, item, overlays, cfg)
                    bar.update(len(item["paths"]))
    finally:
        # The last reference to the loader's iterator: dropping it stops and joins the decode
        # workers now. An interrupt's traceback keeps this frame alive until the process exits,
        # and workers still sending a batch to a dying process print tracebacks of their own.
        batches = None  # noqa: F841
        engine.close()
        try:
            writer.close()  # waits for the queued batches: they are explained, so they get written
        finally:
            torch.set_num_threads(threads_before)  # in-process callers keep their setting
    return Summary(explained=writer.written, seconds=time.perf_counter() - start)


def forked_iter(loader, workers: int):
    """iter(loader), whose worker processes are forked from this one. Garbage left in this process
    (a finished video's decoder, say, whose threads do not exist in a child) must not be freed by a
    worker's collector, where it can hang on a lock of a thread that was not forked: every object,
    garbage included, is frozen while the workers fork, so a child's collector never looks at it
    (this process collects it after unfreezing; collecting first would cost ~60 ms of a run's start)."""
    if not workers:
        return iter(loader)
    gc.freeze()
    try:
        return iter(loader)
    finally:
        gc.unfreeze()


def _explain_batch(engine: BatchEngine, writer: Writer, store, item: dict, overlays: bool, cfg: JobConfig) -> None:
    """Explain one batch (ImageBatches' item) and queue its outputs for the writer; failures go to the store."""
    paths = item["paths"]
    done, failed = explain_images(engine, paths, item["images"], overlays, cfg.colormap, cfg.alpha)
    for path, reason in failed:
        store.add_failure(path, reason)
    if done:
        writer.put(done, dict(zip(paths, item["digests"])))
