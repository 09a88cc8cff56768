"""Meters (NVML stubbed at its boundary), statistics, validity flags and record invariants."""

import json
import time
from unittest import mock

import numpy as np
import pynvml
import pytest

from bench.measure.meters import EstimateMeter, NoneMeter, ZeusMeter, choose_meter
from bench.measure.stats import percentiles_ms, summarize
from bench.measure.validity import Evidence, validity_flags
from bench.records import Record
from tests.conftest import stubbed_nvml


@pytest.fixture
def fake_nvml():
    """pynvml patched with autospec (as Zeus's own tests do): one Hopper GPU whose energy counter
    reads 1,000,000 mJ at the window's start and 1,250,000 mJ at its end."""
    names = ["nvmlInit", "nvmlShutdown", "nvmlDeviceGetCount", "nvmlDeviceGetHandleByIndex",
             "nvmlDeviceGetArchitecture", "nvmlDeviceGetTotalEnergyConsumption", "nvmlDeviceGetName"]  # fmt: skip
    with stubbed_nvml(names) as mocks:
        mocks["nvmlDeviceGetCount"].return_value = 1
        mocks["nvmlDeviceGetHandleByIndex"].return_value = "gpu0"
        mocks["nvmlDeviceGetArchitecture"].return_value = pynvml.NVML_DEVICE_ARCH_HOPPER
        mocks["nvmlDeviceGetName"].return_value = "NVIDIA H100 80GB HBM3"
        mocks["nvmlDeviceGetTotalEnergyConsumption"].side_effect = [1_000_000, 1_250_000]
        yield mocks


def test_nvml_counter_delta_gives_joules_per_inference(fake_nvml):
    choice = choose_meter("cuda")
    assert choice.meter.source == "nvml" and "nvml" in choice.why
    meter = choice.meter
    meter.begin("cell")
    reading = meter.end("cell")
    assert reading.source == "nvml"
    assert reading.joules == pytest.approx(250.0)  # (1,250,000 - 1,000,000) mJ
    iterations, batch = 100, 5
    assert reading.joules / (iterations * batch) == pytest.approx(0.5)


@pytest.mark.filterwarnings("ignore:The energy consumption of one or more GPUs was measured as zero")
def test_a_counter_that_did_not_move_is_not_zero_joules(fake_nvml):
    fake_nvml["nvmlDeviceGetTotalEnergyConsumption"].side_effect = [1_000_000, 1_000_000]
    meter = choose_meter("cuda").meter
    meter.begin("short")
    reading = meter.end("short")
    assert reading.joules is None and reading.source == "none"


def test_zeus_empty_dict_becomes_none_never_zero():
    """Zeus answers a window with {} when it has no counter for the device."""
    monitor = mock.Mock()
    monitor.end_window.return_value = mock.Mock(gpu_energy={}, cpu_energy=None)
    for source in ("nvml", "rapl"):
        meter = ZeusMeter(monitor, source, index=0)
        meter.begin("w")
        reading = meter.end("w")
        assert reading.joules is None and reading.source == "none"


def test_cpu_without_rapl_falls_back_to_a_labelled_estimate():
    choice = choose_meter("cpu")
    assert choice.meter.source == "estimate"
    assert "estimate" in choice.why and "RAPL" in choice.why
    meter = choice.meter
    meter.begin("busy")
    end = time.process_time() + 0.05
    while time.process_time() < end:
        pass
    reading = meter.end("busy")
    assert reading.source == "estimate" and reading.joules > 0
    assert reading.joules == pytest.approx(0.05 * meter.watts_per_core, rel=0.5)


def test_estimate_and_none_meters_label_themselves():
    none = NoneMeter()
    none.begin("x")
    reading = none.end("x")
    assert reading.joules is None and reading.source == "none" and reading.seconds >= 0
    assert EstimateMeter(watts_per_core=3.0).watts_per_core == 3.0


def test_statistics_on_known_samples():
    s = summarize([1.0, 2.0, 3.0, 4.0, 100.0])
    assert s.median == 3.0 and s.n == 5
    assert s.ci95_low <= 3.0 <= s.ci95_high
    assert s.cv == pytest.approx(np.std([1, 2, 3, 4, 100], ddof=1) / 22.0)
    flat = summarize([2.0, 2.0, 2.0])
    assert flat.cv == 0.0 and flat.ci95_low == flat.ci95_high == 2.0
    with pytest.raises(ValueError):
        summarize([])
    with pytest.raises(ValueError):
        summarize([1.0, float("nan")])
    p = percentiles_ms([0.001] * 99 + [0.1])
    assert p["p50"] == pytest.approx(1.0) and p["p99"] > 1.0 and p["mean"] == pytest.approx(1.99)


CLEAN = dict(window_s=5.0, cv=0.01, source="nvml", avg_power_w=300.0, idle_power_w=70.0, power_limit_w=700.0,
             throttled=False, outputs_match=True)  # fmt: skip


@pytest.mark.parametrize(
    "change, flag",
    [
        ({"window_s": 0.2}, "short_window"),
        ({"cv": 0.05}, "high_cv"),
        ({"avg_power_w": 50.0}, "power_out_of_range"),
        ({"avg_power_w": 900.0}, "power_out_of_range"),
        ({"throttled": True}, "throttled"),
        ({"outputs_match": False}, "checksum_mismatch"),
    ],
)
def test_validity_flags_fire(change, flag):
    assert validity_flags(Evidence(**CLEAN)) == ()
    assert flag in validity_flags(Evidence(**{**CLEAN, **change}))


def test_records_refuse_dishonest_numbers():
    base = dict(run_id="r", suite="smoke", twin="t", grid="g", variant_id="v", variant_name="v")
    with pytest.raises(ValueError, match="0 J"):
        Record(**base, energy_j_per_inference=0.0, energy_source="estimate")
    with pytest.raises(ValueError, match="source"):
        Record(**base, energy_j_per_inference=1.0, energy_source="none")
    with pytest.raises(ValueError, match="say why"):
        Record(**base, status="unsupported")
    r = Record(**base, status="unsupported", status_reason="needs CUDA", flags=("short_window",))
    assert Record.from_dict(json.loads(r.to_json())) == r


class FakeDevice:
    """A device on a virtual clock: each step costs the host `launch_s` and queues `work_s` on the
    device (the first step also `first_s` of compilation); `sync` waits for the queue to drain."""

    def __init__(self, launch_s: float, work_s: float, first_s: float = 0.0, late: tuple[int, float] = (-1, 0.0)):
        self.now = self.done = 0.0
        self.launch_s, self.work_s, self.first_s, self.steps = launch_s, work_s, first_s, 0
        self.late = late  # (step number, seconds): a one-off cost after the warm-up (a late autotune)

    def step(self):
        self.now += self.launch_s + (self.first_s if self.steps == 0 else 0.0)
        self.now += self.late[1] if self.steps == self.late[0] else 0.0
        self.done = max(self.done, self.now) + self.work_s
        self.steps += 1

    def sync(self):
        self.now = max(self.now, self.done)


@pytest.mark.parametrize(
    "launch_s, work_s, first_s, late",
    [(1e-3, 0.0, 0.5, (-1, 0)), (1e-4, 1e-3, 2.0, (-1, 0)), (1e-3, 0.0, 0.0, (-1, 0)), (0.3, 0.0, 0.0, (-1, 0)),
     (1e-3, 0.0, 0.0, (10, 0.5)), (1e-3, 0.0, 0.0, (40, 0.04))],
    ids=["cpu-with-compile", "gpu-async-queue", "cpu", "slower-than-the-window", "late-one-off", "late-in-a-long-block"],
)  # fmt: skip
def test_calibration_gives_the_window_at_the_steady_pace(monkeypatch, launch_s, work_s, first_s, late):
    """Iterations are what a window of `window_s` holds at the pace steps run in a window (queued, not
    synced one by one), with compilation and first-run costs outside the estimate."""
    from types import SimpleNamespace

    import bench.measure.cell

    device = FakeDevice(launch_s, work_s, first_s, late)
    monkeypatch.setattr(bench.measure.cell, "time", SimpleNamespace(perf_counter=lambda: device.now))
    iterations = bench.measure.cell.calibrate(device.step, device.sync, 0.2)
    pace = max(launch_s, work_s)
    assert iterations == max(1, round(0.2 / pace))
    start = device.now
    for _ in range(iterations):  # the window itself, on the same clock
        device.step()
    device.sync()
    assert abs((device.now - start) - max(0.2, pace)) <= pace + 1e-9  # the window lasts 0.2 s, to a step
