"""Checkpoints: safetensors weights plus a JSON identity, cached by twin config and data hash.

Nothing is unpickled. A checkpoint is only loaded into the twin, grid, config and data it was
trained for; anything else is a clear error rather than a model with silently wrong weights.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict
from pathlib import Path

import safetensors.torch
import torch

from bench.errors import TwinbenchError
from models.grid.cache import cache_root

FORMAT_VERSION = 1


class CheckpointError(TwinbenchError):
    """A checkpoint that does not belong to the model it is loaded into."""


def identity(twin, chain: tuple = ()) -> dict:
    """What a checkpoint's weights depend on. `chain`: for a trained variant (pruned and fine-tuned,
    distilled), the pass steps that made it from the reference, which is itself named by the rest."""
    ident = {
        "format_version": FORMAT_VERSION,
        "twin": twin.name,
        "twin_version": twin.version,
        "grid": twin.grid.grid,
        "config": asdict(twin.config),
        "data_hash": twin.grid.content_hash,
    }
    return {**ident, "variant_chain": list(chain)} if chain else ident


def checkpoint_path(twin, root: Path | None = None, chain: tuple = ()) -> Path:
    """<cache>/checkpoints/<twin>/<grid>/[variants/]<key>.safetensors, key = hash of the identity."""
    key = hashlib.sha256(json.dumps(identity(twin, chain), sort_keys=True).encode()).hexdigest()[:16]
    folder = (root or cache_root()) / "checkpoints" / twin.name / twin.grid.grid
    return (folder / "variants" if chain else folder) / f"{key}.safetensors"


def save_checkpoint(twin, model: torch.nn.Module, path: Path, summary: dict, chain: tuple = ()) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    safetensors.torch.save_model(model, str(tmp))
    meta = {**identity(twin, chain), "summary": summary, "torch": torch.__version__, "created_unix": int(time.time())}
    path.with_suffix(".json").write_text(json.dumps(meta, indent=2) + "\n")
    tmp.rename(path)  # weights appear last: a half-written checkpoint is never found


def load_checkpoint(twin, model: torch.nn.Module, path: Path, chain: tuple = ()) -> dict:
    """Load weights into `model` after checking the checkpoint was trained for exactly this twin."""
    meta_path = path.with_suffix(".json")
    if not path.is_file() or not meta_path.is_file():
        raise CheckpointError(f"no checkpoint at {path}")
    try:
        meta = json.loads(meta_path.read_text())
    except json.JSONDecodeError as e:
        raise CheckpointError(f"corrupt checkpoint metadata {meta_path}: {e}") from e
    expected = identity(twin, chain)
    diffs = [k for k in expected if meta.get(k) != expected[k]]
    if diffs:
        detail = "; ".join(f"{k}: checkpoint has {meta.get(k)!r}, model needs {expected[k]!r}" for k in diffs)
        raise CheckpointError(f"checkpoint {path} was trained for a different model ({detail})")
    try:
        safetensors.torch.load_model(model, str(path), strict=True)
    except Exception as e:  # a damaged file or a shape mismatch
        raise CheckpointError(f"cannot load checkpoint {path}: {e}") from e
    model.eval()
    return meta


def train_or_load(twin, root: Path | None = None, log=print, retrain: bool = False, device: str = "cpu"):
    """The twin's trained reference model: from the checkpoint cache, or trained and cached now.

    Returns (model, meta, trained_now).
    """
    model = twin.build_model()
    path = checkpoint_path(twin, root)
    if path.exists() and not retrain:
        return model, load_checkpoint(twin, model, path), False
    log(f"training {twin.name} on {twin.grid.grid} ({device})")
    summary = {**twin.train(model, log, device=device), "device": device}
    save_checkpoint(twin, model, path, summary)
    return model, load_checkpoint(twin, model, path), True


def train_or_load_variant(twin, chain: tuple, model: torch.nn.Module, train, log=print, root: Path | None = None):
    """A trained variant's weights, cached like the reference's.

    `model` already has the variant's architecture (its passes replayed: they are deterministic);
    its weights come from the cache, or from `train(model) -> summary`, which is then cached.
    Returns (model, trained_now).
    """
    path = checkpoint_path(twin, root, chain)
    if not path.exists():
        log(f"training variant {chain[-1]['pass']} of {twin.name} on {twin.grid.grid}")
        save_checkpoint(twin, model, path, train(model), chain)
        return model, True
    load_checkpoint(twin, model, path, chain)
    return model, False
