"""What several commands share: the model arguments (--model, --weights, --num-classes, --layer)
and the method arguments (--method or --methods, --option)."""
from __future__ import annotations

import argparse
import json

from ..engine.methods import get_method, registered

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


def add_method_arguments(parser, methods: bool = False, default: str = "gradcam",
                         default_help: str = "%(default)s") -> None:
    """--method (or --methods, a comma-separated list) and --option KEY=VALUE, the same on every command.

    default_help: how --methods' help names its default (a command whose default depends on other
    flags passes default=None and says which)."""
    if methods:
        parser.add_argument("--methods", default=default,
                            help=f"comma-separated, or 'all' (default: {default_help}); see `seg-xai methods`")
    else:
        parser.add_argument("--method", default=default, type=method_name, metavar="METHOD",
                            help="explanation method, or package.module:NAME of your own (default: %(default)s); "
                                 "see `seg-xai methods`")
    parser.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                        help="a method option, repeatable, e.g. --option n_masks=1000 --option window=16,16 "
                             "(each method's options: `seg-xai methods`)")


def method_name(text: str) -> str:
    """--method: a registered method's name, or 'package.module:NAME' (imported, so that it registers
    NAME); argparse reports the ValueError, which lists the valid names."""
    try:
        get_method(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None
    return text


def method_names(spec: str) -> list:
    """--methods: 'all' or a comma-separated list of method names (or package.module:NAME)."""
    names = list(registered()) if spec.strip() == "all" else [m.strip() for m in spec.split(",") if m.strip()]
    if not names:
        raise ValueError(f"--methods must name at least one method, got {spec!r}")
    for name in names:
        get_method(name)  # an unknown name is an error listing the valid ones
    return names


def parse_options(items) -> dict:
    """--option KEY=VALUE items → {key: value}: numbers and true/false/null as such, "a,b" as a
    tuple of them (window=16,16), anything else as a string (baseline=mean)."""
    options = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--option must be KEY=VALUE, got {item!r}")
        parts = [_value(p.strip()) for p in text.split(",")]
        options[key.strip()] = parts[0] if len(parts) == 1 else tuple(parts)
    return options


def _value(text: str):
    try:
        return json.loads(text)
    except ValueError:
        return text


def sliding_arguments(args) -> dict:
    """--sliding-window ROI, --overlap, --blend, --sw-batch-size as SlidingWindow arguments, checked
    (whether the ROI's axes fit the input is checked where the input is known)."""
    from ..apps.scenes import parse_roi

    if not 0 <= args.overlap < 1:
        raise ValueError(f"--overlap must be in [0, 1), got {args.overlap}")
    if args.sw_batch_size < 1:
        raise ValueError(f"--sw-batch-size must be a positive int, got {args.sw_batch_size}")
    return {"roi_size": parse_roi(args.sliding_window), "overlap": args.overlap, "mode": args.blend,
            "sw_batch_size": args.sw_batch_size}


def add_sliding_arguments(group, sliding_help: str) -> None:
    """--model-args, --sliding-window, --overlap, --blend, --sw-batch-size (explain and bench)."""
    group.add_argument("--model-args", default=None, metavar="JSON",
                       help="constructor keyword arguments of a monai:NAME model, e.g. "
                            "'{\"spatial_dims\": 3, \"in_channels\": 1, \"out_channels\": 3}'")
    group.add_argument("--sliding-window", default=None, metavar="ROI", help=sliding_help)
    group.add_argument("--overlap", type=float, default=0.25, help="window overlap in [0, 1) (default: %(default)s)")
    group.add_argument("--blend", default="constant", choices=("constant", "gaussian"),
                       help="how overlapping windows are blended (default: %(default)s)")
    group.add_argument("--sw-batch-size", type=int, default=1, metavar="N",
                       help="windows per forward (default: %(default)s)")


def volume_options(args) -> tuple:
    """(--model-args as keyword arguments or None, SlidingWindow's arguments or None) from the
    arguments add_sliding_arguments added."""
    sliding = sliding_arguments(args) if args.sliding_window is not None else None
    return parse_model_args(args.model_args), sliding


def parse_model_args(text):
    """--model-args JSON → its keyword arguments (None when not given)."""
    if text is None:
        return None
    try:
        return json.loads(text)
    except ValueError as err:
        raise ValueError(f"--model-args must be JSON (an object of keyword arguments), got {text!r}: {err}") from None
