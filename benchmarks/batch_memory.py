"""Benchmark: peak memory of `seg-xai explain` does not grow with the number of inputs.

    python benchmarks/batch_memory.py [--n 2000] [--size 128] [--batch-size 8] [--workers 2]

Writes N synthetic scenes as PNGs to a temp folder, runs `python -m seg_xai_fast.cli explain` on
them in a subprocess and samples, every 0.1 s, the job's /proc/PID/status (VmRSS, VmHWM = peak RSS)
and its DataLoader workers' RSS, with progress read from the manifest (one line per finished
image). Prints the samples taken every N/8 images (250, 500, ..., 2000 by default). Linux only (/proc); psutil is not needed.
"""
import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from batch_throughput import model_spec, write_scenes  # noqa: E402


def status_kb(pid: int, field: str) -> int:
    """A `kB` field of /proc/PID/status (0 when the process is gone)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError):
        pass
    return 0


def children(pid: int) -> list:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(c) for c in f.read().split()]
    except FileNotFoundError:
        return []


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="seg-xai-mem-") as tmp:
        tmp = Path(tmp)
        (tmp / "in").mkdir()
        t0 = time.perf_counter()
        write_scenes(tmp / "in", args.n, args.size)
        spec = model_spec(tmp)
        print(f"wrote {args.n} PNGs {args.size}x{args.size} in {time.perf_counter() - t0:.0f} s; model {spec}; "
              f"batch {args.batch_size}, {args.workers} decode workers, torch {torch.__version__}")
        out = tmp / "out"
        cmd = [sys.executable, "-m", "seg_xai_fast.cli", "explain", str(tmp / "in"), "--out", str(out),
               "--model", spec, "--batch-size", str(args.batch_size), "--workers", str(args.workers),
               "--threads", str(args.threads), "--no-progress"]
        if spec != "demo":
            cmd += ["--layer", "decoder"]
        # cwd: not the repository root, whose sources (without the core) `-m` would import first.
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, cwd=tmp)
        milestones = [args.n * i // 8 for i in range(1, 9)]  # 250, 500, ..., 2000 by default
        samples, done, offset, last_hwm = [], 0, 0, 0
        manifest = out / "manifest.jsonl"
        while proc.poll() is None:
            if manifest.is_file():
                with open(manifest, "rb") as f:  # count new lines only: the file grows to N lines
                    f.seek(offset)
                    chunk = f.read()
                    offset += len(chunk)
                    done += chunk.count(b"\n")
            images = max(0, done - 1)  # the first line is the run header
            last_hwm = status_kb(proc.pid, "VmHWM") or last_hwm
            while milestones and images >= milestones[0]:
                workers = children(proc.pid)
                samples.append((milestones.pop(0), images, status_kb(proc.pid, "VmRSS"),
                                status_kb(proc.pid, "VmHWM"), sum(status_kb(w, "VmRSS") for w in workers),
                                max([status_kb(w, "VmHWM") for w in workers], default=0)))
            time.sleep(0.1)
        stdout, _ = proc.communicate()
        final_peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # kB, largest descendant
        print(stdout.strip().splitlines()[-1] if stdout.strip() else f"(no output, exit {proc.returncode})")
        print(f"{'images done':>12} {'job RSS MB':>11} {'job peak MB':>12} {'workers RSS MB':>15} {'worker peak MB':>15}")
        for _, images, rss, hwm, wrss, whwm in samples:
            print(f"{images:>12} {rss / 1024:>11.0f} {hwm / 1024:>12.0f} {wrss / 1024:>15.0f} {whwm / 1024:>15.0f}")
        if milestones:
            print(f"(the job ended before the last samples {milestones}; its final peak RSS: {final_peak / 1024:.0f} MB)")
        print(f"job peak RSS at its last sample: {last_hwm / 1024:.0f} MB; largest process over the whole run "
              f"(getrusage, exit included): {final_peak / 1024:.0f} MB")
        probe = subprocess.run([sys.executable, "-c", "import resource, torch, seg_xai_fast; "
                                "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)"],
                               capture_output=True, text=True, cwd=tmp)
        print(f"for scale: `import torch, seg_xai_fast` alone peaks at {int(probe.stdout.split()[-1]) / 1024:.0f} MB")


if __name__ == "__main__":
    main()
