"""The writing side of an output folder for one run: the single-writer lock, the header check
against a previous run, the manifest appends and the failures file."""
from __future__ import annotations

import contextlib
import csv
import fcntl
import json
import os
import shutil
import stat
import threading
from pathlib import Path
from typing import Sequence

from ....fileio import atomic_write, check_target, file_mode, publish
from .digests import entry_is_current
from .files import StoreFiles
from .layout import (
    FAILURES, LOCK, MANIFEST, MAPS_NAME, OVERLAY_NAME, SHARD_NAME, TMP_DIR, image_key, is_real_dir, real_dirs,
)
from .manifest import ManifestEntries, cut_torn_tail, manifest_index, read_manifest

COMPARED_FIELDS = ("format", "model", "model_digest", "layer", "method", "options", "classes", "map_resolution",
                   "save", "colormap", "alpha")


def hold_lock(path: Path, command: str):
    """The open file of an exclusive flock on `path` (created; a symlink planted there is not
    followed); a ValueError when another run of `command` holds it. Closing the file releases it."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW, file_mode())
    except OSError as err:
        raise OSError(f"cannot create the lock file {str(path)!r}: {err.strerror}") from None
    lock = os.fdopen(fd, "a")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.close()
        raise ValueError(f"another `{command}` run is writing to {str(path.parent)!r}") from None
    return lock


class StoreMismatchError(ValueError):
    """A rerun into an output folder written with other settings."""


class Store:
    """The writing side of an output folder for one run: lock, header check, manifest, failures.

    header: the run's settings (COMPARED_FIELDS must match a previous run's, unless force=True,
    which deletes that run's outputs first).
    """

    def __init__(self, root: os.PathLike | str, header: dict, force: bool = False) -> None:
        self.root = Path(root)
        if self.root.exists() and not self.root.is_dir():
            raise ValueError(f"--out must be a folder, got the file {str(self.root)!r}")
        self.root.mkdir(parents=True, exist_ok=True)
        self._lock = hold_lock(self.root / LOCK, "seg-xai explain")
        try:
            self._open(header, force)
        except BaseException:
            self.close()
            raise

    def _open(self, header: dict, force: bool) -> None:
        tmp = self.root / TMP_DIR
        if tmp.is_symlink():
            tmp.unlink()  # never delete or write what a link points to
        shutil.rmtree(tmp, ignore_errors=True)  # temp files of a killed run
        real_dirs(self.root, TMP_DIR)
        check_target(self.root / MANIFEST)  # read and appended to: never through a link
        old, _ = read_manifest(self.root)
        if old is not None and force:
            self._wipe()
            old = None
        elif old is not None:
            diff = {k: (old.get(k), header.get(k)) for k in COMPARED_FIELDS if old.get(k) != header.get(k)}
            if diff:
                lines = "; ".join(f"{k}: was {a!r}, now {b!r}" for k, (a, b) in diff.items())
                raise StoreMismatchError(
                    f"--out {str(self.root)!r} holds results of other settings ({lines}); "
                    "use another --out, or --force to delete them and start over"
                )
        elif (self.root / MANIFEST).exists() or (self.root / "maps").exists():
            if not force:
                raise StoreMismatchError(f"--out {str(self.root)!r} has outputs but no readable manifest header; "
                                         "use another --out, or --force to delete them")
            self._wipe()
        self.files = StoreFiles(self.root, header)
        # The last line of each key counts; read back on demand (is_done), an offset each until then.
        self._entries = ManifestEntries(self.root / MANIFEST, manifest_index(self.root / MANIFEST) if old else {})
        self.redo = 0  # images whose results were damaged, swapped or stale
        self._read_digests: dict = {}  # {rel: digest} of the output files is_done has read
        path = self.root / MANIFEST
        if old is None:
            line = (json.dumps({"type": "run", **header}) + "\n").encode()
            atomic_write(path, lambda f: f.write(line), tmp)
        self._manifest = open(path, "r+b")
        cut_torn_tail(self._manifest)
        self._failures_path = tmp / FAILURES
        # surrogateescape: a file name that is not valid UTF-8 is written back as its own bytes
        self._failures_file = open(self._failures_path, "w", newline="", encoding="utf-8", errors="surrogateescape")
        self._failures = csv.writer(self._failures_file)
        self._failures.writerow(["path", "reason"])
        self._failures_lock = threading.Lock()
        self.failed = 0

    def _wipe(self) -> None:
        """Delete what `seg-xai explain` wrote in DIR, and nothing else: the files named by the
        store's own layout (maps/<ab>/<batch>.npz, overlays/<ab>/<key>_c<class>.png), the folders
        they leave empty, the manifest and failures.csv. A user's maps/city.geojson stays."""
        for sub, name_re in (("maps", MAPS_NAME), ("overlays", OVERLAY_NAME)):
            top = self.root / sub
            if not is_real_dir(top):
                continue
            for shard in top.iterdir():
                if not (SHARD_NAME.fullmatch(shard.name) and is_real_dir(shard)):
                    continue
                for f in shard.iterdir():
                    m = name_re.fullmatch(f.name)
                    if m and m.group(1).startswith(shard.name) and stat.S_ISREG(os.lstat(f).st_mode):
                        f.unlink()
                with contextlib.suppress(OSError):
                    shard.rmdir()  # only when empty
            with contextlib.suppress(OSError):
                top.rmdir()
        for name in (MANIFEST, FAILURES):
            path = self.root / name
            if path.exists() and stat.S_ISREG(os.lstat(path).st_mode):
                path.unlink()

    def is_done(self, input_path: str) -> bool:
        """Whether `input_path` (resolved) has intact results of its current content; a damaged,
        swapped or stale result is counted in `redo` (and redone by the run)."""
        entry = self._entries.get(image_key(input_path))
        if entry is None:
            return False
        if len(self._read_digests) > 4096:  # the images of a batch are checked together: keep a few batches
            self._read_digests.clear()
        if entry_is_current(self.root, entry, input_path, self._read_digests):
            return True
        self.redo += 1
        return False

    def inherited_fds(self) -> tuple:
        """The descriptors a forked decode worker must close: the lock's above all (see inputs.worker_init)."""
        files = (self._lock, getattr(self, "_manifest", None), getattr(self, "_failures_file", None))
        return tuple(f.fileno() for f in files if f is not None and not f.closed)

    def append(self, entries: Sequence[dict]) -> None:
        """Record completed images: one manifest line each, fsync'ed (their files are in place)."""
        if not entries:
            return
        self._manifest.write("".join(json.dumps(e) + "\n" for e in entries).encode())
        self._manifest.flush()
        os.fsync(self._manifest.fileno())

    def add_failure(self, path: str, reason: str) -> None:
        """Record a failed input (from the main thread or the writer's)."""
        with self._failures_lock:
            self._failures.writerow([path, " ".join(str(reason).split())])  # one line per failure
            self._failures_file.flush()  # kept out of memory: failures may be many
            self.failed += 1

    def finish(self) -> None:
        """Publish this run's failures as DIR/failures.csv (atomically) and release the folder."""
        self._failures_file.flush()
        os.fsync(self._failures_file.fileno())
        self._failures_file.close()
        publish(self._failures_path, self.root / FAILURES)
        self.close()

    def close(self) -> None:
        for name in ("_manifest", "_failures_file"):
            f = getattr(self, name, None)
            if f is not None and not f.closed:
                f.close()
        if not self._lock.closed:
            fcntl.flock(self._lock, fcntl.LOCK_UN)
            self._lock.close()
