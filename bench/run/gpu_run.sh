#!/usr/bin/env bash
# The GPU kit's one command: a suite on a lent GPU machine from carried wheels, a carried cache and
# carried trained checkpoints, bundled into $OUT. Nothing here needs the network. Build and rehearse
# the carry first (`make gpu-kit`), then, from the repository root on the device:
#
#   bash bench/run/gpu_run.sh [SUITE [twinbench run options...]]   # a new run (default suite: gpu-first)
#   RESUME=results/runs/<run_id> bash bench/run/gpu_run.sh         # continue it (same warm machine)
#
# with carry [".whl", ".cache/gpu-kit"]: the wheels the machine lacks, for CPython 3.12, and
# cache.tar.gz (grid data and checkpoints). Under $OUT (at most 8 files come back): run.tar.gz (the
# run folder without artifacts), summary.md, environment.json, packages.txt, gpu_run.log and
# headline.txt; the headline table is printed last.
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

if [ -n "${RESUME:-}" ]; then
  run="$RESUME"
  step "resuming $run"
  timeout "$LIMIT_S" "$PYTHON" -m bench run --resume "$run" 2>&1 | tee -a "$log"
  status=${PIPESTATUS[0]}
else
  suite=${1:-gpu-first}
  [ $# -gt 0 ] && shift
  step "plan of suite $suite on $DEVICE"
  "$PYTHON" -m bench run --suite "$suite" --device "$DEVICE" --dry-run "$@" 2>&1 | tee "$OUT/plan.txt" >>"$log"
  cat "$OUT/plan.txt"
  if ! grep -q "^training to do: 0 of" "$OUT/plan.txt" && [ -z "${ALLOW_TRAINING:-}" ]; then
    rm -f "$OUT/plan.txt"
    fail "the plan trains on the device (the carry lacks checkpoints: make gpu-kit); ALLOW_TRAINING=1 overrides"
  fi
  rm -f "$OUT/plan.txt"
  mkdir -p "$RUNS"
  before=$(ls -d "$RUNS"/*/ 2>/dev/null | sort)
  step "run (capped at $LIMIT_S s)"
  timeout "$LIMIT_S" "$PYTHON" -m bench run --suite "$suite" --device "$DEVICE" --out "$RUNS" "$@" 2>&1 | tee -a "$log"
  status=${PIPESTATUS[0]}
  run=$(comm -13 <(echo "$before") <(ls -d "$RUNS"/*/ 2>/dev/null | sort) | head -1)
fi
run=${run%/}
[ -n "$run" ] && [ -d "$run" ] || fail "no run folder was made (exit $status)"
step "run folder $run (exit $status; 124: the time cap, resume with RESUME=$run)"
# A run cut by the time cap has not written its report yet.
[ -f "$run/report.html" ] || "$PYTHON" -m bench report "$run" >>"$log" 2>&1 || step "report failed (see $log)"
tar -czf "$OUT/run.tar.gz" --exclude=artifacts -C "$(dirname "$run")" "$(basename "$run")"
cp "$run/summary.md" "$OUT/" 2>/dev/null || step "no summary.md"
cp "$run/environment.json" "$OUT/" 2>/dev/null || step "no environment.json"
"$PYTHON" bench/run/gpu_kit.py headline "$run" >"$OUT/headline.txt" 2>>"$log"
step "done: $(ls "$OUT" | tr '\n' ' ')"
echo
cat "$OUT/headline.txt"
exit "$status"
