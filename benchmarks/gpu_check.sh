#!/usr/bin/env bash
# Everything a GPU machine can check, in one call: build the core in place with CUDA, run the CUDA
# tests, run the GPU benchmarks (benchmarks/gpu_bench.py: kernel bandwidth, DeepLabV3-ResNet50
# images/s, 1280x720 video fps). Needs no registry access: torch, torchvision, pybind11, cmake,
# ninja, nvcc and pytest from the machine's image; PyAV, onnxruntime and grad-cam are optional
# (what needs them is skipped and says so).
#
#   bash benchmarks/gpu_check.sh OUT_DIR             # on the GPU machine: at most 7.5 minutes
#   bash benchmarks/gpu_check.sh OUT_DIR --dry-run   # anywhere: CPU-only build, tiny CPU benchmarks
#
# OUT_DIR receives env.txt, build.log, core.log, tests_cuda.log (+ tests_cuda.xml), tests_build.log,
# bench.log, bench.json, bench.md, seg_xai_video.log, stages.tsv, summary.json and summary.md (each
# stage's exit status and time, then the benchmark table with goal / measured / met).
# Every stage runs under `timeout` against one overall budget (GPU_CHECK_BUDGET_S, default 440 s,
# within the 8 minutes one GPU call may take), so a hang cannot eat the budget; a failed stage is
# recorded and the later stages still run; the summary is always written. The GPU is never reset.
# Exit status: 0 when every stage succeeded (goals missed are results, not failures), else 1.
# Switches: GPU_CHECK_BUDGET_S; CMAKE_CUDA_ARCHITECTURES (default: the visible GPU's own, the
# quickest build); PYTHON (default: python3, else python).
# The dry run builds with `setup.py build_ext --inplace` instead of `pip install -e .`, so that it
# never re-points a shared environment's editable install at this checkout.
set -uo pipefail

usage() { echo "usage: bash benchmarks/gpu_check.sh OUT_DIR [--dry-run]" >&2; exit 2; }
(( $# >= 1 && $# <= 2 )) || usage
OUT=$1
DRY=0
if (( $# == 2 )); then [[ $2 == --dry-run ]] || usage; DRY=1; fi

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT" || exit 2
mkdir -p "$OUT" || exit 2
OUT=$(cd "$OUT" && pwd)
PY=${PYTHON:-$(command -v python3 || command -v python)}
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"  # this checkout, whatever else is installed
export PYTHONUNBUFFERED=1
BUDGET=${GPU_CHECK_BUDGET_S:-440}
START=$SECONDS
STAGES="$OUT/stages.tsv"
printf 'stage\tstatus\tseconds\tlimit_s\tlog\n' >"$STAGES"
FAILED=0

log() { echo "[gpu_check $(( SECONDS - START ))s] $*"; }

# run_stage NAME CAP_S RESERVE_S LOG CMD...: CMD under `timeout`, limited to CAP_S and to what the
# budget leaves after RESERVE_S for the stages after it; status: the exit code, "timeout" or "skipped".
run_stage() {
  local name=$1 cap=$2 reserve=$3 logfile=$4; shift 4
  local left=$(( BUDGET - (SECONDS - START) - reserve ))
  local limit=$(( left < cap ? left : cap ))
  if (( limit < 10 )); then
    log "$name: skipped, $(( BUDGET - (SECONDS - START) )) s of the budget left"
    printf '%s\tskipped\t0\t%s\t%s\n' "$name" "$limit" "$(basename "$logfile")" >>"$STAGES"
    FAILED=1
    return 1
  fi
  log "$name: running (limit ${limit}s, log $(basename "$logfile"))"
  local t0=$SECONDS rc status
  timeout --kill-after=10 "$limit" "$@" >"$logfile" 2>&1
  rc=$?
  status=$rc
  if (( rc == 124 || rc == 137 )); then status=timeout; fi
  printf '%s\t%s\t%s\t%s\t%s\n' "$name" "$status" "$(( SECONDS - t0 ))" "$limit" "$(basename "$logfile")" >>"$STAGES"
  if (( rc != 0 )); then
    FAILED=1
    log "$name: FAILED ($status) after $(( SECONDS - t0 ))s; last lines of its log:"
    tail -n 15 "$logfile" | sed 's/^/    /'
  else
    log "$name: ok ($(( SECONDS - t0 ))s)"
  fi
  return $rc
}

env_probe() {
  date -u
  uname -a
  echo "--- nvidia-smi"; timeout 20 nvidia-smi 2>&1 || echo "(nvidia-smi unavailable)"
  echo "--- nvcc"; nvcc --version 2>&1 || echo "(nvcc not on PATH)"
  echo "--- nproc $(nproc)"
  echo "--- python $PY"
  "$PY" - <<'EOF'
import importlib.metadata as md, importlib.util, sys
print(sys.version)
# Presence and version without importing (some of these take many seconds to import).
for module, dists in (("torch", "torch"), ("torchvision", "torchvision"), ("numpy", "numpy"), ("PIL", "pillow"),
                      ("tqdm", "tqdm"), ("pybind11", "pybind11"), ("cmake", "cmake"), ("ninja", "ninja"),
                      ("setuptools", "setuptools"), ("pip", "pip"), ("pytest", "pytest"), ("av", "av"),
                      ("onnxruntime", "onnxruntime onnxruntime-gpu"), ("onnx", "onnx"),
                      ("pytorch_grad_cam", "grad-cam"), ("ray", "ray")):
    if importlib.util.find_spec(module) is None:
        print(f"{module:18} MISSING")
        continue
    versions = []
    for dist in dists.split():
        try:
            versions.append(f"{dist} {md.version(dist)}")
        except md.PackageNotFoundError:
            pass
    print(f"{module:18} {', '.join(versions) or 'present'}")
import torch
print("torch.cuda.is_available", torch.cuda.is_available(), "cuda", torch.version.cuda)
if torch.cuda.is_available():
    print("device", torch.cuda.get_device_name(), "capability", torch.cuda.get_device_capability())
EOF
}
export -f env_probe
export PY

# The visible GPU's architecture, e.g. "90", for a one-architecture build (the default build has two).
native_arch() {
  local cap
  cap=$(timeout 20 nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -n 1 | tr -d ' .')
  [[ $cap =~ ^[0-9]+$ ]] && echo "$cap"
}

build_core() {
  if (( DRY )); then
    SEG_XAI_CUDA=off "$PY" setup.py build_ext --inplace
    return
  fi
  local arch=${CMAKE_CUDA_ARCHITECTURES:-$(native_arch)}
  local cmake_args=${CMAKE_ARGS:-}
  [[ -n $arch ]] && cmake_args="-DCMAKE_CUDA_ARCHITECTURES=$arch $cmake_args"
  echo "build: SEG_XAI_CUDA=on CMAKE_ARGS='$cmake_args' CMAKE_BUILD_PARALLEL_LEVEL=$(nproc)"
  if SEG_XAI_CUDA=on CMAKE_ARGS="$cmake_args" CMAKE_BUILD_PARALLEL_LEVEL=$(nproc) \
      "$PY" -m pip install --no-index --no-build-isolation --no-deps -v -e .; then
    compgen -G "seg_xai_fast/_core*.so" >/dev/null && return 0
    echo "build: pip install -e . left no seg_xai_fast/_core*.so in the checkout"
  fi
  echo "build: falling back to setup.py build_ext --inplace"
  SEG_XAI_CUDA=on CMAKE_ARGS="$cmake_args" CMAKE_BUILD_PARALLEL_LEVEL=$(nproc) \
    "$PY" setup.py build_ext --inplace
}
export -f build_core native_arch
export DRY

check_core() {
  "$PY" - <<'EOF'
import os, sys
import seg_xai_fast as sx
info = sx.build_info()
print("seg_xai_fast from", os.path.dirname(sx.__file__))
print(info)
if os.environ["DRY"] == "0" and not (info["cuda_built"] and info["cuda_available"]):
    sys.exit("the core must be built with CUDA and see a GPU: cuda_built=%s cuda_available=%s"
             % (info["cuda_built"], info["cuda_available"]))
EOF
}
export -f check_core

log "repository $ROOT, results in $OUT, budget ${BUDGET}s, $( (( DRY )) && echo 'DRY RUN (CPU)' || echo 'GPU run')"
run_stage env 45 400 "$OUT/env.txt" bash -c env_probe
run_stage build 300 120 "$OUT/build.log" bash -c build_core
BUILD_RC=$?
run_stage core 60 120 "$OUT/core.log" bash -c check_core
if (( BUILD_RC == 0 )) && ! "$PY" -c "import pytest" 2>/dev/null; then
  log "tests: pytest is not installed, tests not run (the benchmarks still check each kernel against its torch twin)"
  printf 'tests_cuda\tskipped: no pytest\t0\t0\t-\ntests_build\tskipped: no pytest\t0\t0\t-\n' >>"$STAGES"
  FAILED=1
elif (( BUILD_RC == 0 )); then
  # -m cuda: the tests marked as needing a CUDA GPU (skipped on the dry run's CPU).
  run_stage tests_cuda 150 110 "$OUT/tests_cuda.log" "$PY" -m pytest -m cuda tests -q -rfE \
    -p no:cacheprovider --continue-on-collection-errors --junitxml="$OUT/tests_cuda.xml"
  run_stage tests_build 60 100 "$OUT/tests_build.log" "$PY" -m pytest tests/test_build.py -q -rfE -p no:cacheprovider
else
  log "tests: not run, the build failed"
  printf 'tests_cuda\tskipped: build failed\t0\t0\t-\ntests_build\tskipped: build failed\t0\t0\t-\n' >>"$STAGES"
fi
# The benchmark gets what is left; its own budget ends 30 s earlier so that it skips sections
# cleanly (it also saves bench.json after every row, in case the timeout has to kill it).
LEFT=$(( BUDGET - (SECONDS - START) - 5 ))
BENCH_ARGS=(--out "$OUT" --budget-s "$(( LEFT > 60 ? LEFT - 30 : 30 ))")
(( DRY )) && BENCH_ARGS+=(--dry-run)
run_stage bench "$LEFT" 0 "$OUT/bench.log" "$PY" benchmarks/gpu_bench.py "${BENCH_ARGS[@]}"

# ---------------------------------------------------------------- summary (always written)
log "summary"
if ! timeout 30 "$PY" - "$OUT" "$DRY" "$(( SECONDS - START ))" <<'EOF'
import csv, json, os, sys, xml.etree.ElementTree as ET
out, dry, seconds = sys.argv[1], sys.argv[2] == "1", int(sys.argv[3])

def write(name, text):
    tmp = os.path.join(out, name + ".tmp")
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, os.path.join(out, name))

with open(os.path.join(out, "stages.tsv")) as f:
    stages = list(csv.DictReader(f, delimiter="\t"))
tests = None
try:
    root = ET.parse(os.path.join(out, "tests_cuda.xml")).getroot()
    suite = root if root.tag == "testsuite" else root.find("testsuite")
    tests = {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}
    tests["passed"] = tests["tests"] - tests["failures"] - tests["errors"] - tests["skipped"]
except (OSError, ET.ParseError, AttributeError, TypeError):
    pass
bench = None
try:
    with open(os.path.join(out, "bench.json")) as f:
        bench = json.load(f)
except (OSError, ValueError):
    pass
rows = bench["rows"] if bench else []
summary = {"dry_run": dry, "seconds": seconds, "stages": stages, "cuda_tests": tests,
           "goals_met": sum(r["met"] is True for r in rows), "goals_missed": sum(r["met"] is False for r in rows),
           "bench_errors": len(bench["errors"]) if bench else None, "bench": rows}
write("summary.json", json.dumps(summary, indent=2) + "\n")
md = [f"# gpu_check summary{' (DRY RUN: CPU, tiny sizes)' if dry else ''}", "",
      f"{seconds} s in all.", "", "| stage | status | seconds | limit s | log |", "|---|---|---|---|---|"]
md += [f"| {s['stage']} | {'ok' if s['status'] == '0' else '**' + s['status'] + '**'} | {s['seconds']} | "
       f"{s['limit_s']} | {s['log']} |" for s in stages]
if tests:
    md += ["", f"CUDA tests: {tests['passed']} passed, {tests['failures']} failed, {tests['errors']} errors, "
               f"{tests['skipped']} skipped (tests_cuda.log)."]
md += ["", f"Goals: {summary['goals_met']} met, {summary['goals_missed']} missed."]
if os.path.exists(os.path.join(out, "bench.md")):
    with open(os.path.join(out, "bench.md")) as f:
        md += ["", f.read()]
elif rows:  # the benchmark was cut short: its rows so far
    md += ["", "| benchmark | measured | goal | met |", "|---|---|---|---|"]
    md += [f"| {r['name']} | {r['measured']} {r['unit']} | {r['goal']} | {r['met']} |" for r in rows]
else:
    md += ["", "No benchmark results (see bench.log)."]
write("summary.md", "\n".join(md) + "\n")
EOF
then  # no usable Python: the stage table alone
  { echo "# gpu_check summary (the Python summary failed)"; echo; cat "$STAGES"; } >"$OUT/summary.md"
  FAILED=1
fi
cat "$OUT/summary.md"
log "done: results in $OUT"
exit $FAILED
