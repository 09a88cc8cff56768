"""A twin's records over runs, from the SQLite history, as a markdown table (`twinbench history`)."""

from __future__ import annotations

from collections.abc import Iterable


def table(rows: Iterable) -> list[str]:
    """Markdown lines, one row per record (bench.history_db.history's rows)."""
    lines = [
        "| run | variant | runtime | batch | status | quality | J/inference [95% CI] | source | p50 ms |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        energy = (
            "-"
            if r.energy_j_per_inference is None
            else (f"{r.energy_j_per_inference:.4g} [{r.energy_ci95_low:.4g}, {r.energy_ci95_high:.4g}]")
        )
        quality = "-" if r.quality_value is None else f"{r.quality_value:.4g}"
        p50 = "-" if r.latency_ms_p50 is None else f"{r.latency_ms_p50:.3g}"
        lines.append(
            f"| {r.run_id} | {r.variant_name} | {r.runtime} | {r.batch_size} | {r.status} | {quality} "
            f"| {energy} | {r.energy_source} | {p50} |"
        )
    return lines
