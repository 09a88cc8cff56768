"""Issue 26 (first part): LoadGen drives a session through single-stream and server, with joules
over its performance phase, its verdict and logs kept as they are."""

import time
from types import SimpleNamespace

import numpy as np
import pytest

from bench.measure.loadgen import ScenarioRequest, ServerConfig, find_peak, read_detail_log, run_scenario
from bench.measure.meters import EstimateMeter
from bench.measure.runtimes import RUNTIMES, RuntimeContext
from models.checkpoint import train_or_load
from models.registry import get_twin

pytest.importorskip("mlperf_loadgen")


@pytest.fixture(scope="module")
def gnn_session(smoke_grid, tmp_path_factory):
    """The smoke GNN on torch-eager, and its test split's inputs (what the QSL serves)."""
    import torch

    torch.set_num_threads(1)
    cls = get_twin("grid-gnn")
    twin = cls(smoke_grid, cls.config_for("smoke"))
    model, _, _ = train_or_load(twin, log=lambda m: None)
    ctx = RuntimeContext(device="cpu", threads=1, workdir=tmp_path_factory.mktemp("artifacts"), twin=twin)
    return RUNTIMES.get("torch-eager").open(model.eval(), ctx), twin.inputs("test")


def test_single_stream_serves_the_test_split_one_at_a_time_and_meters_the_phase(gnn_session, tmp_path):
    session, inputs = gnn_session
    result = run_scenario(session, inputs, ScenarioRequest("single-stream", 1.0, tmp_path), EstimateMeter())
    assert set(result.batches) == {1} and result.completed == len(result.batches) >= 64
    assert result.valid and result.early_stopping_met and result.outputs_match
    assert 0 < result.latency_ms["p50"] <= result.latency_ms["p90"] <= result.latency_ms["p99"]
    assert result.energy_source == "estimate" and result.j_per_inference > 0
    assert result.window_s >= result.phase_s >= 1.0  # the meter's window covers LoadGen's performance phase
    assert result.achieved_qps == pytest.approx(result.completed / result.phase_s, rel=0.05)
    summary = (tmp_path / "mlperf_log_summary.txt").read_text()
    assert "Scenario : SingleStream" in summary and "Result is : VALID" in summary


def test_a_short_server_run_keeps_loadgens_invalid_verdict_and_batches(gnn_session, tmp_path):
    session, inputs = gnn_session
    config = ServerConfig(target_qps=200, latency_bound_ms=50, max_batch=8, max_queue_delay_ms=5)
    result = run_scenario(session, inputs, ScenarioRequest("server", 1.0, tmp_path, config), EstimateMeter())
    assert result.target_qps == 200 and max(result.batches) <= 8 and result.outputs_match
    detail = read_detail_log(tmp_path / "mlperf_log_detail.txt")
    assert result.valid == (detail["result_validity"] == "VALID")  # 1 s is below LoadGen's minimums: as it says
    assert result.early_stopping_met == detail["early_stopping_met"]
    assert result.completed == sum(result.batches) > 0


def test_peak_is_loadgens_peak_search_then_one_metered_run_at_it(tmp_path):
    weights = np.random.default_rng(1).standard_normal((16, 16)).astype(np.float32)

    def predict(x):
        time.sleep(0.001)  # a fixed cost per call: batching raises the peak
        return x @ weights

    inputs = (np.random.default_rng(0).standard_normal((256, 16)).astype(np.float32),)
    config = ServerConfig(target_qps=None, latency_bound_ms=20, max_batch=16, max_queue_delay_ms=1)
    req = ScenarioRequest("server", 0.5, tmp_path, config)
    result = run_scenario(SimpleNamespace(predict=predict), inputs, req, EstimateMeter())
    peak = find_peak(read_detail_log(tmp_path / "peak-search" / "mlperf_log_detail.txt"))
    assert result.at_peak and result.target_qps == peak > 0 and result.outputs_match
    assert read_detail_log(tmp_path / "mlperf_log_detail.txt")["effective_target_qps"] == pytest.approx(peak, rel=1e-4)


def test_on_the_simulated_h100_idle_power_makes_a_slow_rate_cost_more_per_inference(tmp_path, monkeypatch):
    """Issue 26: LoadGen's server at 20 and at 200 queries/s on the simulated H100 (70 W idle, 300 W
    while a step runs): at the low rate each inference carries ten times the idle time. The window's
    energy matches the simulator's exact integral within the counter's update step."""
    from bench.measure.meters import choose_meter
    from tests.nvml_sim import RecordingMeter, SimulatedGPU, simulated_nvml

    gpu = SimulatedGPU()
    weights = np.random.default_rng(1).standard_normal((16, 16)).astype(np.float32)

    def predict(x):
        def step():
            time.sleep(0.002)  # the "GPU work" of one call
            return x @ weights

        return gpu.tracked(step)()

    inputs = (np.random.default_rng(0).standard_normal((512, 16)).astype(np.float32),)
    per_inference = {}
    with simulated_nvml(gpu, monkeypatch):
        choice = choose_meter("cuda")
        assert choice.meter.source == "nvml", choice.why
        meter = RecordingMeter(choice.meter, gpu)
        for qps in (20, 200):
            config = ServerConfig(target_qps=qps, latency_bound_ms=100, max_batch=1)
            req = ScenarioRequest("server", 2.0, tmp_path / str(qps), config)
            result = run_scenario(SimpleNamespace(predict=predict), inputs, req, meter)
            window = meter.windows[-1]
            truth = gpu.true_joules(window.t0, window.t1)
            assert result.energy_source == "nvml"
            assert result.energy_j == pytest.approx(truth, abs=(gpu.idle_w + gpu.active_w) * gpu.update_s)
            per_inference[qps] = result.j_per_inference
    print(f"\nsimulated H100: {per_inference[20]:.3g} J/inference at 20 qps, {per_inference[200]:.3g} at 200 qps")
    # Per request: 70 W idle over 50 ms (3.5 J) or 5 ms (0.35 J), plus ~0.46 J of work: about 4.9x.
    assert per_inference[20] > 3 * per_inference[200]


def test_a_session_that_fails_while_serving_raises_instead_of_hanging_loadgen(tmp_path):
    calls = []

    def predict(x):
        calls.append(len(x))
        if len(calls) > 11:  # the warm-up and the 10 timed calls pass; serving breaks
            raise RuntimeError("the session broke")
        return x

    req = ScenarioRequest("server", 0.5, tmp_path, ServerConfig(target_qps=100, latency_bound_ms=50))
    with pytest.raises(RuntimeError, match="the session broke"):
        run_scenario(SimpleNamespace(predict=predict), (np.ones((8, 4), np.float32),), req, EstimateMeter())
