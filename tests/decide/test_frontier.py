"""Pareto frontier on hand-made records: dominance beyond the noise, ties, eligibility, never mixing
energy sources."""

import random

import pytest

from bench.decide.frontier import (
    QUALITY_TOL_PCT,
    TIE_RULE,
    dominates,
    frontier_keys,
    groups,
    pareto,
    tie_groups,
    tied,
    ties_of,
)
from bench.records import Record

PASS = {"pass": "fold-batchnorm", "params": {}}


def rec(variant, energy, loss, *, source="nvml", status="ok", runtime="torch-eager", latency=1.0, batch=1,
        ci=None, latency_ci=None, passes=0, p99=None):  # fmt: skip
    """ci / latency_ci: (low, high) of the 95 % CI; None leaves it out (the point value stands in)."""
    extra = {"status_reason": "needs CUDA"} if status != "ok" else {}
    low, high = ci or (None, None)
    lat_low, lat_high = latency_ci or (None, None)
    return Record(
        run_id="r", suite="s", twin="grid-gnn", grid="g", variant_id=variant, variant_name=variant,
        lineage=(PASS,) * passes, runtime=runtime, device="cuda", batch_size=batch, status=status,
        quality_loss_pct=loss, energy_j_per_inference=energy, energy_ci95_low=low, energy_ci95_high=high,
        energy_source=source if energy is not None else "none", latency_ms_p50=latency,
        latency_ms_p50_ci95_low=lat_low, latency_ms_p50_ci95_high=lat_high, latency_ms_p99=p99, **extra,
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


# --- the noise: float rounding in quality, overlapping CIs in cost ---------------------------------


def test_float_rounding_and_overlapping_cis_are_a_tie_won_by_fewer_passes():
    # ONNX Runtime's outputs differ from torch's by ~1e-7: a 2.5e-5 % "loss" at an energy within the CI
    folded = rec("folded", 1.00, 0.0, ci=(0.95, 1.05), passes=1)  # better on both medians, one pass more
    ort = rec("reference", 1.02, 2.5e-5, ci=(0.97, 1.07), runtime="onnxruntime")
    assert tied(folded, ort, "energy") and tied(ort, folded, "energy")
    assert not dominates(folded, ort, "energy") and not dominates(ort, folded, "energy")
    assert names(pareto([folded, ort])) == ["folded", "reference"]  # both kept, cheapest median first
    assert tie_groups([folded, ort]) == [[ort, folded]]  # one group, the rule's winner first
    assert ties_of(folded, [folded, ort]) == [ort, folded]
    assert frontier_keys([folded, ort]) == {folded.cell_key, ort.cell_key}


def test_tie_break_rule_then_p99_then_median():
    a = rec("a", 1.00, 0.0, ci=(0.9, 1.1), p99=3.0)
    b = rec("b", 1.05, 0.0, ci=(0.9, 1.2), p99=2.0)
    c = rec("c", 0.98, 0.0, ci=(0.9, 1.1), p99=2.0)
    assert tie_groups([a, b, c]) == [[c, b, a]]  # same passes: lower p99 first, then the cheaper median
    assert "fewer passes" in TIE_RULE and f"{QUALITY_TOL_PCT:g} points" in TIE_RULE


def test_clearly_cheaper_at_the_same_quality_dominates():
    cheap = rec("cheap", 0.5, 2.5e-5, ci=(0.45, 0.55))
    dear = rec("dear", 1.0, 0.0, ci=(0.9, 1.1))  # better quality only within the rounding noise
    assert dominates(cheap, dear, "energy") and not tied(cheap, dear, "energy")
    assert names(pareto([cheap, dear])) == ["cheap"] and tie_groups([cheap, dear]) == []


def test_a_cheaper_median_within_the_noise_does_not_beat_better_quality():
    cheap = rec("cheap", 1.00, 0.5, ci=(0.9, 1.1))
    good = rec("good", 1.05, 0.0, ci=(0.95, 1.15))  # 0.5 points better, energy within the CI
    assert not dominates(cheap, good, "energy")
    # on medians alone both were on the frontier; beyond the noise only quality differs
    assert dominates(good, cheap, "energy") and names(pareto([cheap, good])) == ["good"]


def test_a_missing_ci_falls_back_to_the_point_value():
    ci = rec("ci", 1.0, 0.0, ci=(0.9, 1.1))
    assert tied(ci, rec("inside", 1.05, 0.0), "energy")
    assert dominates(ci, rec("outside", 1.2, 0.0), "energy")
    assert dominates(rec("p", 1.0, 0.0), rec("q", 1.01, 0.0), "energy")  # no CIs: the medians decide


def test_latency_uses_the_latency_ci():
    a = rec("a", 1.0, 0.0, latency=1.0, latency_ci=(0.8, 1.2))
    b = rec("b", 2.0, 0.0, latency=1.1, latency_ci=(0.9, 1.3))
    assert tied(a, b, "latency") and not tied(a, b, "energy")
    assert len(tie_groups([a, b], "latency")) == 1 and names(pareto([a, b])) == ["a"]


def test_tie_groups_do_not_chain_through_a_trade_off():
    # a ~ b ~ c, but a and c differ beyond the noise (a better quality, c cheaper): a real trade-off
    tol = QUALITY_TOL_PCT
    a = rec("a", 1.3, 0.0, ci=(1.2, 1.4))
    b = rec("b", 1.15, 0.75 * tol, ci=(1.0, 1.3), passes=1)
    c = rec("c", 0.95, 1.5 * tol, ci=(0.8, 1.1), passes=1)
    assert tied(a, b, "energy") and tied(b, c, "energy") and not tied(a, c, "energy")
    assert names(pareto([a, b, c])) == ["c", "b", "a"]  # nobody dominates anybody
    assert tie_groups([a, b, c]) == [[a, b]]  # the winner a takes b; c is not within a's noise
    assert names(ties_of(b, [a, b, c])) == ["a", "c", "b"]  # b is tied with both; the rule orders them


def test_a_dominance_cycle_stays_on_the_frontier():
    # With tolerances dominance can cycle: A>B>C>D by cost with quality drifting just under the
    # tolerance each step, D>E and E>A by quality. Every point is dominated by another, so a plain
    # non-dominated set would be empty.
    t = QUALITY_TOL_PCT
    cycle = [
        rec("A", 5.5, 3.05 * t, ci=(4.0, 7.0)),
        rec("B", 8.05, 2.3 * t, ci=(8.0, 8.1)),
        rec("C", 9.45, 1.6 * t, ci=(9.2, 9.7)),
        rec("D", 12.0, 0.8 * t, ci=(9.8, 15.0)),
        rec("E", 7.0, 2.0 * t, ci=(4.5, 10.0)),
    ]
    for i, r in enumerate(cycle):
        assert dominates(r, cycle[(i + 1) % 5], "energy")
    assert set(names(pareto(cycle))) == set("ABCDE")
    beaten = rec("F", 20.0, 5 * t, ci=(19.0, 21.0))  # beaten by A, and beats nobody back
    assert set(names(pareto([*cycle, beaten]))) == set("ABCDE")


def test_dominance_and_ties_are_consistent_on_random_records():
    rng = random.Random(7)
    rs = []
    for i in range(40):
        e = rng.uniform(0.5, 2.0)
        w = rng.uniform(0.0, 0.3)
        rs.append(rec(f"v{i}", e, rng.choice([0.0, 1e-5, 1e-4, 0.05, 1.0]), ci=(e - w, e + w), passes=i % 3))
    for a in rs:
        assert tied(a, a, "energy") and not dominates(a, a, "energy")
        for b in rs:
            assert tied(a, b, "energy") == tied(b, a, "energy")
            assert not (dominates(a, b, "energy") and dominates(b, a, "energy"))
            assert not (tied(a, b, "energy") and dominates(a, b, "energy"))
    front = pareto(rs)
    assert front and all(not any(dominates(o, r, "energy") for o in rs) for r in front)  # no cycles here
    members = [r for g in tie_groups(rs) for r in g]
    assert len(members) == len({id(r) for r in members})  # each record in at most one group
    for g in tie_groups(rs):
        assert all(tied(g[0], r, "energy") for r in g) and all(r in front for r in g)


def test_summary_shows_tied_cells_together_and_states_the_rule():
    from bench.decide import summary

    folded = rec("folded", 1.00, 0.0, ci=(0.95, 1.05), passes=1)
    ort = rec("ort", 1.02, 2.5e-5, ci=(0.97, 1.07), runtime="onnxruntime")
    text = summary.render([folded, ort, rec("int8", 0.5, 0.8, ci=(0.45, 0.55), passes=1, latency=0.5)])
    rows = {
        line.split("|")[1].strip(): line.split("|")[3].strip() for line in text.splitlines() if line.startswith("| ")
    }
    # equal latencies without CIs tie too: the same pair is tie 1 of the latency frontier
    assert rows["ort"] == "EL =E1* =L1*" and rows["folded"] == "EL =E1 =L1" and rows["int8"] == "EL"
    assert f"({TIE_RULE})" in text


def test_the_frontier_can_be_drawn_against_any_quality_metric():
    from dataclasses import replace

    from bench.decide.frontier import against_metric
    from models.errors import UnknownNameError

    ref = replace(rec("reference", 1.0, 0.0), quality_metrics={"vm_mae": 0.010, "vm_violation_recall": 0.80})
    small = replace(rec("small", 0.5, 3.0), quality_metrics={"vm_mae": 0.012, "vm_violation_recall": 0.60})
    gpu_only = rec("fp8", None, None, status="unsupported")
    by_mae = {r.variant_id: r for r in against_metric([ref, small, gpu_only], "vm_mae")}
    assert by_mae["small"].quality_loss_pct == pytest.approx(20.0) and by_mae["reference"].quality_loss_pct == 0.0
    by_recall = {r.variant_id: r for r in against_metric([ref, small, gpu_only], "vm_violation_recall")}
    assert by_recall["small"].quality_loss_pct == pytest.approx(25.0)  # more is better: a drop is a loss
    assert by_recall["small"].quality_metric == "vm_violation_recall" and by_recall["fp8"].status == "unsupported"
    with pytest.raises(UnknownNameError, match="valid quality metrics: vm_mae, vm_violation_recall"):
        against_metric([ref, small], "recall")
