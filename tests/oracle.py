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


MASK2FORMER_SIZE = (384, 384)  # where Hugging Face's semantic post-processing upsamples the mask logits


def logits_of(output, image_size) -> torch.Tensor:
    """The semantic logits [B,L,H,W] at the image's size, as the libraries' post-processing makes
    them: torchvision's dict, Hugging Face's output objects (Mask2Former: Σ_q softmax(class_q)[:L]·
    sigmoid(mask_q), masks at 384² first), a tuple's first element; bilinear to the image's size."""
    if hasattr(output, "masks_queries_logits"):  # (Hugging Face's outputs are dicts too: first)
        masks = output.masks_queries_logits
        if type(output).__name__.startswith("Mask2Former"):
            masks = F.interpolate(masks, size=MASK2FORMER_SIZE, mode="bilinear", align_corners=False)
        logits = torch.einsum("bql,bqhw->blhw", output.class_queries_logits.softmax(-1)[..., :-1], masks.sigmoid())
    elif hasattr(output, "logits"):
        logits = output.logits
    elif isinstance(output, dict):
        logits = output["out"]
    elif isinstance(output, (tuple, list)):
        logits = output[0]
    else:
        logits = output
    if tuple(logits.shape[-2:]) != tuple(image_size):
        logits = F.interpolate(logits, size=tuple(image_size), mode="bilinear", align_corners=False)
    return logits


def layer_gradients(model, layer, images, classes, masks, call: int = -1, to_grid=None, input_of: bool = False,
                    second_order: bool = False):
    """(A [B,C,h,w], G [B,K,C,h,w], logits): the layer's output (or input) in call `call`, and the
    gradient of each class's region score with respect to it. to_grid: tokens/channels-last → [B,C,h,w].
    second_order: G is ShapleyCAM's g − ½·H·A instead (H·A by differentiating g·A again)."""
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
        logits = logits_of(model(x), images.shape[-2:])
    finally:
        handle.remove()
    A = kept[call]
    grads = []
    for k, c in enumerate(classes):
        score = (logits[:, c] * masks[:, k].to(logits)).sum()
        g = torch.autograd.grad(score, A, retain_graph=True, create_graph=second_order)[0]
        if second_order:
            hvp = torch.autograd.grad(g, A, grad_outputs=A.detach(), retain_graph=True, allow_unused=True)[0]
            g = g.detach() - 0.5 * (0 if hvp is None else hvp)
        grads.append(g)
    G = torch.stack(grads, dim=1)
    A = A.detach()
    if to_grid is not None:
        A = to_grid(A)
        G = torch.stack([to_grid(G[:, k]) for k in range(G.shape[1])], dim=1)
    return A, G, logits.detach()


def raw_cam(method: str, A: torch.Tensor, G: torch.Tensor) -> torch.Tensor:
    """The signed CAM [B,K,h,w] before ReLU (A [B,C,h,w], G [B,K,C,h,w]), as pytorch-grad-cam."""
    A = A.unsqueeze(1).double()
    G = G.double()
    if method in ("gradcam", "shapleycam"):  # (ShapleyCAM: G is g − ½·H·A, see layer_gradients)
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
    return combined_maps([(A, G)], method, size)


def combined_maps(layers, method: str, size) -> torch.Tensor:
    """Several layers' (A, G) → N(mean_l R(N(relu(cam_l)))) [B,K,H,W], pytorch-grad-cam's aggregation
    (one layer: the single-layer map)."""
    resized = [F.interpolate(minmax(raw_cam(method, A, G).float()), size=tuple(size), mode="bilinear",
                             align_corners=False) for A, G in layers]
    return minmax(torch.stack(resized).mean(dim=0))


def compare(ours: torch.Tensor, truth: torch.Tensor, what: str, rtol: float = 1e-4) -> None:
    """ours equals truth to rtol of truth's largest magnitude (float32 rounding, a different order)."""
    scale = float(truth.abs().max())
    error = float((ours.double() - truth.double()).abs().max())
    assert error <= rtol * max(scale, 1e-30) + 1e-12, f"{what}: max abs error {error:.3g}, largest value {scale:.3g}"
