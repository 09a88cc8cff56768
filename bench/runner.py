"""The measurement protocol: plan the cells, measure each honestly, write one record per cell.

Per twin (a group of cells: runtimes x batch sizes):
1. accuracy pass on each cell's own runtime (test split), and the reference output on the fixed
   measurement inputs;
2. warm-up outside any window, iterations calibrated so a window lasts >= window_s;
3. a latency pass of per-iteration synchronised timings (separate from the energy windows);
4. `repetitions` rounds; each round measures idle power over one window, then every cell of the
   group once, in a shuffled order with small random pauses (interleaved, never back to back);
5. median / bootstrap CI / CV per cell, validity flags, and a check that the outputs produced
   inside the energy windows equal the accuracy pass's outputs on the same inputs.
Records of a group are appended when the group finishes, so an interrupt loses at most one group
and `--resume` skips the finished ones.
"""

from __future__ import annotations

import copy
import functools
import math
import os
import random
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import psutil
import torch

from bench import environment, report, summary
from bench.errors import ConfigError, InputError, TwinbenchError, UnknownNameError, Unsupported, Verdict
from bench.meters import Meter, choose_meter
from bench.records import Record
from bench.runtimes import RuntimeContext, Session, default_threads, make_session, runtime_names
from bench.stats import percentiles_ms, summarize
from bench.store import RunDir, new_run_id
from bench.suites import Suite, load_suite
from compress.base import PassContext, Variant, parse_variant
from models.fingerprint import files_sha256, onnx_files, weights_sha256

HIGH_CV = 0.02
GPU_MIN_WINDOW_S = 5.0  # NVML's counter updates every ~100 ms and samples part of the time
SETUP_S_PER_CELL = 6.0  # accuracy pass, session build, warm-up: a rough figure for the estimate

# Peak dense throughput and TDP per device, for the energy floor (flops x W / peak). Sources:
# NVIDIA datasheets: H100 SXM5 / PCIe (FP32 67 / 51 TFLOP/s, BF16 989 / 756 dense, 700 / 350 W),
# H200 SXM (as H100 SXM, 700 W), A100 SXM 80 GB (FP32 19.5, BF16 312, 400 W), L4 (FP32 30.3,
# BF16 121 dense, 72 W).
DEVICE_PEAKS = {
    "H100 PCIe": {"fp32_tflops": 51.0, "bf16_tflops": 756.0, "tdp_w": 350.0},
    "H100": {"fp32_tflops": 67.0, "bf16_tflops": 989.0, "tdp_w": 700.0},
    "H200": {"fp32_tflops": 67.0, "bf16_tflops": 989.0, "tdp_w": 700.0},
    "A100": {"fp32_tflops": 19.5, "bf16_tflops": 312.0, "tdp_w": 400.0},
    "L4": {"fp32_tflops": 30.3, "bf16_tflops": 121.0, "tdp_w": 72.0},
}


@dataclass(frozen=True)
class Cell:
    grid: str
    twin: str
    variant: Variant
    runtime: str
    batch_size: int
    device: str

    @property
    def key(self) -> str:  # the same as Record.cell_key
        return f"{self.grid}/{self.twin}/{self.variant.id}/{self.runtime}/{self.device}/bs{self.batch_size}"

    @property
    def target(self) -> str:  # which model of the variant this runtime runs
        return "onnx" if self.runtime == "onnxruntime" else "torch"


@dataclass(frozen=True)
class RunPlan:
    suite: str
    device: str
    twins: tuple[str, ...]
    runtimes: tuple[str, ...]
    threads: int
    variants: tuple[Variant, ...] = (Variant(),)

    def __post_init__(self) -> None:
        if self.device not in ("cpu", "cuda"):
            raise ConfigError(f"device must be cpu or cuda, got {self.device!r}")
        if self.threads < 1:
            raise ConfigError("threads must be >= 1")

    def cells(self, suite: Suite) -> list[Cell]:
        return [
            Cell(grid, twin, variant, runtime, batch, self.device)
            for grid in suite.grids
            for twin in self.twins
            for variant in self.variants
            for runtime in self.runtimes
            for batch in suite.measure.batch_sizes
        ]


def select_variants(variants: tuple[Variant, ...], selectors: list[str] | None) -> tuple[Variant, ...]:
    """The suite's variants a run measures: all of them, or those named by `selectors` (a variant
    id, or a pass name: every variant whose chain uses it; 'reference' alone: none of them)."""
    if selectors is None:
        return variants
    known = {"reference"} | {v.id for v in variants} | {p.name for v in variants for p in v.chain}
    for s in selectors:
        if s not in known:
            raise UnknownNameError("variant selector", s, sorted(known))
    return tuple(v for v in variants if v.id in selectors or any(p.name in selectors for p in v.chain))


def make_plan(
    suite: Suite, device: str | None, twin: str | None, runtime: str | None, threads: int | None,
    variants: list[str] | None = None,
) -> RunPlan:  # fmt: skip
    from models.registry import get_twin

    device = device or suite.device
    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda asked for, but CUDA is not available here (use --device cpu)")
    if twin is not None:
        get_twin(twin)  # unknown names: a clear error listing the valid ones
        if twin not in suite.twins:
            raise ConfigError(f"twin {twin!r} is not in suite {suite.name} ({', '.join(suite.twins)})")
    runtimes = (runtime,) if runtime else suite.measure.runtimes
    for name in runtimes:
        if name not in runtime_names():
            raise UnknownNameError("runtime", name, runtime_names())
    twins = (twin,) if twin else suite.twins
    chosen = select_variants(suite.variants, variants)
    return RunPlan(suite.name, device, twins, tuple(runtimes), threads or default_threads(), (Variant(), *chosen))


def estimate_seconds(suite: Suite, n_cells: int, n_groups: int) -> float:
    m = suite.measure
    per_cell = SETUP_S_PER_CELL + m.window_s * (2 + m.repetitions)  # warm-up + latency + windows
    return n_cells * per_cell + n_groups * m.repetitions * m.window_s  # + idle windows


def validity_flags(
    *,
    window_s: float,
    cv: float | None,
    source: str,
    avg_power_w: float | None,
    idle_power_w: float | None,
    power_limit_w: float | None,
    throttled: bool | None,
    outputs_match: bool,
) -> tuple[str, ...]:
    """Why a cell's numbers deserve less trust. An empty tuple is a clean measurement."""
    flags = []
    if window_s < GPU_MIN_WINDOW_S:
        flags.append("short_window")
    if cv is not None and cv > HIGH_CV:
        flags.append("high_cv")
    if source == "nvml" and avg_power_w is not None and power_limit_w:
        if not (idle_power_w or 0.0) <= avg_power_w <= power_limit_w:
            flags.append("power_out_of_range")
    if throttled:
        flags.append("throttled")
    if not outputs_match:
        flags.append("checksum_mismatch")
    return tuple(flags)


def _error_reason(e: Exception) -> str:
    """An exception as a record's reason: without terminal colours, at most 2000 characters."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", f"{type(e).__name__}: {e}")
    return text[:2000]


def _checksum_match(a: np.ndarray, b: np.ndarray) -> bool:
    return a.shape == b.shape and bool(np.allclose(a, b, rtol=1e-5, atol=1e-6))


def _flops_per_inference(model: torch.nn.Module, inputs: tuple[np.ndarray, ...]) -> float | None:
    from torch.utils.flop_counter import FlopCounterMode

    try:
        counter = FlopCounterMode(display=False)
        with counter, torch.inference_mode():
            model.cpu()(*(torch.from_numpy(x) for x in inputs))
        return counter.get_total_flops() / len(inputs[0])
    except Exception:  # an op the counter cannot trace: report unknown rather than a guess
        return None


def _energy_floor(flops: float | None, env: dict) -> float | None:
    name = env.get("gpu_name") or ""
    for key in sorted(DEVICE_PEAKS, key=len, reverse=True):  # "H100 PCIe" before "H100"
        if key in name and flops:
            peak = DEVICE_PEAKS[key]
            return flops * peak["tdp_w"] / (peak["fp32_tflops"] * 1e12)
    return None


@dataclass
class _Prepared:
    cell: Cell
    session: Session
    quality: object  # models.registry.Evaluation
    step: Callable[[], object]
    reference_output: np.ndarray
    iterations: int
    latency: dict
    peak_memory_mb: float
    artifact_sha256: str | None


def _open_session(cell: Cell, twin, model, plan: RunPlan, workdir: Path, log: Callable[[str], None]) -> _Opened:
    """The session of a (variant, runtime) and its quality on the test split, evaluated on that
    very session: shared by the cell's batch sizes."""
    pass_ctx = PassContext(twin=twin, device=cell.device, workdir=workdir, target=cell.target, log=log)
    ctx = RuntimeContext(
        device=cell.device, threads=plan.threads, workdir=workdir, twin=twin,
        artifact_stem=f"{twin.name}-{cell.variant.id}",
        rewrite_onnx=lambda path: cell.variant.rewrite_onnx(path, pass_ctx),
    )  # fmt: skip
    session = make_session(cell.runtime, copy.deepcopy(model), ctx)
    # The bytes this session loaded, hashed now: an export must copy exactly these.
    artifact_sha = files_sha256(onnx_files(Path(session.artifact_path))) if session.artifact_path else None
    return _Opened(session, twin.evaluate(session.predict, "test"), artifact_sha)


class _Opened(NamedTuple):
    """A (variant, runtime)'s session, its quality evaluated on that session, and the SHA-256 of the
    artifact bytes it loaded (ONNX Runtime; None for torch runtimes)."""

    session: Session
    quality: object  # models.registry.Evaluation
    artifact_sha256: str | None


def _prepare(cell: Cell, twin, opened: _Opened, suite: Suite, seed: int) -> _Prepared:
    session, quality, artifact_sha = opened
    if cell.device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    inputs = twin.example_inputs(cell.batch_size, seed)
    reference_output = session.predict(*inputs)
    step = session.bind(*inputs)
    window = suite.measure.window_s
    # Warm-up: compilation, autotuning and first-run allocation stay outside every window.
    start, n = time.perf_counter(), 0
    while n < 3 or time.perf_counter() - start < 0.25 * window:
        step()
        n += 1
    session.sync()
    per_iter = (time.perf_counter() - start) / n
    iterations = max(1, int(np.ceil(window / max(per_iter, 1e-7))))
    latency = latency_pass(step, session.sync, max(10, min(iterations, 5000)))
    if cell.device == "cuda":
        peak = torch.cuda.max_memory_allocated() / 2**20
    else:  # the process's resident set after the timing pass (framework included)
        peak = psutil.Process().memory_info().rss / 2**20
    return _Prepared(cell, session, quality, step, reference_output, iterations, latency, peak, artifact_sha)


def latency_pass(step: Callable[[], object], sync: Callable[[], None], n: int) -> dict[str, float]:
    """Every iteration timed on its own and synchronised: latency percentiles in ms."""
    timings = []
    for _ in range(n):
        t0 = time.perf_counter()
        step()
        sync()
        timings.append(time.perf_counter() - t0)
    return percentiles_ms(timings)


def _window(meter: Meter, key: str, step: Callable[[], object], iterations: int):
    meter.begin(key)
    out = None
    for _ in range(iterations):
        out = step()
    reading = meter.end(key)
    return reading, out


def measure_group(
    twin, model, cells: list[Cell], suite: Suite, plan: RunPlan, run_id: str, workdir: Path, meter: Meter, env: dict,
    on_cell: Callable[[str], None] = lambda s: None, seed: int = 0, log: Callable[[str], None] = lambda s: None,
) -> list[Record]:  # fmt: skip
    """Measure every cell of one twin; returns one record per cell (ok, unsupported or error)."""
    from models.export import torch_predict_fn

    m = suite.measure
    reference = twin.evaluate(torch_predict_fn(copy.deepcopy(model).cpu()), "test")  # fp32 eager reference
    variant_models: dict[tuple[str, str], torch.nn.Module] = {}

    def variant_model(cell: Cell) -> torch.nn.Module:
        """The variant's model for the cell's target, built once (passes are deterministic)."""
        key = (cell.variant.id, cell.target)
        if key not in variant_models:
            ctx = PassContext(twin=twin, device=cell.device, workdir=workdir, target=cell.target, log=log)
            variant_models[key] = cell.variant.build(model, ctx)
        return variant_models[key]

    weight_hashes: dict[tuple[str, str], str] = {}

    def weights_of(cell: Cell) -> str:
        """SHA-256 of the variant's torch weights: what an export must reproduce."""
        key = (cell.variant.id, cell.target)
        if key not in weight_hashes:
            weight_hashes[key] = weights_sha256(variant_model(cell))
        return weight_hashes[key]

    sessions: dict[tuple[str, str], _Opened | Exception] = {}  # (variant id, runtime) -> opened, or why not

    def session_of(cell: Cell):
        key = (cell.variant.id, cell.runtime)
        if key not in sessions:
            try:
                sessions[key] = _open_session(cell, twin, variant_model(cell), plan, workdir, log)
            except (KeyboardInterrupt, TwinbenchError):
                raise
            except Exception as e:  # remembered: the other batch sizes get the same record
                sessions[key] = e
        if isinstance(sessions[key], Exception):
            raise sessions[key]
        return sessions[key]

    def identity(cell: Cell) -> dict:
        v = cell.variant
        return dict(run_id=run_id, suite=suite.name, twin=twin.name, grid=twin.grid.grid, variant_id=v.id,
                    variant_name=v.name, lineage=v.lineage, runtime=cell.runtime, device=cell.device,
                    batch_size=cell.batch_size)  # fmt: skip

    prepared: list[_Prepared] = []
    failed: list[Record] = []
    for cell in cells:
        on_cell(f"prepare {cell.key}")
        try:
            prepared.append(_prepare(cell, twin, session_of(cell), suite, seed))
        except Unsupported as e:
            failed.append(Record(**identity(cell), status="unsupported", status_reason=e.reason))
        except (KeyboardInterrupt, TwinbenchError):
            raise
        except Exception as e:  # a cell that crashes is a record, not a lost run
            failed.append(Record(**identity(cell), status="error", status_reason=_error_reason(e)))

    rng = random.Random(seed)
    energy = {p.cell.key: [] for p in prepared}
    seconds = {p.cell.key: [] for p in prepared}
    outputs_match = {p.cell.key: True for p in prepared}
    idle_w = []
    # Device state (clocks, temperature, power limit, throttling) around each cell's windows.
    state_of = environment.gpu_state if plan.device == "cuda" else dict
    state_before, state_after = {}, {}
    for rep in range(m.repetitions):
        on_cell(f"idle window {rep + 1}/{m.repetitions}")
        meter.begin("idle")
        time.sleep(m.window_s)
        idle = meter.end("idle")
        if idle.joules is not None and idle.source != "estimate":  # a sleeping process has no CPU-time estimate
            idle_w.append(idle.joules / idle.seconds)
        for p in rng.sample(prepared, len(prepared)):
            time.sleep(rng.uniform(0.0, 0.05))
            on_cell(f"window {rep + 1}/{m.repetitions} {p.cell.key}")
            if rep == 0:
                state_before[p.cell.key] = state_of()
            reading, out = _window(meter, p.cell.key, p.step, p.iterations)
            if rep == m.repetitions - 1:
                state_after[p.cell.key] = state_of()
            outputs_match[p.cell.key] &= _checksum_match(p.session.to_numpy(out), p.reference_output)
            seconds[p.cell.key].append(reading.seconds)
            energy[p.cell.key].append(reading.joules)

    records = list(failed)
    idle_power = float(np.median(idle_w)) if idle_w else None
    flops_cache: dict[tuple[str, int], float | None] = {}
    for p in prepared:
        c, key = p.cell, p.cell.key
        n = p.iterations * c.batch_size
        joules = energy[key]
        measured = all(j is not None for j in joules)
        source = meter.source if measured else "none"
        stats = summarize([j / n for j in joules]) if measured else None
        avg_power = float(np.median([j / s for j, s in zip(joules, seconds[key], strict=True)])) if measured else None
        before, after = state_before[key], state_after[key]
        throttled = bool(before.get("throttled") or after.get("throttled")) if before else None
        flags = validity_flags(
            window_s=m.window_s,
            cv=stats.cv if stats else None,
            source=source,
            avg_power_w=avg_power,
            idle_power_w=idle_power,
            power_limit_w=before.get("power_limit_w"),
            throttled=throttled,
            outputs_match=outputs_match[key],
        )
        dynamic = None
        if stats and idle_power is not None:
            dynamic = float(np.median([(j - idle_power * s) / n for j, s in zip(joules, seconds[key], strict=True)]))
        model_of_cell = variant_model(c)
        if (c.variant.id, c.batch_size) not in flops_cache:
            # Counted on the variant's torch model (for quantized ONNX: the fp32 graph it came from).
            inputs = twin.example_inputs(c.batch_size, seed)
            flops_cache[(c.variant.id, c.batch_size)] = _flops_per_inference(copy.deepcopy(model_of_cell), inputs)
        flops = flops_cache[(c.variant.id, c.batch_size)]
        floor = _energy_floor(flops, env) if c.device == "cuda" else None
        q = p.quality
        records.append(
            Record(
                **identity(c),
                params=sum(t.numel() for t in model_of_cell.parameters()),
                artifact_path=p.session.artifact_path and os.path.relpath(p.session.artifact_path, workdir.parent),
                weights_sha256=weights_of(c),
                artifact_sha256=p.artifact_sha256,
                quality_metric=q.primary,
                quality_value=q.value,
                quality_ref_value=reference.value,
                quality_loss_pct=100.0 * (q.value - reference.value) / reference.value,
                quality_metrics=dict(q.metrics),
                energy_j_per_inference=stats.median if stats else None,
                energy_ci95_low=stats.ci95_low if stats else None,
                energy_ci95_high=stats.ci95_high if stats else None,
                energy_cv=stats.cv if stats else None,
                energy_source=source,
                energy_dynamic_j_per_inference=dynamic,
                idle_power_w=idle_power,
                avg_power_w=avg_power,
                energy_floor_j=floor,
                energy_over_floor=(stats.median / floor) if (stats and floor) else None,
                latency_ms_p50=p.latency["p50"],
                latency_ms_p50_ci95_low=p.latency["p50_ci95_low"],
                latency_ms_p50_ci95_high=p.latency["p50_ci95_high"],
                latency_ms_p90=p.latency["p90"],
                latency_ms_p99=p.latency["p99"],
                latency_ms_mean=p.latency["mean"],
                throughput_per_s=n / float(np.median(seconds[key])),
                peak_memory_mb=p.peak_memory_mb,
                size_bytes=p.session.size_bytes,
                flops_per_inference=flops,
                model_info=twin.model_info(model_of_cell),
                window_s=float(np.median(seconds[key])),
                iterations=p.iterations,
                repetitions=m.repetitions,
                threads=p.session.threads,
                flags=flags,
                output_checksum_match=outputs_match[key],
                throttled=throttled,
                device_state_before=before,
                device_state_after=after,
                load_avg=tuple(os.getloadavg()),
            )
        )
    return records


def _plan_from_json(saved: dict) -> tuple[RunPlan, Suite, str]:
    """The plan of a run folder being resumed; a malformed plan.json is bad input, not a crash."""
    try:
        suite = load_suite(saved["suite"])
        variants = tuple(parse_variant(chain) for chain in saved["variants"])
        plan = RunPlan(
            saved["suite"], saved["device"], tuple(saved["twins"]), tuple(saved["runtimes"]), saved["threads"], variants
        )
        run_id = saved["run_id"]
        if not isinstance(run_id, str) or not isinstance(plan.threads, int):
            raise TypeError("run_id must be a string and threads an integer")
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise InputError(f"malformed plan.json ({type(e).__name__}: {e}); this folder cannot be resumed") from e
    return plan, suite, run_id


def run(
    suite_name: str | None = None,
    *,
    device: str | None = None,
    twin: str | None = None,
    runtime: str | None = None,
    threads: int | None = None,
    out: Path | None = None,
    resume: Path | None = None,
    max_minutes: float | None = None,
    variants: list[str] | None = None,
    log: Callable[[str], None] = print,
    progress: Callable[[int, int, str], None] = lambda done, total, what: None,
) -> RunDir:
    """Run (or resume) a suite; returns the run folder. Raises TwinbenchError on bad input."""
    from bench.store import RUNS

    if max_minutes is not None and not (math.isfinite(max_minutes) and max_minutes > 0):
        raise ConfigError(f"--max-minutes must be a positive number, got {max_minutes}")
    if resume is not None:
        run_dir = RunDir.open(resume)
        with run_dir.lock():
            plan, suite, run_id = _plan_from_json(run_dir.read_json("plan.json"))
            repaired = run_dir.repair()
            if repaired:
                log(f"warning: {repaired}")
            _measure(run_dir, plan, suite, run_id, max_minutes, resumed=True, log=log, progress=progress)
        return run_dir
    if suite_name is None:
        raise ConfigError("give --suite (or --resume RUN)")
    root = out or RUNS
    if root.exists() and not root.is_dir():
        raise InputError(f"--out {root} is a file, not a folder for runs")
    suite = load_suite(suite_name)
    plan = make_plan(suite, device, twin, runtime, threads, variants)
    run_id = new_run_id(suite.name)
    _check_budget(suite, plan.cells(suite), [], max_minutes, log)  # before any folder is made
    run_dir = RunDir.create(root, run_id)
    with run_dir.lock():
        saved = {
            "run_id": run_id, "suite": plan.suite, "device": plan.device, "twins": list(plan.twins),
            "runtimes": list(plan.runtimes), "threads": plan.threads,
            "variants": [list(v.spec) for v in plan.variants],
            "cells": [c.key for c in plan.cells(suite)],
        }  # fmt: skip
        run_dir.write_json("plan.json", saved)
        _measure(run_dir, plan, suite, run_id, None, resumed=False, log=log, progress=progress)
    return run_dir


def _check_budget(suite: Suite, cells: list[Cell], done: list[str], max_minutes: float | None, log) -> list[Cell]:
    """The cells still to measure; refuses a plan estimated to take longer than --max-minutes."""
    finished = set(done)
    todo = [c for c in cells if c.key not in finished]
    groups = list(dict.fromkeys((c.grid, c.twin) for c in todo))
    eta = estimate_seconds(suite, len(todo), len(groups))
    log(f"{len(cells)} cells ({len(cells) - len(todo)} done, {len(todo)} to measure) in {len(groups)} groups; "
        f"estimated {eta / 60:.1f} min")  # fmt: skip
    if max_minutes is not None and eta > 60 * max_minutes:
        raise Verdict(
            f"the plan needs about {eta / 60:.1f} min, more than --max-minutes {max_minutes:g}; "
            "narrow it with --twin/--runtime or run it in parts with --resume"
        )
    return todo


def _measure(run_dir: RunDir, plan: RunPlan, suite: Suite, run_id: str, max_minutes: float | None, *,
             resumed: bool, log: Callable[[str], None], progress: Callable[[int, int, str], None]) -> None:  # fmt: skip
    """Measure the cells of the plan not yet in the run folder (the caller holds its lock)."""
    from bench.store import history_path, try_append_history
    from models.checkpoint import train_or_load
    from models.grid.cache import load_grid
    from models.registry import get_twin

    cells = plan.cells(suite)
    done = [r.cell_key for r in run_dir.records()] if resumed else []
    todo = _check_budget(suite, cells, done, max_minutes, log) if resumed else list(cells)
    groups = list(dict.fromkeys((c.grid, c.twin) for c in todo))
    torch.set_num_threads(plan.threads)
    sync = torch.cuda.synchronize if plan.device == "cuda" else (lambda: None)
    choice = choose_meter(plan.device, sync=sync)
    env = environment.capture(plan.device, plan.threads, choice.why)
    # A resumed run keeps the environment it started in, and records the one it continued in.
    env_name = "environment.json" if not resumed else f"environment.resumed-{new_run_id(plan.suite)}.json"
    run_dir.write_json(env_name, env)
    log(f"energy meter: {choice.why}")
    workdir = run_dir.path / "artifacts"
    workdir.mkdir(exist_ok=True)
    history = history_path(run_dir.path.parent)
    finished = len(cells) - len(todo)
    for grid_name, twin_name in groups:
        cls = get_twin(twin_name)
        twin_obj = cls(load_grid(grid_name), cls.config_for(suite.model_size))
        model, _, _ = train_or_load(twin_obj, log=log, device=plan.device)
        group = [c for c in todo if (c.grid, c.twin) == (grid_name, twin_name)]

        on_cell = functools.partial(lambda done, what: progress(done, len(cells), what), finished)
        records = measure_group(
            twin_obj, model, group, suite, plan, run_id, workdir, choice.meter, env, on_cell, log=log
        )
        run_dir.append(records)
        try_append_history(records, history, log)
        finished += len(group)
        progress(finished, len(cells), f"done {twin_name}")
    if resumed:  # cells an earlier, crashed attempt wrote to records.jsonl but not to the history
        try_append_history(run_dir.records(), history, log)
    summary.write(run_dir)
    report.write(run_dir)
