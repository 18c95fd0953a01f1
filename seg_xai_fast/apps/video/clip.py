"""The demo clip: a camera panning across a generated scene, and its explained overlay."""
from __future__ import annotations

import os
from fractions import Fraction
from pathlib import Path
from typing import Optional, Union

import numpy as np
import torch

from ...demo.model import DemoSegNet, demo_model
from ...demo.scenes import CLASS_NAMES, synthetic_scenes
from ...engine.explainer import Explainer
from ...engine.methods import layer_for
from .io import write_clip
from .pipeline import explain_video

# --------------------------------------------------------------------------- demo clip


def write_demo_video(
    out_dir: Union[str, os.PathLike] = "seg-xai-demo",
    frames: int = 48,
    size: tuple = (160, 224),
    method: str = "gradcam",
    seed: int = 2024,
    colormap: str = "jet",
    progress: bool = False,
    options: Optional[dict] = None,
) -> dict:
    """A sample clip from the scene generator and its overlay, written to `out_dir`.

    The clip pans a camera across one wide generated scene, so its shapes move across the frame
    (2 px per frame). Explained with the bundled demo model at layer "decoder" (a randomly
    initialised DemoSegNet while its weights file is missing). Returns {"clip", "overlay",
    "summary" (VideoSummary), "model"}.
    """
    out_dir = Path(out_dir)
    clip = write_clip(out_dir / "scenes.mp4", scene_frames(frames, size, seed), rate=Fraction(12))
    try:
        model, model_name = demo_model(), "demo"
    except FileNotFoundError:
        torch.manual_seed(seed)
        model, model_name = DemoSegNet().eval(), "demo (untrained: weights file missing)"
    overlay = out_dir / f"scenes_{method}.mp4"
    summary = explain_video(clip, overlay, Explainer(model, layer_for(method, "decoder"), method, options=options), batch_size=8, class_names=CLASS_NAMES,
                            colormap=colormap,
                            progress=progress)
    return {"clip": str(clip), "overlay": str(overlay), "summary": summary, "model": model_name}


def scene_frames(frames: int = 48, size: tuple = (160, 224), seed: int = 2024, step: int = 2) -> list[np.ndarray]:
    """`frames` uint8 [H,W,3] frames of a camera panning `step` px per frame across one wide
    generated scene (scenes.synthetic_scenes), so the shapes move across the picture."""
    height, width = size
    scene, _ = synthetic_scenes(1, seed=seed, size=(height, width + step * (frames - 1)))
    picture = (scene[0].permute(1, 2, 0) * 255 + 0.5).to(torch.uint8).numpy()  # [H,W',3]
    return [np.ascontiguousarray(picture[:, i * step:i * step + width]) for i in range(frames)]
