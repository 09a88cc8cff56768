"""Nightly latency benchmarks (pytest-benchmark) of the reference and the nightly suite's variants,
per twin and runtime, at the suite's largest batch size. The energy of the same timed rounds (the
suite's meter, with its source) goes into extra_info; GPU and driver into machine_info (conftest).

`make nightly` runs this with --benchmark-autosave and --benchmark-compare-fail=median:10%, so a
slower median than the last saved nightly fails it. Without CUDA the variants run on the smoke
suite's grid and model size (a CPU check of the same code path, not comparable numbers).
"""

import time

import pytest
import torch

from bench.measure.cell import open_session
from bench.measure.meters import choose_meter
from bench.measure.runtimes import target_of
from bench.plan import Cell
from bench.run.planning import make_plan
from bench.suites import load_suite
from compress.base import Variant
from models.checkpoint import train_or_load
from models.grid.cache import load_grid
from models.registry import get_twin

NIGHTLY = load_suite("nightly")
SIZED = NIGHTLY if torch.cuda.is_available() else load_suite("smoke")
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
CASES = [
    (twin, variant, runtime)
    for twin in NIGHTLY.twins
    for variant in (Variant(), *NIGHTLY.variants)
    for runtime in ("torch-eager", "onnxruntime")
]
TARGET_S = 1.0  # timed rounds per benchmark


@pytest.fixture(scope="module")
def references():
    cache = {}

    def get(name):
        if name not in cache:
            cls = get_twin(name)
            twin = cls(load_grid(SIZED.grids[0]), cls.config_for(SIZED.model_size))
            cache[name] = (twin, train_or_load(twin, log=lambda m: None)[0])
        return cache[name]

    return get


@pytest.mark.parametrize("twin_name, variant, runtime", CASES, ids=[f"{t}-{v.id}-{r}" for t, v, r in CASES])
def test_nightly_latency(benchmark, references, tmp_path, twin_name, variant, runtime):
    from models.errors import Unsupported

    twin, model = references(twin_name)
    batch = max(SIZED.measure.batch_sizes)
    plan = make_plan(SIZED, DEVICE, twin_name, runtime, None)
    cell = Cell(twin.grid.grid, twin_name, variant, runtime, batch, DEVICE)
    from compress.base import PassContext

    try:
        built = variant.build(model, PassContext(twin=twin, device=DEVICE, workdir=tmp_path, target=target_of(cell)))
        session, quality, _ = open_session(cell, twin, built, plan, tmp_path, log=lambda m: None)
    except Unsupported as e:  # shown in the -ra summary with its reason, never silently
        pytest.skip(f"unsupported here: {e.reason}")
    step = session.bind(*twin.example_inputs(batch))
    for _ in range(5):
        step()
    session.sync()
    t0 = time.perf_counter()
    step()
    session.sync()
    rounds = max(5, int(TARGET_S / max(time.perf_counter() - t0, 1e-6)))
    meter = choose_meter(DEVICE, sync=session.sync).meter
    meter.begin("nightly")
    benchmark.pedantic(lambda: (step(), session.sync()), rounds=rounds, iterations=1, warmup_rounds=0)
    reading = meter.end("nightly")
    benchmark.extra_info.update(
        {
            "variant": variant.name,
            "runtime": runtime,
            "batch_size": batch,
            "energy_j_per_inference": None if reading.joules is None else reading.joules / (rounds * batch),
            "energy_source": reading.source if reading.joules is not None else "none",
            "quality_metric": quality.primary,
            "quality_value": quality.value,
        }
    )
