"""The plan of a run: a frozen, serialisable object holding everything the run needs, and the shards
it is cut into (bench/run/planning.py makes both).

A run is planned once from a suite file and the command line; `plan.json` is the plan's dump, and
`--resume` rebuilds the plan from it alone (never from the suite file, which may have changed).

A shard is the unit of work an executor hands to one device: one twin on one grid, the fp32
reference plus some of that twin's variants, measured together by the protocol (interleaved, with
their own idle windows). Every shard measures its own reference, so ratios to the reference never
cross devices.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from bench.suites import (
    DEVICES,
    FIELD_RULES,
    MAX_BATCH,
    MAX_BOUND_MS,
    MAX_CHAIN,
    MAX_LIST,
    MAX_REPETITIONS,
    MAX_VARIANTS,
    MAX_WINDOW_S,
    MODEL_SIZES,
    Name,
    Scenario,
    schema_message,
)
from compress.base import Variant, parse_variant
from models.errors import ConfigError, InputError, UnknownNameError

REFERENCE = Variant()
# Every ratio of a run (a record's reference energy and latency, the summary's columns) is taken to
# the fp32 reference on this runtime at the same batch size (bench/measure/protocol.py).
REFERENCE_RUNTIME = "torch-eager"


@dataclass(frozen=True)
class Cell:
    grid: str
    twin: str
    variant: Variant
    runtime: str
    batch_size: int
    device: str
    scenario: Scenario | None = None  # a LoadGen scenario; None: the offline protocol

    @property
    def key(self) -> str:  # the same as Record.cell_key
        key = f"{self.grid}/{self.twin}/{self.variant.id}/{self.runtime}/{self.device}/bs{self.batch_size}"
        return key if self.scenario is None else f"{key}/{self.scenario.label}"


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
    # Runtimes the reference alone is measured on besides `runtimes`: a suite whose variants run on
    # torch-compile only still measures its reference on torch-eager, the runtime ratios are taken to.
    reference_runtimes: tuple[str, ...] = ()
    scenarios: tuple[Scenario, ...] = ()  # LoadGen scenario cells beside the offline ones (bench/suites.py)

    def __post_init__(self) -> None:
        if self.device not in DEVICES:
            raise ConfigError(f"device must be cpu or cuda, got {self.device!r}")
        if self.model_size not in MODEL_SIZES:
            raise ConfigError(f"model_size must be one of {MODEL_SIZES}, got {self.model_size!r}")
        if self.threads < 1:
            raise ConfigError("threads must be >= 1")
        if not (self.window_s > 0 and self.repetitions >= 3 and self.batch_sizes and min(self.batch_sizes) >= 1):
            raise ConfigError(
                f"invalid measurement settings in plan: window {self.window_s}, "
                f"repetitions {self.repetitions}, batch sizes {self.batch_sizes}"
            )
        if not (self.grids and self.twins and self.runtimes) or self.variants[:1] != (REFERENCE,):
            raise ConfigError("a plan needs grids, twins, runtimes, and the reference as its first variant")
        if set(self.reference_runtimes) & set(self.runtimes) or len(set(self.reference_runtimes)) < len(
            self.reference_runtimes
        ):
            raise ConfigError(f"reference_runtimes {list(self.reference_runtimes)} repeat a runtime of the plan")

    def runtimes_of(self, variant: Variant) -> tuple[str, ...]:
        """The runtimes a variant is measured on: the plan's, and for the reference also its own."""
        return (*self.reference_runtimes, *self.runtimes) if variant == REFERENCE else self.runtimes

    def cells(self) -> list[Cell]:
        """Every offline cell, then every scenario cell (batch size: the server's largest batch, 1 for
        single-stream)."""
        offline = [
            Cell(grid, twin, variant, runtime, batch, self.device)
            for grid in self.grids
            for twin in self.twins
            for variant in self.variants
            for runtime in self.runtimes_of(variant)
            for batch in self.batch_sizes
        ]
        return offline + [
            Cell(grid, twin, variant, runtime, scenario.max_batch, self.device, scenario)
            for grid in self.grids
            for twin in self.twins
            for variant in self.variants
            for runtime in self.runtimes
            for scenario in self.scenarios
        ]

    def to_dict(self) -> dict:
        return {
            "suite": self.suite,
            "device": self.device,
            "model_size": self.model_size,
            "grids": list(self.grids),
            "twins": list(self.twins),
            "runtimes": list(self.runtimes),
            "batch_sizes": list(self.batch_sizes),
            "window_s": self.window_s,
            "repetitions": self.repetitions,
            "threads": self.threads,
            "seed": self.seed,
            "variants": [list(v.spec) for v in self.variants],
            # Written only when used: a plan without it reads as it always did.
            **({"reference_runtimes": list(self.reference_runtimes)} if self.reference_runtimes else {}),
            **({"scenarios": [s.as_dict() for s in self.scenarios]} if self.scenarios else {}),
        }

    @classmethod
    def from_dict(cls, data: dict) -> RunPlan:
        """A plan from plan.json, through the same schema as a suite file's values; anything
        malformed is an InputError naming what is wrong."""
        try:
            f = PlanFile.model_validate(data)
            return cls(
                suite=f.suite,
                device=f.device,
                model_size=f.model_size,
                grids=tuple(f.grids),
                twins=tuple(f.twins),
                runtimes=tuple(f.runtimes),
                batch_sizes=tuple(f.batch_sizes),
                window_s=float(f.window_s),
                repetitions=f.repetitions,
                threads=f.threads,
                seed=f.seed,
                variants=tuple(parse_variant(c) for c in f.variants),
                reference_runtimes=tuple(f.reference_runtimes or ()),
                scenarios=tuple(Scenario(**sc.model_dump()) for sc in f.scenarios or ()),
            )
        except ValidationError as e:
            raise InputError(f"malformed plan.json ({_plan_message(e)}); this folder cannot be resumed") from None
        except (ConfigError, UnknownNameError, TypeError, ValueError, AttributeError) as e:
            raise InputError(f"malformed plan.json ({e}); this folder cannot be resumed") from e


MAX_THREADS = 4096  # intra-op threads: more than any machine has cores
# A plan names grids as the cache does (SimBench codes, user grids' `<stem>-<hash>`): never a path,
# which could lead a worker's cache lookup out of the cache folder.
GridName = Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")]


class ScenarioFile(BaseModel):
    """A scenario as plan.json holds it (bench.suites.Scenario's fields, bounded as a suite's)."""

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)
    name: Literal["single-stream", "server"]
    duration_s: Annotated[float, Field(gt=0, le=MAX_WINDOW_S, allow_inf_nan=False)]
    target_qps: Annotated[float, Field(gt=0, le=1e7, allow_inf_nan=False)] | None = None
    latency_bound_ms: Annotated[float, Field(gt=0, le=MAX_BOUND_MS, allow_inf_nan=False)] | None = None
    max_batch: Annotated[int, Field(ge=1, le=MAX_BATCH)] = 1
    max_queue_delay_ms: Annotated[float, Field(ge=0, le=MAX_BOUND_MS, allow_inf_nan=False)] = 0.0


class PlanFile(BaseModel):
    """plan.json as a run writes it: the suite's checked values (the same bounds as a suite file),
    the run's id and its cells (not read back: the cells follow from the plan)."""

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)
    suite: Name
    device: Literal["cpu", "cuda"]
    model_size: Literal["smoke", "full"]
    grids: Annotated[list[GridName], Field(min_length=1, max_length=MAX_LIST)]
    twins: Annotated[list[Name], Field(min_length=1, max_length=MAX_LIST)]
    runtimes: Annotated[list[Name], Field(min_length=1, max_length=MAX_LIST)]
    batch_sizes: Annotated[list[Annotated[int, Field(ge=1, le=MAX_BATCH)]], Field(min_length=1, max_length=MAX_LIST)]
    window_s: Annotated[float, Field(gt=0, le=MAX_WINDOW_S, allow_inf_nan=False)]
    repetitions: Annotated[int, Field(ge=3, le=MAX_REPETITIONS)]
    threads: Annotated[int, Field(ge=1, le=MAX_THREADS)]
    seed: Annotated[int, Field(ge=0, lt=2**32)]  # numpy's seeds are 32-bit
    variants: Annotated[
        list[Annotated[list[dict[str, Any]], Field(max_length=MAX_CHAIN)]],
        Field(min_length=1, max_length=MAX_VARIANTS + 1),
    ]  # the reference (an empty chain) first
    reference_runtimes: Annotated[list[Name], Field(max_length=MAX_LIST)] | None = None
    scenarios: Annotated[list[ScenarioFile], Field(max_length=MAX_LIST)] | None = None
    run_id: Name | None = None
    cells: list[str] | None = None


# A plan's measurement fields sit at its top level, a suite's under [measure]: the same rules.
PLAN_RULES = {
    **FIELD_RULES,
    **{k.removeprefix("measure."): v for k, v in FIELD_RULES.items() if k.startswith("measure.")},
}


def _plan_message(e: ValidationError) -> str:
    missing = [str(err["loc"][0]) for err in e.errors() if err["type"] == "missing"]
    if missing:
        return f"missing {missing[0]!r}: a plan written by an older twinbench, or damaged"
    return schema_message(e, PLAN_RULES)


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
