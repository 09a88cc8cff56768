"""Reduced-precision passes: half (fp16 / bf16) on the twin's core, and float8."""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch

from compress.base import Pass, PassContext, check_budget, register_pass
from compress.boundary import WHOLE_MODEL, Cast, boundary_note, cast_units, torch_units
from compress.budget import Search, cached_search, keep_fp32, kept_subset_of
from models.export import torch_predict_fn
from models.plugins import Requirements

DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16}


@register_pass
@dataclass(frozen=True)
class Half(Pass):
    """The twin's core in fp16 or bf16, its numerics boundary in fp32 (measured on every runtime,
    not assumed faster).

    Each core unit runs behind fp32 edges (`boundary.Cast`): normalisation, de-normalisation and
    offsets never leave fp32 (bf16's spacing at 1.0 p.u. is 0.0078, 16x the smoke GNN's whole
    error: casting the whole model cost it +582 % vm RMSE, the core alone +0.5 %). With
    `max_quality_loss_pct`, the units whose half precision costs most stay fp32 until the
    validation loss is within the budget (`budget.keep_fp32`).
    """

    name = "half"
    dtype: str = "float16"
    max_quality_loss_pct: float | None = None

    def __post_init__(self) -> None:
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {self.dtype!r}")
        check_budget(self.max_quality_loss_pct)

    def apply(self, model: torch.nn.Module, ctx: PassContext) -> torch.nn.Module:
        twin, dtype = ctx.twin, DTYPES[self.dtype]
        units = torch_units(twin, model)
        kept: tuple[str, ...] = ()
        search = None
        if self.max_quality_loss_pct is not None:
            search = cached_search(
                twin,
                ctx.search_key(self, target=ctx.target),
                lambda: self._search(model, units, ctx),
                ctx.log,
                kept_subset_of(units),
            )
            kept = tuple(search["chosen"]["kept_fp32"])
        changed = [u for u in units if u not in kept]
        ctx.note(self, **boundary_note(twin, changed, kept), **({"search": search} if search else {}))
        return self._cast(model, changed, dtype)

    def _cast(self, model: torch.nn.Module, units, dtype: torch.dtype) -> torch.nn.Module:
        if units == [WHOLE_MODEL]:
            return Cast(copy.deepcopy(model).to(dtype), dtype).eval()
        return cast_units(model, units, dtype)

    def _search(self, model: torch.nn.Module, units: tuple[str, ...], ctx: PassContext) -> dict:
        search = Search(ctx.twin, self.name, self.max_quality_loss_pct, torch_predict_fn(copy.deepcopy(model)), ctx.log)
        dtype = DTYPES[self.dtype]
        return keep_fp32(
            search, units, lambda kept: torch_predict_fn(self._cast(model, [u for u in units if u not in kept], dtype))
        )


@register_pass
@dataclass(frozen=True)
class Float8(Pass):
    """torchao float8 weights and activations: needs tensor cores with fp8 (compute capability 8.9+)."""

    name = "float8"
    # No fp8 kernels in ONNX Runtime here: float8 variants run on torch runtimes only.
    requires = Requirements(
        device="cuda", compute_capability=(8, 9), targets=("torch",), libraries=("torchao",),
        why="fp8 tensor cores, Ada/Hopper or newer",
    )  # fmt: skip

    def apply(self, model: torch.nn.Module, ctx: PassContext) -> torch.nn.Module:
        from torchao.quantization import Float8DynamicActivationFloat8WeightConfig, quantize_

        model = copy.deepcopy(model)
        quantize_(model, Float8DynamicActivationFloat8WeightConfig())
        return model
