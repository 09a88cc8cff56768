"""Misuse, as a careless user or an attacker would try it: every bad input is a message and exit 2
(1 for a verdict), never a traceback, and nothing a user already has is lost or overwritten."""

import json
import math
import subprocess
import sys
from dataclasses import replace

import pytest

from bench.cli import main
from bench.decide.compare import compare
from bench.decide.export import export
from bench.decide.select import Constraints, select
from bench.run.runner import RunRequest, run
from bench.store import RunDir, new_run_id, promote_baseline, run_folders
from models.errors import ConfigError, InputError
from tests.conftest import SMOKE_GRID
from tests.decide.test_decide import RECORDS, _write_run

NAN_AND_FRIENDS = ["nan", "inf", "-inf", "NaN"]


@pytest.mark.parametrize(
    "argv",
    [
        *[["select", "--run", "R", "--twin", "grid-gnn", "--max-quality-loss-pct", v] for v in NAN_AND_FRIENDS],
        ["select", "--run", "R", "--twin", "grid-gnn", "--max-quality-loss-pct", "1", "--max-latency-ms-p99", "nan"],
        ["select", "--run", "R", "--twin", "grid-gnn", "--max-quality-loss-pct", "1", "--max-memory-mb", "0"],
        ["select", "--run", "R", "--twin", "grid-gnn", "--max-quality-loss-pct", "1", "--batch-size", "0"],
        ["select", "--run", "R", "--twin", "grid-gnn", "--max-quality-loss-pct", "-101"],
        *[["compare", "A", "B", "--threshold-pct", v] for v in NAN_AND_FRIENDS],
        ["compare", "A", "B", "--threshold-pct", "-5"],
        ["compare", "A", "B", "--quality-threshold-pct", "nan"],
        ["nightly", "--threshold-pct", "nan"],
        *[["run", "--suite", "smoke", "--max-minutes", v] for v in [*NAN_AND_FRIENDS, "0", "-1"]],
        *[["run", "--suite", "smoke", "--threads", v] for v in ["0", "-1", "100000", "1.5", "nan"]],
    ],
)
def test_numeric_options_must_be_finite_and_in_range(argv, capsys):
    """Item 4: NaN compares false with every limit; unchecked, it turned checks off."""
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "error: argument" in err and "Traceback" not in err


def test_nan_is_refused_by_the_api_too(tmp_path):
    with pytest.raises(ConfigError):
        Constraints(max_quality_loss_pct=math.nan)
    with pytest.raises(ConfigError):
        Constraints(max_quality_loss_pct=1.0, max_latency_ms_p99=math.inf)
    with pytest.raises(ConfigError):
        compare(RECORDS, RECORDS, threshold_pct=math.nan)
    with pytest.raises(ConfigError):
        run(RunRequest(suite="smoke", max_minutes=math.nan, out=tmp_path))
    assert list(tmp_path.iterdir()) == []


def test_a_cut_last_line_is_refused_by_every_reader_and_repaired_before_appending(tmp_path, capsys):
    """Item 5: a line cut mid-write used to swallow the next record appended after it."""
    path = _write_run(tmp_path, "run", RECORDS)
    whole = (path / "records.jsonl").read_bytes()
    cut = RECORDS[0].to_json()[:57]
    (path / "records.jsonl").write_bytes(whole + cut.encode())
    argvs = [
        ["report", str(path)],
        ["select", "--run", str(path), "--twin", "grid-gnn", "--max-quality-loss-pct", "1"],
        ["compare", str(path), str(path)],
        ["baseline", "--run", str(path)],
    ]
    for argv in argvs:  # every command reads records the same way
        assert main(argv) == 2, argv
        assert f"line {len(RECORDS) + 1}: unfinished" in capsys.readouterr().err
    run_dir = RunDir.open(path)
    assert "unfinished line" in run_dir.repair()
    assert (path / "records.jsonl.partial").read_text() == cut + "\n"  # kept as evidence, not destroyed
    extra = replace(RECORDS[0], variant_id="late", variant_name="late")
    run_dir.append([extra])
    assert [r.variant_id for r in run_dir.records()] == [r.variant_id for r in RECORDS] + ["late"]
    assert run_dir.repair() is None  # nothing left to repair


@pytest.mark.parametrize(
    "line, why",
    [("[1, 2]", "a record is a JSON object"), ('"text"', "JSON object"), ("{not json", "Expecting"),
     (json.dumps({**json.loads(RECORDS[0].to_json()), "batch_size": "1"}), "batch_size"),
     (json.dumps({**json.loads(RECORDS[0].to_json()), "flags": "x"}), "flags"),
     (json.dumps({**json.loads(RECORDS[0].to_json()), "flags": [1]}), "flags"),
     (json.dumps({**json.loads(RECORDS[0].to_json()), "lineage": ["prune"]}), "lineage")],
)  # fmt: skip
def test_a_malformed_line_is_the_same_error_everywhere(tmp_path, capsys, line, why):
    path = _write_run(tmp_path, "run", RECORDS)
    with open(path / "records.jsonl", "a") as f:
        f.write(line + "\n")
    n = len(RECORDS) + 1
    for argv in (["report", str(path)], ["compare", str(path), str(path)], ["baseline", "--run", str(path)],
                 ["select", "--records", str(path / "records.jsonl"), "--twin", "grid-gnn",
                  "--max-quality-loss-pct", "1"]):  # fmt: skip
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert f"line {n}: not a twinbench record" in err and why in err and "Traceback" not in err


def test_run_ids_do_not_collide_and_a_live_run_is_locked(tmp_path, capsys):
    """Item 6: two runs started in the same second shared a folder; a live run could be resumed."""
    assert len({new_run_id("smoke") for _ in range(200)}) == 200
    path = _write_run(tmp_path, "live", RECORDS)
    holder = subprocess.Popen(
        [sys.executable, "-c", f"import filelock, time; lock = filelock.FileLock({str(path / '.lock')!r}); lock.acquire(); "
                               "print('locked', flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "locked"
        before = (path / "records.jsonl").read_bytes()
        assert main(["run", "--resume", str(path)]) == 2
        assert "is live" in capsys.readouterr().err
        assert (path / "records.jsonl").read_bytes() == before
    finally:
        holder.kill()
        holder.wait()
    with pytest.raises(InputError, match="already exists"):
        RunDir.create(tmp_path, "live")


def test_export_refuses_a_non_empty_folder_and_paths_outside_the_run(tmp_path):
    """Item 7: export replaced the user's files and copied whatever file a record named."""
    run_path = _write_run(tmp_path, "run", RECORDS)
    (run_path / "artifacts").mkdir()
    secret = tmp_path / "secret.txt"
    secret.write_text("not a model")
    target = tmp_path / "mine"
    target.mkdir()
    (target / "weights.safetensors").write_text("the user's own file")
    chosen = replace(RECORDS[1], artifact_path="artifacts/int8.onnx", artifact_sha256="0" * 64)
    sel = select([chosen], "grid-gnn", Constraints(max_quality_loss_pct=5))
    with pytest.raises(InputError, match="not empty"):
        export(sel, target, {}, run_path)
    assert (target / "weights.safetensors").read_text() == "the user's own file"
    for hostile in (str(secret), "../secret.txt", "artifacts/../../secret.txt"):
        sel = select([replace(chosen, artifact_path=hostile)], "grid-gnn", Constraints(max_quality_loss_pct=5))
        with pytest.raises(InputError, match="outside its run folder"):
            export(sel, tmp_path / "out", {}, run_path)
    assert not (tmp_path / "out").exists()  # a refused export leaves no folder behind
    with pytest.raises(InputError, match="needs the run folder"):  # a baseline file has no artifacts
        export(sel, tmp_path / "out", {}, None)
    with pytest.raises(InputError, match="is a file"):
        export(sel, secret, {}, run_path)
    old = select([RECORDS[1]], "grid-gnn", Constraints(max_quality_loss_pct=5))  # no hashes: schema 1
    with pytest.raises(InputError, match="names no weights hash"):
        export(old, tmp_path / "out", {}, run_path)


def test_baseline_that_would_cover_less_needs_force(tmp_path, capsys):
    full = _write_run(tmp_path, "full", RECORDS)
    partial = _write_run(tmp_path, "partial", [r for r in RECORDS if r.variant_id != "int8"])
    root = tmp_path / "baselines"
    path, _ = promote_baseline(full, root)
    with pytest.raises(InputError, match="does not measure 1 of the 5 cells.*--force"):
        promote_baseline(partial, root)
    assert len(json.loads(path.read_text())["records"]) == len(RECORDS)  # untouched
    assert promote_baseline(partial, root, force=True)[1] == "base"
    assert len(json.loads(path.read_text())["records"]) == len(RECORDS) - 1


@pytest.mark.parametrize("damage", ["a list", "a string", "files as a list", "packages as a list"])
def test_a_malformed_manifest_is_a_message(cache_copy, monkeypatch, capsys, damage):
    manifest_path = cache_copy / "grids" / SMOKE_GRID / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    bad = {"a list": [1, 2], "a string": "x", "files as a list": {**manifest, "files": []},
           "packages as a list": {**manifest, "packages": ["pandapower"]}}[damage]  # fmt: skip
    manifest_path.write_text(json.dumps(bad))
    monkeypatch.setenv("TWINBENCH_CACHE", str(cache_copy))
    assert main(["predict", "--twin", "grid-gnn", "--out", str(cache_copy / "p.npz")]) == 2
    err = capsys.readouterr().err
    assert ("cache" in err or "manifest" in err) and "twinbench data --grid" in err and "Traceback" not in err
    assert main(["list"]) == 0
    assert "not usable" in capsys.readouterr().out


def _bad_inputs(tmp_path):
    """(argv, exit code, message) for each subcommand's bad inputs."""
    run_path = _write_run(tmp_path, "run", RECORDS)
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    not_a_run = tmp_path / "empty"
    not_a_run.mkdir()
    plans = {}
    for name, text in {"list": "[1, 2]", "garbage": "{oops", "empty": "{}", "types": '{"suite": 3}'}.items():
        plans[name] = tmp_path / f"plan-{name}"
        plans[name].mkdir()
        (plans[name] / "plan.json").write_text(text)
    baseline_list = tmp_path / "list.json"
    baseline_list.write_text("[1, 2]")
    sel = ["select", "--run", str(run_path), "--twin", "grid-gnn", "--max-quality-loss-pct", "1"]
    return [
        (["run", "--suite", "smoke", "--out", str(a_file)], 2, "is a file"),
        (["run", "--resume", str(tmp_path / "missing")], 2, "not a twinbench run"),
        (["run", "--resume", str(a_file)], 2, "not a twinbench run"),
        (["run", "--resume", str(plans["list"])], 2, "must hold a JSON object"),
        (["run", "--resume", str(plans["garbage"])], 2, "not valid JSON"),
        (["run", "--resume", str(plans["empty"])], 2, "malformed plan.json"),
        (["run", "--resume", str(plans["types"])], 2, "malformed plan.json"),
        (["run"], 2, "give --suite"),
        (["report", str(tmp_path / "missing")], 2, "not a twinbench run"),
        (["report", str(not_a_run)], 2, "not a twinbench run"),
        (["report", str(a_file)], 2, "not a twinbench run"),
        ([*sel, "--export", str(a_file)], 2, "is a file"),
        ([*sel[:2], str(a_file), *sel[3:]], 2, "not a twinbench run"),
        (["select", "--records", str(baseline_list), *sel[3:]], 2, "not a twinbench baseline"),
        (["compare", str(run_path), str(baseline_list)], 2, "not a twinbench baseline"),
        (["compare", str(run_path), str(not_a_run)], 2, "not a twinbench run"),
        (["baseline", "--run", str(tmp_path / "missing")], 2, "no run folder"),
        (["history", "--twin", "grid-gnn", "--runs", str(a_file)], 2, "no history"),
        (["history", "--rebuild", "--runs", str(a_file)], 2, "no runs folder"),
        (["history"], 2, "give --twin"),
        (["train", "--device", "cuda", "--twin", "grid-gnn"], 2, "CUDA is not available"),
        (["predict", "--twin", "grid-gnn", "--out", str(tmp_path)], 2, "is a folder"),
        (["data", "--grid", "<script>"], 2, "unknown grid"),
        (["select", "--run", str(run_path), "--twin", "x\x1b[31m", "--max-quality-loss-pct", "1"], 2, "unknown twin"),
    ]


def test_every_subcommand_answers_bad_input_with_a_message(tmp_path, capsys):
    """Item 10: the same kind of input, the same exit code, and never a traceback."""
    import torch

    for argv, code, message in _bad_inputs(tmp_path):
        if argv[0] == "train" and torch.cuda.is_available():
            continue
        assert main(argv) == code, argv
        captured = capsys.readouterr()
        assert message in captured.err, (argv, captured.err)
        assert "Traceback" not in captured.err + captured.out


def _cuda_graph_run(variant: str, out) -> list[str]:
    """A real run of the GNN on the CUDA-graph runtime: its cells are unsupported on CPU, so it is
    fast, yet it builds the variant and writes records, a summary, a report and the history."""
    return ["run", "--suite", "smoke", "--twin", "grid-gnn", "--variant", variant,
            "--runtime", "torch-compile-cudagraphs", "--out", str(out)]  # fmt: skip


def test_a_corrupt_history_never_blocks_a_run_and_is_rebuilt(tmp_path, smoke_grid, capsys):
    """Items 9 and 11: the history is a cache of the records in the runs folder a run wrote to."""
    runs = tmp_path / "runs"
    runs.mkdir()
    (runs / "history.sqlite").write_bytes(b"this is not a database" * 100)
    argv = _cuda_graph_run("reference", runs)
    assert main(argv) == 0
    captured = capsys.readouterr()
    assert "history" in captured.err and "--rebuild" in captured.err
    (run_path,) = run_folders(runs)
    assert (run_path / "summary.md").is_file() and len(RunDir.open(run_path).records()) == 2
    assert main(["history", "--twin", "grid-gnn", "--runs", str(runs)]) == 2
    assert "--rebuild" in capsys.readouterr().err
    assert main(["history", "--rebuild", "--runs", str(runs)]) == 0
    assert "2 records of 1 runs" in capsys.readouterr().out
    assert main(["history", "--twin", "grid-gnn", "--runs", str(runs)]) == 0
    assert capsys.readouterr().out.count("| reference (fp32) |") == 2
    (aside,) = runs.glob("history.sqlite.old-*")  # the corrupt file is kept, not deleted
    assert aside.read_bytes().startswith(b"this is not a database")


def test_startup_is_quiet_and_progress_is_line_by_line_off_a_terminal(tmp_path, smoke_grid):
    """Item 12: torchao's kernel-library warnings on every command, and no progress in a pipe."""
    from bench.suites import load_suite

    # The torchao int8 variant: building it imports torchao.
    (int8,) = [
        v.id for v in load_suite("smoke").variants
        if [(p.name, getattr(p, "backend", None)) for p in v.chain] == [("quant-dynamic-int8", "torchao")]
    ]  # fmt: skip
    argv = _cuda_graph_run(int8, tmp_path)
    done = subprocess.run([sys.executable, "-m", "bench", *argv], capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr
    for noise in ("Failed to load", "_pytree", "register_constant", "Traceback"):
        assert noise not in done.stderr, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.startswith("[")]
    assert lines and "elapsed, eta" in lines[-1] and lines[-1].startswith("[4/4]"), done.stderr


def test_compare_out_never_replaces_a_file_it_did_not_write(tmp_path, capsys):
    """Issue 23 item 3: `compare A B --out B/records.jsonl` wrote the verdict over B's records."""
    a = _write_run(tmp_path, "a", RECORDS)
    b = _write_run(tmp_path, "b", RECORDS)
    records = (b / "records.jsonl").read_bytes()
    assert main(["compare", str(a), str(b), "--out", str(b / "records.jsonl")]) == 2
    assert "twinbench did not write it" in capsys.readouterr().err
    assert (b / "records.jsonl").read_bytes() == records
    verdict = tmp_path / "verdict.md"
    assert main(["compare", str(a), str(b), "--out", str(verdict)]) == 0
    assert main(["compare", str(a), str(b), "--out", str(verdict)]) == 0  # its own verdict: replaced
    assert verdict.read_text().startswith("# twinbench compare: ")
    assert main(["compare", str(a), str(b), "--out", str(tmp_path)]) == 2  # a folder
    assert main(["report", str(b)]) == 0  # the run is intact
    assert not list(b.glob(".*.tmp"))  # atomic writes leave no temporary files


SUITE_FILE = """description = {description}
device = "cpu"
model_size = "smoke"
grids = ["1-LV-rural1--2-sw"]
twins = ["grid-gnn"]
[measure]
window_s = {window_s}
repetitions = {repetitions}
batch_sizes = {batch_sizes}
runtimes = ["torch-eager"]
"""
SANE = {"description": '"ok"', "window_s": "0.2", "repetitions": "3", "batch_sizes": "[1]"}


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("batch_sizes", "[1.5]", "batch_sizes must be whole numbers"),
        ("batch_sizes", "[true]", "batch_sizes must be whole numbers"),
        ("batch_sizes", "[1000000]", "batch_sizes must be whole numbers from 1 to 65536"),
        ("batch_sizes", "[]", "batch_sizes must be whole numbers"),
        ("repetitions", "3.7", "repetitions must be a whole number"),
        ("repetitions", "true", "repetitions must be a whole number"),
        ("repetitions", "1000000", "repetitions must be a whole number from 3"),
        ("window_s", "inf", "window_s must be a number of seconds"),
        ("window_s", "nan", "window_s must be a number of seconds"),
        ("window_s", "1e400", "window_s must be a number of seconds"),
        ("window_s", "86400", "window_s must be a number of seconds in (0, 3600.0]"),
        ("window_s", '"5"', "window_s must be a number of seconds"),
        ("description", "42", "description must be text"),
    ],
)
def test_suite_values_are_exact_and_bounded(tmp_path, capsys, field, value, message):
    """Issue 23 items 4 and 5: a float or bool batch size was measured and poisoned the run folder;
    repetitions = 3.7 became 3; description = 42 passed; window_s = inf hung the run."""
    path = tmp_path / "bad.toml"
    path.write_text(SUITE_FILE.format(**{**SANE, field: value}))
    out = tmp_path / "runs"
    assert main(["run", "--suite", str(path), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not out.exists()  # refused before any run folder exists
    path.write_text(SUITE_FILE.format(**SANE))  # the control: the same file with sane values loads
    assert main(["run", "--suite", str(path), "--dry-run"]) == 0


def test_ctrl_c_names_the_folder_to_resume(tmp_path, monkeypatch, capsys):
    """Issue 23 item 10: the interrupt message said `--resume RUN` without naming the folder."""
    from bench.run import runner

    folder = tmp_path / "runs" / "20261207T000000Z-smoke-abcdef"

    def interrupted(*args, **kwargs):
        raise runner.RunInterrupted(folder)

    monkeypatch.setattr(runner, "run", interrupted)
    assert main(["run", "--suite", "smoke"]) == 130
    err = capsys.readouterr().err
    assert f"--resume {folder}" in err and f"{folder}/records.jsonl" in err


def test_escape_sequences_in_records_never_reach_the_terminal(tmp_path, capsys):
    """Issue 23 item 9: `select` printed record text raw; a crafted record could rewrite the terminal."""
    hostile = [replace(r, variant_name=r.variant_name + "\x1b]0;pwned\x07\x1b[2J\x9b31m") for r in RECORDS]
    run_path = _write_run(tmp_path, "hostile", hostile)
    for argv in (
        ["select", "--run", str(run_path), "--twin", "grid-gnn", "--max-quality-loss-pct", "1000"],
        ["compare", str(run_path), str(run_path)],
        ["report", str(run_path)],
    ):
        assert main(argv) in (0, 1), argv
        out = capsys.readouterr().out
        assert "pwned" in out or argv[0] != "select"  # the text is shown...
        assert not any(c in out for c in "\x1b\x07\x9b"), argv  # ...with its control characters escaped


def test_nightly_checks_a_given_baseline_before_it_measures(tmp_path, monkeypatch, capsys):
    """Issue 23 item 7: `nightly --baseline MISSING` measured the whole suite first, then failed."""
    from bench.run import runner

    def must_not_run(*args, **kwargs):
        raise AssertionError("the suite ran before the baseline was checked")

    monkeypatch.setattr(runner, "run", must_not_run)
    for baseline in (tmp_path / "missing.json", tmp_path):
        assert main(["nightly", "--suite", "smoke", "--baseline", str(baseline), "--out", str(tmp_path / "runs")]) == 2
        assert "Traceback" not in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize(
    "hostile, message",
    [
        ("x = " + "[" * 100_000 + "]" * 100_000 + "\n", "nested more than 16 deep"),
        ("x = " + "{a = " * 20_000 + "1" + "}" * 20_000 + "\n", "nested more than 16 deep"),
        (".".join(["a"] * 100_000) + " = 1\n", "more than 64 dotted parts"),
        ("# " + "x" * 300_000 + "\n", "more than a suite file may have"),
    ],
    ids=["arrays", "inline-tables", "dotted-key", "huge"],
)
def test_hostile_toml_is_refused_quickly(tmp_path, capsys, hostile, message):
    """Issue 23 item 5: 100k nested arrays gave a RecursionError traceback, a 100k-part dotted key hung."""
    import time

    path = tmp_path / "hostile.toml"
    path.write_text(hostile)
    start = time.perf_counter()
    assert main(["run", "--suite", str(path), "--dry-run"]) == 2
    assert time.perf_counter() - start < 5  # refused before the parser sees it (was: minutes, or a traceback)
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


@pytest.mark.parametrize(
    "argv, message",
    [
        (["data", "--grid", "{loop}"], "cannot follow this path"),
        (["data", "--grid", "x.json", "--profiles", "{loop}"], "cannot follow this path"),
        (["data", "--grid", ""], "must not be empty"),
        (["run", "--suite", "smoke", "--grid", " ", "--dry-run"], "must not be empty"),
        (["data", "--grid", "/dev/null"], "/dev/null is a device or special file"),
        (["run", "--suite", "/dev/null", "--dry-run"], "/dev/null is a device or special file"),
    ],
)
def test_odd_paths_are_named_for_what_they_are(tmp_path, capsys, argv, message):
    """Issue 23 item 8: a symlink loop gave a RuntimeError traceback, /dev/null was "a folder", and
    `--grid ''` silently built the default grid."""
    loop = tmp_path / "loop1"
    loop.symlink_to(tmp_path / "loop2")
    (tmp_path / "loop2").symlink_to(loop)
    assert main([a.replace("{loop}", str(loop)) for a in argv]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


@pytest.mark.parametrize(
    "change",
    [{"batch_size": 1.5}, {"batch_size": True}, {"quality_metrics": {"vm": object()}}, {"energy_j_per_inference": "1"}],
)
def test_a_record_that_could_not_be_read_back_is_never_written(tmp_path, change):
    """Issue 23: records are written only through the types every reader checks (a float batch size
    once poisoned a run folder for good); the whole batch is refused, nothing of it written."""
    run_dir = RunDir.create(tmp_path, "r")
    run_dir.append([RECORDS[0]])
    before = run_dir.records_path.read_bytes()
    with pytest.raises(InputError, match="could not be read back"):
        run_dir.append([RECORDS[1], replace(RECORDS[2], **change)])
    assert run_dir.records_path.read_bytes() == before
    assert [r.cell_key for r in run_dir.records()] == [RECORDS[0].cell_key]


def test_predict_never_replaces_a_file_it_did_not_write(smoke_grid, tmp_path, capsys):
    """Issue 23: `predict --out` writes atomically and replaces only a predictions file of its own."""
    precious = tmp_path / "records.jsonl"
    precious.write_text("precious\n")
    assert main(["predict", "--twin", "grid-gnn", "--out", str(precious)]) == 2
    assert "did not write it" in capsys.readouterr().err and precious.read_text() == "precious\n"
    out = tmp_path / "p.npz"
    assert main(["predict", "--twin", "grid-gnn", "--out", str(out)]) == 0
    assert main(["predict", "--twin", "grid-gnn", "--split", "val", "--out", str(out)]) == 0  # its own: replaced
    assert not list(tmp_path.glob(".*.tmp"))
