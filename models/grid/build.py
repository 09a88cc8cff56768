"""Build a grid's cache from its element profiles solved with AC power flow, and `ensure_grid`
(load the cache, or build it): the layer above the cache (models/grid/cache.py) and the inputs
(models/grid/inputs.py).

simbench and pandapower are imported inside functions only (both are slow to import and absent on
GPU machines, which run from a carried cache).
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from models.errors import CacheError, DataError
from models.grid.cache import STEP_MINUTES, GridData, GridDataConfig, grid_dir, load_grid, sha256_file, write_cache
from models.grid.inputs import (
    VALUE_KEYS,
    ElementSeries,
    check_files,
    file_profiles,
    load_simbench_net,
    net_profiles,
    read_net_file,
)
from models.grid.powerflow import NetworkModel, power_mismatch_pu, solve_power_flow
from models.grid.source import GridSource, resolve_grid
from models.grid.streams import deduplicate_channels, time_split, train_stats

if TYPE_CHECKING:
    from pandapower import pandapowerNet

__all__ = ["build_grid", "check_supported", "ensure_grid", "load_simbench_net", "reduce_network"]

ELEMENTS = ("load", "sgen", "storage")
# The twins forecast 24 steps from the last 96 (sensor-transformer, diffusion-forecaster): each split
# needs room for such windows, and two days is the least that gives a few of them to train and score.
MIN_SPLIT_STEPS = 2 * 96


@dataclass(frozen=True)
class GridModel:
    """What the pandapower net reduces to: the node model plus how elements and buses map onto it."""

    network: NetworkModel  # over nodes, auxiliary buses Kron-reduced
    pp_bus_ids: np.ndarray  # (B,)
    pp_bus_node: np.ndarray  # (B,) node per pandapower bus, -1 if not in the model
    bus_ids: np.ndarray  # (N,) representative pandapower bus per node
    element_node: dict[str, np.ndarray]  # element table -> (n_elem,) node, -1 if disconnected
    edge_index: np.ndarray  # (2, E)
    edge_attr: np.ndarray  # (E, 7)
    node_attr: np.ndarray  # (N, 5)


def check_supported(net) -> None:
    """What the batched solver cannot model, refused before any profile is read. (Several slack buses
    show only in pandapower's internal model: reduce_network refuses them.)"""
    if len(net.gen) and net.gen.in_service.any():
        raise DataError("grids with voltage-controlled generators (PV buses) are not supported by the batched solver")
    if not any(len(net[table]) for table in ("load", "sgen", "storage")):
        raise DataError(
            "the net has no loads, static generators or storage: nothing injects power into it, so there is "
            "no time series for a twin to learn (add its loads, or give another net)"
        )
    for column in ("const_z_p_percent", "const_i_p_percent", "const_z_q_percent", "const_i_q_percent"):
        if column in net.load and net.load[column].abs().max() > 0:
            raise DataError(f"voltage-dependent loads ({column}) are not supported by the batched solver")


def reduce_network(net) -> GridModel:
    """Run pandapower once to get its internal model (ppci), then reduce it to one node per bus group.

    pandapower merges buses joined by closed bus-bus switches and adds auxiliary buses at open
    line ends; auxiliary buses carry no injection, so Kron reduction removes them exactly.
    """
    import pandapower as pp
    from pandapower.pypower.idx_brch import BR_B, BR_R, BR_STATUS, BR_X, F_BUS, SHIFT, T_BUS, TAP

    check_supported(net)
    try:
        pp.runpp(net, numba=False)
    except Exception as e:  # pandapower's own errors (no slack, no convergence) are plain exceptions
        raise DataError(f"pandapower's power flow fails on the net's static values ({type(e).__name__}: {e})") from e
    ppci = net._ppc["internal"]
    if len(ppci["ref"]) != 1:
        raise DataError(
            f"expected one slack bus, found {len(ppci['ref'])} (external grids or slack generators in service): "
            "the batched solver models exactly one, so a net with several external grids is not supported"
        )
    ybus_int = ppci["Ybus"].toarray()
    n_int = ybus_int.shape[0]

    lookup = net._pd2ppc_lookups["bus"]
    pp_bus_ids = net.bus.index.to_numpy()
    internal_of_bus = lookup[pp_bus_ids].astype(np.int64)
    internal_of_bus[(internal_of_bus >= n_int) | ~net.bus.in_service.to_numpy()] = -1
    real = np.unique(internal_of_bus[internal_of_bus >= 0])
    aux = np.setdiff1d(np.arange(n_int), real)
    node_of_internal = np.full(n_int, -1, dtype=np.int64)
    node_of_internal[real] = np.arange(len(real))
    pp_bus_node = np.where(internal_of_bus >= 0, node_of_internal[internal_of_bus], -1)
    bus_ids = np.array([pp_bus_ids[pp_bus_node == k].min() for k in range(len(real))])

    y_rr = ybus_int[np.ix_(real, real)]
    if len(aux):
        y_ra, y_aa = ybus_int[np.ix_(real, aux)], ybus_int[np.ix_(aux, aux)]
        y_rr = y_rr - y_ra @ np.linalg.solve(y_aa, ybus_int[np.ix_(aux, real)])
    ref = int(ppci["ref"][0])
    network = NetworkModel(
        ybus=y_rr, slack=int(node_of_internal[ref]), v_slack=complex(ppci["V"][ref]), base_mva=float(net.sn_mva)
    )

    bus_to_node = dict(zip(pp_bus_ids, pp_bus_node, strict=True))
    element_node = {e: np.array([bus_to_node.get(b, -1) for b in net[e].bus], dtype=np.int64) for e in ELEMENTS}
    for e in ELEMENTS:  # an out-of-service element injects nothing, like a disconnected one
        element_node[e][~net[e].in_service.to_numpy()] = -1

    # Edges: in-service branches of the internal model between real nodes. A branch that ends at an
    # auxiliary bus is an open-ended line: its charging is in the reduced admittance, not an edge.
    ppc_row = np.flatnonzero(ppci["branch_is"])  # ppci drops out-of-service branches
    trafo_rows = range(*net._pd2ppc_lookups["branch"].get("trafo", (0, 0)))
    edges, attrs = [], []
    for row, ppc_i in zip(ppci["branch"], ppc_row, strict=True):
        f, t = node_of_internal[int(row[F_BUS].real)], node_of_internal[int(row[T_BUS].real)]
        if row[BR_STATUS].real == 0 or f < 0 or t < 0:
            continue
        tap = row[TAP].real or 1.0
        base = [row[BR_R].real, row[BR_X].real, row[BR_B].real, tap, row[SHIFT].real, float(ppc_i in trafo_rows)]
        edges += [(f, t), (t, f)]
        attrs += [base + [0.0], base + [1.0]]
    edge_index = np.array(edges, dtype=np.int64).T.reshape(2, -1)

    node_attr = np.zeros((len(real), 5))
    node_attr[network.slack, 0] = 1.0
    vn = net.bus.vn_kv.to_numpy()
    for k in range(len(real)):
        node_attr[k, 1] = vn[pp_bus_node == k][0]
    for col, e in enumerate(ELEMENTS, start=2):
        nodes = element_node[e][element_node[e] >= 0]
        node_attr[:, col] = np.bincount(nodes, minlength=len(real))
    return GridModel(
        network=network,
        pp_bus_ids=pp_bus_ids,
        pp_bus_node=pp_bus_node,
        bus_ids=bus_ids,
        element_node=element_node,
        edge_index=edge_index,
        edge_attr=np.array(attrs, dtype=np.float32).reshape(-1, 7),
        node_attr=node_attr.astype(np.float32),
    )


def node_injections(model: GridModel, net, element_values: dict[str, np.ndarray]) -> np.ndarray:
    """(T, N) complex net injection per node in p.u. from element powers in MW/Mvar.

    element_values: load_p_mw, load_q_mvar, sgen_p_mw, storage_p_mw, each (T, n_elem) in table order.
    Element scaling and the static sgen/storage reactive powers are applied as pandapower does.
    """
    n = model.network.ybus.shape[0]
    t = element_values["load_p_mw"].shape[0]
    s = np.zeros((t, n), dtype=np.complex128)
    parts = {
        "load": (-1.0, element_values["load_p_mw"], element_values["load_q_mvar"]),
        "sgen": (1.0, element_values["sgen_p_mw"], np.broadcast_to(net.sgen.q_mvar.to_numpy(), (t, len(net.sgen)))),
        "storage": (
            -1.0,
            element_values["storage_p_mw"],
            np.broadcast_to(net.storage.q_mvar.to_numpy(), (t, len(net.storage))),
        ),
    }
    for e, (sign, p, q) in parts.items():
        nodes = model.element_node[e]
        scaling = net[e].scaling.to_numpy()  # a net saved without it gets pandapower's 1 on reading
        connected = nodes >= 0
        incidence = np.zeros((len(nodes), n))
        incidence[np.flatnonzero(connected), nodes[connected]] = 1.0
        s += sign * ((p * scaling) @ incidence + 1j * ((q * scaling) @ incidence))
    return s / model.network.base_mva


def ensure_grid(
    grid: str | GridSource,
    root: Path | None = None,
    config: GridDataConfig | None = None,
    *,
    rebuild: bool = False,
    log=print,
) -> GridData:
    """Load the grid's cache, building (or rebuilding) it when missing, corrupt or stale. `grid`: a
    SimBench code, a user grid's source (models/grid/source.py), or a name `resolve_grid` knows."""
    source = grid if isinstance(grid, GridSource) else resolve_grid(grid, root=root)
    config = config or GridDataConfig()
    if not rebuild:
        try:
            return load_grid(source.name, root, config)
        except CacheError as e:
            check_files(source)  # a file not there is the message, not the cache it would build
            log(f"building: {str(e).splitlines()[0]}")
    build_grid(source, grid_dir(source.name, root), config, log=log)
    return load_grid(source.name, root, config)


def build_if_missing(grid: str | GridSource, root: Path | None = None, log=print) -> None:
    """Build a grid that has no cache yet (a fresh clone's first `run` or `train`). A cache that
    exists but is damaged or stale is left for `load_grid` to report, never silently replaced."""
    source = grid if isinstance(grid, GridSource) else resolve_grid(grid, root=root)
    if not (grid_dir(source.name, root) / "manifest.json").exists():
        ensure_grid(source, root, log=log)


def build_grid(source: GridSource | str, directory: Path, config: GridDataConfig, log=print) -> None:
    """Build every cached array of a grid (a SimBench code or a user's pandapower file) into `directory`."""
    source = source if isinstance(source, GridSource) else GridSource(source)
    grid = source.name
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # small dense solves: threads only contend
    # pandapower warns at every run that numba is missing; its compiled paths do not matter for
    # the one reference run we make, and the warning would drown the build log.
    logging.getLogger("pandapower").setLevel(logging.ERROR)
    started = time.perf_counter()
    net, series, source_info = _inputs(source, log)
    values = series.values
    n_steps = series.steps
    split = _split(n_steps, config, grid)
    time_step = np.arange(n_steps, dtype=np.int32)

    log(f"building {grid}: power flow over {n_steps} steps")
    model = reduce_network(net)
    _check_base_case(model, net)
    s_pu = node_injections(model, net, values)
    v = solve_power_flow(model.network, s_pu)
    mismatch = float(power_mismatch_pu(model.network, v, s_pu).max())
    if mismatch > 1e-8:
        raise DataError(f"power flow residual {mismatch:.2e} p.u. is too large for {grid}")
    vm = np.abs(v).astype(np.float32)
    va = np.degrees(np.angle(v)).astype(np.float32)
    p_inj, q_inj = s_pu.real.astype(np.float32), s_pu.imag.astype(np.float32)

    rng = np.random.default_rng(config.seed)
    picked = np.sort(rng.choice(n_steps, size=min(config.snapshots, n_steps), replace=False))
    snapshots = {
        "time_step": time_step[picked],
        "split": split[picked],
        **{k: v_[picked].astype(np.float32) for k, v_ in values.items()},
        "p_inj_pu": p_inj[picked],
        "q_inj_pu": q_inj[picked],
        "vm_pu": vm[picked],
        "va_degree": va[picked],
    }
    trajectories = {
        "time_step": time_step,
        "split": split,
        "vm_pu": vm,
        "va_degree": va,
        "p_inj_pu": p_inj,
        "q_inj_pu": q_inj,
    }

    streams, dedup_info = _streams(net, series, split, config)
    stats = {}
    stats["streams_mean"], stats["streams_std"] = train_stats(streams["values"], split)
    for name in ("vm_pu", "va_degree", "p_inj_pu", "q_inj_pu"):
        stats[f"{name}_mean"], stats[f"{name}_std"] = train_stats(trajectories[name], split)

    network = model.network
    graph = {
        "bus_ids": model.bus_ids,
        "pp_bus_ids": model.pp_bus_ids,
        "pp_bus_node": model.pp_bus_node,
        "edge_index": model.edge_index,
        "edge_attr": model.edge_attr,
        "edge_attr_names": np.array(["r_pu", "x_pu", "b_pu", "tap_ratio", "shift_degree", "is_trafo", "is_reverse"]),
        "node_attr": model.node_attr,
        "node_attr_names": np.array(["is_slack", "vn_kv", "n_load", "n_sgen", "n_storage"]),
        **{f"{e}_node": model.element_node[e] for e in ELEMENTS},
        "ybus_re": network.ybus.real,
        "ybus_im": network.ybus.imag,
        "slack_node": np.array(network.slack),
        "v_slack": np.array([abs(network.v_slack), np.degrees(np.angle(network.v_slack))]),
        "base_mva": np.array(network.base_mva),
    }
    info = {
        "created_utc": datetime.now(UTC).isoformat(timespec="seconds"),
        "time": {"start": series.start, "step_minutes": STEP_MINUTES, "steps": n_steps},
        "split_steps": {
            name: [int(np.flatnonzero(split == i)[0]), int(np.flatnonzero(split == i)[-1]) + 1]
            for i, name in enumerate(("train", "val", "test"))
        },
        "sizes": {"nodes": len(model.bus_ids), "edges": model.edge_index.shape[1], "snapshots": len(picked)},
        "powerflow": {"solver": "batched Z-bus (models/grid/powerflow.py)", "max_mismatch_pu": mismatch},
        "dedup": dedup_info,
        "build_seconds": round(time.perf_counter() - started, 2),
        **source_info,
    }
    write_cache(
        directory,
        grid,
        config,
        {
            "graph.npz": graph,
            "snapshots.npz": snapshots,
            "streams.npz": streams,
            "trajectories.npz": trajectories,
            "stats.npz": stats,
        },
        info,
    )
    log(f"built {grid} in {time.perf_counter() - started:.1f} s -> {directory}")


def _inputs(source: GridSource, log) -> tuple[pandapowerNet, ElementSeries, dict]:
    """(pandapower net, element profiles, manifest entries) of a SimBench code or a user's files."""
    if not source.is_file:
        log(f"building {source.name}: loading SimBench net")
        net = load_simbench_net(source.name)
        return net, net_profiles(net, source.name), {}
    check_files(source)
    # Hashed before reading: a file changed while we read it leaves a manifest that says stale.
    inputs = [
        {"role": role, "path": given, "resolved": str(path), "sha256": sha256_file(path)}
        for role, path, given in source.files
    ]
    net_given = source.given[0]
    log(f"building {source.name}: loading {net_given}" + (f" and {source.given[1]}" if source.profiles else ""))
    net = read_net_file(source.net, net_given)
    check_supported(net)
    if source.profiles:
        series = file_profiles(net, source.profiles, source.given[1], log, source.policy)
    else:
        series = net_profiles(net, net_given)
    treated = {"policy": source.policy.as_dict(), "treatment": series.treatment} if source.profiles else {}
    return net, series, {"source": {"kind": "pandapower file", "inputs": inputs, **treated}}


def _split(n_steps: int, config: GridDataConfig, grid: str) -> np.ndarray:
    """The time split, refused when a split is too short for the twins' windows."""
    sizes = _split_sizes(n_steps, config)
    if sizes.min() < MIN_SPLIT_STEPS:
        need = max(n_steps, 96)
        while _split_sizes(need, config).min() < MIN_SPLIT_STEPS:
            need += 96
        raise DataError(
            f"{grid}: {n_steps} steps ({n_steps / 96:.1f} days) are too few: the train/val/test splits get "
            f"{'/'.join(map(str, sizes))} steps, and each needs at least {MIN_SPLIT_STEPS} (two days: the twins "
            f"forecast 24 steps from the last 96); give at least {need} steps ({need // 96} days)"
        )
    return time_split(n_steps, config.train_frac, config.val_frac)


def _split_sizes(n_steps: int, config: GridDataConfig) -> np.ndarray:
    try:
        return np.bincount(time_split(n_steps, config.train_frac, config.val_frac), minlength=3)
    except ValueError:  # a split would be empty
        return np.zeros(3, dtype=np.int64)


def _check_base_case(model: GridModel, net) -> None:
    """Our injection mapping must reproduce pandapower's own Sbus for the net's static values."""
    static = {
        "load_p_mw": net.load.p_mw.to_numpy()[None],
        "load_q_mvar": net.load.q_mvar.to_numpy()[None],
        "sgen_p_mw": net.sgen.p_mw.to_numpy()[None],
        "storage_p_mw": net.storage.p_mw.to_numpy()[None],
    }
    ours = node_injections(model, net, static)[0]
    v = solve_power_flow(model.network, ours[None])[0]
    theirs = net.res_bus.vm_pu.to_numpy() * np.exp(1j * np.radians(net.res_bus.va_degree.to_numpy()))
    connected = model.pp_bus_node >= 0
    err = np.abs(v[model.pp_bus_node[connected]] - theirs[connected]).max()
    if err > 1e-6:
        raise DataError(f"batched solver disagrees with pandapower on the base case by {err:.2e} p.u.")


def _streams(net, series: ElementSeries, split: np.ndarray, config: GridDataConfig):
    """The metering streams (load P/Q, generation P, storage P), one channel per distinct profile."""
    columns, names, profiles = [], [], []
    for key in VALUE_KEYS:
        table, quantity = key.split("_", 1)
        for j, idx in enumerate(net[table].index):
            columns.append(series.values[key][:, j])
            names.append(f"{table}:{idx}:{quantity}")
            profiles.append(series.labels[key][j])
    all_values = np.stack(columns, axis=1)
    dedup = deduplicate_channels(all_values[split == 0], config.dedup_min_corr)
    streams = {
        "time_step": np.arange(all_values.shape[0], dtype=np.int32),
        "split": split,
        "values": all_values[:, dedup.keep].astype(np.float32),
        "channel_names": np.array(names)[dedup.keep],
        "channel_profiles": np.array(profiles)[dedup.keep],
        "all_channel_names": np.array(names),
        "group_of": dedup.group_of,
    }
    info = {
        "channels_in": len(names),
        "channels_kept": int(len(dedup.keep)),
        "dropped_constant": [names[i] for i in np.flatnonzero(dedup.group_of < 0)],
        "min_corr": config.dedup_min_corr,
    }
    return streams, info
