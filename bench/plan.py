"""The plan of a run: a frozen, serialisable object holding everything the run needs, and its cut
into shards.

A run is planned once from a suite file and the command line; `plan.json` is the plan's dump, and
`--resume` rebuilds the plan from it alone (never from the suite file, which may have changed).

A shard is the unit of work an executor hands to one device: one twin on one grid, the fp32
reference plus some of that twin's variants, measured together by the protocol (interleaved, with
their own idle windows). Every shard measures its own reference, so ratios to the reference never
cross devices.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch

from bench.runtimes import default_threads, get_runtime, runtime_names
from bench.suites import DEVICES, MODEL_SIZES, Suite
from compress.base import Variant, parse_variant
from models.errors import ConfigError, InputError, UnknownNameError
from models.plugins import Requirements
from models.registry import get_twin

SETUP_S_PER_CELL = 6.0  # accuracy pass, session build, warm-up: a rough figure for the estimate
REFERENCE = Variant()


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
        return get_runtime(self.runtime).target


@dataclass(frozen=True)
class RunPlan:
    suite: str
    device: str
    model_size: str
    grids: tuple[str, ...]
    twins: tuple[str, ...]
    runtimes: tuple[str, ...]
    batch_sizes: tuple[int, ...]
    window_s: float
    repetitions: int
    threads: int
    variants: tuple[Variant, ...] = (REFERENCE,)  # the reference first
    seed: int = 0

    def __post_init__(self) -> None:
        if self.device not in DEVICES:
            raise ConfigError(f"device must be cpu or cuda, got {self.device!r}")
        if self.model_size not in MODEL_SIZES:
            raise ConfigError(f"model_size must be one of {MODEL_SIZES}, got {self.model_size!r}")
        if self.threads < 1:
            raise ConfigError("threads must be >= 1")
        if not (self.window_s > 0 and self.repetitions >= 3 and self.batch_sizes and min(self.batch_sizes) >= 1):
            raise ConfigError(f"invalid measurement settings in plan: window {self.window_s}, "
                              f"repetitions {self.repetitions}, batch sizes {self.batch_sizes}")  # fmt: skip
        if not (self.grids and self.twins and self.runtimes) or self.variants[:1] != (REFERENCE,):
            raise ConfigError("a plan needs grids, twins, runtimes, and the reference as its first variant")

    def cells(self) -> list[Cell]:
        return [
            Cell(grid, twin, variant, runtime, batch, self.device)
            for grid in self.grids
            for twin in self.twins
            for variant in self.variants
            for runtime in self.runtimes
            for batch in self.batch_sizes
        ]

    def to_dict(self) -> dict:
        return {
            "suite": self.suite, "device": self.device, "model_size": self.model_size, "grids": list(self.grids),
            "twins": list(self.twins), "runtimes": list(self.runtimes), "batch_sizes": list(self.batch_sizes),
            "window_s": self.window_s, "repetitions": self.repetitions, "threads": self.threads, "seed": self.seed,
            "variants": [list(v.spec) for v in self.variants],
        }  # fmt: skip

    @classmethod
    def from_dict(cls, data: dict) -> RunPlan:
        """A plan from plan.json; anything malformed is an InputError naming what is wrong."""
        try:
            return cls(
                suite=_typed(data, "suite", str), device=_typed(data, "device", str),
                model_size=_typed(data, "model_size", str), grids=tuple(_typed(data, "grids", list)),
                twins=tuple(_typed(data, "twins", list)), runtimes=tuple(_typed(data, "runtimes", list)),
                batch_sizes=tuple(_typed(data, "batch_sizes", list)), window_s=float(_typed(data, "window_s", float)),
                repetitions=_typed(data, "repetitions", int), threads=_typed(data, "threads", int),
                seed=_typed(data, "seed", int), variants=tuple(parse_variant(c) for c in _typed(data, "variants", list)),
            )  # fmt: skip
        except (ConfigError, UnknownNameError, TypeError, ValueError, AttributeError) as e:
            raise InputError(f"malformed plan.json ({e}); this folder cannot be resumed") from e


def _typed(data: dict, key: str, kind: type):
    if key not in data:
        raise ValueError(f"missing {key!r} (a plan written by an older twinbench, or damaged)")
    value = data[key]
    ok = isinstance(value, int | float) and not isinstance(value, bool) if kind is float else isinstance(value, kind)
    if not ok or (kind is int and isinstance(value, bool)):
        raise ValueError(f"{key!r} must be {kind.__name__}, got {value!r:.60}")
    return value


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
    suite: Suite, device: str | None = None, twin: str | None = None, runtime: str | None = None,
    threads: int | None = None, variants: list[str] | None = None, seed: int = 0, estimate_only: bool = False,
) -> RunPlan:  # fmt: skip
    """The plan of a suite as narrowed by the command line. `estimate_only`: a CUDA plan may be made
    on a machine without CUDA, to be estimated (`run --dry-run`), never run here."""
    device = device or suite.device
    if device == "cuda" and not torch.cuda.is_available() and not estimate_only:
        raise ConfigError("--device cuda asked for, but CUDA is not available here (use --device cpu)")
    if twin is not None:
        get_twin(twin)  # unknown names: a clear error listing the valid ones
        if twin not in suite.twins:
            raise ConfigError(f"twin {twin!r} is not in suite {suite.name} ({', '.join(suite.twins)})")
    runtimes = (runtime,) if runtime else suite.measure.runtimes
    for name in runtimes:
        if name not in runtime_names():
            raise UnknownNameError("runtime", name, runtime_names())
    m = suite.measure
    return RunPlan(
        suite=suite.name, device=device, model_size=suite.model_size, grids=suite.grids,
        twins=(twin,) if twin else suite.twins, runtimes=tuple(runtimes), batch_sizes=m.batch_sizes,
        window_s=m.window_s, repetitions=m.repetitions, threads=threads or default_threads(),
        variants=(REFERENCE, *select_variants(suite.variants, variants)), seed=seed,
    )  # fmt: skip


@dataclass(frozen=True)
class Shard:
    """One twin on one grid: the cells to record, plus the reference cells measured alongside them
    as the shard's own control (recorded only where they are among `cells`)."""

    id: str
    grid: str
    twin: str
    cells: tuple[Cell, ...]
    controls: tuple[Cell, ...] = field(default=())

    @property
    def measured(self) -> tuple[Cell, ...]:
        """Every cell the protocol measures in this shard: the controls, then the cells."""
        return (*self.controls, *self.cells)


def make_shards(plan: RunPlan, todo: list[Cell], shard_size: int | None = None) -> list[Shard]:
    """Cut the cells still to measure into shards of at most `shard_size` variants besides the
    reference (None: one shard per twin and grid), longest first. A shard whose reference cells are
    already recorded (or recorded by another shard) measures them again as its control."""
    if shard_size is not None and shard_size < 1:
        raise ConfigError(f"--shard-size must be >= 1, got {shard_size}")
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
            all_refs = tuple(c for c in plan.cells() if (c.grid, c.twin, c.variant) == (grid, twin, REFERENCE))
            for k, chunk in enumerate(chunks):
                cells = tuple(c for c in mine if c.variant in chunk)
                recorded_here = tuple(refs) if k == 0 else ()  # each reference cell is recorded once
                controls = tuple(c for c in all_refs if c not in recorded_here)
                shards.append(Shard(f"{grid}/{twin}/{k}", grid, twin, (*recorded_here, *cells), controls))
    return sorted(shards, key=lambda s: estimate_shard_seconds(plan, s), reverse=True)


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
    return requires.unmet(cell.device, cell.target)


def estimate_shard_seconds(plan: RunPlan, shard: Shard) -> float:
    """Accuracy pass, warm-up, latency pass and windows of each cell, plus the idle windows. A cell
    known to be unsupported (`unsupported_reason`) is recorded at once: it costs nothing here."""
    per_cell = SETUP_S_PER_CELL + plan.window_s * (2 + plan.repetitions)
    here = runs_here(plan)
    measured = sum(1 for c in shard.measured if unsupported_reason(c, here) is None)
    return measured * per_cell + plan.repetitions * plan.window_s


def estimate_wall_seconds(plan: RunPlan, shards: list[Shard], workers: int) -> float:
    """Makespan of the shards on `workers` devices, longest first onto the least loaded (as the
    executors schedule them)."""
    loads = [0.0] * max(1, workers)
    for shard in shards:  # make_shards sorts them longest first
        i = loads.index(min(loads))
        loads[i] += estimate_shard_seconds(plan, shard)
    return max(loads)
