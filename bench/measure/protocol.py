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

import contextlib
import copy
import json
import random
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import TYPE_CHECKING

import numpy as np
import torch

from bench.measure import environment
from bench.measure.cell import Opened, Prepared, checksum_match, flops_per_inference, open_session, prepare, window
from bench.measure.recording import ShardContext, Windows, build_record, creation_fields, identity
from bench.measure.runtimes import target_of
from bench.measure.scenarios import scenario_record
from bench.measure.validity import others_cpu_seconds
from bench.plan import REFERENCE, REFERENCE_RUNTIME, Cell, Shard
from bench.records import Record
from compress.base import PassContext
from models import creation
from models.creation import Cost
from models.errors import TwinbenchError, Unsupported
from models.export import torch_predict_fn
from models.fingerprint import parameter_count, weights_sha256

if TYPE_CHECKING:
    from models.registry import Twin


def _error_reason(e: Exception) -> str:
    """An exception as a record's reason: without terminal colours, at most 2000 characters."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", f"{type(e).__name__}: {e}")
    return text[:2000]


def measure_shard(twin: Twin, model: torch.nn.Module, shard: Shard, ctx: ShardContext) -> list[Record]:
    """Measure every cell of a shard; returns one record per cell of `shard.cells` (ok, unsupported
    or error). Its controls are measured alongside and only lend their figures as the reference."""
    reference = twin.evaluate(torch_predict_fn(copy.deepcopy(model).cpu()), "test")  # fp32 eager reference
    variants = _Variants(twin, model, ctx)
    prepared: list[Prepared] = []
    records: list[Record] = []
    for cell in (c for c in shard.measured if c.scenario is None):
        ctx.on_cell(f"prepare {cell.key}")
        try:
            prepared.append(prepare(cell, twin, variants.session(cell), ctx.plan))
        except Unsupported as e:
            records.append(Record(**identity(cell, twin, shard, ctx), status="unsupported", status_reason=e.reason))
        except (KeyboardInterrupt, TwinbenchError):
            raise
        except Exception as e:  # a cell that crashes is a record, not a lost run
            records.append(Record(**identity(cell, twin, shard, ctx), status="error", status_reason=_error_reason(e)))
    windows = _interleaved_windows(prepared, ctx)
    for p in prepared:
        records.append(build_record(p, windows, reference.value, twin, shard, ctx, variants.facts(p.cell)))
    for cell in (c for c in shard.measured if c.scenario is not None):  # LoadGen's, after the windows
        ctx.on_cell(f"scenario {cell.key}")
        records.append(scenario_record(cell, twin, shard, ctx, variants, windows.idle_power_w))
    return _against_own_reference(records, shard)


class _Variants:
    """A shard's variants, each built, opened, hashed and counted once: passes are deterministic, and
    a session that failed to open gives every batch size of its (variant, runtime) the same record."""

    def __init__(self, twin: Twin, model: torch.nn.Module, ctx: ShardContext) -> None:
        self.twin, self.reference, self.ctx = twin, model, ctx
        self.models: dict[tuple[str, str], torch.nn.Module] = {}
        self.notes: dict[tuple[str, str], list] = {}  # what the passes said, per (variant id, target)
        self.sessions: dict[tuple[str, str], Opened | Exception] = {}  # (variant id, runtime) -> opened, or why not
        self.weights: dict[tuple[str, str], str] = {}  # SHA-256 of each variant's torch weights
        self.flops: dict[tuple[str, int], float | None] = {}
        # What building each (variant id, target) and opening each (variant id, runtime) cost.
        self.costs: dict[tuple[str, str], list[Cost]] = {}

    def model(self, cell: Cell) -> torch.nn.Module:
        """The variant's model for the cell's target."""
        key = (cell.variant.id, target_of(cell))
        if key not in self.models:
            pass_ctx = PassContext(
                twin=self.twin,
                device=cell.device,
                workdir=self.ctx.workdir,
                target=target_of(cell),
                log=self.ctx.log,
                notes=self.notes.setdefault(key, []),
            )
            with _creation(cell, "build", self.costs.setdefault(key, [])):
                self.models[key] = cell.variant.build(self.reference, pass_ctx)
        return self.models[key]

    def session(self, cell: Cell) -> Opened:
        key = (cell.variant.id, cell.runtime)
        if key not in self.sessions:
            try:
                built, notes = self.model(cell), self.notes.setdefault((cell.variant.id, target_of(cell)), [])
                with _creation(cell, "export", self.costs.setdefault(key, [])):
                    self.sessions[key] = open_session(
                        cell, self.twin, built, self.ctx.plan, self.ctx.workdir, self.ctx.log, notes
                    )
            except (KeyboardInterrupt, TwinbenchError):
                raise
            except Exception as e:  # remembered: the other batch sizes get the same record
                self.sessions[key] = e
        if isinstance(self.sessions[key], Exception):
            raise self.sessions[key]
        return self.sessions[key]

    def facts(self, c: Cell) -> dict:
        """The record's facts about the variant's model: weights hash, FLOPs, params, model_info."""
        m, target = self.model(c), target_of(c)
        if (c.variant.id, target) not in self.weights:
            self.weights[(c.variant.id, target)] = weights_sha256(m)
        if (c.variant.id, c.batch_size) not in self.flops:
            # Counted on the variant's torch model (for quantized ONNX: the fp32 graph it came from).
            inputs = self.twin.example_inputs(c.batch_size, self.ctx.plan.seed)
            self.flops[(c.variant.id, c.batch_size)] = flops_per_inference(copy.deepcopy(m), inputs)
        own = self.costs.get((c.variant.id, target), []) + self.costs.get((c.variant.id, c.runtime), [])
        return dict(
            **creation_fields(list(self.ctx.reference_costs), own, is_reference=not c.variant.lineage),
            weights_sha256=self.weights[(c.variant.id, target)],
            flops_per_inference=self.flops[(c.variant.id, c.batch_size)],
            params=parameter_count(m),
            model_info=model_info(self.twin, m, self.notes.get((c.variant.id, target), [])),
        )


@contextlib.contextmanager
def _creation(cell: Cell, what: str, costs: list[Cost]) -> Iterator[None]:
    """Meter building a variant or opening its session (calibration, quantization, export): its own
    energy beyond the trainings and searches inside, which are kept with their checkpoints and
    search outcomes and loaded from there. Every cost, made now or loaded, goes to `costs`."""
    with creation.ledger() as made:
        if cell.variant.lineage and what == "build":
            with creation.window(what, own_only=True):
                yield
        else:  # the reference's build is a copy of the trained model; an export is metered where it is made
            yield  # (bench/measure/cell.py: open_session), without the quality pass that follows it
    costs.extend(made)


def model_info(twin: Twin, model: torch.nn.Module, notes: list[dict]) -> dict:
    """The twin's facts about a variant's model, and what its passes said (`compression`: what
    stayed fp32, a budget's choice and search trace, a capped training), each said once."""
    said = list({json.dumps(n, sort_keys=True): n for n in notes}.values())
    return {**twin.model_info(model), **({"compression": said} if said else {})}


# Before an idle window: let the device's power and its counter settle after the last cell (the
# counter steps every ~100 ms, so a window opened at once is credited part of the work before it).
IDLE_SETTLE_S = 0.25


def _interleaved_windows(prepared: list[Prepared], ctx: ShardContext) -> Windows:
    """`repetitions` rounds of one idle window and then every cell once, in a shuffled order."""
    plan, meter = ctx.plan, ctx.meter
    rng = random.Random(plan.seed)
    keys = [p.cell.key for p in prepared]
    w = Windows.for_cells(keys)
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


def _against_own_reference(records: list[Record], shard: Shard) -> list[Record]:
    """The records of the shard's cells, each with the energy and latency of the reference measured
    in this shard (torch-eager, same batch size); the controls themselves are not returned."""
    refs = {
        (r.batch_size, r.scenario): r
        for r in records
        if r.variant_id == REFERENCE.id and r.runtime == REFERENCE_RUNTIME
    }
    controls = {c.key for c in shard.controls}
    return [
        replace(
            r, reference_energy_j_per_inference=ref.energy_j_per_inference, reference_latency_ms_p50=ref.latency_ms_p50
        )
        if (ref := refs.get((r.batch_size, r.scenario)))
        else r
        for r in records
        if r.cell_key not in controls
    ]
