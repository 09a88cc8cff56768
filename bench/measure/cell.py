"""One cell made ready to measure: its session on its runtime (and quality evaluated on that very
session), warm-up outside any window, iterations calibrated to the window, and a latency pass."""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import numpy as np
import psutil
import torch

from bench.measure.meters import Meter
from bench.measure.runtimes import RuntimeContext, Session, make_session, target_of
from bench.measure.stats import percentiles_ms
from bench.plan import Cell, RunPlan
from compress.base import PassContext
from models import creation
from models.fingerprint import files_sha256, onnx_files

if TYPE_CHECKING:
    from models.registry import Evaluation, Twin


def checksum_match(a: np.ndarray, b: np.ndarray) -> bool:
    return a.shape == b.shape and bool(np.allclose(a, b, rtol=1e-5, atol=1e-6))


def flops_per_inference(model: torch.nn.Module, inputs: tuple[np.ndarray, ...]) -> float | None:
    from torch.utils.flop_counter import FlopCounterMode

    try:
        counter = FlopCounterMode(display=False)
        with counter, torch.inference_mode():
            model.cpu()(*(torch.from_numpy(x) for x in inputs))
        return counter.get_total_flops() / len(inputs[0])
    except Exception:  # an op the counter cannot trace: report unknown rather than a guess
        return None


@dataclass
class Prepared:
    cell: Cell
    session: Session
    quality: Evaluation
    step: Callable[[], object]
    reference_output: np.ndarray
    iterations: int
    latency: dict
    peak_memory_mb: float
    artifact_sha256: str | None


def open_session(
    cell: Cell, twin, model, plan: RunPlan, workdir: Path, log: Callable[[str], None], notes: list | None = None
) -> Opened:
    """The session of a (variant, runtime) and its quality on the test split, evaluated on that
    very session: shared by the cell's batch sizes. `notes` collects what the variant's ONNX-level
    passes say for the record (PassContext.notes)."""
    pass_ctx = PassContext(
        twin=twin,
        device=cell.device,
        workdir=workdir,
        target=target_of(cell),
        log=log,
        notes=[] if notes is None else notes,
    )
    ctx = RuntimeContext(
        device=cell.device,
        threads=plan.threads,
        workdir=workdir,
        twin=twin,
        artifact_stem=f"{twin.name}-{cell.variant.id}",
        rewrite_onnx=lambda path: cell.variant.rewrite_onnx(path, pass_ctx),
    )
    # Opening is part of a variant's creation (an export, an ONNX rewrite: calibration and
    # quantization); the quality pass below is measurement, not creation.
    with creation.window("export", own_only=True):
        session = make_session(cell.runtime, copy.deepcopy(model), ctx)
    # The bytes this session loaded, hashed now: an export must copy exactly these.
    artifact_sha = files_sha256(onnx_files(Path(session.artifact_path))) if session.artifact_path else None
    return Opened(session, twin.evaluate(session.predict, "test"), artifact_sha)


class Opened(NamedTuple):
    """A (variant, runtime)'s session, its quality evaluated on that session, and the SHA-256 of the
    artifact bytes it loaded (ONNX Runtime; None for torch runtimes)."""

    session: Session
    quality: Evaluation
    artifact_sha256: str | None


def prepare(cell: Cell, twin: Twin, opened: Opened, plan: RunPlan) -> Prepared:
    session, quality, artifact_sha = opened
    if cell.device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    inputs = twin.example_inputs(cell.batch_size, plan.seed)
    reference_output = session.predict(*inputs)
    step = session.bind(*inputs)
    iterations = calibrate(step, session.sync, plan.window_s)
    latency = latency_pass(step, session.sync, max(10, min(iterations, 5000)))
    if cell.device == "cuda":
        peak = torch.cuda.max_memory_allocated() / 2**20
    else:  # the process's resident set after the timing pass (framework included)
        peak = psutil.Process().memory_info().rss / 2**20
    return Prepared(cell, session, quality, step, reference_output, iterations, latency, peak, artifact_sha)


def calibrate(step: Callable[[], object], sync: Callable[[], None], window_s: float) -> int:
    """How many steps make a window of `window_s`. After a warm-up (compilation, autotuning and
    first-run allocation stay outside every window), blocks of 1, 2, 4, ... steps run as a window
    runs them, unsynchronised, until two blocks of the same size in a row each last a quarter of the
    window; the second one's pace counts, so a one-off cost (a late autotune, an arena growing)
    that made the first one long does not. (Timing the warm-up itself counted such costs: a
    torch-compile cell recompiles at its measured batch size on its first step, and its 0.2 s
    windows held 1 or 2 steps, 5-10 ms.)"""
    for _ in range(3):
        step()
    sync()
    n, long_before = 1, False
    while True:
        start = time.perf_counter()
        for _ in range(n):
            step()
        sync()
        elapsed = time.perf_counter() - start
        if elapsed >= 0.25 * window_s:
            if long_before:
                return max(1, int(np.ceil(window_s * n / max(elapsed, 1e-9))))
            long_before = True  # once more at this size: was it the pace, or a one-off?
        else:
            long_before = False
            n *= 2


def latency_pass(step: Callable[[], object], sync: Callable[[], None], n: int) -> dict[str, float]:
    """Every iteration timed on its own and synchronised: latency percentiles in ms."""
    timings = []
    for _ in range(n):
        t0 = time.perf_counter()
        step()
        sync()
        timings.append(time.perf_counter() - t0)
    return percentiles_ms(timings)


def window(meter: Meter, key: str, step: Callable[[], object], iterations: int):
    """`iterations` steps inside one meter window, after `meter.preroll_s` of the same work outside it:
    a counter that steps every ~100 ms credits a window with what ran up to a step before it opened,
    and misses what ran after its last step before it closed; with the device busy at both ends the
    two cancel instead of always costing the window part of a step of its own work."""
    end = time.perf_counter() + meter.preroll_s
    while time.perf_counter() < end:
        step()
    meter.begin(key)
    out = None
    for _ in range(iterations):
        out = step()
    reading = meter.end(key)
    return reading, out
