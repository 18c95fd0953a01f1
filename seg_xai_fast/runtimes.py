"""ONNX Runtime backend: export a model with its target layer exposed, explain with onnxruntime.

    sx.export_onnx(model, "classifier.3", "model.onnx")     # once, with torch
    explainer = sx.OnnxExplainer("model.onnx", method="gradcam++")
    res = explainer(images)                                   # Explanation, as sx.Explainer's

The exported graph has one input, ``images`` float [B,3,H,W], and two outputs: ``logits``
[B,L,H,W] and ``activations`` [B,C,h,w] (the target layer's output, or its input for InputOf).
Batch and spatial axes are dynamic (checked at export on a second input size and batch). The
labels (argmax over classes) are not in the graph: ORT's ArgMax made the whole run ~18 % slower
on LRASPP at 320×240, while the core's one-pass argmax (kernels.class_argmax) takes a tenth of
that. Files of format 2 still carry a ``labels`` output; it is read.

Gradients are not computed by ONNX Runtime: when the target layer feeds a linear head (a 1×1
convolution whose output is the logits, or is bilinearly upsampled to them; ALGORITHMS.md §3.2),
every gradient method has a closed form in the activations, the head's weight [L,C] and the
target masks. Export finds and verifies that head with ``Explainer.linear_head`` and stores its
BatchNorm-folded weight and upsample policy in the file's ``metadata_props`` (key
``seg_xai_fast``, JSON); at run time one ORT forward pass gives the activations and logits and
``explainer.explain_linear_head`` does the rest, exactly as the PyTorch analytic path. Eigen-CAM
needs the activations only, so it works with or without a head.

Exporter: the TorchScript-based one (``torch.onnx.export(..., dynamo=False)``) by default. It
exports torchvision's DeepLabV3/FCN/LRASPP and the demo model with dynamic shapes in seconds and
needs no extra package; the dynamo exporter (``exporter="dynamo"``) gives the same graphs
numerically but needs ``onnxscript`` and takes 4-10× longer. "auto" falls back to dynamo when
the TorchScript exporter fails or is gone (it is deprecated in torch ≥ 2.9).

The command line gets ``seg-xai export-onnx`` (register()) and, through make_explainer(), the
``--runtime auto|onnxruntime|torch`` choice with a cache of exported files.
"""
from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import shutil
import sys
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np
import torch
import torch.nn as nn

from . import kernels, reference
from .explainer import (
    Explainer,
    Explanation,
    InputOf,
    MaskSpec,
    _check_classes,
    _ModelState,
    _select_output,
    check_finite_images,
    explain_eigen,
    explain_linear_head,
)
from .methods import get_method

METADATA_KEY = "seg_xai_fast"
FORMAT_VERSION = 3  # 2: adds the labels output; 3: drops it again (computed by the core)
READABLE_FORMATS = (2, 3)
INPUT_NAME, LOGITS_NAME, ACTIVATIONS_NAME, LABELS_NAME = "images", "logits", "activations", "labels"
EXPORTERS = ("auto", "torchscript", "dynamo")
RUNTIMES = ("auto", "onnxruntime", "torch")
# Preferred execution providers, fastest first; only those onnxruntime reports are used.
PREFERRED_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")

_NO_HEAD_HINT = (
    "use sx.Explainer (autograd), or export with a target layer that feeds the final 1×1 classifier "
    "(e.g. 'classifier.3' for torchvision DeepLabV3, InputOf('classifier.high_classifier') for LRASPP, "
    "'decoder' for the demo model)"
)


# --------------------------------------------------------------------------- export


class _WithActivations(nn.Module):
    """model → (logits [B,L,H,W], activations [B,C,h,w]); a forward hook
    (pre-hook for InputOf) captures the activations during each call and is removed right after it."""

    def __init__(self, model: nn.Module, layer: nn.Module, use_input: bool, output_key: str) -> None:
        super().__init__()
        self.model, self.layer, self.use_input, self.output_key = model, layer, use_input, output_key

    def forward(self, images):
        seen: list = []
        if self.use_input:
            handle = self.layer.register_forward_pre_hook(lambda m, inputs: seen.append(inputs[0]))
        else:
            handle = self.layer.register_forward_hook(lambda m, inputs, output: seen.append(output))
        try:
            logits = _select_output(self.model(images), self.output_key, images.shape[0])
        finally:
            handle.remove()
        if len(seen) != 1:
            raise ValueError(f"the target layer must run exactly once per forward pass, it ran {len(seen)} times")
        return logits, seen[0]


def export_onnx(
    model: nn.Module,
    target_layer: Union[nn.Module, str, InputOf],
    path: Union[str, os.PathLike],
    example_input: Optional[torch.Tensor] = None,  # float [B,3,H,W]; None: rand [1,3,256,256]
    output_key: str = "out",
    *,
    require_head: bool = True,
    exporter: str = "auto",
    opset: int = 17,
    verify: bool = True,
) -> Path:
    """Write `model` as an ONNX graph with outputs (logits, activations of `target_layer`) and
    the metadata OnnxExplainer needs; return the path.

    target_layer: as for sx.Explainer (module, dotted name, InputOf or "name:input").
    require_head: raise when the layer does not feed a linear head (the gradient methods need
    one); False writes a graph that serves eigencam only.
    exporter: "auto" | "torchscript" | "dynamo" (see the module docstring).
    verify: run the file with onnxruntime (when installed) at the example size and at a second
    size and batch, and compare with PyTorch; a graph whose spatial size got baked in by the
    tracer is marked static, and OnnxExplainer then refuses other sizes with a clear error.
    The file is written atomically (temp file in the same folder, then os.replace).
    """
    if exporter not in EXPORTERS:
        raise ValueError(f"exporter must be one of {EXPORTERS}, got {exporter!r}")
    explainer = Explainer(model, target_layer, "gradcam", output_key=output_key)
    if example_input is None:
        first_conv = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
        channels = first_conv.in_channels if first_conv is not None else 3
        example_input = torch.rand(1, channels, 256, 256, generator=torch.Generator().manual_seed(0))
    if not isinstance(example_input, torch.Tensor) or example_input.ndim != 4 or not example_input.is_floating_point():
        got = list(example_input.shape) if isinstance(example_input, torch.Tensor) else type(example_input).__name__
        raise ValueError(f"example_input must be a float Tensor [B,3,H,W], got {got}")
    param = next(model.parameters(), None)
    if param is not None:
        example_input = example_input.to(param.device)

    head = explainer.linear_head(example_input)  # one explanation; verifies the closed form
    if head is None and require_head:
        raise ValueError(
            f"target_layer {explainer.layer_name!r} does not feed a linear head (a 1×1 convolution whose output "
            "is the logits or is bilinearly upsampled to them), so ONNX Runtime cannot serve the gradient "
            f"methods for it: {_NO_HEAD_HINT}. Pass require_head=False to export for eigencam only."
        )
    wrapper = _WithActivations(model, explainer.target_layer, explainer.use_input, output_key).eval()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # A private folder next to the target: the dynamo exporter writes a .data file beside its graph.
    work = tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    graph, final = os.path.join(work, "graph.onnx"), os.path.join(work, "final.onnx")
    try:
        with _ModelState(model), torch.no_grad():
            logits, activations = wrapper(example_input)
            used = _export_graph(wrapper, example_input, graph, exporter, opset)
        meta = {
            "format": FORMAT_VERSION,
            "layer": explainer.layer_name,
            "output_key": output_key,
            "input": INPUT_NAME,
            "outputs": [LOGITS_NAME, ACTIVATIONS_NAME],
            "num_classes": int(logits.shape[1]),
            "channels": int(activations.shape[1]),
            "example_input": list(example_input.shape),
            "exporter": used,
            "dynamic_spatial": True,
            "head": None if head is None else {
                "weight": base64.b64encode(head.weight.detach().float().cpu().contiguous().numpy().tobytes()).decode(),
                "shape": list(head.weight.shape),  # [L,C]; float32 little-endian
                "upsample": head.upsample is not None,
                "align_corners": bool(head.upsample[1]) if head.upsample is not None else False,
            },
        }
        if verify:
            meta["dynamic_spatial"] = _verify(graph, wrapper, model, example_input, logits, activations)
        _write_metadata(graph, meta, final)
        os.replace(final, path)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return path


_OUTPUT_AXES = {
    LOGITS_NAME: {0: "batch", 2: "height", 3: "width"},
    ACTIVATIONS_NAME: {0: "batch", 2: "h", 3: "w"},
    LABELS_NAME: {0: "batch", 1: "height", 2: "width"},
}


def _export_graph(wrapper: nn.Module, example: torch.Tensor, path: str, exporter: str, opset: int,
                  outputs: Sequence[str] = (LOGITS_NAME, ACTIVATIONS_NAME)) -> str:
    """Export `wrapper` (its outputs named `outputs`) with the chosen exporter; return the one
    that worked ("torchscript" | "dynamo")."""
    names = dict(input_names=[INPUT_NAME], output_names=list(outputs))
    if exporter in ("auto", "torchscript"):
        try:
            with warnings.catch_warnings():
                # The deprecation notice and tracer warnings about shape checks inside the models.
                warnings.simplefilter("ignore")
                torch.onnx.export(
                    wrapper, (example,), path, dynamo=False, opset_version=opset, **names,
                    dynamic_axes={INPUT_NAME: {0: "batch", 2: "height", 3: "width"},
                                  **{name: _OUTPUT_AXES[name] for name in outputs}},
                )
            return "torchscript"
        except Exception as err:  # noqa: BLE001 - any exporter failure: try the other one or report it
            if exporter == "torchscript":
                raise RuntimeError(f"the TorchScript ONNX exporter failed: {err}") from err
            first_error = err
    try:
        import onnxscript  # noqa: F401  (the dynamo exporter needs it)
    except ImportError:
        raise RuntimeError(
            "the dynamo ONNX exporter needs the onnxscript package (pip install onnxscript)"
            + (f"; the TorchScript exporter failed first: {first_error}" if exporter == "auto" else "")
        ) from None
    batch, height, width = torch.export.Dim("batch"), torch.export.Dim("height"), torch.export.Dim("width")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(wrapper, (example,), path, dynamo=True, opset_version=max(opset, 18), **names,
                          dynamic_shapes={"images": {0: batch, 2: height, 3: width}})
    return "dynamo"


class _LogitsOnly(nn.Module):
    def __init__(self, model: nn.Module, output_key: str) -> None:
        super().__init__()
        self.model, self.output_key = model, output_key

    def forward(self, images):
        return _select_output(self.model(images), self.output_key, images.shape[0])


def export_logits_onnx(model: nn.Module, path: Union[str, os.PathLike], example_input: torch.Tensor,
                       output_key: str = "out", exporter: str = "auto") -> Path:
    """The model alone (input ``images`` → output ``logits``), same exporter and dynamic axes as
    export_onnx: the plain ONNX Runtime forward pass the benchmarks compare against."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    work = tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        graph = os.path.join(work, "graph.onnx")
        with _ModelState(model), torch.no_grad():
            _export_graph(_LogitsOnly(model, output_key).eval(), example_input, graph, exporter, 17, (LOGITS_NAME,))
        import onnx

        onnx.save(onnx.load(graph), os.path.join(work, "final.onnx"))  # one self-contained file
        os.replace(os.path.join(work, "final.onnx"), path)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return path


def _verify(path: str, wrapper, model, example, logits, activations) -> bool:
    """Check the file against PyTorch at the example size; return whether a second size and
    batch also work (False: the graph only serves the example's spatial size)."""
    try:
        import onnxruntime as ort
    except ImportError:
        return True  # cannot check here; the exporter was asked for dynamic axes
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])

    def matches(images, want_logits, want_acts) -> bool:
        got_logits, got_acts = session.run([LOGITS_NAME, ACTIVATIONS_NAME], {INPUT_NAME: images.detach().float().cpu().numpy()})
        return _close(got_logits, want_logits) and _close(got_acts, want_acts)

    if not matches(example, logits, activations):
        raise RuntimeError(
            "the exported graph does not reproduce the PyTorch model's logits/activations at the example input; "
            "try exporter='dynamo' (or the other exporter)"
        )
    B, C, H, W = example.shape
    other = torch.rand(B + 1, C, H + 32, W + 32, generator=torch.Generator().manual_seed(1)).to(example)
    try:
        with _ModelState(model), torch.no_grad():
            want_logits, want_acts = wrapper(other)
    except Exception:  # noqa: BLE001 - the model itself refuses other sizes: nothing to compare
        return True
    try:
        return matches(other, want_logits, want_acts)
    except Exception:  # noqa: BLE001 - ORT shape errors: the tracer baked a size into the graph
        return False


def _close(got: np.ndarray, want: torch.Tensor) -> bool:
    want = want.detach().float().cpu().numpy()
    if got.shape != want.shape:
        return False
    scale = float(np.abs(want).max()) if want.size else 0.0
    return bool(np.abs(got - want).max() <= 1e-3 * scale) if scale > 0 else bool(np.all(got == want))


def _write_metadata(graph: str, meta: dict, out: str) -> None:
    """Copy `graph` (and any external .data file) to one self-contained file `out`, with `meta`."""
    import onnx

    proto = onnx.load(graph)
    del proto.metadata_props[:]
    entry = proto.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, json.dumps(meta)
    onnx.save(proto, out)  # weights inline: files over 2 GB (the protobuf limit) are not supported


# --------------------------------------------------------------------------- explain with onnxruntime


def default_providers() -> list[str]:
    """The execution providers OnnxExplainer uses by default: TensorRT, CUDA, then CPU, as installed."""
    import onnxruntime as ort

    available = ort.get_available_providers()
    return [p for p in PREFERRED_PROVIDERS if p in available] or list(available)


def _import_onnxruntime():
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
        ort = _import_onnxruntime()
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
        if spec.needs_gradients and self.head_weight is None:
            raise ValueError(
                f"method {spec.name!r} needs gradients, and {str(self.path)!r} was exported without a linear head "
                f"after target layer {self.layer_name!r} (ONNX Runtime computes no gradients, only the closed form "
                f"of a linear head): {_NO_HEAD_HINT}; or use method 'eigencam'"
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

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One ORT run: images float [B,3,H,W] → (activations float32 [B,C,h,w], logits float32
        [B,L,H,W], labels int64 [B,H,W]), on the CPU. The labels are the argmax over classes."""
        images = self._check_images(images)
        names = [LOGITS_NAME, ACTIVATIONS_NAME] + ([LABELS_NAME] if self.graph_labels else [])
        out = self.session.run(names, {INPUT_NAME: images.detach().float().cpu().contiguous().numpy()})
        logits = torch.from_numpy(out[0])
        # Format-3 graphs leave the labels to the core's one-pass argmax (format 2 carried them).
        labels = torch.from_numpy(out[2]) if self.graph_labels else kernels.class_argmax(logits, self.backend)
        return torch.from_numpy(out[1]), logits, labels

    def explain_outputs(
        self,
        activations: torch.Tensor,  # float [B,C,h,w]
        logits: torch.Tensor,  # float [B,L,H,W]
        classes: Optional[Sequence[int]] = None,
        masks: MaskSpec = None,
        labels: Optional[torch.Tensor] = None,  # int64 [B,H,W], the graph's own argmax
        resolution: str = "full",
    ) -> Explanation:
        """The CAM stage on one forward pass's outputs (see forward()); resolution as sx.Explainer's."""
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
        activations, logits, labels = self.forward(images)
        return self.explain_outputs(activations, logits, classes=classes, masks=masks, labels=labels,
                                    resolution=resolution)

    def _check_images(self, images) -> torch.Tensor:
        if not isinstance(images, torch.Tensor):
            raise TypeError(f"images must be a torch.Tensor [B,3,H,W], got {type(images).__name__}")
        if images.ndim != 4 or not images.is_floating_point():
            raise ValueError(f"images must be a float tensor [B,3,H,W], got {images.dtype} of shape {list(images.shape)}")
        channels = self.meta["example_input"][1]
        if images.shape[1] != channels:
            raise ValueError(f"images must have {channels} channels (as exported), got shape {list(images.shape)}")
        if not self.meta.get("dynamic_spatial", True) and list(images.shape[2:]) != self.meta["example_input"][2:]:
            raise ValueError(
                f"{str(self.path)!r} only serves {self.meta['example_input'][2:]} images (the exporter fixed the "
                f"spatial size), got {list(images.shape[2:])}: resize the images or export at this size"
            )
        check_finite_images(images)
        return images


# --------------------------------------------------------------------------- runtime choice and cache


@dataclass
class RuntimeChoice:
    """What make_explainer built: the explainer, its runtime and why (for the command's summary)."""

    explainer: Union[Explainer, OnnxExplainer]
    runtime: str  # "onnxruntime" | "torch"
    model_name: str
    layer: str
    note: str = ""  # e.g. why auto fell back to torch, or the cached file used
    class_names: Optional[tuple] = None
    model: Optional[nn.Module] = None  # the PyTorch model behind the explainer (None for a .onnx file)

    def describe(self) -> str:
        where = f" ({self.explainer.provider})" if isinstance(self.explainer, OnnxExplainer) else ""
        note = f"; {self.note}" if self.note else ""
        return f"runtime {self.runtime}{where}, model {self.model_name}, layer {self.layer}{note}"


def cache_dir() -> Path:
    """Where exported ONNX files are cached: $SEG_XAI_CACHE/onnx, else ~/.cache/seg_xai_fast/onnx."""
    root = os.environ.get("SEG_XAI_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "seg_xai_fast")
    return Path(root) / "onnx"


def cache_key(model_spec: str, layer: str, size: Sequence[int], weights: Optional[str] = None) -> str:
    """Hash of what determines an exported file: the model spec (and the identity of any file it
    reads: path, size, mtime), the layer, the example input size and the package version."""
    from . import __version__

    parts = [model_spec, layer, "x".join(str(int(s)) for s in size), __version__, str(FORMAT_VERSION)]
    for file in (model_spec if model_spec.endswith((".pt", ".pth")) else None, weights, _demo_weights(model_spec)):
        if file and os.path.isfile(file):
            st = os.stat(file)
            parts.append(f"{os.path.abspath(file)}:{st.st_size}:{st.st_mtime_ns}")
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:20]


def _demo_weights(model_spec: str) -> Optional[str]:
    if model_spec != "demo":
        return None
    from .demo_model import WEIGHTS_PATH

    return str(WEIGHTS_PATH)


def make_explainer(
    model_spec: str,
    layer: Optional[str] = None,
    method: str = "gradcam",
    runtime: str = "auto",
    *,
    weights: Optional[str] = None,
    image_size: Optional[Sequence[int]] = None,  # (H, W) of the images to explain: the export size
    providers: Optional[Sequence[str]] = None,
    threads: Optional[int] = None,  # ONNX Runtime intra-op threads (None: its default)
    log=None,
) -> RuntimeChoice:
    """The explainer the command line uses for `model_spec` ("demo" | "torchvision:NAME" | a .pt
    file | a .onnx file written by export_onnx) on `runtime`.

    "onnxruntime" exports the PyTorch model once to the cache (cache_dir(), key cache_key()) and
    explains with OnnxExplainer; "torch" uses sx.Explainer; "auto" is onnxruntime when it is
    installed and can serve the method at this layer (a linear head, or eigencam), else torch.
    `log(message)` hears about exports.
    """
    from .models import load_model

    if runtime not in RUNTIMES:
        raise ValueError(f"runtime must be one of {RUNTIMES}, got {runtime!r}")
    method = get_method(method).name
    if model_spec.endswith(".onnx"):
        if runtime == "torch":
            raise ValueError(f"model {model_spec!r} is an ONNX file: it runs with --runtime onnxruntime (or auto)")
        explainer = OnnxExplainer(model_spec, method, providers=providers, threads=threads)
        if layer and layer != explainer.layer_name:
            raise ValueError(f"{model_spec!r} was exported for layer {explainer.layer_name!r}, got --layer {layer!r}: "
                             "export the model again for that layer")
        return RuntimeChoice(explainer, "onnxruntime", Path(model_spec).stem, explainer.layer_name)
    loaded = load_model(model_spec, weights=weights)
    layer = layer or loaded.layer
    if not layer:
        raise ValueError(f"model {model_spec!r} has no default target layer: pass --layer (a dotted module name)")
    note = ""
    if runtime != "torch":
        try:
            _import_onnxruntime()
            import onnx  # noqa: F401  (export_onnx writes the metadata with it)
        except ImportError as err:
            if runtime == "onnxruntime":
                raise
            note = f"auto chose torch: {err}"
        else:
            size = tuple(image_size) if image_size else (loaded.image_size, loaded.image_size)
            path = cache_dir() / f"{cache_key(model_spec, layer, size, weights)}.onnx"
            try:
                if not path.is_file():
                    if log:
                        log(f"exporting {loaded.name} at layer {layer} to {path} (cached for next time)")
                    example = torch.rand(1, 3, *size, generator=torch.Generator().manual_seed(0))
                    export_onnx(loaded.model, layer, path, example, require_head=get_method(method).needs_gradients)
                explainer = OnnxExplainer(path, method, providers=providers, threads=threads)
                return RuntimeChoice(explainer, "onnxruntime", loaded.name, explainer.layer_name, f"graph {path}",
                                     loaded.class_names, loaded.model)
            except (ValueError, RuntimeError) as err:
                if runtime == "onnxruntime":
                    raise ValueError(f"runtime onnxruntime cannot serve {method} at layer {layer!r} (the torch "
                                     f"runtime can, with autograd): {err}") from None
                note = f"auto chose torch: {err}"
    explainer = Explainer(loaded.model, layer, method)
    return RuntimeChoice(explainer, "torch", loaded.name, explainer.layer_name, note, loaded.class_names, loaded.model)


# --------------------------------------------------------------------------- command line


def register(subparsers) -> argparse.ArgumentParser:
    """Add the `export-onnx` subcommand to an argparse subparsers object (func(args) -> exit status)."""
    p = subparsers.add_parser(
        "export-onnx", help="export a model with its target layer's activations for --runtime onnxruntime",
        description="Write MODEL as an ONNX graph whose outputs are the logits and the target layer's "
                    "activations, with the linear head's weights in its metadata, for sx.OnnxExplainer.")
    p.add_argument("model", metavar="MODEL", help="demo | torchvision:NAME | model.pt")
    p.add_argument("out", metavar="OUT", help="the .onnx file to write")
    p.add_argument("--layer", default=None, help="target layer, a dotted module name; 'NAME:input' for a "
                                                 "module's input (default: the model's)")
    p.add_argument("--size", type=int, nargs="+", default=None, metavar="S",
                   help="example input size: S or H W (default: the model's; axes stay dynamic)")
    p.add_argument("--weights", default=None, help="state-dict file for torchvision:NAME")
    p.add_argument("--exporter", default="auto", choices=EXPORTERS, help="(default: %(default)s)")
    p.add_argument("--eigencam-only", action="store_true",
                   help="allow a layer without a linear head (the file then serves eigencam only)")
    p.set_defaults(func=_cmd_export)
    return p


def _cmd_export(args) -> int:
    from .models import load_model

    try:
        if args.size is not None and len(args.size) not in (1, 2):
            raise ValueError(f"--size takes S or H W, got {args.size}")
        loaded = load_model(args.model, weights=args.weights)
        layer = args.layer or loaded.layer
        if not layer:
            raise ValueError(f"model {args.model!r} has no default target layer: pass --layer")
        h, w = (args.size * 2)[:2] if args.size else (loaded.image_size, loaded.image_size)
        example = torch.rand(1, 3, h, w, generator=torch.Generator().manual_seed(0))
        path = export_onnx(loaded.model, layer, args.out, example, require_head=not args.eigencam_only,
                           exporter=args.exporter)
    except (ValueError, TypeError, FileNotFoundError, RuntimeError, ImportError) as err:
        print(f"seg-xai export-onnx: error: {err}", file=sys.stderr)
        return 2
    import onnx

    meta = json.loads({p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}[METADATA_KEY])
    head = "linear head found (all methods)" if meta["head"] else "no linear head (eigencam only)"
    axes = "dynamic batch and spatial axes" if meta["dynamic_spatial"] else f"fixed spatial size {h}x{w}"
    print(f"wrote {path} ({path.stat().st_size / 2**20:.1f} MB): layer {meta['layer']}, {head}, {axes}, "
          f"exporter {meta['exporter']}")
    return 0
