"""Adapters for the models people run: Hugging Face outputs, reduced-resolution logits,
mask-classification models and token / channels-last target layers.

- as_segmenter(model): an nn.Module whose output is logits [B,L,H,W] at the input's resolution,
  from a Tensor, a dict, a Hugging Face output with ``.logits`` (SegFormer's at 1/4, upsampled
  bilinearly with align_corners=False as the library's post-processing does) or a
  mask-classification output (Mask2Former, MaskFormer, OneFormer: semantic logits
  seg_k(p) = Σ_q softmax(class_q)[k]·sigmoid(mask_q(p)), the no-object column dropped). The final
  upsample is a plain F.interpolate of a module's output, so the engine starts its backward passes
  below it (Up*(M) seeds) and finds a linear head before it.
- layer_activations: a target layer's output as A [B,C,h,w]. Tokens [B,N,C] (prefix tokens —
  CLS, distillation, registers — found from N and the grid the image size implies) and
  channels-last [B,h,w,C] are reshaped; ``reshape=`` takes pytorch-grad-cam's reshape_transform.
"""
from __future__ import annotations

from typing import Callable, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

# Mask2Former's semantic post-processing first resizes the mask logits to the size its image
# processor feeds the model, whatever the input was; MaskFormer's and OneFormer's do not.
MASK2FORMER_POSTPROCESS_SIZE = (384, 384)
MAX_PREFIX_TOKENS = 16  # CLS + distillation + registers in practice stay far below


def is_hf_model(model: nn.Module) -> bool:
    """A Hugging Face transformers model (whose output is a ModelOutput, not logits)."""
    return any(c.__module__.startswith("transformers.") for c in type(model).__mro__)


def needs_adapter(model: nn.Module) -> bool:
    return is_hf_model(model) and not isinstance(model, Segmenter)


def output_hint(output) -> str:
    """A hint for an error about a model output that as_segmenter would turn into logits."""
    if hasattr(output, "logits") or hasattr(output, "masks_queries_logits"):
        return " (a Hugging Face output: wrap the model with sx.as_segmenter(model))"
    return ""


class MaskSemantic(nn.Module):
    """Mask-classification outputs → semantic logits float [B,L,h,w], as the libraries' semantic
    post-processing: Σ_q softmax(class_q)[:L]·sigmoid(mask_q). A module, so the engine's hooks see
    its output as the logits before the final upsample."""

    def forward(self, class_logits: torch.Tensor, mask_logits: torch.Tensor) -> torch.Tensor:
        # class_logits: [B,Q,L+1] (last column: no object); mask_logits: [B,Q,h,w]
        probs = class_logits.softmax(dim=-1)[..., :-1]
        return torch.einsum("bql,bqhw->blhw", probs, mask_logits.sigmoid())


class Segmenter(nn.Module):
    """`model` with its output turned into logits [B,L,H,W] at the input's (H, W); see as_segmenter.

    Target layers may be named as in the wrapped model ("decode_head.classifier") or with the
    "model." prefix.
    """

    def __init__(self, model: nn.Module, output_key: str = "out", **forward_kwargs) -> None:
        super().__init__()
        self.model = model
        self.semantic = MaskSemantic()
        self.output_key = output_key
        self.forward_kwargs = forward_kwargs

    def forward(self, images: torch.Tensor) -> torch.Tensor:  # float [B,3,H,W] → [B,L,H,W]
        output = self.model(images, **self.forward_kwargs)
        if hasattr(output, "masks_queries_logits") and hasattr(output, "class_queries_logits"):
            masks = output.masks_queries_logits
            if type(output).__name__.startswith("Mask2Former"):
                masks = F.interpolate(masks, size=MASK2FORMER_POSTPROCESS_SIZE, mode="bilinear", align_corners=False)
            logits = self.semantic(output.class_queries_logits, masks)
        elif isinstance(getattr(output, "logits", None), torch.Tensor):
            logits = output.logits
        elif isinstance(output, dict):
            if self.output_key not in output:
                raise ValueError(f"the model returned a dict without output_key {self.output_key!r}; keys: {sorted(output)}")
            logits = output[self.output_key]
        elif isinstance(output, (tuple, list)) and output:
            logits = output[0]
        else:
            logits = output
        if not isinstance(logits, torch.Tensor) or logits.ndim != 4:
            got = list(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
            raise ValueError(f"the model output holds no segmentation logits [B,L,h,w], got {got}")
        if tuple(logits.shape[-2:]) != tuple(images.shape[-2:]):
            logits = F.interpolate(logits, size=images.shape[-2:], mode="bilinear", align_corners=False)
        return logits

    # The wrapper's train/eval mode is the wrapped model's, so ModelState sees a model in train mode.
    @property
    def training(self) -> bool:
        return self.model.training if "model" in self._modules else False

    @training.setter
    def training(self, value: bool) -> None:
        pass  # train()/eval() reach the wrapped model through the children

    def get_submodule(self, target: str) -> nn.Module:
        try:
            return super().get_submodule(target)
        except AttributeError:
            return self.model.get_submodule(target)


def as_segmenter(model: nn.Module, output_key: str = "out", **forward_kwargs) -> nn.Module:
    """`model` as an nn.Module mapping float [B,3,H,W] images to logits [B,L,H,W] at (H, W).

    Accepts Hugging Face segmentation models (outputs with ``.logits``, e.g. SegFormer at 1/4
    resolution, DPT, UperNet), mask-classification models (Mask2Former, MaskFormer, OneFormer:
    semantic logits as their semantic post-processing computes them before its argmax), and any
    model returning a Tensor, a dict (``output_key``) or a tuple. Lower-resolution logits are
    upsampled bilinearly (align_corners=False). `forward_kwargs` go to every call of the model
    (e.g. OneFormer's ``task_inputs``). The model itself is not changed; an already adapted model
    is returned as is.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if isinstance(model, Segmenter):
        return model
    return Segmenter(model, output_key, **forward_kwargs)


# --------------------------------------------------------------------------- token layers


def _grid_like(h: int, w: int, image_size: tuple) -> bool:
    """(h, w) is the image's (H, W) divided by one integer stride (rounded either way)."""
    H, W = image_size
    if not (0 < h <= H and 0 < w <= W):
        return False
    for s in {H // h, -(-H // h)}:
        if s >= 1 and h in (H // s, -(-H // s)) and w in (W // s, -(-W // s)):
            return True
    return False


def _grid_of(n: int, image_size: tuple) -> Optional[tuple]:
    """The grid (h, w) with h·w = n that the image size implies for some integer stride, rounded
    the same way in both dimensions (a patch embedding pads both or neither), or None."""
    H, W = image_size
    for s in range(1, max(H, W) + 1):
        for h, w in ((H // s, W // s), (-(-H // s), -(-W // s))):
            if h * w == n and h > 0 and w > 0:
                return h, w
    return None


def infer_reshape(shape: tuple, image_size: Optional[tuple], layer_name: str,
                  layout: Optional[str] = None, strides: tuple = (), prefix: Optional[int] = None) -> Optional[Callable]:
    """The reshape of a target layer's output `shape` to [B,C,h,w], or None when it is one already.

    [B,C,h,w] when (h, w) fits the image; [B,h,w,C] (channels-last: Swin, ConvNeXt blocks) when
    (h, w) = shape[1:3] does; tokens [B,N,C] → the last h·w tokens on the grid the image implies,
    the first P = N − h·w (CLS, distillation, register tokens) dropped. Where two readings fit, the
    module's `layout` ("channels_first" / "channels_last", see module_layout) decides for [B,·,·,·],
    the model's prefix-token count `prefix` (prefix_tokens) and patch-embedding `strides`
    (patch_strides) for tokens; where they do not, the shape is ambiguous and refused with the
    candidate readings — never chosen silently.
    """
    example = ("reshape=lambda t: t[:, P:].reshape(t.shape[0], h, w, -1).permute(0, 3, 1, 2) "
               "(pytorch-grad-cam's reshape_transform signature)")
    if len(shape) == 4:
        if image_size is None:
            return None
        first = _grid_like(shape[2], shape[3], image_size)
        last = _grid_like(shape[1], shape[2], image_size)
        if first and last and layout is None:
            raise ValueError(
                f"target_layer {layer_name!r} outputs {list(shape)}, which reads both as channels-first [B,C={shape[1]},"
                f"h={shape[2]},w={shape[3]}] and as channels-last [B,h={shape[1]},w={shape[2]},C={shape[3]}] on the "
                f"{image_size[0]}×{image_size[1]} input: pass reshape=lambda t: t (channels-first) or "
                "reshape=lambda t: t.permute(0, 3, 1, 2) (channels-last)")
        if first and (not last or layout == "channels_first"):
            return None
        if last:
            return channels_last_to_first
        return None
    if len(shape) == 3 and image_size is not None:
        n = shape[1]
        readings = [(prefix, grid) for prefix in range(min(n - 1, MAX_PREFIX_TOKENS) + 1)
                    for grid in [_grid_of(n - prefix, image_size)] if grid is not None]
        if len(readings) > 1 and prefix is not None:  # the model's own CLS/register/distillation tokens
            readings = [(p, g) for p, g in readings if p == prefix] or readings
        if len(readings) > 1:  # the patch embedding's stride tells the grid
            patched = [(p, g) for p, g in readings if any(_grid_of_stride(g, image_size, st) for st in strides)]
            readings = patched or readings
        if len(readings) == 1:
            return TokenGrid(readings[0][0], *readings[0][1])
        if len(readings) > 1:
            options = "; ".join(f"{p} prefix token{'s' if p != 1 else ''} + a {g[0]}×{g[1]} grid" for p, g in readings)
            raise ValueError(
                f"target_layer {layer_name!r} outputs tokens [B,N={n},C={shape[2]}] that read several ways on the "
                f"{image_size[0]}×{image_size[1]} input ({options}): pass {example} with the right P, h, w"
            )
        raise ValueError(
            f"target_layer {layer_name!r} outputs tokens [B,N={n},C={shape[2]}] and no grid h×w with "
            f"h·w = N − P (P ≤ {MAX_PREFIX_TOKENS} prefix tokens) fits the {image_size[0]}×{image_size[1]} "
            f"input at an integer stride; pass {example}"
        )
    raise ValueError(
        f"target_layer {layer_name!r} must output a Tensor [B,C,h,w], channels-last [B,h,w,C] or tokens "
        f"[B,N,C], got shape {list(shape)}; for other layouts pass {example}"
    )


def _grid_of_stride(grid: tuple, image_size: tuple, stride: int) -> bool:
    return all(g in (n // stride, -(-n // stride)) for g, n in zip(grid, image_size))


#: Parameter names of the tokens a transformer puts before its patch tokens (Hugging Face, timm).
PREFIX_TOKEN_NAMES = ("cls_token", "register_tokens", "reg_token", "dist_token", "distillation_token")


def prefix_tokens(model: nn.Module) -> int:
    """How many tokens the model puts before its patch tokens: the sizes of its CLS / register /
    distillation token parameters (0 for a model without them, such as SegFormer or Swin)."""
    return sum(p.shape[-2] if p.ndim >= 2 else 1 for name, p in model.named_parameters()
               if name.rsplit(".", 1)[-1] in PREFIX_TOKEN_NAMES)


def patch_strides(model: nn.Module) -> tuple:
    """The strides of the model's patch embeddings: convolutions whose kernel equals their stride (> 1)."""
    return tuple(sorted({m.stride[0] for m in model.modules() if isinstance(m, nn.Conv2d)
                         and m.stride[0] > 1 and tuple(m.kernel_size) == tuple(m.stride) and m.stride[0] == m.stride[1]}))


#: Modules whose output is channels-first [B,C,h,w] / channels-last [B,h,w,C] by construction.
CHANNELS_FIRST = (nn.Conv2d, nn.ConvTranspose2d, nn.BatchNorm2d, nn.GroupNorm, nn.InstanceNorm2d, nn.MaxPool2d,
                  nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.Upsample)
CHANNELS_LAST = (nn.Linear, nn.LayerNorm)


def module_layout(module: Optional[nn.Module]) -> Optional[str]:
    """"channels_first" / "channels_last" when the module's last submodule with a known layout
    (in registration order, the module itself included) fixes its output's, else None."""
    if module is None:
        return None
    for sub in reversed(list(module.modules())):
        if isinstance(sub, CHANNELS_FIRST):
            return "channels_first"
        if isinstance(sub, CHANNELS_LAST):
            return "channels_last"
    return None


def channels_last_to_first(t: torch.Tensor) -> torch.Tensor:  # [B,h,w,C] → [B,C,h,w]
    return t.permute(0, 3, 1, 2)


class TokenGrid:
    """tokens [B,N,C] → [B,C,h,w]: the first `prefix` tokens dropped, the rest row-major on h×w."""

    def __init__(self, prefix: int, h: int, w: int) -> None:
        self.prefix, self.h, self.w = prefix, h, w

    def __call__(self, t: torch.Tensor) -> torch.Tensor:
        return t[:, self.prefix:].reshape(t.shape[0], self.h, self.w, t.shape[2]).permute(0, 3, 1, 2)

    def __repr__(self) -> str:
        return f"TokenGrid(prefix={self.prefix}, h={self.h}, w={self.w})"


def layer_activations(tensor: torch.Tensor, reshape: Optional[Callable], image_size: Optional[tuple],
                      layer_name: str, make_leaf: bool, layout: Optional[str] = None, strides: tuple = (),
                      prefix: Optional[int] = None) -> tuple:
    """(A float [B,C,h,w], what the model gets instead of `tensor`, or None to keep it).

    Without a reshape (a [B,C,h,w] output and reshape=None) returns (tensor, None): the caller
    keeps its own path. Otherwise A = reshape(tensor); with make_leaf, A is a leaf that requires
    grad and the model gets tensor + r*(A − A₀), numerically `tensor` itself, where r* is the
    adjoint of the (linear) reshape: the gradient reaching A is then reshape(gradient at the
    layer's output), as pytorch-grad-cam applies reshape_transform to the gradients, while every
    dropped (prefix) token keeps its value and the graph still starts at the target layer.
    """
    if reshape is None:
        reshape = infer_reshape(tuple(tensor.shape), image_size, layer_name, layout, strides, prefix)
        if reshape is None:
            return tensor, None
    raw = tensor.detach()
    activations = reshape(raw)
    if not isinstance(activations, torch.Tensor) or activations.ndim != 4 or activations.shape[0] != tensor.shape[0]:
        got = list(activations.shape) if isinstance(activations, torch.Tensor) else type(activations).__name__
        raise ValueError(f"reshape of target_layer {layer_name!r}'s output {list(tensor.shape)} must give "
                         f"[B={tensor.shape[0]},C,h,w], got {got}")
    activations = activations.contiguous()
    if not make_leaf:
        return activations, None
    leaf = activations.clone().requires_grad_(True)
    with torch.enable_grad():
        x = raw.clone().requires_grad_(True)
        (back,) = torch.autograd.grad(reshape(x), x, leaf - leaf.detach(), create_graph=True)
    return leaf, raw + back
