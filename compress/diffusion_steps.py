"""Fewer sampling steps for a twin that samples in steps (`SteppedSampling`, e.g. the diffusion
forecaster's DDIM loop): the same weights on a shorter loop, or step-distilled students."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from compress.base import Pass, PassContext, Training, register_pass
from compress.distill import TEACHER_FORWARD
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
        twin = _stepped(ctx.twin, model, self)
        return twin.with_sampling_steps(model, self.steps)

    def unsupported_for(self, twin: type) -> str | None:
        return _not_stepped(twin, self.name)


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
        twin = _stepped(ctx.twin, model, self)
        # Fine-tuning from the teacher's weights: a lower learning rate than training from scratch.
        fit_cfg = recovery(twin.config.fit, self.max_epochs)
        teacher = model
        for r in range(self.rounds):
            try:
                student = twin.halved_student(teacher)
            except Unsupported as e:
                raise Unsupported(f"round {r + 1}: {e.reason}") from e
            train = lambda m, t=teacher: twin.train_step_student(m, t, ctx.log, fit_cfg, ctx.device)  # noqa: E731
            # Round r + 1 of any `rounds` trains the same weights as the last round of rounds = r + 1:
            # keyed so, a 2-round chain reuses the 1-round chain's student instead of retraining it.
            key = ctx.cache_key(self, rounds=r + 1, round=r + 1)
            student, _ = train_or_load_variant(twin, key, student, train, ctx.log)
            teacher = student.eval()
        return teacher

    def unsupported_for(self, twin: type) -> str | None:
        if reason := _not_stepped(twin, self.name):
            return reason
        if not issubclass(twin, TrainableTwin):
            return f"{self.name} trains students, and twin {twin.name} cannot train"
        return None

    def training(self, twin: type, config) -> tuple[Training, ...]:
        # An epoch of a round: the student's step (as the reference's) and the teacher's two DDIM
        # steps without gradients (two forward passes, about a third of a training step each). Smoke
        # runs on 2 CPU cores took 1.3 to 1.6 times the reference's time an epoch.
        cost = 1 + 2 * TEACHER_FORWARD
        return tuple(
            Training(self.max_epochs, cost, f"step distillation, round {r + 1}", (("rounds", r + 1), ("round", r + 1)))
            for r in range(self.rounds)
        )


def _not_stepped(twin: type, what: str) -> str | None:
    if not issubclass(twin, SteppedSampling):
        return f"{what} applies to twins that sample in steps; {twin.name} does not"
    return None


def _stepped(twin, model: torch.nn.Module, p: Pass) -> SteppedSampling:
    """`twin`, if `p` applies to it and `model` is its own model (not a precision wrapper)."""
    if reason := p.unsupported_for(type(twin)):
        raise Unsupported(reason)
    if not twin.owns(model):
        raise Unsupported(f"{p.name} needs the twin's own model class, got {type(model).__name__}")
    return twin
