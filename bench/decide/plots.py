"""The report's charts (plotly): quality loss against energy per comparison group, with its
frontier, and a diffusion twin's quality against sampling steps. Every record string that reaches a
chart is escaped for plotly's pseudo-HTML (`_text`)."""

from __future__ import annotations

import html

from bench.decide.frontier import groups, pareto
from bench.records import Record, compression_summary, describe_flags

RUNTIME_COLOURS = {
    "torch-eager": "#1f77b4",
    "torch-compile": "#2ca02c",
    "torch-compile-cudagraphs": "#9467bd",
    "onnxruntime": "#d62728",
}
MEASURED = ("nvml", "rapl")


def _text(value) -> str:
    """Record text for plotly's pseudo-HTML (hover, trace names, titles, annotations), which obeys
    <b>, <br> and <a href>: escaped, it shows as typed. quote=False because plotly decodes &lt; &gt;
    &amp; but shows &quot; literally, and a quote cannot open a tag."""
    return html.escape(str(value), quote=False)


def _hover(r: Record) -> str:
    lineage = " → ".join(f"{s['pass']}" for s in r.lineage) or "reference"
    energy = "energy: -"
    if r.energy_j_per_inference is not None:
        energy = (
            f"energy: {r.energy_j_per_inference:.3g} J [{r.energy_ci95_low:.3g}, {r.energy_ci95_high:.3g}] "
            f"({_text(r.energy_source)}, cv {r.energy_cv:.1%})"
        )
    return "<br>".join(
        [
            f"<b>{_text(r.variant_name)}</b>",
            f"runtime: {_text(r.runtime)}, batch {_text(r.batch_size)}",
            f"lineage: {_text(lineage)}",
            *([f"chosen: {_text(compression_summary(r))}"] if compression_summary(r) else []),
            f"{_text(r.quality_metric)}: {r.quality_value:.4g} (loss {r.quality_loss_pct:+.2f} %)",
            energy,
            f"p50 {r.latency_ms_p50:.3g} ms, p99 {r.latency_ms_p99:.3g} ms",
            f"flags: {_text(describe_flags(r) or 'none')}",
        ]
    )


def scatter(twin: str, grid: str, batch: int, records: list[Record]):
    import plotly.graph_objects as go

    fig = go.Figure()
    by_group = groups(records, "energy")
    for (*_, source), members in sorted(by_group.items()):
        measured = source in MEASURED
        for runtime in sorted({r.runtime for r in members}):
            pts = [r for r in members if r.runtime == runtime]
            fig.add_trace(
                go.Scatter(
                    x=[r.energy_j_per_inference for r in pts],
                    y=[r.quality_loss_pct for r in pts],
                    error_x={
                        "type": "data",
                        "symmetric": False,
                        "array": [r.energy_ci95_high - r.energy_j_per_inference for r in pts],
                        "arrayminus": [r.energy_j_per_inference - r.energy_ci95_low for r in pts],
                        "thickness": 1,
                    },
                    mode="markers",
                    name=f"{_text(runtime)} ({_text(source)})",
                    marker={
                        "size": 10,
                        "color": RUNTIME_COLOURS.get(runtime, "#7f7f7f"),
                        "symbol": "circle" if measured else "circle-open",
                        "line": {"width": 2},
                    },
                    text=[_hover(r) for r in pts],
                    hoverinfo="text",
                )
            )
        front = pareto(members, "energy")
        fig.add_trace(
            go.Scatter(
                x=[r.energy_j_per_inference for r in front],
                y=[r.quality_loss_pct for r in front],
                mode="lines",
                line={"dash": "solid" if measured else "dot", "color": "#444", "shape": "hv"},
                name=f"frontier ({_text(source)})",
                hoverinfo="skip",
            )
        )
    estimated = "" if all(k[-1] in MEASURED for k in by_group) else " — open markers: estimated energy"
    _mark_off_the_chart(fig, by_group)
    fig.update_layout(
        title=f"{_text(twin)} on {_text(grid)}, batch {_text(batch)}: quality loss vs energy{estimated}",
        xaxis={"type": "log", "title": "joules per inference (log)"},
        yaxis={"title": "quality loss % vs fp32 eager reference (lower is better)"},
        margin={"t": 60, "l": 70, "r": 20, "b": 60},
    )
    return fig


def _mark_off_the_chart(fig, by_group: dict) -> None:
    """One broken variant (+30000 %) would flatten every useful point against zero: the y axis stops
    at 100 % and the variants beyond it are named above the chart."""
    losses = [r.quality_loss_pct for m in by_group.values() for r in m]
    off = sorted(
        {
            f"{_text(r.variant_name)} on {_text(r.runtime)}"
            for m in by_group.values()
            for r in m
            if r.quality_loss_pct > 100
        }
    )
    if off:
        fig.update_yaxes(range=[min(losses) - 5, 100])
        fig.add_annotation(
            text="off the chart (loss > 100 %): " + "; ".join(off),
            xref="paper",
            yref="paper",
            x=0,
            y=1.06,
            showarrow=False,
            font={"size": 10, "color": "#b00"},
            xanchor="left",
        )


def steps_curve(twin: str, records: list[Record]):
    """Quality against sampling steps, for a twin whose models sample in steps (its `model_info`
    says `sampling_steps`): the plain fewer-steps sweep and the step-distilled students."""
    import plotly.graph_objects as go

    fig = go.Figure()
    ok = [r for r in records if r.status == "ok" and r.model_info.get("sampling_steps")]
    for runtime in sorted({r.runtime for r in ok}):
        for label, keep in (
            ("same weights, fewer steps", lambda r: all(s["pass"] == "diffusion-steps" for s in r.lineage)),
            ("step-distilled student", lambda r: any(s["pass"] == "diffusion-step-distill" for s in r.lineage)),
        ):
            pts = sorted(
                {r.model_info["sampling_steps"]: r for r in ok if r.runtime == runtime and keep(r)}.values(),
                key=lambda r: r.model_info["sampling_steps"],
            )
            if pts:
                fig.add_trace(
                    go.Scatter(
                        x=[r.model_info["sampling_steps"] for r in pts],
                        y=[r.quality_value for r in pts],
                        mode="lines+markers" if label.startswith("same") else "markers",
                        marker={"size": 10, "color": RUNTIME_COLOURS.get(runtime, "#7f7f7f")},
                        name=f"{label} ({_text(runtime)})",
                        text=[_hover(r) for r in pts],
                        hoverinfo="text",
                    )
                )
    metric = _text(ok[0].quality_metric) if ok else "quality"
    fig.update_layout(
        title=f"{_text(twin)}: {metric} vs sampling steps",
        xaxis={"type": "log", "title": "sampling steps"},
        yaxis={"title": f"{metric} (lower is better)"},
        margin={"t": 60, "l": 70, "r": 20, "b": 60},
    )
    return fig


LIFE_COLOURS = {"create": "#9467bd", "retrain": "#c5b0d5", "operate": "#1f77b4", "embodied": "#8c564b"}


def lifecycle_bars(twin: str, rows: list[tuple[str, dict[str, float | None]]], schedule_text: str):
    """kg CO2e in a twin's first year per frontier variant, stacked: create, retrain, operate,
    embodied (bench/decide/lifecycle.py). A part that is not known is left out of its bar and named
    in the hover, never drawn as 0."""
    import plotly.graph_objects as go

    fig = go.Figure()
    labels = [_text(label) for label, _ in rows]
    for part, colour in LIFE_COLOURS.items():
        values = [parts[part] for _, parts in rows]
        fig.add_trace(
            go.Bar(
                x=labels,
                y=values,  # None: a gap, not a bar of 0
                name=part,
                marker={"color": colour},
                text=["unknown" if v is None else f"{v:.3g} kg" for v in values],
                hoverinfo="text+name",
            )
        )
    fig.update_layout(
        barmode="stack",
        title=f"{_text(twin)}: kg CO2e in the first year at {_text(schedule_text)}",
        yaxis={"title": "kg CO2e"},
        margin={"t": 60, "l": 70, "r": 20, "b": 120},
    )
    return fig


def qps_curve(twin: str, records: list[Record]):
    """J/inference against the served rate per variant, from LoadGen's server cells (issue 26): at a
    low rate the device idles between requests, and each inference carries more of that power. An
    INVALID LoadGen verdict is an open marker."""
    import plotly.graph_objects as go

    fig = go.Figure()
    served = [r for r in records if r.scenario.startswith("server") and r.status == "ok" and r.energy_j_per_inference]
    for (variant, runtime), group in sorted(_by_variant(served).items()):
        pts = sorted(group, key=lambda r: r.achieved_qps or 0.0)
        fig.add_trace(
            go.Scatter(
                x=[r.achieved_qps for r in pts],
                y=[r.energy_j_per_inference for r in pts],
                mode="lines+markers",
                marker={
                    "size": 10,
                    "color": RUNTIME_COLOURS.get(runtime, "#7f7f7f"),
                    "symbol": ["circle" if r.loadgen_valid else "circle-open" for r in pts],
                },
                name=f"{_text(variant)} ({_text(runtime)})",
                text=[
                    f"{_text(r.scenario)}: {r.achieved_qps:.4g} qps, p99 {r.latency_ms_p99:.3g} ms, "
                    f"{'valid' if r.loadgen_valid else 'INVALID'} ({_text(r.energy_source)})"
                    for r in pts
                ],
                hoverinfo="text",
            )
        )
    fig.update_layout(
        title=f"{_text(twin)}: J/inference vs served rate (LoadGen server)",
        xaxis={"type": "log", "title": "achieved QPS"},
        yaxis={"type": "log", "title": "J/inference"},
        margin={"t": 60, "l": 70, "r": 20, "b": 60},
    )
    return fig


def _by_variant(records: list[Record]) -> dict[tuple[str, str], list[Record]]:
    out: dict[tuple[str, str], list[Record]] = {}
    for r in records:
        out.setdefault((r.variant_name, r.runtime), []).append(r)
    return out
