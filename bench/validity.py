"""How much a cell's numbers can be trusted: validity flags and the energy floor (the joules the
device would need at its peak dense throughput, a sanity bound for measured figures)."""

from __future__ import annotations

import psutil

HIGH_CV = 0.02
GPU_MIN_WINDOW_S = 5.0  # NVML's counter updates every ~100 ms and samples part of the time

# Peak dense throughput and TDP per device, for the energy floor (flops x W / peak). Sources:
# NVIDIA datasheets: H100 SXM5 / PCIe (FP32 67 / 51 TFLOP/s, BF16 989 / 756 dense, 700 / 350 W),
# H200 SXM (as H100 SXM, 700 W), A100 SXM 80 GB (FP32 19.5, BF16 312, 400 W), L4 (FP32 30.3,
# BF16 121 dense, 72 W).
DEVICE_PEAKS = {
    "H100 PCIe": {"fp32_tflops": 51.0, "bf16_tflops": 756.0, "tdp_w": 350.0},
    "H100": {"fp32_tflops": 67.0, "bf16_tflops": 989.0, "tdp_w": 700.0},
    "H200": {"fp32_tflops": 67.0, "bf16_tflops": 989.0, "tdp_w": 700.0},
    "A100": {"fp32_tflops": 19.5, "bf16_tflops": 312.0, "tdp_w": 400.0},
    "L4": {"fp32_tflops": 30.3, "bf16_tflops": 121.0, "tdp_w": 72.0},
}


# Cores that other processes may keep busy during a window before the cell is flagged `contended`.
# A background daemon's blips stay far below half a core; one busy neighbour (a test run, a training)
# takes a whole core, and on the 2-core dev machine made torch-eager latencies 50x worse.
CONTENDED_CORES = 0.5


def validity_flags(
    *,
    window_s: float,
    cv: float | None,
    source: str,
    avg_power_w: float | None,
    idle_power_w: float | None,
    power_limit_w: float | None,
    throttled: bool | None,
    outputs_match: bool,
    contention_cores: float | None = None,
) -> tuple[str, ...]:
    """Why a cell's numbers deserve less trust. An empty tuple is a clean measurement."""
    flags = []
    if window_s < GPU_MIN_WINDOW_S:
        flags.append("short_window")
    if cv is not None and cv > HIGH_CV:
        flags.append("high_cv")
    if source == "nvml" and avg_power_w is not None and power_limit_w:
        if not (idle_power_w or 0.0) <= avg_power_w <= power_limit_w:
            flags.append("power_out_of_range")
    if throttled:
        flags.append("throttled")
    if not outputs_match:
        flags.append("checksum_mismatch")
    if contention_cores is not None and contention_cores > CONTENDED_CORES:
        flags.append("contended")
    return tuple(flags)


def others_cpu_seconds() -> float:
    """CPU seconds the whole machine has spent busy, minus this process's own (and its reaped
    children's): what other processes took. Differences over a window give the cores they used."""
    t = psutil.cpu_times()
    busy = t.user + t.nice + t.system + getattr(t, "irq", 0.0) + getattr(t, "softirq", 0.0) + getattr(t, "steal", 0.0)
    own = psutil.Process().cpu_times()
    return busy - (own.user + own.system + own.children_user + own.children_system)


def energy_floor(flops: float | None, env: dict) -> float | None:
    name = env.get("gpu_name") or ""
    for key in sorted(DEVICE_PEAKS, key=len, reverse=True):  # "H100 PCIe" before "H100"
        if key in name and flops:
            peak = DEVICE_PEAKS[key]
            return flops * peak["tdp_w"] / (peak["fp32_tflops"] * 1e12)
    return None
