"""SimBench nets as a user brings them (issue 24): saved with `pandapower.to_json`, profiles cut to a
few weeks, given to `twinbench data --grid`. Each either builds a cache whose labels agree with
pandapower's own power flow, or is refused with exit 2 and a message that names what is not modelled.

`test_every_simbench_code` is the whole sweep over the codes `simbench` ships: hours on 2 cores,
so it carries the `sweep` marker and stays out of `make test` (run it with `pytest -m sweep`).
"""

from __future__ import annotations

import copy
import time
from pathlib import Path

import numpy as np
import pandapower as pp
import pytest

from bench.cli import main
from models.grid.cache import load_grid
from models.grid.source import user_grid

TOL_PU = 1e-6
WEEKS = 4  # the shortest span whose time split leaves every split its windows


@pytest.fixture
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TWINBENCH_CACHE", str(tmp_path / "cache"))
    return tmp_path


def _saved(code: str, folder, weeks: int = WEEKS):
    """(the SimBench net of `code` with its profiles cut to `weeks`, its pandapower JSON file)."""
    import simbench

    net = simbench.get_simbench_net(code)
    for kind in net.profiles:  # empty profile tables (no storage) stay empty, as SimBench writes them
        net.profiles[kind] = net.profiles[kind].iloc[: weeks * 7 * 96].reset_index(drop=True)
    path = folder / f"{code}.json"
    pp.to_json(net, str(path))
    return net, path


def _max_error_against_runpp(data, net, n_samples: int = 4) -> float:
    """The largest voltage difference (p.u.) between the cache's labels and pandapower's runpp, on
    sampled snapshots, over every pandapower bus (merged ones read their node's voltage)."""
    snaps, graph = data.snapshots, data.graph
    net = copy.deepcopy(net)
    modelled = graph["pp_bus_node"] >= 0  # a bus islanded by an open line is not modelled (runpp: NaN)
    rows = np.random.default_rng(0).choice(len(snaps["vm_pu"]), n_samples, replace=False)
    worst = 0.0
    for r in rows:
        net.load["p_mw"] = snaps["load_p_mw"][r].astype(np.float64)
        net.load["q_mvar"] = snaps["load_q_mvar"][r].astype(np.float64)
        net.sgen["p_mw"] = snaps["sgen_p_mw"][r].astype(np.float64)
        net.storage["p_mw"] = snaps["storage_p_mw"][r].astype(np.float64)
        pp.runpp(net, numba=False, tolerance_mva=1e-10)
        ref = net.res_bus.vm_pu.to_numpy() * np.exp(1j * np.radians(net.res_bus.va_degree.to_numpy()))
        ours = snaps["vm_pu"][r].astype(np.float64) * np.exp(1j * np.radians(snaps["va_degree"][r].astype(np.float64)))
        theirs = ref[np.searchsorted(net.bus.index, graph["pp_bus_ids"])]
        assert np.isnan(theirs[~modelled]).all() and np.isfinite(theirs[modelled]).all()
        worst = max(worst, float(np.abs(ours[graph["pp_bus_node"][modelled]] - theirs[modelled]).max()))
    return worst


def build_and_check(code: str, folder, capsys) -> tuple[str, str, float]:
    """(built | refused, why, seconds) for one SimBench code, asserting the contract either way."""
    net, path = _saved(code, folder)
    start = time.perf_counter()
    rc = main(["data", "--grid", str(path)])
    seconds = time.perf_counter() - start
    err = capsys.readouterr().err
    assert "Traceback" not in err
    if rc == 0:
        error = _max_error_against_runpp(load_grid(user_grid(path).name), net)
        assert error <= TOL_PU, f"{code}: {error:.2e} p.u. from runpp"
        return "built", f"labels within {error:.1e} p.u. of runpp", seconds
    errors = [line for line in err.splitlines() if line.startswith("error: ")]  # after the build's progress lines
    assert rc == 2 and errors, err
    return "refused", errors[0].removeprefix("error: ")[:160], seconds


def test_a_feeder_without_storage_builds_and_agrees_with_runpp(private_cache, capsys):
    """The issue's first failure: SimBench writes an empty `profiles["storage"]` table for a grid
    without storage, and the builder took its 0 rows as the series' length (a broadcast error)."""
    outcome, why, _ = build_and_check("1-LV-rural1--0-sw", private_cache, capsys)
    assert outcome == "built", why


def test_a_net_with_nothing_injecting_is_refused(private_cache, capsys):
    import simbench

    net = simbench.get_simbench_net("1-LV-rural1--0-sw")
    for table in ("load", "sgen", "storage"):
        net[table] = net[table].iloc[0:0]
    path = private_cache / "empty.json"
    pp.to_json(net, str(path))
    assert main(["data", "--grid", str(path)]) == 2
    err = capsys.readouterr().err
    assert "no loads, static generators or storage" in err and "Traceback" not in err


def _codes() -> list[str]:
    try:
        import simbench

        return simbench.collect_all_simbench_codes()
    except ImportError:
        return []


@pytest.mark.sweep
@pytest.mark.parametrize("code", _codes())
def test_every_simbench_code(code, private_cache, capsys):
    outcome, why, seconds = build_and_check(code, private_cache, capsys)
    print(f"\n| {code} | {outcome} | {why} | {seconds:.1f} |")


@pytest.mark.parametrize("day", ["2016-03-27", "2016-10-30"])
def test_times_with_offsets_across_a_dst_change_are_read_as_utc(day):
    """Issue 24: a meter export with `+01:00` then `+02:00` is strict 15-minute steps, not two zones."""
    import pandas as pd

    from models.grid.timeline import check_steps, parse_times

    local = pd.date_range(f"{day} 00:00", periods=20, freq="15min", tz="Europe/Berlin")
    stamps = parse_times([t.isoformat() for t in local], "profiles.csv")
    assert str(stamps.tz) == "UTC" and (stamps == local.tz_convert("UTC")).all()
    check_steps(stamps, "profiles.csv", "row")  # no jump: the steps are 15 minutes apart in UTC


def test_a_run_builds_a_suite_grid_named_by_path(private_cache):
    """Issue 24: a suite naming a user grid by path failed in `run` with "no cache for grid" (it
    worked only after `data --suite`); the run now builds a grid that has no cache yet."""
    from bench.run.runner import RunRequest, _new_plan

    _, path = _saved("1-LV-rural1--0-sw", private_cache)
    suite = private_cache / "mine.toml"
    suite.write_text(
        f'description = "a user grid by path"\ndevice = "cpu"\nmodel_size = "smoke"\ngrids = ["{path.name}"]\n'
        'twins = ["grid-gnn"]\n[measure]\nwindow_s = 0.2\nrepetitions = 3\nbatch_sizes = [1]\nruntimes = ["torch-eager"]\n'
    )
    said: list[str] = []
    plan = _new_plan(RunRequest(suite=str(suite)), log=said.append)
    assert plan.grids == (user_grid(path).name,) and load_grid(plan.grids[0]).manifest["sizes"]["nodes"] == 15
    assert any(line.startswith("building") for line in said)


def _no_geodata(net):
    if "geo" in net.bus:
        net.bus["geo"] = None
    for table in ("bus_geodata", "line_geodata"):
        if table in net:
            net[table] = net[table].iloc[0:0]


def _out_of_service(net):
    net.load.loc[net.load.index[0], "in_service"] = False
    net.sgen.loc[net.sgen.index[0], "in_service"] = False
    net.line.loc[net.line.index[-1], "in_service"] = False  # a radial feeder: the buses beyond it are islanded


def _no_scaling(net):
    for table in ("load", "sgen", "storage"):
        if "scaling" in net[table]:
            net[table] = net[table].drop(columns="scaling")


@pytest.mark.parametrize("change", [_no_geodata, _out_of_service, _no_scaling], ids=lambda f: f.__name__[1:])
def test_nets_as_users_have_them_build_or_say_why(change, private_cache, capsys):
    """Issue 24: nets without geodata, with out-of-service elements and lines (a bus islanded by an
    open line is left out of the model), or saved without `scaling` (pandapower's default, 1) build
    labels that agree with runpp."""
    import simbench

    net = simbench.get_simbench_net("1-LV-rural1--0-sw")
    for kind in net.profiles:
        net.profiles[kind] = net.profiles[kind].iloc[: WEEKS * 7 * 96].reset_index(drop=True)
    change(net)
    path = private_cache / "changed.json"
    pp.to_json(net, str(path))
    rc = main(["data", "--grid", str(path)])
    err = capsys.readouterr().err
    assert "Traceback" not in err and rc in (0, 2), err
    assert rc == 0, err  # each of these builds
    if "scaling" not in net.load:  # pandapower's runpp needs the column; its default is 1
        for table in ("load", "sgen", "storage"):
            net[table]["scaling"] = 1.0
    data = load_grid(user_grid(path).name)
    assert _max_error_against_runpp(data, net) <= TOL_PU
    if change is _out_of_service:  # the bus beyond the open line is islanded: left out, said by its node
        assert (data.graph["pp_bus_node"] < 0).sum() == 1


OLD_NET = Path(__file__).parent / "data" / "kerber-landnetz-pandapower-2.14.json"


def test_a_net_saved_by_an_older_pandapower_builds_and_agrees_with_runpp(private_cache, simbench_net, capsys):
    """Issue 24: a net saved by pandapower 2.14 (the Kerber rural cable feeder of pandapower.networks,
    with its geodata in the 2.x `bus_geodata` table and loads' `const_z_percent`), written by
    pandapower 2.14.10 itself (numpy 1.26) and kept as a file: pandapower 3 converts it on load, and
    it builds with SimBench household profiles on its 8 loads."""
    import pandas as pd

    assert '"version": "2.14.10"' in OLD_NET.read_text()
    net = pp.from_json(str(OLD_NET))
    steps = WEEKS * 7 * 96
    times = pd.date_range("2016-01-01", periods=steps, freq="15min").strftime("%Y-%m-%d %H:%M")
    household = simbench_net.profiles["load"].filter(like="_pload").iloc[:steps]  # SimBench per-unit profiles
    profiles = {"time": times}
    for j, index in enumerate(net.load.index):
        profiles[f"load:{index}:p_mw"] = household.iloc[:, j % household.shape[1]].to_numpy() * net.load.p_mw[index]
    csv = private_cache / "kerber.csv"
    pd.DataFrame(profiles).to_csv(csv, index=False)
    assert main(["data", "--grid", str(OLD_NET), "--profiles", str(csv)]) == 0, capsys.readouterr().err
    data = load_grid(user_grid(OLD_NET, csv).name)
    assert data.manifest["sizes"]["snapshots"] == steps
    assert _max_error_against_runpp(data, net) <= TOL_PU
