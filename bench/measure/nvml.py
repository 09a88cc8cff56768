"""Every NVML call twinbench makes, each answering None or {} where NVML cannot (no GPU, no driver,
an unsupported query, a stub): which physical GPU a CUDA index is, the device's state and identity,
and the probe and watch that poll a GPU beside its energy counter during a window."""

from __future__ import annotations

import os
import threading
import time

# Clock event reasons that are not throttling: an idle GPU, or clocks an administrator set
# (nvmlClocksEventReasonGpuIdle | nvmlClocksEventReasonApplicationsClocksSetting).
BENIGN_CLOCK_REASONS = 0x1 | 0x2


def is_throttled(reasons: int) -> bool:
    """Whether NVML's clock event reasons say the GPU is slowed (thermal, power, ...)."""
    return bool(int(reasons) & ~BENIGN_CLOCK_REASONS)


def gpu_state(index: int = 0) -> dict:
    """SM clock, temperature, power limit and throttle reasons from NVML; {} where there is none."""
    try:
        import pynvml

        pynvml.nvmlInit()
        h = pynvml.nvmlDeviceGetHandleByIndex(index)
        reasons = pynvml.nvmlDeviceGetCurrentClocksEventReasons(h)
        return {
            "sm_clock_mhz": pynvml.nvmlDeviceGetClockInfo(h, pynvml.NVML_CLOCK_SM),
            "temperature_c": pynvml.nvmlDeviceGetTemperature(h, pynvml.NVML_TEMPERATURE_GPU),
            "power_limit_w": pynvml.nvmlDeviceGetEnforcedPowerLimit(h) / 1000.0,
            "clock_event_reasons": int(reasons),
            "throttled": is_throttled(reasons),
        }
    except Exception:  # no NVML, no GPU, or an older driver: no device state to report
        return {}


def gpu_info(index: int = 0) -> dict:
    try:
        import pynvml

        pynvml.nvmlInit()
        h = pynvml.nvmlDeviceGetHandleByIndex(index)
        name = pynvml.nvmlDeviceGetName(h)
        return {
            "gpu_name": name.decode() if isinstance(name, bytes) else name,
            "driver": pynvml.nvmlSystemGetDriverVersion(),
            "power_limit_w": pynvml.nvmlDeviceGetEnforcedPowerLimit(h) / 1000.0,
        }
    except Exception:
        return {}


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


def nvml_handle(nvml_index: int | None):
    if nvml_index is None:
        return None
    try:
        import pynvml

        return pynvml.nvmlDeviceGetHandleByIndex(nvml_index)
    except Exception:  # no handle: the watch reports power only
        return None
