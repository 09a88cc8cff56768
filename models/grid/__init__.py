"""The grid every twin learns from: element profiles (SimBench's, or a user's pandapower file) solved
with AC power flow, cached as plain files."""

from models.grid.build import ensure_grid
from models.grid.cache import GridData, GridDataConfig, cache_root, load_grid
from models.grid.source import GridSource, resolve_grid

__all__ = ["GridData", "GridDataConfig", "GridSource", "cache_root", "ensure_grid", "load_grid", "resolve_grid"]
