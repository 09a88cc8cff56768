"""Imports run one way: errors and the registry at the bottom, then grid data and twins (models/),
then passes (compress/), then measurement, decisions and the CLI (bench/). Read from the source, so a
function-local import cannot hide an upward or circular dependency."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("models", "compress", "bench")
LEAVES = {"models.errors": set(), "models.plugins": {"models.errors"}}
# Function-local imports of project modules are allowed only for start-up time: the CLI imports a
# command's modules when the command runs, and Ray is imported only when the Ray executor is asked for.
LOCAL_OK = {
    "bench.cli.args",
    "bench.cli.machine",
    "bench.cli.data",
    "bench.cli.run",
    "bench.cli.decide",
    "bench.cli.choose",
    "bench.run.runner",
}


def layer(module: str) -> int:
    if module in LEAVES:
        return 0
    return 1 + PACKAGES.index(module.split(".")[0])


def modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
            found[name] = path
    return found


def project_imports(path: Path, known: set[str]) -> list[tuple[str, bool]]:
    """(imported project module, imported inside a function) for every import in the file."""
    tree = ast.parse(path.read_text())
    local_nodes = {
        id(n)
        for f in ast.walk(tree)
        if isinstance(f, ast.FunctionDef | ast.AsyncFunctionDef)
        for n in ast.walk(f)
        if isinstance(n, ast.Import | ast.ImportFrom)
    }
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        else:
            continue
        for name in names:
            while name and name not in known:
                name = name.rpartition(".")[0]
            if name:
                out.append((name, id(node) in local_nodes))
    return out


def test_no_module_imports_from_a_layer_above_it():
    found = modules()
    upward = [
        f"{mod} imports {dep}"
        for mod, path in found.items()
        for dep, _ in project_imports(path, set(found))
        if layer(dep) > layer(mod)
    ]
    assert upward == []


# bench/ inside: the shared file formats at the bottom, then measuring and deciding side by side, then
# running (which drives both), then the command line (which may use everything).
SHARED = {"bench", "bench.suites", "bench.plan", "bench.records", "bench.store", "bench.history_db"}
BENCH_MAY_USE = {
    "shared": set(),
    "bench.measure": {"shared"},
    "bench.decide": {"shared"},
    "bench.run": {"shared", "bench.measure", "bench.decide"},
    "bench.cli": {"shared", "bench.measure", "bench.decide", "bench.run", "bench.__main__"},
    "bench.__main__": {"bench.cli"},
}


def bench_part(module: str) -> str:
    if module in SHARED:
        return "shared"
    return next(p for p in BENCH_MAY_USE if p != "shared" and (module == p or module.startswith(p + ".")))


def test_bench_parts_import_only_what_they_may():
    """measure/ and decide/ use the shared files (and models/, compress/) only; run/ also measure/
    and decide/; the CLI everything; the shared files nothing of the parts."""
    found = modules()
    wrong = [
        f"{mod} imports {dep}"
        for mod, path in found.items()
        if mod.startswith("bench")
        for dep, _ in project_imports(path, set(found))
        if dep.startswith("bench")
        and bench_part(dep) != bench_part(mod)
        and bench_part(dep) not in BENCH_MAY_USE[bench_part(mod)]
    ]
    assert wrong == []


def test_errors_and_registry_are_leaves():
    found = modules()
    for leaf, allowed in LEAVES.items():
        deps = {dep for dep, _ in project_imports(found[leaf], set(found))} - {leaf, "models"}
        assert deps <= allowed, f"{leaf} imports {deps - allowed}"


def test_no_two_files_import_each_other_and_no_local_import_dodges_a_cycle():
    found = modules()
    graph = {mod: {dep for dep, _ in project_imports(path, set(found)) if dep != mod} for mod, path in found.items()}
    mutual = sorted({tuple(sorted((a, b))) for a, deps in graph.items() for b in deps if a in graph.get(b, ())})
    assert mutual == []
    local = sorted(
        f"{mod} imports {dep} inside a function"
        for mod, path in found.items()
        if mod not in LOCAL_OK
        for dep, is_local in project_imports(path, set(found))
        if is_local
    )
    assert local == []


def test_the_shared_layers_hold_no_twin_specific_branches():
    """Twins answer for themselves through hooks; bench/ and compress/ never name one."""
    names = ("diffusion-forecaster", "DiffusionForecaster", "PatchTSTForecaster", "GridGNN")
    hits = [
        f"{path.relative_to(ROOT)}:{i}"
        for package in ("bench", "compress")
        for path in (ROOT / package).rglob("*.py")
        for i, line in enumerate(path.read_text().splitlines(), 1)
        if any(n in line for n in names)
    ]
    assert hits == []
