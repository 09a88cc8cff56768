"""Pruning passes: unstructured (a control) and structured (smaller dense layers)."""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.utils.prune  # a submodule torch does not import by itself

from compress.base import Pass, PassContext, register_pass
from models.errors import Unsupported


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
    removed, per twin: the transformer's attention heads and feed-forward units (Torch-Pruning,
    which follows the dependencies between layers); the GNN's MLP hidden units; the diffusion
    denoiser's inner residual-block channels, its time-MLP units and its history encoder's channels.
    Residual streams keep their width, so the surrounding layers need no change. The units with the
    smallest weight norms go; `finetune_epochs` of recovery training (cached) follow.
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
        from models.checkpoint import train_or_load_variant
        from models.training import recovery

        shrink = _structured_pruners().get(type(model))
        if shrink is None:
            raise Unsupported(f"prune-structured has no rule for {type(model).__name__} (e.g. after a precision pass)")
        model = copy.deepcopy(model)
        shrink(model, self.ratio, ctx)
        model.eval()
        if self.finetune_epochs == 0:
            return model
        twin = ctx.twin
        fit_cfg = recovery(twin.config.fit, self.finetune_epochs)
        model, _ = train_or_load_variant(
            twin,
            ctx.cache_key(self),
            model,
            lambda m: twin.train(m, ctx.log, fit_cfg=fit_cfg, device=ctx.device),
            ctx.log,
        )
        return model.eval()


def _structured_pruners() -> dict[type, Callable[[torch.nn.Module, float, PassContext], None]]:
    from models.twins.diffusion_forecaster import DiffusionForecaster
    from models.twins.grid_gnn import GridGNN
    from models.twins.sensor_transformer import PatchTSTForecaster

    return {PatchTSTForecaster: _prune_transformer, GridGNN: _prune_gnn, DiffusionForecaster: _prune_diffusion}


def _prune_transformer(model, ratio: float, ctx: PassContext) -> None:
    """Whole attention heads (their size is kept, so attention's scaling stays right) and FFN units."""
    import torch_pruning as tp

    patchtst = model.model
    attentions = [m for m in patchtst.modules() if type(m).__name__ == "PatchTSTAttention"]
    layers = [m for m in patchtst.modules() if type(m).__name__ == "PatchTSTEncoderLayer"]
    heads = {proj: a.num_heads for a in attentions for proj in (a.q_proj, a.k_proj, a.v_proj)}
    # Every layer that writes the residual stream is left alone: d_model keeps its width.
    keep_width = [patchtst.head, patchtst.model.encoder.embedder, *(a.out_proj for a in attentions)]
    keep_width += [layer.ff[-1] for layer in layers]
    example = torch.from_numpy(ctx.twin.example_inputs(2)[0])
    pruner = tp.pruner.MetaPruner(
        model, example, importance=tp.importance.MagnitudeImportance(p=2), pruning_ratio=ratio,
        ignored_layers=keep_width, num_heads=heads, prune_num_heads=True, prune_head_dims=False,
        head_pruning_ratio=ratio,
        # The positional table lives on the residual stream's axis (-1), which is never pruned.
        unwrapped_parameters=[(patchtst.model.encoder.positional_encoder.position_enc, -1)],
    )  # fmt: skip
    pruner.step()
    for a in attentions:
        a.num_heads = pruner.num_heads[a.q_proj]
        a.embed_dim = a.num_heads * a.head_dim


def _prune_gnn(model, ratio: float, ctx: PassContext) -> None:
    for seq in model.modules():  # every grid_gnn.mlp(): Linear -> SiLU -> Linear; its hidden units go
        if isinstance(seq, torch.nn.Sequential):
            _shrink_pair(seq[0], seq[2], ratio)


def _prune_diffusion(model, ratio: float, ctx: PassContext) -> None:
    denoiser = model.denoiser
    _shrink_pair(denoiser.time_mlp[0], denoiser.time_mlp[2], ratio)
    for block in denoiser.blocks:  # conv1's output channels, with the FiLM rows that modulate them
        keep = _shrink_pair(block.conv1, block.conv2, ratio)
        hidden = block.film.out_features // 2
        _keep_rows(block.film, torch.cat([keep, hidden + keep]))
    enc = model.encoder  # Conv -> SiLU -> Conv(stride 4) -> SiLU -> Conv(stride 4) -> ... -> Linear
    _shrink_pair(enc[0], enc[2], ratio)
    _shrink_pair(enc[2], enc[4], ratio)


def _shrink_pair(first: torch.nn.Module, second: torch.nn.Module, ratio: float) -> torch.Tensor:
    """Drop the units between two layers (Linear or Conv1d) whose in- and out-weights are smallest."""
    n = first.weight.shape[0]
    score = first.weight.flatten(1).norm(dim=1) * second.weight.transpose(0, 1).flatten(1).norm(dim=1)
    keep = score.topk(max(1, round(n * (1 - ratio)))).indices.sort().values
    _keep_rows(first, keep)
    with torch.no_grad():
        second.weight = torch.nn.Parameter(second.weight[:, keep].clone())
    if isinstance(second, torch.nn.Linear):
        second.in_features = len(keep)
    else:
        second.in_channels = len(keep)
    return keep


def _keep_rows(layer: torch.nn.Module, keep: torch.Tensor) -> None:
    with torch.no_grad():
        layer.weight = torch.nn.Parameter(layer.weight[keep].clone())
        if layer.bias is not None:
            layer.bias = torch.nn.Parameter(layer.bias[keep].clone())
    if isinstance(layer, torch.nn.Linear):
        layer.out_features = len(keep)
    else:
        layer.out_channels = len(keep)
