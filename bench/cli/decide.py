"""Commands that read records: report, select (and export), compare, baseline, history."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bench.cli.args import PCT, nonempty, number, say, schedule, schedule_options
from models.errors import ConfigError


def add_commands(commands) -> None:
    report = commands.add_parser("report", help="(re)write a run's summary.md and self-contained report.html")
    report.add_argument("run", type=Path, metavar="RUN")
    schedule_options(report)
    report.add_argument(
        "--metric",
        metavar="NAME",
        help="draw the frontier against this quality metric "
        "(writes summary-NAME.md and report-NAME.html beside the default ones)",
    )
    report.set_defaults(func=cmd_report)
    _add_select(commands)

    cmp = commands.add_parser("compare", help="regressions of NEW against BASE (exit 0 clean, 1 regression)")
    cmp.add_argument("base", type=Path, metavar="BASE", help="run folder, records.jsonl or baseline JSON")
    cmp.add_argument("new", type=Path, metavar="NEW")
    cmp.add_argument("--threshold-pct", type=PCT, default=5.0, help="energy/latency change that counts (5)")
    cmp.add_argument("--quality-threshold-pct", type=PCT, default=0.5, help="quality change that counts (0.5)")
    cmp.add_argument("--out", type=Path, help="also write the markdown verdict here")
    cmp.set_defaults(func=cmd_compare)

    base = commands.add_parser("baseline", help="promote a run to results/baselines/<device>.json")
    base.add_argument("--run", type=Path, required=True)
    base.add_argument("--force", action="store_true", help="replace a baseline that covers cells this run lacks")
    base.set_defaults(func=cmd_baseline)

    hist = commands.add_parser("history", help="a twin's records over runs, from the SQLite history")
    hist.add_argument("--twin")
    hist.add_argument("--variant", help="a variant id or the start of its name")
    hist.add_argument("--runs", type=Path, metavar="DIR", help="the runs folder (run --out); default results/runs")
    hist.add_argument("--rebuild", action="store_true", help="rebuild DIR/history.sqlite from the runs' records")
    hist.set_defaults(func=cmd_history)


def _add_select(commands) -> None:
    sel = commands.add_parser("select", help="choose the variant to deploy under constraints (and export it)")
    sel.add_argument("--run", type=Path, help="a run folder")
    sel.add_argument("--records", type=Path, help="a records.jsonl file (instead of --run)")
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
    sel.add_argument("--export", type=Path, metavar="DIR", help="write the artifact and model_card.json here")
    sel.add_argument("--force", action="store_true", help="export into a folder that is not empty")
    sel.set_defaults(func=cmd_select)


def cmd_report(args: argparse.Namespace) -> int:
    from bench.decide import report, summary
    from bench.store import RunDir
    from models.errors import InputError

    run_dir = RunDir.open(args.run)
    if not run_dir.records():
        raise InputError(f"{args.run} holds no records yet")
    say(summary.write(run_dir, args.metric))
    print(f"report: {report.write(run_dir, args.metric, schedule(args))}")
    return 0


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


def cmd_compare(args: argparse.Namespace) -> int:
    from bench.decide import compare
    from bench.store import load_records, write_output

    base, _ = load_records(args.base)
    new, _ = load_records(args.new)
    verdict = compare.compare(base, new, args.threshold_pct, args.quality_threshold_pct)
    text = compare.render(verdict, str(args.base), str(args.new), args.threshold_pct)
    say(text)
    if args.out:
        write_output(args.out, text, starts_with=compare.HEADING)
    return verdict.exit_code


def cmd_baseline(args: argparse.Namespace) -> int:
    from bench.store import promote_baseline

    path, replaced = promote_baseline(args.run, force=args.force)
    print(f"baseline: {path}" + (f" (replaces run {replaced})" if replaced else ""))
    return 0


def cmd_history(args: argparse.Namespace) -> int:
    from bench.decide.history import table
    from bench.store import RUNS, history, history_path, rebuild_history

    runs = args.runs or RUNS
    if args.rebuild:
        db, n_runs, n_records = rebuild_history(runs, log=lambda m: print(m, file=sys.stderr))
        print(f"history {db}: {n_records} records of {n_runs} runs")
        if args.twin is None:
            return 0
    if args.twin is None:
        raise ConfigError("give --twin T (or --rebuild)")
    say("\n".join(table(history(history_path(runs), args.twin, args.variant))))
    return 0
