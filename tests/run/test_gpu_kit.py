"""The GPU kit (bench/run/gpu_kit.py, bench/run/gpu_run.sh, suite gpu-first): its pieces, in seconds.
The rehearsal itself (fresh venv, carried wheels, a measured cell) is `make gpu-kit`, not a test."""

import json
import subprocess
import tarfile
import tomllib
from pathlib import Path

import pytest

from bench.plan import REFERENCE, REFERENCE_RUNTIME, RunPlan
from bench.run import gpu_kit
from bench.run.estimate import estimate, training_needs
from bench.run.planning import make_plan
from bench.suites import load_suite

REPO = Path(__file__).resolve().parents[2]


def _plan(**narrow) -> RunPlan:
    return make_plan(load_suite("gpu-first"), estimate_only=True, **narrow)


def test_gpu_first_fits_six_minutes_of_h100_measuring_with_what_the_issue_asks():
    suite = load_suite("gpu-first")
    plan = _plan()
    assert suite.device == "cuda" and set(plan.twins) == {"sensor-transformer", "grid-gnn", "diffusion-forecaster"}
    assert (plan.window_s, plan.repetitions) == (5.0, 3)
    needs = training_needs(plan, root=Path("/nonexistent"))  # what is cached here does not matter
    measuring_s = estimate(plan, plan.cells(), 1, None, needs).measuring_s
    assert measuring_s <= gpu_kit.MEASURE_BOUND_S, f"{measuring_s / 60:.1f} min"
    specs = [json.dumps(v.spec[0], sort_keys=True) for v in plan.variants[1:]]
    assert json.dumps({"pass": "half", "dtype": "bfloat16", "max_quality_loss_pct": 1}, sort_keys=True) in specs
    assert any('"diffusion-steps"' in s and '"auto"' in s for s in specs)
    # fp32 eager against compiled: the reference on both, every variant compiled
    runtimes = {(c.variant == REFERENCE, c.runtime) for c in plan.cells()}
    assert runtimes == {(True, REFERENCE_RUNTIME), (True, "torch-compile"), (False, "torch-compile")}


def test_a_suite_without_torch_eager_still_measures_its_reference_there_and_plan_json_keeps_it():
    plan = _plan()
    assert plan.reference_runtimes == (REFERENCE_RUNTIME,)
    again = RunPlan.from_dict(json.loads(json.dumps(plan.to_dict())))
    assert again == plan and [c.key for c in again.cells()] == [c.key for c in plan.cells()]
    # a runtime named on the command line is all that is measured; a suite with torch-eager adds nothing
    assert _plan(runtime="torch-compile").reference_runtimes == ()
    smoke = make_plan(load_suite("smoke"), device="cpu", threads=1)
    assert smoke.reference_runtimes == () and "reference_runtimes" not in smoke.to_dict()
    with pytest.raises(Exception, match="repeat a runtime"):
        RunPlan(**{**_plan_fields(plan), "reference_runtimes": ("torch-compile",)})


def _plan_fields(plan: RunPlan) -> dict:
    return {f: getattr(plan, f) for f in plan.__dataclass_fields__}


def test_the_carried_wheels_cover_every_dependency_the_gpu_machine_lacks():
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    names = {gpu_kit.norm(d.split(">")[0].split("=")[0].split("<")[0].split("[")[0].strip()) for d in deps}
    carried = {gpu_kit.norm(c) for c in gpu_kit.CARRIED}
    missing = names - gpu_kit.GPU_PACKAGES - carried - set(gpu_kit.NOT_CARRIED)
    assert not missing, f"add to gpu_kit.CARRIED (and check its own needs): {sorted(missing)}"
    assert not carried & gpu_kit.GPU_PACKAGES - {"typing-extensions"}, "carry only what the machine lacks"


@pytest.mark.parametrize(
    ("name", "specific"),
    [
        ("pydantic_core-2.50.5-cp312-cp312-manylinux2014_x86_64.manylinux_2_17_x86_64.whl", True),
        ("torchao-0.18.0-cp310-abi3-manylinux_2_24_x86_64.manylinux_2_28_x86_64.whl", False),
        ("zeus-0.16.0-py3-none-any.whl", False),
    ],
)
def test_which_wheels_the_rehearsal_swaps_for_this_interpreter(name, specific):
    assert gpu_kit.is_interpreter_specific(name) is specific
    assert gpu_kit.wheel_dist(name) == gpu_kit.norm(name.split("-")[0])


def test_stale_wheels_are_other_versions_and_unwanted_packages(tmp_path):
    for name in ("zeus-0.16.0-py3-none-any.whl", "zeus-0.15.0-py3-none-any.whl", "rich-15.0.0-py3-none-any.whl"):
        (tmp_path / name).write_bytes(b"")
    stale = gpu_kit.stale_wheels(tmp_path, ["zeus==0.16.0"])
    assert sorted(p.name for p in stale) == ["rich-15.0.0-py3-none-any.whl", "zeus-0.15.0-py3-none-any.whl"]


def test_rehearsal_wheels_swap_cp312_builds_for_local_ones(tmp_path):
    carried, local, dest = tmp_path / "whl", tmp_path / "local", tmp_path / "dest"
    carried.mkdir(), local.mkdir()
    (carried / "zeus-0.16.0-py3-none-any.whl").write_bytes(b"z")
    (carried / "pydantic_core-2.50.5-cp312-cp312-manylinux_2_17_x86_64.whl").write_bytes(b"312")
    (local / "pydantic_core-2.50.5-cp311-cp311-manylinux_2_17_x86_64.whl").write_bytes(b"311")
    links = gpu_kit.rehearsal_wheels(carried, local, dest)  # nothing to download: the local build is there
    assert sorted(p.name for p in links) == [
        "pydantic_core-2.50.5-cp311-cp311-manylinux_2_17_x86_64.whl",
        "zeus-0.16.0-py3-none-any.whl",
    ]
    assert {p.read_bytes() for p in links} == {b"z", b"311"}


def test_the_packed_cache_holds_the_grid_and_checkpoints_only(tmp_path):
    cache = tmp_path / "cache"
    grid = cache / "grids" / "g"
    grid.mkdir(parents=True)
    (grid / "manifest.json").write_text("{}")
    (grid / "streams.npz").write_bytes(b"x" * 100)
    ckpt = cache / "checkpoints" / "grid-gnn" / "g"
    (ckpt / "variants").mkdir(parents=True)
    for name in ("a.safetensors", "a.json", "a.safetensors.lock", "variants/b.safetensors", "variants/b.json"):
        (ckpt / name).write_bytes(b"w")
    (cache / "searches" / "grid-gnn" / "g").mkdir(parents=True)
    (cache / "searches" / "grid-gnn" / "g" / "s.json").write_text("{}")  # searched on this CPU: not carried
    members = gpu_kit.cache_members(cache, ["g"], ["grid-gnn", "sensor-transformer"])
    assert sorted(map(str, members)) == [
        "checkpoints/grid-gnn/g/a.json",
        "checkpoints/grid-gnn/g/a.safetensors",
        "checkpoints/grid-gnn/g/variants/b.json",
        "checkpoints/grid-gnn/g/variants/b.safetensors",
        "grids/g/manifest.json",
        "grids/g/streams.npz",
    ]
    tarball = tmp_path / "kit" / "cache.tar.gz"
    assert gpu_kit.pack_cache(cache, members, tarball)
    assert not gpu_kit.pack_cache(cache, members, tarball)  # unchanged: not packed again
    with tarfile.open(tarball) as tar:
        assert sorted(tar.getnames()) == sorted(map(str, members))
    with pytest.raises(SystemExit, match="no data cache"):
        gpu_kit.cache_members(cache, ["other"], ["grid-gnn"])


def test_carry_size_counts_the_working_tree_as_the_device_tool_does(tmp_path):
    def git(*args):
        subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True)

    git("init", "-q")
    (tmp_path / ".gitignore").write_text(".cache/\n")
    (tmp_path / "tracked.py").write_bytes(b"t" * 1000)
    (tmp_path / "new.py").write_bytes(b"n" * 300)  # untracked, not ignored: travels
    (tmp_path / ".cache" / "kit").mkdir(parents=True)
    (tmp_path / ".cache" / "kit" / "cache.tar.gz").write_bytes(b"c" * 5000)  # ignored: only as carried
    (tmp_path / ".cache" / "other.bin").write_bytes(b"o" * 7000)  # ignored and not carried
    git("add", "tracked.py", ".gitignore")
    tree, carried = gpu_kit.carry_bytes(tmp_path, [Path(".cache/kit")])
    assert tree == 1000 + 300 + len(".cache/\n") and carried == 5000


def test_gpu_base_links_only_the_gpu_machines_distributions(tmp_path):
    site = tmp_path / "site"
    for name, module in (("torch", "torch"), ("zeus", "zeus")):
        info = site / f"{name}-1.0.dist-info"
        info.mkdir(parents=True)
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
        (info / "RECORD").write_text(f"{module}/__init__.py,,\n{name}-1.0.dist-info/METADATA,,\n")
        (site / module).mkdir()
        (site / module / "__init__.py").write_text("")
    base = tmp_path / "base"
    assert gpu_kit.gpu_base(site, base, {"torch"}) == ["torch"]
    assert sorted(p.name for p in base.iterdir()) == ["torch", "torch-1.0.dist-info"]


def test_headline_and_bundle_check(tmp_path):
    ok = {"twin": "grid-gnn", "variant_name": "reference", "runtime": "torch-eager", "status": "ok",
          "quality_loss_pct": 0.0, "energy_j_per_inference": 0.002, "reference_energy_j_per_inference": 0.004,
          "latency_ms_p50": 1.5, "energy_source": "nvml"}  # fmt: skip
    bad = {"twin": "grid-gnn", "variant_name": "half", "runtime": "torch-compile", "status": "error",
           "status_reason": "boom"}  # fmt: skip
    table = gpu_kit.headline([ok, bad]).splitlines()
    assert table[0].split()[:3] == ["twin", "variant", "runtime"] and "0.50" in table[2] and "error: boom" in table[1]
    out = tmp_path / "out"
    run = tmp_path / "runs" / "r1"
    run.mkdir(parents=True)
    (run / "records.jsonl").write_text(json.dumps(ok) + "\n")
    out.mkdir()
    with tarfile.open(out / "run.tar.gz", "w:gz") as tar:
        tar.add(run, arcname="r1")
    assert gpu_kit.check_bundle(out, expect_records=1) == [f"no {n}" for n in gpu_kit.BUNDLE if n != "run.tar.gz"]
    for name in gpu_kit.BUNDLE[1:]:
        (out / name).write_text("x")
    assert gpu_kit.check_bundle(out, expect_records=1) == []


def test_gpu_run_sh_parses_and_names_the_bundle():
    subprocess.run(["bash", "-n", str(REPO / "bench/run/gpu_run.sh")], check=True)
    script = (REPO / "bench/run/gpu_run.sh").read_text()
    for name in gpu_kit.BUNDLE:
        assert name in script
    assert "--no-index" in script and "gpu_kit.py headline" in script
