"""OnnxExplainer: explanations from a graph written by export_onnx, run with ONNX Runtime.

    sx.export_onnx(model, "classifier.3", "model.onnx")     # once, with torch
    explainer = sx.OnnxExplainer("model.onnx", method="gradcam++")
    res = explainer(images)                                   # Explanation, as sx.Explainer's

One ORT run gives the activations and the logits (export.py says how the graph is laid out);
the labels come from the core's one-pass argmax; the CAMs of every requested class then follow
from those tensors through the same closed form (or Eigen-CAM) the PyTorch runtime uses
(engine/outputs.py), so both runtimes give the same maps.
"""
from __future__ import annotations

import base64
import json
import os
from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np
import torch

from .. import kernels
from ..engine.checks import check_images
from ..engine.methods import get_method
from ..engine.outputs import Explanation, ForwardPass, MaskSpec, explain_eigen, explain_linear_head
from .export import (ACTIVATIONS_NAME, INPUT_NAME, LABELS_NAME, LOGITS_NAME, METADATA_KEY, NO_HEAD_HINT,
                     READABLE_FORMATS)

# Preferred execution providers, fastest first; only those onnxruntime reports are used.
PREFERRED_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")

def default_providers() -> list[str]:
    """The execution providers OnnxExplainer uses by default: TensorRT, CUDA, then CPU, as installed."""
    import onnxruntime as ort

    available = ort.get_available_providers()
    return [p for p in PREFERRED_PROVIDERS if p in available] or list(available)


def import_onnxruntime():
    try:
        import onnxruntime as ort
    except ImportError:
        raise ImportError(
            "onnxruntime is not installed: pip install onnxruntime (or onnxruntime-gpu), or "
            "pip install 'seg-xai-fast[onnx]'; sx.Explainer runs without it"
        ) from None
    return ort


class OnnxExplainer:
    """CAM explanations from a graph written by sx.export_onnx, run with ONNX Runtime.

    path: the .onnx file. method: one of sx.methods(); the gradient methods need the file's
    linear head (see export_onnx), eigencam does not.
    providers: ONNX Runtime execution providers in order of preference; None: TensorRT and CUDA
    (when onnxruntime-gpu provides them), then CPU.
    backend: the CAM stage's kernels, as sx.Explainer's ("auto" | "fused" | "torch").
    threads: ONNX Runtime intra-op threads (None: its default, one per physical core).
    spin: let ORT's idle worker threads busy-wait for work (its default). Off here: between
    forward passes the CAM stage, and in the video pipeline the decoder and encoder threads,
    need those cores; busy-waiting workers then slow everything down (measured on 2 cores).

    Call it as sx.Explainer: ``explainer(images, classes=None, masks=None)`` → Explanation, with
    maps on the CPU. ``forward(images)`` and ``explain_outputs(...)`` split that call in two
    (one ORT run, then the CAM maths) for callers that look at the predicted labels before
    choosing classes, like the video pipeline.
    """

    def __init__(
        self,
        path: Union[str, os.PathLike],
        method: str = "gradcam",
        providers: Optional[Sequence[str]] = None,
        backend: str = "auto",
        *,
        max_memory_mb: float = 1024.0,
        threads: Optional[int] = None,
        spin: bool = False,
    ) -> None:
        ort = import_onnxruntime()
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"ONNX file {str(self.path)!r} does not exist")
        if backend not in kernels.BACKENDS:
            raise ValueError(f"backend must be one of {kernels.BACKENDS}, got {backend!r}")
        self.backend, self.max_memory_mb = backend, float(max_memory_mb)
        self.providers = self._check_providers(ort, providers)
        options = ort.SessionOptions()
        if threads is not None:
            options.intra_op_num_threads = int(threads)
        options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
        options.add_session_config_entry("session.inter_op.allow_spinning", "1" if spin else "0")
        try:
            self.session = ort.InferenceSession(str(self.path), options, providers=self.providers)
        except Exception as err:  # noqa: BLE001 - ORT raises its own exception types
            raise ValueError(f"cannot load {str(self.path)!r} as an ONNX model: {err}") from None
        self.meta = self._read_metadata()
        self.graph_labels = LABELS_NAME in self.meta.get("outputs", ())  # format 2 files
        self.layer_name = self.meta["layer"]
        self.num_classes = int(self.meta["num_classes"])
        head = self.meta.get("head")
        self.head_weight: Optional[torch.Tensor] = None  # float32 [L,C]
        self.align_corners: Optional[bool] = None  # None: no upsample after the head
        if head is not None:
            raw = np.frombuffer(base64.b64decode(head["weight"]), dtype="<f4").reshape(head["shape"])
            self.head_weight = torch.from_numpy(raw.copy())
            self.align_corners = bool(head["align_corners"]) if head["upsample"] else None
        self.method = method
        self._check_method(self.method)

    @staticmethod
    def _check_providers(ort, providers) -> list[str]:
        if providers is None:
            return default_providers()
        if isinstance(providers, str):
            providers = [providers]
        available = ort.get_available_providers()
        unknown = [p for p in providers if p not in available]
        if unknown or not providers:
            raise ValueError(f"providers must be a non-empty list of available ONNX Runtime providers "
                             f"{available}, got {list(providers)}")
        return list(providers)

    def _read_metadata(self) -> dict:
        raw = self.session.get_modelmeta().custom_metadata_map.get(METADATA_KEY)
        if raw is None:
            raise ValueError(
                f"{str(self.path)!r} has no seg_xai_fast metadata, so the target layer's activations and the "
                "linear head are unknown: write the file with sx.export_onnx(model, target_layer, path) or "
                "`seg-xai export-onnx`, or explain the PyTorch model with sx.Explainer"
            )
        meta = json.loads(raw)
        if meta.get("format") not in READABLE_FORMATS:
            raise ValueError(f"{str(self.path)!r} has seg_xai_fast metadata format {meta.get('format')!r}; this "
                             f"version reads formats {list(READABLE_FORMATS)}: export the model again with sx.export_onnx")
        return meta

    def _check_method(self, method: str) -> str:
        spec = get_method(method)
        if spec.family == "perturbation":
            raise ValueError(f"method {spec.name!r} (a perturbation method) is not served by OnnxExplainer yet; "
                             "explain the PyTorch model with sx.Explainer")
        if spec.needs_gradients and self.head_weight is None:
            raise ValueError(
                f"method {spec.name!r} needs gradients, and {str(self.path)!r} was exported without a linear head "
                f"after target layer {self.layer_name!r} (ONNX Runtime computes no gradients, only the closed form "
                f"of a linear head): {NO_HEAD_HINT}; or use method 'eigencam'"
            )
        return spec.name

    @property
    def method(self) -> str:
        return self._method

    @method.setter
    def method(self, name: str) -> None:
        self._method = self._check_method(name)

    @property
    def provider(self) -> str:
        """The execution provider the session actually runs on first."""
        return self.session.get_providers()[0]

    def __enter__(self) -> "OnnxExplainer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Nothing to release until the object is dropped (the session frees itself)."""

    def forward(self, images: torch.Tensor) -> ForwardPass:
        """One ORT run of images float [B,3,H,W] → ForwardPass with activations float32 [B,C,h,w],
        logits float32 [B,L,H,W] and labels int64 [B,H,W] (argmax over classes), on the CPU."""
        images = self._check_images(images)
        names = [LOGITS_NAME, ACTIVATIONS_NAME] + ([LABELS_NAME] if self.graph_labels else [])
        out = self.session.run(names, {INPUT_NAME: images.detach().float().cpu().contiguous().numpy()})
        logits = torch.from_numpy(out[0])
        # Format-3 graphs leave the labels to the core's one-pass argmax (format 2 carried them).
        labels = torch.from_numpy(out[2]) if self.graph_labels else kernels.class_argmax(logits, self.backend)
        return ForwardPass(images, torch.from_numpy(out[1]), logits, labels)

    def explain_outputs(
        self,
        outputs: ForwardPass,
        classes: Optional[Sequence[int]] = None,
        masks: MaskSpec = None,
        *,
        resolution: str = "full",
    ) -> Explanation:
        """The CAM stage on forward()'s result; classes, masks and resolution as sx.Explainer's."""
        activations, logits, labels = outputs.activations, outputs.logits, outputs.labels
        if get_method(self.method).needs_gradients:
            upsample = None if self.align_corners is None else (tuple(activations.shape[-2:]), self.align_corners)
            res = explain_linear_head(activations, logits, self.head_weight, upsample, classes, masks, self.method,
                                      layer=self.layer_name, backend=self.backend, max_memory_mb=self.max_memory_mb,
                                      labels=labels, resolution=resolution)
        else:
            res = explain_eigen(activations, logits, classes, layer=self.layer_name, backend=self.backend,
                                labels=labels, resolution=resolution)
        res.info.update(runtime="onnxruntime", provider=self.provider)
        return res

    def __call__(self, images: torch.Tensor, classes: Optional[Sequence[int]] = None, masks: MaskSpec = None,
                 *, resolution: str = "full") -> Explanation:
        """Explain `images` float [B,3,H,W] for `classes` (None: every output class); `masks` and
        `resolution` as sx.Explainer's."""
        return self.explain_outputs(self.forward(images), classes=classes, masks=masks, resolution=resolution)

    def _check_images(self, images) -> torch.Tensor:
        images = check_images(images, self.meta["example_input"][1], "as exported")
        if not self.meta.get("dynamic_spatial", True) and list(images.shape[2:]) != self.meta["example_input"][2:]:
            raise ValueError(
                f"{str(self.path)!r} only serves {self.meta['example_input'][2:]} images (the exporter fixed the "
                f"spatial size), got {list(images.shape[2:])}: resize the images or export at this size"
            )
        return images
