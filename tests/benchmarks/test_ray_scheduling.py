"""Ray scheduling of the `full` matrix: are 8 workers kept busy?

The `full` suite's shards (Ray's default size 4; sizes 2 and 8 printed alongside) run through the
real RayExecutor on a local Ray cluster offering 8 `twinbench_node`s, each shard sleeping for its
estimated duration scaled down 400x. The measured makespan (first submission to last result)
is compared with the ideal, total work / 8. The acceptance criterion is a scheduling property, not a
timing: at size 4, makespan <= 1.15 x ideal. Sleeping tasks cost no CPU, so a 2-core machine can
stand in for 8 GPUs.

Run with `.venv/bin/python -m pytest -o addopts="" -p no:cacheprovider -s tests/benchmarks/test_ray_scheduling.py`.
"""

import dataclasses
import time

import pytest

ray = pytest.importorskip("ray")
from ray.cluster_utils import Cluster  # noqa: E402

from bench.run.estimate import estimate_shard_seconds, estimate_wall_seconds  # noqa: E402
from bench.run.executor import ShardJob, ShardResult  # noqa: E402
from bench.run.planning import make_plan, make_shards  # noqa: E402
from bench.run.ray_executor import NODE_RESOURCE, RayExecutor  # noqa: E402
from bench.suites import load_suite  # noqa: E402

WORKERS = 8
SCALE = 0.0025  # simulated seconds per estimated second: size 4 runs ~15 s, its shortest shard sleeps 1.9 s
BOUND = 1.15


def sleeper(scale: float):
    def shard_fn(job: ShardJob) -> ShardResult:  # a closure: pickled by value, workers need not import this file
        time.sleep(job.estimate_s * scale)
        return ShardResult(job.shard, [], {})

    return shard_fn


@pytest.fixture(scope="module")
def plan():
    suite = load_suite("full")  # device cuda: planned as cpu, only its cells and estimates matter
    return make_plan(dataclasses.replace(suite, device="cpu"), device="cpu")


@pytest.fixture(scope="module")
def executor(plan):
    cluster = Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": WORKERS, "resources": {NODE_RESOURCE: WORKERS}, "include_dashboard": False},
    )
    ex = None
    try:
        ex = RayExecutor("cpu", address=cluster.address, log=lambda s: None, shard_fn=sleeper(SCALE))
        assert ex.workers == WORKERS
        # Warm-up: start all 8 workers and let each import bench (and torch) before anything is timed.
        warm = make_shards(plan, plan.cells(), 4)[:WORKERS]
        ex.run([ShardJob(plan, s, "warm-up", "/nonexistent") for s in warm], lambda r: None, lambda n, s: None)
        yield ex
    finally:
        if ex is not None:
            ex.close()
        cluster.shutdown()


@pytest.mark.parametrize("shard_size", [4, 2, 8])
def test_makespan_near_ideal(plan, executor, shard_size):
    shards = make_shards(plan, plan.cells(), shard_size)
    total = sum(estimate_shard_seconds(plan, s) for s in shards) * SCALE
    ideal = total / WORKERS
    greedy = estimate_wall_seconds(plan, shards, WORKERS) * SCALE
    jobs = [ShardJob(plan, s, "sim", "/nonexistent") for s in shards]  # longest first, as make_shards sorts
    results = []
    start = time.perf_counter()
    executor.run(jobs, results.append, lambda n, s: None)
    makespan = time.perf_counter() - start
    assert len(results) == len(shards)

    one_gpu_h = sum(estimate_shard_seconds(plan, s) for s in make_shards(plan, plan.cells(), None)) / 3600
    print(
        f"\nshard size {shard_size}: {len(shards)} shards on {WORKERS} workers (scale {SCALE})\n"
        f"  total work {total:7.2f} s   ideal total/N {ideal:6.2f} s   greedy estimate {greedy:6.2f} s\n"
        f"  measured makespan {makespan:6.2f} s   makespan / ideal {makespan / ideal:.3f}   "
        f"speed-up total/makespan {total / makespan:.2f}x\n"
        f"  unscaled: {one_gpu_h:.1f} h on 1 GPU (local, one shard per twin and grid), "
        f"{makespan / SCALE / 3600:.1f} h on {WORKERS} (estimate {greedy / SCALE / 3600:.1f} h)"
    )
    if shard_size == 4:  # Ray's default: the acceptance criterion
        assert makespan <= BOUND * ideal, f"makespan {makespan:.2f} s > {BOUND} x ideal {ideal:.2f} s"
