"""Check: peak memory of one explanation of DeepLabV3-ResNet50 at 520×520, 21 classes.

    python benchmarks/engine_memory.py [--size 520] [--method gradcam++] [--layer backbone.layer4]
                                       [--max-memory-mb 1024] [--masks dense|predicted]

Runs the explanation in a fresh subprocess (torchvision deeplabv3_resnet50, random init, CPU) and
prints that process's peak RSS (getrusage ru_maxrss, which includes the model, torch itself and
every temporary), next to the peak of a subprocess that only builds the model and runs one plain
forward pass. Goal: under 4 GB. With --masks dense every class gets a non-empty region (the
worst case: 21 backward passes); `predicted` uses the default Seg-Grad-CAM targets.
"""
import argparse
import json
import subprocess
import sys
import tempfile

CHILD = r"""
import json, resource, sys, time
import torch, torchvision.models.segmentation as tvseg
import seg_xai_fast as sx
cfg = json.loads(sys.argv[1])
torch.manual_seed(0)
model = tvseg.deeplabv3_resnet50(weights=None, weights_backbone=None, num_classes=21, aux_loss=False).eval()
images = torch.rand(1, 3, cfg["size"], cfg["size"])
start = time.perf_counter()
if cfg["mode"] == "forward":
    with torch.no_grad():
        model(images)
    info = {}
else:
    masks = None
    if cfg["masks"] == "dense":
        masks = torch.zeros(1, 21, cfg["size"], cfg["size"])
        for k in range(21):  # a different box per class
            masks[0, k, 10 * k:10 * k + cfg["size"] // 3, 5 * k:5 * k + cfg["size"] // 3] = 1
    explainer = sx.Explainer(model, cfg["layer"], cfg["method"], max_memory_mb=cfg["max_memory_mb"])
    res = explainer(images, masks=masks)
    assert res.maps.shape == (1, 21, cfg["size"], cfg["size"]) and torch.isfinite(res.maps).all()
    info = {"gradient_path": explainer.gradient_path, "backward_passes": res.info.get("backward_passes"),
            "active_classes": int(res.active.sum())}
seconds = time.perf_counter() - start
print(json.dumps({"peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "seconds": seconds, **info}))
"""


def run(cfg: dict) -> dict:
    # cwd: a neutral folder, so that run from the repository root `-c` (which puts the working
    # directory first on sys.path) imports the installed package, not the sources without the core.
    out = subprocess.run([sys.executable, "-c", CHILD, json.dumps(cfg)], capture_output=True, text=True,
                         cwd=tempfile.gettempdir())
    if out.returncode != 0:
        raise SystemExit(f"child failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=520)
    parser.add_argument("--method", default="gradcam++")
    parser.add_argument("--layer", default="backbone.layer4")
    parser.add_argument("--max-memory-mb", type=float, default=1024.0)
    parser.add_argument("--masks", default="dense", choices=("dense", "predicted"))
    args = parser.parse_args()
    cfg = dict(size=args.size, method=args.method, layer=args.layer, max_memory_mb=args.max_memory_mb, masks=args.masks)
    plain = run(dict(cfg, mode="forward"))
    explained = run(dict(cfg, mode="explain"))
    print(f"deeplabv3_resnet50 (random init), 1×3×{args.size}², 21 classes, {args.method} at {args.layer}, "
          f"targets {args.masks}, max_memory_mb={args.max_memory_mb:g}")
    print(f"plain forward:  peak RSS {plain['peak_mb']:7.0f} MB ({plain['seconds']:.1f} s)")
    print(f"explanation:    peak RSS {explained['peak_mb']:7.0f} MB ({explained['seconds']:.1f} s; "
          f"{explained['gradient_path']} path, {explained['backward_passes']} backward passes, "
          f"{explained['active_classes']} classes with a target)")
    verdict = "PASS" if explained["peak_mb"] < 4096 else "FAIL"
    print(f"goal: under 4096 MB peak RSS: {verdict}")


if __name__ == "__main__":
    main()
