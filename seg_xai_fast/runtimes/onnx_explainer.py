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
import contextlib
import json
import os
from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np
import torch

from .. import kernels
from ..engine.base import ExplainerBase
from ..engine.checks import check_images
from ..engine.methods import get_method, registered
from ..engine.options import check_options
from ..engine.outputs import Explanation, ForwardPass, MaskSpec
from ..fileio import atomic_write
from .export import (ACTIVATIONS_NAME, INPUT_NAME, LABELS_NAME, LOGITS_NAME, METADATA_KEY, NO_HEAD_HINT,
                     READABLE_FORMATS, graph_digest, verified_marker)

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


class OnnxExplainer(ExplainerBase):
    """CAM explanations from a graph written by sx.export_onnx, run with ONNX Runtime.

    path: the .onnx file. method: one of sx.methods() (a name or a spec, yours included); the
    gradient methods need the file's linear head (see export_onnx); the activation methods, the
    perturbation methods (Score-CAM at the exported layer) and the segment attributions need only
    forwards. A method a graph cannot serve says why in its spec (Ablation-CAM replaces the layer
    inside the graph, FullGrad differentiates to the input); `seg-xai methods` lists the runtimes.
    options, normalize: as sx.Explainer's (the perturbation methods' options; raw maps,
    ``normalize=False``, are served for the perturbation methods).
    providers: ONNX Runtime execution providers in order of preference; None: TensorRT and CUDA
    (when onnxruntime-gpu provides them), then CPU.
    backend: the CAM stage's kernels, as sx.Explainer's ("auto" | "fused" | "torch").
    threads: ONNX Runtime intra-op threads (None: its default, one per physical core).
    options: the method's options, as sx.Explainer's (``sx.method_options(method)``); setting
    ``explainer.method`` later resets them to the new method's defaults.
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
        options: Optional[dict] = None,
        normalize: bool = True,
    ) -> None:
        ort = import_onnxruntime()
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"ONNX file {str(self.path)!r} does not exist")
        if backend not in kernels.BACKENDS:
            raise ValueError(f"backend must be one of {kernels.BACKENDS}, got {backend!r}")
        self.backend, self.max_memory_mb = backend, float(max_memory_mb)
        self.providers = self._check_providers(ort, providers)
        session_options = ort.SessionOptions()
        if threads is not None:
            session_options.intra_op_num_threads = int(threads)
        session_options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
        session_options.add_session_config_entry("session.inter_op.allow_spinning", "1" if spin else "0")
        try:
            self.session = ort.InferenceSession(str(self.path), session_options, providers=self.providers)
        except Exception as err:  # noqa: BLE001 - ORT raises its own exception types
            raise ValueError(f"cannot load {str(self.path)!r} as an ONNX model: {err}") from None
        self.meta = self._read_metadata()
        self.graph_labels = LABELS_NAME in self.meta["outputs"]  # format 2 files
        self.layer_name = self.meta["layer"]
        self.num_classes = self.meta["num_classes"]
        self.head_weight: Optional[torch.Tensor] = None  # float32 [L,C]
        self.align_corners: Optional[bool] = None  # None: no upsample after the head
        if self.meta["head"] is not None:
            self.head_weight, self.align_corners = self._read_head(self.meta["head"])
        self._check_graph()
        if not isinstance(normalize, bool):
            raise TypeError(f"normalize must be True or False, got {normalize!r}")
        self.normalize = normalize
        self.class_names = None
        self.method = method
        self.options = check_options(self.spec, options)

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
        """The file's seg_xai_fast metadata, its fields checked (ValueError naming the file)."""
        raw = self.session.get_modelmeta().custom_metadata_map.get(METADATA_KEY)
        if raw is None:
            raise ValueError(
                f"{str(self.path)!r} has no seg_xai_fast metadata, so the target layer's activations and the "
                "linear head are unknown: write the file with sx.export_onnx(model, target_layer, path) or "
                "`seg-xai export-onnx`, or explain the PyTorch model with sx.Explainer"
            )
        try:
            meta = json.loads(raw)
        except ValueError as err:
            raise self._broken(f"it is not JSON ({err})") from None
        if not isinstance(meta, dict):
            raise self._broken(f"expected a JSON object, got {type(meta).__name__}")
        if meta.get("format") not in READABLE_FORMATS:
            raise ValueError(f"{str(self.path)!r} has seg_xai_fast metadata format {meta.get('format')!r}; this "
                             f"version reads formats {list(READABLE_FORMATS)}: export the model again with sx.export_onnx")
        expected = {"layer": str, "num_classes": int, "example_input": list, "outputs": list}
        if meta["format"] >= 4 or "channels" in meta:
            expected["channels"] = int
        if meta["format"] >= 4:
            expected["graph_digest"] = str
        for key, kind in expected.items():
            if not isinstance(meta.get(key), kind) or isinstance(meta.get(key), bool):
                raise self._broken(f"field {key!r} must be a {kind.__name__}, got {meta.get(key)!r}")
        example = meta["example_input"]
        if len(example) != 4 or not all(isinstance(d, int) and d > 0 for d in example):
            raise self._broken(f"field 'example_input' must be 4 positive ints [B,C,H,W], got {example!r}")
        if meta["num_classes"] < 1 or meta.get("channels", 1) < 1:
            raise self._broken(f"num_classes and channels must be positive, got {meta['num_classes']!r} and "
                               f"{meta.get('channels')!r}")
        meta.setdefault("head", None)
        return meta

    def _broken(self, why: str) -> ValueError:
        return ValueError(f"{str(self.path)!r} has broken seg_xai_fast metadata: {why}; export the model again "
                          "with sx.export_onnx or `seg-xai export-onnx`")

    def _read_head(self, head) -> tuple[torch.Tensor, Optional[bool]]:
        """The head's weight float32 [L,C] and upsample policy from the metadata, checked."""
        if not isinstance(head, dict):
            raise self._broken(f"field 'head' must be an object or null, got {head!r}")
        shape = head.get("shape")
        channels = self.meta.get("channels")
        if (not isinstance(shape, list) or len(shape) != 2 or shape[0] != self.num_classes
                or (channels is not None and shape[1] != channels) or not isinstance(shape[1], int) or shape[1] < 1):
            raise self._broken(f"head shape must be [num_classes={self.num_classes}, channels="
                               f"{channels if channels is not None else 'C'}], got {shape!r}")
        try:
            raw = base64.b64decode(head["weight"], validate=True)
        except (KeyError, TypeError, ValueError) as err:
            raise self._broken(f"the head weight is not base64 ({err})") from None
        if len(raw) != 4 * shape[0] * shape[1]:
            raise self._broken(f"the head weight holds {len(raw)} bytes, expected {4 * shape[0] * shape[1]} for "
                               f"float32 {shape}")
        if not isinstance(head.get("upsample"), bool) or not isinstance(head.get("align_corners"), bool):
            raise self._broken("head 'upsample' and 'align_corners' must be true or false")
        weight = torch.from_numpy(np.frombuffer(raw, dtype="<f4").reshape(shape).astype(np.float32))
        return weight, (head["align_corners"] if head["upsample"] else None)

    def _check_graph(self) -> None:
        """The metadata must describe this graph: its input and output names and shapes, and (format
        4) the graph's digest: a graph from another model carrying this metadata gave wrong maps."""
        inputs = self.session.get_inputs()
        outputs = {o.name: o for o in self.session.get_outputs()}
        wanted = [LOGITS_NAME, ACTIVATIONS_NAME] + ([LABELS_NAME] if self.graph_labels else [])
        if len(inputs) != 1 or inputs[0].name != INPUT_NAME or any(n not in outputs for n in wanted):
            raise self._broken(f"the graph has inputs {[i.name for i in inputs]} and outputs {list(outputs)}, the "
                               f"metadata describes input {INPUT_NAME!r} and outputs {wanted}")
        dims = {"input channels": (inputs[0].shape, 1, self.meta["example_input"][1]),
                "logits classes": (outputs[LOGITS_NAME].shape, 1, self.num_classes),
                "activation channels": (outputs[ACTIVATIONS_NAME].shape, 1, self.meta.get("channels"))}
        for what, (shape, axis, want) in dims.items():
            if len(shape) != 4:
                raise self._broken(f"the graph's {what.split()[0]} have {len(shape)} dimensions, expected 4")
            if want is not None and isinstance(shape[axis], int) and shape[axis] != want:
                raise self._broken(f"the graph's {what}: {shape[axis]}, the metadata says {want}")
        if self.meta["format"] >= 4:
            data = self.path.read_bytes()
            marker = verified_marker(data)
            if marker.is_file():  # these very bytes passed the check before
                return
            try:
                import onnx
            except ImportError:  # onnxruntime alone: the names and shapes were checked
                return
            proto = onnx.load_from_string(data)
            external = any(t.data_location == onnx.TensorProto.EXTERNAL for t in proto.graph.initializer)
            if external:  # weights in other files: check them every time (the marker covers this file only)
                onnx.load_external_data_for_model(proto, str(self.path.parent))
            digest = graph_digest(proto, self.meta)
            if digest != self.meta["graph_digest"]:
                raise self._broken(f"it was not written for this graph, or was edited since (digest {digest}, the "
                                   f"metadata's {self.meta['graph_digest']}): the file's graph was replaced or the "
                                   "metadata changed or copied from another model")
            with contextlib.suppress(OSError):  # a read-only cache only costs the next run this check
                if external:
                    return
                marker.parent.mkdir(parents=True, exist_ok=True)
                atomic_write(marker, lambda f: None, fsync=False)

    def _check_method(self, method):
        """The spec of `method` if ONNX Runtime serves it with this graph, else a ValueError saying why."""
        spec = get_method(method)
        reason = spec.unavailable_on("onnxruntime")
        if reason is not None:
            raise ValueError(f"method {spec.name!r} is not served on ONNX Runtime: {reason}")
        if not self.normalize and not spec.perturbs:
            raise ValueError(f"normalize=False (raw maps) is served on ONNX Runtime for the perturbation methods, "
                             f"not {spec.name!r}: use sx.Explainer for raw gradient maps")
        if spec.needs_gradients and self.head_weight is None:
            gradient_free = ", ".join(name for name, other in registered().items()
                                      if not other.needs_gradients and other.unavailable_on("onnxruntime") is None)
            raise ValueError(
                f"method {spec.name!r} needs gradients, and {str(self.path)!r} was exported without a linear head "
                f"after target layer {self.layer_name!r} (ONNX Runtime computes no gradients, only the closed form "
                f"of a linear head): {NO_HEAD_HINT}; or use a gradient-free method ({gradient_free})"
            )
        return spec

    @property
    def method(self) -> str:
        return self.spec.name

    @method.setter
    def method(self, name) -> None:
        self.spec = self._check_method(name)
        self.options = check_options(self.spec, None)  # a new method starts from its defaults

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

    def forwards(self) -> "OnnxForwards":
        return OnnxForwards(self)

    def head_of(self, outputs: ForwardPass) -> tuple:
        """The exported head's weight float32 [L,C] and its upsample to the logits (from the metadata)."""
        if self.head_weight is None:
            return None, None
        upsample = None if self.align_corners is None else (tuple(outputs.activations.shape[-2:]), self.align_corners)
        return self.head_weight, upsample

    def run(self, images: torch.Tensor, activations: bool = True, labels: bool = False) -> tuple:
        """The graph's outputs for checked images float [B,3,H,W]: (logits float32 [B,L,H,W],
        activations float32 [B,C,h,w] or None, labels int64 [B,H,W] or None), on the CPU."""
        names = [LOGITS_NAME] + ([ACTIVATIONS_NAME] if activations else [])
        graph_labels = labels and self.graph_labels
        out = self.session.run(names + ([LABELS_NAME] if graph_labels else []),
                               {INPUT_NAME: images.detach().float().cpu().contiguous().numpy()})
        logits = torch.from_numpy(out[0])
        if logits.ndim != 4 or logits.shape[1] != self.num_classes:  # formats without a digest
            raise ValueError(f"{str(self.path)!r}: the graph's logits have shape {list(logits.shape)}, its metadata "
                             f"says {self.num_classes} classes: export the model again with sx.export_onnx")
        A = torch.from_numpy(out[1]) if activations else None
        if not labels:
            return logits, A, None
        # Format-3 graphs leave the labels to the core's one-pass argmax (format 2 carried them).
        return logits, A, torch.from_numpy(out[-1]) if graph_labels else kernels.class_argmax(logits, self.backend)

    def explain_checked(self, images: torch.Tensor, classes, masks: MaskSpec, resolution: str) -> Explanation:
        return self._tagged(super().explain_checked(images, classes, masks, resolution))

    def explain_outputs(self, outputs: ForwardPass, classes: Optional[Sequence[int]] = None, masks: MaskSpec = None,
                        *, resolution: str = "full") -> Explanation:
        """The CAM stage on forward()'s result; classes, masks and resolution as sx.Explainer's."""
        return self._tagged(super().explain_outputs(outputs, classes, masks, resolution=resolution))

    def _tagged(self, res: Explanation) -> Explanation:
        res.info.update(runtime="onnxruntime", provider=self.provider)
        return res

    def check_images(self, images) -> torch.Tensor:
        images = check_images(images, self.meta["example_input"][1], "as exported")
        if not self.meta.get("dynamic_spatial", True) and list(images.shape[2:]) != self.meta["example_input"][2:]:
            raise ValueError(
                f"{str(self.path)!r} only serves {self.meta['example_input'][2:]} images (the exporter fixed the "
                f"spatial size), got {list(images.shape[2:])}: resize the images or export at this size"
            )
        return images


class OnnxForwards:
    """The perturbation methods' forwards on ONNX Runtime (engine.perturbation's TorchForwards
    for a graph): the scores are read from the full-resolution logits."""

    runtime = "onnxruntime"
    upsample = None  # the graph does not expose the logits before the final upsample

    def __init__(self, explainer: OnnxExplainer) -> None:
        self.explainer = explainer

    def state(self):
        return contextlib.nullcontext()

    def outputs(self, images: torch.Tensor, head=None, labels: bool = True) -> ForwardPass:
        """One ORT run of checked images → ForwardPass with activations float32 [B,C,h,w], logits
        float32 [B,L,H,W], labels int64 [B,H,W] and their counts int64 [B,L] (labels=False: none;
        the explanation takes the argmax itself), on the CPU."""
        logits, activations, graph_labels = self.explainer.run(images, labels=labels and self.explainer.graph_labels)
        if not labels:
            return ForwardPass(images, activations, logits)
        if graph_labels is not None:
            return ForwardPass(images, activations, logits, graph_labels)
        return ForwardPass.labelled(images, activations, logits, self.explainer.backend)

    def closed_form_outputs(self, images: torch.Tensor, find: bool = False, labels: bool = True) -> Optional[ForwardPass]:
        """The graph's outputs: its head was exported with it (checked when the method was set)."""
        return self.outputs(images, labels=labels)

    def autograd(self, images, classes, masks, resolution):
        raise ValueError(f"method {self.explainer.method!r} needs gradients, which ONNX Runtime does not compute: "
                         "explain the PyTorch model with sx.Explainer (--runtime torch)")

    def sample_elements(self, images: torch.Tensor, logits: torch.Tensor) -> int:
        """ORT's arena holds a few of the forward's largest intermediates per sample: estimated as
        four logits-sized tensors (a stated estimate, not a measurement)."""
        return 4 * logits[0].numel()

    def original(self, images: torch.Tensor, need_layer: bool) -> tuple:
        logits, A, _ = self.explainer.run(images, activations=need_layer)
        return A, logits, None

    def perturbed(self, inputs: torch.Tensor, layer_output=None) -> tuple:
        if layer_output is not None:  # refused earlier, by OnnxExplainer's method check
            raise ValueError("ONNX Runtime cannot replace a layer inside the graph")
        return self.explainer.run(inputs, activations=False)[0], None
