"""What an nvml window watches beside the counter (its power reading, the GPU's processes, its clock
event reasons), the flags that come of it, and where they show: on the simulated H100 of
tests/nvml_sim.py, without the protocol (tests/measure/test_nvml_truth.py runs the protocol)."""

import time
from dataclasses import replace

import pynvml
import pytest

from bench.measure.meters import NvmlMeter, choose_meter
from bench.measure.nvml import integrate_power
from bench.measure.validity import CROSSCHECK_PCT, Evidence, validity_flags
from bench.records import describe_flags
from tests.nvml_sim import SimulatedGPU, simulated_nvml

CLEAN = dict(
    window_s=5.0,
    cv=0.01,
    source="nvml",
    avg_power_w=100.0,
    idle_power_w=50.0,
    power_limit_w=700.0,
    throttled=False,
    outputs_match=True,
)


def test_a_window_that_came_out_short_is_flagged():
    assert validity_flags(Evidence(**CLEAN, measured_window_s=4.8)) == ()
    assert validity_flags(Evidence(**CLEAN, measured_window_s=2.5)) == ("short_window",)
    assert validity_flags(Evidence(**{**CLEAN, "window_s": 0.2}, measured_window_s=0.2)) == ("short_window",)


def test_integrated_power_holds_each_reading_until_the_next():
    assert integrate_power([(0.0, 100.0), (2.0, 300.0)], 0.0, 5.0) == pytest.approx(100 * 2 + 300 * 3)
    assert integrate_power([(1.0, 100.0), (7.0, 500.0)], 1.0, 5.0) == pytest.approx(400.0)  # outside: ignored
    assert integrate_power([], 0.0, 5.0) is None
    assert integrate_power([(4.0, 100.0)], 0.0, 5.0) is None  # no reading for most of the window


def test_counter_disagreement_and_gpu_neighbours_are_flagged():
    assert validity_flags(Evidence(**CLEAN, crosscheck_pct=CROSSCHECK_PCT - 1)) == ()
    assert validity_flags(Evidence(**CLEAN, crosscheck_pct=-(CROSSCHECK_PCT + 1))) == ("counter_disagrees",)
    assert validity_flags(Evidence(**CLEAN, crosscheck_pct=CROSSCHECK_PCT + 1)) == ("counter_disagrees",)
    assert validity_flags(Evidence(**CLEAN, gpu_other_processes=0)) == ()
    assert validity_flags(Evidence(**CLEAN, gpu_other_processes=2)) == ("contended",)
    assert validity_flags(Evidence(**CLEAN, gpu_other_processes=1, contention_cores=2.0)) == ("contended",)  # once


@pytest.fixture
def h100(monkeypatch):
    gpu = SimulatedGPU()
    with simulated_nvml(gpu, monkeypatch) as mocks:
        yield gpu, mocks


def _busy_window(meter, gpu, seconds, load="steady"):
    step = gpu.tracked(lambda: time.sleep(0.001), load)
    meter.begin("w")
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        step()
    return meter.end("w")


def test_an_nvml_window_carries_what_its_watch_saw(h100):
    gpu, _ = h100
    meter = choose_meter("cuda").meter
    assert isinstance(meter, NvmlMeter) and "cross-checked" in meter.describe()
    reading = _busy_window(meter, gpu, 1.0)
    assert reading.source == "nvml" and reading.gpu_other_processes == 0 and reading.throttled is False
    # A steady load: the power reading's slices see what the counter sees (1 s: edges cost ~10 %).
    assert reading.power_joules == pytest.approx(reading.joules, rel=0.1)
    assert meter.device_state() == {
        "sm_clock_mhz": 1980,
        "temperature_c": 40,
        "power_limit_w": 700.0,
        "clock_event_reasons": 0,
        "throttled": False,
    }


def test_a_bursty_load_escapes_the_power_reading_but_not_the_counter(h100):
    gpu, _ = h100
    meter = choose_meter("cuda").meter
    reading = _busy_window(meter, gpu, 1.0, load="bursty")
    assert reading.power_joules == pytest.approx(gpu.idle_w * reading.seconds, rel=0.05)
    assert reading.joules > 1.5 * reading.power_joules


def test_a_full_time_power_reading_sees_the_bursts(monkeypatch):
    gpu = SimulatedGPU(power_part_time=False)
    with simulated_nvml(gpu, monkeypatch):
        reading = _busy_window(choose_meter("cuda").meter, gpu, 1.0, load="bursty")
    assert reading.power_joules == pytest.approx(reading.joules, rel=0.1)


def test_a_part_time_counter_misses_the_bursts_too(monkeypatch):
    """Then counter and power reading agree, and both are wrong: nothing NVML gives can tell."""
    gpu = SimulatedGPU(counter_part_time=True)
    with simulated_nvml(gpu, monkeypatch):
        meter = choose_meter("cuda").meter
        reading = _busy_window(meter, gpu, 1.0, load="bursty")
    assert reading.joules == pytest.approx(reading.power_joules, rel=0.1)
    assert reading.joules == pytest.approx(gpu.idle_w * reading.seconds, rel=0.1)


def test_neighbours_are_the_processes_besides_this_one(h100):
    gpu, mocks = h100
    meter = choose_meter("cuda").meter
    gpu.neighbours = [4242, 4343]
    assert meter.probe.other_processes() == 2
    # In a container NVML lists host PIDs: this process is not among them, and one listed process
    # is taken to be this one rather than counted as a neighbour.
    host = [type("P", (), {"pid": pid})() for pid in (91001, 91002)]
    mocks["nvmlDeviceGetComputeRunningProcesses"].side_effect = lambda h: host
    assert meter.probe.other_processes() == 1
    mocks["nvmlDeviceGetComputeRunningProcesses"].side_effect = lambda h: host[:1]
    assert meter.probe.other_processes() == 0


def test_a_gpu_without_a_power_reading_has_no_crosscheck(h100):
    gpu, mocks = h100
    unsupported = type("Field", (), {"nvmlReturn": pynvml.NVML_ERROR_NOT_SUPPORTED, "value": None})()
    mocks["nvmlDeviceGetFieldValues"].side_effect = lambda handle, fields: [unsupported]
    meter = choose_meter("cuda").meter
    reading = _busy_window(meter, gpu, 0.3)
    assert reading.joules is not None and reading.power_joules is None


def test_flags_show_the_crosscheck_and_select_warns():
    from bench.decide.select import Constraints, select
    from tests.decide.test_decide import rec

    cell = replace(
        rec("int8", energy=0.4),
        flags=("counter_disagrees", "contended"),
        energy_crosscheck_pct=-62.0,
        gpu_other_processes=1,
        contention_cores=0.1,
    )
    assert describe_flags(cell) == "counter_disagrees (power -62 % vs counter), contended"
    reasons = select([cell], "grid-gnn", Constraints(max_quality_loss_pct=5)).reasons
    gpu_warning = "WARNING: measured while 1 other process(es) used its GPU; its figures are not to be trusted"
    assert any(r.startswith(gpu_warning) for r in reasons), reasons
    counter_warning = "WARNING: the GPU's polled power integrates to -62 % of its energy counter"
    assert any(r.startswith(counter_warning) for r in reasons), reasons


def test_summary_and_report_show_the_crosscheck():
    from bench.decide.report import _row
    from bench.decide.summary import render
    from tests.decide.test_decide import rec

    cell = replace(rec("int8", energy=0.4), flags=("counter_disagrees",), energy_crosscheck_pct=-62.0)
    assert "counter_disagrees (power -62 % vs counter)" in render([cell])
    assert any("counter_disagrees (power -62 % vs counter)" in str(c) for c in _row(cell, set(), {}))
