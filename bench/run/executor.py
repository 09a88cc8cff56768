"""Executors: who measures a run's shards, and where.

A shard job is self-contained (the plan, the shard, the run id and folder), so it can be measured
in this process (`local`) or on a Ray worker that owns a GPU or a node (`ray`, bench/run/ray_executor.py,
imported only when asked for). Results stream back to the driver, which alone writes the run folder.
"""

from __future__ import annotations

import functools
import socket
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import torch

from bench.measure import environment
from bench.measure.creation import creation_windows
from bench.measure.meters import choose_meter
from bench.measure.nvml import visible_gpu_index
from bench.measure.protocol import ShardContext, measure_shard
from bench.plan import RunPlan, Shard
from bench.records import Record
from bench.run.estimate import estimate_shard_seconds
from models import creation
from models.checkpoint import train_or_load
from models.grid.cache import load_grid
from models.registry import get_twin

EXECUTORS = ("local", "ray")


@dataclass(frozen=True)
class ShardJob:
    plan: RunPlan
    shard: Shard
    run_id: str
    run_path: str  # the run folder, as the workers see it (a shared path on a cluster)

    @property
    def estimate_s(self) -> float:
        return estimate_shard_seconds(self.plan, self.shard)


@dataclass(frozen=True)
class ShardResult:
    shard: Shard
    records: list[Record]
    env: dict  # the environment of the machine that measured it


Progress = Callable[[int, str], None]  # (cells finished in this executor, what is happening)


def measure_shard_job(
    job: ShardJob, on_cell: Callable[[str], None] = lambda s: None, log=lambda s: None
) -> ShardResult:
    """What a worker does with a job: the shard's twin from the grid cache and checkpoint cache
    (trained there once, under the checkpoint's lock, if no one has yet), the energy meter of the
    device this process was given, then the protocol."""
    plan, shard = job.plan, job.shard
    torch.set_num_threads(plan.threads)
    cuda = plan.device == "cuda"
    choice = choose_meter(plan.device, gpu_index=0, sync=torch.cuda.synchronize if cuda else (lambda: None))
    env = environment.capture(plan.device, plan.threads, choice.why)
    cls = get_twin(shard.twin)
    twin = cls(load_grid(shard.grid), cls.config_for(plan.model_size))
    windows = creation_windows(plan.device, choice.meter)  # training and building metered as cells are
    with creation.metered_by(windows), creation.ledger() as reference_costs:
        model, _, _ = train_or_load(twin, log=log, device=plan.device)
    ctx = ShardContext(
        plan=plan,
        run_id=job.run_id,
        workdir=Path(job.run_path) / "artifacts",
        meter=choice.meter,
        env=env,
        host=socket.gethostname(),
        device_index=visible_gpu_index() if cuda else None,
        reference_costs=tuple(reference_costs),
        on_cell=on_cell,
        log=log,
    )
    ctx.workdir.mkdir(parents=True, exist_ok=True)
    with creation.metered_by(windows):
        return ShardResult(shard, measure_shard(twin, model, shard, ctx), env)


class Executor(Protocol):
    name: str
    workers: int  # devices measuring at once: what the wall-time estimate divides the work by

    def run(self, jobs: list[ShardJob], on_result: Callable[[ShardResult], None], progress: Progress) -> None:
        """Measure every job, calling on_result (in the driver) as each one finishes."""

    def close(self) -> None:
        """Release what the executor started (a local Ray instance)."""


class LocalExecutor:
    """Shards one after another in this process (longest first, as given)."""

    name = "local"
    workers = 1

    def __init__(self, log: Callable[[str], None] = print) -> None:
        self.log = log

    def run(self, jobs: list[ShardJob], on_result: Callable[[ShardResult], None], progress: Progress) -> None:
        finished = 0
        for job in jobs:
            on_cell = functools.partial(progress, finished)  # cells of earlier shards are done
            on_result(measure_shard_job(job, on_cell, self.log))
            finished += len(job.shard.cells)
            progress(finished, f"done {job.shard.id}")

    def close(self) -> None:
        pass


def error_records(job: ShardJob, reason: str) -> list[Record]:
    """A shard that could not be measured (its worker kept dying, its twin failed to load): one
    error record per cell, so the run goes on and says what is missing and why."""
    return [
        Record(
            run_id=job.run_id,
            suite=job.plan.suite,
            twin=c.twin,
            grid=c.grid,
            variant_id=c.variant.id,
            variant_name=c.variant.name,
            lineage=c.variant.lineage,
            runtime=c.runtime,
            device=c.device,
            batch_size=c.batch_size,
            shard_id=job.shard.id,
            status="error",
            status_reason=reason[:2000],
        )
        for c in job.shard.cells
    ]
