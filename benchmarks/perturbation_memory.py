"""Check: peak memory of RISE at 512×512 against the bare forwards it runs.

    python benchmarks/perturbation_memory.py [--size 512] [--masks 256] [--runtime torch|onnxruntime]

Two fresh subprocesses (LRASPP-MobileNetV3, random init, 21 classes each with a box region, CPU):
one runs RISE for all 21 classes; the other only the same number of forwards of the image, in
batches of the size RISE used (reported in its result's info), with no explanation work. Each
prints its peak RSS (getrusage ru_maxrss: torch, the model and every temporary included).
Goal: RISE ≤ 1.3× the forwards. The N×H×W masks are never held: each is regenerated from its
s×s grid when the inputs are built and again when the scores are accumulated, so the peak does
not grow with --masks.
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
model = tvseg.lraspp_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=21).eval()
size = cfg["size"]
image = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(1))
masks = torch.zeros(1, 21, size, size)
for k in range(21):  # a different box per class
    masks[0, k, 10 * k:10 * k + size // 3, 5 * k:5 * k + size // 3] = 1
onnx_path = cfg.get("onnx")
start = time.perf_counter()
info = {}
if cfg["mode"] == "rise":
    options = {"n_masks": cfg["masks"]}
    if onnx_path:
        explainer = sx.OnnxExplainer(onnx_path, "rise", options=options)
    else:
        explainer = sx.Explainer(model, None, "rise", options=options)
    res = explainer(image, masks=masks)
    assert res.maps.shape == (1, 21, size, size) and torch.isfinite(res.maps).all()
    info = {"batch": res.info["batch"], "forwards": res.info["perturbed_forwards"]}
else:
    batch = cfg["batch"]
    inputs = image.expand(batch, -1, -1, -1).contiguous()
    if onnx_path:
        import onnxruntime as ort
        session = ort.InferenceSession(onnx_path, providers=["CPUExecutionProvider"])
        for lo in range(0, cfg["masks"], batch):
            session.run(["logits"], {"images": inputs[:min(batch, cfg["masks"] - lo)].numpy()})
    else:
        with torch.no_grad():
            for lo in range(0, cfg["masks"], batch):
                model(inputs[:min(batch, cfg["masks"] - lo)])
seconds = time.perf_counter() - start
print(json.dumps({"peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "seconds": seconds, **info}))
"""


def run(cfg: dict) -> dict:
    # cwd: a neutral folder, so that `-c` imports the installed package, not the sources without the core.
    out = subprocess.run([sys.executable, "-c", CHILD, json.dumps(cfg)], capture_output=True, text=True,
                         cwd=tempfile.gettempdir())
    if out.returncode != 0:
        raise SystemExit(f"child failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--masks", type=int, default=256)
    parser.add_argument("--runtime", default="torch", choices=("torch", "onnxruntime"))
    args = parser.parse_args()
    cfg = {"size": args.size, "masks": args.masks}
    with tempfile.TemporaryDirectory() as tmp:
        if args.runtime == "onnxruntime":
            import torch
            import torchvision.models.segmentation as tvseg

            import seg_xai_fast as sx

            torch.manual_seed(0)
            model = tvseg.lraspp_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=21).eval()
            example = torch.rand(1, 3, args.size, args.size)
            cfg["onnx"] = str(sx.export_onnx(model, "backbone.6", f"{tmp}/lraspp.onnx", example, require_head=False))
        rise = run({**cfg, "mode": "rise"})
        forwards = run({**cfg, "mode": "forwards", "batch": rise["batch"]})
    print(f"LRASPP-MobileNetV3 {args.size}×{args.size}, 21 classes, {args.masks} masks, {args.runtime}, "
          f"batches of {rise['batch']}")
    print(f"bare forwards: peak RSS {forwards['peak_mb']:8.0f} MB, {forwards['seconds']:6.1f} s")
    print(f"rise:          peak RSS {rise['peak_mb']:8.0f} MB, {rise['seconds']:6.1f} s")
    print(f"rise / forwards: memory {rise['peak_mb'] / forwards['peak_mb']:.2f}× (goal ≤ 1.3×), "
          f"time {rise['seconds'] / forwards['seconds']:.2f}×")


if __name__ == "__main__":
    main()
