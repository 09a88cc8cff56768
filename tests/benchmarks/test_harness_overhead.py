"""Harness overhead: the same ONNX Runtime session timed bare (pytest-benchmark) and through the
harness's latency pass; prints the ratio of the harness's p50 to the bare median with its bootstrap
95 % CI over alternating pairs of rounds (target: the CI within 1 +- 1 %).

Run with `make bench-harness`; excluded from `make test` (timings are numbers to read, not asserts).
"""

import statistics
import time

import numpy as np
import onnxruntime as ort

from bench.cell import latency_pass, open_session, prepare
from bench.plan import Cell, make_plan
from bench.stats import summarize
from bench.suites import load_suite
from compress.base import Variant
from models.checkpoint import train_or_load
from models.registry import get_twin

BATCH = 32
THREADS = 1  # pinned alike for both, so only the harness differs
ROUNDS = 1000
PAIRS = 15  # enough pairs for the ratio's CI to be narrower than the 1 % it must show


def test_harness_p50_matches_bare_session(benchmark, smoke_grid, tmp_path):
    suite = load_suite("smoke")
    cls = get_twin("grid-gnn")
    twin = cls(smoke_grid, cls.config_for("smoke"))
    model, _, _ = train_or_load(twin)
    plan = make_plan(suite, "cpu", twin.name, "onnxruntime", THREADS)
    cell = Cell(smoke_grid.grid, twin.name, Variant(), "onnxruntime", BATCH, "cpu")
    harness = prepare(cell, twin, open_session(cell, twin, model, plan, tmp_path, log=print), plan)

    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = THREADS, 1
    session = ort.InferenceSession(harness.session.artifact_path, options, providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    feed = dict(zip(names, (np.ascontiguousarray(x) for x in twin.example_inputs(BATCH, 0)), strict=True))

    def bare():
        return session.run(None, feed)

    def bare_p50() -> float:
        timings = []
        for _ in range(ROUNDS):
            t0 = time.perf_counter()
            bare()
            timings.append(time.perf_counter() - t0)
        return statistics.median(timings) * 1e3

    # Strictly alternating rounds: on a shared 2-core machine the load drifts by more than the
    # harness could cost, so both sides must sample the same moments.
    harness_p50, bare_p50s = [], []
    for _ in range(PAIRS):
        harness_p50.append(latency_pass(harness.step, harness.session.sync, ROUNDS)["p50"])
        bare_p50s.append(bare_p50())
    ratio = summarize([h / b for h, b in zip(harness_p50, bare_p50s, strict=True)])
    # pytest-benchmark's own record of the bare session (its pedantic mode runs once per test).
    benchmark.pedantic(bare, rounds=ROUNDS, iterations=1, warmup_rounds=50)
    harness_ms, bare_ms = statistics.median(harness_p50), statistics.median(benchmark.stats.stats.data) * 1e3
    benchmark.extra_info.update(harness_p50_ms=harness_ms, bare_median_ms=bare_ms, ratio=ratio.median,
                                ratio_ci95=[ratio.ci95_low, ratio.ci95_high])  # fmt: skip
    print(f"\ngrid-gnn onnxruntime bs{BATCH}: harness p50 {harness_ms:.4f} ms, bare median {bare_ms:.4f} ms "
          f"(pytest-benchmark); ratio of {PAIRS} alternating pairs {ratio.median:.4f} "
          f"(95 % CI {ratio.ci95_low:.4f}-{ratio.ci95_high:.4f}; target: within 1 +- 0.01)")  # fmt: skip
