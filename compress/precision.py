"""Reduced-precision passes: half (fp16 / bf16) and float8."""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch

from compress.base import Pass, PassContext, register_pass
from models.plugins import Requirements

DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16}


class Cast(torch.nn.Module):
    """Runs `inner` in another dtype behind fp32 inputs and outputs, so every runtime and the
    evaluation see the same interface. Integer inputs (indices) pass through unchanged."""

    def __init__(self, inner: torch.nn.Module, dtype: torch.dtype) -> None:
        super().__init__()
        self.inner, self.dtype = inner, dtype

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        cast = [x.to(self.dtype) if x.is_floating_point() else x for x in inputs]
        return self.inner(*cast).float()


@register_pass
@dataclass(frozen=True)
class Half(Pass):
    """Weights and activations in fp16 or bf16 (measured on every runtime, not assumed faster)."""

    name = "half"
    dtype: str = "float16"

    def __post_init__(self) -> None:
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {self.dtype!r}")

    def apply(self, model: torch.nn.Module, ctx: PassContext) -> torch.nn.Module:
        return Cast(copy.deepcopy(model).to(DTYPES[self.dtype]), DTYPES[self.dtype]).eval()


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
