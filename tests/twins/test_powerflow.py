"""The cached power-flow labels are pandapower's: checked against runpp on sampled snapshots."""

import copy

import numpy as np
import pandapower as pp
import pytest

from models.errors import DataError
from models.grid.powerflow import NetworkModel, power_mismatch_pu, solve_power_flow

TOL_PU = 1e-6


def _cached_voltage(vm, va):
    return vm.astype(np.float64) * np.exp(1j * np.radians(va.astype(np.float64)))


def _set_elements(net, row: dict[str, np.ndarray]) -> None:
    net.load["p_mw"] = row["load_p_mw"]
    net.load["q_mvar"] = row["load_q_mvar"]
    net.sgen["p_mw"] = row["sgen_p_mw"]
    net.storage["p_mw"] = row["storage_p_mw"]


def _runpp_voltage(net, **kwargs):
    pp.runpp(net, numba=False, tolerance_mva=1e-10, **kwargs)
    return net.res_bus.vm_pu.to_numpy() * np.exp(1j * np.radians(net.res_bus.va_degree.to_numpy()))


def test_snapshot_labels_match_runpp(smoke_grid, simbench_net):
    snaps, graph = smoke_grid.snapshots, smoke_grid.graph
    net = copy.deepcopy(simbench_net)
    rng = np.random.default_rng(1)
    # Sample from each split, and include the most heavily loaded and most generating snapshots.
    rows = [rng.choice(np.flatnonzero(snaps["split"] == s), 3, replace=False) for s in (0, 1, 2)]
    load = snaps["load_p_mw"].sum(1) - snaps["sgen_p_mw"].sum(1)
    rows = np.concatenate([*rows, [load.argmax(), load.argmin()]])
    node = graph["pp_bus_node"]
    assert (node >= 0).all()
    for r in rows:
        _set_elements(
            net, {k: snaps[k][r].astype(np.float64) for k in ("load_p_mw", "load_q_mvar", "sgen_p_mw", "storage_p_mw")}
        )
        ref = _runpp_voltage(net)
        ours = _cached_voltage(snaps["vm_pu"][r], snaps["va_degree"][r])
        # Every pandapower bus, merged ones included, reads its node's voltage.
        err = np.abs(ours[node] - ref[np.searchsorted(net.bus.index, graph["pp_bus_ids"])]).max()
        assert err <= TOL_PU, f"snapshot {snaps['time_step'][r]}: {err:.2e} p.u. from runpp"


def test_trajectory_matches_sequential_warm_started_runpp(smoke_grid, simbench_net):
    """State trajectories equal a sequential power flow over contiguous time, warm-started."""
    import simbench

    net = copy.deepcopy(simbench_net)
    profiles = simbench.get_absolute_values(net, profiles_instead_of_study_cases=True)
    traj = smoke_grid.trajectories
    start = int(np.flatnonzero(traj["split"] == 2)[0]) - 3  # straddle the val/test boundary
    for i, t in enumerate(range(start, start + 6)):
        net.load["p_mw"] = profiles[("load", "p_mw")].iloc[t].to_numpy()
        net.load["q_mvar"] = profiles[("load", "q_mvar")].iloc[t].to_numpy()
        net.sgen["p_mw"] = profiles[("sgen", "p_mw")].iloc[t].to_numpy()
        net.storage["p_mw"] = profiles[("storage", "p_mw")].iloc[t].to_numpy()
        ref = _runpp_voltage(net, init="results" if i else "auto")
        ours = _cached_voltage(traj["vm_pu"][t], traj["va_degree"][t])
        assert np.abs(ours[smoke_grid.graph["pp_bus_node"]] - ref).max() <= TOL_PU


def test_cached_admittance_reproduces_labels(smoke_grid):
    """The graph's Kron-reduced Ybus alone (no pandapower) solves the cached snapshots again."""
    g, s = smoke_grid.graph, smoke_grid.snapshots
    vm_s, va_s = g["v_slack"]
    model = NetworkModel(
        ybus=g["ybus_re"] + 1j * g["ybus_im"],
        slack=int(g["slack_node"]),
        v_slack=vm_s * np.exp(1j * np.radians(va_s)),
        base_mva=float(g["base_mva"]),
    )
    s_pu = s["p_inj_pu"][:200].astype(np.float64) + 1j * s["q_inj_pu"][:200]
    v = solve_power_flow(model, s_pu)
    assert power_mismatch_pu(model, v, s_pu).max() < 1e-10
    # float32 storage of the injections limits agreement to ~1e-7 p.u.
    assert np.abs(v - _cached_voltage(s["vm_pu"][:200], s["va_degree"][:200])).max() < TOL_PU


def _two_bus(z=0.01 + 0.05j) -> NetworkModel:
    y = 1 / z
    return NetworkModel(ybus=np.array([[y, -y], [-y, y]]), slack=0, v_slack=1.0 + 0j, base_mva=1.0)


def test_two_bus_against_closed_form():
    """Load S on a line of impedance z: V2 solves V2 = 1 - z * conj(S / V2)."""
    model = _two_bus()
    s = np.array([[0.0, -(0.5 + 0.2j)]])
    v2 = solve_power_flow(model, s)[0, 1]
    assert abs(v2 - (1 - (0.01 + 0.05j) * np.conj((0.5 + 0.2j) / v2))) < 1e-12
    assert 0.9 < abs(v2) < 1.0


def test_voltage_collapse_raises():
    with pytest.raises(DataError, match="did not converge"):
        solve_power_flow(_two_bus(), np.array([[0.0, -20.0 + 0j]]), max_iter=100)
