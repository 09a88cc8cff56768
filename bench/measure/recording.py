"""One cell's record, built from its parts: identity, quality, energy, latency and validity, from
what the shard's windows gave (`Windows`) and where the shard was measured (`ShardContext`)."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from bench.measure.cell import Prepared
from bench.measure.meters import Meter
from bench.measure.stats import summarize
from bench.measure.validity import Evidence, compute_precision, energy_floor, validity_flags
from bench.plan import Cell, RunPlan, Shard
from bench.records import Record
from models import creation
from models.creation import Cost

if TYPE_CHECKING:
    from models.registry import Twin


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
    reference_costs: tuple = ()  # what training (or loading) the shard's reference cost (models.creation.Cost)
    on_cell: Callable[[str], None] = field(default=lambda s: None)
    log: Callable[[str], None] = field(default=lambda s: None)


def identity(cell: Cell, twin: Twin, shard: Shard, ctx: ShardContext) -> dict:
    v = cell.variant
    return dict(
        run_id=ctx.run_id,
        suite=ctx.plan.suite,
        twin=twin.name,
        grid=twin.grid.grid,
        grid_data=twin.grid.provenance,
        variant_id=v.id,
        variant_name=v.name,
        lineage=v.lineage,
        runtime=cell.runtime,
        device=cell.device,
        batch_size=cell.batch_size,
        shard_id=shard.id,
        host=ctx.host,
        device_index=ctx.device_index,
        scenario=cell.scenario.label if cell.scenario else "offline",
        scenario_settings=cell.scenario.as_dict() if cell.scenario else {},
    )


@dataclass
class Windows:
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
    def for_cells(cls, keys: list[str]) -> Windows:
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


def build_record(
    p: Prepared, w: Windows, ref_quality: float, twin: Twin, shard: Shard, ctx: ShardContext, extra: dict
) -> Record:
    """One cell's record, built from its parts: identity, quality, energy, latency and validity."""
    energy = _energy(p, w, ctx, extra["flops_per_inference"])
    return Record(
        **identity(p.cell, twin, shard, ctx),
        **extra,
        **_artifact(p, ctx),
        **_quality(p, ref_quality),
        **energy,
        **_latency(p, w, ctx.plan),
        **_validity(p, w, energy, ctx.plan),
    )


def _artifact(p: Prepared, ctx: ShardContext) -> dict:
    path = p.session.artifact_path and os.path.relpath(p.session.artifact_path, ctx.workdir.parent)
    return {"artifact_path": path, "artifact_sha256": p.artifact_sha256, "size_bytes": p.session.size_bytes}


def _quality(p: Prepared, ref_quality: float) -> dict:
    q = p.quality
    return {
        "quality_metric": q.primary,
        "quality_value": q.value,
        "quality_ref_value": ref_quality,
        "quality_loss_pct": 100.0 * (q.value - ref_quality) / ref_quality,
        "quality_metrics": dict(q.metrics),
    }


def _energy(p: Prepared, w: Windows, ctx: ShardContext, flops: float | None) -> dict:
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


def _latency(p: Prepared, w: Windows, plan: RunPlan) -> dict:
    seconds = float(np.median(w.seconds[p.cell.key]))
    return {
        "latency_ms_p50": p.latency["p50"],
        "latency_ms_p50_ci95_low": p.latency["p50_ci95_low"],
        "latency_ms_p50_ci95_high": p.latency["p50_ci95_high"],
        "latency_ms_p90": p.latency["p90"],
        "latency_ms_p99": p.latency["p99"],
        "latency_ms_mean": p.latency["mean"],
        "throughput_per_s": p.iterations * p.cell.batch_size / seconds,
        "peak_memory_mb": p.peak_memory_mb,
        "window_s": seconds,
        "iterations": p.iterations,
        "repetitions": plan.repetitions,
        "threads": p.session.threads,
    }


def _validity(p: Prepared, w: Windows, energy: dict, plan: RunPlan) -> dict:
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
        window_s=plan.window_s,
        cv=energy["energy_cv"],
        source=energy["energy_source"],
        avg_power_w=energy["avg_power_w"],
        idle_power_w=w.idle_power_w,
        power_limit_w=before.get("power_limit_w"),
        throttled=throttled,
        outputs_match=w.outputs_match[key],
        contention_cores=contention,
        crosscheck_pct=energy["energy_crosscheck_pct"],
        gpu_other_processes=neighbours,
        measured_window_s=float(np.median(w.seconds[key])),
    )
    return {
        "flags": validity_flags(evidence),
        "output_checksum_match": w.outputs_match[key],
        "contention_cores": contention,
        "gpu_other_processes": neighbours,
        "throttled": throttled,
        "device_state_before": before,
        "device_state_after": after,
        "load_avg": tuple(os.getloadavg()),
    }


def cell_energy_floor(cell: Cell, flops: float | None, env: dict) -> float | None:
    """The energy floor of a CUDA cell: its FLOPs at the GPU's peak in the precision the variant
    computes in (an int8 variant is bounded by the int8 peak, not the fp32 one)."""
    if cell.device != "cuda":
        return None
    return energy_floor(flops, env, compute_precision(cell.variant.lineage))


def creation_fields(reference: list[Cost], own: list[Cost], is_reference: bool) -> dict:
    """What creating a cell's variant cost (models/creation.py): its own work beyond its parent (the
    reference's own: its training) and the whole lineage from the reference's training on, with
    where each was measured and on which device; every cost listed in `creation`."""
    mine = reference + own if is_reference else own
    own_j, _, _ = creation.total(mine)
    total_j, source, devices = creation.total(reference + own)
    return {
        "creation_energy_j": own_j,
        "creation_energy_total_j": total_j,
        "creation_energy_source": source,
        "creation_device": devices,
        "creation": {  # as JSON holds it (flags a list), so that a record reads back equal to itself
            "own": [_cost_json(c) for c in mine],
            "reference": [] if is_reference else [_cost_json(c) for c in reference],
        },
    }


def _cost_json(cost: Cost) -> dict:
    return {**dataclasses.asdict(cost), "flags": list(cost.flags)}
