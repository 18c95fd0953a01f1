"""FullGrad (Srinivas & Fleuret 2019): the input gradient and the bias gradients of every layer.

An input-space method (target_layer=None). One forward pass with the images as the leaf of the
graph records the output z_l of every nn.Conv2d / nn.BatchNorm2d with a bias (the layers
pytorch-grad-cam's FullGrad takes: exactly those types, in the model's registration order); then,
per chunk of classes, one backward to the input gives ∂S_k/∂x and every ∂S_k/∂z_l at once, and

    raw_k = Σ_c R(N(|x·∂S_k/∂x|_c)) + Σ_l Σ_c R(N(|b_l·∂S_k/∂z_l|_c)),   map_k = N(raw_k)

(method_maths.fullgrad_map; N = per-channel min-max, R = bilinear resize to the input size, b_l the
conv bias or BatchNorm's effective bias β − μ·γ/√(σ² + ε)). Unlike the layer methods this backward
runs through the whole network, so it costs about as much as the peer's per class; the saving is
the one forward for all classes and the channel sums taken before the resize.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from .. import kernels
from ..kernels import reference
from .capture import ForwardCapture, ModelState, select_output
from .checks import check_classes
from .gradients import chunked_vjps
from .method_maths import fullgrad_map
from .outputs import Explanation, labels_and_seeds

#: The module types whose biases FullGrad sums (exact types, as pytorch-grad-cam).
BIAS_TYPES = (nn.Conv2d, nn.BatchNorm2d)


def bias_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """(dotted name, module) of every Conv2d / BatchNorm2d below `model` that has a bias."""
    return [(name, m) for name, m in model.named_modules()
            if m is not model and type(m) in BIAS_TYPES and m.bias is not None]


def effective_bias(name: str, module: nn.Module) -> torch.Tensor:
    """The bias float [C] added to the layer's output: a conv's own, or eval-mode BatchNorm's
    β − μ·γ/√(σ² + ε)."""
    if isinstance(module, nn.BatchNorm2d):
        if module.running_mean is None or module.running_var is None:
            raise ValueError(f"method 'fullgrad' needs the running statistics of BatchNorm2d {name!r} "
                             "(track_running_stats=True) for its effective bias; it has none")
        scale = module.weight / torch.sqrt(module.running_var + module.eps)
        return (module.bias - module.running_mean * scale).detach()
    return module.bias.detach()


def explain_fullgrad(explainer, forwards, images: torch.Tensor, classes, masks, resolution: str) -> Explanation:
    """FullGrad's runner: maps float32 [B,K,H,W] of checked `images` float [B,3,H,W] for
    `explainer`'s settings (a PyTorch explainer: FullGrad differentiates the whole model)."""
    if resolution != "full":
        raise ValueError(f"resolution must be 'full' for method 'fullgrad', which has no target layer, got {resolution!r}")
    if torch.is_inference_mode_enabled():
        raise RuntimeError("method 'fullgrad' needs gradients, which torch.inference_mode() forbids: call the "
                           "explainer outside torch.inference_mode()")
    model = explainer.model
    layers = bias_layers(model)
    with ModelState(model):
        biased: list = []  # (name, module, output z_l) per call, in call order

        def keep(name):
            def hook(module, inputs, output):
                if isinstance(output, torch.Tensor) and output.requires_grad:
                    biased.append((name, module, output))
                    # the model goes on with a copy, so that an in-place op after the layer
                    # (ReLU(inplace=True)) leaves z_l, the tensor differentiated below, as it was
                    return output.clone()
            return hook

        handles = [m.register_forward_hook(keep(name)) for name, m in layers]
        # The images are the leaf: ForwardCapture on the model's input (and it finds the pre-upsample
        # logits where the backward starts, as for the layer methods). The backward passes run inside
        # it: the capture gives the images' requires_grad flag back on exit.
        with ForwardCapture(model, model, "input", use_input=True, leaf=True) as cap:
            try:
                with torch.enable_grad():
                    logits = select_output(model(images), explainer.output_key, images.shape[0])
                x = cap.activations()
                start, upsample = cap.backward_start(logits)
            finally:
                for h in handles:
                    h.remove()
            class_ids = check_classes(classes, logits.shape[1], explainer.class_names)
            labels, seeds = labels_and_seeds(logits.detach(), None, class_ids, masks, upsample, explainer.backend)
            active = seeds.flatten(2).ne(0).any(dim=2)  # [B,K]
            biases = [effective_bias(name, m).to(x.device) for name, m, _ in biased]
            leaves = [x] + [z for _, _, z in biased]
            maps = _fullgrad_maps(explainer, x, start, leaves, biases, seeds, class_ids, active)
    return Explanation(maps=maps, classes=class_ids, labels=labels, active=active, method=explainer.method, layer="input",
                       info={"gradient_path": "autograd", "backward_start": "logits before upsample" if upsample
                             else "model output", "backward_passes": int(active.any(dim=0).sum()),
                             "bias_layers": len(biased)},
                       class_names=explainer.class_names)


def _fullgrad_maps(explainer, x, start, leaves, biases, seeds, class_ids, active) -> torch.Tensor:
    """Per-chunk backwards to every leaf (x, then each z_l) and the FullGrad maps float32 [B,K,H,W]."""
    B, K = active.shape
    H, W = x.shape[-2:]
    maps = torch.zeros(B, K, H, W, device=x.device, dtype=torch.float32)
    if explainer.class_chunk is not None:
        chunk = explainer.class_chunk
    else:  # per class: every leaf's gradient, ~twice that in backward temporaries and in |b·g|, the maps
        per_class = 4 * (3 * sum(t.numel() for t in leaves) + 2 * B * H * W)
        chunk = max(1, int(explainer.max_memory_mb * 2**20 // per_class))
    for ks, grads in chunked_vjps(start, leaves, seeds, class_ids, active, chunk, explainer.vjp == "batched"):
        # a bias layer the target does not reach (allow_unused) contributes nothing
        terms = [(b, g) for b, g in zip(biases, grads[1:]) if g is not None]
        gx = grads[0] if grads[0] is not None else torch.zeros((len(ks),) + tuple(x.shape), device=x.device)
        raw = fullgrad_map(x.detach(), gx, terms)  # [n,B,H,W]
        if not torch.isfinite(raw).all():
            raise FloatingPointError(f"FullGrad gradients contain NaN or Inf (classes {[class_ids[k] for k in ks]})")
        raw = raw.transpose(0, 1)
        maps[:, ks] = kernels.normalize_maps(raw, backend=explainer.backend) if explainer.normalize else raw
    return maps * active[:, :, None, None]
