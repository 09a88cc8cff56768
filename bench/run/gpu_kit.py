"""The GPU kit: everything a lent GPU machine needs for one run, built and rehearsed here first.

A lent GPU comes with 15 minutes of device time in all (machine start, idle waits and every command
count; one command may run 10 minutes), Python 3.12 with a fixed set of packages, and no package
index. So the run is prepared here, carried (64 MiB in all, the working tree included) and rehearsed:

- `.whl/`: the wheels of what the project needs and the machine lacks, for CPython 3.12, pinned to
  the versions installed in this checkout's `.venv` (one version of each);
- `.cache/gpu-kit/cache.tar.gz`: the suite's grid cache and trained checkpoints (trained here, on the
  CPU: the device only measures), gzipped;
- the rehearsal: a fresh venv whose only packages are those the GPU machine has (linked from `.venv`),
  the carried wheels installed with `pip install --no-index` (cp311 builds of the binary ones, as
  this machine runs 3.11), and `bench/run/gpu_run.sh` run with device=cpu on a one-cell subset. An
  import the GPU machine lacks fails here, not there.

`make gpu-kit` runs `python bench/run/gpu_kit.py all`; `headline RUN` prints the table gpu_run.sh
ends with. The rest of the project never imports this module.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import time
from collections.abc import Iterable
from importlib import metadata
from pathlib import Path

from bench.run.estimate import describe, estimate, training_needs
from bench.run.planning import make_plan
from bench.suites import load_suite
from models.grid.cache import cache_root

REPO = Path(__file__).resolve().parents[2]
SUITE = "gpu-first"
WHEELS = Path(".whl")  # carried: the device README's folder, ignored by .gitignore
KIT = Path(".cache/gpu-kit")  # carried: the packed cache (under .cache/, so ignored)
CACHE_TARBALL = "cache.tar.gz"
REHEARSAL = Path(".cache/gpu-kit-rehearsal")  # not carried: the rehearsal's venv, wheels and output
CARRY = (WHEELS, KIT)
CARRY_LIMIT_BYTES = 64 * 2**20  # the device tool's limit on what travels, working tree included
MEASURE_BOUND_S = 6 * 60  # the bound on the suite's measuring, by the run's own estimate
DEVICE_PYTHON = "3.12"
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_24_x86_64", "manylinux_2_17_x86_64",
             "manylinux2014_x86_64", "manylinux1_x86_64")  # fmt: skip
REHEARSAL_ARGS = ("--variant", "reference", "--runtime", "torch-eager")

# The Python packages of the GPU machine's image ('cuda'), as the device tool's KINDS.md lists them
# (read on such a machine on 2026-11-17), plus huggingface-hub, which that list leaves out but its
# `pip list` row shows (1.33.0; transformers needs it); versions differ from this checkout's (torch
# 2.11 there).
GPU_PACKAGES = frozenset(
    """huggingface-hub
absl-py accelerate aiofiles aiohappyeyeballs aiohttp aiosignal annotated-doc anyio attrs botorch build
certifi charset-normalizer chex click cloudpickle cmake colorama contourpy coverage cuda-bindings cuda-core
cuda-pathfinder cuda-toolkit cupy-cuda13x cycler cython diffrax e3nn einops equinox etils execnet filelock
flatbuffers flax fonttools formulaic frozenlist fsspec gpytorch grpcio h11 h5py hf-xet httpcore httpx
humanize hypothesis idna imageio iniconfig interface-meta jax jax-cuda13-pjrt jax-cuda13-plugin jaxlib
jaxtyping jinja2 joblib kiwisolver lazy-loader lightning lightning-utilities linear-operator lineax llvmlite
lxml markdown markdown-it-py markupsafe matplotlib mdurl meson ml-dtypes mpi4py mpmath msgpack multidict
multipledispatch mypy-extensions nanobind narwhals networkx ninja numba numba-cuda numpy numpyro
nvidia-cublas nvidia-cuda-cupti nvidia-cuda-nvrtc nvidia-cuda-runtime nvidia-cudnn-cu13 nvidia-cufft
nvidia-cufile nvidia-curand nvidia-cusolver nvidia-cusparse nvidia-cusparselt-cu13 nvidia-ml-py
nvidia-nccl-cu13 nvidia-nvjitlink nvidia-nvshmem-cu13 nvidia-nvtx onnx onnx-ir onnxruntime onnxscript
opencv-python-headless optax opt-einsum opt-einsum-fx optimistix orbax-checkpoint packaging pandas pathspec
patsy peft pillow pip pluggy portalocker prometheus-client propcache protobuf psutil pyarrow pybind11
py-cpuinfo pygments pyparsing pyproject-hooks pyre-extensions pytest pytest-benchmark pytest-cov
pytest-mock pytest-timeout pytest-xdist python-dateutil pytorch-lightning pyyaml regex requests rich
sacrebleu safetensors scikit-build-core scikit-image scikit-learn scipy seaborn sentencepiece
sentence-transformers setuptools shellingham simplejson six sortedcontainers statsmodels sympy tabulate
tensorboard tensorboard-data-server tensorstore threadpoolctl tifffile tiktoken timm tokenizers toolz torch
torchaudio torchdiffeq torch-geometric torchmetrics torchvision tqdm transformers treescope triton typer
typing-extensions typing-inspect urllib3 uvloop wadler-lindig werkzeug wheel wrapt xarray xxhash yarl zipp
""".split()
)

# What travels as wheels: the project's runtime needs the machine lacks, and what they need in turn
# (each checked with `pip show` here). typing-extensions is there too, but pydantic and typeguard
# want a recent one: the carried copy comes first on PYTHONPATH.
CARRIED = (
    "zeus", "amdsmi", "tyro", "docstring-parser", "typeguard",  # the energy meter (zeus 0.16 imports them all)
    "pydantic", "pydantic-core", "annotated-types", "typing-inspection",  # suite and plan.json schemas
    "pint", "flexcache", "flexparser", "platformdirs",  # the deployment view's units (report)
    "plotly",  # the report's charts (narwhals, its other need, is there)
    "scoringrules",  # the diffusion twin's CRPS
    "torch-pruning", "torchao",  # passes
    "mlcommons-loadgen",  # the LoadGen scenarios (single-stream, server); no dependencies
    "typing-extensions",
)  # fmt: skip
# Project dependencies (pyproject.toml) that neither the machine has nor the kit carries, and why.
NOT_CARRIED = {
    "simbench": "91 MB; the grid data is built here and carried as the cache",
    "pandapower": "only builds the grid data, which is carried",
}

# Distributions that this checkout's newer versions of packages the machine has need at import, where
# the machine's own versions do not: linked into the rehearsal's base too, so that version skew here
# does not pass for a missing package there.
SKEW = {
    "kernels": "transformers 5.25 here (5.17 there)",
    "tomlkit": "kernels",
    "httpx2": "huggingface-hub here",
    "httpcore2": "httpx2",
    "truststore": "httpx2",
    "py-cpuinfo2": "pytest-benchmark here",
    "pytz": "pandas 2.3 here (pandas 3 needs neither)",
    "tzdata": "pandas 2.3 here",
}


def norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def say(text: str) -> None:
    print(f"gpu-kit: {text}", flush=True)


# ---------------------------------------------------------------------------------------------- wheels


def pinned(names: Iterable[str]) -> list[str]:
    """`name==version` as installed here (this checkout's .venv runs this module)."""
    return [f"{n}=={metadata.version(n)}" for n in names]


def wheel_dist(filename: str) -> str:
    """The normalised distribution name of a wheel file."""
    return norm(filename.split("-", 1)[0])


def is_interpreter_specific(filename: str) -> bool:
    """A wheel built for one CPython (cp312-cp312): not the rehearsal's. py3-none and abi3 wheels are."""
    python_tag, abi_tag = filename[:-4].split("-")[-3:-1]
    return abi_tag not in ("none", "abi3") and python_tag.startswith("cp")


def download(specs: list[str], dest: Path, python_version: str) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:", "--python-version",
           python_version, "--implementation", "cp", "-d", str(dest)]  # fmt: skip
    for platform in PLATFORMS:
        cmd += ["--platform", platform]
    subprocess.run(cmd + specs, check=True, stderr=subprocess.DEVNULL)


def stale_wheels(folder: Path, specs: list[str]) -> list[Path]:
    """Wheels in `folder` that are not one of `specs` (another version, or nothing wanted): two
    versions of one package stop the whole install there."""
    wanted = {norm(s.split("==")[0]): s.split("==")[1] for s in specs}
    stale = []
    for whl in sorted(folder.glob("*.whl")):
        dist, version = wheel_dist(whl.name), whl.name.split("-")[1]
        if wanted.get(dist) != version:
            stale.append(whl)
    return stale


def build_wheels() -> None:
    specs = pinned(CARRIED)
    WHEELS.mkdir(exist_ok=True)
    for whl in stale_wheels(WHEELS, specs):
        whl.unlink()
    have = {wheel_dist(w.name) for w in WHEELS.glob("*.whl")}
    missing = [s for s in specs if norm(s.split("==")[0]) not in have]
    if missing:
        say(f"downloading {len(missing)} wheel(s) for CPython {DEVICE_PYTHON}: {' '.join(missing)}")
        download(missing, WHEELS, DEVICE_PYTHON)
    got = {wheel_dist(w.name) for w in WHEELS.glob("*.whl")}
    if lost := sorted({norm(c) for c in CARRIED} - got):
        raise SystemExit(f"gpu-kit: no wheel for {lost} in {WHEELS}")
    say(f"{WHEELS}/: {len(got)} wheels for CPython {DEVICE_PYTHON}, {mib(tree_bytes([WHEELS]))}")


def rehearsal_wheels(carried: Path, local: Path, dest: Path) -> list[Path]:
    """The carried wheels as the rehearsal installs them: the same files, except that a wheel built
    for CPython 3.12 alone is replaced by the same version's build for this interpreter (downloaded
    into `local`). Links in `dest`, which is emptied first."""
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True)
    specific = [w for w in sorted(carried.glob("*.whl")) if is_interpreter_specific(w.name)]
    here = f"{sys.version_info.major}.{sys.version_info.minor}"
    want = [f"{w.name.split('-')[0]}=={w.name.split('-')[1]}" for w in specific]
    have = {(wheel_dist(w.name), w.name.split("-")[1]) for w in local.glob("*.whl")}
    if todo := [s for s in want if (norm(s.split("==")[0]), s.split("==")[1]) not in have]:
        download(todo, local, here)
    links = []
    for whl in sorted(carried.glob("*.whl")):
        if whl in specific:
            name, version = wheel_dist(whl.name), whl.name.split("-")[1]
            (whl,) = [w for w in local.glob("*.whl") if (wheel_dist(w.name), w.name.split("-")[1]) == (name, version)]
        link = dest / whl.name
        link.symlink_to(whl.resolve())
        links.append(link)
    return links


# ----------------------------------------------------------------------------------------------- cache


def cache_members(cache: Path, grids: Iterable[str], twins: Iterable[str]) -> list[Path]:
    """The files the suite needs from the cache, relative to it: each grid's data and each twin's
    checkpoints on it (weights and metas; never locks, searches or anything else)."""
    members = []
    for grid in grids:
        folder = cache / "grids" / grid
        if not (folder / "manifest.json").is_file():
            raise SystemExit(f"gpu-kit: no data cache for {grid} in {cache} (twinbench data --suite {SUITE})")
        members += sorted(p for p in folder.iterdir() if p.is_file())
        for twin in twins:
            ckpt = cache / "checkpoints" / twin / grid
            members += sorted(p for p in ckpt.rglob("*") if p.suffix in (".safetensors", ".json") and p.is_file())
    return [p.relative_to(cache) for p in members]


def pack_cache(cache: Path, members: list[Path], tarball: Path) -> bool:
    """Write `tarball` (gzip) of `members` unless it already holds exactly them (name, size, mtime:
    listed in a JSON beside it). True when written."""
    listing = [[str(m), (cache / m).stat().st_size, int((cache / m).stat().st_mtime)] for m in members]
    index = tarball.with_suffix(".json")
    try:
        if tarball.is_file() and json.loads(index.read_text()) == listing:
            return False
    except (OSError, ValueError):
        pass
    tarball.parent.mkdir(parents=True, exist_ok=True)
    tmp = tarball.with_name(tarball.name + ".tmp")
    with tarfile.open(tmp, "w:gz", compresslevel=6) as tar:
        for m in members:
            tar.add(cache / m, arcname=str(m))
    tmp.replace(tarball)
    index.write_text(json.dumps(listing))
    return True


# ------------------------------------------------------------------------------------------------ size


def tree_bytes(paths: Iterable[Path]) -> int:
    """Bytes of the files under `paths` (links counted as the files they point to)."""
    total = 0
    for path in paths:
        path = Path(path)
        if path.is_file():
            total += path.stat().st_size
        elif path.is_dir():
            total += sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    return total


def working_tree_files(repo: Path) -> list[Path]:
    """What travels besides `carry`: tracked files that exist and untracked files git does not ignore."""
    out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                         cwd=repo, capture_output=True, check=True).stdout  # fmt: skip
    names = dict.fromkeys(n for n in out.decode().split("\0") if n)
    return [repo / n for n in names if (repo / n).is_file()]


def carry_bytes(repo: Path, carry: Iterable[Path]) -> tuple[int, int]:
    """(working tree, carried paths) in bytes, as the device tool counts them."""
    return tree_bytes(working_tree_files(repo)), tree_bytes(repo / c for c in carry)


def mib(n: int) -> str:
    return f"{n / 2**20:.1f} MiB"


# -------------------------------------------------------------------------------------------- estimate


def suite_estimate(suite: str = SUITE) -> tuple[float, float, str]:
    """(measuring s, training s, the dry run's text) of the suite on its own device (cuda), one GPU,
    with what is cached here counted as cached."""
    plan = make_plan(load_suite(suite), estimate_only=True)
    needs = training_needs(plan)
    one = estimate(plan, plan.cells(), 1, None, needs)
    return one.measuring_s, one.training_s, describe(plan, plan.cells(), needs)


def untrained(suite: str = SUITE) -> list[str]:
    """Weights the suite needs that are not cached here: the device would have to train them."""
    needs = training_needs(make_plan(load_suite(suite), estimate_only=True))
    return [f"{j.grid} / {j.twin}: {j.what}" for j in needs.todo]


# ------------------------------------------------------------------------------------------- rehearsal


def gpu_base(site_packages: Path, base: Path, wanted: Iterable[str]) -> list[str]:
    """Link into `base` the top-level files and folders (modules and .dist-info) of the distributions
    installed in `site_packages` whose names are in `wanted`: the packages the GPU machine has.
    Returns the distributions linked."""
    wanted = {norm(w) for w in wanted}
    shutil.rmtree(base, ignore_errors=True)
    base.mkdir(parents=True)
    linked = []
    for dist in metadata.distributions(path=[str(site_packages)]):
        name = norm(dist.metadata["Name"] or "")
        if name not in wanted:
            continue
        linked.append(name)
        tops = {Path(str(f)).parts[0] for f in dist.files or () if not str(f).startswith("..")}
        for top in tops:
            src, dest = site_packages / top, base / top
            if top.endswith(".pth") or top == "__pycache__" or not src.exists() or dest.exists():
                continue
            dest.symlink_to(src)
    return sorted(linked)


def make_venv(root: Path, base: Path) -> Path:
    """A fresh venv at `root` (this interpreter's, no system site-packages) that sees `base` alone."""
    venv = root / "venv"
    shutil.rmtree(venv, ignore_errors=True)
    python = Path(sys.base_prefix) / "bin" / f"python{sys.version_info.major}.{sys.version_info.minor}"
    subprocess.run([str(python if python.exists() else "python3"), "-m", "venv", str(venv)], check=True)
    (site,) = (venv / "lib").glob("python3*/site-packages")
    (site / "gpu-machine-base.pth").write_text(str(base.resolve()) + "\n")
    return venv / "bin" / "python"


def rehearsal_twin() -> str:
    """The twin of the rehearsal's one cell: the suite's last, whose accuracy pass imports the most
    (gpu-first lists the diffusion forecaster last: its CRPS needs scoringrules)."""
    return load_suite(SUITE).twins[-1]


def rehearse() -> None:
    root = REPO / REHEARSAL
    root.mkdir(parents=True, exist_ok=True)
    (site_packages,) = (Path(sys.prefix) / "lib").glob("python3*/site-packages")
    linked = gpu_base(site_packages, root / "base", GPU_PACKAGES | set(SKEW))
    python = make_venv(root, root / "base")
    wheels = rehearsal_wheels(REPO / WHEELS, root / "wheels-local", root / "wheels")
    say(f"rehearsal: fresh venv {python.parent.parent.relative_to(REPO)} (Python {sys.version.split()[0]}) "
        f"with only the GPU machine's packages ({len(linked)} linked from {sys.prefix}), "
        f"and the {len(wheels)} carried wheels installed by pip --no-index")  # fmt: skip
    out = root / "out"
    shutil.rmtree(out, ignore_errors=True)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "TWINBENCH_CACHE")}
    env.update(OUT=str(out), DEVICE="cpu", PYTHON=str(python), WHEELS=str(root / "wheels"),
               SITE=str(root / "site"), CACHE_DIR=str(root / "cache"), RUNS=str(root / "runs"), TWINS=rehearsal_twin(),
               PATH=f"{python.parent}:{env.get('PATH', '')}")  # fmt: skip
    cmd = ["bash", "bench/run/gpu_run.sh", SUITE, *REHEARSAL_ARGS]
    say(f"rehearsal: TWINS={rehearsal_twin()} DEVICE=cpu {' '.join(cmd)}")
    started = time.monotonic()
    rc = subprocess.run(cmd, cwd=REPO, env=env).returncode
    problems = check_bundle(out, expect_records=1)
    if rc != 0 or problems:
        raise SystemExit(f"gpu-kit: rehearsal FAILED (exit {rc}): {'; '.join(problems) or 'see the log above'}")
    say(f"rehearsal passed in {time.monotonic() - started:.0f} s: {', '.join(sorted(p.name for p in out.iterdir()))} "
        f"under {out.relative_to(REPO)}")  # fmt: skip


BUNDLE = ("run.tar.gz", "summary.md", "gpu_run.log", "environment.json", "packages.txt", "headline.txt")


def check_bundle(out: Path, expect_records: int | None = None) -> list[str]:
    """What is wrong with a gpu_run.sh bundle: missing files, more than the 8 that come back, a run
    without `ok` records."""
    problems = [f"no {name}" for name in BUNDLE if not (out / name).is_file()]
    files = [p for p in out.rglob("*") if p.is_file()] if out.is_dir() else []
    if len(files) > 8:
        problems.append(f"{len(files)} files under OUT, only 8 come back")
    if (out / "run.tar.gz").is_file():
        with tarfile.open(out / "run.tar.gz") as tar:
            member = next((m for m in tar.getmembers() if m.name.endswith("/records.jsonl")), None)
            if member is None:
                problems.append("no records.jsonl in run.tar.gz")
            else:
                records = [json.loads(line) for line in tar.extractfile(member).read().decode().splitlines() if line]
                ok = [r for r in records if r.get("status") == "ok"]
                if expect_records is not None and len(records) != expect_records:
                    problems.append(f"{len(records)} records, expected {expect_records}")
                if not ok:
                    problems.append(
                        "no record with status ok: " + "; ".join(r.get("status_reason", "") for r in records)
                    )
    return problems


# -------------------------------------------------------------------------------------------- headline


def headline(records: list[dict]) -> str:
    """The short table gpu_run.sh prints last: one line per cell, energy against the twin's reference."""
    rows = [("twin", "variant", "runtime", "status", "quality loss %", "J/inference", "x ref", "p50 ms", "source")]
    for r in sorted(records, key=lambda r: (r.get("twin", ""), r.get("variant_name", ""), r.get("runtime", ""))):
        energy, ref = r.get("energy_j_per_inference"), r.get("reference_energy_j_per_inference")
        ok = r.get("status") == "ok"
        rows.append((
            r.get("twin", "?"),
            r.get("variant_name", "?")[:40],
            r.get("runtime", "?"),
            r.get("status", "?") if ok else f"{r.get('status')}: {r.get('status_reason', '')[:50]}",
            _num(r.get("quality_loss_pct"), "+.2f") if ok else "",
            _num(energy, ".3g") if ok else "",
            _num(energy / ref if energy and ref else None, ".2f") if ok else "",
            _num(r.get("latency_ms_p50"), ".3g") if ok else "",
            r.get("energy_source", "") if ok else "",
        ))  # fmt: skip
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows)


def _num(x, spec: str) -> str:
    return "-" if x is None else format(x, spec)


def read_records(run: Path) -> list[dict]:
    path = run / "records.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []


# ------------------------------------------------------------------------------------------------ main


def build() -> None:
    """Data and checkpoints here (the main venv), the packed cache, the wheels; then size and estimate."""
    twinbench = [sys.executable, "-m", "bench"]
    subprocess.run([*twinbench, "data", "--suite", SUITE], cwd=REPO, check=True)
    subprocess.run([*twinbench, "train", "--suite", SUITE, "--device", "cpu"], cwd=REPO, check=True)
    if todo := untrained():
        raise SystemExit(f"gpu-kit: still untrained after `twinbench train`: {todo}")
    suite = load_suite(SUITE)
    members = cache_members(cache_root(), suite.grids, suite.twins)
    tarball = REPO / KIT / CACHE_TARBALL
    wrote = pack_cache(cache_root(), members, tarball)
    say(f"{KIT / CACHE_TARBALL}: {len(members)} files ({mib(tree_bytes(cache_root() / m for m in members))}) "
        f"{'packed' if wrote else 'unchanged'}, {mib(tarball.stat().st_size)} gzipped")  # fmt: skip
    build_wheels()


def report() -> None:
    tree, carried = carry_bytes(REPO, CARRY)
    total = tree + carried
    verdict = "fits" if total <= CARRY_LIMIT_BYTES else "DOES NOT FIT"
    say(
        f"carry size: {mib(total)} of {mib(CARRY_LIMIT_BYTES)} ({verdict}): working tree {mib(tree)}, "
        + ", ".join(f"{c}/ {mib(tree_bytes([REPO / c]))}" for c in CARRY)
    )
    measuring, training, text = suite_estimate()
    print(text, flush=True)
    bound = "within" if measuring <= MEASURE_BOUND_S else "OVER"
    say(
        f"estimated H100 time of suite {SUITE}: {measuring / 60:.1f} min measuring ({bound} the "
        f"{MEASURE_BOUND_S / 60:.0f}-min bound), {training / 60:.1f} min training (everything carried trained)"
    )
    if total > CARRY_LIMIT_BYTES or measuring > MEASURE_BOUND_S or untrained():
        raise SystemExit("gpu-kit: the kit is not ready (see above)")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="gpu_kit", description=__doc__.split("\n\n")[0])
    parser.add_argument("step", choices=["all", "build", "size", "rehearse", "headline"])
    parser.add_argument("runs", nargs="*", help="headline: the run folders")
    args = parser.parse_args(argv)
    os.chdir(REPO)
    if args.step == "headline":
        print(headline([r for run in args.runs for r in read_records(Path(run))]))
        return
    if args.step in ("all", "build"):
        build()
    if args.step in ("all", "build", "size"):
        report()
    if args.step in ("all", "rehearse"):
        rehearse()
    if args.step == "all":
        say(
            f"ready: run(command='bash bench/run/gpu_run.sh {SUITE}', carry={[str(c) for c in CARRY]}, "
            "timeout_s=540), then give_back"
        )


if __name__ == "__main__":  # run as bench/run/gpu_kit.py with the project importable (installed, or PYTHONPATH)
    main()
