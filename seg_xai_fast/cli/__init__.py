"""The `seg-xai` command line: one module per command (register() adds its parser, run() does
the work), one table from outcomes to exit statuses (exits.py)."""
from __future__ import annotations

import argparse

from .._version import __version__
from . import bench, demo, evaluate, explain, export_onnx, info, methods, report, video
from .exits import run_command

COMMANDS = (info, methods, demo, bench, explain, video, export_onnx, evaluate, report)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="seg-xai", description="Fast CAM explanations for segmentation models.")
    parser.add_argument("--version", action="version", version=f"seg-xai {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        command.register(sub)
    return parser


def main(argv=None) -> int:
    return run_command(build_parser().parse_args(argv))
