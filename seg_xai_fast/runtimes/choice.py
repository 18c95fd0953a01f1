"""The runtime the command line runs a model on: `--runtime auto|onnxruntime|torch`.

make_explainer builds an sx.Explainer (PyTorch) or an sx.OnnxExplainer for a model spec,
exporting the PyTorch model once to a cache of ONNX files (cache_dir(), keyed by cache_key()).
"""
from __future__ import annotations

import hashlib
import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence, Union

import torch
import torch.nn as nn

from .._version import __version__
from ..demo.model import WEIGHTS_PATH
from ..engine.explainer import Explainer
from ..engine.methods import get_method, layer_for
from ..models import load_model, require_layer
from .export import FORMAT_VERSION, cache_dir, export_onnx
from .onnx_explainer import OnnxExplainer, import_onnxruntime

RUNTIMES = ("auto", "onnxruntime", "torch")

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


def cache_key(model_spec: str, layer: str, size: Sequence[int], weights: Optional[str] = None,
              num_classes: Optional[int] = None) -> str:
    """Hash of what determines an exported file: the model spec (and the identity of any file it
    reads: path, size, mtime), its class count, the layer, the example input size and the package version."""
    parts = [str(model_spec), layer, "x".join(str(int(s)) for s in size), __version__, str(FORMAT_VERSION)]
    if num_classes is not None:
        parts.append(f"classes={num_classes}")
    for file in (model_spec if model_spec.endswith((".pt", ".pth")) else None, weights, _demo_weights(model_spec)):
        if file and os.path.isfile(file):
            st = os.stat(file)
            parts.append(f"{os.path.abspath(file)}:{st.st_size}:{st.st_mtime_ns}")
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:20]


def _demo_weights(model_spec: str) -> Optional[str]:
    if model_spec != "demo":
        return None
    return str(WEIGHTS_PATH)


def make_explainer(
    model_spec: str,
    layer: Optional[str] = None,
    method: str = "gradcam",
    runtime: str = "auto",
    *,
    weights: Optional[str] = None,
    num_classes: Optional[int] = None,  # torchvision:NAME's class count (None: from `weights`, else 21)
    image_size: Optional[Sequence[int]] = None,  # (H, W) of the images to explain: the export size
    providers: Optional[Sequence[str]] = None,
    threads: Optional[int] = None,  # ONNX Runtime intra-op threads (None: its default)
    log=None,
    options: Optional[dict] = None,  # the method's options (Explainer(options=...))
) -> RuntimeChoice:
    """The explainer the command line uses for `model_spec` ("demo" | "torchvision:NAME" | a .pt
    file | a .onnx file written by export_onnx) on `runtime`.

    "onnxruntime" exports the PyTorch model once to the cache (cache_dir(), key cache_key()) and
    explains with OnnxExplainer; "torch" uses sx.Explainer; "auto" is onnxruntime when onnxruntime
    and onnx are installed and the exported graph serves the method (a gradient method needs a
    linear head after the layer; a gradient-free one needs none; OnnxExplainer refuses the methods
    whose spec says ONNX Runtime cannot run them, e.g. ablationcam), else torch, with the reason in the choice's note. The methods
    without a target layer (spec.needs_layer False) export at the model's default layer, or its
    first convolution.
    `log(message)` hears about exports. `weights`, `num_classes`: as for models.load_model.
    """
    if runtime not in RUNTIMES:
        raise ValueError(f"runtime must be one of {RUNTIMES}, got {runtime!r}")
    method = get_method(method).name
    if model_spec.endswith(".onnx"):
        if weights is not None or num_classes is not None:
            raise ValueError(f"model {model_spec!r} is an ONNX file with its weights inside: --weights and "
                             "--num-classes do not apply")
        if runtime == "torch":
            raise ValueError(f"model {model_spec!r} is an ONNX file: it runs with --runtime onnxruntime (or auto)")
        explainer = OnnxExplainer(model_spec, method, providers=providers, threads=threads, options=options)
        if layer and layer != explainer.layer_name:
            raise ValueError(f"{model_spec!r} was exported for layer {explainer.layer_name!r}, got --layer {layer!r}: "
                             "export the model again for that layer")
        return RuntimeChoice(explainer, "onnxruntime", Path(model_spec).stem, explainer.layer_name)
    loaded = load_model(model_spec, weights=weights, num_classes=num_classes)
    if layer is not None and not get_method(method).needs_layer:
        raise ValueError(f"method {method!r} perturbs the input and takes no target_layer, got --layer {layer!r}")
    if get_method(method).needs_layer:
        layer = require_layer(loaded, layer)
    # Resolves (and so checks) the layer and the options before anything is exported or logged.
    explainer = Explainer(loaded.model, layer_for(method, layer), method, class_names=loaded.class_names,
                          options=options)
    # The exported graph exposes a layer's activations; the input-space methods read only its logits.
    layer = explainer.layer_name if get_method(method).needs_layer else (loaded.layer or _first_conv(loaded.model))
    note = ""
    refused = get_method(method).unavailable_on("onnxruntime")  # the spec's reason, before any export
    if refused is not None and runtime == "onnxruntime":
        raise ValueError(f"runtime onnxruntime cannot serve method {method!r}: {refused}")
    if refused is not None:
        note = f"auto chose torch: {refused}"
    elif runtime != "torch":
        try:
            import_onnxruntime()
            if importlib.util.find_spec("onnx") is None:  # export_onnx writes the metadata with it; found, not
                raise ImportError("No module named 'onnx'")  # imported (1 s): a cached graph does not need it
        except ImportError as err:
            if runtime == "onnxruntime":
                raise
            note = f"auto chose torch: {err}"
        else:
            size = tuple(image_size) if image_size else (loaded.image_size, loaded.image_size)
            path = cache_dir() / f"{cache_key(model_spec, layer, size, weights, num_classes)}.onnx"
            try:
                if not path.is_file():
                    if log:
                        log(f"exporting {loaded.name} at layer {layer} to {path} (cached for next time)")
                    example = torch.rand(1, 3, *size, generator=torch.Generator().manual_seed(0))
                    export_onnx(loaded.model, layer, path, example, require_head=get_method(method).needs_gradients)
                explainer = OnnxExplainer(path, method, providers=providers, threads=threads, options=options)
                explainer.class_names = loaded.class_names
                return RuntimeChoice(explainer, "onnxruntime", loaded.name, _layer_shown(method, layer),
                                     f"graph {path}", loaded.class_names, loaded.model)
            except (ValueError, RuntimeError) as err:
                if runtime == "onnxruntime":
                    raise ValueError(f"runtime onnxruntime cannot serve {method} at layer {layer!r} (the torch "
                                     f"runtime can, with autograd): {err}") from None
                note = f"auto chose torch: {err}"
    return RuntimeChoice(explainer, "torch", loaded.name, _layer_shown(method, layer), note, loaded.class_names,
                         loaded.model)


def _first_conv(model: nn.Module) -> Optional[str]:
    """The name of the model's first 2-D convolution (a layer to export at when none is named)."""
    return next((name for name, m in model.named_modules() if isinstance(m, nn.Conv2d)), None)


def _layer_shown(method: str, layer: str) -> str:
    """The layer a method explains: the target layer, or "input" for the input-space methods."""
    return layer if get_method(method).needs_layer else "input"
