"""Model specs for the command line: the bundled demo model, torchvision architectures, files.

One loading path for every command: `load_model(spec, weights, num_classes)`; the commands
pass --weights and --num-classes through to it (cli/common.py).
"""
from __future__ import annotations

import sys
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
    layer: str  # default target layer ("" when the model has none: see require_layer)
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
# The final classifier's weight [L,C,1,1] in each architecture's state dict: L is the class count.
_TORCHVISION_HEADS = {name: "classifier.high_classifier.weight" if name.startswith("lraspp") else "classifier.4.weight"
                      for name in _TORCHVISION_LAYERS}
_DEFAULT_CLASSES = 21  # torchvision's (Pascal VOC's) class count

_warned_random: set = set()


def load_model(spec: str = "demo", weights: Optional[str] = None, num_classes: Optional[int] = None,
               model_args: Optional[dict] = None) -> LoadedModel:
    """Build the model named by `spec`, in eval mode.

    "monai:NAME" (extra [medical]): a MONAI network (monai.networks.nets.NAME, e.g. SegResNet,
    UNet, SwinUNETR) built with `model_args` (its constructor's keyword arguments, --model-args
    JSON), random-initialised unless `weights` names its state dict. A TorchScript file (.ts, or
    a .pt/.pth written by torch.jit.save, as MONAI bundles ship models) loads with torch.jit.load.

    spec: "demo" (the bundled trained model), "torchvision:NAME" (a torchvision segmentation
    architecture, random-initialised unless `weights` names a state-dict file; nothing is
    downloaded), or a path to a whole model saved with torch.save (``.pt``/``.pth``).
    num_classes: the class count of torchvision:NAME; default: read from `weights` (its final
    classifier), else 21.
    """
    if num_classes is not None and (isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1):
        raise ValueError(f"num_classes (--num-classes) must be a positive int, got {num_classes!r}")
    if spec.startswith("monai:"):
        return _monai(spec.split(":", 1)[1], weights, num_classes, model_args)
    if model_args is not None:
        raise ValueError(f"--model-args applies to monai:NAME models only, got model {spec!r}")
    if spec.startswith(("hf:", "smp:")):  # Hugging Face / segmentation-models-pytorch: hub.py
        return LoadedModel(*load_hub_model(spec, weights, num_classes))
    if spec.startswith("torchvision:"):
        return _torchvision(spec.split(":", 1)[1], weights, num_classes)
    if weights is not None or num_classes is not None:
        option = "--weights" if weights is not None else "--num-classes"
        raise ValueError(f"{option} applies to torchvision:NAME models only (the demo and .pt files hold their "
                         f"weights), got model {spec!r}")
    if spec == "demo":
        return LoadedModel(demo_model(), "decoder", "demo", CLASS_NAMES, 160)
    path = Path(spec)
    if path.suffix in (".ts", ".pt", ".pth") and path.is_file() and (path.suffix == ".ts" or _is_torchscript(path)):
        return LoadedModel(torch.jit.load(str(path), map_location="cpu").eval(), "", path.stem)
    if path.suffix in (".pt", ".pth", ".ts"):
        if not path.is_file():
            raise FileNotFoundError(f"model file {spec!r} does not exist")
        model = torch.load(path, map_location="cpu", weights_only=False)
        if isinstance(model, dict):
            raise ValueError(f"model file {spec!r} holds a state dict, not a whole model: pass its architecture as "
                             "--model torchvision:NAME --weights FILE, or save the model with torch.save(model)")
        if not isinstance(model, nn.Module):
            raise ValueError(f"model file {spec!r} must hold a whole nn.Module (torch.save(model)), got {type(model).__name__}")
        return LoadedModel(model.eval(), "", path.stem)
    raise ValueError(f"model must be 'demo', 'torchvision:NAME', 'monai:NAME' or a .pt/.pth/.ts file, got {spec!r}")


def _is_torchscript(path: Path) -> bool:
    """True for a torch.jit.save archive (a zip holding code/ and constants.pkl)."""
    import zipfile

    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as z:
        return any(n.endswith("/constants.pkl") for n in z.namelist())


def _monai(name: str, weights: Optional[str], num_classes: Optional[int], model_args: Optional[dict]) -> LoadedModel:
    """monai:NAME with --model-args JSON (keyword arguments) and --weights (a state dict)."""
    try:
        import monai.networks.nets as nets
    except ImportError:
        raise ImportError("model 'monai:NAME' needs MONAI: pip install 'seg_xai_fast[medical]'") from None
    cls = getattr(nets, name, None)
    if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
        raise ValueError(f"model 'monai:NAME' needs NAME to be a network of monai.networks.nets (e.g. SegResNet, UNet, "
                         f"SwinUNETR), got {name!r}")
    if model_args is not None and not isinstance(model_args, dict):
        raise ValueError(f"--model-args must be a JSON object of {name}'s keyword arguments, got {model_args!r}")
    kwargs = dict(model_args or {})
    if num_classes is not None:
        kwargs["out_channels"] = num_classes
    try:
        model = cls(**kwargs)
    except TypeError as err:
        raise ValueError(f"--model-args {kwargs} do not fit monai.networks.nets.{name}: {err}") from None
    if weights is not None:
        _load_state(model, _state_dict(weights), f"monai:{name}", weights)
    elif name not in _warned_random:
        _warned_random.add(name)
        print(f"seg-xai: monai:{name} is random-initialised (no --weights): the maps of a random model explain "
              "nothing; pass --weights FILE (a state dict) for meaningful maps", file=sys.stderr)
    return LoadedModel(model.eval(), "", f"monai-{name}")


def _torchvision(name: str, weights: Optional[str], num_classes: Optional[int]) -> LoadedModel:
    import torchvision.models.segmentation as tvseg

    if name not in _TORCHVISION_LAYERS:
        raise ValueError(f"model 'torchvision:NAME' needs NAME in {sorted(_TORCHVISION_LAYERS)}, got {name!r}")
    state = None if weights is None else _state_dict(weights)
    head_key = _TORCHVISION_HEADS[name]
    if state is not None and head_key in state:
        found = int(state[head_key].shape[0])
        if num_classes is not None and num_classes != found:
            raise ValueError(f"--num-classes {num_classes} does not fit --weights {weights!r}: its classifier "
                             f"({head_key}) has {found} classes")
        num_classes = found
    num_classes = num_classes or _DEFAULT_CLASSES
    # Checkpoints of torchvision's training recipe carry the auxiliary head: build it to load them.
    aux = None if name.startswith("lraspp") else bool(state) and any(k.startswith("aux_classifier.") for k in state)
    model = getattr(tvseg, name)(weights=None, weights_backbone=None, num_classes=num_classes, aux_loss=aux)
    if state is None:
        if name not in _warned_random:  # once per process and architecture
            _warned_random.add(name)
            print(f"seg-xai: torchvision:{name} is random-initialised (no --weights): the maps of a random model "
                  "explain nothing; pass --weights FILE (a state dict) for meaningful maps", file=sys.stderr)
    else:
        _load_state(model, state, f"torchvision:{name} with {num_classes} classes", weights)
    return LoadedModel(model.eval(), _TORCHVISION_LAYERS[name], name)


def _state_dict(path: str) -> dict:
    if not Path(path).is_file():
        raise FileNotFoundError(f"--weights file {path!r} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - pickled objects, corrupt files: say what was expected
        raise ValueError(f"--weights {path!r} must be a state dict saved with torch.save(model.state_dict()), "
                         f"it could not be read as one: {type(err).__name__}: {str(err)[:200]}") from None
    # Training checkpoints often wrap the state dict.
    for key in ("model", "state_dict"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"--weights {path!r} must hold a state dict (parameter name → tensor), got {type(state).__name__}")
    return state


def _load_state(model: nn.Module, state: dict, what: str, path: str, shown: int = 3) -> None:
    """model.load_state_dict(state), its failure told in a few lines rather than every key."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    mismatched = [f"{k} {list(state[k].shape)} vs {list(own[k].shape)}" for k in own
                  if k in state and state[k].shape != own[k].shape]
    problems = []
    for label, keys in (("missing", missing), ("unexpected", unexpected), ("of another shape (file vs model)", mismatched)):
        if keys:
            more = f", … ({len(keys) - shown} more)" if len(keys) > shown else ""
            problems.append(f"{len(keys)} {label}: {', '.join(keys[:shown])}{more}")
    if problems:
        raise ValueError(f"--weights {path!r} do not fit {what}: " + "; ".join(problems)
                         + " (is it a checkpoint of this architecture?)")
    model.load_state_dict(state)


def suggest_layers(model: nn.Module, count: int = 3) -> list[str]:
    """Target layers worth trying in `model`: the input of its last 1×1 convolution (the
    classifier, for the closed form), then the last `count` blocks holding convolutions."""
    names = [(n, m) for n, m in model.named_modules() if n]
    convs = [(n, m) for n, m in names if isinstance(m, (nn.Conv2d, nn.Conv3d))]
    suggestions = []
    last_1x1 = next((n for n, m in reversed(convs) if all(k == 1 for k in m.kernel_size)), None)
    if last_1x1:
        suggestions.append(f"{last_1x1}:input")
    # Blocks: modules with a convolution as a direct child, latest first (stages end in such blocks).
    blocks = [n for n, m in names if any(isinstance(c, (nn.Conv2d, nn.Conv3d)) for c in m.children())]
    for n in reversed(blocks):
        if len(suggestions) > count:
            break
        if last_1x1 is None or not last_1x1.startswith(n + "."):
            suggestions.append(n)
    return suggestions


def require_layer(loaded: LoadedModel, layer: Optional[str]) -> str:
    """`layer`, else the model's default; raises naming --layer and suggesting layers when neither is set."""
    if layer:
        return layer
    if loaded.layer:
        return loaded.layer
    hint = suggest_layers(loaded.model)
    raise ValueError(f"model {loaded.name!r} has no default target layer: pass --layer (a dotted module name, "
                     f"'NAME:input' for a module's input)" + (f", e.g. one of {hint}" if hint else ""))
