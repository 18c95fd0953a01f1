"""A brute-force oracle of the gradient CAMs, written from their definitions.

G is the gradient of class k's target score S_k = Σ_p M_k(p)·logit_k(p) with respect to the
target layer's output A, by plain autograd through the whole model: a forward hook keeps the
tensor the layer produced in the chosen call (pytorch-grad-cam keeps the last), the images require
grad so the graph holds everything, and one `torch.autograd.grad` per class. Nothing of the
engine is used: no graph cut, no upsample shortcut, no closed form, no kernels. The CAM formulas
are pytorch-grad-cam's, written here in plain torch.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

EPS = 1e-7  # pytorch-grad-cam's min-max and XGrad-CAM eps
GRADCAMPP_EPS = 1e-6


def logits_of(output) -> torch.Tensor:
    if isinstance(output, dict):
        return output["out"]
    if isinstance(output, (tuple, list)):
        return output[0]
    return output


def layer_gradients(model, layer, images, classes, masks, call: int = -1, to_grid=None, input_of: bool = False):
    """(A [B,C,h,w], G [B,K,C,h,w], logits): the layer's output (or input) in call `call`, and the
    gradient of each class's region score with respect to it. to_grid: tokens/channels-last → [B,C,h,w]."""
    kept = []

    def keep(tensor):  # the model goes on with a copy, so an in-place op after the layer leaves `tensor` as made
        kept.append(tensor)
        return tensor.clone()

    if input_of:
        handle = layer.register_forward_pre_hook(lambda m, args: (keep(args[0]),) + tuple(args[1:]))
    else:
        handle = layer.register_forward_hook(
            lambda m, args, out: (keep(out[0]),) + tuple(out[1:]) if isinstance(out, tuple) else keep(out))
    try:
        x = images.detach().clone().requires_grad_(True)
        logits = logits_of(model(x))
    finally:
        handle.remove()
    A = kept[call]
    G = torch.stack([torch.autograd.grad((logits[:, c] * masks[:, k].to(logits)).sum(), A, retain_graph=True)[0]
                     for k, c in enumerate(classes)], dim=1)
    A = A.detach()
    if to_grid is not None:
        A = to_grid(A)
        G = torch.stack([to_grid(G[:, k]) for k in range(G.shape[1])], dim=1)
    return A, G, logits.detach()


def raw_cam(method: str, A: torch.Tensor, G: torch.Tensor) -> torch.Tensor:
    """The signed CAM [B,K,h,w] before ReLU (A [B,C,h,w], G [B,K,C,h,w]), as pytorch-grad-cam."""
    A = A.unsqueeze(1).double()
    G = G.double()
    if method == "gradcam":
        weights = G.mean(dim=(-2, -1))
    elif method == "gradcam++":
        g2, g3 = G ** 2, G ** 3
        alpha = g2 / (2 * g2 + A.sum(dim=(-2, -1), keepdim=True) * g3 + GRADCAMPP_EPS)
        alpha = torch.where(G != 0, alpha, torch.zeros_like(alpha))
        weights = (torch.relu(G) * alpha).sum(dim=(-2, -1))
    elif method == "xgradcam":
        weights = (G * A).sum(dim=(-2, -1)) / (A.sum(dim=(-2, -1)) + EPS)
    elif method == "hirescam":
        return (G * A).sum(dim=2)
    elif method == "layercam":
        return (torch.relu(G) * A).sum(dim=2)
    else:
        raise ValueError(method)
    return (weights[..., None, None] * A).sum(dim=2)


def minmax(x: torch.Tensor) -> torch.Tensor:
    x = torch.relu(x)
    flat = x.flatten(-2)
    flat = flat - flat.amin(-1, keepdim=True)
    return (flat / (flat.amax(-1, keepdim=True) + EPS)).view_as(x)


def cam_maps(method: str, A: torch.Tensor, G: torch.Tensor, size) -> torch.Tensor:
    """The displayed maps [B,K,H,W]: N(relu(R(N(relu(cam))))), R bilinear (align_corners=False)."""
    maps = minmax(raw_cam(method, A, G).float())
    return minmax(F.interpolate(maps, size=tuple(size), mode="bilinear", align_corners=False))


def compare(ours: torch.Tensor, truth: torch.Tensor, what: str, rtol: float = 1e-4) -> None:
    """ours equals truth to rtol of truth's largest magnitude (float32 rounding, a different order)."""
    scale = float(truth.abs().max())
    error = float((ours.double() - truth.double()).abs().max())
    assert error <= rtol * max(scale, 1e-30) + 1e-12, f"{what}: max abs error {error:.3g}, largest value {scale:.3g}"
