"""A LoadGen scenario cell's record (issue 26): the variant's session driven by LoadGen
(bench/measure/loadgen.py) after the shard's offline windows, on the same device and meter, with the
shard's idle power for the dynamic share. Quality is the offline cells' (the same session, the
same test split): a scenario record carries none, so it never enters an offline frontier, and
whether the served outputs match the session's own is its `output_checksum_match`."""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

from bench.measure.loadgen import ScenarioRequest, ScenarioResult, ServerConfig, run_scenario
from bench.measure.recording import ShardContext, identity
from bench.plan import Cell, Shard
from bench.records import Record
from models.errors import TwinbenchError, Unsupported

if TYPE_CHECKING:
    from models.registry import Twin


def _log_dir(cell: Cell, ctx: ShardContext):
    """<run>/loadgen/<twin>/<variant id>/<runtime>/<scenario>: LoadGen's logs of the cell."""
    parts = [cell.twin, cell.variant.id, cell.runtime, cell.scenario.label]
    return ctx.workdir.parent.joinpath("loadgen", *(re.sub(r"[^A-Za-z0-9._@-]", "_", p) for p in parts))


def _request(cell: Cell, ctx: ShardContext) -> ScenarioRequest:
    s = cell.scenario
    server = None
    if s.name == "server":
        server = ServerConfig(s.target_qps, s.latency_bound_ms, s.max_batch, s.max_queue_delay_ms)
    return ScenarioRequest(s.name, s.duration_s, _log_dir(cell, ctx), server, seed=ctx.plan.seed)


def scenario_record(cell: Cell, twin: Twin, shard: Shard, ctx: ShardContext, variants, idle_power_w) -> Record:
    """The cell's record: measured, unsupported (LoadGen or the session cannot run here) or error."""
    ident = identity(cell, twin, shard, ctx)
    try:
        opened = variants.session(cell)
        result = run_scenario(opened.session, twin.inputs("test"), _request(cell, ctx), ctx.meter)
        facts = variants.facts(cell)
    except Unsupported as e:
        return Record(**ident, status="unsupported", status_reason=e.reason)
    except (KeyboardInterrupt, TwinbenchError):
        raise
    except Exception as e:  # a cell that crashes is a record, not a lost run
        return Record(**ident, status="error", status_reason=f"{type(e).__name__}: {e}")
    run = ctx.workdir.parent
    ident["scenario_settings"] = {
        **ident["scenario_settings"],
        "at_peak": result.at_peak,
        "mean_batch_served": sum(result.batches) / len(result.batches) if result.batches else None,
        "phase_s": result.phase_s,
        "logs": [str(Path(f).relative_to(run)) for f in result.logs],
    }
    return Record(**ident, **facts, **_measured(result, idle_power_w, ctx))


def _measured(result: ScenarioResult, idle_power_w: float | None, ctx: ShardContext) -> dict:
    per = result.j_per_inference
    dynamic = None
    if per is not None and idle_power_w is not None and result.energy_source != "estimate":
        dynamic = (result.energy_j - idle_power_w * result.window_s) / result.completed
    flags = ([] if result.valid else ["loadgen_invalid"]) + ([] if result.outputs_match else ["checksum_mismatch"])
    return {
        "energy_j_per_inference": per,
        "energy_source": result.energy_source if per is not None else "none",
        "energy_dynamic_j_per_inference": dynamic if dynamic is not None and dynamic > 0 else None,
        "idle_power_w": idle_power_w,
        "avg_power_w": result.energy_j / result.window_s if per is not None else None,
        "latency_ms_p50": result.latency_ms.get("p50"),
        "latency_ms_p90": result.latency_ms.get("p90"),
        "latency_ms_p99": result.latency_ms.get("p99"),
        "throughput_per_s": result.achieved_qps,
        "target_qps": result.target_qps,
        "achieved_qps": result.achieved_qps,
        "loadgen_valid": result.valid,
        "early_stopping_met": result.early_stopping_met,
        "window_s": result.window_s,
        "iterations": result.completed,
        "repetitions": 1,
        "threads": ctx.plan.threads,
        "flags": tuple(flags),
        "output_checksum_match": result.outputs_match,
    }
