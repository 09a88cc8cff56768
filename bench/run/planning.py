"""What to measure: a suite narrowed by the command line into a plan, which of its cells can run
here, and the plan's cut into shards (the types and plan.json live in bench/plan.py).
"""

from __future__ import annotations

from dataclasses import replace

import torch

from bench.measure.runtimes import default_threads, get_runtime, runtime_names, target_of
from bench.plan import REFERENCE, REFERENCE_RUNTIME, Cell, RunPlan, Shard
from bench.suites import SCENARIOS, Scenario, Suite
from compress.base import Variant
from models.errors import ConfigError, UnknownNameError
from models.plugins import Requirements
from models.registry import get_twin


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
    suite: Suite,
    device: str | None = None,
    twin: str | None = None,
    runtime: str | None = None,
    threads: int | None = None,
    variants: list[str] | None = None,
    estimate_only: bool = False,
) -> RunPlan:
    """The plan of a suite as narrowed by the command line. `estimate_only`: a CUDA plan may be made
    on a machine without CUDA, to be estimated (`run --dry-run`), never run here."""
    device = device or suite.device
    if device == "cuda" and not torch.cuda.is_available() and not estimate_only:
        raise ConfigError("`device` cuda asked for, but CUDA is not available here (use `device` cpu)")
    if twin is not None:
        get_twin(twin)  # unknown names: a clear error listing the valid ones
        if twin not in suite.twins:
            raise ConfigError(f"twin {twin!r} is not in suite {suite.name} ({', '.join(suite.twins)})")
    runtimes = (runtime,) if runtime else suite.measure.runtimes
    for name in runtimes:
        if name not in runtime_names():
            raise UnknownNameError("runtime", name, runtime_names())
    m = suite.measure
    # A suite that measures its variants compiled only (the `gpu-first` suite) still measures the
    # reference on torch-eager: every ratio is taken to it. A runtime named on the command line is
    # what the user asked for alone.
    reference_runtimes = () if runtime or REFERENCE_RUNTIME in runtimes else (REFERENCE_RUNTIME,)
    return RunPlan(
        suite=suite.name,
        device=device,
        model_size=suite.model_size,
        grids=suite.grids,
        twins=(twin,) if twin else suite.twins,
        runtimes=tuple(runtimes),
        batch_sizes=m.batch_sizes,
        window_s=m.window_s,
        repetitions=m.repetitions,
        threads=threads or default_threads(),
        variants=(REFERENCE, *select_variants(suite.variants, variants)),
        reference_runtimes=reference_runtimes,
        scenarios=m.scenarios,
    )


DEFAULT_SCENARIO_S = 10.0  # single-stream asked for on the command line of a suite that names none


def choose_scenarios(suite: Suite, names: list[str]) -> tuple[Scenario, ...]:
    """The scenario cells `--scenario` asks for: offline alone (no LoadGen cell), single-stream (the
    suite's settings, or a 10 s run), server (the suite's [measure.server], which it must have)."""
    for name in names:
        if name not in SCENARIOS:
            raise UnknownNameError("scenario", name, list(SCENARIOS))
    mine = suite.measure.scenarios
    out = []
    if "single-stream" in names:
        out += [s for s in mine if s.name == "single-stream"] or [Scenario("single-stream", DEFAULT_SCENARIO_S)]
    if "server" in names:
        servers = [s for s in mine if s.name == "server"]
        if not servers:
            raise ConfigError(
                f"`scenario` server needs the suite's [measure.server] table (target_qps and latency_bound_ms at "
                f"p99), and suite {suite.name} has none"
            )
        out += servers
    return tuple(out)


def make_shards(plan: RunPlan, todo: list[Cell], shard_size: int | None = None) -> list[Shard]:
    """Cut the cells still to measure into shards of at most `shard_size` variants besides the
    reference (None: one shard per twin and grid), longest first. A shard whose reference cells are
    already recorded (or recorded by another shard) measures them again as its control."""
    if shard_size is not None and shard_size < 1:
        raise ConfigError(f"`shard_size` must be >= 1, got {shard_size}")
    shards = []
    for grid in plan.grids:
        for twin in plan.twins:
            mine = [c for c in todo if (c.grid, c.twin) == (grid, twin)]
            if not mine:
                continue
            refs = [c for c in mine if c.variant == REFERENCE]
            variants = list(dict.fromkeys(c.variant for c in mine if c.variant != REFERENCE))
            size = shard_size or max(1, len(variants))
            chunks = [variants[i : i + size] for i in range(0, len(variants), size)] or [[]]
            all_refs = tuple(  # offline reference cells: the controls of every shard (never a LoadGen run)
                c for c in plan.cells() if (c.grid, c.twin, c.variant) == (grid, twin, REFERENCE) and c.scenario is None
            )
            for k, chunk in enumerate(chunks):
                cells = tuple(c for c in mine if c.variant in chunk)
                recorded_here = tuple(refs) if k == 0 else ()  # each reference cell is recorded once
                controls = tuple(c for c in all_refs if c not in recorded_here)
                shards.append(Shard(f"{grid}/{twin}/{k}", grid, twin, (*recorded_here, *cells), controls))
    return sorted(shards, key=lambda s: measured_count(plan, s), reverse=True)  # the longest first


def runs_here(plan: RunPlan) -> bool:
    """Can this machine run the plan (False: a CUDA plan estimated where there is no CUDA)?"""
    return plan.device == "cpu" or torch.cuda.is_available()


def unsupported_reason(cell: Cell, here: bool = True) -> str | None:
    """Why `cell` will be an `unsupported` record, as far as the Requirements of its passes and
    runtime and the passes' own rules (`Pass.unsupported_for`) tell before anything is built; None
    when it may run. `here`: judged on this machine; False: on any machine of the cell's device (a
    CUDA plan estimated without CUDA: the device's own needs, this machine's libraries and compute
    capability are then unknown, and only what fails everywhere counts)."""
    twin = get_twin(cell.twin)
    for p in cell.variant.chain:  # in the order the run meets them: passes, then the runtime
        if reason := _unmet(p.requires, cell, here):
            return f"{p.name} {reason}"
        if reason := p.unsupported_for(twin):
            return reason
    runtime = get_runtime(cell.runtime)
    if reason := _unmet(runtime.requires, cell, here):
        return f"{cell.runtime} {reason}"
    return None


def _unmet(requires: Requirements, cell: Cell, here: bool) -> str | None:
    if not here:
        device = None if requires.device == cell.device else requires.device
        requires = replace(requires, device=device, compute_capability=None, libraries=(), target_libraries=())
    return requires.unmet(cell.device, target_of(cell))


def measured_count(plan: RunPlan, shard: Shard) -> int:
    """The cells of a shard the protocol will measure: those not known to be unsupported (recorded
    at once, at no cost). A shard's measuring time grows with it (bench/run/estimate.py)."""
    here = runs_here(plan)
    return sum(1 for c in shard.measured if unsupported_reason(c, here) is None)
