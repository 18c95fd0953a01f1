"""Check: precision and size of the compact map store (layer-resolution float16 maps, store.expand_maps).

    python benchmarks/batch_store_precision.py

For every CAM method (those of the gradient and activation families, whose maps have a layer
resolution; the perturbation family's cost many forwards and is checked by its own tests), two target layers of the demo model (decoder at 1/2, encoder.stage3 at 1/8) and a
few image sizes (odd ones included): max and mean |read back − Explainer maps|, and bytes per image
stored (float16 at the layer's resolution) vs float16 / float32 at full size.
The demo model's weights are used when present, else a random-initialised DemoSegNet.
"""
import torch

import seg_xai_fast as sx
from seg_xai_fast.demo.model import DemoSegNet
from seg_xai_fast.engine.methods import registered
from seg_xai_fast.apps.batch.store import expand_maps


def main() -> None:
    try:
        model, which = sx.demo_model(), "trained demo model"
    except FileNotFoundError:
        torch.manual_seed(0)
        model, which = DemoSegNet().eval(), "random-initialised DemoSegNet"
    print(f"{which}; maps read back vs the Explainer's")
    print(f"{'layer':<15} {'method':<10} {'size':<10} {'layer res':<9} {'max err':>8} {'mean err':>9} "
          f"{'KB stored':>9} {'KB f16 full':>11}")
    worst = 0.0
    for layer in ("decoder", "encoder.stage3"):
        for method in sorted(m for m, spec in registered().items() if spec.one_forward):
            explainer = sx.Explainer(model, layer, method)
            for size in ((160, 160), (161, 99), (256, 320)):
                images, _ = sx.synthetic_scenes(4, seed=7, size=size)
                maps = explainer(images).maps
                compact = explainer(images, resolution="layer").maps.half()  # what the job stores
                back = torch.stack([expand_maps(c, size, size) for c in compact])
                err = (back - maps).abs()
                worst = max(worst, err.max().item())
                K = maps.shape[1]
                hw = tuple(compact.shape[-2:])
                print(f"{layer:<15} {method:<10} {'%dx%d' % size:<10} {'%dx%d' % hw:<9} {err.max().item():>8.1e} "
                      f"{err.mean().item():>9.1e} {compact[0].numel() * 2 / 1024:>9.1f} {K * size[0] * size[1] * 2 / 1024:>11.1f}")
    print(f"max abs error over all: {worst:.2e}")


if __name__ == "__main__":
    main()
