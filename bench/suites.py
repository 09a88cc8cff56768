"""Suites: TOML files under bench/suites/ naming the grids, twins and measurement settings of a run."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path

from models.errors import ConfigError, UnknownNameError

SUITES_DIR = Path(__file__).resolve().parent / "suites"
DEVICES = ("cpu", "cuda")
MODEL_SIZES = ("smoke", "full")


@dataclass(frozen=True)
class MeasureConfig:
    window_s: float
    repetitions: int
    batch_sizes: tuple[int, ...]
    runtimes: tuple[str, ...]

    def __post_init__(self) -> None:
        if self.window_s <= 0:
            raise ConfigError(f"window_s must be > 0, got {self.window_s}")
        if self.repetitions < 3:
            raise ConfigError(f"repetitions must be >= 3 (the protocol needs a spread), got {self.repetitions}")
        if not self.batch_sizes or any(b < 1 for b in self.batch_sizes):
            raise ConfigError(f"batch_sizes must be positive integers, got {list(self.batch_sizes)}")
        if not self.runtimes:
            raise ConfigError("runtimes must not be empty")


@dataclass(frozen=True)
class Suite:
    name: str
    description: str
    device: str
    model_size: str
    grids: tuple[str, ...]
    twins: tuple[str, ...]
    measure: MeasureConfig
    variants: tuple = ()  # compress.base.Variant chains besides the reference (always measured)

    def __post_init__(self) -> None:
        if self.device not in DEVICES:
            raise ConfigError(f"suite {self.name}: device must be one of {DEVICES}, got {self.device!r}")
        if self.model_size not in MODEL_SIZES:
            raise ConfigError(f"suite {self.name}: model_size must be one of {MODEL_SIZES}, got {self.model_size!r}")
        if not self.grids or not self.twins:
            raise ConfigError(f"suite {self.name}: grids and twins must not be empty")


def suite_names() -> list[str]:
    return sorted(p.stem for p in SUITES_DIR.glob("*.toml"))


def load_suite(name: str) -> Suite:
    """Read and validate bench/suites/<name>.toml. Unknown names list the valid ones."""
    path = SUITES_DIR / f"{name}.toml"
    if name not in suite_names():
        raise UnknownNameError("suite", name, suite_names())
    try:
        raw = tomllib.loads(path.read_text())
        measure = raw.pop("measure")
        variant_specs = raw.pop("variant", [])
        suite = Suite(
            name=name,
            description=raw.pop("description"),
            device=raw.pop("device"),
            model_size=raw.pop("model_size"),
            grids=tuple(raw.pop("grids")),
            twins=tuple(raw.pop("twins")),
            measure=MeasureConfig(
                window_s=float(measure.pop("window_s")),
                repetitions=int(measure.pop("repetitions")),
                batch_sizes=tuple(measure.pop("batch_sizes")),
                runtimes=tuple(measure.pop("runtimes")),
            ),
            variants=tuple(_variant(v, path) for v in variant_specs),
        )
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: invalid TOML: {e}") from e
    except KeyError as e:
        raise ConfigError(f"{path}: missing key {e}") from e
    leftover = sorted(raw) + [f"measure.{k}" for k in measure]
    if leftover:  # a typo in a key must not silently fall back to a default
        raise ConfigError(f"{path}: unknown keys {leftover}")
    from models.registry import twin_names

    for twin in suite.twins:
        if twin not in twin_names():
            raise UnknownNameError("twin", twin, twin_names())
    return suite


def _variant(spec: dict, path: Path):
    from compress.base import parse_variant

    if set(spec) != {"chain"} or not spec["chain"]:
        raise ConfigError(f"{path}: each [[variant]] needs exactly a non-empty `chain`, got {spec}")
    return parse_variant(spec["chain"])


def known_grids() -> list[str]:
    """Every grid some suite uses: the grids twinbench builds data for."""
    return sorted({g for name in suite_names() for g in load_suite(name).grids})
