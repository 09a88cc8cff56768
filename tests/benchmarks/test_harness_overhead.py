"""Harness overhead: grid-gnn on ONNX Runtime at batch 32, timed through the harness's latency pass
and bare (`session.run` in a plain loop), in many short alternating pairs; prints the ratio of the
two medians with its bootstrap 95 % CI (target: the CI within 1 +- 1 %), beside the controls that
say what the method can resolve:

- the parts of the harness one at a time: its timing loop around the bare call, and its step
  (inputs staged by `Session.bind`, the call wrapped in a closure) in a plain loop;
- A/A: the bare loop against itself (the method's noise floor, should be 1);
- a known cost: the bare loop plus a busy-wait of 1 % of its median (should read ~1.01, CI above 1);
- across sessions: the harness against a second InferenceSession of the same file, made as a user
  would. Two sessions of one file differ by up to ~2 % on their own (ORT's memory placement), so
  this is the spread a user sees between any two sessions, not a cost of the harness.

Pairs are short (ROUNDS calls each, ~0.1 s) and alternate which side runs first: on a shared
2-core machine the load drifts by more than 1 % within a second, so rounds of 1,000 calls gave
ratios from 0.98 to 1.01 (1.059 as the issue reported it) with CIs wider than the 1 % to be shown.

Run with `make bench-harness`; excluded from `make test` (timings are numbers to read, not asserts).
"""

import os
import statistics
import time
from collections.abc import Callable

import numpy as np
import onnxruntime as ort

from bench.measure.cell import latency_pass, open_session, prepare
from bench.measure.stats import Summary, summarize
from bench.measure.validity import others_cpu_seconds
from bench.plan import Cell
from bench.run.planning import make_plan
from bench.suites import load_suite
from compress.base import Variant
from models.checkpoint import train_or_load
from models.registry import get_twin

BATCH = 32
THREADS = 1  # pinned alike for both, so only the harness differs
ROUNDS = 100  # calls per side of a pair
PAIRS = 100  # for the rows that explain (parts, controls)
DECISIVE_PAIRS = 250  # for the two rows the verdict reads: at 100 their CIs reached +-1.2 % on an idle run
KNOWN_COST = 0.01  # the positive control's added busy-wait, as a fraction of the bare median


def median_seconds(fn: Callable[[], object], rounds: int) -> float:
    timings = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        fn()
        timings.append(time.perf_counter() - t0)
    return statistics.median(timings)


def paired_ratio(a: Callable[[int], float], b: Callable[[int], float], pairs: int = PAIRS) -> Summary:
    """Median over `pairs` of a(ROUNDS) / b(ROUNDS), each pair run back to back, first a then b or
    first b then a in turn, so neither side always follows the other."""
    ratios = []
    for i in range(pairs):
        if i % 2:
            y = b(ROUNDS)
            x = a(ROUNDS)
        else:
            x = a(ROUNDS)
            y = b(ROUNDS)
        ratios.append(x / y)
    return summarize(ratios)


def test_harness_p50_matches_bare_session(benchmark, smoke_grid, tmp_path):
    suite = load_suite("smoke")
    cls = get_twin("grid-gnn")
    twin = cls(smoke_grid, cls.config_for("smoke"))
    model, _, _ = train_or_load(twin)
    plan = make_plan(suite, "cpu", twin.name, "onnxruntime", THREADS)
    cell = Cell(smoke_grid.grid, twin.name, Variant(), "onnxruntime", BATCH, "cpu")
    harness = prepare(cell, twin, open_session(cell, twin, model, plan, tmp_path, log=print), plan)

    # Bare: the harness's own InferenceSession driven by a plain loop on the user's own feed.
    session = harness.session.handle
    names = [i.name for i in session.get_inputs()]
    feed = dict(zip(names, (np.ascontiguousarray(x) for x in twin.example_inputs(BATCH, 0)), strict=True))

    def bare():
        return session.run(None, feed)

    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = THREADS, 1
    other = ort.InferenceSession(harness.session.artifact_path, options, providers=["CPUExecutionProvider"])

    def other_bare():
        return other.run(None, feed)

    cost = KNOWN_COST * median_seconds(bare, 1000)  # also the bare loop's warm-up

    def bare_plus_known_cost():
        bare()
        end = time.perf_counter() + cost
        while time.perf_counter() < end:
            pass

    median_seconds(other_bare, 200)  # warm-up
    harness_s = lambda n: latency_pass(harness.step, harness.session.sync, n)["p50"] / 1e3  # noqa: E731
    bare_s = lambda n: median_seconds(bare, n)  # noqa: E731
    others, wall = others_cpu_seconds(), time.perf_counter()
    rows = {
        "harness / bare (same session)": paired_ratio(harness_s, bare_s, DECISIVE_PAIRS),
        # Where a cost would come from, one part of the harness at a time:
        "  timing loop: latency pass over bare / bare": paired_ratio(lambda n: latency_pass(bare, lambda: None, n)["p50"] / 1e3, bare_s),
        "  step: its staged inputs and wrapper, plain loop / bare": paired_ratio(lambda n: median_seconds(harness.step, n), bare_s),
        "A/A: bare / bare": paired_ratio(bare_s, bare_s, DECISIVE_PAIRS),
        f"known cost: (bare + {KNOWN_COST:.0%}) / bare": paired_ratio(lambda n: median_seconds(bare_plus_known_cost, n), bare_s),
        "across sessions: harness / a user's session": paired_ratio(harness_s, lambda n: median_seconds(other_bare, n)),
    }  # fmt: skip
    neighbours = max(0.0, others_cpu_seconds() - others) / (time.perf_counter() - wall)  # cores others used
    # pytest-benchmark's own record of the bare loop (its pedantic mode runs once per test).
    benchmark.pedantic(bare, rounds=1000, iterations=1, warmup_rounds=50)
    bare_ms = statistics.median(benchmark.stats.stats.data) * 1e3
    overhead = rows["harness / bare (same session)"]
    benchmark.extra_info.update(bare_median_ms=bare_ms, ratio=overhead.median,
                                ratio_ci95=[overhead.ci95_low, overhead.ci95_high],
                                controls={k.strip(): [s.median, s.ci95_low, s.ci95_high] for k, s in rows.items()})  # fmt: skip
    print(f"\ngrid-gnn onnxruntime bs{BATCH}, bare median {bare_ms:.4f} ms (pytest-benchmark); "
          f"ratios of alternating pairs of {ROUNDS} calls ({DECISIVE_PAIRS} pairs for the harness and A/A, "
          f"{PAIRS} for the others), median (95 % CI):")  # fmt: skip
    for label, s in rows.items():
        print(f"  {label:56s} {s.median:.4f} ({s.ci95_low:.4f}-{s.ci95_high:.4f})")
    print(f"  other processes used {neighbours:.2f} cores meanwhile (load average {os.getloadavg()[0]:.2f})")
    a_a = rows["A/A: bare / bare"]
    if 0.99 <= overhead.ci95_low and overhead.ci95_high <= 1.01:
        verdict = "met"
    elif not (0.99 <= a_a.ci95_low and a_a.ci95_high <= 1.01):  # the method could not resolve 1 % this time
        verdict = f"undecided: the A/A control's CI ({a_a.ci95_low:.4f}-{a_a.ci95_high:.4f}) is as wide; rerun idle"
    else:
        verdict = "NOT met"
    print(f"  harness overhead target (CI within 1 +- 0.01): {verdict}")
