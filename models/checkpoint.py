"""Checkpoints: safetensors weights plus a JSON identity, cached by twin config and data hash.

Nothing is unpickled. A checkpoint is only loaded into the twin, grid, config and data it was
trained for; anything else is a clear error rather than a model with silently wrong weights. The
meta records the SHA-256 of the weights file, so damaged weights are refused, never measured.

Training and saving happen under a file lock beside the checkpoint: a second process asking for
the same checkpoint waits, then loads what the first one saved instead of training it again.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path

import safetensors.torch
import torch
from filelock import FileLock, Timeout

from models import creation
from models.creation import Cost
from models.errors import TwinbenchError
from models.grid.cache import cache_root
from models.registry import TrainableTwin
from models.training import TrainingTimeLimit

# 2: the meta holds `weights_sha256`, and the fit config's max_seconds left the identity.
FORMAT_VERSION = 2


class CheckpointError(TwinbenchError):
    """A checkpoint that does not belong to the model it is loaded into, or cannot be loaded."""


class CorruptCheckpoint(CheckpointError):
    """A checkpoint whose files are damaged or incomplete (weights not matching their recorded hash,
    unreadable or missing meta). Raised before the model is touched, so retraining can follow."""


def identity(twin, chain: tuple = ()) -> dict:
    """What a checkpoint's weights depend on. `chain`: for a trained variant (pruned and fine-tuned,
    distilled), the pass steps that made it from the reference, which is itself named by the rest."""
    config = asdict(twin.config)
    # max_seconds only decides whether training may finish (fit raises past it), never what it
    # produces: raising the limit must not orphan the cached weights.
    if isinstance(config.get("fit"), dict):
        config["fit"].pop("max_seconds", None)
    ident = {
        "format_version": FORMAT_VERSION,
        "twin": twin.name,
        "twin_version": twin.version,
        "grid": twin.grid.grid,
        "config": config,
        "data_hash": twin.grid.content_hash,
        **twin.depends_on(),
    }
    if (shipped := twin.shipped_weights()) is not None:  # other shipped weights: another checkpoint
        ident["shipped_weights_sha256"] = _file_sha256(shipped)
    return {**ident, "variant_chain": list(chain)} if chain else ident


def _file_sha256(path: Path) -> str:
    try:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()
    except OSError as e:
        raise CheckpointError(f"cannot read the twin's shipped weights {path}: {e}") from e


def checkpoint_path(twin, root: Path | None = None, chain: tuple = ()) -> Path:
    """<cache>/checkpoints/<twin>/<grid>/[variants/]<key>.safetensors, key = hash of the identity."""
    key = hashlib.sha256(json.dumps(identity(twin, chain), sort_keys=True).encode()).hexdigest()[:16]
    folder = (root or cache_root()) / "checkpoints" / twin.name / twin.grid.grid
    return (folder / "variants" if chain else folder) / f"{key}.safetensors"


def _meta_path(path: Path) -> Path:
    return path.with_suffix(".json")


@contextmanager
def _staged(path: Path) -> Iterator[Path]:
    """A temporary file beside `path` for the block to fill; it then replaces `path` in one step,
    so a reader sees the old file or the new one, never half of one."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp")
    try:
        yield tmp
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())  # the rename must not reach the disk before the data does
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def save_checkpoint(
    twin, model: torch.nn.Module, path: Path, summary: dict, chain: tuple = (), cost: Cost | None = None
) -> dict:
    """Write the weights and their meta (identity, training summary, weights_sha256, and what making
    them cost: models/creation.py); returns the meta."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with _staged(path) as weights:
        safetensors.torch.save_model(model, str(weights))  # keeps one name of tensors sharing memory
        meta = {
            **identity(twin, chain),
            "summary": summary,
            "creation": cost.as_dict() if cost is not None else None,
            "weights_sha256": hashlib.sha256(weights.read_bytes()).hexdigest(),
            "torch": torch.__version__,
            "created_unix": int(time.time()),
        }
        # The meta goes first, the weights last (leaving this block): a checkpoint counts as present
        # once its weights file exists, and by then the meta naming their hash is in place. A reader
        # racing a retrain without the lock may pair new meta with old weights: the hash refuses that.
        with _staged(_meta_path(path)) as meta_file:
            meta_file.write_text(json.dumps(meta, indent=2) + "\n")
    return meta


def load_checkpoint(twin, model: torch.nn.Module, path: Path, chain: tuple = ()) -> dict:
    """Load weights into `model` after checking the checkpoint was trained for exactly this twin and
    that its weights are the bytes that were saved. Returns the meta (with `weights_sha256`).

    Raises CorruptCheckpoint for damaged files, CheckpointError for a checkpoint of another model."""
    meta_path = _meta_path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}")
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        raise CorruptCheckpoint(f"cannot read checkpoint metadata {meta_path}: {type(e).__name__}: {e}") from None
    if not isinstance(meta, dict):
        raise CorruptCheckpoint(f"checkpoint metadata {meta_path} is not a JSON object")
    expected = identity(twin, chain)
    diffs = [k for k in expected if meta.get(k) != expected[k]]
    if diffs:
        detail = "; ".join(f"{k}: checkpoint has {meta.get(k)!r}, model needs {expected[k]!r}" for k in diffs)
        raise CheckpointError(f"checkpoint {path} was trained for a different model ({detail})")
    stored = meta.get("weights_sha256")
    if not isinstance(stored, str):
        raise CorruptCheckpoint(f"checkpoint metadata {meta_path} has no weights_sha256")
    # One read: the bytes that are hashed are the bytes that are loaded.
    data = path.read_bytes()
    actual = hashlib.sha256(data).hexdigest()
    if actual != stored:
        raise CorruptCheckpoint(
            f"cannot load checkpoint {path}: its SHA-256 is {actual}, but {meta_path.name} records {stored} "
            "(the weights file is damaged or was replaced)"
        )
    try:
        tensors = safetensors.torch.load(data)
    except Exception as e:  # unreachable for bytes that passed the hash, unless the writer failed
        raise CorruptCheckpoint(f"cannot load checkpoint {path}: {e}") from e
    try:
        _load_state(model, tensors)
    except Exception as e:  # shapes or names the model does not have
        raise CheckpointError(f"cannot load checkpoint {path} into {type(model).__name__}: {e}") from e
    model.eval()
    return meta


def _load_state(model: torch.nn.Module, tensors: dict[str, torch.Tensor]) -> None:
    """model.load_state_dict(tensors, strict=True), except that a name missing from the file is
    allowed when its tensor shares storage with one that was loaded: safetensors.save_model keeps
    only one name of tensors that share memory (as safetensors.torch.load_model allows too)."""
    missing, unexpected = model.load_state_dict(tensors, strict=False)
    if missing:
        own = model.state_dict()
        loaded = {own[k].untyped_storage().data_ptr() for k in tensors if k in own}
        missing = [k for k in missing if own[k].untyped_storage().data_ptr() not in loaded]
    if missing or unexpected:
        raise RuntimeError(f"missing keys {sorted(missing)}, unexpected keys {sorted(unexpected)}")


@contextmanager
def _exclusive(path: Path, what: str, log: Callable[[str], None]) -> Iterator[None]:
    """Hold `<checkpoint>.lock` while checking, loading or training one checkpoint, across processes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(f"{path}.lock")
    try:
        lock.acquire(timeout=0)
    except Timeout:
        log(f"waiting for another process training {what} (lock {lock.lock_file})")
        lock.acquire()
    try:
        yield
    finally:
        lock.release()


def _load_cached(twin, model: torch.nn.Module, path: Path, chain: tuple, log) -> dict | None:
    """The meta of the checkpoint at `path` loaded into `model`, or None if there is none to use:
    absent, or corrupt (logged; the model is then untouched and the caller retrains)."""
    if not path.exists():
        return None
    try:
        return load_checkpoint(twin, model, path, chain)
    except CorruptCheckpoint as e:
        log(f"checkpoint {path} is corrupt ({e}): retraining")
        return None


@contextmanager
def _naming_the_twin(what: str) -> Iterator[None]:
    """fit() knows its config, not which twin it trains: the time-limit error names it here."""
    try:
        yield
    except TrainingTimeLimit as e:
        raise TrainingTimeLimit(f"{what}: {e}") from None


def train_or_load(twin, root: Path | None = None, log=print, retrain: bool = False, device: str = "cpu"):
    """The twin's trained reference model: from the checkpoint cache, or trained and cached now.

    Returns (model, meta, trained_now); meta is the checkpoint's JSON meta: the identity, "summary"
    (fit's: epochs, stopped, train_seconds, ..., and device), "weights_sha256", "torch", "created_unix".
    """
    model = twin.build_model()
    path = checkpoint_path(twin, root)
    what = f"{twin.name} on {twin.grid.grid}"
    with _exclusive(path, what, log):
        meta = None if retrain else _load_cached(twin, model, path, (), log)
        if meta is not None:
            creation.loaded(meta.get("creation"), "training")
            return model, meta, False
        if isinstance(twin, TrainableTwin):
            log(f"training {what} ({device})")
            with _naming_the_twin(what), creation.window("training", keep=False) as made:
                summary = {**twin.train(model, log, device=device), "device": device}
            cost = creation.with_epochs(made.cost, summary)
        else:
            summary = _load_shipped(twin, model, log)
            cost = Cost("shipped weights", None, creation.UNKNOWN, 0.0, "")
        creation.record(cost)
        save_checkpoint(twin, model, path, summary, cost=cost)
        # Reloaded, so the model returned holds exactly the bytes that were saved and hashed.
        return model, load_checkpoint(twin, model, path), True


def _load_shipped(twin, model: torch.nn.Module, log) -> dict:
    """A twin that does not train: its shipped weights loaded strictly (then cached like trained ones)."""
    shipped = twin.shipped_weights()
    if shipped is None:
        raise CheckpointError(f"twin {twin.name} neither trains nor ships trained weights (shipped_weights())")
    log(f"loading the shipped weights of {twin.name}: {shipped}")
    try:
        _load_state(model, safetensors.torch.load(Path(shipped).read_bytes()))
    except Exception as e:  # unreadable, not safetensors, or not this model's tensors
        raise CheckpointError(f"cannot load the shipped weights {shipped} into {type(model).__name__}: {e}") from e
    return {"source": "shipped weights", "file": str(shipped), "stopped": "not trained (shipped weights)"}


def train_or_load_variant(twin, chain: tuple, model: torch.nn.Module, train, log=print, root: Path | None = None):
    """A trained variant's weights, cached like the reference's.

    `model` already has the variant's architecture (its passes replayed: they are deterministic);
    its weights come from the cache, or from `train(model) -> summary`, which is then cached.
    Returns (model, trained_now).
    """
    path = checkpoint_path(twin, root, chain)
    what = f"variant {chain[-1]['pass']} of {twin.name} on {twin.grid.grid}"
    with _exclusive(path, what, log):
        meta = _load_cached(twin, model, path, chain, log)
        if meta is not None:
            creation.loaded(meta.get("creation"), chain[-1]["pass"])
            return model, False
        log(f"training {what}")
        with _naming_the_twin(what), creation.window(chain[-1]["pass"], keep=False) as made:
            summary = train(model)
        cost = creation.with_epochs(made.cost, summary)
        creation.record(cost)
        save_checkpoint(twin, model, path, summary, chain, cost)
        return model, True
