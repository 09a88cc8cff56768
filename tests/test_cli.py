"""The CLI skeleton and suite files: help, list, data, and clear errors with exit code 2."""

import subprocess
import sys

import pytest

from bench import suites
from bench.cli import main
from models.errors import ConfigError, UnknownNameError
from models.registry import get_twin, twin_names

from .conftest import SMOKE_GRID

TWINS = ["diffusion-forecaster", "grid-gnn", "sensor-transformer"]


def test_help_through_the_console_script():
    result = subprocess.run([sys.executable, "-m", "bench.cli", "--help"], capture_output=True, text=True)
    assert result.returncode == 0
    assert "data" in result.stdout and "list" in result.stdout


def test_list_shows_twins_suites_and_cache_state(smoke_grid, capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for name in [*TWINS, "smoke", "default", "gpu", "nightly", "full"]:
        assert name in out
    assert f"{SMOKE_GRID:22} cached" in out


def test_data_reuses_a_valid_cache_and_prints_its_path(smoke_grid, capsys):
    assert main(["data", "--suite", "smoke"]) == 0
    captured = capsys.readouterr()
    assert str(smoke_grid.path) in captured.out
    assert "building" not in captured.err


@pytest.mark.parametrize(
    "argv, listed",
    [
        (["data", "--suite", "smokey"], "valid suites: default, full, gpu, gpu-first, nightly, smoke"),
        (["data", "--grid", "1-LV-nowhere"], "valid grids: 1-LV-rural1--2-sw, 1-MV-rural--2-sw, 1-MV-urban--2-sw"),
    ],
)
def test_unknown_names_exit_2_listing_valid_ones(argv, listed, capsys):
    assert main(argv) == 2
    assert listed in capsys.readouterr().err


def test_twin_registry():
    assert twin_names() == TWINS
    with pytest.raises(UnknownNameError, match="valid twins: diffusion-forecaster, grid-gnn, sensor-transformer"):
        get_twin("gnn")


def test_every_suite_file_loads():
    assert suites.suite_names() == ["default", "full", "gpu", "gpu-first", "nightly", "smoke"]
    smoke = suites.load_suite("smoke")
    assert smoke.grids == (SMOKE_GRID,) and smoke.device == "cpu" and set(smoke.twins) == set(TWINS)
    full = suites.load_suite("full")
    assert full.grids == ("1-MV-rural--2-sw", "1-MV-urban--2-sw") and full.measure.window_s >= 5


GOOD_SUITE = """
description = "test"
device = "cpu"
model_size = "smoke"
grids = ["1-LV-rural1--2-sw"]
twins = ["grid-gnn"]
[measure]
window_s = 0.2
repetitions = 3
batch_sizes = [1]
runtimes = ["torch-eager"]
"""


def test_good_suite_file_loads(tmp_path, monkeypatch):
    (tmp_path / "mine.toml").write_text(GOOD_SUITE)
    monkeypatch.setattr(suites, "SUITES_DIR", tmp_path)
    suite = suites.load_suite("mine")
    assert suite.name == "mine" and suite.twins == ("grid-gnn",) and suite.measure.batch_sizes == (1,)


@pytest.mark.parametrize(
    "text, error, message",
    [
        (GOOD_SUITE.replace('"grid-gnn"', '"gnn"'), UnknownNameError, "unknown twin 'gnn'; valid twins"),
        (
            GOOD_SUITE.replace("repetitions = 3", "repetitions = 3\nrepetition = 5"),
            ConfigError,
            r"unknown keys \['measure.repetition'\]",
        ),
        (
            GOOD_SUITE.replace("repetitions = 3", "repetitions = 1"),
            ConfigError,
            "repetitions must be a whole number from 3",
        ),
        (GOOD_SUITE.replace('device = "cpu"', 'device = "tpu"'), ConfigError, "device must be one of"),
        (GOOD_SUITE.replace('description = "test"', ""), ConfigError, "missing key 'description'"),
        (GOOD_SUITE + "[[[", ConfigError, "invalid TOML"),
    ],
)
def test_bad_suite_files_are_clear_errors(tmp_path, monkeypatch, text, error, message):
    (tmp_path / "mine.toml").write_text(text)
    monkeypatch.setattr(suites, "SUITES_DIR", tmp_path)
    with pytest.raises(error, match=message):
        suites.load_suite("mine")
    assert main(["data", "--suite", "mine"]) == 2


def test_library_errors_name_settings_and_the_cli_names_flags(capsys):
    """Issue 22: the library speaks of its request's settings; the command line turns them into flags."""
    from bench.cli.parser import flag_wording
    from bench.run.runner import RunRequest, run

    with pytest.raises(ConfigError, match=r"give `suite` \(or `resume` RUN\)"):
        run(RunRequest())
    assert main(["run"]) == 2 and "error: give --suite (or --resume RUN)" in capsys.readouterr().err
    assert (
        flag_wording("`max_minutes` and `shard_size`, not `unknown`") == "--max-minutes and --shard-size, not `unknown`"
    )
