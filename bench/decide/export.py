"""Export the chosen variant: exactly the bytes its record measured (checked against the record's
hashes) staged into a folder, with a model card; or nothing at all."""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import asdict
from pathlib import Path

from bench.decide.select import Selection
from bench.records import Record
from bench.store import RunDir
from bench.suites import MODEL_SIZES, load_suite
from compress.replay import rebuild_variant
from models.checkpoint import identity
from models.errors import InputError, UnknownNameError
from models.fingerprint import files_sha256, onnx_files, weights_sha256


def export(sel: Selection, out: Path, env: dict, run_folder: Path | None, force: bool = False) -> list[Path]:
    """Write the deployable artifact and model_card.json into `out`: exactly the bytes the chosen
    record measured (checked against its hashes), or nothing. `out` must be empty unless `force`."""
    r = sel.chosen
    if out.exists() and not out.is_dir():
        raise InputError(f"`export` {out} is a file, not a folder")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise InputError(f"{out} is not empty; choose an empty folder or pass `force` to write into it")
    if r.weights_sha256 is None and r.artifact_sha256 is None:
        raise InputError(
            f"the record of {r.variant_name} on {r.runtime} names no weights hash (written by an older "
            "twinbench): nothing can prove what it measured; re-run the suite to export it"
        )
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    try:
        staged = _stage_onnx(r, out, run_folder) if r.runtime == "onnxruntime" else _stage_torch(r, out, run_folder)
    except BaseException:
        if created and not any(out.iterdir()):  # a refused export leaves nothing behind
            out.rmdir()
        raise
    files = [tmp.replace(out / name) for tmp, name in staged]  # only verified files get their names
    card = model_card(sel, files, env)
    card_path = out / "model_card.json"
    tmp = out / ".model_card.json.tmp"
    tmp.write_text(json.dumps(card, indent=2, default=str) + "\n")
    tmp.replace(card_path)
    return [*files, card_path]


def model_card(sel: Selection, files: list[Path], env: dict) -> dict:
    """What the exported files are and what they were measured to do: identity, hashes, quality on
    the test split, the measurements, the constraints and the reasons for the choice."""
    r = sel.chosen
    return {
        "twin": r.twin,
        "grid": r.grid,
        "variant_id": r.variant_id,
        "variant_name": r.variant_name,
        "lineage": list(r.lineage),
        "runtime": r.runtime,
        "device": r.device,
        "batch_size": r.batch_size,
        "files": [p.name for p in files],
        "files_sha256": {p.name: files_sha256([p]) for p in files},
        "weights_sha256": r.weights_sha256,
        "artifact_sha256": r.artifact_sha256,
        "quality": {
            "metric": r.quality_metric,
            "value": r.quality_value,
            "reference_value": r.quality_ref_value,
            "loss_pct": r.quality_loss_pct,
            "all_metrics": r.quality_metrics,
            "split": "test",
        },
        "measurements": {
            "energy_j_per_inference": r.energy_j_per_inference,
            "energy_ci95": [r.energy_ci95_low, r.energy_ci95_high],
            "energy_cv": r.energy_cv,
            "energy_source": r.energy_source,
            "energy_dynamic_j_per_inference": r.energy_dynamic_j_per_inference,
            "latency_ms": {
                "p50": r.latency_ms_p50,
                "p50_ci95": [r.latency_ms_p50_ci95_low, r.latency_ms_p50_ci95_high],
                "p90": r.latency_ms_p90,
                "p99": r.latency_ms_p99,
            },
            "throughput_per_s": r.throughput_per_s,
            "peak_memory_mb": r.peak_memory_mb,
            "params": r.params,
            "size_bytes": r.size_bytes,
            "flags": list(r.flags),
            "window_s": r.window_s,
            "repetitions": r.repetitions,
            "run_id": r.run_id,
            "suite": r.suite,
        },
        "constraints": asdict(sel.constraints),
        "why": sel.reasons,
        "environment": env,
        "annual": None
        if sel.schedule is None or r.cell_key not in sel.projections
        else {"schedule": asdict(sel.schedule), **asdict(sel.projections[r.cell_key])},
        "created_unix": int(time.time()),
    }


def _model_size(r: Record, run_folder: Path | None) -> str:
    """The model size of the record's run, from the plan its run froze: a run of a suite file exports
    without that file, which may have moved or changed since. Records read away from their run
    folder fall back to the built-in suite of that name."""
    if run_folder is not None:
        plan = RunDir.open(run_folder).read_json("plan.json")
        if plan.get("run_id") == r.run_id and plan.get("model_size") in MODEL_SIZES:
            return plan["model_size"]
    try:
        return load_suite(r.suite).model_size
    except UnknownNameError:
        raise InputError(
            f"the model size of run {r.run_id} is in its plan.json, and suite {r.suite!r} is not a built-in one: "
            "select from the run folder (--run RUN, or its records.jsonl)"
        ) from None


def _stage_onnx(r: Record, out: Path, run_folder: Path | None) -> list[tuple[Path, str]]:
    """Copies of the record's ONNX files under temporary names, after checking they are the bytes
    it measured. Only files inside the record's own run folder are ever read."""
    if run_folder is None:
        raise InputError("exporting an ONNX Runtime cell needs the run folder it was measured in (`run` RUN)")
    if r.artifact_path is None or r.artifact_sha256 is None:
        raise InputError(f"the record of {r.variant_name} on {r.runtime} names no artifact (or no artifact hash)")
    root = run_folder.resolve()
    src = (root / r.artifact_path).resolve()  # relative to the run folder; schema 1 wrote absolute paths
    if not src.is_relative_to(root):
        raise InputError(f"the record's artifact {r.artifact_path!r} lies outside its run folder {run_folder}: refused")
    if not src.is_file():
        raise InputError(f"the ONNX artifact {src} of this record no longer exists; re-run the suite")
    files = onnx_files(src)
    for f in files:  # the graph and its external data: real files of this run, none reached by a link
        if f.is_symlink() or not f.resolve().is_relative_to(root):
            raise InputError(
                f"the record's artifact file {f} is a link or lies outside its run folder {run_folder}: refused"
            )
    staged = []
    for f in files:
        tmp = out / f".{f.name}.tmp"
        shutil.copyfile(f, tmp)
        staged.append((tmp, f.name))
    actual = files_sha256([tmp for tmp, _ in staged])
    if actual != r.artifact_sha256:
        for tmp, _ in staged:
            tmp.unlink()
        raise InputError(
            f"{src} is not the artifact this record measured (sha256 {actual[:12]}…, record {r.artifact_sha256[:12]}…): "
            "it changed after the run; re-run the suite"
        )
    return staged


def _stage_torch(r: Record, out: Path, run_folder: Path | None) -> list[tuple[Path, str]]:
    """safetensors weights of the variant plus what rebuilds its module (twin, config, chain), under
    temporary names, after checking the rebuilt weights are the ones the record measured."""
    import safetensors.torch

    model_size = _model_size(r, run_folder)
    chain = [{"pass": s["pass"], **s["params"]} for s in r.lineage]
    twin, model = rebuild_variant(r.twin, r.grid, model_size, chain, out)  # an export reuses what was measured
    actual = weights_sha256(model)
    if actual != r.weights_sha256:
        raise InputError(
            f"the cached weights of {r.variant_name} are not the ones this record measured (sha256 {actual[:12]}…, "
            f"record {(r.weights_sha256 or '')[:12]}…): the checkpoint cache changed after run {r.run_id} "
            "(retrained?); re-run the suite to measure what the cache holds"
        )
    weights = out / ".weights.safetensors.tmp"
    try:
        safetensors.torch.save_model(model, str(weights))
    except Exception as e:  # quantized tensor subclasses have no plain-tensor form
        weights.unlink(missing_ok=True)
        raise InputError(
            f"{r.variant_name} on {r.runtime} cannot be saved as safetensors ({e}); "
            "select it on --runtime onnxruntime for a portable artifact"
        ) from e
    spec = out / ".variant.json.tmp"
    spec.write_text(
        json.dumps(
            {
                "reference": identity(twin),
                "model_size": model_size,
                "chain": chain,
                "variant_id": r.variant_id,
                "weights_sha256": actual,
                "rebuild": "compress.replay.load_exported(folder)",
            },
            indent=2,
            default=str,
        )
        + "\n"
    )
    return [(weights, "weights.safetensors"), (spec, "variant.json")]
