"""`seg-xai report`: a static HTML report of an output folder that opens from disk (no server,
no network): a paginated thumbnail grid and an image page per image for `seg-xai explain`, a
failures page, metric tables and curves for `seg-xai evaluate --out`, and `seg-xai bench` results.

    from seg_xai_fast.apps.report import build_report
    index = build_report("results/")   # → results/report/index.html
"""
from .build import build_report

__all__ = ["build_report"]
