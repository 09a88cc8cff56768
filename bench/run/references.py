"""The reference twins: trained (or loaded from the checkpoint cache) and scored against the baselines
each twin must beat (`twinbench train`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from bench.measure.creation import creation_windows
from models import creation
from models.checkpoint import train_or_load
from models.export import torch_predict_fn
from models.grid.cache import load_grid


@dataclass(frozen=True)
class TrainRequest:
    grids: tuple[str, ...]
    twins: tuple[type, ...]  # twin classes
    model_size: str
    split: str = "test"
    retrain: bool = False
    device: str = "cpu"


@dataclass(frozen=True)
class BaselineRow:
    """A reference against one baseline on the request's split (lower-is-better metrics)."""

    grid: str
    twin: str
    metric: str
    value: float
    baseline: str
    baseline_value: float
    margin_pct: float  # how much better than the baseline: > 0 beats it
    required: bool  # a baseline the twin must beat
    training: str  # how it was trained, or "(cached)"

    @property
    def fails(self) -> bool:
        return self.required and self.margin_pct <= 0


def reference(twin_cls, grid: str, size: str, log: Callable[[str], None], retrain: bool = False, device: str = "cpu"):
    """(twin, trained model, checkpoint meta, trained now) for a grid from the data cache."""
    twin = twin_cls(load_grid(grid), twin_cls.config_for(size))
    with creation.metered_by(creation_windows(device)):  # the meter `run` would choose here
        model, meta, trained = train_or_load(twin, log=log, retrain=retrain, device=device)
    return twin, model, meta, trained


def train_references(req: TrainRequest, log: Callable[[str], None]) -> list[BaselineRow]:
    """Every (grid, twin) of the request trained or loaded, and scored against its baselines."""
    rows = []
    for grid in req.grids:
        for twin_cls in req.twins:
            twin, model, meta, trained = reference(twin_cls, grid, req.model_size, log, req.retrain, req.device)
            evaluation = twin.evaluate(torch_predict_fn(model), req.split)
            summary = meta["summary"]
            how = f"{summary['train_seconds']:.0f} s, {summary['epochs']} epochs" if "epochs" in summary else ""
            how += _energy_text(meta.get("creation"))
            how = (how or summary.get("source", "")) + ("" if trained else " (cached)")
            for name, scores in evaluation.baselines.items():
                rows.append(
                    BaselineRow(
                        grid,
                        twin.name,
                        evaluation.primary,
                        evaluation.value,
                        name,
                        scores[evaluation.primary],
                        evaluation.margin_pct(name),
                        name in twin.required_baselines,
                        how,
                    )
                )
    return rows


def _energy_text(stored) -> str:
    """What the training cost, as its checkpoint kept it: `, 4.1 kJ (estimate)`."""
    cost = creation.Cost.from_dict(stored)
    if cost is None or cost.energy_j is None:
        return f", energy {cost.source if cost else 'not recorded'}"
    return f", {cost.energy_j / 1000:.3g} kJ ({cost.source}{', on ' + cost.device if cost.device else ''})"
