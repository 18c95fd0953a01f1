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
full sweep (500 generated cases and the real architectures). The gradients are compared through random channel mixes (a probe method whose map is Σ_c w_c·G_c), the maps
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
from oracle import combined_maps, compare, layer_gradients, raw_cam
from seg_xai_fast.engine.methods import remove_method

QUICK = range(24)
FULL = range(24, 524)
METHODS = ("gradcam", "gradcam++", "xgradcam", "hirescam", "layercam", "shapleycam")


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
            "curved": rng.random() < 0.3,  # a SiLU above the layer: ShapleyCAM's Hessian term is not zero
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
        if c["curved"]:
            a = F.silu(a)
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
    if rng.random() < 0.15:  # several target layers, combined as pytorch-grad-cam combines them
        layer = [layer, "layer" if isinstance(layer, sx.InputOf) else sx.InputOf("head")]
    aug = rng.random() < 0.15  # test-time augmentation
    description = (f"seed {seed}: {model.choice}, C={channels}, L={classes}, size={size}, batch={batch}, {dtype}, "
                   f"channels_last={channels_last}, flat={flat}, train={train}, method={method}, classes={picked}, "
                   f"layers={layer}, aug_smooth={aug}")
    return model, images, picked, method, {"options": {"aug_smooth": True}} if aug else {}, description, layer


def _masks(batch, classes, size, seed):
    g = torch.Generator().manual_seed(seed)
    masks = (torch.rand(batch, classes, *size, generator=g) > 0.5).float()
    masks[..., 0, 0] = 1  # never empty
    return masks


PROJECTIONS = 2  # random channel mixes of G compared per case: a nonzero difference survives one almost surely


def _channel_mix(channels: int, seed: int) -> torch.Tensor:
    return torch.randn(channels, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _gradient_mix(activations, gradients, seed=0):
    """A probe registered as a method: the raw map is a random mix of G's channels, Σ_c w_c·G_c
    [B,K,h,w], so the fuzzer compares the gradients the shortcuts produce (all channels at once,
    whatever their number), not only what a CAM formula makes of them."""
    w = _channel_mix(gradients.shape[2], seed).to(gradients)
    return (gradients * w[:, None, None]).sum(dim=2)


@pytest.fixture(scope="module", autouse=True)
def gradient_probe():
    sx.register_method("fuzz_gradient_mix", cam=_gradient_mix, options={"seed": 0})
    yield
    remove_method("fuzz_gradient_mix")


def _conditioned(A, G, method) -> torch.Tensor:
    """bool [B,K]: classes whose map is well conditioned — the range of the raw CAM at least 1e-2 of
    Σ_c |G·A|, the scale of its terms. Below that the map is rounding noise amplified by min-max
    (weights that cancel, as Grad-CAM's mean gradient through batch-statistics BatchNorm), for the
    oracle as for us; the gradients themselves are still compared."""
    raw = torch.relu(raw_cam(method, A, G))
    spread = raw.flatten(2).amax(2) - raw.flatten(2).amin(2)
    terms = (G.double() * A.double().unsqueeze(1)).abs().sum(dim=2).flatten(2).amax(2)
    return spread >= 1e-2 * terms


def _module(model, layer):
    """(module, input_of) of a target layer given as a name or InputOf."""
    if isinstance(layer, sx.InputOf):
        return model.get_submodule(layer.layer), True
    return model.get_submodule(layer), False


def oracle_maps(model, layers, images, classes, masks, method, to_grid=None, aug=False):
    """(maps [B,K,H,W], well conditioned bool [B,K]) by the oracle: every layer's gradients by plain
    autograd, combined over layers; with aug, the mean over the 6 copies (horizontal flip × brightness
    0.9, 1, 1.1) of each copy's map flipped back, the masks flipped with their copy."""
    copies = [(flip, factor) for flip in (False, True) for factor in (0.9, 1.0, 1.1)] if aug else [(False, 1.0)]
    maps, conditioned = [], torch.ones(images.shape[0], len(classes), dtype=torch.bool)
    for flip, factor in copies:
        flipped = (lambda t: t.flip(-1)) if flip else (lambda t: t)
        per_layer = []
        for layer in layers:
            module, input_of = _module(model, layer)
            A, G, _ = layer_gradients(model, module, flipped(images) * factor, classes, flipped(masks),
                                      input_of=input_of, to_grid=to_grid, second_order=method == "shapleycam")
            conditioned &= _conditioned(A, G, method)
            per_layer.append((A, G))
        maps.append(flipped(combined_maps(per_layer, method, images.shape[-2:])))
    return torch.stack(maps).mean(dim=0), conditioned


def check_case(model, images, classes, method, kwargs, description, layer="layer", to_grid=None):
    layers = list(layer) if isinstance(layer, list) else [layer]
    was_training = model.training
    explainer = sx.Explainer(model, layer, method, **kwargs)
    aug = bool(kwargs.get("options", {}).get("aug_smooth"))
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
        module, input_of = _module(model, layers[0])
        A, G, _ = layer_gradients(model, module, batch, classes, masks, input_of=input_of, to_grid=to_grid)
        truth, conditioned = oracle_maps(model, layers, batch, classes, masks, method, to_grid, aug)
        model.train(was_training)
        for seed in range(PROJECTIONS):  # the first layer's gradients, at its resolution
            probe = probes.setdefault(seed, sx.Explainer(model, layers[0], "fuzz_gradient_mix", normalize=False,
                                                         options={"seed": seed}))
            got = probe(batch, classes=classes, masks=masks, resolution="layer")
            w = _channel_mix(G.shape[2], seed).to(G)
            compare(got.maps, (G * w[:, None, None]).sum(dim=2), f"{description}, call {i}: gradients, channel mix "
                                                                 f"{seed} ({got.info.get('gradient_path')})")
        if bool(conditioned.any()):
            compare(res.maps[conditioned], truth[conditioned],
                    f"{description}, call {i}: {method} maps ({res.info.get('gradient_path')})")
    return res.info.get("gradient_path")


@pytest.mark.filterwarnings("ignore:.*is not exact for this model:UserWarning")
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
    assert len(seen["head"]) == 5 and {True, False} <= seen["curved"]
    cases = [generated_case(seed) for seed in QUICK]
    assert {case[3] for case in cases} == set(METHODS)
    assert any(isinstance(case[6], list) for case in cases) and any(case[4] for case in cases)


# --------------------------------------------------------------------------- perturbation CAMs


def _peer_perturbation_maps(model, layer, method, images, classes, masks):
    """The real pytorch-grad-cam's Score-CAM / Ablation-CAM maps [B,K,H,W], one call per (image,
    class): the oracle of the perturbation CAMs (their definitions are its)."""
    pgc = pytest.importorskip("pytorch_grad_cam")
    from pytorch_grad_cam.utils.model_targets import SemanticSegmentationTarget

    cam = {"scorecam": pgc.ScoreCAM, "ablationcam": pgc.AblationCAM}[method](model=model, target_layers=[layer])
    out = torch.zeros(images.shape[0], len(classes), *images.shape[-2:])
    for b in range(images.shape[0]):
        for k, c in enumerate(classes):
            target = SemanticSegmentationTarget(c, masks[b, k].numpy())
            out[b, k] = torch.from_numpy(cam(input_tensor=images[b:b + 1], targets=[target])[0])
    return out


def _ablation_conditioned(model, layer, images, classes, masks) -> torch.Tensor:
    """bool [B,K]: Ablation-CAM maps that float32 can compute to 1e-4. Its weights (S − S_c)/S are
    differences of region scores, each summed in float32 with an error of about 1e-6·Σ_p |logit·M|
    (a sum's rounding, ~8 ulp); where the map's range is not 1e4 times what that error makes of
    Σ_c w_c·A_c — nearly flat logits (S_c ≈ S), or ablation to min(A) − 1e7 (scores ~1e7, the
    peer's choice where min(A) ≠ 0) — any two implementations differ by rounding noise."""
    kept = []
    module = model.get_submodule(layer)
    handle = module.register_forward_hook(lambda m, i, out: kept.append(out.detach().clone()))
    try:
        with torch.no_grad():
            model(images)
    finally:
        handle.remove()
    A = kept[-1].double()  # [B,C,h,w]
    B, C = A.shape[:2]
    ok = torch.zeros(B, len(classes), dtype=torch.bool)
    for b in range(B):
        value = 0.0 if float(A[b].min()) == 0 else float(A[b].min()) - 1e7
        ablated = A[b].expand(C, *A.shape[1:]).clone()
        ablated[torch.arange(C), torch.arange(C)] = value
        handle = module.register_forward_hook(lambda m, i, out: ablated.to(out.dtype))
        try:
            with torch.no_grad():
                logits = model(images[b:b + 1].expand(C, *images.shape[1:]))
        finally:
            handle.remove()
        with torch.no_grad():
            original = model(images[b:b + 1])
        for k, c in enumerate(classes):
            M = masks[b, k].double()
            S = float((original[0, c].double() * M).sum())
            S_c = (logits[:, c].double() * M).sum(dim=(1, 2))  # [C]
            noise = 1e-6 * (logits[:, c].double().abs() * M).sum(dim=(1, 2)) / max(abs(S), 1e-30)  # of each w_c
            raw = torch.relu((((S - S_c) / S)[:, None, None] * A[b]).sum(dim=0)) if S != 0 else torch.zeros(1)
            spread = float(raw.max() - raw.min())
            ok[b, k] = spread > 0 and float((noise[:, None, None] * A[b].abs()).sum(dim=0).max()) <= 1e-5 * spread
    return ok


@pytest.mark.filterwarnings("ignore:.*train mode:UserWarning")
@pytest.mark.parametrize("seed", [pytest.param(s, id=f"seed-{s}") for s in range(6)]
                         + [pytest.param(s, id=f"seed-{s}", marks=pytest.mark.fuzz) for s in range(6, 106)])
@pytest.mark.parametrize("method", ["scorecam", "ablationcam"])
def test_generated_graph_perturbation_cams(seed, method):
    """The generated graphs (float32, a plain target layer: the peer hooks one tensor) explained by
    Score-CAM and Ablation-CAM, which read the logits before the final upsample from the graph and
    run what precedes the layer once where a check allows: equal to the peer's maps, class by class,
    wherever its map is not flat (min-max of rounding noise). Heads with batch statistics are
    explained (engine/perturbation.py runs their copies one by one) but not compared: the peer
    batches its ablated copies, whose statistics then mix (tests/test_exactness.py covers them)."""
    model, images, classes, _, _, description, layer = generated_case(seed)
    comparable = model.choice["head"] != "linear_bn_batchstats"
    model = model.float().to(memory_format=torch.contiguous_format).eval()
    layer = "layer" if not isinstance(layer, str) or layer == "pair" else layer
    explainer = sx.Explainer(model, layer, method)
    for i, batch in enumerate(images):
        batch = batch.float().contiguous()
        masks = _masks(batch.shape[0], len(classes), batch.shape[-2:], i)
        res = explainer(batch, classes=classes, masks=masks)
        assert res.maps.shape == masks.shape and torch.isfinite(res.maps).all()
        if not comparable:
            continue
        peer = _peer_perturbation_maps(model, model.get_submodule(layer), method, batch, classes, masks)
        informative = peer.flatten(2).amax(2) - peer.flatten(2).amin(2) > 0.5  # [B,K]: a map, not noise
        if method == "ablationcam":
            informative &= _ablation_conditioned(model, layer, batch, classes, masks)
        if bool(informative.any()):
            compare(res.maps[informative], peer[informative], f"{description}, {method}, call {i}", rtol=1e-4)


# --------------------------------------------------------------------------- real architectures (full sweep)


def _torch_init(model: nn.Module) -> nn.Module:
    """PyTorch's default initialisation for every module that has one (the libraries' own differ:
    Hugging Face's std 0.02 gives nearly flat logits)."""
    for module in model.modules():
        if module is not model and hasattr(module, "reset_parameters"):
            module.reset_parameters()
    return model


def _smp(arch, encoder):
    smp = pytest.importorskip("segmentation_models_pytorch")
    torch.manual_seed(0)
    return getattr(smp, arch)(encoder_name=encoder, encoder_weights=None, classes=4)


def _monai(name, **kwargs):
    nets = pytest.importorskip("monai.networks.nets")
    torch.manual_seed(0)
    return getattr(nets, name)(spatial_dims=2, in_channels=3, out_channels=4, **kwargs)


def _hf(name):
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    T = transformers
    if name == "segformer":
        return T.SegformerForSemanticSegmentation(T.SegformerConfig(
            depths=[1, 1, 1, 1], sr_ratios=[8, 4, 2, 1], hidden_sizes=[8, 16, 24, 32], num_attention_heads=[1, 1, 2, 2],
            decoder_hidden_size=32, num_labels=4))
    if name == "dpt":
        return T.DPTForSemanticSegmentation(T.DPTConfig(
            image_size=64, patch_size=16, hidden_size=32, num_hidden_layers=4, num_attention_heads=2,
            intermediate_size=64, backbone_out_indices=[0, 1, 2, 3], neck_hidden_sizes=[8, 16, 16, 32],
            fusion_hidden_size=16, num_labels=4, reassemble_factors=[4, 2, 1, 0.5]))
    if name == "upernet_convnext":
        return T.UperNetForSemanticSegmentation(T.UperNetConfig(
            backbone_config=T.ConvNextConfig(hidden_sizes=[8, 16, 24, 32], depths=[1, 1, 1, 1],
                                             out_features=["stage1", "stage2", "stage3", "stage4"]),
            hidden_size=16, num_labels=4, auxiliary_in_channels=24))
    if name == "beit":
        return T.BeitForSemanticSegmentation(T.BeitConfig(
            image_size=64, patch_size=16, hidden_size=32, num_hidden_layers=4, num_attention_heads=2,
            intermediate_size=64, out_indices=[0, 1, 2, 3], pool_scales=[1, 2], auxiliary_channels=16, num_labels=4))
    if name == "mobilevit":
        return T.MobileViTForSemanticSegmentation(T.MobileViTConfig(
            image_size=64, hidden_sizes=[16, 24, 32], neck_hidden_sizes=[8, 8, 16, 16, 24, 32, 64],
            num_attention_heads=2, aspp_out_channels=16, num_labels=4))
    if name == "mask2former":
        backbone = T.SwinConfig(image_size=64, patch_size=4, embed_dim=16, depths=[1, 1, 1, 1], num_heads=[1, 1, 2, 2],
                                window_size=2, out_features=["stage1", "stage2", "stage3", "stage4"])
        return T.Mask2FormerForUniversalSegmentation(T.Mask2FormerConfig(
            backbone_config=backbone, num_labels=4, num_queries=6, hidden_dim=32, encoder_feedforward_dim=32,
            dim_feedforward=32, decoder_layers=2, encoder_layers=1, mask_feature_size=32, feature_size=32,
            num_attention_heads=2, use_pretrained_backbone=False))
    raise ValueError(name)


def _vit_grid(prefix: int):
    """Tokens [B,prefix+16,C] of a 64-px ViT with 16-px patches → [B,C,4,4]."""
    return lambda t: t[:, prefix:].reshape(t.shape[0], 4, 4, t.shape[2]).permute(0, 3, 1, 2)


def _tokens_grid(h: int, w: int):
    return lambda t: t.reshape(t.shape[0], h, w, t.shape[2]).permute(0, 3, 1, 2)


def _channels_last(t):
    return t.permute(0, 3, 1, 2)


# name → (model factory, target layer, image size, tokens/channels-last → [B,C,h,w] for the oracle)
REAL = {
    "deeplabv3_mobilenet_v3_large@backbone.16": (lambda: torchvision_model("deeplabv3_mobilenet_v3_large", 5), "backbone.16", 64, None),
    "deeplabv3_mobilenet_v3_large@classifier.0": (lambda: torchvision_model("deeplabv3_mobilenet_v3_large", 5), "classifier.0", 64, None),
    "lraspp_mobilenet_v3_large@backbone.12": (lambda: torchvision_model("lraspp_mobilenet_v3_large", 5), "backbone.12", 64, None),
    "fcn_resnet50@backbone.layer3": (lambda: torchvision_model("fcn_resnet50", 5), "backbone.layer3", 48, None),
    "smp_unet_resnet18@decoder.blocks.1": (lambda: _smp("Unet", "resnet18"), "decoder.blocks.1", 64, None),
    "smp_fpn_efficientnet-b0@encoder": (lambda: _smp("FPN", "efficientnet-b0"), "encoder._blocks.10", 64, None),
    "smp_unet_tu-tf_efficientnet_b0@encoder": (lambda: _smp("Unet", "tu-tf_efficientnet_b0"),
                                               "encoder.model.blocks.4", 64, None),
    "smp_unet_tu-resnetv2_50x1_bit@stdconv": (lambda: _smp("Unet", "tu-resnetv2_50x1_bit"),
                                              "encoder.model.stages_2", 64, None),  # timm's weight-standardised convs
    "smp_deeplabv3plus_resnet18@decoder": (lambda: _smp("DeepLabV3Plus", "resnet18"), "decoder.aspp", 64, None),
    "smp_segformer_mit_b0@decoder": (lambda: _smp("Segformer", "mit_b0"), "decoder", 64, None),
    "monai_unet@down": (lambda: _monai("UNet", channels=(8, 16, 32), strides=(2, 2), num_res_units=1),
                        "model.1.submodule.0", 64, None),
    "monai_segresnet@up": (lambda: _monai("SegResNet", init_filters=8), "up_layers.0", 64, None),
    "monai_basicunet@upcat": (lambda: _monai("BasicUNet", features=(8, 8, 16, 32, 64, 8)), "upcat_2", 64, None),
    "hf_segformer@block_tokens": (lambda: _hf("segformer"), "segformer.stages.1.blocks.0", 64, _tokens_grid(8, 8)),
    "hf_segformer@decode_head": (lambda: _hf("segformer"), "decode_head.linear_fuse", 64, None),
    "hf_dpt@vit_layer": (lambda: _hf("dpt"), "dpt.encoder.layer.1", 64, _vit_grid(1)),
    "hf_upernet_convnext@stage": (lambda: _hf("upernet_convnext"), "backbone.encoder.stages.2", 64, None),
    "hf_upernet_convnext@channels_last": (lambda: _hf("upernet_convnext"),
                                          "backbone.encoder.stages.3.layers.0.pwconv2", 64, _channels_last),
    "hf_beit@vit_layer": (lambda: _hf("beit"), "beit.layers.2", 64, _vit_grid(1)),
    "hf_mobilevit@stage": (lambda: _hf("mobilevit"), "mobilevit.encoder.layer.2", 64, None),
    "hf_mask2former@pixel_decoder": (lambda: _hf("mask2former"), "model.pixel_level_module.decoder.adapter_1", 64, None),
}


@pytest.mark.fuzz
@pytest.mark.filterwarnings("ignore:.*is not exact for this model:UserWarning")
@pytest.mark.parametrize("init", ["library", "torch"])
@pytest.mark.parametrize("name", sorted(REAL))
@pytest.mark.parametrize("method", ["gradcam", "hirescam"])
def test_real_architecture(name, method, init):
    """Each architecture as its library builds it and with PyTorch's default initialisation."""
    build, layer, size, to_grid = REAL[name]
    model = build()
    if init == "torch":
        torch.manual_seed(1)
        _torch_init(model)
    model = model.eval()
    images = [torch.rand(2, 3, size, size, generator=torch.Generator().manual_seed(i)) for i in range(2)]
    check_case(model, images, [0, 2, 3], method, {}, f"{name} ({init} init)", layer=layer, to_grid=to_grid)
