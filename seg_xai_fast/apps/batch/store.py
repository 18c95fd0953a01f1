"""The explanation store of `seg-xai explain`: compact per-image map files, a crash-safe manifest.

Layout of an output folder DIR (see docs/batch.md)::

    DIR/manifest.jsonl            line 1: the run header (model, layer, method, classes, version...);
                                  then one JSON line per explained image (input → output files)
    DIR/maps/<ab>/<key>.npz       per image: float16 maps [K,h,w] at the target layer's resolution
    DIR/overlays/<ab>/<key>_c<class>.png   optional, one per explained class
    DIR/failures.csv              path,reason of the inputs that could not be explained (last run)
    DIR/.tmp/  DIR/.lock          temp files of the run in progress; the single-writer lock

<key> is a hash of the input's resolved absolute path and <ab> its first two hex digits (256 shards).

Crash safety: every file is written to DIR/.tmp, fsync'ed and renamed into place (os.replace is
atomic), and an image's manifest line is appended (and fsync'ed) only after all its files are in
place. A line torn by a kill is ignored on read and cut off before the next append, and an image
counts as done only when the files of its last line have the digests recorded there and its input
still has its recorded digest (else it is redone), so any crash loses at most the images in flight.

Compact maps: the Explainer's maps are N(R(c)), with c the normalised CAM at the target layer's
resolution (h, w), R the bilinear upsample to the model output's size and N the ReLU + per-map
min-max. The job asks the explainer for c itself (resolution="layer"), stores it as float16, and
reading computes N(R(c)): the full map up to float16 rounding (max abs error ≈ 5e-4, tested).
"""
from __future__ import annotations

import contextlib
import csv
import fcntl
import hashlib
import io
import json
import os
import re
import shutil
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional, Sequence

import numpy as np
import torch

from ...fileio import atomic_write, check_target, file_mode, publish
from ...kernels import reference

FORMAT_VERSION = 2  # 2: content digests of each input and output in the image entries
MANIFEST = "manifest.jsonl"
FAILURES = "failures.csv"
TMP_DIR = ".tmp"
LOCK = ".lock"
# Header fields that must match for a rerun to resume into the same folder (the rest is informative).
COMPARED_FIELDS = ("format", "model", "model_digest", "layer", "method", "options", "classes", "map_resolution",
                   "save", "colormap", "alpha")


class StoreMismatchError(ValueError):
    """A rerun into an output folder written with other settings."""


# --------------------------------------------------------------------------- keys and files


def resolve_input(path: os.PathLike | str) -> str:
    """The absolute, symlink-resolved path that identifies an input in the store (a symlink loop
    stays as it is, to fail when read, instead of raising here)."""
    return os.path.realpath(os.path.expanduser(os.fspath(path)))


def image_key(path: os.PathLike | str) -> str:
    """24 hex digits of sha1(resolved absolute path): the input's file name in the store."""
    return hashlib.sha1(resolve_input(path).encode("utf-8", "surrogateescape")).hexdigest()[:24]


def maps_relpath(key: str) -> str:
    return f"maps/{key[:2]}/{key}.npz"


def overlay_relpath(key: str, class_id: int) -> str:
    return f"overlays/{key[:2]}/{key}_c{class_id}.png"


def model_digest(model: torch.nn.Module) -> str:
    """sha1 of the model's parameters and buffers: a rerun with other weights must not mix results."""
    h = hashlib.sha1()
    for name, t in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(str(t.dtype).encode() + str(tuple(t.shape)).encode())
        h.update(t.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


def content_digest(data: bytes) -> str:
    """sha1 of `data`, 16 hex digits: an input's or output's identity in the manifest."""
    return hashlib.sha1(data).hexdigest()[:16]


def file_digest(path: os.PathLike | str) -> str:
    """content_digest of a file's bytes, read in blocks; OSError for anything but a regular file
    (opened non-blocking: a FIFO put in an input's place cannot hang a rerun)."""
    h = hashlib.sha1()
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(f"{str(path)!r} is not a regular file")
        with os.fdopen(os.dup(fd), "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    finally:
        os.close(fd)
    return h.hexdigest()[:16]


# --------------------------------------------------------------------------- compact maps


def expand_maps(stored: torch.Tensor, map_size: Sequence[int], image_size: Sequence[int]) -> torch.Tensor:
    """stored float16 [K,h,w] → float32 [K,H,W] in [0,1] at `image_size` (H, W).

    map_size: the Explainer's output size (the model's logits size, normally the image size).
    """
    x = stored.float()[None]  # [1,K,h,w]
    map_size, image_size = tuple(map_size), tuple(image_size)
    if tuple(x.shape[-2:]) != map_size:  # compact: the explainer's own last step, N(ReLU(R(c)))
        x = reference.normalize_maps(reference.resize_bilinear(x, map_size))
    if map_size != image_size:  # a model whose logits are not at the image size
        x = reference.resize_bilinear(x, image_size).clamp_(0, 1)
    return x[0]


# --------------------------------------------------------------------------- reading


def read_manifest(out_dir: os.PathLike | str) -> tuple[Optional[dict], Iterator[dict]]:
    """(run header or None, iterator over the image entries) of DIR/manifest.jsonl.

    A torn or unparsable line (a run killed mid-append) is skipped. An input explained twice
    (its maps file had gone missing) has two entries; the last one is current.
    """
    path = Path(out_dir) / MANIFEST
    if not path.is_file():
        return None, iter(())
    lines = _complete_lines(path)
    header = None
    first = next(lines, None)
    if first is not None and first.get("type") == "run":
        header = first

    def entries():
        if first is not None and first.get("type") == "image":
            yield first
        for record in lines:
            if record.get("type") == "image":
                yield record

    return header, entries()


def _complete_lines(path: Path) -> Iterator[dict]:
    with open(path, "rb") as f:
        for raw in f:
            if not raw.endswith(b"\n"):
                return  # torn last line
            try:
                record = json.loads(raw)
            except ValueError:
                continue
            if isinstance(record, dict):
                yield record


@dataclass
class StoredExplanation:
    """One image's explanation read back from a store.

    maps: float32 [K,H,W] in [0,1] at the image's size; maps[i] explains classes[i].
    """

    maps: torch.Tensor
    classes: list
    image_path: str
    image_size: tuple
    method: str
    layer: str
    model: str


class DamagedOutputError(ValueError):
    """A stored explanation that does not match the manifest (damaged, swapped or stale)."""


def load_explanation(out_dir: os.PathLike | str, image_path: os.PathLike | str) -> StoredExplanation:
    """The stored explanation of `image_path` from the `seg-xai explain` output folder `out_dir`.

    Verified against the manifest: the maps file's digest (a truncated or swapped file raises
    DamagedOutputError), the input it names and its classes, and, when the image is still
    there, the image's digest (an image replaced since it was explained raises too). A rerun of
    `seg-xai explain` redoes what does not match.
    """
    out_dir = Path(out_dir)
    key = image_key(image_path)
    entry = manifest_entries(out_dir).get(key)
    if entry is None:
        if not out_dir.is_dir():
            raise FileNotFoundError(f"out_dir {str(out_dir)!r} is not a folder")
        raise FileNotFoundError(f"no explanation of {resolve_input(image_path)!r} in {str(out_dir)!r} "
                                f"(no manifest entry for key {key})")
    path = out_dir / entry["maps"]

    def damaged(why: str) -> DamagedOutputError:
        return DamagedOutputError(f"the explanation of {resolve_input(image_path)!r} in {str(out_dir)!r} ({path}) "
                                  f"{why}; rerun `seg-xai explain` into that folder to redo it")

    try:
        data = _read_regular(path)
    except OSError as err:
        raise damaged(f"cannot be read ({err.strerror or err})") from None
    if content_digest(data) != entry.get("digests", {}).get(entry["maps"]):
        raise damaged("is damaged or was replaced: its digest does not match the manifest")
    try:
        stored, classes, map_size, image_size, meta = _parse_maps(data)
    except Exception as err:  # noqa: BLE001 - numpy/zipfile raise many types for a bad file
        raise damaged(f"cannot be parsed ({type(err).__name__}: {err})") from None
    if meta.get("input") != entry["input"] or classes != entry["classes"] or len(classes) != stored.shape[0]:
        raise damaged("does not match its manifest entry (input or classes)")
    current = _input_digest(entry["input"])
    if current is not None and current != entry.get("input_digest"):
        raise damaged("is stale: the image changed after it was explained")
    return StoredExplanation(
        maps=expand_maps(stored, map_size, image_size), classes=classes, image_path=meta["input"],
        image_size=image_size, method=meta["method"], layer=meta["layer"], model=meta["model"],
    )


def _read_regular(path: Path) -> bytes:
    if not stat.S_ISREG(os.lstat(path).st_mode):
        raise OSError(f"{str(path)!r} is not a regular file")
    return path.read_bytes()


def _parse_maps(data: bytes) -> tuple:
    """A maps file's bytes → (float16 maps [K,h,w], classes, map_size, image_size, meta)."""
    with np.load(io.BytesIO(data), allow_pickle=False) as npz:
        return (torch.from_numpy(npz["maps"]), [int(c) for c in npz["classes"]],
                tuple(int(s) for s in npz["map_size"]), tuple(int(s) for s in npz["image_size"]),
                json.loads(str(npz["meta"])))


def _input_digest(path: str) -> Optional[str]:
    """The input's current digest; None when it is gone or unreadable (its results stay usable)."""
    try:
        return file_digest(path)
    except OSError:
        return None


_INDEX_CACHE: dict = {}  # manifest path → ((mtime_ns, size), {key: offset of its last line})


def manifest_index(path: Path) -> dict:
    """{key: byte offset of its last complete line} of the manifest at `path`: ~100 bytes per
    image, where the entries themselves (with their digests) would take several times that."""
    index: dict = {}
    with open(path, "rb") as f:
        offset = 0
        for raw in f:
            if not raw.endswith(b"\n"):
                break  # torn last line
            try:
                record = json.loads(raw)
            except ValueError:
                record = None
            if isinstance(record, dict) and record.get("type") == "image" and isinstance(record.get("key"), str):
                index[record["key"]] = offset
            offset += len(raw)
    return index


def manifest_entry(path: Path, offset: int) -> dict:
    """The manifest line at `offset` (from manifest_index)."""
    with open(path, "rb") as f:
        f.seek(offset)
        return json.loads(f.readline())


def manifest_entries(out_dir: os.PathLike | str) -> "_Entries":
    """The current (last) manifest entry of each key of DIR, read on demand: `.get(key)`; the
    index is cached while the manifest is unchanged."""
    path = Path(out_dir) / MANIFEST
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return _Entries(path, {})
    stamp = (st.st_mtime_ns, st.st_size)
    cached = _INDEX_CACHE.get(str(path))
    if cached is None or cached[0] != stamp:
        cached = (stamp, manifest_index(path))
        _INDEX_CACHE.clear()  # one folder at a time
        _INDEX_CACHE[str(path)] = cached
    return _Entries(path, cached[1])


class _Entries:
    def __init__(self, path: Path, index: dict) -> None:
        self.path, self.index = path, index

    def get(self, key: str) -> Optional[dict]:
        offset = self.index.get(key)
        return None if offset is None else manifest_entry(self.path, offset)

    def __getitem__(self, key: str) -> dict:
        entry = self.get(key)
        if entry is None:
            raise KeyError(key)
        return entry


def entry_is_current(root: Path, entry: dict, input_path: str) -> bool:
    """Whether `entry`'s outputs are all intact (digests as recorded) and its input unchanged."""
    digests = entry.get("digests")
    if not isinstance(digests, dict) or entry.get("maps") not in digests:
        return False
    for rel, digest in digests.items():
        if not (_MAPS_PATH.fullmatch(rel) or _OVERLAY_PATH.fullmatch(rel)):
            return False  # a path the store never writes: a tampered line
        try:
            if file_digest(root / rel) != digest:
                return False
        except OSError:
            return False
    return entry.get("input") == input_path and _input_digest(input_path) == entry.get("input_digest")


# --------------------------------------------------------------------------- writing


class StoreFiles:
    """Writes one image's output files into DIR (safe from several processes: no shared state).

    The Ray actors use it directly; the manifest is the driver's business (`Store`).
    """

    def __init__(self, root: os.PathLike | str, header: dict) -> None:
        self.root = Path(root)
        self.tmp = self.root / TMP_DIR
        self.meta = {k: header[k] for k in ("model", "layer", "method")}
        self._made: set = set()

    def _dir(self, rel: str) -> Path:
        path = self.root / rel
        if path.parent not in self._made:
            real_dirs(self.root, path.parent.relative_to(self.root))
            self._made.add(path.parent)
        return path

    def write_image(
        self,
        input_path: str,
        maps: np.ndarray,  # float16 [K,h,w]: layer-resolution (or full) maps
        classes: Sequence[int],
        map_size: Sequence[int],
        image_size: Sequence[int],
        overlays: Sequence[np.ndarray] = (),  # uint8 [H,W,3] per class, or none
        input_digest: Optional[str] = None,  # content_digest of the input's bytes, as decoded
    ) -> dict:
        """Write the maps file (and overlays) of `input_path` atomically → its manifest entry,
        with the digest of the input and of every file written (checked on load and on resume)."""
        key = image_key(input_path)
        meta = json.dumps({"input": input_path, **self.meta})
        arrays = dict(maps=maps, classes=np.asarray(classes, np.int64), map_size=np.asarray(map_size, np.int64),
                      image_size=np.asarray(image_size, np.int64), meta=np.array(meta))
        buf = io.BytesIO()
        np.savez(buf, **arrays)
        rel = maps_relpath(key)
        digests = {rel: self._write(rel, buf.getvalue())}
        pictures = []
        for class_id, picture in zip(classes, overlays):
            prel = overlay_relpath(key, int(class_id))
            digests[prel] = self._write(prel, _png_bytes(picture))
            pictures.append(prel)
        return {"type": "image", "input": input_path, "key": key, "maps": rel, "overlays": pictures,
                "size": [int(s) for s in image_size], "classes": [int(c) for c in classes],
                "input_digest": input_digest, "digests": digests}

    def _write(self, rel: str, data: bytes) -> str:
        atomic_write(self._dir(rel), lambda f: f.write(data), self.tmp)
        return content_digest(data)


_MAPS_PATH = re.compile(r"maps/([0-9a-f]{2})/\1[0-9a-f]{22}\.npz")
_OVERLAY_PATH = re.compile(r"overlays/([0-9a-f]{2})/\1[0-9a-f]{22}_c\d+\.png")
_SHARD_NAME = re.compile(r"[0-9a-f]{2}")
_MAPS_NAME = re.compile(r"([0-9a-f]{24})\.npz")
_OVERLAY_NAME = re.compile(r"([0-9a-f]{24})_c\d+\.png")


def _is_real_dir(path: Path) -> bool:
    try:
        return stat.S_ISDIR(os.lstat(path).st_mode)
    except FileNotFoundError:
        return False


def real_dirs(root: Path, rel: os.PathLike | str) -> Path:
    """Make the folders `rel` inside `root`; OSError if one of them is a symlink (or not a folder):
    the store never writes where a link inside DIR points."""
    path = root
    for part in Path(rel).parts:
        path = path / part
        try:
            path.mkdir()
        except FileExistsError:
            pass
        if not stat.S_ISDIR(os.lstat(path).st_mode):
            raise OSError(f"refusing to write into {str(path)!r}: it is a symlink or not a folder "
                          "(the output folder's own sub-folders must be real folders)")
    return path


def _png_bytes(picture: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    # compress_level 1: several times faster than the default 6, files ~20 % larger.
    Image.fromarray(np.ascontiguousarray(picture)).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


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
        try:  # O_NOFOLLOW: a symlink planted at DIR/.lock is not followed
            fd = os.open(self.root / LOCK, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW, file_mode())
        except OSError as err:
            raise OSError(f"cannot create the lock file {str(self.root / LOCK)!r}: {err.strerror}") from None
        self._lock = os.fdopen(fd, "a")
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock.close()
            raise ValueError(f"another `seg-xai explain` run is writing to {str(self.root)!r}") from None
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
        self._entries = _Entries(self.root / MANIFEST, manifest_index(self.root / MANIFEST) if old else {})
        self.redo = 0  # images whose results were damaged, swapped or stale
        path = self.root / MANIFEST
        if old is None:
            line = (json.dumps({"type": "run", **header}) + "\n").encode()
            atomic_write(path, lambda f: f.write(line), tmp)
        self._manifest = open(path, "r+b")
        _cut_torn_tail(self._manifest)
        self._failures_path = tmp / FAILURES
        # surrogateescape: a file name that is not valid UTF-8 is written back as its own bytes
        self._failures_file = open(self._failures_path, "w", newline="", encoding="utf-8", errors="surrogateescape")
        self._failures = csv.writer(self._failures_file)
        self._failures.writerow(["path", "reason"])
        self.failed = 0

    def _wipe(self) -> None:
        """Delete what `seg-xai explain` wrote in DIR, and nothing else: the files named by the
        store's own layout (maps/<ab>/<key>.npz, overlays/<ab>/<key>_c<class>.png), the folders
        they leave empty, the manifest and failures.csv. A user's maps/city.geojson stays."""
        for sub, name_re in (("maps", _MAPS_NAME), ("overlays", _OVERLAY_NAME)):
            top = self.root / sub
            if not _is_real_dir(top):
                continue
            for shard in top.iterdir():
                if not (_SHARD_NAME.fullmatch(shard.name) and _is_real_dir(shard)):
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
        if entry_is_current(self.root, entry, input_path):
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


def _cut_torn_tail(f: io.BufferedRandom) -> None:
    """Truncate a torn last line (a run killed mid-append) and leave `f` positioned at the end."""
    size = f.seek(0, os.SEEK_END)
    if size == 0:
        return
    f.seek(size - 1)
    if f.read(1) == b"\n":
        return
    pos = size
    while pos > 0:  # scan back to the last newline, in blocks
        start = max(0, pos - 65536)
        f.seek(start)
        block = f.read(pos - start)
        cut = block.rfind(b"\n")
        if cut >= 0:
            f.truncate(start + cut + 1)
            break
        pos = start
    else:
        f.truncate(0)
    f.seek(0, os.SEEK_END)
    os.fsync(f.fileno())
