"""Bring your own grid: a pandapower JSON file with its profiles inside (SimBench-style) or beside it
in a CSV, built into the same cache as a SimBench grid, verified, kept fresh, trained on and measured.

The user grid is the smoke suite's SimBench net cut to four weeks (2,688 steps: 336 each for
validation and test, room for the twins' 96 + 24-step windows), saved with pandapower. Everything
is written under a private TWINBENCH_CACHE, so the repository's .cache is never touched.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bench import suites
from bench.cli import main
from bench.store import RunDir, run_folders
from models.errors import CacheError
from models.export import torch_predict_fn
from models.grid import ensure_grid, load_grid
from models.grid.cache import grid_dir, sha256_file
from models.grid.source import user_grid
from models.registry import get_twin
from tests.twins.conftest import GNN, STEPS

MIN_MARGIN_PCT = 50.0  # as tests/twins/test_twins.py asks of the GNN on the SimBench grid


@pytest.fixture(scope="module")
def built(env, files) -> dict:
    """Both variants built through `twinbench data`: 'a' (profiles inside), 'b' (CSV) -> GridData."""
    out = {}
    for key, argv in (("a", [files / "feeder.json"]), ("b", [files / "bare.json", files / "feeder-profiles.csv"])):
        assert main(["data", "--grid", str(argv[0]), *(["--profiles", str(argv[1])] if len(argv) > 1 else [])]) == 0
        out[key] = load_grid(user_grid(*argv).name)
    return out


def test_both_variants_build_the_same_verified_cache(built, files):
    a, b = built["a"], built["b"]
    assert a.grid.startswith("feeder-") and b.grid.startswith("bare-") and a.grid != b.grid
    for data in (a, b):
        assert data.manifest["sizes"] == {"nodes": 15, "edges": 28, "snapshots": STEPS}
        assert data.manifest["time"] == {"start": "2016-01-01T00:00", "step_minutes": 15, "steps": STEPS}
        assert len(data.trajectories["time_step"]) == STEPS and len(data.streams["channel_names"]) == 25
        assert data.manifest["powerflow"]["max_mismatch_pu"] < 1e-8
        assert data.path == grid_dir(data.grid)
    for name in ("vm_pu", "va_degree", "p_inj_pu", "q_inj_pu"):  # the same numbers, however given
        np.testing.assert_array_equal(a.trajectories[name], b.trajectories[name])
    assert list(a.streams["channel_profiles"][:2]) == ["L2-A", "H0-C"]  # SimBench profile names
    assert list(b.streams["channel_profiles"][:2]) == ["load:0:p_mw", "load:1:p_mw"]  # CSV columns
    inputs = b.manifest["source"]["inputs"]
    assert [(i["role"], i["path"]) for i in inputs] == [
        ("net", str(files / "bare.json")),
        ("profiles", str(files / "feeder-profiles.csv")),
    ]
    assert [i["sha256"] for i in inputs] == [sha256_file(files / f) for f in ("bare.json", "feeder-profiles.csv")]
    assert a.manifest["source"]["inputs"][0]["sha256"] == sha256_file(files / "feeder.json")


def test_data_verifies_and_prints_a_built_user_grid(built, files, capsys):
    b = built["b"]
    assert main(["data", "--grid", str(files / "bare.json"), "--profiles", str(files / "feeder-profiles.csv")]) == 0
    captured = capsys.readouterr()
    expected = f"{b.grid} (from {files / 'bare.json'} + {files / 'feeder-profiles.csv'}): 15 nodes, 14 branches, "
    assert captured.out.startswith(expected + f"25 streams, {STEPS} snapshots, {STEPS} steps -> {b.path}")
    assert "building" not in captured.err
    assert main(["data", "--grid", b.grid]) == 0  # by the name it printed
    assert capsys.readouterr().out.startswith(expected)


def test_a_changed_input_makes_the_cache_stale(env, files, tmp_path):
    for name in ("bare.json", "feeder-profiles.csv"):
        shutil.copy(files / name, tmp_path / name)
    source = user_grid(tmp_path / "bare.json", tmp_path / "feeder-profiles.csv")
    first = ensure_grid(source, log=lambda m: None)
    csv = tmp_path / "feeder-profiles.csv"
    csv.write_text(csv.read_text() + "\n")  # the same numbers, other bytes
    with pytest.raises(CacheError, match="feeder-profiles.csv .* changed since the cache was built") as refused:
        load_grid(source.name)
    assert f"twinbench data --grid {tmp_path / 'bare.json'} --profiles {csv}" in str(refused.value)
    messages = []
    rebuilt = ensure_grid(source, log=messages.append)
    assert messages[0].startswith("building: stale cache") and "changed" in messages[0]
    assert rebuilt.manifest["source"]["inputs"][1]["sha256"] == sha256_file(csv)
    assert rebuilt.content_hash == first.content_hash  # same values: same data, checkpoints still fit
    csv.unlink()  # a carried cache on a machine without the files: the manifest is trusted
    assert load_grid(source.name).content_hash == first.content_hash


def test_a_carried_user_grid_loads_without_pandapower_or_its_files(built, tmp_path):
    """A GPU machine: the cache carried, neither the input files nor simbench/pandapower there."""
    b = built["b"]
    shutil.copytree(b.path, grid_dir(b.grid, tmp_path))
    manifest_path = grid_dir(b.grid, tmp_path) / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    for entry in manifest["source"]["inputs"]:
        entry["resolved"] = f"/nonexistent/{entry['role']}"
    manifest_path.write_text(json.dumps(manifest))
    code = (
        "import sys; sys.modules['simbench'] = None; sys.modules['pandapower'] = None\n"
        "from models.grid import load_grid, resolve_grid\n"
        f"source = resolve_grid({b.grid!r}); data = load_grid(source.name)\n"
        f"assert source.is_file and data.content_hash == {b.content_hash!r}"
    )
    env = {**os.environ, "TWINBENCH_CACHE": str(tmp_path)}
    repo = Path(__file__).resolve().parents[2]
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=repo, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr


def _csv(files: Path, edit) -> Path:
    import pandas as pd

    frame = pd.read_csv(files / "feeder-profiles.csv")
    return frame if edit is None else edit(frame)


def _write(tmp_path: Path, frame, name="profiles.csv") -> Path:
    frame.to_csv(tmp_path / name, index=False)
    return tmp_path / name


def _net(files: Path, tmp_path: Path, change) -> Path:
    import pandapower as pp

    net = pp.from_json(str(files / "feeder.json"))
    change(pp, net)
    pp.to_json(net, str(tmp_path / "changed.json"))
    return tmp_path / "changed.json"


def _set(frame, row, column, value):
    frame.loc[row, column] = value
    return frame


BAD_PROFILES = {
    "unknown element": (lambda f: f.rename(columns={"load:3:p_mw": "load:999:p_mw"}), "net.load has no index 999"),
    "unknown column": (lambda f: f.assign(temperature=1.0), "unknown columns 'temperature'"),
    "sgen q": (lambda f: f.assign(**{"sgen:0:q_mvar": 0.0}), "only loads take a q_mvar profile"),
    "NaN": (lambda f: _set(f, 7, "load:2:p_mw", np.nan), "load:2:p_mw holds a value that is not a finite number"),
    "inf": (lambda f: _set(f, 9, "sgen:1:p_mw", np.inf), "sgen:1:p_mw holds a value that is not a finite number"),
    "text": (lambda f: _set(f.astype({"load:0:p_mw": object}), 3, "load:0:p_mw", "abc"), "('abc' at row 5"),
    "too few steps": (lambda f: f.iloc[: 5 * 96], "480 steps (5.0 days) are too few"),
    "hourly": (
        lambda f: f.iloc[::4],
        "need one step every 15 minutes, but row 3 (2016-01-01 01:00:00) comes 1 h after the row before it (the data is every 1 h",
    ),
    "duplicate": (lambda f: _set(f, 6, "time", f.loc[5, "time"]), "times that appear twice: rows 7 and 8"),
    "gaps": (
        lambda f: _set(_set(_set(f, 7, "load:2:p_mw", np.nan), 8, "load:2:p_mw", np.nan), 20, "sgen:1:p_mw", np.nan),
        "2 gap(s): load:2:p_mw from row 9 (2016-01-01 01:45:00), 2 step(s); sgen:1:p_mw from row 22",
    ),
    "no time": (lambda f: f.drop(columns="time"), "has no `time` column"),
    "bad time": (lambda f: _set(f, 4, "time", "yesterday"), "cannot read its time column"),
    "no elements": (lambda f: f[["time"]], "has no element columns"),
}


@pytest.mark.parametrize("case", sorted(BAD_PROFILES))
def test_bad_profiles_are_clear_errors(env, files, tmp_path, capsys, case):
    edit, message = BAD_PROFILES[case]
    profiles = _write(tmp_path, _csv(files, edit))
    assert main(["data", "--grid", str(files / "bare.json"), "--profiles", str(profiles)]) == 2
    err = capsys.readouterr().err
    assert "error: " in err and message in err and "Traceback" not in err
    assert not grid_dir(user_grid(files / "bare.json", profiles).name).exists()


def _bad_net_file(files: Path, tmp_path: Path, case: str) -> list[str]:
    """argv after `data` for a bad network file."""
    if case == "missing":
        return ["--grid", str(tmp_path / "nope.json")]
    if case == "folder":
        (tmp_path / "net.json").mkdir()
        return ["--grid", str(tmp_path / "net.json")]
    path = tmp_path / "net.json"
    if case == "not JSON":
        path.write_text("bus,vn_kv\n0,0.4\n")
    elif case == "binary":
        path.write_bytes(bytes(range(256)))
    elif case == "JSON, not a net":
        path.write_text(json.dumps({"name": "feeder", "buses": [1, 2, 3]}))
    elif case == "no profiles":
        return ["--grid", str(files / "bare.json")]
    elif case == "missing profiles file":
        return ["--grid", str(files / "bare.json"), "--profiles", str(tmp_path / "nope.csv")]
    elif case == "profiles with a SimBench code":
        return ["--grid", "1-LV-rural1--2-sw", "--profiles", str(files / "feeder-profiles.csv")]
    elif case == "PV generator":
        path = _net(files, tmp_path, lambda pp, n: pp.create_gen(n, bus=int(n.load.bus.iloc[0]), p_mw=0.01, vm_pu=1.0))
    elif case == "two slack buses":
        path = _net(files, tmp_path, lambda pp, n: pp.create_ext_grid(n, bus=int(n.load.bus.iloc[0])))
    elif case == "voltage-dependent loads":
        path = _net(files, tmp_path, lambda pp, n: n.load.__setitem__("const_z_p_percent", 50.0))
    return ["--grid", str(path)]


BAD_NETS = {
    "missing": "no such file: ",
    "folder": "is a folder, not a pandapower network file",
    "not JSON": "is not a pandapower network file: not JSON",
    "binary": "is not a pandapower network file: not text (JSON)",
    "JSON, not a net": "is not a pandapower network file: JSON, but not a pandapower network",
    "no profiles": "holds no time series (no SimBench-style net.profiles): give its element profiles with --profiles",
    "missing profiles file": "no such file: ",
    "profiles with a SimBench code": "--profiles belongs to a pandapower network file",
    "PV generator": "voltage-controlled generators (PV buses) are not supported",
    "two slack buses": "expected one slack bus, found 2",
    "voltage-dependent loads": "voltage-dependent loads (const_z_p_percent) are not supported",
}


@pytest.mark.parametrize("case", sorted(BAD_NETS))
def test_bad_network_files_are_clear_errors(env, files, tmp_path, capsys, case):
    argv = _bad_net_file(files, tmp_path, case)
    assert main(["data", *argv]) == 2
    err = capsys.readouterr().err
    assert "error: " in err and BAD_NETS[case] in err and "Traceback" not in err
    assert not list((env / "grids").glob("net-*")) and not list((env / "grids").glob("changed-*"))


def test_parquet_profiles_need_a_parquet_engine(env, files, tmp_path, capsys):
    frame = _csv(files, None)
    try:
        frame.to_parquet(tmp_path / "profiles.parquet")
    except ImportError:  # no pyarrow/fastparquet here: any bytes will do, the reader is what is checked
        (tmp_path / "profiles.parquet").write_bytes(b"PAR1")
        code = main(["data", "--grid", str(files / "bare.json"), "--profiles", str(tmp_path / "profiles.parquet")])
        assert code == 2 and "reading Parquet" in capsys.readouterr().err
        return
    assert main(["data", "--grid", str(files / "bare.json"), "--profiles", str(tmp_path / "profiles.parquet")]) == 0


def test_unknown_grid_names_the_file_option(env, capsys):
    assert main(["train", "--suite", "smoke", "--grid", "1-MV-rural--2-sw"]) == 2
    err = capsys.readouterr().err
    assert "valid grids of suite smoke: 1-LV-rural1--2-sw; or a pandapower network file" in err


def test_a_dry_run_on_a_missing_or_folder_grid_file_is_an_error(env, tmp_path, capsys):
    """A dry run builds nothing, but the files it plans for must exist."""
    assert main(["run", "--suite", "smoke", "--dry-run", "--grid", str(tmp_path / "absent.json")]) == 2
    assert "no such file" in capsys.readouterr().err
    assert main(["run", "--suite", "smoke", "--dry-run", "--grid", str(tmp_path)]) == 2
    assert "is a folder, not a pandapower network file" in capsys.readouterr().err


def test_a_suite_names_user_grids_by_path(env, built, files, tmp_path, monkeypatch, capsys):
    (tmp_path / "mine.toml").write_text(
        f'description = "a user grid"\ndevice = "cpu"\nmodel_size = "smoke"\n'
        f'grids = ["{files / "feeder.json"}", {{net = "{files / "bare.json"}", profiles = "{files / "feeder-profiles.csv"}"}}]\n'
        'twins = ["grid-gnn"]\n[measure]\nwindow_s = 0.2\nrepetitions = 3\nbatch_sizes = [1]\nruntimes = ["torch-eager"]\n'
    )
    monkeypatch.setattr(suites, "SUITES_DIR", tmp_path)
    suite = suites.load_suite("mine")
    assert suite.grids == (built["a"].grid, built["b"].grid)
    assert suite.grid_source(suite.grids[1]).profiles == files / "feeder-profiles.csv"
    assert main(["data", "--suite", "mine"]) == 0 and "building" not in capsys.readouterr().err


@pytest.fixture(scope="module")
def gnn(env, built):
    """grid-gnn trained on the CSV variant of the user grid (and cached as its checkpoint)."""
    from models.checkpoint import train_or_load

    cls = get_twin(GNN)
    twin = cls(built["b"], cls.config_for("smoke"))
    model, _, trained = train_or_load(twin, log=lambda m: None)
    assert trained
    return twin, model


def test_grid_gnn_trains_on_a_user_grid_and_beats_its_baselines(gnn):
    twin, model = gnn
    evaluation = twin.evaluate(torch_predict_fn(model), "test")
    for baseline in twin.required_baselines:
        assert evaluation.margin_pct(baseline) >= MIN_MARGIN_PCT, (baseline, evaluation.margin_pct(baseline))


def test_train_and_run_take_the_user_grid_from_the_command_line(gnn, files, tmp_path, capsys):
    grid = ["--grid", str(files / "bare.json"), "--profiles", str(files / "feeder-profiles.csv")]
    assert main(["train", "--suite", "smoke", "--twin", GNN, *grid]) == 0  # the checkpoint: loaded
    assert gnn[0].grid.grid in capsys.readouterr().out
    argv = ["run", "--suite", "smoke", "--twin", GNN, *grid, "--variant", "reference", "--runtime", "torch-eager"]
    assert main([*argv, "--out", str(tmp_path)]) == 0
    (path,) = run_folders(tmp_path)
    records = RunDir.open(path).records()
    assert len(records) == 2 and {r.grid for r in records} == {gnn[0].grid.grid}
    assert all(r.status == "ok" and r.quality_value > 0 for r in records), [r.status_reason for r in records]
    plan = json.loads((path / "plan.json").read_text())
    assert plan["grids"] == [gnn[0].grid.grid]


def test_unsorted_profiles_are_sorted_and_said(env, files, tmp_path, capsys):
    """Issue 24: rows out of time order (times that never repeat) are sorted, with one line saying so;
    the cache is the one the ordered file builds."""
    profiles = _write(tmp_path, _csv(files, lambda f: f.iloc[::-1]), name="reversed.csv")
    assert main(["data", "--grid", str(files / "bare.json"), "--profiles", str(profiles)]) == 0
    assert "rows were not in time order; sorted by time" in capsys.readouterr().err
    ordered = load_grid(user_grid(files / "bare.json", files / "feeder-profiles.csv").name)
    mine = load_grid(user_grid(files / "bare.json", profiles).name)
    np.testing.assert_array_equal(mine.trajectories["vm_pu"], ordered.trajectories["vm_pu"])


def test_the_long_format_recipe_in_the_docs_builds_the_same_grid(env, files, built, tmp_path, monkeypatch):
    """Issue 24 item 4: the three lines of pandas on docs/extending.md, run as they stand there, turn a
    long meter export into profiles that build the same cache as the wide file they came from."""
    import re

    import pandas as pd

    page = (Path(__file__).resolve().parents[2] / "docs" / "extending.md").read_text()
    section = page.split("### From a meter export (long format)", 1)[1]
    recipe = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    wide = pd.read_csv(files / "feeder-profiles.csv")
    meters = wide.melt(id_vars="time", var_name="column", value_name="value")
    meters[["element", "quantity"]] = meters.column.str.rsplit(":", n=1, expand=True)
    meters = meters.pivot_table(index=["time", "element"], columns="quantity", values="value").reset_index()
    assert list(meters.columns) == ["time", "element", "p_mw", "q_mvar"]  # one row per meter and time
    monkeypatch.chdir(tmp_path)
    exec(recipe, {"meters": meters})
    assert main(["data", "--grid", str(files / "bare.json"), "--profiles", str(tmp_path / "profiles.csv")]) == 0
    mine = load_grid(user_grid(files / "bare.json", tmp_path / "profiles.csv").name)
    np.testing.assert_allclose(mine.trajectories["vm_pu"], built["b"].trajectories["vm_pu"], atol=1e-9)
