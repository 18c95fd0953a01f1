"""Parity with the real pytorch-grad-cam package (`grad-cam` on PyPI), class by class.

For the same model, target layer and Seg-Grad-CAM target (class k's logits summed over a mask),
every method's map must match the peer's to 1e-4 (max abs): the peer computes in float32 NumPy
and OpenCV, we in float32 torch, so ~1e-6 relative differences are expected, amplified at most
by the two min-max normalisations. Models are random-initialised real torchvision
architectures (no weights can be downloaded here) and the bundled trained demo model.
"""
import numpy as np
import pytest
import torch
import torchvision.models.segmentation as tvseg

import seg_xai_fast as sx
from conftest import box_masks

pgc = pytest.importorskip("pytorch_grad_cam", reason="the grad-cam package is a test dependency: pip install '.[test]'")
from pytorch_grad_cam.utils.model_targets import SemanticSegmentationTarget  # noqa: E402
from peers import OutOnly as _OutOnly  # noqa: E402

PEER_CLASSES = {
    "gradcam": pgc.GradCAM,
    "gradcam++": pgc.GradCAMPlusPlus,
    "xgradcam": pgc.XGradCAM,
    "hirescam": pgc.HiResCAM,
    "layercam": pgc.LayerCAM,
    "eigencam": pgc.EigenCAM,
}
TOL = 1e-4


def _torchvision(name, size):
    torch.manual_seed(0)
    model = getattr(tvseg, name)(weights=None, weights_backbone=None, num_classes=21).eval()
    return model, torch.rand(2, 3, size, size, generator=torch.Generator().manual_seed(1))


CASES = {
    "fcn_resnet50": lambda: (*_torchvision("fcn_resnet50", 64), "backbone.layer4"),
    "deeplabv3_mobilenet_v3_large": lambda: (*_torchvision("deeplabv3_mobilenet_v3_large", 96), "backbone.16"),
    "lraspp_mobilenet_v3_large": lambda: (*_torchvision("lraspp_mobilenet_v3_large", 96), "backbone.16"),
    # the closed-form path: the input of the final 1×1 classifier
    "deeplabv3_mobilenet_v3_large@classifier.3": lambda: (*_torchvision("deeplabv3_mobilenet_v3_large", 96), "classifier.3"),
    "demo": lambda: (sx.demo_model(), sx.synthetic_scenes(2, seed=777, size=128)[0], "decoder"),
}


# The torchvision architectures take most of the suite's time: `pytest -m "not slow"` keeps the demo model.
@pytest.fixture(scope="module", params=[n if n == "demo" else pytest.param(n, marks=pytest.mark.slow)
                                        for n in sorted(CASES)])
def case(request):
    return request.param, *CASES[request.param]()


def _box_masks(batch, classes, size, seed):
    """Non-empty random box regions [B,K,H,W], one per (image, class id in `classes`)."""
    return box_masks(batch, len(classes), size, seed)


def _peer_maps(model, layer, method, images, classes, masks):
    """The peer's maps [B,K,H,W], one call per (image, class) as its API requires."""
    wrapped = _OutOnly(model)
    out = np.zeros((images.shape[0], len(classes)) + tuple(images.shape[-2:]), np.float32)
    with PEER_CLASSES[method](model=wrapped, target_layers=[layer]) as cam:
        for b in range(images.shape[0]):
            for k, c in enumerate(classes):
                target = SemanticSegmentationTarget(c, masks[b, k].numpy())
                out[b, k] = cam(input_tensor=images[b:b + 1], targets=[target])[0]
    return torch.from_numpy(out)


@pytest.mark.parametrize("method", sorted(PEER_CLASSES))
def test_matches_pytorch_grad_cam_on_regions(case, method, monkeypatch):
    name, model, images, layer_name = case
    fix_peer_projection_sign(monkeypatch)
    classes = [1, 3]
    masks = _box_masks(images.shape[0], classes, images.shape[-1], seed=5)
    ours = sx.Explainer(model, layer_name, method)(images, classes=classes, masks=masks)
    peer = _peer_maps(model, model.get_submodule(layer_name), method, images, classes, masks)
    assert ours.maps.shape == peer.shape
    for b in range(images.shape[0]):
        for k, c in enumerate(classes):
            diff = (ours.maps[b, k] - peer[b, k]).abs().max().item()
            assert diff <= TOL, f"{name} {method} image {b} class {c}: max abs diff {diff:.2e}"


def test_matches_pytorch_grad_cam_on_predicted_regions(case):
    """The default target: each class's predicted pixels (SemanticSegmentationTarget(k, argmax == k))."""
    name, model, images, layer_name = case
    with torch.no_grad():
        logits = _OutOnly(model)(images)
    labels = logits.argmax(1)
    classes = sorted(set(labels.unique().tolist()))[:3]
    masks = torch.stack([(labels == c).float() for c in classes], dim=1)
    ours = sx.Explainer(model, layer_name, "gradcam")(images, classes=classes)
    peer = _peer_maps(model, model.get_submodule(layer_name), "gradcam", images, classes, masks)
    diff = (ours.maps - peer).abs().max().item()
    assert diff <= TOL, f"{name}: max abs diff {diff:.2e}"


def fix_peer_projection_sign(monkeypatch):
    """The SVD leaves every principal-component map's sign free and the peer's follows its LAPACK
    build. Give the peer's projections our documented sign (negated where |min| > |max|) by wrapping
    its projection functions, so a comparison still fails on any other difference."""
    import pytorch_grad_cam.utils.svd_on_activations as svd

    def signed(fn):
        def wrapper(*args, **kwargs):
            out = fn(*args, **kwargs)
            flat = out.reshape(out.shape[0], -1)
            flip = np.abs(flat.min(axis=1)) > np.abs(flat.max(axis=1))
            return np.where(flip[:, None], -flat, flat).reshape(out.shape).astype(np.float32)
        return wrapper

    for module in ("base_cam", "eigen_cam", "eigen_grad_cam", "grad_cam_elementwise", "hirescam", "layer_cam"):
        monkeypatch.setattr(f"pytorch_grad_cam.{module}.get_2d_projection", signed(svd.get_2d_projection))
    monkeypatch.setattr("pytorch_grad_cam.kpca_cam.get_2d_projection_kernel", signed(svd.get_2d_projection_kernel))
