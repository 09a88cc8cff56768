"""Issue 24 item 3: profiles with the gaps and resolutions meters deliver, treated only as the user
chooses (--fill-gaps DURATION, --resample), each rule with its exact message; what was done is kept
in the manifest and carried by records into the summary and the report.

The rules run on small synthetic series (models/grid/timeline.py); the command line on the smoke
net cut to four weeks (tests/twins/conftest.py), under a private cache."""

import numpy as np
import pandas as pd
import pytest

from bench import suites
from bench.cli import main
from bench.decide import report, summary
from bench.records import Record
from models.errors import ConfigError, DataError
from models.grid import load_grid
from models.grid.cache import grid_dir
from models.grid.source import ProfilePolicy, parse_fill_gaps, source_from_manifest, user_grid
from models.grid.timeline import check_gaps, check_steps, treat

HOUR = ProfilePolicy(fill_gaps_minutes=60)
LOAD = "load:2:p_mw"


def _times(n: int, freq: str = "15min", start: str = "2016-01-01"):
    return pd.DatetimeIndex(pd.date_range(start, periods=n, freq=freq))


def _treated(stamps, values, policy, log=None):
    """treat, then the checks file_profiles runs after it."""
    stamps, columns, treatment = treat(stamps, {LOAD: np.asarray(values, float)}, policy, "p.csv", log or print)
    check_steps(stamps, "p.csv", "step", policy=policy)
    check_gaps(columns, stamps, "p.csv", policy=policy)
    return stamps, columns[LOAD], treatment


# --- the rules ---------------------------------------------------------------------------------


def test_gaps_up_to_the_limit_are_filled_linearly_in_time():
    values = np.arange(40.0) ** 2
    values[5:9] = np.nan  # 4 steps = 1 h: filled
    values[20] = np.nan
    lines = []
    _, filled, treatment = _treated(_times(40), values, HOUR, lines.append)
    before, after = 4.0**2, 9.0**2
    np.testing.assert_allclose(filled[5:9], before + (after - before) * np.arange(1, 5) / 5)
    assert filled[20] == (19.0**2 + 21.0**2) / 2
    assert treatment == {
        "filled": {
            "values": 5,
            "gaps": 2,
            "longest_gap_minutes": 60,
            "limit_minutes": 60,
            "how": "linear in time between the readings either side",
            "rows_inserted": 0,
        }
    }
    assert lines == [
        "p.csv: filled 5 value(s) in 2 gap(s) (longest 60 min, 0 missing row(s) inserted) by interpolation in time"
    ]


def test_a_longer_gap_is_refused_whole_and_listed():
    """Unlike pandas' interpolate(limit=4), a 5-step gap is not filled in part: it is refused."""
    values = np.ones(40)
    values[5:10] = np.nan
    values[0] = np.nan  # at the start: nothing to interpolate from
    with pytest.raises(DataError) as e:
        _treated(_times(40), values, HOUR)
    assert str(e.value) == (
        "p.csv: 2 gap(s) left: load:2:p_mw from 2016-01-01 00:00:00, 1 step(s); load:2:p_mw from "
        "2016-01-01 01:15:00, 5 step(s). gaps up to 60 min inside the series were filled; longer gaps, and gaps "
        "at the start or end (nothing to interpolate from), are not filled: fill them yourself, drop those rows, "
        "or allow longer gaps with `fill_gaps`"
    )


def test_missing_rows_are_inserted_and_filled_or_refused_beyond_the_limit():
    values = np.arange(40.0)
    keep = np.r_[0:10, 13:40]  # 3 rows missing
    stamps, filled, treatment = _treated(_times(40)[keep], values[keep], HOUR)
    assert (stamps == _times(40)).all() and np.allclose(filled, values)
    assert treatment["filled"]["rows_inserted"] == 3 and treatment["filled"]["longest_gap_minutes"] == 45
    keep = np.r_[0:10, 16:40]  # 6 rows missing
    with pytest.raises(DataError) as e:
        _treated(_times(40)[keep], values[keep], HOUR)
    assert str(e.value) == (
        "p.csv: twinbench's twins need one step every 15 minutes, but step 10 (2016-01-01 04:00:00) comes "
        "1 h 45 min after the step before it (6 missing step(s), more than the 60 min `fill_gaps` fills)"
    )


def test_without_a_policy_gaps_and_missing_rows_are_refused_naming_the_option():
    keep = np.r_[0:10, 13:40]
    with pytest.raises(DataError, match=r"comes 1 h after the row before it \(3 missing step\(s\): `fill_gaps` fills"):
        check_steps(_times(40)[keep], "p.csv", "row", first_row=2)


def test_a_wall_clock_jump_of_75_minutes_is_a_dst_change_only_at_0145():
    """Wall-clock times jump 01:45 -> 03:00 in spring; the same jump at noon is 4 missing rows."""
    spring = pd.DatetimeIndex(["2016-03-27 01:30", "2016-03-27 01:45", "2016-03-27 03:00", "2016-03-27 03:15"])
    check_steps(spring, "p.csv", "row")
    noon = pd.DatetimeIndex(["2016-03-27 11:30", "2016-03-27 11:45", "2016-03-27 13:00", "2016-03-27 13:15"])
    with pytest.raises(DataError, match="comes 1 h 15 min after the row before it"):
        check_steps(noon, "p.csv", "row")
    autumn = pd.DatetimeIndex(["2016-10-30 02:30", "2016-10-30 02:45", "2016-10-30 02:00", "2016-10-30 02:15"])
    check_steps(autumn, "p.csv", "row")


def test_five_minute_readings_are_averaged_with_resample():
    values = np.repeat(np.arange(40.0), 3) + np.tile([-1.0, 0.0, 1.0], 40)  # mean of each 15 min: 0, 1, 2, ...
    values[6] = np.nan  # one reading missing (step 2: 1, 2, 3): the mean of the other two, 2.5
    lines = []
    stamps, means, treatment = _treated(_times(120, "5min"), values, ProfilePolicy(resample=True), lines.append)
    assert (stamps == _times(40)).all()
    np.testing.assert_allclose(means, np.r_[np.arange(2.0), 2.5, np.arange(3.0, 40)])
    assert treatment == {
        "resampled": {
            "from_minutes": 5.0,
            "rows_in": 120,
            "steps_out": 40,
            "how": "mean of the readings stamped in [t, t + 15 min)",
            "steps_with_missing_readings": 1,
        }
    }
    assert lines == [
        "p.csv: resampled 120 rows every 5 min to 40 steps of 15 min (mean); 1 step(s) had fewer than 3 readings"
    ]


def test_five_minute_readings_without_resample_name_the_option():
    with pytest.raises(DataError) as e:
        check_steps(_times(120, "5min"), "p.csv", "row", first_row=2)
    assert str(e.value) == (
        "p.csv: twinbench's twins need one step every 15 minutes, but row 3 (2016-01-01 00:05:00) comes 5 min "
        "after the row before it (the data is every 5 min: build with `resample` to average it to 15 minutes)"
    )


@pytest.mark.parametrize("policy", [ProfilePolicy(), ProfilePolicy(resample=True)])
def test_hourly_readings_are_refused_with_the_command_that_would_resample_them(policy):
    with pytest.raises(DataError) as e:
        _treated(_times(100, "1h"), np.ones(100), policy) if policy.resample else check_steps(
            _times(100, "1h"), "p.csv", "row", first_row=2
        )
    assert "frame.set_index('time').resample('15min').interpolate(method='time')" in str(e.value)
    assert "values between readings would be invented" in str(e.value)


def test_a_wall_clock_repeat_cannot_be_resampled():
    stamps = pd.DatetimeIndex(
        list(pd.date_range("2016-10-30 02:00", "2016-10-30 02:55", freq="5min")) * 2
    )  # naive: the autumn hour twice
    with pytest.raises(DataError, match="resampling needs instants: give the times with their UTC offset"):
        _treated(stamps, np.ones(len(stamps)), ProfilePolicy(resample=True))


@pytest.mark.parametrize(
    ("text", "minutes"), [("1h", 60), ("45min", 45), ("1 hour", 60), ("PT2H", 120), ("1 day", 1440), ("20min", 20)]
)
def test_fill_gaps_reads_durations(text, minutes):
    assert parse_fill_gaps(text) == minutes
    assert ProfilePolicy(minutes).fill_steps == minutes // 15


@pytest.mark.parametrize("text", ["", "abc", "nan", "NaT", "-1h", "10min", "0", "2 days", "1e300 days", "inf"])
def test_fill_gaps_refuses_what_is_not_a_sane_duration(text):
    with pytest.raises(ConfigError, match="`fill_gaps` must be"):
        parse_fill_gaps(text)


def test_a_policy_makes_another_grid_and_is_read_back_from_the_manifest(tmp_path):
    plain = user_grid(tmp_path / "net.json", tmp_path / "p.csv")
    filled = user_grid(tmp_path / "net.json", tmp_path / "p.csv", policy=HOUR)
    assert plain.name != filled.name and filled.policy == HOUR
    manifest = {
        "grid": filled.name,
        "source": {
            "inputs": [
                {"role": "net", "path": filled.given[0], "resolved": str(filled.net)},
                {"role": "profiles", "path": filled.given[1], "resolved": str(filled.profiles)},
            ],
            "policy": HOUR.as_dict(),
        },
    }
    assert source_from_manifest(manifest) == filled
    with pytest.raises(ConfigError, match="`fill_gaps` and `resample` treat a profiles file"):
        user_grid(tmp_path / "net.json", policy=HOUR)


# --- the command line --------------------------------------------------------------------------


def _profiles(files, tmp_path, edit, name="p.csv"):
    frame = edit(pd.read_csv(files / "feeder-profiles.csv"))
    frame.to_csv(tmp_path / name, index=False)
    return tmp_path / name


def _data(files, profiles, *options) -> int:
    return main(["data", "--grid", str(files / "bare.json"), "--profiles", str(profiles), *options])


def _gappy(frame):
    frame.loc[100:102, LOAD] = np.nan  # 3 values
    return frame.drop(index=[500, 501])  # 2 rows


def test_data_fills_gaps_only_when_asked_and_records_it(env, files, tmp_path, capsys):
    profiles = _profiles(files, tmp_path, _gappy)
    assert _data(files, profiles) == 2
    err = capsys.readouterr().err
    assert "comes 45 min after the row before it (2 missing step(s): --fill-gaps fills short gaps" in err
    assert "Traceback" not in err
    assert _data(files, profiles, "--fill-gaps", "1h") == 0
    columns = len(pd.read_csv(profiles, nrows=1).columns) - 1
    filled = f"filled {3 + 2 * columns} value(s) in 2 gap(s) (longest 45 min, 2 missing row(s) inserted)"
    assert filled in capsys.readouterr().err
    data = load_grid(user_grid(files / "bare.json", profiles, policy=HOUR).name)
    assert data.manifest["source"]["policy"] == {"fill_gaps_minutes": 60, "resample": False}
    assert data.manifest["source"]["treatment"]["filled"]["values"] == 3 + 2 * columns
    assert data.provenance == {
        "content_hash": data.content_hash,
        "policy": data.manifest["source"]["policy"],
        "treatment": data.manifest["source"]["treatment"],
    }
    assert data.manifest["sizes"]["snapshots"] == 4 * 7 * 96  # the 2 missing rows are back
    assert main(["data", "--grid", data.grid]) == 0  # by name: the manifest's policy, not a rebuild
    assert "building" not in capsys.readouterr().err


def test_data_refuses_a_gap_longer_than_the_limit(env, files, tmp_path, capsys):
    profiles = _profiles(files, tmp_path, lambda f: f.assign(**{LOAD: f[LOAD].mask(f.index.isin(range(50, 56)))}))
    assert _data(files, profiles, "--fill-gaps", "1h") == 2
    err = capsys.readouterr().err
    assert "1 gap(s) left: load:2:p_mw from 2016-01-01 12:30:00, 6 step(s)" in err
    assert "or allow longer gaps with --fill-gaps" in err and "Traceback" not in err
    assert not grid_dir(user_grid(files / "bare.json", profiles, policy=HOUR).name).exists()


def _five_minute(frame):
    """Each 15-minute row as three 5-minute readings of the same power: their mean is the row."""
    frame = frame.loc[frame.index.repeat(3)].reset_index(drop=True)
    times = pd.to_datetime(frame.time) + pd.to_timedelta(np.tile([0, 5, 10], len(frame) // 3), unit="min")
    return frame.assign(time=times.dt.strftime("%Y-%m-%d %H:%M"))


def test_data_resamples_five_minute_readings_only_when_asked(env, files, tmp_path, capsys):
    profiles = _profiles(files, tmp_path, _five_minute)
    assert _data(files, profiles) == 2
    assert "build with --resample to average it to 15 minutes" in capsys.readouterr().err
    assert _data(files, profiles, "--resample") == 0
    assert "resampled 8064 rows every 5 min to 2688 steps of 15 min (mean)" in capsys.readouterr().err
    mine = load_grid(user_grid(files / "bare.json", profiles, policy=ProfilePolicy(resample=True)).name)
    assert mine.manifest["source"]["treatment"]["resampled"]["steps_with_missing_readings"] == 0
    assert _data(files, files / "feeder-profiles.csv") == 0
    theirs = load_grid(user_grid(files / "bare.json", files / "feeder-profiles.csv").name)
    np.testing.assert_allclose(mine.trajectories["vm_pu"], theirs.trajectories["vm_pu"], atol=1e-9)


def test_data_refuses_hourly_readings_even_with_resample(env, files, tmp_path, capsys):
    profiles = _profiles(files, tmp_path, lambda f: f.iloc[::4])
    assert _data(files, profiles, "--resample") == 2
    err = capsys.readouterr().err
    assert "--resample averages readings finer than 15 minutes that divide it" in err
    assert "resample('15min').interpolate(method='time')" in err and "Traceback" not in err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--grid", "1-LV-rural1--2-sw", "--fill-gaps", "1h"], "--fill-gaps and --resample go with the files"),
        (["--grid", "FILES/feeder.json", "--resample"], "--fill-gaps and --resample treat a profiles file"),
        (["--fill-gaps", "1h"], "--fill-gaps and --resample treat a profiles file: --grid NET.json --profiles FILE"),
        (["--grid", "FILES/bare.json", "--fill-gaps", "5min"], "argument --fill-gaps: must be between 15 minutes"),
        (["--grid", "FILES/bare.json", "--fill-gaps", "nan"], "argument --fill-gaps: must be a duration such as 1h"),
    ],
)
def test_a_policy_without_a_profiles_file_or_a_bad_duration_is_exit_2(env, files, capsys, argv, message):
    assert main(["data", *(a.replace("FILES", str(files)) for a in argv)]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_a_suite_names_the_policy_beside_its_files(files, tmp_path):
    path = tmp_path / "mine.toml"
    body = 'description = "x"\ndevice = "cpu"\nmodel_size = "smoke"\ntwins = ["grid-gnn"]\n[measure]\n'
    body += 'window_s = 0.2\nrepetitions = 3\nbatch_sizes = [1]\nruntimes = ["torch-eager"]\n'
    grid = (
        f'grids = [{{net = "{files / "bare.json"}", profiles = "{files / "feeder-profiles.csv"}", fill_gaps = "1h"}}]\n'
    )
    path.write_text(grid + body)
    suite = suites.load_suite(str(path))
    source = suite.grid_source(suite.grids[0])
    assert source == user_grid(files / "bare.json", files / "feeder-profiles.csv", policy=HOUR)
    path.write_text(grid.replace('"1h"', '"a week"') + body)
    with pytest.raises(ConfigError, match="must be a duration such as 1h or 45min, got 'a week'"):
        suites.load_suite(str(path))


# --- records carry it into the summary and the report ------------------------------------------


def test_records_carry_the_treatment_into_summary_and_report():
    treatment = {
        "filled": {"values": 5, "gaps": 2, "longest_gap_minutes": 45, "limit_minutes": 60, "rows_inserted": 2},
        "resampled": {"from_minutes": 5.0, "rows_in": 8064, "steps_out": 2688},
    }
    grid_data = {
        "content_hash": "abc123",
        "policy": {"fill_gaps_minutes": 60, "resample": True},
        "treatment": treatment,
    }
    record = Record(
        run_id="r",
        suite="s",
        twin="grid-gnn",
        grid="bare-12345678",
        variant_id="v",
        variant_name="ref",
        grid_data=grid_data,
    )
    text = summary.render([record], {"energy_meter": "estimate"})
    assert (
        "grid bare-12345678: profiles resampled from 5.0 min to 15 min by the mean (8064 rows -> 2688 steps); "
        "5 value(s) filled in 2 gap(s) by interpolation in time (longest 45 min, limit 60 min)"
    ) in text
    page = report.render([record], {"energy_meter": "estimate"}, "t")
    assert "grid bare-12345678" in page and "&#34;rows_inserted&#34;: 2" in page
    assert Record.from_dict(json_roundtrip(record)).grid_data == grid_data


def json_roundtrip(record):
    import json

    return json.loads(record.to_json())
