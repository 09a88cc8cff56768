"""The Ray executor: each shard a Ray task that owns what a measurement must own alone.

On CUDA suites a task asks for one GPU (Ray sets CUDA_VISIBLE_DEVICES, and the energy meter reads
that GPU's counter); on CPU suites it asks for the node's `twinbench_node` resource, of which each
node offers one, so two CPU measurements never share a machine. Shards are submitted longest
first. A worker that dies is retried by Ray; a shard whose task keeps failing becomes error
records and the run goes on. Records reach the driver only when a shard has finished, so a cell
is recorded exactly once however many attempts it took.

Without an address a local Ray instance is started with this machine's cores and one
`twinbench_node`; with `auto` or `host:port` the run joins a cluster whose nodes were started with
`ray start ... --resources='{"twinbench_node": 1}'` (CPU suites) or with GPUs (CUDA suites).
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable

import ray

from bench.run.executor import Progress, ShardJob, ShardResult, error_records, measure_shard_job
from models.errors import ConfigError

NODE_RESOURCE = "twinbench_node"


def _run(job: ShardJob, shard_fn: Callable[[ShardJob], ShardResult]) -> ShardResult:
    return shard_fn(job)


def _check_reachable(address: str) -> None:
    """Fail in seconds on a head that is not there: ray.init retries an unreachable address for
    minutes (over 280 s seen here) before it gives up."""
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError(f"`ray_address` {address!r}: give 'auto' or HOST:PORT of the Ray head (e.g. 10.0.0.5:6379)")
    try:
        socket.create_connection((host, int(port)), timeout=5).close()
    except OSError as e:
        raise ConfigError(f"no Ray head answers at {address} ({e}); start one with `ray start --head`") from e


class RayExecutor:
    name = "ray"

    def __init__(
        self,
        device: str,
        address: str | None = None,
        log: Callable[[str], None] = print,
        shard_fn: Callable[[ShardJob], ShardResult] | None = None,
        max_retries: int = 2,
    ) -> None:
        self.log, self.shard_fn, self.max_retries = log, shard_fn or measure_shard_job, max_retries
        quiet = dict(include_dashboard=False, log_to_driver=False, logging_level="ERROR")
        if address is not None and address != "auto":
            _check_reachable(address)
        try:
            if address is None:
                ray.init(num_cpus=os.cpu_count(), resources={NODE_RESOURCE: 1}, **quiet)
            else:
                ray.init(address=address, **quiet)
        except (ConnectionError, RuntimeError, ValueError) as e:
            raise ConfigError(f"cannot start or join Ray (address {address or 'local'}): {e}") from e
        self.started = True
        if device == "cuda":
            self.options, unit = {"num_gpus": 1}, "GPU"
        else:
            self.options, unit = {"num_cpus": 1, "resources": {NODE_RESOURCE: 1}}, NODE_RESOURCE
        self.workers = int(ray.cluster_resources().get(unit, 0))
        if self.workers < 1:
            self.close()
            raise ConfigError(
                f"the Ray cluster at {address or 'local'} offers no {unit} resource: start its nodes with "
                + ("GPUs" if device == "cuda" else f"ray start --resources='{{\"{NODE_RESOURCE}\": 1}}'")
            )
        log(f"ray: {self.workers} worker{'s' if self.workers > 1 else ''} ({unit}) at {address or 'a local instance'}")

    def run(self, jobs: list[ShardJob], on_result: Callable[[ShardResult], None], progress: Progress) -> None:
        task = ray.remote(max_retries=self.max_retries, **self.options)(_run)
        pending = {task.remote(job, self.shard_fn): job for job in jobs}  # longest first, as given
        finished_cells = finished_shards = 0
        while pending:
            (ready,), _ = ray.wait(list(pending), num_returns=1)
            job = pending.pop(ready)
            try:
                result = ray.get(ready)
            except ray.exceptions.RayError as e:  # retries exhausted, or the shard itself raised
                self.log(f"shard {job.shard.id} failed: {str(e).splitlines()[0]}")
                result = ShardResult(job.shard, error_records(job, f"shard failed on Ray: {e}"), {})
            on_result(result)
            finished_cells += len(job.shard.cells)
            finished_shards += 1
            running = min(self.workers, len(pending))
            progress(
                finished_cells, f"shards: {finished_shards} done, {running} running, {len(pending) - running} waiting"
            )

    def close(self) -> None:
        if self.started:
            ray.shutdown()
            self.started = False
