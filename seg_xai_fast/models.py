"""Model specs for the command line: the bundled demo model, torchvision architectures, files."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch
import torch.nn as nn

from .demo.model import demo_model
from .demo.scenes import CLASS_NAMES
from .hub import load_hub_model


@dataclass
class LoadedModel:
    model: nn.Module
    layer: str  # default target layer
    name: str
    class_names: Optional[tuple] = None
    image_size: int = 256  # a sensible input size for demos and benchmarks


# Default target layers of torchvision's segmentation architectures: the input of the final
# 1×1 classifier, so that the closed-form (analytic) gradient path applies to every class.
_TORCHVISION_LAYERS = {
    "fcn_resnet50": "classifier.3",
    "fcn_resnet101": "classifier.3",
    "deeplabv3_resnet50": "classifier.3",
    "deeplabv3_resnet101": "classifier.3",
    "deeplabv3_mobilenet_v3_large": "classifier.3",
    "lraspp_mobilenet_v3_large": "classifier.high_classifier:input",
}


def load_model(spec: str = "demo", weights: Optional[str] = None, num_classes: int = 21) -> LoadedModel:
    """Build the model named by `spec`, in eval mode.

    spec: "demo" (the bundled trained model), "torchvision:NAME" (a torchvision segmentation
    architecture, random-initialised unless `weights` names a state-dict file; nothing is
    downloaded), or a path to a whole model saved with torch.save (``.pt``/``.pth``).
    """
    if spec == "demo":
        return LoadedModel(demo_model(), "decoder", "demo", CLASS_NAMES, 160)
    if spec.startswith(("hf:", "smp:")):  # Hugging Face / segmentation-models-pytorch: hub.py
        return LoadedModel(*load_hub_model(spec, weights, num_classes))
    if spec.startswith("torchvision:"):
        import torchvision.models.segmentation as tvseg

        name = spec.split(":", 1)[1]
        if name not in _TORCHVISION_LAYERS:
            raise ValueError(f"model 'torchvision:NAME' needs NAME in {sorted(_TORCHVISION_LAYERS)}, got {name!r}")
        model = getattr(tvseg, name)(weights=None, weights_backbone=None, num_classes=num_classes, aux_loss=False)
        if weights is not None:
            model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
        return LoadedModel(model.eval(), _TORCHVISION_LAYERS[name], name)
    path = Path(spec)
    if path.suffix in (".pt", ".pth"):
        if not path.is_file():
            raise FileNotFoundError(f"model file {spec!r} does not exist")
        model = torch.load(path, map_location="cpu", weights_only=False)
        if not isinstance(model, nn.Module):
            raise ValueError(f"model file {spec!r} must hold a whole nn.Module (torch.save(model)), got {type(model).__name__}")
        return LoadedModel(model.eval(), "", path.stem)
    raise ValueError(f"model must be 'demo', 'torchvision:NAME' or a .pt/.pth file, got {spec!r}")
