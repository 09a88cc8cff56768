"""How much a cell's numbers can be trusted: validity flags and the energy floor (the joules the
device would need at its peak dense throughput, a sanity bound for measured figures)."""

from __future__ import annotations

from dataclasses import dataclass

import psutil

from bench.records import CONTENDED_CORES

HIGH_CV = 0.02
GPU_MIN_WINDOW_S = 5.0  # NVML's counter updates every ~100 ms and samples part of the time
SHORT_FRACTION = 0.9  # a window calibrated for 5 s that lasted under 4.5 s is short too
# The polled power integrated over a window may differ from the energy counter by this much (%)
# before the cell is flagged `counter_disagrees`. On a steady load the two agree to ~1 % over 5 s
# windows (tests/measure/test_nvml_truth.py: the edges of a window cost each at most one ~100 ms update);
# a load whose bursts the power reading's 25 ms slices miss is off by tens of %.
CROSSCHECK_PCT = 5.0

# Peak dense throughput (TFLOP/s, TOP/s for int8) per compute precision and TDP per device, for the
# energy floor (flops x TDP / peak). NVIDIA datasheets, dense figures (the sparse ones are 2x):
# H100 SXM5: FP32 67, FP16/BF16 989, FP8 1979, INT8 1979, 700 W; H100 PCIe: FP32 51, FP16/BF16 756,
# FP8 1513, INT8 1513, 350 W; H200 SXM: as H100 SXM, 700 W; A100 SXM 80 GB: FP32 19.5, FP16/BF16 312,
# INT8 624, no FP8, 400 W; L4: FP32 30.3, FP16/BF16 121, FP8 242.5, INT8 242.5, 72 W.
DEVICE_PEAKS = {
    "H100 PCIe": {
        "tdp_w": 350.0,
        "tflops": {"fp32": 51.0, "fp16": 756.0, "bf16": 756.0, "fp8": 1513.0, "int8": 1513.0},
    },
    "H100": {"tdp_w": 700.0, "tflops": {"fp32": 67.0, "fp16": 989.0, "bf16": 989.0, "fp8": 1979.0, "int8": 1979.0}},
    "H200": {"tdp_w": 700.0, "tflops": {"fp32": 67.0, "fp16": 989.0, "bf16": 989.0, "fp8": 1979.0, "int8": 1979.0}},
    "A100": {"tdp_w": 400.0, "tflops": {"fp32": 19.5, "fp16": 312.0, "bf16": 312.0, "int8": 624.0}},
    "L4": {"tdp_w": 72.0, "tflops": {"fp32": 30.3, "fp16": 121.0, "bf16": 121.0, "fp8": 242.5, "int8": 242.5}},
}
PRECISIONS = ("fp32", "fp16", "bf16", "int8", "fp8")
SPARSE_24_SPEEDUP = 2.0  # 2:4 sparse tensor cores: twice the dense peak (datasheets)

# What each pass leaves its model computing in (passes not named keep their input's precision).
_HALF_DTYPES = {"float16": "fp16", "bfloat16": "bf16"}


@dataclass(frozen=True)
class Evidence:
    """What a cell's windows showed about how far its numbers can be trusted. `window_s` is the
    suite's window; `measured_window_s` what the cell's windows lasted (median), which may fall
    short of it when its iterations were calibrated on a slow moment."""

    window_s: float
    cv: float | None
    source: str
    avg_power_w: float | None
    idle_power_w: float | None
    power_limit_w: float | None
    throttled: bool | None
    outputs_match: bool
    contention_cores: float | None = None
    crosscheck_pct: float | None = None
    gpu_other_processes: int | None = None
    measured_window_s: float | None = None


def validity_flags(e: Evidence) -> tuple[str, ...]:
    """Why a cell's numbers deserve less trust. An empty tuple is a clean measurement."""
    flags = []
    if e.window_s < GPU_MIN_WINDOW_S or (e.measured_window_s or e.window_s) < SHORT_FRACTION * GPU_MIN_WINDOW_S:
        flags.append("short_window")
    if e.cv is not None and e.cv > HIGH_CV:
        flags.append("high_cv")
    if e.source == "nvml" and e.avg_power_w is not None and e.power_limit_w:
        if not (e.idle_power_w or 0.0) <= e.avg_power_w <= e.power_limit_w:
            flags.append("power_out_of_range")
    if e.throttled:
        flags.append("throttled")
    if not e.outputs_match:
        flags.append("checksum_mismatch")
    if (e.contention_cores is not None and e.contention_cores > CONTENDED_CORES) or (e.gpu_other_processes or 0) > 0:
        flags.append("contended")
    if e.crosscheck_pct is not None and abs(e.crosscheck_pct) > CROSSCHECK_PCT:
        flags.append("counter_disagrees")
    return tuple(flags)


def others_cpu_seconds() -> float:
    """CPU seconds the whole machine has spent busy, minus this process's own (and its reaped
    children's): what other processes took. Differences over a window give the cores they used."""
    t = psutil.cpu_times()
    busy = t.user + t.nice + t.system + getattr(t, "irq", 0.0) + getattr(t, "softirq", 0.0) + getattr(t, "steal", 0.0)
    own = psutil.Process().cpu_times()
    return busy - (own.user + own.system + own.children_user + own.children_system)


def compute_precision(lineage: tuple | list) -> str:
    """The precision a variant's matmuls run in, from its lineage: `half` sets fp16 or bf16,
    `quant-*-int8` int8, `float8` fp8, `sparsity-2:4` fp16 on sparse tensor cores ("fp16-2:4");
    `distill` trains a fresh fp32 student; every other pass keeps what it was given."""
    precision = "fp32"
    for step in lineage:
        name, params = step.get("pass", ""), step.get("params", {})
        if name == "half":
            precision = _HALF_DTYPES.get(params.get("dtype", "float16"), "fp16")
        elif name.startswith("quant-") and name.endswith("-int8"):
            precision = "int8"
        elif name == "float8":
            precision = "fp8"
        elif name == "sparsity-2:4":
            precision = "fp16-2:4"
        elif name == "distill":
            precision = "fp32"
    return precision


def energy_floor(flops: float | None, env: dict, precision: str = "fp32") -> float | None:
    """The joules `flops` would need on this GPU at its peak throughput in `precision` and its TDP:
    a bound no measurement can beat. None without a table entry for the GPU and that precision."""
    name = env.get("gpu_name") or ""
    dtype, _, sparse = precision.partition("-")
    for key in sorted(DEVICE_PEAKS, key=len, reverse=True):  # "H100 PCIe" before "H100"
        if key in name and flops:
            peak = DEVICE_PEAKS[key]
            tflops = peak["tflops"].get(dtype)
            if tflops is None:  # e.g. fp8 on an A100: no such peak to bound it by
                return None
            return flops * peak["tdp_w"] / (tflops * (SPARSE_24_SPEEDUP if sparse else 1.0) * 1e12)
    return None
