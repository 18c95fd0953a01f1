"""Benchmark: the newer methods, all 21 classes from one call, vs pytorch-grad-cam's 21 calls.

    python benchmarks/gradient_methods_speed.py [--size 256] [--classes 21] [--repeats 3] [--methods a,b]

CPU, torchvision deeplabv3_mobilenet_v3_large random-initialised (nothing is downloaded), target
layer the backbone's last stage ("backbone.16"), one image, a box region per class (the same boxes
for both). Ours: one Explainer call for all classes; the peer: one call per class with a
SemanticSegmentationTarget (Finer-CAM: its FinerCAM on the region's mean logits, target_idx = the
class). Seg-XRes-CAM has no peer class: it is timed against the peer's HiResCAM, the computation it
extends. FullGrad takes no layer (the input and every bias). The last rows time the options
(eigen_smooth, aug_smooth: the peer's call keywords), two target layers, and ShapleyCAM at a layer
with curvature above it (there its Hessian-vector products run; at backbone.16 only ReLU,
BatchNorm, convolutions and resizes follow, the Hessian is exactly zero and the pass is skipped).
Both sides are timed in this one run (median of --repeats after one warm-up call); the goal is
≥ 5× for every method.
"""
import argparse
import platform
import statistics
import time
from typing import NamedTuple, Optional

import torch
import torchvision.models.segmentation as tvseg

import seg_xai_fast as sx
from seg_xai_fast.apps.bench import box_masks

LAYER = "backbone.16"


class Row(NamedTuple):
    """One measurement: our call and the peer's, both on 21 classes."""
    method: str
    peer_class: str  # a class of pytorch_grad_cam
    layers: Optional[list] = None  # target layers (default [LAYER]); None entries → the method takes none
    options: Optional[dict] = None  # ours (Explainer options=) and, as call keywords, the peer's
    note: str = ""


# Label → row. The first block is the goal set (≥ 5×); the last rows time the options and a
# ShapleyCAM target with curvature above it (its Hessian-vector products run there).
ROWS = {
    "gradcam_elementwise": Row("gradcam_elementwise", "GradCAMElementWise"),
    "segxrescam": Row("segxrescam", "HiResCAM", note="no peer class: the closest computation"),
    "eigengradcam": Row("eigengradcam", "EigenGradCAM"),
    "segeigencam": Row("segeigencam", "SegEigenCAM"),
    "finercam": Row("finercam", "FinerCAM"),
    "kpcacam": Row("kpcacam", "KPCA_CAM"),
    "fem": Row("fem", "FEM"),
    "randomcam": Row("randomcam", "RandomCAM"),
    "shapleycam": Row("shapleycam", "ShapleyCAM"),
    "fullgrad": Row("fullgrad", "FullGrad", layers=[None]),
    "gradcam+eigen_smooth": Row("gradcam", "GradCAM", options={"eigen_smooth": True}),
    "gradcam+aug_smooth": Row("gradcam", "GradCAM", options={"aug_smooth": True}),
    "gradcam 2 layers": Row("gradcam", "GradCAM", layers=[LAYER, "backbone.12"]),
    "shapleycam@backbone.15": Row("shapleycam", "ShapleyCAM", layers=["backbone.15"],
                                  note="Hardswish above the layer: the Hessian-vector products run"),
}


class _Out(torch.nn.Module):
    """The peer needs a Tensor output."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model(x)["out"]


class _RegionMeans(torch.nn.Module):
    """Finer-CAM's peer is a classifier method: the mean logits [B,L] over one region [B,H,W]."""

    def __init__(self, model, mask):
        super().__init__()
        self.model, self.mask = _Out(model), mask

    def forward(self, x):
        logits = self.model(x)
        return (logits * self.mask[:, None]).sum((2, 3)) / self.mask.sum((1, 2))[:, None]


def _median(fn, repeats, warmup=True):
    if warmup:
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _ours(model, row, images, masks):
    layers = row.layers or [LAYER]
    explainer = sx.Explainer(model, layers if len(layers) > 1 else layers[0], row.method, options=row.options)
    classes = list(range(masks.shape[1]))
    return lambda: explainer(images, classes=classes, masks=masks)


def _peer_call(pgc, row, model, images, masks):
    """A function running the peer once per class."""
    from pytorch_grad_cam.utils.model_targets import SemanticSegmentationTarget

    K = masks.shape[1]
    layers = [model.get_submodule(name) for name in row.layers or [LAYER] if name is not None]
    if row.peer_class == "FinerCAM":  # the peer's Finer-CAM explains a classifier: region means stand in
        def run():
            for k in range(K):
                cam = pgc.FinerCAM(_RegionMeans(model, masks[:, k]), layers)
                cam(images, target_idx=k)
                cam.base_cam.activations_and_grads.release()
        return run
    cam = getattr(pgc, row.peer_class)(model=_Out(model), target_layers=layers)
    targets = [SemanticSegmentationTarget(k, masks[0, k].numpy()) for k in range(K)]

    def run():
        for target in targets:
            cam(input_tensor=images, targets=[target], **(row.options or {}))
    return run


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--classes", type=int, default=21)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--methods", default=None,
                        help=f"comma-separated row labels (default: all): {', '.join(ROWS)}")
    args = parser.parse_args()
    import pytorch_grad_cam as pgc

    torch.manual_seed(0)
    model = tvseg.deeplabv3_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=21).eval()
    images = torch.rand(1, 3, args.size, args.size, generator=torch.Generator().manual_seed(1))
    masks = box_masks(1, args.classes, args.size, args.size, seed=0)
    labels = args.methods.split(",") if args.methods else list(ROWS)
    unknown = [label for label in labels if label not in ROWS]
    if unknown:
        parser.error(f"--methods: unknown rows {unknown}; choose from {list(ROWS)}")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {platform.processor() or platform.machine()}; "
          f"deeplabv3_mobilenet_v3_large {args.size}², layer {LAYER} unless named, {args.classes} classes, "
          f"median of {args.repeats}")
    print(f"{'row':24s} {'peer class':19s} {'ours s':>9s} {'peer s':>9s} {'speed-up':>9s}")
    for label in labels:
        row = ROWS[label]
        ours = _median(_ours(model, row, images, masks), args.repeats)
        # The peer keeps nothing between calls, and its first class is already a warm call for the
        # other 20: no separate warm-up (it would double the slow side's time).
        peer = _median(_peer_call(pgc, row, model, images, masks), args.repeats, warmup=False)
        note = f"  ({row.note})" if row.note else ""
        print(f"{label:24s} {row.peer_class:19s} {ours:9.3f} {peer:9.3f} {peer / ours:8.1f}×{note}", flush=True)


if __name__ == "__main__":
    main()
