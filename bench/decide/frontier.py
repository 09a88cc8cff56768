"""The Pareto frontier: variants no other variant beats beyond the noise on cost or quality loss.

A point is (variant, runtime) at one batch size on one device. Cost is energy per inference or
latency; quality loss is `quality_loss_pct` (lower is better for both). Points are compared only
within a group that shares the grid, twin, device, batch size and, for energy, the energy source:
a measured joule and an estimated one are different quantities and never share a frontier.

A difference counts only beyond its noise: quality losses within QUALITY_TOL_PCT of each other are
equal, and costs whose 95 % CIs overlap are equal. a *dominates* b when a is better beyond the noise
on one axis and b is better beyond the noise on neither. Two points better on neither axis are *tied*.
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import replace

from bench.records import Record
from models.errors import UnknownNameError

OBJECTIVES = {"energy": "energy_j_per_inference", "latency": "latency_ms_p50"}
CI95 = {
    "energy": ("energy_ci95_low", "energy_ci95_high"),
    "latency": ("latency_ms_p50_ci95_low", "latency_ms_p50_ci95_high"),
}

# Percentage points of quality loss. Quality loss is deterministic (same weights, same test set), so
# its only noise is float rounding between runtimes. In this repo's smoke runs the same variant on
# ONNX Runtime and on torch-eager differed by at most 7e-5 points (fp16 sensor-transformer; fp32
# cells 5e-6 to 5.4e-5), while the smallest real compression effect was fp16 itself at 8.3e-4 points
# (sensor-transformer; bf16 9e-3, dynamic int8 2e-2). 2e-4 sits ~3x above the first and ~4x below the
# second; 1e-3 would have called fp16 "no loss". Revisit when a twin's rounding outgrows it.
QUALITY_TOL_PCT = 2e-4

TIE_RULE = (
    f"quality loss within {QUALITY_TOL_PCT:g} points and overlapping 95 % CIs; "
    "broken by fewer passes, then lower p99, then cheaper median"
)


def cost(record: Record, objective: str) -> float | None:
    if objective not in OBJECTIVES:
        raise UnknownNameError("objective", objective, list(OBJECTIVES))
    return getattr(record, OBJECTIVES[objective])


def cost_ci(record: Record, objective: str) -> tuple[float, float]:
    """The 95 % CI of a qualifying record's cost; the point value where a bound is missing."""
    point = cost(record, objective)
    low, high = (getattr(record, name) for name in CI95[objective])
    if low is None or high is None:
        return point, point
    # Widened to hold its own median: a CI that missed it (rounded figures) could beat its own cell.
    return min(low, point), max(high, point)


def qualifies(record: Record, objective: str) -> bool:
    """Only measured, successful cells with a quality figure compete."""
    return record.status == "ok" and record.quality_loss_pct is not None and cost(record, objective) is not None


# A point as the comparisons see it: (quality loss, CI low, CI high).
_Point = tuple[float, float, float]


def _point(record: Record, objective: str) -> _Point:
    return (record.quality_loss_pct, *cost_ci(record, objective))


def _better(p: _Point, q: _Point) -> bool:
    """p beats q beyond the noise on at least one axis."""
    return p[0] < q[0] - QUALITY_TOL_PCT or p[2] < q[1]


def cheaper(a: Record, b: Record, objective: str) -> bool:
    """a costs less than b beyond the noise: a's whole 95 % CI lies below b's."""
    return cost_ci(a, objective)[1] < cost_ci(b, objective)[0]


def better_quality(a: Record, b: Record) -> bool:
    """a loses less quality than b by more than QUALITY_TOL_PCT."""
    return a.quality_loss_pct < b.quality_loss_pct - QUALITY_TOL_PCT


def dominates(a: Record, b: Record, objective: str) -> bool:
    """a beats b beyond the noise on one axis and b beats a beyond the noise on neither."""
    p, q = _point(a, objective), _point(b, objective)
    return _better(p, q) and not _better(q, p)


def tied(a: Record, b: Record, objective: str) -> bool:
    """Neither beats the other beyond the noise on either axis (symmetric; a record is tied with itself)."""
    p, q = _point(a, objective), _point(b, objective)
    return not _better(p, q) and not _better(q, p)


def tie_break_key(objective: str) -> Callable[[Record], tuple]:
    """The stated rule between tied records, best first: fewer passes in the lineage (less to build,
    ship and trust), then lower p99 latency (the tail the noise-equal medians hide), then the cheaper
    median, then names so that the order never depends on the input's."""

    def key(r: Record) -> tuple:
        p99 = r.latency_ms_p99 if r.latency_ms_p99 is not None else math.inf
        return (len(r.lineage), p99, cost(r, objective), r.variant_name, r.runtime, r.variant_id)

    return key


def group_key(record: Record, objective: str) -> tuple:
    key = (record.grid, record.twin, record.device, record.batch_size)
    return (*key, record.energy_source) if objective == "energy" else key


def groups(records: Iterable[Record], objective: str = "energy") -> dict[tuple, list[Record]]:
    """Qualifying records by comparison group (see module docstring)."""
    out: dict[tuple, list[Record]] = defaultdict(list)
    for r in records:
        if qualifies(r, objective):
            out[group_key(r, objective)].append(r)
    return dict(out)


def _one_group(records: Iterable[Record], objective: str) -> list[Record]:
    candidates = [r for r in records if qualifies(r, objective)]
    if len({group_key(r, objective) for r in candidates}) > 1:
        raise ValueError("pareto() needs records of one comparison group; use groups() first")
    return candidates


def _front(candidates: list[Record], objective: str) -> list[Record]:
    """The frontier by pairwise checks, O(n^2) comparisons and O(n^2) bit operations.

    With tolerances dominance is not transitive and can even cycle: each step of a chain may worsen
    quality by just under the tolerance while beating on cost, until the last link wins back on
    quality. A cycle whose members are beaten only by each other would leave a plain "non-dominated
    set" empty. So a record leaves the frontier when a record beats it that it cannot beat back, directly
    or through a chain. Without cycles (the usual case) this is exactly the non-dominated set; with
    them, a cycle nothing outside beats stays whole; the frontier is never empty.
    """
    points = [_point(r, objective) for r in candidates]
    n = len(points)
    beats, beaten_by = [0] * n, [0] * n  # bit j of beats[i]: i dominates j
    for i, p in enumerate(points):
        for j, q in enumerate(points):
            if _better(p, q) and not _better(q, p):
                beats[i] |= 1 << j
                beaten_by[j] |= 1 << i
    reach = beats[:]  # Warshall's transitive closure, one bitset row per record
    for k in range(n):
        for i in range(n):
            if reach[i] >> k & 1:
                reach[i] |= reach[k]
    return [r for j, r in enumerate(candidates) if not beaten_by[j] & ~reach[j]]


def _cheapest_first(objective: str) -> Callable[[Record], tuple]:
    return lambda r: (cost(r, objective), r.quality_loss_pct, r.variant_name, r.runtime, r.variant_id)


def pareto(records: list[Record], objective: str = "energy") -> list[Record]:
    """The frontier of one group (see `_front`), cheapest median first. Raises if the group mixes
    what must not be compared. Tied points are all on it: ask `tie_groups` which the rule prefers."""
    candidates = _one_group(records, objective)
    return sorted(_front(candidates, objective), key=_cheapest_first(objective))


def tie_groups(records: list[Record], objective: str = "energy") -> list[list[Record]]:
    """The frontier's ties in one group: each list starts with the record the tie-break rule prefers
    (its winner) and holds every frontier record tied with it, in the rule's order; lists of one are
    left out. Groups are listed by their winner's place on the frontier (cheapest first).

    Ties are not transitive (a ~ b ~ c with a and c a real trade-off), so groups are not chains:
    the best-ranked record left takes everything tied with *it*, and so on. Every member is
    therefore within the noise of its winner, and each record is in at most one group.
    """
    front = pareto(records, objective)
    left = sorted(range(len(front)), key=lambda i: tie_break_key(objective)(front[i]))
    out: list[list[int]] = []
    while left:
        winner, *rest = left
        members = [winner] + [i for i in rest if tied(front[winner], front[i], objective)]
        if len(members) > 1:
            out.append(members)
        left = [i for i in rest if i not in members]
    return [[front[i] for i in g] for g in sorted(out, key=lambda g: g[0])]


def ties_of(record: Record, records: Iterable[Record], objective: str = "energy") -> list[Record]:
    """The records of `records` (qualifying, in `record`'s group) tied with `record`, `record`
    included, in the tie-break rule's order: [0] is the one the rule picks among them."""
    if not qualifies(record, objective):
        raise ValueError(f"{record.cell_key} has no {objective} figure or quality to be tied on")
    key = group_key(record, objective)
    mates = [r for r in records if r is not record and qualifies(r, objective) and group_key(r, objective) == key]
    mates = [r for r in mates if tied(record, r, objective)]
    return sorted([record, *mates], key=tie_break_key(objective))


def frontier_keys(records: Iterable[Record], objective: str = "energy") -> set[str]:
    """cell_key of every record on its group's frontier."""
    return {r.cell_key for group in groups(records, objective).values() for r in pareto(group, objective)}


# Metrics where more is better (event detection, interval coverage); every other metric is an error.
HIGHER_IS_BETTER_SUFFIXES = ("_recall", "_precision", "_coverage")


def against_metric(records: list[Record], metric: str) -> list[Record]:
    """The records with quality loss measured on `metric` instead of the primary metric: percent worse
    than the fp32 torch-eager reference of the same grid, twin and batch size (for metrics where more
    is better, a drop counts as a loss). Records without the metric or without a reference to
    compare with are left out; an unknown name is an error listing the metrics the records have."""
    known = sorted({name for r in records for name in r.quality_metrics})
    if metric not in known:
        raise UnknownNameError("quality metric", metric, known)
    refs = {
        (r.grid, r.twin, r.batch_size): r.quality_metrics.get(metric)
        for r in records
        if r.variant_id == "reference" and r.runtime == "torch-eager" and r.status == "ok"
    }
    sign = -1.0 if metric.endswith(HIGHER_IS_BETTER_SUFFIXES) else 1.0
    out = []
    for r in records:
        if r.status != "ok":  # still listed as not measured, with its reason
            out.append(r)
            continue
        value, ref = r.quality_metrics.get(metric), refs.get((r.grid, r.twin, r.batch_size))
        if value is None or ref is None:
            continue
        # a reference of exactly 0 (a recall of 0): the change in points instead of percent
        loss = 0.0 if value == ref else sign * 100.0 * (value - ref) / (abs(ref) or 1.0)
        out.append(replace(r, quality_metric=metric, quality_value=value, quality_ref_value=ref, quality_loss_pct=loss))
    return out


def metric_slug(metric: str) -> str:
    """A metric name as part of a file name (names come from records, which may be hostile)."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", metric)[:80]


def tie_marks(rows: list[Record]) -> dict[str, list[str]]:
    """cell_key -> its ties in one table: "=E1" for a member of energy tie 1, "=E1*" for the member the
    tie-break rule picks; "=L2" the same on the latency frontier. Numbered within the table."""
    marks: dict[str, list[str]] = defaultdict(list)
    for objective in ("energy", "latency"):
        letter, n = objective[0].upper(), 0
        for _, group in sorted(groups(rows, objective).items()):
            for tie in tie_groups(group, objective):
                n += 1
                for i, r in enumerate(tie):
                    marks[r.cell_key].append(f"={letter}{n}{'*' if i == 0 else ''}")
    return marks
