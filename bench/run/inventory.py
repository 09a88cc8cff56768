"""What this machine knows: the twins, passes, runtimes and energy meters registered here (built in or
from plugins) and whether each can run here, the suites, and which of their grids are cached."""

from __future__ import annotations

import torch

from bench.measure.meters import METERS
from bench.measure.runtimes import RUNTIMES
from bench.suites import load_suite, suite_names
from compress.base import PASSES, TARGETS
from models.errors import TwinbenchError
from models.grid.cache import GridDataConfig, cache_root, grid_dir, verify_cache
from models.registry import TWINS, TrainableTwin


def inventory() -> list[str]:
    """`twinbench list`, line by line."""
    here = "cuda" if torch.cuda.is_available() else "cpu"
    return [*_twins(), *_passes(here), *_runtimes(here), *_meters(here), *_plugin_failures(), *_suites_and_grids()]


def _twins() -> list[str]:
    lines = ["twins:"]
    for name, entry in TWINS.entries().items():
        spec = entry.obj
        how = "trains" if issubclass(spec, TrainableTwin) else "ships trained weights"
        lines += [
            f"  {name:24} {entry.origin} · {how}",
            f"  {'':24} {spec.summary}",
            f"  {'':24} data: {spec.data_files}; metric: {spec.metric}; baseline: {spec.baseline}",
        ]
    return lines


def _passes(here: str) -> list[str]:
    lines = [f"passes (here: {here}):"]
    for name, entry in PASSES.entries().items():
        reasons = {t: entry.obj.requires.unmet(here, t) for t in TARGETS}
        ok = [t for t, why in reasons.items() if why is None]
        state = f"runs here for {', '.join(ok)}" if ok else f"not here: {next(iter(reasons.values()))}"
        lines.append(f"  {name:24} {entry.origin} · {state}")
        if summary := doc_line(entry.obj):
            lines.append(f"  {'':24} {summary}")
    return lines


def _runtimes(here: str) -> list[str]:
    lines = [f"runtimes (here: {here}):"]
    for name, entry in RUNTIMES.entries().items():
        why = entry.obj.requires.unmet(here, entry.obj.target)
        state = "runs here" if why is None else f"not here: {why}"
        lines.append(f"  {name:24} {entry.origin} · runs {entry.obj.target} models · {state}")
    return lines


def _meters(here: str) -> list[str]:
    lines = ["energy meters (tried from the top; `twinbench env` shows the one each device gets):"]
    for name, entry in sorted(METERS.entries().items(), key=lambda item: -item[1].obj.priority):
        why = entry.obj.requires.unmet(here)
        state = "" if why is None else f" · not here: {why}"
        lines.append(f"  {name:24} {entry.origin} · meters {', '.join(entry.obj.devices)}{state}")
    return lines


def _plugin_failures() -> list[str]:
    return [
        f"error: the {registry.kind} plugin {name!r} ({registry.group}) failed to load: {error}"
        for registry in (TWINS, PASSES, RUNTIMES, METERS)
        for name, error in registry.failures().items()
    ]


def _suites_and_grids() -> list[str]:
    lines = ["suites:"]
    grids: set[str] = set()
    for name in suite_names():
        suite = load_suite(name)
        grids.update(suite.grids)
        lines.append(f"  {name:24} {suite.description}")
    lines.append(f"grids (cache: {cache_root()}):")
    for grid in sorted(grids):
        lines.append(f"  {grid:22} {_grid_state(grid)}")
    return lines


def _grid_state(grid: str) -> str:
    if not (grid_dir(grid) / "manifest.json").exists():
        return "not built (twinbench data --grid ...)"
    try:
        verify_cache(grid_dir(grid), grid, GridDataConfig())
        return "cached"
    except TwinbenchError as e:
        return f"not usable: {e}"


def doc_line(obj) -> str:
    """The first line of a docstring that someone wrote (not a dataclass's generated signature)."""
    doc = (obj.__doc__ or "").strip()
    if doc.startswith(f"{obj.__name__}("):
        return ""
    paragraph = " ".join(line.strip() for line in doc.split("\n\n")[0].splitlines())
    return paragraph.split(". ")[0].rstrip(".") + "."
