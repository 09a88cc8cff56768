"""Energy meters: begin(key) / end(key) windows, each reading labelled with where it came from.

- `nvml`: the GPU's cumulative energy counter, read through Zeus (`ZeusMonitor`).
- `rapl`: the CPU package counters under /sys/class/powercap, read through Zeus.
- `estimate`: this process's CPU time x a per-core power figure. A model, not a measurement, and
  labelled as such wherever it appears.
- `none`: no counter and no model: the energy is unknown (None), never 0.

Zeus answers a window with an empty dict, not an error, when it has no counter for a device; a
counter that did not advance (windows shorter than its ~100 ms update period) reads 0 J. Both mean
"not measured" and become None here.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

# Power of one fully busy core, for the `estimate` source. A server CPU's TDP over its cores is
# 5-10 W (e.g. Xeon Platinum 8380: 270 W / 40 cores = 6.75 W; EPYC 7763: 280 W / 64 = 4.4 W);
# desktop parts run 10-15 W per core. 10 W sits between; override with TWINBENCH_WATTS_PER_CORE.
DEFAULT_WATTS_PER_CORE = 10.0
RAPL_DIR = Path("/sys/class/powercap")


@dataclass(frozen=True)
class Reading:
    seconds: float
    joules: float | None  # None: not measured (never reported as 0)
    source: str  # nvml | rapl | estimate | none


def _noop() -> None:
    pass


class Meter:
    source = "none"

    def __init__(self, sync: Callable[[], None] = _noop) -> None:
        self.sync = sync
        self._open: dict[str, float] = {}

    def begin(self, key: str) -> None:
        self.sync()
        self._open[key] = time.perf_counter()
        self._begin(key)

    def end(self, key: str) -> Reading:
        self.sync()
        joules = self._end(key)
        seconds = time.perf_counter() - self._open.pop(key)
        if joules is not None and joules <= 0:
            joules = None  # a counter that did not move did not measure the window
        return Reading(seconds, joules, self.source if joules is not None else "none")

    def _begin(self, key: str) -> None:
        pass

    def _end(self, key: str) -> float | None:
        return None


class NoneMeter(Meter):
    source = "none"


class EstimateMeter(Meter):
    """CPU seconds of this process (all threads) x watts per busy core."""

    source = "estimate"

    def __init__(self, sync: Callable[[], None] = _noop, watts_per_core: float | None = None) -> None:
        super().__init__(sync)
        self.watts_per_core = watts_per_core or float(
            os.environ.get("TWINBENCH_WATTS_PER_CORE", DEFAULT_WATTS_PER_CORE)
        )
        self._cpu: dict[str, float] = {}

    def _begin(self, key: str) -> None:
        self._cpu[key] = time.process_time()

    def _end(self, key: str) -> float | None:
        return (time.process_time() - self._cpu.pop(key)) * self.watts_per_core


class ZeusMeter(Meter):
    """One device's energy counter through Zeus: a GPU (nvml) or the CPU packages (rapl)."""

    def __init__(self, monitor, source: str, index: int | None = None, sync: Callable[[], None] = _noop) -> None:
        super().__init__(sync)
        self.monitor, self.source, self.index = monitor, source, index

    def _begin(self, key: str) -> None:
        # We synchronise ourselves (above); Zeus's own sync would call torch.cuda on a CPU run.
        self.monitor.begin_window(key, sync_execution=False)

    def _end(self, key: str) -> float | None:
        m = self.monitor.end_window(key, sync_execution=False)
        if self.source == "nvml":
            return (m.gpu_energy or {}).get(self.index)
        cpu = m.cpu_energy or {}
        return sum(cpu.values()) if cpu else None


def visible_gpu_index(cuda_index: int = 0) -> int | None:
    """The NVML index of this process's CUDA device `cuda_index` (None: unknown). CUDA_VISIBLE_DEVICES
    renumbers CUDA devices (Ray sets it for each task it gives a GPU) and NVML does not; Zeus maps
    the CUDA index to the right counter, and records name the physical GPU with this."""
    visible = [x.strip() for x in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if x.strip()]
    if cuda_index >= len(visible):
        return cuda_index if not visible else None
    if visible[cuda_index].isdigit():
        return int(visible[cuda_index])
    try:  # a GPU named by UUID: NVML knows its index
        import pynvml

        pynvml.nvmlInit()
        return int(pynvml.nvmlDeviceGetIndex(pynvml.nvmlDeviceGetHandleByUUID(visible[cuda_index])))
    except Exception:  # no NVML, a UUID prefix or a MIG instance: say unknown rather than guess
        return None


@dataclass(frozen=True)
class MeterChoice:
    meter: Meter
    why: str  # how it was chosen, and why the better sources were not


def choose_meter(device: str, gpu_index: int = 0, sync: Callable[[], None] = _noop) -> MeterChoice:
    """The best energy source for a device: nvml for CUDA, rapl for CPU, else estimate / none."""
    reasons = []
    try:
        from zeus.monitor import ZeusMonitor
    except ImportError as e:
        ZeusMonitor, zeus_error = None, f"zeus not importable ({e})"
    if device == "cuda":
        if ZeusMonitor is None:
            return MeterChoice(NoneMeter(sync), f"none: {zeus_error}")
        from zeus.device import get_gpus
        from zeus.device.gpu import ZeusGPUInitError

        # Zeus's own GPU list first (CUDA_VISIBLE_DEVICES applied): ZeusMonitor raises, rather than
        # answering "no counter", for an index beyond it, no NVML, or GPUs named by UUID or MIG.
        try:
            gpus = get_gpus()
        except (ZeusGPUInitError, ValueError) as e:
            return MeterChoice(NoneMeter(sync), f"none: Zeus cannot list the GPUs ({e})")
        if gpu_index >= len(gpus) or not gpus.supports_get_total_energy_consumption(gpu_index):
            return MeterChoice(NoneMeter(sync), "none: no NVML energy counter for this GPU (pre-Volta or no NVML)")
        monitor = ZeusMonitor(gpu_indices=[gpu_index], cpu_indices=[])
        return MeterChoice(ZeusMeter(monitor, "nvml", gpu_index, sync), f"nvml: GPU {gpu_index} energy counter")
    if ZeusMonitor is None:
        reasons.append(zeus_error)
    elif not RAPL_DIR.is_dir() or not any(RAPL_DIR.glob("intel-rapl:*")):
        reasons.append(f"no RAPL zones under {RAPL_DIR}")
    else:
        monitor = ZeusMonitor(gpu_indices=[], cpu_indices=None)
        if len(monitor.cpus):
            return MeterChoice(ZeusMeter(monitor, "rapl", sync=sync), "rapl: CPU package counters")
        reasons.append("RAPL zones present but not readable (needs root)")
    meter = EstimateMeter(sync)
    return MeterChoice(meter, f"estimate: CPU time x {meter.watts_per_core:g} W per busy core ({'; '.join(reasons)})")
