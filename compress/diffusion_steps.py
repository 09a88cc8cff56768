"""Fewer DDIM sampling steps for the diffusion twin: the same weights, a shorter loop."""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch

from bench.errors import Unsupported
from compress.base import Pass, PassContext, register_pass


@register_pass
@dataclass(frozen=True)
class DiffusionSteps(Pass):
    name = "diffusion-steps"
    steps: int = 5

    def __post_init__(self) -> None:
        if self.steps < 1:
            raise ValueError(f"steps must be >= 1, got {self.steps}")

    def apply(self, model: torch.nn.Module, ctx: PassContext) -> torch.nn.Module:
        from models.twins.diffusion_forecaster import DiffusionForecaster, ddim_timesteps

        if not isinstance(model, DiffusionForecaster):
            raise Unsupported("diffusion-steps applies to the diffusion-forecaster twin only")
        if self.steps > len(model.alpha_bar):
            raise Unsupported(f"{self.steps} steps exceed the {len(model.alpha_bar)} training steps")
        model = copy.deepcopy(model)
        model.timesteps = ddim_timesteps(len(model.alpha_bar), self.steps)
        return model
