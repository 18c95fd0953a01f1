"""`seg-xai explain`: many images into an output folder, resumable, bounded memory, on Ray too.

inputs.py  discovery and decoding       engine.py  one batch → maps, overlays; the writer thread
store/     the output folder's layout   job.py     settings, preparation, the local run
ray.py     the same job on Ray Data     run.py     run_explain: local or Ray
"""
from .job import JobConfig, Summary
from .run import run_explain
from .store import StoredExplanation, load_explanation

__all__ = ["JobConfig", "StoredExplanation", "Summary", "load_explanation", "run_explain"]
