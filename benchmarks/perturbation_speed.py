"""Perturbation methods: all classes from one set of perturbed forwards, against the peer's one
call per class and against the floor (the same perturbed forwards with no explanation work).

LRASPP-MobileNetV3 (random init), one 160×160 image, 21 classes each with its own box region,
target layer backbone.6 (40 channels):
- scorecam / ablationcam for all 21 classes vs grad-cam 1.5.7's ScoreCAM / AblationCAM called
  once per class (21 calls) and vs the floor: the 40 perturbed forwards (batch 32) alone;
- rise with 1000 masks vs the floor: its 1000 forwards (batch 32) on precomputed inputs;
- the same rows on ONNX Runtime (the model exported at backbone.6) against ORT's own forwards
  (ablationcam excepted: a graph's layer cannot be replaced).
Timings alternate between the rows of one comparison in one run; medians are printed.

    python benchmarks/perturbation_speed.py [--repeats 3] [--size 160] [--masks 1000] [--peer-repeats 1] [--no-onnx]
"""
from __future__ import annotations

import argparse
import statistics
import tempfile

import torch
import torchvision.models.segmentation as tvseg

import seg_xai_fast as sx
from seg_xai_fast.engine.perturbation import rise_grids
from seg_xai_fast.kernels import reference
from timing import interleaved, timed


class _OutOnly(torch.nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model(x)["out"]


def _boxes(classes, size, seed=0):
    g = torch.Generator().manual_seed(seed)
    masks = torch.zeros(1, classes, size, size)
    for k in range(classes):
        y0, x0 = torch.randint(0, size // 2, (2,), generator=g).tolist()
        h, w = torch.randint(size // 8, size // 2, (2,), generator=g).tolist()
        masks[0, k, y0:y0 + h, x0:x0 + w] = 1.0
    return masks


def _forwards(model, inputs, batch):
    with torch.no_grad():
        for lo in range(0, inputs.shape[0], batch):
            model(inputs[lo:lo + batch])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=160)
    ap.add_argument("--masks", type=int, default=1000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--peer-repeats", type=int, default=1)
    ap.add_argument("--no-onnx", action="store_true", help="skip the ONNX Runtime rows")
    args = ap.parse_args()

    import pytorch_grad_cam as pgc
    from pytorch_grad_cam.utils.model_targets import SemanticSegmentationTarget

    torch.manual_seed(0)
    model = tvseg.lraspp_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=21).eval()
    layer = "backbone.6"
    image = torch.rand(1, 3, args.size, args.size, generator=torch.Generator().manual_seed(1))
    K = 21
    masks = _boxes(K, args.size)
    with torch.no_grad():
        acts = []
        h = model.get_submodule(layer).register_forward_hook(lambda m, i, o: acts.append(o))
        model(image)
        h.remove()
    A = acts[0]
    C = A.shape[1]
    print(f"LRASPP-MobileNetV3 (random init), {args.size}x{args.size}, {K} classes with box regions, "
          f"layer {layer} ({C} channels), torch threads {torch.get_num_threads()}")

    targets = [SemanticSegmentationTarget(k, masks[0, k].numpy()) for k in range(K)]
    wrapped = _OutOnly(model)

    def peer(cls):
        cam = cls(model=wrapped, target_layers=[model.get_submodule(layer)])
        if cls is pgc.ScoreCAM:
            cam.batch_size = 32  # the same forwards per batch as ours and the floor
        for t in targets:
            cam(input_tensor=image, targets=[t])

    def torch_case(method, perturbed, target_layer=layer, options=None, peer_cls=None):
        ex = sx.Explainer(model, target_layer, method, options=options)
        return (method, lambda: ex(image, masks=masks), lambda: _forwards(wrapped, perturbed, 32),
                f"{perturbed.shape[0]} forwards", peer_cls and (lambda: peer(peer_cls)))

    # The floors: Score-CAM's C inputs, Ablation-CAM's C ablated forwards (the image C times: the
    # layer swap itself costs nothing here), RISE's N forwards on precomputed inputs (the whole
    # method adds the mask generation, the scores of all classes and the accumulation).
    grids, shifts = rise_grids(args.masks, 7, 0.5, 0, (args.size, args.size))
    rise_options = {"n_masks": args.masks, "batch_size": 32}
    _report([
        torch_case("scorecam", reference.scorecam_inputs(image[0], A[0]), peer_cls=pgc.ScoreCAM),
        torch_case("ablationcam", image.expand(C, -1, -1, -1).contiguous(), peer_cls=pgc.AblationCAM),
        torch_case("rise", reference.rise_inputs(image[0], grids, shifts), None, rise_options),
    ], args, K)
    if not args.no_onnx:
        with tempfile.TemporaryDirectory() as tmp:
            path = sx.export_onnx(model, layer, f"{tmp}/lraspp.onnx", image, require_head=False)
            _report([_onnx_case(sx.OnnxExplainer(path, "scorecam"), reference.scorecam_inputs(image[0], A[0]),
                                image, masks),
                     _onnx_case(sx.OnnxExplainer(path, "rise", options=rise_options),
                                reference.rise_inputs(image[0], grids, shifts), image, masks)], args, K)


def _onnx_case(explainer, perturbed, image, masks):
    """A method on ONNX Runtime against the same forwards run by ORT alone."""
    def forwards():
        for lo in range(0, perturbed.shape[0], 32):
            explainer.session.run(["logits"], {"images": perturbed[lo:lo + 32].numpy()})

    return (f"{explainer.method} ORT", lambda: explainer(image, masks=masks), forwards,
            f"{perturbed.shape[0]} ORT forwards", None)


def _report(cases, args, classes) -> None:
    """One row per case (label, ours, floor, floor label, peer or None): ours and the floor timed
    in interleaved rounds, medians; the peer timed after them."""
    for label, ours_fn, floor_fn, floor_label, peer_fn in cases:
        seconds = interleaved({"ours": ours_fn, "floor": floor_fn}, args.repeats)
        o, f = seconds["ours"], seconds["floor"]
        row = f"{label:12s} ours {o * 1e3:8.1f} ms | floor ({floor_label}) {f * 1e3:8.1f} ms"
        if peer_fn is None:
            print(f"{row} | ours/floor {o / f:5.2f}x")
            continue
        p = statistics.median([timed(peer_fn) for _ in range(args.peer_repeats)])
        print(f"{row} | grad-cam ({classes} calls) {p * 1e3:9.1f} ms | ours/floor {o / f:5.2f}x | "
              f"grad-cam/ours {p / o:6.1f}x")


if __name__ == "__main__":
    main()
