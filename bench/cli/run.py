"""Commands that measure: run (or its dry run) and the nightly gate."""

from __future__ import annotations

import argparse
import sys

from bench.cli.args import GRID_HELP, PCT, chosen_grid, cores, nonempty, number, path, profile_options, say


def add_commands(commands) -> None:
    run = commands.add_parser("run", help="measure a suite: quality, energy, latency and memory per cell")
    run.add_argument("--suite", help="suite to run (see `twinbench list`)")
    run.add_argument("--twin", help="only this twin")
    run.add_argument("--grid", type=nonempty, help=GRID_HELP)
    profile_options(run)
    run.add_argument("--runtime", help="only this runtime")
    run.add_argument("--device", choices=["cpu", "cuda"], help="default: the suite's device")
    run.add_argument(
        "--threads",
        type=number(int, 1, cores()),
        help=f"torch / ONNX Runtime intra-op threads, 1 to {cores()} (default: all cores)",
    )
    run.add_argument("--out", type=path, help="folder for run folders (default results/runs)")
    run.add_argument("--resume", type=path, metavar="RUN", help="continue an interrupted run folder")
    run.add_argument(
        "--max-minutes", type=number(above=0), help="refuse a plan estimated (measuring and training) to take longer"
    )
    run.add_argument(
        "--dry-run",
        action="store_true",
        help="print the plan (cells, shards, training to do, "
        "estimated time on 1 and 8 workers) and exit: nothing measured or written",
    )
    run.add_argument(
        "--variant",
        action="append",
        metavar="SEL",
        help="only these of the suite's variants (repeatable): a variant id or a pass name; the "
        "reference is always measured ('--variant reference': only it)",
    )
    run.add_argument(
        "--scenario",
        action="append",
        choices=["offline", "single-stream", "server"],
        help="LoadGen scenarios instead of the suite's (repeatable): offline (the protocol, always measured) "
        "alone, single-stream, server (the suite's [measure.server] rates and p99 bound)",
    )
    run.add_argument(
        "--executor",
        choices=["local", "ray"],
        default="local",
        help="local: shards one after another here; ray: one Ray task per shard, each owning a "
        "GPU (CUDA suites) or a node (CPU suites)",
    )
    run.add_argument(
        "--ray-address", metavar="ADDR", help="join a Ray cluster ('auto' or host:port); default: a local Ray instance"
    )
    run.add_argument(
        "--shard-size",
        type=number(int, 1, 10_000),
        metavar="K",
        help="variants per shard besides the reference (default: all of a twin locally, 4 on Ray)",
    )
    run.set_defaults(func=cmd_run)

    night = commands.add_parser("nightly", help="run the nightly suite and compare it with this device's baseline")
    night.add_argument("--suite", default="nightly")
    night.add_argument("--device", choices=["cpu", "cuda"])
    night.add_argument("--out", type=path)
    night.add_argument("--baseline", type=path, help="default: results/baselines/<this device>.json")
    night.add_argument("--threshold-pct", type=PCT, default=5.0)
    night.add_argument("--quality-threshold-pct", type=PCT, default=0.5)
    night.set_defaults(func=cmd_nightly)


def _request(args: argparse.Namespace):
    from bench.run.runner import RunRequest

    return RunRequest(
        suite=args.suite,
        device=args.device,
        twin=args.twin,
        grid=chosen_grid(args),
        runtime=args.runtime,
        threads=args.threads,
        variants=args.variant,
        out=args.out,
        resume=args.resume,
        max_minutes=args.max_minutes,
        executor=args.executor,
        ray_address=args.ray_address,
        shard_size=args.shard_size,
        scenarios=args.scenario,
    )


def cmd_run(args: argparse.Namespace) -> int:
    from rich.console import Console

    from bench.run.estimate import DOES_NOT_FIT
    from bench.run.progress import RunProgress
    from bench.run.runner import dry_run, run

    if args.dry_run:
        text = dry_run(_request(args))
        print(text)
        if args.max_minutes is not None and f"{DOES_NOT_FIT} in --max-minutes" in text:
            print(
                f"error: the plan does not fit --max-minutes {args.max_minutes:g}: `run` would refuse it",
                file=sys.stderr,
            )
            return 1  # as the run itself (a Verdict)
        return 0
    console = Console(stderr=True)
    with RunProgress(console) as progress:
        try:
            log = lambda m: console.print(m, highlight=False, markup=False, soft_wrap=True)  # noqa: E731
            run_dir = run(_request(args), log=log, progress=progress)
        except KeyboardInterrupt as e:
            folder = getattr(e, "path", None)  # bench.run.runner.RunInterrupted, once the run folder exists
            where = f"{folder}/records.jsonl" if folder else "records.jsonl"
            console.print(
                f"interrupted: finished cells are in {where}; continue with twinbench run --resume {folder or 'RUN'}",
                highlight=False,
                markup=False,
                soft_wrap=True,
            )
            return 130
    say((run_dir.path / "summary.md").read_text())
    print(f"records: {run_dir.records_path}")
    return 0


def cmd_nightly(args: argparse.Namespace) -> int:
    """Run the nightly suite, compare it with this device's committed baseline, write verdict.md."""
    from bench.run.nightly import NightlyRequest, nightly

    text, code = nightly(
        NightlyRequest(args.suite, args.device, args.out, args.baseline, args.threshold_pct, args.quality_threshold_pct)
    )
    say(text)
    return code
