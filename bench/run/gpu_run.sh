#!/usr/bin/env bash
# The GPU kit's one command: a suite on a lent GPU machine from carried wheels, a carried cache and
# carried trained checkpoints, bundled into $OUT. Nothing here needs the network. Build and rehearse
# the carry first (`make gpu-kit`), then, from the repository root on the device:
#
#   bash bench/run/gpu_run.sh [SUITE [twinbench run options...]]   # a new run (default suite: gpu-first)
#   RESUME=results/runs/<run_id> bash bench/run/gpu_run.sh         # continue one (same warm machine)
#
# with carry [".whl", ".cache/gpu-kit"]: the wheels the machine lacks, for CPython 3.12, and
# cache.tar.gz (grid data and checkpoints). Under $OUT (at most 8 files come back): run.tar.gz (the
# run folders, one a twin, without artifacts), summary.md (theirs, one after another),
# environment.json, packages.txt, gpu_run.log and headline.txt; the headline table is printed last.
# TWINS="a b" runs only those twins, in that order.
#
# A lent GPU gives 15 minutes of device time in all and a command 10: the run is capped at $LIMIT_S
# seconds (whatever shards finished are in records.jsonl; resume to go on), and it refuses to train
# (the device measures only; ALLOW_TRAINING=1 overrides). `make gpu-kit` runs this same script with
# DEVICE=cpu on one cell, in a venv holding only the GPU machine's packages plus the carried wheels.
set -uo pipefail
OUT=${OUT:?set OUT to the folder whose files come back}
DEVICE=${DEVICE:-cuda}          # cpu: the rehearsal
LIMIT_S=${LIMIT_S:-420}         # the run's cap: with install, checks and bundling the command takes ~8 min
PYTHON=${PYTHON:-python3}       # on the device: the python3 that holds PyTorch
WHEELS=${WHEELS:-.whl}
KIT=${KIT:-.cache/gpu-kit}
SITE=${SITE:-/tmp/site}
CACHE_DIR=${CACHE_DIR:-/tmp/twinbench-cache}
RUNS=${RUNS:-results/runs}
mkdir -p "$OUT"
log="$OUT/gpu_run.log"
: >"$log"
started=$(date +%s)
step() { echo "[gpu_run +$(( $(date +%s) - started ))s] $*" | tee -a "$log"; }
fail() { step "FAILED: $*"; exit 1; }

step "installing the carried wheels ($WHEELS) into $SITE"
ls "$WHEELS"/*.whl >/dev/null 2>&1 || fail "no wheels in $WHEELS (make gpu-kit builds them)"
rm -rf "$SITE"
"$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" \
  "$WHEELS"/*.whl >>"$log" 2>&1 || fail "wheel install (see $log)"
export PYTHONPATH="$SITE:$PWD"
export PYTHONUNBUFFERED=1

step "unpacking the carried cache into $CACHE_DIR"
[ -f "$KIT/cache.tar.gz" ] || fail "no $KIT/cache.tar.gz (make gpu-kit packs it)"
rm -rf "$CACHE_DIR" && mkdir -p "$CACHE_DIR"
tar -xzf "$KIT/cache.tar.gz" -C "$CACHE_DIR" >>"$log" 2>&1 || fail "unpacking the cache"
export TWINBENCH_CACHE="$CACHE_DIR"

# Every module a run of the suite's twins, passes and report imports: one missing fails now, in
# seconds, not after minutes of measuring. Passes the suite may not use (int8, pruning) only warn.
step "checking imports"
"$PYTHON" - >>"$log" 2>&1 <<'EOF' || fail "an import is missing (see $log)"
import importlib, sys, warnings
warnings.simplefilter("ignore")
for name in ["torch", "torch_geometric", "transformers", "onnx", "onnxruntime", "onnxscript", "safetensors",
             "numpy", "pandas", "scipy", "rich", "filelock", "psutil", "jinja2", "pydantic", "zeus.monitor",
             "zeus.device", "pynvml", "scoringrules", "pint", "plotly.graph_objects", "plotly.io", "bench.cli",
             "bench.run.runner", "bench.decide.report"]:
    importlib.import_module(name)
from transformers import PatchTSTConfig, PatchTSTForPrediction  # the sensor transformer's model
for name in ["torchao.quantization", "torch_pruning"]:
    try:
        importlib.import_module(name)
    except Exception as e:
        print(f"WARNING: {name} does not import ({type(e).__name__}: {e}): its passes will be error records")
from models.registry import TWINS
from compress.base import PASSES
print("twins:", TWINS.names(), "passes:", PASSES.names(), "failed plugins:", TWINS.failures(), PASSES.failures())
print("imports ok:", sys.version)
EOF

step "environment"
{
  "$PYTHON" -c 'import sys; print("python", sys.version)'
  nvidia-smi --query-gpu=name,driver_version,power.limit,clocks.sm,clocks.max.sm,temperature.gpu,clocks_throttle_reasons.active --format=csv 2>&1 || true
  "$PYTHON" -m pip list --format=freeze 2>/dev/null
  echo "# carried ($SITE)"
  ls "$SITE" | grep -i 'dist-info$'
} >"$OUT/packages.txt" 2>&1
"$PYTHON" -m bench env 2>&1 | tee -a "$log"

# One run folder a twin, in the suite's order (gpu-first lists the cheapest to compile first), all
# under one deadline: torch.compile is not in the run's estimate, and on this project's CPU it cost
# ~10 s (GNN), ~30 s (transformer) and ~165 s (the diffusion sampler, 10 steps unrolled) a session.
# A twin cut by the deadline loses only its own shard, never the twins measured before it.
deadline=$(( $(date +%s) + LIMIT_S ))
runs=()
status=0
if [ -n "${RESUME:-}" ]; then
  step "resuming $RESUME"
  timeout "$LIMIT_S" "$PYTHON" -m bench run --resume "$RESUME" 2>&1 | tee -a "$log"
  status=${PIPESTATUS[0]}
  runs=("${RESUME%/}")
else
  suite=${1:-gpu-first}
  [ $# -gt 0 ] && shift
  step "plan of suite $suite on $DEVICE"
  "$PYTHON" -m bench run --suite "$suite" --device "$DEVICE" --dry-run "$@" >"$OUT/plan.txt" 2>&1
  cat "$OUT/plan.txt" | tee -a "$log"
  if ! grep -q "^training to do: 0 of" "$OUT/plan.txt" && [ -z "${ALLOW_TRAINING:-}" ]; then
    rm -f "$OUT/plan.txt"
    fail "the plan trains on the device (the carry lacks checkpoints: make gpu-kit); ALLOW_TRAINING=1 overrides"
  fi
  rm -f "$OUT/plan.txt"
  twins=${TWINS:-$("$PYTHON" -c 'import sys; from bench.suites import load_suite; print(*load_suite(sys.argv[1]).twins)' "$suite")}
  mkdir -p "$RUNS"
  for twin in $twins; do
    left=$(( deadline - $(date +%s) ))
    if [ "$left" -lt 30 ]; then step "no time left for $twin (cap $LIMIT_S s)"; status=124; continue; fi
    before=$(ls -d "$RUNS"/*/ 2>/dev/null | sort)
    step "run: $twin (capped at $left s)"
    timeout "$left" "$PYTHON" -m bench run --suite "$suite" --device "$DEVICE" --twin "$twin" --out "$RUNS" "$@" 2>&1 | tee -a "$log"
    rc=${PIPESTATUS[0]}
    [ "$rc" -ne 0 ] && status=$rc
    run=$(comm -13 <(echo "$before") <(ls -d "$RUNS"/*/ 2>/dev/null | sort) | head -1)
    [ -n "$run" ] && runs+=("${run%/}")
    step "$twin: exit $rc${run:+, run folder ${run%/}} (124: the time cap; RESUME=<run folder> continues it)"
  done
fi
[ "${#runs[@]}" -gt 0 ] || fail "no run folder was made (exit $status)"
: >"$OUT/summary.md"
for run in "${runs[@]}"; do
  # A run cut by the time cap has not written its report yet.
  [ -f "$run/report.html" ] || "$PYTHON" -m bench report "$run" >>"$log" 2>&1 || step "report of $run failed (see $log)"
  cat "$run/summary.md" >>"$OUT/summary.md" 2>/dev/null || echo "# $run: no summary.md" >>"$OUT/summary.md"
  [ -f "$OUT/environment.json" ] || cp "$run/environment.json" "$OUT/" 2>/dev/null
done
tar -czf "$OUT/run.tar.gz" --exclude=artifacts -C "$RUNS" $(for run in "${runs[@]}"; do basename "$run"; done)
"$PYTHON" bench/run/gpu_kit.py headline "${runs[@]}" >"$OUT/headline.txt" 2>>"$log"
step "done (exit $status): $(ls "$OUT" | tr '\n' ' ')"
echo
cat "$OUT/headline.txt"
exit "$status"
