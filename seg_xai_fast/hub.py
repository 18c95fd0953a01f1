"""Command-line model specs from the model libraries people run (optional extras):

- ``hf:segformer``, ``hf:dpt``, ``hf:upernet``, ``hf:mask2former`` (``pip install '.[hf]'``): Hugging
  Face transformers architectures built from their library-default configs, random-initialised,
  or read from ``--weights DIR``, a folder written by ``save_pretrained`` (nothing is downloaded);
- ``smp:ARCH:ENCODER`` (``pip install '.[smp]'``), e.g. ``smp:Unet:resnet34``: a
  segmentation-models-pytorch architecture, random-initialised (``encoder_weights=None``) unless
  ``--weights FILE`` names its state dict.

The model comes wrapped by engine.adapters.as_segmenter (logits [B,L,H,W] at the input's size);
target layers are named as in the library's model. Each default layer feeds the final 1×1
classifier where the architecture has one, so the closed-form gradient path applies.
"""
from __future__ import annotations

from typing import NamedTuple, Optional

import torch
import torch.nn as nn

from .engine.adapters import as_segmenter


class HubModel(NamedTuple):
    """The fields of models.LoadedModel (models.py builds it; no import cycle)."""

    model: nn.Module
    layer: str
    name: str
    class_names: Optional[tuple]
    image_size: int


# name → (config class, model class, default layer, input size), all in transformers
HF_SPECS = {
    "segformer": ("SegformerConfig", "SegformerForSemanticSegmentation", "decode_head.activation", 512),
    "dpt": ("DPTConfig", "DPTForSemanticSegmentation", "head.head.2", 384),
    "upernet": ("UperNetConfig", "UperNetForSemanticSegmentation", "decode_head.fpn_bottleneck", 512),
    "mask2former": ("Mask2FormerConfig", "Mask2FormerForUniversalSegmentation",
                    "model.pixel_level_module.decoder.mask_projection", 384),
}
SMP_LAYER = "decoder"  # the decoder's output: the input of every smp segmentation head
DEFAULT_CLASSES = 21  # as torchvision's architectures, when neither --num-classes nor the weights say


def load_hub_model(spec: str, weights: Optional[str] = None, num_classes: Optional[int] = None) -> HubModel:
    """The model named by `spec` ("hf:NAME" or "smp:ARCH:ENCODER"), in eval mode, adapted."""
    kind, _, rest = spec.partition(":")
    if kind == "hf":
        return _hf_model(rest, weights, num_classes or DEFAULT_CLASSES)
    if kind == "smp":
        return _smp_model(rest, weights, num_classes or DEFAULT_CLASSES)
    raise ValueError(f"model spec must start with 'hf:' or 'smp:', got {spec!r}")


def _hf_model(name: str, weights: Optional[str], num_classes: int) -> HubModel:
    if name not in HF_SPECS:
        raise ValueError(f"model 'hf:NAME' needs NAME in {sorted(HF_SPECS)}, got {name!r}")
    try:
        import transformers
    except ImportError:
        raise ImportError("hf: models need transformers: pip install 'seg-xai-fast[hf]'") from None
    config_name, model_name, layer, size = HF_SPECS[name]
    model_class = getattr(transformers, model_name)
    if weights is not None:
        model = model_class.from_pretrained(weights, local_files_only=True)
    else:
        config = getattr(transformers, config_name)(num_labels=num_classes)
        model = model_class(config)
    labels = getattr(model.config, "id2label", None)
    names = tuple(labels[i] for i in sorted(labels)) if labels else None
    return HubModel(as_segmenter(model.eval()), layer, f"hf:{name}", names, size)


def _smp_model(rest: str, weights: Optional[str], num_classes: int) -> HubModel:
    arch, _, encoder = rest.partition(":")
    if not arch or not encoder:
        raise ValueError(f"model 'smp:ARCH:ENCODER' needs both, e.g. 'smp:Unet:resnet34', got 'smp:{rest}'")
    try:
        import segmentation_models_pytorch as smp
    except ImportError:
        raise ImportError("smp: models need segmentation-models-pytorch: pip install 'seg-xai-fast[smp]'") from None
    if not isinstance(getattr(smp, arch, None), type) or not issubclass(getattr(smp, arch), nn.Module):
        known = sorted(n for n in dir(smp) if isinstance(getattr(smp, n), type) and issubclass(getattr(smp, n), nn.Module)
                       and hasattr(getattr(smp, n), "forward") and n[0].isupper())
        raise ValueError(f"model 'smp:ARCH:ENCODER' needs ARCH in {known}, got {arch!r}")
    model = getattr(smp, arch)(encoder_name=encoder, encoder_weights=None, classes=num_classes)
    if weights is not None:
        model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    return HubModel(as_segmenter(model.eval()), SMP_LAYER, f"smp:{arch}:{encoder}", None, 256)
