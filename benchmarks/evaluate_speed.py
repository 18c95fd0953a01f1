"""Benchmark: `seg-xai evaluate IMAGES --labels LABELS` at dataset scale, and against Quantus.

    python benchmarks/evaluate_speed.py [--n 1000] [--size 256] [--subset 4] [--methods gradcam,scorecam]
                                        [--threads 2] [--skip-run]

1. The run: N generated scenes written as image/label PNG pairs, `run_dataset_evaluate` (what
   `seg-xai evaluate` runs) with the methods and the default metrics (pointing game, relevance mass
   and rank accuracy, attribution localisation, top-k intersection, ROC AUC, off-target leakage,
   sparseness, complexity, effective complexity, deletion and insertion AUC, 16 steps), --out DIR.
   Prints the time per image and the process's resident memory sampled every 0.5 s (its value at
   each tenth of the run, and the peak): flat memory means no growth with N.
2. Side by side on the first --subset pairs, the metrics both have: pytorch-grad-cam producing the
   maps one class at a time (GradCAM, ScoreCAM with SemanticSegmentationTarget on the ground-truth
   region), then Quantus 0.6 scoring each (image, class) map: PointingGame, RelevanceMassAccuracy,
   RelevanceRankAccuracy, AttributionLocalisation, TopKIntersection, AUC, Sparseness, Complexity,
   EffectiveComplexity and PixelFlipping (16 steps of H·W/16 pixels to black, on the class's mean
   probability over its region: our deletion curve); against ours with the same metric set
   (`run_dataset_evaluate`, no --out). Both times include explaining. Goal: ours ≥ 10× faster.
"""
import argparse
import os
import sys
import tempfile
import threading
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image

import seg_xai_fast as sx
from seg_xai_fast.apps.evaluate_data import DEFAULT_METRICS, run_dataset_evaluate

SAME_METRICS = ["pointing_game", "relevance_mass_accuracy", "relevance_rank_accuracy", "attribution_localisation",
                "top_k_intersection", "roc_auc", "sparseness", "complexity", "effective_complexity", "deletion"]


def write_pairs(folder: Path, n: int, size: int, chunk: int = 50) -> None:
    (folder / "images").mkdir(parents=True)
    (folder / "labels").mkdir()
    for lo in range(0, n, chunk):
        images, truth = sx.synthetic_scenes(min(chunk, n - lo), seed=10_000 + lo, size=size)
        for i in range(images.shape[0]):
            pixels = (images[i].permute(1, 2, 0).numpy() * 255 + 0.5).astype(np.uint8)
            Image.fromarray(pixels).save(folder / "images" / f"p{lo + i:05d}.png", compress_level=1)
            Image.fromarray(truth[i].numpy().astype(np.uint8)).save(folder / "labels" / f"p{lo + i:05d}.png")


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


class MemorySampler(threading.Thread):
    def __init__(self):
        super().__init__(daemon=True)
        self.samples, self.stop = [], threading.Event()

    def run(self):
        while not self.stop.wait(0.5):
            self.samples.append(rss_mb())


class RegionScore(torch.nn.Module):
    """For Quantus: images → [N, L] whose column c is the mean probability of c over `region`."""

    def __init__(self, model, region):
        super().__init__()
        self.model, self.region = model, torch.as_tensor(region, dtype=torch.float32)

    def forward(self, x):
        probs = torch.softmax(self.model(x), dim=1)
        return (probs * self.region).flatten(2).sum(2) / self.region.sum()


def peer_run(model, folder: Path, names: list, methods: list) -> tuple:
    """pytorch-grad-cam maps one class at a time, then Quantus on each (image, class).
    Returns ({"maps", "localisation_complexity", "pixel_flipping"}: seconds, pairs)."""
    import quantus
    from pytorch_grad_cam import GradCAM, ScoreCAM
    from pytorch_grad_cam.utils.model_targets import SemanticSegmentationTarget

    peers = {"gradcam": GradCAM, "scorecam": ScoreCAM}
    seconds = {"maps": 0.0, "localisation_complexity": 0.0, "pixel_flipping": 0.0}
    pairs = 0
    for name in names:
        with Image.open(folder / "images" / name) as im:
            x = torch.from_numpy(np.asarray(im.convert("RGB"), dtype=np.float32) / 255).permute(2, 0, 1)[None]
        with Image.open(folder / "labels" / name) as im:
            label = np.asarray(im, dtype=np.int64)
        H, W = label.shape
        for method in methods:
            with peers[method](model=model, target_layers=[model.decoder]) as cam:
                for c in sorted(set(np.unique(label).tolist()) - {0}):
                    region = (label == c).astype(np.float32)
                    t0 = time.perf_counter()
                    a = cam(input_tensor=x, targets=[SemanticSegmentationTarget(c, region)])  # [1,H,W]
                    t1 = time.perf_counter()
                    kwargs = dict(x_batch=x.numpy(), y_batch=np.array([c]), a_batch=a[:, None], s_batch=region[None, None])
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        for metric in (quantus.PointingGame(), quantus.RelevanceMassAccuracy(),
                                       quantus.RelevanceRankAccuracy(), quantus.AttributionLocalisation(),
                                       quantus.TopKIntersection(k=1000), quantus.AUC(), quantus.Sparseness(),
                                       quantus.Complexity(), quantus.EffectiveComplexity()):
                            metric(model=None, **kwargs)
                        t2 = time.perf_counter()
                        quantus.PixelFlipping(features_in_step=H * W // 16, perturb_baseline="black", disable_warnings=True)(
                            model=RegionScore(model, region).eval(), softmax=False, device="cpu", **kwargs)
                    t3 = time.perf_counter()
                    seconds["maps"] += t1 - t0
                    seconds["localisation_complexity"] += t2 - t1
                    seconds["pixel_flipping"] += t3 - t2
                    pairs += 1
    return seconds, pairs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--subset", type=int, default=4)
    parser.add_argument("--methods", default="gradcam,scorecam")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--skip-run", action="store_true", help="only the side-by-side comparison on --subset pairs")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    methods = args.methods.split(",")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs, load "
          f"{os.getloadavg()[0]:.1f}; bundled model, methods {methods}, {args.size}x{args.size}")
    with tempfile.TemporaryDirectory(prefix="seg-xai-eval-bench-") as tmp:
        tmp = Path(tmp)
        write_pairs(tmp / "data", max(args.n if not args.skip_run else 0, args.subset), args.size)
        common = dict(methods=methods, progress=False)
        if not args.skip_run:
            sampler = MemorySampler()
            sampler.start()
            start = time.perf_counter()
            result = run_dataset_evaluate([str(tmp / "data" / "images")], str(tmp / "data" / "labels"),
                                          metrics=list(DEFAULT_METRICS), out=str(tmp / "out"), **common)
            seconds = time.perf_counter() - start
            sampler.stop.set()
            sampler.join()
            s = sampler.samples or [rss_mb()]
            tenths = [s[min(len(s) - 1, int(len(s) * q / 10))] for q in range(1, 11)]
            print(f"run: {result['images']} pairs ({len(result['failures'])} failed), {seconds:.1f} s, "
                  f"{seconds / max(1, result['images']):.3f} s per image; RSS at each tenth of the run "
                  f"{' / '.join(f'{v:.0f}' for v in tenths)} MB, peak {max(s):.0f} MB")
            for m, r in result["summary"].items():
                print(f"  {m}: " + ", ".join(f"{k} {v:.3f}" for k, v in r["overall"].items() if v is not None))
        images_dir = tmp / "data" / "images"
        names = sorted(os.listdir(images_dir))[: args.subset]
        subset = tmp / "subset"
        (subset / "images").mkdir(parents=True)
        (subset / "labels").mkdir()
        for name in names:
            os.symlink(images_dir / name, subset / "images" / name)
            os.symlink(tmp / "data" / "labels" / name, subset / "labels" / name)
        model = sx.demo_model()
        warm = tmp / "warm"  # one pair first: the one-time costs (imports, the linear head's check) out of the timing
        (warm / "images").mkdir(parents=True)
        (warm / "labels").mkdir()
        os.symlink(images_dir / names[0], warm / "images" / names[0])
        os.symlink(tmp / "data" / "labels" / names[0], warm / "labels" / names[0])
        run_dataset_evaluate([str(warm / "images")], str(warm / "labels"), metrics=SAME_METRICS, **common)
        start = time.perf_counter()
        run_dataset_evaluate([str(subset / "images")], str(subset / "labels"), metrics=SAME_METRICS[:-1], **common)
        ours_fast = time.perf_counter() - start
        start = time.perf_counter()
        run_dataset_evaluate([str(subset / "images")], str(subset / "labels"), metrics=SAME_METRICS, **common)
        ours_all = time.perf_counter() - start
        peer, pairs = peer_run(model, tmp / "data", names, methods)
        peer_fast = peer["maps"] + peer["localisation_complexity"]
        peer_all = peer_fast + peer["pixel_flipping"]
        print(f"side by side on {len(names)} pairs ({pairs} image-class-method maps); pytorch-grad-cam maps "
              f"{peer['maps']:.1f} s, Quantus localisation+complexity {peer['localisation_complexity']:.1f} s, "
              f"Quantus PixelFlipping {peer['pixel_flipping']:.1f} s")
        print(f"  maps + localisation + complexity: ours {ours_fast:.1f} s, peers {peer_fast:.1f} s: "
              f"{peer_fast / ours_fast:.1f}x (goal >= 10x)")
        print(f"  ... + deletion (PixelFlipping): ours {ours_all:.1f} s, peers {peer_all:.1f} s: "
              f"{peer_all / ours_all:.1f}x (goal >= 10x)")


if __name__ == "__main__":
    main()
