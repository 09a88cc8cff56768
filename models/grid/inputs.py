"""A grid's inputs as arrays: the pandapower net and the power of its elements over time.

Three ways in: a SimBench code (simbench's net and profiles); a user's pandapower JSON file with
SimBench-style profiles inside (`net.profiles` plus each element's `profile` column, what
`simbench.get_absolute_values` reads); or such a file without profiles plus a profiles file:

    time,load:0:p_mw,load:0:q_mvar,load:1:p_mw,sgen:0:p_mw,storage:0:p_mw
    2016-01-01 00:00,0.0021,0.0008,0.0030,0.0,0.0
    2016-01-01 00:15,...

- `time`: required, ISO 8601 (or SimBench's `01.01.2016 00:15`), one row every 15 minutes (wall-clock
  times without a zone may jump at daylight-saving changes, as SimBench's do). Gaps and finer
  readings are refused unless the user's policy allows filling or resampling them (timeline.py).
- `<element>:<index>:<quantity>`: the value the element's `p_mw` / `q_mvar` column would hold at that
  step, `<index>` a row index of `net.load`, `net.sgen` or `net.storage`. Quantities: `p_mw` for all
  three, `q_mvar` for loads (static generators and storage keep their static `q_mvar`, as with SimBench
  profiles). The net's `scaling` column applies on top, as in pandapower.
- A load with `p_mw` but no `q_mvar` column keeps its static power factor: q = p · q_static / p_static
  (its static `q_mvar` where its static `p_mw` is 0). An element without columns keeps its static values.
- CSV (any extension but `.parquet`/`.pq`), or Parquet with the same columns where pandas can read
  it (it needs pyarrow or fastparquet, which `make setup` does not install).

simbench and pandapower are imported inside the functions: slow to import, absent on GPU machines.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import re
from pathlib import Path

import numpy as np

from models.errors import CacheError, DataError, InputError
from models.grid.source import AS_GIVEN, GridSource, ProfilePolicy
from models.grid.timeline import check_duplicates, check_gaps, check_steps, parse_times, treat

VALUE_KEYS = ("load_p_mw", "load_q_mvar", "sgen_p_mw", "storage_p_mw")  # (table, quantity) of each profile
COLUMN = re.compile(r"^(load|sgen|storage):(-?\d+):(p_mw|q_mvar)$")
PARQUET_SUFFIXES = (".parquet", ".pq")
NET_FILE = "a pandapower network file (pandapower.to_json(net, 'net.json'))"
PROFILES_FILE = "a CSV (or Parquet) file of element profiles"

# What a grid file may name in its `_module`/`_class` keys (see check_net_json): the types
# pandapower.to_json writes. Any module of pandapower itself (any public class: its controllers,
# characteristics, data sources, enums, the net); of other libraries only these modules, with the
# classes pandapower writes and decodes for them (found by saving SimBench and pandapower nets,
# with controllers, data sources, characteristics, graphs and numpy/pandas/builtins values).
NET_FILE_CLASSES = {
    "builtins": frozenset({"tuple", "set", "frozenset", "complex"}),  # pandapower's own safe builtins
    "numpy": frozenset({"array", "bool"})
    | {n for n, v in vars(np).items() if isinstance(v, type) and issubclass(v, np.generic)},
    "pandas": frozenset(
        {"DataFrame", "Series", "Index", "RangeIndex", "MultiIndex", "DatetimeIndex", "CategoricalIndex"}
        | {"IntervalIndex", "PeriodIndex", "TimedeltaIndex"}
    ),
    "pandas.core.frame": frozenset({"DataFrame"}),
    "pandas.core.series": frozenset({"Series"}),
    "networkx": frozenset({"MultiGraph"}),
    "shapely": frozenset({"Point", "LineString", "Polygon"}),
    "geopandas.geodataframe": frozenset({"GeoDataFrame"}),
}
NET_FILE_MAX_BYTES = 512 * 2**20  # SimBench's largest single-level net with a year of profiles: ~80 MB
NET_FILE_MAX_DEPTH = 64  # nesting, embedded JSON strings included; pandapower's nets: at most ~20
_PUBLIC_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*\Z")


@dataclasses.dataclass(frozen=True)
class ElementSeries:
    """The power of every load, static generator and storage unit at every step."""

    values: dict[str, np.ndarray]  # VALUE_KEYS -> (T, n_elem) in MW / Mvar, columns in the net's table order
    labels: dict[str, list[str]]  # VALUE_KEYS -> where each column comes from (profile name, file column)
    start: str | None  # step 0 as ISO 8601 (None: the profiles carry no time)
    treatment: dict = dataclasses.field(default_factory=dict)  # what was resampled or filled (timeline.treat)

    @property
    def steps(self) -> int:
        return max(v.shape[0] for v in self.values.values())


def load_simbench_net(grid: str):
    """The SimBench net for a grid code; a clear error for an unknown one."""
    try:
        import simbench
    except ImportError as e:  # a GPU machine: it must be given a carried cache instead
        raise CacheError(
            "building grid data needs the simbench and pandapower packages, which are not installed here; "
            "build the cache on a machine that has them and carry it (see README, 'Data cache')"
        ) from e
    try:
        return simbench.get_simbench_net(grid)
    except Exception as e:  # simbench raises bare errors for unknown codes
        raise DataError(f"simbench cannot load grid {grid!r}: {e}") from e


def read_net_file(path: Path, given: str):
    """A user's pandapower network from its JSON file (`pandapower.to_json`)."""
    _check_file(path, given, NET_FILE)
    if (size := path.stat().st_size) > NET_FILE_MAX_BYTES:
        raise DataError(f"{given} is refused: {size:,} bytes, more than a grid file may have ({NET_FILE_MAX_BYTES:,})")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as e:
        raise DataError(
            f"{given} is not a pandapower network file: not text (JSON), {e.reason} at byte {e.start}"
        ) from e
    check_net_json(text, given)  # before pandapower is imported: see there
    import pandapower as pp

    try:
        net = pp.from_json(io.StringIO(text))  # the text checked, not the file again (it may have changed)
    except Exception as e:  # pandapower raises UserWarning, AttributeError, ... for what it cannot read
        what = "not JSON" if "json" in str(e).lower() else "JSON, but not a pandapower network"
        raise DataError(
            f"{given} is not a pandapower network file: {what} (pandapower.from_json: {type(e).__name__}: {e}); "
            "save a net with pandapower.to_json(net, 'net.json')"
        ) from e
    if not isinstance(net, pp.pandapowerNet) or not len(net.bus):
        raise DataError(f"{given} is not a pandapower network file, or holds a net without buses")
    for table in ("load", "sgen", "storage"):  # a net saved without `scaling`: pandapower's default is 1
        if table in net and "scaling" not in net[table]:
            net[table]["scaling"] = 1.0
    return net


def check_net_json(text: str, given: str) -> None:
    """Refuse (DataError) a grid file that names a module or class outside NET_FILE_CLASSES, or
    that is nested too deeply, before anything reads it as a net.

    Why: pandapower.from_json imports whatever module a `_module` key names and looks up its `_class`,
    at any depth, and also inside the JSON strings it keeps DataFrames, controllers and
    characteristics in. A file with `{"_module": "this", ...}` imports `this` (and runs its code)
    before pandapower finds it is no net. So the whole file is walked, iteratively (a deep file is
    refused, not a RecursionError), and every string that pandapower may decode as JSON is decoded
    too. A string without `_module`, `_class` or a backslash cannot hold either key however often it
    is decoded, so it is skipped: the profile tables, most of a net, are not decoded twice."""

    def refuse(why: str) -> DataError:
        return DataError(f"{given} is refused: {why}; save the net with pandapower.to_json(net, 'net.json')")

    try:
        stack, budget = [(json.loads(text), 1)], 4 * len(text)  # budget: characters of embedded JSON
    except RecursionError as e:
        raise refuse(f"JSON nested more than {NET_FILE_MAX_DEPTH} levels deep") from e
    except ValueError as e:
        raise DataError(
            f"{given} is not a pandapower network file: not JSON ({e}); save a net with pandapower.to_json(net, 'net.json')"
        ) from e
    while stack:
        item, depth = stack.pop()
        if depth > NET_FILE_MAX_DEPTH:
            raise refuse(f"JSON nested more than {NET_FILE_MAX_DEPTH} levels deep")
        if isinstance(item, dict):
            if "_module" in item or "_class" in item:
                module, cls = item.get("_module", ""), item.get("_class", "")
                if not isinstance(module, str) or not isinstance(cls, str):
                    raise refuse(
                        f"it holds a _module/_class that is not a name ({str(module)[:60]!r}, {str(cls)[:60]!r})"
                    )
                parts = module.split(".")
                if parts[0] == "pandapower":
                    allowed = all(map(_PUBLIC_NAME.match, parts)) and _PUBLIC_NAME.match(cls)
                else:
                    allowed = cls in NET_FILE_CLASSES.get(module, ())
                if not allowed:
                    raise refuse(
                        f"it names Python module {module[:80]!r} (class {cls[:80]!r}), which pandapower would import; "
                        "a grid file may name only pandapower and the pandas, numpy, builtins, networkx, shapely "
                        "and geopandas types pandapower writes"
                    )
                obj = item.get("_object")  # pandapower hands a DataFrame's absolute *.json path to pandas
                if parts[0] == "pandas" and isinstance(obj, str) and obj.lstrip()[:1] not in ("{", "["):
                    raise refuse(f"its {cls} is {obj[:80]!r}, not embedded JSON: pandas would read another file")
            children = [*item, *item.values()]
        elif isinstance(item, list):
            children = item
        elif (
            isinstance(item, str)
            and item.lstrip()[:1] in ("{", "[")
            and ("_module" in item or "_class" in item or "\\" in item)
        ):
            budget -= len(item)
            if budget < 0:
                raise refuse("it embeds more JSON than a pandapower net does")
            try:
                children = [json.loads(item)]
            except RecursionError as e:
                raise refuse(f"JSON nested more than {NET_FILE_MAX_DEPTH} levels deep") from e
            except ValueError as e:  # pandas' parser may read what json does not: unchecked, refused
                raise refuse(f"it embeds JSON that cannot be checked ({e})") from e
        else:
            continue
        stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list | str))


def net_profiles(net, what: str) -> ElementSeries:
    """The profiles stored in the net, SimBench-style, as absolute element powers."""
    import simbench

    if not isinstance(getattr(net, "profiles", None), dict) or not any(len(p) for p in net.profiles.values()):
        raise DataError(
            f"{what} holds no time series (no SimBench-style net.profiles): give its element profiles "
            "with --profiles FILE (format: README, 'Bring your own grid')"
        )
    try:
        absolute = simbench.get_absolute_values(net, profiles_instead_of_study_cases=True)
        values = {
            key: absolute[(table, quantity)]
            .reindex(columns=net[table].index)  # the net's table order, whatever simbench returns
            .to_numpy(np.float64)
            for key, (table, quantity) in _tables().items()
        }
    except Exception as e:  # a profile name without a column, tables of different lengths, ...
        raise DataError(f"{what}: simbench cannot read the net's profiles ({type(e).__name__}: {e})") from e
    values = _same_length(values, net, what)
    labels = {
        key: [str(p) for p in net[table].profile] if "profile" in net[table] else ["static"] * len(net[table])
        for key, (table, _) in _tables().items()
    }
    for key, array in values.items():
        bad = ~np.isfinite(array)
        if bad.any():
            step, col = np.argwhere(bad)[0]
            raise DataError(
                f"{what}: the profiles give {key.split('_')[0]} {net[_tables()[key][0]].index[col]} a NaN or "
                f"infinite {key.split('_', 1)[1]} at step {step} (its profile {labels[key][col]!r} may be missing)"
            )
    times = [p["time"] for p in net.profiles.values() if "time" in p and len(p)]
    start = None
    if times:
        stamps = parse_times(times[0], what)
        check_steps(stamps, what, "step")
        start = stamps[0].isoformat(timespec="minutes")
    return ElementSeries(values, labels, start)


def _same_length(values: dict[str, np.ndarray], net, what: str) -> dict[str, np.ndarray]:
    """Every element table's series over the same steps. A table without elements has no columns,
    and SimBench writes an empty profile table for it (no storage: `profiles["storage"]` has 0 rows):
    it gets (steps, 0). A table with elements but no steps is an error that names it."""
    steps = max((v.shape[0] for v in values.values() if v.shape[1]), default=0)
    out = {}
    for key, array in values.items():
        table = _tables()[key][0]
        if array.shape[1] == 0:
            out[key] = np.zeros((steps, 0))
        elif array.shape[0] != steps:
            raise DataError(
                f"{what}: the profiles of its {len(net[table])} {table} element(s) cover {array.shape[0]} steps, "
                f"those of the other elements {steps}: every profile table needs the same steps"
            )
        else:
            out[key] = array
    return out


def file_profiles(net, path: Path, given: str, log=print, policy: ProfilePolicy = AS_GIVEN) -> ElementSeries:
    """Element profiles from a CSV or Parquet file (format: this module's docstring), its gaps and
    resolution treated as `policy` allows (models/grid/timeline.py)."""
    import pandas as pd

    _check_file(path, given, PROFILES_FILE)
    frame = _read_table(path, given)
    names = [str(c).strip() for c in frame.columns]
    frame.columns = names
    if "time" not in names:
        raise DataError(
            f"{given} has no `time` column: every row needs its time (e.g. 2016-01-01 00:15), so that the "
            "15-minute step the twins assume can be checked"
        )
    parsed, unknown = {}, []
    for name in names:
        if name == "time":
            continue
        match = COLUMN.match(name)
        if not match:
            unknown.append(f"{name!r} (not <element>:<index>:<quantity>)")
            continue
        table, index, quantity = match[1], int(match[2]), match[3]
        if quantity == "q_mvar" and table != "load":
            unknown.append(f"{name!r} (only loads take a q_mvar profile; {table} keeps its static q_mvar)")
        elif index not in net[table].index:
            unknown.append(f"{name!r} (net.{table} has no index {index})")
        elif (table, index, quantity) in parsed.values():
            unknown.append(f"{name!r} (a second column for {table} {index} {quantity})")
        else:
            parsed[name] = (table, index, quantity)
    if unknown:
        shown = ", ".join(unknown[:5]) + (f" and {len(unknown) - 5} more" if len(unknown) > 5 else "")
        raise DataError(
            f"{given}: unknown columns {shown}; columns are `time` and `load:<index>:p_mw`, `load:<index>:q_mvar`, "
            "`sgen:<index>:p_mw`, `storage:<index>:p_mw` with indices of the net's tables"
        )
    if not parsed:
        raise DataError(f"{given} has no element columns (such as load:0:p_mw): nothing varies over time")
    if not len(frame):
        raise DataError(f"{given} has a header but no rows")
    stamps = parse_times(frame["time"], given)
    check_duplicates(stamps, given)
    # Sorted where the order is unambiguous: instants (a zone), or wall-clock times that never repeat
    # (a repeat is the autumn DST hour, whose rows are in order as given).
    if not stamps.is_monotonic_increasing and (stamps.tz is not None or stamps.is_unique):
        order = np.argsort(stamps.asi8, kind="stable")
        frame, stamps = frame.iloc[order].reset_index(drop=True), stamps[order]
        log(f"{given}: rows were not in time order; sorted by time")
    columns = {name: pd.to_numeric(frame[name], errors="coerce").to_numpy(np.float64) for name in parsed}
    treatment: dict = {}
    if policy.is_default:
        check_steps(stamps, given, "row", first_row=2)  # row 1 is the header
        check_gaps(columns, stamps, given, raw=frame)
    else:
        stamps, columns, treatment = treat(stamps, columns, policy, given, log)
        check_steps(stamps, given, "step", policy=policy)
        check_gaps(columns, stamps, given, policy=policy)
    data = {parsed[name]: values for name, values in columns.items()}
    series = _element_values(net, data, len(stamps), stamps[0].isoformat(timespec="minutes"))
    return dataclasses.replace(series, treatment=treatment)


def _element_values(net, data: dict[tuple[str, int, str], np.ndarray], steps: int, start: str) -> ElementSeries:
    """(T, n_elem) per profile key: the file's columns, static values elsewhere (loads without a
    q_mvar column at their static power factor)."""
    values, labels = {}, {}
    for key, (table, quantity) in _tables().items():
        static = net[table][quantity].to_numpy(np.float64)
        array = np.broadcast_to(static, (steps, len(static))).copy()
        label = ["static"] * len(static)
        for j, index in enumerate(net[table].index):
            if (table, index, quantity) in data:
                array[:, j] = data[(table, index, quantity)]
                label[j] = f"{table}:{index}:{quantity}"
            elif quantity == "q_mvar" and (table, index, "p_mw") in data and net[table].p_mw.iloc[j] != 0:
                array[:, j] = data[(table, index, "p_mw")] * static[j] / net[table].p_mw.iloc[j]
                label[j] = f"{table}:{index}:p_mw at static cos phi"
        values[key], labels[key] = array, label
    return ElementSeries(values, labels, start)


def _tables() -> dict[str, tuple[str, str]]:
    return {key: tuple(key.split("_", 1)) for key in VALUE_KEYS}  # type: ignore[misc]


def check_files(source: GridSource) -> None:
    """A user grid's files are there and are files (InputError naming the one that is not)."""
    for role, path, given in source.files:
        _check_file(path, given, NET_FILE if role == "net" else PROFILES_FILE)


def _check_file(path: Path, given: str, what: str) -> None:
    if not path.exists():
        raise InputError(f"no such file: {given} (expected {what})")
    if not path.is_file():
        kind = "a folder" if path.is_dir() else "a device or special file"  # /dev/null, a FIFO, a socket
        raise InputError(f"{given} is {kind}, not {what}")


def _read_table(path: Path, given: str):
    import pandas as pd

    if path.suffix.lower() in PARQUET_SUFFIXES:
        try:
            return pd.read_parquet(path)
        except ImportError as e:
            raise DataError(
                f"reading Parquet ({given}) needs pyarrow or fastparquet, and neither is installed here: "
                "pip install pyarrow, or save the profiles as CSV (frame.to_csv(path, index=False))"
            ) from e
        except Exception as e:
            raise DataError(f"{given} is not a readable Parquet file ({type(e).__name__}: {e})") from e
    try:
        with open(path, newline="", encoding="utf-8") as f:
            header = [c.strip() for c in next(csv.reader(f), [])]
        duplicated = sorted({c for c in header if header.count(c) > 1})
        if duplicated:  # pandas would rename them `x.1`: say what is really wrong
            raise DataError(f"{given}: columns appear twice: {', '.join(duplicated)}")
        return pd.read_csv(path, skipinitialspace=True)
    except (UnicodeDecodeError, csv.Error, pd.errors.ParserError, pd.errors.EmptyDataError, ValueError) as e:
        raise DataError(f"{given} is not a readable CSV file ({type(e).__name__}: {e})") from e
