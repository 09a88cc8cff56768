"""Harness overhead: the same ONNX Runtime session timed bare (pytest-benchmark) and through the
harness's latency pass; prints the ratio of the harness's p50 to the bare median (target 1 +- 5 %).

Run with `make bench-harness`; excluded from `make test` (timings are numbers to read, not asserts).
"""

import statistics

import numpy as np
import onnxruntime as ort

from bench.runner import _prepare, make_plan
from bench.suites import load_suite
from models.checkpoint import train_or_load
from models.registry import get_twin

BATCH = 32
THREADS = 1  # pinned alike for both, so only the harness differs


def test_harness_p50_matches_bare_session(benchmark, smoke_grid, tmp_path):
    suite = load_suite("smoke")
    cls = get_twin("grid-gnn")
    twin = cls(smoke_grid, cls.config_for("smoke"))
    model, _, _ = train_or_load(twin)
    plan = make_plan(suite, "cpu", twin.name, "onnxruntime", THREADS)
    cell = plan.cells(suite)[0].__class__(smoke_grid.grid, twin.name, "onnxruntime", BATCH, "cpu")
    harness = _prepare(cell, twin, model, suite, plan, tmp_path, seed=0)

    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = THREADS, 1
    session = ort.InferenceSession(harness.session.artifact_path, options, providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    feed = dict(zip(names, (np.ascontiguousarray(x) for x in twin.example_inputs(BATCH, 0)), strict=True))
    benchmark.pedantic(lambda: session.run(None, feed), rounds=2000, iterations=1, warmup_rounds=50)

    bare_ms = statistics.median(benchmark.stats.stats.data) * 1e3
    ratio = harness.latency["p50"] / bare_ms
    benchmark.extra_info.update(harness_p50_ms=harness.latency["p50"], bare_median_ms=bare_ms, ratio=ratio)
    print(f"\ngrid-gnn onnxruntime bs{BATCH}: harness p50 {harness.latency['p50']:.4f} ms, "
          f"bare median {bare_ms:.4f} ms, ratio {ratio:.3f} (target within 5 %)")  # fmt: skip
