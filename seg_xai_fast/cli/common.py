"""What several commands share: the model arguments (--model, --weights, --num-classes, --layer)."""
from __future__ import annotations

from ..models import LoadedModel, load_model


def add_model_arguments(parser, onnx: bool = False, positional: bool = False, layer_help: str = "") -> None:
    """--model (or a positional MODEL), --weights, --num-classes and --layer, the same on every command.

    onnx: the command also runs .onnx files (written by export-onnx).
    """
    kinds = "demo | torchvision:NAME | model.pt" + (" | model.onnx (from export-onnx)" if onnx else "")
    if positional:
        parser.add_argument("model", metavar="MODEL", help=kinds)
    else:
        parser.add_argument("--model", default="demo", help=f"{kinds} (default: %(default)s)")
    parser.add_argument("--weights", default=None, metavar="FILE",
                        help="state dict (torch.save(model.state_dict())) for torchvision:NAME "
                             "(default: random init, whose maps explain nothing)")
    parser.add_argument("--num-classes", type=int, default=None, metavar="L",
                        help="class count of torchvision:NAME (default: read from --weights, else 21)")
    parser.add_argument("--layer", default=None,
                        help=layer_help or "target layer, a dotted module name; 'NAME:input' for a module's input "
                                           "(default: the model's)")


def model_options(args) -> dict:
    """--weights and --num-classes as keyword arguments of load_model / make_explainer / the apps."""
    return {"weights": args.weights, "num_classes": args.num_classes}


def load_model_of(args) -> LoadedModel:
    """The model the arguments name (--model, --weights, --num-classes)."""
    return load_model(args.model, **model_options(args))
