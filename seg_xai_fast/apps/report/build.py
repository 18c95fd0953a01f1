"""Build the static report of an output folder: HTML pages, thumbnails and data scripts.

Layout of the report folder DEST (default OUT_DIR/report)::

    index.html                  the first section: the thumbnail grid (explain), else evaluate or bench
    image.html#<i>              the i-th image (0-based, in input-path order)
    failures.html  evaluate.html  bench.html
    static/report.js  static/report.css
    data/run.js                 the run: header, counts, page sizes, colormaps
    data/pages/<n>.js           grid page n (1-based): the entries of page_size images
    data/img/<ab>/<key>.js      one image: classes, its compressed float16 maps, input URL, overlays
    data/failures/<n>.js        failures page n
    thumbs/<ab>/<key>.jpg       grid thumbnails
    view/<ab>/<key>.png         copies of inputs a browser cannot show (TIFF, PPM...)

Why the data files are scripts: a page opened from file:// cannot fetch() or XHR local files in
Chromium, but <script src> can load them. Each data file assigns one entry of `window.SXD`.

Why the image page addresses images by position and loads the grid page that holds it: the
per-image files then depend on nothing but their own image, so a larger store changes only the
small page files, and no page ever loads the list of every image.

The maps go to the browser as stored (float16 at the target layer's resolution), as two byte
planes (all low bytes, then all high bytes), zlib-compressed (a fifth of the raw size for the demo
model) and base64-encoded; report.js expands them exactly as store.expand_maps does, so the value
under the cursor is what `load_explanation` returns.
"""
from __future__ import annotations

import base64
import contextlib
import csv
import datetime
import io
import json
import math
import multiprocessing
import os
import re
import sys
import time
import zipfile
import zlib
from pathlib import Path
from typing import Iterable, Optional, Sequence
from urllib.parse import quote

import numpy as np

from ...engine.methods import get_method
from ...kernels.colormaps import COLORMAP_NAMES, colormap_lut
from ..batch.store import FAILURES, MANIFEST, read_manifest
from . import html

STATIC = Path(__file__).resolve().parent / "static"
PAGE_SIZE = 100  # thumbnails per grid page
FAILURES_PAGE_SIZE = 500  # rows per failures page
THUMB_SIZE = 160  # longest side of a thumbnail, pixels
# Suffixes Chromium, Firefox and Safari all display in an <img>; other inputs get a PNG copy.
WEB_SUFFIXES = frozenset((".png", ".apng", ".jpg", ".jpeg", ".jfif", ".gif", ".bmp", ".webp", ".avif", ".ico"))
# Below this many images the pool's start-up costs more than it saves.
POOL_MIN_IMAGES = 64


def build_report(
    out_dir: os.PathLike | str,
    dest: Optional[os.PathLike | str] = None,
    page_size: int = PAGE_SIZE,
    workers: Optional[int] = None,
    progress: bool = False,
) -> Path:
    """Write the report of `out_dir` into `dest` (default out_dir/report) → the path of index.html.

    out_dir: a folder holding the output of `seg-xai explain` (manifest.jsonl), of `seg-xai
    evaluate --out` (metrics.json) and/or `seg-xai bench` results (bench.json or bench.txt).
    workers: processes making thumbnails and data files (default: the CPUs, at most 8).
    """
    out_dir = Path(out_dir)
    if not out_dir.is_dir():
        raise FileNotFoundError(f"out_dir must be an existing folder, got {str(out_dir)!r}")
    if not isinstance(page_size, int) or isinstance(page_size, bool) or page_size < 1:
        raise ValueError(f"page_size must be a positive int, got {page_size!r}")
    if workers is not None and (not isinstance(workers, int) or workers < 0):
        raise ValueError(f"workers must be None or an int >= 0, got {workers!r}")
    dest = out_dir / "report" if dest is None else Path(dest)
    sections = []  # (kind, source path), the first becomes index.html
    if (out_dir / MANIFEST).is_file():
        sections.append(("explain", out_dir / MANIFEST))
    if (out_dir / "metrics.json").is_file():
        sections.append(("evaluate", out_dir / "metrics.json"))
    bench = next((out_dir / n for n in ("bench.json", "bench.txt") if (out_dir / n).is_file()), None)
    if bench is not None:
        sections.append(("bench", bench))
    scene_dirs = scene_folders(out_dir)
    if scene_dirs:
        sections.append(("scenes", out_dir))
    if not sections:
        raise ValueError(
            f"out_dir {str(out_dir)!r} holds no report source: expected {MANIFEST} (seg-xai explain), "
            "metrics.json (seg-xai evaluate --out), bench.json / bench.txt (seg-xai bench) or the folders of "
            "volumes and scenes (seg-xai explain of NIfTI / GeoTIFF / --sliding-window)")
    dest.mkdir(parents=True, exist_ok=True)
    files = {"explain": "index.html", "failures": "failures.html", "evaluate": "evaluate.html",
             "bench": "bench.html", "scenes": "scenes.html"}
    files[sections[0][0]] = "index.html"
    nav = []  # (file, title, badge) of the links at the top of every page
    explain = None
    if sections[0][0] == "explain":
        explain = _ExplainData(out_dir, dest, page_size, workers, progress)
        nav += [(files["explain"], "Images", f"{explain.count:,}"),
                (files["failures"], "Failures", f"{explain.failures:,}")]
    nav += [(files[kind], {"evaluate": "Evaluation", "bench": "Benchmark", "scenes": "Volumes and scenes"}[kind],
             f"{len(scene_dirs):,}" if kind == "scenes" else "") for kind, _ in sections if kind != "explain"]
    copy_static(dest)
    for kind, source in sections:
        if kind == "explain":
            write_text(dest / "index.html", html.explain_page("index", explain.summary, nav, files["explain"]))
            write_text(dest / "image.html", html.explain_page("image", explain.summary, nav, files["explain"]))
            write_text(dest / files["failures"], html.explain_page("failures", explain.summary, nav, files["explain"]))
        elif kind == "scenes":
            write_text(dest / files[kind], html.scenes_page(scene_dirs, dest, nav, files[kind]))
        elif kind == "evaluate":
            metrics = html.read_json(source)
            write_text(dest / files[kind], html.evaluate_page(metrics, source.parent, dest, nav, files[kind]))
        else:
            write_text(dest / files[kind], html.bench_page(source, dest, nav, files[kind]))
    return dest / "index.html"


def scene_folders(out_dir: Path) -> list:
    """The folders `seg-xai explain` wrote for volumes and scenes (apps/scenes.py): those holding
    slice views or overlays beside their maps."""
    return sorted(d for d in out_dir.iterdir() if d.is_dir() and d.name != "report"
                  and (any(d.glob("slices_*.png")) or any(d.glob("overlay_*.png")))
                  and any(d.glob("map*")))


# --------------------------------------------------------------------------- the explain section


class _ExplainData:
    """Reads the store, writes data/, thumbs/ and view/ of the explain section; `summary` feeds the pages."""

    def __init__(self, out_dir: Path, dest: Path, page_size: int, workers: Optional[int], progress: bool) -> None:
        header, entries = read_manifest(out_dir)
        if header is None:
            raise ValueError(f"{str(out_dir / MANIFEST)!r} has no run header on its first line: "
                             "not the output of seg-xai explain")
        latest = {}
        for e in entries:  # an input explained twice (its maps had gone missing): the last entry is current
            latest[e["key"]] = (e["input"], (e["maps"], e.get("member")), tuple(e.get("overlays", ())))
        todo = sorted(((inp, key, maps, ov) for key, (inp, maps, ov) in latest.items()), key=lambda t: t[0])
        del latest
        root = _common_folder([t[0] for t in todo])
        agnostic = not _class_specific(header.get("method"))
        store_url = html.rel_url(out_dir, dest) + "/"  # the store's files, seen from the report
        scores = image_scores(out_dir)
        jobs = [(str(out_dir), str(dest), store_url, inp, key, maps, ov, agnostic, scores.get(inp))
                for inp, key, maps, ov in todo]
        del todo
        records, unreadable = [], []
        for r in _run_jobs(jobs, workers, progress):
            if r is not None and "error" in r:
                unreadable.append(r)
            elif r is not None:
                records.append(r)
        if unreadable:  # the store writes atomically, so this is damage from outside: say so, go on
            files = list(dict.fromkeys(f"{r['maps']}: {r['error']}" for r in unreadable))
            print(f"seg-xai report: the maps of {len(unreadable)} images could not be read and are left out, e.g. "
                  + "; ".join(files[:3]), file=sys.stderr)
        self.count, self.unreadable = len(records), len(unreadable)
        for r in records:
            r["name"] = os.path.relpath(r.pop("input"), root) if root else r.pop("input")
        pages = max(1, -(-self.count // page_size))
        for n in range(pages):
            rows = records[n * page_size:(n + 1) * page_size]
            write_text(dest / f"data/pages/{n + 1}.js", jsonp(f"pages/{n + 1}", rows))
        failures_csv = out_dir / FAILURES
        self.failures, failure_pages = write_failures(failures_csv, dest)
        manifest_time = (out_dir / MANIFEST).stat().st_mtime
        run = {
            "header": header, "count": self.count, "page_size": page_size, "pages": pages,
            "failures": self.failures, "failures_page_size": FAILURES_PAGE_SIZE, "failure_pages": failure_pages,
            "failures_csv": html.rel_url(failures_csv, dest) if failures_csv.is_file() else None,
            "root": root, "class_agnostic": agnostic,
            "colormaps": {name: bytes(colormap_lut(name).flatten().tolist()).hex() for name in COLORMAP_NAMES},
        }
        write_text(dest / "data/run.js", jsonp("run", run))
        self.summary = {
            "header": header, "count": self.count, "failures": self.failures, "root": root,
            "out_dir": str(out_dir.resolve()),
            "manifest_written": _iso(manifest_time), "report_built": _iso(time.time()),
        }


def image_scores(out_dir: Path) -> dict:
    """{resolved image path: (metric names, [(method, class, values)])} from the rows.csv that
    `seg-xai evaluate --out` wrote into the same folder ({} without one, or one without paths).
    Tuples, not dicts: a dataset's rows are held until the pages are written."""
    path = out_dir / "rows.csv"
    if not path.is_file():
        return {}
    scores: dict = {}
    resolved: dict = {}  # an image's rows are consecutive: one realpath per image
    with open(path, newline="", encoding="utf-8", errors="surrogateescape") as f:
        reader = csv.reader(f)
        header = next(reader, [])
        if header[:4] != ["image", "path", "method", "class"]:
            return {}  # written before rows.csv named the files
        names = tuple(header[4:])
        for row in reader:
            image = resolved.get(row[1])
            if image is None:
                resolved.clear()
                image = resolved[row[1]] = os.path.realpath(row[1])
            scores.setdefault(image, (names, []))[1].append((row[2], row[3], tuple(_finite(v) for v in row[4:])))
    return scores


def score_rows(scores: Optional[tuple]) -> Optional[list]:
    """image_scores' entry of one image → [{"method", "class", "values": {metric: value}}] (None: none)."""
    if scores is None:
        return None
    names, rows = scores
    return [{"method": m, "class": c, "values": dict(zip(names, values))} for m, c, values in rows]


def _finite(text: str) -> Optional[float]:
    """A CSV cell as a float, None when empty or not finite (JSON has no NaN)."""
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _class_specific(method) -> bool:
    """False for a class-agnostic method (every class gets the same map, so which classes the
    model predicted cannot be read from the maps), True for the others (the spec says which)."""
    try:
        return get_method(method).class_specific
    except ValueError:  # a method this process does not know (a user's, not registered here): make no claim
        return False


def _run_jobs(jobs: list, workers: Optional[int], progress: bool) -> Iterable[Optional[dict]]:
    from tqdm import tqdm

    if workers is None:
        workers = min(os.cpu_count() or 1, 8)
    bar = tqdm(total=len(jobs), unit="img", desc="report", file=sys.stderr, disable=not progress,
               dynamic_ncols=True, mininterval=0.5)
    with bar:
        if workers <= 1 or len(jobs) < POOL_MIN_IMAGES:
            for job in jobs:
                yield image_files(job)
                bar.update(1)
            return
        # fork: the workers inherit the imported modules instead of importing torch again (seconds each).
        method = "fork" if "fork" in multiprocessing.get_all_start_methods() and sys.platform != "darwin" else None
        with multiprocessing.get_context(method).Pool(workers) as pool:
            for record in pool.imap(image_files, jobs, chunksize=32):
                yield record
                bar.update(1)


def image_files(job: tuple) -> Optional[dict]:
    """Write one image's data script, thumbnail (and view copy) → its grid entry (None: no maps file).

    job: (out_dir, dest, URL of out_dir from dest, input path, key, (maps path relative to out_dir,
    the image's member in it or None for a one-image file), overlay paths, class_agnostic, the
    image's rows of `seg-xai evaluate` in the same folder or None).
    """
    out_dir, dest, store_url, input_path, key, (maps_rel, member), overlays, agnostic, scores = job
    out_dir, dest = Path(out_dir), Path(dest)
    try:
        arrays = read_npz(out_dir / maps_rel, ("maps", "classes", "map_size", "image_size"))
        maps = np.asarray(arrays["maps"], dtype="<f2")  # float16 [n,K,h,w] (a batch's file) or [K,h,w]
        if member is not None:
            if not (isinstance(member, int) and maps.ndim == 4 and 0 <= member < maps.shape[0]):
                raise ValueError(f"member {member!r} is not in maps of shape {maps.shape}")
            maps = maps[member]
        classes = [int(c) for c in arrays["classes"]]
        map_size = [int(s) for s in arrays["map_size"]]
        image_size = [int(s) for s in arrays["image_size"]]
        if maps.ndim != 3 or maps.shape[0] != len(classes) or len(map_size) != 2 or len(image_size) != 2:
            raise ValueError(f"maps {maps.shape} do not match classes {classes}")
    except FileNotFoundError:
        return None  # the manifest names it but the file is gone: not explained (a rerun redoes it)
    except (OSError, KeyError, ValueError, zipfile.BadZipFile) as err:
        return {"maps": maps_rel, "error": f"{type(err).__name__}: {err}"}
    # Gradient methods give an all-zero map to a class predicted nowhere in the image. On the
    # float16 bits: 1..0x7fff are the positive numbers (numpy's float16 arithmetic is slow).
    bits = maps.view(np.uint16).reshape(len(classes), -1)
    positive = ((bits - np.uint16(1)) < np.uint16(0x7fff)).any(axis=1)
    predicted = None if agnostic else [c for c, p in zip(classes, positive) if p]
    shard = key[:2]
    url = _file_url(input_path)
    overlays = [o for o in overlays if (out_dir / o).is_file()]
    web = Path(input_path).suffix.lower() in WEB_SUFFIXES
    if web and url and max(image_size) <= 2 * THUMB_SIZE and os.path.isfile(input_path):
        view = thumb = url  # small enough to be its own thumbnail: nothing to decode
    else:
        picture = _display_image(input_path, thumbnail_only=web)
        view = thumb = None
        if picture is not None:
            view = url
            if not web or url is None:  # a format browsers can't show (TIFF, PPM...): a PNG copy
                view = f"view/{shard}/{key}.png"
                write_bytes(dest / view, _encode(picture, "PNG"))
        elif overlays:  # the input is gone or unreadable: thumbnail its first overlay
            picture = _display_image(str(out_dir / overlays[0]))
        if picture is not None:
            thumb = f"thumbs/{shard}/{key}.jpg"
            picture.thumbnail((THUMB_SIZE, THUMB_SIZE), reducing_gap=1.0)  # reduce, then resample: 2x faster
            write_bytes(dest / thumb, _encode(picture, "JPEG"))
    record = {
        "key": key, "input": input_path, "url": view,
        "size": image_size, "map_size": map_size, "shape": list(maps.shape), "classes": classes,
        "predicted": predicted, "maps_file": store_url + quote(maps_rel),
        "maps_member": member,  # the image's place in its batch's maps file (None: a one-image file)
        "metrics": score_rows(scores),  # [{"method", "class", "values": {metric: value}}] from seg-xai evaluate
        "overlays": [store_url + quote(o) for o in overlays],
        # Byte planes (every low byte, then every high byte): zlib compresses them smaller and faster.
        "maps": base64.b64encode(zlib.compress(np.ascontiguousarray(maps.view(np.uint8).reshape(-1, 2).T), 1)
                                 ).decode("ascii"),
    }
    write_text(dest / f"data/img/{shard}/{key}.js", jsonp(f"img/{key}", record))
    return {"key": key, "input": input_path, "size": image_size, "predicted": predicted,
            "classes": classes, "thumb": thumb}


def read_npz(path: Path, names: Sequence[str]) -> dict:
    """Arrays `names` of a .npz file, as np.load reads them, in a third of the time: the file in one
    read, and the .npy headers of plain arrays parsed without ast.literal_eval (the cost of np.load
    on a small store file). Anything else goes through numpy."""
    data = _read_bytes(path)
    out = {}
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        for name in names:
            buf = archive.read(name + ".npy")
            out[name] = _npy(buf)
            if out[name] is None:
                out[name] = np.lib.format.read_array(io.BytesIO(buf), allow_pickle=False)
    return out


_NPY_HEADER = re.compile(rb"\{'descr': '([<>|][a-z]\d+)', 'fortran_order': False, 'shape': \(([\d, ]*)\), \}")


def _npy(buf: bytes) -> Optional[np.ndarray]:
    """A C-ordered array of a plain dtype from .npy bytes (format 1.0 or 2.0); None if it is another kind."""
    if buf[:6] != b"\x93NUMPY" or buf[6] not in (1, 2):
        return None
    start = 10 if buf[6] == 1 else 12
    length = int.from_bytes(buf[8:start], "little")
    match = _NPY_HEADER.match(buf, start, start + length)
    if match is None:
        return None
    shape = tuple(int(n) for n in match.group(2).split(b",") if n.strip())
    return np.frombuffer(buf, dtype=match.group(1).decode(), count=math.prod(shape), offset=start + length).reshape(shape)


def _display_image(path: str, thumbnail_only: bool = False):
    """The image at `path` as an 8-bit RGB PIL image, oriented as `seg-xai explain` saw it; None if
    unreadable. thumbnail_only: a JPEG may be decoded at a fraction of its size (at least 2x THUMB_SIZE)."""
    from PIL import Image, ImageOps

    try:
        with Image.open(path) as im:
            if thumbnail_only:
                im.draft("RGB", (2 * THUMB_SIZE, 2 * THUMB_SIZE))
            im.load()
            ImageOps.exif_transpose(im, in_place=True)
            if im.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):  # 16/32-bit grayscale → 8 bits
                gray = np.clip(np.asarray(im, dtype=np.float32) / 257.0 + 0.5, 0, 255).astype(np.uint8)
                return Image.fromarray(gray).convert("RGB")
            if im.mode == "F":
                gray = np.clip(np.asarray(im, dtype=np.float32) * 255.0 + 0.5, 0, 255).astype(np.uint8)
                return Image.fromarray(gray).convert("RGB")
            if im.mode == "P" and "transparency" in im.info:
                im = im.convert("RGBA")
            return im.copy() if im.mode == "RGB" else im.convert("RGB")  # outlives the closed file
    except (OSError, ValueError, Image.DecompressionBombError):
        return None


def _encode(picture, fmt: str) -> bytes:
    buf = io.BytesIO()
    if fmt == "JPEG":
        picture.save(buf, format="JPEG", quality=85)
    else:
        picture.save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def write_failures(failures_csv: Path, dest: Path) -> tuple[int, int]:
    """data/failures/<n>.js from failures.csv (path,reason), streamed → (rows, pages)."""
    count, pages, rows = 0, 0, []
    if failures_csv.is_file():
        with open(failures_csv, newline="", encoding="utf-8", errors="surrogateescape") as f:
            reader = csv.reader(f)
            next(reader, None)  # path,reason
            for row in reader:
                if not row:
                    continue
                rows.append([row[0], row[1] if len(row) > 1 else ""])
                count += 1
                if len(rows) == FAILURES_PAGE_SIZE:
                    pages += 1
                    write_text(dest / f"data/failures/{pages}.js", jsonp(f"failures/{pages}", rows))
                    rows = []
    if rows or pages == 0:
        pages += 1
        write_text(dest / f"data/failures/{pages}.js", jsonp(f"failures/{pages}", rows))
    return count, pages


# --------------------------------------------------------------------------- files


def jsonp(name: str, value) -> str:
    """A data script: assigns window.SXD[name] (loaded with <script src>, which file:// pages allow)."""
    return f"(window.SXD=window.SXD||{{}})[{json.dumps(name)}]={json.dumps(value, separators=(',', ':'))};\n"


def write_text(path: Path, text: str) -> None:
    write_bytes(path, text.encode("utf-8", "surrogateescape"))


def write_bytes(path: Path, data: bytes) -> None:
    """Replace `path` atomically: a temp file in its folder, then os.replace (a browser reading the
    report while it is rebuilt sees the old or the new file, never half of one).

    No fsync: the report is derived data that a rerun rebuilds, and a flush per file (4.6 ms on
    this project's test machine) would add minutes to the 20,000 files of a 10,000-image report.
    The temp name holds the process id: one process writes one file at a time.
    """
    tmp = path.parent / f".{path.name}.{os.getpid()}.tmp"
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_BINARY", 0)
    try:
        fd = os.open(tmp, flags, 0o666)  # the umask applies, as for any new file
    except FileNotFoundError:  # the first file of its folder (one mkdir per folder, not per file)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(tmp, flags, 0o666)
    try:
        try:  # os-level I/O: a third of the system calls of open() (no fstat, ioctl, lseek)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _read_bytes(path: Path) -> bytes:
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_BINARY", 0))
    try:
        chunks = []
        while True:
            chunk = os.read(fd, 1 << 20)
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)
    finally:
        os.close(fd)


def copy_static(dest: Path) -> None:
    for src in sorted(STATIC.iterdir()):
        if src.is_file():
            write_bytes(dest / "static" / src.name, src.read_bytes())


def _file_url(path: str) -> Optional[str]:
    try:
        return Path(path).as_uri()
    except (ValueError, UnicodeEncodeError):  # a relative path, or a name that is not valid UTF-8
        return None


def _common_folder(paths: list) -> str:
    """The deepest folder holding every path (names in the grid are shown relative to it)."""
    if not paths:
        return ""
    try:
        return os.path.commonpath([os.path.dirname(p) for p in paths])
    except ValueError:  # relative and absolute mixed, or different drives
        return ""


def _iso(seconds: float) -> str:
    return datetime.datetime.fromtimestamp(seconds).astimezone().strftime("%Y-%m-%dT%H:%M:%S%z")
