"""The hostile walk of issue 23 as a table: each row is a command a careless or hostile user might type,
the exit code it must give and a fragment of its message (on stderr for an error, stdout otherwise).

Every row also checks what holds for all of them:
- no traceback, and no exception out of `main`;
- no hang: a row is stopped after 10 s and must finish well inside it;
- an error's message says `error: ` (ours, or argparse's usage error);
- no terminal escape (ESC, BEL, CSI) in the output unless the command line itself held one: file
  contents never reach the terminal raw;
- the Zen of Python is never printed (a grid file's `_module` imported);
- not one byte changed, created or removed in the folder of fixtures the command was pointed at (run
  folders, suites, grids, baselines, the export and output paths it was refused), symlinks compared
  by target, never followed;
- nothing is trained, measured or built from SimBench: tripwires fail a row that would get that far.

Fixtures are built lazily per row: `{name}` in a row's argv or message is the path of fixture `name`
in that row's own folder (`{w}` the folder itself). A row that found a defect says so in `fixed`;
a defect still open would be an xfail (strict) row whose reason says what happens.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import signal
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from bench.cli import main
from tests.conftest import SMOKE_GRID
from tests.decide.test_decide import RECORDS, _write_run, rec

REPO = Path(__file__).resolve().parents[1]
TIME_LIMIT_S = 10.0  # issue 23: no hang over 10 s
ESCAPES = ("\x1b", "\x07", "\x9b")
ZEN = "Beautiful is better than ugly"  # what `import this` prints


# ---------------------------------------------------------------------------------------------------
# Fixtures of the world a row runs in: each a function of (root, name) returning its path.


def _run(root: Path, name: str, records=RECORDS, tail: bytes = b"") -> Path:
    """A fake run folder as tests/decide/test_decide.py writes one, plus `tail` appended to its
    records.jsonl, and the .lock every real run folder holds."""
    path = _write_run(root, name, records)
    (path / ".lock").write_bytes(b"")
    if tail:
        with open(path / "records.jsonl", "ab") as f:
            f.write(tail)
    return path


def _line(**fields) -> bytes:
    """A records.jsonl line: RECORDS[0] with `fields` replaced (json allows NaN and Infinity)."""
    return (json.dumps({**json.loads(RECORDS[0].to_json()), **fields}) + "\n").encode()


DEEP_JSON = "[" * 100_000 + "]" * 100_000  # deeper than Python's recursion limit


def _onnx_run(root: Path, name: str, how: str) -> Path:
    """A run whose int8 cell (on onnxruntime, the one `select --max-quality-loss-pct 1` chooses)
    names an ONNX artifact in the run folder; `how` it is damaged."""
    from models.fingerprint import files_sha256

    run = root / name
    (run / "artifacts").mkdir(parents=True)
    graph = run / "artifacts" / "grid-gnn-reference.onnx"
    graph.write_bytes(b"not really onnx, but hashed")
    artifact, sha = "artifacts/grid-gnn-reference.onnx", files_sha256([graph])
    if how == "data-link":  # issue 23 item 1: its external data a link out of the run folder
        (run / "artifacts" / "grid-gnn-reference.onnx.data").symlink_to("/etc/passwd")
        sha = files_sha256([graph, Path("/etc/passwd")])  # the hash of what the link leads to
    elif how == "escape":
        outside = root / "outside.onnx"
        outside.write_bytes(b"outside")
        artifact, sha = "../outside.onnx", files_sha256([outside])
    elif how == "missing":
        graph.unlink()
    elif how == "changed":
        sha = "0" * 64
    records = [
        replace(r, artifact_path=artifact, artifact_sha256=sha) if r.variant_id == "int8" else r for r in RECORDS
    ]
    (run / "plan.json").write_text("{}")
    (run / "environment.json").write_text(json.dumps({"gpu_name": "NVIDIA H100 80GB HBM3"}))
    (run / "records.jsonl").write_text("".join(r.to_json() + "\n" for r in records))
    (run / ".lock").write_bytes(b"")
    return run


def _plan_dict() -> dict:
    """A valid plan.json, as a run of the smoke suite narrowed to one cell writes it."""
    from bench.plan import RunPlan

    plan = RunPlan(
        suite="smoke", device="cpu", model_size="smoke", grids=(SMOKE_GRID,), twins=("grid-gnn",),
        runtimes=("torch-eager",), batch_sizes=(1,), window_s=0.2, repetitions=3, threads=1,
    )  # fmt: skip
    return {"run_id": "20261207T000000Z-smoke-abcdef", **plan.to_dict(), "cells": [c.key for c in plan.cells()]}


def _plan_run(root: Path, name: str, text: str | bytes) -> Path:
    run = _run(root, name, [])
    data = text.encode() if isinstance(text, str) else text
    (run / "plan.json").write_bytes(data)
    return run


PLANS = {  # name -> plan.json text
    "plan_list": "[1, 2]",
    "plan_garbage": "{oops",
    "plan_empty": "{}",
    "plan_types": '{"suite": 3}',
    "plan_nan": json.dumps({**_plan_dict(), "window_s": math.nan}),
    "plan_inf": json.dumps({**_plan_dict()}).replace('"window_s": 0.2', '"window_s": 1e400'),
    "plan_bool": json.dumps({**_plan_dict(), "batch_sizes": [True]}),
    "plan_float_rep": json.dumps({**_plan_dict(), "repetitions": 3.7}),
    "plan_extra": json.dumps({**_plan_dict(), "rm_rf": "/"}),
    "plan_norunid": json.dumps({k: v for k, v in _plan_dict().items() if k != "run_id"}),
    "plan_seed": json.dumps({**_plan_dict(), "seed": -1}),
    "plan_threads": json.dumps({**_plan_dict(), "threads": 10**9}),
    "plan_bad_pass": json.dumps({**_plan_dict(), "variants": [[], [{"pass": "rm -rf", "params": {}}]]}),
    "plan_twin": json.dumps({**_plan_dict(), "twins": ["no-such-twin"]}),
    "plan_traversal": json.dumps({**_plan_dict(), "grids": ["../../../../etc"]}),
    "plan_deep": json.dumps({**_plan_dict(), "variants": [[]]}).replace('"variants": [[]]', f'"variants": {DEEP_JSON}'),
    "plan_nonutf8": b'{"suite": "\xff\xfe"}',
    "plan_ok": json.dumps(_plan_dict()),
}

BASELINE_OK = {
    "run_id": "base",
    "suite": "nightly",
    "environment": {},
    "records": [json.loads(r.to_json()) for r in RECORDS],
}
BASELINES = {  # name -> baseline JSON text
    "base_list": "[1, 2]",
    "base_garbage": "{oops",
    "base_empty": "{}",
    "base_null": "null",
    "base_norecords": json.dumps({**BASELINE_OK, "records": []}),
    "base_records_str": json.dumps({**BASELINE_OK, "records": "abc"}),
    "base_badrecord": json.dumps({**BASELINE_OK, "records": [{"x": 1}]}),
    "base_env_list": json.dumps({**BASELINE_OK, "environment": [1]}),
    "base_bool_batch": json.dumps({**BASELINE_OK, "records": [{**BASELINE_OK["records"][0], "batch_size": True}]}),
    "base_deep": json.dumps({**BASELINE_OK, "environment": {}}).replace(
        '"environment": {}', f'"environment": {DEEP_JSON}'
    ),
    "base_nonutf8": b'{"records": ["\xff"]}',
}

# A suite file: every value a placeholder; SANE values load (the `suite_sane` control row runs them).
SUITE = """description = {description}
device = {device}
model_size = {model_size}
grids = {grids}
twins = {twins}
{extra_top}
[measure]
window_s = {window_s}
repetitions = {repetitions}
batch_sizes = {batch_sizes}
runtimes = {runtimes}
{extra_measure}
{variants}
"""
SANE = {
    "description": '"ok"', "device": '"cpu"', "model_size": '"smoke"', "grids": f'["{SMOKE_GRID}"]',
    "twins": '["grid-gnn"]', "extra_top": "", "window_s": "0.2", "repetitions": "3", "batch_sizes": "[1]",
    "runtimes": '["torch-eager"]', "extra_measure": "", "variants": "",
}  # fmt: skip
_BATCH = "batch_sizes must be whole numbers"
_REPS = "repetitions must be a whole number"
_WINDOW = "window_s must be a number of seconds"
SUITES = {  # name -> (values replaced in SANE, or the whole text; the message `run` gives)
    "batch_float": ({"batch_sizes": "[1.5]"}, _BATCH),
    "batch_bool": ({"batch_sizes": "[true]"}, _BATCH),
    "batch_zero": ({"batch_sizes": "[0]"}, _BATCH),
    "batch_negative": ({"batch_sizes": "[-1]"}, _BATCH),
    "batch_huge": ({"batch_sizes": "[1000000]"}, _BATCH),
    "batch_empty": ({"batch_sizes": "[]"}, _BATCH),
    "batch_text": ({"batch_sizes": '["1"]'}, _BATCH),
    "batch_scalar": ({"batch_sizes": "1"}, _BATCH),
    "batch_many": ({"batch_sizes": str(list(range(1, 100)))}, _BATCH),
    "rep_float": ({"repetitions": "3.7"}, _REPS),
    "rep_bool": ({"repetitions": "true"}, _REPS),
    "rep_two": ({"repetitions": "2"}, _REPS),
    "rep_negative": ({"repetitions": "-3"}, _REPS),
    "rep_huge": ({"repetitions": "1000000"}, _REPS),
    "rep_text": ({"repetitions": '"3"'}, _REPS),
    "window_inf": ({"window_s": "inf"}, _WINDOW),
    "window_nan": ({"window_s": "nan"}, _WINDOW),
    "window_neg_inf": ({"window_s": "-inf"}, _WINDOW),
    "window_zero": ({"window_s": "0"}, _WINDOW),
    "window_negative": ({"window_s": "-1"}, _WINDOW),
    "window_overflow": ({"window_s": "1e400"}, _WINDOW),
    "window_day": ({"window_s": "86400"}, _WINDOW),
    "window_text": ({"window_s": '"5"'}, _WINDOW),
    "window_bool": ({"window_s": "true"}, _WINDOW),
    "description_int": ({"description": "42"}, "description must be text"),
    "description_huge": ({"description": '"' + "x" * 5000 + '"'}, "description must be text"),
    "device_tpu": ({"device": '"tpu"'}, "device must be one of"),
    "model_size_huge": ({"model_size": '"huge"'}, "model_size must be one of"),
    "grids_empty": ({"grids": "[]"}, "grids must be 1 to"),
    "grids_blank": ({"grids": '[""]'}, "grids must be"),
    "grids_twice": ({"grids": f'["{SMOKE_GRID}", "{SMOKE_GRID}"]'}, "a grid is listed twice"),
    "grids_passwd": ({"grids": '["../../../../../../../../etc/passwd"]'}, "not a pandapower network file"),
    "twins_unknown": ({"twins": '["no-such-twin"]'}, "unknown twin 'no-such-twin'"),
    "twins_empty": ({"twins": "[]"}, "twins must be 1 to"),
    "twins_escape": ({"twins": '["\\u001b[2J"]'}, "unknown twin"),
    "runtimes_unknown": ({"runtimes": '["rm -rf"]'}, "unknown runtime"),
    "runtimes_empty": ({"runtimes": "[]"}, "runtimes must be a non-empty list"),
    "unknown_key": ({"extra_top": "typo_key = 1"}, "unknown keys ['typo_key']"),
    "unknown_measure_key": ({"extra_measure": "window = 5"}, "unknown keys ['measure.window']"),
    "chain_empty": ({"variants": "[[variant]]\nchain = []"}, "each [[variant]] needs exactly a `chain`"),
    "chain_unknown_pass": ({"variants": '[[variant]]\nchain = [{pass = "no-such-pass"}]'}, "unknown pass"),
    "chain_bad_param": (
        {"variants": '[[variant]]\nchain = [{pass = "prune-structured", ratio = "half"}]'},
        "prune-structured",
    ),
    "chain_long": (
        {"variants": "[[variant]]\nchain = [" + ", ".join(['{pass = "prune-structured", ratio = 0.1}'] * 17) + "]"},
        "each [[variant]] needs exactly a `chain`",
    ),
    "variant_extra": ({"variants": '[[variant]]\nchain = [{pass = "prune-structured"}]\nname = "x"'}, "unknown keys"),
    "no_measure": (
        'description = "x"\ndevice = "cpu"\nmodel_size = "smoke"\ngrids = ["g"]\ntwins = ["grid-gnn"]\n',
        "missing key 'measure'",
    ),  # fmt: skip
    "measure_scalar": (
        'description = "x"\ndevice = "cpu"\nmodel_size = "smoke"\ngrids = ["g"]\ntwins = ["grid-gnn"]\nmeasure = 5\n',
        "[measure] must be a table",
    ),  # fmt: skip
    "sane": ({}, ""),
    "escape_description": ({"description": '"\\u001b]0;pwned\\u0007\\u001b[2J"'}, ""),
}

TOMLS = {  # name -> hostile suite file text (issue 23 item 5)
    "toml_arrays": "x = " + "[" * 100_000 + "]" * 100_000 + "\n",
    "toml_tables": "x = " + "{a = " * 20_000 + "1" + "}" * 20_000 + "\n",
    "toml_dotted": ".".join(["a"] * 100_000) + " = 1\n",
    "toml_huge": "# " + "x" * 300_000 + "\n",
    "toml_nonutf8": b"description = '\xff\xfe'\n",
    "toml_nul": "description = 'a'\x00\n",
    "toml_empty": "",
    "toml_binary": bytes(range(256)),
}

GRIDS = {  # name -> a "pandapower network file" (issue 23 item 2)
    "grid_this.json": {"_module": "this", "_class": "Zen", "_object": "{}"},
    "grid_os.json": {"bus": {"_module": "os", "_class": "system", "_object": "echo pwned"}},
    "grid_embedded.json": {"bus": json.dumps({"x": {"_module": "subprocess", "_class": "Popen", "_object": "[]"}})},
    "grid_modint.json": {"_module": 42, "_class": "x"},
    "grid_pandas_file.json": {"bus": {"_module": "pandas", "_class": "DataFrame", "_object": "/etc/passwd"}},
    "grid_dunder.json": {"bus": {"_module": "pandapower.__builtins__", "_class": "eval", "_object": "1"}},
    "grid_empty_obj.json": {},
}
RAW_GRIDS = {
    "grid_verydeep.json": DEEP_JSON,
    "grid_notjson.json": "hello, not json",
    "grid_nonutf8.json": b'{"bus": "\xff\xfe"}',
}


def _suite(root: Path, name: str) -> Path:
    spec, _ = SUITES[name.removeprefix("suite_")]
    text = spec if isinstance(spec, str) else SUITE.format(**{**SANE, **spec})
    path = root / f"{name}.toml"
    path.write_text(text)
    return path


def _bytes(root: Path, filename: str, data: str | bytes) -> Path:
    path = root / filename
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    return path


def _damaged(root: Path, name: str, filename: str, how: str | None) -> Path:
    """A run folder with one file removed (None), replaced by a folder ("folder"), or rewritten."""
    run = _run(root, name)
    (run / filename).unlink()
    if how == "folder":
        (run / filename).mkdir()
    elif how is not None:
        (run / filename).write_text(how)
    return run


def _link(root: Path, name: str, target: Path) -> Path:
    (root / name).symlink_to(target)
    return root / name


def _loop(root: Path, name: str) -> Path:
    (root / "loop1").symlink_to(root / "loop2")
    (root / "loop2").symlink_to(root / "loop1")
    return root / "loop1"


def _history(root: Path, name: str) -> Path:
    from bench.history_db import append_history

    runs = root / name
    runs.mkdir()
    append_history(RECORDS, runs / "history.sqlite")
    return runs


def _corrupt_history(root: Path, name: str) -> Path:
    runs = root / name
    runs.mkdir()
    (runs / "history.sqlite").write_bytes(b"this is not a database" * 100)
    return runs


def _records_link(root: Path, name: str) -> Path:
    """A run whose records.jsonl is a link to records outside it."""
    outside = root / "outside-records.jsonl"
    outside.write_text("".join(r.to_json() + "\n" for r in RECORDS))
    run = _run(root, name)
    (run / "records.jsonl").unlink()
    (run / "records.jsonl").symlink_to(outside)
    return run


def _loose(root: Path, name: str) -> Path:
    """records.jsonl with an ONNX artifact hash, away from any run folder (issue 23 item 8)."""
    records = [replace(r, artifact_path="artifacts/x.onnx", artifact_sha256="0" * 64) for r in RECORDS]
    path = root / "loose.jsonl"
    path.write_text("".join(r.to_json() + "\n" for r in records))
    return path


def _dir_with(root: Path, name: str, entries: dict[str, str]) -> Path:
    path = root / name
    path.mkdir()
    for entry, text in entries.items():
        (path / entry).write_text(text)
    return path


_HOSTILE = "\x1b]0;pwned\x07\x1b[2J\x9b31m"
BUILDERS = {
    "run": lambda root, name: _run(root, name),
    "run2": lambda root, name: _run(root, name),
    "records": lambda root, name: _run(root, "run-for-records") / "records.jsonl",
    "file": lambda root, name: _bytes(root, "a-file", "the user's own text\n"),
    "empty": lambda root, name: _dir_with(root, name, {}),
    "nonempty": lambda root, name: _dir_with(root, name, {"weights.safetensors": "the user's own file"}),
    "missing": lambda root, name: root / "missing",
    "loop": _loop,
    "dangling": lambda root, name: _link(root, name, root / "no-such-target"),
    "loose": _loose,
    "hist": _history,
    "hist_corrupt": _corrupt_history,
    "run_badline": lambda root, name: _run(root, name, tail=b"{not json\n"),
    "run_cut": lambda root, name: _run(root, name, tail=RECORDS[0].to_json()[:57].encode()),
    "run_nonutf8": lambda root, name: _run(root, name, tail=b"\xff\xfe\xfd\n"),
    "run_deepline": lambda root, name: _run(root, name, tail=(DEEP_JSON + "\n").encode()),
    "run_bool_batch": lambda root, name: _run(root, name, tail=_line(batch_size=True)),
    "run_float_batch": lambda root, name: _run(root, name, tail=_line(batch_size=1.5)),
    "run_status": lambda root, name: _run(root, name, tail=_line(status="pwned")),
    "run_zero_energy": lambda root, name: _run(root, name, tail=_line(energy_j_per_inference=0)),
    "run_schema": lambda root, name: _run(root, name, tail=_line(schema_version=99)),
    "run_escape_field": lambda root, name: _run(root, name, tail=_line(batch_size=_HOSTILE)),
    "run_nan": lambda root, name: _run(root, name, [replace(r, energy_j_per_inference=math.nan) for r in RECORDS]),
    "run_compression": lambda root, name: _run(
        root, name, [replace(r, model_info={"compression": ["x", 1]}) for r in RECORDS]
    ),
    "run_quality_text": lambda root, name: _run(
        root, name, [replace(r, quality_metrics={"vm_rmse": "bad"}) for r in RECORDS]
    ),
    "run_hostile": lambda root, name: _run(
        root, name, [replace(r, variant_name=r.variant_name + _HOSTILE) for r in RECORDS]
    ),
    "run_mismatch": lambda root, name: _run(root, name, [replace(r, suite="smoke") for r in RECORDS]),
    "run_mixed_sources": lambda root, name: _run(root, name, [rec("a", source="nvml"), rec("b", source="estimate")]),
    "run_nook": lambda root, name: _run(
        root, name, [replace(r, status="error", status_reason="broke") for r in RECORDS]
    ),
    "run_mixed": lambda root, name: _run(root, name, [RECORDS[0], replace(RECORDS[1], device="cpu")]),
    "run_norecords": lambda root, name: _damaged(root, name, "records.jsonl", None),
    "run_emptyrecords": lambda root, name: _run(root, name, []),
    "run_recdir": lambda root, name: _damaged(root, name, "records.jsonl", "folder"),
    "run_plandir": lambda root, name: _damaged(root, name, "plan.json", "folder"),
    "run_envbad": lambda root, name: _damaged(root, name, "environment.json", "{oops"),
    "run_envlist": lambda root, name: _damaged(root, name, "environment.json", "[1]"),
    "run_envdeep": lambda root, name: _damaged(root, name, "environment.json", DEEP_JSON),
    "run_records_link": _records_link,
    "run_onnx_link": lambda root, name: _onnx_run(root, name, "data-link"),
    "run_onnx_escape": lambda root, name: _onnx_run(root, name, "escape"),
    "run_onnx_missing": lambda root, name: _onnx_run(root, name, "missing"),
    "run_onnx_changed": lambda root, name: _onnx_run(root, name, "changed"),
    "smoke_lookalike": lambda root, name: _bytes(root, "smoke.toml", SUITE.format(**SANE)),
    "bad_stem": lambda root, name: _bytes(root, "bad name!.toml", SUITE.format(**SANE)),
    "toml_folder": lambda root, name: _dir_with(root, "folder.toml", {}),
    "grid_folder": lambda root, name: _dir_with(root, "net.json", {}),
    **{name: (lambda root, name, text=text: _plan_run(root, name, text)) for name, text in PLANS.items()},
    **{name: (lambda root, name, text=text: _bytes(root, f"{name}.json", text)) for name, text in BASELINES.items()},
    **{f"suite_{name}": _suite for name in SUITES},
    **{name: (lambda root, name, text=text: _bytes(root, f"{name}.toml", text)) for name, text in TOMLS.items()},
    **{
        name.removesuffix(".json"): (lambda root, name, data=data: _bytes(root, f"{name}.json", json.dumps(data)))
        for name, data in GRIDS.items()
    },
    **{
        name.removesuffix(".json"): (lambda root, name, text=text: _bytes(root, f"{name}.json", text))
        for name, text in RAW_GRIDS.items()
    },
}


class World:
    """A row's folder of fixtures, each built the first time a row names it."""

    def __init__(self, root: Path) -> None:
        root.mkdir()
        self.root = root
        self.built: dict[str, Path] = {"w": root}

    def path(self, name: str) -> Path:
        if name not in self.built:
            self.built[name] = BUILDERS[name](self.root, name)
        return self.built[name]

    def fill(self, text: str) -> str:
        return re.sub(r"\{(\w+)\}", lambda m: str(self.path(m.group(1))), text)


def snapshot(root: Path) -> dict[str, str]:
    """Every entry under `root`, by relative path: a file's sha256, a folder, or a link's target
    (links are never followed: a loop, or a link to /etc/passwd, is compared as the link)."""
    entries = {}

    def walk(folder: Path) -> None:
        with os.scandir(folder) as it:
            for entry in it:
                rel = os.path.relpath(entry.path, root)
                if entry.is_symlink():
                    entries[rel] = "link -> " + os.readlink(entry.path)
                elif entry.is_dir():
                    entries[rel] = "folder"
                    walk(Path(entry.path))
                elif entry.is_file():
                    entries[rel] = hashlib.sha256(Path(entry.path).read_bytes()).hexdigest()
                else:
                    entries[rel] = "special"

    walk(root)
    return entries


# ---------------------------------------------------------------------------------------------------
# Setups a few rows need beyond files: a grid cache, a damaged manifest, a broken plugin, Ctrl-C.


def _cache(request, monkeypatch) -> Path:
    """The private copy of the smoke grid's cache that `tripwires` made for this row."""
    return Path(os.environ["TWINBENCH_CACHE"])


def _manifest(damage: str):
    def setup(request, monkeypatch, world):
        root = _cache(request, monkeypatch)
        path = root / "grids" / SMOKE_GRID / "manifest.json"
        manifest = json.loads(path.read_text())
        text = {
            "list": "[1, 2]",
            "string": '"x"',
            "garbage": "{oops",
            "deep": DEEP_JSON,
            "files-list": json.dumps({**manifest, "files": []}),
        }[damage]
        path.write_text(text)

    return setup


def _plugin(group: str, value: str):
    """A registry that (re)discovers one more entry point: `value`, as an installed package would
    declare it. The registry's own state is restored after the row."""

    def setup(request, monkeypatch, world):
        from importlib import metadata

        import models.plugins
        from bench.measure.meters import METERS
        from bench.measure.runtimes import RUNTIMES
        from compress.base import PASSES
        from models.registry import TWINS

        registry = {r.group: r for r in (TWINS, PASSES, RUNTIMES, METERS)}[group]
        registry.entries()  # the real ones first
        site = world.root.parent / "site"
        site.mkdir()
        (site / "hostile_exit_plugin.py").write_text("import sys\nsys.exit(3)\n")
        monkeypatch.syspath_prepend(str(site))
        monkeypatch.setattr(registry, "_entries", dict(registry._entries))
        monkeypatch.setattr(registry, "_failed", dict(registry._failed))
        monkeypatch.setattr(registry, "_discovered", False)
        real = metadata.entry_points
        hostile = metadata.EntryPoint(name="hostile", value=value, group=group)

        def entry_points(**kwargs):
            return [hostile] if kwargs.get("group") == group else real(**kwargs)

        monkeypatch.setattr(models.plugins.metadata, "entry_points", entry_points)

    return setup


def _interrupt(request, monkeypatch, world):
    """Ctrl-C once the run folder exists (issue 23 item 10): the message must name it."""
    from bench.run import runner

    folder = world.root / "runs" / "20261207T000000Z-smoke-abcdef"

    def interrupted(*args, **kwargs):
        raise runner.RunInterrupted(folder)

    monkeypatch.setattr(runner, "run", interrupted)


SETUPS = {
    "cache": lambda request, monkeypatch, world: _cache(request, monkeypatch),
    **{f"manifest-{d}": _manifest(d) for d in ("list", "string", "garbage", "deep", "files-list")},
    "plugin-function": _plugin("twinbench.passes", "os:getcwd"),
    "plugin-exit": _plugin("twinbench.twins", "hostile_exit_plugin"),
    "plugin-not-a-twin": _plugin("twinbench.twins", "json:JSONDecoder"),
    "interrupt": _interrupt,
}


class Tripwire(BaseException):
    """Raised where a row would start expensive work; a BaseException, so no `except Exception`
    in the product can turn it into a message."""


class Hang(BaseException):
    pass


@pytest.fixture(scope="module", autouse=True)
def repository_results_untouched():
    """No row writes into the repository's results/ (runs, baselines)."""

    def listing():
        root = REPO / "results"
        return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*")}

    before = listing()
    yield
    assert listing() == before


@pytest.fixture
def tripwires(monkeypatch, tmp_path, request):
    """The cache and the default runs folder point into the row's tmp folder (the cache empty, or a
    copy of the smoke grid's for the rows whose setup needs it); training, measuring and building a
    known SimBench grid are tripwires."""
    import bench.run.references
    import bench.run.runner
    import bench.store
    import models.grid.build

    setup = request.node.callspec.params.get("setup") or ""
    needs_cache = setup == "cache" or setup.startswith("manifest-")
    cache = request.getfixturevalue("cache_copy") if needs_cache else tmp_path / "cache"  # before the wires
    monkeypatch.setenv("TWINBENCH_CACHE", str(cache))
    monkeypatch.setattr(bench.store, "RUNS", tmp_path / "default-runs")
    monkeypatch.setattr(bench.store, "BASELINES", tmp_path / "default-baselines")

    def wire(what):
        def tripped(*args, **kwargs):
            raise Tripwire(f"reached {what}: bad input must be refused before it")

        return tripped

    monkeypatch.setattr(bench.run.runner, "_measure", wire("measuring"))
    monkeypatch.setattr(bench.run.references, "train_references", wire("training"))
    monkeypatch.setattr(bench.run.references, "train_or_load", wire("training or loading a reference twin"))
    real_load = models.grid.build.load_simbench_net

    def load_simbench_net(grid):
        from bench.suites import known_grids

        if grid in known_grids():  # a real SimBench grid: minutes to build
            raise Tripwire(f"reached building grid {grid} from SimBench: bad input must be refused before it")
        return real_load(grid)

    monkeypatch.setattr(models.grid.build, "load_simbench_net", load_simbench_net)


# ---------------------------------------------------------------------------------------------------
# The table.

NO_CUDA = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal of --device cuda without CUDA")


def row(argv, code, message, setup=None, fixed=None, marks=()):
    """One case. `fixed`: the defect this case found when the walk was first run (now fixed)."""
    marks = list(marks)
    name = " ".join(argv)
    name = re.sub(r"[^ -~]", "?", name)[:80]
    return pytest.param(argv, code, message, setup, marks=marks, id=name)


SEL = ["select", "--run", "{run}", "--twin", "grid-gnn", "--max-quality-loss-pct", "1"]
SEL_ARGS = SEL[3:]  # without --run
CMP = ["compare", "{run}"]
NOT_FINITE = "is not a finite number"
IN_RANGE = "must be between"

# Defects this walk found when it was first run, each fixed since (the rows that found them keep the note).
DEEP = (
    "{what} nested 100,000 deep raises RecursionError out of main (json.loads' RecursionError is caught "
    "nowhere, only JSONDecodeError/ValueError): a traceback, exit 1"
)
BIG_INT = (
    "an integer option of 400 digits raises OverflowError out of main (args.number calls math.isfinite on an "
    "int too large for a float): a traceback, exit 1"
)
NUL = "a NUL byte in an output path raises ValueError ('embedded null byte') out of main: a traceback, exit 1"
REPORT_FIRST = (
    "`report RUN` writes RUN/summary.md before it checks the schedule options, then exits 2: a refused "
    "command changes the run folder"
)
OUT_LINK = (
    "`compare --out LINK`, LINK a dangling symlink or a symlink loop: exists() is False for it, so write_output "
    "replaces the link with the verdict and exits 0 (a file twinbench did not write)"
)
BIG = "9" * 400

ROWS = [
    # -- the command line itself ----------------------------------------------------------------
    row([], 2, "the following arguments are required: COMMAND"),
    row(["bogus"], 2, "invalid choice: 'bogus'"),
    row(["--help"], 0, "usage: twinbench"),
    # -- list --------------------------------------------------------------------------------------
    row(["list", "extra"], 2, "unrecognized arguments: extra"),
    row(["list"], 0, "twins:"),
    # issue 23 item 6: a plugin naming a function, one that calls sys.exit, one naming a non-twin
    row(["list"], 0, "error: the pass plugin 'hostile' (twinbench.passes) failed to load", "plugin-function"),
    row(["list"], 0, "error: the twin plugin 'hostile' (twinbench.twins) failed to load: SystemExit", "plugin-exit"),
    row(
        ["list"], 0, "error: the twin plugin 'hostile' (twinbench.twins) failed to load: TypeError", "plugin-not-a-twin"
    ),
    row(["run", "--suite", "smoke", "--twin", "hostile", "--dry-run"], 2, "its plugin failed to load", "plugin-exit"),
    row(
        ["run", "--suite", "smoke", "--dry-run", "--twin", "grid-gnn", "--variant", "reference"],
        0,
        "cells",
        "plugin-exit",
    ),  # fmt: skip
    # -- data ----------------------------------------------------------------------------------------
    row(["data", "--grid", "no-such-grid"], 2, "unknown grid 'no-such-grid'"),
    row(["data", "--grid", ""], 2, "must not be empty"),
    row(["data", "--grid", " "], 2, "must not be empty"),
    row(["data", "--grid", "{loop}"], 2, "cannot follow this path"),
    row(["data", "--grid", "x.json", "--profiles", "{loop}"], 2, "cannot follow this path"),
    row(["data", "--grid", "/dev/null"], 2, "/dev/null is a device or special file"),
    row(["data", "--grid", "{empty}"], 2, "is a folder"),
    row(["data", "--grid", "{grid_folder}"], 2, "is a folder"),
    row(["data", "--grid", "{missing}.json"], 2, "no such file"),
    row(["data", "--grid", "{file}"], 2, "not a pandapower network file: not JSON"),
    row(["data", "--grid", "/etc/passwd"], 2, "not a pandapower network file: not JSON"),
    row(["data", "--grid", "../../../../../../../../etc/passwd"], 2, "not a pandapower network file: not JSON"),
    row(["data", "--grid", "{grid_this}"], 2, "it names Python module 'this'"),
    row(["data", "--grid", "{grid_os}"], 2, "it names Python module 'os'"),
    row(["data", "--grid", "{grid_embedded}"], 2, "it names Python module 'subprocess'"),
    row(["data", "--grid", "{grid_dunder}"], 2, "which pandapower would import"),
    row(["data", "--grid", "{grid_modint}"], 2, "that is not a name"),
    row(["data", "--grid", "{grid_pandas_file}"], 2, "not embedded JSON"),
    row(["data", "--grid", "{grid_verydeep}"], 2, "nested more than 64 levels deep"),
    row(["data", "--grid", "{grid_nonutf8}"], 2, "not text"),
    row(["data", "--grid", "{grid_notjson}"], 2, "not JSON"),
    row(["data", "--grid", "{grid_empty_obj}"], 2, "not a pandapower network"),
    row(["data", "--grid", "{grid_this}", "--profiles", "{file}"], 2, "it names Python module 'this'"),
    row(["data", "--grid", "\x1b[31mred"], 2, "unknown grid"),
    row(["data", "--grid", "a\x00b"], 2, "unknown grid"),
    row(["data", "--grid", "g" * 5000], 2, "unknown grid"),
    row(["data", "--profiles", "{file}"], 2, "--profiles goes with --grid"),
    row(["data", "--grid", SMOKE_GRID, "--profiles", "{file}"], 2, "--profiles belongs to a pandapower network file"),
    row(["data", "--suite", "no-such-suite"], 2, "unknown suite 'no-such-suite'"),
    row(["data", "--suite", "smoke", "--grid", "x"], 2, "unknown grid 'x'"),
    row(["data", "--suite", "{suite_batch_bool}"], 2, _BATCH),
    # -- train (bad input only: a valid one trains) ----------------------------------------------------
    row(["train", "--twin", "no-such-twin"], 2, "unknown twin 'no-such-twin'"),
    row(["train", "--suite", "no-such-suite"], 2, "unknown suite"),
    row(["train", "--split", "bogus"], 2, "invalid choice: 'bogus'"),
    row(["train", "--device", "tpu"], 2, "invalid choice: 'tpu'"),
    row(["train", "--grid", "no-such-grid"], 2, "unknown grid of suite smoke"),
    row(["train", "--grid", ""], 2, "must not be empty"),
    row(["train", "--profiles", "{file}"], 2, "--profiles goes with --grid"),
    row(["train", "--grid", "{grid_this}"], 2, "it names Python module 'this'"),
    row(["train", "--grid", "{loop}"], 2, "cannot follow this path"),
    row(["train", "--suite", "{suite_rep_float}"], 2, _REPS),
    row(["train", "--twin", _HOSTILE], 2, "unknown twin"),
    row(["train", "--device", "cuda", "--twin", "grid-gnn"], 2, "CUDA is not available", "cache", marks=[NO_CUDA]),
    # -- predict (bad input only) --------------------------------------------------------------------
    row(["predict", "--twin", "grid-gnn"], 2, "the following arguments are required: --out"),
    row(["predict", "--out", "{w}/p.npz"], 2, "the following arguments are required: --twin"),
    row(["predict", "--twin", "no-such-twin", "--out", "{w}/p.npz"], 2, "unknown twin 'no-such-twin'"),
    row(["predict", "--twin", "grid-gnn", "--split", "x", "--out", "{w}/p.npz"], 2, "invalid choice: 'x'"),
    row(["predict", "--twin", "grid-gnn", "--grid", "no-such-grid", "--out", "{w}/p.npz"], 2, "unknown grid"),
    row(["predict", "--twin", "grid-gnn", "--grid", "{grid_this}", "--out", "{w}/p.npz"], 2, "module 'this'"),
    row(
        ["predict", "--twin", "grid-gnn", "--suite", "{toml_arrays}", "--out", "{w}/p.npz"],
        2,
        "nested more than 16 deep",
    ),  # fmt: skip
    row(["predict", "--twin", "grid-gnn", "--out", "{empty}"], 2, "is a folder", "cache"),
    *[
        row(["predict", "--twin", "grid-gnn", "--out", "{w}/p.npz"], 2, "twinbench data --grid", f"manifest-{d}")
        for d in ("list", "string", "garbage", "files-list")
    ],
    row(
        ["predict", "--twin", "grid-gnn", "--out", "{w}/p.npz"],
        2,
        "twinbench data --grid",
        "manifest-deep",
        fixed=DEEP.format(what="The grid cache's manifest.json"),
    ),  # fmt: skip
    # -- env -------------------------------------------------------------------------------------------
    row(["env", "--bogus"], 2, "unrecognized arguments: --bogus"),
    row(["env"], 0, "runtimes:"),
    # -- run: the suite ---------------------------------------------------------------------------------
    row(["run"], 2, "give --suite"),
    row(["run", "--suite", "no-such-suite"], 2, "unknown suite 'no-such-suite'"),
    row(["run", "--suite", ""], 2, "unknown suite ''"),
    row(["run", "--suite", "../../../../../../../../etc/passwd"], 2, "invalid TOML"),
    row(["run", "--suite", "/dev/null", "--dry-run"], 2, "/dev/null is a device or special file"),
    row(["run", "--suite", "{empty}"], 2, "is a folder"),
    row(["run", "--suite", "{toml_folder}"], 2, "is a folder"),
    row(["run", "--suite", "{missing}.toml"], 2, "no such suite file"),
    row(["run", "--suite", "{file}"], 2, "invalid TOML"),
    row(["run", "--suite", "{smoke_lookalike}"], 2, "has the name of the built-in suite 'smoke'"),
    row(["run", "--suite", "{bad_stem}"], 2, "must be letters, digits"),
    row(["run", "--suite", "x\x00.toml"], 2, "no such suite file"),
    row(["run", "--suite", "s" * 5000 + ".toml"], 2, "error: "),
    row(["run", "--suite", "{toml_arrays}", "--dry-run"], 2, "nested more than 16 deep"),
    row(["run", "--suite", "{toml_tables}", "--dry-run"], 2, "nested more than 16 deep"),
    row(["run", "--suite", "{toml_dotted}", "--dry-run"], 2, "more than 64 dotted parts"),
    row(["run", "--suite", "{toml_huge}", "--dry-run"], 2, "more than a suite file may have"),
    row(["run", "--suite", "{toml_nonutf8}", "--dry-run"], 2, "not a TOML text file"),
    row(["run", "--suite", "{toml_nul}", "--dry-run"], 2, "invalid TOML"),
    row(["run", "--suite", "{toml_empty}", "--dry-run"], 2, "missing key 'description'"),
    row(["run", "--suite", "{toml_binary}", "--dry-run"], 2, "not a TOML text file"),
    # issue 23 items 4 and 5: every value exact and bounded, refused before any run folder ({w}/runs)
    *[
        row(["run", "--suite", f"{{suite_{name}}}", "--out", "{w}/runs"], 2, message)
        for name, (_, message) in SUITES.items()
        if message
    ],
    row(["run", "--suite", "{suite_sane}", "--dry-run"], 0, "cells"),  # the control: the template loads
    row(["run", "--suite", "{suite_escape_description}", "--dry-run"], 0, "cells"),
    row(["nightly", "--suite", "{suite_window_inf}"], 2, _WINDOW),
    row(["train", "--suite", "{suite_batch_float}"], 2, _BATCH),
    # -- run: its options ---------------------------------------------------------------------------------
    *[
        row(["run", "--suite", "smoke", "--max-minutes", v], 2, m)
        for v, m in [
            ("nan", NOT_FINITE),
            ("inf", NOT_FINITE),
            ("1e999", NOT_FINITE),
            ("0", "must be > 0"),
            ("-1", "must be > 0"),
            ("", "is not a number"),
            ("0x10", "is not a number"),
        ]
    ],  # fmt: skip
    *[
        row(["run", "--suite", "smoke", "--threads", v], 2, m)
        for v, m in [
            ("0", IN_RANGE),
            ("-1", IN_RANGE),
            ("1.5", "is not an integer"),
            ("100000", IN_RANGE),
            ("nan", "is not an integer"),
            ("", "is not an integer"),
        ]
    ],  # fmt: skip
    row(["run", "--suite", "smoke", "--shard-size", "0"], 2, IN_RANGE),
    row(["run", "--suite", "smoke", "--shard-size", BIG], 2, IN_RANGE, fixed=BIG_INT),
    row(["run", "--suite", "smoke", "--threads", BIG], 2, IN_RANGE, fixed=BIG_INT),
    row(["run", "--suite", "smoke", "--executor", "dask"], 2, "invalid choice: 'dask'"),
    row(["run", "--suite", "smoke", "--device", "tpu"], 2, "invalid choice: 'tpu'"),
    row(["run", "--suite", "smoke", "--twin", "no-such-twin"], 2, "unknown twin 'no-such-twin'"),
    row(["run", "--suite", "smoke", "--runtime", "no-such-runtime"], 2, "unknown runtime 'no-such-runtime'"),
    row(["run", "--suite", "smoke", "--variant", "no-such-variant"], 2, "unknown variant selector"),
    row(["run", "--suite", "smoke", "--variant", "../../etc/passwd"], 2, "unknown variant selector"),
    row(["run", "--suite", "smoke", "--grid", "no-such-grid", "--dry-run"], 2, "unknown grid of suite smoke"),
    row(["run", "--suite", "smoke", "--grid", " ", "--dry-run"], 2, "must not be empty"),
    row(["run", "--suite", "smoke", "--grid", "{loop}", "--dry-run"], 2, "cannot follow this path"),
    row(["run", "--suite", "smoke", "--grid", "{missing}.json", "--dry-run"], 2, "no such file"),
    row(["run", "--suite", "smoke", "--grid", "{grid_this}"], 2, "it names Python module 'this'"),
    row(["run", "--suite", "smoke", "--profiles", "{file}", "--dry-run"], 2, "--profiles goes with --grid"),
    # issue 23 item 7: a dry run over --max-minutes says no, as the run would
    row(["run", "--suite", "smoke", "--dry-run", "--max-minutes", "0.0001"], 1, "does not fit --max-minutes"),
    row(["run", "--suite", "smoke", "--out", "{file}"], 2, "is a file", "cache"),
    row(["run", "--suite", "smoke", "--out", "{run}/records.jsonl"], 2, "is a file", "cache"),
    row(
        ["run", "--suite", "smoke", "--out", "{file}"],
        2,
        "is a file",
        fixed="(minor) with no grid cache yet, `run --out FILE` first builds the suite's grids from SimBench (6 s "
        "for smoke's grid here, longer for the nightly's; 11 s in all) and only then says --out is a file",
    ),  # fmt: skip
    # issue 23 item 10: Ctrl-C names the folder to resume
    row(["run", "--suite", "smoke"], 130, "--resume {w}/runs/20261207T000000Z-smoke-abcdef", "interrupt"),
    # -- run --resume: plan.json as data from outside -------------------------------------------------
    row(["run", "--resume", "{missing}"], 2, "not a twinbench run"),
    row(["run", "--resume", "{file}"], 2, "not a twinbench run"),
    row(["run", "--resume", "{empty}"], 2, "not a twinbench run"),
    row(["run", "--resume", "{run_plandir}"], 2, "not a twinbench run"),
    row(["run", "--resume", "/etc"], 2, "not a twinbench run"),
    row(["run", "--resume", "r" * 5000], 2, "error: "),
    row(["run", "--resume", "{run}"], 2, "malformed plan.json"),
    row(["run", "--resume", "{plan_list}"], 2, "must hold a JSON object"),
    row(["run", "--resume", "{plan_garbage}"], 2, "not valid JSON"),
    row(["run", "--resume", "{plan_empty}"], 2, "malformed plan.json"),
    row(["run", "--resume", "{plan_types}"], 2, "malformed plan.json"),
    row(["run", "--resume", "{plan_nan}"], 2, _WINDOW),
    row(["run", "--resume", "{plan_inf}"], 2, _WINDOW),
    row(["run", "--resume", "{plan_bool}"], 2, _BATCH),
    row(["run", "--resume", "{plan_float_rep}"], 2, _REPS),
    row(["run", "--resume", "{plan_extra}"], 2, "unknown keys ['rm_rf']"),
    row(["run", "--resume", "{plan_norunid}"], 2, "no run_id"),
    row(["run", "--resume", "{plan_seed}"], 2, "malformed plan.json"),
    row(["run", "--resume", "{plan_threads}"], 2, "malformed plan.json"),
    row(["run", "--resume", "{plan_bad_pass}"], 2, "unknown pass 'rm -rf'"),
    row(["run", "--resume", "{plan_nonutf8}"], 2, "not valid JSON"),
    row(["run", "--resume", "{plan_deep}"], 2, "plan.json", fixed=DEEP.format(what="plan.json")),
    row(["run", "--resume", "{plan_twin}", "--dry-run"], 2, "unknown twin 'no-such-twin'"),
    row(
        ["run", "--resume", "{plan_traversal}", "--dry-run"],
        2,
        "grid",
        fixed="plan.json's grid names are not checked: '../../../../etc' is accepted as a grid (the dry run "
        "exits 0 and plans training for it), a name that leaves the cache folder as a path",
    ),  # fmt: skip
    row(["run", "--resume", "{plan_ok}", "--grid", SMOKE_GRID], 2, "drop --grid"),
    row(["run", "--resume", "{plan_ok}", "--dry-run"], 0, "cells"),  # the control: the plan fixture is valid
    # -- nightly (issue 23 item 7: a given baseline is checked before the suite runs) ---------------------
    row(["nightly", "--baseline", "{missing}"], 2, "no run folder or records file"),
    row(["nightly", "--baseline", "{file}"], 2, "not a twinbench record"),
    row(["nightly", "--baseline", "{empty}"], 2, "not a twinbench run"),
    row(["nightly", "--baseline", "{base_list}"], 2, "not a twinbench baseline"),
    row(
        ["nightly", "--baseline", "{base_deep}"],
        2,
        "not a twinbench baseline",
        fixed=DEEP.format(what="A baseline JSON"),
    ),
    row(["nightly", "--suite", "no-such-suite"], 2, "unknown suite"),
    row(["nightly", "--threshold-pct", "nan"], 2, NOT_FINITE),
    row(["nightly", "--threshold-pct", "-5"], 2, IN_RANGE),
    row(["nightly", "--quality-threshold-pct", "1e300"], 2, IN_RANGE),
    row(["nightly", "--device", "tpu"], 2, "invalid choice: 'tpu'"),
    row(["nightly", "--suite", "smoke", "--out", "{file}"], 2, "is a file", "cache"),
    # -- report ----------------------------------------------------------------------------------------
    row(["report"], 2, "error: "),  # no RUN, and no run in the default runs folder
    row(["report", "{missing}"], 2, "not a twinbench run"),
    row(["report", "{empty}"], 2, "not a twinbench run"),
    row(["report", "{file}"], 2, "not a twinbench run"),
    row(["report", "/dev/null"], 2, "not a twinbench run"),
    row(["report", "{run_plandir}"], 2, "not a twinbench run"),
    row(["report", "{run_norecords}"], 2, "holds no records yet"),
    row(["report", "{run_emptyrecords}"], 2, "holds no records yet"),
    row(["report", "{run_recdir}"], 2, "Is a directory"),
    row(["report", "{run_badline}"], 2, "line 6: not a twinbench record"),
    row(["report", "{run_cut}"], 2, "line 6: unfinished"),
    row(["report", "{run_nonutf8}"], 2, "line 6: not a twinbench record"),
    row(
        ["report", "{run_deepline}"],
        2,
        "line 6: not a twinbench record",
        fixed=DEEP.format(what="A records.jsonl line"),
    ),
    row(["report", "{run_bool_batch}"], 2, "field 'batch_size' must be"),
    row(["report", "{run_float_batch}"], 2, "field 'batch_size' must be"),
    row(["report", "{run_status}"], 2, "status must be one of"),
    row(["report", "{run_zero_energy}"], 2, "0 J is never a measurement"),
    row(["report", "{run_schema}"], 2, "schema_version 99"),
    row(["report", "{run_escape_field}"], 2, "field 'batch_size' must be"),
    row(["report", "{run}", "--metric", "no-such-metric"], 2, "unknown quality metric"),
    row(["report", "{run}", "--metric", "../../etc/passwd"], 2, "unknown quality metric"),
    row(["report", "{run}", "--instances", "0"], 2, IN_RANGE),
    row(["report", "{run}", "--rate", "10**10**10/s"], 2, "is not inferences per time", fixed=REPORT_FIRST),
    row(["report", "{run}", "--price", "1"], 2, "--price needs --rate", fixed=REPORT_FIRST),
    row(["report", "{run}", "--instances", BIG], 2, IN_RANGE, fixed=BIG_INT),
    row(["report", "{run_envbad}"], 2, "not valid JSON"),
    row(
        ["report", "{run_records_link}"],
        2,
        "records.jsonl",
        fixed="`report RUN` reads RUN/records.jsonl through a symlink that leads out of the run folder and "
        "writes a report of those records (exit 0)",
    ),  # fmt: skip
    # -- select ------------------------------------------------------------------------------------------
    row(SEL, 0, "chosen: int8"),  # the control: the run fixture is valid
    row(["select", *SEL_ARGS], 2, "error: "),  # no --run, and no run in the default runs folder
    row(["select", "--run", "{run}", "--records", "{records}", *SEL_ARGS], 2, "--run RUN or --records FILE"),
    row(["select", "--run", "{run}", "--max-quality-loss-pct", "1"], 2, "the following arguments are required: --twin"),
    row(["select", "--run", "{missing}", *SEL_ARGS], 2, "not a twinbench run"),
    row(["select", "--run", "{file}", *SEL_ARGS], 2, "not a twinbench run"),
    row(["select", "--run", "{empty}", *SEL_ARGS], 2, "not a twinbench run"),
    row(["select", "--run", "{records}", *SEL_ARGS], 2, "not a twinbench run"),
    row(["select", "--run", "x\x00y", *SEL_ARGS], 2, "a path cannot contain a NUL byte"),
    row(["select", "--records", "{missing}", *SEL_ARGS], 2, "no run folder or records file"),
    row(["select", "--records", "{file}", *SEL_ARGS], 2, "line 1: not a twinbench record"),
    row(["select", "--records", "/dev/null", *SEL_ARGS], 2, "no run folder or records file at /dev/null"),
    *[
        row(["select", "--records", f"{{{name}}}", *SEL_ARGS], 2, message)
        for name, message in [
            ("base_list", "not a twinbench baseline"),
            ("base_garbage", "not a twinbench baseline"),
            ("base_empty", "not a twinbench baseline"),
            ("base_null", "not a twinbench baseline"),
            ("base_norecords", "holds no records"),
            ("base_records_str", "not a twinbench baseline"),
            ("base_badrecord", "not a twinbench baseline"),
            ("base_env_list", "not a twinbench baseline"),
            ("base_bool_batch", "not a twinbench baseline"),
            ("base_nonutf8", "not a twinbench baseline"),
        ]
    ],  # fmt: skip
    *[
        row(["select", "--run", f"{{{name}}}", *SEL_ARGS], 2, message)
        for name, message in [
            ("run_badline", "line 6: not a twinbench record"),
            ("run_cut", "line 6: unfinished"),
            ("run_nonutf8", "line 6: not a twinbench record"),
            ("run_recdir", "Is a directory"),
            ("run_envbad", "not valid JSON"),
            ("run_envlist", "must hold a JSON object"),
            ("run_emptyrecords", "holds no records"),
            ("run_mixed_sources", "not comparable"),
        ]
    ],  # fmt: skip
    row(
        ["select", "--records", "{base_deep}", *SEL_ARGS],
        2,
        "not a twinbench baseline",
        fixed=DEEP.format(what="A baseline JSON"),
    ),
    row(
        ["select", "--run", "{run_deepline}", *SEL_ARGS],
        2,
        "line 6: not a twinbench record",
        fixed=DEEP.format(what="A records.jsonl line"),
    ),
    row(
        ["select", "--run", "{run_envdeep}", *SEL_ARGS],
        2,
        "environment.json",
        fixed=DEEP.format(what="environment.json"),
    ),  # fmt: skip
    row(["select", "--run", "{run}", "--twin", "no-such-twin", "--max-quality-loss-pct", "1"], 2, "unknown twin"),
    row(["select", "--run", "{run}", "--twin", "", "--max-quality-loss-pct", "1"], 2, "unknown twin"),
    row(["select", "--run", "{run}", "--twin", "t" * 100_000, "--max-quality-loss-pct", "1"], 2, "unknown twin"),
    row(["select", "--run", "{run}", "--twin", "x\x1b[31m", "--max-quality-loss-pct", "1"], 2, "unknown twin"),
    *[
        row([*SEL[:-1], v], 2, m)
        for v, m in [
            ("nan", NOT_FINITE),
            ("inf", NOT_FINITE),
            ("-inf", "expected one argument"),  # argparse: an option, not a negative number
            ("NaN", NOT_FINITE),
            ("-101", IN_RANGE),
            ("1e10", IN_RANGE),
            ("abc", "is not a number"),
            ("", "is not a number"),
        ]
    ],  # fmt: skip
    row([*SEL, "--max-latency-ms-p99", "0"], 2, "must be > 0"),
    row([*SEL, "--max-latency-ms-p99", "-1"], 2, "must be > 0"),
    row([*SEL, "--max-latency-ms-p99", "nan"], 2, NOT_FINITE),
    row([*SEL, "--max-memory-mb", "0"], 2, "must be > 0"),
    row([*SEL, "--batch-size", "0"], 2, IN_RANGE),
    row([*SEL, "--batch-size", "1.5"], 2, "is not an integer"),
    row([*SEL, "--batch-size", str(2**21)], 2, IN_RANGE),
    row([*SEL, "--runtime", "no-such-runtime"], 2, "unknown runtime"),
    row([*SEL, "--grid", "no-such-grid"], 2, "no-such-grid"),
    row([*SEL, "--grid", ""], 2, "must not be empty"),
    row([*SEL, "--objective", "co2"], 2, "invalid choice: 'co2'"),
    row([*SEL, "--objective", "annual"], 2, "--objective annual needs --rate"),
    row([*SEL, "--max-quality-loss-pct", "0.1", "--max-latency-ms-p99", "0.1"], 1, "closest"),  # a verdict: no
    *[
        row([*SEL, "--where", w], 2, m)
        for w, m in [
            ("x", "error: "),
            ("vm_rmse<=nan", "finite number"),
            ("vm_rmse>=", "error: "),
            ("no_such_metric>=1", "valid quality metrics"),
            ("vm_rmse=>1", "error: "),
            ("a" * 10_000 + ">=1", "error: "),
            ("vm_rmse>=1e999", "finite number"),
            ("__import__('os').system('echo pwned')>=1", "error: "),
        ]
    ],  # fmt: skip
    # issue 23 item 5: --rate is a grammar, never an expression (10**10**10/s hung in pint)
    *[
        row([*SEL, "--rate", r], 2, m)
        for r, m in [
            ("10**10**10/s", "is not inferences per time"),
            ("", "expected inferences per time"),
            ("0/s", "must be a finite number of inferences > 0"),
            ("-1/s", "expected one argument"),
            ("nan/s", "is not inferences per time"),
            ("inf/s", "is not inferences per time"),
            ("1e308/1e-308 s", "must be a finite number"),
            ("1/0 s", "is not inferences per time"),
            ("1/m", "is not inferences per time"),
            ("1/kg", "is not inferences per time"),
            ("1", "is not inferences per time"),
            ("1/s; rm -rf /", "is not inferences per time"),
            ("1/" + "s" * 70, "expected inferences per time"),
            ("1/s\x00", "is not inferences per time"),
            ("1/__import__", "is not inferences per time"),
        ]
    ],  # fmt: skip
    row([*SEL, "--rate", "9" * 60 + "/s"], 1, "error: "),  # finite and valid: a verdict (no cell keeps up)
    row([*SEL, "--rate", "1/min", "--instances", "0"], 2, IN_RANGE),
    row([*SEL, "--rate", "1/min", "--instances", "1e10"], 2, "is not an integer"),
    row([*SEL, "--rate", "1/min", "--instances", BIG], 2, IN_RANGE, fixed=BIG_INT),
    row([*SEL, "--batch-size", BIG], 2, IN_RANGE, fixed=BIG_INT),
    row([*SEL, "--rate", "1/min", "--carbon-intensity", "-1"], 2, IN_RANGE),
    row([*SEL, "--rate", "1/min", "--price", "inf"], 2, NOT_FINITE),
    row([*SEL, "--rate", "1/min", "--device-use", "bogus"], 2, "invalid choice: 'bogus'"),
    row([*SEL, "--price", "1"], 2, "--price needs --rate"),
    # export: containment (issue 23 items 1 and 8); a refused export leaves no folder behind
    row([*SEL, "--export", "{file}"], 2, "is a file"),
    row([*SEL, "--export", "/dev/null"], 2, "is a file"),
    row([*SEL, "--export", "{nonempty}"], 2, "is not empty"),
    row([*SEL, "--export", "{w}/out"], 2, "names no weights hash"),
    row(["select", "--run", "{run_onnx_link}", *SEL_ARGS, "--export", "{w}/out"], 2, "is a link or lies outside"),
    row(["select", "--run", "{run_onnx_escape}", *SEL_ARGS, "--export", "{w}/out"], 2, "outside its run folder"),
    row(["select", "--run", "{run_onnx_missing}", *SEL_ARGS, "--export", "{w}/out"], 2, "no longer exists"),
    row(["select", "--run", "{run_onnx_changed}", *SEL_ARGS, "--export", "{w}/out"], 2, "not the artifact"),
    row(["select", "--records", "{loose}", *SEL_ARGS, "--export", "{w}/out"], 2, "needs the run folder"),
    row(["select", "--run", "{run_onnx_changed}", *SEL_ARGS, "--export", "{w}/o\x00ut"], 2, "error: ", fixed=NUL),
    # issue 23 item 9: record text reaches the terminal escaped (checked for every row)
    row(["select", "--run", "{run_hostile}", "--twin", "grid-gnn", "--max-quality-loss-pct", "1000"], 0, "pwned"),
    # hostile values that pass the record schema
    row(
        ["select", "--run", "{run_nan}", *SEL_ARGS],
        2,
        "energy",
        fixed="a record whose energy_j_per_inference is NaN is read as valid: `select` ranks NaN J/inference as "
        "the lowest energy and chooses it (exit 0)",
    ),  # fmt: skip
    row(["select", "--run", "{run_compression}", *SEL_ARGS], 0, "chosen: int8"),
    row(
        ["select", "--run", "{run_quality_text}", *SEL_ARGS, "--where", "vm_rmse<=1"],
        2,
        "vm_rmse",
        fixed="a record whose quality_metrics holds text passes the record schema; `select --where vm_rmse<=1` "
        "then raises TypeError out of main: a traceback, exit 1",
    ),  # fmt: skip
    # -- compare -------------------------------------------------------------------------------------------
    row([*CMP, "{run2}"], 0, "twinbench compare"),  # the control
    row([*CMP, "{run_hostile}"], 0, "twinbench compare"),
    row([*CMP, "{missing}"], 2, "no run folder or records file"),
    row([*CMP, "{empty}"], 2, "not a twinbench run"),
    row([*CMP, "{file}"], 2, "line 1: not a twinbench record"),
    row([*CMP, "/dev/null"], 2, "no run folder or records file at /dev/null"),
    row([*CMP, "{base_list}"], 2, "not a twinbench baseline"),
    row([*CMP, "{base_deep}"], 2, "not a twinbench baseline", fixed=DEEP.format(what="A baseline JSON")),
    row([*CMP, "{run_badline}"], 2, "line 6: not a twinbench record"),
    row([*CMP, "{run_deepline}"], 2, "line 6: not a twinbench record", fixed=DEEP.format(what="A records.jsonl line")),
    row([*CMP, "{run_nonutf8}"], 2, "line 6: not a twinbench record"),
    row([*CMP, "{run_recdir}"], 2, "Is a directory"),
    row([*CMP, "{run_mismatch}"], 2, "mismatched suites"),
    row(["compare", "{run}"], 2, "the following arguments are required: NEW"),
    *[
        row([*CMP, "{run2}", "--threshold-pct", v], 2, m)
        for v, m in [("nan", NOT_FINITE), ("inf", NOT_FINITE), ("-5", IN_RANGE), ("", "is not a number")]
    ],  # fmt: skip
    row([*CMP, "{run2}", "--quality-threshold-pct", "nan"], 2, NOT_FINITE),
    # issue 23 item 3: an output never replaces a file twinbench did not write
    row([*CMP, "{run2}", "--out", "{run2}/records.jsonl"], 2, "twinbench did not write it"),
    row([*CMP, "{run2}", "--out", "{run2}/plan.json"], 2, "twinbench did not write it"),
    row([*CMP, "{run2}", "--out", "{file}"], 2, "twinbench did not write it"),
    row([*CMP, "{run2}", "--out", "/etc/passwd"], 2, "twinbench did not write it"),
    row([*CMP, "{run2}", "--out", "/dev/null"], 2, "twinbench did not write it"),
    row([*CMP, "{run2}", "--out", "{empty}"], 2, "is a folder"),
    row([*CMP, "{run2}", "--out", "{missing}/sub/verdict.md"], 2, "cannot write"),
    row([*CMP, "{run2}", "--out", "{loop}"], 2, "error: ", fixed=OUT_LINK),
    row([*CMP, "{run2}", "--out", "{dangling}"], 2, "error: ", fixed=OUT_LINK),
    row([*CMP, "{run2}", "--out", "{w}/v\x00.md"], 2, "error: ", fixed=NUL),
    # -- baseline (bad input only: a valid one writes results/baselines) -----------------------------------
    row(["baseline"], 2, "the following arguments are required: --run"),
    row(["baseline", "--run", "{missing}"], 2, "no run folder"),
    row(["baseline", "--run", "{empty}"], 2, "not a twinbench run"),
    row(["baseline", "--run", "{file}"], 2, "line 1: not a twinbench record"),
    row(["baseline", "--run", "{run_badline}"], 2, "line 6: not a twinbench record"),
    row(["baseline", "--run", "{run_cut}"], 2, "line 6: unfinished"),
    row(
        ["baseline", "--run", "{run_deepline}"],
        2,
        "line 6: not a twinbench record",
        fixed=DEEP.format(what="A records.jsonl line"),
    ),
    row(["baseline", "--run", "{run_envlist}"], 2, "must hold a JSON object"),
    row(["baseline", "--run", "{run_nook}"], 2, "has no measured cell"),
    row(["baseline", "--run", "{run_mixed}"], 2, "mixes devices"),
    row(["baseline", "--run", "{base_deep}"], 2, "not a twinbench baseline", fixed=DEEP.format(what="A baseline JSON")),
    # -- history -----------------------------------------------------------------------------------------
    row(["history"], 2, "give --twin"),
    row(["history", "--twin", "grid-gnn"], 2, "no history at"),
    row(["history", "--twin", "grid-gnn", "--runs", "{missing}"], 2, "no history at"),
    row(["history", "--twin", "grid-gnn", "--runs", "{file}"], 2, "no history at"),
    row(["history", "--twin", "grid-gnn", "--runs", "{hist_corrupt}"], 2, "--rebuild"),
    row(["history", "--twin", "no-such-twin", "--runs", "{hist}"], 2, "no history for twin 'no-such-twin'"),
    row(["history", "--twin", "\x1b[2J", "--runs", "{hist}"], 2, "no history for twin"),
    row(["history", "--twin", "grid-gnn", "--variant", "nope", "--runs", "{hist}"], 2, "no history for variant"),
    row(["history", "--twin", "grid-gnn", "--runs", "{hist}"], 0, "| int8 |"),  # the control
    row(["history", "--rebuild", "--runs", "{file}"], 2, "no runs folder"),
    row(["history", "--rebuild", "--runs", "{missing}"], 2, "no runs folder"),
    row(["history", "--rebuild", "--runs", "h\x00"], 2, "a path cannot contain a NUL byte"),
]


@pytest.mark.parametrize("argv, code, message, setup", ROWS)
def test_hostile_walk(argv, code, message, setup, tmp_path, monkeypatch, capsys, request, tripwires):
    world = World(tmp_path / "w")
    argv = [world.fill(a) for a in argv]
    message = world.fill(message)
    if setup:
        SETUPS[setup](request, monkeypatch, world)
    before = snapshot(world.root)
    zen_imported = "this" in sys.modules

    def hang(signum, frame):
        raise Hang(f"still running after {TIME_LIMIT_S:g} s")

    previous = signal.signal(signal.SIGALRM, hang)
    signal.setitimer(signal.ITIMER_REAL, TIME_LIMIT_S)
    start = time.perf_counter()
    try:
        rc = main(argv)
    except BaseException as e:  # a traceback: anything out of main is a defect (or a tripwire)
        pytest.fail(f"{type(e).__name__} out of main: {e}"[:2000])
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    elapsed = time.perf_counter() - start
    out, err = capsys.readouterr()

    assert "Traceback" not in out + err
    assert rc == code, (rc, err[-2000:])
    assert elapsed < TIME_LIMIT_S
    if code in (1, 2):
        assert "error: " in err, err[-2000:]
    assert message in (out if code == 0 else err), (out if code == 0 else err)[-2000:]
    if not any(c in "".join(argv) for c in ESCAPES):
        assert not [c for c in ESCAPES if c in out + err], "a terminal escape from a file reached the terminal"
    assert ZEN not in out + err and ("this" in sys.modules) == zen_imported, "a grid file made twinbench import `this`"
    assert snapshot(world.root) == before, "the command changed its fixtures"
