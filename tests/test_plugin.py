"""A plugin end to end: the example package in tests/plugin_example (twin `transformer-thermal`, which
ships its weights and cannot train, and pass `low-rank`) installed with pip, listed, measured from a
suite file of its own, selected and exported, through the CLI. The CLI runs in subprocesses: a
registry discovers plugins once per process, and no other test may see this one."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bench.cli import main
from bench.records import Record
from models.grid.cache import grid_dir
from tests.conftest import SMOKE_GRID

REPO = Path(__file__).resolve().parents[1]
PLUGIN = Path(__file__).resolve().parent / "plugin_example"
TWIN = "transformer-thermal"
ORIGIN = "twinbench-thermal 0.1.0"

SUITE = f"""
description = "the transformer-thermal plugin twin on the 15-bus grid, CPU"
device = "cpu"
model_size = "smoke"
grids = ["{SMOKE_GRID}"]
twins = ["{TWIN}"]

[measure]
window_s = 0.1
repetitions = 3
batch_sizes = [32]
runtimes = ["torch-eager", "onnxruntime"]

[[variant]]
chain = [{{pass = "low-rank", rank_fraction = 0.5}}]
[[variant]]
chain = [{{pass = "prune-structured", ratio = 0.5, finetune_epochs = 0}}]
[[variant]]
chain = [{{pass = "prune-structured", ratio = 0.5, finetune_epochs = 3}}]
"""


@pytest.fixture(scope="module")
def plugin(tmp_path_factory, smoke_grid) -> dict:
    """The package pip-installed (no dependencies, no build isolation: offline, with the
    environment's setuptools) into a folder of its own, which only this module's subprocesses put on
    their path: other tests running beside them in this environment never discover it. A private
    cache (a copy of the smoke grid) keeps the plugin's cached weights out of the shared one."""
    root = tmp_path_factory.mktemp("plugin")
    source = root / "src"  # pip builds in the source folder: a copy keeps build/ out of the repository
    shutil.copytree(PLUGIN, source, ignore=shutil.ignore_patterns("__pycache__", "build", "*.egg-info"))
    site = root / "site"
    pip = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--no-input",
         "--disable-pip-version-check", "--quiet", "--target", str(site), str(source)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert pip.returncode == 0, pip.stdout + pip.stderr
    cache = root / "cache"
    shutil.copytree(smoke_grid.path, grid_dir(SMOKE_GRID, cache))
    path = os.pathsep.join(p for p in (str(site), os.environ.get("PYTHONPATH")) if p)
    yield {"root": root, "env": {**os.environ, "PYTHONPATH": path, "TWINBENCH_CACHE": str(cache)}}
    shutil.rmtree(root, ignore_errors=True)


def twinbench(plugin: dict, *argv: str, timeout: int = 300) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [sys.executable, "-m", "bench", *argv], cwd=REPO, env=plugin["env"], capture_output=True, text=True,
        timeout=timeout,
    )  # fmt: skip
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc


@pytest.fixture(scope="module")
def plugin_run(plugin) -> Path:
    """The plugin's suite, from a file, measured on the CPU; the file is deleted afterwards, since a
    run's plan.json is all that select and export may need."""
    suite = plugin["root"] / "thermal_suite.toml"
    suite.write_text(SUITE)
    proc = twinbench(plugin, "run", "--suite", str(suite), "--out", str(plugin["root"] / "runs"), "--threads", "1")
    assert proc.returncode == 0, proc.stderr[-3000:]
    suite.unlink()
    (run,) = (plugin["root"] / "runs").glob("*-thermal_suite-*")
    return run


def records_of(run: Path) -> list[Record]:
    return [Record.from_dict(json.loads(line)) for line in (run / "records.jsonl").read_text().splitlines()]


def test_list_shows_the_plugins_twin_and_pass_with_their_package(plugin):
    proc = twinbench(plugin, "list")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    for name in (TWIN, "low-rank"):
        (line,) = [line for line in lines if line.split()[:1] == [name]]
        assert ORIGIN in line, line
    assert "ships trained weights" in next(line for line in lines if line.split()[:1] == [TWIN])


def test_plugin_suite_runs_end_to_end(plugin_run):
    records = records_of(plugin_run)
    by_chain = {}
    for r in records:
        by_chain.setdefault(tuple((s["pass"], s["params"].get("finetune_epochs")) for s in r.lineage), []).append(r)
    assert {r.runtime for r in records} == {"torch-eager", "onnxruntime"} and len(records) == 8
    assert all(r.suite == "thermal_suite" and r.twin == TWIN for r in records)
    ok = [r for chain, rs in by_chain.items() if chain != (("prune-structured", 3),) for r in rs]
    for r in ok:
        assert r.status == "ok", f"{r.variant_name} on {r.runtime}: {r.status_reason}"
        assert r.quality_metric == "hotspot_mae_c" and r.output_checksum_match and r.energy_j_per_inference > 0
    (reference,) = [r for r in by_chain[()] if r.runtime == "torch-eager"]
    assert reference.quality_value < 0.4  # degC; persistence is 0.51 on this test split (see the twin's docstring)
    # The plugin pass and the twin's own pruning rule really shrink the model.
    for chain in ((("low-rank", None),), (("prune-structured", 0),)):
        for r in by_chain[chain]:
            assert (
                r.params < reference.params and r.model_info["linear_shapes"] != reference.model_info["linear_shapes"]
            )
    for r in by_chain[(("prune-structured", 3),)]:  # recovery training, for a twin that cannot train
        assert r.status == "unsupported" and "cannot train" in r.status_reason, r.status_reason
    summary = (plugin_run / "summary.md").read_text()
    assert f"## {TWIN} on {SMOKE_GRID}, batch 32" in summary
    rows = [line for line in summary.splitlines() if line.startswith("| ") and "| E" in line]
    assert rows, summary  # the energy frontier is marked
    assert "unsupported (twin transformer-thermal cannot train" in summary
    assert json.loads((plugin_run / "plan.json").read_text())["suite"] == "thermal_suite"


def test_select_exports_a_plugin_variant_without_the_suite_file(plugin, plugin_run, tmp_path):
    out = tmp_path / "chosen"
    proc = twinbench(plugin, "select", "--run", str(plugin_run), "--twin", TWIN, "--max-quality-loss-pct", "20",
                     "--export", str(out))  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "chosen: " in proc.stdout
    card = json.loads((out / "model_card.json").read_text())
    (chosen,) = [
        r for r in records_of(plugin_run) if r.cell_key.endswith(f"/{card['variant_id']}/{card['runtime']}/cpu/bs32")
    ]
    assert chosen.status == "ok" and chosen.quality_loss_pct <= 20 and card["quality"]["value"] == chosen.quality_value
    assert card["twin"] == TWIN and all((out / name).is_file() for name in card["files"])
    assert any(name.endswith(".onnx") for name in card["files"]) == (chosen.runtime == "onnxruntime")


def test_a_plugin_pass_variant_exports_and_rebuilds_from_its_weights(plugin, plugin_run, tmp_path):
    """The low-rank torch variant (a record set holding only it, beside the run's plan.json): exported
    as safetensors + lineage, rebuilt by replaying the plugin's pass, same quality as measured."""
    (low_rank,) = [r for r in records_of(plugin_run) if r.runtime == "torch-eager" and r.lineage
                   and r.lineage[0]["pass"] == "low-rank"]  # fmt: skip
    only = plugin_run / "low_rank_torch.jsonl"
    only.write_text(low_rank.to_json() + "\n")
    out = tmp_path / "low-rank"
    proc = twinbench(plugin, "select", "--records", str(only), "--twin", TWIN, "--max-quality-loss-pct", "50",
                     "--export", str(out))  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in out.iterdir()) == ["model_card.json", "variant.json", "weights.safetensors"]
    assert json.loads((out / "variant.json").read_text())["chain"] == [{"pass": "low-rank", "rank_fraction": 0.5}]
    rebuild = (
        "import json, sys; from pathlib import Path; from compress.replay import load_exported; "
        "from models.export import torch_predict_fn; from models.grid.cache import load_grid; "
        "from models.registry import get_twin; d = Path(sys.argv[1]); m = load_exported(d); "
        "spec = json.loads((d / 'variant.json').read_text()); cls = get_twin(spec['reference']['twin']); "
        "t = cls(load_grid(spec['reference']['grid']), cls.config_for(spec['model_size'])); "
        "print(json.dumps([t.evaluate(torch_predict_fn(m)).value, sum(p.numel() for p in m.parameters())]))"
    )
    proc = subprocess.run([sys.executable, "-c", rebuild, str(out)], cwd=REPO, env=plugin["env"], capture_output=True,
                          text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    quality, params = json.loads(proc.stdout.splitlines()[-1])
    assert quality == pytest.approx(low_rank.quality_value, rel=1e-6) and params == low_rank.params
    # Away from its run folder, a suite file's model size is unknown: a message, not a traceback.
    away = tmp_path / "records.jsonl"
    shutil.copyfile(only, away)
    proc = twinbench(plugin, "select", "--records", str(away), "--twin", TWIN, "--max-quality-loss-pct", "50",
                     "--export", str(tmp_path / "away"))  # fmt: skip
    assert proc.returncode == 2 and "select from the run folder" in proc.stderr, proc.stderr


GOOD_PASS = '[[variant]]\nchain = [{pass = "prune-unstructured", amount = 0.5}]\n'


def _suite(twin: str = "grid-gnn", tail: str = GOOD_PASS) -> str:
    return SUITE.split("[[variant]]")[0].replace(TWIN, twin) + tail


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda d: d / "missing.toml", "no such suite file"),
        (lambda d: d, "is a folder, not a suite file"),
        (lambda d: _write(d / "notes.toml", "this is not [ TOML"), "invalid TOML"),
        (lambda d: _write(d / "binary.toml", b"\xff\xfe\x00\x01"), "not a TOML text file"),
        (lambda d: _write(d / "plugin.toml", _suite(twin=TWIN)), "unknown twin 'transformer-thermal'"),
        (lambda d: _write(d / "pass.toml", _suite(tail='[[variant]]\nchain = [{pass = "low-rank"}]\n')),
         "unknown pass 'low-rank'"),
        (lambda d: _write(d / "typed.toml", _suite().replace("repetitions = 3", "repetitions = [3]")),
         "repetitions must be a whole number"),
        (lambda d: _write(d / "smoke.toml", _suite()), "has the name of the built-in suite"),
        (lambda d: _write(d / "my suite.toml", _suite()), "rename the file"),
    ],
    ids=["missing", "folder", "not-toml", "binary", "unknown-twin", "unknown-pass", "wrong-type", "built-in-name",
         "bad-name"],
)  # fmt: skip
def test_a_bad_suite_file_is_a_clear_error(tmp_path, capsys, make, message):
    path = make(tmp_path)
    assert main(["run", "--suite", str(path), "--out", str(tmp_path / "runs")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err, err
    assert not (tmp_path / "runs").exists()


def test_a_suite_file_loads_under_its_stem(tmp_path):
    from bench.suites import load_suite

    suite = load_suite(_write(tmp_path / "mine.toml", _suite()))
    assert suite.name == "mine" and suite.twins == ("grid-gnn",) and len(suite.variants) == 1
    assert load_suite("smoke").name == "smoke"  # built-in names still work


def _write(path: Path, content: str | bytes) -> Path:
    (path.write_bytes if isinstance(content, bytes) else path.write_text)(content)
    return path
