"""The grid data cache: plain npz files plus a JSON manifest, verified before use.

This module must not import simbench or pandapower: a GPU machine without them runs from a carried
cache alone. Building (and `ensure_grid`, load or build) lives in `models/grid/build.py`.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
import shutil
from dataclasses import asdict, dataclass, field
from datetime import datetime
from importlib import metadata
from pathlib import Path

import numpy as np

from models.errors import CacheError

STEP_MINUTES = 15  # every grid's time series: one step every 15 minutes
STEPS_PER_DAY = 24 * 60 // STEP_MINUTES

# Bump when the layout or meaning of any cached array changes: older caches are then stale.
FORMAT_VERSION = 1
CACHE_ENV = "TWINBENCH_CACHE"
REPO_ROOT = Path(__file__).resolve().parents[2]
# Packages whose version changes the data; numpy only stores it.
DATA_PACKAGES = ("simbench", "pandapower")
# A user grid's name (models/grid/source.py): a file stem and 8 hex digits; SimBench codes end in -sw.
USER_GRID_NAME = re.compile(r"^[A-Za-z0-9._-]{1,40}-[0-9a-f]{8}$")

# Every cached array, with its meaning. Written into each manifest; README documents the same.
ARRAYS: dict[str, dict[str, str]] = {
    "graph.npz": {
        "bus_ids": "(N,) pandapower bus id each node stands for (lowest id among buses merged by closed bus-bus switches)",
        "pp_bus_ids": "(B,) every pandapower bus id of the grid",
        "pp_bus_node": "(B,) node index of each pandapower bus (-1: not in the solved model)",
        "edge_index": "(2, E) node index pairs; each line/transformer appears in both directions",
        "edge_attr": "(E, F_e) edge features, columns named by edge_attr_names",
        "edge_attr_names": "(F_e,) r_pu, x_pu, b_pu (series r/x and total charging b on the system base), tap_ratio, shift_degree, is_trafo, is_reverse",
        "node_attr": "(N, F_n) static node features, columns named by node_attr_names",
        "node_attr_names": "(F_n,) is_slack, vn_kv, n_load, n_sgen, n_storage",
        "load_node": "(n_load,) node of each row of net.load (-1: disconnected)",
        "sgen_node": "(n_sgen,) node of each row of net.sgen (-1: disconnected)",
        "storage_node": "(n_storage,) node of each row of net.storage (-1: disconnected)",
        "ybus_re": "(N, N) real part of the node admittance matrix in p.u. (auxiliary buses Kron-reduced)",
        "ybus_im": "(N, N) imaginary part of the node admittance matrix in p.u.",
        "slack_node": "() index of the slack node",
        "v_slack": "(2,) slack voltage as (vm_pu, va_degree)",
        "base_mva": "() system base power in MVA",
    },
    "snapshots.npz": {
        "time_step": "(S,) index of the 15-minute step from the manifest's time.start (SimBench: 2016-01-01 00:00)",
        "split": "(S,) 0 train, 1 val, 2 test",
        "load_p_mw": "(S, n_load) load active power, columns in net.load order",
        "load_q_mvar": "(S, n_load) load reactive power, columns in net.load order",
        "sgen_p_mw": "(S, n_sgen) static generator active power, columns in net.sgen order",
        "storage_p_mw": "(S, n_storage) storage active power (load convention), columns in net.storage order",
        "p_inj_pu": "(S, N) net active injection per node in p.u. (generation minus load)",
        "q_inj_pu": "(S, N) net reactive injection per node in p.u.",
        "vm_pu": "(S, N) AC power-flow voltage magnitude per node",
        "va_degree": "(S, N) AC power-flow voltage angle per node in degrees",
    },
    "streams.npz": {
        "time_step": "(T,) every 15-minute step (of the year, for SimBench grids)",
        "split": "(T,) 0 train, 1 val, 2 test",
        "values": "(T, C) deduplicated metering streams in MW or Mvar",
        "channel_names": "(C,) '<element>:<index>:<quantity>', e.g. 'load:3:p_mw'",
        "channel_profiles": "(C,) where each kept channel comes from: its SimBench profile name, or its column of a user's profiles file",
        "all_channel_names": "(C_all,) every channel before deduplication",
        "group_of": "(C_all,) kept channel each original channel duplicates (-1: constant, dropped)",
    },
    "trajectories.npz": {
        "time_step": "(T,) every 15-minute step (of the year, for SimBench grids), contiguous",
        "split": "(T,) 0 train, 1 val, 2 test",
        "vm_pu": "(T, N) voltage magnitude per node from sequential AC power flow",
        "va_degree": "(T, N) voltage angle per node in degrees",
        "p_inj_pu": "(T, N) net active injection per node in p.u.",
        "q_inj_pu": "(T, N) net reactive injection per node in p.u.",
    },
    "stats.npz": {
        "streams_mean": "(C,) training-split mean of each stream",
        "streams_std": "(C,) training-split std of each stream",
        "<name>_mean": "(N,) training-split mean of trajectories' vm_pu, va_degree, p_inj_pu, q_inj_pu per node",
        "<name>_std": "(N,) training-split std of the same",
    },
}
FILES = tuple(ARRAYS)


@dataclass(frozen=True)
class GridDataConfig:
    """How a grid's data is derived. Part of the manifest: a different config means a stale cache."""

    snapshots: int = 4096
    seed: int = 0
    train_frac: float = 0.75
    val_frac: float = 0.125
    dedup_min_corr: float = 0.9999

    def __post_init__(self) -> None:
        if self.snapshots < 3:
            raise ValueError("snapshots must be >= 3")
        if not (0 < self.train_frac and 0 < self.val_frac and self.train_frac + self.val_frac < 1):
            raise ValueError("train_frac and val_frac must be positive and leave room for a test split")
        if not 0 < self.dedup_min_corr < 1:
            raise ValueError("dedup_min_corr must be in (0, 1)")


@dataclass(frozen=True)
class GridData:
    """A verified grid cache, loaded into memory."""

    grid: str
    path: Path
    manifest: dict
    graph: dict[str, np.ndarray] = field(repr=False)
    snapshots: dict[str, np.ndarray] = field(repr=False)
    streams: dict[str, np.ndarray] = field(repr=False)
    trajectories: dict[str, np.ndarray] = field(repr=False)
    stats: dict[str, np.ndarray] = field(repr=False)

    @property
    def content_hash(self) -> str:
        """Identity of the data, for keying anything derived from it (checkpoints)."""
        return self.manifest["content_hash"]

    @property
    def provenance(self) -> dict:
        """What a record says about the data it was measured on: the cache's content hash and, for a
        user's profiles file, how its gaps and resolution were treated (nothing, filled, resampled)."""
        source = self.manifest.get("source") or {}
        treated = {k: source[k] for k in ("policy", "treatment") if isinstance(source, dict) and k in source}
        return {"content_hash": self.content_hash, **treated}

    @property
    def n_nodes(self) -> int:
        return len(self.graph["bus_ids"])

    @property
    def week_step_of_start(self) -> int:
        """Where step 0 falls in the week, in 15-minute steps after Monday 00:00: the twins' calendar
        inputs and time-of-day slots count from it, so that an exported twin takes the clock's
        calendar. From the manifest's `time.start`; profiles that carry no time are taken to start
        as SimBench's do, at 00:00 on Friday 2016-01-01."""
        start = series_start(self.manifest)
        return start.weekday() * STEPS_PER_DAY + (start.hour * 60 + start.minute) // STEP_MINUTES


def series_start(manifest: dict) -> datetime:
    """Step 0 of a cache's time series, from its manifest's `time.start` (SimBench's 2016-01-01
    00:00 where the profiles carried no time); CacheError if the manifest holds something else."""
    time = manifest.get("time") or {}
    start = time.get("start") if isinstance(time, dict) else time
    try:
        return datetime.fromisoformat(start or "2016-01-01T00:00")
    except (TypeError, ValueError) as e:
        raise CacheError(f"corrupt manifest: time.start {start!r} is not an ISO 8601 time") from e


def cache_root() -> Path:
    """The cache directory: $TWINBENCH_CACHE, else `.cache/` in the repository (git-ignored)."""
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser().resolve() if env else REPO_ROOT / ".cache"


def grid_dir(grid: str, root: Path | None = None) -> Path:
    return (root or cache_root()) / "grids" / grid


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def installed_version(package: str) -> str | None:
    """Version of an installed distribution, read from metadata without importing it."""
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def write_cache(
    directory: Path, grid: str, config: GridDataConfig, arrays: dict[str, dict[str, np.ndarray]], info: dict
) -> None:
    """Write all files and the manifest to a fresh folder, then swap it in.

    The folder appears complete or not at all: an interrupted build leaves the previous cache (or
    nothing) behind, never a half-written one that looks valid.
    """
    if set(arrays) != set(FILES):
        raise ValueError(f"expected files {FILES}, got {sorted(arrays)}")
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = directory.parent / f".tmp-{directory.name}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    files = {}
    for name in FILES:
        np.savez(tmp / name, **arrays[name])
        files[name] = {
            "sha256": sha256_file(tmp / name),
            "bytes": (tmp / name).stat().st_size,
            "arrays": {
                key: {"shape": list(a.shape), "dtype": str(a.dtype), "meaning": _meaning(name, key)}
                for key, a in arrays[name].items()
            },
        }
    manifest = {
        "format_version": FORMAT_VERSION,
        "grid": grid,
        "build_config": asdict(config),
        "packages": {p: installed_version(p) for p in (*DATA_PACKAGES, "numpy")},
        "files": files,
        "content_hash": hashlib.sha256("".join(files[name]["sha256"] for name in FILES).encode()).hexdigest(),
        **info,
    }
    (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    old = directory.parent / f".old-{directory.name}-{os.getpid()}"
    if directory.exists():
        directory.rename(old)
    tmp.rename(directory)
    shutil.rmtree(old, ignore_errors=True)


def _meaning(file: str, key: str) -> str:
    docs = ARRAYS[file]
    if key in docs:
        return docs[key]
    pattern = "<name>_mean" if key.endswith("_mean") else "<name>_std"
    return docs.get(pattern, "")


def verify_cache(directory: Path, grid: str, config: GridDataConfig) -> dict:
    """Return the manifest if the cache is complete, intact and current; raise CacheError saying why not."""
    manifest_path = directory / "manifest.json"
    if not manifest_path.is_file():
        raise CacheError(f"no cache for grid {grid!r} at {directory} (missing manifest.json)")
    try:
        manifest = json.loads(manifest_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as e:  # RecursionError: nested 100k deep
        raise CacheError(f"corrupt manifest {manifest_path}: {type(e).__name__}: {e}") from None
    if not isinstance(manifest, dict):
        raise CacheError(f"corrupt manifest {manifest_path}: a JSON object expected, found {type(manifest).__name__}")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise CacheError(
            f"stale cache {directory}: format {manifest.get('format_version')}, this code reads {FORMAT_VERSION}"
        )
    if manifest.get("grid") != grid:
        raise CacheError(f"cache {directory} holds grid {manifest.get('grid')!r}, not {grid!r}")
    if manifest.get("build_config") != asdict(config):
        raise CacheError(
            f"stale cache {directory}: built with {manifest.get('build_config')}, asked for {asdict(config)}"
        )
    for package in DATA_PACKAGES:
        packages = manifest.get("packages")
        built, here = packages.get(package) if isinstance(packages, dict) else None, installed_version(package)
        # A machine without the package (a GPU box) can only trust the manifest; one with a
        # different version would build different data, so the cache is stale there.
        if here is not None and built != here:
            raise CacheError(f"stale cache {directory}: built with {package} {built}, installed {here}")
    files = manifest.get("files", {})
    for name in FILES:
        path = directory / name
        if not isinstance(files, dict) or name not in files or not path.is_file():
            raise CacheError(f"incomplete cache {directory}: {name} missing")
        entry = files[name]
        if not isinstance(entry, dict) or sha256_file(path) != entry.get("sha256"):
            raise CacheError(f"corrupt cache {directory}: {name} does not match its hash in manifest.json")
    series_start(manifest)  # the twins' calendars count from it
    _check_inputs(directory, manifest)
    return manifest


def _check_inputs(directory: Path, manifest: dict) -> None:
    """A user grid's cache is stale once one of its input files changed. A file that is not there
    (a GPU machine running from a carried cache) cannot be checked: the manifest is trusted."""
    source = manifest.get("source")
    inputs = source.get("inputs") if isinstance(source, dict) else None
    for entry in inputs if isinstance(inputs, list) else []:
        path = Path(str(entry.get("resolved", ""))) if isinstance(entry, dict) else None
        if path is not None and path.is_file() and sha256_file(path) != entry.get("sha256"):
            raise CacheError(f"stale cache {directory}: {entry.get('path')} ({path}) changed since the cache was built")


def build_hint(grid: str, directory: Path) -> str:
    """The command that builds a grid's cache: a user grid's is in its manifest (when there is one)."""
    try:
        source = json.loads((directory / "manifest.json").read_text()).get("source", {})
        files = {i["role"]: i["resolved"] for i in source["inputs"]}
        command = f"twinbench data --grid {shlex.quote(files['net'])}"
        return command + (f" --profiles {shlex.quote(files['profiles'])}" if "profiles" in files else "")
    except (OSError, ValueError, AttributeError, KeyError, TypeError, RecursionError):
        pass
    if USER_GRID_NAME.match(grid):
        return f"twinbench data --grid NET.json [--profiles FILE] (the pandapower file {grid} was named after)"
    return f"twinbench data --grid {grid}"


def load_grid(grid: str, root: Path | None = None, config: GridDataConfig = GridDataConfig()) -> GridData:
    """Load a verified grid cache. Raises CacheError (with the command that builds it) if unusable."""
    directory = grid_dir(grid, root)
    try:
        manifest = verify_cache(directory, grid, config)
    except CacheError as e:
        raise CacheError(f"{e}\n  build it with: {build_hint(grid, directory)}") from e
    loaded = {}
    for name in FILES:
        with np.load(directory / name, allow_pickle=False) as npz:
            loaded[name.removesuffix(".npz")] = {key: npz[key] for key in npz.files}
            expected = manifest["files"][name]["arrays"]
            shapes = {k: list(v.shape) for k, v in loaded[name.removesuffix(".npz")].items()}
            if shapes != {k: v["shape"] for k, v in expected.items()}:
                raise CacheError(f"corrupt cache {directory}: arrays of {name} differ from manifest.json")
    return GridData(grid=grid, path=directory, manifest=manifest, **loaded)
