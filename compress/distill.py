"""Distillation: a smaller student trained on its teacher's outputs plus the labels."""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from compress.base import Pass, PassContext, Training, check_epochs, register_pass, training_note
from models.checkpoint import train_or_load_variant
from models.errors import Unsupported
from models.registry import SteppedSampling, TrainableTwin
from models.training import Distillation

TEACHER_FORWARD = 1 / 3  # a forward pass as a share of a training step (forward + backward, ~1 + 2)


@register_pass
@dataclass(frozen=True)
class Distill(Pass):
    """A student of the same family with widths scaled by `width` and depth by `depth`, trained
    (from scratch, cached) with loss (1 - weight) * task + weight * match-the-teacher. The teacher
    is the model this pass receives: the reference, or a variant earlier in the chain."""

    name = "distill"
    width: float = 0.5
    depth: float = 0.5
    weight: float = 0.5
    max_epochs: int | None = None  # None: the twin's own training schedule

    def __post_init__(self) -> None:
        if not (0.0 < self.width <= 1.0 and 0.0 < self.depth <= 1.0):
            raise ValueError(f"width and depth must be in (0, 1], got {self.width}, {self.depth}")
        if not 0.0 <= self.weight <= 1.0:
            raise ValueError(f"weight must be in [0, 1], got {self.weight}")
        check_epochs(self.max_epochs, "max_epochs")

    def apply(self, model: torch.nn.Module, ctx: PassContext) -> torch.nn.Module:
        twin = ctx.twin
        if reason := self.unsupported_for(type(twin)):
            raise Unsupported(reason)
        if not twin.owns(model):
            raise Unsupported(f"distill needs a teacher of the twin's own model class, got {type(model).__name__}")
        student_twin = twin.student(self.width, self.depth)
        student = student_twin.build_model()
        if isinstance(twin, SteppedSampling):  # a teacher with fewer sampling steps keeps them
            twin.copy_sampling(model, student)
        fit_cfg = student_twin.config.fit
        if self.max_epochs is not None:
            fit_cfg = replace(fit_cfg, max_epochs=self.max_epochs, patience=min(fit_cfg.patience, self.max_epochs))
        distillation = Distillation(teacher=model, weight=self.weight)
        student, _ = train_or_load_variant(
            twin, ctx.cache_key(self), student,
            lambda m: student_twin.train(m, ctx.log, fit_cfg=fit_cfg, distill=distillation, device=ctx.device),
            ctx.log,
        )  # fmt: skip
        ctx.note(self, **training_note(self.max_epochs, student_twin.config.fit.max_epochs))
        return student.eval()

    def unsupported_for(self, twin: type) -> str | None:
        if not issubclass(twin, TrainableTwin):
            return f"distill trains a student, and twin {twin.name} cannot train"
        return None

    def training(self, twin: type, config) -> tuple[Training, ...]:
        epochs = self.max_epochs or twin.scaled_config(config, self.width, self.depth).fit.max_epochs
        # An epoch: the teacher's forward pass (about a third of a training step, forward + backward)
        # and the student's step, width x depth of the reference's (between width^2 x depth where
        # FLOPs bound it and depth where kernel launches do). Smoke runs on 2 CPU cores took 0.2 to
        # 0.9 of the reference's time an epoch for width = depth = 0.5 (this rule: 0.58).
        return (Training(epochs, TEACHER_FORWARD + self.width * self.depth, "student"),)
