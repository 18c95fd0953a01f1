"""`seg-xai methods`: every explanation method, its family, whether it needs a target layer, and its options."""
from __future__ import annotations

import json

from ..engine.methods import METHODS
from .exits import EXIT_OK


def register(subparsers) -> None:
    p = subparsers.add_parser("methods", help="list the explanation methods with their options")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=run)


def run(args) -> int:
    rows = {name: {"family": spec.family, "needs_gradients": spec.needs_gradients,
                   "target_layer": "required" if spec.needs_layer else "none (input space)",
                   "options": dict(spec.options), "description": spec.description}
            for name, spec in sorted(METHODS.items())}
    if args.json:
        print(json.dumps(rows, indent=2))
        return EXIT_OK
    for name, row in rows.items():
        options = ", ".join(f"{k}={v!r}" for k, v in row["options"].items()) or "none"
        print(f"{name}  [{row['family']}; target layer {row['target_layer']}]\n  {row['description']}\n"
              f"  options: {options}")
    return EXIT_OK
