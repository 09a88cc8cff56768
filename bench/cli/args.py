"""Argument types and helpers the command modules share: numbers and names checked at the edge,
grid and suite selection, the deployment schedule's options, and printing that cannot rewrite the
user's terminal."""

from __future__ import annotations

import argparse
import math
import os
import re
import sys
from pathlib import Path

from models.errors import ConfigError

# C0 and C1 control characters but newline and tab: record fields come from files, and an escape
# sequence printed raw can rewrite the user's terminal (issue 23 item 9).
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def terminal_safe(text: str) -> str:
    """`text` with every control character but newline and tab shown as a visible escape (\\x1b)."""
    return _CONTROL.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), text)


def say(text: str) -> None:
    print(terminal_safe(text))


def to_stderr(message: str) -> None:
    print(message, file=sys.stderr)


def nonempty(text: str) -> str:
    """An argument that names something (--grid, --profiles): empty text is a mistake, not "none"
    (`--grid ''` silently built the default grid)."""
    if not text.strip():
        raise argparse.ArgumentTypeError("must not be empty")
    return text


def number(kind: type = float, low: float | None = None, high: float | None = None, above: float | None = None):
    """An argparse type: a finite number in range. NaN compares false with every limit, so without
    this a NaN threshold silently turns a check off; argparse turns the error into exit 2."""

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {'an integer' if kind is int else 'a number'}") from None
        if kind is float and not math.isfinite(value):  # an int is finite, and may be too large for a float
            raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
        if above is not None and value <= above:
            raise argparse.ArgumentTypeError(f"must be > {above:g}, got {text}")
        if low is not None and value < low or high is not None and value > high:
            raise argparse.ArgumentTypeError(f"must be between {low:g} and {high:g}, got {text}")
        return value

    return parse


def path(text: str) -> Path:
    """An argparse type for a path: a NUL byte cannot be in one (the OS refuses it with a ValueError)."""
    if "\x00" in text:
        raise argparse.ArgumentTypeError("a path cannot contain a NUL byte")
    return Path(text)


def cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


PCT = number(low=0, high=1e6)
GRID_HELP = (
    "only this grid of the suite; or, instead of the suite's grids, a pandapower network file (NET.json) "
    "or a user grid's name as `twinbench data` prints it"
)
PROFILES_HELP = (
    "CSV (or Parquet) of the net's element profiles: a `time` column every 15 min and columns such as "
    "load:3:p_mw, load:3:q_mvar, sgen:0:p_mw, storage:0:p_mw (README: 'Bring your own grid')"
)
PROFILES_WITHOUT_GRID = "--profiles goes with --grid NET.json (the pandapower net the profiles belong to)"
POLICY_WITHOUT_PROFILES = "--fill-gaps and --resample treat a profiles file: --grid NET.json --profiles FILE"


def fill_gaps(text: str) -> int:
    """An argparse type: --fill-gaps DURATION in whole minutes (models.grid.source.parse_fill_gaps)."""
    from models.grid.source import parse_fill_gaps

    try:
        return parse_fill_gaps(text)
    except ConfigError as e:
        raise argparse.ArgumentTypeError(str(e).replace("`fill_gaps` ", "")) from None


def profile_options(parser: argparse.ArgumentParser) -> None:
    """--profiles and the policy for its imperfections, on every command that takes --grid NET.json."""
    parser.add_argument("--profiles", type=nonempty, metavar="FILE", help=PROFILES_HELP)
    parser.add_argument(
        "--fill-gaps",
        type=fill_gaps,
        metavar="DURATION",
        help="fill gaps in --profiles (missing values or rows) up to this long, e.g. 1h, by interpolation in "
        "time; longer gaps are refused and listed (default: none, every gap is refused)",
    )
    parser.add_argument(
        "--resample",
        action="store_true",
        help="average --profiles readings finer than 15 minutes (e.g. 5-minute) into 15-minute steps (mean)",
    )


def profile_policy(args: argparse.Namespace):
    """The ProfilePolicy that --fill-gaps and --resample ask for."""
    from models.grid.source import ProfilePolicy

    return ProfilePolicy(getattr(args, "fill_gaps", None) or 0, bool(getattr(args, "resample", False)))


def suite_twins(args: argparse.Namespace):
    """(suite, grid names, twin classes) selected by --suite/--grid/--twin, validated; a user's grid
    file whose cache is missing or stale, or a suite's grid with no cache yet, is built here."""
    from bench.suites import load_suite
    from models.grid.build import build_if_missing
    from models.registry import get_twin

    suite = load_suite(args.suite)
    twins = [get_twin(args.twin)] if args.twin else [get_twin(t) for t in suite.twins]
    if grid := chosen_grid(args, suite):
        return suite, [grid], twins
    for name in suite.grids:  # a SimBench grid not built yet is built here, as `twinbench data` would
        build_if_missing(suite.grid_source(name), log=to_stderr)
    return suite, list(suite.grids), twins


def chosen_grid(args: argparse.Namespace, suite=None) -> str | None:
    """The grid named by --grid [--profiles], or None (the suite's grids). A pandapower file's cache is
    built here when missing or stale, so `train` and `run` take the file directly."""
    from bench.suites import choose_grid, load_suite
    from models.grid.build import ensure_grid
    from models.grid.inputs import check_files

    profiles, policy = getattr(args, "profiles", None), profile_policy(args)
    if not getattr(args, "grid", None):
        if profiles or not policy.is_default:
            raise ConfigError(PROFILES_WITHOUT_GRID if profiles else POLICY_WITHOUT_PROFILES)
        return None
    if suite is None and getattr(args, "suite", None):
        suite = load_suite(args.suite)
    source = choose_grid(args.grid, profiles, suite, policy)
    if source.is_file and getattr(args, "dry_run", False):  # a dry run writes nothing, but names real files
        check_files(source)
    elif source.is_file:
        ensure_grid(source, log=to_stderr)
    return source.name


def require_cuda() -> None:
    import torch

    if not torch.cuda.is_available():
        raise ConfigError("--device cuda asked for, but CUDA is not available here (use --device cpu)")


def default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def schedule_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--rate",
        metavar="R",
        help="inferences per instance, e.g. 1/min, 96/day, 10/s: prints "
        "each frontier variant's energy (kWh), CO2e and cost per year",
    )
    parser.add_argument("--instances", type=number(int, 1, 10**9), help="deployed copies (default 1)")
    parser.add_argument(
        "--device-use",
        choices=["dedicated", "shared"],
        help="dedicated: the device's measured idle power is paid all year; shared (default): "
        "only the dynamic energy of the inferences",
    )
    parser.add_argument(
        "--carbon-intensity", type=number(low=0, high=1e5), metavar="G", help="g CO2e per kWh (overrides --region)"
    )
    parser.add_argument(
        "--region",
        metavar="ISO3",
        help="the country whose grid powers the twin (DEU, FRA, USA): its carbon intensity from CodeCarbon's "
        "offline data, the data's year printed",
    )
    parser.add_argument(
        "--pue",
        type=number(low=1, high=10),
        metavar="X",
        help="the facility's power usage effectiveness, 1 to 10 (default 1.0: the devices' own energy, stated)",
    )
    parser.add_argument(
        "--wue", type=number(low=0, high=100), metavar="L", help="water per kWh, L/kWh (no default: none is invented)"
    )
    parser.add_argument("--price", type=number(low=0, high=1e6), metavar="P", help="price per kWh")
    parser.add_argument(
        "--retrain-every",
        metavar="DURATION",
        help="the twin is made again this often, e.g. '30 days': adds its whole creation energy per retrain",
    )
    parser.add_argument(
        "--personalized",
        action="store_true",
        help="each of --instances is its own twin (created and retrained once per instance); default: one "
        "shared twin serves them all",
    )


def schedule(args: argparse.Namespace):
    """The deployment schedule of `select --rate ...`, or None without --rate."""
    from bench.decide.annual import Schedule, parse_duration, parse_rate

    options = ("instances", "device_use", "carbon_intensity", "price", "retrain_every", "region", "pue", "wue")
    if args.rate is None:
        given = [f for f in options if getattr(args, f, None) is not None] + (["personalized"] * args.personalized)
        if given or getattr(args, "objective", None) == "annual":
            raise ConfigError(f"--{(given or ['objective annual'])[0].replace('_', '-')} needs --rate (e.g. 1/min)")
        return None
    if args.personalized and args.instances is None:
        raise ConfigError("--personalized makes one twin per instance: say how many with --instances N")
    carbon = args.carbon_intensity
    carbon_source = "given with --carbon-intensity" if carbon is not None else ""
    if args.region is not None and carbon is None:
        from bench.decide.carbon import region_intensity

        region = region_intensity(args.region)
        carbon, carbon_source = region.g_per_kwh, region.source
    return Schedule(
        rate_per_s=parse_rate(args.rate),
        instances=args.instances or 1,
        device_use=args.device_use or "shared",
        carbon_g_per_kwh=carbon,
        carbon_source=carbon_source,
        pue=1.0 if args.pue is None else args.pue,
        wue_l_per_kwh=args.wue,
        price_per_kwh=args.price,
        retrain_every_s=None if args.retrain_every is None else parse_duration(args.retrain_every),
        personalized=args.personalized,
    )
