"""Pruning passes: unstructured (a control) and structured (smaller dense layers)."""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
import torch.nn.utils.prune  # a submodule torch does not import by itself

from compress.base import Pass, PassContext, Training, register_pass
from models.checkpoint import train_or_load_variant
from models.errors import Unsupported
from models.registry import TrainableTwin, Twin
from models.training import recovery


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


@register_pass
@dataclass(frozen=True)
class PruneStructured(Pass):
    """Remove a `ratio` of the hidden units, channels and attention heads, then fine-tune briefly.

    The layers really get smaller (fewer rows and columns), so dense kernels do less work. What is
    removed is the twin's own rule (`Twin.prune_structured`: the transformer's attention heads and
    feed-forward units, the GNN's MLP hidden units, the diffusion denoiser's inner channels); the
    units with the smallest weight norms go. `finetune_epochs` of recovery training (cached) follow,
    for a twin that can train.
    """

    name = "prune-structured"
    ratio: float = 0.5
    finetune_epochs: int = 3

    def __post_init__(self) -> None:
        if not 0.0 < self.ratio < 1.0:
            raise ValueError(f"ratio must be in (0, 1), got {self.ratio}")
        if self.finetune_epochs < 0:
            raise ValueError("finetune_epochs must be >= 0")

    def apply(self, model: torch.nn.Module, ctx: PassContext) -> torch.nn.Module:
        twin = ctx.twin
        if not twin.owns(model):
            raise Unsupported(f"prune-structured has no rule for {type(model).__name__} (e.g. after a precision pass)")
        if reason := self.unsupported_for(type(twin)):
            raise Unsupported(reason)
        model = copy.deepcopy(model)
        twin.prune_structured(model, self.ratio)
        model.eval()
        if self.finetune_epochs == 0:
            return model
        fit_cfg = recovery(twin.config.fit, self.finetune_epochs)
        model, _ = train_or_load_variant(
            twin,
            ctx.cache_key(self),
            model,
            lambda m: twin.train(m, ctx.log, fit_cfg=fit_cfg, device=ctx.device),
            ctx.log,
        )
        return model.eval()

    def unsupported_for(self, twin: type) -> str | None:
        if self.finetune_epochs and not issubclass(twin, TrainableTwin):
            return f"twin {twin.name} cannot train: use finetune_epochs = 0 (no recovery fine-tune)"
        if twin.prune_structured is Twin.prune_structured:
            return f"twin {twin.name} has no structured-pruning rule"
        return None

    def training(self, twin: type, config) -> tuple[Training, ...]:
        # The pruned model is never slower to train than its reference (smoke, 2 CPU cores: 0.3 to
        # 0.7 of the reference's time an epoch), so an epoch counts as a whole one of the reference.
        return (Training(self.finetune_epochs, 1.0, "recovery fine-tune"),) if self.finetune_epochs else ()
