"""A twin's footprint over its first year, in kg CO2e: creating it, retraining it, running it, and
its share of the hardware's manufacture (issue 25 items 5 and 6). The report stacks these four per
frontier variant.

    create    = creation_energy_total_j x twins x PUE                      (the first making, once)
    retrain   = creation_energy_total_j x twins x PUE x (year / every - 1) (the makings after it)
    operate   = the projection's inference energy (idle included where `dedicated`), x PUE
    embodied  = kg to make the device x busy hours / (lifetime x 8760 h)   (BoaviztAPI, bench/decide/embodied.py)

each energy x the schedule's carbon intensity. Busy hours: `dedicated`, 8760 per instance (one
device each, all year); `shared`, the hours the measured latency implies (inferences / batch size x
p50 latency per call), over the fleet. A device Boavizta does not know, or an environment without
BoaviztAPI, leaves `embodied` unknown (None, with the reason): never 0.
"""

from __future__ import annotations

from dataclasses import dataclass

from bench.decide.annual import J_PER_KWH, SECONDS_PER_YEAR, Schedule, project
from bench.decide.embodied import HOURS_PER_YEAR, Embodied, UnknownDevice, embodied
from bench.records import Record
from models.errors import ConfigError, InputError


@dataclass(frozen=True)
class LifeYear:
    """One cell's first year at a schedule, kg CO2e per part (None: not known, with `why`)."""

    create_kg: float | None
    retrain_kg: float
    operate_kg: float
    embodied_kg: float | None
    why: str = ""  # what is not known, and why

    @property
    def parts(self) -> dict[str, float | None]:
        return {
            "create": self.create_kg,
            "retrain": self.retrain_kg,
            "operate": self.operate_kg,
            "embodied": self.embodied_kg,
        }


def hardware(env: dict, device: str) -> Embodied | str:
    """The device's embodied carbon (a GPU by its NVML name, a CPU host as a server archetype), or
    why it is not known."""
    name = env.get("gpu_name") if device == "cuda" else env.get("cpu_model")
    if not name:
        return f"the run's environment does not name its {'GPU' if device == 'cuda' else 'CPU'}"
    try:
        return embodied(str(name), "gpu" if device == "cuda" else "cpu")
    except (UnknownDevice, InputError) as e:
        return str(e)


def busy_hours(r: Record, schedule: Schedule) -> float:
    """Device hours a year the deployment occupies, over the whole fleet."""
    if schedule.device_use == "dedicated":
        return HOURS_PER_YEAR * schedule.instances
    calls = schedule.inferences_per_year / r.batch_size
    return calls * r.latency_ms_p50 / 1000 / 3600


def life_year(r: Record, schedule: Schedule, device: Embodied | str, measured: Record | None = None) -> LifeYear:
    """`r`'s first year at `schedule` (which must give a carbon intensity), its operation from
    `measured` (a LoadGen server cell near the rate, bench/decide/annual.py) where there is one;
    NotProjectable where the operation itself cannot be projected."""
    if schedule.carbon_g_per_kwh is None:
        raise ConfigError("a footprint in kg CO2e needs a carbon intensity: `carbon_intensity` or `region`")
    kg_per_j = schedule.carbon_g_per_kwh / 1000 / J_PER_KWH * schedule.pue
    projection = project(r, schedule, measured)
    operate = (projection.kwh_per_year - projection.retrain_kwh_per_year) * schedule.carbon_g_per_kwh / 1000
    why = []
    create = retrain = None
    if r.creation_energy_total_j is None:
        why.append(f"creation energy {r.creation_energy_source}")
    else:
        making = r.creation_energy_total_j * schedule.twins * kg_per_j
        makings = SECONDS_PER_YEAR / schedule.retrain_every_s if schedule.retrain_every_s else 1.0
        create, retrain = making, making * max(makings - 1.0, 0.0)
    share = None
    if isinstance(device, Embodied):
        share = device.kg_co2e * busy_hours(r, schedule) / (device.lifetime_years * HOURS_PER_YEAR)
    else:
        why.append(f"embodied carbon: {device}")
    return LifeYear(create, retrain or 0.0, operate, share, "; ".join(why))
