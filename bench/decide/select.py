"""Choose the variant to deploy: the cheapest (energy or latency) cell that meets the user's
constraints, from the Pareto frontier of one comparison group, and why (bench/decide/export.py
writes it out with a model card)."""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import ClassVar

from bench.decide.annual import NotProjectable, Projection, Schedule, measured_near, project, render_table
from bench.decide.frontier import OBJECTIVES, TIE_RULE, cost, dominates, groups, pareto, tie_groups, tied, ties_of
from bench.decide.payback import creation_text, payback
from bench.records import CONTENDED_CORES, Record
from models.errors import ConfigError, InputError, UnknownNameError, Verdict


class Infeasible(Verdict):
    """No measured variant meets the constraints (exit 1: a real answer, not bad input)."""


@dataclass(frozen=True)
class Where:
    """A constraint on any quality metric of the records: `vm_violation_recall>=0.95`."""

    metric: str
    op: str
    value: float

    OPS: ClassVar[dict] = {"<=": operator.le, ">=": operator.ge, "<": operator.lt, ">": operator.gt}

    @classmethod
    def parse(cls, text: str) -> Where:
        m = re.fullmatch(r"\s*([A-Za-z_][\w.]*)\s*(<=|>=|<|>)\s*(\S+)\s*", text)
        if not m:
            raise ConfigError(f"`where` {text!r}: write METRIC<=X, METRIC>=X, METRIC<X or METRIC>X")
        try:
            value = float(m.group(3))
        except ValueError:
            raise ConfigError(f"`where` {text!r}: {m.group(3)!r} is not a number") from None
        if not math.isfinite(value):  # NaN would make every comparison false, or every one pass
            raise ConfigError(f"`where` {text!r}: the bound must be a finite number")
        return cls(m.group(1), m.group(2), value)

    def miss(self, r: Record) -> str | None:
        value = r.quality_metrics.get(self.metric)
        if value is None:
            return f"{self.metric} not measured"
        return None if self.OPS[self.op](value, self.value) else f"{self.metric} {value:.4g} fails {self}"

    def __str__(self) -> str:
        return f"{self.metric}{self.op}{self.value:g}"


@dataclass(frozen=True)
class Constraints:
    max_quality_loss_pct: float
    max_latency_ms_p99: float | None = None
    max_memory_mb: float | None = None
    runtime: str | None = None
    batch_size: int | None = None
    grid: str | None = None
    objective: str = "energy"
    where: tuple[Where, ...] = ()

    def __post_init__(self) -> None:
        if self.objective not in (*OBJECTIVES, "annual"):
            raise UnknownNameError("objective", self.objective, [*OBJECTIVES, "annual"])
        # NaN compares false with everything: unchecked, it would turn a constraint off.
        if not (math.isfinite(self.max_quality_loss_pct) and self.max_quality_loss_pct >= -100):
            raise ConfigError(f"max_quality_loss_pct must be a number >= -100, got {self.max_quality_loss_pct}")
        for name in ("max_latency_ms_p99", "max_memory_mb"):
            value = getattr(self, name)
            if value is not None and not (math.isfinite(value) and value > 0):
                raise ConfigError(f"{name} must be a positive number, got {value}")
        if self.batch_size is not None and self.batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {self.batch_size}")

    def misses(self, r: Record) -> list[str]:
        """How a cell violates each constraint (empty: feasible)."""
        out = []
        if r.quality_loss_pct > self.max_quality_loss_pct:
            out.append(
                f"quality loss {r.quality_loss_pct:+.2f} % exceeds {self.max_quality_loss_pct:g} % "
                f"by {r.quality_loss_pct - self.max_quality_loss_pct:.2f} points"
            )
        if self.max_latency_ms_p99 is not None and (r.latency_ms_p99 or 0) > self.max_latency_ms_p99:
            out.append(
                f"p99 {r.latency_ms_p99:.3g} ms exceeds {self.max_latency_ms_p99:g} ms "
                f"by {r.latency_ms_p99 - self.max_latency_ms_p99:.3g} ms"
            )
        if self.max_memory_mb is not None and (r.peak_memory_mb or 0) > self.max_memory_mb:
            out.append(
                f"memory {r.peak_memory_mb:.0f} MB exceeds {self.max_memory_mb:g} MB "
                f"by {r.peak_memory_mb - self.max_memory_mb:.0f} MB"
            )
        out += [miss for w in self.where if (miss := w.miss(r))]
        return out


@dataclass(frozen=True)
class Selection:
    chosen: Record
    frontier: list[Record]
    feasible: list[Record]
    reasons: list[str]
    constraints: Constraints
    schedule: Schedule | None = None
    projections: dict[str, Projection] = field(default_factory=dict)  # cell key -> annual, frontier and chosen


def _only(values: set, flag: str, what: str, given=None):
    if given is not None:
        if given not in values:
            raise UnknownNameError(what, str(given), sorted(map(str, values)))
        return given
    if len(values) > 1:
        raise ConfigError(
            f"the records hold several {what}s ({', '.join(sorted(map(str, values)))}): pick one with {flag}"
        )
    return next(iter(values))


def select(records: list[Record], twin: str, c: Constraints, schedule: Schedule | None = None) -> Selection:
    """The cheapest feasible cell of a twin; with a schedule, every frontier cell's annual projection
    too (and `objective="annual"` ranks by it)."""
    if c.objective == "annual" and schedule is None:
        raise ConfigError("`objective` annual needs a schedule: `rate` (e.g. 1/min)")
    twins = {r.twin for r in records}
    if twin not in twins:
        raise UnknownNameError("twin in these records", twin, sorted(twins))
    mine = [r for r in records if r.twin == twin and r.scenario == "offline"]  # LoadGen cells: capacity, annual
    grid = _only({r.grid for r in mine}, "`grid`", "grid", c.grid)
    mine = [r for r in mine if r.grid == grid]
    if c.runtime is not None:
        _only({r.runtime for r in mine}, "`runtime`", "runtime", c.runtime)
        mine = [r for r in mine if r.runtime == c.runtime]
    # A deployment serves one batch size; default: the smallest measured (on-line serving).
    batch = c.batch_size if c.batch_size is not None else min(r.batch_size for r in mine)
    _only({r.batch_size for r in mine}, "`batch_size`", "batch size", batch)
    mine = [r for r in mine if r.batch_size == batch]
    known = sorted({name for r in mine for name in r.quality_metrics})
    for w in c.where:
        if w.metric not in known:
            raise UnknownNameError("quality metric", w.metric, known)
    basis = "energy" if c.objective == "annual" else c.objective  # annual energy is a function of the joules
    by_group = groups(mine, basis)
    if not by_group:
        raise Infeasible(f"no measured (status ok) cell of {twin} with a {basis} figure to choose from")
    if len(by_group) > 1:
        sources = sorted({k[-1] for k in by_group})
        raise InputError(f"the records mix energy sources {sources}: measured and estimated joules are not comparable")
    (candidates,) = by_group.values()
    projections = _project_all(candidates, schedule, records) if schedule else {}
    frontier = pareto(candidates, basis)

    def misses(r: Record) -> list[str]:
        refused = projections.get(r.cell_key)
        return c.misses(r) + ([str(refused)] if isinstance(refused, NotProjectable) else [])

    def cost_of(r: Record) -> float:
        return projections[r.cell_key].kwh_per_year if c.objective == "annual" else cost(r, c.objective)

    feasible = [r for r in candidates if not misses(r)]
    if not feasible:
        closest = sorted(candidates, key=lambda r: (len(misses(r)), r.quality_loss_pct, cost(r, basis)))[:3]
        detail = "\n".join(f"  {r.variant_name} on {r.runtime}: {'; '.join(misses(r))}" for r in closest)
        raise Infeasible(f"no variant of {twin} (batch {batch}) meets the constraints; the closest:\n{detail}")
    ranked = sorted(feasible, key=lambda r: (cost_of(r), r.quality_loss_pct, r.size_bytes or 0))
    if c.objective in OBJECTIVES:
        # From the feasible cells' own frontier: a cell with the lowest median that another feasible
        # cell beats beyond the noise (cost within the CIs, quality clearly better) is not the answer,
        # nor is a cell tied with the cheapest that a third one dominates. Among the cheapest frontier
        # cell and its ties, the stated rule picks.
        front = pareto(feasible, basis)
        chosen = ties_of(front[0], front, c.objective)[0]
        ranked = [chosen, *(r for r in ranked if r is not chosen)]
    chosen = ranked[0]
    rate = schedule.rate_per_s * schedule.instances if schedule else None
    ci_of = lambda r: _ci(r, c.objective, projections)  # noqa: E731
    reasons = _reasons(chosen, ranked, candidates, c, batch, cost_of, ci_of, rate) + _capacity(chosen, records, rate)
    shown = {r.cell_key: p for r in (*frontier, chosen) if isinstance(p := projections.get(r.cell_key), Projection)}
    return Selection(chosen, frontier, feasible, reasons, c, schedule, shown)


def _project_all(
    candidates: list[Record], schedule: Schedule, everything: list[Record]
) -> dict[str, Projection | NotProjectable]:
    """Each candidate's annual projection, or why it has none. A schedule no candidate can be
    projected for the same reason (idle power not measured, for a dedicated device) is bad input."""
    out: dict[str, Projection | NotProjectable] = {}
    for r in candidates:
        try:
            out[r.cell_key] = project(r, schedule, measured_near(r, everything, schedule))
        except NotProjectable as e:
            out[r.cell_key] = e
    refused = [e for e in out.values() if isinstance(e, NotProjectable)]
    if len(refused) == len(out) and all(e.no_idle_power for e in refused):
        raise refused[0]  # the schedule asks what these records cannot tell: bad input, not "infeasible"
    return out


def _reasons(
    chosen: Record,
    ranked: list[Record],
    candidates: list[Record],
    c: Constraints,
    batch: int,
    cost_of: Callable[[Record], float],
    ci_of: Callable[[Record], tuple[float, float]],
    rate: float | None = None,  # inferences per second over all instances, for the payback's time
) -> list[str]:
    unit = {"energy": "J/inference", "latency": "ms (p50)", "annual": "kWh/year"}[c.objective]
    low, high = ci_of(chosen)
    noise = " within the noise" if c.objective in OBJECTIVES else ""  # annual ranks by its point value
    out = [
        f"lowest {c.objective}{noise} of the {len(ranked)} cells (of {len(candidates)} measured at batch {batch}) "
        f"that meet the constraints: {cost_of(chosen):.4g} {unit} [95% CI {low:.4g}, {high:.4g}]",
        f"quality: {chosen.quality_metric} {chosen.quality_value:.4g}, loss {chosen.quality_loss_pct:+.2f} % "
        f"(limit {c.max_quality_loss_pct:g} %)" + "".join(f"; {w}" for w in c.where),
    ]
    if len(ranked) > 1:
        runner_up = ranked[1]
        r_low, r_high = ci_of(runner_up)
        within = r_low <= high and low <= r_high
        out.append(
            f"runner-up: {runner_up.variant_name} on {runner_up.runtime} at {cost_of(runner_up):.4g} "
            f"{unit} ({'within' if within else 'beyond'} the noise: CIs {'overlap' if within else 'do not overlap'})"
        )
        if c.objective in OBJECTIVES and tied(chosen, runner_up, c.objective):
            out.append(f"tied with the runner-up ({TIE_RULE}): chosen by the rule")
    if c.objective in OBJECTIVES:  # cells with a lower median than the chosen one: why not them
        for r in ranked[1:]:
            if cost_of(r) < cost_of(chosen) and not tied(chosen, r, c.objective):
                head = f"passed over: {r.variant_name} on {r.runtime} ({cost_of(r):.4g} {unit}, loss {r.quality_loss_pct:+.2f} %)"
                by = next((f for f in ranked if dominates(f, r, c.objective)), None)
                out.append(
                    f"{head}: dominated by {by.variant_name} on {by.runtime} ({cost_of(by):.4g} {unit}, loss "
                    f"{by.quality_loss_pct:+.2f} %), no worse beyond the noise on either axis and better on one"
                    if by
                    else f"{head}: not tied with the chosen cell, which is tied with the cheapest cell of the "
                    "frontier and preferred by the rule"
                )
    ref = next((r for r in ranked if r.variant_id == "reference" and r.runtime == "torch-eager"), None)
    if ref is not None and ref is not chosen:
        out.append(f"{cost_of(chosen) / cost_of(ref):.2f}x the fp32 torch-eager reference's {c.objective}")
    return out + _creation(chosen, candidates, rate) + _warnings(chosen)


def _capacity(chosen: Record, records: list[Record], rate: float | None) -> list[str]:
    """How many devices the fleet's rate needs, from LoadGen's peak for the chosen variant (issue 26)."""
    same = (chosen.twin, chosen.grid, chosen.variant_id, chosen.runtime, chosen.device)
    peaks = [
        r
        for r in records
        if r.scenario == "server@peak"
        and r.status == "ok"
        and r.target_qps
        and (r.twin, r.grid, r.variant_id, r.runtime, r.device) == same
    ]
    if not peaks:
        return []
    peak = peaks[0]
    bound = peak.scenario_settings.get("latency_bound_ms")
    line = (
        f"capacity: {peak.target_qps:.4g} inferences/s per device at p99 <= {bound:g} ms (LoadGen's peak, "
        f"{'valid' if peak.loadgen_valid else 'INVALID: a short run'})"
    )
    if rate:
        line += f"; {rate:.4g}/s over the fleet needs {math.ceil(rate / peak.target_qps)} device(s)"
    return [line]


def _creation(chosen: Record, candidates: list[Record], rate: float | None) -> list[str]:
    """What the chosen cell cost to create, and when that comes back (bench/decide/payback.py)."""
    made = f"creation: {creation_text(chosen)}" + (f" on {chosen.creation_device}" if chosen.creation_device else "")
    back = payback(chosen, candidates, rate)
    return [made + (f"; {back.verdict} against the fp32 reference on {chosen.runtime}" if back else "")]


def _warnings(chosen: Record) -> list[str]:
    """What the chosen cell's flags say about trusting its figures."""
    out = []
    if chosen.flags:
        out.append(f"validity flags on this cell: {', '.join(chosen.flags)}")
    if "contended" in chosen.flags:
        seen = []
        if (chosen.contention_cores or 0.0) > CONTENDED_CORES:
            seen.append(f"other processes used {chosen.contention_cores:.2g} cores of the machine")
        if chosen.gpu_other_processes:
            seen.append(f"{chosen.gpu_other_processes} other process(es) used its GPU")
        out.append(
            f"WARNING: measured while {' and '.join(seen) or 'other processes were busy'}; its figures are "
            "not to be trusted: re-measure on an idle machine"
        )
    if "counter_disagrees" in chosen.flags and chosen.energy_crosscheck_pct is not None:
        out.append(
            f"WARNING: the GPU's polled power integrates to {chosen.energy_crosscheck_pct:+.0f} % of its energy "
            "counter on this cell (a load the power reading samples only part of the time): its energy figures "
            "are in doubt; check them against an external meter"
        )
    return out


def _ci(r: Record, objective: str, projections: dict | None = None) -> tuple[float, float]:
    if objective == "annual":
        p = (projections or {})[r.cell_key]
        return (p.kwh_ci95_low, p.kwh_ci95_high) if p.kwh_ci95_low is not None else (p.kwh_per_year,) * 2
    if objective == "energy":
        return r.energy_ci95_low, r.energy_ci95_high
    low, high = r.latency_ms_p50_ci95_low, r.latency_ms_p50_ci95_high
    return (low, high) if low is not None else (r.latency_ms_p50, r.latency_ms_p50)


def render(sel: Selection) -> str:
    c = sel.constraints
    basis = "energy" if c.objective == "annual" else c.objective
    lines = [f"frontier ({basis} vs quality loss), cheapest first; * meets the constraints:"]
    ties = {
        r.cell_key: f"={n}{'*' if i == 0 else ''}"
        for n, tie in enumerate(tie_groups(sel.frontier, basis), 1)
        for i, r in enumerate(tie)
    }
    for r in sel.frontier:
        mark = "*" if r in sel.feasible else " "
        lines.append(
            f" {mark} {r.variant_name:60.60} {r.runtime:13} loss {r.quality_loss_pct:+7.2f} %  "
            f"{cost(r, basis):.4g} {'J' if basis == 'energy' else 'ms'}  p99 {r.latency_ms_p99:.3g} ms"
            + (f"  tie {ties[r.cell_key]}" if r.cell_key in ties else "")
        )
    if ties:
        lines.append(f"   ties (=N; * the rule's pick): {TIE_RULE}")
    if sel.schedule is not None:
        s = sel.schedule
        shown = {r.cell_key: r for r in (*sel.frontier, sel.chosen) if r.cell_key in sel.projections}
        rows = [(f"{r.variant_name[:48]} on {r.runtime}", sel.projections[k]) for k, r in shown.items()]
        lines += [
            "",
            f"per year at {s.describe()}:",
            render_table(rows),
        ]
    lines += ["", f"chosen: {sel.chosen.variant_name} on {sel.chosen.runtime} (variant {sel.chosen.variant_id})"]
    lines += [f"  - {reason}" for reason in sel.reasons]
    return "\n".join(lines)
