"""A grid file may not make pandapower import a module of its choosing.

pandapower.from_json imports the module a `_module` key names (at any depth, and inside the JSON
strings it keeps DataFrames and controllers in): `{"_module": "this", ...}` prints the Zen of Python
before pandapower finds that the file is no net. models.grid.inputs.check_net_json refuses such a
file (DataError: exit 2) before pandapower reads it; the nets pandapower writes pass.
"""

import json
import sys
from pathlib import Path

import pytest

from bench.cli import main
from models.errors import DataError, TwinbenchError
from models.grid import inputs
from models.grid.inputs import check_net_json, read_net_file

THIS = {"_module": "this", "_class": "x", "_object": "{}"}


def _net_with_everything():
    """example_simple with what else pandapower writes `_module`s for: controllers, a data source,
    characteristics, an output writer, a networkx graph, numpy, pandas and builtins values."""
    import numpy as np
    import pandapower.control as control
    import pandapower.networks as pn
    import pandapower.topology as topology
    import pandas as pd
    from pandapower.timeseries import DFData, OutputWriter

    net = pn.example_simple()
    data = DFData(pd.DataFrame({"p": np.linspace(0.0, 1.0, 4)}))
    control.ConstControl(net, "load", "p_mw", element_index=[0], data_source=data, profile_name=["p"])
    control.DiscreteTapControl(net, 0, 0.99, 1.01)
    control.SplineCharacteristic(net, [0.0, 1.0, 2.0], [0.0, 1.0, 4.0])
    control.Characteristic(net, [0.0, 1.0], [1.0, 2.0])
    OutputWriter(net, output_path=None, output_file_type=".json")
    net["graph"] = topology.create_nxgraph(net)
    net["values"] = [np.int64(3), np.float32(1.5), np.bool_(True), np.arange(3), (1, 2), {3}, frozenset({4})]
    net["index"] = [pd.RangeIndex(2), pd.DatetimeIndex(["2016-01-01"]), pd.Series([1.0, 2.0])]
    return net


def _pairs(text: str) -> set[tuple[str, str]]:
    """Every (_module, _class) in a JSON text, JSON held in its strings included."""
    found, stack = set(), [json.loads(text)]
    while stack:
        item = stack.pop()
        if isinstance(item, str) and item[:1] in ("{", "["):
            stack.append(json.loads(item))
        elif isinstance(item, dict):
            found |= {(item["_module"], item["_class"])} if "_module" in item else set()
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return found


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> dict[str, Path]:
    """example_simple as pandapower saves it (`plain`), and with controllers and the rest (`rich`)."""
    import pandapower as pp
    import pandapower.networks as pn

    folder = tmp_path_factory.mktemp("nets")
    paths = {"plain": folder / "plain.json", "rich": folder / "rich.json"}
    pp.to_json(pn.example_simple(), str(paths["plain"]))
    pp.to_json(_net_with_everything(), str(paths["rich"]))
    return paths


def test_nets_pandapower_writes_pass(saved):
    import pandapower as pp

    classes = {cls for _, cls in _pairs(saved["rich"].read_text())}
    assert {"ConstControl", "DFData", "SplineCharacteristic", "OutputWriter", "MultiGraph"} <= classes
    assert {"frozenset", "tuple", "float32", "array", "RangeIndex", "Series", "DataFrame"} <= classes
    for path in saved.values():
        check_net_json(path.read_text(), path.name)
        net = read_net_file(path, path.name)
        assert isinstance(net, pp.pandapowerNet) and len(net.bus)
    assert len(read_net_file(saved["rich"], "rich.json").controller) == 2


def test_the_smoke_simbench_net_passes(simbench_net, tmp_path):
    import pandapower as pp

    pp.to_json(simbench_net, str(tmp_path / "smoke.json"))
    check_net_json((tmp_path / "smoke.json").read_text(), "smoke.json")


def _with_cell(saved: dict[str, Path], cell: dict, edit=lambda text: text) -> str:
    """The rich net with `cell` as its first controller's object, inside the controller table's
    embedded JSON (where pandapower decodes it), that JSON's text passed through `edit`."""
    net = json.loads(saved["rich"].read_text())
    table = net["_object"]["controller"]
    frame = json.loads(table["_object"])
    frame["data"][0][frame["columns"].index("object")] = cell
    table["_object"] = edit(json.dumps(frame))
    return json.dumps(net)


def _nested_in_controller(saved: dict[str, Path], module: str, cls: str) -> str:
    """The rich net with its ConstControl's data source (JSON in the controller's JSON, in the
    controller table's JSON) renamed to `module`.`cls`: three decodes deep."""
    net = json.loads(saved["rich"].read_text())
    table = net["_object"]["controller"]
    frame = json.loads(table["_object"])
    cell = frame["data"][0][frame["columns"].index("object")]
    controller = json.loads(cell["_object"])
    controller["data_source"].update({"_module": module, "_class": cls})
    cell["_object"] = json.dumps(controller)
    table["_object"] = json.dumps(frame)
    return json.dumps(net)


HOSTILE = {
    "this, top level": lambda s: json.dumps(THIS),
    "this, as a table": lambda s: json.dumps(
        {"_module": "pandapower.auxiliary", "_class": "pandapowerNet", "_object": {"bus": THIS}}
    ),
    "os.system": lambda s: json.dumps(
        {
            "_module": "pandapower.auxiliary",
            "_class": "pandapowerNet",
            "_object": {"x": {"_module": "os", "_class": "system", "_object": "echo hi"}},
        }
    ),
    "subprocess in a table's JSON": lambda s: _with_cell(
        s, {"_module": "subprocess", "_class": "Popen", "_object": '{"args": ["echo", "hi"]}'}
    ),
    "this in a controller's JSON": lambda s: _nested_in_controller(s, "this", "DFData"),
    "os in a controller's JSON": lambda s: _nested_in_controller(s, "os", "system"),
    "this, escaped": lambda s: _with_cell(s, THIS, lambda text: text.replace("_module", "\\u005fmodule")),
    "this, JSON only pandas reads": lambda s: _with_cell(s, THIS, lambda text: text[:-1] + ",}"),
    "a pandapower look-alike": lambda s: _nested_in_controller(s, "pandapowerx.control", "ConstControl"),
    "a private pandapower module": lambda s: _nested_in_controller(s, "pandapower.__main__", "x"),
    "numpy's f2py": lambda s: json.dumps({"_module": "numpy.f2py.__main__", "_class": "array", "_object": []}),
    "a builtin function": lambda s: json.dumps({"_module": "builtins", "_class": "function", "_object": "eval"}),
    "a module that is not a name": lambda s: json.dumps({"_module": ["this"], "_class": "x", "_object": {}}),
}


@pytest.fixture
def no_this():
    """`this` not imported before the test, and checked not imported after it."""
    sys.modules.pop("this", None)
    yield
    assert "this" not in sys.modules


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_modules_are_refused_unimported(saved, tmp_path, capsys, no_this, case):
    path = tmp_path / "feeder.json"
    path.write_text(HOSTILE[case](saved))
    with pytest.raises(DataError) as refused:
        read_net_file(path, "feeder.json")
    message = str(refused.value)
    assert message.startswith("feeder.json is refused: ") and "\n" not in message
    assert isinstance(refused.value, TwinbenchError) and refused.value.exit_code == 2
    assert capsys.readouterr() == ("", "")


def test_the_offending_module_is_named(saved, no_this):
    with pytest.raises(DataError, match=r"names Python module 'subprocess' \(class 'Popen'\)"):
        check_net_json(HOSTILE["subprocess in a table's JSON"](saved), "feeder.json")
    with pytest.raises(DataError, match=r"names Python module 'this' \(class 'DFData'\)"):
        check_net_json(HOSTILE["this in a controller's JSON"](saved), "feeder.json")


def test_a_dataframe_read_from_another_file_is_refused(tmp_path, no_this):
    """pandapower hands pandas a DataFrame's `_object` that is an absolute *.json path: pandas would
    read that file, unchecked."""
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"columns": ["object"], "index": [0], "data": [[THIS]]}))
    table = {"_module": "pandas.core.frame", "_class": "DataFrame", "_object": str(other), "orient": "split"}
    net = {"_module": "pandapower.auxiliary", "_class": "pandapowerNet", "_object": {"controller": table}}
    with pytest.raises(DataError, match="not embedded JSON: pandas would read another file"):
        check_net_json(json.dumps(net), "feeder.json")


@pytest.mark.parametrize("depth", [65, 100_000])
def test_deep_json_is_refused_without_recursion_error(depth):
    with pytest.raises(DataError, match="nested more than 64 levels deep"):
        check_net_json("[" * depth + "]" * depth, "deep.json")
    embedded = json.dumps({"_module": "pandas", "_class": "Series", "_object": "[" * depth + "]" * depth + "\\"})
    with pytest.raises(DataError, match="nested more than 64 levels deep|cannot be checked"):
        check_net_json(embedded, "deep.json")


def test_a_huge_file_is_refused_unread(saved, monkeypatch):
    monkeypatch.setattr(inputs, "NET_FILE_MAX_BYTES", 1000)
    with pytest.raises(DataError, match=r"is refused: [\d,]+ bytes, more than a grid file may have \(1,000\)"):
        read_net_file(saved["plain"], "plain.json")


def test_the_cli_refuses_a_hostile_file_with_exit_2(saved, tmp_path, monkeypatch, capsys, no_this):
    monkeypatch.setenv("TWINBENCH_CACHE", str(tmp_path / "cache"))
    for case in ("this, top level", "subprocess in a table's JSON", "this in a controller's JSON"):
        path = tmp_path / "feeder.json"
        path.write_text(HOSTILE[case](saved))
        assert main(["data", "--grid", str(path)]) == 2
        out, err = capsys.readouterr()
        assert out == "" and "Traceback" not in err
        errors = [line for line in err.splitlines() if line.startswith("error: ")]
        assert len(errors) == 1 and errors[0].startswith(f"error: {path} is refused: it names Python module ")
