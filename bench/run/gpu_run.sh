#!/usr/bin/env bash
# Run a suite on a lent GPU machine from carried wheels and a carried cache, then bundle the run
# folder into $OUT. Nothing here needs the network. From the repository root on the device:
#
#   bash bench/run/gpu_run.sh SUITE [twinbench run options...]      # a new run
#   RESUME=results/runs/<run_id> bash bench/run/gpu_run.sh          # continue it (same warm machine)
#
# Carry `.whl` (the wheels the device lacks, for CPython 3.12: see ../shared/GPU.md) and `.cache`
# (grid data and checkpoints built here: `make data SUITE=...`, `twinbench train --suite ...`).
# A command may run 10 minutes: the run is capped at $LIMIT_S seconds, and whatever groups finished
# are in records.jsonl (resume to go on).
set -uo pipefail
OUT=${OUT:?set OUT to the folder whose files come back}
LIMIT_S=${LIMIT_S:-540}
mkdir -p "$OUT"
log="$OUT/gpu_run.log"

if [ -d .whl ] && ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl >>"$log" 2>&1 || {
    echo "wheel install failed (see $log)"; exit 1; }
fi
export PYTHONPATH=/tmp/site:$PWD${PYTHONPATH:+:$PYTHONPATH}

{ nvidia-smi --query-gpu=name,driver_version,power.limit,clocks.sm,temperature.gpu --format=csv || true; } >>"$log" 2>&1

if [ -n "${RESUME:-}" ]; then
  timeout "$LIMIT_S" python3 -m bench run --resume "$RESUME" 2>>"$log" | tee -a "$log"
  run="$RESUME"
else
  suite=${1:?usage: bench/run/gpu_run.sh SUITE [run options]}; shift
  before=$(ls -d results/runs/*/ 2>/dev/null | sort)
  timeout "$LIMIT_S" python3 -m bench run --suite "$suite" --out results/runs "$@" 2>>"$log" | tee -a "$log"
  run=$(comm -13 <(echo "$before") <(ls -d results/runs/*/ 2>/dev/null | sort) | head -1)
fi
status=${PIPESTATUS[0]}
run=${run%/}
if [ -z "$run" ] || [ ! -d "$run" ]; then echo "no run folder was created (exit $status; see $log)"; exit 1; fi
# A run cut by the time cap has not written its report yet.
[ -f "$run/report.html" ] || python3 -m bench report "$run" >>"$log" 2>&1
tar -czf "$OUT/run.tar.gz" --exclude=artifacts -C "$(dirname "$run")" "$(basename "$run")"
cp "$run/summary.md" "$OUT/" 2>/dev/null
echo "run folder: $run (exit $status; 124 = time cap reached, resume with RESUME=$run)"
exit 0
