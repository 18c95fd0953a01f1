"""Volumes and whole scenes, measured side by side in one run (ratios; the machine is noisy).

    python benchmarks/volume_speed.py [--volume 160] [--roi 64] [--scene 4096] [--scene-roi 512]
                                      [--gradcam-size 64] [--repeats 3]

1. 3-D Grad-CAM of every class (one sx.Explainer call) against pytorch-grad-cam's 3-D GradCAM called
   once per class, on a MONAI SegResNet (random init, 1 channel, 3 classes) at a --gradcam-size³
   volume; interleaved rounds, medians. Goal: ≥ 5× faster.
2. Grad-CAM of every class through sx.SlidingWindow against MONAI's plain sliding_window_inference
   of the same input (no grad), each in a fresh subprocess (time and peak RSS, getrusage):
   a --volume³ single-channel volume through the SegResNet with --roi³ windows, overlap 0.25,
   gaussian; and a --scene² RGB scene through a 6-class segmentation-models-pytorch U-Net
   (ResNet-18) with --scene-roi² windows. Goal: both ratios ≤ 2×.
The issue's sizes are the defaults; a smoke run: --volume 48 --roi 32 --scene 256 --scene-roi 128
--gradcam-size 24 --repeats 1. CPU; set --device cuda on a GPU machine.
"""
import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from timing import interleaved  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]

CHILD = r"""
import json, resource, sys, time
import torch
cfg = json.loads(sys.argv[1])
torch.manual_seed(0)
if cfg["domain"] == "volume":
    from monai.networks.nets import SegResNet
    model = SegResNet(3, init_filters=8, in_channels=1, out_channels=3, blocks_down=(1, 2, 2), blocks_up=(1, 1),
                      norm=("GROUP", {"num_groups": 4})).eval().to(cfg["device"])
    x = torch.randn(1, 1, *(cfg["size"],) * 3, device=cfg["device"])
    roi, layer, mode = (cfg["roi"],) * 3, "model.up_layers.1", "gaussian"
else:
    import segmentation_models_pytorch as smp
    model = smp.Unet("resnet18", encoder_weights=None, classes=6).eval().to(cfg["device"])
    x = torch.rand(1, 3, cfg["size"], cfg["size"], device=cfg["device"])
    roi, layer, mode = (cfg["roi"],) * 2, "model.decoder", "constant"
start = time.perf_counter()
if cfg["run"] == "monai":
    from monai.inferers import sliding_window_inference
    with torch.no_grad():
        out = sliding_window_inference(x, roi, 1, model, overlap=0.25, mode=mode)
    info = {}
else:
    import seg_xai_fast as sx
    sw = sx.SlidingWindow(model, roi, overlap=0.25, mode=mode)
    res = sx.Explainer(sw, layer, "gradcam")(x)
    assert torch.isfinite(res.maps).all()
    info = {k: res.info[k] for k in ("windows", "window_forwards", "backward_passes")}
seconds = time.perf_counter() - start
print(json.dumps({"seconds": seconds, "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, **info}))
"""


def child(cfg: dict) -> dict:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    out = subprocess.run([sys.executable, "-c", CHILD, json.dumps(cfg)], capture_output=True, text=True, env=env,
                         cwd="/")
    if out.returncode:
        raise RuntimeError(out.stderr[-2000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def gradcam_3d(size: int, repeats: int, device: str) -> None:
    import torch
    from monai.networks.nets import SegResNet
    from pytorch_grad_cam import GradCAM

    import seg_xai_fast as sx

    torch.manual_seed(0)
    net = SegResNet(3, init_filters=8, in_channels=1, out_channels=3, blocks_down=(1, 2, 2), blocks_up=(1, 1),
                    norm=("GROUP", {"num_groups": 4})).eval().to(device)
    x = torch.randn(1, 1, size, size, size, device=device)
    with torch.no_grad():
        labels = net(x).argmax(1)[0]
    layer = net.up_layers[1]

    class Target:
        def __init__(self, k):
            self.k, self.mask = k, (labels == k).float()

        def __call__(self, out):
            return (out[self.k] * self.mask).sum()

    explainer = sx.Explainer(net, layer, "gradcam")

    def peer():
        with GradCAM(net, [layer]) as cam:
            for k in range(3):
                cam(x, targets=[Target(k)])

    t = interleaved({"ours": lambda: explainer(x), "peer": peer}, repeats)
    print(f"3-D Grad-CAM, {size}³, 3 classes: ours {t['ours']:.3f} s, grad-cam per class {t['peer']:.3f} s, "
          f"speed-up {t['peer'] / t['ours']:.2f}× (goal ≥ 5×)")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--volume", type=int, default=160)
    p.add_argument("--roi", type=int, default=64)
    p.add_argument("--scene", type=int, default=4096)
    p.add_argument("--scene-roi", type=int, default=512)
    p.add_argument("--gradcam-size", type=int, default=64)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--device", default="cpu")
    args = p.parse_args()
    gradcam_3d(args.gradcam_size, args.repeats, args.device)
    for domain, size, roi in (("volume", args.volume, args.roi), ("scene", args.scene, args.scene_roi)):
        base = {"domain": domain, "size": size, "roi": roi, "device": args.device}
        plain, ours = child({**base, "run": "monai"}), child({**base, "run": "ours"})
        shape = f"{size}³" if domain == "volume" else f"{size}²"
        print(f"{domain} {shape}, windows {roi}: plain sliding-window inference {plain['seconds']:.2f} s / "
              f"{plain['peak_mb']:.0f} MB; Grad-CAM of every class through SlidingWindow {ours['seconds']:.2f} s / "
              f"{ours['peak_mb']:.0f} MB ({ours['windows']} windows, {ours['backward_passes']} batched VJPs); "
              f"ratios time {ours['seconds'] / plain['seconds']:.2f}×, peak RSS "
              f"{ours['peak_mb'] / plain['peak_mb']:.2f}× (goals ≤ 2×)")


if __name__ == "__main__":
    main()
