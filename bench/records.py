"""The record: one frozen, flat, JSON-serialisable row per (variant, runtime, batch size).

Units live in field names. One inference is one sample (a forecast window, a grid snapshot, one
sampled trajectory): energy and throughput are per sample, latency is per call of `batch_size`.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields

SCHEMA_VERSION = 1
STATUSES = ("ok", "unsupported", "error")


@dataclass(frozen=True)
class Record:
    # identity
    run_id: str
    suite: str
    twin: str
    grid: str
    variant_id: str
    variant_name: str
    lineage: tuple = ()
    runtime: str = ""
    device: str = ""
    batch_size: int = 0
    status: str = "ok"
    status_reason: str = ""
    artifact_path: str | None = None
    schema_version: int = SCHEMA_VERSION
    # quality, on this runtime and precision
    quality_metric: str | None = None
    quality_value: float | None = None
    quality_ref_value: float | None = None
    quality_loss_pct: float | None = None  # >= 0: worse than the fp32 torch-eager reference of this run
    quality_metrics: dict = field(default_factory=dict)  # all metrics of this cell
    # energy per inference (one sample)
    energy_j_per_inference: float | None = None  # median over repetitions
    energy_ci95_low: float | None = None
    energy_ci95_high: float | None = None
    energy_cv: float | None = None
    energy_source: str = "none"  # nvml | rapl | estimate | none
    energy_dynamic_j_per_inference: float | None = None  # idle power subtracted
    idle_power_w: float | None = None
    avg_power_w: float | None = None
    energy_floor_j: float | None = None
    energy_over_floor: float | None = None
    # latency / throughput / size
    latency_ms_p50: float | None = None
    latency_ms_p50_ci95_low: float | None = None  # bootstrap CI of the p50 (per-call timings)
    latency_ms_p50_ci95_high: float | None = None
    latency_ms_p90: float | None = None
    latency_ms_p99: float | None = None
    latency_ms_mean: float | None = None
    throughput_per_s: float | None = None
    peak_memory_mb: float | None = None
    params: int | None = None
    size_bytes: int | None = None
    flops_per_inference: float | None = None
    model_info: dict = field(default_factory=dict)  # what the twin says about the model (sampling steps)
    # validity
    window_s: float | None = None
    iterations: int | None = None
    repetitions: int | None = None
    threads: int | None = None
    flags: tuple = ()  # short_window, high_cv, throttled, power_out_of_range, checksum_mismatch
    output_checksum_match: bool | None = None
    throttled: bool | None = None
    device_state_before: dict = field(default_factory=dict)
    device_state_after: dict = field(default_factory=dict)
    load_avg: tuple = ()

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}, got {self.status!r}")
        if self.status != "ok" and not self.status_reason:
            raise ValueError("a record that is not ok must say why (status_reason)")
        if self.energy_j_per_inference is not None and self.energy_source == "none":
            raise ValueError("an energy figure needs its source")
        if self.energy_j_per_inference == 0:
            raise ValueError("0 J is never a measurement: use None when energy is unknown")

    @property
    def cell_key(self) -> str:
        return f"{self.grid}/{self.twin}/{self.variant_id}/{self.runtime}/{self.device}/bs{self.batch_size}"

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict) -> Record:
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        for name in ("lineage", "flags", "load_avg"):
            if name in values and values[name] is not None:
                values[name] = tuple(tuple(x) if isinstance(x, list) else x for x in values[name])
        return cls(**values)
