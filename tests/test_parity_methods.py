"""Parity of the newer methods with the real pytorch-grad-cam package, class by class (≤ 1e-4).

Grad-CAM element-wise, Eigen-Grad-CAM, Seg-Eigen-CAM, KPCA-CAM, FEM, Finer-CAM and eigen_smooth,
on a torchvision model, a segmentation_models_pytorch model (random-initialised) and the bundled
demo model. The principal-component maps have a free sign; the peer's projections are given ours
(negated where |min| > |max|, the convention of every projection here) by wrapping its projection
functions, so the comparison still fails on any other difference.
"""
import numpy as np
import pytest
import torch
import torchvision.models.segmentation as tvseg

import seg_xai_fast as sx

pgc = pytest.importorskip("pytorch_grad_cam", reason="the grad-cam package is a test dependency: pip install '.[test]'")
from pytorch_grad_cam.utils.model_targets import SemanticSegmentationTarget  # noqa: E402
from test_parity_gradcam import TOL, _box_masks, _OutOnly, fix_peer_projection_sign  # noqa: E402

PEER = {
    "gradcam": pgc.GradCAM,
    "gradcam++": pgc.GradCAMPlusPlus,
    "xgradcam": pgc.XGradCAM,
    "hirescam": pgc.HiResCAM,
    "layercam": pgc.LayerCAM,
    "gradcam_elementwise": pgc.GradCAMElementWise,
    "eigengradcam": pgc.EigenGradCAM,
    "segeigencam": pgc.SegEigenCAM,
    "eigencam": pgc.EigenCAM,
}
GRADIENT_NEW = ("gradcam_elementwise", "eigengradcam", "segeigencam")
EIGEN_SMOOTH = ("gradcam", "gradcam++", "xgradcam", "hirescam", "layercam", "gradcam_elementwise")


def _tv():
    torch.manual_seed(0)
    model = tvseg.deeplabv3_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=21).eval()
    return model, torch.rand(1, 3, 96, 96, generator=torch.Generator().manual_seed(1)), "backbone.16"


def _smp():
    smp = pytest.importorskip("segmentation_models_pytorch")
    torch.manual_seed(0)
    model = smp.Unet("resnet18", encoder_weights=None, classes=5).eval()
    return model, torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(2)), "decoder.blocks.2"


CASES = {
    "deeplabv3_mobilenet_v3_large": _tv,
    "smp_unet_resnet18": _smp,
    # 64² keeps KPCA-CAM's (h·w)² kernel matrix small (32² positions) for the peer's solver too
    "demo": lambda: (sx.demo_model(), sx.synthetic_scenes(2, seed=777, size=64)[0], "decoder"),
}


@pytest.fixture(scope="module", params=[n if n == "demo" else pytest.param(n, marks=pytest.mark.slow)
                                        for n in sorted(CASES)])
def case(request):
    return request.param, *CASES[request.param]()


@pytest.fixture(autouse=True)
def peer_sign(monkeypatch):
    fix_peer_projection_sign(monkeypatch)


def _compare(name, method, ours, peer, classes):
    assert ours.shape == peer.shape
    for b in range(ours.shape[0]):
        for k, c in enumerate(classes):
            diff = (ours[b, k] - peer[b, k]).abs().max().item()
            assert diff <= TOL, f"{name} {method} image {b} class {c}: max abs diff {diff:.2e}"


def _peer(cam_class, model, layer, images, classes, masks, **call):
    out = np.zeros((images.shape[0], len(classes)) + tuple(images.shape[-2:]), np.float32)
    with cam_class(model=_OutOnly(model), target_layers=[layer]) as cam:
        for b in range(images.shape[0]):
            for k, c in enumerate(classes):
                target = SemanticSegmentationTarget(c, masks[b, k].numpy())
                out[b, k] = cam(input_tensor=images[b:b + 1], targets=[target], **call)[0]
    return torch.from_numpy(out)


@pytest.mark.parametrize("method", GRADIENT_NEW)
def test_gradient_methods_match_peer(case, method):
    name, model, images, layer = case
    classes = [1, 3]
    masks = _box_masks(images.shape[0], classes, images.shape[-1], seed=5)
    ours = sx.Explainer(model, layer, method)(images, classes=classes, masks=masks).maps
    peer = _peer(PEER[method], model, model.get_submodule(layer), images, classes, masks)
    _compare(name, method, ours, peer, classes)


@pytest.mark.parametrize("method", EIGEN_SMOOTH)
def test_eigen_smooth_matches_peer(case, method):
    name, model, images, layer = case
    classes = [2]
    masks = _box_masks(images.shape[0], classes, images.shape[-1], seed=6)
    ours = sx.Explainer(model, layer, method, options={"eigen_smooth": True})(images, classes=classes, masks=masks).maps
    peer = _peer(PEER[method], model, model.get_submodule(layer), images, classes, masks, eigen_smooth=True)
    _compare(name, f"{method}+eigen_smooth", ours, peer, classes)


@pytest.mark.parametrize("method,options,peer_cam", [
    ("eigencam", {}, lambda m, layer: pgc.EigenCAM(m, [layer])),
    ("fem", {}, lambda m, layer: pgc.FEM(m, [layer])),
    ("fem", {"k": 1}, lambda m, layer: pgc.FEM(m, [layer], k=1)),
    ("kpcacam", {}, lambda m, layer: pgc.KPCA_CAM(m, [layer])),
    ("kpcacam", {"kernel": "rbf", "gamma": 0.01}, lambda m, layer: pgc.KPCA_CAM(m, [layer], kernel="rbf", gamma=0.01)),
])
def test_activation_methods_match_peer(case, method, options, peer_cam):
    """Class-agnostic: one peer map per image (its target is unused), ours shared by every class."""
    name, model, images, layer = case
    ours = sx.Explainer(model, layer, method, options=options)(images, classes=[0, 1]).maps
    with peer_cam(_OutOnly(model), model.get_submodule(layer)) as cam:
        peer = torch.from_numpy(cam(input_tensor=images, targets=None))
    _compare(name, method, ours, peer[:, None].expand_as(ours), [0, 1])


class _RegionMeans(torch.nn.Module):
    """A classifier view of a segmenter for Finer-CAM's peer: the mean logits [B,L] over a region
    per image (masks float [B,H,W]). Our segmentation form is the peer's target on these scores
    times the region's area |M|. The factor would not change a map but for the peer's min-max eps
    (1e-7), which is not negligible against raw maps as small as the 1/|M|-scaled ones of a
    random-initialised model (measured: 3e-3 on DeepLab). So the scores are the means in value and
    |M|·means in gradient (m + (|M|−1)·(m − m.detach())): the peer's ranking and softmax see the
    means, its backward the sums, exactly our T_k."""

    def __init__(self, model, masks):
        super().__init__()
        self.model, self.masks = _OutOnly(model), masks

    def forward(self, x):
        logits = self.model(x)
        m = self.masks[: x.shape[0]]
        area = m.sum((1, 2))[:, None]
        means = (logits * m[:, None]).sum((2, 3)) / area
        return means + (area - 1) * (means - means.detach())


@pytest.mark.parametrize("options", [{}, {"alpha": 0.5, "comparison_categories": (1, 2)},
                                     {"base_method": "layercam"}])
def test_finercam_matches_peer_on_region_means(case, options):
    name, model, images, layer = case
    classes = [1, 3]
    masks = _box_masks(images.shape[0], classes, images.shape[-1], seed=7)
    ours = sx.Explainer(model, layer, "finercam", options=options)(images, classes=classes, masks=masks).maps
    base = PEER[options.get("base_method", "gradcam")]
    peer = torch.zeros_like(ours)
    for k, c in enumerate(classes):
        for b in range(images.shape[0]):  # the peer's target differs per image: one call each
            wrapped = _RegionMeans(model, masks[b:b + 1, k])
            cam = pgc.FinerCAM(wrapped, [model.get_submodule(layer)], base_method=base)
            kwargs = {"alpha": options.get("alpha", 1)}
            if "comparison_categories" in options:
                kwargs["comparison_categories"] = list(options["comparison_categories"])
            peer[b, k] = torch.from_numpy(cam(images[b:b + 1], target_idx=c, **kwargs)[0])
            cam.base_cam.activations_and_grads.release()
    _compare(name, "finercam", ours, peer, classes)
