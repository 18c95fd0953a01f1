"""Pictures: frames as uint8, label colouring, contact sheets and atomic PNG writes."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw

from .fileio import atomic_write

# Distinct colours for class labels in pictures (background first).
_PALETTE = np.array(
    [[0, 0, 0], [230, 25, 75], [60, 180, 75], [255, 225, 25], [0, 130, 200], [245, 130, 48],
     [145, 30, 180], [70, 240, 240], [240, 50, 230], [210, 245, 60], [250, 190, 212]],
    dtype=np.uint8,
)


def to_frames(images: torch.Tensor) -> torch.Tensor:
    """float [B,3,H,W] in [0,1] → uint8 [B,H,W,3] (rounded)."""
    return (images.detach().float().clamp(0, 1) * 255 + 0.5).to(torch.uint8).permute(0, 2, 3, 1).contiguous()


def color_labels(labels: torch.Tensor) -> np.ndarray:
    """int [H,W] class labels → uint8 [H,W,3] picture (colours repeat after 11 classes)."""
    return _PALETTE[labels.cpu().numpy() % len(_PALETTE)]


def label_legend(class_names: Sequence[str]) -> list[tuple[str, tuple]]:
    """(name, RGB) of each class as color_labels paints it, for contact_sheet's legend."""
    return [(name, tuple(int(v) for v in _PALETTE[i % len(_PALETTE)])) for i, name in enumerate(class_names)]


def contact_sheet(
    rows: Sequence[Sequence[np.ndarray]],
    column_titles: Sequence[str],
    tile: int = 160,
    legend: Sequence[tuple[str, tuple]] = (),
    colormap: Optional[str] = None,
) -> Image.Image:
    """A grid of uint8 [H,W,3] tiles (each resized to tile×tile) under a row of column titles.

    Below the grid: `legend`, (name, RGB) swatches saying what the label colours mean (see
    label_legend), and, when `colormap` is given, its colour bar from 0 to 1 (the map values).
    """
    title_h, footer_row = 18, 26
    cols = max(len(r) for r in rows)
    width = cols * tile
    footer = (footer_row if legend else 0) + (footer_row + 6 if colormap else 0)
    grid_h = title_h + len(rows) * tile
    sheet = Image.new("RGB", (width, grid_h + footer), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    for c, title in enumerate(column_titles):
        draw.text((c * tile + 4, 3), title, fill=(0, 0, 0))
    for r, row in enumerate(rows):
        for c, picture in enumerate(row):
            tile_img = Image.fromarray(np.ascontiguousarray(picture)).resize((tile, tile), Image.BILINEAR)
            sheet.paste(tile_img, (c * tile, title_h + r * tile))
    y = grid_h + 6
    if legend:
        x = 4
        draw.text((x, y + 1), "labels:", fill=(0, 0, 0))
        x += 48
        for name, colour in legend:
            draw.rectangle([x, y, x + 14, y + 14], fill=tuple(colour), outline=(0, 0, 0))
            draw.text((x + 19, y + 1), name, fill=(0, 0, 0))
            x += 19 + int(draw.textlength(name)) + 16
        y += footer_row
    if colormap:
        from .kernels.colormaps import colormap_lut

        caption = "map value:"
        bar_x, bar_w = 4 + 70, min(256, width - 4 - 70 - 40)
        lut = colormap_lut(colormap).numpy()
        ramp = lut[np.linspace(0, 255, bar_w).round().astype(int)]  # uint8 [bar_w,3]
        sheet.paste(Image.fromarray(np.ascontiguousarray(np.broadcast_to(ramp, (12, bar_w, 3)))), (bar_x, y))
        draw.rectangle([bar_x - 1, y - 1, bar_x + bar_w, y + 12], outline=(0, 0, 0))
        draw.text((4, y), caption, fill=(0, 0, 0))
        draw.text((bar_x, y + 14), "0", fill=(0, 0, 0))
        draw.text((bar_x + bar_w - 6, y + 14), "1", fill=(0, 0, 0))
        draw.text((bar_x + bar_w + 8, y), f"({colormap}; 1 = most relevant)", fill=(0, 0, 0))
    return sheet


def save_png(picture, path: os.PathLike) -> Path:
    """Write a PIL image or uint8 [H,W,3] array to `path` atomically (fileio.atomic_write)."""
    if isinstance(picture, np.ndarray):
        picture = Image.fromarray(picture)
    return atomic_write(path, lambda f: picture.save(f, format="PNG"))


def bar_chart(bars: Sequence[tuple[str, float]], title: str, width: int = 900) -> Image.Image:
    """A horizontal bar chart of (label, value) pairs, values shown at the bar ends."""
    label_w, row_h, top = 330, 22, 30
    chart = Image.new("RGB", (width, top + row_h * len(bars) + 10), (255, 255, 255))
    draw = ImageDraw.Draw(chart)
    draw.text((8, 8), title, fill=(0, 0, 0))
    biggest = max((v for _, v in bars), default=1.0) or 1.0
    span = width - label_w - 90
    for i, (label, value) in enumerate(bars):
        y = top + i * row_h
        draw.text((8, y + 4), label, fill=(0, 0, 0))
        length = max(1, int(span * value / biggest))
        colour = (200, 80, 60) if "grad-cam" in label else (60, 120, 200)
        draw.rectangle([label_w, y + 3, label_w + length, y + row_h - 3], fill=colour)
        draw.text((label_w + length + 6, y + 4), f"{value:.1f}", fill=(0, 0, 0))
    return chart


def heatmap_table(
    values: np.ndarray,  # float [R,C]
    row_labels: Sequence[str],
    column_labels: Sequence[str],
    title: str,
    cell: tuple = (64, 22),
) -> Image.Image:
    """A table of signed values as coloured cells (red positive, blue negative, white 0; the
    colour scale is symmetric about 0 at the largest magnitude), each value printed in its cell."""
    values = np.asarray(values, dtype=np.float64)
    R, C = values.shape
    cw, ch = cell
    draw_probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    label_w = 12 + max((int(draw_probe.textlength(s)) for s in row_labels), default=0)
    top = 30 + 2 * ch  # title, then column labels on two lines
    width = max(label_w + C * cw, 12 + int(draw_probe.textlength(title))) + 8
    table = Image.new("RGB", (width, top + R * ch + 8), (255, 255, 255))
    draw = ImageDraw.Draw(table)
    draw.text((6, 6), title, fill=(0, 0, 0))
    scale = float(np.abs(values).max()) or 1.0
    for j, label in enumerate(column_labels):
        first, _, second = label.partition(" ")
        draw.text((label_w + j * cw + 3, 30), first, fill=(0, 0, 0))
        draw.text((label_w + j * cw + 3, 30 + ch - 6), second, fill=(0, 0, 0))
    for i, label in enumerate(row_labels):
        y = top + i * ch
        draw.text((6, y + 5), label, fill=(0, 0, 0))
        for j in range(C):
            t = values[i, j] / scale  # in [-1, 1]
            fade = int(255 * (1 - abs(t)))
            colour = (255, fade, fade) if t > 0 else (fade, fade, 255)
            x = label_w + j * cw
            draw.rectangle([x, y, x + cw - 1, y + ch - 1], fill=colour, outline=(200, 200, 200))
            ink = (255, 255, 255) if abs(t) > 0.6 else (0, 0, 0)  # readable on the dark cells
            draw.text((x + 3, y + 5), f"{values[i, j]:+.3g}", fill=ink)
    return table
