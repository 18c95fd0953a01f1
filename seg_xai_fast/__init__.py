"""seg_xai_fast: fast class-activation-map explanations for semantic-segmentation models."""
# Placeholder written by the lead; replaced once the engine lands.
