"""The carbon intensity of the electricity where the twin runs, from CodeCarbon's offline data.

CodeCarbon ships a country table (`data/private_infra/global_energy_mix.json`: each country's
energy mix and its carbon intensity in g CO2e/kWh, with the data's year), which is what its own
offline trackers use (`Emissions._global_energy_mix_to_emissions_rate`). It is read here as a file
of the installed package, without importing CodeCarbon (whose import probes every GPU vendor's
library): no network, and nothing but the file is needed.
"""

from __future__ import annotations

import difflib
import json
from dataclasses import dataclass
from functools import cache
from importlib import metadata, util
from pathlib import Path

from models.errors import ConfigError, InputError

MIX_FILE = ("data", "private_infra", "global_energy_mix.json")


@dataclass(frozen=True)
class RegionIntensity:
    iso3: str
    g_per_kwh: float
    country: str
    year: int | None
    source: str  # where the figure came from, for every output that uses it


@cache
def _mix() -> tuple[dict, str]:
    spec = util.find_spec("codecarbon")
    if spec is None or not spec.submodule_search_locations:
        raise InputError(
            "`region` reads CodeCarbon's offline country data, and codecarbon is not installed here: "
            "pip install -e '.[lca]' (or give the intensity itself with `carbon_intensity`)"
        )
    path = Path(next(iter(spec.submodule_search_locations))).joinpath(*MIX_FILE)
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise InputError(f"cannot read CodeCarbon's country data {path}: {e}") from None
    return data, f"CodeCarbon {metadata.version('codecarbon')} ({'/'.join(MIX_FILE)})"


def region_intensity(iso3: str) -> RegionIntensity:
    """The grid carbon intensity of a country by its ISO 3166-1 alpha-3 code (DEU, FRA, USA)."""
    data, origin = _mix()
    code = iso3.strip().upper()
    entry = data.get(code)
    if not isinstance(entry, dict) or not isinstance(entry.get("carbon_intensity"), int | float):
        names = {k: str(v.get("country_name", "")) for k, v in data.items() if isinstance(v, dict)}
        by_name = [k for k, n in names.items() if iso3.strip().lower() and iso3.strip().lower() in n.lower()]
        close = by_name or difflib.get_close_matches(code, list(names), n=3)
        hint = "; did you mean " + ", ".join(f"{k} ({names[k]})" for k in close[:3]) + "?" if close else ""
        raise ConfigError(
            f"unknown `region` {iso3[:40]!r}: an ISO 3166-1 alpha-3 country code that CodeCarbon's data holds "
            f"(DEU, FRA, USA, ...; {len(names)} countries){hint}"
        )
    year = entry.get("year") if isinstance(entry.get("year"), int) else None
    country = str(entry.get("country_name", code))
    intensity = float(entry["carbon_intensity"])
    return RegionIntensity(code, intensity, country, year, f"{origin}: {country} {year or '(year not given)'}")
