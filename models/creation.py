"""What creating a model costs: the energy of each training, fine-tune, distillation, calibration and
search, metered in its own window and kept with what it made (a checkpoint's meta, a search's
outcome). A cached artifact keeps the cost it was made at: loading it never re-measures, and an
artifact made on another device says so.

models/ and compress/ never import bench/: whoever runs the work hands in the meter (`metered_by`,
bench/measure/creation.py adapts the run's meters). Without one, a window still times the work and
says its energy is not measured (source "none"), never 0. Weights that were shipped, not made here,
have an unknown cost (source "unknown"): never 0, never guessed.

Every cost made or loaded while a `ledger()` is open is added to it: the protocol opens one per
variant build, so a record can say what its variant cost to create.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import asdict, dataclass, replace
from typing import Protocol

UNMEASURED = "none"  # no meter: energy not measured
UNKNOWN = "unknown"  # made elsewhere by someone else (shipped weights): nothing to measure
BELOW_RESOLUTION = "below_resolution"  # a window too short for its counter to move (bench/measure/creation.py)


class CreationMeter(Protocol):
    device: str  # the device's name (GPU name, CPU model), for "made on another device"

    def start(self) -> object:
        """Open a window; returns its token."""

    def stop(self, token: object) -> tuple[float | None, str, tuple, float | None]:
        """Close it: (joules or None, source, validity flags, the device's idle power in W where it
        was measured, else None)."""


@dataclass(frozen=True)
class Cost:
    """One piece of work that made (part of) a model."""

    what: str  # training, fine-tune, distillation, search, build (calibration, quantization, export)
    energy_j: float | None  # None: not measured (source none) or unknowable (source unknown)
    source: str  # nvml | rapl | estimate | none | unknown
    seconds: float
    device: str  # where it was made
    epochs: int | None = None
    flags: tuple = ()
    idle_power_w: float | None = None  # the device's idle power, where the meter measured it (as `run` does)
    dynamic_energy_j: float | None = None  # energy_j minus idle power x seconds: the work's own share
    cached: bool = False  # loaded with its artifact: measured when it was made, not now
    elsewhere: bool = False  # made on another device than the one loading it

    def as_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if k not in ("cached", "elsewhere")}

    @classmethod
    def from_dict(cls, data) -> Cost | None:
        """A cost as an artifact stored it; None for anything else (an artifact from before costs
        were kept, or a damaged one): its cost is then not known."""
        try:
            energy = data["energy_j"]
            if energy is not None and not (isinstance(energy, int | float) and energy > 0):
                return None
            return cls(
                what=str(data["what"]),
                energy_j=None if energy is None else float(energy),
                source=str(data["source"]),
                seconds=float(data["seconds"]),
                device=str(data["device"]),
                epochs=data.get("epochs") if isinstance(data.get("epochs"), int) else None,
                flags=tuple(str(f) for f in data.get("flags", ())),
                idle_power_w=_positive(data.get("idle_power_w")),
                dynamic_energy_j=_positive(data.get("dynamic_energy_j")),
            )
        except (KeyError, TypeError, ValueError):
            return None


def _positive(value) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) and value > 0 else None


_meter: ContextVar[CreationMeter | None] = ContextVar("creation_meter", default=None)
_ledger: ContextVar[list[Cost] | None] = ContextVar("creation_ledger", default=None)
_inner: ContextVar[list[Cost] | None] = ContextVar("creation_inner", default=None)


@contextmanager
def metered_by(meter: CreationMeter | None) -> Iterator[None]:
    """Meter every creation window opened inside with `meter`."""
    token = _meter.set(meter)
    try:
        yield
    finally:
        _meter.reset(token)


@contextmanager
def ledger() -> Iterator[list[Cost]]:
    """Collect every cost made or loaded inside (the list fills as the work runs)."""
    costs: list[Cost] = []
    token = _ledger.set(costs)
    try:
        yield costs
    finally:
        _ledger.reset(token)


def current_device() -> str:
    meter = _meter.get()
    return meter.device if meter is not None else ""


class Window:
    """A creation window's result, set when the window closes."""

    cost: Cost | None = None


@contextmanager
def window(what: str, own_only: bool = False, keep: bool = True) -> Iterator[Window]:
    """Meter the work inside. With `own_only` (a variant's build), the energy of windows opened
    inside it (a training, a search: counted where they are kept) is taken out, and the rest is
    the build's own cost. With `keep`, the cost is added to the open ledger (else the caller adds
    it, once it knows more, with `record`)."""
    meter, result, inner = _meter.get(), Window(), []
    outer_inner = _inner.get()
    token = _inner.set(inner)
    handle = meter.start() if meter is not None else None  # may first measure idle power: not this window's
    started = time.perf_counter()
    try:
        yield result
    finally:
        _inner.reset(token)
    joules, source, flags, idle_w = meter.stop(handle) if meter is not None else (None, UNMEASURED, (), None)
    seconds = time.perf_counter() - started
    if own_only and joules is not None:
        # Inner windows too short for the counter count as nothing; any other unknown one makes the
        # remainder unknown. A remainder at or below 0 is below what the counter can tell apart.
        inside = [c for c in inner if not (c.energy_j is None and BELOW_RESOLUTION in c.flags)]
        if any(c.energy_j is None for c in inside):
            joules, source = None, UNMEASURED
        else:
            joules -= sum(c.energy_j for c in inside)
            if joules <= 0:
                joules, flags = None, (*flags, BELOW_RESOLUTION)
    dynamic = joules - idle_w * seconds if joules is not None and idle_w is not None else None
    result.cost = Cost(
        what,
        joules,
        source,
        round(seconds, 3),
        current_device(),
        flags=tuple(flags),
        idle_power_w=idle_w,
        dynamic_energy_j=dynamic if dynamic is not None and dynamic > 0 else None,
    )
    if outer_inner is not None:
        outer_inner.append(result.cost)
    if keep:
        record(result.cost)


def with_epochs(cost: Cost, summary: dict) -> Cost:
    epochs = summary.get("epochs") if isinstance(summary, dict) else None
    return replace(cost, epochs=epochs if isinstance(epochs, int) else None)


def record(cost: Cost) -> None:
    """Add a cost to the open ledger, if any."""
    costs = _ledger.get()
    if costs is not None:
        costs.append(cost)


def loaded(stored, what: str) -> Cost:
    """The cost an artifact stored, as loaded now (cached; made elsewhere if its device differs), added
    to the open ledger. An artifact that stored none has a cost that is not known."""
    cost = Cost.from_dict(stored) or Cost(what, None, UNMEASURED, 0.0, "", flags=("cost_not_recorded",))
    here = current_device()
    cost = replace(cost, cached=True, elsewhere=bool(here and cost.device and cost.device != here))
    record(cost)
    return cost


def total(costs: list[Cost]) -> tuple[float | None, str, str]:
    """(joules, sources, devices) of several costs. Unknown (None) if any one is. The sources are
    each one's, joined by '+' (`estimate`, `estimate+nvml`, `nvml+unknown`); the devices likewise."""
    # A window whose counter did not move (a cast, an export over in milliseconds) holds less than
    # the counter's resolution: left out of the sum, and still listed with its flag.
    counted = [c for c in costs if not (c.energy_j is None and BELOW_RESOLUTION in c.flags)]
    if not counted:
        return None, UNMEASURED, ""
    source = "+".join(sorted({c.source for c in counted}))
    devices = ", ".join(sorted({c.device for c in counted if c.device}))
    if any(c.energy_j is None for c in counted):
        return None, source, devices
    return sum(c.energy_j for c in counted), source, devices
