"""Commands about grids and twins: data, train, predict."""

from __future__ import annotations

import argparse
import io
import sys
from pathlib import Path

from bench.cli.args import (
    GRID_HELP,
    POLICY_WITHOUT_PROFILES,
    PROFILES_WITHOUT_GRID,
    default_device,
    nonempty,
    path,
    profile_options,
    profile_policy,
    require_cuda,
    suite_twins,
    to_stderr,
)
from models.errors import ConfigError


def add_commands(commands) -> None:
    data = commands.add_parser("data", help="build (or verify) the grid data cache and print its path")
    which = data.add_mutually_exclusive_group()
    which.add_argument("--suite", default="smoke", help="build the grids of this suite (default: smoke)")
    which.add_argument(
        "--grid",
        type=nonempty,
        metavar="GRID",
        help="build one grid: a SimBench code of a suite, or a pandapower "
        "network file (NET.json, pandapower.to_json) with its profiles inside or in --profiles",
    )
    profile_options(data)
    data.add_argument("--rebuild", action="store_true", help="rebuild even if the cache is valid")
    data.set_defaults(func=cmd_data)

    train = commands.add_parser("train", help="train (or load) the reference twins and compare them with baselines")
    train.add_argument("--suite", default="smoke")
    train.add_argument("--grid", type=nonempty, help=GRID_HELP)
    profile_options(train)
    train.add_argument("--twin", help="only this twin")
    train.add_argument("--split", default="test", choices=["train", "val", "test"])
    train.add_argument("--retrain", action="store_true", help="ignore cached checkpoints")
    train.add_argument(
        "--device", choices=["cpu", "cuda"], help="where to train (default: cuda if available, else cpu)"
    )
    train.set_defaults(func=cmd_train)

    predict = commands.add_parser("predict", help="write a reference twin's predictions and targets to a .npz")
    predict.add_argument("--suite", default="smoke")
    predict.add_argument("--grid", type=nonempty, help="the grid, if the suite has several")
    predict.add_argument("--twin", required=True)
    predict.add_argument("--split", default="test", choices=["train", "val", "test"])
    predict.add_argument("--out", type=path, required=True)
    predict.set_defaults(func=cmd_predict)


def cmd_data(args: argparse.Namespace) -> int:
    from bench.suites import choose_grid, load_suite
    from models.grid.build import ensure_grid

    policy = profile_policy(args)
    if args.grid:
        sources = [choose_grid(args.grid, args.profiles, policy=policy)]
    elif args.profiles or not policy.is_default:
        raise ConfigError(PROFILES_WITHOUT_GRID if args.profiles else POLICY_WITHOUT_PROFILES)
    else:
        suite = load_suite(args.suite)
        sources = [suite.grid_source(grid) for grid in suite.grids]
    for source in sources:
        data = ensure_grid(source, rebuild=args.rebuild, log=to_stderr)
        sizes = data.manifest["sizes"]
        origin = f" (from {' + '.join(source.given)})" if source.is_file else ""
        print(
            f"{source.name}{origin}: {sizes['nodes']} nodes, {sizes['edges'] // 2} branches, "
            f"{len(data.streams['channel_names'])} streams, {sizes['snapshots']} snapshots, "
            f"{len(data.trajectories['time_step'])} steps -> {data.path}"
        )
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from bench.run.references import TrainRequest, train_references

    suite, grids, twins = suite_twins(args)
    if args.device == "cuda":
        require_cuda()
    req = TrainRequest(
        tuple(grids), tuple(twins), suite.model_size, args.split, args.retrain, args.device or default_device()
    )
    rows = train_references(req, log=to_stderr)
    table = Table(title=f"reference twins, suite {suite.name} ({suite.model_size} size), {args.split} split")
    for column in ("grid", "twin", "metric", "model", "baseline", "baseline value", "better by", "training"):
        table.add_column(column, justify="right" if column in ("model", "baseline value", "better by") else "left")
    for r in rows:
        table.add_row(
            r.grid,
            r.twin,
            r.metric,
            f"{r.value:.5g}",
            r.baseline + ("" if r.required else " (info)"),
            f"{r.baseline_value:.5g}",
            f"{r.margin_pct:+.1f} %",
            r.training,
        )
    Console(width=max(Console().width, 150)).print(table)  # a pipe gets 80 columns: too narrow
    failed = any(r.fails for r in rows)
    if failed:
        print("error: a twin does not beat a baseline it must beat", file=sys.stderr)
    return 1 if failed else 0


def cmd_predict(args: argparse.Namespace) -> int:
    import numpy as np

    from bench.run.references import reference
    from bench.store import write_output
    from models.export import torch_predict_fn

    suite, grids, twins = suite_twins(args)
    if len(grids) > 1:
        raise ConfigError(f"suite {suite.name} has several grids ({', '.join(grids)}): choose one with --grid")
    if args.out.is_dir():
        raise ConfigError(f"--out {args.out} is a folder; give a file name such as {args.out / 'predictions.npz'}")
    twin, model, _, _ = reference(twins[0], grids[0], suite.model_size, log=to_stderr)
    arrays = twin.predictions(torch_predict_fn(model), args.split)
    arrays["bus_ids"] = twin.grid.graph["bus_ids"]
    arrays["channel_names"] = twin.grid.streams["channel_names"]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    write_output(args.out, buffer.getvalue(), ours=_is_predictions)
    shapes = ", ".join(f"{k} {v.shape}" for k, v in arrays.items())
    print(f"{twin.name} on {grids[0]}, {args.split} split -> {args.out} ({shapes})")
    return 0


def _is_predictions(path: Path) -> bool:
    """A .npz that `predict` wrote (its grid arrays are there): the only file --out may replace."""
    import numpy as np

    try:
        with np.load(path, allow_pickle=False) as f:
            return {"bus_ids", "channel_names"} <= set(f.files)
    except Exception:  # not an npz at all
        return False
