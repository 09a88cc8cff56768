"""The reference twins: trained at smoke size from the cache, they beat their naive baselines,
export to ONNX faithfully, and refuse checkpoints that are not theirs."""

import dataclasses

import numpy as np
import pytest
import torch

from bench.cli import main
from models.checkpoint import CheckpointError, checkpoint_path, load_checkpoint, train_or_load
from models.export import export_onnx, ort_predict_fn, torch_predict_fn
from models.registry import get_twin, twin_names

# Smallest margin on the primary test metric each twin must keep over each required baseline, in
# percent. Well below what they reach (see docs/twins.md), so a test failure means a real regression.
MIN_MARGIN_PCT = {"sensor-transformer": 5.0, "grid-gnn": 50.0, "diffusion-forecaster": 20.0}


@pytest.fixture(scope="session")
def reference(smoke_grid):
    """twin name -> (twin, trained model), trained once and cached as checkpoints."""
    out = {}
    for name in twin_names():
        cls = get_twin(name)
        twin = cls(smoke_grid, cls.config_for("smoke"))
        model, _, _ = train_or_load(twin, log=lambda m: None)
        out[name] = (twin, model)
    return out


@pytest.mark.parametrize("name", sorted(MIN_MARGIN_PCT))
def test_twin_beats_its_baselines_on_test(reference, name):
    twin, model = reference[name]
    evaluation = twin.evaluate(torch_predict_fn(model), "test")
    assert set(twin.required_baselines) <= set(evaluation.baselines)
    for baseline in twin.required_baselines:
        margin = evaluation.margin_pct(baseline)
        assert margin >= MIN_MARGIN_PCT[name], f"{name} beats {baseline} by only {margin:.1f} %"


@pytest.mark.parametrize("name", sorted(MIN_MARGIN_PCT))
def test_onnx_export_matches_pytorch(reference, name, tmp_path):
    twin, model = reference[name]
    path = export_onnx(model, twin.example_inputs(2), twin.input_names, twin.output_name, tmp_path / f"{name}.onnx")
    ort_fn, torch_fn = ort_predict_fn(path), torch_predict_fn(model)
    for batch_size, seed in ((1, 11), (7, 12)):
        # Random windows of the validation split (and fresh diffusion noise): data never trained on.
        inputs = twin.example_inputs(batch_size, seed)
        expected = torch_fn(*inputs)
        got = ort_fn(*inputs)
        assert got.shape == expected.shape and got.shape[0] == batch_size
        assert np.abs(got - expected).max() <= 1e-4


@pytest.mark.parametrize("runtime", ["torch-eager", "onnxruntime"])
def test_a_sessions_step_is_its_handle_run_bare(reference, runtime, tmp_path):
    """The harness-overhead benchmark times `handle` bare against `bind`'s step: both must be the
    same inference on the same object, or the ratio compares two different things."""
    from bench.measure.runtimes import RuntimeContext, make_session

    twin, model = reference["grid-gnn"]
    session = make_session(runtime, model, RuntimeContext(device="cpu", threads=1, workdir=tmp_path, twin=twin))
    inputs = twin.example_inputs(3, 5)
    step_out = session.to_numpy(session.bind(*inputs)())
    if runtime == "onnxruntime":
        names = [i.name for i in session.handle.get_inputs()]
        bare = session.handle.run(None, dict(zip(names, inputs, strict=True)))[0]
    else:
        with torch.inference_mode():
            bare = session.handle(*(torch.from_numpy(x) for x in inputs)).numpy()
    np.testing.assert_array_equal(step_out, bare)


def test_second_call_loads_the_checkpoint(reference, smoke_grid):
    twin, model = reference["grid-gnn"]
    again, meta, trained = train_or_load(twin, log=lambda m: None)
    assert not trained and meta["data_hash"] == smoke_grid.content_hash
    for (k, a), (_, b) in zip(model.state_dict().items(), again.state_dict().items(), strict=True):
        assert torch.equal(a, b), k


def test_models_are_built_deterministically(smoke_grid):
    cls = get_twin("diffusion-forecaster")
    a = cls(smoke_grid, cls.config_for("smoke")).build_model().state_dict()
    b = cls(smoke_grid, cls.config_for("smoke")).build_model().state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_checkpoint_of_another_config_is_refused(reference, smoke_grid):
    twin, _ = reference["grid-gnn"]
    other = type(twin)(smoke_grid, dataclasses.replace(twin.config, hidden=16))
    with pytest.raises(CheckpointError, match="trained for a different model.*config"):
        load_checkpoint(other, other.build_model(), checkpoint_path(twin))


def test_checkpoint_of_other_data_is_refused(reference, smoke_grid):
    twin, _ = reference["sensor-transformer"]
    other_data = dataclasses.replace(smoke_grid, manifest={**smoke_grid.manifest, "content_hash": "0" * 64})
    other = type(twin)(other_data, twin.config)
    with pytest.raises(CheckpointError, match="data_hash"):
        load_checkpoint(other, other.build_model(), checkpoint_path(twin))


def test_damaged_checkpoint_is_a_clear_error(reference, tmp_path):
    twin, model = reference["grid-gnn"]
    path = checkpoint_path(twin)
    copy = tmp_path / path.name
    copy.write_bytes(path.read_bytes()[:1000])
    copy.with_suffix(".json").write_text(path.with_suffix(".json").read_text())
    with pytest.raises(CheckpointError, match="cannot load checkpoint"):
        load_checkpoint(twin, twin.build_model(), copy)


def test_train_cli_prints_margins(reference, capsys):
    assert main(["train", "--suite", "smoke"]) == 0
    out = capsys.readouterr().out
    for name in twin_names():
        assert name in out
    assert "seasonal_naive" in out and "climatology" in out and "dc_approximation" in out


def test_unknown_twin_is_exit_2(capsys):
    assert main(["train", "--twin", "transformer"]) == 2
    assert "valid twins: diffusion-forecaster, grid-gnn, sensor-transformer" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["grid-gnn", "diffusion-forecaster"])
def test_predict_writes_what_recomputes_the_metric(reference, name, tmp_path):
    out = tmp_path / "pred.npz"
    assert main(["predict", "--twin", name, "--split", "test", "--out", str(out)]) == 0
    twin, model = reference[name]
    evaluation = twin.evaluate(torch_predict_fn(model), "test")
    with np.load(out) as f:
        if name == "grid-gnn":
            keep = np.arange(f["target"].shape[1]) != int(twin.grid.graph["slack_node"])
            err = (f["pred"] - f["target"])[:, keep, 0].astype(np.float64)
            assert np.sqrt((err**2).mean()) == pytest.approx(evaluation.metrics["vm_rmse"], rel=1e-6)
        else:
            samples, target = f["samples"], f["target"]
            assert samples.shape == (target.shape[0], twin.config.n_samples, *target.shape[1:])
            assert twin._scores(samples, target)["crps"] == pytest.approx(evaluation.metrics["crps"], rel=1e-9)


def test_owns_knows_the_twins_model_and_leaves_the_rng_alone(reference):
    """Passes ask `owns` before rewriting layers; the diffusion twin seeds torch in `build_model`,
    so asking must not reset the random stream a training after it draws from."""
    twin, model = reference["diffusion-forecaster"]
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    assert twin.owns(model) and not twin.owns(torch.nn.Sequential(model))
    assert torch.equal(torch.rand(3), expected)


@pytest.mark.parametrize("start", [None, "2016-01-01T00:00", "2024-03-04T06:15", "2023-07-09T23:45"])
def test_diffusion_calendar_is_the_clocks(smoke_grid, start):
    """The calendar inputs are the time of day and weekday of the forecast's first step by the clock
    of the grid's own start (SimBench's 2016-01-01, a Friday, where the profiles carry no time), so
    an exported twin is fed what a deployment computes from its clock."""
    import datetime as dt

    from models.twins.diffusion_forecaster import calendar_features

    manifest = {**smoke_grid.manifest, "time": {**smoke_grid.manifest["time"], "start": start}}
    grid = dataclasses.replace(smoke_grid, manifest=manifest)
    origin = dt.datetime.fromisoformat(start or "2016-01-01T00:00")
    steps = np.array([0, 1, 95, 96, 500, 673, 9000])
    clock = [origin + dt.timedelta(minutes=15 * int(s)) for s in steps]
    day = np.array([2 * np.pi * (t.hour * 60 + t.minute) / 1440 for t in clock])
    weekday = np.array([2 * np.pi * t.weekday() / 7 for t in clock])
    expected = np.stack([np.sin(day), np.cos(day), np.sin(weekday), np.cos(weekday)], -1)
    np.testing.assert_allclose(calendar_features(grid.week_step_of_start + steps), expected, atol=1e-6)
    cls = get_twin("diffusion-forecaster")
    twin = cls(grid, cls.config_for("smoke"))
    window_starts = steps[steps + twin.config.context + twin.config.horizon <= len(twin.states)]
    calendar = twin._windows(window_starts)[1]  # the forecast's first step is `context` after the start
    first = [origin + dt.timedelta(minutes=15 * int(s + twin.config.context)) for s in window_starts]
    assert [round(float(np.arctan2(*row[2:])) / (2 * np.pi) * 7) % 7 for row in calendar] == [
        t.weekday() for t in first
    ]


def test_a_models_buffers_are_not_the_grids_arrays(smoke_grid):
    """`load_state_dict` and in-place passes write into buffers: they must not reach the cached data
    that every other twin of the run reads."""
    for name in twin_names():
        cls = get_twin(name)
        model = cls(smoke_grid, cls.config_for("smoke")).build_model()
        parts = (smoke_grid.graph, smoke_grid.stats, smoke_grid.snapshots, smoke_grid.streams, smoke_grid.trajectories)
        arrays = [a for part in parts for a in part.values()]
        for key, buffer in model.state_dict().items():
            shared = [a for a in arrays if isinstance(a, np.ndarray) and np.shares_memory(buffer.numpy(), a)]
            assert not shared, f"{name}: buffer {key} is a view of the grid's data"


def test_a_diffusion_checkpoint_is_keyed_by_the_calendar_start(smoke_grid):
    """The arrays' hash does not cover the series' start: the same profiles with another start must not
    load diffusion weights trained on the other calendar; twins without a calendar keep theirs."""
    manifest = {**smoke_grid.manifest, "time": {**smoke_grid.manifest["time"], "start": "2024-03-04T06:15"}}
    shifted = dataclasses.replace(smoke_grid, manifest=manifest)
    for name, moves in (("diffusion-forecaster", True), ("grid-gnn", False), ("sensor-transformer", False)):
        cls = get_twin(name)
        here, there = (cls(g, cls.config_for("smoke")) for g in (smoke_grid, shifted))
        assert (checkpoint_path(here) != checkpoint_path(there)) is moves, name
