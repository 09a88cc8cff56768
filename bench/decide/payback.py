"""When a compression pays back what it cost to create (issue 25 item 3).

A variant's extra creation energy (its training, search, calibration and export beyond its
reference's: `creation_energy_total_j` of the variant minus the reference's) comes back one
inference at a time, by the energy it saves per inference against its reference on the same
runtime, device and batch size:

    break-even inferences = extra creation energy / (reference J/inference - variant J/inference)

At a schedule (`--rate` per instance, `--instances`), that count is a time. A variant that saves
nothing never pays back; one whose creation cost is not known (not measured, shipped weights)
cannot say. Medians are compared, and the figures keep their sources (creation and inference may
be metered differently: an estimate on a CPU trainer, NVML on the GPU that serves).
"""

from __future__ import annotations

from dataclasses import dataclass

from bench.records import Record

SECONDS_PER_DAY = 86_400


@dataclass(frozen=True)
class Payback:
    extra_creation_j: float | None  # beyond the reference's creation; None: not known
    saved_j_per_inference: float | None  # reference minus variant (median); None: not measured
    inferences: float | None  # to break even; None: never, or not known (see `verdict`)
    seconds: float | None = None  # at the schedule's rate, all instances together
    verdict: str = ""


def reference_of(r: Record, records: list[Record]) -> Record | None:
    """The fp32 reference measured with `r`: same twin, grid, runtime, device and batch size."""
    return next(
        (
            x
            for x in records
            if x.status == "ok"
            and not x.lineage
            and (x.twin, x.grid, x.runtime, x.device, x.batch_size)
            == (r.twin, r.grid, r.runtime, r.device, r.batch_size)
        ),
        None,
    )


def payback(r: Record, records: list[Record], inferences_per_s: float | None = None) -> Payback | None:
    """`r`'s break-even against its reference (None for a reference, or a cell without one).
    `inferences_per_s`: the deployment's rate over all instances, for the time it takes."""
    ref = reference_of(r, records)
    if not r.lineage or ref is None or r.status != "ok":
        return None
    saved = None
    if r.energy_j_per_inference is not None and ref.energy_j_per_inference is not None:
        saved = ref.energy_j_per_inference - r.energy_j_per_inference
    extra = None
    if r.creation_energy_total_j is not None and ref.creation_energy_total_j is not None:
        extra = r.creation_energy_total_j - ref.creation_energy_total_j
    if saved is None:
        return Payback(extra, None, None, verdict="unknown: inference energy not measured")
    if saved <= 0:
        return Payback(extra, saved, None, verdict="never pays back: it saves no energy per inference")
    if extra is None:
        return Payback(None, saved, None, verdict=f"unknown: creation energy {r.creation_energy_source}")
    if extra <= 0:
        return Payback(
            extra, saved, 0.0, 0.0 if inferences_per_s else None, "pays back at once: it cost no more to create"
        )
    count = extra / saved
    seconds = count / inferences_per_s if inferences_per_s else None
    when = f" ({duration_text(seconds)} at the schedule's rate)" if seconds is not None else ""
    return Payback(extra, saved, count, seconds, f"pays back after {count:.3g} inferences{when}")


def duration_text(seconds: float) -> str:
    """A break-even time as people say it: 40 s, 3.2 h, 12 days, 4.1 years."""
    for unit, size in (("years", 365 * SECONDS_PER_DAY), ("days", SECONDS_PER_DAY), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:.3g} {unit}"
    return f"{seconds:.3g} s"


def creation_text(r: Record) -> str:
    """The creation cost of a cell, for tables: `12.3 kJ (estimate)`, `unknown`, `not measured`."""
    if r.creation_energy_total_j is None:
        return "unknown" if "unknown" in r.creation_energy_source else "not measured"
    return f"{r.creation_energy_total_j / 1000:.3g} kJ ({r.creation_energy_source})"
