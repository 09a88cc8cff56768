"""`twinbench select`: choose the variant to deploy under constraints, say why, and export it."""

from __future__ import annotations

import argparse

from bench.cli.args import nonempty, number, path, say, schedule, schedule_options
from models.errors import ConfigError


def add_commands(commands) -> None:
    sel = commands.add_parser("select", help="choose the variant to deploy under constraints (and export it)")
    sel.add_argument("--run", type=path, help="a run folder")
    sel.add_argument("--records", type=path, help="a records.jsonl file (instead of --run)")
    sel.add_argument("--twin", required=True)
    sel.add_argument("--max-quality-loss-pct", type=number(low=-100, high=1e9), required=True)
    sel.add_argument("--max-latency-ms-p99", type=number(above=0))
    sel.add_argument("--max-memory-mb", type=number(above=0))
    sel.add_argument("--runtime")
    sel.add_argument("--batch-size", type=number(int, 1, 1 << 20), help="default: the smallest measured")
    sel.add_argument("--grid", type=nonempty, help="needed when the records hold several grids")
    sel.add_argument(
        "--objective",
        default="energy",
        choices=["energy", "latency", "annual"],
        help="rank by J/inference (default), p50 latency, or kWh per year at --rate",
    )
    schedule_options(sel)
    sel.add_argument(
        "--where",
        action="append",
        metavar="COND",
        help='a bound on any quality metric, e.g. "vm_violation_recall>=0.95" (repeatable)',
    )
    sel.add_argument("--export", type=path, metavar="DIR", help="write the artifact and model_card.json here")
    sel.add_argument("--force", action="store_true", help="export into a folder that is not empty")
    sel.set_defaults(func=cmd_select)


def cmd_select(args: argparse.Namespace) -> int:
    from bench.decide import export, select
    from bench.store import RunDir, load_records, run_folder_of

    if (args.run is None) == (args.records is None):
        raise ConfigError("give exactly one of --run RUN or --records FILE")
    if args.run is not None:
        RunDir.open(args.run)  # --run names a run folder, nothing else
    records, env = load_records(args.run or args.records)
    run_folder = run_folder_of(args.run or args.records)
    constraints = select.Constraints(
        max_quality_loss_pct=args.max_quality_loss_pct,
        max_latency_ms_p99=args.max_latency_ms_p99,
        max_memory_mb=args.max_memory_mb,
        runtime=args.runtime,
        batch_size=args.batch_size,
        grid=args.grid,
        objective=args.objective,
        where=tuple(select.Where.parse(w) for w in args.where or ()),
    )
    chosen = select.select(records, args.twin, constraints, schedule(args))
    say(select.render(chosen))
    if args.export:
        for path in export.export(chosen, args.export, env, run_folder, force=args.force):
            print(f"exported: {path}")
    return 0
