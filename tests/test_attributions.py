"""The attribution family (engine/attributions.py): saliency, Input×Gradient, Integrated Gradients
and SmoothGrad, every class from one call, against captum 0.9 class by class on a torchvision
segmenter, an smp U-Net and two 3-D segmenters (a MONAI UNet, and a small Conv3d U-Net with batch norm and
ReLUs for the rules that need them).

Parity: for each explained class k captum explains F_k(x) = Σ_p M_k(p)·logit_k(x)(p) (the
Seg-Grad-CAM target with the same region M_k) with target=None; ours must equal it within 1e-4 of
the largest |attribution| of that class (float32 sums over pixels and steps in another order).
SmoothGrad: captum's NoiseTunnel draws its noise from the global generator; called after
torch.manual_seed(seed) it draws exactly the noise our `seed` option draws (engine/attributions.py,
_Run.noisy), so both see the same noisy inputs.
"""
import pytest
import torch

import seg_xai_fast as sx
from conftest import box_masks, smp_unet, torchvision_model
from peers import OutOnly

captum_attr = pytest.importorskip("captum.attr")

REL = 1e-4


class Tiny3d(torch.nn.Module):
    """A small 3-D segmenter: Conv3d + BatchNorm3d + ReLU, a strided stage, a transposed-conv
    upsample and a skip concatenation (a U-Net in miniature), 3 classes."""

    def __init__(self):
        super().__init__()
        self.enc = torch.nn.Sequential(torch.nn.Conv3d(1, 6, 3, padding=1), torch.nn.BatchNorm3d(6), torch.nn.ReLU())
        self.down = torch.nn.Sequential(torch.nn.Conv3d(6, 8, 3, stride=2, padding=1), torch.nn.ReLU())
        self.up = torch.nn.ConvTranspose3d(8, 6, 2, stride=2)
        self.head = torch.nn.Conv3d(12, 3, 1)

    def forward(self, x):
        e = self.enc(x)
        return self.head(torch.cat([e, self.up(self.down(e))], dim=1))


def tiny3d() -> torch.nn.Module:
    torch.manual_seed(0)
    net = Tiny3d()
    with torch.no_grad():  # non-trivial running statistics
        net.enc[1].running_mean.uniform_(-0.2, 0.2)
        net.enc[1].running_var.uniform_(0.5, 1.5)
    return net.eval()


def box_masks_3d(batch, classes, size, seed):
    g = torch.Generator().manual_seed(seed)
    masks = torch.zeros(batch, classes, size, size, size)
    for b in range(batch):
        for k in range(classes):
            lo = torch.randint(0, size // 2, (3,), generator=g).tolist()
            masks[b, k, lo[0]:lo[0] + size // 3, lo[1]:lo[1] + size // 2, lo[2]:lo[2] + size // 3] = 1.0
    return masks


def _case(name):
    torch.manual_seed(1)
    if name == "deeplabv3_mobilenet":
        model, x = torchvision_model("deeplabv3_mobilenet_v3_large", 3), torch.rand(1, 3, 40, 40)
        masks = box_masks(1, 3, 40, seed=2)
    elif name == "smp_unet":
        model, x = smp_unet(3), torch.rand(1, 3, 32, 32)
        masks = box_masks(1, 3, 32, seed=3)
    elif name == "monai_unet":
        monai_nets = pytest.importorskip("monai.networks.nets")
        torch.manual_seed(0)
        model = monai_nets.UNet(spatial_dims=3, in_channels=1, out_channels=3, channels=(4, 8, 16), strides=(2, 2),
                                num_res_units=1).eval()
        x, masks = torch.rand(1, 1, 16, 16, 16), box_masks_3d(1, 3, 16, seed=5)
    else:
        model, x = tiny3d(), torch.rand(2, 1, 12, 12, 12)
        masks = box_masks_3d(2, 3, 12, seed=4)
    # captum differentiates the parameters too unless they are frozen (slow on the CPU, and not
    # part of any attribution): frozen, as the explainer freezes them for its own calls
    for p in model.parameters():
        p.requires_grad_(False)
    return model, x, masks


CASES = ("deeplabv3_mobilenet", "smp_unet", "monai_unet", "tiny3d")


@pytest.fixture(scope="module", params=CASES)
def case(request):
    return (request.param,) + _case(request.param)


def class_target(model, masks, k, samples=1):
    """captum's forward function for class k's Seg-Grad-CAM target: [rows]. captum stacks the
    noise samples as rows b·T + t and the path steps as blocks of those rows, so row r is image
    (r mod B·T) div T."""
    peer = OutOnly(model)
    B = masks.shape[0]

    def forward(x):
        image = (torch.arange(x.shape[0]) % (B * samples)) // samples
        return (peer(x)[:, k] * masks[image, k]).flatten(1).sum(dim=1)
    return forward


def peer_attributions(model, x, masks, k, method, options):
    """captum's attributions [B,C,*spatial] of class k for our method name and options."""
    o = options
    f = class_target(model, masks, k, o.get("nt_samples", 1) if method == "smoothgrad" else 1)
    if method == "saliency":
        return captum_attr.Saliency(f).attribute(x.clone().requires_grad_(), abs=o.get("abs", True))
    if method == "inputxgradient":
        return captum_attr.InputXGradient(f).attribute(x.clone().requires_grad_())
    if method in ("guidedbackprop", "deconvolution"):
        cls = captum_attr.GuidedBackprop if method == "guidedbackprop" else captum_attr.Deconvolution
        return cls(Scored(f, model)).attribute(x.clone().requires_grad_())
    if method == "guidedgradcam":
        peer = Scored(f, model)
        return captum_attr.GuidedGradCam(peer, model.get_submodule(o["layer"])).attribute(x.clone().requires_grad_())
    if method == "deeplift":
        return captum_attr.DeepLift(Scored(f, model)).attribute(
            x.clone().requires_grad_(), baselines=peer_baseline(x, o.get("baseline", 0.0)))
    if method == "integratedgradients":
        return captum_attr.IntegratedGradients(f).attribute(
            x, baselines=peer_baseline(x, o.get("baseline", 0.0)), n_steps=o["n_steps"],
            method=o.get("method", "gausslegendre"))
    base = o.get("base", "saliency")
    inner = {"saliency": captum_attr.Saliency, "inputxgradient": captum_attr.InputXGradient,
             "integratedgradients": captum_attr.IntegratedGradients}[base](f)
    kwargs = {}
    if base == "saliency":
        kwargs["abs"] = o.get("abs", True)
    if base == "integratedgradients":
        kwargs = dict(baselines=peer_baseline(x, o.get("baseline", 0.0)), n_steps=o["n_steps"],
                      method=o.get("method", "gausslegendre"))
    torch.manual_seed(o.get("seed", 0))  # the noise our seed draws (module docstring)
    return captum_attr.NoiseTunnel(inner).attribute(x.clone().requires_grad_(), nt_type=o["nt_type"],
                                                    nt_samples=o["nt_samples"], stdevs=o["stdevs"], **kwargs)


class Scored(torch.nn.Module):
    """captum's rule-changing methods take an nn.Module (they hook its ReLUs): the target function
    around the model."""

    def __init__(self, forward, model):
        super().__init__()
        self.model, self.score = model, forward

    def forward(self, x):
        return self.score(x)


def peer_baseline(x, baseline):
    if isinstance(baseline, torch.Tensor):
        return baseline.expand_as(x)
    if baseline == "mean":
        return x.mean(dim=tuple(range(2, x.ndim)), keepdim=True).expand_as(x).contiguous()
    return float(baseline)


CONFIGS = [
    ("saliency", {}),
    ("saliency", {"abs": False}),
    ("inputxgradient", {}),
    ("integratedgradients", {"n_steps": 5}),
    ("integratedgradients", {"n_steps": 4, "method": "riemann_trapezoid", "baseline": "mean", "batch_size": 3}),
    ("smoothgrad", {"nt_type": "smoothgrad", "nt_samples": 3, "stdevs": 0.2, "seed": 5}),
    ("smoothgrad", {"base": "integratedgradients", "nt_type": "vargrad", "nt_samples": 2, "stdevs": 0.1,
                    "n_steps": 3, "method": "riemann_middle", "seed": 7, "batch_size": 4}),
    ("smoothgrad", {"base": "inputxgradient", "nt_type": "smoothgrad_sq", "nt_samples": 3, "stdevs": 0.1}),
    ("guidedbackprop", {}),
    ("deconvolution", {}),
]
#: Guided Grad-CAM's layer per case (2-D only: its Grad-CAM is a layer method).
GUIDED_LAYERS = {"deeplabv3_mobilenet": "classifier.0", "smp_unet": "decoder"}


def assert_parity(res, model, x, masks, method, options):
    assert res.attributions.shape == (x.shape[0], len(res.classes)) + tuple(x.shape[1:])
    compared = 0
    for i, k in enumerate(res.classes):
        want = peer_attributions(model, x, masks, k, method, options).detach()
        got = res.attributions[:, i]
        scale = float(want.abs().max())
        err = float((got - want).abs().max())
        assert err <= REL * scale, f"{method} {options} class {k}: max |ours − captum| {err:.3g} > {REL}·{scale:.3g}"
        compared += scale > 0
    assert compared, "captum's attributions are all zero: the comparison would be empty"


@pytest.mark.parametrize("method,options", CONFIGS, ids=[f"{m}-{i}" for i, (m, _) in enumerate(CONFIGS)])
def test_parity_with_captum(case, method, options):
    _, model, x, masks = case
    res = sx.Explainer(model, None, method, options=options, normalize=False)(x, masks=masks)
    assert_parity(res, model, x, masks, method, options)
    # maps: the channel sum (normalize=False), every class from the same call
    torch.testing.assert_close(res.maps, res.attributions.sum(dim=2), rtol=0, atol=1e-6 * float(res.maps.abs().max()))


def test_guided_gradcam_parity_with_captum(case):
    name, model, x, masks = case
    if name not in GUIDED_LAYERS:
        with pytest.raises(ValueError, match="method 'guidedgradcam' explains 2-D images"):
            layer = next(name for name, _ in model.named_modules() if name)
            sx.Explainer(model, layer, "guidedgradcam")(x, masks=masks)
        return
    res = sx.Explainer(model, GUIDED_LAYERS[name], "guidedgradcam", normalize=False)(x, masks=masks)
    assert res.layer == GUIDED_LAYERS[name]
    assert_parity(res, model, x, masks, "guidedgradcam", {"layer": GUIDED_LAYERS[name]})


class FunctionalReLUs(torch.nn.Module):
    """A net whose ReLUs are F.relu calls, in place and not; `modules=True` builds the same net with
    nn.ReLU modules (the form captum's ReLU hooks reach)."""

    def __init__(self, modules=False):
        super().__init__()
        self.a, self.b, self.head = torch.nn.Conv2d(3, 6, 3, padding=1), torch.nn.Conv2d(6, 6, 3, padding=1), \
            torch.nn.Conv2d(6, 3, 1)
        self.relus = torch.nn.ModuleList([torch.nn.ReLU(), torch.nn.ReLU(inplace=True)]) if modules else None

    def forward(self, x):
        if self.relus is not None:
            return self.head(self.relus[1](self.b(self.relus[0](self.a(x)))))
        return self.head(torch.nn.functional.relu(self.b(torch.relu(self.a(x))), inplace=True))


@pytest.mark.parametrize("method", ["guidedbackprop", "deconvolution"])
def test_functional_and_inplace_relus_get_the_rule(method):
    """The rule reaches F.relu / torch.relu too: a net of functional ReLUs equals captum on the same
    net built with nn.ReLU modules (captum leaves functional ReLUs' gradients as they are)."""
    torch.manual_seed(0)
    functional = FunctionalReLUs().eval()
    modules = FunctionalReLUs(modules=True).eval()
    modules.load_state_dict(functional.state_dict())
    x, masks = torch.rand(2, 3, 16, 16), box_masks(2, 3, 16, seed=9)
    res = sx.Explainer(functional, None, method, normalize=False)(x, masks=masks)
    assert_parity(res, modules, x, masks, method, {})
    plain = sx.Explainer(functional, None, "saliency", options={"abs": False}, normalize=False)(x, masks=masks)
    assert not torch.allclose(plain.attributions, res.attributions)  # the rule did change the gradient


#: (architecture, composite): every composite on three architectures at least (zennit's box rule
#: on smp's ResNet-18 stem is the slowest pair, and left out).
LRP_PAIRS = [(name, composite) for name in CASES for composite in
             ("epsilon_plus_flat", "epsilon_gamma_box", "epsilon_alpha2_beta1_flat")
             if (name, composite) != ("smp_unet", "epsilon_gamma_box")]


@pytest.mark.parametrize("name,composite", LRP_PAIRS)
def test_lrp_parity_with_zennit(name, composite):
    """LRP of every class from one call equals zennit's Gradient attributor with the same composite
    and canonizer, class by class, its initial relevance the target's output M_k ⊙ logit_k."""
    zennit_attribution = pytest.importorskip("zennit.attribution")
    from seg_xai_fast.engine.lrp import make_composite
    from seg_xai_fast.engine.options import check_options

    model, x, masks = _case(name)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    options = {"composite": composite}
    res = sx.Explainer(model, None, "lrp", options=options, normalize=False)(x, masks=masks)
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())  # the canonizer undone
    compared = 0
    for i, k in enumerate(res.classes):
        one_hot = torch.zeros(1, 3, *([1] * (x.ndim - 2)))
        one_hot[0, k] = 1.0
        with zennit_attribution.Gradient(model=OutOnly(model), composite=make_composite(check_options("lrp", options))) \
                as attributor:
            _, want = attributor(x.clone(), lambda y: one_hot * masks[:, k:k + 1] * y)
        scale = float(want.abs().max())
        err = float((res.attributions[:, i] - want).abs().max())
        assert err <= REL * scale, f"lrp {composite} class {k}: {err:.3g} > {REL}·{scale:.3g}"
        compared += scale > 0
    assert compared


def test_lrp_without_zennit_names_the_extra(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_zennit(name, *args, **kwargs):
        if name.startswith("zennit"):
            raise ImportError("No module named 'zennit'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_zennit)
    with pytest.raises(ImportError, match=r"pip install 'seg_xai_fast\[lrp\]'"):
        sx.Explainer(tiny3d(), None, "lrp")(torch.rand(1, 1, 6, 6, 6))


def monai_relu_unet(dims):
    """MONAI's UNet with ReLUs and batch norm (strided convolutions, residual units, transposed
    convolutions, concatenation): a segmenter whose non-linearities DeepLIFT's rescale rule covers."""
    monai_nets = pytest.importorskip("monai.networks.nets")
    torch.manual_seed(0)
    model = monai_nets.UNet(spatial_dims=dims, in_channels=1, out_channels=3, channels=(4, 8, 16), strides=(2, 2),
                            num_res_units=1, act="RELU", norm="BATCH").eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


@pytest.mark.parametrize("arch", ["tiny3d", "relu_unet_2d", "relu_unet_3d"])
@pytest.mark.parametrize("baseline", [0.0, "mean"])
def test_deeplift_parity_with_captum(arch, baseline):
    """DeepLIFT's rescale rule (captum's DeepLift) on a 3-D U-Net with batch norm and ReLUs and
    MONAI's UNet with ReLUs in 2-D and 3-D; completeness: each class's attributions sum to
    S_k(x) − S_k(baseline)."""
    if arch == "tiny3d":
        model, x, masks = _case("tiny3d")
    else:
        dims = 2 if arch.endswith("2d") else 3
        model, x = monai_relu_unet(dims), torch.rand(2, 1, *([16] * dims))
        masks = box_masks(2, 3, 16, seed=6) if dims == 2 else box_masks_3d(2, 3, 16, seed=6)
    res = sx.Explainer(model, None, "deeplift", options={"baseline": baseline}, normalize=False)(x, masks=masks)
    assert_parity(res, model, x, masks, "deeplift", {"baseline": baseline})
    base = peer_baseline(x, baseline)
    base = torch.full_like(x, base) if isinstance(base, float) else base
    for i, k in enumerate(res.classes):
        f = class_target(model, masks, k)
        with torch.no_grad():
            gap = f(x) - f(base)
        torch.testing.assert_close(res.attributions[:, i].flatten(1).sum(1), gap, rtol=1e-4, atol=1e-4)


def test_deeplift_max_pool_rule_written_out():
    """Conv → ReLU → MaxPool → Conv → ReLU → upsample → Conv: our DeepLIFT equals the rescale and
    max-pool rules of captum's deep_lift.py written out by hand. (captum's own DeepLift differs on
    this net: its tensor hooks let the ReLU before the pool record the gradient arriving at their
    shared tensor before the pool's rule rewrites it, so the pool's rule is lost.)"""
    F = torch.nn.functional
    torch.manual_seed(0)
    c1, c2, c3 = torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.Conv2d(4, 4, 3, padding=1), torch.nn.Conv2d(4, 3, 1)
    model = torch.nn.Sequential(c1, torch.nn.ReLU(), torch.nn.MaxPool2d(2), c2, torch.nn.ReLU(),
                                torch.nn.Upsample(scale_factor=2), c3).eval()
    x, masks = torch.rand(1, 1, 16, 16), box_masks(1, 3, 16, seed=1)
    res = sx.Explainer(model, None, "deeplift", normalize=False)(x, masks=masks)

    def rescale(h, g):  # ReLU: g·Δy/Δx, its gradient where Δx = 0 (both halves alike)
        h1, h0 = h.chunk(2)
        dx, dy = torch.cat([h1 - h0] * 2), torch.cat([F.relu(h1) - F.relu(h0)] * 2)
        return torch.where(dx.abs() < 1e-10, g * (h > 0), g * dy / dx)

    def vjp(f, at, g):
        return torch.autograd.functional.vjp(f, at, g)[1]

    for k in range(3):
        with torch.no_grad():
            xx = torch.cat([x, torch.zeros_like(x)])  # inputs; baselines
            h1 = c1(xx)
            r1 = F.relu(h1)
            p, idx = F.max_pool2d(r1, 2, return_indices=True)
            h2 = c2(p)
            r2 = F.relu(h2)
            u = F.interpolate(r2, scale_factor=2)
            g = torch.zeros(2, 3, 16, 16)
            g[:, k] = masks[0, k]
            gp = vjp(c2, p, rescale(h2, vjp(lambda t: F.interpolate(t, scale_factor=2), r2, vjp(c3, u, g))))
            (pa, pb), (ra, rb) = p.chunk(2), r1.chunk(2)
            top = torch.max(pa, pb)
            a, b = F.max_unpool2d(gp * torch.cat([top - pb, pa - top]), idx, 2, 2, 0, list(r1.shape)).chunk(2)
            dx = torch.cat([ra - rb] * 2)
            gr1 = torch.where(dx.abs() < 1e-10, F.max_unpool2d(gp, idx, 2, 2, 0, list(r1.shape)),
                              torch.cat([a + b] * 2) / dx)
            want = x * vjp(c1, xx, rescale(h1, gr1))[:1]
        torch.testing.assert_close(res.attributions[:, k], want, rtol=0, atol=1e-6 * float(want.abs().max()))


def test_deeplift_of_the_baseline_itself_is_zero():
    """x = baseline: every Δin is 0, so every rule falls back on its gradient; (x − b)·g = 0."""
    model, x, masks = _case("tiny3d")
    res = sx.Explainer(model, None, "deeplift", options={"baseline": x[0]}, normalize=False)(x[:1], masks=masks[:1])
    assert float(res.attributions.abs().max()) == 0


def test_deeplift_refuses_what_its_rule_does_not_define_and_serves_reused_relus():
    model = torchvision_model("deeplabv3_mobilenet_v3_large", 3)
    with pytest.raises(ValueError, match="module 'backbone.0.2' is Hardswish, for which it does not"):
        sx.Explainer(model, None, "deeplift")(torch.rand(1, 3, 32, 32))

    class Functional(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 2, 1)

        def forward(self, x):
            return torch.nn.functional.relu(self.conv(x))

    with pytest.raises(ValueError, match="calls relu as a function"):
        sx.Explainer(Functional().eval(), None, "deeplift")(torch.rand(1, 3, 8, 8))
    # a module called twice (ResNet blocks call one nn.ReLU twice; captum's DeepLift refuses them): each
    # call rescaled with its own input, as the same net with two ReLU modules in captum
    class Twice(torch.nn.Module):
        def __init__(self, distinct=False):
            super().__init__()
            self.a, self.b, self.head = torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.Conv2d(4, 4, 3, padding=1), \
                torch.nn.Conv2d(4, 3, 1)
            self.relu = torch.nn.ReLU(inplace=True)
            self.relu2 = torch.nn.ReLU(inplace=True) if distinct else self.relu

        def forward(self, x):
            return self.head(self.relu2(self.b(self.relu(self.a(x)))))

    torch.manual_seed(0)
    twice, distinct = Twice().eval(), Twice(distinct=True).eval()
    distinct.load_state_dict(twice.state_dict(), strict=False)
    x, masks = torch.rand(2, 3, 12, 12), box_masks(2, 3, 12, seed=3)
    res = sx.Explainer(twice, None, "deeplift", normalize=False)(x, masks=masks)
    assert_parity(res, distinct, x, masks, "deeplift", {})
