"""End to end: `twinbench run --suite smoke` on CPU, interrupted and resumed, and its bad inputs."""

import json
import shutil
import sqlite3

import pytest

from bench.cli import main
from bench.measure.meters import choose_meter
from bench.records import Record
from bench.run.runner import RunRequest, run
from bench.store import RunDir, run_folders
from models.fingerprint import files_sha256, onnx_files
from models.grid import load_grid

TWINS = {"sensor-transformer", "grid-gnn", "diffusion-forecaster"}


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory, smoke_grid):
    """A smoke run interrupted (Ctrl-C) after its first twin, then resumed to the end."""
    out = tmp_path_factory.mktemp("runs")

    def interrupt_after_first_twin(done, total, what):
        if what.startswith("done") and "sensor-transformer" in what:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt) as caught:  # the reference only: the variant matrix is tested below
        run(
            RunRequest(suite="smoke", out=out, variants=["reference"]),
            log=lambda m: None,
            progress=interrupt_after_first_twin,
        )
    (path,) = run_folders(out)
    assert caught.value.path == path  # the interrupt names the folder to --resume (issue 23 item 10)
    after_interrupt = RunDir.open(path).records()
    run(RunRequest(resume=path), log=lambda m: None)
    return path, after_interrupt


def test_interrupt_keeps_finished_cells_and_resume_completes(smoke_run):
    path, after_interrupt = smoke_run
    assert {r.twin for r in after_interrupt} == {"sensor-transformer"} and len(after_interrupt) == 4
    records = RunDir.open(path).records()
    keys = [r.cell_key for r in records]
    assert len(keys) == len(set(keys)) == 12  # 3 twins x 2 runtimes x 2 batch sizes, each once
    assert {r.twin for r in records} == TWINS


def test_smoke_records_are_valid_and_honest(smoke_run):
    path, _ = smoke_run
    records = RunDir.open(path).records()
    source = choose_meter("cpu").meter.source  # 'estimate' here: no RAPL on this machine
    for r in records:
        assert r.status == "ok", r.status_reason
        assert r.runtime in ("torch-eager", "onnxruntime") and r.device == "cpu"
        assert r.energy_source == source and r.energy_j_per_inference > 0
        assert r.energy_ci95_low <= r.energy_j_per_inference <= r.energy_ci95_high
        assert r.energy_cv is not None and r.repetitions == 3 and r.iterations >= 1
        assert "short_window" in r.flags  # 0.2 s windows
        assert r.output_checksum_match is True  # what was measured is what was evaluated
        assert 0 < r.latency_ms_p50 <= r.latency_ms_p99 and r.throughput_per_s > 0
        assert r.params > 0 and r.size_bytes > 0 and r.peak_memory_mb > 0 and r.threads >= 1
        assert r.quality_ref_value > 0 and r.quality_metric in r.quality_metrics
        if r.runtime == "torch-eager":
            assert r.quality_loss_pct == 0.0 and r.artifact_path is None
        else:  # fp32 ONNX Runtime: the same quality up to float rounding
            assert abs(r.quality_loss_pct) < 0.01
            assert r.artifact_path == f"artifacts/{r.twin}-{r.variant_id}.onnx" and (path / r.artifact_path).is_file()
            assert r.artifact_sha256 == files_sha256(onnx_files(path / r.artifact_path))
        assert r.weights_sha256 and len(r.weights_sha256) == 64
        assert r.grid_data == {"content_hash": load_grid(r.grid).content_hash}  # a SimBench grid, as built
    assert any(r.flops_per_inference for r in records)
    env = json.loads((path / "environment.json").read_text())
    assert env["energy_meter"].startswith(source) and env["libraries"]["torch"] and env["cpu_cores"] >= 1
    with sqlite3.connect(path.parent / "history.sqlite") as con:  # the runs folder's own history
        rows = con.execute(
            "SELECT COUNT(*), COUNT(DISTINCT cell_key) FROM records WHERE run_id = ?", (path.name,)
        ).fetchone()
    assert rows == (12, 12)


def test_runtime_that_cannot_run_here_is_an_unsupported_record(tmp_path, smoke_grid, capsys):
    argv = "run --suite smoke --twin grid-gnn --variant reference --runtime torch-compile-cudagraphs --out".split()
    code = main([*argv, str(tmp_path)])
    assert code == 0
    (path,) = run_folders(tmp_path)
    records = RunDir.open(path).records()
    assert len(records) == 2
    for r in records:
        assert r.status == "unsupported" and "CUDA" in r.status_reason
        assert r.energy_j_per_inference is None and r.energy_source == "none"


@pytest.mark.parametrize(
    "argv, code, message",
    [
        (["run", "--suite", "smoke", "--max-minutes", "0.05"], 1, "more than --max-minutes"),
        (["run", "--suite", "smoke", "--device", "cuda"], 2, "CUDA is not available"),
        (["run", "--suite", "smoke", "--runtime", "tensorrt"], 2, "valid runtimes"),
        (["run", "--suite", "nope"], 2, "valid suites"),
        (["run", "--resume", "/nonexistent/run"], 2, "not a twinbench run"),
    ],
)
def test_bad_run_input_is_a_clear_error_and_writes_nothing(tmp_path, argv, code, message, capsys):
    assert main([*argv, "--out", str(tmp_path)]) == code
    assert message in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


PASSES_ON_CPU = {
    "prune-unstructured", "prune-structured", "quant-dynamic-int8", "quant-static-int8", "half", "distill",
    "diffusion-steps", "diffusion-step-distill",
}  # fmt: skip
GPU_ONLY = {"sparsity-2:4", "float8"}
DIFFUSION_ONLY = {"diffusion-steps", "diffusion-step-distill"}


@pytest.fixture(scope="module")
def matrix_run(tmp_path_factory, smoke_grid):
    """The smoke suite's whole variant matrix on the GNN (the fastest twin), and its diffusion-only
    passes on the diffusion twin: together, every pass of the suite."""
    out = tmp_path_factory.mktemp("matrix")
    gnn = run(RunRequest(suite="smoke", twin="grid-gnn", out=out), log=lambda m: None)
    diffusion = run(
        RunRequest(suite="smoke", twin="diffusion-forecaster", variants=sorted(DIFFUSION_ONLY), out=out),
        log=lambda m: None,
    )
    return gnn.records() + diffusion.records(), [gnn.path, diffusion.path]


def test_smoke_matrix_records_every_pass(matrix_run):
    from compress.base import passes

    records, _ = matrix_run
    assert PASSES_ON_CPU | GPU_ONLY == set(passes())  # a new pass must join the smoke suite
    used: dict[str, list] = {}
    for r in records:
        for step in r.lineage:
            used.setdefault(step["pass"], []).append(r)
    assert set(used) == set(passes())
    for name in PASSES_ON_CPU:
        applicable = [r for r in used[name] if name not in DIFFUSION_ONLY or r.twin == "diffusion-forecaster"]
        assert any(r.status == "ok" and r.energy_j_per_inference for r in applicable), name
    for name in GPU_ONLY:
        assert {r.status for r in used[name]} == {"unsupported"}
        assert all("CUDA" in r.status_reason or "GPU" in r.status_reason for r in used[name])
    for r in records:
        assert r.status in ("ok", "unsupported"), f"{r.variant_name} {r.runtime}: {r.status_reason}"
        if r.status == "ok":
            assert r.output_checksum_match and r.quality_loss_pct is not None and r.energy_source == "estimate"
    chains = {len(r.lineage) for r in records if r.status == "ok"}
    assert 2 in chains  # chained variants (prune-structured -> int8, distill -> int8 / bf16) were measured
    for r in (r for r in records if r.status == "ok"):  # issue 25: what each variant cost to create
        own, reference = r.creation["own"], r.creation["reference"]
        assert any(c["what"] == "training" for c in (reference if r.lineage else own))
        if r.lineage:
            assert any(c["what"] == "build" for c in own) and r.creation_device
        if r.creation_energy_total_j is not None:  # known when every cost was recorded (fresh caches)
            counted = [c["energy_j"] for c in own + reference if "below_resolution" not in c["flags"]]
            assert r.creation_energy_total_j == pytest.approx(sum(counted))
            assert r.creation_energy_source == "estimate" and r.creation_energy_j <= r.creation_energy_total_j
        else:  # a part made outside a metered command (a test's own train_or_load), or before costs were
            # kept: not measured, and said so, never 0
            assert any(c["energy_j"] is None and c["source"] in ("none", "unknown") for c in own + reference)
    trained = [r for r in records if r.status == "ok" and any(s["pass"] == "distill" for s in r.lineage)]
    assert trained and all(any(c["what"] == "distill" for c in r.creation["own"]) for r in trained)


def test_summary_marks_each_twins_frontier(matrix_run):
    records, paths = matrix_run
    from bench.decide.frontier import frontier_keys

    on_front = frontier_keys(records)
    for twin in ("grid-gnn", "diffusion-forecaster"):
        assert any(key.split("/")[1] == twin for key in on_front)
    text = (paths[0] / "summary.md").read_text()
    assert "## grid-gnn on 1-LV-rural1--2-sw, batch 32" in text and "| E" in text
    assert "sparsity-2:4() on torch-eager: unsupported" in text


def test_select_exports_an_onnx_variant_that_reproduces_its_quality(matrix_run, smoke_grid, tmp_path, capsys):
    """Export round trip: the exported ONNX loads in ONNX Runtime and gives the recorded test quality."""
    from models.export import ort_predict_fn
    from models.registry import get_twin

    _, paths = matrix_run
    argv = ["select", "--run", str(paths[0]), "--twin", "grid-gnn", "--max-quality-loss-pct", "200",
            "--runtime", "onnxruntime", "--batch-size", "32", "--export", str(tmp_path / "out")]  # fmt: skip
    assert main(argv) == 0
    card = json.loads((tmp_path / "out" / "model_card.json").read_text())
    assert card["runtime"] == "onnxruntime" and card["measurements"]["energy_source"] == "estimate"
    assert card["constraints"]["max_quality_loss_pct"] == 200 and card["why"] and card["environment"]["cpu_cores"]
    (onnx_file,) = [tmp_path / "out" / f for f in card["files"] if f.endswith(".onnx")]
    twin = get_twin("grid-gnn")(smoke_grid, get_twin("grid-gnn").config_for("smoke"))
    quality = twin.evaluate(ort_predict_fn(onnx_file), "test")
    assert quality.value == pytest.approx(card["quality"]["value"], rel=1e-6)
    assert main(argv) == 2 and "is not empty" in capsys.readouterr().err  # never overwritten


def test_select_exports_a_torch_variant_that_rebuilds(matrix_run, smoke_grid, tmp_path):
    """A pruned, fine-tuned torch variant: safetensors weights + lineage rebuild the same module."""
    from bench.decide.export import export
    from bench.decide.select import Constraints, select
    from bench.store import load_records
    from compress.replay import load_exported
    from models.export import torch_predict_fn
    from models.registry import get_twin

    records, _ = load_records(matrix_run[1][0])
    pruned = [r for r in records if r.status == "ok" and r.lineage and r.runtime == "torch-eager"
              and [s["pass"] for s in r.lineage] == ["prune-structured"]]  # fmt: skip
    sel = select(pruned, "grid-gnn", Constraints(max_quality_loss_pct=1e9, runtime="torch-eager"))
    files = export(sel, tmp_path / "torch", {}, matrix_run[1][0])
    assert {f.name for f in files} == {"weights.safetensors", "variant.json", "model_card.json"}
    model = load_exported(tmp_path / "torch")
    assert sum(p.numel() for p in model.parameters()) == sel.chosen.params
    twin = get_twin("grid-gnn")(smoke_grid, get_twin("grid-gnn").config_for("smoke"))
    assert twin.evaluate(torch_predict_fn(model), "test").value == pytest.approx(sel.chosen.quality_value, rel=1e-6)


def test_run_writes_summary_and_a_report(matrix_run):
    _, paths = matrix_run
    for path in paths:
        assert (path / "summary.md").is_file() and (path / "report.html").stat().st_size > 1_000_000  # plotly inline
    assert "vs sampling steps" in (paths[1] / "report.html").read_text()


def test_resume_repairs_a_record_cut_mid_write(smoke_run, tmp_path):
    """A crash mid-write left half a line; the next record used to be appended onto it and lost."""
    from models.errors import InputError

    path, _ = smoke_run
    copy = tmp_path / "runs" / path.name
    shutil.copytree(path, copy)
    whole = (copy / "records.jsonl").read_bytes()
    last = whole.rstrip(b"\n").rfind(b"\n") + 1
    (copy / "records.jsonl").write_bytes(whole[: last + (len(whole) - last) // 2])
    with pytest.raises(InputError, match="line 12: unfinished"):
        RunDir.open(copy).records()
    logs = []
    run(RunRequest(resume=copy), log=logs.append)
    records = RunDir.open(copy).records()
    keys = [r.cell_key for r in records]
    assert (
        len(keys) == len(set(keys)) == 12
        and records[-1].cell_key == Record.from_dict(json.loads(whole[last:])).cell_key
    )
    assert any("unfinished line" in m for m in logs)
    assert (copy / "records.jsonl.partial").read_bytes() == whole[last : last + (len(whole) - last) // 2] + b"\n"
    with sqlite3.connect(copy.parent / "history.sqlite") as con:  # every record, once, in the history
        assert con.execute("SELECT COUNT(*) FROM records WHERE run_id = ?", (records[0].run_id,)).fetchone() == (12,)


def test_export_writes_only_the_bytes_the_record_measured(matrix_run, tmp_path, capsys):
    """The exported artifact is the measured one: same hashes, from a moved run folder too; a changed
    artifact or a changed weights cache is refused and leaves nothing behind."""
    from dataclasses import replace

    from bench.decide.export import export
    from bench.decide.select import Constraints, select
    from bench.store import load_records
    from models.errors import InputError

    _, paths = matrix_run
    moved = tmp_path / "moved" / paths[0].name
    shutil.copytree(paths[0], moved)  # artifact paths are relative: a moved run still exports
    argv = ["select", "--run", str(moved), "--twin", "grid-gnn", "--max-quality-loss-pct", "200",
            "--runtime", "onnxruntime", "--batch-size", "32", "--export"]  # fmt: skip
    assert main([*argv, str(tmp_path / "ok")]) == 0
    card = json.loads((tmp_path / "ok" / "model_card.json").read_text())
    (onnx_name,) = [f for f in card["files"] if f.endswith(".onnx")]
    assert files_sha256(onnx_files(tmp_path / "ok" / onnx_name)) == card["artifact_sha256"]
    records, _ = load_records(moved)
    (chosen,) = [r for r in records if r.variant_id == card["variant_id"] and r.runtime == "onnxruntime"
                 and r.batch_size == 32]  # fmt: skip
    artifact = moved / chosen.artifact_path
    artifact.write_bytes(artifact.read_bytes()[:-8] + b"\0" * 8)  # changed after the run
    assert main([*argv, str(tmp_path / "tampered")]) == 2
    assert "not the artifact this record measured" in capsys.readouterr().err
    assert not (tmp_path / "tampered").exists()

    pruned = [r for r in records if r.status == "ok" and r.runtime == "torch-eager"
              and [s["pass"] for s in r.lineage] == ["prune-structured"]]  # fmt: skip
    other = replace(pruned[0], weights_sha256="0" * 64)  # as if the cache was retrained after the run
    sel = select([other], "grid-gnn", Constraints(max_quality_loss_pct=1e9))
    with pytest.raises(InputError, match="not the ones this record measured"):
        export(sel, tmp_path / "retrained", {}, moved)
    assert not (tmp_path / "retrained").exists()


def test_export_refuses_a_linked_external_data_file(matrix_run, tmp_path):
    """Issue 23 item 1: the graph's external-data file replaced by a link to a file outside the run,
    with the very same bytes (so every hash matches): refused with exit 2, nothing written."""
    from bench.store import load_records

    _, paths = matrix_run
    moved = tmp_path / "moved" / paths[0].name
    shutil.copytree(paths[0], moved)
    records, _ = load_records(moved)
    onnx = [r for r in records if r.status == "ok" and r.runtime == "onnxruntime" and r.batch_size == 32]
    linked = [r for r in onnx if len(onnx_files(moved / r.artifact_path)) == 2]
    assert linked, "the exporter wrote no external-data file for any ONNX cell"
    data = onnx_files(moved / linked[0].artifact_path)[1]
    outside = tmp_path / "outside.data"
    outside.write_bytes(data.read_bytes())
    for r in linked:  # every cell sharing the file sees the link
        d = onnx_files(moved / r.artifact_path)[1]
        if not d.is_symlink():
            d.unlink()
            d.symlink_to(outside)
    from bench.decide.export import export
    from bench.decide.select import Constraints, select
    from models.errors import InputError

    sel = select([linked[0]], linked[0].twin, Constraints(max_quality_loss_pct=1e9))
    with pytest.raises(InputError, match="is a link or lies outside its run folder"):
        export(sel, tmp_path / "out", {}, moved)
    assert not (tmp_path / "out").exists()  # nothing written, not even the folder
