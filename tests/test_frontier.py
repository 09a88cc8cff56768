"""Pareto frontier on hand-made records: dominance, ties, eligibility, never mixing energy sources."""

import pytest

from bench.frontier import dominates, frontier_keys, groups, pareto
from bench.records import Record


def rec(variant, energy, loss, *, source="nvml", status="ok", runtime="torch-eager", latency=1.0, batch=1):
    extra = {"status_reason": "needs CUDA"} if status != "ok" else {}
    return Record(
        run_id="r", suite="s", twin="grid-gnn", grid="g", variant_id=variant, variant_name=variant,
        runtime=runtime, device="cuda", batch_size=batch, status=status, quality_loss_pct=loss,
        energy_j_per_inference=energy, energy_source=source if energy is not None else "none",
        latency_ms_p50=latency, **extra,
    )  # fmt: skip


def names(records):
    return [r.variant_id for r in records]


def test_dominated_points_leave_the_frontier():
    ref, int8, worse, fat = rec("ref", 1.0, 0.0), rec("int8", 0.5, 1.0), rec("worse", 0.6, 2.0), rec("fat", 2.0, 0.0)
    assert dominates(int8, worse, "energy") and not dominates(int8, ref, "energy")
    assert dominates(ref, fat, "energy")  # equal loss, cheaper
    assert names(pareto([ref, int8, worse, fat])) == ["int8", "ref"]  # cheapest first


def test_equal_points_do_not_dominate_each_other():
    a, b = rec("a", 1.0, 0.5), rec("b", 1.0, 0.5)
    assert not dominates(a, b, "energy") and not dominates(b, a, "energy")
    assert set(names(pareto([a, b]))) == {"a", "b"}


def test_tie_on_one_axis_strictly_better_on_the_other_dominates():
    a, b = rec("a", 1.0, 0.5), rec("b", 1.0, 0.7)
    assert dominates(a, b, "energy") and names(pareto([a, b])) == ["a"]


def test_only_ok_records_with_a_cost_qualify():
    ok = rec("ok", 2.0, 1.0)
    unsupported = rec("fp8", None, None, status="unsupported")
    unmeasured = rec("nometer", None, 0.0)  # energy unknown: cannot be on an energy frontier
    assert names(pareto([ok, unsupported, unmeasured])) == ["ok"]
    assert "nometer" in names(pareto([ok, unmeasured], "latency"))  # but it has a latency


def test_measured_and_estimated_energy_never_share_a_frontier():
    measured, estimated = rec("m", 1.0, 0.0, source="nvml"), rec("e", 0.1, 0.0, source="estimate")
    by_group = groups([measured, estimated], "energy")
    assert len(by_group) == 2  # would otherwise dominate the measured point with a guess
    with pytest.raises(ValueError, match="one comparison group"):
        pareto([measured, estimated])
    assert frontier_keys([measured, estimated]) == {measured.cell_key, estimated.cell_key}
    assert len(groups([measured, estimated], "latency")) == 1  # latency is measured the same way


def test_latency_objective_and_batch_sizes_are_separate_groups():
    fast, slow = rec("fast", 1.0, 0.0, latency=0.5), rec("slow", 0.5, 0.0, latency=2.0)
    assert names(pareto([fast, slow], "latency")) == ["fast"]
    assert names(pareto([fast, slow], "energy")) == ["slow"]
    assert len(groups([rec("a", 1.0, 0.0, batch=1), rec("a", 1.0, 0.0, batch=32)])) == 2
