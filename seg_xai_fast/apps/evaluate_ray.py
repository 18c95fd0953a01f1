"""`seg-xai evaluate IMAGES --labels LABELS --ray ADDRESS`: the pairs scored by a pool of Ray actors.

The driver pairs the files, holds the run's log (DIR/evaluate.jsonl) and is its only writer. Each
actor builds one scorer (the model and the methods' explainers, loaded once) and scores the pairs
it is given; records come back as they finish and the driver appends each one, so a killed run
resumes as a local one does. Every random draw of a metric is seeded per image, so where a pair is
scored does not change its numbers: the rows, summary and plots equal a local run's. The image and
label files must be readable at the same paths on every node.

Ray is an optional dependency: pip install 'seg-xai-fast[ray]'.
"""
from __future__ import annotations

import sys
from typing import Callable, Sequence

from .batch.ray import connect


class _ScoringActor:
    """A Ray actor holding scorer = make(*args), a callable pair → record."""

    def __init__(self, make: Callable, args: tuple) -> None:
        self.scorer = make(*args)

    def score(self, pair) -> dict:
        return self.scorer(pair)


def score_on_ray(address: str, pairs: Sequence, make: Callable, args: tuple, on_record: Callable[[dict], None]) -> None:
    """Score `pairs` on the Ray cluster at `address` ('local', 'auto' or ray://host:port) with actors
    holding make(*args); each record is handed to on_record (in the driver) as soon as it is back."""
    started = connect(address)
    import ray
    from ray.util import ActorPool

    try:
        cpus = int(ray.cluster_resources().get("CPU", 1))
        size = max(1, min(len(pairs), cpus // 2))  # half the CPUs: the rest for Ray and each actor's threads
        print(f"seg-xai evaluate: Ray cluster with {cpus} CPUs: {size} actors", file=sys.stderr, flush=True)
        if not pairs:
            return
        actor = ray.remote(num_cpus=1)(_ScoringActor)
        pool = ActorPool([actor.remote(make, args) for _ in range(size)])
        for record in pool.map_unordered(lambda a, pair: a.score.remote(pair), pairs):
            on_record(record)
    finally:
        if started:
            ray.shutdown()
