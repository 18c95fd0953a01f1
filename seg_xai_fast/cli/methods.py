"""`seg-xai methods`: every explanation method (built-in, from installed packages' entry points, or
--method package.module:NAME), its family, whether it needs a target layer, and its options."""
from __future__ import annotations

import json

from ..engine.methods import RUNTIMES, get_method, registered
from .exits import EXIT_OK


def register(subparsers) -> None:
    p = subparsers.add_parser("methods", help="list the explanation methods with their options")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--method", action="append", default=[], metavar="package.module:NAME",
                   help="also import and list a method of your own (repeatable)")
    p.set_defaults(func=run)


def run(args) -> int:
    for reference in args.method:
        get_method(reference)  # imports the module, which registers the method
    rows = {name: {"family": spec.family, "needs_gradients": spec.needs_gradients,
                   "target_layer": "required" if spec.needs_layer else "none (input space)",
                   "class_specific": spec.class_specific, "builtin": spec.builtin,
                   "runtimes": [r for r in RUNTIMES if spec.unavailable_on(r) is None],
                   "options": dict(spec.options), "description": spec.description}
            for name, spec in registered().items()}
    if args.json:
        print(json.dumps(rows, indent=2, default=repr))
        return EXIT_OK
    for name, row in rows.items():
        options = ", ".join(f"{k}={v!r}" for k, v in row["options"].items()) or "none"
        origin = "" if row["builtin"] else "; user method"
        print(f"{name}  [{row['family']}; target layer {row['target_layer']}; runtimes "
              f"{', '.join(row['runtimes'])}{origin}]\n  {row['description']}\n  options: {options}")
    return EXIT_OK
