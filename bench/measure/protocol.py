"""The measurement protocol: measure the cells of one shard honestly, one record per cell.

For a shard (one twin on one grid: its reference and some variants, on one device):
1. accuracy pass on each cell's own runtime (test split), and the reference output on the fixed
   measurement inputs;
2. warm-up outside any window, iterations calibrated so a window lasts >= window_s;
3. a latency pass of per-iteration synchronised timings (separate from the energy windows);
4. `repetitions` rounds; each round measures idle power over one window, then every cell of the
   shard once, in a shuffled order with small random pauses (interleaved, never back to back);
5. median / bootstrap CI / CV per cell, validity flags, and a check that the outputs produced
   inside the energy windows equal the accuracy pass's outputs on the same inputs;
6. on a GPU, what the meter's watch saw in each window: the polled power integrated against the
   counter (`energy_crosscheck_pct`), other processes on the GPU, throttling during the window.
The shard's reference cells are always measured with it (as controls where another shard records
them), so each record's ratio to the reference is taken on the same device in the same windows.
"""

from __future__ import annotations

import copy
import json
import os
import random
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from bench.measure import environment
from bench.measure.cell import Opened, Prepared, checksum_match, flops_per_inference, open_session, prepare, window
from bench.measure.meters import Meter
from bench.measure.runtimes import target_of
from bench.measure.stats import summarize
from bench.measure.validity import Evidence, compute_precision, energy_floor, others_cpu_seconds, validity_flags
from bench.plan import REFERENCE, Cell, RunPlan, Shard
from bench.records import Record
from compress.base import PassContext
from models.errors import TwinbenchError, Unsupported
from models.export import torch_predict_fn
from models.fingerprint import parameter_count, weights_sha256

if TYPE_CHECKING:
    from models.registry import Twin

REFERENCE_RUNTIME = "torch-eager"  # ratios are to the fp32 reference on torch-eager at the same batch size


@dataclass(frozen=True)
class ShardContext:
    """Where and how a shard is measured: the plan, the run, the device and its meter."""

    plan: RunPlan
    run_id: str
    workdir: Path  # the run folder's artifacts/
    meter: Meter
    env: dict  # the measuring machine's environment (GPU name for the energy floor)
    host: str = ""
    device_index: int | None = None
    on_cell: Callable[[str], None] = field(default=lambda s: None)
    log: Callable[[str], None] = field(default=lambda s: None)


def _error_reason(e: Exception) -> str:
    """An exception as a record's reason: without terminal colours, at most 2000 characters."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", f"{type(e).__name__}: {e}")
    return text[:2000]


def measure_shard(twin: Twin, model: torch.nn.Module, shard: Shard, ctx: ShardContext) -> list[Record]:
    """Measure every cell of a shard; returns one record per cell of `shard.cells` (ok, unsupported
    or error). Its controls are measured alongside and only lend their figures as the reference."""
    plan, workdir, log = ctx.plan, ctx.workdir, ctx.log
    reference = twin.evaluate(torch_predict_fn(copy.deepcopy(model).cpu()), "test")  # fp32 eager reference
    variant_models: dict[tuple[str, str], torch.nn.Module] = {}
    notes: dict[tuple[str, str], list] = {}  # what the passes said, per (variant id, target)

    def variant_model(cell: Cell) -> torch.nn.Module:
        """The variant's model for the cell's target, built once (passes are deterministic)."""
        key = (cell.variant.id, target_of(cell))
        if key not in variant_models:
            pass_ctx = PassContext(
                twin=twin, device=cell.device, workdir=workdir, target=target_of(cell), log=log,
                notes=notes.setdefault(key, []),
            )  # fmt: skip
            variant_models[key] = cell.variant.build(model, pass_ctx)
        return variant_models[key]

    sessions: dict[tuple[str, str], Opened | Exception] = {}  # (variant id, runtime) -> opened, or why not

    def session_of(cell: Cell) -> Opened:
        key = (cell.variant.id, cell.runtime)
        if key not in sessions:
            try:
                built = variant_model(cell)
                sessions[key] = open_session(
                    cell, twin, built, plan, workdir, log, notes.setdefault((cell.variant.id, target_of(cell)), [])
                )
            except (KeyboardInterrupt, TwinbenchError):
                raise
            except Exception as e:  # remembered: the other batch sizes get the same record
                sessions[key] = e
        if isinstance(sessions[key], Exception):
            raise sessions[key]
        return sessions[key]

    prepared: list[Prepared] = []
    records: list[Record] = []
    for cell in shard.measured:
        ctx.on_cell(f"prepare {cell.key}")
        try:
            prepared.append(prepare(cell, twin, session_of(cell), plan))
        except Unsupported as e:
            records.append(Record(**_identity(cell, twin, shard, ctx), status="unsupported", status_reason=e.reason))
        except (KeyboardInterrupt, TwinbenchError):
            raise
        except Exception as e:  # a cell that crashes is a record, not a lost run
            records.append(Record(**_identity(cell, twin, shard, ctx), status="error", status_reason=_error_reason(e)))
    windows = _interleaved_windows(prepared, ctx)
    weights: dict[tuple[str, str], str] = {}  # SHA-256 of each variant's torch weights, hashed once
    flops: dict[tuple[str, int], float | None] = {}
    for p in prepared:
        c, m = p.cell, variant_model(p.cell)
        if (c.variant.id, target_of(c)) not in weights:
            weights[(c.variant.id, target_of(c))] = weights_sha256(m)
        if (c.variant.id, c.batch_size) not in flops:
            # Counted on the variant's torch model (for quantized ONNX: the fp32 graph it came from).
            inputs = twin.example_inputs(c.batch_size, plan.seed)
            flops[(c.variant.id, c.batch_size)] = flops_per_inference(copy.deepcopy(m), inputs)
        extra = dict(weights_sha256=weights[(c.variant.id, target_of(c))], flops_per_inference=flops[(c.variant.id, c.batch_size)],
                     params=parameter_count(m),
                     model_info=model_info(twin, m, notes.get((c.variant.id, target_of(c)), [])))  # fmt: skip
        records.append(_record(p, windows, reference.value, twin, shard, ctx, extra))
    return _against_own_reference(records, shard)


def model_info(twin: Twin, model: torch.nn.Module, notes: list[dict]) -> dict:
    """The twin's facts about a variant's model, and what its passes said (`compression`: what
    stayed fp32, a budget's choice and search trace, a capped training), each said once."""
    said = list({json.dumps(n, sort_keys=True): n for n in notes}.values())
    return {**twin.model_info(model), **({"compression": said} if said else {})}


def _identity(cell: Cell, twin: Twin, shard: Shard, ctx: ShardContext) -> dict:
    v = cell.variant
    return dict(run_id=ctx.run_id, suite=ctx.plan.suite, twin=twin.name, grid=twin.grid.grid, variant_id=v.id,
                variant_name=v.name, lineage=v.lineage, runtime=cell.runtime, device=cell.device,
                batch_size=cell.batch_size, shard_id=shard.id, host=ctx.host, device_index=ctx.device_index)  # fmt: skip


@dataclass
class _Windows:
    """What the energy windows of a shard gave, per cell key."""

    energy: dict[str, list]
    seconds: dict[str, list]
    outputs_match: dict[str, bool]
    state_before: dict[str, dict]
    state_after: dict[str, dict]
    idle_power_w: float | None
    contention: dict[str, list] = field(default_factory=dict)  # cores other processes used, per window
    readings: dict[str, list] = field(default_factory=dict)  # the meter's readings, per window
    idle_readings: list = field(default_factory=list)

    @classmethod
    def for_cells(cls, keys: list[str]) -> _Windows:
        def lists() -> dict[str, list]:
            return {k: [] for k in keys}

        return cls(
            energy=lists(),
            seconds=lists(),
            outputs_match=dict.fromkeys(keys, True),
            state_before={},
            state_after={},
            idle_power_w=None,
            contention=lists(),
            readings=lists(),
        )


# Before an idle window: let the device's power and its counter settle after the last cell (the
# counter steps every ~100 ms, so a window opened at once is credited part of the work before it).
IDLE_SETTLE_S = 0.25


def _interleaved_windows(prepared: list[Prepared], ctx: ShardContext) -> _Windows:
    """`repetitions` rounds of one idle window and then every cell once, in a shuffled order."""
    plan, meter = ctx.plan, ctx.meter
    rng = random.Random(plan.seed)
    keys = [p.cell.key for p in prepared]
    w = _Windows.for_cells(keys)
    idle_w = []
    state_of = _device_state(ctx)
    for rep in range(plan.repetitions):
        ctx.on_cell(f"idle window {rep + 1}/{plan.repetitions}")
        time.sleep(IDLE_SETTLE_S)
        meter.begin("idle")
        time.sleep(plan.window_s)
        idle = meter.end("idle")
        w.idle_readings.append(idle)
        if idle.joules is not None and idle.source != "estimate":  # a sleeping process has no CPU-time estimate
            idle_w.append(idle.joules / idle.seconds)
        for p in rng.sample(prepared, len(prepared)):
            time.sleep(rng.uniform(0.0, 0.05))
            key = p.cell.key
            ctx.on_cell(f"window {rep + 1}/{plan.repetitions} {key}")
            if rep == 0:
                w.state_before[key] = state_of()
            others = others_cpu_seconds()
            reading, out = window(meter, key, p.step, p.iterations)
            w.contention[key].append(max(0.0, others_cpu_seconds() - others) / max(reading.seconds, 1e-9))
            if rep == plan.repetitions - 1:
                w.state_after[key] = state_of()
            w.outputs_match[key] &= checksum_match(p.session.to_numpy(out), p.reference_output)
            w.seconds[key].append(reading.seconds)
            w.energy[key].append(reading.joules)
            w.readings[key].append(reading)
    w.idle_power_w = float(np.median(idle_w)) if idle_w else None
    return w


def _device_state(ctx: ShardContext) -> Callable[[], dict]:
    """Device state (clocks, temperature, power limit, throttling) of the GPU the meter reads; on a
    CUDA run without an energy counter, of the GPU the shard was given; nothing on the CPU."""
    if ctx.meter.device_state() is not None:
        return ctx.meter.device_state
    if ctx.plan.device == "cuda":
        return lambda: environment.gpu_state(ctx.device_index or 0)
    return dict


def dynamic_j_per_inference(joules: list[float], seconds: list[float], idle_power_w: float, n: int) -> float:
    """The median over windows of the energy above idle, per inference: what the work itself cost."""
    return float(np.median([(j - idle_power_w * s) / n for j, s in zip(joules, seconds, strict=True)]))


def crosscheck_pct(readings: list) -> float | None:
    """How far the polled power, integrated over each window, lies from the energy counter: the
    median over windows of (power - counter) / counter in %. None without both figures."""
    pcts = [100.0 * (r.power_joules - r.joules) / r.joules for r in readings if r.power_joules is not None and r.joules]
    return float(np.median(pcts)) if pcts and len(pcts) == len(readings) else None


def _gpu_neighbours(readings: list, idle_readings: list) -> int | None:
    """The most other processes on the GPU in the cell's windows or the idle windows (whose power
    is subtracted from every cell). None where the GPU's process list was not read."""
    seen = [r.gpu_other_processes for r in (*readings, *idle_readings) if r.gpu_other_processes is not None]
    return max(seen) if seen else None


def _record(
    p: Prepared, w: _Windows, ref_quality: float, twin: Twin, shard: Shard, ctx: ShardContext, extra: dict
) -> Record:
    """One cell's record, built from its parts: identity, quality, energy, latency and validity."""
    energy = _energy(p, w, ctx, extra["flops_per_inference"])
    return Record(
        **_identity(p.cell, twin, shard, ctx), **extra, **_artifact(p, ctx), **_quality(p, ref_quality),
        **energy, **_latency(p, w, ctx.plan), **_validity(p, w, energy, ctx.plan),
    )  # fmt: skip


def _artifact(p: Prepared, ctx: ShardContext) -> dict:
    path = p.session.artifact_path and os.path.relpath(p.session.artifact_path, ctx.workdir.parent)
    return {"artifact_path": path, "artifact_sha256": p.artifact_sha256, "size_bytes": p.session.size_bytes}


def _quality(p: Prepared, ref_quality: float) -> dict:
    q = p.quality
    return {
        "quality_metric": q.primary, "quality_value": q.value, "quality_ref_value": ref_quality,
        "quality_loss_pct": 100.0 * (q.value - ref_quality) / ref_quality, "quality_metrics": dict(q.metrics),
    }  # fmt: skip


def _energy(p: Prepared, w: _Windows, ctx: ShardContext, flops: float | None) -> dict:
    """Joules per inference over the windows (median, CI, CV), where they came from, the idle
    power and the dynamic share, the power cross-check and the energy floor."""
    key, n = p.cell.key, p.iterations * p.cell.batch_size
    joules, seconds, readings = w.energy[key], w.seconds[key], w.readings[key]
    measured = all(j is not None for j in joules)
    stats = summarize([j / n for j in joules]) if measured else None
    dynamic = None
    if stats and w.idle_power_w is not None:
        dynamic = dynamic_j_per_inference(joules, seconds, w.idle_power_w, n)
    floor = cell_energy_floor(p.cell, flops, ctx.env)
    return {
        "energy_j_per_inference": stats.median if stats else None,
        "energy_ci95_low": stats.ci95_low if stats else None,
        "energy_ci95_high": stats.ci95_high if stats else None,
        "energy_cv": stats.cv if stats else None,
        "energy_source": ctx.meter.source if measured else "none",
        "energy_dynamic_j_per_inference": dynamic,
        "energy_crosscheck_pct": crosscheck_pct(readings) if measured else None,
        "idle_power_w": w.idle_power_w,
        "avg_power_w": float(np.median([j / s for j, s in zip(joules, seconds, strict=True)])) if measured else None,
        "energy_floor_j": floor,
        "energy_over_floor": (stats.median / floor) if (stats and floor) else None,
    }


def _latency(p: Prepared, w: _Windows, plan: RunPlan) -> dict:
    seconds = float(np.median(w.seconds[p.cell.key]))
    return {
        "latency_ms_p50": p.latency["p50"], "latency_ms_p50_ci95_low": p.latency["p50_ci95_low"],
        "latency_ms_p50_ci95_high": p.latency["p50_ci95_high"], "latency_ms_p90": p.latency["p90"],
        "latency_ms_p99": p.latency["p99"], "latency_ms_mean": p.latency["mean"],
        "throughput_per_s": p.iterations * p.cell.batch_size / seconds, "peak_memory_mb": p.peak_memory_mb,
        "window_s": seconds, "iterations": p.iterations, "repetitions": plan.repetitions, "threads": p.session.threads,
    }  # fmt: skip


def _validity(p: Prepared, w: _Windows, energy: dict, plan: RunPlan) -> dict:
    """The flags and the device state behind them: throttling before, after or during any window,
    the busiest window's neighbours, outputs that differ from the reference's."""
    key = p.cell.key
    before, after, readings = w.state_before[key], w.state_after[key], w.readings[key]
    observations = (before.get("throttled"), after.get("throttled"), *(r.throttled for r in readings))
    seen = [x for x in observations if x is not None]
    throttled = any(seen) if seen else None
    # The busiest of its windows: one window shared with a neighbour is enough to distrust the cell.
    contention = max(w.contention[key]) if w.contention.get(key) else None
    neighbours = _gpu_neighbours(readings, w.idle_readings)
    evidence = Evidence(
        window_s=plan.window_s, cv=energy["energy_cv"], source=energy["energy_source"],
        avg_power_w=energy["avg_power_w"], idle_power_w=w.idle_power_w, power_limit_w=before.get("power_limit_w"),
        throttled=throttled, outputs_match=w.outputs_match[key], contention_cores=contention,
        crosscheck_pct=energy["energy_crosscheck_pct"], gpu_other_processes=neighbours,
        measured_window_s=float(np.median(w.seconds[key])),
    )  # fmt: skip
    return {
        "flags": validity_flags(evidence), "output_checksum_match": w.outputs_match[key],
        "contention_cores": contention, "gpu_other_processes": neighbours, "throttled": throttled,
        "device_state_before": before, "device_state_after": after, "load_avg": tuple(os.getloadavg()),
    }  # fmt: skip


def cell_energy_floor(cell: Cell, flops: float | None, env: dict) -> float | None:
    """The energy floor of a CUDA cell: its FLOPs at the GPU's peak in the precision the variant
    computes in (an int8 variant is bounded by the int8 peak, not the fp32 one)."""
    if cell.device != "cuda":
        return None
    return energy_floor(flops, env, compute_precision(cell.variant.lineage))


def _against_own_reference(records: list[Record], shard: Shard) -> list[Record]:
    """The records of the shard's cells, each with the energy and latency of the reference measured
    in this shard (torch-eager, same batch size); the controls themselves are not returned."""
    refs = {r.batch_size: r for r in records if r.variant_id == REFERENCE.id and r.runtime == REFERENCE_RUNTIME}
    controls = {c.key for c in shard.controls}
    return [
        replace(r, reference_energy_j_per_inference=ref.energy_j_per_inference,
                reference_latency_ms_p50=ref.latency_ms_p50) if (ref := refs.get(r.batch_size)) else r
        for r in records if r.cell_key not in controls
    ]  # fmt: skip
