"""Pruning passes: unstructured (a control) and structured (smaller dense layers)."""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
import torch.nn.utils.prune  # a submodule torch does not import by itself

from compress.base import AUTO, Pass, PassContext, Training, check_auto, check_epochs, register_pass, training_note
from compress.boundary import boundary_note, torch_units
from compress.budget import Search, cached_search, first_within, one_of
from compress.distill import TEACHER_FORWARD
from models.checkpoint import train_or_load_variant
from models.errors import Unsupported
from models.export import torch_predict_fn
from models.registry import TrainableTwin, Twin
from models.training import Distillation, recovery

# Recovery learns half from the labels, half from the unpruned model's outputs.
RECOVERY_TEACHER_WEIGHT = 0.5


def prunable_weights(model: torch.nn.Module) -> list[tuple[torch.nn.Module, str]]:
    """Weights of every Linear and Conv1d: the layers whose multiply-adds dominate all three twins."""
    return [(m, "weight") for m in model.modules() if isinstance(m, torch.nn.Linear | torch.nn.Conv1d)]


@register_pass
@dataclass(frozen=True)
class PruneUnstructured(Pass):
    """Global L1 magnitude pruning, made permanent (the zeros are baked into dense weights).

    A control: dense kernels multiply zeros as fast as anything else, so latency and energy should
    not move. If they do, the measurement is noisier than it claims.
    """

    name = "prune-unstructured"
    amount: float = 0.5

    def __post_init__(self) -> None:
        if not 0.0 < self.amount < 1.0:
            raise ValueError(f"amount must be in (0, 1), got {self.amount}")

    def apply(self, model: torch.nn.Module, ctx: PassContext) -> torch.nn.Module:
        model = copy.deepcopy(model)
        targets = prunable_weights(model)
        torch.nn.utils.prune.global_unstructured(
            targets, pruning_method=torch.nn.utils.prune.L1Unstructured, amount=self.amount
        )
        for module, name in targets:
            torch.nn.utils.prune.remove(module, name)
        return model.eval()


# The ratios `ratio = "auto"` tries, largest first: each costs a recovery fine-tune (cached).
AUTO_RATIOS = (0.75, 0.5, 0.25, 0.125)


@register_pass
@dataclass(frozen=True)
class PruneStructured(Pass):
    """Remove a `ratio` of the hidden units, channels and attention heads, then recover.

    The layers really get smaller (fewer rows and columns), so dense kernels do less work. What is
    removed is the twin's own rule (`Twin.prune_structured`: the transformer's attention heads and
    feed-forward units, the GNN's MLP hidden units, the diffusion denoiser's inner channels); the
    units with the smallest weight norms go. Recovery (cached) learns from the unpruned model's
    outputs as well as the labels (Torch-Pruning's and Minitron's practice: prune, then distil from
    the original) and stops when validation stops improving, capped by the reference's own epoch
    count, or by `finetune_epochs` where a suite caps it lower for speed (the record says so).

    `ratio = "auto"` with `max_quality_loss_pct`: the largest of AUTO_RATIOS whose recovered model
    stays within the budget on the validation split.
    """

    name = "prune-structured"
    ratio: float | str = 0.5
    finetune_epochs: int | None = None  # None: the reference's max_epochs, with its patience
    max_quality_loss_pct: float | None = None

    def __post_init__(self) -> None:
        check_auto(self.ratio, "ratio", self.max_quality_loss_pct)
        if self.ratio != AUTO and not (isinstance(self.ratio, int | float) and 0.0 < self.ratio < 1.0):
            raise ValueError(f'ratio must be in (0, 1) or "auto", got {self.ratio!r}')
        check_epochs(self.finetune_epochs, "finetune_epochs", allow_zero=True)
        if self.finetune_epochs == 0 and self.max_quality_loss_pct is not None:
            raise ValueError(
                "a budget needs recovery: finetune_epochs = 0 cannot be combined with max_quality_loss_pct"
            )

    def apply(self, model: torch.nn.Module, ctx: PassContext) -> torch.nn.Module:
        twin = ctx.twin
        if not twin.owns(model):
            raise Unsupported(f"prune-structured has no rule for {type(model).__name__} (e.g. after a precision pass)")
        if reason := self.unsupported_for(type(twin)):
            raise Unsupported(reason)
        if self.max_quality_loss_pct is None:
            pruned = self._pruned(model, self.ratio, ctx)
            ctx.note(self, **self._training_note(twin), **boundary_note(twin, torch_units(twin, model)))
            return pruned
        ratios = AUTO_RATIOS if self.ratio == AUTO else (self.ratio,)
        built: dict[float, torch.nn.Module] = {}

        def predict_for(ratio: float):
            built[ratio] = self._pruned(model, ratio, ctx)
            return torch_predict_fn(built[ratio])

        def run() -> dict:
            search = Search(twin, self.name, self.max_quality_loss_pct, torch_predict_fn(copy.deepcopy(model)), ctx.log)
            return first_within(search, ratios, predict_for)

        search = cached_search(twin, ctx.search_key(self), run, ctx.log, one_of(ratios))
        ratio = search["chosen"]
        pruned = built[ratio] if ratio in built else self._pruned(model, ratio, ctx)
        ctx.note(self, **self._training_note(twin), **boundary_note(twin, torch_units(twin, model)), search=search)
        return pruned

    def _pruned(self, model: torch.nn.Module, ratio: float, ctx: PassContext) -> torch.nn.Module:
        """`model` pruned at `ratio` and recovered (weights cached under the ratio's own key)."""
        twin = ctx.twin
        pruned = copy.deepcopy(model)
        twin.prune_structured(pruned, ratio)
        pruned.eval()
        if self.finetune_epochs == 0:
            return pruned
        fit_cfg = recovery(twin.config.fit, self.epochs(twin.config))
        teacher = Distillation(teacher=model, weight=RECOVERY_TEACHER_WEIGHT)
        # Keyed by the ratio alone: a budget's search and a fixed variant at the same ratio share weights.
        key = ctx.cache_key(self, ratio=ratio, max_quality_loss_pct=None)
        pruned, _ = train_or_load_variant(
            twin, key, pruned,
            lambda m: twin.train(m, ctx.log, fit_cfg=fit_cfg, distill=teacher, device=ctx.device),
            ctx.log,
        )  # fmt: skip
        return pruned.eval()

    def epochs(self, config) -> int:
        return self.finetune_epochs or config.fit.max_epochs

    def _training_note(self, twin) -> dict:
        if self.finetune_epochs == 0:
            return {"recovery": "none (finetune_epochs = 0)"}
        return training_note(self.finetune_epochs, twin.config.fit.max_epochs)

    def unsupported_for(self, twin: type) -> str | None:
        if self.finetune_epochs != 0 and not issubclass(twin, TrainableTwin):
            return f"twin {twin.name} cannot train: use finetune_epochs = 0 (no recovery fine-tune)"
        if twin.prune_structured is Twin.prune_structured:
            return f"twin {twin.name} has no structured-pruning rule"
        return None

    def training(self, twin: type, config) -> tuple[Training, ...]:
        # The pruned model is never slower to train than its reference (smoke, 2 CPU cores: 0.3 to
        # 0.7 of the reference's time an epoch); its teacher's forward pass adds about a third of a step.
        if self.finetune_epochs == 0:
            return ()
        if self.ratio == AUTO:  # at worst every ratio of the search is trained
            return tuple(
                Training(self.epochs(config), 1 + TEACHER_FORWARD, f"recovery fine-tune, ratio {r}", _key(r))
                for r in AUTO_RATIOS
            )
        return (Training(self.epochs(config), 1 + TEACHER_FORWARD, "recovery fine-tune", _key(self.ratio)),)


def _key(ratio: float) -> tuple:
    """The cache key entries of a recovered model at `ratio` (see PruneStructured._pruned)."""
    return (("ratio", ratio), ("max_quality_loss_pct", None))
