"""The numerics boundary and budgeted passes: fp32 where the twin says so, searches on validation only."""

import copy
import json
import shutil

import numpy as np
import onnx
import pytest
import torch

from bench import suites
from bench.cli import main
from bench.store import RunDir, run_folders
from compress import budget
from compress.base import PassContext, make_pass
from compress.boundary import boundary_nodes, declared_units, onnx_core
from compress.budget import Search, keep_fp32
from models.checkpoint import train_or_load
from models.errors import ConfigError, Unsupported
from models.export import export_onnx, torch_predict_fn
from models.registry import get_twin

BOUNDARY_BUFFERS = ("inj_mean", "inj_std", "out_mean", "out_std", "edge_feat", "node_static")


@pytest.fixture(scope="module")
def gnn(smoke_grid):
    cls = get_twin("grid-gnn")
    twin = cls(smoke_grid, cls.config_for("smoke"))
    model, _, _ = train_or_load(twin, log=lambda m: None)
    return twin, model


@pytest.fixture
def fresh_searches(tmp_path, monkeypatch):
    """Searches run instead of loading an earlier outcome: their cache in a private folder."""
    monkeypatch.setattr(budget, "cache_root", lambda: tmp_path / "cache")


def _ctx(twin, tmp_path, target="torch"):
    return PassContext(twin=twin, device="cpu", workdir=tmp_path, target=target, log=lambda m: None)


@pytest.mark.parametrize(
    "spec",
    [
        {"pass": "half", "dtype": "bfloat16"},
        {"pass": "half", "dtype": "float16"},
        {"pass": "quant-dynamic-int8"},
        {"pass": "prune-structured", "ratio": 0.5, "finetune_epochs": 0},
        {"pass": "prune-unstructured"},
    ],
)
def test_boundary_stays_fp32_on_torch(gnn, tmp_path, spec):
    twin, model = gnn
    spec = dict(spec)
    ctx = _ctx(twin, tmp_path)
    out = make_pass(spec.pop("pass"), **spec).apply(model, ctx)
    assert type(out) is type(model)  # the twin's own module: its forward (the boundary) runs as written
    for name in BOUNDARY_BUFFERS:
        buf = getattr(out, name)
        assert buf.dtype == getattr(model, name).dtype and torch.equal(buf, getattr(model, name)), name
    x = torch.from_numpy(twin.example_inputs(4)[0])
    with torch.no_grad():
        assert out(x).dtype == torch.float32
    for note in ctx.notes:  # what the record will say stayed fp32
        assert "out_mean" in note["fp32_boundary"]


def test_half_casts_each_core_unit_behind_fp32_edges(gnn, tmp_path):
    twin, model = gnn
    half = make_pass("half", dtype="bfloat16").apply(model, _ctx(twin, tmp_path))
    assert half.encoder.inner[0].weight.dtype == torch.bfloat16
    assert all(type(c).__name__ == "Cast" for c in half.convs)
    assert half.inj_mean.dtype == half.out_mean.dtype == torch.float32


@pytest.mark.parametrize("spec", [{"pass": "quant-static-int8"}, {"pass": "quant-dynamic-int8"}])
def test_boundary_stays_fp32_in_onnx(gnn, tmp_path, spec):
    """The boundary's nodes are in the quantized graph as exported, reading no dequantized tensor."""
    twin, model = gnn
    fp32 = export_onnx(model, twin.example_inputs(2), twin.input_names, twin.output_name, tmp_path / "g.onnx")
    spec = dict(spec)
    quantized = make_pass(spec.pop("pass"), **spec).apply_onnx(fp32, _ctx(twin, tmp_path, "onnx"))
    kept = boundary_nodes(fp32, fp32, declared_units(twin))
    graph = onnx.load(str(quantized)).graph
    producer = {o: n for n in graph.node for o in n.output}
    nodes = {n.name: n for n in graph.node}
    ops = {n.op_type for n in graph.node}
    assert ops & {"QuantizeLinear", "DynamicQuantizeLinear", "MatMulInteger", "ConvInteger"}  # it did quantize
    assert kept and all(k in nodes for k in kept)
    for name in kept:
        for i in nodes[name].input:
            src = producer.get(i)
            assert src is None or src.op_type != "DequantizeLinear", (name, i)
    # The output's de-normalisation (+ out_mean, ~1.0 p.u.) is among them.
    (out,) = [n for n in graph.node if graph.output[0].name in n.output]
    assert out.name in kept


def _quantized_inputs(graph) -> set[str]:
    """Names of the nodes that read a dequantized tensor (an int8 input)."""
    producer = {o: n for n in graph.node for o in n.output}
    return {
        n.name
        for n in graph.node
        if any(getattr(producer.get(i), "op_type", "") == "DequantizeLinear" for i in n.input)
    }


def test_static_int8_keeps_the_first_and_last_compute_layers_fp32(gnn, tmp_path):
    twin, model = gnn
    fp32 = export_onnx(model, twin.example_inputs(2), twin.input_names, twin.output_name, tmp_path / "g.onnx")
    core = onnx_core(fp32, fp32, declared_units(twin))
    assert core.ends == ("encoder.0", "decoder.2")
    ends = {n for g in core.ends for n in core.groups[g]}
    for keep, expect_fp32 in ((True, True), (False, False)):
        ctx = _ctx(twin, tmp_path, "onnx")
        graph = export_onnx(
            model, twin.example_inputs(2), twin.input_names, twin.output_name, tmp_path / f"{keep}.onnx"
        )
        qdq = make_pass("quant-static-int8", keep_first_last=keep).apply_onnx(graph, ctx)
        int8_readers = _quantized_inputs(onnx.load(str(qdq)).graph)
        assert int8_readers  # the middle layers are quantised either way
        assert (not ends & int8_readers) is expect_fp32, keep
        assert ctx.notes[-1].get("first_last_fp32", []) == (sorted(core.ends) if keep else [])


def test_static_int8_with_nothing_left_between_first_and_last_is_unsupported(gnn, tmp_path, monkeypatch):
    twin, model = gnn
    fp32 = export_onnx(model, twin.example_inputs(2), twin.input_names, twin.output_name, tmp_path / "g.onnx")
    monkeypatch.setattr(type(twin), "core_units", ("decoder",))  # one unit: two compute layers
    with pytest.raises(Unsupported, match="nothing is left to quantise"):
        make_pass("quant-static-int8").apply_onnx(fp32, _ctx(twin, tmp_path, "onnx"))


def _spy_splits(twin, monkeypatch) -> list[str]:
    """Every split the twin is asked for (every split read goes through `split_index`)."""
    asked: list[str] = []
    real = type(twin).split_index

    def split_index(split):
        asked.append(split)
        return real(twin, split)

    monkeypatch.setattr(twin, "split_index", split_index)
    return asked


def test_the_spy_sees_a_test_read(gnn, monkeypatch):
    """The control: the spy of the next test does catch a read of the test split."""
    twin, model = gnn
    asked = _spy_splits(twin, monkeypatch)
    twin.evaluate(torch_predict_fn(copy.deepcopy(model)), "test")
    assert "test" in asked


@pytest.mark.parametrize(
    "spec, target",
    [
        ({"pass": "half", "dtype": "bfloat16", "max_quality_loss_pct": 0.1}, "torch"),
        ({"pass": "quant-dynamic-int8", "max_quality_loss_pct": 0.5}, "torch"),
        ({"pass": "quant-static-int8", "max_quality_loss_pct": 1}, "onnx"),
        ({"pass": "prune-structured", "ratio": "auto", "finetune_epochs": 1, "max_quality_loss_pct": 50}, "torch"),
    ],
)
def test_a_search_reads_validation_never_test(gnn, tmp_path, monkeypatch, fresh_searches, spec, target):
    twin, model = gnn
    asked = _spy_splits(twin, monkeypatch)
    spec = dict(spec)
    p = make_pass(spec.pop("pass"), **spec)
    ctx = _ctx(twin, tmp_path, target)
    try:
        if target == "onnx":
            fp32 = export_onnx(model, twin.example_inputs(2), twin.input_names, twin.output_name, tmp_path / "g.onnx")
            p.apply_onnx(fp32, ctx)
        else:
            p.apply(model, ctx)
    except Unsupported as e:  # a budget nothing met is an answer too: what matters here is what it read
        assert "the best setting found was" in e.reason
        assert "val" in asked and "test" not in asked
        return
    assert "val" in asked and "test" not in asked
    (note,) = [n for n in ctx.notes if "search" in n]
    assert note["search"]["split"] == "val" and note["search"]["trace"]
    assert all(t["seconds"] >= 0 and np.isfinite(t["val_loss_pct"]) for t in note["search"]["trace"])


def test_diffusion_searches_read_validation_never_test(smoke_grid, tmp_path, monkeypatch, fresh_searches):
    cls = get_twin("diffusion-forecaster")
    twin = cls(smoke_grid, cls.config_for("smoke"))
    model, _, _ = train_or_load(twin, log=lambda m: None)
    asked = _spy_splits(twin, monkeypatch)
    ctx = _ctx(twin, tmp_path)
    fewer = make_pass("diffusion-steps", steps="auto", max_quality_loss_pct=5).apply(model, ctx)
    (note,) = ctx.notes
    chosen = note["search"]["chosen"]
    assert twin.sampling_steps(fewer) == chosen < twin.sampling_steps(model)
    tried = [t["setting"] for t in note["search"]["trace"]]
    assert tried == list(range(1, chosen + 1))  # fewest first, up to the first within the budget
    assert "val" in asked and "test" not in asked


def test_keep_fp32_keeps_the_most_sensitive_parts_first():
    """Ranked by the loss left when each part alone stays fp32; kept in that order until within."""
    cost = {"a": 0.2, "b": 3.0, "c": 1.0}  # b hurts most, then c

    class Twin:
        def evaluate(self, predict, split):
            assert split == "val"
            return type("E", (), {"value": predict()})()

    def predict_for(kept):
        return lambda: 1.0 + sum(v for k, v in cost.items() if k not in kept) / 100

    s = Search(Twin(), "t", 0.5, lambda: 1.0, log=lambda m: None)
    outcome = keep_fp32(s, list(cost), predict_for)
    assert outcome["chosen"] == {"kept_fp32": ["b", "c"], "converted": 1}
    s = Search(Twin(), "t", 0.1, lambda: 1.0, log=lambda m: None)
    failed = keep_fp32(s, list(cost), predict_for)
    assert failed["chosen"] is None and "+0.200 %" in failed["unsupported"]  # the best it found, named


@pytest.mark.parametrize(
    "spec, match",
    [
        ({"pass": "prune-structured", "ratio": "auto"}, "needs max_quality_loss_pct"),
        ({"pass": "diffusion-steps", "steps": "auto"}, "needs max_quality_loss_pct"),
        ({"pass": "half", "max_quality_loss_pct": float("nan")}, "finite"),
        ({"pass": "half", "max_quality_loss_pct": 0}, r"\(0, 100\]"),
        ({"pass": "half", "max_quality_loss_pct": True}, "finite number"),
        ({"pass": "quant-static-int8", "max_quality_loss_pct": 1e9}, r"\(0, 100\]"),
        ({"pass": "prune-structured", "ratio": "most"}, "auto"),
        ({"pass": "prune-structured", "finetune_epochs": 2.5}, "whole number"),
        ({"pass": "diffusion-step-distill", "rounds": "auto", "max_epochs": 0, "max_quality_loss_pct": 1}, ">= 1"),
        ({"pass": "quant-dynamic-int8", "backend": "cuda"}, "backend"),
    ],
)
def test_bad_budget_settings_are_config_errors(spec, match):
    spec = dict(spec)
    with pytest.raises(ConfigError, match=match):
        make_pass(spec.pop("pass"), **spec)


SUITE = """
description = "budgets"
device = "cpu"
model_size = "smoke"
grids = ["1-LV-rural1--2-sw"]
twins = ["grid-gnn"]
[measure]
window_s = 0.05
repetitions = 3
batch_sizes = [8]
runtimes = ["torch-eager", "onnxruntime"]
[[variant]]
chain = [{pass = "half", dtype = "bfloat16", max_quality_loss_pct = 2}]
[[variant]]
chain = [{pass = "prune-structured", ratio = 0.75, finetune_epochs = 1, max_quality_loss_pct = 0.0001}]
"""


def test_run_records_budget_choices_and_unmet_budgets(tmp_path, monkeypatch, fresh_searches, gnn):
    suite_dir = tmp_path / "suites"
    suite_dir.mkdir()
    (suite_dir / "budgets.toml").write_text(SUITE)
    monkeypatch.setattr(suites, "SUITES_DIR", suite_dir)
    assert main(["run", "--suite", "budgets", "--out", str(tmp_path / "runs")]) == 0
    (path,) = run_folders(tmp_path / "runs")
    records = {(r.variant_name.split("(")[0], r.runtime): r for r in RunDir.open(path).records()}
    half = records[("half", "torch-eager")]
    assert half.status == "ok"
    (note,) = half.model_info["compression"]
    assert note["search"]["budget_pct"] == 2 and note["search"]["split"] == "val"
    assert "out_mean" in note["fp32_boundary"]
    unmet = records[("prune-structured", "torch-eager")]
    assert unmet.status == "unsupported"
    assert "no setting meets max_quality_loss_pct = 0.0001" in unmet.status_reason
    assert "the best setting found was" in unmet.status_reason
    report = (path / "report.html").read_text()
    assert "chose {" in report or "layer(s) kept fp32" in report  # the budget's choice, in the variant table
    summary = (path / "summary.md").read_text()
    assert "within 2 %" in summary
    shutil.rmtree(path)


def test_records_say_when_training_was_capped(gnn, tmp_path):
    twin, model = gnn
    ctx = _ctx(twin, tmp_path)
    make_pass("prune-structured", ratio=0.5, finetune_epochs=2).apply(model, ctx)
    (note,) = ctx.notes
    assert note["capped_epochs"] == 2 and "capped at 2 epochs" in note["training"]
    from bench.records import Record, compression_summary, is_capped

    record = Record(
        run_id="r", suite="s", twin="t", grid="g", variant_id="v", variant_name="v", model_info={"compression": [note]}
    )
    assert is_capped(record) and "capped at 2 epochs" in compression_summary(record)
    assert json.dumps(note)  # JSON-serialisable, as records are


@pytest.mark.parametrize(
    "damage",
    [
        "not json {",
        json.dumps({"trace": [], "chosen": {"kept_fp32": ["no.such.unit"]}}),
        json.dumps({"trace": [], "chosen": "everything"}),
        json.dumps({"trace": [], "chosen": None, "unsupported": 5}),
        json.dumps([1, 2]),
        "a folder",
    ],
)
def test_a_damaged_search_cache_is_searched_again(gnn, tmp_path, fresh_searches, damage):
    twin, model = gnn
    p = make_pass("half", dtype="bfloat16", max_quality_loss_pct=2)
    logged: list[str] = []
    ctx = PassContext(twin=twin, device="cpu", workdir=tmp_path, target="torch", log=logged.append)
    p.apply(model, ctx)
    first = ctx.notes[0]["search"]["chosen"]
    path = budget.search_path(twin, ctx.search_key(p, target="torch"))
    assert path.is_file()
    path.unlink()
    if damage == "a folder":
        path.mkdir()
    else:
        path.write_text(damage)
    logged.clear()
    again = PassContext(twin=twin, device="cpu", workdir=tmp_path, target="torch", log=logged.append)
    p.apply(model, again)
    assert again.notes[0]["search"]["chosen"] == first
    assert any("search:" in line for line in logged)  # searched, not loaded
    assert not any("loaded from" in line for line in logged)
