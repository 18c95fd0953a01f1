"""ONNX export: the model as a graph with its target layer exposed, for OnnxExplainer.

    sx.export_onnx(model, "classifier.3", "model.onnx")     # once, with torch
    explainer = sx.OnnxExplainer("model.onnx", method="gradcam++")
    res = explainer(images)                                   # Explanation, as sx.Explainer's

The exported graph has one input, ``images`` float [B,3,H,W], and two outputs: ``logits``
[B,L,H,W] and ``activations`` [B,C,h,w] (the target layer's output, or its input for InputOf).
Batch and spatial axes are exported dynamic and checked at export on a second input size and
batch; a graph whose spatial size the tracer baked in is marked static (``dynamic_spatial``), and
OnnxExplainer refuses other sizes for it. The
labels (argmax over classes) are not in the graph: ORT's ArgMax made the whole run ~18 % slower
on LRASPP at 320×240, while the core's one-pass argmax (kernels.class_argmax) takes a tenth of
that. Files of format 2 still carry a ``labels`` output; it is read.

Gradients are not computed by ONNX Runtime: when the target layer feeds a linear head (a 1×1
convolution whose output is the logits, or is bilinearly upsampled to them; docs/algorithms.md),
every gradient method has a closed form in the activations, the head's weight [L,C] and the
target masks. Export finds and verifies that head with ``Explainer.linear_head`` and stores its
BatchNorm-folded weight and upsample policy in the file's ``metadata_props`` (key
``seg_xai_fast``, JSON); at run time one ORT forward pass gives the activations and logits and
engine/outputs.py's closed form does the rest, the code the PyTorch analytic path runs. The
gradient-free methods need no head: the activation methods read the activations, the
perturbation and segment methods run forwards of the graph. Each method's spec says whether
ONNX Runtime serves it (not Ablation-CAM, which replaces the layer's output inside the model, nor
FullGrad, which differentiates down to the input).

Exporter: the TorchScript-based one (``torch.onnx.export(..., dynamo=False)``) by default. It
exports torchvision's DeepLabV3/FCN/LRASPP and the demo model with dynamic shapes in seconds and
needs no extra package; the dynamo exporter (``exporter="dynamo"``) gives the same graphs
numerically but needs ``onnxscript`` and takes 4-10× longer. "auto" falls back to dynamo when
the TorchScript exporter fails or is gone (it is deprecated in torch ≥ 2.9).
"""
from __future__ import annotations

import base64
import json
import os
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np
import torch
import torch.nn as nn

from ..engine.capture import InputOf, ModelState, select_output
from ..engine.explainer import Explainer
from ..fileio import check_target, publish

METADATA_KEY = "seg_xai_fast"
# 2: adds the labels output; 3: drops it again (computed by the core); 4: adds graph_digest
FORMAT_VERSION = 4
READABLE_FORMATS = (2, 3, 4)
INPUT_NAME, LOGITS_NAME, ACTIVATIONS_NAME, LABELS_NAME = "images", "logits", "activations", "labels"
EXPORTERS = ("auto", "torchscript", "dynamo")
NO_HEAD_HINT = (
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
            logits = select_output(self.model(images), self.output_key, images.shape[0])
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
    one); False writes a graph that serves the gradient-free methods only.
    exporter: "auto" | "torchscript" | "dynamo" (see the module docstring).
    verify: run the file with onnxruntime (when installed) at the example size and at a second
    size and batch, and compare with PyTorch; a graph whose spatial size got baked in by the
    tracer is marked static, and OnnxExplainer then refuses other sizes with a clear error.
    The file is written atomically (temp file in the same folder, then fileio.publish: never over
    anything but a regular file).
    """
    if exporter not in EXPORTERS:
        raise ValueError(f"exporter must be one of {EXPORTERS}, got {exporter!r}")
    explainer = Explainer(model, target_layer, "gradcam", output_key=output_key)
    model = explainer.model  # a Hugging Face model as its adapter (engine.adapters.as_segmenter)
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
            f"methods for it: {NO_HEAD_HINT}. To export for the methods that need no gradient (`seg-xai methods` "
            "lists them), pass require_head=False (seg-xai export-onnx: --gradient-free)."
        )
    wrapper = _WithActivations(model, explainer.target_layer, explainer.use_input, output_key).eval()
    path = Path(path)
    check_target(path)  # a symlink or device at `path` is refused before the export's work
    path.parent.mkdir(parents=True, exist_ok=True)
    # A private folder next to the target: the dynamo exporter writes a .data file beside its graph.
    work = tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    graph, final = os.path.join(work, "graph.onnx"), os.path.join(work, "final.onnx")
    try:
        with ModelState(model), torch.no_grad():
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
        publish(final, path)
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
        import onnx  # noqa: F401  (both exporters need it; without it the hint below would mislead)
    except ImportError:
        raise RuntimeError("ONNX export needs the onnx package: pip install onnx "
                           "(or pip install 'seg-xai-fast[onnx]')") from None
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
        return select_output(self.model(images), self.output_key, images.shape[0])


def export_logits_onnx(model: nn.Module, path: Union[str, os.PathLike], example_input: torch.Tensor,
                       output_key: str = "out", exporter: str = "auto") -> Path:
    """The model alone (input ``images`` → output ``logits``), same exporter and dynamic axes as
    export_onnx: the plain ONNX Runtime forward pass the benchmarks compare against."""
    path = Path(path)
    check_target(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    work = tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        graph = os.path.join(work, "graph.onnx")
        with ModelState(model), torch.no_grad():
            _export_graph(_LogitsOnly(model, output_key).eval(), example_input, graph, exporter, 17, (LOGITS_NAME,))
        import onnx

        onnx.save(onnx.load(graph), os.path.join(work, "final.onnx"))  # one self-contained file
        publish(os.path.join(work, "final.onnx"), path)
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
        with ModelState(model), torch.no_grad():
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


def cache_dir() -> Path:
    """Where exported ONNX files are cached: $SEG_XAI_CACHE/onnx, else ~/.cache/seg_xai_fast/onnx."""
    root = os.environ.get("SEG_XAI_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "seg_xai_fast")
    return Path(root) / "onnx"


def verified_marker(data: bytes) -> Path:
    """The cache's record that an ONNX file of exactly these bytes passed OnnxExplainer's graph-digest
    check: the same bytes pass again, without importing onnx (a second) and re-serialising the graph."""
    import hashlib

    return cache_dir().parent / "onnx-verified" / hashlib.sha1(data).hexdigest()


def graph_digest(proto, meta: dict) -> str:
    """sha1 of an ONNX model's graph (nodes, weights, inputs and outputs) and of `meta` (less this
    digest), 16 hex digits: OnnxExplainer checks that the metadata was written for this very
    graph and not edited since."""
    import hashlib

    h = hashlib.sha1(proto.graph.SerializeToString(deterministic=True))
    h.update(json.dumps({k: v for k, v in meta.items() if k != "graph_digest"}, sort_keys=True).encode())
    return h.hexdigest()[:16]


def _write_metadata(graph: str, meta: dict, out: str) -> None:
    """Copy `graph` (and any external .data file) to one self-contained file `out`, with `meta`
    and the graph's digest."""
    import onnx

    proto = onnx.load(graph)
    meta = {**meta, "graph_digest": graph_digest(proto, meta)}
    del proto.metadata_props[:]
    entry = proto.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, json.dumps(meta)
    onnx.save(proto, out)  # weights inline: files over 2 GB (the protobuf limit) are not supported
