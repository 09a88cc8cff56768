"""Replaying a variant: the cached reference loaded and its pass chain applied again.

Passes are deterministic, so the chain fixes a variant's architecture (pruned widths, student
sizes, steps) and its trained weights come from the variant cache; an exported variant is rebuilt
the same way and then given its exported weights, checked against their recorded hash.
"""

from __future__ import annotations

import json
from pathlib import Path

import safetensors.torch
import torch

from compress.base import PassContext, parse_variant
from models.checkpoint import checkpoint_path, identity, load_checkpoint
from models.errors import InputError
from models.fingerprint import weights_sha256
from models.grid.cache import load_grid
from models.registry import get_twin


def rebuild_variant(twin_name: str, grid: str, model_size: str, chain: list[dict], workdir: Path):
    """(twin, torch model) of a variant: the cached reference loaded (never trained here) and its
    pass chain replayed, which fixes the architecture (pruned widths, student sizes, steps) and
    loads any trained weights from the variant cache."""
    cls = get_twin(twin_name)
    twin = cls(load_grid(grid), cls.config_for(model_size))
    model = twin.build_model()
    load_checkpoint(twin, model, checkpoint_path(twin))
    ctx = PassContext(twin=twin, device="cpu", workdir=workdir, target="torch", log=lambda m: None)
    return twin, parse_variant(chain).build(model, ctx)


def load_exported(folder: Path) -> torch.nn.Module:
    """Rebuild a torch variant exported by `twinbench select --export`: `rebuild_variant`, then the
    exported weights loaded strictly. Needs the grid cache and reference checkpoint."""

    spec = json.loads((folder / "variant.json").read_text())
    ref = spec["reference"]
    twin, model = rebuild_variant(ref["twin"], ref["grid"], spec["model_size"], spec["chain"], folder)
    if json.loads(json.dumps(identity(twin), default=str)) != ref:
        raise InputError(f"{folder} was exported from another twin version, config or data than this cache holds")
    safetensors.torch.load_model(model, str(folder / "weights.safetensors"), strict=True)
    if spec.get("weights_sha256") and weights_sha256(model) != spec["weights_sha256"]:
        raise InputError(f"{folder / 'weights.safetensors'} is not the measured weights (weights_sha256 differs)")
    return model.eval()
