"""Explanation-quality metrics for segmentation CAMs (`sx.metrics`); the driver that runs them all
over several methods is `seg_xai_fast.apps.evaluate.evaluate` (behind `seg-xai evaluate`).

Definitions, conventions and measured numbers: docs/metrics.md. In short:

- Every map argument is ``maps: float [B,K,H,W]`` with ``maps[:, k]`` explaining class
  ``classes[k]`` (an Explanation's ``.maps`` and ``.classes``), at the images' resolution; every
  metric also takes volumes: maps ``[B,K,D,H,W]`` with images ``[B,C,D,H,W]`` (pixels are voxels).
- Per-pair metrics return float32 ``[B,K]`` (or ``[B,K,...]``), with NaN where the
  (image, class) pair is not counted: the class is absent from the ground truth (pointing
  games) or from the clean prediction (perturbation metrics, randomisation check).
- ``summarize`` averages a per-pair result over images for each class, then over classes.
- The score of class c on an image x is s_c(x) = mean over p ∈ M_c of softmax(f(x))_c(p), with
  the region M_c = {p : argmax f(x_clean)(p) = c} frozen from the clean prediction.
- Pixel orderings rank by decreasing saliency; ties are broken by a fixed pseudo-random
  permutation (``seed``), so flat map regions are not removed in raster order.

One module per family: localisation (pointing games, Quantus's localisation metrics, off-target
leakage), complexity (sparseness, entropy, effective complexity), faithfulness (deletion/insertion,
ROAD, pixel flipping, region perturbation; imputation holds ROAD's noisy linear imputation), sampled
(faithfulness correlation, infidelity: random perturbations shared by every class and method),
robustness (max/avg sensitivity, random-logit test), randomisation (the parameter sanity check,
Spearman), scores (the frozen regions and the class scores), averaging (summarize); checks.py the
argument checks they share.
"""
from .averaging import summarize, summarize_per_class
from .complexity import complexity, effective_complexity, sparseness
from .faithfulness import (ROAD_PERCENTILES, auc, deletion_curves, gaussian_blur, insertion_curves, pixel_flipping,
                           region_perturbation, road)
from .imputation import noisy_linear_impute
from .localisation import (attribution_localisation, class_regions, energy_pointing_game, off_target_leakage,
                           pointing_game, relevance_mass_accuracy, relevance_rank_accuracy, roc_auc, top_k_intersection)
from .randomisation import average_ranks, default_stages, randomization_check, randomized_models, spearman
from .robustness import avg_sensitivity, max_sensitivity, random_logit, random_logit_classes, sensitivity_ratios
from .sampled import faithfulness_correlation, infidelity
from .scores import class_scores, predicted_regions, region_scores

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
