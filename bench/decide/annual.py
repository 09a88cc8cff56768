"""Deployment view: a cell's measured joules become what a deployment pays per year at a schedule.

A `Schedule` says how often each instance of the twin runs (`rate_per_s`, parsed from text such as
"1/min" or "96/day" by `parse_rate`), how many instances run, and whether each instance's device is
`dedicated` to it or `shared` with other work. `project(record, schedule)` gives a `Projection`:

    inferences/year  N = rate_per_s x 31 536 000 s x instances   (a 365-day year; one inference = one
                                                                  sample, as in records)
    shared           E = dynamic J/inference x N                 (the device is on anyway for other
                                                                  work: only the idle-subtracted
                                                                  energy is this twin's)
    dedicated        E = idle_power_w x 31 536 000 s x instances + dynamic J/inference x N
                                                                 (one device per instance, on all
                                                                  year for this twin alone)
    + retraining     E += creation_energy_total_j x (year / retrain_every) x twins
                                                                 (the chosen chain made again each
                                                                  time the twin is retrained, from
                                                                  the reference's training on;
                                                                  twins = instances when personalised,
                                                                  one per instance, else 1 shared)
    kWh/year         = E [J] / 3.6e6 x PUE                       (the facility's share: PUE 1.0 unless
                                                                  given, and stated in every output)
    water L/year     = E [J] / 3.6e6 x WUE                       (only where a WUE is given: none invented)
    CO2e kg/year     = kWh/year x carbon_g_per_kwh / 1000        (given, or CodeCarbon's for --region)
    cost/year        = kWh/year x price_per_kwh                 (in the currency of the price)

The 95 % CI is carried from the record's energy CI, which is a CI of the *total* J/inference: the
dynamic figure is shifted by the same absolute half-widths (energy - ci95_low, ci95_high - energy).
That is an approximation: dynamic = total - idle x window time, so its spread is close to, but not
exactly, the total's; and idle power has no CI in the record, so its uncertainty is not in the CI
at all (for `dedicated`, where idle dominates, the true interval is wider). A lower bound below 0 J
is clipped to 0.

An `estimate` source (CPU time x watts per core) never measured idle power: a sleeping process has
no CPU-time estimate. Its energy_j_per_inference is already the work's own share, so `shared` uses
it as the dynamic figure and the projection stays labelled `estimate`, "an estimate, not a
measurement". `dedicated` needs the idle power and is refused where it was not measured (never
guessed), as is a cell without an energy figure, a cell whose dynamic energy did not rise above idle
noise, and a schedule faster than the cell's measured throughput (the device could not keep up).

The record's energy per inference was measured at its `batch_size`; the projection assumes the
deployment runs full batches of that size, so `basis` says how long one takes to fill at the rate.
"""

from __future__ import annotations

import functools
import math
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from bench.records import Record
from models.errors import ConfigError

if TYPE_CHECKING:
    import pint

SECONDS_PER_YEAR = 365 * 86400  # a 365-day year, here and in parse_rate's "year"
J_PER_KWH = 3.6e6
DEVICE_USES = ("dedicated", "shared")
MAX_PUE = 10.0  # the worst facilities report ~3; beyond 10 is a typo


class NotProjectable(ConfigError):
    """A cell that cannot honestly be projected at this schedule (the message says why).

    `no_idle_power`: the refusal is about what the measurement lacks (idle power), not about this
    cell, so every cell of the same source is refused alike and the schedule itself is the problem."""

    def __init__(self, message: str, no_idle_power: bool = False) -> None:
        super().__init__(message)
        self.no_idle_power = no_idle_power


@functools.cache
def _units() -> pint.UnitRegistry:
    # pint's year is the Julian 365.25 days; a 365-day year keeps "1000/year" at exactly 1000
    # inferences in a projected year (month = year / 12 follows it).
    import pint  # here, not at the top: `run` and `report` must not need it (a GPU box may lack it)

    units = pint.UnitRegistry(on_redefinition="ignore")
    units.define("year = 365 * day = a = yr")
    return units


_NUMBER = r"(\d+(?:\.\d*)?|\.\d+)(?:[eE]([+-]?\d{1,3}))?"
# "N / [M] unit", "N per [M] unit" or "N Hz": a grammar, never an expression for pint to evaluate
# ("10**10**10/s" made pint compute a number with ten billion digits).
_RATE = re.compile(rf"\s*{_NUMBER}\s*(?:(?:/|per\b)\s*(?:{_NUMBER}\s*)?([A-Za-z]+)|([Hh]z))\s*")
MAX_RATE_TEXT = 64  # characters: "2.5 per 15 minutes" is 18


def parse_rate(text: str) -> float:
    """Inferences per second from "N/unit" text: "1/min", "96/day", "10/s", "2.5 / hour", "3/week",
    "1000/year", "1 per minute", "10 Hz", and "1/15min" or "1 / 1.5 h" (one per 15 minutes, per 1.5
    hours). A unit is one of pint's names (s, min, h, hour, day, week, year, ...). Anything else,
    longer than MAX_RATE_TEXT, or a rate that is not finite and > 0, is a ConfigError."""
    if not isinstance(text, str) or not text.strip() or len(text) > MAX_RATE_TEXT:
        raise ConfigError(
            f"rate {str(text)[:MAX_RATE_TEXT]!r}: expected inferences per time, e.g. '1/min', '96/day', '10/s'"
        )
    match = _RATE.fullmatch(text)
    if match is None:
        raise ConfigError(f"rate {text!r} is not inferences per time; write e.g. '1/min', '96/day', '10/s', '10 Hz'")
    count, count_exp, per, per_exp, unit, hertz = match.groups()
    try:
        period_s = 1.0 if hertz else float(_units().Quantity(1, unit).to("s").magnitude)  # one unit name
        per_s = float(f"{count}e{count_exp or 0}") / (float(f"{per or 1}e{per_exp or 0}") * period_s)
    except Exception as e:  # pint: an undefined unit, or one that is not a time
        raise ConfigError(
            f"rate {text!r} is not inferences per time ({type(e).__name__}: {e}); write e.g. '1/min'"
        ) from e
    if not math.isfinite(per_s) or per_s <= 0:
        raise ConfigError(f"rate {text!r} must be a finite number of inferences > 0 per time, got {per_s:g}/s")
    return per_s


_DURATION = re.compile(rf"\s*{_NUMBER}\s*([A-Za-z]+)\s*")
MAX_RETRAIN_S = 100 * SECONDS_PER_YEAR


def parse_duration(text: str, name: str = "retrain_every") -> float:
    """Seconds from "N unit" text ("30 days", "1 week", "720 h", "0.5 year"): a unit is one of pint's
    names of a time. Anything else, or a duration that is not > 0 and at most 100 years, is a
    ConfigError naming `name`."""
    match = _DURATION.fullmatch(text) if isinstance(text, str) and len(text) <= MAX_RATE_TEXT else None
    if match is None:
        raise ConfigError(f"`{name}` {str(text)[:MAX_RATE_TEXT]!r} is not a duration; write e.g. '30 days', '1 week'")
    count, exponent, unit = match.groups()
    try:
        seconds = float(f"{count}e{exponent or 0}") * float(_units().Quantity(1, unit).to("s").magnitude)
    except Exception as e:  # pint: an undefined unit, or one that is not a time
        raise ConfigError(f"`{name}` {text!r} is not a duration ({type(e).__name__}: {e})") from e
    if not math.isfinite(seconds) or not 0 < seconds <= MAX_RETRAIN_S:
        raise ConfigError(f"`{name}` must be more than 0 and at most 100 years, got {text!r}")
    return seconds


def _check_number(name: str, value, *, positive: bool) -> None:
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or (value <= 0 if positive else value < 0):
        raise ConfigError(f"{name} must be a finite number {'> 0' if positive else '>= 0'}, got {value!r}")


@dataclass(frozen=True)
class Schedule:
    """How a twin is deployed: each of `instances` runs `rate_per_s` inferences per second, on a
    device `dedicated` to it or `shared` with other work. Carbon intensity and price are optional."""

    rate_per_s: float  # per instance
    instances: int = 1
    device_use: str = "shared"
    carbon_g_per_kwh: float | None = None
    price_per_kwh: float | None = None  # any currency; cost comes out in the same one
    retrain_every_s: float | None = None  # the twin is made again this often (None: never)
    personalized: bool = False  # each instance its own twin (made and retrained once per instance)
    pue: float = 1.0  # facility energy per IT energy (The Green Grid); 1.0: the devices' own energy
    wue_l_per_kwh: float | None = None  # site water per IT kWh; None: not given, never guessed
    carbon_source: str = ""  # where carbon_g_per_kwh came from

    def __post_init__(self) -> None:
        _check_number("pue", self.pue, positive=True)
        if not 1.0 <= self.pue <= MAX_PUE:
            raise ConfigError(f"pue must be between 1.0 (no overhead) and {MAX_PUE:g}, got {self.pue!r}")
        if self.wue_l_per_kwh is not None:
            _check_number("wue_l_per_kwh", self.wue_l_per_kwh, positive=False)
        if self.retrain_every_s is not None:
            _check_number("retrain_every_s", self.retrain_every_s, positive=True)
        _check_number("rate_per_s", self.rate_per_s, positive=True)
        if not isinstance(self.instances, int) or isinstance(self.instances, bool) or self.instances < 1:
            raise ConfigError(f"instances must be an integer >= 1, got {self.instances!r}")
        if self.device_use not in DEVICE_USES:
            raise ConfigError(f"device_use must be one of {', '.join(DEVICE_USES)}, got {self.device_use!r}")
        if self.carbon_g_per_kwh is not None:
            _check_number("carbon_g_per_kwh", self.carbon_g_per_kwh, positive=False)
        if self.price_per_kwh is not None:
            _check_number("price_per_kwh", self.price_per_kwh, positive=False)

    @property
    def inferences_per_year(self) -> float:
        return self.rate_per_s * SECONDS_PER_YEAR * self.instances

    def describe(self) -> str:
        """The schedule in one line, every assumption in it."""
        extra = "".join(
            [
                f", {self.carbon_g_per_kwh:g} g CO2e/kWh" if self.carbon_g_per_kwh is not None else "",
                f" ({self.carbon_source})" if self.carbon_g_per_kwh is not None and self.carbon_source else "",
                f", PUE {self.pue:g}"
                + (" (default: the devices' own energy, no facility overhead)" if self.pue == 1 else ""),
                f", WUE {self.wue_l_per_kwh:g} L/kWh" if self.wue_l_per_kwh is not None else "",
                f", price {self.price_per_kwh:g}/kWh" if self.price_per_kwh is not None else "",
                f", retrained every {self.retrain_every_s / 86400:.4g} days" if self.retrain_every_s else "",
                f" ({'one personalised twin per instance' if self.personalized else 'one shared twin'})"
                if self.retrain_every_s
                else "",
            ]
        )
        return (
            f"{self.rate_per_s * 60:.4g} inferences/min x {self.instances} instance(s), {self.device_use} device{extra}"
        )

    @property
    def twins(self) -> int:
        """How many twins are made (and retrained): one per instance when personalised, else one."""
        return self.instances if self.personalized else 1


@dataclass(frozen=True)
class Projection:
    """One cell at one schedule, per year. CI bounds are None where the record has no energy CI;
    CO2e and cost are None where the schedule gives no carbon intensity or price."""

    kwh_per_year: float
    kwh_ci95_low: float | None
    kwh_ci95_high: float | None
    inferences_per_year: float
    device_use: str
    energy_source: str  # nvml | rapl | estimate: the record's source, never upgraded
    basis: str  # one line: how it was computed
    co2e_kg_per_year: float | None = None
    co2e_kg_ci95_low: float | None = None
    co2e_kg_ci95_high: float | None = None
    cost_per_year: float | None = None
    cost_ci95_low: float | None = None
    cost_ci95_high: float | None = None
    flags: tuple = ()  # the record's validity flags (high_cv, throttled, ...), carried as they are
    retrain_kwh_per_year: float = 0.0  # making the twin(s) again at the schedule's retraining (included above)
    water_l_per_year: float | None = None  # at the schedule's WUE; None where none was given
    measured_at: str = ""  # the LoadGen server cell used (server@100qps); "": extrapolated from saturation


def _dynamic_j(record: Record) -> float:
    """The J/inference this twin adds on top of the device's idle draw, or a refusal saying why not."""
    if record.energy_source == "estimate":
        return record.energy_j_per_inference  # CPU time x W/core: the work's own share already
    if record.energy_dynamic_j_per_inference is None:
        raise NotProjectable(
            f"{record.cell_key}: idle power was not measured here, so its {record.energy_source} energy "
            f"cannot be split into idle and dynamic; a yearly figure needs that split",
            no_idle_power=True,
        )
    if record.energy_dynamic_j_per_inference <= 0:
        raise NotProjectable(
            f"{record.cell_key}: dynamic energy {record.energy_dynamic_j_per_inference:g} J/inference did not "
            f"rise above the idle power's noise; a yearly figure from it would be noise"
        )
    return record.energy_dynamic_j_per_inference


def _check_projectable(record: Record, schedule: Schedule) -> None:
    if record.status != "ok" or record.energy_j_per_inference is None:
        why = f"status {record.status}: {record.status_reason}" if record.status != "ok" else "no energy figure"
        raise NotProjectable(f"{record.cell_key}: nothing to project ({why})")
    if schedule.device_use == "dedicated" and record.idle_power_w is None:
        raise NotProjectable(
            f"{record.cell_key}: a dedicated device pays its idle power all year, and idle power was not "
            f"measured here ({record.energy_source} source); use --device-use shared to project the "
            f"inferences' own energy",
            no_idle_power=True,
        )
    if record.throughput_per_s is None:
        raise NotProjectable(f"{record.cell_key}: no measured throughput, so no check that the device keeps up")
    if schedule.rate_per_s > record.throughput_per_s:
        raise NotProjectable(
            f"{record.cell_key}: the schedule asks {schedule.rate_per_s:g} inferences/s per instance, but "
            f"this cell served {record.throughput_per_s:g}/s at batch size {record.batch_size}: the device "
            f"could not keep up"
        )


NEAR = 2.0  # a server cell measured within this factor of the schedule's rate is used instead


def measured_near(record: Record, records: list[Record], schedule: Schedule) -> Record | None:
    """The LoadGen server cell of `record`'s variant (same twin, grid, runtime, device) measured at
    the rate nearest the schedule's per-instance rate, within a factor of 2; None if there is none."""
    rate = schedule.rate_per_s
    same = (record.twin, record.grid, record.variant_id, record.runtime, record.device)
    near = [
        x
        for x in records
        if x.scenario.startswith("server")
        and x.status == "ok"
        and x.energy_j_per_inference is not None
        and x.target_qps
        and (x.twin, x.grid, x.variant_id, x.runtime, x.device) == same
        and rate / NEAR <= x.target_qps <= rate * NEAR
    ]
    return min(near, key=lambda x: abs(math.log(x.target_qps / rate))) if near else None


def project(record: Record, schedule: Schedule, measured: Record | None = None) -> Projection:
    """What `record`'s cell costs per year at `schedule` (formulas in the module docstring).
    `measured`: a server cell near the schedule's rate (`measured_near`), whose J/inference at that
    rate is used instead of the saturation figure: idle time between requests is then in the
    measurement (`dedicated`: its total J/inference; `shared`: its dynamic share). Raises
    NotProjectable (a ConfigError) where that cannot be said honestly."""
    _check_projectable(record, schedule)
    if measured is not None:
        return _project_measured(record, schedule, measured)
    dynamic = _dynamic_j(record)
    n = schedule.inferences_per_year
    energy, low, high = record.energy_j_per_inference, record.energy_ci95_low, record.energy_ci95_high
    has_ci = low is not None and high is not None
    retrain_j = _retrain_j(record, schedule)
    base_j = retrain_j
    if schedule.device_use == "dedicated":
        base_j += record.idle_power_w * SECONDS_PER_YEAR * schedule.instances

    def kwh(j_per_inference: float) -> float:  # the facility's: the devices' energy x PUE
        return (base_j + max(j_per_inference, 0.0) * n) / J_PER_KWH * schedule.pue

    kwh_mid = kwh(dynamic)
    kwh_low = kwh(dynamic - (energy - low)) if has_ci else None
    kwh_high = kwh(dynamic + (high - energy)) if has_ci else None

    def scaled(factor: float | None) -> tuple[float | None, float | None, float | None]:
        if factor is None:
            return None, None, None
        return tuple(None if x is None else x * factor for x in (kwh_mid, kwh_low, kwh_high))

    co2e = scaled(None if schedule.carbon_g_per_kwh is None else schedule.carbon_g_per_kwh / 1000)
    cost = scaled(schedule.price_per_kwh)
    return Projection(
        kwh_per_year=kwh_mid,
        kwh_ci95_low=kwh_low,
        kwh_ci95_high=kwh_high,
        inferences_per_year=n,
        device_use=schedule.device_use,
        energy_source=record.energy_source,
        basis=_basis(record, schedule, dynamic),
        co2e_kg_per_year=co2e[0],
        co2e_kg_ci95_low=co2e[1],
        co2e_kg_ci95_high=co2e[2],
        cost_per_year=cost[0],
        cost_ci95_low=cost[1],
        cost_ci95_high=cost[2],
        flags=tuple(record.flags),
        retrain_kwh_per_year=retrain_j / J_PER_KWH * schedule.pue,
        water_l_per_year=None if schedule.wue_l_per_kwh is None else kwh_mid / schedule.pue * schedule.wue_l_per_kwh,
    )


def _project_measured(record: Record, schedule: Schedule, server: Record) -> Projection:
    """The yearly figure from a server cell measured at (near) the schedule's rate: one window, no CI."""
    if schedule.device_use == "dedicated" or server.energy_source == "estimate":
        per = server.energy_j_per_inference  # dedicated: the device's whole draw at that rate, idle included
    elif server.energy_dynamic_j_per_inference is not None:
        per = server.energy_dynamic_j_per_inference
    else:
        raise NotProjectable(f"{server.cell_key}: idle power was not measured, so its dynamic share is unknown")
    retrain_j = _retrain_j(record, schedule)
    kwh = (retrain_j + per * schedule.inferences_per_year) / J_PER_KWH * schedule.pue
    verdict = "valid" if server.loadgen_valid else "INVALID"
    basis = (
        f"{schedule.device_use}: {per:.4g} J/inference measured by LoadGen at {server.target_qps:g} qps "
        f"({server.scenario}, {verdict}), not extrapolated from saturation x {schedule.inferences_per_year:,.0f} "
        f"inferences/yr; {server.energy_source}; x PUE {schedule.pue:g}"
    )
    carbon = None if schedule.carbon_g_per_kwh is None else kwh * schedule.carbon_g_per_kwh / 1000
    return Projection(
        kwh_per_year=kwh,
        kwh_ci95_low=None,
        kwh_ci95_high=None,
        inferences_per_year=schedule.inferences_per_year,
        device_use=schedule.device_use,
        energy_source=server.energy_source,
        basis=basis,
        co2e_kg_per_year=carbon,
        cost_per_year=None if schedule.price_per_kwh is None else kwh * schedule.price_per_kwh,
        flags=tuple(server.flags),
        retrain_kwh_per_year=retrain_j / J_PER_KWH * schedule.pue,
        water_l_per_year=None if schedule.wue_l_per_kwh is None else kwh / schedule.pue * schedule.wue_l_per_kwh,
        measured_at=server.scenario,
    )


def _retrain_j(record: Record, schedule: Schedule) -> float:
    """Joules a year of making the twin(s) again: the chain's whole creation energy, per retrain."""
    if schedule.retrain_every_s is None:
        return 0.0
    if record.creation_energy_total_j is None:
        raise NotProjectable(
            f"{record.cell_key}: retraining needs what making this variant costs, and its creation energy is "
            f"not known ({record.creation_energy_source}); drop `retrain_every` to project the inferences alone"
        )
    return record.creation_energy_total_j * SECONDS_PER_YEAR / schedule.retrain_every_s * schedule.twins


def _basis(record: Record, schedule: Schedule, dynamic: float) -> str:
    plural = "s" if schedule.instances > 1 else ""
    per = "J/inference" if record.energy_source == "estimate" else "J/inference dynamic (idle subtracted)"
    what = (
        f"{dynamic:.4g} {per} x {schedule.inferences_per_year:,.0f} inferences/yr "
        f"({schedule.rate_per_s:.4g}/s x {schedule.instances} instance{plural}, 365-day year)"
    )
    if schedule.device_use == "dedicated":
        idle = f"{record.idle_power_w:.4g} W idle x {SECONDS_PER_YEAR:,} s x {schedule.instances} instance{plural}"
        what = f"{idle} + {what}"
    if record.energy_source == "estimate":
        source = "estimate (CPU time x W per core): an estimate, not a measurement"
    else:
        source = f"{record.energy_source} measurement"
    fill_s = record.batch_size / schedule.rate_per_s
    fill = f" (a batch fills every {fill_s:,.0f} s at this rate)" if record.batch_size > 1 else ""
    basis = f"{schedule.device_use}: {what}; {source}; measured at batch size {record.batch_size}{fill}"
    basis += f"; x PUE {schedule.pue:g}" + (" (default)" if schedule.pue == 1 else "")
    if schedule.retrain_every_s is not None:
        twins = f"{schedule.twins} personalised twins" if schedule.personalized else "1 twin shared by all instances"
        basis += (
            f"; + retraining: {record.creation_energy_total_j / 1000:.4g} kJ ({record.creation_energy_source}) x "
            f"{SECONDS_PER_YEAR / schedule.retrain_every_s:.4g}/yr x {twins}"
        )
    return basis


def _fmt(x: float | None) -> str:
    if x is None:
        return "-"
    return f"{x:,.0f}" if abs(x) >= 1000 else f"{x:#.4g}"  # 4 significant figures, trailing zeros kept


def _with_ci(mid: float | None, low: float | None, high: float | None) -> str:
    if mid is None:
        return "-"
    return _fmt(mid) if low is None or high is None else f"{_fmt(mid)} [{_fmt(low)}, {_fmt(high)}]"


def render_table(rows: list[tuple[str, Projection]]) -> str:
    """A markdown table, one row per (label, projection): kWh, CO2e and cost per year with 95 % CIs."""
    header = ("cell", "use", "kWh/yr [95% CI]", "CO2e kg/yr [95% CI]", "cost/yr [95% CI]", "water L/yr", "source")
    body = [
        (
            label,
            p.device_use,
            _with_ci(p.kwh_per_year, p.kwh_ci95_low, p.kwh_ci95_high),
            _with_ci(p.co2e_kg_per_year, p.co2e_kg_ci95_low, p.co2e_kg_ci95_high),
            _with_ci(p.cost_per_year, p.cost_ci95_low, p.cost_ci95_high),
            _fmt(p.water_l_per_year),
            ("estimate (not measured)" if p.energy_source == "estimate" else p.energy_source)
            + (f", at {p.measured_at} (LoadGen)" if p.measured_at else ""),
        )
        for label, p in rows
    ]
    widths = [max(len(row[i]) for row in (header, *body)) for i in range(len(header))]

    def line(cells) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"

    return "\n".join([line(header), line("-" * w for w in widths), *(line(r) for r in body)])
