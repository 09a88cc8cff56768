"""Pruning passes."""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
import torch.nn.utils.prune  # a submodule torch does not import by itself

from compress.base import Pass, PassContext, register_pass


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
