"""Compare two runs cell by cell: a regression is worse beyond a threshold AND beyond both runs' noise.

Energy and latency carry bootstrap CIs of their medians: a cell regresses only when the new median
is worse than the base by more than `threshold_pct` and the two CIs do not overlap. Quality is
deterministic (fixed seeds and inputs), so its noise is float rounding: a relative change above
`quality_threshold_pct` counts. Cells that stopped being measured are regressions too.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from bench.records import Record
from models.errors import ConfigError, InputError


@dataclass(frozen=True)
class Change:
    cell: str
    metric: str  # energy | latency | quality | status
    base: float | str | None
    new: float | str | None
    change_pct: float | None
    detail: str


@dataclass
class Verdict:
    regressions: list[Change] = field(default_factory=list)
    improvements: list[Change] = field(default_factory=list)
    compared: int = 0
    within_noise: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        return 1 if self.regressions else 0


def _interval(r: Record, metric: str) -> tuple[float, float, float] | None:
    if metric == "energy" and r.energy_j_per_inference is not None:
        return r.energy_j_per_inference, r.energy_ci95_low, r.energy_ci95_high
    if metric == "latency" and r.latency_ms_p50 is not None:
        low, high = r.latency_ms_p50_ci95_low, r.latency_ms_p50_ci95_high
        return (
            r.latency_ms_p50,
            low if low is not None else r.latency_ms_p50,
            high if high is not None else r.latency_ms_p50,
        )
    return None


def compare(
    base: list[Record], new: list[Record], threshold_pct: float = 5.0, quality_threshold_pct: float = 0.5
) -> Verdict:
    for name, value in (("threshold_pct", threshold_pct), ("quality_threshold_pct", quality_threshold_pct)):
        if not (math.isfinite(value) and value >= 0):  # NaN would call every change noise
            raise ConfigError(f"{name} must be a number >= 0, got {value}")
    suites = ({r.suite for r in base}, {r.suite for r in new})
    if suites[0] != suites[1]:
        raise InputError(f"mismatched suites: base ran {sorted(suites[0])}, new ran {sorted(suites[1])}")
    devices = ({r.device for r in base}, {r.device for r in new})
    if devices[0] != devices[1]:
        raise InputError(f"mismatched devices: base on {sorted(devices[0])}, new on {sorted(devices[1])}")
    verdict = Verdict()
    new_by_key = {r.cell_key: r for r in new}
    for b in base:
        n = new_by_key.get(b.cell_key)
        name = f"{b.twin} / {b.variant_name} / {b.runtime} / bs{b.batch_size}"
        if n is None:
            if b.status == "ok":
                verdict.regressions.append(
                    Change(name, "status", "ok", "missing", None, "measured in base, absent in new")
                )
            continue
        if b.status == "ok" and n.status != "ok":
            verdict.regressions.append(Change(name, "status", "ok", n.status, None, n.status_reason[:200]))
            continue
        if b.status != "ok" and n.status == "ok":
            verdict.improvements.append(Change(name, "status", b.status, "ok", None, "now measured"))
            continue
        if b.status != "ok":
            continue
        verdict.compared += 1
        for metric in ("energy", "latency"):
            if metric == "energy" and b.energy_source != n.energy_source:
                verdict.notes.append(
                    f"{name}: energy sources differ ({b.energy_source} vs {n.energy_source}); not compared"
                )
                continue
            bi, ni = _interval(b, metric), _interval(n, metric)
            if bi is None or ni is None:
                continue
            change = 100.0 * (ni[0] - bi[0]) / bi[0]
            detail = f"base {bi[0]:.4g} [{bi[1]:.4g}, {bi[2]:.4g}], new {ni[0]:.4g} [{ni[1]:.4g}, {ni[2]:.4g}]"
            if change > threshold_pct and ni[1] > bi[2]:
                verdict.regressions.append(Change(name, metric, bi[0], ni[0], change, detail))
            elif change < -threshold_pct and ni[2] < bi[1]:
                verdict.improvements.append(Change(name, metric, bi[0], ni[0], change, detail))
            else:
                verdict.within_noise += 1
        if b.quality_value is not None and n.quality_value is not None and b.quality_value != 0:
            change = 100.0 * (n.quality_value - b.quality_value) / abs(b.quality_value)  # lower is better
            detail = f"{b.quality_metric}: base {b.quality_value:.6g}, new {n.quality_value:.6g}"
            if change > quality_threshold_pct:
                verdict.regressions.append(Change(name, "quality", b.quality_value, n.quality_value, change, detail))
            elif change < -quality_threshold_pct:
                verdict.improvements.append(Change(name, "quality", b.quality_value, n.quality_value, change, detail))
    if verdict.compared == 0 and not verdict.regressions:
        raise InputError("the two runs share no measured cell: nothing to compare")
    return verdict


HEADING = "# twinbench compare: "  # how a verdict begins: `compare --out` replaces only such a file


def render(v: Verdict, base_name: str, new_name: str, threshold_pct: float) -> str:
    head = "REGRESSION" if v.regressions else "clean"
    lines = [
        f"{HEADING}{head}",
        "",
        f"base `{base_name}` vs new `{new_name}`: {v.compared} cells compared; a regression is > {threshold_pct:g} % "
        "worse with non-overlapping 95% CIs (energy, latency) or a quality change beyond float noise.",
        "",
    ]
    for title, changes in (("Regressions", v.regressions), ("Improvements", v.improvements)):
        lines += [f"## {title} ({len(changes)})", ""]
        if changes:
            lines += ["| cell | metric | change | detail |", "|---|---|---|---|"]
            lines += [
                f"| {c.cell} | {c.metric} | {'-' if c.change_pct is None else f'{c.change_pct:+.1f} %'} | {c.detail} |"
                for c in changes
            ]
            lines.append("")
    lines.append(f"{v.within_noise} energy/latency comparisons within the noise or the threshold.")
    lines += [f"- {note}" for note in v.notes]
    return "\n".join(lines) + "\n"
