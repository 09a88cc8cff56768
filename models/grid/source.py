"""What a grid is built from, and the name it goes by in caches, checkpoints, plans and records.

A grid is either a SimBench code (`1-LV-rural1--2-sw`), named by itself, or a user's pandapower
network file (`pandapower.to_json`) with its time series inside it (SimBench-style `net.profiles`)
or in a CSV/Parquet file beside it. A user grid is named `<file stem>-<8 hex digits>`, the digits a
hash of the resolved paths of its files: two `net.json` in different folders never share a cache,
and a record's `grid` field stays short and readable (`feeder-3f9c21ab`). The paths themselves live
in the cache's manifest, with their SHA-256.

No simbench or pandapower here: the cache, and a GPU machine running from a carried cache, use it.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from models.errors import ConfigError
from models.grid.cache import STEP_MINUTES, USER_GRID_NAME, grid_dir

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


MAX_FILL_MINUTES = 24 * 60  # a longer gap filled by a straight line would erase whole daily cycles


@dataclass(frozen=True)
class ProfilePolicy:
    """What the user allows twinbench to do to a profiles file's imperfections (models/grid/timeline.py).
    The default allows nothing: a gap or a 5-minute file is refused, as it always was."""

    fill_gaps_minutes: int = 0  # gaps (missing values or rows) up to this long filled by interpolation in time
    resample: bool = False  # readings finer than 15 minutes averaged into 15-minute steps

    def __post_init__(self) -> None:
        if self.fill_gaps_minutes and not STEP_MINUTES <= self.fill_gaps_minutes <= MAX_FILL_MINUTES:
            raise ConfigError(f"`fill_gaps` must be between 15 minutes and 1 day, got {self.fill_gaps_minutes} min")

    @property
    def is_default(self) -> bool:
        """Nothing allowed: the profiles are taken as given (or refused)."""
        return self.fill_gaps_minutes == 0 and not self.resample

    @property
    def fill_steps(self) -> int:
        return self.fill_gaps_minutes // STEP_MINUTES

    def as_dict(self) -> dict:
        return {"fill_gaps_minutes": self.fill_gaps_minutes, "resample": self.resample}

    @classmethod
    def from_dict(cls, data) -> ProfilePolicy:
        """The policy a manifest recorded (the default where it recorded none, or something else)."""
        if not isinstance(data, dict):
            return cls()
        minutes, resample = data.get("fill_gaps_minutes", 0), data.get("resample", False)
        if not isinstance(minutes, int) or isinstance(minutes, bool) or not isinstance(resample, bool):
            return cls()
        try:
            return cls(minutes, resample)
        except ConfigError:
            return cls()


AS_GIVEN = ProfilePolicy()


def parse_fill_gaps(text: str) -> int:
    """`fill_gaps` as the user writes it (`1h`, `45min`, `1 hour`, `PT1H`) in whole minutes: at least
    one 15-minute step, at most a day. ConfigError otherwise."""
    import pandas as pd

    try:
        span = pd.Timedelta(str(text).strip())
    except (ValueError, OverflowError, TypeError):
        span = pd.NaT
    if span is pd.NaT or pd.isna(span):
        raise ConfigError(f"`fill_gaps` must be a duration such as 1h or 45min, got {text!r}")
    minutes = span.total_seconds() / 60
    if not STEP_MINUTES <= minutes <= MAX_FILL_MINUTES:
        raise ConfigError(
            f"`fill_gaps` must be between {STEP_MINUTES} minutes (one step) and 1 day (a longer gap filled by a "
            f"straight line would erase the daily cycle), got {text!r}"
        )
    return int(minutes)


@dataclass(frozen=True)
class GridSource:
    """A grid's name and, for a user grid, its files (resolved) as the user gave them."""

    name: str
    net: Path | None = None  # a pandapower JSON file; None: a SimBench code
    profiles: Path | None = None  # a CSV/Parquet file of element profiles; None: the net's own profiles
    given: tuple[str, ...] = ()  # the paths as typed (net, then profiles), for the manifest
    policy: ProfilePolicy = AS_GIVEN  # how the profiles file's gaps and resolution are treated

    def __post_init__(self) -> None:
        if self.profiles is not None and self.net is None:
            raise ValueError("profiles belong to a pandapower network file")
        if not self.policy.is_default and self.profiles is None:
            raise ConfigError(
                "`fill_gaps` and `resample` treat a profiles file (`profiles`); a SimBench code or a net "
                "with its profiles inside has none"
            )

    @property
    def is_file(self) -> bool:
        """A user's pandapower file rather than a SimBench code."""
        return self.net is not None

    @property
    def files(self) -> list[tuple[str, Path, str]]:
        """(role, resolved path, path as given) of each input file."""
        roles = [("net", self.net), ("profiles", self.profiles)]
        return [(role, path, given) for (role, path), given in zip(roles, self.given, strict=False) if path]


def looks_like_path(text: str) -> bool:
    """A grid given as a file rather than a SimBench code (which has no slash and no .json)."""
    try:
        is_file = Path(text).is_file()
    except OSError:  # a name too long for the file system, say: not a file, so not a path either
        is_file = False
    return text.lower().endswith(".json") or "/" in text or os.sep in text or is_file


def _resolve(path: str | Path, base: Path | None) -> Path:
    try:
        return ((base or Path.cwd()) / Path(path).expanduser()).resolve()
    except (RuntimeError, OSError) as e:  # Python 3.11 raises RuntimeError on a symlink loop
        raise ConfigError(f"{path}: cannot follow this path ({e})") from None


def user_grid(
    net: str | Path, profiles: str | Path | None = None, base: Path | None = None, policy: ProfilePolicy = AS_GIVEN
) -> GridSource:
    """The source of a user grid: paths are resolved against `base` (default: the current folder).
    Nothing is read here; a missing file is reported when the grid is built. A policy other than the
    default is part of the name: filled or resampled data is another grid, with its own cache."""
    given = (str(net), *([str(profiles)] if profiles is not None else []))
    net_path, profiles_path = _resolve(net, base), _resolve(profiles, base) if profiles is not None else None
    key = f"{net_path}\0{profiles_path or ''}"
    if not policy.is_default:
        key += f"\0fill={policy.fill_gaps_minutes}\0resample={policy.resample}"
    stem = _UNSAFE.sub("_", net_path.stem)[:40].strip("._-") or "grid"
    return GridSource(f"{stem}-{hashlib.sha256(key.encode()).hexdigest()[:8]}", net_path, profiles_path, given, policy)


def source_from_manifest(manifest: dict) -> GridSource | None:
    """The source recorded in a user grid's manifest (None for a SimBench grid or a malformed one)."""
    source = manifest.get("source") if isinstance(manifest, dict) else None
    if not isinstance(source, dict) or not isinstance(source.get("inputs"), list):
        return None
    files = {i.get("role"): i for i in source["inputs"] if isinstance(i, dict)}
    if "net" not in files:
        return None
    net, profiles = files["net"], files.get("profiles")
    try:
        return GridSource(
            str(manifest["grid"]),
            Path(net["resolved"]),
            Path(profiles["resolved"]) if profiles else None,
            tuple(str(f["path"]) for f in (net, profiles) if f),
            ProfilePolicy.from_dict(source.get("policy")) if profiles else AS_GIVEN,
        )
    except (KeyError, TypeError):  # a damaged manifest: the cache check will say so
        return None


def resolve_grid(
    text: str, profiles: str | Path | None = None, root: Path | None = None, policy: ProfilePolicy = AS_GIVEN
) -> GridSource:
    """What a command line's `--grid TEXT [--profiles FILE]` names: a pandapower file (anything that
    looks like a path), a user grid built before (by its name, from its cache's manifest, which also
    holds its profile policy), or a SimBench code (checked by whoever builds it)."""
    if looks_like_path(text):
        return user_grid(text, profiles, policy=policy)
    built = _built_user_grid(text, root)
    if profiles is not None:
        raise ConfigError(
            f"--profiles belongs to a pandapower network file (--grid NET.json --profiles FILE), not to grid {text!r}"
        )
    if not policy.is_default:
        raise ConfigError(
            f"`fill_gaps` and `resample` go with the files they treat (--grid NET.json --profiles FILE), not with "
            f"grid {text!r}" + (", which was built with its own policy (its manifest holds it)" if built else "")
        )
    return built or GridSource(text)


def _built_user_grid(name: str, root: Path | None) -> GridSource | None:
    if not USER_GRID_NAME.match(name):
        return None
    try:
        manifest = json.loads((grid_dir(name, root) / "manifest.json").read_text())
    except (OSError, ValueError):
        return None
    return source_from_manifest(manifest)
