"""Semi-structured (2:4) sparsity: two of every four weights zero, in a layout sparse tensor cores run."""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch

from compress.base import Pass, PassContext, register_pass
from models.plugins import Requirements


@register_pass
@dataclass(frozen=True)
class Sparsity24(Pass):
    """2:4 semi-structured sparsity of the Linear weights (the two largest of every four kept)."""

    name = "sparsity-2:4"
    # ONNX Runtime here has no 2:4 sparse kernels.
    requires = Requirements(
        device="cuda", compute_capability=(8, 0), targets=("torch",), why="sparse tensor cores, Ampere or newer"
    )

    def apply(self, model: torch.nn.Module, ctx: PassContext) -> torch.nn.Module:
        from torch.sparse import to_sparse_semi_structured

        model = copy.deepcopy(model)
        for module in model.modules():
            if (
                isinstance(module, torch.nn.Linear)
                and module.weight.shape[0] % 32 == 0
                and module.weight.shape[1] % 64 == 0
            ):
                w = module.weight.detach()
                groups = w.reshape(-1, 4)
                keep = groups.abs().argsort(dim=1)[:, 2:]  # the two largest of every four
                mask = torch.zeros_like(groups, dtype=torch.bool).scatter_(1, keep, True).reshape(w.shape)
                module.weight = torch.nn.Parameter(to_sparse_semi_structured((w * mask).half()), requires_grad=False)
        return model
