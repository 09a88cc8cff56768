"""Suites: TOML files naming the grids, twins and measurement settings of a run: the built-in ones
under bench/suites/, by name, or a user's own file, by path."""

from __future__ import annotations

import dataclasses
import os
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from compress.base import parse_variant
from models.errors import ConfigError, UnknownNameError
from models.grid.source import (
    AS_GIVEN,
    GridSource,
    ProfilePolicy,
    looks_like_path,
    parse_fill_gaps,
    resolve_grid,
    user_grid,
)
from models.registry import get_twin

SUITES_DIR = Path(__file__).resolve().parent / "suites"
DEVICES = ("cpu", "cuda")
MODEL_SIZES = ("smoke", "full")


@dataclass(frozen=True)
class MeasureConfig:
    window_s: float
    repetitions: int
    batch_sizes: tuple[int, ...]
    runtimes: tuple[str, ...]
    scenarios: tuple[Scenario, ...] = ()  # LoadGen scenarios beside the offline protocol


SCENARIOS = ("offline", "single-stream", "server")


@dataclass(frozen=True)
class Scenario:
    """A LoadGen scenario's settings (bench/measure/loadgen.py). `offline` is the protocol itself,
    always measured: these are the cells beside it."""

    name: str  # single-stream | server
    duration_s: float  # LoadGen's minimum duration (MLPerf's official one: 600 s)
    target_qps: float | None = None  # server: the arrival rate; None: the peak within the bound
    latency_bound_ms: float | None = None  # server: at p99
    max_batch: int = 1  # server: the dynamic batcher's largest batch
    max_queue_delay_ms: float = 0.0  # server: how long the batcher waits after a first request

    def __post_init__(self) -> None:
        if self.name not in SCENARIOS[1:]:
            raise ConfigError(f"a LoadGen scenario is single-stream or server, not {self.name!r}")
        if (self.name == "server") != (self.latency_bound_ms is not None):
            raise ConfigError("a server scenario needs `latency_bound_ms`, and only it")

    @property
    def label(self) -> str:
        """How cells and records name it: single-stream, server@50qps, server@peak."""
        if self.name != "server":
            return self.name
        return f"server@{'peak' if self.target_qps is None else f'{self.target_qps:g}qps'}"

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


# Every value of a suite file is checked by the schema below (pydantic, strict: no bool for a number,
# no float for an integer, finite numbers), each bound with its reason. A value that passes is
# measured, and a record that cannot be read back must never be written: a float batch size once
# poisoned a run folder.
MAX_WINDOW_S = 3600.0  # a window longer than an hour is a typo (a GPU needs >= 5 s; inf hung the run)
MAX_REPETITIONS = 1000  # the protocol needs a spread (>= 3); beyond 1,000 a run never ends
MAX_BATCH = 1 << 16  # the exported graphs' dynamic batch axis ends at 65,536 (models/export.py)
MAX_DESCRIPTION = 2000  # characters: a description is a line or a paragraph, not a file
MAX_CHAIN = 16  # passes in one variant: a recipe longer than this is a mistake, not a compression
MAX_LIST = 64  # grids, twins, batch sizes, runtimes: a page of settings, not a generated sweep
MAX_VARIANTS = 512  # `full` has 40; this bounds the plan a file can ask for
MAX_NAME = 256  # a name or a path of a grid, twin or runtime
MAX_BOUND_MS = 60_000.0  # a latency bound or queue delay beyond a minute is not an on-line service

Name = Annotated[str, Field(min_length=1, max_length=MAX_NAME)]


class _Strict(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)


Qps = Annotated[float, Field(gt=0, le=1e7, allow_inf_nan=False)]


class ServerFile(_Strict):
    """[measure.server]: LoadGen's server scenario, one cell per target rate."""

    target_qps: Annotated[list[Qps | Literal["peak"]], Field(min_length=1, max_length=MAX_LIST)]
    latency_bound_ms: Annotated[float, Field(gt=0, le=MAX_BOUND_MS, allow_inf_nan=False)]
    max_batch: Annotated[int, Field(ge=1, le=MAX_BATCH)] = 32
    max_queue_delay_ms: Annotated[float, Field(ge=0, le=MAX_BOUND_MS, allow_inf_nan=False)] = 2.0


class MeasureFile(_Strict):
    window_s: Annotated[float, Field(gt=0, le=MAX_WINDOW_S, allow_inf_nan=False)]
    repetitions: Annotated[int, Field(ge=3, le=MAX_REPETITIONS)]
    batch_sizes: Annotated[list[Annotated[int, Field(ge=1, le=MAX_BATCH)]], Field(min_length=1, max_length=MAX_LIST)]
    runtimes: Annotated[list[Name], Field(min_length=1, max_length=MAX_LIST)]
    scenarios: Annotated[list[Literal["offline", "single-stream", "server"]], Field(min_length=1, max_length=3)] = [
        "offline"
    ]
    scenario_s: Annotated[float, Field(gt=0, le=MAX_WINDOW_S, allow_inf_nan=False)] = 10.0
    server: ServerFile | None = None


def scenarios_of(m: MeasureFile | None, names: list[str] | tuple[str, ...] | None = None) -> tuple[Scenario, ...]:
    """The LoadGen scenario cells a [measure] table asks for (or `names` of them, from `--scenario`)."""
    wanted = list(names) if names is not None else list(m.scenarios if m else ["offline"])
    out: list[Scenario] = []
    if "single-stream" in wanted:
        out.append(Scenario("single-stream", float(m.scenario_s) if m else 10.0))
    if "server" in wanted:
        server = m.server if m else None
        if server is None:
            raise ConfigError(
                'the server scenario needs a [measure.server] table: target_qps (rates, or "peak") and '
                "latency_bound_ms (at p99)"
            )
        for qps in server.target_qps:
            rate = None if qps == "peak" else float(qps)
            out.append(
                Scenario(
                    "server",
                    float(m.scenario_s),
                    rate,
                    float(server.latency_bound_ms),
                    server.max_batch,
                    float(server.max_queue_delay_ms),
                )  # fmt: skip
            )
    return tuple(out)


class GridTable(_Strict):
    net: Name
    profiles: Name | None = None
    fill_gaps: Name | None = None  # a duration (1h): the profiles' gaps up to it are interpolated
    resample: bool = False  # profiles finer than 15 minutes averaged to 15 minutes


class VariantFile(_Strict):
    chain: Annotated[list[dict[str, Any]], Field(min_length=1, max_length=MAX_CHAIN)]


class SuiteFile(_Strict):
    """A suite file as TOML gives it."""

    description: Annotated[str, Field(max_length=MAX_DESCRIPTION)]
    device: Literal["cpu", "cuda"]
    model_size: Literal["smoke", "full"]
    grids: Annotated[list[Name | GridTable], Field(min_length=1, max_length=MAX_LIST)]
    twins: Annotated[list[Name], Field(min_length=1, max_length=MAX_LIST)]
    measure: MeasureFile
    variant: Annotated[list[VariantFile], Field(max_length=MAX_VARIANTS)] = []


# What the message says of a field that fails its type or bound (the schema's own words for it are
# for programmers), by the field's dotted place in the file.
FIELD_RULES = {
    "measure.window_s": f"window_s must be a number of seconds in (0, {MAX_WINDOW_S}]",
    "measure.repetitions": (
        f"repetitions must be a whole number from 3 (the protocol needs a spread) to {MAX_REPETITIONS}"
    ),
    "measure.batch_sizes": f"batch_sizes must be whole numbers from 1 to {MAX_BATCH} (at most {MAX_LIST} of them)",
    "measure.runtimes": f"runtimes must be a non-empty list of at most {MAX_LIST} runtime names",
    "measure.scenarios": f"scenarios must be a list of {', '.join(SCENARIOS)} (offline is always measured)",
    "measure.scenario_s": f"scenario_s (LoadGen's minimum duration) must be a number of seconds in (0, {MAX_WINDOW_S}]",
    "measure.server.target_qps": f'target_qps must be a list of rates in (0, 1e7] per second or "peak" (at most {MAX_LIST})',
    "measure.server.latency_bound_ms": f"latency_bound_ms (at p99) must be a number of milliseconds in (0, {MAX_BOUND_MS:g}]",
    "measure.server.max_batch": f"max_batch must be a whole number from 1 to {MAX_BATCH}",
    "measure.server.max_queue_delay_ms": f"max_queue_delay_ms must be a number of milliseconds in [0, {MAX_BOUND_MS:g}]",
    "measure.server": "[measure.server] must be a table of target_qps, latency_bound_ms, max_batch, max_queue_delay_ms",
    "measure": "[measure] must be a table of window_s, repetitions, batch_sizes and runtimes",
    "description": f"description must be text of at most {MAX_DESCRIPTION} characters",
    "device": f"device must be one of {DEVICES}",
    "model_size": f"model_size must be one of {MODEL_SIZES}",
    "grids": (f"grids must be 1 to {MAX_LIST} SimBench codes, pandapower .json paths or {{net, profiles}} tables"),
    "twins": f"twins must be 1 to {MAX_LIST} twin names",
    "variant": f"each [[variant]] needs exactly a `chain` of 1 to {MAX_CHAIN} steps (at most {MAX_VARIANTS} variants)",
}


def schema_message(e: ValidationError, rules: dict[str, str]) -> str:
    """A schema's errors in the suite's words: missing keys, unknown keys (a typo must not fall back
    to a default silently), then each failing field's rule with the value it got."""
    missing, unknown, failed = [], [], {}
    for err in e.errors():
        where = ".".join(str(part) for part in err["loc"] if not isinstance(part, int))
        if err["type"] == "missing":
            missing.append(where)
        elif err["type"] == "extra_forbidden":
            unknown.append(where)
        else:
            rule = next((r for key, r in rules.items() if where == key or where.startswith(key + ".")), None)
            failed.setdefault(rule or f"{where}: {err['msg']}", err.get("input"))
    if missing:
        return f"missing key {missing[0]!r}"
    if unknown:
        return f"unknown keys {sorted(unknown)}"
    return "; ".join(f"{rule}, got {value!r:.80}" for rule, value in failed.items())


@dataclass(frozen=True)
class Suite:
    name: str
    description: str
    device: str
    model_size: str
    grids: tuple[str, ...]  # names: SimBench codes, user grids' `<stem>-<hash>` (models/grid/source.py)
    twins: tuple[str, ...]
    measure: MeasureConfig
    variants: tuple = ()  # compress.base.Variant chains besides the reference (always measured)
    grid_sources: tuple[GridSource, ...] = ()  # what the user grids among `grids` are built from

    def __post_init__(self) -> None:
        if len(set(self.grids)) < len(self.grids):
            raise ConfigError(f"suite {self.name}: a grid is listed twice in {list(self.grids)}")

    def grid_source(self, name: str) -> GridSource:
        """What one of the suite's grids is built from."""
        return next((s for s in self.grid_sources if s.name == name), GridSource(name))


def suite_names() -> list[str]:
    return sorted(p.stem for p in SUITES_DIR.glob("*.toml"))


PLUGIN_HINT = "a plugin's twins and passes are known once its package is installed: see `twinbench list`"
SUITE_FILE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")  # a suite's name goes into run ids


def suite_path(suite: str | Path) -> Path:
    """The TOML file of a suite: bench/suites/<name>.toml for a built-in name, or the file a path
    names (it has a slash or ends in .toml); its stem is the suite's name."""
    text = str(suite)
    if text in suite_names():
        return SUITES_DIR / f"{text}.toml"
    if "/" not in text and os.sep not in text and not text.lower().endswith(".toml"):
        raise _with_hint(UnknownNameError("suite", text, suite_names()), "or the path of a suite file (my_suite.toml)")
    path = Path(text).expanduser()
    if not path.exists():
        raise ConfigError(f"`suite` {text}: no such suite file")
    if not path.is_file():
        kind = "a folder" if path.is_dir() else "a device or special file"
        raise ConfigError(f"`suite` {text} is {kind}, not a suite file (a TOML file such as my_suite.toml)")
    if not SUITE_FILE_NAME.fullmatch(path.stem):
        raise ConfigError(
            f"`suite` {text}: a suite's name is its file's stem, which must be letters, digits, "
            "'_', '-' or '.' (it names the run folders); rename the file"
        )
    if path.stem in suite_names() and path.resolve() != (SUITES_DIR / path.name).resolve():
        raise ConfigError(
            f"`suite` {text} has the name of the built-in suite {path.stem!r}: rename the file, "
            "so that records and comparisons cannot mistake one for the other"
        )
    return path


def _with_hint(e: UnknownNameError, hint: str) -> UnknownNameError:
    """`e` with a hint after its list of valid names."""
    e.args = (f"{e}; {hint}",)
    return e


def load_suite(name: str | Path) -> Suite:
    """Read and validate a suite: a built-in name (unknown names list the valid ones) or the path of
    a TOML file of one's own (`suite_path`). A run freezes its suite in plan.json: resume, select
    and export never read the file again."""
    path = suite_path(name)
    name = path.stem
    try:
        text = path.read_text()
        _check_shape(text, path)
        raw = SuiteFile.model_validate(tomllib.loads(text))
        sources = tuple(_grid(g, path) for g in raw.grids)
        m = raw.measure
        suite = Suite(
            name=name,
            description=raw.description,
            device=raw.device,
            model_size=raw.model_size,
            grids=tuple(s.name for s in sources),
            twins=tuple(raw.twins),
            measure=MeasureConfig(
                float(m.window_s), m.repetitions, tuple(m.batch_sizes), tuple(m.runtimes), scenarios_of(m)
            ),
            variants=tuple(_variant(v.chain, path) for v in raw.variant),
            grid_sources=tuple(s for s in sources if s.is_file),
        )
    except ValidationError as e:
        raise ConfigError(f"{path}: {schema_message(e, FIELD_RULES)}") from None
    except ConfigError as e:  # a value out of its bounds: the message names the file too
        if str(path) in str(e):
            raise
        raise ConfigError(f"{path}: {e}") from e
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: invalid TOML: {e}") from e
    except RecursionError as e:  # _check_shape bounds nesting; this is the parser's own limit, should it come first
        raise ConfigError(f"{path}: nested too deeply to be a suite") from e
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not a TOML text file ({e})") from e
    except OSError as e:
        raise ConfigError(f"{path}: cannot read the suite file: {e}") from e
    except (TypeError, ValueError, AttributeError) as e:  # a pass's own settings of the wrong type
        raise ConfigError(f"{path}: malformed suite: {type(e).__name__}: {e}") from e
    for twin in suite.twins:
        try:
            get_twin(twin)
        except UnknownNameError as e:  # e.name says why when the twin's plugin failed to load
            raise _with_hint(e, f"in {path} ({PLUGIN_HINT})") from None
    return suite


# A suite is a page of settings. These caps refuse a hostile file in well under a second, before
# tomllib sees it: 100k nested arrays raised RecursionError, and a 100k-part dotted key made the
# parser's time and memory grow quadratically.
MAX_SUITE_CHARS = 256 * 1024
MAX_SUITE_NESTING = 16  # arrays and inline tables inside each other: a chain of steps needs 3
MAX_DOTS_PER_LINE = 64  # a dotted key or table name, or numbers with decimals, on one line


def _check_shape(text: str, path: Path) -> None:
    """Refuse (ConfigError) a suite file too large or nested too deeply to be one. One pass over the
    text, strings and comments skipped (a bracket or dot inside them counts for nothing)."""
    if len(text) > MAX_SUITE_CHARS:
        raise ConfigError(f"{path}: {len(text):,} characters, more than a suite file may have ({MAX_SUITE_CHARS:,})")
    depth, dots, quote, i = 0, 0, "", 0
    while i < len(text):
        c = text[i]
        if quote:  # inside a string: find its end ('"', "'", or the triple forms)
            if c == "\\" and quote[0] == '"':
                i += 2
                continue
            if text.startswith(quote, i):
                i, quote = i + len(quote), ""
                continue
        elif c in "\"'":
            quote = c * 3 if text.startswith(c * 3, i) else c
            i += len(quote)
            continue
        elif c == "#":
            end = text.find("\n", i)
            i = len(text) if end < 0 else end
            continue
        elif c in "[{":
            depth += 1
            if depth > MAX_SUITE_NESTING:
                raise ConfigError(f"{path}: arrays or tables nested more than {MAX_SUITE_NESTING} deep")
        elif c in "]}":
            depth = max(0, depth - 1)
        elif c == ".":
            dots += 1
            if dots > MAX_DOTS_PER_LINE:
                raise ConfigError(f"{path}: a line with more than {MAX_DOTS_PER_LINE} dotted parts")
        elif c == "\n":
            dots = 0
        i += 1


def _variant(chain: list[dict], path: Path):
    try:
        return parse_variant(chain)
    except UnknownNameError as e:
        raise _with_hint(e, f"in {path} ({PLUGIN_HINT})") from None


def _grid(entry: str | GridTable, path: Path) -> GridSource:
    """A suite's grid: a SimBench code, a pandapower JSON file, or `{net = "NET.json", profiles = "FILE"}`
    (with `fill_gaps = "1h"` and `resample = true` if wanted); relative paths start at the suite file's
    folder."""
    if isinstance(entry, GridTable):
        try:
            minutes = parse_fill_gaps(entry.fill_gaps) if entry.fill_gaps is not None else 0
            return user_grid(entry.net, entry.profiles, path.parent, ProfilePolicy(minutes, entry.resample))
        except ConfigError as e:
            raise ConfigError(f"{path}: grid {entry.net!r}: {e}") from None
    if not entry.strip():
        raise ConfigError(f"{path}: {FIELD_RULES['grids']}, got {entry!r}")
    return user_grid(entry, base=path.parent) if looks_like_path(entry) else GridSource(entry)


def known_grids() -> list[str]:
    """Every grid some suite uses: the grids twinbench builds data for by name."""
    return sorted({g for name in suite_names() for g in load_suite(name).grids})


def choose_grid(
    text: str, profiles: str | None = None, suite: Suite | None = None, policy: ProfilePolicy = AS_GIVEN
) -> GridSource:
    """The grid a command line names with `--grid TEXT [--profiles FILE]`: one of the suite's grids
    (or, without a suite, of any suite's), a pandapower JSON file, or a user grid built before (its
    `<stem>-<hash>` name, as `twinbench data` prints it). Anything else lists the valid names."""
    for candidate in [suite] if suite is not None else [load_suite(n) for n in suite_names()]:
        if text in candidate.grids and profiles is None and policy.is_default:
            return candidate.grid_source(text)
    source = resolve_grid(text, profiles, policy=policy)
    if source.is_file:
        return source
    valid = list(suite.grids) if suite is not None else known_grids()
    of_suite = "" if suite is None else f" of suite {suite.name}"
    unknown = UnknownNameError(f"grid{of_suite}", text, valid, plural=f"grids{of_suite}")
    raise _with_hint(unknown, "or a pandapower network file: --grid NET.json [--profiles FILE]")
