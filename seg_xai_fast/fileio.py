"""Writing files safely: the package's one atomic write.

Every output file goes through `atomic_write` (or `publish` for a file another library wrote):
it is written to a temp file in the same folder, fsync'ed, given the permissions the umask
allows (mkstemp makes 0600 files, which shared folders and web servers cannot read), and renamed
over the target, so readers see the old file or the complete new one, never a partial one.

The rename replaces only what the user named: a regular file or nothing. A symlink, FIFO,
device or folder at the target is refused with an OSError naming it (os.replace would destroy
the device node or the link, and following the link would write somewhere the user never named).
"""
from __future__ import annotations

import contextlib
import os
import stat
import tempfile
import threading
from pathlib import Path
from typing import BinaryIO, Callable, Optional, Union

PathLike = Union[str, os.PathLike]


_UMASK_LOCK = threading.Lock()


def file_mode() -> int:
    """The mode a new file gets from open(): 0o666 minus the process's umask."""
    return 0o666 & ~_umask()


def _umask() -> int:
    # Linux reports it without changing it; os.umask can only read it by setting it, which would
    # race with the writer threads creating files meanwhile.
    with contextlib.suppress(OSError, ValueError):
        with open("/proc/self/status", "rb") as f:
            for line in f:
                if line.startswith(b"Umask:"):
                    return int(line.split()[1], 8)
    with _UMASK_LOCK:
        umask = os.umask(0o077)
        os.umask(umask)
    return umask


def check_target(path: PathLike) -> None:
    """OSError unless `path` is absent or a regular file (not a symlink, FIFO, device or folder)."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if stat.S_ISREG(st.st_mode):
        return
    kind = ("a symlink" if stat.S_ISLNK(st.st_mode) else "a folder" if stat.S_ISDIR(st.st_mode)
            else "a FIFO" if stat.S_ISFIFO(st.st_mode) else "a device" if stat.S_ISCHR(st.st_mode) or
            stat.S_ISBLK(st.st_mode) else "a socket" if stat.S_ISSOCK(st.st_mode) else "not a regular file")
    raise OSError(f"refusing to replace {str(path)!r}: it is {kind}, not a regular file; remove it or name "
                  "another output path")


def publish(tmp: PathLike, path: PathLike) -> Path:
    """Rename the finished temp file `tmp` over `path` (checked with check_target), with the
    umask's permissions. `tmp` must be on `path`'s filesystem (e.g. from temp_path)."""
    check_target(path)
    os.chmod(tmp, file_mode())
    os.replace(tmp, path)
    return Path(path)


def temp_path(path: PathLike, tmp_dir: Optional[PathLike] = None, suffix: str = ".tmp") -> str:
    """A new empty file to write `path` through: in `tmp_dir` (same filesystem as `path`), else
    hidden beside `path` (its folder created when missing)."""
    fd, tmp = _mkstemp(Path(path), tmp_dir, suffix)
    os.close(fd)
    return tmp


def _mkstemp(path: Path, tmp_dir: Optional[PathLike], suffix: str = ".tmp") -> tuple[int, str]:
    if tmp_dir is None:
        path.parent.mkdir(parents=True, exist_ok=True)
        return tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix)
    return tempfile.mkstemp(dir=tmp_dir, prefix=f"{path.name}.", suffix=suffix)


def atomic_write(path: PathLike, write: Callable[[BinaryIO], None], tmp_dir: Optional[PathLike] = None,
                 *, fsync: bool = True) -> Path:
    """Write `path` atomically: write(f) into a temp file (in `tmp_dir`, else beside `path`),
    fsync, then publish. Refuses a target that is not a regular file before writing anything."""
    check_target(path)
    fd, tmp = _mkstemp(Path(path), tmp_dir)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            if fsync:
                os.fsync(f.fileno())
        return publish(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_text(path: PathLike, text: str, tmp_dir: Optional[PathLike] = None) -> Path:
    """atomic_write of `text` as UTF-8 (newlines as given)."""
    data = text.encode("utf-8")
    return atomic_write(path, lambda f: f.write(data), tmp_dir)


def discard(tmp: PathLike) -> None:
    """Remove a temp file that will not be published (no error if it is gone)."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp)
