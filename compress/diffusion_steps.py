"""Fewer sampling steps for a twin that samples in steps (`SteppedSampling`, e.g. the diffusion
forecaster's DDIM loop): the same weights on a shorter loop, or step-distilled students."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from compress.base import AUTO, Pass, PassContext, Training, check_auto, check_epochs, register_pass, training_note
from compress.budget import Search, cached_search, first_within, one_of
from compress.distill import TEACHER_FORWARD
from models.checkpoint import train_or_load_variant
from models.errors import Unsupported
from models.export import torch_predict_fn
from models.registry import SteppedSampling, TrainableTwin
from models.training import recovery


@register_pass
@dataclass(frozen=True)
class DiffusionSteps(Pass):
    """The same weights sampling in `steps` steps (evenly spaced over the training steps).

    `steps = "auto"` with `max_quality_loss_pct`: the fewest steps whose validation loss is within
    the budget, tried from one step up.
    """

    name = "diffusion-steps"
    steps: int | str = 5
    max_quality_loss_pct: float | None = None

    def __post_init__(self) -> None:
        check_auto(self.steps, "steps", self.max_quality_loss_pct)
        if self.steps != AUTO:
            check_epochs(self.steps, "steps")

    def apply(self, model: torch.nn.Module, ctx: PassContext) -> torch.nn.Module:
        twin = _stepped(ctx.twin, model, self)
        if self.max_quality_loss_pct is None:
            return twin.with_sampling_steps(model, self.steps)
        candidates = fewer_steps(twin.sampling_steps(model)) if self.steps == AUTO else (self.steps,)

        def run() -> dict:
            search = Search(twin, self.name, self.max_quality_loss_pct, torch_predict_fn(model), ctx.log)
            return first_within(search, candidates, lambda n: torch_predict_fn(twin.with_sampling_steps(model, n)))

        search = cached_search(twin, ctx.search_key(self), run, ctx.log, one_of(candidates))
        ctx.note(self, search=search)
        return twin.with_sampling_steps(model, search["chosen"])

    def unsupported_for(self, twin: type) -> str | None:
        return _not_stepped(twin, self.name)


def fewer_steps(steps: int) -> list[int]:
    """The step counts a search tries, fewest first: every count up to 12, then about 25 % apart."""
    counts = set(range(1, min(steps, 12) + 1))
    n = 12
    while n < steps:
        n = max(n + 1, round(n * 1.25))
        counts.add(min(n, steps))
    return sorted(counts)


@register_pass
@dataclass(frozen=True)
class DiffusionStepDistill(Pass):
    """Progressive distillation: each round trains a student (initialised from its teacher) that
    samples in half the teacher's DDIM steps, one student step doing what two teacher steps do.
    `rounds` halvings; every round's weights are cached. Each round trains until validation stops
    improving, at most the reference's epoch count (or `max_epochs`, a suite's cap).

    `rounds = "auto"` with `max_quality_loss_pct`: the most rounds whose student stays within the
    budget on the validation split (rounds are trained one after another until one breaks it).
    """

    name = "diffusion-step-distill"
    rounds: int | str = 1
    max_epochs: int | None = None  # None: the reference's max_epochs, with its patience
    max_quality_loss_pct: float | None = None

    def __post_init__(self) -> None:
        check_auto(self.rounds, "rounds", self.max_quality_loss_pct)
        if self.rounds != AUTO:
            check_epochs(self.rounds, "rounds")
        check_epochs(self.max_epochs, "max_epochs")

    def apply(self, model: torch.nn.Module, ctx: PassContext) -> torch.nn.Module:
        twin = _stepped(ctx.twin, model, self)
        note = training_note(self.max_epochs, twin.config.fit.max_epochs)
        if self.max_quality_loss_pct is None:
            student = self._distilled(model, twin, self.rounds, ctx)
            ctx.note(self, **note)
            return student
        most = max_rounds(twin.sampling_steps(model)) if self.rounds == AUTO else self.rounds

        def run() -> dict:
            search = Search(twin, self.name, self.max_quality_loss_pct, torch_predict_fn(model), ctx.log)
            best = None
            for r in range(1, most + 1):  # rounds build on each other: stop at the first that breaks the budget
                loss = search.trial(r, lambda r=r: torch_predict_fn(self._distilled(model, twin, r, ctx)))
                if not search.within(loss):
                    break
                best = r
            return search.outcome(best) if best is not None else search.failed()

        search = cached_search(twin, ctx.search_key(self), run, ctx.log, one_of(range(1, most + 1)))
        ctx.note(self, **note, search=search)
        return self._distilled(model, twin, search["chosen"], ctx)

    def _distilled(
        self, model: torch.nn.Module, twin: SteppedSampling, rounds: int, ctx: PassContext
    ) -> torch.nn.Module:
        # Fine-tuning from the teacher's weights: a lower learning rate than training from scratch.
        fit_cfg = recovery(twin.config.fit, self.max_epochs or twin.config.fit.max_epochs)
        teacher = model
        for r in range(rounds):
            try:
                student = twin.halved_student(teacher)
            except Unsupported as e:
                raise Unsupported(f"round {r + 1}: {e.reason}") from e
            train = lambda m, t=teacher: twin.train_step_student(m, t, ctx.log, fit_cfg, ctx.device)  # noqa: E731
            student, _ = train_or_load_variant(twin, self._round_key(ctx, r + 1), student, train, ctx.log)
            teacher = student.eval()
        return teacher

    def _round_key(self, ctx: PassContext, r: int) -> tuple:
        # Round r of any chain trains the same weights as the last round of rounds = r: keyed so, a
        # 2-round chain (or a search) reuses the 1-round chain's student instead of retraining it.
        return ctx.cache_key(self, **_round(r))

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
        rounds = (
            max_rounds(getattr(config, "sample_steps", 2)) if self.rounds == AUTO else self.rounds
        )  # auto: at worst all
        epochs = self.max_epochs or config.fit.max_epochs
        return tuple(
            Training(epochs, cost, f"step distillation, round {r + 1}", tuple(_round(r + 1).items()))
            for r in range(rounds)
        )


def _round(r: int) -> dict:
    return {"rounds": r, "round": r, "max_quality_loss_pct": None}


def max_rounds(steps: int) -> int:
    """How many halvings a loop of `steps` steps allows before it reaches one step."""
    return max(1, (steps - 1).bit_length()) if steps > 1 else 0


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
