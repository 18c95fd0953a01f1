"""No silent wrong maps: each shortcut of the engine against the brute-force oracle (tests/oracle.py)
on the graphs that used to fool it, one family of mechanism per test, and the refusals that now
explain themselves (or are no longer refusals).

Tolerances: maps equal the oracle's to 1e-4 of their largest magnitude (float32 rounding of a
different summation order; the oracle sums in float64).
"""
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import seg_xai_fast as sx
from oracle import cam_maps, compare, layer_gradients, raw_cam

SIZE = 32


def _images(seed=0, batch=2, scale=1.0, size=SIZE):
    return torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(seed)) * scale


def _masks(classes, batch=2, size=SIZE, seed=1):
    g = torch.Generator().manual_seed(seed)
    masks = torch.zeros(batch, len(classes), size, size)
    for b in range(batch):
        for k in range(len(classes)):
            y, x = torch.randint(0, size // 2, (2,), generator=g).tolist()
            masks[b, k, y:y + size // 3, x:x + size // 2] = 1
    return masks


def check_against_oracle(model, layer, images, classes=(0, 1, 2), *, methods=("gradcam", "hirescam"), call=-1,
                         to_grid=None, input_of=False, explainer_kwargs=None, expect_path=None):
    """Normalised maps of `methods` (default path: closed form where found) and the raw HiResCAM at the
    layer's resolution equal the oracle's."""
    classes = list(classes)
    masks = _masks(classes, images.shape[0], images.shape[-1])
    module = model.get_submodule(layer.layer if isinstance(layer, sx.InputOf) else layer)
    A, G, logits = layer_gradients(model, module, images, classes, masks, call, to_grid, input_of)
    kwargs = dict(explainer_kwargs or {})
    for method in methods:
        explainer = sx.Explainer(model, layer, method, **kwargs)
        for _ in range(2):  # the first call checks and caches; the second uses what was cached
            res = explainer(images, classes=classes, masks=masks)
            compare(res.maps, cam_maps(method, A, G, images.shape[-2:]), f"{method} maps ({res.info['gradient_path']})")
        if expect_path is not None:
            assert res.info["gradient_path"] == expect_path, res.info
    raw = sx.Explainer(model, layer, "hirescam", normalize=False, **kwargs)(images, classes=classes, masks=masks,
                                                                          resolution="layer")
    compare(raw.maps, raw_cam("hirescam", A, G), "raw HiResCAM")
    return res


class Net(nn.Module):
    """stem → layer (the target) → what each test puts above it → logits upsampled to the input."""

    def __init__(self, channels=8, classes=3):
        super().__init__()
        torch.manual_seed(0)
        self.stem = nn.Conv2d(3, channels, 3, padding=1)
        self.layer = nn.Conv2d(channels, channels, 3, stride=2, padding=1)
        self.head = nn.Conv2d(channels, classes, 1)

    def features(self, x):
        return torch.relu(self.layer(torch.relu(self.stem(x))))


# --------------------------------------------------------------------------- family 1: where the backward starts


class AuxAfterMain(Net):
    """An auxiliary head computed after the main one (DPT's), both nearly flat: the upsampled
    auxiliary output equals the logits to 1e-6, which once made it the backward's start."""

    def __init__(self):
        super().__init__()
        self.aux = nn.Conv2d(8, 3, 1)
        with torch.no_grad():
            self.head.weight.mul_(1e-6)
            self.aux.weight.copy_(torch.randn_like(self.aux.weight) * 1e-6)
            self.aux.bias.copy_(self.head.bias)

    def forward(self, x):
        a = self.features(x)
        z = self.head(a)
        self.aux_logits = F.interpolate(self.aux(a), size=x.shape[-2:], mode="bilinear")  # training only
        return F.interpolate(z, size=x.shape[-2:], mode="bilinear", align_corners=False)


class AlignCornersHead(Net):
    """smp's head: nn.UpsamplingBilinear2d (align_corners=True) of nearly flat logits, which
    matched an align_corners=False guess."""

    def __init__(self):
        super().__init__()
        self.up = nn.UpsamplingBilinear2d(scale_factor=2)
        with torch.no_grad():
            self.head.weight.mul_(1e-6)

    def forward(self, x):
        return self.up(self.head(self.features(x)))


@pytest.mark.parametrize("model", [AuxAfterMain, AlignCornersHead], ids=["auxiliary_head", "align_corners"])
def test_the_backward_starts_where_the_graph_says(model):
    model = model().eval()
    res = check_against_oracle(model, "layer", _images())
    assert res.info["verified"] is True


def test_a_first_batch_of_flat_logits_does_not_fix_a_wrong_head():
    """The closed-form head comes from structure: an all-zero first batch cannot mislead it."""
    model = AlignCornersHead().eval()
    explainer = sx.Explainer(model, "layer", "gradcam")
    explainer(torch.zeros(2, 3, SIZE, SIZE))
    images, classes = _images(3), [0, 2]
    masks = _masks(classes)
    A, G, _ = layer_gradients(model, model.layer, images, classes, masks)
    compare(explainer(images, classes=classes, masks=masks).maps, cam_maps("gradcam", A, G, images.shape[-2:]),
            "second batch")


# --------------------------------------------------------------------------- family 2: rebuilt modules


class StdConv2d(nn.Conv2d):
    """A weight-standardised convolution (timm's StdConv2d): its forward is not F.conv2d of .weight."""

    def forward(self, x):
        w = self.weight
        w = (w - w.mean(dim=(1, 2, 3), keepdim=True)) / (w.std(dim=(1, 2, 3), keepdim=True) + 1e-5)
        return F.conv2d(x, w, self.bias, self.stride, self.padding, self.dilation, self.groups)


class StdConvAbove(Net):
    def __init__(self):
        super().__init__()
        # dilation 16 on a 16×16 map: only the centre tap reads the map, which plain convolutions use alone
        self.body = StdConv2d(8, 8, 3, padding=16, dilation=16)

    def forward(self, x):
        return F.interpolate(self.head(torch.relu(self.body(self.features(x)))), size=x.shape[-2:], mode="bilinear")


def test_a_conv_subclass_is_not_rebuilt_from_its_attributes():
    check_against_oracle(StdConvAbove().eval(), "layer", _images(), expect_path="autograd")


# --------------------------------------------------------------------------- family 3: every reader of A


class TapWithSkip(Net):
    """An identity tap whose input is also read by a skip connection (the same tensor object)."""

    def __init__(self):
        super().__init__()
        self.tap = nn.Identity()
        self.body = nn.Conv2d(8, 8, 3, padding=1)
        self.skip = nn.Conv2d(8, 8, 1)

    def forward(self, x):
        h = self.features(x)
        y = torch.relu(self.body(self.tap(h))) + self.skip(h)
        return F.interpolate(self.head(y), size=x.shape[-2:], mode="bilinear")


class Recorder(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(8, 8, 3, padding=1)

    def forward(self, x):
        out = self.conv(x)
        self.recorded = out  # read again by the parent, as Hugging Face output recorders do
        return out


class RecordedOutput(Net):
    def __init__(self):
        super().__init__()
        self.rec = Recorder()
        self.other = nn.Conv2d(8, 8, 1)

    def forward(self, x):
        a = self.rec(self.features(x))
        y = torch.relu(a) + self.other(self.rec.recorded)
        return F.interpolate(self.head(y), size=x.shape[-2:], mode="bilinear")


class InputAlsoElsewhere(Net):
    """InputOf(head): the head's input also feeds another path."""

    def __init__(self):
        super().__init__()
        self.other = nn.Conv2d(8, 3, 3, padding=1)

    def forward(self, x):
        h = self.features(x)
        return F.interpolate(self.head(h) + self.other(h), size=x.shape[-2:], mode="bilinear")


@pytest.mark.parametrize("model,layer,input_of", [
    (TapWithSkip, "tap", False), (RecordedOutput, "rec", False), (InputAlsoElsewhere, sx.InputOf("head"), True),
], ids=["identity_tap_and_skip", "recorded_output", "input_of_shared_input"])
def test_every_reader_of_the_activations_is_on_the_graph(model, layer, input_of):
    res = check_against_oracle(model().eval(), layer, _images(), input_of=input_of)
    assert res.info["gradient_path"] in ("autograd", "analytic") and res.info["verified"] is True


class PairOutput(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(8, 8, 3, padding=1)

    def forward(self, x):
        a = self.conv(x)
        return a, a.mean(dim=1, keepdim=True)  # the second element is computed from the first, inside


class TupleDerived(Net):
    def __init__(self):
        super().__init__()
        self.pair = PairOutput()

    def forward(self, x):
        a, m = self.pair(self.features(x))
        return F.interpolate(self.head(torch.relu(a)) * m, size=x.shape[-2:], mode="bilinear")


def test_what_cannot_be_rewired_takes_the_exact_path_and_says_so():
    model = TupleDerived().eval()
    with pytest.warns(UserWarning, match="target_layer 'pair': the fast gradient path is not exact for this model"):
        res = check_against_oracle(model, "pair", _images())
    assert res.info["gradient_path"] == "exact" and res.info["verified"] is True
    with pytest.raises(ValueError, match="gradient_path='autograd' cannot explain target_layer 'pair' of this model "
                                         "exactly: gradients differ from plain autograd"):
        sx.Explainer(model, "pair", "gradcam", gradient_path="autograd")(_images())


# --------------------------------------------------------------------------- family 4: the head's structure


class ClampedHead(Net):
    """A clamp between the 1×1 classifier and the upsample, inactive on small inputs."""

    cap = 0.3

    def forward(self, x):
        a = self.layer(torch.relu(self.stem(x)))  # the target feeds the 1×1 classifier directly
        z = torch.clamp(self.head(a), max=self.cap)
        return F.interpolate(z, size=x.shape[-2:], mode="bilinear")


def test_a_nonlinearity_after_the_classifier_is_never_folded_into_the_closed_form():
    model = ClampedHead().eval()
    small, large = _images(0, scale=0.01), _images(1, scale=30.0)
    with torch.no_grad():
        z_small = model.head(model.layer(torch.relu(model.stem(small))))
        z_large = model.head(model.layer(torch.relu(model.stem(large))))
    assert z_small.max() < ClampedHead.cap < z_large.max() and (z_large < ClampedHead.cap).any()  # inactive, then active
    explainer = sx.Explainer(model, "layer", "gradcam")
    explainer(small)
    classes = [0, 1, 2]
    masks = _masks(classes)
    A, G, _ = layer_gradients(model, model.layer, large, classes, masks)
    res = explainer(large, classes=classes, masks=masks)
    compare(res.maps, cam_maps("gradcam", A, G, large.shape[-2:]), "clamped head, second batch")
    assert res.info["gradient_path"] == "autograd"


# --------------------------------------------------------------------------- refusals that now explain


class InplaceAfterLayer(Net):
    def __init__(self):
        super().__init__()
        self.act = nn.ReLU(inplace=True)

    def forward(self, x):
        a = self.layer(torch.relu(self.stem(x)))
        return F.interpolate(self.head(self.act(a)), size=x.shape[-2:], mode="bilinear")


class BatchStatsBeforeHead(Net):
    def __init__(self):
        super().__init__()
        self.norm = nn.BatchNorm2d(8, track_running_stats=False)  # batch statistics even in eval mode

    def forward(self, x):
        a = self.layer(torch.relu(self.stem(x)))
        return F.interpolate(self.head(self.norm(a)), size=x.shape[-2:], mode="bilinear")


class Plain(Net):
    def forward(self, x):
        return F.interpolate(self.head(self.features(x)), size=x.shape[-2:], mode="bilinear")


def test_an_inplace_operation_after_the_layer_is_explained():
    check_against_oracle(InplaceAfterLayer().eval(), "layer", _images())


def test_batchnorm_without_running_statistics_is_not_folded():
    check_against_oracle(BatchStatsBeforeHead().eval(), "layer", _images(), expect_path="autograd")


def test_float64_models_are_explained():
    model = Plain().double().eval()
    check_against_oracle(model, "layer", _images().double())


# --------------------------------------------------------------------------- a module called twice


class SharedBlock(Net):
    def __init__(self):
        super().__init__()
        self.block = nn.Conv2d(8, 8, 3, padding=1)
        self.head0 = nn.Conv2d(8, 3, 1)

    def forward(self, x):
        h = self.features(x)
        a0 = torch.relu(self.block(h))
        a1 = torch.relu(self.block(a0))  # the same module again
        return F.interpolate(self.head(a1) + self.head0(a0), size=x.shape[-2:], mode="bilinear")


def test_a_module_called_twice_needs_call_and_each_call_is_exact():
    model = SharedBlock().eval()
    with pytest.raises(ValueError, match=r"target_layer 'block' was called 2 times in one forward pass: say which "
                                         r"call to explain with call= \(call=-1: the last"):
        sx.Explainer(model, "block", "gradcam")(_images())
    for call in (-1, 0, 1):
        check_against_oracle(model, "block", _images(), call=call, explainer_kwargs={"call": call})
    with pytest.raises(ValueError, match="call=2 but target_layer 'block' was called 2 times"):
        sx.Explainer(model, "block", "gradcam", call=2)(_images())


def test_train_mode_is_explained_in_eval_mode_and_restored():
    """Train mode would make BatchNorm use batch statistics and Dropout drop at random: the model the
    user deploys is the eval-mode one, so that is what is explained (with a warning)."""
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Dropout2d(0.5),
                          nn.Conv2d(8, 3, 1))
    torch.manual_seed(0)
    model(torch.rand(4, 3, SIZE, SIZE))  # running statistics that differ from the defaults
    model.train()
    images, classes = _images(), [0, 1, 2]
    masks = _masks(classes)
    with pytest.warns(UserWarning, match="train mode"):
        res = sx.Explainer(model, "2", "hirescam", normalize=False)(images, classes=classes, masks=masks,
                                                                     resolution="layer")
    assert model.training
    A, G, _ = layer_gradients(model.eval(), model[2], images, classes, masks)
    compare(res.maps, raw_cam("hirescam", A, G), "train-mode model")


# --------------------------------------------------------------------------- the Hugging Face DPT case


def _dpt(init: str, out_indices):
    transformers = pytest.importorskip("transformers")
    config = transformers.DPTConfig(hidden_size=32, num_hidden_layers=5, num_attention_heads=2, intermediate_size=64,
                                    image_size=64, patch_size=16, num_labels=4, backbone_out_indices=out_indices,
                                    neck_hidden_sizes=[8, 16, 24, 32], fusion_hidden_size=16, use_auxiliary_head=True)
    torch.manual_seed(0)
    model = transformers.DPTForSemanticSegmentation(config).eval()
    if init == "torch":  # PyTorch's own default initialisation of every layer instead of the library's
        for module in model.modules():
            if hasattr(module, "reset_parameters"):
                module.reset_parameters()
    return model


def _tokens_to_grid(t):
    return t[:, 1:].reshape(t.shape[0], 4, 4, t.shape[-1]).permute(0, 3, 1, 2)


@pytest.mark.parametrize("init", ["library", "torch"])
@pytest.mark.parametrize("out_indices", [[0, 1, 2, 3], [1, 2, 3, 4], [0, 1, 3, 4]],
                         ids=["indices_0123", "indices_1234", "indices_0134"])
def test_dpt_encoder_layers_equal_the_definition(init, out_indices):
    model = _dpt(init, out_indices)
    segmenter = sx.as_segmenter(model)
    images = _images(size=64)
    for n in range(5):  # every encoder layer, read out by the neck or not
        layer = f"model.dpt.encoder.layer.{n}"
        if n > max(out_indices):  # the neck reads no later layer: nothing reaches the logits from it
            with pytest.raises(ValueError, match=f"target_layer '{layer}' is not on the path to the model output"):
                sx.Explainer(segmenter, layer, "gradcam")(images)
            continue
        check_against_oracle(segmenter, layer, images, classes=(1, 3), methods=("gradcam",), to_grid=_tokens_to_grid)


# --------------------------------------------------------------------------- ShapleyCAM's second-order pass


class CurvedRecorded(RecordedOutput):
    """SiLU above the layer (H·A ≠ 0), and the parent reads the layer's own tensor again."""

    def forward(self, x):
        a = self.rec(self.features(x))
        y = F.silu(a) + self.other(F.silu(self.rec.recorded))
        return F.interpolate(self.head(y), size=x.shape[-2:], mode="bilinear")


class CurvedInplace(Net):
    """An in-place ReLU right after the layer, then a curved operation."""

    def forward(self, x):
        a = self.layer(torch.relu(self.stem(x)))
        return F.interpolate(self.head(F.silu(torch.relu_(a)) * 2), size=x.shape[-2:], mode="bilinear")


@pytest.mark.parametrize("model,layer", [(CurvedRecorded, "rec"), (CurvedInplace, "layer")],
                         ids=["recorded_output", "inplace_after_layer"])
@pytest.mark.parametrize("vjp", ["batched", "loop"])
def test_shapleycam_second_order_equals_the_definition(model, layer, vjp):
    """g − ½·H·A by double backward through the whole model: the forward-over-reverse pass serves
    where its dual tensor reaches every reader, reverse-over-reverse on the verified graph elsewhere."""
    model = model().eval()
    images, classes = _images(scale=4.0), [0, 1, 2]
    masks = _masks(classes, images.shape[0], images.shape[-1])
    module = model.get_submodule(layer)
    A, G2, _ = layer_gradients(model, module, images, classes, masks, second_order=True)
    _, G1, _ = layer_gradients(model, module, images, classes, masks)
    assert float((G2 - G1).abs().max()) > 0.05 * float(G1.abs().max())  # the Hessian term matters here
    explainer = sx.Explainer(model, layer, "shapleycam", vjp=vjp)
    for _ in range(2):
        res = explainer(images, classes=classes, masks=masks)
        compare(res.maps, cam_maps("shapleycam", A, G2, images.shape[-2:]), f"shapleycam ({res.info['hessian']})")
        assert "H·A" in res.info["hessian"]


def test_aug_smooth_explains_each_copy_alone_when_samples_share_statistics():
    """BatchNorm without running statistics mixes the samples of a batch: the 6 augmented copies are
    explained one batch each, as each copy is explained without augmentation."""
    model = BatchStatsBeforeHead().eval()
    images, classes = _images(), [0, 2]
    masks = _masks(classes, images.shape[0], images.shape[-1])
    truth = []
    for flip in (False, True):
        for factor in (0.9, 1.0, 1.1):
            turn = (lambda t: t.flip(-1)) if flip else (lambda t: t)
            A, G, _ = layer_gradients(model, model.layer, turn(images) * factor, classes, turn(masks))
            truth.append(turn(cam_maps("gradcam", A, G, images.shape[-2:])))
    res = sx.Explainer(model, "layer", "gradcam", options={"aug_smooth": True})(images, classes=classes, masks=masks)
    compare(res.maps, torch.stack(truth).mean(dim=0), "aug_smooth gradcam")


@pytest.mark.parametrize("method,options", [("ablationcam", {"batch_size": 8}),
                                            ("occlusion", {"window": 8, "stride": 8, "batch_size": 8})])
def test_perturbations_of_a_model_whose_samples_share_statistics_run_one_by_one(method, options):
    """Each perturbed copy is explained as itself: the maps of a batch of images equal each image's
    explained alone (whose perturbed copies, 8 to a forward before, then shared their statistics)."""
    model = BatchStatsBeforeHead().eval()
    images, classes = _images(batch=3), [0, 2]
    masks = _masks(classes, 3, images.shape[-1])
    layer = "layer" if method != "occlusion" else None
    together = sx.Explainer(model, layer, method, options=options)(images, classes=classes, masks=masks).maps
    alone = torch.cat([sx.Explainer(model, layer, method, options=options)(
        images[b:b + 1], classes=classes, masks=masks[b:b + 1]).maps for b in range(3)])
    compare(together, alone, f"{method}: the batch against each image alone")


class GatedTupleDerived(TupleDerived):
    """TupleDerived (the fast path is not exact) whose logits are gated off for an all-zero image:
    there every gradient is zero, so a check there proves nothing."""

    def forward(self, x):
        return super().forward(x) * x.flatten(1).amax(dim=1).clamp(max=1)[:, None, None, None]


@pytest.mark.filterwarnings("ignore:.*is not exact for this model:UserWarning")
def test_a_check_on_a_batch_with_zero_gradients_proves_nothing():
    """The first batch's gradients are all zero (fast and exact agree vacuously): the check runs again
    on the next batch, and neither the fast path nor a closed form is trusted from the first."""
    model = GatedTupleDerived().eval()
    images = _images()
    classes = [0, 1, 2]
    masks = _masks(classes, images.shape[0], images.shape[-1])
    explainer = sx.Explainer(model, "pair", "hirescam", normalize=False)
    blank = explainer(torch.zeros_like(images), classes=classes, masks=masks, resolution="layer")
    assert float(blank.maps.abs().max()) == 0
    A, G, _ = layer_gradients(model, model.pair, images, classes, masks)
    res = explainer(images, classes=classes, masks=masks, resolution="layer")
    compare(res.maps, raw_cam("hirescam", A, G), f"raw HiResCAM after a blank batch ({res.info['gradient_path']})")
    assert res.info["gradient_path"] == "exact"
