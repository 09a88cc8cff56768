"""Commands that read records: report, compare, baseline, history (select: bench/cli/choose.py)."""

from __future__ import annotations

import argparse
import sys

from bench.cli.args import PCT, path, say, schedule, schedule_options
from models.errors import ConfigError


def add_commands(commands) -> None:
    report = commands.add_parser("report", help="(re)write a run's summary.md and self-contained report.html")
    report.add_argument("run", type=path, metavar="RUN")
    schedule_options(report)
    report.add_argument(
        "--metric",
        metavar="NAME",
        help="draw the frontier against this quality metric "
        "(writes summary-NAME.md and report-NAME.html beside the default ones)",
    )
    report.set_defaults(func=cmd_report)

    cmp = commands.add_parser("compare", help="regressions of NEW against BASE (exit 0 clean, 1 regression)")
    cmp.add_argument("base", type=path, metavar="BASE", help="run folder, records.jsonl or baseline JSON")
    cmp.add_argument("new", type=path, metavar="NEW")
    cmp.add_argument("--threshold-pct", type=PCT, default=5.0, help="energy/latency change that counts (5)")
    cmp.add_argument("--quality-threshold-pct", type=PCT, default=0.5, help="quality change that counts (0.5)")
    cmp.add_argument("--out", type=path, help="also write the markdown verdict here")
    cmp.set_defaults(func=cmd_compare)

    base = commands.add_parser("baseline", help="promote a run to results/baselines/<device>.json")
    base.add_argument("--run", type=path, required=True)
    base.add_argument("--force", action="store_true", help="replace a baseline that covers cells this run lacks")
    base.set_defaults(func=cmd_baseline)

    hist = commands.add_parser("history", help="a twin's records over runs, from the SQLite history")
    hist.add_argument("--twin")
    hist.add_argument("--variant", help="a variant id or the start of its name")
    hist.add_argument("--runs", type=path, metavar="DIR", help="the runs folder (run --out); default results/runs")
    hist.add_argument("--rebuild", action="store_true", help="rebuild DIR/history.sqlite from the runs' records")
    hist.set_defaults(func=cmd_history)


def cmd_report(args: argparse.Namespace) -> int:
    from bench.decide import report, summary
    from bench.store import RunDir
    from models.errors import InputError

    plan = schedule(args)  # checked before anything is written: a refused command changes no file
    run_dir = RunDir.open(args.run)
    if not run_dir.records():
        raise InputError(f"{args.run} holds no records yet")
    say(summary.write(run_dir, args.metric))
    print(f"report: {report.write(run_dir, args.metric, plan)}")
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
    from bench.history_db import history, history_path, rebuild_history
    from bench.store import RUNS

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
