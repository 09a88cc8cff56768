"""Layer surgery for structured pruning: drop hidden units between two layers (Linear or Conv1d).

Shared by the twins' `prune_structured` rules; the layers really get smaller, so dense kernels do
less work. The units with the smallest in- and out-weight norms go.
"""

from __future__ import annotations

import torch


def shrink_pair(first: torch.nn.Module, second: torch.nn.Module, ratio: float) -> torch.Tensor:
    """Drop a `ratio` of the units between `first` and `second`; returns the indices kept."""
    n = first.weight.shape[0]
    score = first.weight.flatten(1).norm(dim=1) * second.weight.transpose(0, 1).flatten(1).norm(dim=1)
    keep = score.topk(max(1, round(n * (1 - ratio)))).indices.sort().values
    keep_rows(first, keep)
    with torch.no_grad():
        second.weight = torch.nn.Parameter(second.weight[:, keep].clone())
    if isinstance(second, torch.nn.Linear):
        second.in_features = len(keep)
    else:
        second.in_channels = len(keep)
    return keep


def keep_rows(layer: torch.nn.Module, keep: torch.Tensor) -> None:
    """Keep only the output units `keep` of a Linear or Conv1d layer."""
    with torch.no_grad():
        layer.weight = torch.nn.Parameter(layer.weight[keep].clone())
        if layer.bias is not None:
            layer.bias = torch.nn.Parameter(layer.bias[keep].clone())
    if isinstance(layer, torch.nn.Linear):
        layer.out_features = len(keep)
    else:
        layer.out_channels = len(keep)
