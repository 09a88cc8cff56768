"""Embodied (manufacturing) carbon of the device a twin runs on, from BoaviztAPI (issue 25 item 5).

BoaviztAPI (PyPI `boaviztapi`, the `lca` extra) is used as a library, the way its own HTTP routers
call it (no server, no network):

- a GPU, by its NVML name: Boavizta's GPU component (`mapper_gpu` + `compute_impacts`), whose name
  Boavizta fuzzy-matches to its crowdsourced GPU specs (die and VRAM area, board, masses,
  transport). 'NVIDIA H100 80GB HBM3' becomes its 'NVIDIA H100 SXM 80GB': 575.1 kgCO2e to make,
  over its default 3-year GPU lifetime (26 280 h). The GPU alone: not the host server around it.
- a CPU host: a Boavizta server archetype (`DeviceServer`), the one named if `device` is an
  archetype id ('dellR740'), else Boavizta's default generic compute platform
  (`platform_compute_medium`: 2 CPUs of 16-48 cores, 6-10 x 32 GB RAM, 1-2 SSDs, rack). The
  archetype is not adjusted to the CPU model: the model is kept as asked and `source` says so.

The whole device's figure is allocated linearly by the hours a deployment occupies it:

    kg/year = kg_co2e x busy hours per year / (lifetime_years x 8760)

`dedicated` occupies it the whole year (8760 h per instance); `shared`, the busy hours its measured
latency implies. Boavizta's min/max carry through the same way. For a GPU named in its specs every
input is a point value, so Boavizta's range is min = max; the server archetypes' ranges are wide.

A GPU Boavizta does not know raises `UnknownDevice`, never 0: left alone, Boavizta would quietly
price any unmatched name (an RTX 4090, a typo) as its generic 'Large GPU', and its fuzzy match takes
an 'NVIDIA H800' for a 'P100', so a match must also keep the asked model token (h100, a100, t4) and
memory size.
"""

from __future__ import annotations

import importlib.metadata
import re
from dataclasses import dataclass

from models.errors import InputError, TwinbenchError

HOURS_PER_YEAR = 8760  # a 365-day year, as annual.py's
INSTALL_HINT = "pip install -e '.[lca]'"


class UnknownDevice(TwinbenchError):
    """A device Boavizta has no figure for: its embodied carbon is unknown, never 0."""

    exit_code = 2

    def __init__(self, device: str, why: str):
        self.device = device
        super().__init__(f"embodied carbon of {device!r} is unknown: {why}")


@dataclass(frozen=True)
class Embodied:
    device: str  # as asked (NVML name or CPU model)
    matched: str  # what Boavizta modelled it as: its GPU spec name or server archetype id
    kg_co2e: float  # manufacturing GWP of the whole device (Boavizta's embedded gwp, unrounded)
    kg_co2e_min: float  # Boavizta's uncertainty range
    kg_co2e_max: float
    lifetime_years: float  # what the figure is allocated over (Boavizta's default unless given)
    source: str  # where the figure and the lifetime came from

    def __post_init__(self):
        if not self.kg_co2e > 0:
            raise ValueError(f"embodied carbon of {self.device!r} must be > 0 kg, not {self.kg_co2e}")
        if not self.kg_co2e_min <= self.kg_co2e <= self.kg_co2e_max:
            raise ValueError(f"min {self.kg_co2e_min} <= {self.kg_co2e} <= max {self.kg_co2e_max} fails")
        if not self.lifetime_years > 0:
            raise ValueError(f"lifetime must be > 0 years, not {self.lifetime_years}")

    def kg_per_year(self, busy_hours_per_year: float) -> tuple[float, float, float]:
        """(value, min, max) kgCO2e per year for one device busy `busy_hours_per_year`, allocated
        linearly: kg_co2e x busy_hours / (lifetime_years x 8760)."""
        if not 0 <= busy_hours_per_year <= HOURS_PER_YEAR:
            raise ValueError(
                f"busy hours per year are per device, 0 to {HOURS_PER_YEAR}, not {busy_hours_per_year}"
                " (more instances: multiply the per-device figure)"
            )
        share = busy_hours_per_year / (self.lifetime_years * HOURS_PER_YEAR)
        return self.kg_co2e * share, self.kg_co2e_min * share, self.kg_co2e_max * share

    def describe(self, busy_hours_per_year: float = HOURS_PER_YEAR) -> str:
        """One line with the lifetime, the range and the source, as printed beside the figure
        (4 significant figures: Boavizta's own most)."""
        value, low, high = self.kg_per_year(busy_hours_per_year)
        return (
            f"embodied {value:.4g} kgCO2e/year (min {low:.4g}, max {high:.4g}) for {busy_hours_per_year:g} busy h/year"
            f" of {self.device!r}: {self.kg_co2e:.4g} kg to make over a {self.lifetime_years:g}-year lifetime;"
            f" {self.source}"
        )


def embodied(device: str, kind: str, lifetime_years: float | None = None) -> Embodied:
    """The embodied carbon of `device`: kind "gpu" (its NVML name) or "cpu" (a CPU host: a server
    archetype). `lifetime_years` defaults to Boavizta's for that kind of device (GPU 3, server 4)."""
    if lifetime_years is not None and not lifetime_years > 0:
        raise InputError(f"lifetime must be > 0 years, not {lifetime_years}")
    version = _boavizta_version()
    if kind == "gpu":
        return _gpu(device, lifetime_years, version)
    if kind == "cpu":
        return _server(device, lifetime_years, version)
    raise InputError(f"unknown device kind {kind!r}; valid kinds: cpu, gpu")


def _boavizta_version() -> str:
    try:
        import boaviztapi  # noqa: F401  (optional: the lca extra; the GPU machine runs without it)
    except ImportError as e:
        raise InputError(f"embodied carbon needs BoaviztAPI, which is not installed: {INSTALL_HINT}") from e
    return importlib.metadata.version("boaviztapi")


def _gpu(device: str, lifetime_years: float | None, version: str) -> Embodied:
    from boaviztapi import config
    from boaviztapi.data.archetype import get_component_archetype
    from boaviztapi.dto.component.gpu import GPU, mapper_gpu

    # NVML joins words with hyphens ('NVIDIA A100-SXM4-80GB'), which Boavizta's token match reads
    # as one word and misses; its specs spell them apart ('NVIDIA A100 SXM4 80GB'). Older boards
    # report no maker ('Tesla T4'), which its specs always name ('NVIDIA T4').
    asked = device.replace("-", " ")
    if asked.split()[:1] in (["Tesla"], ["Quadro"]):
        asked = "NVIDIA " + asked
    gpu = mapper_gpu(GPU(name=asked), get_component_archetype(config.default_gpu, "gpu"))
    figures = _whole_device(gpu, device)  # runs Boavizta's name match on the way
    if not gpu.name.is_completed():  # no match: Boavizta priced its generic 'Large GPU' instead
        raise UnknownDevice(device, f"no GPU in BoaviztAPI {version}'s specs matches it; known: {_known_gpus()}")
    matched = gpu.name.value
    if not _same_model(asked, matched):
        raise UnknownDevice(
            device, f"BoaviztAPI {version}'s nearest GPU is {matched!r}, another model; known: {_known_gpus()}"
        )
    source = f"BoaviztAPI {version}, GPU component {matched!r} (its crowdsourced GPU specs, matched by name)"
    return _made(device, matched, figures, lifetime_years, source, "GPU")


def _server(device: str, lifetime_years: float | None, version: str) -> Embodied:
    from boaviztapi import config
    from boaviztapi.data.archetype import get_server_archetype
    from boaviztapi.models.device.server import DeviceServer

    archetype = get_server_archetype(device)
    if archetype:
        matched, how = device, ""
    else:
        matched, how = (
            config.default_server,
            f" (Boavizta's default, a generic compute platform: not sized by the CPU model {device!r})",
        )
        archetype = get_server_archetype(matched)
    figures = _whole_device(DeviceServer(archetype=archetype), device)
    return _made(
        device, matched, figures, lifetime_years, f"BoaviztAPI {version}, server archetype {matched!r}{how}", "server"
    )


def _made(device: str, matched: str, figures: tuple, lifetime_years: float | None, source: str, kind: str) -> Embodied:
    """The Embodied of `_whole_device`'s figures, its lifetime and warnings stated in `source`."""
    kg, low, high, default_h, warnings = figures
    return Embodied(
        device=device,
        matched=matched,
        kg_co2e=kg,
        kg_co2e_min=low,
        kg_co2e_max=high,
        lifetime_years=lifetime_years or default_h / HOURS_PER_YEAR,
        source=source + _lifetime_text(lifetime_years, default_h, kind) + "".join(f"; {w}" for w in warnings),
    )


def _whole_device(model, device: str) -> tuple[float, float, float, float, list[str]]:
    """Boavizta's embedded gwp of the whole device (its duration = its own lifetime, so nothing is
    allocated away), with its default lifetime in hours and its warnings."""
    from boaviztapi.compute.impacts_computation import compute_impacts

    hours = model.usage.hours_life_time.value
    compute_impacts(model=model, duration=hours, selected_criteria=["gwp"])
    impact = model.impacts["gwp"]["embedded"]
    if impact is None:
        raise UnknownDevice(device, "BoaviztAPI computed no embedded gwp for it")
    return impact.value, impact.min, impact.max, hours, sorted(impact.warnings)


def _lifetime_text(given: float | None, default_h: float, what: str) -> str:
    if given:
        return f"; lifetime {given:g} years as given (Boavizta's {what} default: {default_h:g} h)"
    return f"; lifetime {default_h / HOURS_PER_YEAR:g} years (Boavizta's {what} default: {default_h:g} h)"


def _tokens(name: str) -> list[str]:
    return name.lower().replace("-", " ").split()


def _same_model(asked: str, matched: str) -> bool:
    """The match keeps the asked model token (the first word with a digit that is not a memory
    size: h100, a100, t4, mi300x) and, where both state one, the memory size ('80gb')."""
    size = re.compile(r"\d+gb")
    ask, got = _tokens(asked), _tokens(matched)
    model = next((t for t in ask if any(c.isdigit() for c in t) and not size.fullmatch(t)), None)
    if model is None or model not in got:
        return False
    ask_sizes, got_sizes = {t for t in ask if size.fullmatch(t)}, {t for t in got if size.fullmatch(t)}
    return not (ask_sizes and got_sizes) or bool(ask_sizes & got_sizes)


def _known_gpus() -> str:
    from boaviztapi.models.component.gpu import _gpu_specs  # the specs Boavizta matches against

    return ", ".join(sorted(_gpu_specs["name"]))
