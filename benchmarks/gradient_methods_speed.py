"""Benchmark: the newer methods, all 21 classes from one call, vs pytorch-grad-cam's 21 calls.

    python benchmarks/gradient_methods_speed.py [--size 256] [--classes 21] [--repeats 3] [--methods a,b]

CPU, torchvision deeplabv3_mobilenet_v3_large random-initialised (nothing is downloaded), target
layer the backbone's last stage ("backbone.16"), one image, a box region per class (the same boxes
for both). Ours: one Explainer call for all classes; the peer: one call per class with a
SemanticSegmentationTarget (Finer-CAM: its FinerCAM on the region's mean logits, target_idx = the
class). Seg-XRes-CAM has no peer class: it is timed against the peer's HiResCAM, the computation it
extends. Both sides are timed in this one run (median of --repeats after one warm-up call); the
goal is ≥ 5× for every method.
"""
import argparse
import platform
import statistics
import time

import torch
import torchvision.models.segmentation as tvseg

import seg_xai_fast as sx
from seg_xai_fast.apps.bench import box_masks

# The methods measured here, with their peer classes (names in pytorch_grad_cam).
METHODS = {
    "gradcam_elementwise": "GradCAMElementWise",
    "segxrescam": "HiResCAM",  # no peer class: the closest computation
    "eigengradcam": "EigenGradCAM",
    "segeigencam": "SegEigenCAM",
    "finercam": "FinerCAM",
    "kpcacam": "KPCA_CAM",
    "fem": "FEM",
    "randomcam": "RandomCAM",
}
# Methods added in parallel elsewhere: add each here (name → peer class) once sx.methods() has it.
LATER_METHODS = {
    "shapleycam": "ShapleyCAM",
    "fullgrad": "FullGrad",
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


def _peer_call(pgc, method, model, layer, images, masks):
    """A function running the peer once per class."""
    from pytorch_grad_cam.utils.model_targets import SemanticSegmentationTarget

    K = masks.shape[1]
    if method == "finercam":
        def run():
            for k in range(K):
                cam = pgc.FinerCAM(_RegionMeans(model, masks[:, k]), [layer])
                cam(images, target_idx=k)
                cam.base_cam.activations_and_grads.release()
        return run
    cam = getattr(pgc, METHODS.get(method) or LATER_METHODS[method])(model=_Out(model), target_layers=[layer])
    targets = [SemanticSegmentationTarget(k, masks[0, k].numpy()) for k in range(K)]

    def run():
        for target in targets:
            cam(input_tensor=images, targets=[target])
    return run


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--classes", type=int, default=21)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--methods", default=None, help="comma-separated (default: every measured method available)")
    args = parser.parse_args()
    import pytorch_grad_cam as pgc

    torch.manual_seed(0)
    model = tvseg.deeplabv3_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=21).eval()
    layer = "backbone.16"
    images = torch.rand(1, 3, args.size, args.size, generator=torch.Generator().manual_seed(1))
    masks = box_masks(1, args.classes, args.size, args.size, seed=0)
    names = args.methods.split(",") if args.methods else [
        m for m in list(METHODS) + list(LATER_METHODS) if m in sx.methods()]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {platform.processor() or platform.machine()}; "
          f"deeplabv3_mobilenet_v3_large {args.size}², layer {layer}, {args.classes} classes, "
          f"median of {args.repeats}")
    print(f"{'method':22s} {'ours s':>9s} {'peer s':>9s} {'speed-up':>9s}")
    for method in names:
        explainer = sx.Explainer(model, layer, method)
        ours = _median(lambda: explainer(images, classes=list(range(args.classes)), masks=masks), args.repeats)
        # The peer keeps nothing between calls, and its first class is already a warm call for the
        # other 20: no separate warm-up (it would double the slow side's time).
        peer = _median(_peer_call(pgc, method, model, model.get_submodule(layer), images, masks), args.repeats,
                       warmup=False)
        print(f"{method:22s} {ours:9.3f} {peer:9.3f} {peer / ours:8.1f}×", flush=True)


if __name__ == "__main__":
    main()
