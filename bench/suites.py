"""Suites: TOML files naming the grids, twins and measurement settings of a run: the built-in ones
under bench/suites/, by name, or a user's own file, by path."""

from __future__ import annotations

import math
import os
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path

from compress.base import parse_variant
from models.errors import ConfigError, UnknownNameError
from models.grid.source import GridSource, looks_like_path, resolve_grid, user_grid
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

    def __post_init__(self) -> None:
        # Exact types and bounds, each with its reason: a value that passes here is measured, and a
        # record that cannot be read back must never be written (a float batch size poisoned a run).
        # window_s: a window longer than an hour is a typo (a GPU needs >= 5 s, inf hung the run).
        if not _is_number(self.window_s) or not 0 < self.window_s <= MAX_WINDOW_S:
            raise ConfigError(f"window_s must be a number of seconds in (0, {MAX_WINDOW_S}], got {self.window_s!r}")
        object.__setattr__(self, "window_s", float(self.window_s))
        # repetitions: the protocol needs a spread (>= 3); beyond 1,000 a run never ends.
        if not _is_int(self.repetitions) or not 3 <= self.repetitions <= MAX_REPETITIONS:
            raise ConfigError(
                f"repetitions must be a whole number from 3 (the protocol needs a spread) to {MAX_REPETITIONS}, "
                f"got {self.repetitions!r}"
            )
        # batch sizes: the exported graphs' dynamic batch axis ends at 65,536 (models/export.py).
        if not self.batch_sizes or not all(_is_int(b) and 1 <= b <= MAX_BATCH for b in self.batch_sizes):
            raise ConfigError(
                f"batch_sizes must be whole numbers from 1 to {MAX_BATCH}, got {list(self.batch_sizes)!r}"
            )
        if not self.runtimes or not all(isinstance(r, str) for r in self.runtimes):
            raise ConfigError(f"runtimes must be a non-empty list of runtime names, got {list(self.runtimes)!r}")


MAX_WINDOW_S = 3600.0
MAX_REPETITIONS = 1000
MAX_BATCH = 1 << 16
MAX_DESCRIPTION = 2000  # characters: a description is a line or a paragraph, not a file


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return (isinstance(value, float) and math.isfinite(value)) or _is_int(value)


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
        if not isinstance(self.description, str) or len(self.description) > MAX_DESCRIPTION:
            raise ConfigError(f"suite {self.name}: description must be text of at most {MAX_DESCRIPTION} characters")
        if not all(isinstance(t, str) for t in self.twins):
            raise ConfigError(f"suite {self.name}: twins must be names, got {list(self.twins)!r}")
        if self.device not in DEVICES:
            raise ConfigError(f"suite {self.name}: device must be one of {DEVICES}, got {self.device!r}")
        if self.model_size not in MODEL_SIZES:
            raise ConfigError(f"suite {self.name}: model_size must be one of {MODEL_SIZES}, got {self.model_size!r}")
        if not self.grids or not self.twins:
            raise ConfigError(f"suite {self.name}: grids and twins must not be empty")
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
        raise ConfigError(f"--suite {text}: no such suite file")
    if not path.is_file():
        kind = "a folder" if path.is_dir() else "a device or special file"
        raise ConfigError(f"--suite {text} is {kind}, not a suite file (a TOML file such as my_suite.toml)")
    if not SUITE_FILE_NAME.fullmatch(path.stem):
        raise ConfigError(f"--suite {text}: a suite's name is its file's stem, which must be letters, digits, "
                          "'_', '-' or '.' (it names the run folders); rename the file")  # fmt: skip
    if path.stem in suite_names() and path.resolve() != (SUITES_DIR / path.name).resolve():
        raise ConfigError(f"--suite {text} has the name of the built-in suite {path.stem!r}: rename the file, "
                          "so that records and comparisons cannot mistake one for the other")  # fmt: skip
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
        raw = tomllib.loads(text)
        measure = raw.pop("measure")
        variant_specs = raw.pop("variant", [])
        sources = tuple(_grid(g, path) for g in raw.pop("grids"))
        suite = Suite(
            name=name,
            description=raw.pop("description"),
            device=raw.pop("device"),
            model_size=raw.pop("model_size"),
            grids=tuple(s.name for s in sources),
            twins=tuple(raw.pop("twins")),
            measure=MeasureConfig(
                window_s=measure.pop("window_s"),
                repetitions=measure.pop("repetitions"),
                batch_sizes=tuple(measure.pop("batch_sizes")),
                runtimes=tuple(measure.pop("runtimes")),
            ),
            variants=tuple(_variant(v, path) for v in variant_specs),
            grid_sources=tuple(s for s in sources if s.is_file),
        )
    except ConfigError as e:  # a value out of its bounds: the message names the file too
        if str(path) in str(e):
            raise
        raise ConfigError(f"{path}: {e}") from e
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: invalid TOML: {e}") from e
    except RecursionError as e:  # _check_shape bounds nesting; this is the parser's own limit, should it come first
        raise ConfigError(f"{path}: nested too deeply to be a suite") from e
    except KeyError as e:
        raise ConfigError(f"{path}: missing key {e}") from e
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not a TOML text file ({e})") from e
    except OSError as e:
        raise ConfigError(f"{path}: cannot read the suite file: {e}") from e
    except (TypeError, ValueError, AttributeError) as e:  # a value of the wrong type: `measure = 3`, `twins = 1`
        raise ConfigError(f"{path}: malformed suite: {type(e).__name__}: {e}") from e
    leftover = sorted(raw) + [f"measure.{k}" for k in measure]
    if leftover:  # a typo in a key must not silently fall back to a default
        raise ConfigError(f"{path}: unknown keys {leftover}")
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


def _variant(spec: dict, path: Path):
    if set(spec) != {"chain"} or not spec["chain"]:
        raise ConfigError(f"{path}: each [[variant]] needs exactly a non-empty `chain`, got {spec}")
    try:
        return parse_variant(spec["chain"])
    except UnknownNameError as e:
        raise _with_hint(e, f"in {path} ({PLUGIN_HINT})") from None


def _grid(entry, path: Path) -> GridSource:
    """A suite's grid: a SimBench code, a pandapower JSON file, or `{net = "NET.json", profiles = "FILE"}`;
    relative paths start at the suite file's folder."""
    if isinstance(entry, dict):
        if not isinstance(entry.get("net"), str) or set(entry) - {"net", "profiles"}:
            raise ConfigError(f"{path}: a grid table needs `net` (and may have `profiles`), got {entry}")
        if not isinstance(entry.get("profiles", ""), str):
            raise ConfigError(f"{path}: a grid's `profiles` must be a path, got {entry['profiles']!r}")
        return user_grid(entry["net"], entry.get("profiles"), base=path.parent)
    if not isinstance(entry, str) or not entry.strip():
        raise ConfigError(f"{path}: grids are SimBench codes, pandapower .json paths or {{net, profiles}} tables, "
                          f"got {entry!r}")  # fmt: skip
    return user_grid(entry, base=path.parent) if looks_like_path(entry) else GridSource(entry)


def known_grids() -> list[str]:
    """Every grid some suite uses: the grids twinbench builds data for by name."""
    return sorted({g for name in suite_names() for g in load_suite(name).grids})


def choose_grid(text: str, profiles: str | None = None, suite: Suite | None = None) -> GridSource:
    """The grid a command line names with `--grid TEXT [--profiles FILE]`: one of the suite's grids
    (or, without a suite, of any suite's), a pandapower JSON file, or a user grid built before (its
    `<stem>-<hash>` name, as `twinbench data` prints it). Anything else lists the valid names."""
    for candidate in [suite] if suite is not None else [load_suite(n) for n in suite_names()]:
        if text in candidate.grids and profiles is None:
            return candidate.grid_source(text)
    source = resolve_grid(text, profiles)
    if source.is_file:
        return source
    valid = list(suite.grids) if suite is not None else known_grids()
    of_suite = "" if suite is None else f" of suite {suite.name}"
    unknown = UnknownNameError(f"grid{of_suite}", text, valid, plural=f"grids{of_suite}")
    raise _with_hint(unknown, "or a pandapower network file: --grid NET.json [--profiles FILE]")
