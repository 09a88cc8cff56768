"""The plan, its shards and the executors: a serialisable plan that a resume reads instead of the
suite file, shards that each carry their own reference, and Ray measuring what local measures."""

import json
import os

import pytest

from bench import suites
from bench.plan import REFERENCE, RunPlan
from bench.run.estimate import estimate_shard_seconds, estimate_wall_seconds
from bench.run.planning import make_plan, make_shards
from bench.run.runner import RunRequest, run
from bench.store import RunDir, run_folders
from bench.suites import load_suite
from models.errors import ConfigError, InputError

SUITE = """
description = "two variants of the GNN, fast windows"
device = "cpu"
model_size = "smoke"
grids = ["1-LV-rural1--2-sw"]
twins = ["grid-gnn"]
[measure]
window_s = {window}
repetitions = {repetitions}
batch_sizes = {batch_sizes}
runtimes = ["torch-eager", "onnxruntime"]
[[variant]]
chain = [{{pass = "prune-unstructured", amount = 0.5}}]
[[variant]]
chain = [{{pass = "prune-unstructured", amount = 0.2}}]
"""


def _write_suite(folder, window=0.05, repetitions=3, batch_sizes="[1, 8]"):
    (folder / "pair.toml").write_text(SUITE.format(window=window, repetitions=repetitions, batch_sizes=batch_sizes))


@pytest.fixture
def pair_suite(tmp_path, monkeypatch):
    """A suite named 'pair' (the reference and two pruned GNNs) in a folder the test may edit."""
    folder = tmp_path / "suites"
    folder.mkdir()
    _write_suite(folder)
    monkeypatch.setattr(suites, "SUITES_DIR", folder)
    return folder


def test_plan_round_trips_through_json_and_rejects_damage():
    plan = make_plan(load_suite("smoke"), device="cpu", threads=1)
    again = RunPlan.from_dict(json.loads(json.dumps(plan.to_dict())))
    assert again == plan and [c.key for c in again.cells()] == [c.key for c in plan.cells()]
    for damage in ({"window_s": "fast"}, {"repetitions": 1}, {"variants": [[{"pass": "nope"}]]}, {"threads": True}):
        with pytest.raises(InputError, match="malformed plan.json"):
            RunPlan.from_dict({**plan.to_dict(), **damage})
    with pytest.raises(InputError, match="missing 'seed'"):
        RunPlan.from_dict({k: v for k, v in plan.to_dict().items() if k != "seed"})


def test_shards_cover_every_cell_once_and_each_measures_its_reference():
    plan = make_plan(load_suite("smoke"), device="cpu", threads=1)
    cells = plan.cells()
    for size in (None, 1, 4):
        shards = make_shards(plan, cells, size)
        recorded = [c.key for s in shards for c in s.cells]
        assert sorted(recorded) == sorted(c.key for c in cells)  # every cell recorded exactly once
        for s in shards:
            assert {c.grid for c in s.measured} == {s.grid} and {c.twin for c in s.measured} == {s.twin}
            refs = {(c.runtime, c.batch_size) for c in s.measured if c.variant == REFERENCE}
            assert refs == {(r, b) for r in plan.runtimes for b in plan.batch_sizes}  # its own control
            assert not set(s.controls) & set(s.cells)
        estimates = [estimate_shard_seconds(plan, s) for s in shards]
        assert estimates == sorted(estimates, reverse=True)  # longest first
    assert len(make_shards(plan, cells, None)) == len(plan.grids) * len(plan.twins)
    with pytest.raises(ConfigError):
        make_shards(plan, cells, 0)


def test_wall_time_estimate_divides_by_the_workers():
    plan = make_plan(load_suite("smoke"), device="cpu", threads=1)
    shards = make_shards(plan, plan.cells(), 2)
    one, eight = estimate_wall_seconds(plan, shards, 1), estimate_wall_seconds(plan, shards, 8)
    assert one == pytest.approx(sum(estimate_shard_seconds(plan, s) for s in shards))
    assert one / 8 <= eight < one / 3


def test_resume_uses_the_saved_plan_not_the_edited_suite(pair_suite, smoke_grid, tmp_path):
    out = tmp_path / "runs"

    def stop_after_first_shard(done, total, what):
        if what.startswith("done"):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run(RunRequest(suite="pair", out=out, shard_size=1), log=lambda m: None, progress=stop_after_first_shard)
    (path,) = run_folders(out)
    first = RunDir.open(path).records()
    assert 0 < len(first) < 12
    _write_suite(pair_suite, window=0.3, repetitions=5, batch_sizes="[2]")  # edited between start and resume
    run(RunRequest(resume=path, shard_size=1), log=lambda m: None)
    records = RunDir.open(path).records()
    assert sorted(r.batch_size for r in records) == [1] * 6 + [8] * 6  # the saved batch sizes, 12 cells once
    assert {r.repetitions for r in records} == {3}  # the saved repetitions
    assert len({r.cell_key for r in records}) == 12


def _gnn_pair(out, executor):
    return run(RunRequest(suite="pair", out=out, executor=executor, shard_size=1), log=lambda m: None)


def test_ray_measures_the_cells_local_measures_with_the_same_quality(pair_suite, smoke_grid, tmp_path):
    local = {r.cell_key: r for r in _gnn_pair(tmp_path / "local", "local").records()}
    ray_run = _gnn_pair(tmp_path / "ray", "ray")
    remote = {r.cell_key: r for r in ray_run.records()}
    assert set(remote) == set(local) and len(remote) == 12
    for key, r in remote.items():
        assert r.status == local[key].status == "ok"
        assert r.quality_value == local[key].quality_value  # quality is deterministic
        assert r.shard_id and r.host
        if r.runtime == "torch-eager" and r.variant_id != "reference":
            assert r.reference_energy_j_per_inference is not None  # measured in its own shard
    assert len({r.shard_id for r in remote.values()}) == 2


def test_a_worker_that_dies_is_retried_and_its_cells_recorded_once(pair_suite, smoke_grid, tmp_path, monkeypatch):
    import bench.run.ray_executor

    marker = tmp_path / "died-once"
    real = bench.run.ray_executor.measure_shard_job

    def dies_on_its_first_attempt(job):
        if not marker.exists():
            marker.touch()
            os._exit(1)  # the worker process dies mid-shard: Ray retries the task elsewhere
        return real(job)

    monkeypatch.setattr(bench.run.ray_executor, "measure_shard_job", dies_on_its_first_attempt)
    path = _gnn_pair(tmp_path / "runs", "ray").path
    keys = [r.cell_key for r in RunDir.open(path).records()]
    assert marker.exists() and len(keys) == len(set(keys)) == 12


def test_a_shard_that_keeps_failing_becomes_error_records(pair_suite, smoke_grid, tmp_path, monkeypatch):
    import bench.run.ray_executor

    real = bench.run.ray_executor.measure_shard_job

    def second_shard_always_dies(job):
        if job.shard.id.endswith("/1"):
            os._exit(1)
        return real(job)

    monkeypatch.setattr(bench.run.ray_executor, "measure_shard_job", second_shard_always_dies)
    records = RunDir.open(_gnn_pair(tmp_path / "runs", "ray").path).records()
    assert len({r.cell_key for r in records}) == len(records) == 12
    failed = [r for r in records if r.status == "error"]
    assert failed and {r.shard_id for r in failed} == {"1-LV-rural1--2-sw/grid-gnn/1"}
    assert all("shard failed on Ray" in r.status_reason for r in failed)
    assert any(r.status == "ok" for r in records)


@pytest.mark.parametrize("address, message", [("127.0.0.1:1", "no Ray head answers"), ("nonsense", "HOST:PORT")])
def test_a_wrong_ray_address_is_a_message_within_seconds(address, message):
    """ray.init retries an unreachable head for minutes; the executor checks it first."""
    from bench.run.ray_executor import RayExecutor

    with pytest.raises(ConfigError, match=message):
        RayExecutor("cpu", address=address, log=lambda m: None)
