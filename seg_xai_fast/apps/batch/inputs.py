"""Inputs of `seg-xai explain`: discovery (files, folders, globs, list files), decoding, and
DataLoader batches of equal-size images."""
from __future__ import annotations

import glob
import io
import os
import re
import stat
import sys
import warnings
from pathlib import Path
from typing import Iterator, Optional, Sequence

import numpy as np
import torch

from ...errors import UsageError
from .store import content_digest, resolve_input

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm", ".pnm")
LIST_SUFFIXES = (".txt", ".lst", ".list")  # a file with one image path per line
# The largest image decoded by default (`--max-pixels`): a 6000×6000 PNG took the job to 9.4 GB.
DEFAULT_MAX_PIXELS = 4096 * 4096

# --------------------------------------------------------------------------- inputs


def discover_inputs(inputs: Sequence[str], suffixes: Sequence[str] = IMAGE_SUFFIXES) -> list[str]:
    """The resolved absolute paths of the images named by `inputs`, in order, without duplicates.

    Each input is an existing file (taken as an image whatever its name, except a list file:
    *.txt/.lst/.list, one path per line, relative paths from the list's folder, '#' comments),
    a folder (searched recursively for `suffixes`, default IMAGE_SUFFIXES), or a glob pattern ('**' recurses; matched
    folders are searched). An input that matches nothing is a UsageError; a listed path that does
    not exist is not (it becomes a failure of the run, like an unreadable file).
    """
    if not inputs:
        raise UsageError("no INPUTS given: name image files, folders, glob patterns or list files")
    found: dict[str, None] = {}  # resolved paths, in order (a dict keeps insertion order)
    for spec in inputs:
        paths = _expand(spec, tuple(suffixes))
        if not paths:
            raise UsageError(f"input {spec!r} matched no image (expected an existing file, a folder "
                             f"with {'/'.join(suffixes[:4])}... images, a glob pattern or a list file)")
        for p in paths:
            found.setdefault(resolve_input(p), None)
    return list(found)


def _expand(spec: str, suffixes: tuple) -> list[str]:
    path = Path(spec).expanduser()
    if path.is_dir():
        return _walk(path, suffixes)
    if path.is_file():
        return _read_list(path) if path.suffix.lower() in LIST_SUFFIXES else [str(path)]
    if glob.has_magic(spec):
        out: list[str] = []
        for match in _glob(os.path.expanduser(spec)):
            out.extend(_walk(Path(match), suffixes) if os.path.isdir(match) else [match])
        return out
    return []


def _glob(pattern: str) -> list[str]:
    """glob.glob(pattern, recursive=True), sorted, except that '**' never follows a symlink to a
    folder: glob's own '**' does, and a link to a parent folder made it run forever."""
    if "**" not in pattern:
        return sorted(glob.glob(pattern))
    parts = pattern.split(os.sep)
    fixed = next(i for i, part in enumerate(parts) if glob.has_magic(part))
    base = os.sep.join(parts[:fixed]) or (os.sep if pattern.startswith(os.sep) else "")
    regex = re.compile(_glob_regex(parts[fixed:]))
    out = []
    for root, dirs, files in os.walk(base or os.curdir):  # followlinks=False: no loops
        dirs.sort()
        for name in sorted(dirs + files):
            full = os.path.join(root, name)
            if regex.fullmatch(os.path.relpath(full, base or os.curdir).replace(os.sep, "/")):
                out.append(full if base else os.path.relpath(full))
    return sorted(out)


def _glob_regex(parts: Sequence[str]) -> str:
    """A regex for '/'-joined relative paths matching the glob segments `parts` ('**': any depth)."""
    regex = ""
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        if part == "**":
            visible = r"[^/.][^/]*"  # like glob, '**' skips hidden folders and files
            regex += f"(?:{visible}(?:/{visible})*)?" if last else f"(?:{visible}/)*"
            continue
        seg = "" if part.startswith(".") else r"(?!\.)"  # like glob: '*' skips hidden names
        j = 0
        while j < len(part):
            c = part[j]
            if c == "*":
                seg += "[^/]*"
            elif c == "?":
                seg += "[^/]"
            elif c == "[" and "]" in part[j + 2:]:  # a character class, '!' negates
                end = part.index("]", j + 2)
                body = part[j + 1:end]
                seg += "[" + ("^" + body[1:] if body.startswith("!") else body).replace("\\", "\\\\") + "]"
                j = end
            else:
                seg += re.escape(c)
            j += 1
        regex += seg + ("" if last else "/")
    return regex


def _walk(folder: Path, suffixes: tuple) -> list[str]:
    out = []
    for root, dirs, files in os.walk(folder):
        dirs.sort()  # a deterministic order, which makes progress and failures.csv reproducible
        out.extend(os.path.join(root, f) for f in sorted(files) if f.lower().endswith(suffixes))
    return out


def _read_list(list_file: Path) -> list[str]:
    base = list_file.parent
    with open(list_file, encoding="utf-8", errors="surrogateescape") as f:
        lines = (line.strip() for line in f)
        return [str(base / os.path.expanduser(line)) for line in lines if line and not line.startswith("#")]


def read_image(path: str, max_pixels: Optional[int] = None) -> tuple[torch.Tensor, str]:
    """(the image at `path` as float32 [3,H,W] in [0,1], content_digest of its bytes).

    Raises for anything that is not a decodable regular file: a FIFO or device (opened
    non-blocking, so a FIFO cannot hang a worker), a symlink loop, a truncated file, an image of
    more than `max_pixels` pixels (checked from the header, before decoding).
    """
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            kind = "a FIFO" if stat.S_ISFIFO(mode) else "a folder" if stat.S_ISDIR(mode) else "a device or socket"
            raise ValueError(f"not a regular file: it is {kind}")
        with os.fdopen(os.dup(fd), "rb") as f:
            data = f.read()
    finally:
        os.close(fd)
    from PIL import UnidentifiedImageError

    try:
        image = decode_image(io.BytesIO(data), max_pixels)
    except UnidentifiedImageError:  # PIL names the BytesIO object; name the file (as it does for paths)
        raise UnidentifiedImageError(f"cannot identify image file {path!r}") from None
    return image, content_digest(data)


def decode_image(path, max_pixels: Optional[int] = None) -> torch.Tensor:
    """The image at `path` (a path or a binary file object) as float32 [3,H,W] in [0,1] (raises
    on unreadable or truncated files, and on images of more than `max_pixels` pixels).

    Grayscale, palette (with transparency too), RGBA/LA (alpha dropped), CMYK and 16-bit images
    become RGB; EXIF orientation is applied; a multi-frame file gives its first frame.
    """
    from PIL import Image, ImageOps

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our limit is checked below
            im = Image.open(path)
    except Image.DecompressionBombError as err:  # PIL's own limit, past twice its warning size
        raise ValueError(f"the image is over the limit of {max_pixels:,} pixels (--max-pixels); PIL: {err}"
                         if max_pixels is not None else str(err)) from None
    with im:
        width, height = im.size
        if max_pixels is not None and width * height > max_pixels:
            raise ValueError(f"the image is {width}×{height} = {width * height:,} pixels, over the limit of "
                             f"{max_pixels:,} (--max-pixels)")
        im.load()  # decodes everything now: a truncated file raises OSError here
        ImageOps.exif_transpose(im, in_place=True)
        if im.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):  # 16/32-bit integer grayscale
            gray = np.asarray(im, dtype=np.float32) / 65535.0
            arr = np.repeat(np.clip(gray, 0, 1)[..., None], 3, axis=2)
        elif im.mode == "F":
            arr = np.repeat(np.clip(np.asarray(im, dtype=np.float32), 0, 1)[..., None], 3, axis=2)
        else:
            if im.mode == "P" and "transparency" in im.info:
                im = im.convert("RGBA")  # what PIL asks for before dropping palette transparency
            arr = np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0
    if not np.isfinite(arr).all():  # a float TIFF can hold them; the image's failure, not the run's
        raise ValueError("the image holds NaN or Inf pixel values")
    return torch.from_numpy(np.ascontiguousarray(arr)).permute(2, 0, 1).contiguous()


def failure_reason(err: BaseException) -> str:
    if isinstance(err, FileNotFoundError):
        return "file not found"
    return f"{type(err).__name__}: {err}"


class ImageBatches(torch.utils.data.IterableDataset):
    """Decoded images grouped into batches of equal size, split across DataLoader workers.

    Yields dicts: {"paths": [n], "images": float32 [n,3,H,W], "digests": [n]} or
    {"failed": [(path, reason)]}. A worker holds at most 2·batch_size decoded images; past that it
    sends its largest group early. max_pixels: larger images fail (read_image).
    """

    def __init__(self, paths: Sequence[str], batch_size: int, max_pixels: Optional[int] = DEFAULT_MAX_PIXELS) -> None:
        # One byte buffer + offsets instead of a list of str: worker processes read it without
        # touching Python refcounts, so fork's copy-on-write pages stay shared.
        encoded = [os.fsencode(p) for p in paths]
        self._offsets = np.cumsum([0] + [len(e) for e in encoded], dtype=np.int64)
        self._blob = np.frombuffer(b"".join(encoded), dtype=np.uint8) if encoded else np.zeros(0, np.uint8)
        self.batch_size = batch_size
        self.max_pixels = max_pixels

    def __len__(self) -> int:
        return len(self._offsets) - 1

    def path(self, i: int) -> str:
        return os.fsdecode(self._blob[self._offsets[i]:self._offsets[i + 1]].tobytes())

    def __iter__(self) -> Iterator[dict]:
        info = torch.utils.data.get_worker_info()
        first, step = (info.id, info.num_workers) if info is not None else (0, 1)
        groups: dict[tuple, list] = {}
        held = 0
        for i in range(first, len(self), step):
            path = self.path(i)
            try:
                image, digest = read_image(path, self.max_pixels)
            except Exception as err:  # any decoder error is the file's fault, not the run's
                yield {"failed": [(path, failure_reason(err))]}
                continue
            group = groups.setdefault(tuple(image.shape[-2:]), [])
            group.append((path, image, digest))
            held += 1
            if len(group) == self.batch_size or held > 2 * self.batch_size:
                size = max(groups, key=lambda s: len(groups[s]))
                ready = groups.pop(size)
                held -= len(ready)
                yield _stack(ready)
        for group in groups.values():
            yield _stack(group)


def stack_images(images: Sequence[torch.Tensor]) -> torch.Tensor:
    """Equal-size float [3,H,W] images → contiguous float [n,3,H,W].

    Not channels-last, although it made the explainer call ~20 % faster on CPU (its per-pixel
    argmax over classes is faster on channels-last logits): the fused kernels copy non-contiguous
    inputs into temporaries that can be freed before the kernel reads them (reported, kernels.py).
    """
    return torch.stack(list(images)).contiguous()


def _stack(group: list) -> dict:
    return {"paths": [p for p, _, _ in group], "images": stack_images([im for _, im, _ in group]),
            "digests": [d for _, _, d in group]}


def worker_init(_worker_id: int, close_fds: Sequence[int] = ()) -> None:
    """A decode worker's setup: one torch thread, no inherited lock, and no life after its parent.

    close_fds: the parent's descriptors the worker must not keep, the store's lock above all: a
    forked worker shares the lock's open file, and one that outlived a killed parent kept every
    rerun out ("another run is writing"). PR_SET_PDEATHSIG kills the worker with its parent;
    SIGTERM to the process group is left to the parent, which stops the workers itself.
    """
    import signal

    for fd in close_fds:
        try:
            os.close(fd)
        except OSError:
            pass
    _die_with_parent()
    _quiet_when_the_parent_hangs_up()
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    torch.set_num_threads(1)  # decoding is PIL's work; leave the cores to the main process
    _fixed_mmap_threshold()


def _die_with_parent() -> None:
    """Linux: SIGKILL this process when its parent dies (no-op elsewhere)."""
    try:
        import ctypes

        parent = os.getppid()
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, 9, 0, 0, 0)  # PR_SET_PDEATHSIG, SIGKILL
        if os.getppid() != parent:  # the parent died before prctl
            os._exit(1)
    except (OSError, AttributeError):
        pass


def _quiet_when_the_parent_hangs_up() -> None:
    """No traceback from a worker for a connection its parent dropped.

    A batch of tensors leaves a worker through multiprocessing's handle-sharing thread; when the
    parent stops mid-transfer (Ctrl-C, SIGTERM: the run stops cleanly and says so), that thread
    reports the dropped connection through sys.excepthook, half-printed before the worker is
    killed with its parent. Connection errors are the only ones silenced.
    """
    report = sys.excepthook

    def hook(kind, value, tb):
        if not issubclass(kind, (EOFError, ConnectionError)):
            report(kind, value, tb)

    sys.excepthook = hook


def _fixed_mmap_threshold(nbytes: int = 256 * 1024) -> None:
    """glibc: serve allocations ≥ nbytes with mmap, returned to the OS on free.

    glibc otherwise raises its mmap threshold after the first large free, and the decoded images
    (hundreds of KB each, many sizes) then fragment the heap: a worker's RSS crept up by ~150 MB
    over the first few thousand images. Decoding workers only; no-op off glibc.
    """
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, nbytes)  # M_MMAP_THRESHOLD
    except (OSError, AttributeError):
        pass
