"""The bundled demo model: a small encoder-decoder trained on ``scenes.synthetic_scenes``.

Layout (for an input of H x W; sizes are ceil-divided, so any H, W >= 1 works)::

    x [B,3,H,W] in [0,1] -> (x - mean) / std
    encoder.stem    conv s2, conv          -> [B, 16, H/2,  W/2]
    encoder.stage2  conv s2, conv          -> [B, 32, H/4,  W/4]
    encoder.stage3  conv s2, conv          -> [B, 64, H/8,  W/8]
    encoder.stage4  conv s2, conv, conv d2 -> [B, 96, H/16, W/16]  (bottleneck)
    decoder.up8     upsample + cat stage3, conv -> [B, 64, H/8, W/8]
    decoder.up4     upsample + cat stage2, conv -> [B, 32, H/4, W/4]
    decoder.up2     upsample + cat stem, conv   -> [B, 24, H/2, W/2]  (ends at ReLU)
    classifier      1x1 conv                    -> [B, 4, H/2, W/2]
    F.interpolate(size=(H, W), bilinear, align_corners=False) -> logits [B, 4, H, W]

(every "conv" is 3x3 conv + BatchNorm + ReLU)

``decoder`` is the recommended CAM target layer: post-ReLU features at half resolution
followed by exactly "1x1 conv, then bilinear upsample", the head that the analytic
gradient path recognises. ``encoder.stage4`` (1/16) and ``decoder.up8`` (1/8) are the
deeper, coarser choices.
ReLUs are not in-place, so forward/backward hooks on any module see intact tensors.
"""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from .scenes import NUM_CLASSES

WEIGHTS_PATH = Path(__file__).resolve().parent / "data" / "demo_model.pt"


def _conv(cin, cout, stride=1, dilation=1):
    """3x3 conv + BatchNorm + ReLU; padding keeps size (ceil(H/stride))."""
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride=stride, padding=dilation, dilation=dilation, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(),
    )


class _Encoder(nn.Module):
    def __init__(self, widths):
        super().__init__()
        c1, c2, c3, c4 = widths
        self.stem = nn.Sequential(_conv(3, c1, 2), _conv(c1, c1))
        self.stage2 = nn.Sequential(_conv(c1, c2, 2), _conv(c2, c2))
        self.stage3 = nn.Sequential(_conv(c2, c3, 2), _conv(c3, c3))
        # Most of the capacity sits at 1/16, where it is cheap. With the dilated conv
        # the receptive field is ~200 px: every pixel of an object (<= 60 px across)
        # sees the whole outline, which is what tells a disc from a square.
        self.stage4 = nn.Sequential(_conv(c3, c4, 2), _conv(c4, c4), _conv(c4, c4, dilation=2))

    def forward(self, x):
        """x: float32 [B,3,H,W] normalised. Returns features at 1/2, 1/4, 1/8, 1/16."""
        f2 = self.stem(x)
        f4 = self.stage2(f2)
        f8 = self.stage3(f4)
        return f2, f4, f8, self.stage4(f8)


class _UpBlock(nn.Module):
    """Bilinear upsample to the skip's size, concatenate, 3x3 conv + BN + ReLU."""

    def __init__(self, cin, cskip, cout):
        super().__init__()
        self.conv = _conv(cin + cskip, cout)

    def forward(self, x, skip):
        x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
        return self.conv(torch.cat([x, skip], 1))


class _Decoder(nn.Module):
    def __init__(self, widths, dec_widths):
        super().__init__()
        c1, c2, c3, c4 = widths
        d8, d4, d2 = dec_widths
        self.up8 = _UpBlock(c4, c3, d8)
        self.up4 = _UpBlock(d8, c2, d4)
        self.up2 = _UpBlock(d4, c1, d2)

    def forward(self, feats):
        """feats: (f2, f4, f8, f16) from the encoder. Returns float32 [B, d2, H/2, W/2], post-ReLU."""
        f2, f4, f8, f16 = feats
        return self.up2(self.up4(self.up8(f16, f8), f4), f2)


class DemoSegNet(nn.Module):
    """Small segmentation net for the synthetic shape scenes (0.42 M parameters)."""

    def __init__(self, num_classes=NUM_CLASSES, widths=(16, 32, 64, 96), dec_widths=(64, 32, 24)):
        super().__init__()
        # Normalisation lives in the model so callers pass plain [0,1] images.
        self.register_buffer("mean", torch.full((1, 3, 1, 1), 0.5))
        self.register_buffer("std", torch.full((1, 3, 1, 1), 0.25))
        self.encoder = _Encoder(widths)
        self.decoder = _Decoder(widths, dec_widths)
        self.classifier = nn.Conv2d(dec_widths[-1], num_classes, kernel_size=1)

    def forward(self, x):
        """x: float32 [B,3,H,W] in [0,1]. Returns logits float32 [B,NUM_CLASSES,H,W] (pre-softmax)."""
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"DemoSegNet: x must have shape [B,3,H,W], got {tuple(x.shape)}")
        a = self.decoder(self.encoder((x - self.mean) / self.std))
        z = self.classifier(a)
        return F.interpolate(z, size=x.shape[-2:], mode="bilinear", align_corners=False)


def demo_model(device=None):
    """The pretrained ``DemoSegNet``, in eval mode, on ``device`` (default CPU).

    Parameters keep ``requires_grad=True`` so gradient-based CAMs work out of the box.
    """
    if not WEIGHTS_PATH.is_file():
        raise FileNotFoundError(
            f"demo_model: weights file not found at {WEIGHTS_PATH}; "
            "run `python tools/train_demo_model.py` to create it")
    state = torch.load(WEIGHTS_PATH, map_location="cpu", weights_only=True)
    # Stored as fp16 when that keeps the file small; the model always runs in fp32.
    state = {k: (v.float() if v.is_floating_point() else v) for k, v in state.items()}
    model = DemoSegNet()
    model.load_state_dict(state)
    return model.to(device).eval()


def per_class_iou(pred, target, num_classes=NUM_CLASSES):
    """IoU of each class, accumulated over the whole batch (not averaged per image).

    pred, target: int64 ``[n, H, W]`` class indices. Returns float64 ``[num_classes]``:
    IoU_c = |pred==c & target==c| / |pred==c | target==c| summed over all pixels of all
    images; a class absent from both gets IoU 1. mIoU is the plain mean of this vector,
    background included.
    """
    idx = (target.reshape(-1) * num_classes + pred.reshape(-1)).long()
    conf = torch.bincount(idx, minlength=num_classes * num_classes).reshape(num_classes, num_classes).double()
    inter = conf.diagonal()
    union = conf.sum(0) + conf.sum(1) - inter
    return torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(inter))
