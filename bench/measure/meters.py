"""Energy meters: begin(key) / end(key) windows, each reading labelled with where it came from.

- `nvml`: the GPU's cumulative energy counter, read through Zeus (`ZeusMonitor`).
- `rapl`: the CPU package counters under /sys/class/powercap, read through Zeus.
- `estimate`: this process's CPU time x a per-core power figure. A model, not a measurement, and
  labelled as such wherever it appears.
- `none`: no counter and no model: the energy is unknown (None), never 0.

Zeus answers a window with an empty dict, not an error, when it has no counter for a device; a
counter that did not advance (windows shorter than its ~100 ms update period) reads 0 J. Both mean
"not measured" and become None here.

Beside the counter, an `nvml` window polls the GPU (`GpuWatch`): its power reading, integrated over
the same window as an independent figure for the counter (they disagree when the power reading
samples only part of the time and the load is bursty: Yang et al., SC'24), the processes NVML lists
on the GPU (another one is a neighbour sharing the device), and its clock event reasons (throttling
during the window, not only before and after it).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from bench.measure.nvml import GpuProbe, GpuWatch, gpu_state, nvml_handle, visible_gpu_index
from models.errors import Unsupported
from models.plugins import Registry, Requirements

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
    # What a GPU watch saw during the window (None: not observed, e.g. no power reading, or the CPU):
    power_joules: float | None = None  # the polled power reading integrated over the window
    gpu_other_processes: int | None = None  # the most processes besides this one NVML listed on the GPU
    throttled: bool | None = None  # a clock event reason other than idle / application clocks seen


def _noop() -> None:
    pass


class Meter:
    """A begin/end energy window. Subclasses registered in `METERS` say which devices they meter,
    in which order they are tried (`priority`, highest first) and how to open one here (`open`,
    raising `Unsupported` with the reason when they cannot)."""

    source = "none"
    devices: ClassVar[tuple[str, ...]] = ()  # the devices it can meter: cpu, cuda
    priority: ClassVar[int] = 0
    requires: ClassVar[Requirements] = Requirements()
    preroll_s: ClassVar[float] = 0.0  # the work a window's steps run before it opens (bench.measure.cell.window)

    def __init__(self, sync: Callable[[], None] = _noop) -> None:
        self.sync = sync
        self._open: dict[str, float] = {}

    @classmethod
    def open(cls, device: str, gpu_index: int, sync: Callable[[], None]) -> Meter:
        return cls(sync)

    def describe(self) -> str:
        """What it reads, in words (for `twinbench env` and the run's log)."""
        return "no energy counter: energy is unknown"

    def device_state(self) -> dict | None:
        """Clocks, temperature, power limit and throttling of the device it reads; None: it reads no
        device whose state it can tell."""
        return None

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
        return Reading(seconds, joules, self.source if joules is not None else "none", **self._observed(key))

    def _begin(self, key: str) -> None:
        pass

    def _end(self, key: str) -> float | None:
        return None

    def _observed(self, key: str) -> dict:
        """What else was seen during the window (Reading's optional fields)."""
        return {}


METERS: Registry[type[Meter]] = Registry("meter", "twinbench.meters", expects=Meter)


@METERS.register("none")
class NoneMeter(Meter):
    source = "none"
    devices = ("cpu", "cuda")
    priority = -100  # the last resort: energy unknown, never 0


@METERS.register("estimate")
class EstimateMeter(Meter):
    """CPU seconds of this process (all threads) x watts per busy core."""

    source = "estimate"
    devices = ("cpu",)  # CPU time says nothing of a GPU's energy
    priority = 10

    def __init__(self, sync: Callable[[], None] = _noop, watts_per_core: float | None = None) -> None:
        super().__init__(sync)
        self.watts_per_core = watts_per_core or float(
            os.environ.get("TWINBENCH_WATTS_PER_CORE", DEFAULT_WATTS_PER_CORE)
        )
        self._cpu: dict[str, float] = {}

    def describe(self) -> str:
        return f"CPU time x {self.watts_per_core:g} W per busy core"

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


def _zeus_monitor():
    try:
        from zeus.monitor import ZeusMonitor
    except Exception as e:  # ImportError, or a dependency that fails at import (amdsmi without ROCm)
        raise Unsupported(f"zeus not importable ({type(e).__name__}: {e})") from e
    return ZeusMonitor


@METERS.register("nvml")
class NvmlMeter(ZeusMeter):
    """The GPU's cumulative energy counter (Volta and newer), through Zeus."""

    devices = ("cuda",)
    priority = 30
    requires = Requirements(libraries=("zeus",))
    preroll_s = 0.2  # two of the counter's ~100 ms steps

    @classmethod
    def open(cls, device: str, gpu_index: int, sync: Callable[[], None]) -> Meter:
        monitor_cls = _zeus_monitor()
        from zeus.device import get_gpus
        from zeus.device.gpu import ZeusGPUInitError

        # Zeus's own GPU list first (CUDA_VISIBLE_DEVICES applied): ZeusMonitor raises, rather than
        # answering "no counter", for an index beyond it, no NVML, or GPUs named by UUID or MIG.
        try:
            gpus = get_gpus()
        except (ZeusGPUInitError, ValueError) as e:
            raise Unsupported(f"Zeus cannot list the GPUs ({e})") from e
        if gpu_index >= len(gpus) or not gpus.supports_get_total_energy_consumption(gpu_index):
            raise Unsupported("no NVML energy counter for this GPU (pre-Volta or no NVML)")
        nvml_index = visible_gpu_index(gpu_index)
        probe = GpuProbe(gpus, gpu_index, nvml_handle(nvml_index))
        return cls(monitor_cls(gpu_indices=[gpu_index], cpu_indices=[]), gpu_index, sync, probe, nvml_index)

    def __init__(
        self,
        monitor,
        index: int,
        sync: Callable[[], None] = _noop,
        probe: GpuProbe | None = None,
        nvml_index: int | None = None,
    ) -> None:
        super().__init__(monitor, "nvml", index, sync)
        self.probe = probe
        self.nvml_index = nvml_index  # the GPU as NVML numbers it (CUDA_VISIBLE_DEVICES renumbers CUDA's)
        self._watches: dict[str, GpuWatch] = {}
        self._seen: dict[str, dict] = {}

    def describe(self) -> str:
        return f"GPU {self.index} energy counter, cross-checked against its polled power reading"

    def device_state(self) -> dict | None:
        return gpu_state(self.nvml_index) if self.nvml_index is not None else {}

    def _begin(self, key: str) -> None:
        super()._begin(key)
        if self.probe is not None:
            self._watches[key] = GpuWatch(self.probe).start()

    def _end(self, key: str) -> float | None:
        joules = super()._end(key)
        if (watch := self._watches.pop(key, None)) is not None:
            self._seen[key] = watch.stop()
        return joules

    def _observed(self, key: str) -> dict:
        return self._seen.pop(key, {})


@METERS.register("rapl")
class RaplMeter(ZeusMeter):
    """The CPU packages' RAPL counters under /sys/class/powercap, through Zeus."""

    devices = ("cpu",)
    priority = 20
    requires = Requirements(libraries=("zeus",))

    @classmethod
    def open(cls, device: str, gpu_index: int, sync: Callable[[], None]) -> Meter:
        monitor_cls = _zeus_monitor()
        if not RAPL_DIR.is_dir() or not any(RAPL_DIR.glob("intel-rapl:*")):
            raise Unsupported(f"no RAPL zones under {RAPL_DIR}")
        monitor = monitor_cls(gpu_indices=[], cpu_indices=None)
        if not len(monitor.cpus):
            raise Unsupported("RAPL zones present but not readable (needs root)")
        return cls(monitor, "rapl", sync=sync)

    def describe(self) -> str:
        return "CPU package counters"


@dataclass(frozen=True)
class MeterChoice:
    meter: Meter
    why: str  # how it was chosen, and why the better sources were not


def choose_meter(device: str, gpu_index: int = 0, sync: Callable[[], None] = _noop) -> MeterChoice:
    """The best energy source for a device: each registered meter that serves it, from the highest
    priority down (nvml for CUDA; rapl, then the estimate, for the CPU; none last)."""
    reasons = []
    for name, entry in sorted(METERS.entries().items(), key=lambda item: -item[1].obj.priority):
        cls = entry.obj
        if device not in cls.devices:
            continue
        try:
            if reason := cls.requires.unmet(device):
                raise Unsupported(reason)
            meter = cls.open(device, gpu_index, sync)
        except Unsupported as e:
            reasons.append(f"{name}: {e.reason}")
            continue
        return MeterChoice(
            meter, f"{meter.source}: {meter.describe()}" + (f" ({'; '.join(reasons)})" if reasons else "")
        )
    raise Unsupported(f"no energy meter serves device {device!r}")
