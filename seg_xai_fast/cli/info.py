"""`seg-xai info`: how the compiled core was built and what it finds at run time."""
from __future__ import annotations

import json

from ..kernels import build_info
from .exits import EXIT_OK


def register(subparsers) -> None:
    p = subparsers.add_parser("info", help="print how the compiled core was built and what it found at run time")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--model", default=None, help="also show this model spec's default target layer (demo, torchvision:NAME, hf:NAME, smp:ARCH:ENCODER, FILE)")
    p.set_defaults(func=run)


def run(args) -> int:
    info = build_info()
    if args.model is not None:  # the spec's defaults: what explain/bench/video use without --layer
        from ..models import load_model

        loaded = load_model(args.model, weights=getattr(args, "weights", None))
        info.update(model=loaded.name, default_layer=loaded.layer, image_size=loaded.image_size)
    if args.json:
        print(json.dumps(info, indent=2, default=str))
    else:
        width = max(len(k) for k in info)
        for key, value in info.items():
            print(f"{key:<{width}}  {value}")
    return EXIT_OK
