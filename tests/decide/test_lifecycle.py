"""Issue 25 item 3: a variant's break-even against its reference (same runtime, device, batch):
its extra creation energy over the energy it saves per inference; shown by select, summary, report."""

import dataclasses

import pytest

from bench.decide import report, summary
from bench.decide.annual import Schedule
from bench.decide.payback import duration_text, payback
from bench.decide.select import Constraints, render, select
from tests.decide.test_decide import rec

STEP = ({"parent": "reference", "pass": "distill", "params": {}},)


def _made(r, total_j, source="estimate", lineage=STEP):
    return dataclasses.replace(
        r,
        lineage=lineage,
        throughput_per_s=1000.0,
        energy_dynamic_j_per_inference=r.energy_j_per_inference,
        creation_energy_j=total_j,
        creation_energy_total_j=total_j,
        creation_energy_source=source,
        creation_device="CPU A",
    )


REFERENCE = _made(rec("reference", energy=1.0), 10_000.0, lineage=())
STUDENT = _made(rec("student", energy=0.6, loss=0.5, p99=0.6), 14_000.0)  # 4 kJ more, 0.4 J saved per inference
WORSE = _made(rec("worse", energy=1.2, loss=0.2), 10_500.0)
SHIPPED = dataclasses.replace(_made(rec("shipped", energy=0.5, loss=0.4), None, "unknown"))


def test_break_even_is_the_extra_creation_over_the_saving_per_inference():
    back = payback(STUDENT, [REFERENCE, STUDENT])
    assert back.extra_creation_j == 4000.0 and back.saved_j_per_inference == pytest.approx(0.4)
    assert back.inferences == pytest.approx(10_000) and back.seconds is None
    timed = payback(STUDENT, [REFERENCE, STUDENT], inferences_per_s=10 / 60)  # 10/min over the fleet
    assert (
        timed.seconds == pytest.approx(60_000)
        and timed.verdict == "pays back after 1e+04 inferences (16.7 h at the schedule's rate)"
    )


def test_a_variant_that_saves_nothing_never_pays_back_and_unknown_costs_say_so():
    assert payback(WORSE, [REFERENCE, WORSE]).verdict == "never pays back: it saves no energy per inference"
    assert payback(WORSE, [REFERENCE, WORSE]).inferences is None
    assert payback(SHIPPED, [REFERENCE, SHIPPED]).verdict == "unknown: creation energy unknown"
    assert payback(REFERENCE, [REFERENCE, STUDENT]) is None  # a reference has nothing to pay back
    other_runtime = dataclasses.replace(STUDENT, runtime="onnxruntime")
    assert payback(other_runtime, [REFERENCE, other_runtime]) is None  # no reference on its runtime


def test_duration_text():
    assert [duration_text(s) for s in (40, 600, 7200, 86_400 * 3, 86_400 * 800)] == [
        "40 s", "10 min", "2 h", "3 days", "2.19 years",
    ]  # fmt: skip


def test_select_summary_and_report_show_creation_and_payback():
    records = [REFERENCE, STUDENT, WORSE]
    text = render(select(records, "grid-gnn", Constraints(max_quality_loss_pct=1.0), Schedule(rate_per_s=1 / 60)))
    assert (
        "creation: 14 kJ (estimate) on CPU A; pays back after 1e+04 inferences (6.94 days at the schedule's rate) "
        "against the fp32 reference on torch-eager"
    ) in text
    md = summary.render(records)
    assert "| creation | payback |" in md and "| 14 kJ (estimate) | 1e+04 inferences |" in md
    assert "| 10.5 kJ (estimate) | never pays back |" in md
    page = report.render(records, {}, "t")
    assert "creation kJ" in page and "payback (inferences)" in page and "never pays back: it saves no energy" in page


# --- item 4: retraining and fleets in the yearly view ---------------------------------------------


def test_annual_kwh_with_retraining_every_30_days():
    """14 kJ per making of the student, 365/30 times a year, on top of its inferences."""
    from bench.decide.annual import SECONDS_PER_YEAR, parse_duration, project

    every = parse_duration("30 days")
    assert every == 30 * 86_400
    plain = project(STUDENT, Schedule(rate_per_s=1 / 900, instances=1000))
    retrained = project(STUDENT, Schedule(rate_per_s=1 / 900, instances=1000, retrain_every_s=every))
    inferences = SECONDS_PER_YEAR / 900 * 1000  # 1 per 15 min per feeder, 1,000 feeders
    assert plain.kwh_per_year == pytest.approx(0.6 * inferences / 3.6e6)
    assert retrained.retrain_kwh_per_year == pytest.approx(14_000 * 365 / 30 / 3.6e6)
    assert retrained.kwh_per_year == pytest.approx(plain.kwh_per_year + 14_000 * 365 / 30 / 3.6e6)
    assert "+ retraining: 14 kJ (estimate) x 12.17/yr x 1 twin shared by all instances" in retrained.basis


def test_personalised_twins_multiply_creation_by_the_fleet():
    from bench.decide.annual import project

    shared = Schedule(rate_per_s=1 / 900, instances=1000, retrain_every_s=30 * 86_400)
    personal = dataclasses.replace(shared, personalized=True)
    a, b = project(STUDENT, shared), project(STUDENT, personal)
    assert b.retrain_kwh_per_year == pytest.approx(1000 * a.retrain_kwh_per_year)
    assert b.kwh_per_year - a.kwh_per_year == pytest.approx(999 * 14_000 * 365 / 30 / 3.6e6)
    page = report.render([REFERENCE, STUDENT], {}, "t", shared)
    assert "student (shared)" in page and "student (personalised)" in page  # side by side


def test_retraining_needs_a_known_creation_cost():
    from bench.decide.annual import NotProjectable, project

    with pytest.raises(NotProjectable, match="its creation energy is not known \\(unknown\\)"):
        project(SHIPPED, Schedule(rate_per_s=1 / 900, retrain_every_s=86_400))


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--rate", "1/min", "--retrain-every", "0 days"], "--retrain-every must be more than 0"),
        (["--rate", "1/min", "--retrain-every", "nan days"], "--retrain-every 'nan days' is not a duration"),
        (["--rate", "1/min", "--retrain-every", "30 parsecs"], "--retrain-every '30 parsecs' is not a duration"),
        (["--rate", "1/min", "--personalized"], "--personalized makes one twin per instance: say how many"),
        (["--retrain-every", "30 days"], "--retrain-every needs --rate"),
    ],
)
def test_bad_lifecycle_options_exit_2(tmp_path, capsys, options, message):
    from bench.cli import main
    from tests.decide.test_decide import _write_run

    run = _write_run(tmp_path, "run", [REFERENCE, STUDENT])
    assert main(["select", "--run", str(run), "--twin", "grid-gnn", "--max-quality-loss-pct", "1", *options]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


# --- item 5: carbon where the user is, the facility's share -----------------------------------------


def test_region_takes_codecarbons_figure_and_says_where_it_came_from(tmp_path, capsys):
    import json
    from importlib import metadata, util
    from pathlib import Path

    from bench.cli import main
    from tests.decide.test_decide import _write_run

    spec = util.find_spec("codecarbon")
    table = Path(next(iter(spec.submodule_search_locations))) / "data" / "private_infra" / "global_energy_mix.json"
    germany = json.loads(table.read_text())["DEU"]
    run = _write_run(tmp_path, "run", [REFERENCE, STUDENT])
    argv = ["select", "--run", str(run), "--twin", "grid-gnn", "--max-quality-loss-pct", "1", "--rate", "1/min"]
    assert main([*argv, "--region", "DEU"]) == 0
    out = capsys.readouterr().out
    source = f"CodeCarbon {metadata.version('codecarbon')} (data/private_infra/global_energy_mix.json): Germany {germany['year']}"
    assert f"{germany['carbon_intensity']:g} g CO2e/kWh ({source})" in out
    assert main([*argv, "--region", "DEU", "--carbon-intensity", "100"]) == 0  # the given figure overrides
    assert "100 g CO2e/kWh (given with --carbon-intensity)" in capsys.readouterr().out


def test_pue_scales_the_facility_and_wue_gives_water():
    from bench.decide.annual import project

    plain = project(STUDENT, Schedule(rate_per_s=1 / 900, instances=1000, carbon_g_per_kwh=400))
    facility = project(
        STUDENT, Schedule(rate_per_s=1 / 900, instances=1000, carbon_g_per_kwh=400, pue=1.5, wue_l_per_kwh=1.8)
    )
    assert facility.kwh_per_year == pytest.approx(1.5 * plain.kwh_per_year)
    assert facility.co2e_kg_per_year == pytest.approx(1.5 * plain.co2e_kg_per_year)
    assert facility.water_l_per_year == pytest.approx(1.8 * plain.kwh_per_year) and plain.water_l_per_year is None
    assert "x PUE 1 (default)" in plain.basis and "x PUE 1.5" in facility.basis


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--region", "XYZ"], "unknown --region 'XYZ': an ISO 3166-1 alpha-3 country code"),
        (["--region", "germany"], "did you mean DEU (Germany)?"),
        (["--pue", "-1"], "argument --pue: must be between 1 and 10"),
        (["--pue", "nan"], "argument --pue: 'nan' is not a finite number"),
        (["--wue", "-0.5"], "argument --wue: must be between 0 and 100"),
    ],
)
def test_bad_carbon_options_exit_2(tmp_path, capsys, options, message):
    from bench.cli import main
    from tests.decide.test_decide import _write_run

    run = _write_run(tmp_path, "run", [REFERENCE, STUDENT])
    argv = ["select", "--run", str(run), "--twin", "grid-gnn", "--max-quality-loss-pct", "1", "--rate", "1/min"]
    assert main([*argv, *options]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


# --- item 6: the first year, stacked ------------------------------------------------------------------


def test_the_first_year_splits_into_create_retrain_operate_and_embodied():
    from bench.decide.annual import project
    from bench.decide.embodied import Embodied
    from bench.decide.lifecycle import busy_hours, life_year

    gpu = Embodied("GPU A", "GPU A", 600.0, 600.0, 600.0, 3.0, "by hand")
    schedule = Schedule(rate_per_s=1 / 900, instances=1000, carbon_g_per_kwh=400, retrain_every_s=73 * 86_400)
    year = life_year(STUDENT, schedule, gpu)
    kg_per_j = 400 / 1000 / 3.6e6
    assert year.create_kg == pytest.approx(14_000 * kg_per_j)  # one shared twin, made once
    assert year.retrain_kg == pytest.approx(14_000 * kg_per_j * 4)  # 365 / 73 = 5 makings, 4 after the first
    inference_kwh = project(STUDENT, schedule).kwh_per_year - project(STUDENT, schedule).retrain_kwh_per_year
    assert year.operate_kg == pytest.approx(inference_kwh * 0.4)
    hours = 365 * 86_400 / 900 * 1000 * 0.3e-3 / 3600  # shared: calls x p50 (0.3 ms) over the fleet
    assert busy_hours(STUDENT, schedule) == pytest.approx(hours)
    assert year.embodied_kg == pytest.approx(600 * hours / (3 * 8760)) and year.why == ""
    no_retraining = dataclasses.replace(schedule, retrain_every_s=None)
    unknown = life_year(SHIPPED, no_retraining, "embodied carbon of 'GPU Z' is unknown: not in Boavizta")
    assert unknown.create_kg is None and unknown.embodied_kg is None
    assert (
        unknown.why
        == "creation energy unknown; embodied carbon: embodied carbon of 'GPU Z' is unknown: not in Boavizta"
    )


def test_the_report_draws_the_life_cycle_with_the_hardware_it_ran_on():
    pytest.importorskip("boaviztapi", reason="the lca extra: pip install -e '.[lca]'")
    schedule = Schedule(rate_per_s=1 / 900, instances=1000, carbon_g_per_kwh=400, retrain_every_s=30 * 86_400)
    page = report.render([REFERENCE, STUDENT], {"gpu_name": "NVIDIA H100 80GB HBM3"}, "t", schedule)
    assert "Life cycle: the first year in kg CO2e" in page and "kg CO2e in the first year at" in page
    assert "GPU component &#39;NVIDIA H100 SXM 80GB&#39;" in page and "3-year lifetime" in page
    assert "pays back after 1e+04 inferences" in page
    unknown = report.render([REFERENCE, STUDENT], {"gpu_name": "NVIDIA RTX 4090"}, "t", schedule)
    assert "embodied: embodied carbon of &#39;NVIDIA RTX 4090&#39; is unknown" in unknown
