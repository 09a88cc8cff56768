"""Compression passes and variants.

A pass is a frozen config (validated in `__post_init__`) with `apply(model, ctx)`, which returns a
new model and never mutates its input, and optionally `apply_onnx(path, ctx)`, which rewrites the
exported ONNX model (ONNX Runtime's own quantizers work there). Either raises `Unsupported` where
it cannot run here. A variant is a twin's reference model plus an ordered chain of passes; its id
is a stable hash of the chain, and its lineage records each step's parent, pass and parameters.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import ClassVar

import torch

from models.errors import ConfigError, Unsupported
from models.plugins import Registry, Requirements

TARGETS = ("torch", "onnx")


@dataclass(frozen=True)
class PassContext:
    twin: object  # models.registry.Twin (its data: calibration, fine-tuning)
    device: str
    workdir: Path
    target: str  # "torch": the model torch runtimes run; "onnx": the model exported for ONNX Runtime
    chain: tuple = ()  # the steps ({"pass": name, **params}) applied before this pass
    log: Callable[[str], None] = print  # progress of passes that train
    # What the passes of a build say for the record (model_info["compression"]): what stayed fp32,
    # a budget's choice and its search trace, a capped training. Shared by the chain's steps.
    notes: list = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.target not in TARGETS:
            raise ValueError(f"target must be one of {TARGETS}")

    def note(self, p: Pass, **info) -> None:
        self.notes.append({"pass": p.name, "target": self.target, **info})

    def cache_key(self, p: Pass, **extra) -> tuple:
        """The chain that names the weights `p` trains here (see models.checkpoint)."""
        return (*self.chain, {**step_spec(p), **extra})

    def search_key(self, p: Pass, **extra) -> tuple:
        """What names a budget search's outcome (compress/budget.py): the chain, and the device whose
        numerics it evaluated (bf16 or int8 on a GPU is not what it is on a CPU), unlike weights."""
        return (*self.cache_key(p, **extra), {"searched_on": self.device})


AUTO = "auto"  # a setting a budgeted pass searches for (prune ratio, sampling steps, rounds)


def check_budget(value) -> None:
    """`max_quality_loss_pct` must be None or a finite number in (0, 100]."""
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"max_quality_loss_pct must be a finite number, got {value!r}")
    if not 0 < value <= 100:
        raise ValueError(f"max_quality_loss_pct must be in (0, 100], got {value}")


def check_auto(value, name: str, budget) -> None:
    """`value` may be "auto" only with a budget to search against; the budget itself must be sane."""
    check_budget(budget)
    if isinstance(value, str) and value != AUTO:
        raise ValueError(f'{name} must be a number or "{AUTO}", got {value!r}')
    if value == AUTO and budget is None:
        raise ValueError(f'{name} = "{AUTO}" needs max_quality_loss_pct: the budget the search aims at')
    if isinstance(value, bool):
        raise ValueError(f'{name} must be a number or "{AUTO}", got {value!r}')


def check_epochs(value, name: str, allow_zero: bool = False) -> None:
    """An epoch count or cap: None (the twin's own schedule) or a whole number >= 1 (>= 0 if allowed)."""
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < (0 if allow_zero else 1):
        raise ValueError(f"{name} must be a whole number >= {0 if allow_zero else 1} or omitted, got {value!r}")


def training_note(cap: int | None, reference_epochs: int) -> dict:
    """What a record says of a pass's training: patience-stopped up to the reference's epoch count,
    or capped lower by the suite (the report marks such variants as capped)."""
    if cap is not None and cap < reference_epochs:
        return {
            "training": f"capped at {cap} epochs (the reference's schedule: {reference_epochs})",
            "capped_epochs": cap,
        }
    return {"training": f"until validation stops improving, at most {reference_epochs} epochs (the reference's)"}


@dataclass(frozen=True)
class Training:
    """Weights a pass trains (and caches) for a twin, as a run's estimate counts them before anything
    is trained (bench/run/estimate.py): epochs, each costing `cost` epochs of the twin's reference training."""

    epochs: int  # at most: early stopping may end sooner
    cost: float = 1.0  # an epoch's cost as a share of an epoch of the reference's training
    what: str = "training"
    key: tuple[tuple[str, object], ...] = ()  # extra entries of its cache key (PassContext.cache_key)

    def __post_init__(self) -> None:
        if self.epochs < 1 or not self.cost > 0:
            raise ValueError(f"invalid training estimate {self}")


@dataclass(frozen=True)
class Pass:
    name: ClassVar[str]
    # What it needs to run (device, compute capability, target, libraries), checked before `apply`.
    requires: ClassVar[Requirements] = Requirements()

    def check(self, ctx: PassContext) -> None:
        """Raise `Unsupported` when this pass cannot run for `ctx`'s device and target."""
        if reason := self.requires.unmet(ctx.device, ctx.target):
            raise Unsupported(f"{self.name} {reason}")

    def unsupported_for(self, twin: type) -> str | None:
        """Why this pass can never apply to a twin of class `twin` (on any device); None when it may.
        Asked before a run, to count cells that will be `unsupported` records and to skip their training."""
        return None

    def training(self, twin: type, config) -> tuple[Training, ...]:
        """What this pass trains for a twin of class `twin` whose reference has `config` (asked only
        where `unsupported_for` is None): the weights it caches, for the run's estimate. None by default."""
        return ()

    def apply(self, model: torch.nn.Module, ctx: PassContext) -> torch.nn.Module:
        """A new model; the input is never modified."""
        raise NotImplementedError

    def apply_onnx(self, path: Path, ctx: PassContext) -> Path:
        """The ONNX artifact of the variant; by default the export of `apply`'s model, unchanged."""
        return path

    @property
    def params(self) -> dict:
        return asdict(self)


PASSES: Registry[type[Pass]] = Registry(
    "pass", "twinbench.passes", builtin=("compress",), skip=frozenset({"base", "replay"}), expects=Pass
)
register_pass = PASSES.register()


def passes() -> dict[str, type[Pass]]:
    return {name: entry.obj for name, entry in PASSES.entries().items()}


def make_pass(name: str, **params) -> Pass:
    cls = PASSES.get(name)
    known = {f.name for f in fields(cls)}
    if unknown := sorted(set(params) - known):
        raise ConfigError(f"pass {name}: unknown parameters {unknown} (known: {sorted(known)})")
    try:
        return cls(**params)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"pass {name}: {e}") from e


@dataclass(frozen=True)
class Variant:
    chain: tuple[Pass, ...] = ()

    @property
    def id(self) -> str:
        if not self.chain:
            return "reference"
        return hashlib.sha256(json.dumps(list(self.spec), sort_keys=True).encode()).hexdigest()[:12]

    @property
    def name(self) -> str:
        if not self.chain:
            return "reference (fp32)"
        return " -> ".join(f"{p.name}({', '.join(f'{k}={v}' for k, v in p.params.items())})" for p in self.chain)

    @property
    def lineage(self) -> tuple:
        """(parent variant id, pass, params) per step, from the reference down to this variant."""
        return tuple(
            {
                "parent": Variant(self.chain[:i]).id,
                "pass": p.name,
                "params": p.params,
                "id": Variant(self.chain[: i + 1]).id,
            }
            for i, p in enumerate(self.chain)
        )

    def build(self, model: torch.nn.Module, ctx: PassContext) -> torch.nn.Module:
        for i, p in enumerate(self.chain):
            p.check(ctx)
            model = p.apply(model, replace(ctx, chain=self.spec[:i]))
        return model

    def rewrite_onnx(self, path: Path, ctx: PassContext) -> Path:
        for i, p in enumerate(self.chain):
            path = p.apply_onnx(path, replace(ctx, chain=self.spec[:i]))
        return path

    @property
    def spec(self) -> tuple[dict, ...]:
        """The chain as a suite writes it: ({"pass": name, **params}, ...)."""
        return tuple(step_spec(p) for p in self.chain)


def step_spec(p: Pass) -> dict:
    return {"pass": p.name, **p.params}


def parse_variant(spec: list[dict]) -> Variant:
    """A suite's `chain = [{pass = "...", param = value}, ...]` -> Variant."""
    chain = []
    for step in spec:
        step = dict(step)
        if "pass" not in step:
            raise ConfigError(f"variant step {step} has no 'pass'")
        chain.append(make_pass(step.pop("pass"), **step))
    return Variant(tuple(chain))
