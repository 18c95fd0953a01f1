"""Volumes [B,C,D,H,W]: the 3-D gradient and activation CAMs against grad-cam (pytorch_grad_cam)
class by class on two MONAI architectures, 3-D targets (masks, Box, Pixel, Component), the maps'
trilinear resize, and the errors (methods not yet 3-D, a volume for a 2-D model and the reverse,
channel counts).

Parity is stated at a full-resolution layer: grad-cam resizes 3-D maps with scipy's cubic spline
(ours: trilinear, the 3-D twin of the bilinear resize), which is the identity when the layer
already has the output's size. Tolerance 1e-4 on maps in [0, 1]: float32 sums over channels and
positions in different orders, scaled by min-max.
"""
import numpy as np
import pytest
import torch
import torch.nn as nn

import seg_xai_fast as sx
from seg_xai_fast import reference

nets = pytest.importorskip("monai.networks.nets")
pgc = pytest.importorskip("pytorch_grad_cam")

SHAPE = (2, 1, 8, 12, 16)
CLASSES = 3


def monai_unet():
    torch.manual_seed(0)
    return nets.UNet(3, 1, CLASSES, channels=(4, 8), strides=(2,), num_res_units=1).eval(), "model.2.0"


def monai_segresnet():
    torch.manual_seed(0)
    return nets.SegResNet(3, init_filters=8, in_channels=1, out_channels=CLASSES, blocks_down=(1, 1),
                          blocks_up=(1,), norm=("GROUP", {"num_groups": 4})).eval(), "up_layers.0"


ARCHS = {"unet": monai_unet, "segresnet": monai_segresnet}
PEERS = {"gradcam": "GradCAM", "hirescam": "HiResCAM", "fem": "FEM"}


class RegionTarget:
    """pytorch-grad-cam's SemanticSegmentationTarget in 3-D: Σ of class k's logits over a mask."""

    def __init__(self, category, mask):
        self.category, self.mask = category, mask

    def __call__(self, output):
        return (output[self.category] * self.mask).sum()


@pytest.fixture(scope="module", params=sorted(ARCHS))
def arch(request):
    net, layer = ARCHS[request.param]()
    x = torch.randn(*SHAPE, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        labels = net(x).argmax(1)
    return net, layer, x, labels


@pytest.mark.parametrize("method", sorted(PEERS))
def test_equals_gradcam_class_by_class(arch, method):
    net, layer_name, x, labels = arch
    layer = net.get_submodule(layer_name)
    ours = sx.Explainer(net, layer_name, method)(x)
    assert ours.maps.shape == (SHAPE[0], CLASSES) + SHAPE[2:]
    with getattr(pgc, PEERS[method])(net, [layer]) as cam:
        for k in range(CLASSES):
            targets = [RegionTarget(k, (labels[b] == k).float()) for b in range(SHAPE[0])]
            theirs = cam(x, targets=targets)  # [B,D,H,W]
            diff = np.abs(ours.maps[:, k].numpy() - theirs).max()
            assert diff <= 1e-4, (method, k, diff)


def test_the_parity_layers_are_at_full_resolution(arch):
    net, layer_name, x, _ = arch
    res = sx.Explainer(net, layer_name, "gradcam")(x, resolution="layer")
    assert res.maps.shape[-3:] == SHAPE[2:]


def test_a_coarse_layer_is_resized_trilinearly():
    net, _ = monai_unet()
    x = torch.randn(*SHAPE, generator=torch.Generator().manual_seed(5))
    ex = sx.Explainer(net, "model.1.submodule", "gradcam", normalize=True)
    layer = ex(x, resolution="layer").maps  # [B,K,d,h,w] at half resolution, normalised
    assert layer.shape[-3:] == (4, 6, 8)
    full = ex(x).maps
    torch.testing.assert_close(full, reference.resize_normalize_3d(layer, SHAPE[2:]), rtol=0, atol=1e-5)


def test_box_pixel_component_and_mask_targets():
    net, layer = monai_unet()
    x = torch.randn(1, *SHAPE[1:], generator=torch.Generator().manual_seed(6))
    ex = sx.Explainer(net, layer, "gradcam")
    mask = torch.zeros(1, 2, *SHAPE[2:])
    mask[:, :, 2:5, 3:9, 1:7] = 1
    by_box = ex(x, classes=[0, 2], masks=sx.Box(3, 1, 9, 7, z0=2, z1=5)).maps
    torch.testing.assert_close(by_box, ex(x, classes=[0, 2], masks=mask).maps)
    pixel = torch.zeros(1, 1, *SHAPE[2:])
    pixel[0, 0, 4, 5, 6] = 1
    torch.testing.assert_close(ex(x, classes=[1], masks=sx.Pixel(5, 6, z=4)).maps,
                               ex(x, classes=[1], masks=pixel).maps)
    labels = ex(x).labels[0]
    z, y, xx = (int(i) for i in torch.nonzero(labels == labels[4, 5, 6])[0])
    comp = sx.Explainer(net, layer, "hirescam")(x, classes=[int(labels[z, y, xx])], masks=sx.Component(y, xx, z=z))
    assert comp.active.all() and comp.maps.max() > 0


def test_component_is_26_connected():
    from seg_xai_fast.engine.targets import connected_component_3d
    mask = torch.zeros(5, 5, 5, dtype=torch.bool)
    mask[0, 0, 0] = mask[1, 1, 1] = mask[2, 2, 2] = True  # diagonal neighbours only
    mask[0, 4, 0] = True  # not touching
    comp = connected_component_3d(mask, 0, 0, 0)
    assert comp.sum() == 3 and not comp[0, 4, 0]


@pytest.mark.parametrize("masks,message", [
    (sx.Pixel(1, 2), r"needs its slice"),
    (sx.Box(0, 0, 4, 4, z0=20, z1=30), "does not overlap"),
    (torch.ones(1, 3, 8, 12), r"\[B,K,D,H,W\]"),
])
def test_bad_3d_targets_are_named(masks, message):
    net, layer = monai_unet()
    with pytest.raises(ValueError, match=message):
        sx.Explainer(net, layer, "gradcam")(torch.randn(1, *SHAPE[1:]), masks=masks)


def test_methods_not_yet_3d_refuse_volumes_by_name():
    net, layer = monai_unet()
    for method, needs_layer in (("shapleycam", True), ("segxrescam", True), ("fullgrad", False)):
        ex = sx.Explainer(net, layer if needs_layer else None, method)
        with pytest.raises(ValueError, match=rf"method '{method}' cannot explain volumes"):
            ex(torch.randn(1, *SHAPE[1:]))


def test_dimensionality_must_match_the_model():
    net, layer = monai_unet()
    with pytest.raises(ValueError, match=r"takes volumes \[B,C,D,H,W\]"):
        sx.Explainer(net, layer, "gradcam")(torch.randn(1, 1, 12, 16))
    torch.manual_seed(0)
    flat = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 3, 1)).eval()
    with pytest.raises(ValueError, match=r"takes images \[B,C,H,W\]"):
        sx.Explainer(flat, "0", "gradcam")(torch.randn(1, 1, 4, 12, 16))


@pytest.mark.parametrize("channels", [1, 4])
def test_any_channel_count_in_2d(channels):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(channels, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 3, 3, padding=1)).eval()
    res = sx.Explainer(net, "1", "gradcam")(torch.randn(2, channels, 10, 12))
    assert res.maps.shape == (2, 3, 10, 12)


def test_raw_maps_and_model_left_as_found():
    net, layer = monai_unet()
    net.train()
    x = torch.randn(1, *SHAPE[1:])
    with pytest.warns(UserWarning, match="train mode"):
        raw = sx.Explainer(net, layer, "hirescam", normalize=False)(x).maps
    assert net.training and all(p.requires_grad for p in net.parameters())
    assert raw.min() < 0  # signed raw maps
    assert not net.get_submodule(layer)._forward_hooks


def _region_scores(net, inputs, labels, classes):
    with torch.no_grad():
        out = net(inputs)
    return torch.stack([(out[:, c] * (labels == c)).flatten(1).sum(1) for c in classes], dim=1)  # [n,K]


@pytest.mark.parametrize("method", ["scorecam", "ablationcam"])
def test_3d_scorecam_and_ablationcam_equal_their_definition(method):
    """The raw maps Σ_c w_kc·A_c against the definitions written out channel by channel
    (pytorch-grad-cam's ScoreCAM upsamples with UpsamplingBilinear2d, 2-D only: no 3-D peer)."""
    import torch.nn.functional as F
    from seg_xai_fast.engine.method_maths import ablation_values

    net, layer = monai_unet()
    x = torch.randn(1, *SHAPE[1:], generator=torch.Generator().manual_seed(9))
    res = sx.Explainer(net, layer, method, normalize=False, options={"batch_size": 4})(x)
    module = net.get_submodule(layer)
    captured = []
    handle = module.register_forward_hook(lambda m, i, o: captured.append(o.detach()))
    with torch.no_grad():
        labels = net(x).argmax(1)[0]
    handle.remove()
    A = captured[0][0]  # [C,d,h,w]
    classes = list(range(CLASSES))
    base = _region_scores(net, x, labels, classes)[0]
    scores = []
    for c in range(A.shape[0]):
        if method == "scorecam":
            up = F.interpolate(A[c][None, None], size=SHAPE[2:], mode="trilinear", align_corners=True)[0, 0]
            mask = (up - up.min()) / (up.max() - up.min() + 1e-8)
            scores.append(_region_scores(net, x * mask, labels, classes)[0])
        else:
            value = ablation_values(float(A.min()), 4)[c % 4]
            h = module.register_forward_hook(lambda m, i, o, c=c: o.index_fill(1, torch.tensor([c]), float(value)))
            scores.append(_region_scores(net, x, labels, classes)[0])
            h.remove()
    S = torch.stack(scores)  # [C,K]
    weights = torch.softmax(S, dim=0) if method == "scorecam" else (base - S) / base
    expected = torch.einsum("ck,cdhw->kdhw", weights, A)
    present = torch.tensor([(labels == c).any() for c in classes]).view(-1, 1, 1, 1)
    torch.testing.assert_close(res.maps[0], expected * present, rtol=1e-4, atol=1e-4 * float(expected.abs().max()))


def test_the_closed_form_asked_for_a_volume_without_a_linear_head_is_refused_not_ignored():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv3d(1, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv3d(4, 3, 3)).eval()
    x = torch.randn(1, 1, 6, 7, 8)
    with pytest.raises(ValueError, match="gradient_path='analytic' needs target_layer '1' .* plain 1×1×1 Conv3d"):
        sx.Explainer(model, "1", "gradcam", gradient_path="analytic")(x)
    res = sx.Explainer(model, "1", "gradcam")(x)
    assert res.maps.shape == (1, 3, 4, 5, 6) and res.info["gradient_path"] == "autograd"


class _Heads(nn.Module):
    """A 3-D body, a target layer, then a head: 1×1×1 conv (linear), the same conv then a ReLU, or a
    conv that also reads the layer's output elsewhere (a skip added in place)."""

    def __init__(self, kind: str):
        super().__init__()
        torch.manual_seed(3)
        self.kind = kind
        self.body = nn.Sequential(nn.Conv3d(1, 5, 3, padding=1), nn.ReLU(), nn.Conv3d(5, 5, 3, padding=1))
        self.act = nn.ReLU()
        self.head = nn.Conv3d(5, 3, 1)

    def forward(self, x):
        a = self.act(self.body(x))
        z = self.head(a)
        if self.kind == "relu":
            z.relu_()  # the same tensor object, no longer linear in a
        elif self.kind == "skip":
            z += a[:, :3] * a[:, 2:]  # the same tensor object, another path from a
        return z


@pytest.mark.parametrize("method", ["gradcam", "gradcam++", "xgradcam", "hirescam", "layercam"])
def test_a_linear_head_takes_the_closed_form_with_the_autograd_maps(method):
    model = _Heads("linear").eval()
    x = torch.randn(2, 1, 7, 6, 9, generator=torch.Generator().manual_seed(4))
    fast = sx.Explainer(model, "act", method)(x)
    exact = sx.Explainer(model, "act", method, gradient_path="autograd")(x)
    assert fast.info["gradient_path"] == "analytic" and exact.info["gradient_path"] == "autograd"
    assert sx.Explainer(model, "act", method, gradient_path="analytic")(x).info["gradient_path"] == "analytic"
    torch.testing.assert_close(fast.maps, exact.maps, rtol=0, atol=1e-5)  # float32 sums in another order, in [0, 1]
    assert torch.equal(fast.labels, exact.labels) and torch.equal(fast.active, exact.active)


@pytest.mark.parametrize("kind", ["relu", "skip"])
def test_a_head_that_is_not_linear_in_the_layer_takes_autograd(kind):
    model = _Heads(kind).eval()
    x = torch.randn(2, 1, 7, 6, 9, generator=torch.Generator().manual_seed(5))
    res = sx.Explainer(model, "act", "gradcam")(x)
    exact = sx.Explainer(model, "act", "gradcam", gradient_path="autograd")(x)
    assert res.info["gradient_path"] == "autograd"
    with pytest.raises(ValueError, match="gradient_path='analytic' needs target_layer 'act'"):
        sx.Explainer(model, "act", "gradcam", gradient_path="analytic")(x)
    torch.testing.assert_close(res.maps, exact.maps, rtol=0, atol=0)
