"""The twin interface and its registry.

A twin is one module holding a `Twin` subclass decorated with `@register_twin`: its config, data
windows, model, evaluation and (for a `TrainableTwin`) training sit together, so adding a twin
touches one file. The built-in twins live in `models/twins/`; other packages add theirs through the
`twinbench.twins` entry-point group. `twins()` discovers both on first use.

What every twin provides: a model to build, the inputs and targets of a split, example inputs, an
evaluation, model facts. What only some have, as hooks that the compression passes ask for:
training (`TrainableTwin`: pruning's recovery, distillation), a structured-pruning rule
(`prune_structured`), and sampling steps that can be cut (`SteppedSampling`). A twin that cannot
train ships its trained weights instead (`shipped_weights`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch

from models.errors import UnknownNameError, Unsupported
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
    """A twin bound to one grid's data and one config: what every twin, trainable or not, provides."""

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
    def build_model(self) -> torch.nn.Module:
        """A fresh inference module: `module(*inputs) -> output`, inputs as in `inputs()`."""

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

    # What stays fp32 whatever a pass does (DESIGN.md, "Numerics boundary"), in words for the record.
    numerics_boundary: ClassVar[str] = "none declared: the whole model is its core"

    # Dotted names of the submodules that form the model's numerics *core*: the compute that
    # precision, quantisation and pruning passes may change (a ModuleList names each of its layers).
    # Everything else is the *boundary* and stays fp32: input normalisation, output de-normalisation
    # and offsets (1.0 p.u.), a sampler's schedule arithmetic. () (the default, for a twin that
    # declares none): the whole model is its core.
    core_units: ClassVar[tuple[str, ...]] = ()

    def model_info(self, model) -> dict:
        """Facts about a (variant's) model worth recording beside its measurements."""
        return {}

    def shipped_weights(self) -> Path | None:
        """A twin that does not train names its trained weights here (a safetensors file holding
        `build_model()`'s state dict); they are checked and cached like trained ones."""
        return None

    def owns(self, model: torch.nn.Module) -> bool:
        """Is `model` this twin's own model class (not wrapped by a precision pass, say)? Passes
        that rewrite a twin's layers ask before they touch it."""
        if not hasattr(self, "_model_type"):
            # Learnt by building one model, once, with the RNG state put back: a twin may seed
            # torch in `build_model`, and asking a question must not change what trains next.
            cuda = range(torch.cuda.device_count()) if torch.cuda.is_initialized() else []
            with torch.random.fork_rng(devices=cuda):
                self._model_type = type(self.build_model())
        return type(model) is self._model_type

    def depends_on(self) -> dict:
        """What its trained weights depend on beyond its config and the grid's arrays (part of the
        checkpoint identity): e.g. the calendar its inputs are counted from."""
        return {}

    def prune_structured(self, model: torch.nn.Module, ratio: float) -> None:
        """Remove a `ratio` of `model`'s hidden units, channels or heads, in place, so its layers
        really get smaller. Twins that know how override this."""
        raise Unsupported(f"twin {self.name} has no structured-pruning rule")

    def split_index(self, split: str) -> int:
        if split not in SPLITS:
            raise UnknownNameError("split", split, list(SPLITS))
        return SPLITS[split]


class TrainableTwin(Twin):
    """A twin that trains its own model: the reference, recovery after pruning, students."""

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

    def student(self, width: float, depth: float) -> TrainableTwin:
        """This twin with a scaled config: the twin that trains a distillation student."""
        return type(self)(self.grid, type(self).scaled_config(self.config, width, depth))


class SteppedSampling(ABC):
    """A twin whose model samples in a number of denoising steps that can be cut (same weights,
    fewer steps) or distilled (a student that lands in one step where its teacher takes two)."""

    @abstractmethod
    def sampling_steps(self, model: torch.nn.Module) -> int:
        """How many steps `model` samples in."""

    @abstractmethod
    def with_sampling_steps(self, model: torch.nn.Module, steps: int) -> torch.nn.Module:
        """A copy of `model` that samples in `steps` steps (Unsupported beyond what it was trained for)."""

    @abstractmethod
    def copy_sampling(self, source: torch.nn.Module, target: torch.nn.Module) -> None:
        """Make `target` sample on `source`'s steps (a student keeps its teacher's steps)."""

    @abstractmethod
    def halved_student(self, teacher: torch.nn.Module) -> torch.nn.Module:
        """A copy of `teacher` sampling in every other of its steps: one round of step distillation."""

    @abstractmethod
    def train_step_student(self, student, teacher, log: Callable[[str], None], fit_cfg, device: str) -> dict:
        """Train `student` (from `halved_student`) to do in one step what `teacher` does in two."""


TWINS: Registry[type[Twin]] = Registry("twin", "twinbench.twins", builtin=("models.twins",), expects=Twin)
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
