"""The run's energy meters as the windows that meter a model's creation (models/creation.py): the
same meter choice as `run` (NVML through Zeus on a GPU, RAPL where it exists, the labelled estimate
on a CPU), and the device's name, so that a checkpoint says where it was made."""

from __future__ import annotations

import itertools
import time

from bench.measure.environment import cpu_model
from bench.measure.meters import Meter, choose_meter
from bench.measure.nvml import gpu_info
from models.creation import BELOW_RESOLUTION

# A counter that did not move over a window this short read less than its resolution (NVML updates
# its energy counter every ~100 ms): the work's energy is below what it can tell, not unknown.
BELOW_RESOLUTION_S = 1.0
COUNTERS = ("nvml", "rapl")  # meters that read a device's energy, idle included
IDLE_S = 2.0  # the idle window before the first creation window (on a counter)
IDLE_SETTLE_S = 0.25  # as bench/measure/protocol.py waits before its idle windows


class CreationWindows:
    """A Meter as models.creation.CreationMeter: start/stop windows, each under its own key."""

    def __init__(self, meter: Meter, device: str) -> None:
        self.meter, self.device = meter, device
        self._keys = itertools.count()
        self._started: dict[str, float] = {}
        self.idle_power_w: float | None = None
        self._idle_measured = meter.source not in COUNTERS  # an estimate has no idle: a sleeping process

    def _measure_idle(self) -> None:
        """The device's idle power, once, before the first window (as `run` measures it before its
        cells): a creation's dynamic share is its energy minus idle power x its seconds."""
        self._idle_measured = True
        time.sleep(IDLE_SETTLE_S)
        self.meter.begin("creation-idle")
        time.sleep(IDLE_S)
        reading = self.meter.end("creation-idle")
        if reading.joules is not None and reading.seconds > 0:
            self.idle_power_w = reading.joules / reading.seconds

    def start(self) -> str:
        if not self._idle_measured:
            self._measure_idle()
        key = f"creation-{next(self._keys)}"
        self._started[key] = time.perf_counter()
        self.meter.begin(key)
        return key

    def stop(self, key: str) -> tuple[float | None, str, tuple]:
        reading = self.meter.end(key)
        seconds = time.perf_counter() - self._started.pop(key)
        flags = ("throttled",) if reading.throttled else ()
        if reading.joules is None and self.meter.source in COUNTERS and seconds < BELOW_RESOLUTION_S:
            flags += (BELOW_RESOLUTION,)
        return reading.joules, reading.source, flags, self.idle_power_w


def device_name(device: str) -> str:
    """The name a cost is made on: the GPU's (NVML) or the CPU's model."""
    if device == "cuda":
        name = gpu_info().get("gpu_name")
        if name:
            return str(name)
    return cpu_model()


def creation_windows(device: str, meter: Meter | None = None) -> CreationWindows:
    """Windows on `meter`, or on the meter `run` would choose for `device`."""
    if meter is None:
        import torch

        sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
        meter = choose_meter(device, gpu_index=0, sync=sync).meter
    return CreationWindows(meter, device_name(device))
