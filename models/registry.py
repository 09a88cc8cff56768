"""The twin interface and its registry.

A twin is one module in `models/twins/` holding a `Twin` subclass decorated with `@register_twin`:
its config, data windows, model, training and evaluation sit together, so adding a twin touches one
file. `twins()` imports the modules on first use.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np

from models.errors import UnknownNameError
from models.plugins import Registry

# A runtime-neutral inference function: numpy inputs in, numpy output out (torch, ONNX Runtime, ...).
PredictFn = Callable[..., np.ndarray]
SPLITS = {"train": 0, "val": 1, "test": 2}


@dataclass(frozen=True)
class Evaluation:
    """Quality of a predictor on one split, with the naive baselines it must beat (lower is better)."""

    primary: str
    metrics: dict[str, float]
    baselines: dict[str, dict[str, float]] = field(default_factory=dict)

    @property
    def value(self) -> float:
        return self.metrics[self.primary]

    def margin_pct(self, baseline: str) -> float:
        """How much better than `baseline` on the primary metric, in percent of the baseline."""
        ref = self.baselines[baseline][self.primary]
        return 100.0 * (ref - self.value) / ref


class Twin(ABC):
    """A reference twin bound to one grid's data and one config."""

    name: ClassVar[str]
    # Bump when the model's code changes what its weights or buffers mean: cached checkpoints of
    # an older version are then retrained instead of loaded into a model they do not fit.
    version: ClassVar[int]
    summary: ClassVar[str]
    data_files: ClassVar[str]
    metric: ClassVar[str]
    baseline: ClassVar[str]
    required_baselines: ClassVar[tuple[str, ...]]  # baselines it must beat
    input_names: ClassVar[tuple[str, ...]]
    output_name: ClassVar[str]

    def __init__(self, grid, config) -> None:
        self.grid = grid  # models.grid.GridData
        self.config = config

    @classmethod
    @abstractmethod
    def config_for(cls, size: str):
        """The frozen config of a size: 'smoke' (2 CPU cores, <= 60 s training) or 'full' (GPU)."""

    @abstractmethod
    def build_model(self):
        """A fresh inference module: `module(*inputs) -> output`, inputs as in `inputs()`."""

    @abstractmethod
    def train(self, model, log: Callable[[str], None], *, fit_cfg=None, distill=None, device: str = "cpu") -> dict:
        """Train `model` in place (deterministic, early stopping on validation); return a summary.

        fit_cfg (a models.training.FitConfig) replaces the config's schedule, e.g. for a short
        recovery fine-tune; distill (models.training.Distillation) adds a teacher to the loss;
        device is where training runs ('cuda' on a GPU machine). The model ends on the CPU.
        """

    @classmethod
    @abstractmethod
    def scaled_config(cls, config, width: float, depth: float):
        """`config` with its widths scaled by `width` and its depth by `depth`: a distillation student."""

    @abstractmethod
    def inputs(self, split: str) -> tuple[np.ndarray, ...]:
        """Every evaluation input of a split, stacked along the batch axis."""

    @abstractmethod
    def evaluate(self, predict_fn: PredictFn, split: str = "test") -> Evaluation:
        """Primary and secondary metrics of `predict_fn` on a split, and the baselines'."""

    @abstractmethod
    def targets(self, split: str) -> np.ndarray:
        """What the predictions of `evaluate` are scored against, in physical (or metric) units."""

    def predictions(self, predict_fn: PredictFn, split: str) -> dict[str, np.ndarray]:
        """Arrays from which anyone can recompute the metrics: `pred` and `target` at least."""
        return {"pred": batched(predict_fn, self.inputs(split)), "target": self.targets(split)}

    @abstractmethod
    def example_inputs(self, batch_size: int, seed: int = 0, split: str = "val") -> tuple[np.ndarray, ...]:
        """Realistic inputs of a given batch size drawn from a split (measurement, export checks,
        quantization calibration on 'train')."""

    def model_info(self, model) -> dict:
        """Facts about a (variant's) model worth recording beside its measurements."""
        return {}

    def split_index(self, split: str) -> int:
        if split not in SPLITS:
            raise UnknownNameError("split", split, list(SPLITS))
        return SPLITS[split]


TWINS: Registry[type[Twin]] = Registry("twin", "twinbench.twins", builtin=("models.twins",))
register_twin = TWINS.register()


def twins() -> dict[str, type[Twin]]:
    return {name: entry.obj for name, entry in TWINS.entries().items()}


def twin_names() -> list[str]:
    return TWINS.names()


def get_twin(name: str) -> type[Twin]:
    return TWINS.get(name)


def input_scale(std: np.ndarray) -> np.ndarray:
    """Divisor for standardising inputs: the training std, or 1 where a feature never varied in
    training (a bus with no injection). Dividing by a floored ~0 std would turn any unseen value
    into a huge activation, and the model into NaNs."""
    return np.where(std > 1e-5, std, 1.0).astype(np.float32)


def batched(predict_fn: PredictFn, inputs: tuple[np.ndarray, ...], batch_size: int = 512) -> np.ndarray:
    """Run `predict_fn` over inputs in batches and concatenate the outputs."""
    n = len(inputs[0])
    return np.concatenate([predict_fn(*(x[i : i + batch_size] for x in inputs)) for i in range(0, n, batch_size)])
