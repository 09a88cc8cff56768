"""The grid every twin learns from: SimBench profiles solved with AC power flow, cached as plain files."""

from models.grid.cache import GridData, GridDataConfig, cache_root, ensure_grid, load_grid

__all__ = ["GridData", "GridDataConfig", "cache_root", "ensure_grid", "load_grid"]
