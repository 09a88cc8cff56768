"""low-rank: each Linear layer factorised into two thinner ones by truncated SVD, without training.

A compression pass that is not twinbench's own, joined through the `twinbench.passes` entry point.
It works on any model built from `torch.nn.Linear` layers (every twin's MLPs, the transformer's
projections), on every target: the factorised model is what torch runtimes run and what is exported
to ONNX. It needs nothing beyond torch, so it declares no `requires` (the default: runs anywhere).
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import torch

from compress.base import Pass, PassContext, register_pass
from models.errors import Unsupported


@register_pass
@dataclass(frozen=True)
class LowRank(Pass):
    """W (out x in) ~ (U_r sqrt(S_r)) (sqrt(S_r) V_r^T): Linear(in -> r, no bias) then Linear(r -> out,
    W's bias), with r = ceil(rank_fraction * min(in, out)) of the largest singular values.

    Only layers where the factors are smaller, r (in + out) < in out, are factorised (fewer
    parameters and multiply-adds); the others stay as they are. Only exact `torch.nn.Linear` layers
    are touched: subclasses such as attention's out_proj are read as weights by their owners.
    Deterministic (the SVD is taken in float64 of the same weights), so a variant replays exactly.
    """

    name = "low-rank"
    rank_fraction: float = 0.5

    def __post_init__(self) -> None:
        if isinstance(self.rank_fraction, bool) or not isinstance(self.rank_fraction, int | float):
            raise ValueError(f"rank_fraction must be a number, got {self.rank_fraction!r}")
        if not 0.0 < self.rank_fraction < 1.0:  # NaN fails this too
            raise ValueError(f"rank_fraction must be in (0, 1), got {self.rank_fraction}")

    def apply(self, model: torch.nn.Module, ctx: PassContext) -> torch.nn.Module:
        model = copy.deepcopy(model)
        layers = [(name, m) for name, m in model.named_modules() if type(m) is torch.nn.Linear]
        if not layers:
            raise Unsupported(f"low-rank found no torch.nn.Linear layer in {type(model).__name__}")
        factorised = 0
        for name, layer in layers:
            weight = layer.weight
            if type(weight.data) is not torch.Tensor or not weight.is_floating_point():
                raise Unsupported("low-rank needs plain float weights: put it before a quantization pass")
            n_out, n_in = weight.shape
            rank = max(1, math.ceil(self.rank_fraction * min(n_in, n_out)))
            if rank * (n_in + n_out) >= n_in * n_out:
                continue  # the factors would not be smaller
            if not name:  # the model is itself one Linear layer
                return _factorise(layer, rank).eval()
            parent, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent), child, _factorise(layer, rank))
            factorised += 1
        if not factorised:
            raise Unsupported(
                f"low-rank at rank_fraction {self.rank_fraction} would make no Linear layer of "
                f"{type(model).__name__} smaller"
            )
        return model.eval()


def _factorise(layer: torch.nn.Linear, rank: int) -> torch.nn.Sequential:
    weight = layer.weight.detach()
    u, s, vh = torch.linalg.svd(weight.to(torch.float64), full_matrices=False)
    root = s[:rank].sqrt()
    kind = {"dtype": weight.dtype, "device": weight.device}
    first = torch.nn.Linear(layer.in_features, rank, bias=False, **kind)
    second = torch.nn.Linear(rank, layer.out_features, bias=layer.bias is not None, **kind)
    with torch.no_grad():
        first.weight.copy_(root[:, None] * vh[:rank])
        second.weight.copy_(u[:, :rank] * root)
        if layer.bias is not None:
            second.bias.copy_(layer.bias)
    return torch.nn.Sequential(first, second)
