"""summary.md: a run's results as markdown tables, per twin and batch size, frontier and ties marked.

Ratios compare each cell with the fp32 reference on torch-eager at the same batch size, measured in
the cell's own shard (same device, interleaved windows): below 1 means cheaper than the reference. Unsupported and failed cells are listed with their reasons.
"""

from __future__ import annotations

from collections import defaultdict

from bench.decide.frontier import QUALITY_TOL_PCT, TIE_RULE, against_metric, frontier_keys, metric_slug, tie_marks
from bench.decide.payback import creation_text, payback
from bench.records import Record, compression_summary, describe_flags, grid_data, is_capped, treatment_text
from bench.store import write_output

REFERENCE_RUNTIME = "torch-eager"


def _fmt(x: float | None, spec: str = ".3g") -> str:
    return "-" if x is None else format(x, spec)


def _ratio(a: float | None, b: float | None) -> str:
    return "-" if a is None or not b else f"{a / b:.2f}x"


def _ref(r: Record, run_ref: Record | None, field: str) -> float | None:
    """The reference figure a cell's ratio divides by: the one measured in its own shard (same device,
    same windows); for records without one (schema 1), the run's reference cell."""
    own = getattr(r, f"reference_{field}")
    return own if own is not None else (run_ref and getattr(run_ref, field))


def _payback_text(back) -> str:
    if back is None:
        return "-"
    return f"{back.inferences:.3g} inferences" if back.inferences is not None else back.verdict.split(":")[0]


def render(records: list[Record], env: dict | None = None, title: str = "") -> str:
    on_energy, on_latency = frontier_keys(records, "energy"), frontier_keys(records, "latency")
    lines = [f"# {title or 'twinbench run'}", ""]
    if env:
        device = env.get("gpu_name") or env.get("cpu_model") or "?"
        lines += [f"device: {device}; energy meter: {env.get('energy_meter', '?')}", ""]
    for grid, data in grid_data(records).items():
        if data.get("treatment"):
            lines += [f"grid {grid}: {treatment_text(data['treatment'])}", ""]
    lines += [
        "Quality loss is relative to the fp32 torch-eager reference (positive = worse). Ratios are to the "
        "reference on torch-eager at the same batch size (< 1 = cheaper). E / L: on the quality-vs-energy / "
        "quality-vs-latency Pareto frontier of its group (same twin, batch size, device and energy source). "
        "Creation: the energy to make the variant, its reference's training included; payback: the inferences "
        "after which its saving per inference has repaid what it cost beyond its reference on the same runtime. "
        f"A cell leaves a frontier only when another beats it beyond the noise: by more than {QUALITY_TOL_PCT:g} "
        "points of quality loss, or with a 95 % CI wholly below its own.",
        "",
    ]
    by_group: dict[tuple, list[Record]] = defaultdict(list)
    for r in records:
        if r.scenario == "offline":
            by_group[(r.grid, r.twin, r.batch_size)].append(r)
    for (grid, twin, batch), rows in sorted(by_group.items()):
        ok = [r for r in rows if r.status == "ok"]
        ref = next((r for r in ok if r.variant_id == "reference" and r.runtime == REFERENCE_RUNTIME), None)
        lines += [f"## {twin} on {grid}, batch {batch}", ""]
        if ref:
            lines += [f"reference: {ref.quality_metric} = {ref.quality_value:.4g}", ""]
        lines += [
            "| variant | runtime | frontier | quality loss % | J/inference [95% CI] | source | energy ratio "
            "| p50 ms | p99 ms | latency ratio | params | size KB | creation | payback | flags |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        ties = tie_marks(ok)
        for r in sorted(ok, key=lambda r: (r.variant_id != "reference", r.variant_name, r.runtime)):
            front = ("E" if r.cell_key in on_energy else "") + ("L" if r.cell_key in on_latency else "")
            front = " ".join([front, *ties.get(r.cell_key, [])]).strip()
            energy = "-"
            if r.energy_j_per_inference is not None:
                energy = f"{r.energy_j_per_inference:.3g} [{r.energy_ci95_low:.3g}, {r.energy_ci95_high:.3g}]"
            name = r.variant_name + (" [capped]" if is_capped(r) else "")
            if chosen := compression_summary(r):
                name += f" ({chosen})"
            lines.append(
                f"| {name} | {r.runtime} | {front} | {_fmt(r.quality_loss_pct, '+.2f')} | {energy} "
                f"| {r.energy_source} | {_ratio(r.energy_j_per_inference, _ref(r, ref, 'energy_j_per_inference'))} "
                f"| {_fmt(r.latency_ms_p50)} | {_fmt(r.latency_ms_p99)} "
                f"| {_ratio(r.latency_ms_p50, _ref(r, ref, 'latency_ms_p50'))} | {_fmt(r.params, ',')} "
                f"| {_fmt(r.size_bytes and r.size_bytes / 1024, '.0f')} | {creation_text(r)} "
                f"| {_payback_text(payback(r, records))} | {describe_flags(r)} |"
            )
        if ties:
            lines += [
                "",
                "Ties: =En / =Ln mark the cells of tie n on the energy / latency frontier, * the one the rule "
                f"picks ({TIE_RULE}).",
            ]
        skipped = [r for r in rows if r.status != "ok"]
        if skipped:
            lines += ["", "Not measured:", ""]
            for r in sorted(skipped, key=lambda r: (r.variant_name, r.runtime)):
                reason = r.status_reason.strip().splitlines()[0][:200]  # the record keeps all of it
                lines.append(f"- {r.variant_name} on {r.runtime}: {r.status} ({reason})")
        lines.append("")
    return "\n".join(lines + _scenarios([r for r in records if r.scenario != "offline"]))


def _yes_no(value: bool | None) -> str:
    return "-" if value is None else ("yes" if value else "no")


def _scenarios(records: list[Record]) -> list[str]:
    """LoadGen's scenario cells: rate, latency percentiles, its verdict, and J per inference there."""
    if not records:
        return []
    lines = [
        "## LoadGen scenarios",
        "",
        "LoadGen drove each variant's session; J/inference is over a window covering its performance phase. "
        "An INVALID verdict (a run shorter than LoadGen's minimums) is LoadGen's, shown as it is.",
        "",
        "| twin | variant | runtime | scenario | target QPS | achieved QPS | p50 / p90 / p99 ms | verdict "
        "| early stopping | J/inference | source | dynamic J | status |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in sorted(
        records, key=lambda r: (r.grid, r.twin, r.variant_id != "reference", r.variant_name, r.runtime, r.scenario)
    ):
        verdict = "-" if r.loadgen_valid is None else ("VALID" if r.loadgen_valid else "INVALID")
        lat = " / ".join(_fmt(x) for x in (r.latency_ms_p50, r.latency_ms_p90, r.latency_ms_p99))
        status = r.status if r.status == "ok" else f"{r.status}: {r.status_reason.splitlines()[0][:120]}"
        lines.append(
            f"| {r.twin} | {r.variant_name} | {r.runtime} | {r.scenario} | {_fmt(r.target_qps)} | {_fmt(r.achieved_qps)} "
            f"| {lat} | {verdict} | {_yes_no(r.early_stopping_met)} | {_fmt(r.energy_j_per_inference)} | {r.energy_source} "
            f"| {_fmt(r.energy_dynamic_j_per_inference)} | {status} |"
        )
    return [*lines, ""]


def write(run_dir, metric: str | None = None) -> str:
    """Write <run>/summary.md from its records (with `metric`: summary-<metric>.md, the frontier drawn
    against that quality metric); returns the text."""
    records, name = run_dir.records(), "summary.md"
    if metric is not None:
        records, name = against_metric(records, metric), f"summary-{metric_slug(metric)}.md"
    text = render(records, run_dir.read_json("environment.json"), title=f"run {run_dir.path.name}")
    write_output(run_dir.path / name, text)
    return text
