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

from bench.suites import DEVICES, MODEL_SIZES
from compress.base import Variant, parse_variant
from models.errors import ConfigError, InputError, UnknownNameError

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
