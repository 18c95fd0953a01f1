"""`seg-xai export-onnx`: a model as an ONNX graph with its target layer exposed, for --runtime onnxruntime."""
from __future__ import annotations

import json

import torch

from ..models import require_layer
from ..runtimes.export import EXPORTERS, METADATA_KEY, export_onnx
from .common import add_model_arguments, load_model_of
from .exits import EXIT_OK


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "export-onnx", help="export a model with its target layer's activations for --runtime onnxruntime",
        description="Write MODEL as an ONNX graph whose outputs are the logits and the target layer's "
                    "activations, with the linear head's weights in its metadata, for sx.OnnxExplainer.")
    add_model_arguments(p, positional=True)
    p.add_argument("out", metavar="OUT", help="the .onnx file to write")
    p.add_argument("--size", type=int, nargs="+", default=None, metavar="S",
                   help="example input size: S or H W (default: the model's; axes stay dynamic)")
    p.add_argument("--exporter", default="auto", choices=EXPORTERS, help="(default: %(default)s)")
    p.add_argument("--gradient-free", "--eigencam-only", dest="gradient_free", action="store_true",
                   help="allow a layer without a linear head (the file then serves the methods that need no "
                        "gradient: eigencam, the perturbation family, segment attributions)")
    p.set_defaults(func=run, usage_errors=(RuntimeError,))


def run(args) -> int:
    if args.size is not None and len(args.size) not in (1, 2):
        raise ValueError(f"--size takes S or H W, got {args.size}")
    loaded = load_model_of(args)
    layer = require_layer(loaded, args.layer)
    h, w = (args.size * 2)[:2] if args.size else (loaded.image_size, loaded.image_size)
    example = torch.rand(1, 3, h, w, generator=torch.Generator().manual_seed(0))
    path = export_onnx(loaded.model, layer, args.out, example, require_head=not args.gradient_free,
                       exporter=args.exporter)
    import onnx  # present: export_onnx needs it

    meta = json.loads({p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}[METADATA_KEY])
    head = "linear head found (all methods)" if meta["head"] else "no linear head (gradient-free methods only)"
    axes = "dynamic batch and spatial axes" if meta["dynamic_spatial"] else f"fixed spatial size {h}x{w}"
    print(f"wrote {path} ({path.stat().st_size / 2**20:.1f} MB): layer {meta['layer']}, {head}, {axes}, "
          f"exporter {meta['exporter']}")
    return EXIT_OK
