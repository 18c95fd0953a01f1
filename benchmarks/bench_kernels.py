"""pytest-benchmark suite: each CAM-stage op, reference vs fused, at the realistic sizes.

    pytest benchmarks/bench_kernels.py --benchmark-group-by=param:op -q
Compare ratios within one run; for a table with the memory floor use kernels_table.py.
"""
from __future__ import annotations

import pytest
import torch

from seg_xai_fast import kernels, reference

# B=1, K=21 classes, layer4 of DeepLabV3-ResNet50 at 256² / MobileNetV3-large last stage at 512².
SHAPES = {"r50-256": (1, 21, 2048, 32, 32, (256, 256)), "mnv3-512": (1, 21, 960, 32, 32, (512, 512))}


@pytest.fixture(scope="module", params=list(SHAPES))
def inputs(request):
    B, K, C, h, w, size = SHAPES[request.param]
    g = torch.Generator().manual_seed(0)
    A = torch.rand(B, C, h, w, generator=g)  # [B,C,h,w]
    G = torch.randn(B, K, C, h, w, generator=g)  # [B,K,C,h,w]
    return A, G, size


OPS = {
    "gradcam++ stage": (
        lambda A, G, s: reference.cam_from_gradients(A, G, "gradcam++", s),
        lambda A, G, s: kernels.cam_from_gradients(A, G, "gradcam++", s, backend="fused"),
    ),
    "weights gradcam++": (
        lambda A, G, s: reference.channel_weights(A, G, "gradcam++"),
        lambda A, G, s: kernels.channel_weights(A, G, "gradcam++", backend="fused"),
    ),
    "layercam stage": (
        lambda A, G, s: reference.cam_from_gradients(A, G, "layercam", s),
        lambda A, G, s: kernels.cam_from_gradients(A, G, "layercam", s, backend="fused"),
    ),
    "floor G.sum()": (lambda A, G, s: G.sum(), lambda A, G, s: G.sum()),
}


@pytest.mark.parametrize("backend", ["torch", "fused"])
@pytest.mark.parametrize("op", list(OPS))
def test_bench(benchmark, inputs, op, backend):
    A, G, size = inputs
    fn = OPS[op][backend == "fused"]
    benchmark.pedantic(fn, args=(A, G, size), rounds=3, warmup_rounds=1)
