"""Procedural scenes of textured shapes: the data behind the bundled demo model.

Every scene is a textured background with 1-5 objects painted on top (discs, rotated
squares, rotated triangles) in random colours and textures, plus pixel noise. Colour
and texture are random for every class, so only *shape* tells the classes apart.
Later objects paint over earlier ones and the mask records what stays visible.

Object sizes are in pixels, not fractions of the image: at 128 px and above objects
have circumradius 9-26 px, so a larger canvas holds the same objects with more
background around them (which keeps the demo model accurate at any size >= 128).
Below 128 px the sizes shrink in proportion.

Scene ``i`` is drawn from its own seed, ``SeedSequence(seed).spawn(...)[i]``, so it
does not depend on ``n`` or on any global RNG state.
"""
from __future__ import annotations

import numbers
import math

import numpy as np
import torch

CLASS_NAMES = ("background", "disc", "square", "triangle")
NUM_CLASSES = len(CLASS_NAMES)

_MIN_SIZE = 32
_R_MIN, _R_MAX = 9.0, 26.0  # object circumradius in pixels at the reference size
_REF_SIZE = 128
_TRI_GROW = 1.15  # triangles cover less than discs of equal circumradius: enlarge them


def synthetic_scenes(n, seed=0, size=128):
    """Generate ``n`` labelled scenes.

    Args:
        n: number of scenes, a positive int.
        seed: non-negative int; the same seed gives bit-identical scenes.
        size: int ``S`` (square ``S x S`` scenes) or ``(H, W)``, every side >= 32.

    Returns:
        images: float32 ``[n, 3, H, W]`` in [0, 1].
        masks: int64 ``[n, H, W]`` with values in ``range(NUM_CLASSES)``
            (indices into ``CLASS_NAMES``; 0 is background).
    """
    if not _is_int(n) or n < 1:
        raise ValueError(f"synthetic_scenes: n must be a positive int, got {n!r}")
    if not _is_int(seed) or seed < 0:
        raise ValueError(f"synthetic_scenes: seed must be a non-negative int, got {seed!r}")
    h, w = _parse_size(size)

    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32) + np.float32(0.5)  # pixel centres
    images = np.empty((n, h, w, 3), np.float32)
    masks = np.empty((n, h, w), np.int64)
    for i, child in enumerate(np.random.SeedSequence(int(seed)).spawn(int(n))):
        images[i], masks[i] = _scene(np.random.default_rng(child), yy, xx)
    return torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(), torch.from_numpy(masks)


# ----------------------------------------------------------------------------- helpers


def _is_int(v):
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def _parse_size(size):
    if _is_int(size):
        hw = (int(size), int(size))
    elif isinstance(size, (tuple, list)) and len(size) == 2 and all(_is_int(s) for s in size):
        hw = (int(size[0]), int(size[1]))
    else:
        raise ValueError(f"synthetic_scenes: size must be an int or an (H, W) pair of ints, got {size!r}")
    if min(hw) < _MIN_SIZE:
        raise ValueError(f"synthetic_scenes: size must be at least {_MIN_SIZE} on every side, got {size!r}")
    return hw


def _scene(rng, yy, xx):
    """One scene. ``yy, xx``: float32 [H, W] pixel-centre coordinates.
    Returns image float32 [H, W, 3] and mask int64 [H, W]."""
    h, w = yy.shape
    scale = min(1.0, min(h, w) / _REF_SIZE)

    # Background: two colours mixed by a random pattern.  Their contrast is kept
    # moderate so that the background rarely looks like an object boundary.
    b1 = rng.uniform(0.0, 1.0, 3).astype(np.float32)
    b2 = np.clip(b1 + rng.uniform(-0.3, 0.3, 3), 0.0, 1.0).astype(np.float32)
    pat = _pattern(rng, yy, xx, rng.integers(4), scale, kinds=("gradient", "stripes", "checker", "noise"))
    img = b1 + pat[..., None] * (b2 - b1)
    # A faint smooth colour wash on top, so no background is perfectly regular.
    img += 0.12 * (_smooth_noise(rng, h, w, rng.uniform(12, 40) * scale, 3) - 0.5)
    mask = np.zeros((h, w), np.int64)

    placed = []  # (cx, cy, r) of objects already painted
    for _ in range(rng.integers(1, 6)):
        cls = int(rng.integers(1, NUM_CLASSES))
        r = rng.uniform(_R_MIN, _R_MAX) * scale
        # Placement: the new object (painted on top) may hide part of an earlier
        # one, but never its centre region, so every object stays recognisable.
        for _try in range(20):
            cx = rng.uniform(0.6 * r, w - 0.6 * r)
            cy = rng.uniform(0.6 * r, h - 0.6 * r)
            if all(math.hypot(cx - px, cy - py) >= r + 0.3 * pr for px, py, pr in placed):
                break
        else:
            continue  # no room left: skip this object
        placed.append((cx, cy, r))

        # Rasterise inside the object's bounding box only (it is what makes 64
        # scenes take tens of milliseconds rather than hundreds).
        ext = _TRI_GROW * r  # the largest extent of any shape from its centre
        y0, y1 = max(int(cy - ext) - 1, 0), min(int(cy + ext) + 2, h)
        x0, x1 = max(int(cx - ext) - 1, 0), min(int(cx + ext) + 2, w)
        by, bx = yy[y0:y1, x0:x1], xx[y0:y1, x0:x1]
        inside = _shape(rng, cls, bx - np.float32(cx), by - np.float32(cy), r)
        # Object colour: far enough from both background colours to be visible;
        # the best of a few tries if the background is very busy.
        best, best_d = None, -1.0
        for _try in range(16):
            c = rng.uniform(0.0, 1.0, 3)
            d = min(np.linalg.norm(c - b1), np.linalg.norm(c - b2))
            if d > best_d:
                best, best_d = c, d
            if d >= 0.45:
                break
        c1 = best.astype(np.float32)
        c2 = np.clip(c1 + rng.uniform(-0.2, 0.2, 3), 0.0, 1.0).astype(np.float32)
        tex = _pattern(rng, by, bx, rng.integers(4), scale, kinds=("solid", "stripes", "checker", "noise"))
        patch = img[y0:y1, x0:x1]  # a view: writes go into img
        patch[inside] = (c1 + tex[..., None] * (c2 - c1))[inside]
        mask[y0:y1, x0:x1][inside] = cls

    # Global contrast jitter and additive pixel noise.
    img = 0.5 + (img - 0.5) * np.float32(rng.uniform(0.7, 1.1))
    img += rng.standard_normal(img.shape, dtype=np.float32) * np.float32(rng.uniform(0.0, 0.06))
    return np.clip(img, 0.0, 1.0), mask


def _shape(rng, cls, dx, dy, r):
    """Boolean [H, W] inside-test for one object. ``dx, dy``: float32 [H, W] offsets
    from the object centre; ``r``: circumradius in pixels."""
    name = CLASS_NAMES[cls]
    if name == "disc":
        return dx * dx + dy * dy <= np.float32(r * r)
    theta = rng.uniform(0.0, 2 * math.pi)
    if name == "square":
        c, s, half = np.float32(math.cos(theta)), np.float32(math.sin(theta)), np.float32(r / math.sqrt(2))
        return (np.abs(c * dx + s * dy) <= half) & (np.abs(-s * dx + c * dy) <= half)
    # Triangle: near-equilateral, vertices jittered in angle and radius.
    ang = theta + np.arange(3) * (2 * math.pi / 3) + rng.uniform(-0.2, 0.2, 3)
    rad = r * _TRI_GROW * rng.uniform(0.85, 1.0, 3)
    vx, vy = (rad * np.cos(ang)).astype(np.float32), (rad * np.sin(ang)).astype(np.float32)
    inside = np.ones(dx.shape, bool)
    for k in range(3):  # vertices go counter-clockwise in (x, y): inside is left of every edge
        j = (k + 1) % 3
        inside &= (vx[j] - vx[k]) * (dy - vy[k]) - (vy[j] - vy[k]) * (dx - vx[k]) >= 0
    return inside


def _pattern(rng, yy, xx, kind, scale, kinds):
    """A float32 [H, W] pattern in [0, 1] of type ``kinds[kind]``."""
    name = kinds[kind]
    h, w = yy.shape
    if name == "solid":
        return np.zeros((h, w), np.float32)
    if name == "noise":
        return _smooth_noise(rng, h, w, rng.uniform(2, 12) * scale, 1)[..., 0]
    theta = rng.uniform(0.0, math.pi)
    u = np.float32(math.cos(theta)) * xx + np.float32(math.sin(theta)) * yy
    if name == "gradient":
        return (u - u.min()) / max(float(u.max() - u.min()), 1e-6)
    period = np.float32(rng.uniform(5, 24) * max(scale, 0.5))
    if name == "stripes":
        wave = 0.5 + 0.5 * np.sin(u * np.float32(2 * math.pi) / period)
        return (wave > 0.5).astype(np.float32) if rng.random() < 0.5 else wave
    v = -np.float32(math.sin(theta)) * xx + np.float32(math.cos(theta)) * yy  # checker
    return ((np.floor(u / period) + np.floor(v / period)) % 2).astype(np.float32)


def _smooth_noise(rng, h, w, cell, channels):
    """Value noise: a random grid with spacing ``cell`` px, bilinearly interpolated.
    Returns float32 [H, W, channels] in [0, 1]."""
    cell = max(float(cell), 1.0)
    gh, gw = int(h / cell) + 2, int(w / cell) + 2
    grid = rng.random((gh, gw, channels), dtype=np.float32)
    # Separable bilinear interpolation: along x on the small grid first, then along y.
    y = np.arange(h, dtype=np.float32) / np.float32(cell)
    x = np.arange(w, dtype=np.float32) / np.float32(cell)
    y0, x0 = y.astype(np.int64), x.astype(np.int64)
    wy, wx = (y - y0)[:, None, None], (x - x0)[None, :, None]
    rows = grid[:, x0] * (1 - wx) + grid[:, x0 + 1] * wx  # [gh, W, channels]
    return rows[y0] * (1 - wy) + rows[y0 + 1] * wy
