"""A simulated Hopper GPU at the NVML boundary, whose true energy is known exactly.

pynvml is patched with autospec (as Zeus's own tests do, through `tests.conftest.stubbed_nvml`), so
Zeus and twinbench see one H100 and read it through their ordinary code. What the GPU really draws
is defined here: `idle_w`, plus `active_w` while a benchmarked step runs. The simulator knows when
steps run because the harness wraps each session's step function (`SimulatedGPU.tracked`), so the
true joules between any two instants are an exact integral over wall-clock intervals.

What NVML reports is modelled on what the sources say of Hopper (docs/gpu-power.md):

- the energy counter (`nvmlDeviceGetTotalEnergyConsumption`, mJ) advances only at update steps of
  `update_s` (~100 ms): a read returns the energy up to the last step, not up to now;
- the power reading (`NVML_FI_DEV_POWER_INSTANT` through `nvmlDeviceGetFieldValues`) is the average
  over only the last `slice_s` (25 ms) of each update period: the other 75 % is never seen (Yang et
  al., SC'24); `nvmlDeviceGetPowerUsage` and `NVML_FI_DEV_POWER_AVERAGE` average the last 1 s of
  those readings (NVML docs: Ampere but GA100, and newer, report a 1 s average there);
- `counter_part_time=True` makes the counter integrate the same part-time slices (each slice's
  average power x the whole period), for GPUs where the counter is fed by the same sensor path;
  `power_part_time=False` makes the power reading average its whole period (a full-time sensor).

A step runs in one of two loads: `steady` (active power for as long as it runs) or `bursty` (active
power only in the part of each update period the power reading does not sample: the phase-locked
worst case of a load whose busy phases fall between the sampled slices).

Clocks, throttle reasons, the power limit, temperature and other processes on the GPU are
scriptable; a thermal slowdown is scripted per metered window (`throttle_windows`).
"""

from __future__ import annotations

import bisect
import math
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pynvml
import pytest

from bench.measure import protocol
from bench.measure.meters import Reading, choose_meter
from bench.plan import RunPlan
from bench.records import Record
from bench.run.planning import make_shards
from tests.conftest import stubbed_nvml

NVML_NAMES = [
    "nvmlInit",
    "nvmlShutdown",
    "nvmlDeviceGetCount",
    "nvmlDeviceGetHandleByIndex",
    "nvmlDeviceGetIndex",
    "nvmlDeviceGetC2cModeInfoV",
    "nvmlDeviceGetArchitecture",
    "nvmlDeviceGetName",
    "nvmlSystemGetDriverVersion",
    "nvmlDeviceGetTotalEnergyConsumption",
    "nvmlDeviceGetPowerUsage",
    "nvmlDeviceGetFieldValues",
    "nvmlDeviceGetEnforcedPowerLimit",
    "nvmlDeviceGetClockInfo",
    "nvmlDeviceGetTemperature",
    "nvmlDeviceGetCurrentClocksEventReasons",
    "nvmlDeviceGetComputeRunningProcesses",
]
HANDLE = "gpu0"
LOADS = ("steady", "bursty")


@dataclass
class SimulatedGPU:
    idle_w: float = 70.0
    active_w: float = 230.0
    update_s: float = 0.1  # the counter's and the power reading's update period
    slice_s: float = 0.025  # the part of each period the power reading averages
    power_part_time: bool = True  # False: the power reading averages its whole update period
    counter_part_time: bool = False
    power_limit_w: float = 700.0
    name: str = "NVIDIA H100 80GB HBM3"
    sm_clock_mhz: int = 1980
    temperature_c: int = 40
    # The metered windows (0-based, in the order their counter reads open them) during which the GPU
    # reports a hardware thermal slowdown, with its clocks down to 70 % and 88 C.
    throttle_windows: set[int] = field(default_factory=set)
    neighbours: list[int] = field(default_factory=list)  # PIDs of other processes using the GPU

    def __post_init__(self) -> None:
        self.t0 = time.perf_counter()
        self._lock = threading.Lock()
        # Closed busy intervals, in order: start, end, and the active joules up to each one's end.
        self._starts: list[float] = []
        self._ends: list[float] = []
        self._cum_active_j: list[float] = []
        self._loads: list[str] = []
        self._open: tuple[float, str] | None = None
        self._busy_closed_s = 0.0
        self._part_time_j = [0.0]  # counter_part_time: counted joules at each update step
        self.counter_reads: list[tuple[float, int]] = []  # (time, mJ) of every counter read

    # -- the workload ------------------------------------------------------------------------------

    def tracked(self, step: Callable[[], object], load: str = "steady") -> Callable[[], object]:
        """`step`, recorded as GPU work in `load` while it runs."""
        if load not in LOADS:
            raise ValueError(f"load must be one of {LOADS}")

        def run():
            with self._lock:
                self._open = (time.perf_counter(), load)
            try:
                return step()
            finally:
                with self._lock:
                    start, kind = self._open
                    self._open = None
                    end = time.perf_counter()
                    before = self._cum_active_j[-1] if self._cum_active_j else 0.0
                    self._starts.append(start)
                    self._ends.append(end)
                    self._loads.append(kind)
                    self._cum_active_j.append(before + self._active_j(start, end, kind))
                    self._busy_closed_s += end - start

        return run

    def _bursts_s(self, t: float) -> float:
        """Seconds since t0 that fall outside the power reading's slices (where bursty work runs)."""
        k, phase = divmod(t - self.t0, self.update_s)
        return k * (self.update_s - self.slice_s) + min(phase, self.update_s - self.slice_s)

    def _active_j(self, a: float, b: float, load: str) -> float:
        if b <= a:
            return 0.0
        busy = (b - a) if load == "steady" else self._bursts_s(b) - self._bursts_s(a)
        return self.active_w * busy

    def _active_until(self, t: float) -> float:
        """Active joules from t0 to t (the caller holds the lock)."""
        i = bisect.bisect_right(self._starts, t) - 1
        total = 0.0
        if i >= 0:
            total = self._cum_active_j[i - 1] if i > 0 else 0.0
            total += self._active_j(self._starts[i], min(t, self._ends[i]), self._loads[i])
        if self._open is not None and self._open[0] < t:
            total += self._active_j(self._open[0], t, self._open[1])
        return total

    def true_joules(self, a: float, b: float) -> float:
        """What the GPU really drew between two perf_counter instants."""
        with self._lock:
            return self.idle_w * (b - a) + self._active_until(b) - self._active_until(a)

    def active_joules(self, a: float, b: float) -> float:
        """The part of `true_joules` above idle: what the work itself cost."""
        with self._lock:
            return self._active_until(b) - self._active_until(a)

    def steps_done(self) -> int:
        with self._lock:
            return len(self._starts)

    def steps_span(self, first: int, n: int) -> tuple[float, float]:
        """From the start of step `first` to the end of step `first + n - 1` (0-based, in run order)."""
        with self._lock:
            return self._starts[first], self._ends[first + n - 1]

    def busy_s(self) -> float:
        with self._lock:
            return self._busy_closed_s + (time.perf_counter() - self._open[0] if self._open else 0.0)

    # -- what NVML reports -------------------------------------------------------------------------

    def _step_time(self, k: int) -> float:
        return self.t0 + k * self.update_s

    def _last_step(self, t: float) -> int:
        return math.floor((t - self.t0) / self.update_s)

    def _slice_w(self, k: int) -> float:
        """The power reading published at update step k: the average over the slice before it (the
        whole period before it when the reading is not part-time)."""
        end, span = self._step_time(k), self.slice_s if self.power_part_time else self.update_s
        with self._lock:
            return self.idle_w + (self._active_until(end) - self._active_until(end - span)) / span

    def counter_mj(self) -> int:
        t = time.perf_counter()
        k = self._last_step(t)
        if self.counter_part_time:
            while len(self._part_time_j) <= k:  # each slice's average power, credited for its whole period
                j = len(self._part_time_j)
                self._part_time_j.append(self._part_time_j[-1] + self._slice_w(j) * self.update_s)
            joules = self._part_time_j[k]
        else:
            joules = self.true_joules(self.t0, self._step_time(k))
        mj = 10**9 + int(joules * 1000)  # a counter that started long before this process
        self.counter_reads.append((t, mj))
        return mj

    def instant_mw(self) -> int:
        return int(self._slice_w(self._last_step(time.perf_counter())) * 1000)

    def average_mw(self) -> int:
        k = self._last_step(time.perf_counter())
        n = round(1.0 / self.update_s)
        return int(sum(self._slice_w(j) for j in range(k - n + 1, k + 1)) / n * 1000)

    def throttled(self) -> bool:
        reads = len(self.counter_reads)
        return reads % 2 == 1 and reads // 2 in self.throttle_windows  # inside a window that slows down

    def clock_event_reasons(self) -> int:
        return pynvml.nvmlClocksEventReasonHwThermalSlowdown if self.throttled() else 0

    def processes(self) -> list[SimpleNamespace]:
        return [SimpleNamespace(pid=pid, usedGpuMemory=2**30) for pid in (os.getpid(), *self.neighbours)]

    def field_values(self, handle, fields) -> list[SimpleNamespace]:
        values = []
        for field_id, _scope in fields:
            if field_id == pynvml.NVML_FI_DEV_POWER_INSTANT:
                mw = self.instant_mw()
            elif field_id == pynvml.NVML_FI_DEV_POWER_AVERAGE:
                mw = self.average_mw()
            else:
                values.append(SimpleNamespace(nvmlReturn=pynvml.NVML_ERROR_NOT_SUPPORTED, value=None))
                continue
            values.append(SimpleNamespace(nvmlReturn=pynvml.NVML_SUCCESS, value=SimpleNamespace(uiVal=mw)))
        return values


def _check(handle) -> None:
    if handle != HANDLE:
        raise pynvml.NVMLError(pynvml.NVML_ERROR_INVALID_ARGUMENT)


@contextmanager
def simulated_nvml(gpu: SimulatedGPU, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict]:
    """pynvml answering for `gpu` (and nothing else) while the context lasts; yields the mocks."""
    for var in ("CUDA_VISIBLE_DEVICES", "ZEUSD_SOCK_PATH", "ZEUSD_HOST_PORT", "ZEUSD_TOKEN"):
        monkeypatch.delenv(var, raising=False)

    def handle_by_index(i):
        if i != 0:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        return HANDLE

    def on(handle, value):
        _check(handle)
        return value() if callable(value) else value

    with stubbed_nvml(NVML_NAMES) as m:
        m["nvmlDeviceGetCount"].return_value = 1
        m["nvmlDeviceGetHandleByIndex"].side_effect = handle_by_index
        m["nvmlDeviceGetIndex"].side_effect = lambda h: on(h, 0)
        m["nvmlDeviceGetC2cModeInfoV"].side_effect = pynvml.NVMLError(pynvml.NVML_ERROR_NOT_SUPPORTED)  # not Grace
        m["nvmlDeviceGetArchitecture"].side_effect = lambda h: on(h, pynvml.NVML_DEVICE_ARCH_HOPPER)
        m["nvmlDeviceGetName"].side_effect = lambda h: on(h, gpu.name)
        m["nvmlSystemGetDriverVersion"].return_value = "550.54.15"
        m["nvmlDeviceGetTotalEnergyConsumption"].side_effect = lambda h: on(h, gpu.counter_mj)
        m["nvmlDeviceGetPowerUsage"].side_effect = lambda h: on(h, gpu.average_mw)
        m["nvmlDeviceGetFieldValues"].side_effect = lambda h, fields: on(h, lambda: gpu.field_values(h, fields))
        m["nvmlDeviceGetEnforcedPowerLimit"].side_effect = lambda h: on(h, lambda: int(gpu.power_limit_w * 1000))
        m["nvmlDeviceGetClockInfo"].side_effect = lambda h, clock: on(
            h, lambda: int(gpu.sm_clock_mhz * (0.7 if gpu.throttled() else 1.0))
        )
        m["nvmlDeviceGetTemperature"].side_effect = lambda h, sensor: on(
            h, lambda: 88 if gpu.throttled() else gpu.temperature_c
        )
        m["nvmlDeviceGetCurrentClocksEventReasons"].side_effect = lambda h: on(h, gpu.clock_event_reasons)
        m["nvmlDeviceGetComputeRunningProcesses"].side_effect = lambda h: on(h, gpu.processes)
        yield m


# -- a harness: the real protocol's windows on real CPU cells, metered by the simulated GPU ----------


@dataclass(frozen=True)
class Window:
    key: str  # "idle" or the cell's key
    t0: float  # the counter reads that opened and closed it (perf_counter)
    t1: float
    reading: Reading  # what the meter said
    first_step: int  # the simulator's count of steps run before it opened


class RecordingMeter:
    """The meter under test, with each window's counter reads and first step noted for the truth."""

    def __init__(self, meter, gpu: SimulatedGPU) -> None:
        self.meter, self.gpu = meter, gpu
        self.windows: list[Window] = []
        self._open: dict[str, tuple[float, int]] = {}

    def __getattr__(self, name):
        return getattr(self.meter, name)

    def begin(self, key: str) -> None:
        n, first = len(self.gpu.counter_reads), self.gpu.steps_done()
        self.meter.begin(key)
        self._open[key] = (self.gpu.counter_reads[n][0], first)

    def end(self, key: str) -> Reading:
        n = len(self.gpu.counter_reads)
        reading = self.meter.end(key)
        (t0, first), t1 = self._open.pop(key), self.gpu.counter_reads[n][0]
        self.windows.append(Window(key, t0, t1, reading, first))
        return reading


@dataclass
class SimRun:
    records: list[Record]
    windows: list[Window]
    gpu: SimulatedGPU

    def record(self, batch_size: int) -> Record:
        (r,) = [r for r in self.records if r.batch_size == batch_size]
        return r

    def windows_of(self, record: Record) -> list[Window]:
        return [w for w in self.windows if w.key == record.cell_key]

    def true_work(self, record: Record) -> list[tuple[float, float]]:
        """(total, above idle) joules the GPU really drew for each window's work: from the start of
        its first step to the end of its last (`iterations` steps), whenever the meter read."""
        return [
            (self.gpu.true_joules(*span), self.gpu.active_joules(*span))
            for w in self.windows_of(record)
            for span in [self.gpu.steps_span(w.first_step, record.iterations)]
        ]

    def truth(self, record: Record) -> tuple[float, float]:
        """The true (total, dynamic) joules per inference of a cell: the same median over its windows
        that the protocol takes of the counter's figures."""
        n = record.iterations * record.batch_size
        work = self.true_work(record)
        return float(np.median([t / n for t, _ in work])), float(np.median([a / n for _, a in work]))

    def window_errors(self, record: Record) -> list[float]:
        """Relative error of each of the cell's windows: the counter's joules vs the true joules (NaN
        where the counter did not move)."""
        return [
            (w.reading.joules - t) / t if w.reading.joules is not None else float("nan")
            for w, (t, _) in zip(self.windows_of(record), self.true_work(record), strict=True)
        ]


def measure_on_simulator(
    gpu: SimulatedGPU,
    twin,
    model,
    workdir: Path,
    *,
    window_s: float,
    batch_sizes: tuple[int, ...],
    loads: dict[int, str] | None = None,
    repetitions: int = 3,
    window_fault: Callable | None = None,
    fault_batch_size: int | None = None,
) -> SimRun:
    """One shard (the twin's fp32 reference on torch-eager, on the CPU) measured by the real
    protocol with the simulated GPU's NVML meter: `loads` gives each batch size's load (steady by
    default); `window_fault` replaces the protocol's window function for `fault_batch_size`."""
    loads = loads or {}
    plan = RunPlan(
        suite="nvml-sim",
        device="cpu",
        model_size="smoke",
        grids=(twin.grid.grid,),
        twins=(twin.name,),
        runtimes=("torch-eager",),
        batch_sizes=batch_sizes,
        window_s=window_s,
        repetitions=repetitions,
        threads=1,
    )
    (shard,) = make_shards(plan, plan.cells())
    real_open, real_window = protocol.open_session, protocol.window

    def open_tracked(*args, **kwargs):
        opened = real_open(*args, **kwargs)
        bind = opened.session.bind
        opened.session.bind = lambda *inputs: gpu.tracked(bind(*inputs), loads.get(len(inputs[0]), "steady"))
        return opened

    def window(meter, key, step, iterations):
        faulty = window_fault is not None and key.endswith(f"/bs{fault_batch_size}")
        return (window_fault if faulty else real_window)(meter, key, step, iterations)

    with pytest.MonkeyPatch.context() as mp, simulated_nvml(gpu, mp):
        mp.setattr(protocol, "open_session", open_tracked)
        mp.setattr(protocol, "window", window)
        choice = choose_meter("cuda")
        assert choice.meter.source == "nvml", choice.why
        meter = RecordingMeter(choice.meter, gpu)
        workdir.mkdir(parents=True, exist_ok=True)
        ctx = protocol.ShardContext(
            plan=plan, run_id="nvml-sim", workdir=workdir, meter=meter, env={}, host="sim", device_index=0
        )
        records = protocol.measure_shard(twin, model, shard, ctx)
    return SimRun(records, meter.windows, gpu)


def load_twin(name: str = "grid-gnn", grid: str = "1-LV-rural1--2-sw"):
    """A smoke-size twin and its trained reference (from the checkpoint cache, trained once if absent)."""
    from models.checkpoint import train_or_load
    from models.grid.cache import load_grid
    from models.registry import get_twin

    cls = get_twin(name)
    twin = cls(load_grid(grid), cls.config_for("smoke"))
    model, _, _ = train_or_load(twin, log=lambda m: None, device="cpu")
    return twin, model
