"""select, compare, baseline and history on hand-made records: the decisions, and their bad inputs."""

import json
from dataclasses import replace

import pytest

from bench.cli import main
from bench.decide.annual import Schedule
from bench.decide.compare import compare
from bench.decide.frontier import dominates, tied
from bench.decide.select import Constraints, Infeasible, Where, render, select
from bench.history_db import append_history, history
from bench.records import Record
from bench.store import load_records, promote_baseline
from models.errors import ConfigError, InputError, UnknownNameError


def rec(variant, runtime="torch-eager", *, energy=1.0, loss=0.0, p99=1.0, mem=100.0, batch=1, ci=0.02, p50=None,
        source="nvml", run_id="base", quality=1.0, status="ok", twin="grid-gnn", suite="nightly"):  # fmt: skip
    p50 = p50 if p50 is not None else p99 / 2
    extra = {} if status == "ok" else {"status_reason": "broke"}
    return Record(
        run_id=run_id, suite=suite, twin=twin, grid="g", variant_id=variant, variant_name=variant, runtime=runtime,
        device="cuda", batch_size=batch, status=status, quality_metric="vm_rmse", quality_value=quality,
        quality_ref_value=1.0, quality_loss_pct=loss, energy_j_per_inference=energy,
        energy_ci95_low=energy * (1 - ci), energy_ci95_high=energy * (1 + ci), energy_cv=ci, energy_source=source,
        latency_ms_p50=p50, latency_ms_p50_ci95_low=p50 * (1 - ci), latency_ms_p50_ci95_high=p50 * (1 + ci),
        latency_ms_p99=p99, peak_memory_mb=mem, **extra,
    )  # fmt: skip


RECORDS = [
    rec("reference", energy=1.0, loss=0.0, p99=2.0, mem=300),
    rec("int8", "onnxruntime", energy=0.4, loss=0.8, p99=1.5, mem=120),
    rec("pruned", energy=0.6, loss=0.3, p99=0.9, mem=200),
    rec("tiny", energy=0.1, loss=12.0, p99=0.5, mem=50),
    rec("bf16", energy=0.5, loss=0.9, p99=1.0, mem=150, batch=32),  # another batch size
]


@pytest.mark.parametrize(
    "constraints, chosen",
    [
        (Constraints(max_quality_loss_pct=1.0), "int8"),
        (Constraints(max_quality_loss_pct=0.5), "pruned"),
        (Constraints(max_quality_loss_pct=20.0), "tiny"),
        (Constraints(max_quality_loss_pct=1.0, max_latency_ms_p99=1.0), "pruned"),
        (Constraints(max_quality_loss_pct=1.0, max_memory_mb=150), "int8"),
        (Constraints(max_quality_loss_pct=1.0, runtime="torch-eager"), "pruned"),
        (Constraints(max_quality_loss_pct=1.0, objective="latency"), "pruned"),
        (Constraints(max_quality_loss_pct=1.0, batch_size=32), "bf16"),
    ],
)
def test_select_picks_the_cheapest_feasible_variant(constraints, chosen):
    sel = select(RECORDS, "grid-gnn", constraints)
    assert sel.chosen.variant_id == chosen
    assert sel.chosen in sel.feasible and all(not constraints.misses(r) for r in sel.feasible)


def test_select_explains_its_choice_and_prints_the_frontier():
    from bench.decide.select import render

    sel = select(RECORDS, "grid-gnn", Constraints(max_quality_loss_pct=1.0))
    assert [r.variant_id for r in sel.frontier] == ["tiny", "int8", "pruned", "reference"]  # none dominated
    text = render(sel)
    assert "chosen: int8 on onnxruntime" in text and "0.40x the fp32 torch-eager reference's energy" in text
    assert "runner-up: pruned" in text


def test_select_never_picks_a_cell_the_feasible_frontier_leaves_out():
    """The lowest median is not the answer when another feasible cell costs the same within the noise
    and loses clearly less quality; nor is a cell tied with the cheapest that a third one dominates."""
    from bench.decide.select import render

    noisy_cheap = rec("pruned", energy=0.50, loss=0.9, ci=0.05)  # lowest median, CI overlaps `int8`'s
    better = rec("int8", "onnxruntime", energy=0.51, loss=0.1, ci=0.05)
    sel = select([noisy_cheap, better, rec("reference", energy=1.0)], "grid-gnn", Constraints(max_quality_loss_pct=1))
    assert sel.chosen.variant_id == "int8"
    assert "passed over: pruned on torch-eager (0.5 J/inference, loss +0.90 %): dominated by int8" in render(sel)

    # `plain` (no passes) is tied with the cheapest median, but `half` costs less beyond the noise at
    # the same quality: the rule's preference for fewer passes must not reach past the frontier for it.
    cheapest = replace(
        rec("int8", "onnxruntime", energy=0.50, loss=0.1, ci=0.2), lineage=({"pass": "q"}, {"pass": "p"})
    )
    plain = replace(rec("plain", energy=0.58, loss=0.1, ci=0.05), lineage=())
    half = replace(rec("half", energy=0.52, loss=0.1, ci=0.01), lineage=({"pass": "h"},))
    assert tied(cheapest, plain, "energy") and dominates(half, plain, "energy") and tied(cheapest, half, "energy")
    sel = select([cheapest, plain, half], "grid-gnn", Constraints(max_quality_loss_pct=1))
    assert sel.chosen.variant_id == "half"  # fewer passes than int8; plain is off the frontier
    assert "passed over" not in render(sel)  # int8 is the cheaper median, but tied: the rule says why


def test_infeasible_constraints_name_the_closest_variants():
    with pytest.raises(Infeasible) as e:
        select(RECORDS, "grid-gnn", Constraints(max_quality_loss_pct=0.5, max_latency_ms_p99=0.6))
    assert e.value.exit_code == 1
    assert "pruned on torch-eager: p99 0.9 ms exceeds 0.6 ms by 0.3 ms" in str(e.value)


def test_select_bad_input():
    with pytest.raises(UnknownNameError, match="valid twin in these records"):
        select(RECORDS, "no-such-twin", Constraints(max_quality_loss_pct=1))
    with pytest.raises(UnknownNameError):
        select(RECORDS, "grid-gnn", Constraints(max_quality_loss_pct=1, runtime="tensorrt"))
    with pytest.raises(UnknownNameError):
        Constraints(max_quality_loss_pct=1, objective="co2")
    with pytest.raises(ConfigError):
        Constraints(max_quality_loss_pct=1, max_memory_mb=-5)
    mixed = [rec("a", source="nvml"), rec("b", source="estimate")]
    with pytest.raises(InputError, match="not comparable"):
        select(mixed, "grid-gnn", Constraints(max_quality_loss_pct=1))


def _noisy(base: list[Record], scale_energy=1.0, scale_latency=1.0, quality=1.0, ci=0.02):
    return [
        rec(r.variant_id, r.runtime, energy=r.energy_j_per_inference * scale_energy, loss=r.quality_loss_pct,
            p99=r.latency_ms_p99, p50=r.latency_ms_p50 * scale_latency, batch=r.batch_size, run_id="new",
            quality=quality, ci=ci)
        for r in base
    ]  # fmt: skip


def test_compare_flags_an_injected_regression():
    v = compare(RECORDS, _noisy(RECORDS, scale_energy=1.20))
    assert v.exit_code == 1 and {c.metric for c in v.regressions} == {"energy"} and len(v.regressions) == 5
    v = compare(RECORDS, _noisy(RECORDS, scale_latency=1.3, quality=1.02))
    assert {c.metric for c in v.regressions} == {"latency", "quality"}


def test_compare_passes_pure_noise_and_reports_improvements():
    assert compare(RECORDS, _noisy(RECORDS, scale_energy=1.03)).exit_code == 0  # inside the 5 % threshold
    wide = compare(RECORDS, _noisy(RECORDS, scale_energy=1.10, ci=0.08))  # 10 % worse but CIs overlap
    assert wide.exit_code == 0 and wide.within_noise > 0
    better = compare(RECORDS, _noisy(RECORDS, scale_energy=0.7))
    assert better.exit_code == 0 and {c.metric for c in better.improvements} == {"energy"}


def test_compare_counts_lost_cells_and_refuses_mismatched_runs():
    lost = _noisy(RECORDS)[1:]
    v = compare(RECORDS, lost)
    assert [c.metric for c in v.regressions] == ["status"]
    with pytest.raises(InputError, match="mismatched suites"):
        compare(RECORDS, [rec("reference", suite="smoke")])


def _write_run(tmp_path, name, records):
    run = tmp_path / name
    run.mkdir()
    (run / "plan.json").write_text("{}")
    (run / "environment.json").write_text(json.dumps({"gpu_name": "NVIDIA H100 80GB HBM3"}))
    (run / "records.jsonl").write_text("".join(r.to_json() + "\n" for r in records))
    return run


def test_compare_cli_exit_codes(tmp_path, capsys):
    base = _write_run(tmp_path, "base", RECORDS)
    same = _write_run(tmp_path, "same", _noisy(RECORDS))
    worse = _write_run(tmp_path, "worse", _noisy(RECORDS, scale_energy=1.5))
    assert main(["compare", str(base), str(same)]) == 0
    assert main(["compare", str(base), str(worse), "--out", str(tmp_path / "verdict.md")]) == 1
    assert "REGRESSION" in (tmp_path / "verdict.md").read_text()
    assert main(["compare", str(base), str(tmp_path / "missing")]) == 2
    (tmp_path / "corrupt.jsonl").write_text("{not json\n")
    assert main(["compare", str(base), str(tmp_path / "corrupt.jsonl")]) == 2
    assert "line 1: not a twinbench record" in capsys.readouterr().err


def test_select_cli_exit_codes(tmp_path, capsys):
    run = _write_run(tmp_path, "run", RECORDS)
    assert main(["select", "--run", str(run), "--twin", "grid-gnn", "--max-quality-loss-pct", "1"]) == 0
    assert "chosen: int8" in capsys.readouterr().out
    argv = ["select", "--records", str(run / "records.jsonl"), "--twin", "grid-gnn", "--max-quality-loss-pct", "0.1",
            "--max-latency-ms-p99", "0.1"]  # fmt: skip
    assert main(argv) == 1 and "closest" in capsys.readouterr().err
    assert main(["select", "--twin", "grid-gnn", "--max-quality-loss-pct", "1"]) == 2  # neither --run nor --records


def test_baseline_promotion_and_history(tmp_path, capsys):
    run = _write_run(tmp_path, "run", RECORDS)
    path, replaced = promote_baseline(run, tmp_path / "baselines")
    assert path.name == "cuda-nvidia-h100-80gb-hbm3.json" and replaced is None
    records, env = load_records(path)
    assert [r.cell_key for r in records] == [r.cell_key for r in RECORDS] and env["gpu_name"].startswith("NVIDIA")
    assert promote_baseline(run, tmp_path / "baselines")[1] == "base"  # says which baseline it replaced
    db = tmp_path / "history.sqlite"
    append_history(RECORDS, db)
    append_history(_noisy(RECORDS, scale_energy=1.1), db)
    rows = history(db, "grid-gnn", "int8")
    assert [r.run_id for r in rows] == ["base", "new"]
    with pytest.raises(InputError, match="twins with history: grid-gnn"):
        history(db, "sensor-transformer")
    assert main(["history", "--twin", "grid-gnn", "--variant", "int8", "--runs", str(tmp_path)]) == 0
    assert capsys.readouterr().out.count("| int8 |") == 2
    assert main(["history", "--twin", "grid-gnn", "--runs", str(tmp_path / "none")]) == 2


def _measured(variant, total, dynamic, *, loss=0.0, recall=1.0, lineage=()):
    """An nvml cell with measured idle power (50 W) and dynamic energy, for the annual projection."""
    return replace(
        rec(variant, energy=total, loss=loss), energy_dynamic_j_per_inference=dynamic, idle_power_w=50.0,
        throughput_per_s=1000.0, quality_metrics={"vm_rmse": 1.0 + loss / 100, "vm_violation_recall": recall},
        lineage=lineage,
    )  # fmt: skip


def test_annual_objective_can_choose_differently_from_joules_per_inference():
    """A: fewer joules per inference, but more of them dynamic; on a shared device only the dynamic
    share is paid, so by annual energy B wins. 1/min on 1 instance = 525,600 inferences a year."""
    a, b = _measured("A", total=0.5, dynamic=0.3), _measured("B", total=0.6, dynamic=0.2)
    shared = Schedule(rate_per_s=1 / 60, device_use="shared")
    by_joules = select([a, b], "grid-gnn", Constraints(max_quality_loss_pct=1), shared)
    by_year = select([a, b], "grid-gnn", Constraints(max_quality_loss_pct=1, objective="annual"), shared)
    assert by_joules.chosen.variant_id == "A" and by_year.chosen.variant_id == "B"
    assert by_year.projections["g/grid-gnn/B/torch-eager/cuda/bs1"].kwh_per_year == pytest.approx(0.2 * 525_600 / 3.6e6)
    dedicated = Schedule(rate_per_s=1 / 60, device_use="dedicated")  # + 50 W all year = 438 kWh each
    kwh = select([a, b], "grid-gnn", Constraints(max_quality_loss_pct=1, objective="annual"), dedicated).projections
    assert kwh["g/grid-gnn/B/torch-eager/cuda/bs1"].kwh_per_year == pytest.approx(438 + 0.2 * 525_600 / 3.6e6)
    with pytest.raises(ConfigError, match="needs a schedule"):
        select([a, b], "grid-gnn", Constraints(max_quality_loss_pct=1, objective="annual"))


def test_where_constrains_any_quality_metric():
    a = _measured("A", total=0.5, dynamic=0.3, recall=0.8)
    b = _measured("B", total=0.6, dynamic=0.2, recall=0.97)
    where = (Where.parse("vm_violation_recall>=0.95"),)
    assert select([a, b], "grid-gnn", Constraints(max_quality_loss_pct=1, where=where)).chosen.variant_id == "B"
    with pytest.raises(Infeasible, match="vm_violation_recall 0.8 fails vm_violation_recall>=0.95"):
        select([a], "grid-gnn", Constraints(max_quality_loss_pct=1, where=where))
    with pytest.raises(UnknownNameError, match="valid quality metrics: vm_rmse, vm_violation_recall"):
        select([a], "grid-gnn", Constraints(max_quality_loss_pct=1, where=(Where.parse("recall>=1"),)))


def test_select_cli_prints_the_annual_table_and_refuses_what_it_cannot_know(tmp_path, capsys):
    run = _write_run(tmp_path, "run", [_measured("A", 0.5, 0.3), _measured("B", 0.6, 0.2, loss=0.5)])
    argv = ["select", "--run", str(run), "--twin", "grid-gnn", "--max-quality-loss-pct", "1", "--rate", "1/min",
            "--device-use", "shared", "--carbon-intensity", "350", "--where", "vm_violation_recall>=0.9"]  # fmt: skip
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert (
        "per year at 1 inferences/min x 1 instance(s), shared device, 350 g CO2e/kWh (given with --carbon-intensity), PUE 1 (default"
        in out
        and "CO2e kg/yr" in out
        and "chosen: A" in out
    )
    estimate = _write_run(tmp_path, "estimate", [replace(_measured("A", 0.5, None), energy_source="estimate",
                                                         idle_power_w=None)])  # fmt: skip
    dedicated = ["select", "--run", str(estimate), *argv[3:7], "--rate", "1/min", "--device-use", "dedicated"]
    assert main(dedicated) == 2
    assert "idle power was not measured" in capsys.readouterr().err
    for bad, message in ((["--rate", "fast"], "rate 'fast'"), (["--price", "1"], "--price needs --rate"),
                         (["--rate", "1/min", "--carbon-intensity", "nan"], "not a finite number"),
                         (["--where", "vm_rmse<=nan"], "finite number")):  # fmt: skip
        assert main([*argv[:7], *bad]) == 2, bad
        assert message in capsys.readouterr().err


def test_select_treats_rounding_and_overlapping_cis_as_a_tie_and_says_so():
    """ORT's outputs differ from torch's by float rounding; their energies overlap: a tie, broken by
    the stated rule (fewer passes first), not by whichever median happens to be lower."""
    plain = replace(rec("reference", "onnxruntime", energy=0.50, loss=0.0, ci=0.05), lineage=())
    pruned = replace(rec("pruned", "onnxruntime", energy=0.49, loss=2.5e-5, ci=0.05),
                     lineage=({"pass": "prune-unstructured", "params": {}},))  # fmt: skip
    sel = select([pruned, plain], "grid-gnn", Constraints(max_quality_loss_pct=1))
    assert sel.chosen.variant_id == "reference"  # fewer passes wins the tie despite the higher median
    text = render(sel)
    assert "tie =1*" in text and "tie =1" in text and "fewer passes" in text
    assert any("tied with the runner-up" in reason for reason in sel.reasons)
    clearly_cheaper = replace(pruned, energy_j_per_inference=0.3, energy_ci95_low=0.29, energy_ci95_high=0.31)
    assert (
        select([clearly_cheaper, plain], "grid-gnn", Constraints(max_quality_loss_pct=1)).chosen.variant_id == "pruned"
    )
