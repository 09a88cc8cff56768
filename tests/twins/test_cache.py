"""The grid cache: round trip, manifest, corruption and staleness detection, no simbench on load."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from models.errors import CacheError
from models.grid import GridDataConfig, ensure_grid, load_grid
from models.grid.cache import ARRAYS, FILES, grid_dir
from tests.conftest import SMOKE_GRID

REPO = Path(__file__).resolve().parents[2]


def test_round_trip_matches_files_and_manifest(smoke_grid):
    m = smoke_grid.manifest
    assert m["grid"] == SMOKE_GRID
    assert {"simbench", "pandapower", "numpy"} <= set(m["packages"])
    assert m["created_utc"] and m["build_config"] == GridDataConfig().__dict__
    for name in FILES:
        with np.load(smoke_grid.path / name) as npz:
            loaded = getattr(smoke_grid, name.removesuffix(".npz"))
            assert set(npz.files) == set(loaded) == set(m["files"][name]["arrays"])
            for key in npz.files:
                np.testing.assert_array_equal(npz[key], loaded[key])
                doc = m["files"][name]["arrays"][key]
                assert doc["shape"] == list(npz[key].shape) and doc["meaning"]
    again = load_grid(SMOKE_GRID)
    assert again.content_hash == smoke_grid.content_hash


def test_required_arrays_and_shapes(smoke_grid):
    g, s = smoke_grid.graph, smoke_grid.snapshots
    n, n_snap = smoke_grid.n_nodes, len(s["time_step"])
    assert g["edge_index"].shape[0] == 2 and g["edge_index"].max() < n
    assert g["edge_attr"].shape == (g["edge_index"].shape[1], len(g["edge_attr_names"]))
    assert s["vm_pu"].shape == s["va_degree"].shape == (n_snap, n)
    assert s["load_p_mw"].shape[0] == s["load_q_mvar"].shape[0] == s["sgen_p_mw"].shape[0] == n_snap
    assert set(np.unique(s["split"])) == {0, 1, 2}
    assert len(smoke_grid.trajectories["time_step"]) == 35136  # a leap year of 15-minute steps
    # Node injections are the element powers summed per node, in p.u. (generation minus load).
    base = float(g["base_mva"])
    expected = np.zeros((n_snap, n))
    for table, sign in (("load", -1), ("sgen", 1), ("storage", -1)):
        np.add.at(expected.T, g[f"{table}_node"], sign * s[f"{table}_p_mw"].T / base)
    np.testing.assert_allclose(s["p_inj_pu"], expected, atol=1e-6)


def _edit_manifest(root: Path, change) -> None:
    path = grid_dir(SMOKE_GRID, root) / "manifest.json"
    manifest = json.loads(path.read_text())
    change(manifest)
    path.write_text(json.dumps(manifest))


@pytest.mark.parametrize(
    "damage, message",
    [
        (
            lambda d: (d / "snapshots.npz").write_bytes((d / "snapshots.npz").read_bytes()[:-100] + b"x" * 100),
            "does not match its hash",
        ),
        (lambda d: (d / "graph.npz").unlink(), "graph.npz missing"),
        (lambda d: (d / "manifest.json").write_text("{not json"), "corrupt manifest"),
        (lambda d: (d / "manifest.json").unlink(), "missing manifest.json"),
    ],
)
def test_corrupt_cache_is_refused(cache_copy, damage, message):
    damage(grid_dir(SMOKE_GRID, cache_copy))
    with pytest.raises(CacheError, match=message):
        load_grid(SMOKE_GRID, cache_copy)


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda m: m["packages"].update(pandapower="2.0.0"), "built with pandapower 2.0.0"),
        (lambda m: m.update(format_version=0), "format 0"),
        (lambda m: m["build_config"].update(snapshots=10), "stale cache"),
        (lambda m: m.update(grid="1-MV-rural--2-sw"), "holds grid '1-MV-rural--2-sw'"),
        (lambda m: m["time"].update(start="next Friday"), "time.start 'next Friday' is not an ISO 8601 time"),
        (lambda m: m.update(time=[2016]), "time.start \\[2016\\] is not an ISO 8601 time"),
    ],
)
def test_stale_cache_is_refused(cache_copy, change, message):
    _edit_manifest(cache_copy, change)
    with pytest.raises(CacheError, match=message):
        load_grid(SMOKE_GRID, cache_copy)


def test_corrupt_cache_is_rebuilt_not_used(cache_copy, smoke_grid):
    path = grid_dir(SMOKE_GRID, cache_copy) / "trajectories.npz"
    path.write_bytes(b"garbage")
    messages = []
    rebuilt = ensure_grid(SMOKE_GRID, cache_copy, log=messages.append)
    assert any("does not match its hash" in m for m in messages)
    np.testing.assert_array_equal(rebuilt.trajectories["vm_pu"], smoke_grid.trajectories["vm_pu"])
    # The build is deterministic: the same data, only the creation time differs.
    assert rebuilt.content_hash == smoke_grid.content_hash
    assert not [p for p in cache_copy.joinpath("grids").iterdir() if p.name.startswith(".")]


def _python(code: str, cache_root: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "TWINBENCH_CACHE": str(cache_root)}
    return subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)


def test_loading_does_not_import_simbench_or_pandapower(cache_copy):
    code = (
        "import sys; from models.grid import load_grid; "
        f"d = load_grid({SMOKE_GRID!r}); "
        "assert d.n_nodes == 15; "
        "bad = [m for m in ('simbench', 'pandapower') if m in sys.modules]; "
        "assert not bad, bad"
    )
    result = _python(code, cache_copy)
    assert result.returncode == 0, result.stderr


def test_machine_without_simbench_gets_a_clear_error(tmp_path):
    """A GPU machine (no simbench) with no cache is told to carry one, not shown a traceback."""
    code = (
        "import sys; sys.modules['simbench'] = None; sys.modules['pandapower'] = None\n"
        "from bench.cli import main\n"
        "sys.exit(main(['data', '--suite', 'smoke']))"
    )
    result = _python(code, tmp_path)
    assert result.returncode == 2  # bad input: a machine that cannot build the data
    assert "carry it" in result.stderr and "Traceback" not in result.stderr


def test_readme_documents_every_cached_array():
    readme = (REPO / "docs" / "data.md").read_text()  # the data page of the docs (README.md links to it)
    for file, arrays in ARRAYS.items():
        assert f"`{file}`" in readme
        for key in arrays:
            assert f"`{key}`" in readme, key
