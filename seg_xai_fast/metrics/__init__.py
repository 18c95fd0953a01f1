"""Explanation-quality metrics for segmentation CAMs (`sx.metrics`); the driver that runs them all
over several methods is `seg_xai_fast.apps.evaluate.evaluate` (behind `seg-xai evaluate`).

Definitions, conventions and measured numbers: docs/metrics.md. In short:

- Every map argument is ``maps: float [B,K,H,W]`` with ``maps[:, k]`` explaining class
  ``classes[k]`` (an Explanation's ``.maps`` and ``.classes``), at the images' resolution.
- Per-pair metrics return float32 ``[B,K]`` (or ``[B,K,...]``), with NaN where the
  (image, class) pair is not counted: the class is absent from the ground truth (pointing
  games) or from the clean prediction (perturbation metrics, randomisation check).
- ``summarize`` averages a per-pair result over images for each class, then over classes.
- The score of class c on an image x is s_c(x) = mean over p ∈ M_c of softmax(f(x))_c(p), with
  the region M_c = {p : argmax f(x_clean)(p) = c} frozen from the clean prediction.
- Pixel orderings rank by decreasing saliency; ties are broken by a fixed pseudo-random
  permutation (``seed``), so flat map regions are not removed in raster order.

One module per family: localisation (pointing games), faithfulness (deletion/insertion, ROAD;
imputation holds ROAD's noisy linear imputation), randomisation (the sanity check, Spearman),
scores (the frozen regions and the class score), averaging (summarize); checks.py the argument
checks they share.
"""
from .averaging import summarize, summarize_per_class
from .faithfulness import ROAD_PERCENTILES, auc, deletion_curves, gaussian_blur, insertion_curves, road
from .imputation import noisy_linear_impute
from .localisation import energy_pointing_game, pointing_game
from .randomisation import average_ranks, default_stages, randomization_check, randomized_models, spearman
from .scores import class_scores, predicted_regions

#: The one-number summaries of every metric, as `seg-xai evaluate` reports them per method.
METRIC_KEYS = (
    "pointing_game",
    "energy_pointing_game",
    "deletion_auc",
    "insertion_auc",
    "road_morf",
    "road_lerf",
    "randomization_spearman",
)
