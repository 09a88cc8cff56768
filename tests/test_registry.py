"""The one registry kind: decorator with a duplicate check, unknown names, lazy discovery of
built-in modules and of other packages' entry points (with their origin), broken plugins listed."""

from __future__ import annotations

import sys
import types
from importlib import metadata

import pytest

from models import plugins
from models.errors import UnknownNameError
from models.plugins import BUILT_IN, Registry, Requirements


class Thing:
    name = "thing"


# As if it lived in a plugin's package (this file's `tests` is a name other distributions use too).
Thing.__module__ = "twinbench_fake_plugin.things"


def fake_entry_points(*entries: tuple[str, str]):
    """metadata.entry_points(group=...) answering with `entries`."""
    eps = [metadata.EntryPoint(name, value, "twinbench.things") for name, value in entries]
    return lambda group: [ep for ep in eps if ep.group == group]


def test_register_and_get_and_duplicates():
    registry = Registry("thing", "twinbench.none-such")
    registry.register()(Thing)
    assert registry.get("thing") is Thing and registry.names() == ["thing"]
    assert registry.entries()["thing"].origin == "twinbench_fake_plugin (not installed)"  # not twinbench's own code
    with pytest.raises(ValueError, match="registered twice"):
        registry.register("thing")(Thing)
    with pytest.raises(UnknownNameError, match="unknown thing 'nope'; valid things: thing"):
        registry.get("nope")


def test_entry_points_register_with_their_package_and_version(monkeypatch):
    registry = Registry("thing", "twinbench.things")
    monkeypatch.setattr(metadata, "entry_points", fake_entry_points(("object-entry", "tests.test_registry:Thing")))
    # As if this test module were installed by the distribution twinbench-fake 1.2.3:
    monkeypatch.setattr(plugins, "_distributions", lambda: {"twinbench_fake_plugin": ["twinbench-fake"]})
    monkeypatch.setattr(metadata, "version", lambda dist: {"twinbench-fake": "1.2.3"}[dist])
    entry = registry.entries()["object-entry"]
    assert entry.obj is Thing
    assert entry.origin == "twinbench-fake 1.2.3"


def test_a_module_entry_point_registers_through_its_decorators(monkeypatch):
    registry = Registry("thing", "twinbench.things")
    module = types.ModuleType("fake_plugin_module")
    monkeypatch.setitem(sys.modules, "fake_plugin_module", module)
    registry.register("by-decorator")(Thing)  # what importing the module would do...
    monkeypatch.setattr(metadata, "entry_points", fake_entry_points(("mod", "fake_plugin_module")))
    assert registry.names() == ["by-decorator"]  # ...and the module itself is not an entry


def test_a_wrapped_entry_takes_its_origin_from_its_code(monkeypatch):
    """A runtime is registered as a Runtime record around the plugin's function: the function's
    package is the origin, not bench.measure.runtimes where the record's class lives."""
    from bench.measure.runtimes import Runtime

    def open_session(model, ctx):
        raise NotImplementedError

    open_session.__module__ = "twinbench_fake_plugin.runtime"
    monkeypatch.setattr(plugins, "_distributions", lambda: {"twinbench_fake_plugin": ["twinbench-fake"]})
    monkeypatch.setattr(metadata, "version", lambda dist: {"twinbench-fake": "1.2.3"}[dist])
    registry = Registry("runtime", "twinbench.none-such")
    registry.add("fake-rt", Runtime("fake-rt", open_session, "torch"), code=open_session)
    assert registry.entries()["fake-rt"].origin == "twinbench-fake 1.2.3"


def test_a_broken_plugin_is_listed_not_fatal(monkeypatch):
    registry = Registry("thing", "twinbench.things")
    registry.register()(Thing)
    monkeypatch.setattr(metadata, "entry_points", fake_entry_points(("broken", "no_such_module_xyz:Thing")))
    assert registry.names() == ["thing"]  # the built-in entries still work
    assert "ModuleNotFoundError" in registry.failures()["broken"]
    with pytest.raises(UnknownNameError, match="its plugin failed to load"):
        registry.get("broken")


def test_builtin_registries_discover_every_extension_point():
    from bench.measure.meters import METERS
    from bench.measure.runtimes import RUNTIMES
    from compress.base import PASSES
    from models.registry import TWINS

    assert {"grid-gnn", "sensor-transformer", "diffusion-forecaster"} <= set(TWINS.names())
    assert {"half", "float8", "distill", "prune-structured"} <= set(PASSES.names())
    assert {"torch-eager", "onnxruntime"} <= set(RUNTIMES.names())
    assert {"nvml", "rapl", "estimate", "none"} <= set(METERS.names())
    assert all(e.origin == BUILT_IN for r in (TWINS, PASSES, RUNTIMES, METERS) for e in r.entries().values())


def test_requirements_say_why_not():
    cuda = Requirements(device="cuda", compute_capability=(8, 9), why="fp8 tensor cores")
    assert "needs a CUDA GPU (fp8 tensor cores); the device is cpu" == cuda.unmet("cpu")
    onnx_only = Requirements(targets=("onnx",))
    assert onnx_only.unmet("cpu", "onnx") is None
    assert onnx_only.unmet("cpu", "torch") == "runs on onnx runtimes only, not torch"
    missing = Requirements(libraries=("no_such_library_xyz",), target_libraries=(("onnx", "another_missing_xyz"),))
    assert missing.unmet("cpu", "torch") == "needs no_such_library_xyz, not installed here"
    assert missing.unmet("cpu", "onnx") == "needs no_such_library_xyz, another_missing_xyz, not installed here"
    assert Requirements().unmet("cpu", "torch") is None
    assert cuda.describe() == "cuda, compute capability >= 8.9"


def test_passes_and_runtimes_check_their_requirements_before_running(tmp_path):
    from bench.measure.runtimes import RuntimeContext, make_session
    from compress.base import PassContext, Variant, make_pass
    from models.errors import Unsupported

    ctx = PassContext(twin=None, device="cpu", workdir=tmp_path, target="onnx")
    with pytest.raises(Unsupported, match="float8 needs a CUDA GPU"):
        Variant((make_pass("float8"),)).build(object(), ctx)
    runtime_ctx = RuntimeContext(device="cpu", threads=1, workdir=tmp_path, twin=None)
    with pytest.raises(Unsupported, match="torch-compile-cudagraphs needs a CUDA GPU"):
        make_session("torch-compile-cudagraphs", object(), runtime_ctx)


def test_list_shows_origins_and_what_runs_here(capsys):
    from bench.cli import main

    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "grid-gnn                 built-in · trains" in out
    assert "quant-static-int8        built-in · runs here for onnx" in out
    assert "float8                   built-in · not here: needs a CUDA GPU" in out  # no GPU on CI machines
    assert "onnxruntime              built-in · runs onnx models · runs here" in out
    assert "estimate                 built-in · meters cpu" in out


def test_a_plugin_that_exits_or_names_the_wrong_thing_is_its_own_failure(monkeypatch, capsys):
    """Issue 23 item 6: `os:getcwd` as a pass crashed `twinbench list`; a plugin calling sys.exit(3)
    on import ended every command with exit 3."""
    from bench.cli import main
    from compress.base import PASSES

    exiting = types.ModuleType("twinbench_fake_exiting")
    exiting.__getattr__ = lambda name: sys.exit(3)  # `module:attr` loading runs this
    monkeypatch.setitem(sys.modules, "twinbench_fake_exiting", exiting)
    eps = [
        metadata.EntryPoint("cwd", "os:getcwd", "twinbench.passes"),
        metadata.EntryPoint("exits", "twinbench_fake_exiting:Pass", "twinbench.passes"),
    ]
    monkeypatch.setattr(metadata, "entry_points", lambda group: [ep for ep in eps if ep.group == group])
    monkeypatch.setattr(PASSES, "_discovered", False)
    monkeypatch.setattr(PASSES, "_entries", dict(PASSES._entries))
    monkeypatch.setattr(PASSES, "_failed", {})
    assert main(["list"]) == 0  # every other command goes on
    out = capsys.readouterr().out
    assert "'cwd'" in out and "not a pass" in out
    assert "'exits'" in out and "SystemExit" in out
    assert "half" in PASSES.names() and "cwd" not in PASSES.names()
