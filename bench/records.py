"""The record: one frozen, flat, JSON-serialisable row per (variant, runtime, batch size).

Units live in field names. One inference is one sample (a forecast window, a grid snapshot, one
sampled trajectory): energy and throughput are per sample, latency is per call of `batch_size`.
"""

from __future__ import annotations

import json
import math
import types
import typing
from dataclasses import asdict, dataclass, field, fields

# 2: artifact_path relative to the run folder; weights and artifact hashes; shard, host, device index and
# the shard's own reference figures. 3: energy_crosscheck_pct and gpu_other_processes; energy_floor_j at
# the variant's compute precision (fp32 for all in 2). Versions 1 and 2 still read.
SCHEMA_VERSION = 3
STATUSES = ("ok", "unsupported", "error")
# Fields of measured figures (energy, power, latency, throughput): never NaN or infinite in a record.
MEASURED_PREFIXES = (
    "energy_",
    "idle_power",
    "avg_power",
    "reference_",
    "latency_",
    "throughput",
    "creation_energy",
    "achieved_qps",
)


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
    artifact_path: str | None = None  # relative to the run folder (schema 1: absolute)
    weights_sha256: str | None = None  # the torch weights of the variant (models.fingerprint.weights_sha256)
    artifact_sha256: str | None = None  # the exact artifact bytes run (ONNX graph + external data)
    shard_id: str = ""  # the shard that measured it: its reference, device and windows
    host: str = ""  # the machine that measured it
    device_index: int | None = None  # which GPU of that machine (NVML index), None on CPU
    # the grid cache it ran on: content hash and how a user's profiles were filled or resampled
    grid_data: dict = field(default_factory=dict)
    # A LoadGen scenario cell (bench/measure/loadgen.py): offline is the protocol's back-to-back
    # windows; single-stream and server are LoadGen's, their latency_ms_p50/p90/p99 LoadGen's own
    # percentiles over its performance phase, their energy over one window covering that phase.
    scenario: str = "offline"  # offline | single-stream | server@50qps | server@peak
    scenario_settings: dict = field(default_factory=dict)  # duration, rate, p99 bound, the batcher's settings
    target_qps: float | None = None  # the server's arrival rate (at peak: the rate LoadGen found)
    achieved_qps: float | None = None  # samples completed per second of the performance phase
    loadgen_valid: bool | None = None  # LoadGen's result_validity (a short run is INVALID, and says so)
    early_stopping_met: bool | None = None
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
    # The polled power reading integrated over the same windows vs the counter: median over windows of
    # (power - counter) / counter, in %; None without a power reading (CPU, estimate, no counter)
    energy_crosscheck_pct: float | None = None
    idle_power_w: float | None = None
    avg_power_w: float | None = None
    energy_floor_j: float | None = None  # at the peak of the variant's compute precision (fp32, 16-bit, int8, fp8)
    energy_over_floor: float | None = None
    # the fp32 reference on torch-eager at this batch size, measured in the same shard (same device,
    # interleaved windows): what ratios to the reference divide by
    reference_energy_j_per_inference: float | None = None
    reference_latency_ms_p50: float | None = None
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
    # What creating the variant cost (models/creation.py): its own training, search, calibration and
    # export beyond its parent (the reference: its training), and its whole lineage from the reference's
    # training on. None: not measured or not knowable (shipped weights), never 0.
    creation_energy_j: float | None = None
    creation_energy_total_j: float | None = None
    creation_energy_source: str = "none"  # each cost's source, joined: estimate, nvml, estimate+nvml, unknown
    creation_device: str = ""  # the devices it was made on
    creation: dict = field(default_factory=dict)  # {"own": [costs], "reference": [costs]}: each window
    # validity
    window_s: float | None = None
    iterations: int | None = None
    repetitions: int | None = None
    threads: int | None = None
    # short_window, high_cv, throttled, power_out_of_range, checksum_mismatch, contended, counter_disagrees
    flags: tuple = ()
    output_checksum_match: bool | None = None
    contention_cores: float | None = None  # CPU cores other processes used, in the busiest of its windows
    gpu_other_processes: int | None = None  # most other processes NVML listed on the GPU in its (or idle) windows
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
        if self.energy_j_per_inference == 0 or self.creation_energy_j == 0 or self.creation_energy_total_j == 0:
            raise ValueError("0 J is never a measurement: use None when energy is unknown")

    @property
    def cell_key(self) -> str:
        key = f"{self.grid}/{self.twin}/{self.variant_id}/{self.runtime}/{self.device}/bs{self.batch_size}"
        return key if self.scenario == "offline" else f"{key}/{self.scenario}"

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict) -> Record:
        """A record from parsed JSON, checked field by field: records come from shared files, and a
        wrong type would otherwise surface as a crash far from the file that holds it."""
        if not isinstance(data, dict):
            raise ValueError(f"a record is a JSON object, got {type(data).__name__}")
        version = data.get("schema_version", 1)
        if not isinstance(version, int) or not 1 <= version <= SCHEMA_VERSION:
            raise ValueError(f"schema_version {version!r}: this twinbench reads 1 to {SCHEMA_VERSION}")
        hints = typing.get_type_hints(cls)
        values = {}
        for f in fields(cls):
            if f.name not in data:
                continue
            value = data[f.name]
            if f.name in ("lineage", "flags", "load_avg") and isinstance(value, list):
                value = tuple(tuple(x) if isinstance(x, list) else x for x in value)
            if not _is_a(value, hints[f.name]):
                raise ValueError(f"field {f.name!r} must be {hints[f.name]}, got {value!r:.80}")
            values[f.name] = value
        for name, value in values.items():  # measured figures are finite: NaN would rank as the cheapest
            if name.startswith(MEASURED_PREFIXES) and isinstance(value, float) and not math.isfinite(value):
                raise ValueError(f"field {name!r} must be a finite number, got {value!r}")
        for k, v in values.get("quality_metrics", {}).items():
            if not (isinstance(k, str) and (v is None or _is_a(v, float))):
                raise ValueError(f"field 'quality_metrics' must map metric names to numbers, got {k!r}: {v!r:.40}")
        flags, lineage = values.get("flags", ()), values.get("lineage", ())
        if not all(isinstance(x, str) for x in flags):
            raise ValueError("field 'flags' must hold strings")
        if not all(
            isinstance(s, dict) and isinstance(s.get("pass"), str) and isinstance(s.get("params", {}), dict)
            for s in lineage
        ):
            raise ValueError("field 'lineage' must hold steps {'pass': name, 'params': {...}}")
        return cls(**values)


def _is_a(value, hint) -> bool:
    """isinstance for the simple hints of Record (str, int, float, bool, tuple, dict, X | None)."""
    if isinstance(hint, types.UnionType):
        return any(_is_a(value, h) for h in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if hint is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, hint)


def compression_summary(record: Record) -> str:
    """What the record's passes chose and how they trained, in a line: a budget's choice with its
    validation loss and tries, the layers kept in fp32, a training capped below the reference's."""
    parts = []
    for note in record.model_info.get("compression", ()):
        said = []
        search = note.get("search")
        if search:
            chosen = search.get("chosen")
            tried = [t for t in search.get("trace", ()) if t.get("setting") == chosen]
            loss = f", val {tried[-1]['val_loss_pct']:+.2f} %" if tried else ""
            if isinstance(chosen, dict):  # the note's list also holds what a pass keeps in any case
                chosen = f"{len(note.get('kept_fp32', chosen.get('kept_fp32', [])))} layer(s) kept fp32"
            said.append(
                f"chose {chosen} within {search.get('budget_pct')} %{loss}, {len(search.get('trace', ()))} tries"
            )
        elif note.get("kept_fp32"):
            said.append(f"{len(note['kept_fp32'])} layer(s) kept fp32")
        if "capped_epochs" in note:
            said.append(f"capped at {note['capped_epochs']} epochs")
        if said:
            parts.append(f"{note.get('pass')}: {'; '.join(said)}")
    return "; ".join(parts)


def is_capped(record: Record) -> bool:
    """A variant whose training a suite capped below the reference's schedule."""
    return any("capped_epochs" in n for n in record.model_info.get("compression", ()))


# Cores that other processes may keep busy during a window before the cell is flagged `contended`.
# A background daemon's blips stay far below half a core; one busy neighbour (a test run, a training)
# takes a whole core, and on the 2-core dev machine made torch-eager latencies 50x worse.
CONTENDED_CORES = 0.5


def describe_flags(r) -> str:
    """A record's flags for a table cell, the cross-check's figure beside `counter_disagrees`."""
    shown = []
    for flag in r.flags:
        if flag == "counter_disagrees" and r.energy_crosscheck_pct is not None:
            flag = f"{flag} (power {r.energy_crosscheck_pct:+.0f} % vs counter)"
        shown.append(flag)
    return ", ".join(shown)


def grid_data(records: list[Record]) -> dict[str, dict]:
    """Each grid's data as its records name it (content hash; a user's profiles filled or resampled)."""
    return {r.grid: r.grid_data for r in sorted(records, key=lambda r: r.grid) if r.grid_data}


def treatment_text(treatment: dict) -> str:
    """What was done to a user's profiles before the grid was built, in words (manifest `treatment`)."""
    parts = []
    if isinstance(resampled := treatment.get("resampled"), dict):
        parts.append(
            f"profiles resampled from {resampled.get('from_minutes')} min to 15 min by the mean "
            f"({resampled.get('rows_in')} rows -> {resampled.get('steps_out')} steps)"
        )
    if isinstance(filled := treatment.get("filled"), dict):
        parts.append(
            f"{filled.get('values')} value(s) filled in {filled.get('gaps')} gap(s) by interpolation in time "
            f"(longest {filled.get('longest_gap_minutes')} min, limit {filled.get('limit_minutes')} min)"
        )
    return "; ".join(parts) or "profiles used as given"
