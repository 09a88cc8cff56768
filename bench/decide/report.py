"""report.html: a run as one self-contained page (plotly's JavaScript embedded, works offline).

Per twin and batch size: quality loss vs joules per inference (log axis), the Pareto frontier as a
line, estimated energy drawn as open markers (measured: filled) and never on a measured frontier;
hover shows variant, lineage, CI and flags. For twins that sample in steps, quality against sampling steps. A
sortable table of every cell, the validity flags, what was not measured and why, the environment.

Records and environment.json come from files people share (baselines, runs from other machines), so
every string in them is hostile: the page is a Jinja2 template that escapes every value it is given,
and record text bound for plotly, which renders its own small HTML (<b>, <a href>), is escaped too.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import replace
from pathlib import Path
from typing import NamedTuple

from jinja2 import Environment, StrictUndefined
from markupsafe import Markup

from bench.decide import lifecycle
from bench.decide.annual import NotProjectable, Schedule, measured_near, project
from bench.decide.frontier import TIE_RULE, against_metric, frontier_keys, groups, metric_slug, pareto, tie_marks
from bench.decide.payback import Payback, creation_text, payback
from bench.decide.plots import lifecycle_bars, qps_curve, scatter, steps_curve
from bench.records import Record, compression_summary, describe_flags, grid_data, is_capped
from bench.store import write_output

# Errors thrown by any script land in #js-errors: a page that renders no chart says why.
ERROR_TRAP = """<script>window.addEventListener('error', function (e) {
  document.getElementById('js-errors').textContent += (e.message || 'error') + '\\n'; });</script>"""

SORT_SCRIPT = """<script>
document.querySelectorAll('table.sortable th').forEach(function (th, col) {
  th.addEventListener('click', function () {
    var body = th.closest('table').tBodies[0], rows = Array.from(body.rows);
    var asc = th.dataset.asc !== '1'; th.dataset.asc = asc ? '1' : '0';
    rows.sort(function (a, b) {
      var x = a.cells[col].dataset.v || a.cells[col].textContent, y = b.cells[col].dataset.v || b.cells[col].textContent;
      var nx = parseFloat(x), ny = parseFloat(y);
      var c = (!isNaN(nx) && !isNaN(ny)) ? nx - ny : x.localeCompare(y);
      return asc ? c : -c; });
    rows.forEach(function (r) { body.appendChild(r); }); }); });
</script>"""

STYLE = """<style>
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; }
table { border-collapse: collapse; font-size: 0.85em; margin: 1em 0; }
th, td { border: 1px solid #ccc; padding: 3px 6px; text-align: left; }
th { background: #f0f0f0; cursor: pointer; }
.chart { width: 900px; height: 480px; }
.note { color: #555; max-width: 60em; }
</style>"""

# Every {{ value }} is escaped (autoescape). The only trusted markup is what render() wraps in
# Markup: the constants above and plotly's chart divs.
PAGE = """<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>{{ title }}</title>{{ style }}{{ error_trap }}</head><body>
<pre id="js-errors" style="color:#b00"></pre>
<h1>{{ title }}</h1>
<p class="note">{{ n_cells }} cells, {{ n_measured }} measured. Energy meter: {{ meter }}. Quality loss is \
relative to the fp32 torch-eager reference of this run (positive = worse). Filled markers: measured energy \
(nvml/rapl); open markers: estimated; the two never share a frontier. Error bars: bootstrap 95% CI.</p>
{% for chart in charts %}{{ chart }}
{% endfor -%}
<h2>Every cell</h2><p class="note">Click a column to sort; hover a variant for its lineage.</p>
<table class="sortable" id="cells"><thead><tr>{% for h in head %}<th>{{ h }}</th>{% endfor %}</tr></thead><tbody>
{% for row in rows %}<tr>{% for c in row -%}
<td{% if c.v is not none %} data-v="{{ c.v }}"{% endif %}{% if c.title %} title="{{ c.title }}"{% endif %}>{{ c.text }}</td>
{%- endfor %}</tr>
{% endfor %}</tbody></table>
{% if tie_rule %}<p class="note">=E1 / =L1: tied within the noise on the energy / latency frontier ({{ tie_rule }}); * marks the rule's pick.</p>{% endif %}
{% if schedule %}<h2>Per year at {{ schedule }}</h2><p class="note">Each twin's energy frontier projected to a year of \
deployment (see README, "Results that decide"); an estimate source stays an estimate.</p>
{% for heading, rows in annual %}<h3>{{ heading }}</h3><table><tr><th>variant</th><th>runtime</th><th>kWh/yr [95% CI]</th>\
<th>CO2e kg/yr [95% CI]</th><th>cost/yr [95% CI]</th><th>water L/yr</th><th>source</th></tr>
{% for row in rows %}<tr>{% for c in row %}<td>{{ c }}</td>{% endfor %}</tr>{% endfor %}</table>{% endfor %}{% endif %}
{% if life %}<h2>Life cycle: the first year in kg CO2e</h2><p class="note">Create (the first making of the \
variant's whole lineage), retrain (the makings after it in the year), operate (its inferences) and embodied (its share \
of the device's manufacture, BoaviztAPI) per energy-frontier variant, charted above; payback against the fp32 reference \
on the same runtime.</p>
{% for heading, rows in life %}<h3>{{ heading }}</h3><table><tr>{% for h in payback_head %}<th>{{ h }}</th>{% endfor %}</tr>
{% for row in rows %}<tr>{% for c in row %}<td>{{ c }}</td>{% endfor %}</tr>{% endfor %}</table>{% endfor %}{% endif %}
<h2>Validity flags</h2><ul>{% for flag, n in flags %}<li>{{ flag }}: {{ n }} cells</li>{% endfor %}</ul>
<h2>Not measured</h2><ul>{% for r, reason in not_measured %}
<li>{{ r.twin }} / {{ r.variant_name }} / {{ r.runtime }} / batch {{ r.batch_size }}: {{ r.status }} — {{ reason }}</li>
{%- endfor %}</ul>
<h2>Environment</h2><table>{% for k, v in env %}<tr><td>{{ k }}</td><td>{{ v }}</td></tr>{% endfor %}</table>
{{ sort_script }}
</body></html>
"""
_PAGE = Environment(autoescape=True, undefined=StrictUndefined).from_string(PAGE)


class Cell(NamedTuple):
    text: str
    v: object = None  # data-v: what the sort compares ("" for a number that is missing)
    title: str | None = None


def _cell(value, fmt: str = ".3g") -> Cell:
    return Cell("-", "") if value is None else Cell(format(value, fmt), value)


HEAD = [
    "twin",
    "batch",
    "variant",
    "chosen",
    "runtime",
    "scenario",
    "status",
    "frontier",
    "quality",
    "loss %",
    "J/inference",
    "CI low",
    "CI high",
    "cv",
    "source",
    "p50 ms",
    "p99 ms",
    "MB",
    "params",
    "size KB",
    "creation kJ",
    "payback (inferences)",
    "flags",
]


def _payback_cell(back: Payback | None) -> Cell:
    if back is None:
        return Cell("-", "")
    if back.inferences is None:
        return Cell("never" if back.verdict.startswith("never") else "?", "", title=back.verdict)
    return Cell(format(back.inferences, ".3g"), back.inferences, title=back.verdict)


def _row(r: Record, on_front: set[str], ties: dict[str, list[str]], back: Payback | None = None) -> list[Cell]:
    return [
        Cell(r.twin),
        _cell(r.batch_size, "d"),
        Cell(r.variant_name + (" [capped]" if is_capped(r) else ""), title=json.dumps(r.lineage)),
        Cell(compression_summary(r), title=json.dumps(r.model_info.get("compression", []))),
        Cell(r.runtime),
        Cell(
            r.scenario,
            title=""
            if r.scenario == "offline"
            else json.dumps({**r.scenario_settings, "loadgen_valid": r.loadgen_valid}),
        ),
        Cell(r.status, title=r.status_reason),
        Cell(" ".join(["★" if r.cell_key in on_front else "", *ties.get(r.cell_key, [])]).strip()),
        _cell(r.quality_value, ".4g"),
        _cell(r.quality_loss_pct, "+.2f"),
        _cell(r.energy_j_per_inference),
        _cell(r.energy_ci95_low),
        _cell(r.energy_ci95_high),
        _cell(r.energy_cv, ".1%"),
        Cell(r.energy_source),
        _cell(r.latency_ms_p50),
        _cell(r.latency_ms_p99),
        _cell(r.peak_memory_mb, ".0f"),
        _cell(r.params, ","),
        _cell(r.size_bytes and r.size_bytes / 1024, ".0f"),
        Cell(
            "-" if r.creation_energy_total_j is None else format(r.creation_energy_total_j / 1000, ".3g"),
            r.creation_energy_total_j or "",
            title=creation_text(r) + (f" on {r.creation_device}" if r.creation_device else ""),
        ),
        _payback_cell(back),
        Cell(describe_flags(r)),
    ]


def _annual(records: list[Record], schedule: Schedule) -> list[tuple[str, list[list[str]]]]:
    """Per twin, grid and batch size: the energy frontier's cells with their yearly projection (or
    why they have none)."""

    def ci(value, low, high, fmt=".4g") -> str:
        if value is None:
            return "-"
        return format(value, fmt) + (f" [{format(low, fmt)}, {format(high, fmt)}]" if low is not None else "")

    # With retraining and several instances, both ways of deploying side by side: one shared twin,
    # or one personalised twin per instance (each made and retrained): the cost of personalisation.
    both = schedule.retrain_every_s is not None and schedule.instances > 1
    ways = [replace(schedule, personalized=False), replace(schedule, personalized=True)] if both else [schedule]
    out = []
    for (grid, twin, _, batch, source), members in sorted(groups(records, "energy").items()):
        rows = []
        for r, way in ((r, way) for r in pareto(members, "energy") for way in ways):
            name = r.variant_name + ((" (personalised)" if way.personalized else " (shared)") if both else "")
            try:
                p = project(r, way, measured_near(r, records, way))
            except NotProjectable as e:
                rows.append([name, r.runtime, f"not projected: {e}", "-", "-", "-", source])
                continue
            rows.append(
                [
                    name,
                    r.runtime,
                    ci(p.kwh_per_year, p.kwh_ci95_low, p.kwh_ci95_high),
                    ci(p.co2e_kg_per_year, p.co2e_kg_ci95_low, p.co2e_kg_ci95_high),
                    ci(p.cost_per_year, p.cost_ci95_low, p.cost_ci95_high),
                    ci(p.water_l_per_year, None, None),
                    p.energy_source + (f", measured at {p.measured_at} by LoadGen" if p.measured_at else ""),
                ]
            )
        out.append((f"{twin} on {grid}, batch {batch} ({source})", rows))
    return out


PAYBACK_HEAD = [
    "variant",
    "runtime",
    "create",
    "retrain",
    "operate",
    "embodied",
    "extra creation kJ",
    "saves J/inference",
    "payback",
    "not known",
]


def _life_cycle(records: list[Record], env: dict, schedule: Schedule) -> list[tuple]:
    """Per comparison group: (stacked kg CO2e chart, heading, payback rows) of its energy frontier."""
    out = []
    for (grid, twin, device, batch, source), members in sorted(groups(records, "energy").items()):
        device_carbon = lifecycle.hardware(env, device)
        bars, rows = [], []
        for r in pareto(members, "energy"):
            try:
                year = lifecycle.life_year(r, schedule, device_carbon, measured_near(r, records, schedule))
            except NotProjectable:
                continue  # the annual table says why
            bars.append((f"{r.variant_name[:40]} ({r.runtime})", year.parts))
            back = payback(r, records, schedule.rate_per_s * schedule.instances)
            kg = ["-" if v is None else f"{v:.3g}" for v in year.parts.values()]
            extra = "-" if back is None or back.extra_creation_j is None else f"{back.extra_creation_j / 1000:.3g}"
            saved = "-" if back is None or back.saved_j_per_inference is None else f"{back.saved_j_per_inference:.3g}"
            rows.append([r.variant_name, r.runtime, *kg, extra, saved, back.verdict if back else "reference", year.why])
        if bars:
            note = device_carbon.describe() if not isinstance(device_carbon, str) else f"embodied: {device_carbon}"
            heading = f"{twin} on {grid}, batch {batch} ({source}); {note}"
            out.append((lifecycle_bars(twin, bars, schedule.describe()), heading, rows))
    return out


def _first_line(reason: str) -> str:
    return (reason.strip().splitlines() or [""])[0][:300]


def render(records: list[Record], env: dict, title: str, schedule: Schedule | None = None) -> str:
    import plotly.io as pio

    charts = []
    by_chart: dict[tuple, list[Record]] = defaultdict(list)
    for r in records:
        by_chart[(r.twin, r.grid, r.batch_size)].append(r)
    for (twin, grid, batch), members in sorted(by_chart.items()):
        charts.append(scatter(twin, grid, batch, members))
    by_twin: dict[str, list[Record]] = defaultdict(list)
    for r in records:
        by_twin[r.twin].append(r)
    for twin, members in sorted(by_twin.items()):
        if any(r.model_info.get("sampling_steps") for r in members if r.status == "ok"):
            charts.append(steps_curve(twin, members))
        if any(r.scenario.startswith("server") and r.status == "ok" for r in members):
            charts.append(qps_curve(twin, members))
    life = _life_cycle(records, env, schedule) if schedule and schedule.carbon_g_per_kwh is not None else []
    charts += [chart for chart, _, _ in life]
    # Trusted as markup: plotly's output, whose JSON escapes < > / (no </script> breakout) and whose
    # record text plots._text() escaped before it entered the figure.
    parts = [
        Markup(pio.to_html(fig, full_html=False, include_plotlyjs=(i == 0), div_id=f"chart-{i}", default_width="900px"))
        for i, fig in enumerate(charts)
    ]
    on_front, ties = frontier_keys(records, "energy"), tie_marks(records)
    flags: dict[str, int] = defaultdict(int)
    for r in records:
        for f in r.flags:
            flags[f] += 1
    not_ok = [r for r in records if r.status != "ok"]
    return _PAGE.render(
        title=title,
        style=Markup(STYLE),
        error_trap=Markup(ERROR_TRAP),
        sort_script=Markup(SORT_SCRIPT),
        n_cells=len(records),
        n_measured=len(records) - len(not_ok),
        meter=str(env.get("energy_meter", "?")),
        charts=parts,
        head=HEAD,
        rows=[
            _row(r, on_front, ties, payback(r, records, schedule and schedule.rate_per_s * schedule.instances))
            for r in sorted(records, key=lambda r: (r.twin, r.batch_size, r.variant_name, r.runtime))
        ],
        tie_rule=TIE_RULE if ties else "",
        schedule=schedule and schedule.describe(),
        annual=_annual(records, schedule) if schedule else [],
        life=[(heading, rows) for _, heading, rows in life],
        payback_head=PAYBACK_HEAD,
        flags=sorted(flags.items()),
        not_measured=[(r, _first_line(r.status_reason)) for r in not_ok],
        env=[(k, json.dumps(v) if isinstance(v, dict | list) else str(v)) for k, v in env.items()]
        + [(f"grid {grid}", json.dumps(data, sort_keys=True)) for grid, data in grid_data(records).items()],
    )


def write(run_dir, metric: str | None = None, schedule: Schedule | None = None) -> Path:
    """Write <run>/report.html from its records and environment (with `metric`: report-<metric>.html,
    the frontier drawn against that quality metric; with `schedule`: a yearly projection section);
    returns its path."""
    records, name, title = run_dir.records(), "report.html", f"twinbench run {run_dir.path.name}"
    if metric is not None:
        records, name = against_metric(records, metric), f"report-{metric_slug(metric)}.html"
        title += f", quality as {metric}"
    path = run_dir.path / name
    return write_output(path, render(records, run_dir.read_json("environment.json"), title, schedule))
