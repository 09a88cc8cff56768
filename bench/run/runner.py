"""A run, orchestrated: plan it (or load the plan of a run being resumed), cut what is left into
shards, hand them to an executor, and write each shard's records to the run folder and the history
as they arrive. The measurement itself is bench/measure/protocol.py; the plan bench/plan.py; who measures
where, bench/run/executor.py."""

from __future__ import annotations

import dataclasses
import math
import re
import socket
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch

from bench import store
from bench.decide import report, summary
from bench.history_db import history_path, try_append_history
from bench.measure import environment
from bench.measure.meters import choose_meter
from bench.plan import Cell, RunPlan, Shard
from bench.run.estimate import RAY_SHARD_SIZE, describe, estimate_wall_seconds, training_needs
from bench.run.executor import EXECUTORS, Executor, LocalExecutor, ShardJob, ShardResult
from bench.run.planning import choose_scenarios, make_plan, make_shards, runs_here
from bench.store import RunDir, new_run_id
from bench.suites import load_suite
from models.errors import ConfigError, InputError, Verdict
from models.grid.build import build_if_missing


@dataclass(frozen=True)
class RunRequest:
    """What `twinbench run` asks for: a suite narrowed by the rest, or a run folder to resume."""

    suite: str | None = None
    device: str | None = None
    twin: str | None = None
    grid: str | None = None  # instead of the suite's grids (a name; a grid with no cache yet is built)
    runtime: str | None = None
    threads: int | None = None
    variants: list[str] | None = None  # selectors: variant ids or pass names
    out: Path | None = None  # the folder for run folders (default results/runs)
    resume: Path | None = None  # a run folder to continue: its plan.json, never the suite file
    max_minutes: float | None = None
    executor: str = "local"
    ray_address: str | None = None
    shard_size: int | None = None
    scenarios: list[str] | None = None  # instead of the suite's: offline, single-stream, server


def run(
    req: RunRequest,
    log: Callable[[str], None] = print,
    progress: Callable[[int, int, str], None] = lambda done, total, what: None,
) -> RunDir:
    """Run (or resume) a suite; returns the run folder. Raises TwinbenchError on bad input."""
    if req.max_minutes is not None and not (math.isfinite(req.max_minutes) and req.max_minutes > 0):
        raise ConfigError(f"`max_minutes` must be a positive number, got {req.max_minutes}")
    if req.resume is None:
        _check_out(req.out)  # before the plan builds any grid: a refusal costs nothing
        return _execute(_new_plan(req, log), None, req, log, progress)
    if req.grid is not None or req.scenarios is not None:
        raise ConfigError("`resume` continues its plan's grids and scenarios: drop `grid` and `scenario`")
    run_dir = RunDir.open(req.resume)
    with run_dir.lock():
        plan, run_id = _saved_plan(run_dir)
        if plan.device == "cuda" and not torch.cuda.is_available():
            raise ConfigError(f"{req.resume} is a CUDA run, and CUDA is not available here: resume it on a GPU machine")
        if repaired := run_dir.repair():
            log(f"warning: {repaired}")
        return _execute(plan, (run_dir, run_id), req, log, progress)


def _new_plan(req: RunRequest, log: Callable[[str], None] | None = None) -> RunPlan:
    """The plan of a new run. With `log` (a run, not a dry run), a grid with no cache yet is built
    first, as `twinbench data` would: workers load grids by name from the cache."""
    if req.suite is None:
        raise ConfigError("give `suite` (or `resume` RUN)")
    suite = load_suite(req.suite)
    estimate_only = log is None
    plan = make_plan(suite, req.device, req.twin, req.runtime, req.threads, req.variants, estimate_only=estimate_only)
    if req.grid is not None:  # the name is all a plan needs
        plan = dataclasses.replace(plan, grids=(req.grid,))
    if req.scenarios is not None:
        plan = dataclasses.replace(plan, scenarios=choose_scenarios(suite, req.scenarios))
    for grid in () if estimate_only else plan.grids:
        build_if_missing(suite.grid_source(grid), log=log)
    return plan


def _check_out(out: Path | None) -> Path:
    root = out or store.RUNS  # read at call time: tests point it elsewhere
    if root.exists() and not root.is_dir():
        raise InputError(f"`out` {root} is a file, not a folder for runs")
    return root


def _saved_plan(run_dir: RunDir) -> tuple[RunPlan, str]:
    saved = run_dir.read_json("plan.json")
    plan = RunPlan.from_dict(saved)  # the saved plan, never the suite file
    if not isinstance(saved.get("run_id"), str):
        raise InputError(f"malformed plan.json in {run_dir.path}: no run_id")
    return plan, saved["run_id"]


def _execute(
    plan: RunPlan,
    resumed: tuple[RunDir, str] | None,
    req: RunRequest,
    log: Callable[[str], None],
    progress: Callable[[int, int, str], None],
) -> RunDir:
    """Measure what is left of `plan`. A new run's folder is created only once the plan is accepted
    (refusals leave nothing behind); a resumed one is already locked by the caller."""
    done = {r.cell_key for r in resumed[0].records()} if resumed else set()
    todo = [c for c in plan.cells() if c.key not in done]
    with _executor(req.executor, plan.device, req.ray_address, log) as ex, ExitStack() as held:
        shards = _shards(plan, todo, ex, req.shard_size, req.max_minutes, log)  # refusals come before any folder
        run_dir, run_id = resumed or _new_folder(plan, req.out, log, held)
        with _names_folder_when_interrupted(run_dir):
            _measure(run_dir, plan, run_id, ex, shards, log, progress)
    return run_dir


def _new_folder(plan: RunPlan, out: Path | None, log: Callable[[str], None], held: ExitStack) -> tuple[RunDir, str]:
    """A new run folder holding plan.json, locked for the rest of the run (`held`)."""
    root = _check_out(out)
    run_id = new_run_id(plan.suite)
    run_dir = RunDir.create(root, run_id)
    log(f"run folder: {run_dir.path}")
    held.enter_context(run_dir.lock())
    run_dir.write_json("plan.json", {"run_id": run_id, **plan.to_dict(), "cells": [c.key for c in plan.cells()]})
    return run_dir, run_id


class RunInterrupted(KeyboardInterrupt):
    """Ctrl-C during a run, naming the run folder that `--resume` continues."""

    def __init__(self, path: Path) -> None:
        super().__init__(str(path))
        self.path = path


@contextmanager
def _names_folder_when_interrupted(run_dir: RunDir) -> Iterator[None]:
    try:
        yield
    except RunInterrupted:
        raise
    except KeyboardInterrupt:
        raise RunInterrupted(run_dir.path) from None


@contextmanager
def _executor(name: str, device: str, address: str | None, log: Callable[[str], None]) -> Iterator[Executor]:
    ex = make_executor(name, device, address, log)
    try:
        yield ex
    finally:
        ex.close()


def _shards(
    plan: RunPlan,
    todo: list[Cell],
    ex: Executor,
    shard_size: int | None,
    max_minutes: float | None,
    log: Callable[[str], None],
) -> list[Shard]:
    """The shards of what is left to measure; refuses a plan whose measuring and training are
    estimated to outlast --max-minutes."""
    shards = make_shards(plan, todo, shard_size or _default_shard_size(ex))
    measuring = estimate_wall_seconds(plan, shards, ex.workers)
    needs = training_needs(plan)
    training = needs.wall_seconds(ex.workers)
    wall = measuring + training
    cells = plan.cells()
    unknown = f", {len(needs.unknown)} of unknown length" if needs.unknown else ""
    log(
        f"{len(cells)} cells ({len(cells) - len(todo)} done, {len(todo)} to measure) in {len(shards)} shards on "
        f"{ex.workers} {ex.name} worker{'s' if ex.workers > 1 else ''}; estimated {wall / 60:.1f} min: "
        f"{measuring / 60:.1f} measuring, {training / 60:.1f} training ({len(needs.todo)} to train{unknown}; "
        "rough: `run --dry-run` says what and why)"
    )
    if max_minutes is not None and wall > 60 * max_minutes:
        raise Verdict(
            f"the plan needs about {wall / 60:.1f} min ({measuring / 60:.1f} measuring, {training / 60:.1f} "
            f"training), more than --max-minutes {max_minutes:g}; narrow it with --twin/--runtime/--variant, "
            "train first (`twinbench train`), add workers, or run it in parts with --resume"
        )
    return shards


def dry_run(req: RunRequest) -> str:
    """The plan of a run (or of what is left of a run being resumed) as `run --dry-run` prints it:
    cells, shards, training to do and the estimated time. Measures nothing, writes nothing, starts
    no executor; a CUDA suite can be planned on a machine without CUDA (labelled as such)."""
    if req.resume is not None:
        run_dir = RunDir.open(req.resume)
        plan = RunPlan.from_dict(run_dir.read_json("plan.json"))
        done = {r.cell_key for r in run_dir.records()}
        todo = [c for c in plan.cells() if c.key not in done]
    else:
        plan = _new_plan(req)
        todo = plan.cells()
    text = describe(plan, todo, training_needs(plan), req.shard_size, req.max_minutes)
    return text if runs_here(plan) else f"{text}\n(an estimate for a CUDA machine: `run` itself needs CUDA)"


def _measure(
    run_dir: RunDir,
    plan: RunPlan,
    run_id: str,
    ex: Executor,
    shards: list[Shard],
    log: Callable[[str], None],
    progress: Callable[[int, int, str], None],
) -> None:
    """Measure the shards (the caller holds the run folder's lock), recording each as it arrives."""
    cells = plan.cells()
    already = len(cells) - sum(len(s.cells) for s in shards)
    _write_environment(run_dir, plan, resumed=already > 0 or (run_dir.path / "environment.json").exists(), log=log)
    history = history_path(run_dir.path.parent)

    def on_result(result: ShardResult) -> None:
        run_dir.append(result.records)
        try_append_history(result.records, history, log)
        host = result.env.get("hostname")
        if host and host != socket.gethostname():  # a worker machine: its environment beside the driver's
            run_dir.write_json(f"environment.{re.sub(r'[^A-Za-z0-9.-]', '_', host)}.json", result.env)

    jobs = [ShardJob(plan, shard, run_id, str(run_dir.path.resolve())) for shard in shards]
    ex.run(jobs, on_result, lambda finished, what: progress(already + finished, len(cells), what))
    if already:  # cells an earlier, crashed attempt wrote to records.jsonl but not to the history
        try_append_history(run_dir.records(), history, log)
    summary.write(run_dir)
    report.write(run_dir)


def make_executor(name: str, device: str, address: str | None, log: Callable[[str], None]) -> Executor:
    if name not in EXECUTORS:
        raise ConfigError(f"unknown executor {name!r}; valid executors: {', '.join(EXECUTORS)}")
    if name == "local":
        if address is not None:
            raise ConfigError("`ray_address` needs `executor` ray")
        return LocalExecutor(log)
    try:
        from bench.run.ray_executor import RayExecutor  # Ray is imported only when asked for
    except ImportError as e:
        raise ConfigError(
            f"`executor` ray needs Ray, which is not importable here ({e}): "
            "pip install -e '.[ray]', or run with the local executor"
        ) from e
    return RayExecutor(device=device, address=address, log=log)


def _default_shard_size(executor) -> int | None:
    """Locally one shard per twin and grid (the reference measured once); on several workers, shards
    of a few variants, so the work spreads (each shard re-measures the reference as its control)."""
    return None if executor.workers == 1 else RAY_SHARD_SIZE


def _write_environment(run_dir: RunDir, plan: RunPlan, resumed: bool, log: Callable[[str], None]) -> None:
    """The driver's environment; a resumed run keeps the one it started in and adds the one it
    continued in. Shards measured on other machines add theirs (see on_result)."""
    choice = choose_meter(plan.device)
    env = environment.capture(plan.device, plan.threads, choice.why)
    run_dir.write_json("environment.json" if not resumed else f"environment.resumed-{new_run_id(plan.suite)}.json", env)
    log(f"energy meter: {choice.why}")
