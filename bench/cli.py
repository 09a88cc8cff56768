"""`twinbench`: a thin command line over the Python API. Heavy imports happen inside commands."""

from __future__ import annotations

import argparse
import logging
import math
import os
import re
import sys
from collections.abc import Sequence
from pathlib import Path

from models.errors import ConfigError, TwinbenchError

# C0 and C1 control characters but newline and tab: record fields come from files, and an escape
# sequence printed raw can rewrite the user's terminal (issue 23 item 9).
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def terminal_safe(text: str) -> str:
    """`text` with every control character but newline and tab shown as a visible escape (\\x1b)."""
    return _CONTROL.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), text)


def _say(text: str) -> None:
    print(terminal_safe(text))


def _nonempty(text: str) -> str:
    """An argument that names something (--grid, --profiles): empty text is a mistake, not "none"
    (`--grid ''` silently built the default grid)."""
    if not text.strip():
        raise argparse.ArgumentTypeError("must not be empty")
    return text


def _number(kind: type = float, low: float | None = None, high: float | None = None, above: float | None = None):
    """An argparse type: a finite number in range. NaN compares false with every limit, so without
    this a NaN threshold silently turns a check off; argparse turns the error into exit 2."""

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {'an integer' if kind is int else 'a number'}") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
        if above is not None and value <= above:
            raise argparse.ArgumentTypeError(f"must be > {above:g}, got {text}")
        if low is not None and value < low or high is not None and value > high:
            raise argparse.ArgumentTypeError(f"must be between {low:g} and {high:g}, got {text}")
        return value

    return parse


def _cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _cmd_list(args: argparse.Namespace) -> int:
    import torch

    from bench.measure.meters import METERS
    from bench.measure.runtimes import RUNTIMES
    from bench.suites import load_suite, suite_names
    from compress.base import PASSES, TARGETS
    from models.grid.cache import GridDataConfig, cache_root, grid_dir, verify_cache
    from models.registry import TWINS, TrainableTwin

    here = "cuda" if torch.cuda.is_available() else "cpu"
    print("twins:")
    for name, entry in TWINS.entries().items():
        spec = entry.obj
        how = "trains" if issubclass(spec, TrainableTwin) else "ships trained weights"
        print(f"  {name:24} {entry.origin} · {how}")
        print(f"  {'':24} {spec.summary}")
        print(f"  {'':24} data: {spec.data_files}; metric: {spec.metric}; baseline: {spec.baseline}")
    print(f"passes (here: {here}):")
    for name, entry in PASSES.entries().items():
        reasons = {t: entry.obj.requires.unmet(here, t) for t in TARGETS}
        ok = [t for t, why in reasons.items() if why is None]
        state = f"runs here for {', '.join(ok)}" if ok else f"not here: {next(iter(reasons.values()))}"
        print(f"  {name:24} {entry.origin} · {state}")
        if summary := _doc_line(entry.obj):
            print(f"  {'':24} {summary}")
    print(f"runtimes (here: {here}):")
    for name, entry in RUNTIMES.entries().items():
        why = entry.obj.requires.unmet(here, entry.obj.target)
        state = "runs here" if why is None else f"not here: {why}"
        print(f"  {name:24} {entry.origin} · runs {entry.obj.target} models · {state}")
    print("energy meters (tried from the top; `twinbench env` shows the one each device gets):")
    for name, entry in sorted(METERS.entries().items(), key=lambda item: -item[1].obj.priority):
        why = entry.obj.requires.unmet(here)
        state = "" if why is None else f" · not here: {why}"
        print(f"  {name:24} {entry.origin} · meters {', '.join(entry.obj.devices)}{state}")
    for registry in (TWINS, PASSES, RUNTIMES, METERS):
        for name, error in registry.failures().items():
            print(f"error: the {registry.kind} plugin {name!r} ({registry.group}) failed to load: {error}")
    print("suites:")
    grids: set[str] = set()
    for name in suite_names():
        suite = load_suite(name)
        grids.update(suite.grids)
        print(f"  {name:24} {suite.description}")
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


def _doc_line(obj) -> str:
    """The first line of a docstring that someone wrote (not a dataclass's generated signature)."""
    doc = (obj.__doc__ or "").strip()
    if doc.startswith(f"{obj.__name__}("):
        return ""
    paragraph = " ".join(line.strip() for line in doc.split("\n\n")[0].splitlines())
    return paragraph.split(". ")[0].rstrip(".") + "."


def _cmd_data(args: argparse.Namespace) -> int:
    from bench.suites import choose_grid, load_suite
    from models.grid.build import ensure_grid

    if args.grid:
        sources = [choose_grid(args.grid, args.profiles)]
    elif args.profiles:
        raise ConfigError("--profiles goes with --grid NET.json (the pandapower net the profiles belong to)")
    else:
        suite = load_suite(args.suite)
        sources = [suite.grid_source(grid) for grid in suite.grids]
    for source in sources:
        data = ensure_grid(source, rebuild=args.rebuild, log=lambda m: print(m, file=sys.stderr))
        sizes = data.manifest["sizes"]
        origin = f" (from {' + '.join(source.given)})" if source.is_file else ""
        print(
            f"{source.name}{origin}: {sizes['nodes']} nodes, {sizes['edges'] // 2} branches, "
            f"{len(data.streams['channel_names'])} streams, {sizes['snapshots']} snapshots, "
            f"{len(data.trajectories['time_step'])} steps -> {data.path}"
        )
    return 0


def _suite_twins(args: argparse.Namespace):
    """(suite, grid names, twin classes) selected by --suite/--grid/--twin, validated; a user grid
    given as a file has its cache built (or verified) here."""
    from bench.suites import load_suite
    from models.registry import get_twin

    suite = load_suite(args.suite)
    twins = [get_twin(args.twin)] if args.twin else [get_twin(t) for t in suite.twins]
    grid = _chosen_grid(args, suite)
    return suite, [grid] if grid else list(suite.grids), twins


def _chosen_grid(args: argparse.Namespace, suite=None) -> str | None:
    """The grid named by --grid [--profiles], or None (the suite's grids). A pandapower file's cache is
    built here when missing or stale, so `train` and `run` take the file directly."""
    from bench.suites import choose_grid, load_suite
    from models.grid.build import ensure_grid
    from models.grid.inputs import check_files

    profiles = getattr(args, "profiles", None)
    if not getattr(args, "grid", None):
        if profiles:
            raise ConfigError("--profiles goes with --grid NET.json (the pandapower net the profiles belong to)")
        return None
    if suite is None and getattr(args, "suite", None):
        suite = load_suite(args.suite)
    source = choose_grid(args.grid, profiles, suite)
    if source.is_file and getattr(args, "dry_run", False):  # a dry run writes nothing, but names real files
        check_files(source)
    elif source.is_file:
        ensure_grid(source, log=lambda m: print(m, file=sys.stderr))
    return source.name


def _require_cuda() -> None:
    import torch

    if not torch.cuda.is_available():
        raise ConfigError("--device cuda asked for, but CUDA is not available here (use --device cpu)")


def _default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _reference(twin_cls, grid_name: str, size: str, retrain: bool = False, device: str = "cpu"):
    """(twin, trained model, checkpoint meta, trained now) for a grid from the data cache."""
    from models.checkpoint import train_or_load
    from models.grid.cache import load_grid

    twin = twin_cls(load_grid(grid_name), twin_cls.config_for(size))
    model, meta, trained = train_or_load(twin, log=lambda m: print(m, file=sys.stderr), retrain=retrain, device=device)
    return twin, model, meta, trained


def _cmd_train(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from models.export import torch_predict_fn

    suite, grids, twins = _suite_twins(args)
    if args.device == "cuda":
        _require_cuda()
    table = Table(title=f"reference twins, suite {suite.name} ({suite.model_size} size), {args.split} split")
    for column in ("grid", "twin", "metric", "model", "baseline", "baseline value", "better by", "training"):
        table.add_column(column, justify="right" if column in ("model", "baseline value", "better by") else "left")
    failed = False
    for grid in grids:
        for twin_cls in twins:
            device = args.device or _default_device()
            twin, model, meta, trained = _reference(twin_cls, grid, suite.model_size, args.retrain, device)
            evaluation = twin.evaluate(torch_predict_fn(model), args.split)
            summary = meta["summary"]
            how = f"{summary['train_seconds']:.0f} s, {summary['epochs']} epochs" if "epochs" in summary else ""
            how = (how or summary.get("source", "")) + ("" if trained else " (cached)")
            for name, scores in evaluation.baselines.items():
                margin = evaluation.margin_pct(name)
                required = name in twin.required_baselines
                failed |= required and margin <= 0
                table.add_row(
                    grid,
                    twin.name,
                    evaluation.primary,
                    f"{evaluation.value:.5g}",
                    name + ("" if required else " (info)"),
                    f"{scores[evaluation.primary]:.5g}",
                    f"{margin:+.1f} %",
                    how,
                )
    Console(width=max(Console().width, 150)).print(table)  # a pipe gets 80 columns: too narrow
    if failed:
        print("error: a twin does not beat a baseline it must beat", file=sys.stderr)
    return 1 if failed else 0


def _cmd_predict(args: argparse.Namespace) -> int:
    import numpy as np

    from models.export import torch_predict_fn

    suite, grids, twins = _suite_twins(args)
    if len(grids) > 1:
        raise ConfigError(f"suite {suite.name} has several grids ({', '.join(grids)}): choose one with --grid")
    if args.out.is_dir():
        raise ConfigError(f"--out {args.out} is a folder; give a file name such as {args.out / 'predictions.npz'}")
    twin, model, _, _ = _reference(twins[0], grids[0], suite.model_size)
    arrays = twin.predictions(torch_predict_fn(model), args.split)
    arrays["bus_ids"] = twin.grid.graph["bus_ids"]
    arrays["channel_names"] = twin.grid.streams["channel_names"]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez(args.out, **arrays)
    shapes = ", ".join(f"{k} {v.shape}" for k, v in arrays.items())
    print(f"{twin.name} on {grids[0]}, {args.split} split -> {args.out} ({shapes})")
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    from rich.console import Console

    from bench.run.estimate import DOES_NOT_FIT
    from bench.run.progress import RunProgress
    from bench.run.runner import dry_run, run

    if args.dry_run:
        text = dry_run(args.suite, device=args.device, twin=args.twin, grid=_chosen_grid(args), runtime=args.runtime,
                       threads=args.threads, resume=args.resume, variants=args.variant, shard_size=args.shard_size,
                       max_minutes=args.max_minutes)  # fmt: skip
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
            run_dir = run(
                args.suite, device=args.device, twin=args.twin, grid=_chosen_grid(args), runtime=args.runtime,
                threads=args.threads,
                out=args.out, resume=args.resume, max_minutes=args.max_minutes, variants=args.variant,
                executor=args.executor, ray_address=args.ray_address, shard_size=args.shard_size,
                log=lambda m: console.print(m, highlight=False, markup=False, soft_wrap=True), progress=progress,
            )  # fmt: skip
        except KeyboardInterrupt as e:
            folder = getattr(e, "path", None)  # bench.run.runner.RunInterrupted, once the run folder exists
            where = f"{folder}/records.jsonl" if folder else "records.jsonl"
            console.print(
                f"interrupted: finished cells are in {where}; continue with twinbench run --resume {folder or 'RUN'}",
                highlight=False, markup=False, soft_wrap=True,
            )  # fmt: skip
            return 130
    _say((run_dir.path / "summary.md").read_text())
    print(f"records: {run_dir.records_path}")
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from bench.decide import report, summary
    from bench.store import RunDir
    from models.errors import InputError

    run_dir = RunDir.open(args.run)
    if not run_dir.records():
        raise InputError(f"{args.run} holds no records yet")
    _say(summary.write(run_dir, args.metric))
    print(f"report: {report.write(run_dir, args.metric, _schedule(args))}")
    return 0


def _cmd_select(args: argparse.Namespace) -> int:
    from bench.decide import select
    from bench.store import RunDir, load_records, run_folder_of

    if (args.run is None) == (args.records is None):
        raise ConfigError("give exactly one of --run RUN or --records FILE")
    if args.run is not None:
        RunDir.open(args.run)  # --run names a run folder, nothing else
    records, env = load_records(args.run or args.records)
    run_folder = run_folder_of(args.run or args.records)
    constraints = select.Constraints(
        max_quality_loss_pct=args.max_quality_loss_pct, max_latency_ms_p99=args.max_latency_ms_p99,
        max_memory_mb=args.max_memory_mb, runtime=args.runtime, batch_size=args.batch_size, grid=args.grid,
        objective=args.objective, where=tuple(select.Where.parse(w) for w in args.where or ()),
    )  # fmt: skip
    chosen = select.select(records, args.twin, constraints, _schedule(args))
    _say(select.render(chosen))
    if args.export:
        for path in select.export(chosen, args.export, env, run_folder, force=args.force):
            print(f"exported: {path}")
    return 0


def _schedule(args: argparse.Namespace):
    """The deployment schedule of `select --rate ...`, or None without --rate."""
    from bench.decide.annual import Schedule, parse_rate

    if args.rate is None:
        given = [f for f in ("instances", "device_use", "carbon_intensity", "price") if getattr(args, f) is not None]
        if given or getattr(args, "objective", None) == "annual":
            raise ConfigError(f"--{(given or ['objective annual'])[0].replace('_', '-')} needs --rate (e.g. 1/min)")
        return None
    return Schedule(
        rate_per_s=parse_rate(args.rate), instances=args.instances or 1, device_use=args.device_use or "shared",
        carbon_g_per_kwh=args.carbon_intensity, price_per_kwh=args.price,
    )  # fmt: skip


def _cmd_compare(args: argparse.Namespace) -> int:
    from bench.decide import compare
    from bench.store import load_records, write_output

    base, _ = load_records(args.base)
    new, _ = load_records(args.new)
    verdict = compare.compare(base, new, args.threshold_pct, args.quality_threshold_pct)
    text = compare.render(verdict, str(args.base), str(args.new), args.threshold_pct)
    _say(text)
    if args.out:
        write_output(args.out, text, starts_with=compare.HEADING)
    return verdict.exit_code


def _cmd_baseline(args: argparse.Namespace) -> int:
    from bench.store import promote_baseline

    path, replaced = promote_baseline(args.run, force=args.force)
    print(f"baseline: {path}" + (f" (replaces run {replaced})" if replaced else ""))
    return 0


def _cmd_history(args: argparse.Namespace) -> int:
    from bench.store import RUNS, history, history_path, rebuild_history

    runs = args.runs or RUNS
    if args.rebuild:
        db, n_runs, n_records = rebuild_history(runs, log=lambda m: print(m, file=sys.stderr))
        print(f"history {db}: {n_records} records of {n_runs} runs")
        if args.twin is None:
            return 0
    if args.twin is None:
        raise ConfigError("give --twin T (or --rebuild)")
    rows = history(history_path(runs), args.twin, args.variant)
    print("| run | variant | runtime | batch | status | quality | J/inference [95% CI] | source | p50 ms |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        energy = "-" if r.energy_j_per_inference is None else (
            f"{r.energy_j_per_inference:.4g} [{r.energy_ci95_low:.4g}, {r.energy_ci95_high:.4g}]")  # fmt: skip
        quality = "-" if r.quality_value is None else f"{r.quality_value:.4g}"
        p50 = "-" if r.latency_ms_p50 is None else f"{r.latency_ms_p50:.3g}"
        _say(f"| {r.run_id} | {r.variant_name} | {r.runtime} | {r.batch_size} | {r.status} | {quality} | {energy} "
              f"| {r.energy_source} | {p50} |")  # fmt: skip
    return 0


def _cmd_nightly(args: argparse.Namespace) -> int:
    """Run the nightly suite, compare it with this device's committed baseline, write verdict.md."""
    from bench.decide import compare
    from bench.run.runner import run
    from bench.store import baseline_path, load_records, write_output
    from models.errors import InputError

    if args.baseline is not None:  # a baseline given is checked before the suite runs (~20 GPU-minutes)
        load_records(args.baseline)
    run_dir = run(args.suite, device=args.device, out=args.out)
    records, env = load_records(run_dir.path)
    base = args.baseline or baseline_path(env, records[0].device)
    if not base.is_file():
        raise InputError(f"no baseline for this device at {base}: promote a run with `twinbench baseline --run "
                         f"{run_dir.path}` (and commit it)")  # fmt: skip
    base_records, _ = load_records(base)
    verdict = compare.compare(base_records, records, args.threshold_pct, args.quality_threshold_pct)
    text = compare.render(verdict, str(base), str(run_dir.path), args.threshold_pct)
    write_output(run_dir.path / "verdict.md", text)
    _say(text)
    return verdict.exit_code


def _cmd_env(args: argparse.Namespace) -> int:
    import torch

    from bench.measure.meters import choose_meter
    from bench.measure.runtimes import runtime_names

    print(f"cuda: {'available: ' + torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'not available'}")
    for device in ("cpu", "cuda") if torch.cuda.is_available() else ("cpu",):
        print(f"energy meter on {device}: {choose_meter(device).why}")
    if not torch.cuda.is_available():
        print("energy meter on cuda: none (no CUDA device)")
    print(f"runtimes: {', '.join(runtime_names())}")
    return 0


PCT = _number(low=0, high=1e6)
GRID_HELP = (
    "only this grid of the suite; or, instead of the suite's grids, a pandapower network file (NET.json) "
    "or a user grid's name as `twinbench data` prints it"
)
PROFILES_HELP = (
    "CSV (or Parquet) of the net's element profiles: a `time` column every 15 min and columns such as "
    "load:3:p_mw, load:3:q_mvar, sgen:0:p_mw, storage:0:p_mw (README: 'Bring your own grid')"
)


def _schedule_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--rate", metavar="R", help="inferences per instance, e.g. 1/min, 96/day, 10/s: prints "
                     "each frontier variant's energy (kWh), CO2e and cost per year")  # fmt: skip
    parser.add_argument("--instances", type=_number(int, 1, 10**9), help="deployed copies (default 1)")
    parser.add_argument("--device-use", choices=["dedicated", "shared"],
                     help="dedicated: the device's measured idle power is paid all year; shared (default): "
                     "only the dynamic energy of the inferences")  # fmt: skip
    parser.add_argument("--carbon-intensity", type=_number(low=0, high=1e5), metavar="G", help="g CO2e per kWh")
    parser.add_argument("--price", type=_number(low=0, high=1e6), metavar="P", help="price per kWh")


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
    which.add_argument("--grid", type=_nonempty, metavar="GRID", help="build one grid: a SimBench code of a suite, or a pandapower "
                       "network file (NET.json, pandapower.to_json) with its profiles inside or in --profiles")  # fmt: skip
    data.add_argument("--profiles", type=_nonempty, metavar="FILE", help=PROFILES_HELP)
    data.add_argument("--rebuild", action="store_true", help="rebuild even if the cache is valid")
    data.set_defaults(func=_cmd_data)

    train = commands.add_parser("train", help="train (or load) the reference twins and compare them with baselines")
    train.add_argument("--suite", default="smoke")
    train.add_argument("--grid", type=_nonempty, help=GRID_HELP)
    train.add_argument("--profiles", type=_nonempty, metavar="FILE", help=PROFILES_HELP)
    train.add_argument("--twin", help="only this twin")
    train.add_argument("--split", default="test", choices=["train", "val", "test"])
    train.add_argument("--retrain", action="store_true", help="ignore cached checkpoints")
    train.add_argument(
        "--device", choices=["cpu", "cuda"], help="where to train (default: cuda if available, else cpu)"
    )
    train.set_defaults(func=_cmd_train)

    predict = commands.add_parser("predict", help="write a reference twin's predictions and targets to a .npz")
    predict.add_argument("--suite", default="smoke")
    predict.add_argument("--grid", type=_nonempty, help="the grid, if the suite has several")
    predict.add_argument("--twin", required=True)
    predict.add_argument("--split", default="test", choices=["train", "val", "test"])
    predict.add_argument("--out", type=Path, required=True)
    predict.set_defaults(func=_cmd_predict)

    run = commands.add_parser("run", help="measure a suite: quality, energy, latency and memory per cell")
    run.add_argument("--suite", help="suite to run (see `twinbench list`)")
    run.add_argument("--twin", help="only this twin")
    run.add_argument("--grid", type=_nonempty, help=GRID_HELP)
    run.add_argument("--profiles", type=_nonempty, metavar="FILE", help=PROFILES_HELP)
    run.add_argument("--runtime", help="only this runtime")
    run.add_argument("--device", choices=["cpu", "cuda"], help="default: the suite's device")
    run.add_argument(
        "--threads", type=_number(int, 1, _cores()), help=f"torch / ONNX Runtime intra-op threads, 1 to {_cores()} "
        "(default: all cores)",
    )  # fmt: skip
    run.add_argument("--out", type=Path, help="folder for run folders (default results/runs)")
    run.add_argument("--resume", type=Path, metavar="RUN", help="continue an interrupted run folder")
    run.add_argument("--max-minutes", type=_number(above=0),
                     help="refuse a plan estimated (measuring and training) to take longer")  # fmt: skip
    run.add_argument("--dry-run", action="store_true", help="print the plan (cells, shards, training to do, "
                     "estimated time on 1 and 8 workers) and exit: nothing measured or written")  # fmt: skip
    run.add_argument(
        "--variant", action="append", metavar="SEL",
        help="only these of the suite's variants (repeatable): a variant id or a pass name; the reference "
        "is always measured ('--variant reference': only it)",
    )  # fmt: skip
    run.add_argument("--executor", choices=["local", "ray"], default="local",
                     help="local: shards one after another here; ray: one Ray task per shard, each owning a "
                     "GPU (CUDA suites) or a node (CPU suites)")  # fmt: skip
    run.add_argument("--ray-address", metavar="ADDR", help="join a Ray cluster ('auto' or host:port); default: a "
                     "local Ray instance")  # fmt: skip
    run.add_argument("--shard-size", type=_number(int, 1, 10_000), metavar="K",
                     help="variants per shard besides the reference (default: all of a twin locally, 4 on Ray)")  # fmt: skip
    run.set_defaults(func=_cmd_run)

    report = commands.add_parser("report", help="(re)write a run's summary.md and self-contained report.html")
    report.add_argument("run", type=Path, metavar="RUN")
    _schedule_options(report)
    report.add_argument("--metric", metavar="NAME", help="draw the frontier against this quality metric "
                        "(writes summary-NAME.md and report-NAME.html beside the default ones)")  # fmt: skip
    report.set_defaults(func=_cmd_report)

    sel = commands.add_parser("select", help="choose the variant to deploy under constraints (and export it)")
    sel.add_argument("--run", type=Path, help="a run folder")
    sel.add_argument("--records", type=Path, help="a records.jsonl file (instead of --run)")
    sel.add_argument("--twin", required=True)
    sel.add_argument("--max-quality-loss-pct", type=_number(low=-100, high=1e9), required=True)
    sel.add_argument("--max-latency-ms-p99", type=_number(above=0))
    sel.add_argument("--max-memory-mb", type=_number(above=0))
    sel.add_argument("--runtime")
    sel.add_argument("--batch-size", type=_number(int, 1, 1 << 20), help="default: the smallest measured")
    sel.add_argument("--grid", type=_nonempty, help="needed when the records hold several grids")
    sel.add_argument("--objective", default="energy", choices=["energy", "latency", "annual"],
                     help="rank by J/inference (default), p50 latency, or kWh per year at --rate")  # fmt: skip
    _schedule_options(sel)
    sel.add_argument("--where", action="append", metavar="COND",
                     help='a bound on any quality metric, e.g. "vm_violation_recall>=0.95" (repeatable)')  # fmt: skip
    sel.add_argument("--export", type=Path, metavar="DIR", help="write the artifact and model_card.json here")
    sel.add_argument("--force", action="store_true", help="export into a folder that is not empty")
    sel.set_defaults(func=_cmd_select)

    cmp = commands.add_parser("compare", help="regressions of NEW against BASE (exit 0 clean, 1 regression)")
    cmp.add_argument("base", type=Path, metavar="BASE", help="run folder, records.jsonl or baseline JSON")
    cmp.add_argument("new", type=Path, metavar="NEW")
    cmp.add_argument("--threshold-pct", type=PCT, default=5.0, help="energy/latency change that counts (5)")
    cmp.add_argument("--quality-threshold-pct", type=PCT, default=0.5, help="quality change that counts (0.5)")
    cmp.add_argument("--out", type=Path, help="also write the markdown verdict here")
    cmp.set_defaults(func=_cmd_compare)

    base = commands.add_parser("baseline", help="promote a run to results/baselines/<device>.json")
    base.add_argument("--run", type=Path, required=True)
    base.add_argument("--force", action="store_true", help="replace a baseline that covers cells this run lacks")
    base.set_defaults(func=_cmd_baseline)

    hist = commands.add_parser("history", help="a twin's records over runs, from the SQLite history")
    hist.add_argument("--twin")
    hist.add_argument("--variant", help="a variant id or the start of its name")
    hist.add_argument("--runs", type=Path, metavar="DIR", help="the runs folder (run --out); default results/runs")
    hist.add_argument("--rebuild", action="store_true", help="rebuild DIR/history.sqlite from the runs' records")
    hist.set_defaults(func=_cmd_history)

    night = commands.add_parser("nightly", help="run the nightly suite and compare it with this device's baseline")
    night.add_argument("--suite", default="nightly")
    night.add_argument("--device", choices=["cpu", "cuda"])
    night.add_argument("--out", type=Path)
    night.add_argument("--baseline", type=Path, help="default: results/baselines/<this device>.json")
    night.add_argument("--threshold-pct", type=PCT, default=5.0)
    night.add_argument("--quality-threshold-pct", type=PCT, default=0.5)
    night.set_defaults(func=_cmd_nightly)

    env = commands.add_parser("env", help="the device, the energy meters available here and why others are not")
    env.set_defaults(func=_cmd_env)
    return parser


def _quiet_imports() -> None:
    """torchao logs a warning for each CUDA kernel library it cannot load on this machine, and torch's
    pytree one for each enum torchao registers: noise on every `train` and `run`, not problems."""
    for name in ("torchao", "torch.utils._pytree"):
        logging.getLogger(name).setLevel(logging.ERROR)


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as e:  # argparse has printed its usage error (or --help): its code, as a return value
        return e.code if isinstance(e.code, int) else 2
    _quiet_imports()
    try:
        return args.func(args)
    except TwinbenchError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    except OSError as e:  # a path the user gave that cannot be read or written (a file for a folder, no space)
        print(f"error: {e.strerror or e}" + (f": {e.filename}" if e.filename else ""), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
