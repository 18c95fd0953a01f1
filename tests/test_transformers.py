"""Transformer segmenters and the model libraries people run: Hugging Face transformers
(SegFormer, DPT, UperNet-ConvNeXt, Mask2Former) and segmentation-models-pytorch.

Every model is built from a tiny config, random-initialised (nothing is downloaded), at 64 px.
Parity: class by class against the real pytorch-grad-cam package, the peer given a wrapper that
upsamples the logits (as the libraries' post-processing) and the matching reshape_transform.
"""
import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import seg_xai_fast as sx

transformers = pytest.importorskip("transformers", reason="transformers is a test dependency: pip install '.[test]'")
smp = pytest.importorskip("segmentation_models_pytorch", reason="segmentation-models-pytorch is a test dependency")
pgc = pytest.importorskip("pytorch_grad_cam", reason="the grad-cam package is a test dependency")
from pytorch_grad_cam.utils.model_targets import SemanticSegmentationTarget  # noqa: E402
from conftest import box_masks, smp_unet  # noqa: E402

TOL = 1e-4
SIZE = 64
PEER = {"gradcam": pgc.GradCAM, "gradcam++": pgc.GradCAMPlusPlus, "hirescam": pgc.HiResCAM}


def _torch_init(model):
    """PyTorch's default init for every Linear/Conv: Hugging Face's (std 0.02) shrinks the gradients at
    early layers to ~1e-8, where the maps of any implementation are float noise."""
    for m in model.modules():
        if isinstance(m, (nn.Linear, nn.Conv2d)):
            m.reset_parameters()
    return model.eval()


def _segformer(num_labels=5):
    from transformers import SegformerConfig, SegformerForSemanticSegmentation

    torch.manual_seed(0)
    cfg = SegformerConfig(depths=[1, 1, 1, 1], sr_ratios=[8, 4, 2, 1], hidden_sizes=[8, 16, 24, 32],
                          num_attention_heads=[1, 1, 2, 2], decoder_hidden_size=32, num_labels=num_labels)
    return _torch_init(SegformerForSemanticSegmentation(cfg))


def _dpt():
    from transformers import DPTConfig, DPTForSemanticSegmentation

    torch.manual_seed(0)
    cfg = DPTConfig(image_size=SIZE, patch_size=16, hidden_size=32, num_hidden_layers=4, num_attention_heads=2,
                    intermediate_size=64, backbone_out_indices=[0, 1, 2, 3], neck_hidden_sizes=[8, 16, 16, 32],
                    fusion_hidden_size=16, head_in_index=-1, num_labels=5, reassemble_factors=[4, 2, 1, 0.5])
    return _torch_init(DPTForSemanticSegmentation(cfg))


def _upernet_convnext():
    from transformers import ConvNextConfig, UperNetConfig, UperNetForSemanticSegmentation

    torch.manual_seed(0)
    backbone = ConvNextConfig(hidden_sizes=[8, 16, 24, 32], depths=[1, 1, 1, 1],
                              out_features=["stage1", "stage2", "stage3", "stage4"])
    cfg = UperNetConfig(backbone_config=backbone, hidden_size=16, num_labels=5, use_auxiliary_head=False)
    return _torch_init(UperNetForSemanticSegmentation(cfg))


def _mask2former():
    from transformers import Mask2FormerConfig, Mask2FormerForUniversalSegmentation, SwinConfig

    torch.manual_seed(0)
    backbone = SwinConfig(image_size=SIZE, patch_size=4, embed_dim=16, depths=[1, 1, 1, 1], num_heads=[1, 1, 2, 2],
                          window_size=2, out_features=["stage1", "stage2", "stage3", "stage4"])
    cfg = Mask2FormerConfig(backbone_config=backbone, num_labels=5, num_queries=6, hidden_dim=32,
                            encoder_feedforward_dim=32, dim_feedforward=32, decoder_layers=2, encoder_layers=1,
                            mask_feature_size=32, feature_size=32, num_attention_heads=2, use_pretrained_backbone=False)
    return _torch_init(Mask2FormerForUniversalSegmentation(cfg))


def _smp_unet():
    return smp_unet(decoder_channels=(32, 16, 16, 8, 8))


class _PeerWrapper(nn.Module):
    """What a pytorch-grad-cam user writes: the logits as a Tensor, upsampled to the input."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        out = self.model(x)
        logits = out if isinstance(out, torch.Tensor) else out.logits
        return F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)


def _tokens_to_grid(t):  # DPT at 64 px, patch 16: CLS + 4×4 tokens
    return t[:, 1:].reshape(t.shape[0], 4, 4, t.shape[2]).permute(0, 3, 1, 2)


def _channels_last(t):
    return t.permute(0, 3, 1, 2)


# name → (model factory, target layer, peer's reshape_transform)
CASES = {
    "segformer@decode_head": (_segformer, "decode_head.activation", None),
    "dpt@vit_layer_tokens": (_dpt, "dpt.encoder.layer.2", _tokens_to_grid),
    "upernet_convnext@channels_last": (_upernet_convnext, "backbone.encoder.stages.3.layers.0.pwconv2", _channels_last),
    "smp_unet@decoder": (_smp_unet, "decoder", None),
}


@pytest.fixture(scope="module", params=sorted(CASES))
def case(request):
    factory, layer, reshape = CASES[request.param]
    images = torch.rand(2, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(1))
    return request.param, factory(), layer, reshape, images


def _box_masks(batch, k, seed):
    return box_masks(batch, k, SIZE, seed)


def _peer_maps(model, layer, reshape, method, images, classes, masks):
    out = np.zeros((images.shape[0], len(classes), SIZE, SIZE), np.float32)
    with PEER[method](model=_PeerWrapper(model), target_layers=[model.get_submodule(layer)],
                      reshape_transform=reshape) as cam:
        for b in range(images.shape[0]):
            for i, c in enumerate(classes):
                out[b, i] = cam(input_tensor=images[b:b + 1], targets=[SemanticSegmentationTarget(c, masks[b, i].numpy())])[0]
    return torch.from_numpy(out)


@pytest.mark.parametrize("method", sorted(PEER))
def test_matches_pytorch_grad_cam(case, method):
    name, model, layer, reshape, images = case
    classes = [1, 3]
    masks = _box_masks(images.shape[0], len(classes), seed=5)
    explainer = sx.Explainer(model, layer, method)  # the model as given: no wrapper, no reshape
    ours = explainer(images, classes=classes, masks=masks)
    peer = _peer_maps(model, layer, reshape, method, images, classes, masks)
    assert ours.maps.shape == peer.shape
    diff = (ours.maps - peer).abs().max().item()
    assert diff <= TOL, f"{name} {method}: max abs diff {diff:.2e}"
    assert ours.maps.amax() > 0.5  # not vacuous
    if name.startswith("segformer"):
        assert explainer.gradient_path == "analytic"
    elif name.startswith("dpt"):
        assert ours.info["backward_start"] == "logits before upsample"  # DPT's own nn.Upsample found


def test_segformer_pulls_masks_back_through_the_upsample():
    model = _segformer()
    images = torch.rand(1, 3, SIZE, SIZE)
    res = sx.Explainer(model, "decode_head.linear_fuse", "gradcam")(images)  # not a linear head: autograd
    assert res.info["backward_start"] == "logits before upsample"
    analytic = sx.Explainer(model, "decode_head.activation", "gradcam")
    analytic(images)
    assert analytic.gradient_path == "analytic"


def test_as_segmenter_outputs_upsampled_logits_and_leaves_the_model_unchanged():
    model = _segformer().train()
    children = dict(model.named_children())
    seg = sx.as_segmenter(model)
    images = torch.rand(2, 3, SIZE, SIZE)
    seg.eval()
    with torch.no_grad():
        out = seg(images)
        ref = F.interpolate(model(pixel_values=images).logits, size=(SIZE, SIZE), mode="bilinear", align_corners=False)
    assert out.shape == (2, 5, SIZE, SIZE)
    assert torch.equal(out, ref)
    assert sx.as_segmenter(seg) is seg
    assert seg.get_submodule("decode_head.classifier") is model.decode_head.classifier  # names as in the model
    # Explainer wraps internally; the user's model keeps its mode, flags, children and no hooks
    model.train()
    hooks = [(list(m._forward_hooks), list(m._forward_pre_hooks)) for m in model.modules()]  # transformers' own
    with pytest.warns(UserWarning, match="train mode"):
        sx.Explainer(model, "decode_head.activation")(images)
    assert model.training and all(p.requires_grad for p in model.parameters())
    assert dict(model.named_children()) == children
    assert [(list(m._forward_hooks), list(m._forward_pre_hooks)) for m in model.modules()] == hooks


def test_mask2former_semantic_logits_equal_the_library_post_processing():
    from transformers import Mask2FormerImageProcessor

    model = _mask2former()
    images = torch.rand(2, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        ours = sx.as_segmenter(model)(images)  # [B,L,H,W]
        outputs = model(pixel_values=images)
    processed = Mask2FormerImageProcessor().post_process_semantic_segmentation(
        outputs, target_sizes=[(SIZE, SIZE)] * 2, return_segmentation_scores=True)
    library = torch.stack([p["segmentation_scores"] for p in processed])  # before its argmax
    assert ours.shape == library.shape == (2, 5, SIZE, SIZE)
    assert (ours - library).abs().max().item() <= 1e-5
    assert torch.equal(ours.argmax(1), torch.stack([p["segmentation"] for p in processed]))


def test_mask2former_explained_as_given_matches_the_peer():
    model = _mask2former()
    images = torch.rand(1, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(3))
    layer = "model.pixel_level_module.decoder.mask_projection"
    masks = _box_masks(1, 2, seed=7)
    ours = sx.Explainer(model, layer, "gradcam")(images, classes=[0, 2], masks=masks)
    peer = np.zeros((1, 2, SIZE, SIZE), np.float32)
    with pgc.GradCAM(model=sx.as_segmenter(model), target_layers=[model.get_submodule(layer)]) as cam:
        for i, c in enumerate([0, 2]):
            peer[0, i] = cam(input_tensor=images, targets=[SemanticSegmentationTarget(c, masks[0, i].numpy())])[0]
    diff = (ours.maps - torch.from_numpy(peer)).abs().max().item()
    assert diff <= TOL, f"max abs diff {diff:.2e}"


def test_explicit_reshape_equals_the_inferred_one():
    model = _dpt()
    images = torch.rand(1, 3, SIZE, SIZE)
    auto = sx.Explainer(model, "dpt.encoder.layer.1", "gradcam++")(images)
    given = sx.Explainer(model, "dpt.encoder.layer.1", "gradcam++", reshape=_tokens_to_grid)(images)
    assert torch.equal(auto.maps, given.maps)
    assert auto.maps.shape == (1, 5, SIZE, SIZE)
    with pytest.raises(TypeError, match="reshape must be None or a callable"):
        sx.Explainer(model, "dpt.encoder.layer.1", reshape="tokens")


def test_register_tokens_are_found_from_the_token_count():
    from seg_xai_fast.engine.adapters import channels_last_to_first, infer_reshape

    grid = infer_reshape((2, 5 + 14 * 14, 8), (224, 224), "layer")  # CLS + 4 registers, 14×14
    assert (grid.prefix, grid.h, grid.w) == (5, 14, 14)
    grid = infer_reshape((2, 2 + 12 * 16, 8), (192, 256), "layer")  # CLS + distillation, 12×16
    assert (grid.prefix, grid.h, grid.w) == (2, 12, 16)
    assert infer_reshape((2, 8, 16, 16), (64, 64), "layer") is None  # channels-first stays
    assert infer_reshape((2, 16, 16, 96), (64, 64), "layer") is channels_last_to_first


def test_ambiguous_layouts_are_refused_unless_the_model_settles_them():
    """Two readings of one shape: refused with both, unless the module's layout (4-D) or the model's
    patch embedding (tokens) says which; never chosen silently."""
    from seg_xai_fast.engine.adapters import (channels_last_to_first, infer_reshape, module_layout, patch_strides,
                                              prefix_tokens)

    # [B,16,16,16] on 64×64: channels-first C=16 on 16×16, or channels-last 16×16 with C=16
    with pytest.raises(ValueError, match=r"reads both as channels-first \[B,C=16,h=16,w=16\] and as channels-last"):
        infer_reshape((2, 16, 16, 16), (64, 64), "layer")
    assert infer_reshape((2, 16, 16, 16), (64, 64), "layer", "channels_first") is None
    assert infer_reshape((2, 16, 16, 16), (64, 64), "layer", "channels_last") is channels_last_to_first
    assert module_layout(nn.Sequential(nn.Conv2d(3, 16, 3), nn.ReLU())) == "channels_first"
    assert module_layout(nn.Sequential(nn.LayerNorm(16), nn.GELU())) == "channels_last"
    assert module_layout(nn.GELU()) is None
    # 65 tokens on 32×32: CLS + an 8×8 grid (stride 4), or 16 prefix tokens + a 7×7 grid (stride 5, rounded up)
    with pytest.raises(ValueError, match=r"read several ways .*1 prefix token \+ a 8×8 grid; 16 prefix tokens \+ a 7×7"):
        infer_reshape((2, 65, 8), (32, 32), "layer")
    grid = infer_reshape((2, 65, 8), (32, 32), "layer", strides=(4,))
    assert (grid.prefix, grid.h, grid.w) == (1, 8, 8)
    grid = infer_reshape((2, 65, 8), (32, 32), "layer", strides=(5,))
    assert (grid.prefix, grid.h, grid.w) == (16, 7, 7)
    grid = infer_reshape((2, 65, 8), (32, 32), "layer", prefix=1)  # the model has one CLS token
    assert (grid.prefix, grid.h, grid.w) == (1, 8, 8)
    assert patch_strides(nn.Sequential(nn.Conv2d(3, 8, 4, stride=4), nn.Conv2d(8, 8, 3, stride=2))) == (4,)
    vit = nn.Module()
    vit.cls_token, vit.register_tokens = nn.Parameter(torch.zeros(1, 1, 8)), nn.Parameter(torch.zeros(1, 4, 8))
    assert prefix_tokens(vit) == 5 and prefix_tokens(nn.Linear(2, 2)) == 0


class _OddTokens(nn.Module):
    """A layer whose 300 tokens (a 15×20 grid) fit no grid of a 64×64 image."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 1)
        self.embed = nn.Linear(8, 8)
        self.head = nn.Conv2d(8, 3, 1)

    def forward(self, x):
        t = self.embed(F.adaptive_avg_pool2d(self.stem(x), (15, 20)).flatten(2).transpose(1, 2))  # [B,300,8]
        grid = t.transpose(1, 2).reshape(x.shape[0], 8, 15, 20)
        return F.interpolate(self.head(grid), size=x.shape[-2:], mode="bilinear", align_corners=False)


def test_tokens_without_a_grid_give_a_clear_error():
    model = _OddTokens().eval()
    with pytest.raises(ValueError, match=r"target_layer 'embed' outputs tokens \[B,N=300,C=8\].*reshape="):
        sx.Explainer(model, "embed")(torch.rand(1, 3, 64, 64))
    with pytest.raises(ValueError, match=r"reshape of target_layer 'embed'.*must give \[B=1,C,h,w\]"):
        sx.Explainer(model, "embed", reshape=lambda t: t[:, 0])(torch.rand(1, 3, 64, 64))


def test_a_hf_output_without_wrapping_names_as_segmenter():
    from seg_xai_fast.engine.capture import select_output

    model = _segformer()
    with torch.no_grad():
        out = model(pixel_values=torch.rand(1, 3, SIZE, SIZE))
    with pytest.raises(ValueError, match="as_segmenter"):
        select_output(out, "out", 1)


def test_hooks_the_model_adds_on_its_first_forward_see_the_leaf():
    """transformers installs its own output-recording hooks on the first forward; the DPT neck
    reads what they record, so the engine's hook must run before them on every later call."""
    model = _dpt()
    images = torch.rand(1, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(4))
    first = sx.Explainer(model, "dpt.encoder.layer.2", "gradcam++")(images)
    second = sx.Explainer(model, "dpt.encoder.layer.2", "gradcam++")(images)
    assert torch.equal(first.maps, second.maps)


def test_segformer_exports_to_onnx_and_matches(tmp_path):
    pytest.importorskip("onnxruntime")
    model = _segformer()
    images = torch.rand(2, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(6))
    path = tmp_path / "segformer.onnx"
    sx.export_onnx(model, "decode_head.activation", str(path), example_input=images[:1])
    onnx_maps = sx.OnnxExplainer(str(path), method="gradcam++")(images).maps
    torch_maps = sx.Explainer(model, "decode_head.activation", "gradcam++")(images).maps
    assert (onnx_maps - torch_maps).abs().max().item() <= 1e-4


def test_hub_specs_build_with_their_default_layers(tmp_path):
    from seg_xai_fast.models import load_model

    images = torch.rand(1, 3, SIZE, SIZE)
    _segformer().save_pretrained(tmp_path / "segformer")  # --weights DIR: a local save_pretrained folder
    loaded = load_model("hf:segformer", weights=str(tmp_path / "segformer"))
    explainer = sx.Explainer(loaded.model, loaded.layer, "gradcam")
    assert explainer(images).maps.shape == (1, 5, SIZE, SIZE)
    assert explainer.gradient_path == "analytic" and loaded.layer == "decode_head.activation"
    unet = load_model("smp:Unet:resnet18", num_classes=3)
    assert sx.Explainer(unet.model, unet.layer, "gradcam")(images).maps.shape == (1, 3, SIZE, SIZE)
    with pytest.raises(ValueError, match="smp:ARCH:ENCODER"):
        load_model("smp:Unet")
    with pytest.raises(ValueError, match="hf:NAME"):
        load_model("hf:nope")


def test_info_shows_a_specs_default_layer(capsys):
    from seg_xai_fast.cli import main

    assert main(["info", "--model", "smp:FPN:resnet18", "--json"]) == 0
    out = capsys.readouterr().out
    assert '"default_layer": "decoder"' in out and '"model": "smp:FPN:resnet18"' in out
    # without --num-classes or weights: the default class count (21)
    assert main(["info", "--model", "hf:segformer", "--json"]) == 0
    assert '"default_layer": "decode_head.activation"' in capsys.readouterr().out


def test_smp_heads_with_an_upsample_module_take_the_closed_form():
    """smp's DeepLabV3+ head: 1×1 conv → nn.Upsample(×4) → Activation(Identity); the upsample
    module is passed over, so the conv's output is the pre-upsample logits and a linear head."""
    torch.manual_seed(0)
    model = smp.DeepLabV3Plus("resnet18", encoder_weights=None, classes=4).eval()
    images = torch.rand(1, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(8))
    analytic = sx.Explainer(model, "decoder", "gradcam++")
    fast = analytic(images)
    slow = sx.Explainer(model, "decoder", "gradcam++", gradient_path="autograd")(images)
    assert analytic.gradient_path == "analytic"
    assert slow.info["backward_start"] == "logits before upsample"
    assert (fast.maps - slow.maps).abs().max().item() <= 1e-4
