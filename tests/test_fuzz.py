"""A fuzzer: generated awkward graphs (and real architectures) against the brute-force oracle.

Each case draws, from its seed, a small segmenter around a target layer — what sits above the
layer (in-place activations, dilated and subclassed convolutions, identity taps with skips,
recorded outputs, auxiliary heads, clamps, foldable and non-foldable modules, the final upsample
and its align_corners), the input size (1 pixel, odd), batch, dtype (float32/float64), memory
format, the initialisation (the library's, or nearly flat logits), train or eval mode — and a
method. Every case either equals the oracle (≤ 1e-4 of the largest value) or is refused with a
clear error; no case may return a wrong map. The explainer is used twice per case (its cached
checks and head must hold on a second, different batch).

`pytest tests/test_fuzz.py` runs the quick subset (CI); `pytest -m fuzz tests/test_fuzz.py` the
full sweep (500 generated cases and the real architectures). The gradients are compared channel by channel (a probe method whose map is G itself), the maps
wherever they are well conditioned (see _conditioned). A failure names its seed:
`pytest "tests/test_fuzz.py::test_generated_graph[seed-123]"` reruns it.
"""
import random

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import seg_xai_fast as sx
from conftest import torchvision_model
from peers import OutOnly
from oracle import cam_maps, compare, layer_gradients, raw_cam
from seg_xai_fast.engine.methods import remove_method

QUICK = range(24)
FULL = range(24, 524)
METHODS = ("gradcam", "gradcam++", "xgradcam", "hirescam", "layercam")


class StdConv2d(nn.Conv2d):
    """Weight-standardised convolution: a subclass whose forward is not F.conv2d of .weight."""

    def forward(self, x):
        w = self.weight
        w = (w - w.mean(dim=(1, 2, 3), keepdim=True)) / (w.std(dim=(1, 2, 3), keepdim=True) + 1e-5)
        return F.conv2d(x, w, self.bias, self.stride, self.padding, self.dilation, self.groups)


class Recorder(nn.Module):
    def __init__(self, channels):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x):
        self.recorded = self.conv(x)
        return self.recorded


class Pair(nn.Module):
    """A layer returning a tuple whose second element is computed from the first, inside it."""

    def __init__(self, channels):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x):
        a = self.conv(x)
        return a, a.mean(dim=1, keepdim=True)


class Generated(nn.Module):
    """stem → [tap] → layer (the target) → the drawn blocks above it → head → final upsample."""

    def __init__(self, rng: random.Random, channels: int, classes: int):
        super().__init__()
        C = channels
        self.choice = {
            "stem_bn": rng.random() < 0.5,
            "stride": rng.choice([1, 2]),
            "inplace": rng.random() < 0.3,
            "above": rng.choice(["none", "dilated", "stdconv", "recorder", "skip"]),
            "dilation": rng.randint(1, 8),
            "head": rng.choice(["linear", "linear_bn", "linear_dropout", "conv3", "linear_bn_batchstats"]),
            "aux": rng.random() < 0.3,
            "clamp": rng.random() < 0.2,
            "upsample": rng.choice(["interpolate", "interpolate_ac", "module_ac", "none"]),
            "target": rng.choice(["layer", "layer", "head_input", "pair"]),
        }
        c = self.choice
        self.stem = nn.Sequential(nn.Conv2d(3, C, 3, padding=1), *([nn.BatchNorm2d(C)] if c["stem_bn"] else []))
        self.layer = nn.Conv2d(C, C, 3, stride=c["stride"], padding=1)
        self.act = nn.ReLU(inplace=c["inplace"])
        d = c["dilation"]
        self.dilated = nn.Conv2d(C, C, 3, padding=d, dilation=d)
        self.stdconv = StdConv2d(C, C, 3, padding=d, dilation=d)
        self.recorder = Recorder(C)
        self.skip = nn.Conv2d(C, C, 1)
        head = {"linear": [], "linear_bn": [nn.BatchNorm2d(C)], "linear_dropout": [nn.Dropout2d(0.3)],
                "conv3": [], "linear_bn_batchstats": [nn.BatchNorm2d(C, track_running_stats=False)]}[c["head"]]
        self.head = nn.Sequential(*head, nn.Conv2d(C, classes, 3 if c["head"] == "conv3" else 1,
                                                   padding=1 if c["head"] == "conv3" else 0))
        self.aux = nn.Conv2d(C, classes, 1)
        self.up = nn.UpsamplingBilinear2d(scale_factor=c["stride"])
        self.pair = Pair(C)

    def forward(self, x):
        c = self.choice
        h = torch.relu(self.stem(x))
        a = self.act(self.layer(h))
        if c["target"] == "pair":
            a, m = self.pair(a)
            a = a * torch.sigmoid(m)
        if c["above"] == "dilated":
            a = torch.relu(self.dilated(a))
        elif c["above"] == "stdconv":
            a = torch.relu(self.stdconv(a))
        elif c["above"] == "recorder":
            a = torch.relu(self.recorder(a)) + self.skip(self.recorder.recorded)
        elif c["above"] == "skip":
            a = a + self.skip(a)
        z = self.head(a)
        if c["aux"]:
            self.aux_logits = self.aux(a)  # an auxiliary head after the main one, unused by the output
        if c["clamp"]:
            z = torch.clamp(z, min=-0.2)
        size = x.shape[-2:]
        if c["upsample"] == "interpolate" or (c["upsample"] == "none" and z.shape[-2:] != size):
            return F.interpolate(z, size=size, mode="bilinear", align_corners=False)
        if c["upsample"] == "interpolate_ac":
            return F.interpolate(z, size=size, mode="bilinear", align_corners=True)
        if c["upsample"] == "module_ac" and z.shape[-2:] != size and all(n * c["stride"] == m for n, m in
                                                                          zip(z.shape[-2:], size)):
            return self.up(z)
        return F.interpolate(z, size=size, mode="bilinear") if z.shape[-2:] != size else z


def generated_case(seed: int):
    """(model, images for two calls, classes, method, explainer kwargs, a description) of case `seed`."""
    rng = random.Random(seed)
    torch.manual_seed(seed)
    channels, classes = rng.randint(2, 8), rng.randint(2, 4)
    model = Generated(rng, channels, classes)
    model(torch.rand(2, 3, 12, 12))  # running statistics away from their defaults (train mode)
    flat = rng.random() < 0.3  # nearly flat logits, as an untrained transformer's
    if flat:
        with torch.no_grad():
            model.head[-1].weight.mul_(1e-6)
            model.aux.weight.mul_(1e-6)
            model.aux.bias.copy_(model.head[-1].bias)
    train = rng.random() < 0.15
    model.train(train)
    size = (rng.choice([1, 2, 5, 7, 12, 17]), rng.choice([1, 3, 8, 13, 16]))
    batch = rng.randint(1, 3)
    dtype = torch.float64 if rng.random() < 0.2 else torch.float32
    channels_last = rng.random() < 0.2
    model = model.to(dtype)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    images = [torch.rand(batch, 3, *size, generator=torch.Generator().manual_seed(seed * 10 + i), dtype=dtype) * scale
              for i, scale in enumerate((rng.choice([0.01, 1.0]), rng.choice([1.0, 20.0])))]
    if channels_last:
        images = [im.contiguous(memory_format=torch.channels_last) for im in images]
    picked = rng.sample(range(classes), rng.randint(1, classes))
    method = rng.choice(METHODS)
    layer = {"layer": "layer", "pair": "pair", "head_input": sx.InputOf("head")}[model.choice["target"]]
    description = (f"seed {seed}: {model.choice}, C={channels}, L={classes}, size={size}, batch={batch}, {dtype}, "
                   f"channels_last={channels_last}, flat={flat}, train={train}, method={method}, classes={picked}")
    return model, images, picked, method, {}, description, layer


def _masks(batch, classes, size, seed):
    g = torch.Generator().manual_seed(seed)
    masks = (torch.rand(batch, classes, *size, generator=g) > 0.5).float()
    masks[..., 0, 0] = 1  # never empty
    return masks


def _gradient_channel(activations, gradients, channel=0):
    """A probe registered as a method: the raw map is channel `channel` of G itself [B,K,h,w], so the
    fuzzer compares the gradients the shortcuts produce, not only what a CAM formula makes of them."""
    return gradients[:, :, channel]


@pytest.fixture(scope="module", autouse=True)
def gradient_probe():
    sx.register_method("fuzz_gradient_channel", cam=_gradient_channel, options={"channel": 0})
    yield
    remove_method("fuzz_gradient_channel")


def _conditioned(A, G, method) -> torch.Tensor:
    """bool [B,K]: classes whose map is well conditioned — the range of the raw CAM at least 1e-2 of
    Σ_c |G·A|, the scale of its terms. Below that the map is rounding noise amplified by min-max
    (weights that cancel, as Grad-CAM's mean gradient through batch-statistics BatchNorm), for the
    oracle as for us; the gradients themselves are still compared."""
    raw = torch.relu(raw_cam(method, A, G))
    spread = raw.flatten(2).amax(2) - raw.flatten(2).amin(2)
    terms = (G.double() * A.double().unsqueeze(1)).abs().sum(dim=2).flatten(2).amax(2)
    return spread >= 1e-2 * terms


def check_case(model, images, classes, method, kwargs, description, layer="layer"):
    input_of = isinstance(layer, sx.InputOf)
    module = model.get_submodule(layer.layer if input_of else layer)
    was_training = model.training
    explainer = sx.Explainer(model, layer, method, **kwargs)
    probes = {}
    for i, batch in enumerate(images):
        masks = _masks(batch.shape[0], len(classes), batch.shape[-2:], i)
        try:
            res = explainer(batch, classes=classes, masks=masks)
        except (ValueError, RuntimeError) as err:  # a refusal must explain itself, or be the model's own
            if "target_layer" in str(err) or "method" in str(err):
                return "refused"
            with pytest.raises(type(err)):
                model(batch)  # the model itself cannot run on this input
            return "the model cannot run"
        assert model.training == was_training, f"{description}: the model's mode was changed"
        model.eval()
        A, G, _ = layer_gradients(model, module, batch, classes, masks, input_of=input_of)
        model.train(was_training)
        for c in range(G.shape[2]):  # the gradients, channel by channel, at the layer's resolution
            probe = probes.setdefault(c, sx.Explainer(model, layer, "fuzz_gradient_channel", normalize=False,
                                                      options={"channel": c}, **kwargs))
            got = probe(batch, classes=classes, masks=masks, resolution="layer")
            compare(got.maps, G[:, :, c], f"{description}, call {i}: gradients, channel {c} "
                                          f"({got.info.get('gradient_path')})")
        conditioned = _conditioned(A, G, method)
        if bool(conditioned.any()):
            truth = cam_maps(method, A, G, batch.shape[-2:])
            compare(res.maps[conditioned], truth[conditioned],
                    f"{description}, call {i}: {method} maps ({res.info.get('gradient_path')})")
    return res.info.get("gradient_path")


@pytest.mark.filterwarnings("ignore:.*fast gradient path is not exact:UserWarning")
@pytest.mark.filterwarnings("ignore:.*train mode:UserWarning")
@pytest.mark.parametrize("seed", [pytest.param(s, id=f"seed-{s}") for s in QUICK]
                         + [pytest.param(s, id=f"seed-{s}", marks=pytest.mark.fuzz) for s in FULL])
def test_generated_graph(seed):
    check_case(*generated_case(seed))


def test_the_generator_covers_every_choice():
    """The quick subset reaches each kind of block (so it tests what it claims)."""
    seen = {}
    for seed in QUICK:
        model = generated_case(seed)[0]
        for key, value in model.choice.items():
            seen.setdefault(key, set()).add(value)
    assert seen["above"] == {"none", "dilated", "stdconv", "recorder", "skip"}
    assert seen["target"] == {"layer", "head_input", "pair"}
    assert seen["upsample"] >= {"interpolate", "interpolate_ac", "module_ac"}
    assert {True, False} <= seen["aux"] and {True, False} <= seen["clamp"] and {True, False} <= seen["inplace"]
    assert len(seen["head"]) == 5


# --------------------------------------------------------------------------- real architectures (full sweep)


def _smp(arch, encoder):
    smp = pytest.importorskip("segmentation_models_pytorch")
    torch.manual_seed(0)
    return getattr(smp, arch)(encoder_name=encoder, encoder_weights=None, classes=4).eval()


REAL = {
    "deeplabv3_mobilenet_v3_large@backbone.16": (lambda: torchvision_model("deeplabv3_mobilenet_v3_large", 5), "backbone.16", 64),
    "deeplabv3_mobilenet_v3_large@classifier.0": (lambda: torchvision_model("deeplabv3_mobilenet_v3_large", 5), "classifier.0", 64),
    "lraspp_mobilenet_v3_large@backbone.12": (lambda: torchvision_model("lraspp_mobilenet_v3_large", 5), "backbone.12", 64),
    "fcn_resnet50@backbone.layer3": (lambda: torchvision_model("fcn_resnet50", 5), "backbone.layer3", 48),
    "smp_unet_resnet18@decoder.blocks.1": (lambda: _smp("Unet", "resnet18"), "decoder.blocks.1", 64),
    "smp_fpn_efficientnet-b0@encoder": (lambda: _smp("FPN", "efficientnet-b0"), "encoder._blocks.10", 64),
    "smp_unet_tu-tf_efficientnet_b0@encoder": (lambda: _smp("Unet", "tu-tf_efficientnet_b0"),
                                               "encoder.model.blocks.4", 64),
    "smp_deeplabv3plus_resnet18@decoder": (lambda: _smp("DeepLabV3Plus", "resnet18"), "decoder.aspp", 64),
}


@pytest.mark.fuzz
@pytest.mark.filterwarnings("ignore:.*fast gradient path is not exact:UserWarning")
@pytest.mark.parametrize("name", sorted(REAL))
@pytest.mark.parametrize("method", ["gradcam", "hirescam"])
def test_real_architecture(name, method):
    build, layer, size = REAL[name]
    model = OutOnly(build())
    images = [torch.rand(2, 3, size, size, generator=torch.Generator().manual_seed(i)) for i in range(2)]
    check_case(model, images, [0, 2, 3], method, {}, name, layer=f"model.{layer}")
