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


@pytest.mark.parametrize("composite", ["epsilon_plus_flat", "epsilon_gamma_box", "epsilon_alpha2_beta1_flat"])
def test_lrp_parity_with_zennit(case, composite):
    """LRP of every class from one call equals zennit's Gradient attributor with the same composite
    and canonizer, class by class, its initial relevance the target's output M_k ⊙ logit_k."""
    zennit_attribution = pytest.importorskip("zennit.attribution")
    from seg_xai_fast.engine.lrp import make_composite
    from seg_xai_fast.engine.options import check_options

    _, model, x, masks = case
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
