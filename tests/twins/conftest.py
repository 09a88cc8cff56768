"""Fixtures of the user-grid tests: a private cache, and the smoke suite's SimBench net cut to four
weeks and saved the ways users have it (tests/twins/test_user_grid.py, test_profile_policy.py)."""

import copy
import dataclasses
from pathlib import Path

import pytest

from models.registry import get_twin

STEPS = 4 * 7 * 96
GNN = "grid-gnn"


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """A private cache for the module, and the GNN at its smoke size with a short schedule (8 epochs
    instead of up to 40: its margin over the baselines is already far past the bar; the module stays
    within its time budget on 2 cores)."""
    root = tmp_path_factory.mktemp("cache")
    cls = get_twin(GNN)
    smoke = cls.config_for("smoke")
    short = dataclasses.replace(smoke, fit=dataclasses.replace(smoke.fit, max_epochs=8))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TWINBENCH_CACHE", str(root))
        mp.setattr(cls, "config_for", classmethod(lambda c, size: short if size == "smoke" else smoke))
        yield root


@pytest.fixture(scope="module")
def files(tmp_path_factory, simbench_net) -> Path:
    """feeder.json (profiles inside), bare.json (none) and feeder-profiles.csv (bare.json's profiles)."""
    import pandapower as pp
    import pandas as pd
    import simbench

    folder = tmp_path_factory.mktemp("user-grid")
    net = copy.deepcopy(simbench_net)
    for kind in net.profiles:
        net.profiles[kind] = net.profiles[kind].iloc[:STEPS].reset_index(drop=True)
    pp.to_json(net, str(folder / "feeder.json"))
    absolute = simbench.get_absolute_values(net, profiles_instead_of_study_cases=True)
    times = pd.to_datetime(net.profiles["load"]["time"], format="%d.%m.%Y %H:%M")
    columns = {"time": times.dt.strftime("%Y-%m-%d %H:%M")}
    for table, quantity in (("load", "p_mw"), ("load", "q_mvar"), ("sgen", "p_mw"), ("storage", "p_mw")):
        for index in net[table].index:
            columns[f"{table}:{index}:{quantity}"] = absolute[(table, quantity)][index].to_numpy()
    pd.DataFrame(columns).to_csv(folder / "feeder-profiles.csv", index=False)
    del net["profiles"]
    pp.to_json(net, str(folder / "bare.json"))
    return folder
