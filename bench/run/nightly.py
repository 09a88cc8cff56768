"""The nightly gate: run a suite, compare it with this device's committed baseline, and write the
verdict into the run folder."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from bench.decide import compare
from bench.run.runner import RunRequest, run
from bench.store import baseline_path, load_records, write_output
from models.errors import InputError


@dataclass(frozen=True)
class NightlyRequest:
    suite: str = "nightly"
    device: str | None = None
    out: Path | None = None
    baseline: Path | None = None  # None: results/baselines/<this device>.json
    threshold_pct: float = 5.0
    quality_threshold_pct: float = 0.5


def nightly(req: NightlyRequest) -> tuple[str, int]:
    """(the verdict's markdown, its exit code: 0 clean, 1 a regression)."""
    if req.baseline is not None:  # a baseline given is checked before the suite runs (~20 GPU-minutes)
        load_records(req.baseline)
    run_dir = run(RunRequest(suite=req.suite, device=req.device, out=req.out))
    records, env = load_records(run_dir.path)
    base = req.baseline or baseline_path(env, records[0].device)
    if not base.is_file():
        raise InputError(
            f"no baseline for this device at {base}: promote a run with `twinbench baseline --run "
            f"{run_dir.path}` (and commit it)"
        )
    base_records, _ = load_records(base)
    verdict = compare.compare(base_records, records, req.threshold_pct, req.quality_threshold_pct)
    text = compare.render(verdict, str(base), str(run_dir.path), req.threshold_pct)
    write_output(run_dir.path / "verdict.md", text)
    return text, verdict.exit_code
