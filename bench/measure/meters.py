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
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from bench.measure.environment import gpu_state, is_throttled
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


# Power polling period: half the ~100 ms update period of the power reading, as Zeus's PowerMonitor
# polls (it halves the update period it infers), so every update is seen at least once.
POWER_POLL_S = 0.05
SLOW_POLL_EVERY = 5  # processes and clock reasons every 5th power poll (0.25 s): cheap enough, and a
# neighbour or a slowdown shorter than that barely moves a window of >= 5 s


class GpuProbe:
    """Single NVML queries about one GPU, each None when NVML cannot answer (unsupported, an old
    driver, a stub): a watch polls these beside the energy counter."""

    def __init__(self, gpus, index: int, handle) -> None:
        self.gpus, self.index, self.handle = gpus, index, handle  # Zeus's GPU list and CUDA index; NVML handle
        self.pid = os.getpid()

    def power_w(self) -> float | None:
        """The instantaneous power reading (NVML_FI_DEV_POWER_INSTANT through Zeus), not
        nvmlDeviceGetPowerUsage: on Ampere (but GA100) and newer that one is a 1 s average, which
        would smear a window's edges over a second."""
        try:
            mw = self.gpus.get_instant_power_usage(self.index)
        except Exception:  # unsupported here (Zeus raises its own types), or no NVML
            return None
        return mw / 1000.0 if mw and mw > 0 else None

    def other_processes(self) -> int | None:
        """Processes besides this one that hold a compute context on the GPU. In a container NVML
        may list host PIDs, so this process's PID is not among them; one listed process is then
        taken to be this one (its own CUDA context), never counted as a neighbour."""
        if self.handle is None:
            return None
        try:
            import pynvml

            pids = [p.pid for p in pynvml.nvmlDeviceGetComputeRunningProcesses(self.handle)]
        except Exception:
            return None
        return len([p for p in pids if p != self.pid]) if self.pid in pids else max(0, len(pids) - 1)

    def throttled(self) -> bool | None:
        if self.handle is None:
            return None
        try:
            import pynvml

            reasons = int(pynvml.nvmlDeviceGetCurrentClocksEventReasons(self.handle))
        except Exception:
            return None
        return is_throttled(reasons)


class GpuWatch:
    """Polls a `GpuProbe` on a background thread for the length of one window: power readings
    (sample-and-hold integrated into joules over the window), the most neighbour processes seen,
    and whether the GPU throttled at any point."""

    def __init__(self, probe: GpuProbe, period_s: float = POWER_POLL_S) -> None:
        self.probe, self.period_s = probe, period_s
        self.power: list[tuple[float, float]] = []
        self.others: list[int] = []
        self.throttle: list[bool] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="twinbench-gpu-watch", daemon=True)

    def start(self) -> GpuWatch:
        self.t0 = time.perf_counter()
        self._poll(slow=True)
        self._thread.start()
        return self

    def _poll(self, slow: bool) -> None:
        if (w := self.probe.power_w()) is not None:
            self.power.append((time.perf_counter(), w))
        if slow:
            if (n := self.probe.other_processes()) is not None:
                self.others.append(n)
            if (t := self.probe.throttled()) is not None:
                self.throttle.append(t)

    def _run(self) -> None:
        tick = 0
        while not self._stop.wait(self.period_s):
            tick += 1
            self._poll(slow=tick % SLOW_POLL_EVERY == 0)

    def stop(self) -> dict:
        """Stop polling; what was seen, as Reading's optional fields."""
        self._stop.set()
        self._thread.join()
        self._poll(slow=True)
        t1 = time.perf_counter()
        return dict(
            power_joules=integrate_power(self.power, self.t0, t1),
            gpu_other_processes=max(self.others) if self.others else None,
            throttled=any(self.throttle) if self.throttle else None,
        )


def integrate_power(samples: list[tuple[float, float]], t0: float, t1: float) -> float | None:
    """Joules from (time, watts) samples over [t0, t1], each reading held until the next (a reading
    is an average over the time before it, so holding it is as fair as interpolating). None without
    a reading in the first half of the window: a reading that started late cannot cover it."""
    inside = [(t, w) for t, w in samples if t0 <= t <= t1]
    if not inside or inside[0][0] > t0 + 0.5 * (t1 - t0):
        return None
    times = [t0] + [t for t, _ in inside[1:]] + [t1]
    return sum(w * (b - a) for (_, w), a, b in zip(inside, times, times[1:], strict=False))


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
        probe = GpuProbe(gpus, gpu_index, _nvml_handle(nvml_index))
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


def _nvml_handle(nvml_index: int | None):
    if nvml_index is None:
        return None
    try:
        import pynvml

        return pynvml.nvmlDeviceGetHandleByIndex(nvml_index)
    except Exception:  # no handle: the watch reports power only
        return None


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
