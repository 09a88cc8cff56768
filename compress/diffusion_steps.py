"""Fewer sampling steps for a twin that samples in steps (`SteppedSampling`, e.g. the diffusion
forecaster's DDIM loop): the same weights on a shorter loop, or step-distilled students."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from compress.base import Pass, PassContext, register_pass
from models.checkpoint import train_or_load_variant
from models.errors import Unsupported
from models.registry import SteppedSampling, TrainableTwin
from models.training import recovery


@register_pass
@dataclass(frozen=True)
class DiffusionSteps(Pass):
    """The same weights sampling in `steps` steps (evenly spaced over the training steps)."""

    name = "diffusion-steps"
    steps: int = 5

    def __post_init__(self) -> None:
        if self.steps < 1:
            raise ValueError(f"steps must be >= 1, got {self.steps}")

    def apply(self, model: torch.nn.Module, ctx: PassContext) -> torch.nn.Module:
        twin = _stepped(ctx.twin, model, self.name)
        return twin.with_sampling_steps(model, self.steps)


@register_pass
@dataclass(frozen=True)
class DiffusionStepDistill(Pass):
    """Progressive distillation: each round trains a student (initialised from its teacher) that
    samples in half the teacher's DDIM steps, one student step doing what two teacher steps do.
    `rounds` halvings; every round's weights are cached."""

    name = "diffusion-step-distill"
    rounds: int = 1
    max_epochs: int = 10

    def __post_init__(self) -> None:
        if self.rounds < 1 or self.max_epochs < 1:
            raise ValueError("rounds and max_epochs must be >= 1")

    def apply(self, model: torch.nn.Module, ctx: PassContext) -> torch.nn.Module:
        twin = _stepped(ctx.twin, model, self.name)
        if not isinstance(twin, TrainableTwin):
            raise Unsupported(f"{self.name} trains students, and twin {twin.name} cannot train")
        # Fine-tuning from the teacher's weights: a lower learning rate than training from scratch.
        fit_cfg = recovery(twin.config.fit, self.max_epochs)
        teacher = model
        for r in range(self.rounds):
            try:
                student = twin.halved_student(teacher)
            except Unsupported as e:
                raise Unsupported(f"round {r + 1}: {e.reason}") from e
            train = lambda m, t=teacher: twin.train_step_student(m, t, ctx.log, fit_cfg, ctx.device)  # noqa: E731
            student, _ = train_or_load_variant(twin, ctx.cache_key(self, round=r + 1), student, train, ctx.log)
            teacher = student.eval()
        return teacher


def _stepped(twin, model: torch.nn.Module, what: str) -> SteppedSampling:
    """`twin`, if it samples in steps and `model` is its own model (not a precision wrapper)."""
    if not isinstance(twin, SteppedSampling):
        raise Unsupported(f"{what} applies to twins that sample in steps; {twin.name} does not")
    if not twin.owns(model):
        raise Unsupported(f"{what} needs the twin's own model class, got {type(model).__name__}")
    return twin
