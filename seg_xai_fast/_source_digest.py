"""The digest of the compiled core's sources, csrc/: setup.py builds it into the core
(build_info()["source_digest"]) and kernels/backend.py compares it with the csrc/ beside the
package, so a core built before its sources last changed is refused at import.

No package imports: setup.py loads this file by path, before the package is built.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

SOURCE_SUFFIXES = (".cpp", ".h", ".cu", ".cuh", ".inc")


def source_files(csrc: os.PathLike | str) -> list[Path]:
    """The files of `csrc` the core is compiled from, sorted by their path inside it."""
    root = Path(csrc)
    return sorted((p for p in root.rglob("*") if p.suffix in SOURCE_SUFFIXES and p.is_file()),
                  key=lambda p: p.relative_to(root).as_posix())


def source_digest(csrc: os.PathLike | str) -> str:
    """sha256 (16 hex digits) of the names and bytes of every source file under `csrc`: any edit,
    added, removed or renamed file changes it."""
    root = Path(csrc)
    h = hashlib.sha256()
    for path in source_files(root):
        data = path.read_bytes()
        h.update(f"{path.relative_to(root).as_posix()}\0{len(data)}\0".encode())
        h.update(data)
    return h.hexdigest()[:16]
