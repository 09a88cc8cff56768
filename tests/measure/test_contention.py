"""Contention: a cell measured while other processes keep the machine busy says so (`contended`)."""

import subprocess
import sys
import time
from dataclasses import replace

import pytest

from bench.measure.validity import CONTENDED_CORES, Evidence, others_cpu_seconds, validity_flags
from bench.run.runner import RunRequest, run

CLEAN = dict(window_s=5.0, cv=0.01, source="nvml", avg_power_w=100.0, idle_power_w=50.0, power_limit_w=700.0,
             throttled=False, outputs_match=True)  # fmt: skip


def test_contended_beyond_the_threshold():
    assert validity_flags(Evidence(**CLEAN, contention_cores=CONTENDED_CORES + 0.1)) == ("contended",)
    assert validity_flags(Evidence(**CLEAN, contention_cores=CONTENDED_CORES - 0.1)) == ()
    assert validity_flags(Evidence(**CLEAN)) == ()  # not measured: no flag either way


@pytest.fixture
def busy_neighbour():
    """Another process spinning on one core for as long as the test runs."""
    proc = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    time.sleep(0.5)  # let it start spinning
    yield proc
    proc.kill()
    proc.wait()


def test_others_cpu_seconds_counts_a_busy_neighbour_not_this_process(busy_neighbour):
    start, t0 = others_cpu_seconds(), time.monotonic()
    deadline = t0 + 1.0
    while time.monotonic() < deadline:  # this process busy too: it must not count as "others"
        pass
    cores = (others_cpu_seconds() - start) / (time.monotonic() - t0)
    assert 0.7 < cores < 1.5


def _gnn_reference(out):
    req = RunRequest(suite="smoke", twin="grid-gnn", variants=["reference"], runtime="onnxruntime", out=out)
    return run(req, log=lambda m: None)


def test_a_run_beside_a_busy_process_is_flagged_and_an_idle_one_is_not(smoke_grid, tmp_path, busy_neighbour):
    records = _gnn_reference(tmp_path / "busy").records()
    assert records and all("contended" in r.flags and r.contention_cores > CONTENDED_CORES for r in records)
    busy_neighbour.kill()
    busy_neighbour.wait()
    time.sleep(0.5)
    quiet = _gnn_reference(tmp_path / "idle").records()
    assert all("contended" not in r.flags and r.contention_cores < CONTENDED_CORES for r in quiet), [
        r.contention_cores for r in quiet
    ]


def test_select_warns_when_a_contended_cell_wins():
    from bench.decide.select import Constraints, select
    from tests.decide.test_decide import rec

    cell = replace(rec("int8", energy=0.4), flags=("contended",), contention_cores=1.0)
    reasons = select([cell], "grid-gnn", Constraints(max_quality_loss_pct=5)).reasons
    assert any(reason.startswith("WARNING: measured while other processes used 1 cores") for reason in reasons)
