"""Issue 26: LoadGen scenario cells in a run: the GNN on CPU at two server rates, at its peak, and
single-stream, beside the offline protocol; records, logs, summary and bad input."""

import json

import pytest

from bench.cli import main
from bench.measure.loadgen import read_detail_log
from bench.run.runner import RunRequest, run

pytest.importorskip("mlperf_loadgen")

SUITE = """description = "the GNN under LoadGen"
device = "cpu"
model_size = "smoke"
grids = ["1-LV-rural1--2-sw"]
twins = ["grid-gnn"]

[measure]
window_s = 0.2
repetitions = 3
batch_sizes = [1]
runtimes = ["torch-eager"]
scenarios = ["offline", "single-stream", "server"]
scenario_s = 5.0

[measure.server]
target_qps = [100, 400, "peak"]
latency_bound_ms = 50
max_batch = 16
max_queue_delay_ms = 5
"""


@pytest.fixture(scope="module")
def scenario_run(tmp_path_factory, smoke_grid):
    folder = tmp_path_factory.mktemp("scenarios")
    suite = folder / "loadgen.toml"
    suite.write_text(SUITE)
    run_dir = run(
        RunRequest(suite=str(suite), variants=["reference"], threads=1, out=folder / "runs"), log=lambda m: None
    )
    return run_dir, {r.scenario: r for r in run_dir.records()}


def test_server_cells_meet_their_rate_and_carry_loadgens_own_figures(scenario_run):
    run_dir, by = scenario_run
    assert set(by) == {"offline", "single-stream", "server@100qps", "server@400qps", "server@peak"}
    low = by["server@100qps"]
    assert low.status == "ok" and low.target_qps == 100 and low.achieved_qps == pytest.approx(100, rel=0.05)
    for label in ("server@100qps", "server@400qps", "server@peak", "single-stream"):
        r = by[label]
        detail = read_detail_log(run_dir.path / r.scenario_settings["logs"][1])
        assert r.latency_ms_p99 == detail["result_99.00_percentile_latency_ns"] / 1e6  # LoadGen's own p99
        assert r.loadgen_valid == (detail["result_validity"] == "VALID")  # valid or explicitly not
        assert ("loadgen_invalid" in r.flags) == (not r.loadgen_valid)
        assert r.output_checksum_match and r.energy_source == "estimate" and r.energy_j_per_inference > 0
        assert (run_dir.path / r.scenario_settings["logs"][0]).is_file()  # the summary log, in the run folder
        assert r.quality_loss_pct is None  # quality is the offline cell's: no scenario cell enters a frontier
    peak = by["server@peak"]
    assert peak.scenario_settings["at_peak"] and peak.target_qps > 100
    assert (
        run_dir.path / "loadgen" / "grid-gnn" / "reference" / "torch-eager" / "server@peak" / "peak-search"
    ).is_dir()


def test_single_stream_p90_agrees_with_the_offline_latency_pass(scenario_run):
    _, by = scenario_run
    ratio = by["single-stream"].latency_ms_p90 / by["offline"].latency_ms_p90
    print(f"\nsingle-stream p90 / offline p90 at batch 1: {ratio:.2f}")
    assert 0.5 < ratio < 2.0  # LoadGen's per-query overhead and the offline pass's timing differ a little


def test_summary_lists_the_scenarios_and_resume_keeps_them(scenario_run):
    run_dir, _ = scenario_run
    text = (run_dir.path / "summary.md").read_text()
    assert "## LoadGen scenarios" in text and "| server@100qps | 100 |" in text
    plan = json.loads((run_dir.path / "plan.json").read_text())
    assert [s["name"] for s in plan["scenarios"]] == ["single-stream", "server", "server", "server"]
    assert sum(c.endswith("server@peak") for c in plan["cells"]) == 1


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda t: t.replace("[100, 400,", "[0, 200,"), "target_qps must be a list of rates in (0, 1e7]"),
        (lambda t: t.replace("[100, 400,", "[nan, 200,"), "target_qps must be a list of rates in (0, 1e7]"),
        (lambda t: t.replace("latency_bound_ms = 50", "latency_bound_ms = 0"), "latency_bound_ms (at p99) must be"),
        (lambda t: t.replace('"single-stream", "server"]', '"multi-stream"]'), "scenarios must be a list of offline"),
        (lambda t: t.split("[measure.server]")[0], "the server scenario needs a [measure.server] table"),
    ],
)
def test_bad_scenario_settings_exit_2(tmp_path, capsys, edit, message):
    suite = tmp_path / "bad.toml"
    suite.write_text(edit(SUITE))
    assert main(["run", "--suite", str(suite), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_an_unknown_scenario_or_a_server_without_settings_on_the_command_line_exit_2(capsys):
    assert main(["run", "--suite", "smoke", "--scenario", "multi-stream", "--dry-run"]) == 2
    assert "invalid choice: 'multi-stream'" in capsys.readouterr().err
    assert main(["run", "--suite", "smoke", "--scenario", "server", "--dry-run"]) == 2
    assert "--scenario server needs the suite's [measure.server] table" in capsys.readouterr().err


def test_without_loadgen_a_scenario_cell_is_unsupported_and_says_why(monkeypatch):
    import sys

    from bench.measure import loadgen
    from models.errors import Unsupported

    monkeypatch.setitem(sys.modules, "mlperf_loadgen", None)
    with pytest.raises(Unsupported, match="pip install mlcommons-loadgen"):
        loadgen._loadgen()


def test_select_says_how_many_devices_and_uses_the_server_cell_near_the_rate(scenario_run, capsys):
    run_dir, by = scenario_run
    argv = ["select", "--run", str(run_dir.path), "--twin", "grid-gnn", "--max-quality-loss-pct", "1"]
    assert main([*argv, "--rate", "100/s", "--instances", "50"]) == 0
    out = capsys.readouterr().out
    peak = by["server@peak"].target_qps
    assert f"capacity: {peak:.4g} inferences/s per device at p99 <= 50 ms (LoadGen's peak" in out
    assert f"5000/s over the fleet needs {-(-5000 // peak):.0f} device(s)" in out
    assert "at server@100qps (LoadGen)" in out  # the yearly figure at 100/s: the cell measured there


def test_the_report_draws_joules_against_the_served_rate(scenario_run):
    from bench.decide import report

    page = report.write(scenario_run[0]).read_text()
    assert "vs served rate (LoadGen server)" in page  # the chart's title (plotly escapes its slash)
