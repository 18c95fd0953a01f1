"""`seg-xai explain --ray ADDRESS`: the same job on Ray Data, same outputs, same layout.

The driver (this process) discovers the inputs, holds the output folder's lock and is the only
writer of the manifest and failures.csv. Ray Data streams the to-do paths to a pool of actors:
one per GPU of the cluster (num_gpus=1 each; several GPUs of one machine go the same way), or
CPU actors when the cluster has no GPU. Each actor loads the model once, decodes its batches
(a thread pool: PIL releases the GIL), explains them and writes each batch's files straight into
DIR, which must therefore be on a filesystem that every node mounts at the same path. It returns
one small record per image; the driver appends the manifest lines as records arrive, so a killed
job resumes like a local one.

Ray is an optional dependency: pip install 'seg-xai-fast[ray]' (or 'ray[data]').
"""
from __future__ import annotations

import json
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from ...engine.methods import layer_for
from ...errors import UsageError
from .engine import BatchEngine, explain_images
from .inputs import failure_reason, read_image, stack_images
from .job import JobConfig, Prepared, Summary, choice_digest, make_choice, progress_bar
from .store import StoreFiles


class _ExplainActor:
    """A Ray Data actor: model + explainer loaded once; __call__ explains a batch of paths."""

    def __init__(self, root: str, header: dict, model_spec: str, overlays: bool, map_resolution: str,
                 max_pixels: int, decode_threads: int = 4, weights: Optional[str] = None,
                 num_classes: Optional[int] = None) -> None:
        # One thread per actor: each actor holds one CPU of the cluster.
        choice = make_choice(model_spec, layer_for(header["method"], header["layer"]), header["method"],
                             header.get("runtime", "torch"), threads=1, weights=weights, num_classes=num_classes,
                             options=header.get("options"))
        digest = choice_digest(choice, model_spec)
        if digest != header["model_digest"]:  # e.g. another model.pt at the same path on this node
            raise RuntimeError(f"model {model_spec!r} on this node has digest {digest}, "
                               f"the driver's has {header['model_digest']}")
        # Ray sets CUDA_VISIBLE_DEVICES to the actor's GPU, so "cuda" is that GPU.
        on_gpu = torch.cuda.is_available() and choice.runtime == "torch"
        self.engine = BatchEngine(choice.explainer, header["classes"], torch.device("cuda" if on_gpu else "cpu"),
                                  map_resolution)
        self.files = StoreFiles(root, header)
        self.overlays, self.colormap, self.alpha = overlays, header["colormap"], header["alpha"]
        self.pool = ThreadPoolExecutor(decode_threads)
        self.max_pixels = max_pixels

    def __call__(self, batch: dict) -> dict:
        """batch {"path": str [n]} → {"path", "ok": bool, "reason": str, "entry": JSON str}, one row per path."""
        paths = [str(p) for p in batch["path"]]
        records = {}  # path → (ok, reason, entry)

        def decode(path):
            try:
                return read_image(path, self.max_pixels)
            except Exception as err:
                return err

        groups: dict[tuple, list] = {}
        digests = {}
        for path, decoded in zip(paths, self.pool.map(decode, paths)):
            if isinstance(decoded, Exception):
                records[path] = (False, failure_reason(decoded), "")
            else:
                image, digests[path] = decoded
                groups.setdefault(tuple(image.shape[-2:]), []).append((path, image))
        for group in groups.values():
            group_paths = [p for p, _ in group]
            images = stack_images([im for _, im in group])
            done, failed = explain_images(self.engine, group_paths, images, self.overlays, self.colormap,
                                          self.alpha)
            for path, reason in failed:
                records[path] = (False, reason, "")
            for paths_, ex in done:
                for entry in ex.write(self.files, paths_, digests, self.overlays, self.colormap, self.alpha,
                                      self.pool):
                    records[entry["input"]] = (True, "", json.dumps(entry))
        rows = [records[p] for p in paths]
        return {"path": np.array(paths, dtype=object), "ok": np.array([r[0] for r in rows]),
                "reason": np.array([r[1] for r in rows], dtype=object),
                "entry": np.array([r[2] for r in rows], dtype=object)}


def connect(address: str) -> bool:
    """Connect to (or start) Ray; True when this call started it (and so must shut it down)."""
    try:
        import ray
    except ImportError:
        raise UsageError("--ray needs the optional dependency Ray: pip install 'seg-xai-fast[ray]'") from None
    if ray.is_initialized():
        return False
    kwargs = dict(log_to_driver=False, include_dashboard=False, configure_logging=True, logging_level="warning")
    # Ray puts the driver's working directory first on its workers' sys.path. Run from a source
    # checkout, that would make the actors import the sources (without the compiled core) instead
    # of the installed package, so ray.init runs from the installed package's parent folder.
    here = os.getcwd()
    os.chdir(Path(__file__).resolve().parent.parent)
    try:
        if address == "local":
            ray.init(**kwargs)
        else:
            ray.init(address=address, **kwargs)
    except (ConnectionError, RuntimeError, ValueError) as err:
        raise UsageError(f"--ray {address!r}: cannot connect to a Ray cluster: {err}") from None
    finally:
        os.chdir(here)
    return True


def run_on_ray(cfg: JobConfig, prep: Prepared) -> Summary:
    """Explain prep.todo on Ray (see the module docstring) → Summary; manifest and failures via prep.store."""
    started = connect(cfg.ray)
    import ray
    import ray.data

    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False  # ours is the tqdm bar below
    ctx.print_on_execution_start = False
    try:
        resources = ray.cluster_resources()
        gpus = int(resources.get("GPU", 0))
        if gpus:
            actors, per_actor = gpus, dict(num_gpus=1, num_cpus=1)
        else:  # half the CPUs for actors, the rest for Ray's own tasks and decoding threads
            actors, per_actor = max(1, int(resources.get("CPU", 1)) // 2), dict(num_cpus=1)
        print(f"seg-xai explain: Ray cluster with {int(resources.get('CPU', 0))} CPUs and {gpus} GPUs: "
              f"{actors} {'GPU' if gpus else 'CPU'} actors", flush=True, file=sys.stderr)
        summary = Summary()
        if not prep.todo:
            return summary
        ds = ray.data.from_items([{"path": p} for p in prep.todo])
        results = ds.map_batches(
            _ExplainActor, batch_size=cfg.batch_size, batch_format="numpy",
            # The header's model: a file's absolute path (the actors' working directory is Ray's).
            fn_constructor_kwargs=dict(root=os.path.abspath(cfg.out), header=prep.header, model_spec=prep.header["model"],
                                       overlays="overlays" in prep.save, map_resolution=prep.header["map_resolution"],
                                       max_pixels=cfg.max_pixels, num_classes=cfg.num_classes,
                                       weights=cfg.weights and os.path.abspath(cfg.weights)),
            compute=ray.data.ActorPoolStrategy(size=actors), **per_actor,
        )
        start = time.perf_counter()
        with progress_bar(len(prep.todo), cfg.progress) as bar:
            try:
                for block in results.iter_batches(batch_size=None, batch_format="numpy"):
                    entries = [json.loads(e) for ok, e in zip(block["ok"], block["entry"]) if ok]
                    prep.store.append(entries)
                    for ok, path, reason in zip(block["ok"], block["path"], block["reason"]):
                        if not ok:
                            prep.store.add_failure(str(path), str(reason))
                    summary.explained += len(entries)
                    bar.update(len(block["path"]))
            except Exception as err:
                cause = _usage_cause(err)
                if cause is not None:
                    raise UsageError(str(cause)) from None
                raise
        summary.seconds = time.perf_counter() - start
        return summary
    finally:
        if started:
            ray.shutdown()


def _usage_cause(err: Optional[BaseException]) -> Optional[BaseException]:
    """The UsageError raised inside an actor, if `err` (a Ray error) wraps one."""
    for _ in range(10):
        if err is None:
            return None
        inner = getattr(err, "cause", None) or err.__cause__
        # Ray's RayTaskError(UsageError) is itself a UsageError; prefer the original inside it.
        if isinstance(err, UsageError) and not isinstance(inner, UsageError):
            return err
        err = inner
    return None
