"""The timing the benchmarks share: calls timed in interleaved rounds, so that the ratios compare
calls made under the same machine load (medians: the machine is noisy)."""
import statistics
import time


def timed(fn) -> float:
    """Seconds of one call of fn()."""
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def interleaved(fns: dict, repeats: int) -> dict:
    """Median seconds of each callable, timed one call each per round (after one warm-up round)."""
    times = {name: [] for name in fns}
    for round_ in range(repeats + 1):
        for name, fn in fns.items():
            seconds = timed(fn)
            if round_:
                times[name].append(seconds)
    return {name: statistics.median(t) for name, t in times.items()}
