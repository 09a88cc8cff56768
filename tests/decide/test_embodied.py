"""Issue 25 item 5: embodied carbon from BoaviztAPI as a library, allocated over the device's lifetime
by the hours the deployment occupies it; a device Boavizta does not know is unknown, never 0."""

import sys

import pytest

from bench.decide.embodied import HOURS_PER_YEAR, UnknownDevice, embodied
from models.errors import InputError

H100 = "NVIDIA H100 80GB HBM3"  # as NVML names the SXM5 board


def _boavizta_h100():
    """Boavizta's own figure for its H100 SXM, the way its /v1/component/gpu router computes it:
    (the JSON it would answer, the unrounded impact, its lifetime in hours)."""
    pytest.importorskip("boaviztapi", reason="the lca extra: pip install -e '.[lca]'")
    from boaviztapi import config
    from boaviztapi.compute.impacts_computation import compute_impacts
    from boaviztapi.data.archetype import get_component_archetype
    from boaviztapi.dto.component.gpu import GPU, mapper_gpu

    gpu = mapper_gpu(GPU(name="NVIDIA H100 SXM 80GB"), get_component_archetype(config.default_gpu, "gpu"))
    hours = gpu.usage.hours_life_time.value
    answer = compute_impacts(model=gpu, duration=hours, selected_criteria=["gwp"])
    return answer["gwp"]["embedded"], gpu.impacts["gwp"]["embedded"], hours


def test_an_h100_by_its_nvml_name_has_boaviztas_figure_at_its_stated_lifetime():
    answer, impact, hours = _boavizta_h100()
    e = embodied(H100, "gpu")
    assert e.matched == "NVIDIA H100 SXM 80GB" and e.device == H100
    assert 0 < e.kg_co2e_min <= e.kg_co2e <= e.kg_co2e_max
    assert e.kg_co2e == impact.value and (e.kg_co2e_min, e.kg_co2e_max) == (impact.min, impact.max)
    assert e.lifetime_years == hours / 8760 == 3.0  # Boavizta's GPU default: 26 280 h
    assert "BoaviztAPI 2.5" in e.source and "3 years" in e.source and "'NVIDIA H100 SXM 80GB'" in e.source

    # a dedicated year, by hand: Boavizta's answer (575.1 kg, 4 significant figures) over 3 years
    by_hand = answer["value"] / (hours / 8760)
    value, low, high = e.kg_per_year(HOURS_PER_YEAR)
    assert value == pytest.approx(by_hand, rel=1e-3)  # ~191.7 kgCO2e/year
    assert value == pytest.approx(impact.value / 3) and low == pytest.approx(impact.min / 3)
    assert high == pytest.approx(impact.max / 3)
    line = e.describe()
    assert "191.7 kgCO2e/year" in line and "3-year lifetime" in line and "min 191.7, max 191.7" in line


def test_a_stated_lifetime_replaces_boaviztas_and_says_so():
    _, impact, _ = _boavizta_h100()
    e = embodied(H100, "gpu", lifetime_years=5)
    assert e.lifetime_years == 5 and e.kg_co2e == impact.value  # the device's figure does not change
    assert e.kg_per_year(HOURS_PER_YEAR)[0] == pytest.approx(impact.value / 5)
    assert "5 years as given" in e.source
    with pytest.raises(InputError, match="lifetime"):
        embodied(H100, "gpu", lifetime_years=0)


def test_shared_hours_scale_the_dedicated_year_linearly():
    _boavizta_h100()
    e = embodied(H100, "gpu")
    year = e.kg_per_year(HOURS_PER_YEAR)
    busy = e.kg_per_year(HOURS_PER_YEAR / 4)  # the busy hours a measured latency implies
    assert busy == pytest.approx(tuple(x / 4 for x in year))
    assert e.kg_per_year(0) == (0.0, 0.0, 0.0)
    with pytest.raises(ValueError, match="per device"):
        e.kg_per_year(HOURS_PER_YEAR + 1)


@pytest.mark.parametrize(
    "nvml, boavizta",
    [
        ("NVIDIA H200", "NVIDIA H200 SXM 141GB"),
        ("NVIDIA A100-SXM4-80GB", "NVIDIA A100 SXM4 80GB"),  # NVML's hyphens, Boavizta's spaces
        ("NVIDIA H100 PCIe", "NVIDIA H100 PCIe 80GB"),
        ("Tesla T4", "NVIDIA T4"),  # older boards report no maker
    ],
)
def test_other_nvml_names_find_their_own_model(nvml, boavizta):
    pytest.importorskip("boaviztapi", reason="the lca extra: pip install -e '.[lca]'")
    e = embodied(nvml, "gpu")
    assert e.matched == boavizta and e.kg_co2e > 0


@pytest.mark.parametrize(
    "name, why",
    [
        ("NVIDIA GeForce RTX 4090", "no GPU in BoaviztAPI"),  # Boavizta alone would price its generic 'Large GPU'
        ("NVIDIA H800", "nearest GPU is 'NVIDIA P100', another model"),  # its fuzzy match, refused
        ("NVIDIA RTX A6000", "another model"),
    ],
)
def test_a_gpu_boavizta_does_not_know_is_unknown_never_zero(name, why):
    pytest.importorskip("boaviztapi", reason="the lca extra: pip install -e '.[lca]'")
    with pytest.raises(UnknownDevice, match=why) as caught:
        embodied(name, "gpu")
    message = str(caught.value)
    assert f"embodied carbon of {name!r} is unknown" in message
    assert "known: " in message and "NVIDIA H100 SXM 80GB" in message  # says what it does know
    assert caught.value.device == name and caught.value.exit_code == 2


def test_a_cpu_host_is_a_server_archetype_with_its_range():
    pytest.importorskip("boaviztapi", reason="the lca extra: pip install -e '.[lca]'")
    host = embodied("AMD EPYC 7R13", "cpu")
    assert host.matched == "platform_compute_medium" and host.device == "AMD EPYC 7R13"
    assert 0 < host.kg_co2e_min < host.kg_co2e < host.kg_co2e_max  # the archetype's ranges (cores, RAM, SSDs)
    assert host.lifetime_years == 4.0  # Boavizta's server default: 35 040 h
    assert "not sized by the CPU model 'AMD EPYC 7R13'" in host.source
    named = embodied("dellR740", "cpu")
    assert named.matched == "dellR740" and "Boavizta's default" not in named.source
    with pytest.raises(InputError, match="valid kinds: cpu, gpu"):
        embodied("dellR740", "tpu")


def test_without_boavizta_the_error_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "boaviztapi", None)  # import boaviztapi now raises ImportError
    with pytest.raises(InputError, match=r"not installed: pip install -e '\.\[lca\]'") as caught:
        embodied(H100, "gpu")
    assert caught.value.exit_code == 2
