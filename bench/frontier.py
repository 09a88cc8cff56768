"""The Pareto frontier: variants no other variant beats on both cost and quality loss.

A point is (variant, runtime) at one batch size on one device. Cost is energy per inference or
latency; quality loss is `quality_loss_pct` (lower is better for both). Points are compared only
within a group that shares the grid, twin, device, batch size and, for energy, the energy source:
a measured joule and an estimated one are different quantities and never share a frontier.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable

from bench.errors import UnknownNameError
from bench.records import Record

OBJECTIVES = {"energy": "energy_j_per_inference", "latency": "latency_ms_p50"}


def cost(record: Record, objective: str) -> float | None:
    if objective not in OBJECTIVES:
        raise UnknownNameError("objective", objective, list(OBJECTIVES))
    return getattr(record, OBJECTIVES[objective])


def qualifies(record: Record, objective: str) -> bool:
    """Only measured, successful cells with a quality figure compete."""
    return record.status == "ok" and record.quality_loss_pct is not None and cost(record, objective) is not None


def dominates(a: Record, b: Record, objective: str) -> bool:
    """a is no worse than b on both axes and strictly better on one (equal points do not dominate)."""
    ca, cb = cost(a, objective), cost(b, objective)
    la, lb = a.quality_loss_pct, b.quality_loss_pct
    return ca <= cb and la <= lb and (ca < cb or la < lb)


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


def pareto(records: list[Record], objective: str = "energy") -> list[Record]:
    """The non-dominated records of one group, cheapest first. Raises if the group mixes what
    must not be compared."""
    candidates = [r for r in records if qualifies(r, objective)]
    if len({group_key(r, objective) for r in candidates}) > 1:
        raise ValueError("pareto() needs records of one comparison group; use groups() first")
    front = [r for r in candidates if not any(dominates(o, r, objective) for o in candidates)]
    return sorted(front, key=lambda r: (cost(r, objective), r.quality_loss_pct))


def frontier_keys(records: Iterable[Record], objective: str = "energy") -> set[str]:
    """cell_key of every record on its group's frontier."""
    return {r.cell_key for group in groups(records, objective).values() for r in pareto(group, objective)}
