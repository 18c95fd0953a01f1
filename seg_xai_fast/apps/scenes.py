"""Volumes and whole scenes from files: NIfTI (nibabel, extra [medical]), GeoTIFF (rasterio, extra
[geo]) and ordinary images, explained whole or through a SlidingWindow (`seg-xai explain` with
.nii/.nii.gz/.tif inputs, or with --sliding-window).

Per input file NAME, into OUT/NAME/:
- NIfTI: ``map_<class>.nii.gz``, one map volume per explained class with the input's affine and
  header (float32), and ``slices_<class>.png``: three orthogonal slices through the centre of the
  class's target region with the map overlaid, a legend and a colour bar;
- GeoTIFF: ``maps.tif``, a multi-band GeoTIFF (one band per class) with the input's CRS and
  transform, and ``overlay_<class>.png``, down-scaled;
- other images: ``maps.npy`` (float16 [K,H,W]) and ``overlay_<class>.png``.
Every file is written atomically (fileio.atomic_write): an error leaves no half-written file.
"""
from __future__ import annotations

import gzip
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw

from .. import kernels
from ..engine import Explainer, InputOf, SlidingWindow
from ..fileio import atomic_write
from ..viz import save_png

NIFTI_SUFFIXES = (".nii", ".nii.gz")
GEOTIFF_SUFFIXES = (".tif", ".tiff")
OVERLAY_SIDE = 1024  # GeoTIFF overlays are down-scaled to at most this many pixels a side


def kind_of(path: str) -> str:
    """'nifti', 'geotiff' or 'image', from the file name."""
    name = path.lower()
    if name.endswith(NIFTI_SUFFIXES):
        return "nifti"
    if name.endswith(GEOTIFF_SUFFIXES):
        return "geotiff"
    return "image"


def is_scene_input(path: str) -> bool:
    """True for the files this module reads and the batch engine does not (NIfTI, GeoTIFF)."""
    return kind_of(path) != "image"


def extra_module(module: str, extra: str, what: str):
    """The optional package `module`, or an ImportError naming the extra that installs it."""
    try:
        return __import__(module)
    except ImportError:
        raise ImportError(f"{what} needs the optional package {module!r}: pip install 'seg_xai_fast[{extra}]'") from None


@dataclass
class Scene:
    """One input: images float32 [1,C,*S], and what writing its maps needs."""

    path: Path
    kind: str
    images: torch.Tensor
    source: object = None  # the nibabel image, or the rasterio profile


def read_scene(path: str, channels_last: bool = True) -> Scene:
    """The file at `path` as [1,C,*S] float32: NIfTI (X,Y,Z) → [1,1,X,Y,Z], (X,Y,Z,C) → [1,C,X,Y,Z];
    GeoTIFF bands [C,H,W] → [1,C,H,W]; an image → [1,3,H,W] in [0, 1]."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"INPUTS: {path!r} does not exist")
    kind = kind_of(path)
    if kind == "nifti":
        nib = extra_module("nibabel", "medical", "reading NIfTI volumes")
        try:
            img = nib.load(str(p))
        except Exception as err:  # noqa: BLE001 - not NIfTI at all: say so
            raise ValueError(f"INPUTS: {path!r} is not a readable NIfTI volume: {type(err).__name__}: "
                             f"{str(err)[:200]}") from None
        data = np.asanyarray(img.dataobj, dtype=np.float32)
        if data.ndim == 4 and data.shape[3] == 1:
            data = data[..., 0]
        if data.ndim == 3:
            array = data[None]
        elif data.ndim == 4:
            array = np.moveaxis(data, 3, 0)
        else:
            raise ValueError(f"INPUTS: {path!r} is not a volume: a NIfTI volume has 3 spatial axes (X,Y,Z), or 4 "
                             f"with channels last, got shape {list(data.shape)}")
        return Scene(p, kind, torch.from_numpy(np.ascontiguousarray(array))[None], img)
    if kind == "geotiff":
        rasterio = extra_module("rasterio", "geo", "reading GeoTIFF scenes")
        try:
            with rasterio.open(str(p)) as src:
                bands = src.read().astype(np.float32)  # [C,H,W]
                profile = src.profile
        except Exception as err:  # noqa: BLE001
            raise ValueError(f"INPUTS: {path!r} is not a readable GeoTIFF: {type(err).__name__}: {str(err)[:200]}") \
                from None
        return Scene(p, kind, torch.from_numpy(bands)[None], profile)
    try:
        with Image.open(p) as im:
            rgb = np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0
    except Exception as err:  # noqa: BLE001
        raise ValueError(f"INPUTS: {path!r} is not a readable image: {type(err).__name__}") from None
    return Scene(p, kind, torch.from_numpy(rgb).permute(2, 0, 1).contiguous()[None])


def parse_roi(text: str) -> tuple:
    """--sliding-window '96,96,96' or '512,512' → (96, 96, 96)."""
    try:
        roi = tuple(int(v) for v in str(text).split(","))
    except ValueError:
        raise ValueError(f"--sliding-window must be comma-separated ints (e.g. 96,96,96 or 512,512), got {text!r}") \
            from None
    if len(roi) not in (2, 3) or min(roi) < 1:
        raise ValueError(f"--sliding-window must have 2 (images) or 3 (volumes) positive sizes, got {text!r}")
    return roi


def build_explainer(model: torch.nn.Module, layer: Optional[str], method: str, options: dict, device: str,
                    sliding: Optional[dict], class_names=None) -> Explainer:
    """The explainer of `model` (wrapped in a SlidingWindow when `sliding` has its arguments:
    roi_size, overlap, mode, sw_batch_size); layer names are the model's own."""
    model = model.to(device).eval()
    target = layer
    if sliding is not None:
        if layer is not None:  # the module itself: the SlidingWindow's names differ ("model." + the model's own)
            name, as_input = (layer[:-len(":input")], True) if layer.endswith(":input") else (layer, False)
            try:
                module = model.get_submodule(name)
            except AttributeError:
                raise ValueError(f"--layer {layer!r} not found in the model") from None
            target = InputOf(module) if as_input else module
        model = SlidingWindow(model, **sliding)
    return Explainer(model, target, method, options=options, class_names=class_names)


def explain_scene(explainer: Explainer, scene: Scene, classes, out_dir: Path, class_names=None) -> dict:
    """Explain one scene and write its files into out_dir (see the module docstring)."""
    images = scene.images.to(next(explainer.model.parameters()).device)
    roi = getattr(explainer.model, "roi_size", None)
    if roi is not None and len(roi) != images.ndim - 2:
        raise ValueError(f"--sliding-window {','.join(map(str, roi))} has {len(roi)} axes but {scene.path.name} has "
                         f"{images.ndim - 2} spatial axes (shape {list(images.shape[1:])})")
    res = explainer(images, classes=classes)
    maps = res.maps[0].float().cpu()  # [K,*S]
    out_dir.mkdir(parents=True, exist_ok=True)
    names = [class_names[c] if class_names else str(c) for c in res.classes]
    written = []
    if scene.kind == "nifti":
        nib = extra_module("nibabel", "medical", "writing NIfTI maps")
        for k, name in enumerate(names):
            header = scene.source.header.copy()
            vol = nib.Nifti1Image(maps[k].numpy().astype(np.float32), scene.source.affine, header=header)
            vol.set_data_dtype(np.float32)
            data = gzip.compress(vol.to_bytes(), compresslevel=6, mtime=0)
            written.append(atomic_write(out_dir / f"map_{name}.nii.gz", lambda f, d=data: f.write(d)))
            region = res.labels[0].cpu() == res.classes[k]
            written.append(save_png(slice_sheet(scene.images[0, 0], maps[k], region, f"{res.method}: class {name}"),
                                    out_dir / f"slices_{name}.png"))
    elif scene.kind == "geotiff":
        rasterio = extra_module("rasterio", "geo", "writing GeoTIFF maps")
        profile = dict(scene.source)
        profile.update(count=len(names), dtype="float32", nodata=None)
        for key in ("photometric", "blockxsize", "blockysize", "tiled"):
            profile.pop(key, None)
        with rasterio.MemoryFile() as mem:
            with mem.open(**profile) as dst:
                dst.write(maps.numpy().astype(np.float32))
                for k, name in enumerate(names):
                    dst.set_band_description(k + 1, f"{res.method} class {name}")
            data = mem.read()
        written.append(atomic_write(out_dir / "maps.tif", lambda f: f.write(data)))
        written += _overlays(scene.images[0], maps, names, out_dir, OVERLAY_SIDE)
    else:
        buf = io.BytesIO()
        np.save(buf, maps.numpy().astype(np.float16))
        written.append(atomic_write(out_dir / "maps.npy", lambda f: f.write(buf.getvalue())))
        written += _overlays(scene.images[0], maps, names, out_dir, None)
    return {"input": str(scene.path), "classes": res.classes, "files": [str(p) for p in written], "info": res.info}


def _display(image: torch.Tensor) -> torch.Tensor:
    """[C,H,W] any range → uint8 [H,W,3]: the first three channels (or the first, grey), min-max per channel."""
    x = image[:3] if image.shape[0] >= 3 else image[:1].expand(3, -1, -1)
    x = x.float()
    lo = x.flatten(1).amin(1)[:, None, None]
    hi = x.flatten(1).amax(1)[:, None, None]
    x = (x - lo) / (hi - lo).clamp_min(1e-12)
    return (x * 255 + 0.5).clamp(0, 255).to(torch.uint8).permute(1, 2, 0).contiguous()


def _overlays(image: torch.Tensor, maps: torch.Tensor, names: Sequence[str], out_dir: Path, side) -> list:
    frame = _display(image)
    H, W = frame.shape[:2]
    if side is not None and max(H, W) > side:  # down-scale before colouring: a scene may be 10k pixels a side
        scale = side / max(H, W)
        size = (max(1, round(W * scale)), max(1, round(H * scale)))
        frame = torch.from_numpy(np.asarray(Image.fromarray(frame.numpy()).resize(size, Image.BILINEAR)))
        maps = torch.nn.functional.interpolate(maps[None], size=(size[1], size[0]), mode="area")[0]
    written = []
    for k, name in enumerate(names):
        pic = kernels.overlay(frame[None], maps[k:k + 1].contiguous())[0].numpy()
        written.append(save_png(pic, out_dir / f"overlay_{name}.png"))
    return written


def slice_sheet(volume: torch.Tensor, heat: torch.Tensor, region: torch.Tensor, title: str,
                colormap: str = "jet") -> Image.Image:
    """Three orthogonal slices of volume float [X,Y,Z] through the centre of `region` bool [X,Y,Z]
    (the volume's centre when empty), `heat` float [X,Y,Z] in [0, 1] overlaid; a title, a legend
    of the slices and a colour bar."""
    idx = torch.nonzero(region)
    centre = idx.float().mean(0).round().long().tolist() if len(idx) else [s // 2 for s in volume.shape]
    panels = []
    for axis, label in ((2, "axial (z)"), (1, "coronal (y)"), (0, "sagittal (x)")):
        img = volume.select(axis, centre[axis])
        hm = heat.select(axis, centre[axis])
        frame = _display(img[None].float())
        pic = kernels.overlay(frame[None], hm[None].contiguous(), colormap=colormap)[0].numpy()
        pic = np.rot90(pic).copy()  # radiological display: the first axis across
        scale = max(1, 160 // max(pic.shape[:2]))
        panel = Image.fromarray(pic).resize((pic.shape[1] * scale, pic.shape[0] * scale), Image.NEAREST)
        panels.append((panel, f"{label} = {centre[axis]}"))
    width = sum(p.width for p, _ in panels) + 10 * (len(panels) + 1)
    height = max(p.height for p, _ in panels) + 80
    sheet = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    draw.text((10, 4), title + f" - slices through the target's centre {tuple(centre)}", fill=(0, 0, 0))
    x = 10
    for panel, caption in panels:
        sheet.paste(panel, (x, 22))
        draw.text((x, 26 + panel.height), caption, fill=(0, 0, 0))
        x += panel.width + 10
    lut = kernels.colormap_lut(colormap)  # uint8 [256,3]
    bar_w = min(256, width - 40)
    bar = np.asarray(lut)[np.linspace(0, 255, bar_w).astype(int)][None].repeat(10, axis=0)
    y = height - 30
    sheet.paste(Image.fromarray(bar.astype(np.uint8)), (10, y))
    draw.text((10, y + 12), "0", fill=(0, 0, 0))
    draw.text((10 + bar_w - 6, y + 12), "1", fill=(0, 0, 0))
    draw.text((20 + bar_w, y), f"map ({colormap}; 1 = most relevant)", fill=(0, 0, 0))
    return sheet
