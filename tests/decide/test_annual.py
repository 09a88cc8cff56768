"""Deployment view: yearly kWh, CO2e and cost from hand-made records, with the arithmetic written out."""

import math

import pytest

from bench.decide.annual import NotProjectable, Schedule, parse_rate, project, render_table
from bench.records import Record
from models.errors import ConfigError

YEAR_S = 365 * 86400  # 31 536 000 s


def rec(*, energy=0.5, low=0.45, high=0.55, dynamic=0.2, idle=50.0, source="nvml", throughput=100.0, batch=1,
        status="ok", flags=()):  # fmt: skip
    extra = {"status_reason": "needs CUDA"} if status != "ok" else {}
    return Record(
        run_id="r", suite="s", twin="grid-gnn", grid="g", variant_id="v", variant_name="v", runtime="torch-eager",
        device="cuda", batch_size=batch, status=status, energy_j_per_inference=energy, energy_ci95_low=low,
        energy_ci95_high=high, energy_source=source, energy_dynamic_j_per_inference=dynamic, idle_power_w=idle,
        throughput_per_s=throughput, flags=flags, **extra,
    )  # fmt: skip


def estimate_rec(**kw):
    return rec(source="estimate", dynamic=None, idle=None, **kw)


# N = 1/60 per s x 31 536 000 s x 2 instances = 1 051 200 inferences a year
N_1_PER_MIN_X2 = 1_051_200
ONE_PER_MIN = 1 / 60


def test_inferences_per_year():
    assert Schedule(ONE_PER_MIN, instances=2).inferences_per_year == pytest.approx(N_1_PER_MIN_X2)


def test_shared_pays_only_the_dynamic_energy():
    p = project(rec(), Schedule(ONE_PER_MIN, instances=2, device_use="shared"))
    # 0.2 J x 1 051 200 = 210 240 J = 0.0584 kWh (not the 0.5 J total: 525 600 J = 0.146 kWh)
    assert p.kwh_per_year == pytest.approx(0.0584)
    assert p.inferences_per_year == pytest.approx(N_1_PER_MIN_X2)
    assert p.energy_source == "nvml" and p.device_use == "shared"
    # CI: the total's half-widths (0.05 J each side) move the dynamic figure: 0.15 J and 0.25 J
    # 0.15 x 1 051 200 = 157 680 J = 0.0438 kWh; 0.25 x 1 051 200 = 262 800 J = 0.073 kWh
    assert p.kwh_ci95_low == pytest.approx(0.0438)
    assert p.kwh_ci95_high == pytest.approx(0.073)
    assert p.co2e_kg_per_year is None and p.cost_per_year is None


def test_dedicated_pays_idle_power_all_year_plus_the_dynamic_energy():
    p = project(rec(), Schedule(ONE_PER_MIN, instances=2, device_use="dedicated"))
    # idle: 50 W x 31 536 000 s x 2 = 3 153 600 000 J = 876 kWh; dynamic as shared: 0.0584 kWh
    assert p.kwh_per_year == pytest.approx(876.0584)
    assert p.kwh_ci95_low == pytest.approx(876.0438)
    assert p.kwh_ci95_high == pytest.approx(876.073)
    assert "dedicated" in p.basis and "50 W idle" in p.basis


def test_carbon_and_price():
    s = Schedule(ONE_PER_MIN, instances=2, device_use="dedicated", carbon_g_per_kwh=400, price_per_kwh=0.30)
    p = project(rec(), s)
    # CO2e = 876.0584 kWh x 400 g/kWh / 1000 = 350.42336 kg; cost = 876.0584 x 0.30 = 262.81752
    assert p.co2e_kg_per_year == pytest.approx(350.42336)
    assert (p.co2e_kg_ci95_low, p.co2e_kg_ci95_high) == (pytest.approx(876.0438 * 0.4), pytest.approx(876.073 * 0.4))
    assert p.cost_per_year == pytest.approx(262.81752)
    assert (p.cost_ci95_low, p.cost_ci95_high) == (pytest.approx(876.0438 * 0.3), pytest.approx(876.073 * 0.3))


def test_zero_carbon_and_price_are_figures_not_missing():
    p = project(rec(), Schedule(1.0, carbon_g_per_kwh=0, price_per_kwh=0))
    assert p.co2e_kg_per_year == 0 and p.cost_per_year == 0


def test_asymmetric_ci_keeps_each_half_width_on_its_own_side():
    # total 0.5 J in [0.4, 0.53]: half-widths 0.1 below, 0.03 above -> dynamic 0.2 in [0.1, 0.23]
    p = project(rec(low=0.4, high=0.53), Schedule(1.0))
    # N = 31 536 000: 0.2 J -> 6 307 200 J = 1.752 kWh; 0.1 J -> 0.876 kWh; 0.23 J -> 2.0148 kWh
    assert p.kwh_per_year == pytest.approx(1.752)
    assert p.kwh_ci95_low == pytest.approx(0.876)
    assert p.kwh_ci95_high == pytest.approx(2.0148)


def test_ci_low_below_zero_joules_is_clipped():
    # dynamic 0.03 J - 0.05 J half-width < 0 -> 0 kWh; high 0.08 J x 31 536 000 = 2 522 880 J = 0.7008 kWh
    p = project(rec(dynamic=0.03), Schedule(1.0))
    assert p.kwh_ci95_low == 0.0
    assert p.kwh_ci95_high == pytest.approx(0.7008)


def test_no_energy_ci_gives_no_projected_ci():
    p = project(rec(low=None, high=None), Schedule(1.0))
    assert p.kwh_per_year == pytest.approx(1.752) and p.kwh_ci95_low is None and p.kwh_ci95_high is None


def test_estimate_source_uses_its_whole_figure_and_stays_labelled_an_estimate():
    p = project(estimate_rec(), Schedule(1.0, device_use="shared"))
    # 0.5 J x 31 536 000 = 15 768 000 J = 4.38 kWh; CI 0.45 J -> 3.942, 0.55 J -> 4.818
    assert p.kwh_per_year == pytest.approx(4.38)
    assert (p.kwh_ci95_low, p.kwh_ci95_high) == (pytest.approx(3.942), pytest.approx(4.818))
    assert p.energy_source == "estimate"
    assert "an estimate, not a measurement" in p.basis and "measurement" not in p.basis.replace("not a measurement", "")
    assert "estimate (not measured)" in render_table([("cpu", p)])


def test_dedicated_refused_without_measured_idle_power():
    with pytest.raises(NotProjectable, match=r"idle power was not measured.*--device-use shared"):
        project(estimate_rec(), Schedule(1.0, device_use="dedicated"))
    with pytest.raises(NotProjectable, match="idle power was not measured"):
        project(rec(idle=None, dynamic=None), Schedule(1.0, device_use="dedicated"))
    assert issubclass(NotProjectable, ConfigError)


def test_measured_source_without_dynamic_split_is_refused_even_shared():
    with pytest.raises(NotProjectable, match="idle power was not measured"):
        project(rec(idle=None, dynamic=None), Schedule(1.0, device_use="shared"))


def test_dynamic_energy_within_idle_noise_is_refused():
    with pytest.raises(NotProjectable, match="did not rise above"):
        project(rec(dynamic=-0.01), Schedule(1.0))


def test_record_without_energy_is_refused():
    with pytest.raises(NotProjectable, match="needs CUDA"):
        project(rec(status="unsupported", energy=None, low=None, high=None, dynamic=None, source="none"), Schedule(1.0))
    with pytest.raises(NotProjectable, match="no energy figure"):
        project(rec(energy=None, low=None, high=None, dynamic=None, source="none"), Schedule(1.0))


def test_schedule_faster_than_the_measured_throughput_is_refused():
    with pytest.raises(NotProjectable, match="could not keep up"):
        project(rec(throughput=0.01), Schedule(ONE_PER_MIN))  # 0.0167/s asked, 0.01/s served
    # the rate is per instance: 4 instances at 0.5/s each on cells that serve 1/s is fine
    assert project(rec(throughput=1.0), Schedule(0.5, instances=4)).inferences_per_year == pytest.approx(
        0.5 * YEAR_S * 4
    )
    assert project(rec(throughput=1.0), Schedule(1.0)).kwh_per_year > 0  # exactly at capacity is fine
    with pytest.raises(NotProjectable, match="no measured throughput"):
        project(rec(throughput=None), Schedule(1.0))


def test_flags_and_batch_fill_are_carried():
    p = project(rec(batch=64, flags=("high_cv",)), Schedule(ONE_PER_MIN))
    assert p.flags == ("high_cv",)
    assert "batch size 64" in p.basis and "fills every 3,840 s" in p.basis  # 64 / (1/60) = 3840 s


@pytest.mark.parametrize(
    "text, per_s",
    [
        ("1/min", 1 / 60),
        ("96/day", 96 / 86400),
        ("10/s", 10.0),
        ("2.5 / hour", 2.5 / 3600),
        ("1/h", 1 / 3600),
        ("1/15min", 1 / 900),
        ("1 / 1.5 h", 1 / 5400),
        ("3/week", 3 / 604800),
        ("1000/year", 1000 / YEAR_S),
        ("1 per minute", 1 / 60),
        ("10 Hz", 10.0),
    ],
)
def test_parse_rate(text, per_s):
    assert parse_rate(text) == pytest.approx(per_s, rel=1e-12)


def test_a_year_is_365_days_in_parsing_and_projection_alike():
    assert Schedule(parse_rate("1000/year")).inferences_per_year == pytest.approx(1000, rel=1e-12)


@pytest.mark.parametrize(
    "text",
    [
        *["fast", "0/min", "-1/s", "nan/min", "inf/min", "1/kg", "", "   ", "10", "1/0min", None],
        # issue 23 item 5: pint evaluated expressions ("10**10**10/s" hung); a grammar, a length cap
        *["10**10**10/s", "1/ms*1e9", "9" * 70 + "/s", "1e999/s", "(1)/s", "1/s/s"],
    ],
)
def test_parse_rate_refuses_bad_input(text):
    with pytest.raises(ConfigError, match="rate"):
        parse_rate(text)


@pytest.mark.parametrize(
    "kw",
    [
        {"rate_per_s": math.nan},
        {"rate_per_s": 0},
        {"rate_per_s": -1.0},
        {"rate_per_s": math.inf},
        {"rate_per_s": True},
        {"rate_per_s": "1/min"},
        {"rate_per_s": 1.0, "instances": 0},
        {"rate_per_s": 1.0, "instances": 1.5},
        {"rate_per_s": 1.0, "instances": True},
        {"rate_per_s": 1.0, "device_use": "cloud"},
        {"rate_per_s": 1.0, "carbon_g_per_kwh": math.nan},
        {"rate_per_s": 1.0, "carbon_g_per_kwh": -1},
        {"rate_per_s": 1.0, "carbon_g_per_kwh": math.inf},
        {"rate_per_s": 1.0, "price_per_kwh": math.nan},
        {"rate_per_s": 1.0, "price_per_kwh": -0.1},
        {"rate_per_s": 1.0, "price_per_kwh": math.inf},
    ],
)
def test_schedule_validation(kw):
    with pytest.raises(ConfigError):
        Schedule(**kw)


def test_render_table():
    s = Schedule(ONE_PER_MIN, instances=2, carbon_g_per_kwh=400)
    dedicated = project(rec(), Schedule(ONE_PER_MIN, instances=2, device_use="dedicated", price_per_kwh=0.3))
    table = render_table([("int8 / nvml", project(rec(), s)), ("fp32 dedicated", dedicated)])
    lines = table.splitlines()
    assert len(lines) == 4 and len({len(line) for line in lines}) == 1  # header, rule, 2 rows; aligned
    assert "kWh/yr [95% CI]" in lines[0]
    assert "0.05840 [0.04380, 0.07300]" in lines[2] and "0.02336" in lines[2]  # CO2e 0.0584 x 0.4
    assert "876.1 [876.0, 876.1]" in lines[3] and "262.8" in lines[3]
    assert lines[3].count(" - ") == 2  # no carbon intensity nor WUE given: no CO2e or water figure, not 0


def _server(qps, energy, dynamic, valid=True):
    """A LoadGen server cell of the same variant (issue 26)."""
    import dataclasses

    return dataclasses.replace(
        rec(energy=energy, low=None, high=None, dynamic=dynamic, batch=16),
        scenario=f"server@{qps:g}qps", target_qps=float(qps), achieved_qps=float(qps), loadgen_valid=valid,
    )  # fmt: skip


def test_a_server_cell_near_the_rate_replaces_the_saturation_figure():
    """Issue 26 item 5: at 60/s a cell measured at 100 qps (within 2x) is used, and the output says so;
    at 10/s none is near, and the projection extrapolates from saturation as before."""
    from bench.decide.annual import SECONDS_PER_YEAR, measured_near

    offline = rec()
    servers = [offline, _server(100, energy=2.0, dynamic=0.9), _server(1000, energy=0.6, dynamic=0.3)]
    near = Schedule(60.0, device_use="shared")
    server = measured_near(offline, servers, near)
    assert server.scenario == "server@100qps"
    p = project(offline, near, server)
    assert p.kwh_per_year == pytest.approx(0.9 * 60 * SECONDS_PER_YEAR / 3.6e6) and p.kwh_ci95_low is None
    assert "measured by LoadGen at 100 qps (server@100qps, valid), not extrapolated from saturation" in p.basis
    assert "at server@100qps (LoadGen)" in render_table([("v", p)])
    dedicated = project(offline, Schedule(60.0, device_use="dedicated"), server)
    assert dedicated.kwh_per_year == pytest.approx(2.0 * 60 * SECONDS_PER_YEAR / 3.6e6)  # idle is in the measurement
    far = Schedule(10.0, device_use="shared")
    assert measured_near(offline, servers, far) is None
    assert project(offline, far).measured_at == "" and "at server" not in render_table([("v", project(offline, far))])
