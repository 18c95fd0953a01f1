"""What the test files share: the models, built the same way everywhere, and the fixtures around them.

The models are random-initialised (no weights can be downloaded on the test machines) and seeded,
so two files that build "the same" model get the same weights; `sx.demo_model()` is the trained
demo model. The adapter the peer packages need (pytorch-grad-cam and captum take a model that
returns a Tensor) is in peers.py.

Test files import the factories (`from conftest import torchvision_model`); the fixtures reach
every test by name.
"""
import os
from pathlib import Path

import pytest
import torch

import seg_xai_fast
from seg_xai_fast.demo.model import DemoSegNet


def random_demo() -> DemoSegNet:
    """The demo architecture with random weights (seed 0), in eval mode."""
    torch.manual_seed(0)
    return DemoSegNet().eval()


def torchvision_model(name: str, num_classes: int = 21) -> torch.nn.Module:
    """torchvision.models.segmentation.<name> with random weights (seed 0), in eval mode."""
    import torchvision.models.segmentation as tvseg

    torch.manual_seed(0)
    return getattr(tvseg, name)(weights=None, weights_backbone=None, num_classes=num_classes).eval()


def smp_unet(classes: int = 5, **kwargs) -> torch.nn.Module:
    """A segmentation-models-pytorch U-Net on ResNet-18 with random weights (seed 0), in eval mode;
    skips the test when the package is missing."""
    smp = pytest.importorskip("segmentation_models_pytorch")
    torch.manual_seed(0)
    return smp.Unet("resnet18", encoder_weights=None, classes=classes, **kwargs).eval()


def box_masks(batch: int, classes: int, size: int, seed: int) -> torch.Tensor:
    """A non-empty random box region per (image, class): float [B,K,size,size], different per image
    and class (the Seg-Grad-CAM targets the parity tests compare on)."""
    g = torch.Generator().manual_seed(seed)
    masks = torch.zeros(batch, classes, size, size)
    for b in range(batch):
        for k in range(classes):
            y0, x0 = torch.randint(0, size // 2, (2,), generator=g).tolist()
            h, w = torch.randint(size // 8, size // 2, (2,), generator=g).tolist()
            masks[b, k, y0:y0 + h, x0:x0 + w] = 1.0
    return masks


def cli_env(**extra: str) -> dict:
    """The environment for a `python -m seg_xai_fast.cli` subprocess: the package these tests
    imported comes first on PYTHONPATH. Run it with cwd outside the checkout too, or `-m` finds the
    source tree first, which has no compiled core when the package was installed non-editable."""
    path = os.pathsep.join(filter(None, [str(Path(seg_xai_fast.__file__).parents[1]), os.environ.get("PYTHONPATH")]))
    return dict(os.environ, PYTHONPATH=path, **extra)


@pytest.fixture(scope="session")
def model_file(tmp_path_factory) -> str:
    """A whole `random_demo()` saved with torch.save: what `--model FILE.pt` takes."""
    path = tmp_path_factory.mktemp("model") / "model.pt"
    torch.save(random_demo(), path)
    return str(path)


@pytest.fixture(scope="session", autouse=True)
def onnx_cache(tmp_path_factory):
    """Exported ONNX files (`--runtime auto` exports models) go to a folder of this test session,
    never to the user's cache; session-wide, so module-scoped fixtures that run a command are
    covered too. A test may still point SEG_XAI_CACHE elsewhere with its own monkeypatch."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SEG_XAI_CACHE", str(tmp_path_factory.mktemp("onnx-cache")))
        yield
