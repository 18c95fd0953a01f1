"""The report's HTML: page skeletons, the run header, and the evaluate and bench pages (rendered
here, they are small), with their charts as inline SVG. The explain pages are filled by
static/report.js from the data scripts."""
from __future__ import annotations

import datetime
import json
import math
import os
import re
from html import escape
from pathlib import Path
from typing import Optional, Sequence

# Line colours of methods in the charts.
PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2")


def page(title: str, nav: Sequence[tuple], current: str, body: str, kind: str, scripts: Sequence[str] = ()) -> str:
    """A whole page. nav: (file, title, badge) links; current: this page's file; kind: body's data-page."""
    links = "".join(
        f'<a href="{escape(f)}"{_ON if f == current else ""}>{escape(t)}{_badge(b)}</a>' for f, t, b in nav)
    tags = "".join(f'<script src="{escape(s)}"></script>' for s in scripts)
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f'<title>{escape(title)} · seg-xai report</title><link rel="stylesheet" href="static/report.css"></head>\n'
        f'<body data-page="{kind}"><header class="top"><span class="brand">seg-xai report</span>'
        f'<nav>{links}</nav></header>\n<main>{body}</main>\n{tags}</body></html>\n'
    )


_ON = ' class="on"'


def _badge(text: str) -> str:
    return f" <small>{escape(text)}</small>" if text else ""


def kv_table(rows: Sequence[tuple], cls: str = "kv") -> str:
    cells = "".join(f"<tr><th>{escape(str(k))}</th><td>{v}</td></tr>" for k, v in rows)
    return f'<table class="{cls}">{cells}</table>'


# --------------------------------------------------------------------------- explain pages

# Header fields in display order (others follow as they come); the values are escaped text.
_HEADER_ORDER = ("model", "model_digest", "layer", "method", "runtime", "classes", "map_resolution", "save",
                 "colormap", "alpha", "version", "created")


def run_rows(summary: dict) -> list:
    """The run header and its timings as (name, HTML) rows."""
    header = summary["header"]
    names = header.get("class_names") or []
    rows = []
    for key in _HEADER_ORDER + tuple(k for k in header if k not in _HEADER_ORDER):
        if key in ("type", "class_names", "format") or key not in header:
            continue
        value = header[key]
        if key == "classes":
            value = "all" if value is None else ", ".join(_class_name(c, names) for c in value)
            if names:
                value += f" ({len(names)} classes: {', '.join(names)})"
        elif isinstance(value, (list, dict)):
            value = json.dumps(value)
        rows.append((key.replace("_", " "), escape(str(value))))
    rows.append(("last image recorded", escape(summary["manifest_written"])))
    span = _span(header.get("created"), summary["manifest_written"])
    if span is not None:
        rows.append(("created → last image", escape(span)))
    rows += [("images", f"{summary['count']:,}"), ("failures", f"{summary['failures']:,}"),
             ("output folder", escape(summary["out_dir"])), ("inputs under", escape(summary["root"] or "—")),
             ("report built", escape(summary["report_built"]))]
    return rows


def run_line(summary: dict) -> str:
    """The run in one line: method, model, layer, runtime, counts, when and how long."""
    h = summary["header"]
    line = (f"{h.get('method')} on {h.get('model')} · layer {h.get('layer')} · runtime {h.get('runtime', '?')} · "
            f"{summary['count']:,} images, {summary['failures']:,} failures · created {h.get('created', '?')}")
    span = _span(h.get("created"), summary["manifest_written"], note=False)
    return line + (f", {span} to the last image" if span else "")


def _class_name(c, names) -> str:
    return f"{c} {names[c]}" if isinstance(c, int) and 0 <= c < len(names) else str(c)


def _span(start: Optional[str], end: str, note: bool = True) -> Optional[str]:
    """'1 h 02 min 03 s' between two ISO times (the wall time of a run that was never resumed)."""
    try:
        a = datetime.datetime.strptime(start, "%Y-%m-%dT%H:%M:%S%z")
        b = datetime.datetime.strptime(end, "%Y-%m-%dT%H:%M:%S%z")
    except (TypeError, ValueError):
        return None
    s = max(0, int((b - a).total_seconds()))
    return (f"{s // 3600} h {s % 3600 // 60:02d} min {s % 60:02d} s" if s >= 3600 else
            f"{s // 60} min {s % 60:02d} s" if s >= 60 else f"{s} s") + (" (spans resumes and pauses)" if note else "")


def explain_page(kind: str, summary: dict, nav: Sequence[tuple], current: str) -> str:
    """index (the grid), image (one image) or failures; report.js fills the parts marked by id.
    current: the file of the grid page (index.html)."""
    run = f'<details class="run"><summary>Run: {escape(run_line(summary))}</summary>{kv_table(run_rows(summary))}</details>'
    if kind == "index":
        title, body = "Images", f'{run}<div class="pager" id="pager"></div><div class="grid" id="grid"></div>' \
                                f'<div class="pager" id="pager-bottom"></div>'
    elif kind == "image":
        title, body = "Image", (
            '<div class="crumbs" id="crumbs"></div><div class="viewer">'
            '<div class="stage" id="stage"><img id="photo" alt=""><canvas id="heat"></canvas></div>'
            '<aside class="panel" id="panel">'
            '<label>class <select id="class"></select></label>'
            '<label>opacity <input id="opacity" type="range" min="0" max="1" step="0.01"> <output id="opacity-value"></output></label>'
            '<label><input id="overlay" type="checkbox" checked> overlay <kbd>o</kbd></label>'
            '<label>colormap <select id="colormap"></select></label>'
            '<div class="colorbar"><span>0</span><canvas id="colorbar" width="256" height="1"></canvas><span>1</span></div>'
            '<div class="readout">under the cursor: <output id="value">—</output></div>'
            '<div id="labels"></div><div id="facts"></div></aside></div>'
            f'{run}')
    else:
        title, body = "Failures", (f'<p id="failures-note"></p><div class="pager" id="pager"></div>'
                                   f'<table class="failures"><thead><tr><th>#</th><th>path</th><th>reason</th></tr>'
                                   f'</thead><tbody id="rows"></tbody></table>{run}')
    on = "failures.html" if kind == "failures" else current  # the image page sits under "Images"
    return page(title, nav, on, body, kind, ("data/run.js", "static/report.js"))


# --------------------------------------------------------------------------- evaluate


def evaluate_page(metrics: dict, folder: Path, dest: Path, nav: Sequence[tuple], current: str) -> str:
    """Tables and deletion/insertion curves from folder/metrics.json (`seg-xai evaluate --out folder`)."""
    methods = [m for m in metrics if not m.startswith("_") and isinstance(metrics[m], dict)] \
        if isinstance(metrics, dict) else []
    if not methods:
        raise ValueError(f"{str(folder / 'metrics.json')!r} holds no method's results")
    meta = metrics.get("_meta", {})
    parts = ["<h1>Evaluation</h1>"]
    if meta:
        parts.append(kv_table([(k, escape(_text(v))) for k, v in meta.items()]))
    scalars = _keys(metrics, methods, lambda v: v is None or isinstance(v, (int, float)))
    parts.append("<h2>Metrics</h2><p class=\"note\">Higher is better for the pointing games and the insertion "
                 "AUC; lower for the deletion AUC, ROAD MoRF and the randomisation ρ.</p>")
    parts.append(_grid_table("method", scalars, [(m, [metrics[m].get(k) for k in scalars]) for m in methods]))
    curves = _keys(metrics, methods, lambda v: isinstance(v, list) and all(_is_num(x) for x in v))
    if curves:
        parts.append("<h2>Curves</h2><div class=\"charts\">")
        for key in curves:
            parts.append(line_chart(key.replace("_", " "), {m: metrics[m].get(key) or [] for m in methods}))
        parts.append("</div>")
    for key in _keys(metrics, methods, lambda v: isinstance(v, dict) and v and all(_is_num(x) for x in v.values())):
        cols = list(dict.fromkeys(c for m in methods for c in (metrics[m].get(key) or {})))
        parts.append(f"<h2>{escape(key.replace('_', ' '))}</h2>")
        parts.append(_grid_table("method", cols, [(m, [(metrics[m].get(key) or {}).get(c) for c in cols])
                                                  for m in methods]))
    for key in _keys(metrics, methods, lambda v: isinstance(v, dict) and v and all(isinstance(x, dict) for x in v.values())):
        parts.append(f"<h2>{escape(key.replace('_', ' '))}</h2>")
        for m in methods:
            table = metrics[m].get(key) or {}
            cols = list(dict.fromkeys(c for row in table.values() for c in row))
            parts.append(f"<h3>{escape(m)}</h3>")
            parts.append(_grid_table("", cols, [(r, [table[r].get(c) for c in cols]) for r in table]))
    parts.append(_file_links([folder / n for n in ("metrics.csv", "metrics.json", "curves.png")], dest))
    return page("Evaluation", nav, current, "".join(parts), "evaluate")


def _keys(metrics: dict, methods: list, test) -> list:
    """Keys of the methods' results whose values pass `test`, in first-seen order."""
    return list(dict.fromkeys(k for m in methods for k, v in metrics[m].items() if test(v)))


def _is_num(v) -> bool:
    return v is None or (isinstance(v, (int, float)) and not isinstance(v, bool))


# --------------------------------------------------------------------------- bench

_BENCH_ROW = re.compile(r"^(?P<row>\S.*?)\s+(?P<ms>\d+(?:\.\d+)?)(?:\s+(?P<x_floor>\d+\.\d+))?"
                        r"(?:\s+(?P<peer_over_ours>\d+(?:\.\d+)?)×)?(?:\s+\((?P<predicted_classes>\d+) classes predicted\))?"
                        r"(?:\s+\(peak RSS (?P<rss_mb>\d+) MB(?:, (?P<rss_x_floor>\d+\.\d+)× floor)?; "
                        r"\+(?P<added_mb>\d+) MB in the call\))?\s*$")
_BENCH_COLUMNS = (("ms", "ms"), ("x_floor", "× floor"), ("peer_over_ours", "peer / ours"),
                  ("predicted_classes", "classes predicted"), ("rss_mb", "peak RSS MB"),
                  ("rss_x_floor", "peak RSS × floor"), ("added_mb", "MB added by the call"))


def parse_bench_text(text: str) -> dict:
    """The stdout of `seg-xai bench` → {"meta": first line, "rows": [...], "notes": [...], "chart": path or None}."""
    lines = text.splitlines()
    start = next((i for i, line in enumerate(lines) if "× floor" in line and "peer/ours" in line), None)
    if start is None:
        raise ValueError("bench.txt must hold the output of `seg-xai bench` (a table headed 'ms  × floor  peer/ours'), "
                         f"got {len(lines)} lines without it")
    rows, notes, chart = [], [], None
    for line in lines[start + 1:]:
        if line.startswith("chart: "):
            chart = line[len("chart: "):].strip()
            continue
        if line.startswith("note: "):
            notes.append(line[len("note: "):].strip())
            continue
        m = _BENCH_ROW.match(line)
        if m is None:
            break
        rows.append({k: (v if k == "row" else float(v) if "." in v else int(v))
                     for k, v in m.groupdict().items() if v is not None})
    meta = next((line for line in lines[:start] if line.startswith("model ")), None)
    return {"meta": meta, "rows": rows, "notes": notes, "chart": chart}


def read_bench(source: Path) -> dict:
    """bench.txt (the printed table) or bench.json ({"meta", "rows", "chart"} or the list of rows
    that `bench.run_bench` returns)."""
    if source.suffix == ".txt":
        return parse_bench_text(source.read_text(encoding="utf-8"))
    data = read_json(source)
    if isinstance(data, list):
        data = {"rows": data}
    if not isinstance(data, dict) or not isinstance(data.get("rows"), list):
        raise ValueError(f"{str(source)!r} must hold a list of rows or an object with a 'rows' list, "
                         f"got {type(data).__name__}")
    return data


def read_json(path: Path):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except ValueError as err:
        raise ValueError(f"{str(path)!r} is not valid JSON: {err}") from None


def bench_page(source: Path, dest: Path, nav: Sequence[tuple], current: str) -> str:
    bench = read_bench(source)
    rows = bench["rows"]
    parts = ["<h1>Benchmark</h1>"]
    meta = bench.get("meta")
    if isinstance(meta, dict):
        parts.append(kv_table([(k, escape(_text(v))) for k, v in meta.items()]))
    elif meta:
        parts.append(f"<p>{escape(str(meta))}</p>")
    cols = [k for k, _ in _BENCH_COLUMNS if any(k in r for r in rows)]
    extra = list(dict.fromkeys(k for r in rows for k in r if k != "row" and k not in cols))
    titles = dict(_BENCH_COLUMNS)
    parts.append(_grid_table("", [titles.get(k, k) for k in cols + extra],
                             [(r.get("row", ""), [r.get(k) for k in cols + extra]) for r in rows], digits=2, missing=""))
    parts.append("<p class=\"note\">ms: median time of one call. × floor: over one forward pass plus the fastest "
                 "batched VJP (a method's own floor rows: its forwards; sliding-window rows: the plain "
                 "sliding-window inference). peer / ours: how many times faster than the peer.</p>")
    parts += [f"<p class=\"note\">{escape(str(n))}</p>" for n in bench.get("notes") or []]
    parts.append(bar_chart("ms (lower is better)", [(r.get("row", ""), r.get("ms")) for r in rows]))
    files = [source]
    chart = bench.get("chart")  # the PNG that `seg-xai bench --chart` drew
    if chart:
        files.append(Path(chart) if os.path.isabs(chart) else source.parent / chart)
    parts.append(_file_links(files, dest))
    return page("Benchmark", nav, current, "".join(parts), "bench")


# --------------------------------------------------------------------------- tables and charts


def _grid_table(corner: str, cols: Sequence[str], rows: Sequence[tuple], digits: int = 3, missing: str = "n/a") -> str:
    """A table: a header row of `cols`, then (name, values) rows; None shows as `missing`."""
    head = "".join(f"<th>{escape(str(c).replace('_', ' '))}</th>" for c in cols)
    body = "".join(f"<tr><th>{escape(str(name))}</th>" + "".join(f"<td>{escape(missing if v is None else _num(v, digits))}</td>" for v in values)
                   + "</tr>" for name, values in rows)
    return f'<table class="grid-table"><thead><tr><th>{escape(corner)}</th>{head}</tr></thead><tbody>{body}</tbody></table>'


def line_chart(title: str, series: dict, width: int = 460, height: int = 300) -> str:
    """SVG: one line per series over x = t/T in [0, 1], y clamped to [0, 1]."""
    left, right, top, bottom = 44, 12, 26, 34
    w, h = width - left - right, height - top - bottom
    out = [f'<svg class="chart" viewBox="0 0 {width} {height + 18 * len(series)}" width="{width}" role="img">'
           f'<title>{escape(title)}</title><text x="{left}" y="16" class="t">{escape(title)}</text>']
    for i in range(5):
        f = i / 4
        x, y = left + f * w, top + h - f * h
        out.append(f'<line x1="{x:.1f}" y1="{top}" x2="{x:.1f}" y2="{top + h}" class="g"/>'
                   f'<line x1="{left}" y1="{y:.1f}" x2="{left + w}" y2="{y:.1f}" class="g"/>'
                   f'<text x="{x:.1f}" y="{top + h + 14}" text-anchor="middle">{f:.2f}</text>'
                   f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">{f:.2f}</text>')
    out.append(f'<text x="{left + w / 2}" y="{top + h + 30}" text-anchor="middle">fraction of pixels changed</text>')
    for i, (name, values) in enumerate(series.items()):
        colour = PALETTE[i % len(PALETTE)]
        T = max(len(values) - 1, 1)
        points = " ".join(f"{left + t / T * w:.1f},{top + h - min(max(v, 0.0), 1.0) * h:.1f}"
                          for t, v in enumerate(values) if v is not None and math.isfinite(v))
        out.append(f'<polyline points="{points}" fill="none" stroke="{colour}" stroke-width="2"/>')
        ly = height + 18 * i + 4
        out.append(f'<line x1="{left}" y1="{ly}" x2="{left + 24}" y2="{ly}" stroke="{colour}" stroke-width="3"/>'
                   f'<text x="{left + 30}" y="{ly + 4}">{escape(str(name))}</text>')
    out.append("</svg>")
    return "".join(out)


def bar_chart(title: str, bars: Sequence[tuple], width: int = 720) -> str:
    """SVG: horizontal bars (label, value); rows without a value are left out."""
    bars = [(label, v) for label, v in bars if v is not None and math.isfinite(v)]
    label_w, bar_h, top = 300, 20, 24
    top_value = max((v for _, v in bars), default=1.0) or 1.0
    scale = (width - label_w - 70) / top_value
    out = [f'<svg class="chart" viewBox="0 0 {width} {top + bar_h * len(bars) + 8}" width="{width}" role="img">'
           f'<title>{escape(title)}</title><text x="0" y="16" class="t">{escape(title)}</text>']
    for i, (label, v) in enumerate(bars):
        y = top + i * bar_h
        out.append(f'<text x="{label_w - 8}" y="{y + 14}" text-anchor="end">{escape(str(label))}</text>'
                   f'<rect x="{label_w}" y="{y + 3}" width="{max(v * scale, 1):.1f}" height="{bar_h - 6}" '
                   f'fill="{PALETTE[0]}"/><text x="{label_w + v * scale + 6:.1f}" y="{y + 14}">{v:.1f}</text>')
    out.append("</svg>")
    return "".join(out)


def _file_links(paths: Sequence[Path], dest: Path) -> str:
    links = [f'<a href="{escape(rel_url(p, dest))}">{escape(p.name)}</a>' for p in paths if p.is_file()]
    return f'<p class="files">files: {" · ".join(links)}</p>' if links else ""


def scenes_page(scene_dirs: Sequence[Path], dest: Path, nav: Sequence[tuple], current: str) -> str:
    """Volumes and scenes explained by `seg-xai explain` (apps/scenes.py): per input folder its
    slice views (three orthogonal slices through each class's target, NIfTI) or overlays (GeoTIFF,
    images), and links to the map files."""
    parts = [f"<h1>Volumes and scenes</h1><p>{len(scene_dirs)} inputs explained whole (slice views of volumes, "
             "overlays of scenes).</p>"]
    for folder in scene_dirs:
        pictures = sorted(folder.glob("slices_*.png")) or sorted(folder.glob("overlay_*.png"))
        maps = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix != ".png")
        imgs = "".join(f'<figure><img src="{escape(rel_url(p, dest))}" alt="{escape(p.stem)}" loading="lazy">'
                       f'<figcaption>{escape(p.stem)}</figcaption></figure>' for p in pictures)
        parts.append(f'<section><h2>{escape(folder.name)}</h2>{_file_links(maps, dest)}<div class="scenes">{imgs}</div>'
                     "</section>")
    return page("Volumes and scenes", nav, current, "".join(parts), "scenes")


def rel_url(path: Path, dest: Path) -> str:
    """A URL from the report folder `dest` to `path` (relative, so the two can move together)."""
    from urllib.request import pathname2url

    return pathname2url(os.path.relpath(os.path.abspath(path), os.path.abspath(dest)))


def _num(v, digits: int = 3) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "n/a"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def _text(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return v if isinstance(v, str) else json.dumps(v)
