import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from unittest import mock

import pytest

from models.grid import GridData, ensure_grid
from models.grid.cache import grid_dir

SMOKE_GRID = "1-LV-rural1--2-sw"


def pytest_collection_modifyitems(config, items):
    """GPU-only tests skip cleanly where CUDA is absent."""
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def smoke_grid() -> GridData:
    """The smoke grid's cache in the default cache directory: built once, reused by later runs."""
    return ensure_grid(SMOKE_GRID)


@pytest.fixture
def cache_copy(smoke_grid: GridData, tmp_path: Path) -> Path:
    """A private copy of the smoke cache that a test may damage; returns its cache root."""
    shutil.copytree(smoke_grid.path, grid_dir(SMOKE_GRID, tmp_path))
    return tmp_path


@pytest.fixture(scope="session")
def simbench_net():
    """The smoke grid's SimBench net as pandapower loads it (the reference for label checks)."""
    from models.grid.build import load_simbench_net

    return load_simbench_net(SMOKE_GRID)


@contextmanager
def stubbed_nvml(names: list[str]) -> Iterator[dict[str, mock.MagicMock]]:
    """pynvml's `names` patched with autospec (as Zeus's own tests do), and Zeus's per-process caches
    of NVML's availability and of its GPU list cleared before and after, so each test builds them
    from its own stub. Yields the mocks by name, for the test to script."""
    import pynvml
    import zeus.device.gpu as zeus_gpu
    from zeus.device.gpu.nvidia import nvml_is_available

    patches = [mock.patch.object(pynvml, n, autospec=True) for n in names]
    mocks = {n: p.start() for n, p in zip(names, patches, strict=True)}
    nvml_is_available.cache_clear()
    zeus_gpu._gpus = None
    try:
        yield mocks
    finally:
        for p in patches:
            p.stop()
        nvml_is_available.cache_clear()
        zeus_gpu._gpus = None
