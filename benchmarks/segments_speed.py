"""Segment attributions: all classes from one set of coalitions, against the floor (the same
perturbed forwards with no explanation work) and against captum 0.9 called once per class.

DeepLabV3-MobileNetV3 (random init), one generated scene, 21 classes each with its own box region, SLIC
segments (about --segments of them; scikit-image):
- featureablation: ours (M forwards) vs the floor (the same M forwards on inputs built outside
  the timer) vs captum's FeatureAblation with the same feature mask, once per class;
- kernelshap with --samples coalitions: the same three (captum's KernelShap with the same
  feature mask and n_samples).
captum runs --peer-classes of the 21 classes (one call each) and its time is scaled to 21 calls
(its cost is linear in the number of calls: each call runs all its forwards again); the printout
says so. Batches of 32 everywhere (captum's perturbations_per_eval=32).

    python benchmarks/segments_speed.py [--size 256] [--segments 64] [--samples 2000] [--peer-classes 21]
"""
from __future__ import annotations

import argparse

import torch
import torchvision.models.segmentation as tvseg

import seg_xai_fast as sx
from seg_xai_fast import kernels
from seg_xai_fast.engine.segments import segment_features, shapley_coalitions

# the same peer wrapper and box regions as the perturbation benchmark, the shared timer (the script's folder is on sys.path)
from perturbation_speed import _boxes, _OutOnly  # noqa: E402
from timing import timed  # noqa: E402

BATCH = 32


def _floor(model, image, seg, keep) -> float:
    """Seconds of the forwards alone of coalitions keep [n,M], each batch's inputs built untimed."""
    total = 0.0
    with torch.no_grad():
        for lo in range(0, keep.shape[0], BATCH):
            inputs = kernels.segment_inputs(image, torch.zeros_like(image), seg, keep[lo:lo + BATCH])
            total += timed(lambda: model(inputs))
    return total


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--segments", type=int, default=64)
    ap.add_argument("--samples", type=int, default=2000, help="kernelshap's n_samples (ours and captum's)")
    ap.add_argument("--peer-classes", type=int, default=21, help="classes captum runs (its time is scaled to 21)")
    args = ap.parse_args()
    from captum.attr import FeatureAblation, KernelShap

    torch.manual_seed(0)
    model = tvseg.deeplabv3_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=21).eval()
    wrapped = _OutOnly(model)
    image = sx.synthetic_scenes(1, seed=1, size=args.size)[0]  # structure for SLIC (white noise gives one segment)
    K = 21
    masks = _boxes(K, args.size)
    seg, M = segment_features("slic", image, None, args.segments)[0]
    print(f"DeepLabV3-MobileNetV3 (random init), {args.size}x{args.size}, {K} classes with box regions, "
          f"{M} SLIC segments, batch {BATCH}, torch threads {torch.get_num_threads()}")
    feature_mask = seg[None, None]
    P = min(args.peer_classes, K)

    def peer(cls, **kw):
        for k in range(P):
            def score(x, k=k):
                return (wrapped(x)[:, k] * masks[0, k]).sum(dim=(1, 2))
            with torch.no_grad():
                cls(score).attribute(image, baselines=0.0, feature_mask=feature_mask, perturbations_per_eval=BATCH, **kw)

    rows = [("featureablation", {}, ~torch.eye(M, dtype=torch.bool), FeatureAblation, {})]
    keep, _, _ = shapley_coalitions(M, args.samples, 0)
    keep = torch.cat([torch.zeros(1, M, dtype=torch.bool), keep])  # the empty coalition is one of the forwards
    rows.append(("kernelshap", {"n_samples": args.samples}, keep, KernelShap, {"n_samples": args.samples}))
    with torch.no_grad():  # warm-up: oneDNN prepares each batch shape on its first forward
        for n in sorted({1, BATCH} | {c.shape[0] % BATCH for _, _, c, _, _ in rows} - {0}):
            model(image.expand(n, -1, -1, -1))
    for method, opts, coalitions, peer_cls, peer_kw in rows:
        ex = sx.Explainer(model, None, method, options={"features": seg[None], "batch_size": BATCH, **opts})
        ours = timed(lambda: ex(image, masks=masks))
        floor = _floor(model, image[0], seg, coalitions)
        captum = timed(lambda: peer(peer_cls, **peer_kw)) * K / P
        scaled = "" if P == K else f", measured on {P} classes x {K / P:.1f}"
        print(f"{method:16s} ours {ours:8.2f} s | floor ({coalitions.shape[0]} forwards) {floor:8.2f} s | "
              f"captum ({K} calls{scaled}) {captum:9.1f} s | ours/floor {ours / floor:5.2f}x | "
              f"captum/ours {captum / ours:6.1f}x")


if __name__ == "__main__":
    main()
