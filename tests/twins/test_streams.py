"""Stream deduplication and the time split: one channel per distinct profile, no leakage."""

import numpy as np
import pytest

from models.grid.streams import deduplicate_channels, time_split, train_stats, window_starts


def test_dedup_synthetic_keeps_one_per_profile():
    rng = np.random.default_rng(0)
    base = rng.normal(size=(500, 3))
    channels = np.stack(
        [
            base[:, 0] * 2,
            base[:, 1],
            base[:, 0] * 0.3 + 5,
            np.full(500, 0.7),
            base[:, 2],
            base[:, 1] * 7,
            base[:, 2] + rng.normal(scale=0.2, size=500),
        ],
        axis=1,
    )
    d = deduplicate_channels(channels, min_corr=0.9999)
    # channel 6 is profile 2 plus noise: a different stream, kept.
    assert d.keep.tolist() == [0, 1, 4, 6]
    assert d.group_of.tolist() == [0, 1, 0, -1, 2, 1, 3]


def _all_channels(snapshots, names):
    """Every original channel, in all_channel_names order, rebuilt from the snapshot element arrays.

    Names are '<table>:<index>:<quantity>'; SimBench tables are indexed 0..n-1 (checked below), so
    the index is the column of '<table>_<quantity>'.
    """
    columns = []
    for name in names:
        table, idx, quantity = name.split(":")
        columns.append(snapshots[f"{table}_{quantity}"][:, int(idx)])
    return np.stack(columns, axis=1).astype(np.float64)


def test_dedup_on_real_grid(smoke_grid, simbench_net):
    """Kept channels are pairwise distinct; every dropped one is a rescaled copy of its representative."""
    st = smoke_grid.streams
    names, group_of = st["all_channel_names"].tolist(), st["group_of"]
    # SimBench element tables here are indexed 0..n-1, so name indices are table positions.
    for table in ("load", "sgen", "storage"):
        assert simbench_net[table].index.tolist() == list(range(len(simbench_net[table])))
    values = _all_channels(smoke_grid.snapshots, names)
    train = smoke_grid.snapshots["split"] == 0
    with np.errstate(invalid="ignore", divide="ignore"):  # constant channels give nan rows
        corr = np.corrcoef(values[train].T)
    kept = [names.index(n) for n in st["channel_names"]]
    assert len(kept) == len(set(kept)) == st["values"].shape[1]
    for c, g in enumerate(group_of):
        if g < 0:
            assert values[train, c].std() == 0
        else:
            assert corr[c, kept[g]] > 0.9999, names[c]
    sub = corr[np.ix_(kept, kept)]
    assert (sub[~np.eye(len(kept), dtype=bool)] <= 0.9999).all()
    # SimBench's own metadata agrees: one active-power load channel per distinct load profile.
    kept_load_p = [n for n in st["channel_names"] if n.startswith("load:") and n.endswith(":p_mw")]
    assert len(kept_load_p) == simbench_net.load.profile.nunique()
    assert len(st["channel_profiles"]) == len(kept)
    # The kept stream values are the original channels, in MW/Mvar.
    snap_rows = smoke_grid.snapshots["time_step"]
    np.testing.assert_allclose(st["values"][snap_rows], values[:, kept], rtol=1e-6)


def test_time_split_is_contiguous_and_ordered():
    split = time_split(1000, 0.75, 0.125)
    assert split.tolist() == [0] * 750 + [1] * 125 + [2] * 125
    with pytest.raises(ValueError):
        time_split(10, 0.95, 0.04)


def test_windows_never_straddle_a_split():
    split = time_split(1000, 0.75, 0.125)
    for which in (0, 1, 2):
        starts = window_starts(split, which, 120)
        assert len(starts) > 0
        for s in starts:
            assert (split[s : s + 120] == which).all()
    assert window_starts(split, 1, 126).size == 0  # longer than the split itself
    assert window_starts(split, 0, 120, stride=24).tolist() == list(range(0, 631, 24))


def test_cached_splits_have_no_leakage(smoke_grid):
    for arrays in (smoke_grid.snapshots, smoke_grid.streams, smoke_grid.trajectories):
        t, s = arrays["time_step"], arrays["split"]
        assert t[s == 0].max() < t[s == 1].min() <= t[s == 1].max() < t[s == 2].min()
    # Snapshots carry the same split as the year they are sampled from: one split for all datasets.
    snaps = smoke_grid.snapshots
    assert (smoke_grid.trajectories["split"][snaps["time_step"]] == snaps["split"]).all()
    assert (smoke_grid.streams["split"] == smoke_grid.trajectories["split"]).all()
    # The test split is the last weeks of the year.
    assert smoke_grid.trajectories["split"][-1] == 2


def test_normalisation_uses_training_rows_only(smoke_grid):
    traj, stats = smoke_grid.trajectories, smoke_grid.stats
    for name in ("vm_pu", "p_inj_pu"):
        mean, std = train_stats(traj[name], traj["split"])
        np.testing.assert_array_equal(stats[f"{name}_mean"], mean)
        np.testing.assert_array_equal(stats[f"{name}_std"], std)
    train = smoke_grid.streams["split"] == 0
    np.testing.assert_allclose(stats["streams_mean"], smoke_grid.streams["values"][train].mean(0), rtol=1e-5, atol=1e-7)
    # With test rows included the statistics differ: the training-only choice is visible.
    assert not np.allclose(stats["streams_mean"], smoke_grid.streams["values"].mean(0), rtol=1e-4)
