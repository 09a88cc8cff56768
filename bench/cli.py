"""`twinbench`: a thin command line over the Python API. Heavy imports happen inside commands."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from bench.errors import TwinbenchError, UnknownNameError


def _cmd_list(args: argparse.Namespace) -> int:
    from bench.suites import load_suite, suite_names
    from models.grid.cache import GridDataConfig, cache_root, grid_dir, verify_cache
    from models.registry import twins

    print("twins:")
    for spec in twins().values():
        print(f"  {spec.name:22} {spec.summary}")
        print(f"  {'':22} data: {spec.data}; metric: {spec.metric}; baseline: {spec.baseline}")
    print("suites:")
    grids: set[str] = set()
    for name in suite_names():
        suite = load_suite(name)
        grids.update(suite.grids)
        print(f"  {name:22} {suite.description}")
    print(f"grids (cache: {cache_root()}):")
    for grid in sorted(grids):
        if not (grid_dir(grid) / "manifest.json").exists():
            state = "not built (twinbench data --grid ...)"
        else:
            try:
                verify_cache(grid_dir(grid), grid, GridDataConfig())
                state = "cached"
            except TwinbenchError as e:
                state = f"not usable: {e}"
        print(f"  {grid:22} {state}")
    return 0


def _cmd_data(args: argparse.Namespace) -> int:
    from bench.suites import known_grids, load_suite
    from models.grid.cache import ensure_grid

    if args.grid:
        if args.grid not in known_grids():
            raise UnknownNameError("grid", args.grid, known_grids())
        grids = [args.grid]
    else:
        grids = list(load_suite(args.suite).grids)
    for grid in grids:
        data = ensure_grid(grid, rebuild=args.rebuild, log=lambda m: print(m, file=sys.stderr))
        sizes = data.manifest["sizes"]
        print(
            f"{grid}: {sizes['nodes']} nodes, {sizes['edges'] // 2} branches, "
            f"{len(data.streams['channel_names'])} streams, {sizes['snapshots']} snapshots, "
            f"{len(data.trajectories['time_step'])} steps -> {data.path}"
        )
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="twinbench",
        description="Which variant of a digital-twin model gives the accuracy you need "
        "for the fewest joules per inference, on your hardware?",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    listing = commands.add_parser("list", help="twins, suites and grids known here, and which grids are cached")
    listing.set_defaults(func=_cmd_list)

    data = commands.add_parser("data", help="build (or verify) the grid data cache and print its path")
    which = data.add_mutually_exclusive_group()
    which.add_argument("--suite", default="smoke", help="build the grids of this suite (default: smoke)")
    which.add_argument("--grid", help="build one grid")
    data.add_argument("--rebuild", action="store_true", help="rebuild even if the cache is valid")
    data.set_defaults(func=_cmd_data)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except TwinbenchError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
