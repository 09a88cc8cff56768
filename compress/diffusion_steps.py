"""Fewer DDIM sampling steps for the diffusion twin: the same weights, a shorter loop."""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch

from compress.base import Pass, PassContext, register_pass
from models.errors import Unsupported


@register_pass
@dataclass(frozen=True)
class DiffusionSteps(Pass):
    name = "diffusion-steps"
    steps: int = 5

    def __post_init__(self) -> None:
        if self.steps < 1:
            raise ValueError(f"steps must be >= 1, got {self.steps}")

    def apply(self, model: torch.nn.Module, ctx: PassContext) -> torch.nn.Module:
        from models.twins.diffusion_forecaster import DiffusionForecaster, ddim_timesteps

        if not isinstance(model, DiffusionForecaster):
            raise Unsupported("diffusion-steps applies to the diffusion-forecaster twin only")
        if self.steps > len(model.alpha_bar):
            raise Unsupported(f"{self.steps} steps exceed the {len(model.alpha_bar)} training steps")
        model = copy.deepcopy(model)
        model.timesteps = ddim_timesteps(len(model.alpha_bar), self.steps)
        return model


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
        from models.checkpoint import train_or_load_variant
        from models.training import recovery
        from models.twins.diffusion_forecaster import DiffusionForecaster

        if not isinstance(model, DiffusionForecaster):
            raise Unsupported("diffusion-step-distill applies to the diffusion-forecaster twin only")
        twin = ctx.twin
        # Fine-tuning from the teacher's weights: a lower learning rate than training from scratch.
        fit_cfg = recovery(twin.config.fit, self.max_epochs)
        teacher = model
        for r in range(self.rounds):
            if len(teacher.timesteps) < 2:
                raise Unsupported(f"round {r + 1}: the teacher already samples in one step")
            student = copy.deepcopy(teacher)
            student.timesteps = teacher.timesteps[::2]
            train = lambda m, t=teacher: twin.train_step_student(m, t, ctx.log, fit_cfg, ctx.device)  # noqa: E731
            student, _ = train_or_load_variant(twin, ctx.cache_key(self, round=r + 1), student, train, ctx.log)
            teacher = student.eval()
        return teacher
