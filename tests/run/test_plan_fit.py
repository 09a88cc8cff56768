"""A run's estimate before it starts: training counted for checkpoints that are not cached (and not
for those that are), `run --dry-run` printing the plan without measuring or writing, the GPU suites
fitting their time budgets with nothing cached, and --max-minutes counting training. Nothing trains
here: a stubbed `train` writes real checkpoints where a test needs cached ones."""

import json

import pytest

from bench.cli import main
from bench.measure.validity import GPU_MIN_WINDOW_S
from bench.run import runner
from bench.run.estimate import estimate, training_needs
from bench.run.executor import LocalExecutor
from bench.run.planning import make_plan
from bench.suites import load_suite
from compress.base import PassContext
from compress.distill import TEACHER_FORWARD
from models.checkpoint import checkpoint_path, train_or_load
from models.errors import Verdict
from models.grid.cache import load_grid
from models.twins.grid_gnn import GridGNNTwin
from tests.conftest import SMOKE_GRID

GNN_SMOKE_S = GridGNNTwin.training_seconds[("smoke", "cpu")][0]
GNN_EPOCHS = GridGNNTwin.config_for("smoke").fit.max_epochs


@pytest.fixture
def empty_cache(cache_copy, monkeypatch):
    """TWINBENCH_CACHE: a private cache holding the smoke grid's data and no checkpoint."""
    monkeypatch.setenv("TWINBENCH_CACHE", str(cache_copy))
    return cache_copy


@pytest.fixture
def fake_training(monkeypatch):
    """GNN training that returns at once: `train_or_load` and the passes then cache real checkpoints
    (untrained weights) under the keys they always use."""
    summary = {"epochs": GNN_EPOCHS, "train_seconds": 0.5 * GNN_EPOCHS, "stopped": "max_epochs"}
    monkeypatch.setattr(GridGNNTwin, "train", lambda self, model, log, **kw: dict(summary))


def _gnn_plan(**kw):
    return make_plan(load_suite("smoke"), "cpu", "grid-gnn", threads=1, **kw)


def test_training_is_counted_for_uncached_checkpoints_from_the_declared_figures(empty_cache):
    needs = training_needs(_gnn_plan())
    by_what = {j.what.split(":")[-1].strip(): j for j in needs.jobs}
    # The smoke suite's GNN trains a reference, one fine-tune (`prune-structured` alone and before
    # int8 share it), one student (`distill` alone, before int8 and before half share it), and at
    # most the other three ratios of `ratio = "auto"` (its 0.5 is the fixed variant's, shared).
    auto = [f"recovery fine-tune, ratio {r}" for r in (0.125, 0.25, 0.75)]
    assert sorted(by_what) == sorted([*auto, "recovery fine-tune", "reference", "student"]) and len(needs.jobs) == 6
    assert not any(j.cached for j in needs.jobs)
    per_epoch = GNN_SMOKE_S / GNN_EPOCHS
    assert (by_what["reference"].seconds, by_what["reference"].basis) == GridGNNTwin.training_seconds[("smoke", "cpu")]
    # finetune_epochs = 8 (a cap), each epoch with the unpruned teacher's forward pass
    assert by_what["recovery fine-tune"].seconds == pytest.approx(8 * (1 + TEACHER_FORWARD) * per_epoch)
    assert by_what["student"].seconds == pytest.approx(8 * (TEACHER_FORWARD + 0.25) * per_epoch)  # 0.5 x 0.5
    assert needs.wall_seconds(1) == pytest.approx(sum(j.seconds for j in needs.jobs))


def test_cached_checkpoints_cost_nothing_and_their_metas_set_the_figures(empty_cache, fake_training, smoke_grid):
    twin = GridGNNTwin(load_grid(SMOKE_GRID), GridGNNTwin.config_for("smoke"))
    model, _, trained = train_or_load(twin, log=lambda m: None)
    assert trained and checkpoint_path(twin).is_file()
    needs = training_needs(_gnn_plan())
    reference, *variants = needs.jobs
    assert reference.cached and reference.todo_s == 0 and not any(v.cached for v in variants)
    # The reference's meta says 0.5 s an epoch on this device: the variants are counted from it.
    assert all(v.basis.endswith("(0.50 s)") for v in variants)
    # Four recovery fine-tunes (the fixed 0.5, and the auto search's other ratios) and a student.
    assert needs.wall_seconds(1) == pytest.approx(
        4 * 8 * (1 + TEACHER_FORWARD) * 0.5 + 8 * (TEACHER_FORWARD + 0.25) * 0.5
    )

    # The passes cache their weights where the estimate looks for them.
    # (the fixed ones: a budget's search stops at the first ratio within it, so `ratio = "auto"` can
    # leave ratios untrained, which the estimate then still counts, at worst)
    fixed = [
        v.id for v in load_suite("smoke").variants[1:]
        if {p.name for p in v.chain} <= {"prune-structured", "distill"} and "auto" not in json.dumps(v.spec)
    ]  # fmt: skip
    plan = _gnn_plan(variants=fixed)
    ctx = PassContext(twin=twin, device="cpu", workdir=empty_cache, target="torch", log=lambda m: None)
    for variant in plan.variants[1:]:
        variant.build(model, ctx)
    needs = training_needs(plan)
    assert all(j.cached for j in needs.jobs) and needs.wall_seconds(1) == 0

    # Damaged weights are retrained by the checkpoint loader: counted again.
    path = checkpoint_path(twin)
    path.write_bytes(path.read_bytes()[:-1] + b"\0")
    assert not training_needs(plan).jobs[0].cached


def test_dry_run_prints_the_plan_and_writes_nothing(empty_cache, tmp_path, capsys):
    out = tmp_path / "runs"
    assert main(["run", "--suite", "smoke", "--twin", "grid-gnn", "--dry-run", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    for expected in ("cells: 100", "grid-gnn", "known to be unsupported", "shards:", "training to do: 6 of 6",
                     "to train", "reference", "1 CPU worker", "8 CPU workers (Ray)", "measuring", "total"):  # fmt: skip
        assert expected in text, expected
    assert not out.exists()


def test_dry_run_plans_a_cuda_suite_anywhere_labelled(empty_cache, capsys):
    assert main(["run", "--suite", "gpu", "--dry-run"]) == 0
    text = capsys.readouterr().out
    assert "1 GPU" in text and "8 GPUs (Ray)" in text and "rough, no GPU has trained it" in text
    import torch

    if not torch.cuda.is_available():
        assert "planned for cuda on a machine without CUDA" in text
        assert main(["run", "--suite", "gpu"]) == 2  # running it here is still refused


@pytest.mark.parametrize("suite, minutes", [("gpu", 35), ("nightly", 25)])
def test_gpu_suites_fit_their_budget_with_nothing_cached(empty_cache, suite, minutes):
    plan = make_plan(load_suite(suite), estimate_only=True)
    needs = training_needs(plan)
    assert needs.jobs and not any(j.cached for j in needs.jobs) and not needs.unknown
    one = estimate(plan, plan.cells(), 1, None, needs)
    assert one.training_s > 0 and one.total_s <= 60 * minutes, f"{suite}: {one.total_s / 60:.1f} min"
    assert plan.device == "cuda" and plan.window_s >= GPU_MIN_WINDOW_S and len(plan.grids) == 1


def test_gpu_suite_keeps_the_comparisons_that_matter():
    suite = load_suite("gpu")
    steps = {(p.name, p.params.get("dtype")) for v in suite.variants for p in v.chain}
    assert {("half", "bfloat16"), ("quant-dynamic-int8", None), ("distill", None), ("diffusion-steps", None)} <= steps
    assert any(p.name == "prune-structured" and p.finetune_epochs > 0 for v in suite.variants for p in v.chain)
    assert "torch-eager" in suite.measure.runtimes and set(suite.twins) == {
        "sensor-transformer", "grid-gnn", "diffusion-forecaster"}  # fmt: skip


def test_full_suite_is_estimated_for_one_and_eight_workers(empty_cache):
    plan = make_plan(load_suite("full"), estimate_only=True)
    needs = training_needs(plan)
    one, eight = estimate(plan, plan.cells(), 1, None, needs), estimate(plan, plan.cells(), 8, 4, needs)
    assert one.total_s > 60 * 60 and eight.total_s < one.total_s / 3


def test_max_minutes_counts_training(empty_cache, fake_training, tmp_path, capsys):
    # Two reference cells measure in ~15 s; training the reference (nothing cached) takes ~70 s more.
    argv = ["run", "--suite", "smoke", "--twin", "grid-gnn", "--variant", "reference", "--runtime", "torch-eager"]
    out = tmp_path / "runs"
    assert main([*argv, "--max-minutes", "1", "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert "more than --max-minutes 1" in err and "training" in err
    assert not out.exists()
    # Its dry run says the same with the same exit code (issue 23 item 7: it exited 0).
    assert main([*argv, "--max-minutes", "1", "--dry-run"]) == 1
    assert "does not fit --max-minutes 1" in capsys.readouterr().err
    assert main([*argv, "--max-minutes", "100", "--dry-run"]) == 0
    # Once the reference is cached the same plan fits.
    train_or_load(GridGNNTwin(load_grid(SMOKE_GRID), GridGNNTwin.config_for("smoke")), log=lambda m: None)
    plan = make_plan(load_suite("smoke"), "cpu", "grid-gnn", "torch-eager", 1, ["reference"])
    runner._shards(plan, plan.cells(), LocalExecutor(), None, 1, log=lambda m: None)
    with pytest.raises(Verdict, match="more than --max-minutes 0.1"):
        runner._shards(plan, plan.cells(), LocalExecutor(), None, 0.1, log=lambda m: None)
