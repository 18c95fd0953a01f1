"""The bundled demo: a small segmentation model trained on generated scenes (model.py, weights in
data/), the scene generator with ground truth (scenes.py) and `seg-xai demo` (run.py)."""
from .model import DemoSegNet, demo_model
from .scenes import CLASS_NAMES, NUM_CLASSES, synthetic_scenes

__all__ = ["CLASS_NAMES", "DemoSegNet", "NUM_CLASSES", "demo_model", "synthetic_scenes"]
